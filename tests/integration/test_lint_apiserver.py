"""`tidegate lint` and the real API server agree on the CRDs' CEL rules.

Each document goes to `kubectl apply --dry-run=server` and through the linter: the API
server refuses exactly the documents lint refuses, and names each problem with the same
path and message. The documents break only CRD rules (lint's own checks, such as the
selector against the labels or a negative duration, are lint's and the operator's alone).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from tests.kube import Kube
from tidegate.cli.lint import Document, Linter

pytestmark = pytest.mark.sandbox

Doc = dict[str, Any]


def rollout(name: str, strategy: Doc, **spec: Any) -> Doc:
    return {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "example/web:1"}]},
            },
            "strategy": strategy,
            **spec,
        },
    }


def template(name: str, *metrics: Doc) -> Doc:
    return {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": name},
        "spec": {"metrics": list(metrics)},
    }


PROMETHEUS = {"prometheus": {"address": "http://prometheus:9090", "query": "up"}}
ROUTING = {"managedRoutes": [{"name": "hdr"}], "istio": {"virtualService": {"name": "web"}}}

DOCUMENTS: list[Doc] = [
    rollout(
        "valid",
        {
            "canary": {
                "stableService": "web-stable",
                "canaryService": "web-canary",
                "trafficRouting": ROUTING,
                "steps": [
                    {"setWeight": 10},
                    {"pause": {"duration": "1h30m"}},
                    {"setCanaryScale": {"matchTrafficWeight": True}},
                    {
                        "setHeaderRoute": {
                            "name": "hdr",
                            "match": [{"headerName": "x", "headerValue": {"exact": "1"}}],
                        }
                    },
                ],
            }
        },
        restartAt="2026-01-01T00:00:00Z",
    ),
    rollout(
        "steps",
        {
            "canary": {
                "stableService": "web",
                "canaryService": "web",
                "trafficRouting": ROUTING,
                "steps": [
                    {"setWeight": 10, "pause": {}},
                    {"pause": {"duration": "ten minutes"}},
                    {"setCanaryScale": {"replicas": 1, "weight": 10}},
                    {
                        "setHeaderRoute": {
                            "name": "hdr",
                            "match": [{"headerName": "x", "headerValue": {"exact": "1", "prefix": "2"}}],
                        }
                    },
                ],
            }
        },
    ),
    rollout(
        "two-strategies",
        {"canary": {}, "blueGreen": {"activeService": "web", "previewService": "web"}},
    ),
    rollout("restart", {"blueGreen": {"activeService": "web"}}, restartAt="yesterday"),
    rollout(
        "host-level",
        {"canary": {"stableService": "web-stable", "trafficRouting": {"istio": ROUTING["istio"]}}},
    ),
    rollout(
        "gateway-api",
        {
            "canary": {
                "canaryService": "web-canary",
                "trafficRouting": {"managedRoutes": [{"name": "hdr"}], "gatewayAPI": {"httpRoute": "web"}},
                "steps": [
                    {
                        "setHeaderRoute": {
                            "name": "hdr",
                            "match": [
                                {"headerName": "x", "queryParamValue": {"exact": "1"}},
                                {"queryParamName": "q", "queryParamValue": {}},
                            ],
                        }
                    },
                ],
            }
        },
    ),
    rollout("no-strategy", {}),
    rollout(
        "a-rollout-name-longer-than-fifty-two-characters-is-refused",
        {"canary": {"steps": [{"pause": {"duration": "9000h"}}]}},
    ),
    {  # both a template and a workloadRef; and no selector
        **rollout("workload-and-template", {"canary": {}}),
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "w"}},
                "spec": {"containers": [{"name": "a", "image": "x"}]},
            },
            "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "w"},
            "strategy": {"canary": {}},
        },
    },
    {  # neither; and no selector
        **rollout("neither", {"canary": {}}),
        "spec": {"strategy": {"canary": {}}},
    },
    rollout(
        "several-virtual-services",
        {
            "canary": {
                "stableService": "web-stable",
                "canaryService": "web-canary",
                "trafficRouting": {
                    "istio": {"virtualService": {"name": "web"}, "virtualServices": [{"name": "web"}]}
                },
            }
        },
    ),
    rollout(
        "no-virtual-services",
        {
            "canary": {
                "stableService": "web-stable",
                "canaryService": "web-canary",
                "trafficRouting": {"istio": {"virtualServices": []}},
                "steps": [{"setWeight": 250}],
            }
        },
    ),
    rollout(
        "mirror-matches",
        {
            "canary": {
                "stableService": "web-stable",
                "canaryService": "web-canary",
                "trafficRouting": {
                    "managedRoutes": [{"name": "mirror"}],
                    "istio": {"virtualService": {"name": "web"}},
                    "maxTrafficWeight": 1000,
                },
                "steps": [
                    {"setWeight": 250},
                    {
                        "setMirrorRoute": {
                            "name": "mirror",
                            "match": [
                                {
                                    "method": {"exact": "GET", "prefix": "G"},
                                    "path": {"exact": "/", "regex": "/"},
                                    "headers": {"x-mirror": {"prefix": "1", "regex": "1"}},
                                }
                            ],
                        }
                    },
                ],
            }
        },
    ),
    template("valid-template", {"name": "ok", "interval": "1m", "count": 3, "provider": PROMETHEUS}),
    template(
        "bad-template",
        {
            "name": "a",
            "interval": "5 min",
            "count": 3,
            "provider": {**PROMETHEUS, "web": {"url": "http://x"}},
        },
        {"name": "b", "initialDelay": "soon"},
        {
            "name": "c",
            "provider": {
                "prometheus": {
                    **PROMETHEUS["prometheus"],
                    "timeout": "1 s",
                    "range": {"window": "1d", "step": "15 s"},
                }
            },
        },
    ),
    template(
        "bad-argo-fields",
        {"name": "d", "provider": {"web": {"url": "http://x", "body": "{}", "jsonBody": {"a": 1}}}},
        {
            "name": "e",
            "provider": {"prometheus": {**PROMETHEUS["prometheus"], "rangeQuery": {"step": "a minute"}}},
        },
    ),
    template(
        "durations-over-a-year",
        {
            "name": "f",
            "interval": "9000h",
            "initialDelay": "9000h",
            "provider": {
                "prometheus": {
                    **PROMETHEUS["prometheus"],
                    "timeout": "9000h",
                    "range": {"window": "9000h", "step": "9000h"},
                }
            },
        },
        {
            "name": "g",
            "provider": {"prometheus": {**PROMETHEUS["prometheus"], "rangeQuery": {"step": "9000h"}}},
        },
    ),
    {**template("empty-template"), "spec": {"args": [{"name": "x"}]}},
    template(
        "bad-judges",
        {"name": "counts", "provider": PROMETHEUS, "judge": {"method": "Counts", "query": "e{h='{{hash}}'}"}},
        {"name": "quantiles", "provider": PROMETHEUS, "judge": {"quantiles": [0.5]}},
    ),
]


def lint_errors(doc: Doc) -> list[tuple[str, str]]:
    report = Linter().lint_documents([Document("-", 1, copy.deepcopy(doc))])
    return [(m.path, m.text) for m in report.messages if m.severity == "error"]


def api_server_errors(stderr: str) -> list[tuple[str, str]]:
    """(path, message) per field error of a refusal: one error on the line, or a `* ` list.

    `The Rollout "x" is invalid: spec.strategy: Invalid value: <message>`; older API servers
    put the value's type first (`Invalid value: "object": <message>`).
    """
    _, _, errors = stderr.partition(" is invalid: ")
    lines = [line.removeprefix("* ") for line in errors.strip().splitlines() if line.strip()]
    out = []
    for line in lines:
        path, _, rest = line.partition(": ")
        reason, _, message = rest.partition(": ")
        if reason == "Invalid value":
            message = re.sub(r'^"[^"]*": ', "", message)
        out.append((path, message if reason == "Invalid value" else rest))
    return out


@pytest.mark.parametrize("doc", DOCUMENTS, ids=[d["metadata"]["name"] for d in DOCUMENTS])
def test_the_api_server_refuses_what_lint_refuses_with_the_same_message(bare_kube: Kube, doc: Doc) -> None:
    expected = lint_errors(doc)
    proc = bare_kube.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(doc), check=False)
    if not expected:
        assert proc.returncode == 0, proc.stderr
        return
    assert proc.returncode != 0, f"the API server accepted what lint refuses: {expected}"
    assert sorted(api_server_errors(proc.stderr)) == sorted(expected), proc.stderr


def test_the_documents_cover_every_rule_lint_and_the_api_server_check() -> None:
    from tests.unit.test_crd_rules import ROWS

    reported = {message for doc in DOCUMENTS for _, message in lint_errors(doc)}
    rules = {row[0] for kind in ("Rollout", "AnalysisTemplate") for row in ROWS[kind]}
    assert rules - reported == set()

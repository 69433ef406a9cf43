"""Hostile routes on the sandbox (issue 12): a weighed route the operator cannot split as asked,
and a header regex RE2 refuses, are InvalidSpec with a message naming the route (or the field)
and the object; the VirtualService / HTTPRoute is left as it is and the stable keeps serving.

Each scenario starts Healthy on v1 with a clean route, then the route (or the spec) turns
hostile and a new revision is applied:

- a named Istio route gains a third destination at weight 10 (written, it summed to 110);
- an HTTPRoute's managed rule names the stable Service twice (written, 75 + 25 + 75 = 175);
- a setHeaderRoute step's header regex is `([`.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.e2e.test_hostile import condition, seen_generation, services, virtual_service
from tests.kube import Kube, wait_until
from tidegate.core.hashing import HASH_LABEL

pytestmark = pytest.mark.sandbox

VS = "virtualservices.networking.istio.io"
ROUTE = "httproutes.gateway.networking.k8s.io"
V1, V2 = "registry.example/web:1.0", "registry.example/web:2.0"


def rollout(routing: dict[str, Any], steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": V1}]},
            },
            "strategy": {
                "canary": {
                    "stableService": "web-stable",
                    "canaryService": "web-canary",
                    "trafficRouting": routing,
                    "steps": steps if steps is not None else [{"setWeight": 25}, {"pause": {}}],
                }
            },
        },
    }


def http_route(refs: list[tuple[str, int]]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web"},
        "spec": {
            "parentRefs": [{"name": "platform"}],
            "rules": [
                {
                    "name": "primary",
                    "backendRefs": [{"name": n, "port": 80, "weight": w} for n, w in refs],
                }
            ],
        },
    }


def healthy(kube: Kube, doc: dict[str, Any]) -> str:
    """Apply the Rollout at v1 and wait for Healthy; the stable pod hash."""
    kube.apply(doc)
    return str(kube.wait_phase("web", "Healthy", timeout=60)["stableRS"])


def new_revision(kube: Kube, doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["spec"]["template"]["spec"]["containers"][0]["image"] = V2
    kube.apply(doc)
    return doc


def refused(kube: Kube, text: str) -> str:
    """Wait for InvalidSpec on the current generation; its message, which must contain `text`."""

    def check() -> str | None:
        invalid = condition(kube, "web", "InvalidSpec") or {}
        message = str(invalid.get("message") or "")
        return message if invalid.get("status") == "True" and seen_generation(kube, "web") else None

    message = wait_until(check, 60, what=f"InvalidSpec (status: {kube.status('web')})")
    assert text in message, message
    assert kube.status("web")["phase"] == "Degraded"
    wait_until(
        lambda: [
            e for e in kube.list("events") if e.get("type") == "Warning" and text in (e.get("message") or "")
        ],
        30,
        what="a Warning Event naming it",
    )
    return message


def stable_serves(kube: Kube, stable: str) -> None:
    """The stable ReplicaSet alone, at full size and available, and the stable Service on it."""
    status = kube.status("web")
    assert status["stableRS"] == stable
    sets = {rs["metadata"]["labels"][HASH_LABEL]: rs for rs in kube.replica_sets("web")}
    assert list(sets) == [stable], f"no new ReplicaSet under a refused spec: {list(sets)}"
    assert (sets[stable]["status"].get("availableReplicas"), sets[stable]["spec"]["replicas"]) == (2, 2)
    assert kube.get("services", "web-stable")["spec"]["selector"][HASH_LABEL] == stable


def test_a_named_route_with_a_third_destination_is_invalid_spec_and_left_alone(kube: Kube) -> None:
    services(kube)
    vs = virtual_service(kube.namespace)
    kube.apply(vs)
    doc = rollout({"istio": {"virtualService": {"name": "web", "routes": ["primary"]}}})
    stable = healthy(kube, doc)
    vs["spec"]["http"][0]["route"] = [
        {"destination": {"host": "web-stable"}, "weight": 90},
        {"destination": {"host": "web-canary"}, "weight": 0},
        {"destination": {"host": "legacy"}, "weight": 10},
    ]
    kube.apply(vs)
    before = kube.get(VS, "web")
    new_revision(kube, doc)
    refused(
        kube,
        "HTTP route primary of VirtualService web has a destination that is neither the stable nor the "
        "canary (host legacy (weight 10); hosts web-stable/web-canary): its weights would not sum to 100 "
        "(trafficRouting.istio.virtualService)",
    )
    after = kube.get(VS, "web")
    assert after["spec"] == before["spec"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], "written to"
    stable_serves(kube, stable)


def test_a_rule_naming_the_stable_twice_cannot_sum_to_100_and_is_left_alone(kube: Kube) -> None:
    services(kube)
    kube.apply(http_route([("web-stable", 100), ("web-canary", 0)]))
    doc = rollout({"gatewayAPI": {"httpRoute": "web"}})
    stable = healthy(kube, doc)
    kube.apply(http_route([("web-stable", 50), ("web-canary", 0), ("web-stable", 50)]))
    before = kube.get(ROUTE, "web")
    new_revision(kube, doc)
    refused(
        kube,
        "rule primary of HTTPRoute web has 2 backendRefs to the stable Service: each would get the stable "
        "weight and the weights would not sum to 100",
    )
    after = kube.get(ROUTE, "web")
    assert after["spec"] == before["spec"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], "written to"
    stable_serves(kube, stable)


def test_a_header_regex_re2_refuses_is_invalid_spec_naming_the_field(kube: Kube) -> None:
    services(kube)
    kube.apply(virtual_service(kube.namespace))
    routing: dict[str, Any] = {"istio": {"virtualService": {"name": "web", "routes": ["primary"]}}}
    doc = rollout(routing)
    stable = healthy(kube, doc)
    before = kube.get(VS, "web")
    routing["managedRoutes"] = [{"name": "hdr"}]
    header = {"name": "hdr", "match": [{"headerName": "x-canary", "headerValue": {"regex": "(["}}]}
    hostile = rollout(routing, [{"setHeaderRoute": header}, {"setWeight": 25}, {"pause": {}}])
    new_revision(kube, hostile)
    refused(
        kube,
        "spec.strategy.canary.steps[0].setHeaderRoute.match[0].headerValue.regex: '([' is not an RE2 "
        "regular expression (missing ]: [)",
    )
    after = kube.get(VS, "web")
    assert after["spec"] == before["spec"], "the regex never reached the VirtualService"
    assert [r.get("name") for r in after["spec"]["http"]] == ["primary"]
    stable_serves(kube, stable)

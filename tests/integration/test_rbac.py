"""The chart's RBAC against what the operator really asks for (issue 12, item 4).

The operator runs on the sandbox as the chart's ServiceAccount, with exactly the chart's
ClusterRole, Roles and bindings (`helm template`, notifications on), and drives a
representative workload, all at once in one namespace per scenario:

- an Istio canary (VirtualService weights, a header route, canary/stable pod metadata),
  paused, promoted, completed; then deleted (finalizer, traffic back to stable);
- an Istio canary with DestinationRule subsets, revisionHistoryLimit 0 (old ReplicaSets deleted);
- Gateway API canaries: an HTTPRoute (weights, a header route, promoted) and a GRPCRoute;
- a blue-green Rollout (active and preview Services), promoted;
- a canary aborted while paused;
- a canary whose analysis step runs an AnalysisTemplate (Prometheus and web metrics) and a
  ClusterAnalysisTemplate (a job metric), run history 0 (the run deleted once done), with a
  notification (a webhook) on completion; a run with a suspended Job, terminated (Job deleted);
- a workloadRef Rollout that scales its Deployment down, then restarted (spec.restartAt:
  pods evicted one at a time);
- leader election: the chart's Lease in the release namespace, taken and renewed.

Then it reads the sandbox API server's audit log (`Sandbox.logs / "audit.log"`, policy:
level Metadata for every request, see tidegate.sandbox.cluster) and asserts that
(a) no request of the account was refused (nor does its log show a refusal), and (b) every
(verb, resource) pair the chart grants the account was used, or is in UNEXERCISED below with
the reason it is still granted. It prints the counts.
"""

from __future__ import annotations

import copy
import datetime
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _log_dir
from tests.e2e.dsl import _load, given
from tests.e2e.test_gatewayapi import GRPC_ROUTE
from tests.integration.test_install import (
    HOST,
    Manifest,
    Release,
    ServiceAccountOperator,
    http_status,
    install,
    other_tests_namespaces,
    token_kubeconfig,
    uninstall,
)
from tests.kube import Kube, OperatorProcess, new_namespace, wait_until
from tidegate.sandbox import Sandbox
from tidegate.sandbox.prometheus import address

pytestmark = pytest.mark.sandbox

Pair = tuple[str, str]  # (verb, "group/resource[/subresource]"), "" for the core group

# Granted but not exercised by this test; each is still needed, for the reason given.
_STALE_ROUTE = (
    "a router's patch planned from the watch cache met a newer object (resourceVersion test): "
    "it reads the object by name and writes again (routers/_objects.py); only a concurrent "
    "writer triggers it, which tests/integration/test_router_conflicts.py stages"
)
_OWNER_FINALIZERS = (
    "no request: the OwnerReferencesPermissionEnforcement admission plugin (OpenShift enables "
    "it; the sandbox does not) requires it of whoever sets blockOwnerDeletion on an owner "
    "reference to this kind (the ReplicaSets and AnalysisRuns of a Rollout, the Jobs of a run)"
)
UNEXERCISED: dict[Pair, str] = {
    ("get", "networking.istio.io/virtualservices"): _STALE_ROUTE,
    ("get", "networking.istio.io/destinationrules"): _STALE_ROUTE,
    ("get", "gateway.networking.k8s.io/httproutes"): _STALE_ROUTE,
    ("get", "gateway.networking.k8s.io/grpcroutes"): _STALE_ROUTE,
    ("update", "tidegate.io/rollouts/finalizers"): _OWNER_FINALIZERS,
    ("update", "tidegate.io/analysisruns/finalizers"): _OWNER_FINALIZERS,
}


# -- what the chart grants ------------------------------------------------------------------


def granted_pairs(release: Release) -> set[Pair]:
    """(verb, group/resource) of every rule in a Role or ClusterRole bound to the account."""
    roles = {
        (d["kind"], d["metadata"]["name"]): d for d in release.docs if d["kind"] in ("Role", "ClusterRole")
    }
    pairs: set[Pair] = set()
    for binding in release.docs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subjects = binding.get("subjects") or []
        if not any(s["kind"] == "ServiceAccount" and s["name"] == release.account for s in subjects):
            continue
        role = roles[(binding["roleRef"]["kind"], binding["roleRef"]["name"])]
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    pairs.update((verb, f"{group}/{resource}") for verb in rule["verbs"])
    return pairs


def account_requests(sandbox: Sandbox, user: str) -> list[dict[str, Any]]:
    """Every request `user` made, one audit event each, from the sandbox's audit log. A watch
    is long-running: it has a ResponseStarted event at once and a ResponseComplete one only
    when it ends, so a request counts from its first event (by auditID), refused or not."""
    seen: dict[str, dict[str, Any]] = {}
    for path in sorted(sandbox.logs.glob("audit*.log")):
        with path.open(errors="replace") as lines:
            for line in lines:
                if f'"username":"{user}"' not in line:
                    continue
                event = json.loads(line)
                if event["user"]["username"] == user:
                    seen.setdefault(event["auditID"], event)
    return list(seen.values())


def used_pair(event: dict[str, Any]) -> Pair:
    ref = event.get("objectRef") or {}
    resource = "/".join(x for x in (ref.get("resource"), ref.get("subresource")) if x)
    return str(event["verb"]), f"{ref.get('apiGroup', '')}/{resource or event.get('requestURI', '')}"


# -- the workload ---------------------------------------------------------------------------


class Receiver:
    """A webhook for notifications and the web metric: GET answers {"ok": true}, POSTs are kept."""

    def __init__(self) -> None:
        self.posts: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(b'{"ok": true}')

            def do_POST(self) -> None:
                receiver.posts.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                self._answer(b"{}")

            def _answer(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def istio_canary(steps: list[dict[str, Any]], **canary: Any) -> Manifest:
    doc = copy.deepcopy(_load("examples/canary/rollout.yaml", "Rollout"))
    doc["spec"]["replicas"] = 2
    doc["spec"]["strategy"]["canary"]["steps"] = steps
    doc["spec"]["strategy"]["canary"].update(canary)
    return doc


def analysis_templates(kube: Kube, sandbox: Sandbox, receiver: Receiver) -> None:
    """A namespaced template (Prometheus and web metrics) and a cluster one (a job metric)."""
    kube.apply(
        {
            "apiVersion": "tidegate.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "smoke"},
            "spec": {
                "metrics": [
                    {
                        "name": "up",
                        "count": 1,
                        "successCondition": "result[0] >= 1",
                        "provider": {"prometheus": {"address": address(sandbox), "query": "vector(1)"}},
                    },
                    {
                        "name": "health",
                        "count": 1,
                        "successCondition": "result == true",
                        "provider": {"web": {"url": f"{receiver.url}/health", "jsonPath": "$.ok"}},
                    },
                ]
            },
        }
    )
    job = {
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "containers": [
                        {"name": "check", "image": "alpine:3.8", "command": ["sh", "-c", "exit 0"]}
                    ],
                    "restartPolicy": "Never",
                }
            },
        }
    }
    kube.apply(
        {
            "apiVersion": "tidegate.io/v1alpha1",
            "kind": "ClusterAnalysisTemplate",
            "metadata": {"name": f"job-{kube.namespace}"},
            "spec": {"metrics": [{"name": "job", "count": 1, "provider": {"job": job}}]},
        }
    )


def held_run(name: str) -> Manifest:
    """An AnalysisRun whose job metric's Job is suspended: it runs until the run is terminated."""
    job = {
        "spec": {
            "suspend": True,
            "template": {
                "spec": {
                    "containers": [
                        {"name": "check", "image": "alpine:3.8", "command": ["sh", "-c", "exit 0"]}
                    ],
                    "restartPolicy": "Never",
                }
            },
        }
    }
    return {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "AnalysisRun",
        "metadata": {"name": name},
        "spec": {"metrics": [{"name": "held", "count": 1, "provider": {"job": job}}]},
    }


def deployment(name: str) -> Manifest:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": name, "image": f"registry.example/{name}:1.0"}]},
            },
        },
    }


def notification_config(kube: Kube, receiver: Receiver) -> None:
    kube.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "tidegate-notification-configmap"},
                "data": {"service.webhook.rec": f"url: {receiver.url}/notify\n"},
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "tidegate-notification-secret"},
                "stringData": {"unused": "x"},
            },
        ]
    )


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def release(sandbox: Sandbox) -> Iterator[Release]:
    """The chart, cluster mode, with notifications on (their Role is part of what it grants)."""
    rel = install(sandbox, "notifications.enabled=true", "replicaCount=1")
    yield rel
    uninstall(sandbox, rel)


@pytest.fixture
def account_operator(
    tmp_path: Path, sandbox: Sandbox, release: Release, operator: OperatorProcess
) -> Iterator[ServiceAccountOperator]:
    """The operator as the release's account; the session's admin operator stopped meanwhile."""
    operator.stop()
    op = ServiceAccountOperator(tmp_path / "kubeconfig", tmp_path / "operator.log")
    try:
        token_kubeconfig(sandbox, release, op.kubeconfig)
        op.release = release
        op.start()
        op.wait_ready()
        op.wait_leading(sandbox)
        yield op
    finally:
        op.stop()
        if op.log_path.exists():
            (_log_dir() / "operator-rbac.log").write_bytes(op.log_path.read_bytes())
        operator.start()
        wait_until(
            lambda: http_status(f"http://127.0.0.1:{operator.metrics_port}/readyz") == 200,
            60,
            interval=0.5,
            what="the session operator ready again",
        )


@pytest.fixture
def namespaces(sandbox: Sandbox) -> Iterator[dict[str, Kube]]:
    names = ("istio", "subset", "gateway", "grpc", "bluegreen", "abort", "analysis", "workload")
    kubes = {name: Kube(sandbox, new_namespace(sandbox, f"rbac-{name}")) for name in names}
    yield kubes
    for kube in kubes.values():
        sandbox.kubectl("delete", "namespace", kube.namespace, "--wait=false", check=False)
    sandbox.kubectl("delete", "clusteranalysistemplate", f"job-{kubes['analysis'].namespace}", check=False)


# -- the test -------------------------------------------------------------------------------


def test_the_charts_rbac_is_what_the_operator_uses(
    sandbox: Sandbox,
    release: Release,
    account_operator: ServiceAccountOperator,
    namespaces: dict[str, Kube],
    receiver: Receiver,
) -> None:
    ns = namespaces
    foreign = other_tests_namespaces(sandbox, "") - {k.namespace for k in ns.values()} - {release.namespace}
    paused: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}]

    # Given: every scenario applied at once, each in its own namespace.
    istio = (
        given(ns["istio"])
        .objects(*HOST)
        .rollout(
            istio_canary(
                [
                    {"setWeight": 20},
                    {
                        "setHeaderRoute": {
                            "name": "canary-header",
                            "match": [{"headerName": "x-canary", "headerValue": {"exact": "true"}}],
                        }
                    },
                    {"pause": {}},
                ],
                canaryMetadata={"labels": {"role": "canary"}},
                stableMetadata={"labels": {"role": "stable"}},
            )
        )
    )
    subset = (
        given(ns["subset"])
        .objects(
            "examples/canary-subset/service.yaml",
            "examples/canary-subset/destinationrule.yaml",
            "examples/canary-subset/virtualservice.yaml",
        )
        .rollout("examples/canary-subset/rollout.yaml", **{"spec.replicas": 2})
    )
    assert subset.doc is not None
    subset.doc["spec"]["strategy"]["canary"]["steps"] = [{"setWeight": 50}, {"pause": {"duration": "1s"}}]
    subset.doc["spec"]["revisionHistoryLimit"] = 0  # the old ReplicaSet is deleted
    gateway = (
        given(ns["gateway"])
        .objects("examples/gateway-api/services.yaml", "examples/gateway-api/httproute.yaml")
        .rollout("examples/gateway-api/rollout.yaml", **{"spec.replicas": 2})
    )
    ns["grpc"].apply(GRPC_ROUTE)
    grpc = (
        given(ns["grpc"])
        .objects("examples/gateway-api/services.yaml")
        .rollout("examples/gateway-api/rollout.yaml", **{"spec.replicas": 2})
    )
    assert grpc.doc is not None
    grpc.doc["spec"]["strategy"]["canary"].update(
        trafficRouting={"gatewayAPI": {"grpcRoute": GRPC_ROUTE["metadata"]["name"]}},
        steps=[{"setWeight": 30}, {"pause": {"duration": "1s"}}],
    )
    bluegreen = (
        given(ns["bluegreen"])
        .objects("examples/blue-green/services.yaml")
        .rollout("examples/blue-green/rollout.yaml", **{"spec.replicas": 2})
    )
    abort = given(ns["abort"]).objects(*HOST).rollout(istio_canary(paused))
    analysis_templates(ns["analysis"], sandbox, receiver)
    notification_config(Kube(sandbox, release.namespace), receiver)
    analysed = istio_canary(
        [
            {"setWeight": 50},
            {
                "analysis": {
                    "templates": [
                        {"templateName": "smoke"},
                        {"templateName": f"job-{ns['analysis'].namespace}", "clusterScope": True},
                    ]
                }
            },
        ]
    )
    analysed["spec"]["analysis"] = {"successfulRunHistoryLimit": 0}  # its run is deleted once done
    analysed["metadata"]["annotations"] = {"notifications.tidegate.io/subscribe.on-rollout-completed.rec": ""}
    analysis = given(ns["analysis"]).objects(*HOST).rollout(analysed)
    ns["workload"].apply(deployment("orders"))
    workload = given(ns["workload"]).rollout(
        {
            "apiVersion": "tidegate.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "orders"},
            "spec": {
                "replicas": 2,
                "workloadRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": "orders",
                    "scaleDown": "onsuccess",
                },
                "strategy": {"canary": {"steps": [{"setWeight": 50}]}},
            },
        }
    )
    ns["analysis"].apply(held_run("held"))
    scenarios = [istio, subset, gateway, grpc, bluegreen, abort, analysis, workload]
    for s in scenarios:
        s.when().applied()
    for s in scenarios:
        s.then().phase("Healthy", timeout=60)

    # When: a new version of each; the ones that pause are promoted, one is aborted.
    updated = {
        id(s): s.when().image("registry.example/web:2.0")
        for s in (istio, subset, gateway, grpc, bluegreen, abort, analysis)
    }
    for s in (istio, gateway, bluegreen, abort):
        updated[id(s)].then().phase("Paused", timeout=60)
    istio.then().holds(
        lambda: (
            {(p["metadata"].get("labels") or {}).get("role") for p in ns["istio"].list("pods", "app=web")}
            == {"canary", "stable"}
        ),
        "canary and stable pods labelled",
        timeout=30,
    )
    for s in (istio, gateway, bluegreen):
        s.when().promoted()
    abort.when().aborted().then().phase("Degraded", timeout=60)
    for s in (istio, subset, gateway, grpc, bluegreen, analysis):
        s.then().phase("Healthy", timeout=90)
    wait_until(
        lambda: ns["workload"].get("deployments", "orders")["spec"]["replicas"] == 0,
        30,
        what="the workloadRef Deployment scaled down",
    )

    # A run told to stop deletes its Job still running.
    def held_jobs() -> list[str]:
        names = [j["metadata"]["name"] for j in ns["analysis"].list("jobs.batch")]
        return [name for name in names if name.endswith(".held.1")]

    wait_until(held_jobs, 30, what="the held run's Job")
    ns["analysis"].patch("analysisruns.tidegate.io", "held", {"spec": {"terminate": True}})
    wait_until(lambda: not held_jobs(), 60, what="the held Job deleted")
    restart_at = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ns["workload"].patch("rollouts.tidegate.io", "orders", {"spec": {"restartAt": restart_at}})
    wait_until(
        lambda: ns["workload"].status("orders").get("restartedAt") == restart_at, 60, what="pods restarted"
    )
    wait_until(lambda: bool(receiver.posts), 30, what="a notification delivered")
    ns["istio"].kubectl("delete", "rollout.tidegate.io", "web", "--timeout=30s")

    # Then: what the account asked for, as the API server audited it.
    requests = account_requests(sandbox, release.user)
    refused = sorted(
        {
            used_pair(e)
            for e in requests
            if (e.get("responseStatus") or {}).get("code") == 403
            and (e.get("objectRef") or {}).get("namespace") not in foreign
        }
    )
    used = {used_pair(e) for e in requests}
    granted = granted_pairs(release)
    print(
        f"\nRBAC: {len(requests)} requests by {release.user}; {len(granted)} (verb, resource) pairs "
        f"granted, {len(used & granted)} of them used, {len(UNEXERCISED)} granted unused on purpose"
    )
    print("used but not granted (discovery, whoami: granted to every account):", sorted(used - granted))
    print("granted, unused:", sorted(granted - used))
    assert refused == [], f"the API server refused the operator: {refused}"
    forbidden = account_operator.forbidden_lines(foreign)
    assert forbidden == [], "the operator logged a refusal:\n" + "\n".join(forbidden[:20])
    unused = sorted(granted - used - set(UNEXERCISED))
    assert unused == [], f"granted but never used (trim the chart, or explain in UNEXERCISED): {unused}"
    stale = sorted(set(UNEXERCISED) - granted)
    assert stale == [], f"UNEXERCISED lists what the chart no longer grants: {stale}"

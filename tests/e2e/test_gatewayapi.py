"""Gateway API router scenarios on the sandbox, with the real standard-channel CRDs
(hack/testenv: sigs.k8s.io/gateway-api) and the zero-downtime watcher following HTTPRoutes."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from tests.e2e.dsl import _load, given
from tests.kube import Kube, wait_until

EXAMPLE = (
    "examples/gateway-api/services.yaml",
    "examples/gateway-api/gateway.yaml",
    "examples/gateway-api/httproute.yaml",
)
ROUTE = "httproutes.gateway.networking.k8s.io"
GRPC = "grpcroutes.gateway.networking.k8s.io"
NAME = "api-gateway"
NEW_IMAGE = "registry.example/org/api-gateway:v1.2.3"
HEADER = [{"headerName": "x-canary", "headerValue": {"exact": "true"}}]


def rollout(steps: list[dict[str, Any]] | None = None, **canary_fields: Any) -> dict[str, Any]:
    doc = copy.deepcopy(_load("examples/gateway-api/rollout.yaml", "Rollout"))
    canary = doc["spec"]["strategy"]["canary"]
    if steps is not None:
        canary["steps"] = steps
    canary.update(canary_fields)
    return doc


def rules(kube: Kube, kind: str = ROUTE, name: str = NAME) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = kube.get(kind, name)["spec"]["rules"]
    return out


def weights(kube: Kube, kind: str = ROUTE, name: str = NAME) -> list[int]:
    """stable/canary weights of the first rule, as written in the route."""
    return [ref.get("weight", 1) for ref in rules(kube, kind, name)[0]["backendRefs"]]


def rule_names(kube: Kube, kind: str = ROUTE, name: str = NAME) -> list[str | None]:
    return [r.get("name") for r in rules(kube, kind, name)]


def test_seed_canary_as_an_httproute_walks_the_steps(kube: Kube) -> None:
    """95/5 with the x-canary header rule, promoted, back to 100/0 with the header rule gone;
    the route's own fields (parentRefs, hostnames, matches) never touched."""
    s = given(kube).objects(*EXAMPLE).rollout("examples/gateway-api/rollout.yaml").watched(gateway=True)
    s.when().applied().then().phase("Healthy")
    before = kube.get(ROUTE, NAME)["spec"]
    t = s.when().image(NEW_IMAGE).then().weight(5).step(2).phase("Paused")
    assert weights(kube) == [95, 5]
    assert rule_names(kube) == ["primary", "canary-header"], "the header rule is added after the user's"
    header = rules(kube)[1]
    assert header["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/"},
            "headers": [{"name": "x-canary", "type": "Exact", "value": "true"}],
        }
    ], "the source rule's matches, with the step's headers added"
    assert [(r["name"], r.get("port"), r.get("weight", 1)) for r in header["backendRefs"]] == [
        ("api-gateway-canary", 80, 1)
    ]
    status = kube.status(NAME)
    assert status["canary"]["managedRoutes"] == ["HTTPRoute/api-gateway/primary"]
    assert status["canary"]["weights"]["verified"] is True
    t = t.when().promoted().then().weight(50).phase("Healthy", timeout=60).weight(0)
    assert weights(kube) == [100, 0]
    assert rule_names(kube) == ["primary"], "the header rule is removed at the end"
    after = kube.get(ROUTE, NAME)["spec"]
    for field in ("parentRefs", "hostnames"):
        assert after[field] == before[field], f"{field} is the owner's"
    assert after["rules"][0]["matches"] == before["rules"][0]["matches"]
    t.replica_sets({NEW_IMAGE: 3}, timeout=30)
    stable = kube.status(NAME)["stableRS"]
    for svc in ("api-gateway-stable", "api-gateway-canary"):
        assert kube.get("service", svc)["spec"]["selector"]["rollouts-pod-template-hash"] == stable
    s.finish()


def test_abort_sends_everything_back_to_stable_and_removes_the_header_rule(kube: Kube) -> None:
    s = given(kube).objects(*EXAMPLE).rollout("examples/gateway-api/rollout.yaml").watched(gateway=True)
    s.when().applied().then().phase("Healthy")
    t = s.when().image(NEW_IMAGE).then().weight(5).phase("Paused")
    assert rule_names(kube) == ["primary", "canary-header"]
    t = t.when().aborted().then().weight(0).phase("Degraded").message_contains("aborted")
    assert weights(kube) == [100, 0]
    assert rule_names(kube) == ["primary"]
    t.replica_sets({"registry.example/org/api-gateway:v1.2.2": 3}, timeout=30)
    s.finish()


def test_header_and_query_route_added_then_removed_by_an_empty_match(kube: Kube) -> None:
    query = {"queryParamName": "canary", "queryParamValue": {"prefix": "beta"}}
    steps = [
        {"setWeight": 20},
        {"setHeaderRoute": {"name": "canary-header", "match": [*HEADER, query]}},
        {"pause": {}},
        {"setHeaderRoute": {"name": "canary-header"}},
        {"pause": {}},
    ]
    s = given(kube).objects(*EXAMPLE).rollout(rollout(steps)).watched(gateway=True)
    s.when().applied().then().phase("Healthy")
    t = s.when().image(NEW_IMAGE).then().weight(20).step(2).phase("Paused")
    assert rule_names(kube) == ["primary", "canary-header"]
    assert rules(kube)[1]["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/"},
            "headers": [{"name": "x-canary", "type": "Exact", "value": "true"}],
            "queryParams": [{"name": "canary", "type": "RegularExpression", "value": "beta.*"}],
        }
    ], "the API server took the query parameter match as written"
    t = t.when().promoted().then().step(4).phase("Paused")
    assert rule_names(kube) == ["primary"], "an empty match removes the header rule"
    assert weights(kube) == [80, 20], "the weight stays"
    s.finish()


def test_a_route_edited_by_hand_mid_pause_is_put_back(kube: Kube) -> None:
    s = given(kube).objects(*EXAMPLE).rollout("examples/gateway-api/rollout.yaml").watched(gateway=True)
    s.when().applied().then().phase("Healthy")
    s.when().image(NEW_IMAGE).then().weight(5).phase("Paused")
    began = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1))
    ops = [
        {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 50},
        {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 50},
        {"op": "remove", "path": "/spec/rules/1"},
    ]
    kube.kubectl("patch", ROUTE, NAME, "--type=json", "-p", json.dumps(ops))
    edited = time.monotonic()
    wait_until(
        lambda: weights(kube) == [95, 5] and rule_names(kube) == ["primary", "canary-header"],
        10,
        interval=0.05,
        what="HTTPRoute weights back to 95/5 and the header rule back",
    )
    print(f"HTTPRoute drift corrected in {time.monotonic() - edited:.2f}s")
    wait_until(
        lambda: any(
            e.get("reason") == "TrafficDriftCorrected"
            and (e.get("lastTimestamp") or e.get("eventTime") or "") >= began
            for e in kube.list("events")
        ),
        30,
        what="a TrafficDriftCorrected Event",
    )
    assert kube.status(NAME)["phase"] == "Paused", "still paused where it was"
    s.finish()


GRPC_ROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "GRPCRoute",
    "metadata": {"name": "api-grpc"},
    "spec": {
        "parentRefs": [{"name": "platform"}],
        "rules": [
            {
                "matches": [{"method": {"service": "orders.v1.Orders"}}],
                "backendRefs": [
                    {"name": "api-gateway-stable", "port": 80, "weight": 100},
                    {"name": "api-gateway-canary", "port": 80, "weight": 0},
                ],
            }
        ],
    },
}


def test_grpcroute_canary_written_as_argos_plugin(kube: Kube) -> None:
    """A Rollout written for Argo's argoproj-labs/gatewayAPI plugin, unchanged but for apiVersion."""
    plugin = {"argoproj-labs/gatewayAPI": {"grpcRoutes": [{"name": "api-grpc", "useHeaderRoutes": True}]}}
    steps = [
        {"setWeight": 30},
        {"setHeaderRoute": {"name": "canary-header", "match": HEADER}},
        {"pause": {}},
        {"setWeight": 60},
        {"pause": {"duration": "1s"}},
    ]
    routing = {"managedRoutes": [{"name": "canary-header"}], "plugins": plugin}
    s = given(kube).objects("examples/gateway-api/services.yaml", "examples/gateway-api/gateway.yaml")
    kube.apply(GRPC_ROUTE)
    s = s.rollout(rollout(steps, trafficRouting=routing)).watched(gateway=True)
    s.when().applied().then().phase("Healthy")
    t = s.when().image(NEW_IMAGE).then().weight(30).phase("Paused")
    assert weights(kube, GRPC, "api-grpc") == [70, 30]
    header = rules(kube, GRPC, "api-grpc")[1]
    assert header["name"] == "canary-header"
    assert header["matches"] == [
        {
            "method": {"service": "orders.v1.Orders", "type": "Exact"},
            "headers": [{"name": "x-canary", "type": "Exact", "value": "true"}],
        }
    ]
    t.when().promoted().then().weight(60).phase("Healthy", timeout=60).weight(0)
    assert weights(kube, GRPC, "api-grpc") == [100, 0]
    assert [r.get("name") for r in rules(kube, GRPC, "api-grpc")] == [None]
    s.finish()


def test_missing_httproute_is_a_condition_then_the_route_is_taken_up(kube: Kube) -> None:
    kube.apply_file("examples/gateway-api/services.yaml")
    s = given(kube).rollout("examples/gateway-api/rollout.yaml")
    t = s.when().applied().then().phase("Degraded")
    t.message_contains(f"HTTPRoute {NAME} not found in namespace {kube.namespace}")
    ready = next(c for c in kube.status(NAME)["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    s.objects("examples/gateway-api/gateway.yaml", "examples/gateway-api/httproute.yaml")
    s.then().phase("Healthy", timeout=40)


def test_a_route_without_the_two_services_is_named_in_the_message(kube: Kube) -> None:
    kube.apply_file("examples/gateway-api/services.yaml")
    route = _load("examples/gateway-api/httproute.yaml", "HTTPRoute")
    route["spec"]["rules"][0]["backendRefs"] = [{"name": "api-gateway-stable", "port": 80}]
    kube.apply(route)
    s = given(kube).rollout("examples/gateway-api/rollout.yaml")
    s.when().applied().then().phase("Degraded").message_contains(
        "HTTPRoute api-gateway has no rule whose backendRefs are both the stable and the canary Service"
    )


def test_deleting_the_rollout_mid_canary_gives_the_route_back_to_stable(kube: Kube) -> None:
    s = given(kube).objects(*EXAMPLE).rollout("examples/gateway-api/rollout.yaml").watched(gateway=True)
    s.when().applied().then().phase("Healthy")
    s.when().image(NEW_IMAGE).then().weight(5).phase("Paused")
    kube.kubectl("delete", f"rollout.tidegate.io/{NAME}", "--timeout=60s")
    assert weights(kube) == [100, 0], "the finalizer returned all traffic to stable first"
    assert rule_names(kube) == ["primary"], "and removed the header rule"
    assert kube.get_or_none(ROUTE, NAME) is not None, "the route itself stays"
    wait_until(lambda: not kube.replica_sets(NAME), 60, what="ReplicaSets garbage-collected")
    s.finish()

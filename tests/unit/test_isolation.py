"""Namespace isolation: which fields name another namespace, and when its objects consent."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.planner_fixtures import V1, canary_rollout, observed, rs, status_mid_canary
from tidegate.api.rollout import Rollout
from tidegate.core.isolation import CONSENT_ANNOTATION, foreign_references, refusal
from tidegate.core.model import RouterState, SetTraffic
from tidegate.core.planner import plan

ROUTING = "spec.strategy.canary.trafficRouting"


def rollout(routing: dict[str, Any], namespace: str = "ns") -> Rollout:
    r = canary_rollout(trafficRouting=routing)
    return r.model_copy(update={"metadata": r.metadata.model_copy(update={"namespace": namespace})})


@pytest.mark.parametrize(
    ("routing", "expected"),
    [
        pytest.param({"istio": {"virtualService": {"name": "web"}}}, [], id="istio, own namespace"),
        pytest.param({"istio": {"virtualService": {"name": "ns/web"}}}, [], id="istio, own namespace named"),
        pytest.param(
            {"istio": {"virtualService": {"name": "victim/web"}}},
            [(f"{ROUTING}.istio.virtualService.name", "VirtualService", "victim", "web")],
            id="istio, another namespace",
        ),
        pytest.param(
            {"istio": {"virtualServices": [{"name": "web"}, {"name": "victim/edge"}]}},
            [(f"{ROUTING}.istio.virtualServices[1].name", "VirtualService", "victim", "edge")],
            id="istio, the second of several VirtualServices in another namespace",
        ),
        pytest.param({"gatewayAPI": {"httpRoute": "web"}}, [], id="gateway, no namespace"),
        pytest.param(
            {"gatewayAPI": {"httpRoute": "web", "namespace": "ns"}}, [], id="gateway, own namespace"
        ),
        pytest.param(
            {"gatewayAPI": {"httpRoute": "web", "grpcRoutes": [{"name": "rpc"}], "namespace": "gateways"}},
            [
                (f"{ROUTING}.gatewayAPI.namespace", "HTTPRoute", "gateways", "web"),
                (f"{ROUTING}.gatewayAPI.namespace", "GRPCRoute", "gateways", "rpc"),
            ],
            id="gateway, another namespace",
        ),
        pytest.param(
            {"plugins": {"argoproj-labs/gatewayAPI": {"httpRoute": "web", "namespace": "victim"}}},
            [(f"{ROUTING}.plugins.argoproj-labs/gatewayAPI.namespace", "HTTPRoute", "victim", "web")],
            id="Argo's plugin alias, another namespace",
        ),
    ],
)
def test_every_field_that_names_another_namespace_is_found(
    routing: dict[str, Any], expected: list[tuple[str, str, str, str]]
) -> None:
    found = [(r.field, r.kind, r.namespace, r.name) for r in foreign_references(rollout(routing))]
    assert found == expected


def target(annotation: str | None) -> dict[str, Any]:
    annotations = {CONSENT_ANNOTATION: annotation} if annotation is not None else {}
    return {"metadata": {"name": "web", "namespace": "victim", "annotations": annotations}}


@pytest.mark.parametrize(
    ("target_object", "allowed"),
    [
        pytest.param(None, False, id="missing object"),
        pytest.param(target(None), False, id="no annotation"),
        pytest.param(target(""), False, id="empty annotation"),
        pytest.param(target("shop"), False, id="another namespace consents"),
        pytest.param(target("ns"), True, id="the Rollout's namespace"),
        pytest.param(target("shop, ns"), True, id="in a list"),
        pytest.param(target("ns/web"), True, id="this Rollout by name"),
        pytest.param(target("ns/api"), False, id="another Rollout of the namespace"),
        pytest.param(target("*"), False, id="no wildcard"),
        pytest.param(target("nsx"), False, id="a namespace with the same prefix"),
    ],
)
def test_only_an_annotation_naming_the_rollout_or_its_namespace_consents(
    target_object: dict[str, Any] | None, allowed: bool
) -> None:
    (reference,) = foreign_references(rollout({"istio": {"virtualService": {"name": "victim/web"}}}))
    problem = refusal(reference, "ns", "web", target_object)
    assert (problem is None) == allowed, problem
    if problem is not None:
        assert problem.startswith(f"{ROUTING}.istio.virtualService.name: VirtualService victim/web")
        assert CONSENT_ANNOTATION in problem


def test_a_refused_router_is_an_invalid_spec_and_the_plan_moves_no_traffic() -> None:
    r = canary_rollout(
        trafficRouting={"istio": {"virtualService": {"name": "victim/web"}}},
        status=status_mid_canary(0),
    )
    problem = f"{ROUTING}.istio.virtualService.name: VirtualService victim/web is in another namespace"
    router = RouterState(kind="istio", ok=False, problem=problem, refused=True)
    p = plan(observed(r, [rs("web:1", 4)], {"web-stable": V1, "web-canary": V1}, router=router))
    invalid = {c["type"]: c for c in p.status.wire()["conditions"]}["InvalidSpec"]
    assert invalid["status"] == "True" and problem in invalid["message"]
    assert not [a for a in p.actions if isinstance(a, SetTraffic)]
    assert p.status.phase == "Degraded"


def test_router_for_refuses_another_namespace_until_its_object_consents() -> None:
    import asyncio
    from typing import cast

    from tidegate.k8s.cache import HTTPROUTES, Cache, Store
    from tidegate.k8s.client import Clients
    from tidegate.routers import router_for
    from tidegate.routers._base import RefusedRouter

    cache = Cache(cast(Clients, None))
    cache.httproutes = Store(HTTPROUTES)
    r = rollout({"gatewayAPI": {"httpRoute": "web", "namespace": "victim"}})
    metadata = {"name": "web", "namespace": "victim", "annotations": {}}
    route: dict[str, Any] = {"metadata": metadata, "spec": {}}
    cache.httproutes.objects[("victim", "web")] = route
    refused = router_for(r, cast(Clients, None), cache)
    assert isinstance(refused, RefusedRouter)
    state = asyncio.run(refused.apply(SetTraffic(50, "a", "b", ())))
    assert state.refused and state.problem is not None
    assert state.problem.startswith(f"{ROUTING}.gatewayAPI.namespace: HTTPRoute victim/web")
    route["metadata"]["annotations"][CONSENT_ANNOTATION] = "ns"
    assert not isinstance(router_for(r, cast(Clients, None), cache), RefusedRouter)

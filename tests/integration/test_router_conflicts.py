"""Both routers against the real API server: a write planned from a stale copy of the routed
object meets its resourceVersion `test` (which the API server fails with a bare 422), re-reads
the object and writes again, keeping the edit made meanwhile."""

from __future__ import annotations

import asyncio

from tests.e2e.dsl import _load
from tests.kube import Kube
from tidegate.api.rollout import Rollout
from tidegate.core.model import HeaderRoute, SetTraffic
from tidegate.k8s.cache import ISTIO_GROUP, Cache, Kind, Store
from tidegate.k8s.client import Clients
from tidegate.routers.gatewayapi import GatewayAPIRouter
from tidegate.routers.istio import IstioRouter

ROUTE = "httproutes.gateway.networking.k8s.io"


def test_a_stale_write_is_retried_on_the_fresh_route_and_keeps_the_concurrent_edit(kube: Kube) -> None:
    kube.apply_file("examples/gateway-api/services.yaml")
    kube.apply_file("examples/gateway-api/httproute.yaml")
    stale = kube.get(ROUTE, "api-gateway")
    kube.patch(ROUTE, "api-gateway", {"spec": {"hostnames": ["edited.example.com"]}})  # someone else's edit
    doc = _load("examples/gateway-api/rollout.yaml", "Rollout")
    doc["metadata"]["namespace"] = kube.namespace
    rollout = Rollout.from_body(doc)
    clients = Clients.load(str(kube.sandbox.kubeconfig))
    cache = Cache(clients)  # not started: it holds only the stale copy
    cache.put(cache.httproutes, stale)
    router = GatewayAPIRouter(rollout, clients, cache)
    header = HeaderRoute("canary-header", (("x-canary", "exact", "true"),))

    state = asyncio.run(router.apply(SetTraffic(5, "s", "c", (header,))))

    assert router.conflicts == 1, "the first patch's resourceVersion test failed once"
    assert (state.ok, state.canary_weight, state.stable_weight, state.header_routes) == (
        True,
        5,
        95,
        ("canary-header",),
    )
    route = kube.get(ROUTE, "api-gateway")
    assert route["spec"]["hostnames"] == ["edited.example.com"], "the concurrent edit is kept"
    assert [r.get("weight") for r in route["spec"]["rules"][0]["backendRefs"]] == [95, 5]
    assert [r.get("name") for r in route["spec"]["rules"]] == ["primary", "canary-header"]


def test_a_stale_virtualservice_write_is_retried_likewise(kube: Kube) -> None:
    kube.apply_file("examples/canary/services.yaml")
    kube.apply_file("examples/canary/virtualservice.yaml")
    vs_kind = "virtualservices.networking.istio.io"
    stale = kube.get(vs_kind, "web")
    kube.patch(vs_kind, "web", {"metadata": {"labels": {"edited": "yes"}}})
    doc = _load("examples/canary/rollout.yaml", "Rollout")
    doc["metadata"]["namespace"] = kube.namespace
    clients = Clients.load(str(kube.sandbox.kubeconfig))
    cache = Cache(clients)
    cache.virtualservices = Store(Kind("virtualservices", ISTIO_GROUP, "v1", "virtualservices"))
    cache.put(cache.virtualservices, stale)
    router = IstioRouter(Rollout.from_body(doc), clients, cache)

    state = asyncio.run(router.apply(SetTraffic(30, "s", "c", ())))

    assert router.conflicts == 1
    assert (state.ok, state.canary_weight, state.stable_weight) == (True, 30, 70)
    vs = kube.get(vs_kind, "web")
    assert vs["metadata"]["labels"]["edited"] == "yes"
    assert [d["weight"] for d in vs["spec"]["http"][0]["route"]] == [70, 30]

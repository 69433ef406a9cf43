"""The router Protocol and its registry."""

from __future__ import annotations

from typing import Literal

from tidegate.api.rollout import Rollout
from tidegate.core.isolation import foreign_references, refusal
from tidegate.core.model import RouterState, SetTraffic, TrafficRouter
from tidegate.k8s.cache import Cache
from tidegate.k8s.client import Clients


class NoRouter:
    """Without a traffic router, Services and pod counts do the splitting."""

    conflicts = 0

    async def read(self, stable_hash: str | None, canary_hash: str | None) -> RouterState:
        return RouterState(kind="none")

    async def apply(self, action: SetTraffic) -> RouterState:
        return RouterState(kind="none")


class RefusedRouter:
    """A router whose objects the Rollout may not steer (another namespace, without consent):
    it reads nothing and writes nothing; the planner makes the problem an InvalidSpec."""

    conflicts = 0

    def __init__(self, kind: Literal["istio", "gatewayAPI"], problem: str) -> None:
        self._state = RouterState(kind=kind, ok=False, problem=problem, refused=True)

    async def read(self, stable_hash: str | None, canary_hash: str | None) -> RouterState:
        return self._state

    async def apply(self, action: SetTraffic) -> RouterState:
        return self._state


def isolation_problem(rollout: Rollout, cache: Cache) -> str | None:
    """Why the Rollout may not steer an object it names in another namespace (None: it may)."""
    namespace, name = rollout.metadata.namespace or "default", rollout.metadata.name or ""
    stores = {
        "virtualservices": cache.virtualservices,
        "httproutes": cache.httproutes,
        "grpcroutes": cache.grpcroutes,
    }
    problems = []
    for reference in foreign_references(rollout):
        store = stores.get(reference.plural)
        target = store.get(reference.namespace, reference.name) if store is not None else None
        problem = refusal(reference, namespace, name, target)
        if problem is not None and problem not in problems:
            problems.append(problem)
    return "; ".join(problems) or None


def router_for(rollout: Rollout, clients: Clients, cache: Cache) -> TrafficRouter:
    """The router a Rollout's trafficRouting names (validation refuses a spec naming two)."""
    canary = rollout.spec.strategy.canary
    kind = canary.traffic_routing.router() if canary is not None and canary.traffic_routing else None
    if kind in ("istio", "gatewayAPI"):
        problem = isolation_problem(rollout, cache)
        if problem is not None:
            return RefusedRouter(kind, problem)
    if kind == "istio":
        from tidegate.routers.istio import IstioRouter

        return IstioRouter(rollout, clients, cache)
    if kind == "gatewayAPI":
        from tidegate.routers.gatewayapi import GatewayAPIRouter

        return GatewayAPIRouter(rollout, clients, cache)
    return NoRouter()

"""The router Protocol and its registry."""

from __future__ import annotations

from typing import Protocol

from tidegate.api.rollout import Rollout
from tidegate.core.model import RouterState, SetTraffic
from tidegate.k8s.client import Clients


class TrafficRouter(Protocol):
    async def read(self, stable_hash: str | None, canary_hash: str | None) -> RouterState:
        """The router's state as it is in the cluster (never raises for a missing object)."""
        ...

    async def apply(self, action: SetTraffic) -> RouterState:
        """Set weights and managed routes; returns the state read back afterwards."""
        ...


class NoRouter:
    """Without a traffic router, Services and pod counts do the splitting."""

    async def read(self, stable_hash: str | None, canary_hash: str | None) -> RouterState:
        return RouterState(kind="none")

    async def apply(self, action: SetTraffic) -> RouterState:
        return RouterState(kind="none")


def router_for(rollout: Rollout, clients: Clients) -> TrafficRouter:
    canary = rollout.spec.strategy.canary
    if canary is not None and canary.traffic_routing is not None and canary.traffic_routing.istio is not None:
        from tidegate.routers.istio import IstioRouter

        return IstioRouter(rollout, clients)
    return NoRouter()

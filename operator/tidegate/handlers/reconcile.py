"""One reconcile pass: observe -> plan -> execute. No decisions here."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from tidegate.api.rollout import Rollout
from tidegate.core import planner
from tidegate.core.model import Event, SetTraffic
from tidegate.k8s.client import Clients, call
from tidegate.k8s.execute import GROUP, VERSION, execute
from tidegate.k8s.observe import get_rollout, observe
from tidegate.routers import router_for

log = logging.getLogger("tidegate.reconcile")

EventSink = Callable[[dict[str, Any], Event], Awaitable[None]]


def _invalid_status(raw: dict[str, Any], exc: ValidationError) -> dict[str, Any]:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    message = f"invalid spec: {where}: {first.get('msg')} (the running version keeps serving)"
    now = planner.iso(datetime.now(UTC))
    old = (raw.get("status") or {}).get("conditions") or []
    kept = [c for c in old if c.get("type") not in ("InvalidSpec", "Ready", "Stalled")]
    return {
        "phase": "Degraded",
        "message": message,
        "observedGeneration": (raw.get("metadata") or {}).get("generation"),
        "conditions": [
            *kept,
            {
                "type": "InvalidSpec",
                "status": "True",
                "reason": "InvalidSpec",
                "message": message,
                "lastTransitionTime": now,
            },
            {
                "type": "Ready",
                "status": "False",
                "reason": "Degraded",
                "message": message,
                "lastTransitionTime": now,
            },
            {
                "type": "Stalled",
                "status": "True",
                "reason": "InvalidSpec",
                "message": message,
                "lastTransitionTime": now,
            },
        ],
    }


@dataclass(frozen=True)
class PassResult:
    requeue_after: float | None
    """Seconds until the next pass is needed, or None (wait for events)."""
    status: dict[str, Any]
    strategy: str = "canary"


async def reconcile(clients: Clients, namespace: str, name: str, emit: EventSink) -> PassResult | None:
    """Run one pass; None when the Rollout is gone."""
    raw = await get_rollout(clients, namespace, name)
    if raw is None or (raw.get("metadata") or {}).get("deletionTimestamp"):
        return None
    try:
        rollout = Rollout.from_body(raw)
    except ValidationError as exc:
        status = _invalid_status(raw, exc)
        if (raw.get("status") or {}).get("message") != status["message"]:
            await call(
                clients.custom.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                namespace,
                "rollouts",
                name,
                {"status": status},
            )
            await emit(raw, Event("InvalidSpec", status["message"], "Warning"))
        return PassResult(None, status)
    router = router_for(rollout, clients)
    observed = await observe(clients, rollout, router)
    plan = planner.plan(observed)

    async def sink(event: Event) -> None:
        await emit(raw, event)

    await execute(clients, rollout, raw.get("status") or {}, plan, router, sink)
    strategy = "canary" if rollout.spec.strategy.canary is not None else "blueGreen"
    return PassResult(plan.requeue_after, plan.status, strategy)


async def release_traffic(clients: Clients, namespace: str, name: str) -> None:
    """Before a Rollout goes away: all traffic to stable, managed routes removed."""
    raw = await get_rollout(clients, namespace, name)
    if raw is None:
        return
    try:
        rollout = Rollout.from_body(raw)
    except ValidationError:
        return
    stable = rollout.status.stable_rs
    if stable is None:
        return
    router = router_for(rollout, clients)
    state = await router.read(stable, stable)
    if state.ok and (state.canary_weight != 0 or state.header_routes):
        await router.apply(SetTraffic(0, stable, rollout.status.current_pod_hash or stable, ()))
        log.info("released traffic of %s/%s to stable %s", namespace, name, stable)

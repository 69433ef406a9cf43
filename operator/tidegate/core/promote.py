"""After the last step (or promote --full): the canary at full size takes all traffic and becomes stable."""

from __future__ import annotations

from typing import Any

from tidegate.api.rollout import CanaryStrategy
from tidegate.core.toolkit import (
    Pass,
    canary_endpoints_short,
    ensure_replica_set,
    point_service,
    rs_by_hash,
    steps_done,
    template_of,
)
from tidegate.core.traffic import (
    basic_canary_counts,
    max_weight,
    router_on,
    set_traffic,
)


def plan_promote(
    p: Pass,
    canary: CanaryStrategy,
    current_hash: str,
    stable_hash: str,
    template: dict[str, Any],
    replicas: int,
) -> None:
    """After the last step (or promote --full): canary to full scale, all traffic to it, then it is stable."""
    st = p.status
    n = len(canary.steps)
    if router_on(canary):
        # The stable keeps its scale: it carries traffic until the weight moves.
        canary_target = replicas
    else:
        # Without a router the pod counts are the split: grow the canary within maxSurge
        # while the stable shrinks as canary pods become available.
        canary_target, stable_target = basic_canary_counts(
            p, canary, 100, current_hash, stable_hash, replicas
        )
        ready = rs_by_hash(p.obs, current_hash)
        old = rs_by_hash(p.obs, stable_hash)
        if ready is not None and ready.available >= replicas and old is not None:
            # The pass that promotes leaves the old stable as it is: promotion is recorded
            # first, and the old version goes in the next pass, as any previous one does.
            stable_target = max(stable_target, old.replicas)
        ensure_replica_set(p, stable_hash, template_of(p.obs, stable_hash, template), stable_target)
    canary_rs = ensure_replica_set(p, current_hash, template, canary_target)
    available = canary_rs.available if canary_rs else 0
    steps_done(p, n)
    if available < replicas:
        p.message = f"promoting: waiting for {available}/{replicas} new pods available"
        return
    if not point_service(p, canary.canary_service, current_hash):
        return
    short = canary_endpoints_short(p, canary, canary_rs, replicas) if router_on(canary) else None
    if short is not None:
        p.message = f"promoting: {short}"
        return
    if not set_traffic(p, canary, max_weight(canary), stable_hash, current_hash):
        p.message = "promoting: moving all traffic to the new version"
        return
    st.stable_rs = current_hash
    st.promote_full = False
    p.event("RolloutPromoted", f"revision {current_hash} is now stable")
    p.message = "promoted; retiring the previous version"
    p.wake_in(0.05)

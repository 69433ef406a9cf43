"""Steady state: one version at full scale, both Services and all traffic on it, the rest retired."""

from __future__ import annotations

from typing import Any

from tidegate.api.rollout import CanaryStrategy
from tidegate.core.toolkit import (
    Pass,
    clear_pauses,
    ensure_replica_set,
    other_capacity,
    point_service,
    retire_others,
    service_hashes,
    steps_done,
)
from tidegate.core.traffic import (
    set_traffic,
)


def plan_steady(
    p: Pass, canary: CanaryStrategy, current_hash: str, template: dict[str, Any], replicas: int
) -> None:
    """Everything on one version: full scale, both Services and all traffic on it, the rest retired."""
    st = p.status
    rs = ensure_replica_set(p, current_hash, template, replicas)
    steps_done(p, len(canary.steps))
    clear_pauses(st)
    st.promote_full = False
    st.abort = False
    st.aborted_at = None
    st.skip_step = None
    if rs is None or rs.available < min(replicas, 1):
        p.message = f"waiting for {rs.available if rs else 0}/{replicas} pods available"
        return
    ready_enough = rs.available >= replicas
    # Services move to the stable pods only once those carry full capacity.
    switched = True
    if ready_enough or not other_capacity(p, current_hash):
        switched = point_service(p, canary.stable_service, current_hash) and switched
        switched = point_service(p, canary.canary_service, current_hash) and switched
    in_place = set_traffic(p, canary, 0, current_hash, current_hash) if switched else False
    if switched and in_place:
        retire_others(
            p,
            {current_hash},
            canary.scale_down_delay(),
            service_hashes(p),
            canary.scale_down_delay_revision_limit,
        )
    if rs.available < replicas:
        p.message = f"waiting for {rs.available}/{replicas} pods available"
    elif not (switched and in_place):
        p.message = "moving all traffic to the stable version"
    else:
        p.complete = True
        p.message = "healthy"

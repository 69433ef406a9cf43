"""An aborted canary: all traffic back to stable at once, the canary scaled down after its delay."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tidegate.api.rollout import CanaryStrategy
from tidegate.core.durations import format_duration
from tidegate.core.model import (
    ScaleReplicaSet,
)
from tidegate.core.toolkit import (
    Pass,
    clear_pauses,
    ensure_replica_set,
    iso,
    parse_time,
    point_service,
    retire_others,
    rs_by_hash,
    service_hashes,
    template_of,
)
from tidegate.core.traffic import (
    set_traffic,
)


def plan_aborted(
    p: Pass,
    canary: CanaryStrategy,
    current_hash: str,
    stable_hash: str,
    template: dict[str, Any],
    replicas: int,
) -> None:
    obs, st = p.obs, p.status
    p.aborted = True
    if not st.aborted_at:
        st.aborted_at = iso(obs.now)
        p.event(
            "RolloutAborted", f"aborted revision {current_hash}: all traffic back to stable", warning=True
        )
    st.aborted_revision = current_hash
    clear_pauses(st)
    stable = ensure_replica_set(p, stable_hash, template_of(obs, stable_hash, template), replicas)
    point_service(p, canary.stable_service, stable_hash)
    # All traffic back to stable at once (stable keeps full scale unless dynamicStableScale).
    if stable is not None and (stable.available >= replicas or not canary.dynamic_stable_scale):
        in_place = set_traffic(p, canary, 0, stable_hash, current_hash)
    else:
        in_place = False
    why = st.abort_message or "aborted by request"
    p.message = f"rollout aborted ({why}): all traffic on the stable version"
    # The canary Service goes back to the stable pods too (Argo Rollouts' reconcileStableAndCanaryService
    # on abort), so nothing that reads it directly reaches the aborted revision.
    if in_place:
        point_service(p, canary.canary_service, stable_hash)
    canary_rs = rs_by_hash(obs, current_hash)
    delay = canary.abort_scale_down_delay()
    if delay is None and canary_rs is not None and canary_rs.replicas > 0:
        p.message += "; canary pods kept (abortScaleDownDelaySeconds: 0)"
    elif canary_rs is not None and canary_rs.replicas > 0 and in_place and delay is not None:
        aborted_at = parse_time(st.aborted_at) or obs.now
        due = aborted_at + timedelta(seconds=delay)
        remaining = (due - obs.now).total_seconds()
        if remaining <= 0:
            p.actions.append(ScaleReplicaSet(canary_rs.name, 0))
        else:
            p.wake_in(remaining)
            p.message += f"; canary pods scaled down in {format_duration(remaining)}"
    retire_others(p, {stable_hash, current_hash}, 0, service_hashes(p))

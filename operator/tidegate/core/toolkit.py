"""The planner's shared toolkit: one pass's scratch state, times, ReplicaSets, Services.

Every per-state module (steady, step, pause, promote, abort, blue-green) builds on these;
none of them imports another state module, so there are no cycles."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tidegate.api.rollout import (
    CanaryStrategy,
    PauseCondition,
    PauseReason,
    Rollout,
    RolloutStatus,
)
from tidegate.core.hashing import HASH_LABEL
from tidegate.core.model import (
    AnyAction,
    CreateReplicaSet,
    Event,
    MarkScaleDown,
    ObservedState,
    ReplicaSetInfo,
    ScaleReplicaSet,
    SetServiceSelector,
)

# How soon to look again while waiting on something no watch event announces
# (a Service or VirtualService created later).
RETRY_MISSING_SECONDS = 10.0


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_ceil(t: datetime) -> str:
    """A start time in whole seconds, rounded up: a wait counted from it never ends early."""
    if t.microsecond:
        t = t.replace(microsecond=0) + timedelta(seconds=1)
    return iso(t)


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def percent_of(value: int | str, total: int, *, round_up: bool) -> int:
    """An int-or-percent against a total, like Kubernetes' intstr helpers."""
    if isinstance(value, int):
        return value
    text = value.strip()
    if text.endswith("%"):
        exact = float(text[:-1]) * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(text)


def canary_replicas_for_weight(weight: int, replicas: int, top: int = 100) -> int:
    """ceil(weight / top x replicas), at least 1 while weight > 0 (Argo Rollouts'
    trafficWeightToReplicas; `top` is maxTrafficWeight).

    >>> canary_replicas_for_weight(10, 5), canary_replicas_for_weight(50, 5), canary_replicas_for_weight(0, 5)
    (1, 3, 0)
    >>> canary_replicas_for_weight(250, 4, 1000)
    1
    """
    if weight <= 0:
        return 0
    return max(1, math.ceil(weight * replicas / top))


@dataclass
class Pass:
    """Scratch state of one pass: what the planner has decided so far."""

    obs: ObservedState
    status: RolloutStatus
    """The status being planned: a copy of the observed one, which the pass changes."""
    actions: list[AnyAction] = field(default_factory=list)
    requeue: float | None = None
    message: str = ""
    paused: bool = False
    aborted: bool = False
    complete: bool = False
    invalid: str | None = None
    wanted_runs: set[str] = field(default_factory=set)

    def wake_in(self, seconds: float) -> None:
        seconds = max(seconds, 0.05)
        self.requeue = seconds if self.requeue is None else min(self.requeue, seconds)

    def event(self, reason: str, message: str, warning: bool = False, *, action: bool = False) -> None:
        self.actions.append(Event(reason, message, "Warning" if warning else "Normal", action))


def rs_by_hash(obs: ObservedState, pod_hash: str | None) -> ReplicaSetInfo | None:
    if pod_hash is None:
        return None
    for rs in obs.replica_sets:
        if rs.pod_hash == pod_hash:
            return rs
    return None


def with_role_metadata(p: Pass, pod_hash: str, template: dict[str, Any]) -> dict[str, Any]:
    """A new ReplicaSet's template with the ephemeral metadata of the role it starts in:
    the canary's (or preview's), or the stable's (or active's) for the first revision."""
    strategy = p.obs.rollout.spec.strategy
    first = p.status.stable_rs in (None, pod_hash)
    if strategy.canary is not None:
        meta = strategy.canary.stable_metadata if first else strategy.canary.canary_metadata
    elif strategy.blue_green is not None:
        meta = strategy.blue_green.active_metadata if first else strategy.blue_green.preview_metadata
    else:
        meta = None
    if meta is None or not (meta.labels or meta.annotations):
        return template
    metadata = dict(template.get("metadata") or {})
    metadata["labels"] = {**(metadata.get("labels") or {}), **meta.labels}
    if meta.annotations:
        metadata["annotations"] = {**(metadata.get("annotations") or {}), **meta.annotations}
    return {**template, "metadata": metadata}


def with_anti_affinity(p: Pass, pod_hash: str, template: dict[str, Any]) -> dict[str, Any]:
    """The template of a new version with the strategy's antiAffinity to the stable pods injected
    (Argo Rollouts' GenerateReplicaSetAffinity: topology kubernetes.io/hostname); the hash is
    that of the template as written."""
    strategy = p.obs.rollout.spec.strategy
    anti = strategy.canary.anti_affinity if strategy.canary is not None else None
    anti = anti or (strategy.blue_green.anti_affinity if strategy.blue_green is not None else None)
    stable = p.status.stable_rs
    if anti is None or not stable or stable == pod_hash:
        return template
    term: dict[str, Any] = {
        "labelSelector": {"matchExpressions": [{"key": HASH_LABEL, "operator": "In", "values": [stable]}]},
        "namespaces": [p.obs.rollout.metadata.namespace or "default"],
        "topologyKey": "kubernetes.io/hostname",
    }
    spec = dict(template.get("spec") or {})
    affinity = dict(spec.get("affinity") or {})
    pod_anti = dict(affinity.get("podAntiAffinity") or {})
    preferred = anti.preferred_during_scheduling_ignored_during_execution
    entry: dict[str, Any]
    if preferred is not None:
        key, entry = (
            "preferredDuringSchedulingIgnoredDuringExecution",
            {"weight": preferred.weight, "podAffinityTerm": term},
        )
    else:
        key, entry = "requiredDuringSchedulingIgnoredDuringExecution", term
    pod_anti[key] = [*(pod_anti.get(key) or []), entry]
    affinity["podAntiAffinity"] = pod_anti
    spec["affinity"] = affinity
    return {**template, "spec": spec}


def ensure_replica_set(
    p: Pass, pod_hash: str, template: dict[str, Any], replicas: int
) -> ReplicaSetInfo | None:
    """Create the ReplicaSet of a template, or scale it; returns it when it exists."""
    rs = rs_by_hash(p.obs, pod_hash)
    name = f"{p.obs.rollout.metadata.name}-{pod_hash}"
    if rs is None:
        revision = max((x.revision for x in p.obs.replica_sets), default=0) + 1
        template = with_role_metadata(p, pod_hash, with_anti_affinity(p, pod_hash, template))
        p.actions.append(CreateReplicaSet(name, pod_hash, revision, replicas, template))
        p.event(
            "ReplicaSetCreated",
            f"created ReplicaSet {name} (revision {revision}) with {replicas} pods",
            action=True,
        )
        return None
    if rs.replicas != replicas:
        p.actions.append(ScaleReplicaSet(rs.name, replicas))
        if rs.scale_down_at is not None and replicas > 0:
            p.actions.append(MarkScaleDown(rs.name, None))
    elif rs.scale_down_at is not None and replicas > 0:
        p.actions.append(MarkScaleDown(rs.name, None))
    return rs


ENDPOINT_RETRY_SECONDS = 5.0
"""A backstop for a pass that waits on EndpointSlices: their own change wakes it sooner."""


def retire_others(
    p: Pass, keep: set[str], delay: float, selected_hashes: set[str], limit: int | None = None
) -> None:
    """Scale every ReplicaSet not in `keep` to 0 once nothing routes to it and its delay passed.

    `limit` (scaleDownDelayRevisionLimit): at most that many old ReplicaSets wait out their
    delay with pods, the newest; older ones go at once (Argo Rollouts' semantics)."""
    now = p.obs.now
    waiting = 0
    gap = endpoint_gap(p)
    for rs in sorted(p.obs.replica_sets, key=lambda r: r.revision, reverse=True):
        if rs.pod_hash in keep or rs.replicas == 0:
            continue
        if rs.pod_hash in selected_hashes:
            continue  # a Service still selects it: move the selector first
        if gap is not None:
            # A Service was just pointed at pods its EndpointSlices do not list yet: the old
            # pods may still be all that serves it. Their slices' change wakes the next pass.
            p.wake_in(ENDPOINT_RETRY_SECONDS)
            continue
        if delay > 0 and limit is not None:
            waiting += 1
            if waiting > limit:
                p.actions.append(ScaleReplicaSet(rs.name, 0))
                p.event(
                    "ScaledDown",
                    f"scaled down ReplicaSet {rs.name} (revision {rs.revision}): "
                    f"beyond scaleDownDelayRevisionLimit {limit}",
                    action=True,
                )
                continue
        if rs.scale_down_at is None:
            if delay <= 0:
                p.actions.append(ScaleReplicaSet(rs.name, 0))
                continue
            p.actions.append(MarkScaleDown(rs.name, now + timedelta(seconds=delay)))
            p.wake_in(delay)
            continue
        remaining = (rs.scale_down_at - now).total_seconds()
        if remaining <= 0:
            p.actions.append(ScaleReplicaSet(rs.name, 0))
            p.event("ScaledDown", f"scaled down ReplicaSet {rs.name} (revision {rs.revision})", action=True)
        else:
            p.wake_in(remaining)


def service_hashes(p: Pass) -> set[str]:
    return {h for s in p.obs.services.values() if (h := s.pod_hash)}


def point_service(p: Pass, service: str | None, pod_hash: str) -> bool:
    """Point a Service at a hash; True when it already selects it."""
    if not service:
        return True
    svc = p.obs.services.get(service)
    if svc is None or svc.pod_hash == pod_hash:
        return True
    p.actions.append(SetServiceSelector(service, pod_hash))
    p.wake_in(0.0)  # the cache holds the answer to the write: the next pass can go on at once
    served = any(c.type == "Available" and c.status == "True" for c in p.obs.rollout.status.conditions)
    if svc.pod_hash is None and p.obs.rollout.status.stable_rs is not None and served:
        # It had been pointed (the Rollout served): someone took the selector away. A first
        # deploy, whose Services never had it, is no correction.
        p.event(
            "ServiceSelectorCorrected",
            f"Service {service} had lost its {HASH_LABEL} selector (changed outside Tidegate); "
            f"it selects pods {pod_hash} again",
            warning=True,
            action=True,
        )
    else:
        p.event("ServiceSwitched", f"Service {service} now selects pods {pod_hash}", action=True)
    return False


def template_of(obs: ObservedState, pod_hash: str, fallback: dict[str, Any]) -> dict[str, Any]:
    rs = rs_by_hash(obs, pod_hash)
    return rs.template if rs is not None and rs.template else fallback


def other_capacity(p: Pass, current_hash: str) -> bool:
    return any(rs.available > 0 for rs in p.obs.replica_sets if rs.pod_hash != current_hash)


def restart_pending(r: Rollout) -> bool:
    return bool(r.spec.restart_at) and r.status.restarted_at != r.spec.restart_at


def selector_string(r: Rollout) -> str:
    labels = r.spec.pod_selector.match_labels
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def missing_objects(obs: ObservedState) -> str | None:
    for svc in obs.services.values():
        if not svc.exists:
            return f"Service {svc.name} not found"
    if not obs.router.ok:
        return obs.router.problem or "traffic router not ready"
    return None


def detect_retry(p: Pass, current_hash: str) -> None:
    """A retry is the intent `status.abort: false` on the aborted revision, from any client.

    The operator, not the client, starts the steps again, as Argo Rollouts' controller
    resets the step index when an abort is lifted (rolloutContext.resetRolloutStatus):
    step 1, no pause, a fresh round of analysis runs, the progress clock from now.
    """
    st = p.status
    if st.abort or st.aborted_revision != current_hash:
        return
    st.analysis_round += 1
    forget_abort(st)
    st.skip_step = None
    st.inconclusive_paused = None
    st.analysis_blocked = None
    start_steps(p)
    if p.obs.rollout.spec.strategy.blue_green is not None:
        st.step_started_at = None  # the auto-promotion wait starts over
        st.blue_green.promoting = False
    p.event("RolloutRetried", f"retrying revision {current_hash} from the first step")


def rollback_within_window(p: Pass, current_hash: str, stable_hash: str) -> bool:
    """The revision is an older one, within spec.rollbackWindow: it skips the steps.

    Argo Rollouts' isRollbackWithinWindow: the new ReplicaSet was made before the stable
    one, and fewer than `revisions` ReplicaSets were made between the two."""
    window = p.obs.rollout.spec.rollback_window
    new, stable = rs_by_hash(p.obs, current_hash), rs_by_hash(p.obs, stable_hash)
    if window is None or window.revisions <= 0 or new is None or stable is None:
        return False
    if new.created_at is None or stable.created_at is None or not new.created_at < stable.created_at:
        return False
    between = sum(
        1
        for rs in p.obs.replica_sets
        if rs.created_at is not None and new.created_at < rs.created_at < stable.created_at
    )
    return between < window.revisions


def promote_past_abort(p: Pass, current_hash: str) -> None:
    """`promoteFull` on an aborted revision lifts the abort and promotes it fully, as Argo
    Rollouts' controller does (rolloutContext: PromoteFull clears the pause conditions and
    removes the abort)."""
    st = p.status
    if not (st.abort and st.promote_full):
        return
    st.abort = False
    forget_abort(st)
    st.skip_step = None
    st.inconclusive_paused = None
    clear_pauses(st)
    st.progress_at = iso(p.obs.now)
    p.event("RolloutPromoting", f"promoting revision {current_hash} fully: its abort is lifted")


# The step bookkeeping: only these functions write status.currentStepIndex.


def start_steps(p: Pass) -> None:
    """Step 1 from now: no pause, no full promotion pending, the progress clock restarted."""
    st = p.status
    st.current_step_index = 0
    clear_pauses(st)
    st.promote_full = False
    st.step_started_at = iso(p.obs.now)
    st.progress_at = iso(p.obs.now)


def step_complete(p: Pass, index: int, n: int, why: str) -> None:
    st = p.status
    st.analysis_blocked = None  # whatever analysis it waited for is behind it now
    st.current_step_index = index + 1
    st.step_started_at = iso(p.obs.now)
    p.message = why
    p.event(
        "StepCompleted", f"{why}; moving to step {index + 2}/{n}" if index + 1 < n else f"{why}; promoting"
    )
    p.wake_in(0.05)


def steps_done(p: Pass, n: int) -> None:
    """Every step is behind the rollout (a promotion, or one version only)."""
    p.status.current_step_index = n


# Pauses and aborts, as the status records them.


def clear_pauses(st: RolloutStatus) -> None:
    st.pause_conditions = []
    st.controller_pause = False


def paused_for(st: RolloutStatus, reason: PauseReason) -> list[PauseCondition]:
    return [c for c in st.pause_conditions if c.reason == reason]


def add_pause(st: RolloutStatus, reason: PauseReason, start: str) -> None:
    st.pause_conditions = [*st.pause_conditions, PauseCondition(reason=reason, start_time=start)]
    st.controller_pause = True


def drop_pause(st: RolloutStatus, reason: PauseReason) -> None:
    st.pause_conditions = [c for c in st.pause_conditions if c.reason != reason]
    st.controller_pause = False


def forget_abort(st: RolloutStatus) -> None:
    """The record of an abort, once it no longer holds (a retry, a new revision, a promotion)."""
    st.aborted_at = None
    st.aborted_revision = None
    st.abort_message = None


def endpoint_gap(p: Pass) -> str | None:
    """A Service of the Rollout that selects pods none of whose endpoints are ready yet
    (None: every Service reaches a ready pod of what it selects, or it is not known).

    Checked before an old ReplicaSet is scaled down: right after a selector moves, the
    EndpointSlices still list the previous pods for a moment, and scaling those away then
    would leave the Service with no ready endpoint at all.
    """
    for svc in p.obs.services.values():
        pod_hash = svc.pod_hash
        if not svc.exists or pod_hash is None or svc.ready_pods is None:
            continue
        rs = rs_by_hash(p.obs, pod_hash)
        if rs is None or rs.available == 0:
            continue  # nothing ready to wait for: no scale-down would change what it reaches
        if not svc.ready_pods_of(rs.name):
            return f"Service {svc.name} lists no ready endpoint of ReplicaSet {rs.name} yet"
    return None


def endpoints_short(p: Pass, service: str | None, wanted: int) -> str | None:
    """Why traffic must not go to `service` yet: fewer than `wanted` ready endpoints (None: it may).

    The ReplicaSet says its pods are ready before the Service's EndpointSlices list them, and
    the traffic router sends to the Service: weight follows the slices, as Argo Rollouts
    waits for the canary Service's endpoints before shifting weight.
    """
    svc = p.obs.services.get(service or "")
    if svc is None or svc.ready_endpoints is None or svc.ready_endpoints >= wanted:
        return None
    return f"waiting for {svc.ready_endpoints}/{wanted} ready endpoints of Service {service}"


def canary_endpoints_short(
    p: Pass, canary: CanaryStrategy, replica_set: ReplicaSetInfo | None, wanted: int
) -> str | None:
    """Why traffic must not go to the canary yet (None: it may).

    Split by Services, the canary Service's endpoints count. Split by DestinationRule
    subsets, the canary subset is the host Service's endpoints whose pods belong to the
    canary ReplicaSet: pointing the subset at it sooner would send the subset's traffic
    (a weight, or a header route of the user's) to no ready endpoint.
    """
    routing = canary.traffic_routing
    host = p.obs.router.subset_host
    if routing is not None and routing.istio is not None and routing.istio.destination_rule and host:
        svc = p.obs.services.get(host)
        ready = svc.ready_pods_of(replica_set.name) if svc is not None and replica_set else None
        if ready is None or ready >= wanted:
            return None
        return f"waiting for {ready}/{wanted} ready endpoints of the canary subset in Service {host}"
    svc = p.obs.services.get(canary.canary_service or "")
    if svc is not None and replica_set is not None:
        # Counted by pod: slices that still list the pods of the Service's previous selector
        # (a stable one, after an abort pointed it back) are no canary endpoints.
        ready = svc.ready_pods_of(replica_set.name)
        if ready is not None and ready < wanted:
            return f"waiting for {ready}/{wanted} ready canary endpoints of Service {canary.canary_service}"
    return endpoints_short(p, canary.canary_service, wanted)

"""plan(observed) -> Plan: the whole decision of one reconcile pass, without I/O.

One pass makes at most one unit of progress and says when it wants to be called
again; the next pass recomputes everything from the cluster, so a crash between
any two actions is harmless. The order of actions inside a pass is the order of
safety: pods ready before traffic goes to them, traffic back before pods go away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tidegate.api.rollout import CanaryStep, CanaryStrategy, Rollout
from tidegate.core import analysis, conditions
from tidegate.core.durations import DurationError, format_duration, parse_duration
from tidegate.core.hashing import HASH_LABEL, canonical, pod_template_hash, short_hash
from tidegate.core.model import (
    AnalysisRunInfo,
    AnyAction,
    CreateReplicaSet,
    DeleteReplicaSet,
    Event,
    HeaderRoute,
    MarkScaleDown,
    ObservedState,
    Plan,
    ReplacePod,
    ReplicaSetInfo,
    ScaleReplicaSet,
    SetServiceSelector,
    SetTraffic,
)
from tidegate.core.validation import spec_problems

# How soon to look again while waiting on something no watch event announces
# (a Service or VirtualService created later).
RETRY_MISSING_SECONDS = 10.0


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


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


def canary_replicas_for_weight(weight: int, replicas: int) -> int:
    """ceil(weight% x replicas), at least 1 while weight > 0.

    >>> canary_replicas_for_weight(10, 5), canary_replicas_for_weight(50, 5), canary_replicas_for_weight(0, 5)
    (1, 3, 0)
    """
    if weight <= 0:
        return 0
    return max(1, math.ceil(weight * replicas / 100))


@dataclass
class _Pass:
    """Scratch state of one pass: what the planner has decided so far."""

    obs: ObservedState
    status: dict[str, Any]
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

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.actions.append(Event(reason, message, "Warning" if warning else "Normal"))


# ---------------------------------------------------------------------------


def plan(obs: ObservedState) -> Plan:
    r = obs.rollout
    old = r.status.wire()
    status: dict[str, Any] = {k: v for k, v in old.items() if k not in ("conditions",)}
    p = _Pass(obs=obs, status=status)
    template = r.spec.template.wire()
    current_hash = pod_template_hash(template)
    status["currentPodHash"] = current_hash
    status["observedGeneration"] = r.metadata.generation
    status["selector"] = _selector_string(r)

    problems = spec_problems(r)
    missing = _missing_objects(obs)
    if problems:
        p.invalid = "; ".join(problems)
        p.message = f"invalid spec: {p.invalid} (the running version keeps serving)"
    elif missing:
        p.invalid = missing
        p.message = f"{missing}; waiting for it (the running version keeps serving)"
        p.wake_in(RETRY_MISSING_SECONDS)
    else:
        strategy = r.spec.strategy
        if strategy.canary is not None:
            _plan_canary(p, strategy.canary, current_hash, template)
        elif strategy.blue_green is not None:
            from tidegate.core.bluegreen import plan_blue_green

            plan_blue_green(p, current_hash, template)
        analysis.terminate_unwanted(p)

    _restart(p)
    _trim_history(p)
    _finish_status(p, old)
    return Plan(actions=tuple(p.actions), status=p.status, requeue_after=p.requeue)


def _trim_history(p: _Pass) -> None:
    """Keep revisionHistoryLimit old ReplicaSets (scaled to 0) for undo; delete older ones."""
    if p.invalid or not p.complete:
        return
    keep = {p.status.get("stableRS"), p.status.get("currentPodHash")}
    old = [
        rs
        for rs in p.obs.replica_sets
        if rs.pod_hash not in keep and rs.replicas == 0 and rs.status_replicas == 0
    ]
    old.sort(key=lambda rs: rs.revision, reverse=True)
    for rs in old[p.obs.rollout.spec.revision_history_limit :]:
        p.actions.append(DeleteReplicaSet(rs.name))
        p.event(
            "ReplicaSetDeleted",
            f"deleted ReplicaSet {rs.name} (revision {rs.revision}): past revisionHistoryLimit",
        )


def restart_pending(r: Rollout) -> bool:
    return bool(r.spec.restart_at) and r.status.restarted_at != r.spec.restart_at


def _restart(p: _Pass) -> None:
    """spec.restartAt: replace pods created before it, one at a time, once the rollout is complete."""
    r = p.obs.rollout
    if not restart_pending(r) or not p.complete:
        return
    if not p.obs.pods_to_restart:
        p.status["restartedAt"] = r.spec.restart_at
        p.event("RestartCompleted", f"every pod created before {r.spec.restart_at} was replaced")
        return
    current = rs_by_hash(p.obs, p.status.get("currentPodHash"))
    replicas = r.spec.desired_replicas
    left = len(p.obs.pods_to_restart)
    if current is not None and current.available >= replicas:
        p.actions.append(ReplacePod(p.obs.pods_to_restart[0]))
        p.message = f"restarting: replacing pod {p.obs.pods_to_restart[0]} ({left} left)"
    else:
        p.message = f"restarting: waiting for a replacement pod to be available ({left} left)"
    p.wake_in(1.0)


def _selector_string(r: Rollout) -> str:
    labels = r.spec.selector.match_labels
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _missing_objects(obs: ObservedState) -> str | None:
    for svc in obs.services.values():
        if not svc.exists:
            return f"Service {svc.name} not found"
    if not obs.router.ok:
        return obs.router.problem or "traffic router not ready"
    return None


# ---------------------------------------------------------------------------
# ReplicaSets


def rs_by_hash(obs: ObservedState, pod_hash: str | None) -> ReplicaSetInfo | None:
    if pod_hash is None:
        return None
    for rs in obs.replica_sets:
        if rs.pod_hash == pod_hash:
            return rs
    return None


def ensure_replica_set(
    p: _Pass, pod_hash: str, template: dict[str, Any], replicas: int
) -> ReplicaSetInfo | None:
    """Create the ReplicaSet of a template, or scale it; returns it when it exists."""
    rs = rs_by_hash(p.obs, pod_hash)
    name = f"{p.obs.rollout.metadata.name}-{pod_hash}"
    if rs is None:
        revision = max((x.revision for x in p.obs.replica_sets), default=0) + 1
        p.actions.append(CreateReplicaSet(name, pod_hash, revision, replicas, template))
        p.event("ReplicaSetCreated", f"created ReplicaSet {name} (revision {revision}) with {replicas} pods")
        return None
    if rs.replicas != replicas:
        p.actions.append(ScaleReplicaSet(rs.name, replicas))
        if rs.scale_down_at is not None and replicas > 0:
            p.actions.append(MarkScaleDown(rs.name, None))
    elif rs.scale_down_at is not None and replicas > 0:
        p.actions.append(MarkScaleDown(rs.name, None))
    return rs


def retire_others(p: _Pass, keep: set[str], delay: float, selected_hashes: set[str]) -> None:
    """Scale every ReplicaSet not in `keep` to 0 once nothing routes to it and its delay passed."""
    now = p.obs.now
    for rs in p.obs.replica_sets:
        if rs.pod_hash in keep or rs.replicas == 0:
            continue
        if rs.pod_hash in selected_hashes:
            continue  # a Service still selects it: move the selector first
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
            p.event("ScaledDown", f"scaled down ReplicaSet {rs.name} (revision {rs.revision})")
        else:
            p.wake_in(remaining)


def service_hashes(p: _Pass) -> set[str]:
    return {h for s in p.obs.services.values() if (h := s.pod_hash)}


def point_service(p: _Pass, service: str | None, pod_hash: str) -> bool:
    """Point a Service at a hash; True when it already selects it."""
    if not service:
        return True
    svc = p.obs.services.get(service)
    if svc is None or svc.pod_hash == pod_hash:
        return True
    p.actions.append(SetServiceSelector(service, pod_hash))
    p.wake_in(0.2)  # Services are not watched: look again shortly
    p.event("ServiceSwitched", f"Service {service} now selects pods {pod_hash}")
    return False


# ---------------------------------------------------------------------------
# Canary


def _steps_hash(steps: list[CanaryStep]) -> str:
    return short_hash(canonical([s.wire() for s in steps]))


def _weight_at(steps: list[CanaryStep], index: int) -> int:
    weight = 0
    for step in steps[: index + 1]:
        if step.set_weight is not None:
            weight = step.set_weight
    return weight


def _canary_scale_at(steps: list[CanaryStep], index: int, replicas: int) -> int | None:
    override: int | None = None
    for step in steps[: index + 1]:
        scale = step.set_canary_scale
        if scale is None:
            continue
        if scale.replicas is not None:
            override = scale.replicas
        elif scale.weight is not None:
            override = math.ceil(scale.weight * replicas / 100)
        else:
            override = None
    return override


def _header_routes_at(steps: list[CanaryStep], index: int) -> tuple[HeaderRoute, ...]:
    routes: dict[str, HeaderRoute] = {}
    for step in steps[: index + 1]:
        hr = step.set_header_route
        if hr is None:
            continue
        if not hr.match:
            routes.pop(hr.name, None)
            continue
        match = []
        for m in hr.match:
            hv = m.header_value
            kind, value = next(
                (k, v)
                for k, v in (("exact", hv.exact), ("prefix", hv.prefix), ("regex", hv.regex))
                if v is not None
            )
            match.append((m.header_name, kind, value))
        routes[hr.name] = HeaderRoute(hr.name, tuple(match))
    return tuple(routes.values())


def _reset_for_revision(p: _Pass, current_hash: str, steps_hash: str) -> None:
    st = p.status
    new_revision = (
        st.get("currentStepHash") is not None and p.obs.rollout.status.current_pod_hash != current_hash
    )
    if p.obs.rollout.status.current_pod_hash == current_hash and st.get("currentStepHash") == steps_hash:
        return
    if new_revision:
        p.event("NewRevision", f"new revision {current_hash}: starting the steps from the beginning")
    st["currentStepIndex"] = 0
    st["currentStepHash"] = steps_hash
    st["pauseConditions"] = []
    st["controllerPause"] = False
    st["promoteFull"] = False
    st["stepStartedAt"] = iso(p.obs.now)
    st["progressAt"] = iso(p.obs.now)
    if p.obs.rollout.status.current_pod_hash != current_hash:
        st["abort"] = False
        st.pop("abortedAt", None)
        st.pop("abortedRevision", None)
        st.pop("abortMessage", None)


def detect_retry(p: _Pass, current_hash: str) -> None:
    """A retry (abort cleared on an aborted revision) starts a new round of analysis runs."""
    st = p.status
    if not st.get("abort") and st.get("abortedRevision") == current_hash:
        st["analysisRound"] = int(st.get("analysisRound") or 0) + 1
        st.pop("abortedRevision", None)
        st.pop("abortedAt", None)
        st.pop("abortMessage", None)
        p.event("RolloutRetried", f"retrying revision {current_hash} from the first step")


def inconclusive_pause(p: _Pass, where: str) -> bool:
    """Pause for a person on an Inconclusive run; True once they promoted."""
    st = p.status
    held = [c for c in st.get("pauseConditions") or [] if c.get("reason") == "InconclusiveAnalysisRun"]
    if held:
        p.paused = True
        p.message = f"{where}: analysis inconclusive; paused until promoted (`tidegate promote`)"
        return False
    if st.get("controllerPause") and st.get("inconclusivePaused"):
        st["controllerPause"] = False
        st.pop("inconclusivePaused", None)
        return True
    st["pauseConditions"] = [
        *(st.get("pauseConditions") or []),
        {"reason": "InconclusiveAnalysisRun", "startTime": iso(p.obs.now)},
    ]
    st["controllerPause"] = True
    st["inconclusivePaused"] = True
    p.paused = True
    p.message = f"{where}: analysis inconclusive; paused until promoted (`tidegate promote`)"
    p.event("RolloutPaused", p.message)
    return False


def abort_for(p: _Pass, run: AnalysisRunInfo | None, name: str) -> None:
    st = p.status
    st["abort"] = True
    text = analysis.fail_message(run) if run is not None else f"analysis run {name} failed"
    st["abortMessage"] = text
    p.message = text
    p.event("AnalysisRunFailed", f"{text}; aborting", warning=True)
    p.wake_in(0.05)


def _plan_canary(p: _Pass, canary: CanaryStrategy, current_hash: str, template: dict[str, Any]) -> None:
    obs, st = p.obs, p.status
    replicas = obs.rollout.spec.desired_replicas
    steps = canary.steps
    _reset_for_revision(p, current_hash, _steps_hash(steps))
    detect_retry(p, current_hash)

    stable_hash = st.get("stableRS")
    if stable_hash is None or rs_by_hash(obs, stable_hash) is None:
        # First deploy (or the stable ReplicaSet is gone): no steps, straight to stable.
        stable_hash = current_hash
        st["stableRS"] = current_hash
        st["currentStepIndex"] = len(steps)

    if stable_hash == current_hash:
        _canary_steady(p, canary, current_hash, template, replicas)
        return

    if st.get("abort"):
        _canary_aborted(p, canary, current_hash, stable_hash, template, replicas)
        return

    if obs.rollout.spec.paused:
        p.paused = True
        p.message = "paused by spec.paused; `tidegate resume` (or promote) continues"

    index = int(st.get("currentStepIndex") or 0)
    if p.paused and (st.get("promoteFull") or index >= len(steps)):
        return  # spec.paused holds the final promotion too
    if st.get("promoteFull") or index >= len(steps):
        _canary_promote(p, canary, current_hash, stable_hash, template, replicas)
        return
    _canary_step(p, canary, steps, index, current_hash, stable_hash, template, replicas)


def _router_on(canary: CanaryStrategy) -> bool:
    return canary.traffic_routing is not None and canary.traffic_routing.istio is not None


def _set_traffic(
    p: _Pass,
    canary: CanaryStrategy,
    weight: int,
    stable_hash: str,
    canary_hash: str,
    header_routes: tuple[HeaderRoute, ...] = (),
) -> bool:
    """Ask the router for a weight; True when the read-back already shows it."""
    router = p.obs.router
    if not _router_on(canary):
        return True
    wanted_headers = tuple(sorted(h.name for h in header_routes))
    in_place = (
        router.canary_weight == weight
        and router.stable_weight == 100 - weight
        and tuple(sorted(router.header_routes)) == wanted_headers
        and (
            canary.traffic_routing is None
            or canary.traffic_routing.istio is None
            or canary.traffic_routing.istio.destination_rule is None
            or (router.stable_subset_hash == stable_hash and router.canary_subset_hash == canary_hash)
        )
    )
    if in_place:
        return True
    p.actions.append(SetTraffic(weight, stable_hash, canary_hash, header_routes))
    if router.canary_weight != weight:
        p.event("TrafficWeightSet", f"canary weight {router.canary_weight}% -> {weight}%")
    p.wake_in(0.2)  # the router's objects are not watched: read them back shortly
    return False


def _canary_steady(
    p: _Pass, canary: CanaryStrategy, current_hash: str, template: dict[str, Any], replicas: int
) -> None:
    """Everything on one version: full scale, both Services and all traffic on it, the rest retired."""
    st = p.status
    rs = ensure_replica_set(p, current_hash, template, replicas)
    st["currentStepIndex"] = len(canary.steps)
    st["pauseConditions"] = []
    st["controllerPause"] = False
    st["promoteFull"] = False
    st["abort"] = False
    st.pop("abortedAt", None)
    if rs is None or rs.available < min(replicas, 1):
        p.message = f"waiting for {rs.available if rs else 0}/{replicas} pods available"
        return
    ready_enough = rs.available >= replicas
    # Services move to the stable pods only once those carry full capacity.
    switched = True
    if ready_enough or not _other_capacity(p, current_hash):
        switched = point_service(p, canary.stable_service, current_hash) and switched
        switched = point_service(p, canary.canary_service, current_hash) and switched
    in_place = _set_traffic(p, canary, 0, current_hash, current_hash) if switched else False
    if switched and in_place:
        retire_others(p, {current_hash}, canary.scale_down_delay_seconds, service_hashes(p))
    if rs.available < replicas:
        p.message = f"waiting for {rs.available}/{replicas} pods available"
    elif not (switched and in_place):
        p.message = "moving all traffic to the stable version"
    else:
        p.complete = True
        p.message = "healthy"


def _other_capacity(p: _Pass, current_hash: str) -> bool:
    return any(rs.available > 0 for rs in p.obs.replica_sets if rs.pod_hash != current_hash)


def _canary_aborted(
    p: _Pass,
    canary: CanaryStrategy,
    current_hash: str,
    stable_hash: str,
    template: dict[str, Any],
    replicas: int,
) -> None:
    obs, st = p.obs, p.status
    p.aborted = True
    if not st.get("abortedAt"):
        st["abortedAt"] = iso(obs.now)
        p.event(
            "RolloutAborted", f"aborted revision {current_hash}: all traffic back to stable", warning=True
        )
    st["abortedRevision"] = current_hash
    st["pauseConditions"] = []
    st["controllerPause"] = False
    stable = ensure_replica_set(p, stable_hash, _template_of(obs, stable_hash, template), replicas)
    point_service(p, canary.stable_service, stable_hash)
    # All traffic back to stable at once (stable keeps full scale unless dynamicStableScale).
    if stable is not None and (stable.available >= replicas or not canary.dynamic_stable_scale):
        in_place = _set_traffic(p, canary, 0, stable_hash, current_hash)
    else:
        in_place = False
    why = st.get("abortMessage") or "aborted by request"
    p.message = f"rollout aborted ({why}): all traffic on the stable version"
    canary_rs = rs_by_hash(obs, current_hash)
    if canary_rs is not None and canary_rs.replicas > 0 and in_place:
        aborted_at = parse_time(st.get("abortedAt")) or obs.now
        due = aborted_at + timedelta(seconds=canary.abort_scale_down_delay_seconds)
        remaining = (due - obs.now).total_seconds()
        if remaining <= 0:
            p.actions.append(ScaleReplicaSet(canary_rs.name, 0))
        else:
            p.wake_in(remaining)
            p.message += f"; canary pods scaled down in {format_duration(remaining)}"
    retire_others(p, {stable_hash, current_hash}, 0, service_hashes(p))


def _template_of(obs: ObservedState, pod_hash: str, fallback: dict[str, Any]) -> dict[str, Any]:
    rs = rs_by_hash(obs, pod_hash)
    return rs.template if rs is not None and rs.template else fallback


def _canary_step(
    p: _Pass,
    canary: CanaryStrategy,
    steps: list[CanaryStep],
    index: int,
    current_hash: str,
    stable_hash: str,
    template: dict[str, Any],
    replicas: int,
) -> None:
    obs, st = p.obs, p.status
    n = len(steps)
    step = steps[index]
    weight = _weight_at(steps, index)
    headers = _header_routes_at(steps, index)
    router = _router_on(canary)
    scale = _canary_scale_at(steps, index, replicas)
    if router:
        canary_target = scale if scale is not None else canary_replicas_for_weight(weight, replicas)
        stable_target = replicas
        if canary.dynamic_stable_scale:
            # Never below what the traffic now on stable (read back) needs.
            on_stable = max(100 - weight, obs.router.stable_weight)
            stable_target = max(1 if on_stable > 0 else 0, math.ceil(on_stable * replicas / 100))
    else:
        canary_target, stable_target = _basic_canary_counts(
            p, canary, weight, current_hash, stable_hash, replicas
        )
        if scale is not None:
            canary_target = scale

    stable = ensure_replica_set(p, stable_hash, _template_of(obs, stable_hash, template), stable_target)
    canary_rs = ensure_replica_set(p, current_hash, template, canary_target)
    # Superseded canaries: traffic goes to them only through the canary Service, which
    # moves to the new canary below; retire them once nothing selects them.
    point_service(p, canary.stable_service, stable_hash)
    canary_available = canary_rs.available if canary_rs else 0
    step_text = f"step {index + 1}/{n}"

    if canary.analysis is not None and index >= (canary.analysis.starting_step or 0):
        outcome, run, name = analysis.ensure(
            p, canary.analysis, kind="background", tag="bg", stable_hash=stable_hash, latest_hash=current_hash
        )
        st.setdefault("canary", {})["currentBackgroundAnalysisRunStatus"] = analysis.run_status(run, name)
        if p.paused:
            return
        if outcome == "failed":
            abort_for(p, run, name)
            return
        if outcome == "inconclusive":
            if inconclusive_pause(p, step_text):
                st["analysisRound"] = int(st.get("analysisRound") or 0) + 1  # a fresh background run
                p.wake_in(0.05)
            return
    if p.paused:
        return
    # A superseded canary (a newer revision arrived) loses its traffic before anything else.
    routed = _routed_canary_hash(p, canary)
    if router and routed not in (None, current_hash, stable_hash) and obs.router.canary_weight > 0:
        assert routed is not None
        _set_traffic(p, canary, 0, stable_hash, routed)
        p.message = f"{step_text}: moving traffic off the superseded canary {routed}"
        return
    if canary_available < canary_target:
        p.message = f"{step_text}: waiting for {canary_available}/{canary_target} canary pods ready"
        retire_others(p, {stable_hash, current_hash}, 0, service_hashes(p))
        return
    canary_service_ok = True
    if canary_target > 0 or weight == 0:
        canary_service_ok = point_service(p, canary.canary_service, current_hash)
    retire_others(p, {stable_hash, current_hash}, 0, service_hashes(p))
    if not canary_service_ok:
        p.message = f"{step_text}: pointing {canary.canary_service} at the canary pods"
        return
    if router:
        if weight > 0 and canary_available == 0:
            p.message = f"{step_text}: waiting for canary pods before sending traffic"
            return
        if not _set_traffic(p, canary, weight, stable_hash, current_hash, headers):
            p.message = f"{step_text}: setting canary weight to {weight}%"
            return
    elif stable is not None and stable.available < stable_target:
        p.message = f"{step_text}: waiting for {stable.available}/{stable_target} stable pods available"
        return

    # The traffic of this step is in place; now the step's own action.
    if step.pause is not None:
        _canary_pause(p, step, index, n)
        return
    if step.analysis is not None:
        outcome, run, name = analysis.ensure(
            p, step.analysis, kind="step", tag=f"s{index}", stable_hash=stable_hash, latest_hash=current_hash
        )
        st.setdefault("canary", {})["currentStepAnalysisRunStatus"] = analysis.run_status(run, name)
        if outcome == "successful":
            _advance(p, index, n, f"{step_text} analysis {name} successful")
        elif outcome == "failed":
            abort_for(p, run, name)
        elif outcome == "inconclusive":
            if inconclusive_pause(p, step_text):
                _advance(p, index, n, f"{step_text} promoted past an inconclusive analysis")
        else:
            p.message = f"{step_text}: analysis run {name} running"
        return
    _advance(p, index, n, f"{step_text} done")


def _routed_canary_hash(p: _Pass, canary: CanaryStrategy) -> str | None:
    """The pods the canary side of the router reaches now: canary Service or canary subset."""
    if (
        canary.traffic_routing
        and canary.traffic_routing.istio
        and canary.traffic_routing.istio.destination_rule
    ):
        return p.obs.router.canary_subset_hash
    svc = p.obs.services.get(canary.canary_service or "")
    return svc.pod_hash if svc is not None else None


def _advance(p: _Pass, index: int, n: int, why: str) -> None:
    st = p.status
    st["currentStepIndex"] = index + 1
    st["stepStartedAt"] = iso(p.obs.now)
    p.message = why
    p.event(
        "StepCompleted", f"{why}; moving to step {index + 2}/{n}" if index + 1 < n else f"{why}; promoting"
    )
    p.wake_in(0.05)


def _canary_pause(p: _Pass, step: CanaryStep, index: int, n: int) -> None:
    st = p.status
    assert step.pause is not None
    conditions_now = [c for c in st.get("pauseConditions") or [] if c.get("reason") == "CanaryPauseStep"]
    if not conditions_now:
        if st.get("controllerPause"):
            # The pause condition is gone while we had set it: somebody promoted.
            st["controllerPause"] = False
            _advance(p, index, n, f"step {index + 1}/{n} promoted")
            return
        st["pauseConditions"] = [
            *(st.get("pauseConditions") or []),
            {"reason": "CanaryPauseStep", "startTime": iso(p.obs.now)},
        ]
        st["controllerPause"] = True
        conditions_now = [{"startTime": iso(p.obs.now)}]
        p.event("RolloutPaused", f"paused at step {index + 1}/{n}")
    p.paused = True
    if step.pause.duration is None:
        p.message = f"paused at step {index + 1}/{n} until promoted (`tidegate promote`)"
        return
    try:
        seconds = parse_duration(step.pause.duration)
    except DurationError:
        seconds = 0.0
    started = parse_time(conditions_now[0].get("startTime")) or p.obs.now
    remaining = (started + timedelta(seconds=seconds) - p.obs.now).total_seconds()
    if remaining > 0:
        until = iso(started + timedelta(seconds=seconds))
        p.message = f"paused at step {index + 1}/{n} for {format_duration(remaining)} more (until {until})"
        p.wake_in(remaining)
        return
    p.paused = False
    st["pauseConditions"] = [
        c for c in st.get("pauseConditions") or [] if c.get("reason") != "CanaryPauseStep"
    ]
    st["controllerPause"] = False
    p.event("RolloutResumed", f"pause of step {index + 1}/{n} ended")
    _advance(p, index, n, f"step {index + 1}/{n} pause ended")


def _basic_canary_counts(
    p: _Pass, canary: CanaryStrategy, weight: int, current_hash: str, stable_hash: str, replicas: int
) -> tuple[int, int]:
    """Without a traffic router the weight is a share of pods, within maxSurge / maxUnavailable.

    stable >= replicas - desired canary, and enough stable pods stay that the
    available total never drops below replicas - maxUnavailable.
    """
    surge = percent_of(canary.max_surge, replicas, round_up=True)
    unavailable = percent_of(canary.max_unavailable, replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        surge = 1
    desired_canary = canary_replicas_for_weight(weight, replicas)
    if weight >= 100:
        desired_canary = replicas
    stable_rs = rs_by_hash(p.obs, stable_hash)
    canary_rs = rs_by_hash(p.obs, current_hash)
    canary_available = canary_rs.available if canary_rs else 0
    stable_spec = stable_rs.replicas if stable_rs else replicas
    stable_target = max(replicas - desired_canary, replicas - unavailable - canary_available, 0)
    stable_target = min(stable_target, replicas)
    canary_target = min(desired_canary, max(0, replicas + surge - stable_spec))
    canary_target = max(
        canary_target, canary_rs.replicas if canary_rs and canary_rs.replicas <= desired_canary else 0
    )
    return canary_target, stable_target


def _canary_promote(
    p: _Pass,
    canary: CanaryStrategy,
    current_hash: str,
    stable_hash: str,
    template: dict[str, Any],
    replicas: int,
) -> None:
    """After the last step (or promote --full): canary to full scale, all traffic to it, then it is stable."""
    st = p.status
    n = len(canary.steps)
    if _router_on(canary):
        # The stable keeps its scale: it carries traffic until the weight moves.
        canary_target = replicas
    else:
        # Without a router the pod counts are the split: grow the canary within maxSurge
        # while the stable shrinks as canary pods become available.
        canary_target, stable_target = _basic_canary_counts(
            p, canary, 100, current_hash, stable_hash, replicas
        )
        ensure_replica_set(p, stable_hash, _template_of(p.obs, stable_hash, template), stable_target)
    canary_rs = ensure_replica_set(p, current_hash, template, canary_target)
    available = canary_rs.available if canary_rs else 0
    st["currentStepIndex"] = n
    if available < replicas:
        p.message = f"promoting: waiting for {available}/{replicas} new pods available"
        return
    if not point_service(p, canary.canary_service, current_hash):
        return
    if not _set_traffic(p, canary, 100, stable_hash, current_hash):
        p.message = "promoting: moving all traffic to the new version"
        return
    st["stableRS"] = current_hash
    st["promoteFull"] = False
    p.event("RolloutPromoted", f"revision {current_hash} is now stable")
    p.message = "promoted; retiring the previous version"
    p.wake_in(0.05)


# ---------------------------------------------------------------------------
# Status


def _finish_status(p: _Pass, old: dict[str, Any]) -> None:
    obs, st = p.obs, p.status
    r = obs.rollout
    replicas = r.spec.desired_replicas
    current = st.get("currentPodHash")
    sets = obs.replica_sets
    st["replicas"] = sum(rs.status_replicas for rs in sets)
    cur = rs_by_hash(obs, current)
    st["updatedReplicas"] = cur.status_replicas if cur else 0
    st["readyReplicas"] = sum(rs.ready for rs in sets)
    st["availableReplicas"] = sum(rs.available for rs in sets)

    canary = r.spec.strategy.canary
    if canary is not None:
        n = len(canary.steps)
        idx = min(int(st.get("currentStepIndex") or 0), n)
        st["step"] = f"{min(idx + 1, n)}/{n}" if n else None  # 1-based, as in the messages
        weights = _weights_status(p, canary, st)
        st["canary"] = {**(st.get("canary") or {}), "weights": weights}
        if obs.router.kind == "istio":
            st["canary"]["managedRoutes"] = list(obs.router.managed_routes)

    # Progress deadline: the clock restarts whenever something moves.
    def weight(s: dict[str, Any]) -> Any:
        return (((s.get("canary") or {}).get("weights") or {}).get("canary") or {}).get("weight", 0)

    moved = any(
        old.get(k) != st.get(k)
        for k in ("currentStepIndex", "availableReplicas", "updatedReplicas", "stableRS")
    ) or weight(old) != weight(st)
    # Leaving a pause, or starting anew after being complete, restarts the clock too. A
    # pass that changes nothing else must not touch it: the write would wake the next pass.
    resumed = old.get("phase") in ("Paused", "Healthy") and not (p.paused or p.complete)
    if moved or resumed or not st.get("progressAt"):
        st["progressAt"] = iso(obs.now)
    deadline_exceeded = False
    if not (p.complete or p.paused or p.aborted or p.invalid):
        since = parse_time(st.get("progressAt")) or obs.now
        left = since + timedelta(seconds=r.spec.progress_deadline_seconds) - obs.now
        if left.total_seconds() <= 0:
            deadline_exceeded = True
            p.message = f"no progress for {r.spec.progress_deadline_seconds}s: {p.message}"
            if r.spec.progress_deadline_abort and not st.get("abort"):
                st["abort"] = True
                st["abortMessage"] = f"no progress for {r.spec.progress_deadline_seconds}s"
                p.event("ProgressDeadlineExceeded", p.message + "; aborting", warning=True)
                p.wake_in(0.05)
            elif not _had_condition(old, "Progressing", "ProgressDeadlineExceeded"):
                p.event("ProgressDeadlineExceeded", p.message, warning=True)
        else:
            p.wake_in(left.total_seconds() + 0.5)

    available_min = replicas
    stable = rs_by_hash(obs, st.get("stableRS"))
    verdict = conditions.Verdict(
        invalid_spec=p.invalid,
        aborted=p.aborted,
        deadline_exceeded=deadline_exceeded,
        paused=p.paused,
        complete=p.complete,
        available=(stable.available if stable else 0) >= available_min
        or (cur.available if cur else 0) >= available_min,
    )
    phase = conditions.phase_of(verdict)
    st["phase"] = phase
    st["message"] = p.message or phase.lower()
    st["conditions"] = conditions.conditions_for(
        verdict, phase, st["message"], old.get("conditions") or [], iso(obs.now), r.metadata.generation
    )
    if old.get("phase") != phase:
        warning = phase == "Degraded"
        p.event(f"Rollout{phase}", st["message"], warning=warning)


def _had_condition(old: dict[str, Any], ctype: str, reason: str) -> bool:
    return any(c.get("type") == ctype and c.get("reason") == reason for c in old.get("conditions") or [])


def _weights_status(p: _Pass, canary: CanaryStrategy, st: dict[str, Any]) -> dict[str, Any]:
    obs = p.obs
    stable_hash = st.get("stableRS")
    current = st.get("currentPodHash")
    canary_hash = current if current != stable_hash else stable_hash
    if obs.router.kind == "istio":
        cw, sw = obs.router.canary_weight, obs.router.stable_weight
    else:
        # No router: the share of available pods is the share of traffic.
        c_rs, s_rs = rs_by_hash(obs, canary_hash), rs_by_hash(obs, stable_hash)
        c_av = c_rs.available if c_rs and canary_hash != stable_hash else 0
        s_av = s_rs.available if s_rs else 0
        total = c_av + s_av
        cw = round(100 * c_av / total) if total else 0
        sw = 100 - cw
    return {
        "canary": {"weight": cw, "podTemplateHash": canary_hash, "serviceName": canary.canary_service},
        "stable": {"weight": sw, "podTemplateHash": stable_hash, "serviceName": canary.stable_service},
        # Read back from the router this pass, and nothing left to change: verified. A
        # SetTraffic of this pass is verified by execute() reading the router back.
        "verified": (not any(isinstance(a, SetTraffic) for a in p.actions))
        if obs.router.kind == "istio"
        else None,
    }


# Keep HASH_LABEL importable from here for callers that build selectors.
__all__ = ["HASH_LABEL", "plan"]

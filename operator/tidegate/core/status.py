"""The status a pass ends with: replica counts, weights, the progress deadline, phase and conditions."""

from __future__ import annotations

from datetime import timedelta

from tidegate.api.meta import Condition
from tidegate.api.rollout import CanaryStrategy, RolloutStatus, TrafficWeights, WeightDestination
from tidegate.core import conditions
from tidegate.core.model import (
    Event,
    SetTraffic,
)
from tidegate.core.toolkit import (
    Pass,
    iso,
    parse_time,
    restart_pending,
    rs_by_hash,
)


def finish_status(p: Pass, old: RolloutStatus) -> None:
    obs, st = p.obs, p.status
    r = obs.rollout
    replicas = r.spec.desired_replicas
    current = st.current_pod_hash
    sets = obs.replica_sets
    st.replicas = sum(rs.status_replicas for rs in sets)
    cur = rs_by_hash(obs, current)
    st.updated_replicas = cur.status_replicas if cur else 0
    st.ready_replicas = sum(rs.ready for rs in sets)
    st.available_replicas = sum(rs.available for rs in sets)
    if r.spec.strategy.blue_green is not None:
        # The pods behind the active Service only (Argo Rollouts' syncRolloutStatusBlueGreen):
        # a preview's pods serve no users.
        active = rs_by_hash(obs, st.blue_green.active_selector)
        st.ready_replicas = active.ready if active else 0
        st.available_replicas = active.available if active else 0

    canary = r.spec.strategy.canary
    if canary is not None:
        n = len(canary.steps)
        idx = min(st.current_step_index or 0, n)
        st.step = f"{min(idx + 1, n)}/{n}" if n else None  # 1-based, as in the messages
        st.canary.weights = weights_status(p, canary, st)
        if obs.router.kind != "none":
            st.canary.managed_routes = list(obs.router.managed_routes)

    # Progress deadline: the clock restarts whenever something moves.
    def weight(s: RolloutStatus) -> int:
        return s.canary.weights.canary.weight if s.canary.weights is not None else 0

    moved = (
        old.current_step_index != st.current_step_index
        or old.available_replicas != st.available_replicas
        or old.updated_replicas != st.updated_replicas
        or old.stable_rs != st.stable_rs
        or weight(old) != weight(st)
    )
    # Leaving a pause, or starting anew after being complete, restarts the clock too. A
    # pass that changes nothing else must not touch it: the write would wake the next pass.
    resumed = old.phase in ("Paused", "Healthy") and not (p.paused or p.complete)
    if moved or resumed or not st.progress_at:
        st.progress_at = iso(obs.now)
    deadline_exceeded = False
    if not (p.complete or p.paused or p.aborted or p.invalid):
        since = parse_time(st.progress_at) or obs.now
        left = since + timedelta(seconds=r.spec.progress_deadline_seconds) - obs.now
        if left.total_seconds() <= 0:
            deadline_exceeded = True
            p.message = f"no progress for {r.spec.progress_deadline_seconds}s: {p.message}"
            if r.spec.progress_deadline_abort and not st.abort:
                st.abort = True
                st.abort_message = f"no progress for {r.spec.progress_deadline_seconds}s"
                p.event("ProgressDeadlineExceeded", p.message + "; aborting", warning=True)
                p.wake_in(0.05)
            elif not had_condition(old, "Progressing", "ProgressDeadlineExceeded"):
                p.event("ProgressDeadlineExceeded", p.message, warning=True)
        else:
            p.wake_in(left.total_seconds() + 0.5)

    available_min = replicas
    stable = rs_by_hash(obs, st.stable_rs)
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
    st.phase = phase
    st.message = p.message or phase.lower()
    made = conditions.conditions_for(
        verdict, phase, st.message, [c.wire() for c in old.conditions], iso(obs.now), r.metadata.generation
    )
    st.conditions = [Condition.model_validate(c) for c in made]
    # One Event per transition: a state module that already told of this one (RolloutPaused
    # on a pause step, say) is not repeated by the phase's own Event.
    told = any(isinstance(a, Event) and a.reason == f"Rollout{phase}" for a in p.actions)
    # While a complete rollout restarts, its phase flips Healthy/Progressing with each pod it
    # evicts: RestartStarted and RestartCompleted tell that story, not RolloutHealthy.
    restarting = restart_pending(r) and st.stable_rs == current and not p.aborted
    told = told or restarting
    if old.phase != phase and not told:
        warning = phase == "Degraded"
        p.event(f"Rollout{phase}", st.message, warning=warning)


def had_condition(old: RolloutStatus, ctype: str, reason: str) -> bool:
    return any(c.type == ctype and c.reason == reason for c in old.conditions)


def weights_status(p: Pass, canary: CanaryStrategy, st: RolloutStatus) -> TrafficWeights:
    obs = p.obs
    stable_hash = st.stable_rs
    current = st.current_pod_hash
    canary_hash = current if current != stable_hash else stable_hash
    if obs.router.kind != "none":
        cw, sw = obs.router.canary_weight, obs.router.stable_weight
    else:
        # No router: the share of available pods is the share of traffic.
        c_rs, s_rs = rs_by_hash(obs, canary_hash), rs_by_hash(obs, stable_hash)
        c_av = c_rs.available if c_rs and canary_hash != stable_hash else 0
        s_av = s_rs.available if s_rs else 0
        total = c_av + s_av
        cw = round(100 * c_av / total) if total else 0
        sw = 100 - cw
    return TrafficWeights(
        canary=WeightDestination(
            weight=cw, pod_template_hash=canary_hash, service_name=canary.canary_service
        ),
        stable=WeightDestination(
            weight=sw, pod_template_hash=stable_hash, service_name=canary.stable_service
        ),
        # Read back from the router this pass, and nothing left to change: verified. A
        # SetTraffic of this pass is verified by execute() reading the router back.
        verified=(not any(isinstance(a, SetTraffic) for a in p.actions))
        if obs.router.kind != "none"
        else None,
    )

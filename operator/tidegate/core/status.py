"""The status a pass ends with: replica counts, weights, the progress deadline, phase and conditions."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tidegate.api.rollout import CanaryStrategy
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


def finish_status(p: Pass, old: dict[str, Any]) -> None:
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
    if r.spec.strategy.blue_green is not None:
        # The pods behind the active Service only (Argo Rollouts' syncRolloutStatusBlueGreen):
        # a preview's pods serve no users.
        active = rs_by_hash(obs, (st.get("blueGreen") or {}).get("activeSelector"))
        st["readyReplicas"] = active.ready if active else 0
        st["availableReplicas"] = active.available if active else 0

    canary = r.spec.strategy.canary
    if canary is not None:
        n = len(canary.steps)
        idx = min(int(st.get("currentStepIndex") or 0), n)
        st["step"] = f"{min(idx + 1, n)}/{n}" if n else None  # 1-based, as in the messages
        weights = weights_status(p, canary, st)
        st["canary"] = {**(st.get("canary") or {}), "weights": weights}
        if obs.router.kind != "none":
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
            elif not had_condition(old, "Progressing", "ProgressDeadlineExceeded"):
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
    # One Event per transition: a state module that already told of this one (RolloutPaused
    # on a pause step, say) is not repeated by the phase's own Event.
    told = any(isinstance(a, Event) and a.reason == f"Rollout{phase}" for a in p.actions)
    # While a complete rollout restarts, its phase flips Healthy/Progressing with each pod it
    # evicts: RestartStarted and RestartCompleted tell that story, not RolloutHealthy.
    restarting = restart_pending(r) and st.get("stableRS") == current and not p.aborted
    told = told or restarting
    if old.get("phase") != phase and not told:
        warning = phase == "Degraded"
        p.event(f"Rollout{phase}", st["message"], warning=warning)


def had_condition(old: dict[str, Any], ctype: str, reason: str) -> bool:
    return any(c.get("type") == ctype and c.get("reason") == reason for c in old.get("conditions") or [])


def weights_status(p: Pass, canary: CanaryStrategy, st: dict[str, Any]) -> dict[str, Any]:
    obs = p.obs
    stable_hash = st.get("stableRS")
    current = st.get("currentPodHash")
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
    return {
        "canary": {"weight": cw, "podTemplateHash": canary_hash, "serviceName": canary.canary_service},
        "stable": {"weight": sw, "podTemplateHash": stable_hash, "serviceName": canary.stable_service},
        # Read back from the router this pass, and nothing left to change: verified. A
        # SetTraffic of this pass is verified by execute() reading the router back.
        "verified": (not any(isinstance(a, SetTraffic) for a in p.actions))
        if obs.router.kind != "none"
        else None,
    }

"""A canary step: its traffic in place, then the step's own action (pause, analysis, or done)."""

from __future__ import annotations

from typing import Any

from tidegate.api.rollout import CanaryStep, CanaryStrategy
from tidegate.core import analysis
from tidegate.core.pause import plan_pause
from tidegate.core.toolkit import (
    Pass,
    canary_endpoints_short,
    drop_pause,
    ensure_replica_set,
    point_service,
    retire_others,
    service_hashes,
    step_complete,
    template_of,
)
from tidegate.core.traffic import (
    at_basic_split,
    desired_traffic,
    max_weight,
    routed_canary_hash,
    router_on,
    set_traffic,
    weight_text,
)


def plan_step(
    p: Pass,
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
    want = desired_traffic(p, canary, steps, index, current_hash, stable_hash, replicas)
    weight, headers, mirrors = want.weight, want.headers, want.mirrors
    blocked = st.analysis_blocked
    if blocked:
        # An analysis that cannot run (its template is missing) gives the canary no traffic
        # until it can; the run is tried again every pass, and the steps go on by themselves.
        weight, headers, mirrors = 0, (), ()
    canary_target, stable_target = want.canary_replicas, want.stable_replicas
    router = router_on(canary)

    stable = ensure_replica_set(p, stable_hash, template_of(obs, stable_hash, template), stable_target)
    canary_rs = ensure_replica_set(p, current_hash, template, canary_target)
    # Superseded canaries: traffic goes to them only through the canary Service, which
    # moves to the new canary below; retire them once nothing selects them.
    point_service(p, canary.stable_service, stable_hash)
    canary_available = canary_rs.available if canary_rs else 0
    step_text = f"step {index + 1}/{n}"
    if _skip_requested(p, index, n, step_text):
        return

    if canary.analysis is not None and index >= (canary.analysis.starting_step or 0):
        outcome, run, name = analysis.ensure(
            p, canary.analysis, kind="background", tag="bg", stable_hash=stable_hash, latest_hash=current_hash
        )
        st.canary.current_background_analysis_run_status = analysis.run_status(run, name)
        if p.paused:
            return
        if outcome == "failed":
            analysis.abort_for(p, run, name)
            return
        if outcome == "inconclusive":
            if analysis.inconclusive_pause(p, step_text):
                st.analysis_round += 1  # a fresh background run
                p.wake_in(0.05)
            return
    if p.paused:
        return
    # A superseded canary (a newer revision arrived) loses its traffic before anything else.
    routed = routed_canary_hash(p, canary)
    if router and routed not in (None, current_hash, stable_hash) and obs.router.canary_weight > 0:
        assert routed is not None
        set_traffic(p, canary, 0, stable_hash, routed)
        p.message = f"{step_text}: moving traffic off the superseded canary {routed}"
        return
    if router and canary_available == 0 and obs.router.canary_weight > 0 and routed in (None, current_hash):
        # The canary lost every pod (its ReplicaSet deleted, say): its share would reach no
        # ready endpoint, so it goes back to the stable until the new pods are ready.
        set_traffic(p, canary, 0, stable_hash, current_hash)
        p.message = f"{step_text}: the canary has no ready pods; its traffic is on the stable until it has"
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
        # A subset split moves the canary subset itself, which header routes reach at any weight.
        by_subset = obs.router.subset_host is not None and canary_target > 0
        short = None
        if weight > 0 or by_subset:
            short = canary_endpoints_short(p, canary, canary_rs, canary_target)
        if short is not None:
            p.message = f"{step_text}: {short}"
            return
        if not set_traffic(p, canary, weight, stable_hash, current_hash, headers, mirrors):
            p.message = f"{step_text}: setting canary weight to {weight_text(weight, max_weight(canary))}"
            return
        if blocked and step.analysis is None:
            p.message = f"{step_text}: canary held at 0% until its analysis can run: {blocked}"
            return
    elif not at_basic_split(p, canary_target, stable_target, current_hash, stable_hash):
        stable_available = stable.available if stable is not None else 0
        p.message = (
            f"{step_text}: moving pods to {canary_target} canary / {stable_target} stable "
            f"({canary_available} / {stable_available} available)"
        )
        return  # the ReplicaSets' status changes as pods come and go, and wakes the next pass

    # The traffic of this step is in place; now the step's own action.
    if step.pause is not None:
        plan_pause(p, step, index, n)
        return
    if step.analysis is not None:
        outcome, run, name = analysis.ensure(
            p, step.analysis, kind="step", tag=f"s{index}", stable_hash=stable_hash, latest_hash=current_hash
        )
        st.canary.current_step_analysis_run_status = analysis.run_status(run, name)
        if outcome == "successful":
            step_complete(p, index, n, f"{step_text} analysis {name} successful")
        elif outcome == "failed":
            analysis.abort_for(p, run, name)
        elif outcome == "inconclusive":
            if analysis.inconclusive_pause(p, step_text):
                step_complete(p, index, n, f"{step_text} promoted past an inconclusive analysis")
        else:
            p.message = f"{step_text}: analysis run {name} running"
        return
    step_complete(p, index, n, f"{step_text} done")


def _skip_requested(p: Pass, index: int, n: int, step_text: str) -> bool:
    """The intent `status.skipStep: N` completes step N now, whatever it waits for.

    Argo's `kubectl argo rollouts promote` writes currentStepIndex from the client; here
    the client names the step it means and the operator moves on, so a repeated or late
    write (the rollout has moved past N) changes nothing.
    """
    st = p.status
    wanted, st.skip_step = st.skip_step, None
    if wanted is None or wanted != index:
        return False
    drop_pause(st, "CanaryPauseStep")
    step_complete(p, index, n, f"{step_text} skipped")
    return True

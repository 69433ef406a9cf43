"""plan(observed) -> Plan: the whole decision of one reconcile pass, without I/O.

One pass makes at most one unit of progress and says when it wants to be called
again; the next pass recomputes everything from the cluster, so a crash between
any two actions is harmless. The order of actions inside a pass is the order of
safety: pods ready before traffic goes to them, traffic back before pods go away.

This module only dispatches: it picks the state the rollout is in and hands the pass to
that state's module (steady, step, pause, promote, abort — and bluegreen), each built on
the toolkit; the status is finished in one place (status.py).
"""

from __future__ import annotations

from typing import Any

from tidegate.api.rollout import CanaryStrategy, NotificationsStatus, RolloutStatus
from tidegate.core import analysis, notifications
from tidegate.core.abort import plan_aborted
from tidegate.core.bluegreen import plan_blue_green
from tidegate.core.hashing import HASH_LABEL, pod_template_hash
from tidegate.core.housekeeping import restart, scale_workload, sync_pod_metadata, trim_history
from tidegate.core.model import (
    Event,
    ObservedState,
    Plan,
)
from tidegate.core.promote import plan_promote
from tidegate.core.status import finish_status
from tidegate.core.steady import plan_steady
from tidegate.core.step import plan_step
from tidegate.core.toolkit import (
    RETRY_MISSING_SECONDS,
    Pass,
    canary_replicas_for_weight,
    detect_retry,
    forget_abort,
    iso,
    iso_ceil,
    missing_objects,
    parse_time,
    percent_of,
    promote_past_abort,
    rollback_within_window,
    rs_by_hash,
    selector_string,
    start_steps,
    steps_done,
)
from tidegate.core.traffic import (
    basic_canary_counts,
    canary_scale_at,
    header_routes_at,
    steps_hash,
    weight_at,
)
from tidegate.core.validation import spec_problems, workload_problems

# Names that callers (tests, the simulator, k8s/execute) import from here.
_Pass = Pass
_basic_canary_counts = basic_canary_counts
_canary_scale_at = canary_scale_at
_header_routes_at = header_routes_at
_steps_hash = steps_hash
_weight_at = weight_at


def plan(obs: ObservedState) -> Plan:
    r = obs.rollout
    old = r.status
    # The pass plans on a copy (through the wire form: four times cheaper than a deep copy);
    # conditions are made anew by finish_status from the old ones.
    status = RolloutStatus.model_validate({k: v for k, v in old.wire().items() if k != "conditions"})
    p = Pass(obs=obs, status=status)
    template = obs.template
    if template is None:  # a workloadRef whose Deployment is not there (yet)
        ref = r.spec.workload_ref.name if r.spec.workload_ref else ""
        p.invalid = f"Deployment {ref} (spec.workloadRef) not found"
        p.message = f"{p.invalid}; waiting for it (the running version keeps serving)"
        status.observed_generation = r.metadata.generation
        finish_status(p, old)
        record_notifications(p, old)
        return Plan(actions=tuple(p.actions), status=p.status, requeue_after=p.requeue)
    current_hash = pod_template_hash(template)
    status.current_pod_hash = current_hash
    status.observed_generation = r.metadata.generation
    status.selector = selector_string(r)

    problems = spec_problems(r) + workload_problems(r, template)
    if (obs.router.refused or obs.router.invalid) and obs.router.problem:
        # Another namespace without its consent, or a route that cannot be weighed as asked.
        problems.append(obs.router.problem)
    missing = missing_objects(obs)
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
            plan_blue_green(p, current_hash, template)
        analysis.terminate_unwanted(p)

    scale_workload(p)
    sync_pod_metadata(p)
    restart(p)
    trim_history(p)
    finish_status(p, old)
    record_notifications(p, old)
    return Plan(actions=tuple(p.actions), status=p.status, requeue_after=p.requeue)


def record_notifications(p: Pass, old: RolloutStatus) -> None:
    """The pass's transitions go into the notification outbox of the status it writes."""
    r = p.obs.rollout
    if old.notifications is None and not notifications.subscriptions(r.metadata.annotations):
        return  # no subscribers, no outbox
    canary = r.spec.strategy.canary
    events = [a for a in p.actions if isinstance(a, Event)]
    # The outbox is reckoned on the status as written (the notifier reads that form back).
    outbox, dropped = notifications.outbox(
        r.metadata.annotations,
        events,
        old.wire(),
        p.status.wire(),
        p.obs.notified,
        iso(p.obs.now),
        steps=len(canary.steps) if canary is not None else 0,
    )
    if outbox is not None:
        p.status.notifications = NotificationsStatus.model_validate(outbox)
    if dropped:
        p.event(
            "NotificationsDropped",
            f"{dropped} undelivered notifications dropped: more than {notifications.MAX_PENDING} pending",
            warning=True,
        )


def _reset_for_revision(p: Pass, current_hash: str, steps_hash: str) -> None:
    st = p.status
    seen_hash = p.obs.rollout.status.current_pod_hash
    new_revision = st.current_step_hash is not None and seen_hash != current_hash
    if seen_hash == current_hash and st.current_step_hash == steps_hash:
        return
    if new_revision:
        p.event("NewRevision", f"new revision {current_hash}: starting the steps from the beginning")
    start_steps(p)
    st.current_step_hash = steps_hash
    st.skip_step = None
    st.analysis_blocked = None
    if seen_hash != current_hash:
        st.abort = False
        forget_abort(st)


def _plan_canary(p: Pass, canary: CanaryStrategy, current_hash: str, template: dict[str, Any]) -> None:
    obs, st = p.obs, p.status
    replicas = obs.rollout.spec.desired_replicas
    steps = canary.steps
    _reset_for_revision(p, current_hash, steps_hash(steps))
    detect_retry(p, current_hash)

    stable_hash = st.stable_rs
    if stable_hash is None or rs_by_hash(obs, stable_hash) is None:
        # First deploy (or the stable ReplicaSet is gone): no steps, straight to stable.
        stable_hash = current_hash
        st.stable_rs = current_hash
        steps_done(p, len(steps))

    if stable_hash == current_hash:
        plan_steady(p, canary, current_hash, template, replicas)
        return

    promote_past_abort(p, current_hash)
    if st.abort:
        plan_aborted(p, canary, current_hash, stable_hash, template, replicas)
        return

    if obs.rollout.spec.paused:
        p.paused = True
        p.message = "paused by spec.paused; `tidegate resume` (or promote) continues"

    index = st.current_step_index or 0
    if p.paused and (st.promote_full or index >= len(steps)):
        return  # spec.paused holds the final promotion too
    if st.promote_full or index >= len(steps) or rollback_within_window(p, current_hash, stable_hash):
        plan_promote(p, canary, current_hash, stable_hash, template, replicas)
        return
    plan_step(p, canary, steps, index, current_hash, stable_hash, template, replicas)


__all__ = [
    "HASH_LABEL",
    "_Pass",
    "_basic_canary_counts",
    "_canary_scale_at",
    "_header_routes_at",
    "_steps_hash",
    "_weight_at",
    "canary_replicas_for_weight",
    "iso",
    "iso_ceil",
    "parse_time",
    "percent_of",
    "plan",
]

"""Notifications: who is subscribed to what, which transitions a pass makes, and the outbox.

Subscriptions are annotations on the Rollout in Argo Rollouts' shape,
`notifications.tidegate.io/subscribe.<trigger>.<service>: <recipient>;<recipient>` (Argo's own
`notifications.argoproj.io/` prefix is read too, so a Rollout moved over keeps its subscriptions).
Triggers are Argo's names, derived from the Events a pass decides, as Argo's
`translateReasonToTrigger` derives them from its event reasons (utils/record/record.go).

Delivery happens outside the pass. What the pass does is record what it owes in
`status.notifications.pending`, in the same status write as the transition itself (guarded by
resourceVersion), so a transition is never told twice by a pass planned again after a conflict,
never lost when the operator dies after the write, and a new leader finds what is still owed.
Deliveries done are given back to the next pass (`ObservedState.notified`) which removes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tidegate.core.model import Event

PREFIXES = ("notifications.tidegate.io/subscribe.", "notifications.argoproj.io/subscribe.")
MAX_PENDING = 50
"""Notifications kept in status at most; older ones are dropped (with an Event)."""

TRIGGER_OF_REASON: dict[str, str] = {
    # Argo's reason RolloutUpdated is Tidegate's NewRevision; RolloutStepCompleted is StepCompleted.
    "NewRevision": "on-rollout-updated",
    "StepCompleted": "on-rollout-step-completed",
    "RolloutPaused": "on-rollout-paused",
    "RolloutResumed": "on-rollout-resumed",
    "RolloutPromoted": "on-rollout-promoted",
    "RolloutAborted": "on-rollout-aborted",
    "AnalysisRunFailed": "on-analysis-run-failed",
    "RolloutRetried": "on-rollout-retried",
    "ProgressDeadlineExceeded": "on-progress-deadline-exceeded",
}
"""Events of a pass (decisions recorded in status) and the trigger each fires."""

INCONCLUSIVE = "on-analysis-run-inconclusive"
COMPLETED = "on-rollout-completed"
TRIGGERS: tuple[str, ...] = (*TRIGGER_OF_REASON.values(), INCONCLUSIVE, COMPLETED)


@dataclass(frozen=True)
class Subscription:
    trigger: str
    service: str
    recipients: tuple[str, ...]


def parse_recipients(value: str) -> tuple[str, ...]:
    """`a; b;` -> (a, b); an empty value is one empty recipient (a webhook needs none), as Argo's.

    >>> parse_recipients("deploys;alerts"), parse_recipients("")
    (('deploys', 'alerts'), ('',))
    """
    if value.strip() == "":
        return ("",)
    return tuple(r.strip() for r in value.split(";") if r.strip())


def subscriptions(annotations: Mapping[str, str]) -> tuple[Subscription, ...]:
    """The Rollout's subscriptions, as Argo's notifications-engine reads its annotations
    (`subscriptions.Annotations.iterate`): `subscribe.<trigger>.<service>`."""
    out: list[Subscription] = []
    for key in sorted(annotations):
        prefix = next((p for p in PREFIXES if key.startswith(p)), None)
        if prefix is None:
            continue
        trigger, _, service = key[len(prefix) :].partition(".")
        if not trigger or not service:
            continue
        out.append(Subscription(trigger, service, parse_recipients(annotations[key])))
    return tuple(out)


def destinations(trigger: str, subs: Iterable[Subscription]) -> list[str]:
    """`service:recipient` for every subscription to the trigger, each once, in a stable order."""
    seen: list[str] = []
    for sub in subs:
        if sub.trigger != trigger:
            continue
        for recipient in sub.recipients:
            dest = f"{sub.service}:{recipient}"
            if dest not in seen:
                seen.append(dest)
    return seen


@dataclass(frozen=True)
class Transition:
    trigger: str
    reason: str
    message: str


def _completed(status: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Completed" and c.get("status") == "True" for c in status.get("conditions") or []
    )


def _inconclusive(status: Mapping[str, Any]) -> bool:
    return any(c.get("reason") == "InconclusiveAnalysisRun" for c in status.get("pauseConditions") or [])


def transitions(
    events: Sequence[Event], old: Mapping[str, Any], new: Mapping[str, Any], completed_revision: str | None
) -> list[Transition]:
    """The triggers a pass fires: one per Event it decides (those posted after its status write;
    an Event telling of an action already done is not a transition of the Rollout), and two read
    from the status itself — an inconclusive analysis pausing the rollout, and a revision
    completing (once per revision: Completed flickers while pods come and go on a scale).
    """
    out: list[Transition] = []
    for event in events:
        trigger = TRIGGER_OF_REASON.get(event.reason)
        if trigger is not None and not event.action:
            out.append(Transition(trigger, event.reason, event.message))
    if _inconclusive(new) and not _inconclusive(old):
        out.append(Transition(INCONCLUSIVE, "AnalysisRunInconclusive", str(new.get("message") or "")))
    revision = new.get("currentPodHash")
    if _completed(new) and revision and revision != completed_revision:
        out.append(
            Transition(COMPLETED, "RolloutCompleted", f"revision {revision} is stable and fully available")
        )
    return out


def step_of(status: Mapping[str, Any], steps: int) -> int | None:
    if not steps:
        return None
    return min(int(status.get("currentStepIndex") or 0), steps - 1) + 1


def outbox(
    annotations: Mapping[str, str],
    events: Sequence[Event],
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    notified: frozenset[str],
    now: str,
    steps: int = 0,
) -> tuple[dict[str, Any] | None, int]:
    """The new `status.notifications` (None: the Rollout has none and needs none) and how many
    old notifications were dropped to keep it within MAX_PENDING.

    `notified` holds the deliveries done since (`id/destination`), which leave the outbox.
    """
    subs = subscriptions(annotations)
    before: dict[str, Any] | None = old.get("notifications")
    if before is None and not subs:
        return None, 0
    if before is None:
        # First sight of subscriptions: a revision already complete is not told again.
        before = {"seq": 0, "pending": []}
        if _completed(old) and old.get("currentPodHash"):
            before["completedRevision"] = old.get("currentPodHash")
    seq = int(before.get("seq") or 0)
    pending: list[dict[str, Any]] = []
    for owed in before.get("pending") or []:
        left = [d for d in owed.get("destinations") or [] if f"{owed.get('id')}/{d}" not in notified]
        if left:
            pending.append({**owed, "destinations": left})
    completed_revision = before.get("completedRevision")
    for t in transitions(events, old, new, completed_revision):
        if t.trigger == COMPLETED:
            completed_revision = new.get("currentPodHash")
        dests = destinations(t.trigger, subs)
        if not dests:
            continue
        seq += 1
        item: dict[str, Any] = {
            "id": seq,
            "trigger": t.trigger,
            "reason": t.reason,
            "message": t.message,
            "time": now,
            "destinations": dests,
        }
        if new.get("currentPodHash"):
            item["revision"] = new["currentPodHash"]
        step = step_of(new, steps)
        if step is not None:
            item["step"] = step
        pending.append(item)
    dropped = max(0, len(pending) - MAX_PENDING)
    pending = pending[dropped:]
    out: dict[str, Any] = {"seq": seq, "pending": pending}
    if completed_revision:
        out["completedRevision"] = completed_revision
    return out, dropped

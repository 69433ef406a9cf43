"""Notification delivery: the outbox in `status.notifications.pending`, sent off the reconcile path.

Public surface: `Notifier` (offer a Rollout after each pass; ask what was delivered since) and
`Reporter` (what the operator does with each outcome: an Event and a metric). The decisions —
who is subscribed, which transitions fire which trigger, what each service is sent — are pure
and live in `tidegate.core.notifications` and `tidegate.core.notify_services`.
"""

from tidegate.notifications._notifier import Notifier, Reporter

__all__ = ["Notifier", "Reporter"]

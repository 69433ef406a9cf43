"""spec.restartAt in the future is waited for (Argo Rollouts' RolloutPodRestarter.Reconcile:
enqueueAfter the time left), never acted on early; a value that is not a time, or a pause
no timer can hold, is InvalidSpec, and the planner never raises on either."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from tests.unit.planner_fixtures import NOW, V1, canary_rollout, istio, observed, rs
from tidegate.api.rollout import Rollout
from tidegate.core.housekeeping import RESTART_RECHECK_SECONDS
from tidegate.core.model import Event, Plan, ReplacePod
from tidegate.core.planner import plan

PODS = tuple(f"web-{V1}-{i}" for i in range(4))


def complete(restart_at: str) -> Rollout:
    """The Rollout on web:1, fully promoted and Healthy, with spec.restartAt."""
    r = canary_rollout(image="web:1")
    spec = r.spec.model_copy(update={"restart_at": restart_at})
    status = {
        "stableRS": V1,
        "currentPodHash": V1,
        "currentStepIndex": 2,
        "phase": "Healthy",
        "message": "healthy",
        "observedGeneration": 2,
    }
    return r.model_copy(update={"spec": spec, "status": type(r.status).model_validate(status)})


def run(restart_at: str, left: tuple[str, ...] = PODS) -> Plan:
    obs = observed(complete(restart_at), [rs("web:1", 4, 4)], {"web-stable": V1, "web-canary": V1}, istio())
    return plan(dataclasses.replace(obs, pods_to_restart=left))


def restart_events(p: Plan) -> list[str]:
    return [a.reason for a in p.actions if isinstance(a, Event) and a.reason.startswith("Restart")]


@pytest.mark.parametrize(
    ("restart_at", "requeue"),
    [
        ("2026-01-01T12:00:30Z", 30.0),  # NOW is 12:00:00
        ("2026-01-01T14:00:00+02:00", 0.05),  # 12:00 UTC: now, not the future (wake_in's floor)
        ("2026-01-01T12:30:00Z", 1800.0),
        ("2026-01-02T12:00:00Z", RESTART_RECHECK_SECONDS),  # further ahead: looked at again hourly
        ("2999-01-01T00:00:00Z", RESTART_RECHECK_SECONDS),
    ],
)
def test_a_restart_at_in_the_future_evicts_nothing_and_requeues_for_its_time(
    restart_at: str, requeue: float
) -> None:
    p = run(restart_at)
    if requeue == 0.05:  # the time has come: the restart starts
        assert ReplacePod(PODS[0]) in p.actions
        return
    assert not any(isinstance(a, ReplacePod) for a in p.actions)
    assert restart_events(p) == []  # neither RestartStarted nor a false RestartCompleted
    assert p.status.restarted_at is None
    assert p.status.phase == "Healthy"
    assert p.requeue_after == pytest.approx(requeue)


def test_a_restart_at_in_the_past_starts_at_once() -> None:
    p = run("2026-01-01T11:59:00Z")
    assert ReplacePod(PODS[0]) in p.actions
    assert restart_events(p) == ["RestartStarted"]


def test_the_restart_begins_once_its_time_comes() -> None:
    at = "2026-01-01T12:00:30Z"
    obs = observed(complete(at), [rs("web:1", 4, 4)], {"web-stable": V1, "web-canary": V1}, istio())
    assert plan(dataclasses.replace(obs, pods_to_restart=PODS)).requeue_after == pytest.approx(30.0)
    later = dataclasses.replace(obs, pods_to_restart=PODS, now=NOW + timedelta(seconds=31))
    assert ReplacePod(PODS[0]) in plan(later).actions


@pytest.mark.parametrize("value", ["2024-13-45Tgarbage", "2026-01-31T12:00:00", "2024-02-30T00:00:00Z"])
def test_a_restart_at_that_is_not_a_time_is_invalid_spec_and_posts_no_restart_completed(value: str) -> None:
    p = run(value, left=())
    assert restart_events(p) == []
    assert p.status.restarted_at is None
    assert p.status.phase == "Degraded"
    invalid = next(c for c in p.status.wire()["conditions"] if c["type"] == "InvalidSpec")
    assert invalid["status"] == "True" and "spec.restartAt" in invalid["message"]
    assert not any(isinstance(a, ReplacePod) for a in p.actions)


def test_a_pause_no_timer_can_hold_is_invalid_spec_not_an_exception() -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {"duration": "99999999999999999999h"}}]
    r = canary_rollout(image="web:2", steps=steps)
    p = plan(observed(r, [rs("web:1", 4, 4)], {"web-stable": V1, "web-canary": V1}, istio()))
    invalid = next(c for c in p.status.wire()["conditions"] if c["type"] == "InvalidSpec")
    assert invalid["status"] == "True"
    bound = "spec.strategy.canary.steps[1].pause.duration: duration must be at most a year"
    assert bound in invalid["message"]
    assert p.status.phase == "Degraded"

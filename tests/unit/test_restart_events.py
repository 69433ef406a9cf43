"""spec.restartAt: the Events of a restart name the restart (RestartStarted, RestartCompleted),
not the phase flips its own evictions cause (`RolloutHealthy: restarting: ...` was the old one)."""

from __future__ import annotations

import dataclasses
from typing import Any

from tests.unit.planner_fixtures import V1, canary_rollout, istio, observed, rs
from tidegate.core.model import Event, Plan, ReplacePod
from tidegate.core.planner import plan

RESTART_AT = "2026-01-01T11:59:00Z"
PODS = tuple(f"web-{V1}-{i}" for i in range(4))


def complete(phase: str, message: str, restarted_at: str | None = None) -> Any:
    """The Rollout on web:1, fully promoted, with spec.restartAt and the status a pass left."""
    r = canary_rollout(image="web:1")
    spec = r.spec.model_copy(update={"restart_at": RESTART_AT})
    status = {
        "stableRS": V1,
        "currentPodHash": V1,
        "currentStepIndex": 2,
        "phase": phase,
        "message": message,
        "restartedAt": restarted_at,
        "observedGeneration": 2,
    }
    return r.model_copy(update={"spec": spec, "status": type(r.status).model_validate(status)})


def run(phase: str, message: str, available: int, left: tuple[str, ...]) -> Plan:
    obs = observed(
        complete(phase, message), [rs("web:1", 4, available)], {"web-stable": V1, "web-canary": V1}, istio()
    )
    return plan(dataclasses.replace(obs, pods_to_restart=left))


def events(p: Plan) -> list[str]:
    return [a.reason for a in p.actions if isinstance(a, Event)]


def test_a_restart_starts_with_restart_started_and_no_phase_event() -> None:
    p = run("Healthy", "healthy", 4, PODS)
    assert ReplacePod(PODS[0]) in p.actions
    assert events(p) == ["RestartStarted"]
    started = next(a for a in p.actions if isinstance(a, Event))
    assert started.message == f"replacing 4 pods created before {RESTART_AT}, one at a time"


def test_the_phase_flips_of_its_own_evictions_post_no_rollout_events() -> None:
    # A pod evicted: 3 of 4 available, the phase goes Progressing; then back to Healthy.
    down = run("Healthy", f"restarting: replacing pod {PODS[0]} (4 left)", 3, PODS[1:])
    assert down.status.phase == "Progressing"
    back = run("Progressing", "waiting for 3/4 pods available", 4, PODS[1:])
    assert back.status.phase == "Healthy" and back.status.message.startswith("restarting:")
    assert events(down) == [] and events(back) == []  # no RolloutHealthy, no second RestartStarted


def test_a_restart_ends_with_restart_completed() -> None:
    p = run("Healthy", f"restarting: replacing pod {PODS[3]} (1 left)", 4, ())
    assert p.status.restarted_at == RESTART_AT
    assert events(p) == ["RestartCompleted"]

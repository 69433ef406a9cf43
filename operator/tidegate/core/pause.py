"""A pause step: held until its duration has passed, or until a person promotes."""

from __future__ import annotations

from datetime import timedelta

from tidegate.api.rollout import CanaryStep
from tidegate.core.durations import DurationError, format_duration, parse_duration
from tidegate.core.toolkit import (
    Pass,
    iso,
    iso_ceil,
    parse_time,
    step_complete,
)


def plan_pause(p: Pass, step: CanaryStep, index: int, n: int) -> None:
    st = p.status
    assert step.pause is not None
    conditions_now = [c for c in st.get("pauseConditions") or [] if c.get("reason") == "CanaryPauseStep"]
    if not conditions_now:
        if st.get("controllerPause"):
            # The pause condition is gone while we had set it: somebody promoted.
            st["controllerPause"] = False
            step_complete(p, index, n, f"step {index + 1}/{n} promoted")
            return
        st["pauseConditions"] = [
            *(st.get("pauseConditions") or []),
            {"reason": "CanaryPauseStep", "startTime": iso_ceil(p.obs.now)},
        ]
        st["controllerPause"] = True
        conditions_now = [{"startTime": iso_ceil(p.obs.now)}]
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
    step_complete(p, index, n, f"step {index + 1}/{n} pause ended")

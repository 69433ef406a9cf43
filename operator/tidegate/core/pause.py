"""A pause step: held until its duration has passed, or until a person promotes."""

from __future__ import annotations

from datetime import timedelta

from tidegate.api.rollout import CanaryStep
from tidegate.core.durations import DurationError, format_duration, parse_duration
from tidegate.core.toolkit import (
    Pass,
    add_pause,
    drop_pause,
    iso,
    iso_ceil,
    parse_time,
    paused_for,
    step_complete,
)


def plan_pause(p: Pass, step: CanaryStep, index: int, n: int) -> None:
    st = p.status
    assert step.pause is not None
    held = paused_for(st, "CanaryPauseStep")
    if held:
        started_at = held[0].start_time
    else:
        if st.controller_pause:
            # The pause condition is gone while we had set it: somebody promoted.
            st.controller_pause = False
            step_complete(p, index, n, f"step {index + 1}/{n} promoted")
            return
        started_at = iso_ceil(p.obs.now)
        add_pause(st, "CanaryPauseStep", started_at)
        p.event("RolloutPaused", f"paused at step {index + 1}/{n}")
    p.paused = True
    if step.pause.duration is None:
        p.message = f"paused at step {index + 1}/{n} until promoted (`tidegate promote`)"
        return
    try:
        seconds = parse_duration(step.pause.duration)
    except DurationError:
        seconds = 0.0
    started = parse_time(started_at) or p.obs.now
    remaining = (started + timedelta(seconds=seconds) - p.obs.now).total_seconds()
    if remaining > 0:
        until = iso(started + timedelta(seconds=seconds))
        p.message = f"paused at step {index + 1}/{n} for {format_duration(remaining)} more (until {until})"
        p.wake_in(remaining)
        return
    p.paused = False
    drop_pause(st, "CanaryPauseStep")
    p.event("RolloutResumed", f"pause of step {index + 1}/{n} ended")
    step_complete(p, index, n, f"step {index + 1}/{n} pause ended")

"""Durations as users write them: "30s", "10m", "1h30m", "500ms", or a bare integer (seconds)."""

from __future__ import annotations

import re

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_WHOLE = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h))+$")


class DurationError(ValueError):
    """A duration that does not parse."""


def parse_duration(value: int | float | str) -> float:
    """Seconds in a duration.

    >>> parse_duration("1m30s"), parse_duration(45), parse_duration("45")
    (90.0, 45.0, 45.0)
    """
    if isinstance(value, bool):
        raise DurationError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise DurationError(f"a duration cannot be negative: {value!r}")
        return float(value)
    text = value.strip()
    if text.isdigit():
        return float(text)
    if not _WHOLE.match(text):
        raise DurationError(f"not a duration: {value!r} (write e.g. 30s, 10m, 1h, or a number of seconds)")
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(text))


def format_duration(seconds: float) -> str:
    """Short human form: 45s, 2m05s, 1h10m."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"

"""Argo Rollouts' rangeQuery times: `now()`, `now() - duration("1h")`, `now() + duration("5m")`.

Argo evaluates `rangeQuery.start` and `end` with expr-lang (`evaluate.EvalTime`). Tidegate takes
the forms its documentation and examples use: `now()` followed by any number of `+` or `-`
`duration("...")` terms (Go durations: `90s`, `1h30m`, `500ms`). Anything else is an error that
says which forms are understood, never a silent guess.
"""

from __future__ import annotations

import re

from tidegate.core.durations import DurationError, parse_duration

__all__ = ["TimeExpressionError", "eval_time"]

_NOW = re.compile(r"^\s*now\(\s*\)")
_TERM = re.compile(r"\s*([+-])\s*duration\(\s*(?:\"([^\"]*)\"|'([^']*)')\s*\)")


class TimeExpressionError(ValueError):
    """A time expression outside the understood forms."""


def eval_time(expression: str, now: float) -> float:
    """The moment `expression` names, in epoch seconds.

    >>> eval_time('now()', 1000.0)
    1000.0
    >>> eval_time('now() - duration("1m")', 1000.0)
    940.0
    >>> eval_time("now() - duration('1h') + duration(\\"30m\\")", 10000.0)
    8200.0
    """
    match = _NOW.match(expression)
    if match is None:
        raise TimeExpressionError(
            f'{expression!r}: write now(), or now() - duration("1h") (terms + or - duration("..."))'
        )
    moment, position = now, match.end()
    while position < len(expression.rstrip()):
        term = _TERM.match(expression, position)
        if term is None:
            raise TimeExpressionError(
                f"{expression!r}: cannot read {expression[position:].strip()!r}; "
                'after now() only + or - duration("...") terms are understood'
            )
        text = term.group(2) if term.group(2) is not None else term.group(3)
        try:
            seconds = parse_duration(text)
        except DurationError as error:
            raise TimeExpressionError(f"{expression!r}: {error}") from None
        moment += seconds if term.group(1) == "+" else -seconds
        position = term.end()
    return moment

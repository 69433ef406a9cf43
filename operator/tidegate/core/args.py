"""Resolve `{{args.NAME}}` placeholders in queries, URLs and bodies.

Values are escaped for where they land, so that an argument (which may come from a
Rollout's author, a Secret or a pod label) can only ever be data:

- `promql`: for use inside a PromQL string literal, `"..."` or `'...'`. A backslash
  becomes `\\\\`; quotes, backticks and control characters become `\\xHH` escapes (valid in
  both kinds of quotes, unlike `\\"` which PromQL rejects inside `'...'`). A value can
  therefore never end the literal it sits in. Inside a backtick raw string nothing can be
  escaped; a backtick in the value still cannot end it, but it arrives as the text `\\x60`.
- `url`: percent-encoded, every reserved character included (`/ ? & # =`), for one path
  segment or query value.
- `none`: inserted as is (headers, bodies).

Placeholders other than `{{args.*}}` (e.g. the judge's `{{hash}}`) are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal
from urllib.parse import quote

__all__ = ["ArgumentError", "Escape", "placeholders", "render_query"]

Escape = Literal["promql", "url", "none"]

_PLACEHOLDER = re.compile(r"\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}")


class ArgumentError(ValueError):
    """A placeholder names an argument that has no value."""


def placeholders(template: str) -> list[str]:
    """Names of the arguments a template uses, in order of first use."""
    return list(dict.fromkeys(_PLACEHOLDER.findall(template)))


def escape_promql(value: str) -> str:
    r"""The value escaped for a PromQL string literal.

    >>> escape_promql('a"b\\c')
    'a\\x22b\\\\c'
    """
    out: list[str] = []
    for char in value:
        if char == "\\":
            out.append("\\\\")
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif char in "\"'`" or ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def _escape(value: str, escape: Escape) -> str:
    if escape == "promql":
        return escape_promql(value)
    if escape == "url":
        return quote(value, safe="")
    return value


def render_query(template: str, args: Mapping[str, str], *, escape: Escape) -> str:
    """Replace every `{{args.NAME}}` by its escaped value.

    >>> render_query('up{job="{{args.job}}"}', {"job": "api"}, escape="promql")
    'up{job="api"}'
    """
    missing = [name for name in placeholders(template) if name not in args]
    if missing:
        given = ", ".join(sorted(args)) or "none"
        names = ", ".join(repr(name) for name in missing)
        plural = "s" if len(missing) > 1 else ""
        raise ArgumentError(f"missing argument{plural} {names} (arguments given: {given})")
    return _PLACEHOLDER.sub(lambda match: _escape(args[match.group(1)], escape), template)

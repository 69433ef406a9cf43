"""Resolve `{{args.NAME}}` placeholders in queries, URLs and bodies.

Values are escaped for where they land, so that an argument (which may come from a
Rollout's author, a Secret or a pod label) can only ever be data:

- `promql`: for use inside a PromQL string literal, `"..."` or `'...'`. A backslash
  becomes `\\\\`; quotes, backticks and control characters become `\\xHH` escapes (valid in
  both kinds of quotes, unlike `\\"` which PromQL rejects inside `'...'`). A value can
  therefore never end the literal it sits in. Inside a backtick raw string nothing can be
  escaped; a backtick in the value still cannot end it, but it arrives as the text `\\x60`.
- `url`: escaped by where the placeholder sits in the URL (`render_url`): in the path,
  the query or the fragment, percent-encoded with every reserved character (`/ ? & # =`),
  as one path segment or query value, so a value cannot reach another part of the URL;
  before the path (a whole URL, as in Argo Rollouts' `url: "{{args.secret-url}}"`, or
  the host and port), inserted as is: there the URL's author made the value the address.
- `none`: inserted as is (headers, bodies).

Placeholders other than `{{args.*}}` (e.g. the judge's `{{hash}}`) are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal
from urllib.parse import quote

__all__ = ["ArgumentError", "Escape", "placeholders", "render_query", "render_url"]

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
    return value


def _check_given(template: str, args: Mapping[str, str]) -> None:
    missing = [name for name in placeholders(template) if name not in args]
    if missing:
        given = ", ".join(sorted(args)) or "none"
        names = ", ".join(repr(name) for name in missing)
        plural = "s" if len(missing) > 1 else ""
        raise ArgumentError(f"missing argument{plural} {names} (arguments given: {given})")


def render_query(template: str, args: Mapping[str, str], *, escape: Escape) -> str:
    """Replace every `{{args.NAME}}` by its escaped value.

    >>> render_query('up{job="{{args.job}}"}', {"job": "api"}, escape="promql")
    'up{job="api"}'
    """
    if escape == "url":
        return render_url(template, args)
    _check_given(template, args)
    return _PLACEHOLDER.sub(lambda match: _escape(args[match.group(1)], escape), template)


def _in_address(prefix: str) -> bool:
    """The URL written so far ends before its path: in the scheme, or in the host and port."""
    if any(mark in prefix for mark in "?#"):
        return False
    _, sep, rest = prefix.partition("://")
    return not sep or "/" not in rest


def render_url(template: str, args: Mapping[str, str]) -> str:
    """A URL with its `{{args.NAME}}` placeholders resolved, each escaped for its place.

    >>> render_url("{{args.url}}", {"url": "https://h:8443/v1/q?x=1"})
    'https://h:8443/v1/q?x=1'
    >>> render_url("http://{{args.host}}/api/{{args.id}}?q={{args.id}}", {"host": "h:80", "id": "a/b&c"})
    'http://h:80/api/a%2Fb%26c?q=a%2Fb%26c'
    """
    _check_given(template, args)
    out: list[str] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(template):
        out.append(template[pos : match.start()])
        value = args[match.group(1)]
        out.append(value if _in_address("".join(out)) else quote(value, safe=""))
        pos = match.end()
    out.append(template[pos:])
    return "".join(out)

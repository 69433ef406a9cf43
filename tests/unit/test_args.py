"""`{{args.NAME}}` placeholders: substitution, missing arguments, escaping per destination."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest

from tidegate.core.args import ArgumentError, placeholders, render_query

# --- a PromQL string-literal reader, after Prometheus' lexer (promql/parser/lex.go) -----

_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def promql_string_literals(query: str) -> list[str]:
    """The decoded content of every string literal in `query`, as Prometheus reads them.

    Follows lex.go's lexString/lexRawString and scanEscape: inside "..." or '...', a
    backslash starts an escape (\\a \\b \\f \\n \\r \\t \\v \\\\, the literal's own quote,
    octal, \\x, \\u, \\U), anything else after a backslash is an error, and a newline ends
    the query with an error. Backtick strings are raw.
    """
    literals: list[str] = []
    i = 0
    while i < len(query):
        quote = query[i]
        if quote not in "\"'`":
            i += 1
            continue
        i += 1
        out: list[str] = []
        while True:
            if i >= len(query):
                raise ValueError("unterminated quoted string")
            char = query[i]
            if char == quote:
                i += 1
                break
            if quote != "`" and char == "\n":
                raise ValueError("newline in string")
            if quote != "`" and char == "\\":
                escape = query[i + 1]
                if escape in _SIMPLE_ESCAPES:
                    out.append(_SIMPLE_ESCAPES[escape])
                    i += 2
                elif escape == quote:
                    out.append(quote)
                    i += 2
                elif escape == "x":
                    out.append(chr(int(query[i + 2 : i + 4], 16)))
                    i += 4
                elif escape in "01234567":
                    out.append(chr(int(query[i + 1 : i + 4], 8)))
                    i += 4
                elif escape == "u":
                    out.append(chr(int(query[i + 2 : i + 6], 16)))
                    i += 6
                elif escape == "U":
                    out.append(chr(int(query[i + 2 : i + 10], 16)))
                    i += 10
                else:
                    raise ValueError(f"unknown escape sequence \\{escape}")
                continue
            out.append(char)
            i += 1
        literals.append("".join(out))
    return literals


HOSTILE_VALUES = [
    'x"} or vector(1) #',
    "x'} or vector(1) #",
    'x\\"} or vector(1)',
    "x\\",
    "x\\\\",
    "back`tick",
    "line\nbreak",
    "cr\rtab\t",
    "mixed \"double\" and 'single'",
    "\x00nul\x1besc\x7f",
    "ünïcødé ✓",
    "",
    "plain-value_1.2",
    '"}',
    "\\x22",
]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
@pytest.mark.parametrize("quote", ['"', "'"])
def test_a_promql_argument_stays_inside_its_string_literal(value: str, quote: str) -> None:
    template = (
        f"sum(rate(http_requests_total{{job={quote}{{{{args.svc}}}}{quote}, code!~{quote}5..{quote}}}[1m]))"
    )
    rendered = render_query(template, {"svc": value}, escape="promql")
    # Exactly the template's two literals, the first holding the raw value, and the
    # query outside the literals unchanged.
    assert promql_string_literals(rendered) == [value, "5.."]
    assert rendered.startswith("sum(rate(http_requests_total{job=" + quote)
    assert rendered.endswith(f"{quote}5..{quote}}}[1m]))")
    assert "\n" not in rendered


def test_the_injection_attempt_from_the_issue() -> None:
    value = 'x"} or vector(1) #'
    rendered = render_query('up{job="{{args.job}}"}', {"job": value}, escape="promql")
    assert rendered == 'up{job="x\\x22} or vector(1) #"}'
    assert promql_string_literals(rendered) == [value]


@pytest.mark.parametrize("value", ["a`b", "`) or vector(1) #"])
def test_a_backtick_cannot_end_a_raw_string(value: str) -> None:
    rendered = render_query("up{job=`{{args.job}}`}", {"job": value}, escape="promql")
    assert len(promql_string_literals(rendered)) == 1
    assert rendered.count("`") == 2


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("api", "api"),
        ("a/b", "a%2Fb"),
        ("a b", "a%20b"),
        ("x?y=1&z#w", "x%3Fy%3D1%26z%23w"),
        ("ünï", "%C3%BCn%C3%AF"),
        ("../admin", "..%2Fadmin"),
    ],
)
def test_url_escaping(value: str, escaped: str) -> None:
    rendered = render_query("http://h/api/{{args.x}}?q={{args.x}}", {"x": value}, escape="url")
    assert rendered == f"http://h/api/{escaped}?q={escaped}"
    assert unquote(escaped) == value


def test_no_escaping_inserts_as_is() -> None:
    body = '{"service": "{{args.svc}}"}'
    assert render_query(body, {"svc": 'a"b'}, escape="none") == '{"service": "a"b"}'


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{args.a}}-{{args.b}}", "1-2"),
        ("{{ args.a }}", "1"),
        ("{{args.a}}{{args.a}}", "11"),
        ("no placeholders", "no placeholders"),
        ("{{hash}} and {{args.a}}", "{{hash}} and 1"),
        ("{{args.dotted.name}}", "dotted"),
        ("{{args.with-dash}}", "dash"),
    ],
)
def test_substitution(template: str, expected: str) -> None:
    args = {"a": "1", "b": "2", "dotted.name": "dotted", "with-dash": "dash"}
    assert render_query(template, args, escape="none") == expected


def test_a_missing_argument_is_named() -> None:
    with pytest.raises(ArgumentError, match=re.escape("missing argument 'service' (arguments given: ns)")):
        render_query('up{job="{{args.service}}"}', {"ns": "x"}, escape="promql")


def test_all_missing_arguments_are_named() -> None:
    with pytest.raises(ArgumentError, match=re.escape("missing arguments 'a', 'b' (arguments given: none)")):
        render_query("{{args.a}} {{args.b}} {{args.a}}", {}, escape="none")


def test_argument_error_is_a_value_error() -> None:
    assert issubclass(ArgumentError, ValueError)


def test_placeholders_in_order_of_first_use() -> None:
    assert placeholders("{{args.b}} {{args.a}} {{args.b}} {{hash}}") == ["b", "a"]


def test_reader_self_check() -> None:
    """The literal reader above agrees with Prometheus on what is an error."""
    with pytest.raises(ValueError, match="unknown escape"):
        promql_string_literals("'\\\"'")  # \" inside '...' is rejected by Prometheus
    assert promql_string_literals("\"\\\"\" '\\'' `\\x`") == ['"', "'", "\\x"]


@pytest.mark.parametrize(
    ("template", "args", "expected"),
    [
        # A whole URL from an argument (Argo Rollouts' rollout-secret example): as is.
        ("{{args.secret-url}}", {"secret-url": "https://h:8443/api/v1/q?a=1&b=2"}, "https://h:8443/api/v1/q?a=1&b=2"),
        # Host and port: as is; path segment and query value: escaped.
        ("http://{{args.host}}/x/{{args.seg}}?q={{args.seg}}", {"host": "svc.ns:9090", "seg": "a b/c"},
         "http://svc.ns:9090/x/a%20b%2Fc?q=a%20b%2Fc"),
        # A value in the path can never start a query or a fragment.
        ("https://h/{{args.p}}", {"p": "x?admin=1#y"}, "https://h/x%3Fadmin%3D1%23y"),
        ("https://h/?q={{args.q}}#{{args.f}}", {"q": "1&x=2", "f": "a/b"}, "https://h/?q=1%26x%3D2#a%2Fb"),
    ],
)  # fmt: skip
def test_url_arguments_are_escaped_for_where_they_sit(
    template: str, args: dict[str, str], expected: str
) -> None:
    assert render_query(template, args, escape="url") == expected


def test_a_secret_url_is_redacted_with_or_without_its_query() -> None:
    from tidegate.k8s.analysis import _Scrubber

    scrub = _Scrubber()
    scrub.secrets.append("https://hooks.internal/t/abc123?key=s3cr3t")
    message = (
        "GET https://hooks.internal/t/abc123: HTTP 500 (from https://hooks.internal/t/abc123?key=s3cr3t)"
    )
    assert scrub(message) == "GET <redacted>: HTTP 500 (from <redacted>)"

"""Conditions in CEL: compile errors, evaluation, helpers, int/double mixing."""

from __future__ import annotations

import math

import pytest

from tidegate.core.expressions import CompiledExpression, ExpressionError, compile_expression

NAN = math.nan
INF = math.inf


@pytest.mark.parametrize(
    ("text", "result", "expected"),
    [
        # What Argo Rollouts users write.
        ("result[0] >= 0.95", [0.96], True),
        ("result[0] >= 0.95", [0.94], False),
        ("result >= 0.95", 0.95, True),
        ("len(result) > 0 && result[0] >= 0.95", [], False),
        ("len(result) > 0 && result[0] >= 0.95", [0.99], True),
        ("size(result) > 0 && result[0] >= 0.95", [], False),
        ("result.size() == 2", [1.0, 2.0], True),
        ("isNaN(result)", NAN, True),
        ("isNaN(result)", 0.5, False),
        ("isNaN(result[0])", [NAN], True),
        ("isInf(result)", INF, True),
        ("isInf(result)", -INF, True),
        ("isInf(result)", 1e308, False),
        ("default(result[0], 0) > 1", [], False),
        ("default(result[0], 0) > 1", [2.0], True),
        ("default(result[0], 5) == 5", [NAN], True),
        ("default(result.missing, 3) == 3", {"present": 1}, True),
        ("default(result.present, 3) == 1", {"present": 1}, True),
        ("default(result.present, 3) == 3", {"present": None}, True),
        ("len(result) == 0", None, True),
        ("len(result) == 2", {"a": 1, "b": 2}, True),
        ("len(result) == 3", "abc", True),
        # CEL macros and functions keep working.
        ("result.all(x, x > 0.5)", [0.6, 0.7], True),
        ("result.exists(x, x > 0.65)", [0.6, 0.7], True),
        ("result.exists(x, isNaN(x))", [1.0, NAN], True),
        ("result.filter(x, x > 1).size() == 1", [1.0, 2.5], True),
        ("result.map(x, x * 2)[1] == 5", [1.0, 2.5], True),
        ("has(result.data) && result.data.ok", {"data": {"ok": True}}, True),
        ("has(result.data)", {}, False),
        ("result.status == 'ok'", {"status": "ok"}, True),
        ("result.status.startsWith('o')", {"status": "ok"}, True),
        ("result ? true : false", True, True),
        ("!result", False, True),
        ("result == null", None, True),
    ],
)
def test_evaluates(text: str, result: object, expected: bool) -> None:
    assert compile_expression(text).evaluate(result) is expected


@pytest.mark.parametrize(
    ("text", "result", "expected"),
    [
        # An int literal against a double result: CEL alone would refuse `==` and `+`.
        ("result[0] >= 1", [0.99], False),
        ("result[0] >= 1", [1.0], True),
        ("result[0] == 1", [1.0], True),
        ("result[0] != 1", [1.0], False),
        ("result == 1", 1.0, True),
        ("1 < result", 1.5, True),
        ("1 <= result", 1.0, True),
        ("result * 100 > 95", 0.96, True),
        ("result + 1 == 2", 1.0, True),
        ("result - 1 < 0", 0.5, True),
        ("100 * result >= 95", 0.95, True),
        ("result / 2 == 0.25", 0.5, True),
        ("1 in result", [1.0, 2.0], True),
        ("3 in result", [1.0, 2.0], False),
        # A double literal against an int result (web provider JSON).
        ("result.count > 4.5", {"count": 5}, True),
        ("result.count == 5.0", {"count": 5}, True),
        ("result.count / 2 == 2", {"count": 5}, True),  # two ints: CEL integer division
        ("result.count / 2.0 == 2.5", {"count": 5}, True),
        # Unrelated types are unequal, not an error (later CEL's heterogeneous equality).
        ("result == 'x'", 1.0, False),
        ("result != 'x'", 1.0, True),
        ("'x' in result", [1.0], False),
    ],
)
def test_ints_and_doubles_mix(text: str, result: object, expected: bool) -> None:
    assert compile_expression(text).evaluate(result) is expected


@pytest.mark.parametrize(
    ("text", "result", "message"),
    [
        ("result[0] >= 0.95", [], "index out of range"),
        ("result[1] >= 0.95", [0.99], "guard with len(result) > 0"),
        ("result.missing > 1", {"a": 1}, "no such member in mapping: 'missing'"),
        ("result[0] * 2", [0.8], "must be true or false, but gave double 1.6"),
        ("result", 0.5, "must be true or false, but gave double"),
        ("result", "yes", "must be true or false, but gave string"),
        ("result < 'x'", 1.0, "no operator < for double and string"),
        ("result + 'a' == 'b'", 1.0, "no operator + for double and string"),
        ("len(result) > 0", 1.0, "len() takes a list, map or string, not double"),
        ("isNaN(result)", [1.0], "isNaN() takes a number, not list"),
        ("isInf(result)", "x", "isInf() takes a number, not string"),
        ("default(result[0]) > 1", [1.0], "default() takes two arguments"),
        ("result / 0 > 1", 1, "division by zero"),
        ("1 in result", 1.0, "`in` needs a list or map"),
    ],
)
def test_evaluation_errors_are_expression_errors(text: str, result: object, message: str) -> None:
    compiled = compile_expression(text)
    with pytest.raises(ExpressionError) as raised:
        compiled.evaluate(result)
    assert message in str(raised.value)
    assert text in str(raised.value), "the message names the condition"


def test_a_result_that_cel_cannot_hold_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError, match="cannot use a object as `result`"):
        compile_expression("result == 1").evaluate(object())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "condition is empty"),
        ("   ", "condition is empty"),
        ("result[0] >", "does not parse: unexpected end of expression"),
        ("result[0] >= 0.9 &&", "does not parse: unexpected end of expression"),
        ("(result", "expected ')'"),
        ("result @ 1", "unexpected character '@' at column 8"),
        ("result[0] >=> 1", "unexpected '>' at column 13"),
        ("result[0] >= 0.95)", "unexpected ')' at column 18"),
        ("reslt > 1", "unknown name 'reslt'; the measured value is called `result`"),
        ("result.all(x, y > 1)", "unknown name 'y'"),
        ("foo(result)", "unknown function foo(); available: default, isInf, isNaN, len, size"),
        ("result.bar()", "unknown method .bar()"),
        ("isnan(result)", "unknown function isnan()"),
    ],
)
def test_compile_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as raised:
        compile_expression(text)
    assert message in str(raised.value)


def test_expression_error_is_a_value_error() -> None:
    assert issubclass(ExpressionError, ValueError)


def test_compiled_expression_keeps_its_text_and_is_reusable() -> None:
    compiled = compile_expression("result[0] >= 0.95")
    assert isinstance(compiled, CompiledExpression)
    assert compiled.text == "result[0] >= 0.95"
    assert [compiled.evaluate([v]) for v in (0.9, 0.95, 1.0)] == [False, True, True]


def test_no_python_evaluation() -> None:
    """Python syntax and names are not reachable from a condition."""
    for text in ("__import__('os').system('true')", "result.__class__", "open('/etc/passwd')"):
        with pytest.raises(ExpressionError):
            compile_expression(text).evaluate(1.0)


CUBIC = "result.map(a, result.map(b, result.map(c, a + b + c))).size() > 0"


def test_a_condition_past_its_cost_budget_is_an_error_naming_the_budget() -> None:
    from tidegate.core.expressions import Budget

    with pytest.raises(ExpressionError, match=r"stopped: it ran past its cost budget of 1000 operations"):
        compile_expression(CUBIC).evaluate([float(i) for i in range(60)], Budget(max_operations=1000))


def test_a_condition_past_its_time_budget_is_an_error_naming_the_budget() -> None:
    from tidegate.core.expressions import Budget

    ticks = iter(range(10**6))
    budget = Budget(max_operations=10**9, max_seconds=3.0, clock=lambda: float(next(ticks)))
    with pytest.raises(ExpressionError, match=r"ran past its time budget of 3s \(the result has 60 elements"):
        compile_expression(CUBIC).evaluate([float(i) for i in range(60)], budget)


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("len(result) > 0 && result[0] >= 0.95", [0.99] * 200),
        ("result.all(x, x >= 0.5)", [0.9] * 200),
        ("result.exists(x, x > 2.0) == false", [1.0] * 200),
    ],
)
def test_ordinary_conditions_stay_well_within_the_default_budget(text: str, result: list[float]) -> None:
    from tidegate.core.expressions import Budget

    budget = Budget()
    assert compile_expression(text).evaluate(result, budget) is True
    assert budget.used < budget.max_operations / 10, budget.used

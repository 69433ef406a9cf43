"""Success and failure conditions: CEL expressions over the measured `result`.

A condition is compiled once (`compile_expression`) and evaluated per measurement
(`CompiledExpression.evaluate`). It is interpreted by cel-python's tree-walking evaluator;
nothing is handed to Python's `eval`/`exec`.

`result` is what the provider measured: a float (Prometheus scalar), a list of floats
(Prometheus vector, sorted by labels), or JSON-like data (web provider).

On top of CEL's own functions (`size()`, `has()`, `all()`, `exists()`, ...), the helpers
Argo Rollouts users write are available:

- `len(x)`: number of elements of a list or map, or characters of a string; `len(null)` is 0.
- `isNaN(x)`, `isInf(x)`: for a number (an int is never NaN nor infinite).
- `default(x, fallback)`: `x`, unless evaluating `x` failed (an index out of range, a missing
  key), or `x` is null or NaN; then `fallback`. `default(result[0], 0) > 1` is safe on an
  empty result.

Ints and doubles mix naturally. Plain CEL has no `int == double` or `double + int`
overloads, so `result[0] >= 1` would error or depend on the implementation. Here the
arithmetic and comparison operators (`+ - * / % == != < <= > >= in`) are replaced by
versions that first promote an int operand to double when the other operand is a double.
Two ints keep CEL's int semantics (`7 / 2 == 3`). This is the "heterogeneous numeric
comparison" later CEL versions adopted, extended to arithmetic. Equality between values
of unrelated types (a string and a number) is false, not an error, also as in later CEL.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import celpy
import lark
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError, Context, Evaluator, Result, base_functions

__all__ = ["Budget", "CompiledExpression", "ExpressionError", "compile_expression"]

_MACRO_METHODS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_FUNCTION_MACROS = frozenset({"has", "dyn"})
_HELPERS = ("default", "isInf", "isNaN", "len")
_DOCUMENTED_FUNCTIONS = (
    *_HELPERS,
    "size",
    "has",
    "all",
    "exists",
    "exists_one",
    "map",
    "filter",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "int",
    "double",
    "string",
)


class ExpressionError(ValueError):
    """A condition that does not compile, or cannot be evaluated against a result."""


class _HelperTypeError(TypeError):
    """Raised by the helpers with a message meant for users."""


# --- numbers -----------------------------------------------------------------------


def _is_integer(value: object) -> bool:
    # BoolType is not an IntType subclass in cel-python, so booleans stay booleans.
    return isinstance(value, celtypes.IntType | celtypes.UintType)


def _promote(left: Any, right: Any) -> tuple[Any, Any]:
    """Turn an int operand into a double when the other operand is a double."""
    if isinstance(left, celtypes.DoubleType) and _is_integer(right):
        return left, celtypes.DoubleType(float(right))
    if _is_integer(left) and isinstance(right, celtypes.DoubleType):
        return celtypes.DoubleType(float(left)), right
    return left, right


def _numeric(operation: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(left: Any, right: Any) -> Any:
        return operation(*_promote(left, right))

    apply.__name__ = getattr(operation, "__name__", "operator")
    return apply


def _equal(left: Any, right: Any) -> Any:
    if isinstance(left, CELEvalError):
        return left
    if isinstance(right, CELEvalError):
        return right
    left, right = _promote(left, right)
    try:
        return celtypes.BoolType(bool(left == right))
    except TypeError:
        return celtypes.BoolType(False)


def _not_equal(left: Any, right: Any) -> Any:
    same = _equal(left, right)
    if isinstance(same, CELEvalError):
        return same
    return celtypes.BoolType(not same)


def _in(item: Any, container: Any) -> Any:
    if isinstance(item, CELEvalError):
        return item
    if isinstance(container, CELEvalError):
        return container
    if not isinstance(container, celtypes.ListType | celtypes.MapType):
        raise _HelperTypeError(f"`in` needs a list or map on its right, not {_type_name(container)}")
    return celtypes.BoolType(any(_equal(item, element) for element in container))


# --- helpers -----------------------------------------------------------------------


def _len(value: Any) -> Any:
    if value is None:
        return celtypes.IntType(0)
    if isinstance(value, celtypes.ListType | celtypes.MapType | celtypes.StringType | celtypes.BytesType):
        return celtypes.IntType(len(value))
    raise _HelperTypeError(f"len() takes a list, map or string, not {_type_name(value)}")


def _number_test(name: str, test: Callable[[float], bool]) -> Callable[[Any], Any]:
    def apply(value: Any) -> Any:
        if isinstance(value, celtypes.DoubleType):
            return celtypes.BoolType(test(float(value)))
        if _is_integer(value):
            return celtypes.BoolType(False)
        raise _HelperTypeError(f"{name}() takes a number, not {_type_name(value)}")

    apply.__name__ = name
    return apply


def _is_missing(value: object) -> bool:
    return (
        value is None or isinstance(value, CELEvalError) or (isinstance(value, float) and math.isnan(value))
    )


def _default(value: Any, fallback: Any) -> Any:
    # Reached only when `value` evaluated without error (see _Evaluator.function_eval).
    return fallback if _is_missing(value) else value


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "_+_": _numeric(base_functions["_+_"]),
    "_-_": _numeric(base_functions["_-_"]),
    "_*_": _numeric(base_functions["_*_"]),
    "_/_": _numeric(base_functions["_/_"]),
    "_%_": _numeric(base_functions["_%_"]),
    "_<_": _numeric(base_functions["_<_"]),
    "_<=_": _numeric(base_functions["_<=_"]),
    "_>_": _numeric(base_functions["_>_"]),
    "_>=_": _numeric(base_functions["_>=_"]),
    "_==_": _equal,
    "_!=_": _not_equal,
    "_in_": _in,
    "len": _len,
    "isNaN": _number_test("isNaN", math.isnan),
    "isInf": _number_test("isInf", math.isinf),
    "default": _default,
}

_KNOWN_FUNCTIONS = frozenset(base_functions) | frozenset(_FUNCTIONS) | _FUNCTION_MACROS


DEFAULT_MAX_OPERATIONS = 100_000
"""Steps (nodes of the expression evaluated, macro iterations included) one evaluation may take."""
DEFAULT_MAX_SECONDS = 2.0
"""Seconds one evaluation may take."""


class BudgetExceeded(Exception):
    """An evaluation ran past its budget (never caught by cel-python's own error handling)."""


@dataclass
class Budget:
    """The cost and time one evaluation may take. cel-python is a tree-walking interpreter with
    no cost limit of its own; every node it visits is charged here, so a condition cubic in the
    result's size (`result.map(a, result.map(b, result.map(c, a + b + c))))` stops at the budget
    instead of running for minutes."""

    max_operations: int = DEFAULT_MAX_OPERATIONS
    max_seconds: float = DEFAULT_MAX_SECONDS
    clock: Callable[[], float] = time.monotonic
    used: int = 0
    _deadline: float | None = None

    def charge(self) -> None:
        self.used += 1
        if self.used > self.max_operations:
            raise BudgetExceeded(f"its cost budget of {self.max_operations} operations")
        if self.used % 256 == 0:
            now = self.clock()
            if self._deadline is None:
                self._deadline = now + self.max_seconds
            elif now > self._deadline:
                raise BudgetExceeded(f"its time budget of {self.max_seconds:g}s")

    def start(self) -> None:
        self.used = 0
        self._deadline = self.clock() + self.max_seconds


class _Evaluator(Evaluator):
    """cel-python's evaluator, with `default()` allowed to see its first argument's error,
    charging every node it visits to a Budget."""

    budget: Budget | None = None

    def sub_evaluator(self, ast: lark.Tree[Any]) -> Evaluator:
        sub = _Evaluator(ast, activation=self.activation)
        sub.budget = self.budget
        return sub

    def visit_children(self, tree: lark.Tree[Any]) -> list[Result]:
        if self.budget is not None:
            self.budget.charge()
        return super().visit_children(tree)

    def function_eval(self, name_token: lark.Token, exprlist: Iterable[Result] | None = None) -> Result:
        if name_token.value == "default" and not isinstance(exprlist, CELEvalError):
            arguments = list(exprlist or [])
            if len(arguments) != 2:
                return CELEvalError(
                    "default() takes two arguments: default(x, fallback)",
                    _HelperTypeError,
                    ("default() takes two arguments: default(x, fallback)",),
                    token=name_token,
                )
            value, fallback = arguments
            return fallback if _is_missing(value) else value
        return super().function_eval(name_token, exprlist)


class _Runner(celpy.InterpretedRunner):
    budget: Budget | None = None

    def evaluate(self, context: Context) -> celtypes.Value:
        evaluator = _Evaluator(ast=self.ast, activation=self.new_activation())
        evaluator.budget = self.budget
        return evaluator.evaluate(context)


# --- compile -----------------------------------------------------------------------

_TOKEN_TEXT = {
    "RPAR": "')'",
    "RSQB": "']'",
    "RBRACE": "'}'",
    "IDENT": "a name",
    "COLON": "':'",
    "COMMA": "','",
}


def _parse_error(text: str, error: CELParseError) -> ExpressionError:
    cause = error.__context__
    where = f" at column {error.column}" if error.column else ""
    if isinstance(cause, lark.exceptions.UnexpectedCharacters):
        what = f"unexpected character {cause.char!r}"
    elif isinstance(cause, lark.exceptions.UnexpectedToken) and cause.token.type == "$END":
        what, where = "unexpected end of expression", ""
    elif isinstance(cause, lark.exceptions.UnexpectedToken):
        what = f"unexpected {str(cause.token)!r}"
    else:
        what = "syntax error"
    expected = sorted(getattr(cause, "expected", None) or ())
    hint = ""
    if expected and len(expected) <= 3 and all(name in _TOKEN_TEXT for name in expected):
        hint = " (expected " + " or ".join(_TOKEN_TEXT[name] for name in expected) + ")"
    return ExpressionError(f"condition {text!r} does not parse: {what}{where}{hint}")


def _bound_variables(tree: lark.Tree[Any]) -> set[str]:
    """Names introduced by macros such as `result.all(x, x > 0.9)`."""
    names: set[str] = set()
    for node in tree.iter_subtrees():
        if node.data != "member_dot_arg" or len(node.children) < 3:
            continue
        method, arguments = node.children[1], node.children[2]
        if str(method) in _MACRO_METHODS and isinstance(arguments, lark.Tree) and arguments.children:
            first = arguments.children[0]
            if isinstance(first, lark.Tree):
                names.update(str(ident.children[0]) for ident in first.find_data("ident"))
    return names


def _check_names(text: str, tree: lark.Tree[Any]) -> None:
    """Unknown functions and variables are spec errors: report them at compile time."""
    known_names = {"result"} | _bound_variables(tree) | set(base_functions)
    for node in tree.iter_subtrees():
        if node.data in ("ident_arg", "dot_ident_arg"):
            name = str(node.children[0])
            if name not in _KNOWN_FUNCTIONS:
                raise ExpressionError(
                    f"condition {text!r}: unknown function {name}(); "
                    f"available: {', '.join(_DOCUMENTED_FUNCTIONS)}"
                )
        elif node.data == "member_dot_arg":
            name = str(node.children[1])
            if name not in _KNOWN_FUNCTIONS and name not in _MACRO_METHODS:
                raise ExpressionError(
                    f"condition {text!r}: unknown method .{name}(); "
                    f"available: {', '.join(_DOCUMENTED_FUNCTIONS)}"
                )
        elif node.data in ("ident", "dot_ident"):
            name = str(node.children[0])
            if name not in known_names:
                raise ExpressionError(
                    f"condition {text!r}: unknown name {name!r}; the measured value is called `result`"
                )


def compile_expression(text: str) -> CompiledExpression:
    """Parse and check a condition; raise ExpressionError naming the problem."""
    if not text.strip():
        raise ExpressionError("condition is empty")
    environment = celpy.Environment(runner_class=_Runner)
    try:
        tree = environment.compile(text)
    except CELParseError as error:
        raise _parse_error(text, error) from None
    except (lark.exceptions.LarkError, RecursionError) as error:
        raise ExpressionError(f"condition {text!r} does not parse: {error}") from None
    _check_names(text, tree)
    program = environment.program(tree, functions=_FUNCTIONS)
    return CompiledExpression(text=text, _program=program)


# --- evaluate ----------------------------------------------------------------------

_CEL_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (celtypes.BoolType, "bool"),
    (celtypes.IntType, "int"),
    (celtypes.UintType, "uint"),
    (celtypes.DoubleType, "double"),
    (celtypes.StringType, "string"),
    (celtypes.BytesType, "bytes"),
    (celtypes.ListType, "list"),
    (celtypes.MapType, "map"),
)

# cel-python's arithmetic sometimes returns plain Python numbers.
_PYTHON_TYPE_NAMES: dict[type, str] = {bool: "bool", int: "int", float: "double", str: "string"}

_OPERATOR_RULES = {
    "relation_lt": "<",
    "relation_le": "<=",
    "relation_gt": ">",
    "relation_ge": ">=",
    "relation_eq": "==",
    "relation_ne": "!=",
    "relation_in": "in",
    "addition_add": "+",
    "addition_sub": "-",
    "multiplication_mul": "*",
    "multiplication_div": "/",
    "multiplication_mod": "%",
}
_OVERLOAD = re.compile(r"found no matching overload for .*?'(\w+)'\)? applied to '\((.*)\)'")
_CLASS = re.compile(r"<class 'celpy\.celtypes\.(\w+?)(?:Type)?'>|<class '(\w+)'>")


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    for cel_type, name in _CEL_TYPE_NAMES:
        if isinstance(value, cel_type):
            return name
    return _PYTHON_TYPE_NAMES.get(type(value), type(value).__name__)


def _class_names(text: str) -> str:
    def name(match: re.Match[str]) -> str:
        found = (match.group(1) or match.group(2) or "").lower()
        return "null" if found == "nonetype" else found

    return _CLASS.sub(name, text)


def _describe(error: CELEvalError) -> str:
    message = str(error.args[0]) if error.args else "evaluation failed"
    cause = error.args[1] if len(error.args) > 1 else None
    detail = error.args[2] if len(error.args) > 2 else None
    first_detail = detail[0] if isinstance(detail, tuple) and detail else None
    if cause is _HelperTypeError and isinstance(first_detail, str):
        return first_detail
    if cause is IndexError:
        return (
            "index out of range: the result has no element there "
            "(guard with len(result) > 0, or use default(result[0], 0))"
        )
    if cause is KeyError and message.startswith("no such member"):
        return f"{message} (guard with has(result.field), or use default(result.field, 0))"
    if cause is ZeroDivisionError:
        return "division by zero"
    overload = _OVERLOAD.search(message)
    if overload:
        operator = _OPERATOR_RULES.get(overload.group(1), overload.group(1))
        operands = _class_names(overload.group(2)).replace(", ", " and ")
        return f"no operator {operator} for {operands}"
    message = re.sub(r" \(in activation .*", "", message, flags=re.DOTALL)
    return _class_names(message)


def _size(value: object) -> int:
    return len(value) if isinstance(value, list | dict | str) else 1


def _to_cel(value: object) -> celtypes.Value:
    try:
        return json_to_cel(cast(Any, value))
    except (TypeError, ValueError) as error:
        raise ExpressionError(f"cannot use a {type(value).__name__} as `result`: {error}") from None


@dataclass(frozen=True)
class CompiledExpression:
    """A checked condition, ready to evaluate against any number of results."""

    text: str
    _program: celpy.Runner

    def evaluate(self, result: object, budget: Budget | None = None) -> bool:
        """True or false for this result; ExpressionError when it cannot be decided or runs past
        its `budget` (default: DEFAULT_MAX_OPERATIONS steps, DEFAULT_MAX_SECONDS)."""
        activation = {"result": _to_cel(result)}
        budget = budget or Budget()
        budget.start()
        runner = cast(_Runner, self._program)
        try:
            runner.budget = budget
            value = self._program.evaluate(activation)
        except BudgetExceeded as error:
            raise ExpressionError(
                f"condition {self.text!r} stopped: it ran past {error} "
                f"(the result has {_size(result)} elements; simplify the condition)"
            ) from None
        except CELEvalError as error:
            raise ExpressionError(f"condition {self.text!r}: {_describe(error)}") from None
        except ExpressionError:
            raise
        except (ArithmeticError, LookupError, TypeError, ValueError, RecursionError) as error:
            raise ExpressionError(f"condition {self.text!r}: {type(error).__name__}: {error}") from None
        finally:
            runner.budget = None
        if isinstance(value, CELEvalError):
            raise ExpressionError(f"condition {self.text!r}: {_describe(value)}")
        if not isinstance(value, celtypes.BoolType):
            raise ExpressionError(
                f"condition {self.text!r} must be true or false, but gave {_type_name(value)} {value!s}"
            )
        return bool(value)

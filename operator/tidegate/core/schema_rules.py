"""The CRDs' own CEL rules (`x-kubernetes-validations`), evaluated as the API server does.

The rules are written once, on the pydantic models in `tidegate.api`; `tidegate.api.crdgen`
puts them into the CRDs. `check_rules(schema, obj)` walks a CRD schema beside an object and
evaluates every rule with `self` bound to the value at its node, so `tidegate lint` and the
planner report exactly what the API server would refuse, with the CRD's own message, at
the same path (`spec.strategy.canary.steps[2]: <message>`, or the rule's `fieldPath`).

As in the API server, before the rules run:

- a null for a field that is not nullable is dropped, then defaults are applied;
- fields the schema does not know are pruned (unless it preserves unknown fields);
- a rule runs only on a value that is there (an item of a list: each item), and only
  when the value at its node is well typed all the way down. The API server skips every
  rule when any type is wrong ("some validation rules were not checked"); skipping only
  the rules above a wrong type reports more and still never a false error.

What cannot be checked here is returned as `Unchecked`, never silently passed:
transition rules (they read `oldSelf`, and a linted file has no old object) and rules
that call a function of the Kubernetes CEL libraries cel-python does not have.

Programs are compiled on first use and kept for the process.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import celpy
import lark
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError, base_functions

# cel-go's heterogeneous equality and numeric comparison, which Kubernetes enables, are
# what expressions.py gives conditions; reuse them. Not its int/double arithmetic
# promotion: cel-go has none, so a rule with `1 + 1.0` errors there too.
from tidegate.core.expressions import _equal, _in, _not_equal, _numeric

__all__ = [
    "PathPart",
    "RuleViolation",
    "SchemaRules",
    "Unchecked",
    "check_rules",
    "crd_schema",
    "format_path",
]


class MapKey(str):
    """A key of a map (additionalProperties): the API server writes it `headers[x-mirror]`."""

    __slots__ = ()


PathPart = str | int
Schema = dict[str, Any]
Path = tuple[PathPart, ...]


def format_path(parts: Sequence[PathPart]) -> str:
    """`("spec", "steps", 0, "setWeight")` -> `spec.steps[0].setWeight`; a map key in brackets."""
    out = ""
    for part in parts:
        if isinstance(part, int | MapKey):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True)
class RuleViolation:
    """A rule that does not hold: the API server refuses the object with this message."""

    path: Path
    """Where the API server reports it: the rule's node, then its `fieldPath` if any."""
    message: str
    rule: str

    def __str__(self) -> str:
        return f"{format_path(self.path)}: {self.message}"


@dataclass(frozen=True)
class Unchecked:
    """A rule that applies to the object but that this evaluator cannot decide."""

    path: Path
    rule: str
    why: str


@dataclass
class SchemaRules:
    violations: list[RuleViolation] = field(default_factory=list)
    unchecked: list[Unchecked] = field(default_factory=list)


# --- the CRD schemas ---------------------------------------------------------------


@functools.cache
def _crd_schemas() -> dict[str, Schema]:
    # Imported here: generating the CRDs costs a few tens of milliseconds, paid only by
    # the first check.
    from tidegate.api.crdgen import crds

    out: dict[str, Schema] = {}
    for crd in crds().values():
        kind = crd["spec"]["names"]["kind"]
        out[kind] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return out


def crd_schema(kind: str) -> Schema:
    """The openAPIV3Schema of a Tidegate kind's CRD, generated from the models (once)."""
    return _crd_schemas()[kind]


# --- compiling rules ---------------------------------------------------------------

_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "_==_": _equal,
    "_!=_": _not_equal,
    "_in_": _in,
    "_<_": _numeric(base_functions["_<_"]),
    "_<=_": _numeric(base_functions["_<=_"]),
    "_>_": _numeric(base_functions["_>_"]),
    "_>=_": _numeric(base_functions["_>=_"]),
}
_MACROS = frozenset({"has", "all", "exists", "exists_one", "map", "filter", "dyn"})
_KNOWN = frozenset(base_functions) | _MACROS


@dataclass(frozen=True)
class _Program:
    text: str
    runner: celpy.Runner | None
    why_unchecked: str | None = None


def _names(tree: lark.Tree[Any]) -> tuple[set[str], set[str]]:
    """(identifiers, functions and methods) a rule uses."""
    idents: set[str] = set()
    calls: set[str] = set()
    for node in tree.iter_subtrees():
        if node.data in ("ident", "dot_ident"):
            idents.add(str(node.children[0]))
        elif node.data in ("ident_arg", "dot_ident_arg"):
            calls.add(str(node.children[0]))
        elif node.data == "member_dot_arg" and len(node.children) > 1:
            calls.add(str(node.children[1]))
    return idents, calls


@functools.cache
def _compile(text: str) -> _Program:
    environment = celpy.Environment()
    try:
        tree = environment.compile(text)
    except (CELParseError, lark.exceptions.LarkError, RecursionError) as error:
        return _Program(text, None, f"does not parse with cel-python: {error}")
    idents, calls = _names(tree)
    if "oldSelf" in idents:
        return _Program(text, None, "a transition rule (oldSelf): there is no old object to compare with")
    missing = sorted(calls - _KNOWN)
    if missing:
        return _Program(text, None, f"cel-python has no {', '.join(f'{m}()' for m in missing)}")
    return _Program(text, environment.program(tree, functions=_FUNCTIONS))


# --- preparing the value as the API server does -----------------------------------


def _nullable(schema: Schema) -> bool:
    return bool(schema.get("nullable"))


def _prepare(schema: Schema, value: Any) -> Any:
    """Drop non-nullable nulls, apply defaults, prune unknown fields (a new value)."""
    if isinstance(value, dict) and schema.get("type") == "object":
        props: dict[str, Schema] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        keep_unknown = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        out: dict[str, Any] = {}
        for key, item in value.items():
            sub = props.get(key)
            if sub is None and isinstance(extra, dict):
                sub = extra
            if sub is None:
                if keep_unknown or not props:
                    out[key] = item
                continue
            if item is None and not _nullable(sub):
                continue
            out[key] = _prepare(sub, item)
        for key, sub in props.items():
            if key not in out and "default" in sub:
                out[key] = _prepare(sub, copy.deepcopy(sub["default"]))
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prepare(schema["items"], item) for item in value]
    return value


def _well_typed(schema: Schema, value: Any) -> bool:
    """The value at this node has the schema's type (the children are checked on their own)."""
    if value is None:
        return _nullable(schema)
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, int | str) and not isinstance(value, bool)
    wanted = schema.get("type")
    if wanted == "object":
        return isinstance(value, dict)
    if wanted == "array":
        return isinstance(value, list)
    if wanted == "string":
        return isinstance(value, str)
    if wanted == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if wanted == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if wanted == "boolean":
        return isinstance(value, bool)
    return True


def _to_cel(schema: Schema, value: Any) -> Any:
    """The CEL value the API server binds: numbers of a `number` field are doubles, etc."""
    if value is None:
        return None
    if schema.get("x-kubernetes-int-or-string"):
        return celtypes.StringType(value) if isinstance(value, str) else celtypes.IntType(value)
    wanted = schema.get("type")
    if wanted == "number":
        return celtypes.DoubleType(float(value))
    if wanted == "object" and isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        entries: dict[Any, Any] = {}
        for key, item in value.items():
            sub = props.get(key) or (extra if isinstance(extra, dict) else None)
            entries[celtypes.StringType(key)] = _to_cel(sub, item) if sub else json_to_cel(item)
        return celtypes.MapType(entries)
    if wanted == "array" and isinstance(value, list) and isinstance(schema.get("items"), dict):
        return celtypes.ListType([_to_cel(schema["items"], item) for item in value])
    return json_to_cel(cast(Any, value))


# --- evaluating ---------------------------------------------------------------------

_FIELD_PATH = re.compile(r"\.([A-Za-z_$][\w$-]*)|\['([^']*)'\]|\[(\d+)\]")


def _field_path(text: str) -> Path:
    """A rule's `fieldPath` (`.a.b`, `.a['b-c']`, `.list[0]`) as path parts."""
    return tuple(
        int(index) if index else (name or quoted) for name, quoted, index in _FIELD_PATH.findall(text)
    )


def _error_text(error: CELEvalError, rule: str) -> str:
    """As the API server words a rule that errors: `no such key: x evaluating rule: <rule>`."""
    cause = error.args[1] if len(error.args) > 1 else None
    detail = error.args[2] if len(error.args) > 2 else None
    message = str(error.args[0]) if error.args else "evaluation failed"
    if cause is KeyError and (found := re.search(r"no such member in mapping: '(.*)'", message)):
        message = f"no such key: {found.group(1)}"
    elif cause is IndexError:
        message = "index out of bounds"
    elif isinstance(detail, tuple) and detail and message in ("no such overload", "invalid_argument"):
        message = f"{message}: {detail[0]}"
    message = re.sub(r" \(in activation .*", "", message, flags=re.DOTALL)
    return f"{message} evaluating rule: {rule.strip()}"


def _run(program: _Program, self_value: Any) -> Any:
    assert program.runner is not None
    try:
        return program.runner.evaluate({"self": self_value})
    except CELEvalError as error:
        return error


def _message(entry: Schema, self_value: Any) -> str:
    """The rule's messageExpression, else its message, else `failed rule: <rule>`."""
    fallback = entry.get("message") or f"failed rule: {entry['rule'].strip()}"
    expression = entry.get("messageExpression")
    if not expression:
        return str(fallback)
    program = _compile(expression)
    if program.runner is None:
        return str(fallback)
    text = _run(program, self_value)
    if not isinstance(text, str) or not text.strip() or "\n" in text:
        return str(fallback)
    return str(text)


def _evaluate(schema: Schema, value: Any, path: Path, out: SchemaRules) -> None:
    self_value: Any = None
    for entry in schema.get("x-kubernetes-validations", []):
        rule: str = entry["rule"]
        program = _compile(rule)
        if program.runner is None:
            out.unchecked.append(Unchecked(path, rule, program.why_unchecked or "cannot be evaluated"))
            continue
        if self_value is None:
            self_value = _to_cel(schema, value)
        result = _run(program, self_value)
        if isinstance(result, CELEvalError):
            out.violations.append(RuleViolation(path, _error_text(result, rule), rule))
        elif not (isinstance(result, celtypes.BoolType) and bool(result)):
            where = path + _field_path(entry.get("fieldPath", ""))
            out.violations.append(RuleViolation(where, _message(entry, self_value), rule))


def _walk(schema: Schema, value: Any, path: Path, out: SchemaRules) -> bool:
    """Evaluate the rules at and below this node; whether the subtree is well typed."""
    if not _well_typed(schema, value):
        return False
    ok = True
    if isinstance(value, dict):
        props: dict[str, Schema] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key)
            part: PathPart = key
            if sub is None and isinstance(extra, dict):
                sub, part = extra, MapKey(key)
            if sub is not None:
                ok = _walk(sub, item, (*path, part), out) and ok
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            ok = _walk(schema["items"], item, (*path, i), out) and ok
    if ok and value is not None:
        _evaluate(schema, value, path, out)
    return ok


def check_rules(schema: Schema, obj: Any, path: Path = ()) -> SchemaRules:
    """Every x-kubernetes-validations rule of `schema` over `obj` (a JSON-like object)."""
    out = SchemaRules()
    _walk(schema, _prepare(schema, obj), path, out)
    return out

"""Shared pieces of the API models: camelCase aliases, CEL rules, int-or-string."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

IntOrString = Annotated[
    int | str,
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]

# A duration: "30s", "10m", "1h", or a whole number of seconds. Short, so that the
# CEL rule that checks it stays cheap for the API server's cost estimate.
Duration = Annotated[
    int | str,
    Field(json_schema_extra={"x-kubernetes-int-or-string": True, "maxLength": 32}),
]


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields kept.

    Unknown fields are kept (not rejected) so that a newer CRD's objects can be read
    by an older operator; the API server's structural schema prunes what it does not
    know anyway.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_attribute_docstrings=True,
    )

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it (camelCase, no unset fields)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# Duration strings as Kubernetes CEL can check them: "30s", "10m", "1h", "500ms", or
# a bare integer (seconds).
DURATION_PATTERN = r"^([0-9]+([.][0-9]+)?(ms|s|m|h))+$|^[0-9]+$"


# An argument placeholder standing for a whole value: `{{args.NAME}}` (resolved per run).
ARG_PATTERN = r"^[{][{] *args[.][A-Za-z0-9_.-]+ *[}][}]$"


INT32_MAX = 2**31 - 1
"""Argo Rollouts' counts and seconds are Go int32 (`*int32` in its RolloutSpec, CanaryStep, ...):
the schema refuses what would not fit, as a ReplicaSet (whose fields are int32 too) would."""


def int32(*, default: Any = None, ge: int = 0, le: int = INT32_MAX) -> Any:
    """A field of Argo's int32 type: `format: int32` and the int32 bounds in the schema."""
    return Field(default=default, ge=ge, le=le, json_schema_extra={"format": "int32"})


MAX_DURATION_SECONDS = 365 * 24 * 3600
"""The longest duration a field takes: a year. Nothing Tidegate waits for is longer, and a
bound keeps every pause and interval within what a timer (and Go's time.Duration, which
overflows at 292 years) can hold."""

# Durations the CEL `duration()` conversion can parse without overflowing int64 nanoseconds
# in 32 characters: at most 5 digits of hours, 7 of minutes, 9 of seconds, 12 of ms. A longer
# number is more than a year (unless written with leading zeros); the rule below refuses it
# without calling duration(), which would fail on an overflow with an error, not the message.
_SAFE_DURATION_PATTERN = (
    r"^([0-9]{1,12}([.][0-9]+)?ms|[0-9]{1,9}([.][0-9]+)?s|[0-9]{1,7}([.][0-9]+)?m"
    r"|[0-9]{1,5}([.][0-9]+)?h)+$"
)


def duration_bound_rule(field: str) -> dict[str, str]:
    """At most a year. Cheap for the API server's cost estimator: a Duration is at most 32
    characters, so each `matches()` and the one `duration()` are bounded; a string not of the
    duration form is the form rule's to refuse (`{{args.NAME}}` passes: its value is not known
    here)."""
    year = MAX_DURATION_SECONDS
    value = f"self.{field}"
    bound = (
        f"!{value}.matches('{DURATION_PATTERN}') || ({value}.matches('^[0-9]+$') "
        f"? ({value}.size() <= 10 && int({value}) <= {year}) "
        f": ({value}.matches('{_SAFE_DURATION_PATTERN}') "
        f"&& duration({value}) <= duration('{year // 3600}h')))"
    )
    return cel(
        f"!has({value}) || (type({value}) == int ? {value} <= {year} : {bound})",
        f"{field} must be at most a year (8760h, {year} seconds)",
        f".{field}",
    )


def duration_rules(field: str, *, args: bool = False) -> tuple[dict[str, str], dict[str, str]]:
    """The form of a duration, then its bound."""
    return duration_rule(field, args=args), duration_bound_rule(field)


def duration_rule(field: str, *, args: bool = False) -> dict[str, str]:
    """`args`: `{{args.NAME}}` is accepted too, as Argo Rollouts' metric durations are."""
    extra = f" || self.{field}.matches('{ARG_PATTERN}')" if args else ""
    tail = ", a whole number of seconds or {{args.NAME}}" if args else ", or a whole number of seconds"
    form = f"self.{field}.matches('{DURATION_PATTERN}'){extra}"
    return cel(
        f"!has(self.{field}) || type(self.{field}) == int || {form}",
        f"{field} must be a duration such as 30s, 10m, 1h{tail}",
        f".{field}",
    )

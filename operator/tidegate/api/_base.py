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

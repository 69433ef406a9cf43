"""What `get` and `list` print: kubectl's resource names, `-o` formats and tables.

Tables follow kubectl's printer: columns two spaces apart, a header in capitals, no
value with a space in it (so `awk '{print $3}'` reads a column), `<none>`-like `-`
for an empty cell; only `-o wide`'s last column, MESSAGE, is free text. Nothing here
is cut to the terminal's width: a pipe gets whole lines.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tidegate.cli._facts import (
    Obj,
    age,
    canary_weight,
    desired_replicas,
    dig,
    images_of,
    latest_value,
    phase_of,
    restart_state,
    step_of,
    strategy_of,
)
from tidegate.core.names import ROLLOUT_LABEL

OUTPUTS = ("json", "yaml", "wide", "name")


@dataclass(frozen=True)
class Resource:
    """A kind the CLI reads, with the names kubectl users type for it."""

    kind: str
    plural: str
    singular: str
    short: str

    @property
    def names(self) -> tuple[str, ...]:
        group = "tidegate.io"
        return (
            self.plural,
            self.singular,
            self.short,
            f"{self.plural}.{group}",
            f"{self.singular}.{group}",
            self.kind.lower(),
        )


ROLLOUTS = Resource("Rollout", "rollouts", "rollout", "ro")
ANALYSIS_RUNS = Resource("AnalysisRun", "analysisruns", "analysisrun", "ar")
RESOURCES = (ROLLOUTS, ANALYSIS_RUNS)


def resource_named(text: str) -> Resource:
    """The resource a kubectl-style name means: `rollout`, `rollouts`, `ro`, `rollouts.tidegate.io`, ..."""
    wanted = text.lower()
    for resource in RESOURCES:
        if wanted in resource.names:
            return resource
    known = ", ".join(f"{r.plural} ({r.singular}, {r.short})" for r in RESOURCES)
    raise click.BadParameter(f"unknown resource type {text!r}; known: {known}", param_hint="TYPE")


if TYPE_CHECKING:
    _ParamType = click.ParamType[Resource, Any]  # generic from click 8.5 on
else:
    _ParamType = click.ParamType


class ResourceType(_ParamType):
    """TYPE as kubectl takes it (any of a kind's names); completes to the plural names."""

    name = "type"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Resource:
        if isinstance(value, Resource):
            return value
        try:
            return resource_named(str(value))
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        return [
            CompletionItem(r.plural, help=f"{r.kind} ({r.singular}, {r.short})")
            for r in RESOURCES
            if r.plural.startswith(incomplete)
        ]


F = TypeVar("F", bound=Callable[..., Any])


def output_option() -> Callable[[F], F]:
    return click.option(
        "-o",
        "--output",
        type=click.Choice(OUTPUTS),
        default=None,
        help="json or yaml: the API objects; wide: more columns; name: kind.group/name.",
    )


# ---------------------------------------------------------------------------
# Tables


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Columns padded like kubectl's (two spaces apart, the last one unpadded)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def cell(value: Any) -> str:
    """A table cell: `-` when empty, never a space inside."""
    text = "" if value is None else str(value)
    return "-".join(text.split()) or "-"


def reason_of(rollout: Obj) -> str:
    """Why a Rollout is in its phase, in one CamelCase word (the PHASE column stays a bare phase)."""
    status = rollout.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if status.get("abort"):
        return "Aborted"
    if (conditions.get("InvalidSpec") or {}).get("status") == "True":
        return "InvalidSpec"
    if (conditions.get("Progressing") or {}).get("reason") == "ProgressDeadlineExceeded":
        return "ProgressDeadlineExceeded"
    if dig(rollout, "spec", "paused"):
        return "PausedBySpec"
    reasons = [str(c.get("reason")) for c in status.get("pauseConditions") or [] if c.get("reason")]
    if reasons:
        return ",".join(reasons)
    if restart_state(rollout) is not None:
        return "RestartPending"
    return "-"


ROLLOUT_COLUMNS = [
    "NAME",
    "STRATEGY",
    "PHASE",
    "REASON",
    "STEP",
    "WEIGHT",
    "READY",
    "UP-TO-DATE",
    "AVAILABLE",
    "AGE",
]
ROLLOUT_WIDE = ["IMAGES", "MESSAGE"]


def rollout_row(rollout: Obj, now: datetime, *, wide: bool, namespaces: bool) -> list[str]:
    meta = rollout.get("metadata") or {}
    status = rollout.get("status") or {}
    weight = canary_weight(rollout) if strategy_of(rollout) == "Canary" else None
    row = [
        cell(meta.get("name")),
        cell(strategy_of(rollout)),
        cell(phase_of(rollout)),
        cell(reason_of(rollout)),
        cell(step_of(rollout)),
        "-" if weight is None else f"{weight}%",
        f"{int(status.get('readyReplicas') or 0)}/{desired_replicas(rollout)}",
        str(int(status.get("updatedReplicas") or 0)),
        str(int(status.get("availableReplicas") or 0)),
        age(meta.get("creationTimestamp"), now),
    ]
    if wide:
        row += [
            cell(",".join(images_of(dig(rollout, "spec", "template")))),
            str(status.get("message") or "-"),
        ]
    return [cell(meta.get("namespace")), *row] if namespaces else row


ANALYSIS_COLUMNS = ["NAME", "ROLLOUT", "PHASE", "METRICS", "AGE"]
ANALYSIS_WIDE = ["MEASUREMENTS", "MESSAGE"]


def analysis_row(run: Obj, now: datetime, *, wide: bool, namespaces: bool) -> list[str]:
    meta = run.get("metadata") or {}
    status = run.get("status") or {}
    results = status.get("metricResults") or []
    done = sum(1 for m in results if m.get("phase") not in (None, "Pending", "Running"))
    metrics = len(dig(run, "spec", "metrics") or []) or len(results)
    row = [
        cell(meta.get("name")),
        cell((meta.get("labels") or {}).get(ROLLOUT_LABEL)),
        cell(status.get("phase") or "Pending"),
        f"{done}/{metrics}",
        age(meta.get("creationTimestamp"), now),
    ]
    if wide:
        latest = ",".join(f"{m.get('name')}={cell(latest_value(m))}({m.get('phase', '?')})" for m in results)
        row += [latest or "-", str(status.get("message") or "-")]
    return [cell(meta.get("namespace")), *row] if namespaces else row


def rows_of(
    resource: Resource, items: Sequence[Obj], now: datetime, *, wide: bool, namespaces: bool
) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a kind's table."""
    if resource is ROLLOUTS:
        header = ROLLOUT_COLUMNS + (ROLLOUT_WIDE if wide else [])
        rows = [rollout_row(r, now, wide=wide, namespaces=namespaces) for r in items]
    else:
        header = ANALYSIS_COLUMNS + (ANALYSIS_WIDE if wide else [])
        rows = [analysis_row(r, now, wide=wide, namespaces=namespaces) for r in items]
    if namespaces:
        header = ["NAMESPACE", *header]
    return header, rows


def print_table(
    resource: Resource, items: Sequence[Obj], now: datetime, *, wide: bool, namespaces: bool
) -> None:
    header, rows = rows_of(resource, items, now, wide=wide, namespaces=namespaces)
    click.echo(table(rows, header))


class TableStream:
    """`kubectl get -w`'s output: the table once, then a row whenever an object's row changes.

    Rows keep the column widths of the first table (a longer value just pushes the line).
    A row is printed again only when something other than AGE changed in it.
    """

    def __init__(self, resource: Resource, *, wide: bool, namespaces: bool) -> None:
        self.resource, self.wide, self.namespaces = resource, wide, namespaces
        self.widths: list[int] | None = None
        self.last: dict[tuple[str, str], list[str]] = {}

    def _key(self, obj: Obj) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))

    def _line(self, row: Sequence[str]) -> str:
        assert self.widths is not None
        return "  ".join(c.ljust(w) for c, w in zip(row, self.widths, strict=False)).rstrip()

    def lines(self, objects: Sequence[Obj], now: datetime) -> list[str]:
        """The lines to print for these objects (the header and every row the first time)."""
        header, rows = rows_of(self.resource, objects, now, wide=self.wide, namespaces=self.namespaces)
        out: list[str] = []
        if self.widths is None:
            self.widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
            out.append(self._line(header))
        age = header.index("AGE")
        for obj, row in zip(objects, rows, strict=True):
            key = self._key(obj)
            same = [c for i, c in enumerate(row) if i != age]
            if self.last.get(key) != same:
                self.last[key] = same
                out.append(self._line(row))
        return out


# ---------------------------------------------------------------------------
# -o json | yaml | name


def as_list(items: Sequence[Obj]) -> Obj:
    """A kubectl-style `List` of objects (what `kubectl get -o json` prints for several)."""
    return {"apiVersion": "v1", "kind": "List", "items": list(items), "metadata": {"resourceVersion": ""}}


def print_objects(resource: Resource, data: Obj | Sequence[Obj], output: str) -> None:
    """Print one object (a dict) or several (a list) as json, yaml or names."""
    if output == "name":
        items = [data] if isinstance(data, dict) else list(data)
        for obj in items:
            click.echo(f"{resource.singular}.tidegate.io/{(obj.get('metadata') or {}).get('name')}")
        return
    doc = data if isinstance(data, dict) else as_list(data)
    if output == "json":
        click.echo(json.dumps(doc, indent=4))
    else:
        import yaml

        click.echo(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False), nl=False)

"""`tidegate plan FILE...`: the timeline a Rollout's strategy will follow, offline.

The simulation is `core.simulate`; this module finds the Rollout and its
AnalysisTemplates in the files and renders the timeline as a table or as JSON.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from tidegate.api.analysis import AnalysisTemplate, AnalysisTemplateSpec
from tidegate.api.rollout import Rollout
from tidegate.cli.lint import Document, Linter, expand_paths, format_path, load_documents, schema_errors
from tidegate.core.durations import format_duration
from tidegate.core.simulate import Row, Timeline, simulate, template_key


def _templates(docs: Sequence[Document]) -> dict[str, AnalysisTemplateSpec]:
    """Valid (Cluster)AnalysisTemplates of the files, by template_key(); invalid ones are left out."""
    out: dict[str, AnalysisTemplateSpec] = {}
    for doc in docs:
        if doc.kind not in ("AnalysisTemplate", "ClusterAnalysisTemplate") or not doc.name:
            continue
        try:
            template = AnalysisTemplate.model_validate(doc.data)
        except ValidationError:
            continue
        out[template_key(doc.name, doc.kind == "ClusterAnalysisTemplate")] = template.spec
    return out


def _rollout(docs: Sequence[Document], name: str | None) -> Document:
    rollouts = [d for d in docs if d.kind == "Rollout"]
    if name is not None:
        chosen = [d for d in rollouts if d.name == name]
        if not chosen:
            found = ", ".join(sorted(d.name or "?" for d in rollouts)) or "none"
            raise click.UsageError(f"no Rollout named {name!r} in the files (Rollouts: {found})")
        return chosen[0]
    if not rollouts:
        raise click.UsageError("no Rollout in the files")
    if len(rollouts) > 1:
        names = ", ".join(d.name or "?" for d in rollouts)
        raise click.UsageError(f"the files hold {len(rollouts)} Rollouts ({names}); choose one with --name")
    return rollouts[0]


# ---------------------------------------------------------------------------
# Rendering


def _at(seconds: float) -> str:
    return "+" + format_duration(seconds)


def _wait(row: Row) -> str:
    if row.waits_for_promote:
        return "promote"
    if row.wait is None:
        return "unknown"
    return format_duration(row.wait) if row.wait else "-"


def row_json(row: Row) -> dict[str, Any]:
    return {
        "step": row.step,
        "kind": row.kind,
        "action": row.action,
        "weight": row.weight,
        "canaryPods": row.canary_pods,
        "stablePods": row.stable_pods,
        "at": row.at,
        "wait": row.wait,
        "waitsForPromote": row.waits_for_promote,
        "headerRoutes": list(row.header_routes),
        "notes": list(row.notes),
    }


def timeline_json(timeline: Timeline) -> dict[str, Any]:
    background = timeline.background
    return {
        "rollout": timeline.name,
        "strategy": timeline.strategy,
        "replicas": timeline.replicas,
        "trafficRouter": timeline.traffic_router,
        "rows": [row_json(r) for r in timeline.rows],
        "total": {
            "seconds": timeline.total,
            "manualPromotions": timeline.manual_promotions,
            "unknown": list(timeline.unknown),
            "pausedBySpec": timeline.paused_by_spec,
            "text": timeline.describe_total(),
        },
        "backgroundAnalysis": None
        if background is None
        else {
            "templates": list(background.templates),
            "startingStep": background.starting_step,
            "at": background.at,
            "window": background.window.seconds,
            "text": background.window.describe(),
        },
        "notes": list(timeline.notes),
    }


def render_text(timeline: Timeline) -> str:
    """The timeline as a plain table, with its total."""
    canary = timeline.strategy == "canary"
    router = timeline.traffic_router or ("no traffic router" if canary else "Service switch")
    s = "" if timeline.replicas == 1 else "s"
    lines = [
        f"Rollout {timeline.name}: {'canary' if canary else 'blue-green'}, "
        f"{timeline.replicas} replica{s}, {router}",
        *(f"  {note}" for note in timeline.notes),
        "",
    ]
    header = [
        "STEP",
        "ACTION",
        "WEIGHT",
        "CANARY" if canary else "NEW",
        "STABLE" if canary else "OLD",
        "AT",
        "WAIT",
    ]
    with_routes = any(r.header_routes for r in timeline.rows)
    if with_routes:
        header.append("HEADER ROUTES")
    header.append("NOTES")
    table = [header]
    for r in timeline.rows:
        cells = [
            str(r.step) if r.step is not None else "-",
            r.action,
            f"{r.weight}%",
            str(r.canary_pods),
            str(r.stable_pods),
            _at(r.at),
            _wait(r),
        ]
        if with_routes:
            cells.append(", ".join(r.header_routes) or "-")
        cells.append("; ".join(r.notes))
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    numeric = {2, 3, 4}
    for n, cells in enumerate(table):
        text = "  ".join(
            c.rjust(w) if i in numeric and n else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()
        lines.append(click.style(text, bold=True) if n == 0 else text)
    lines.append("")
    if timeline.background is not None:
        bg = timeline.background
        names = ", ".join(bg.templates)
        lines.append(
            f"Background analysis {names}: starts at step {bg.starting_step} ({_at(bg.at)}); "
            f"{bg.window.describe()}; stopped at promotion"
        )
    if timeline.paused_by_spec:
        lines.append("spec.paused is true: nothing moves until `tidegate resume`")
    lines.append(f"Minimum time to full promotion: {timeline.describe_total()}")
    return "\n".join(lines)


@click.command("plan")
@click.argument("files", nargs=-1, required=True, metavar="FILE...", type=click.Path())
@click.option("--name", "name", default=None, help="Rollout to plan, when the files hold several.")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Output format.",
)
def command(files: tuple[str, ...], name: str | None, output: str) -> None:
    """Simulate a Rollout's strategy offline: the timeline of its steps.

    For each step: the traffic weight, the canary and stable pod counts, when it
    starts at the soonest, and how long it holds (timed pauses, analysis windows from
    the AnalysisTemplates given in the files, indefinite pauses that wait for
    `tidegate promote`); then the minimum time to full promotion. Pods are taken to
    be ready at once and every analysis to succeed. Files that `tidegate lint`
    rejects (errors, not warnings) are not planned: exit 1 with lint's errors. A
    directory stands for its *.yaml files; `-` reads standard input.

    \b
    Example:
      tidegate plan examples/basic/rollout.yaml
      tidegate plan examples/canary/ --name web
      tidegate plan rollout.yaml analysis.yaml -o json | jq .total
    """
    paths = expand_paths(files)
    docs: list[Document] = []
    for p in paths:
        if p != "-" and not Path(p).exists():
            raise click.BadParameter(f"{p}: no such file", param_hint="FILE")
        loaded, problems = load_documents(p)
        for m in problems:
            click.echo(m.format(), err=True)
        if problems:
            sys.exit(1)
        docs.extend(loaded)
    # What `tidegate lint` rejects cannot be planned: the operator would refuse it too.
    report = Linter().lint_documents(docs)
    if report.errors:
        for m in report.messages:
            if m.severity == "error":
                click.echo(m.format(), err=True)
        click.echo(f"{report.summary()}: not planned (`tidegate lint` rejects the files)", err=True)
        sys.exit(1)
    doc = _rollout(docs, name)
    try:
        rollout = Rollout.model_validate(doc.data)
    except ValidationError as exc:
        for parts, text in schema_errors(exc):
            click.echo(f"{doc.file}: Rollout/{doc.name}: {format_path(parts)}: {text}", err=True)
        click.echo("the Rollout is not valid; `tidegate lint` tells more", err=True)
        sys.exit(1)
    if rollout.spec.strategy.canary is None and rollout.spec.strategy.blue_green is None:
        click.echo(f"{doc.file}: Rollout/{doc.name}: spec.strategy: needs canary or blueGreen", err=True)
        sys.exit(1)
    timeline = simulate(rollout, _templates(docs))
    if output == "json":
        click.echo(json.dumps(timeline_json(timeline), indent=2))
    else:
        click.echo(render_text(timeline))

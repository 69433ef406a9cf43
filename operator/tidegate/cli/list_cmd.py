"""`tidegate list rollouts [-A] [-o json|yaml]`: every Rollout, one line each."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from tidegate.cli._kube import Target, cluster_options
from tidegate.cli.view import (
    Obj,
    age,
    canary_weight,
    desired_replicas,
    phase_of,
    step_of,
    strategy_of,
)

MESSAGE_WIDTH = 60


@click.group("list")
def command() -> None:
    """List Tidegate resources.

    \b
    Example:
      tidegate list rollouts
      tidegate list rollouts -A -o json
    """


def summary(rollout: Obj) -> dict[str, Any]:
    """The facts of one line, as `-o json|yaml` prints them."""
    meta = rollout.get("metadata") or {}
    status = rollout.get("status") or {}
    return {
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "strategy": strategy_of(rollout),
        "phase": status.get("phase"),
        "step": None if step_of(rollout) == "-" else step_of(rollout),
        "weight": canary_weight(rollout) if strategy_of(rollout) == "Canary" else None,
        "desired": desired_replicas(rollout),
        "available": int(status.get("availableReplicas") or 0),
        "aborted": bool(status.get("abort")),
        "created": meta.get("creationTimestamp"),
        "message": status.get("message"),
    }


def _row(rollout: Obj, now: datetime, namespaces: bool) -> list[str]:
    s = summary(rollout)
    message = str(s["message"] or "")
    if len(message) > MESSAGE_WIDTH:
        message = message[: MESSAGE_WIDTH - 1] + "…"
    row = [
        str(s["name"]),
        s["strategy"],
        phase_of(rollout) + (" (aborted)" if s["aborted"] else ""),
        s["step"] or "-",
        "-" if s["weight"] is None else f"{s['weight']}%",
        f"{s['desired']}/{s['available']}",
        age(s["created"], now),
        message,
    ]
    return [str(s["namespace"]), *row] if namespaces else row


def table(rows: list[list[str]], header: list[str]) -> str:
    """Columns padded like kubectl's (two spaces apart, the last one unpadded)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


@command.command("rollouts")
@click.option(
    "-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True
)
@cluster_options(all_namespaces=True)
def rollouts(output: str, target: Target) -> None:
    """List Rollouts: NAME, STRATEGY, PHASE, STEP, WEIGHT, DESIRED/AVAILABLE, AGE, MESSAGE.

    `-o json` and `-o yaml` print one object per Rollout with the same facts
    (namespace, name, strategy, phase, step, weight, desired, available, aborted,
    created, message).

    \b
    Example:
      tidegate list rollouts
      tidegate list rollouts -A
      tidegate list rollouts -o json | jq '.[] | select(.phase == "Degraded") | .name'
    """
    cluster = target.connect()
    items = sorted(
        cluster.rollouts(),
        key=lambda r: ((r.get("metadata") or {}).get("namespace", ""), (r.get("metadata") or {}).get("name")),
    )
    if output == "json":
        click.echo(json.dumps([summary(r) for r in items], indent=2))
        return
    if output == "yaml":
        import yaml

        click.echo(yaml.safe_dump([summary(r) for r in items], sort_keys=False), nl=False)
        return
    if not items:
        where = "any namespace" if target.all_namespaces else f'namespace "{cluster.namespace}"'
        click.echo(f"No rollouts found in {where}.", err=True)
        return
    now = datetime.now(UTC)
    header = ["NAME", "STRATEGY", "PHASE", "STEP", "WEIGHT", "DESIRED/AVAILABLE", "AGE", "MESSAGE"]
    if target.all_namespaces:
        header = ["NAMESPACE", *header]
    click.echo(table([_row(r, now, target.all_namespaces) for r in items], header))

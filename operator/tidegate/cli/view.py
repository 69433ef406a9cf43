"""The live view of one Rollout: a pure function from cluster data to a rich renderable.

Nothing here talks to the cluster or reads the clock: `render(snapshot, now)` takes the
Rollout, its ReplicaSets, pods and AnalysisRuns as plain dicts (as the API returns them)
and the time, so the same frame comes out for the same input and the tests render it
into a fixed-width buffer. The small summaries (`step_of`, `canary_weight`, ...) are
shared with `list rollouts` and `status`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from tidegate.cli._facts import (
    PHASE_ICONS,
    PHASE_STYLES,
    STEP_CURRENT,
    STEP_DONE,
    STEP_TODO,
    Obj,
    Snapshot,
    age,
    auto_promotion_left,
    canary_weight,
    describe_step,
    desired_replicas,
    dig,
    hash_of,
    images_of,
    is_fresh,
    latest_value,
    live_message,
    pause_left,
    phase_of,
    pod_state,
    restart_line,
    revision_of,
    roles_of,
    step_index,
    step_of,
    steps_of,
    strategy_of,
    weight_bar,
    weights_verified,
)
from tidegate.core.names import ROLLOUT_LABEL

# ---------------------------------------------------------------------------
# The view


def _kv(grid: Table, key: str, value: RenderableType | str) -> None:
    grid.add_row(Text(key, style="bold"), value)


def _grid() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    return grid


def _header(grid: Table, snap: Snapshot, rollout: Obj) -> None:
    status = rollout.get("status") or {}
    meta = rollout.get("metadata") or {}
    _kv(grid, "Name:", str(meta.get("name") or snap.name))
    _kv(grid, "Namespace:", str(meta.get("namespace") or snap.namespace))
    phase = phase_of(rollout)
    line = Text(f"{PHASE_ICONS.get(phase, '?')} {phase}", style=PHASE_STYLES.get(phase, ""))
    if status.get("abort"):
        line.append("  (aborted)", style="red")
    if not is_fresh(rollout):
        line.append(
            f"  (status is of generation {status.get('observedGeneration')}, "
            f"spec is generation {meta.get('generation')})",
            style="dim",
        )
    _kv(grid, "Status:", line)
    _kv(grid, "Message:", live_message(str(status.get("message") or "-")))
    _kv(grid, "Strategy:", strategy_of(rollout))


def _pods_summary(grid: Table, snap: Snapshot, rollout: Obj) -> None:
    status = rollout.get("status") or {}
    images: list[str] = []
    for rs in _sorted_sets(snap.replica_sets):
        roles = roles_of(rollout, hash_of(rs))
        if roles or dig(rs, "spec", "replicas"):
            tag = f" ({', '.join(roles)})" if roles else ""
            images += [image + tag for image in images_of(dig(rs, "spec", "template"))]
    images = images or images_of(dig(rollout, "spec", "template"))
    _kv(grid, "Images:", "\n".join(dict.fromkeys(images)) or "-")
    replicas = Text(
        f"desired {desired_replicas(rollout)}  current {status.get('replicas', 0)}  "
        f"updated {status.get('updatedReplicas', 0)}  ready {status.get('readyReplicas', 0)}  "
        f"available {status.get('availableReplicas', 0)}"
    )
    _kv(grid, "Replicas:", replicas)
    restart = restart_line(rollout, snap.pods)
    if restart:
        _kv(grid, "Restart:", Text(restart, style="yellow"))


def _canary_section(grid: Table, rollout: Obj, now: datetime) -> None:
    steps = steps_of(rollout)
    index = step_index(rollout)
    n = len(steps)
    status = rollout.get("status") or {}
    done = status.get("stableRS") is not None and status.get("stableRS") == status.get("currentPodHash")
    if n:
        lines = Text()
        for i, step in enumerate(steps):
            if i < index or done:
                mark, style = STEP_DONE, "green"
            elif i == index:
                mark, style = STEP_CURRENT, "bold yellow"
            else:
                mark, style = STEP_TODO, "dim"
            if i:
                lines.append("\n")
            lines.append(f"{mark} {i + 1:>2}. {describe_step(step)}", style=style)
        step_line = step_of(rollout)
        if done:
            step_line += "  (complete)"
        elif index >= n:
            step_line += "  (all steps done: promoting)"
        _kv(grid, "Step:", step_line)
        _kv(grid, "Steps:", lines)
    else:
        _kv(grid, "Step:", "no steps: straight to 100%")
    weight = canary_weight(rollout)
    if weight is not None:
        verified = weights_verified(rollout)
        note = {True: "verified", False: "NOT verified: the router disagrees", None: "by pod count"}[verified]
        top = int(dig(rollout, "spec", "strategy", "canary", "trafficRouting", "maxTrafficWeight") or 100)
        percent = round(weight * 100 / top)
        bar = Text(weight_bar(percent), style="cyan")
        out_of = "" if top == 100 else f" ({weight}/{top})"
        bar.append(f" {percent:>3}% canary / {100 - percent}% stable{out_of} ({note})", style="")
        target = _step_weight(steps, index) if not done and index < n else None
        if target is not None and target != weight:
            bar.append(f"; step target {target}" + ("%" if top == 100 else f"/{top}"), style="dim")
        _kv(grid, "Weight:", bar)
    routes = dig(status, "canary", "managedRoutes")
    if routes:  # the rules / HTTP routes whose weights the router sets, as it read them back
        _kv(grid, "Routes:", ", ".join(str(r) for r in routes))
    left = pause_left(rollout, now)
    if left:
        _kv(grid, "Pause:", Text(left, style="yellow"))
    for key, label in (
        ("currentStepAnalysisRunStatus", "Step analysis:"),
        ("currentBackgroundAnalysisRunStatus", "Background:"),
    ):
        run = dig(status, "canary", key)
        if run:
            _kv(grid, label, f"{run.get('name')} {run.get('status')}" + _suffix(run.get("message")))


def _step_weight(steps: list[Obj], index: int) -> int:
    weight = 0
    for step in steps[: index + 1]:
        if "setWeight" in step:
            weight = int(step["setWeight"])
    return weight


def _suffix(message: Any) -> str:
    return f": {message}" if message else ""


def _blue_green_section(grid: Table, rollout: Obj, snap: Snapshot, now: datetime) -> None:
    spec_bg = dig(rollout, "spec", "strategy", "blueGreen") or {}
    status_bg = dig(rollout, "status", "blueGreen") or {}
    revisions = {hash_of(rs): revision_of(rs) for rs in snap.replica_sets}

    def selector(pod_hash: Any) -> str:
        if not pod_hash:
            return "-"
        revision = revisions.get(pod_hash)
        return f"{pod_hash} (revision {revision})" if revision else str(pod_hash)

    _kv(
        grid, "Active:", f"{spec_bg.get('activeService', '-')} -> {selector(status_bg.get('activeSelector'))}"
    )
    if spec_bg.get("previewService"):
        _kv(
            grid,
            "Preview:",
            f"{spec_bg.get('previewService')} -> {selector(status_bg.get('previewSelector'))}",
        )
    left = pause_left(rollout, now)
    if status_bg.get("promoting"):
        _kv(grid, "Promotion:", Text("promoting: the new version scales to full size, then the switch"))
    elif left:
        _kv(grid, "Pause:", Text(left, style="yellow"))
    elif auto := auto_promotion_left(rollout, now):
        _kv(grid, "Promotion:", auto)
    for key, label in (
        ("prePromotionAnalysisRunStatus", "Pre-promotion:"),
        ("postPromotionAnalysisRunStatus", "Post-promotion:"),
    ):
        run = status_bg.get(key)
        if run:
            _kv(grid, label, f"{run.get('name')} {run.get('status')}" + _suffix(run.get("message")))


def _sorted_sets(sets: Sequence[Obj]) -> list[Obj]:
    return sorted(sets, key=revision_of, reverse=True)


def _table(*columns: str) -> Table:
    table = Table(box=None, padding=(0, 2, 0, 0), show_edge=False, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=True)
    return table


def _revisions(rollout: Obj, sets: Sequence[Obj], now: datetime) -> Table:
    table = _table("REV", "REPLICASET", "ROLE", "DESIRED", "READY", "AVAILABLE", "AGE", "IMAGES")
    table.columns[-1].no_wrap = False
    table.columns[-1].overflow = "fold"
    for rs in _sorted_sets(sets):
        roles = roles_of(rollout, hash_of(rs))
        status = rs.get("status") or {}
        desired = int(dig(rs, "spec", "replicas") or 0)
        role = ",".join(roles) if roles else "-"
        table.add_row(
            str(revision_of(rs)),
            str(dig(rs, "metadata", "name")),
            Text(role, style="green" if {"stable", "active"} & set(roles) else "yellow" if roles else "dim"),
            str(desired),
            str(status.get("readyReplicas") or 0),
            str(status.get("availableReplicas") or 0),
            age(dig(rs, "metadata", "creationTimestamp"), now),
            ", ".join(images_of(dig(rs, "spec", "template"))),
        )
    return table


def _pods(sets: Sequence[Obj], pods: Sequence[Obj], now: datetime) -> Table | None:
    if not pods:
        return None
    revisions = {hash_of(rs): revision_of(rs) for rs in sets}
    table = _table("POD", "REV", "STATUS", "READY", "RESTARTS", "AGE")
    ordered = sorted(pods, key=lambda p: (-revisions.get(hash_of(p), 0), dig(p, "metadata", "name") or ""))
    for pod in ordered:
        state, ready = pod_state(pod)
        restarts = sum(int(c.get("restartCount") or 0) for c in dig(pod, "status", "containerStatuses") or [])
        style = "green" if state == "Running" and ready.split("/")[0] == ready.split("/")[1] else "yellow"
        table.add_row(
            str(dig(pod, "metadata", "name")),
            str(revisions.get(hash_of(pod), "?")),
            Text(state, style=style),
            ready,
            str(restarts),
            age(dig(pod, "metadata", "creationTimestamp"), now),
        )
    return table


def _analysis(runs: Sequence[Obj], now: datetime) -> Table | None:
    if not runs:
        return None
    table = _table("ANALYSISRUN", "PHASE", "AGE", "LATEST MEASUREMENTS")
    table.columns[-1].no_wrap = False
    table.columns[-1].overflow = "fold"
    ordered = sorted(runs, key=lambda r: str(dig(r, "metadata", "creationTimestamp") or ""), reverse=True)
    for run in ordered:
        status = run.get("status") or {}
        metrics = ", ".join(
            f"{m.get('name')}={latest_value(m)} ({m.get('phase', '?')})"
            for m in status.get("metricResults") or []
        )
        phase = str(status.get("phase") or "Pending")
        style = {"Successful": "green", "Failed": "red", "Error": "red", "Inconclusive": "yellow"}.get(
            phase, ""
        )
        table.add_row(
            str(dig(run, "metadata", "name")),
            Text(phase, style=style),
            age(dig(run, "metadata", "creationTimestamp"), now),
            metrics or "-",
        )
    return table


def render(snap: Snapshot, now: datetime) -> RenderableType:
    """The whole view of one Rollout at `now`."""
    rollout = snap.rollout
    if rollout is None:
        return Text(f"rollout {snap.name} not found in namespace {snap.namespace}", style="red")
    grid = _grid()
    _header(grid, snap, rollout)
    if strategy_of(rollout) == "Canary":
        _canary_section(grid, rollout, now)
    elif strategy_of(rollout) == "BlueGreen":
        _blue_green_section(grid, rollout, snap, now)
    _pods_summary(grid, snap, rollout)
    parts: list[RenderableType] = [grid, Text(""), _revisions(rollout, snap.replica_sets, now)]
    pods = _pods(snap.replica_sets, snap.pods, now)
    if pods is not None:
        parts += [Text(""), pods]
    runs = _analysis(snap.analysis_runs, now)
    if runs is not None:
        parts += [Text(""), runs]
    return Group(*parts)


def plain_console(file: io.StringIO | None = None, width: int = 100) -> Console:
    return Console(
        file=file or io.StringIO(), width=width, force_terminal=False, color_system=None, highlight=False
    )


PIPE_WIDTH = 4096
"""Width of the view when the output is not a terminal: wide enough that nothing wraps."""


def render_text(snap: Snapshot, now: datetime, width: int = 100) -> str:
    """The view as plain text, at most `width` columns wide (for tests, logs and pipes)."""
    return render_text_of(render(snap, now), width)


def render_text_of(renderable: RenderableType, width: int) -> str:
    """Any renderable as plain text, lines stripped of the padding rich adds."""
    buffer = io.StringIO()
    plain_console(buffer, width).print(renderable)
    return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())


def render_analysis_run(run: Obj, now: datetime) -> RenderableType:
    """One AnalysisRun: its phase and message, then every measurement of each metric."""
    meta = run.get("metadata") or {}
    status = run.get("status") or {}
    grid = _grid()
    _kv(grid, "Name:", str(meta.get("name") or "-"))
    _kv(grid, "Namespace:", str(meta.get("namespace") or "-"))
    _kv(grid, "Rollout:", str((meta.get("labels") or {}).get(ROLLOUT_LABEL) or "-"))
    phase = str(status.get("phase") or "Pending")
    _kv(grid, "Phase:", Text(phase, style=_RUN_STYLES.get(phase, "")))
    _kv(grid, "Message:", str(status.get("message") or "-"))
    _kv(grid, "Started:", f"{status.get('startedAt') or '-'} ({age(meta.get('creationTimestamp'), now)} ago)")
    table = _table("METRIC", "#", "PHASE", "VALUE", "FINISHED", "MESSAGE")
    table.columns[-1].no_wrap = False
    table.columns[-1].overflow = "fold"
    for metric in status.get("metricResults") or []:
        measurements = metric.get("measurements") or []
        counts = (
            f"{metric.get('successful', 0)} successful, {metric.get('failed', 0)} failed, "
            f"{metric.get('inconclusive', 0)} inconclusive, {metric.get('error', 0)} error"
        )
        table.add_row(
            Text(str(metric.get("name")), style="bold"),
            "",
            Text(str(metric.get("phase") or "-"), style=_RUN_STYLES.get(str(metric.get("phase")), "")),
            "",
            "",
            counts + _suffix(metric.get("message")),
        )
        for i, m in enumerate(measurements, 1):
            mphase = str(m.get("phase") or "-")
            table.add_row(
                "",
                str(i),
                Text(mphase, style=_RUN_STYLES.get(mphase, "")),
                str(m.get("value") if m.get("value") not in (None, "") else "-"),
                str(m.get("finishedAt") or "-"),
                str(m.get("message") or ""),
            )
    return Group(grid, Text(""), table)


_RUN_STYLES = {"Successful": "green", "Failed": "red", "Error": "red", "Inconclusive": "yellow"}

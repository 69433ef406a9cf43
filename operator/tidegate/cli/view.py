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
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from tidegate.core.durations import DurationError, format_duration, parse_duration
from tidegate.core.hashing import HASH_LABEL
from tidegate.core.model import REVISION_ANNOTATION

Obj = dict[str, Any]

PHASE_ICONS = {"Healthy": "✔", "Progressing": "◌", "Paused": "‖", "Degraded": "✖"}
PHASE_STYLES = {"Healthy": "green", "Progressing": "cyan", "Paused": "yellow", "Degraded": "red"}
STEP_DONE, STEP_CURRENT, STEP_TODO = "✔", "▶", "·"
BAR_CELLS = 20


@dataclass(frozen=True)
class Snapshot:
    """Everything the view shows, as read from the cluster."""

    rollout: Obj | None
    replica_sets: Sequence[Obj] = field(default_factory=list)
    pods: Sequence[Obj] = field(default_factory=list)
    analysis_runs: Sequence[Obj] = field(default_factory=list)
    name: str = ""
    namespace: str = ""


# ---------------------------------------------------------------------------
# Small readers, shared by the commands


def _get(obj: Any, *path: str | int) -> Any:
    for key in path:
        if isinstance(obj, dict) and isinstance(key, str):
            obj = obj.get(key)
        elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return None
    return obj


def parse_time(text: Any) -> datetime | None:
    if not text or not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def age(created: Any, now: datetime) -> str:
    """kubectl-like age: 45s, 3m20s, 42m, 5h, 3d."""
    start = parse_time(created)
    if start is None:
        return "-"
    seconds = max(0, int((now - start).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 600:
        return f"{seconds // 60}m{seconds % 60}s"
    if seconds < 3 * 3600:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def strategy_of(rollout: Obj) -> str:
    strategy = _get(rollout, "spec", "strategy") or {}
    if "canary" in strategy:
        return "Canary"
    if "blueGreen" in strategy:
        return "BlueGreen"
    return "-"


def steps_of(rollout: Obj) -> list[Obj]:
    return list(_get(rollout, "spec", "strategy", "canary", "steps") or [])


def step_index(rollout: Obj) -> int:
    """The current canary step index, clamped to 0..n (n: all steps done)."""
    n = len(steps_of(rollout))
    index = _get(rollout, "status", "currentStepIndex")
    return max(0, min(int(index or 0), n))


def step_of(rollout: Obj) -> str:
    """`k/n`, k counted from 1 as in the operator's messages ("paused at step 2/3"); n/n when done."""
    if strategy_of(rollout) != "Canary":
        return "-"
    n = len(steps_of(rollout))
    if n == 0:
        return "-"
    return f"{min(step_index(rollout) + 1, n)}/{n}"


def canary_weight(rollout: Obj) -> int | None:
    weight = _get(rollout, "status", "canary", "weights", "canary", "weight")
    return int(weight) if isinstance(weight, int | float) else None


def weights_verified(rollout: Obj) -> bool | None:
    verified = _get(rollout, "status", "canary", "weights", "verified")
    return verified if isinstance(verified, bool) else None


def phase_of(rollout: Obj) -> str:
    return str(_get(rollout, "status", "phase") or "Unknown")


def is_fresh(rollout: Obj) -> bool:
    """The status describes the latest spec (observedGeneration == generation)."""
    return bool(_get(rollout, "status", "observedGeneration") == _get(rollout, "metadata", "generation"))


def desired_replicas(rollout: Obj) -> int:
    replicas = _get(rollout, "spec", "replicas")
    return 1 if replicas is None else int(replicas)


def revision_of(rs: Obj) -> int:
    try:
        return int(_get(rs, "metadata", "annotations", REVISION_ANNOTATION) or 0)
    except ValueError:
        return 0


def hash_of(obj: Obj) -> str:
    return str(_get(obj, "metadata", "labels", HASH_LABEL) or "")


def describe_step(step: Obj) -> str:
    """One canary step in words: `setWeight 10`, `pause 30s`, `pause (until promoted)`, ..."""
    if "setWeight" in step:
        return f"setWeight {step['setWeight']}"
    if "pause" in step:
        duration = (step.get("pause") or {}).get("duration")
        return "pause (until promoted)" if duration in (None, "") else f"pause {duration}"
    if "setCanaryScale" in step:
        scale = step.get("setCanaryScale") or {}
        if "replicas" in scale:
            return f"setCanaryScale replicas={scale['replicas']}"
        if "weight" in scale:
            return f"setCanaryScale weight={scale['weight']}%"
        return "setCanaryScale matchTrafficWeight"
    if "setHeaderRoute" in step:
        route = step.get("setHeaderRoute") or {}
        matches = []
        for m in route.get("match") or []:
            value = m.get("headerValue") or {}
            kind, text = next(iter(value.items()), ("", ""))
            op = {"exact": "=", "prefix": "^=", "regex": "~="}.get(kind, "=")
            matches.append(f"{m.get('headerName')}{op}{text}")
        what = ", ".join(matches) if matches else "remove"
        return f"setHeaderRoute {route.get('name', '?')} ({what})"
    if "analysis" in step:
        templates = [t.get("templateName", "?") for t in (step.get("analysis") or {}).get("templates") or []]
        return f"analysis {', '.join(templates)}"
    return "?"


def _images(template: Any) -> list[str]:
    spec = _get(template, "spec") or {}
    return [str(c.get("image")) for c in spec.get("containers") or [] if c.get("image")]


def roles_of(rollout: Obj, pod_hash: str) -> list[str]:
    """What a ReplicaSet is to its Rollout: stable or canary; blue-green: active or preview."""
    status = rollout.get("status") or {}
    roles: list[str] = []
    stable, current = status.get("stableRS"), status.get("currentPodHash")
    if strategy_of(rollout) == "BlueGreen":
        bg = status.get("blueGreen") or {}
        active = bg.get("activeSelector") or stable
        if pod_hash == active:
            roles.append("active")
        elif pod_hash == bg.get("previewSelector") or pod_hash == current:
            roles.append("preview")
    else:
        if pod_hash == stable:
            roles.append("stable")
        if pod_hash == current and pod_hash != stable:
            roles.append("canary")
    return roles


def pause_left(rollout: Obj, now: datetime) -> str | None:
    """How long the current pause has left, in words; None when not paused."""
    status = rollout.get("status") or {}
    conditions = status.get("pauseConditions") or []
    spec_paused = bool(_get(rollout, "spec", "paused"))
    if not conditions:
        return "paused by spec.paused (`tidegate resume`)" if spec_paused else None
    reasons = {c.get("reason") for c in conditions}
    if "CanaryPauseStep" in reasons:
        steps = steps_of(rollout)
        index = step_index(rollout)
        pause = steps[index].get("pause") if index < len(steps) else None
        duration = (pause or {}).get("duration") if isinstance(pause, dict) else None
        if duration in (None, ""):
            return "until promoted (`tidegate promote`)"
        start = next(
            (parse_time(c.get("startTime")) for c in conditions if c.get("reason") == "CanaryPauseStep"), None
        )
        try:
            seconds = parse_duration(duration)
        except DurationError:
            return f"pause {duration} (not a duration)"
        if start is None:
            return f"{duration}"
        left = seconds - (now - start).total_seconds()
        return f"{format_duration(left)} left of {duration}" if left > 0 else f"0s left of {duration}"
    if "InconclusiveAnalysisRun" in reasons:
        return "until promoted: an analysis was inconclusive (`tidegate promote`)"
    return "until promoted (`tidegate promote`)"


def auto_promotion_left(rollout: Obj, now: datetime) -> str | None:
    bg = _get(rollout, "spec", "strategy", "blueGreen") or {}
    seconds = bg.get("autoPromotionSeconds")
    started = parse_time(_get(rollout, "status", "stepStartedAt"))
    if not seconds or started is None or bg.get("autoPromotionEnabled") is False:
        return None
    if _get(rollout, "status", "stableRS") == _get(rollout, "status", "currentPodHash"):
        return None
    left = float(seconds) - (now - started).total_seconds()
    return f"promoting automatically in {format_duration(left)}" if left > 0 else None


def weight_bar(weight: int, cells: int = BAR_CELLS) -> str:
    weight = max(0, min(100, weight))
    full = round(weight * cells / 100)
    return "█" * full + "░" * (cells - full)


def latest_value(metric: Obj) -> str:
    measurements = metric.get("measurements") or []
    if not measurements:
        return "-"
    last = measurements[-1]
    value = last.get("value")
    return str(value) if value not in (None, "") else str(last.get("phase") or "-")


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
    _kv(grid, "Message:", str(status.get("message") or "-"))
    _kv(grid, "Strategy:", strategy_of(rollout))


def _pods_summary(grid: Table, snap: Snapshot, rollout: Obj) -> None:
    status = rollout.get("status") or {}
    images: list[str] = []
    for rs in _sorted_sets(snap.replica_sets):
        roles = roles_of(rollout, hash_of(rs))
        if roles or _get(rs, "spec", "replicas"):
            tag = f" ({', '.join(roles)})" if roles else ""
            images += [image + tag for image in _images(_get(rs, "spec", "template"))]
    images = images or _images(_get(rollout, "spec", "template"))
    _kv(grid, "Images:", "\n".join(dict.fromkeys(images)) or "-")
    replicas = Text(
        f"desired {desired_replicas(rollout)}  current {status.get('replicas', 0)}  "
        f"updated {status.get('updatedReplicas', 0)}  ready {status.get('readyReplicas', 0)}  "
        f"available {status.get('availableReplicas', 0)}"
    )
    _kv(grid, "Replicas:", replicas)


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
        bar = Text(weight_bar(weight), style="cyan")
        bar.append(f" {weight:>3}% canary / {100 - weight}% stable ({note})", style="")
        target = _step_weight(steps, index) if not done and index < n else None
        if target is not None and target != weight:
            bar.append(f"; step target {target}%", style="dim")
        _kv(grid, "Weight:", bar)
    left = pause_left(rollout, now)
    if left:
        _kv(grid, "Pause:", Text(left, style="yellow"))
    for key, label in (
        ("currentStepAnalysisRunStatus", "Step analysis:"),
        ("currentBackgroundAnalysisRunStatus", "Background:"),
    ):
        run = _get(status, "canary", key)
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
    spec_bg = _get(rollout, "spec", "strategy", "blueGreen") or {}
    status_bg = _get(rollout, "status", "blueGreen") or {}
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
        desired = int(_get(rs, "spec", "replicas") or 0)
        role = ",".join(roles) if roles else "-"
        table.add_row(
            str(revision_of(rs)),
            str(_get(rs, "metadata", "name")),
            Text(role, style="green" if {"stable", "active"} & set(roles) else "yellow" if roles else "dim"),
            str(desired),
            str(status.get("readyReplicas") or 0),
            str(status.get("availableReplicas") or 0),
            age(_get(rs, "metadata", "creationTimestamp"), now),
            ", ".join(_images(_get(rs, "spec", "template"))),
        )
    return table


def pod_state(pod: Obj) -> tuple[str, str]:
    """(status, ready containers) of a pod, as kubectl shows them."""
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    total = len(_get(pod, "spec", "containers") or []) or len(containers)
    ready = sum(1 for c in containers if c.get("ready"))
    state = str(status.get("phase") or "Unknown")
    for c in containers:
        waiting = _get(c, "state", "waiting", "reason")
        if waiting:
            state = str(waiting)
    if _get(pod, "metadata", "deletionTimestamp"):
        state = "Terminating"
    return state, f"{ready}/{total}"


def _pods(sets: Sequence[Obj], pods: Sequence[Obj], now: datetime) -> Table | None:
    if not pods:
        return None
    revisions = {hash_of(rs): revision_of(rs) for rs in sets}
    table = _table("POD", "REV", "STATUS", "READY", "RESTARTS", "AGE")
    ordered = sorted(pods, key=lambda p: (-revisions.get(hash_of(p), 0), _get(p, "metadata", "name") or ""))
    for pod in ordered:
        state, ready = pod_state(pod)
        restarts = sum(
            int(c.get("restartCount") or 0) for c in _get(pod, "status", "containerStatuses") or []
        )
        style = "green" if state == "Running" and ready.split("/")[0] == ready.split("/")[1] else "yellow"
        table.add_row(
            str(_get(pod, "metadata", "name")),
            str(revisions.get(hash_of(pod), "?")),
            Text(state, style=style),
            ready,
            str(restarts),
            age(_get(pod, "metadata", "creationTimestamp"), now),
        )
    return table


def _analysis(runs: Sequence[Obj], now: datetime) -> Table | None:
    if not runs:
        return None
    table = _table("ANALYSISRUN", "PHASE", "AGE", "LATEST MEASUREMENTS")
    table.columns[-1].no_wrap = False
    table.columns[-1].overflow = "fold"
    ordered = sorted(runs, key=lambda r: str(_get(r, "metadata", "creationTimestamp") or ""), reverse=True)
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
            str(_get(run, "metadata", "name")),
            Text(phase, style=style),
            age(_get(run, "metadata", "creationTimestamp"), now),
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


def render_text(snap: Snapshot, now: datetime, width: int = 100) -> str:
    """The view as plain text, `width` columns wide (for tests, logs and pipes)."""
    buffer = io.StringIO()
    plain_console(buffer, width).print(render(snap, now))
    return "".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines())

"""Facts about a Rollout read from its API object: pure, no rich, no pydantic.

Shared by the live view (`view.py`), `get`/`list` tables, `status` and the steering
commands; kept free of heavy imports so that `tidegate list` starts fast.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tidegate.core.durations import DurationError, format_duration, parse_duration
from tidegate.core.hashing import HASH_LABEL
from tidegate.core.names import REVISION_ANNOTATION

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


def dig(obj: Any, *path: str | int) -> Any:
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
    strategy = dig(rollout, "spec", "strategy") or {}
    if "canary" in strategy:
        return "Canary"
    if "blueGreen" in strategy:
        return "BlueGreen"
    return "-"


def steps_of(rollout: Obj) -> list[Obj]:
    return list(dig(rollout, "spec", "strategy", "canary", "steps") or [])


def step_index(rollout: Obj) -> int:
    """The current canary step index, clamped to 0..n (n: all steps done)."""
    n = len(steps_of(rollout))
    index = dig(rollout, "status", "currentStepIndex")
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
    weight = dig(rollout, "status", "canary", "weights", "canary", "weight")
    return int(weight) if isinstance(weight, int | float) else None


def weights_verified(rollout: Obj) -> bool | None:
    verified = dig(rollout, "status", "canary", "weights", "verified")
    return verified if isinstance(verified, bool) else None


def phase_of(rollout: Obj) -> str:
    return str(dig(rollout, "status", "phase") or "Unknown")


def is_fresh(rollout: Obj) -> bool:
    """The status describes the latest spec (observedGeneration == generation)."""
    return bool(dig(rollout, "status", "observedGeneration") == dig(rollout, "metadata", "generation"))


def desired_replicas(rollout: Obj) -> int:
    replicas = dig(rollout, "spec", "replicas")
    return 1 if replicas is None else int(replicas)


def revision_of(rs: Obj) -> int:
    try:
        return int(dig(rs, "metadata", "annotations", REVISION_ANNOTATION) or 0)
    except ValueError:
        return 0


def hash_of(obj: Obj) -> str:
    return str(dig(obj, "metadata", "labels", HASH_LABEL) or "")


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
            value = m.get("headerValue") or m.get("queryParamValue") or {}
            kind, text = next(iter(value.items()), ("", ""))
            op = {"exact": "=", "prefix": "^=", "regex": "~="}.get(kind, "=")
            name = m.get("headerName") or f"?{m.get('queryParamName')}"
            matches.append(f"{name}{op}{text}")
        what = ", ".join(matches) if matches else "remove"
        return f"setHeaderRoute {route.get('name', '?')} ({what})"
    if "analysis" in step:
        templates = [t.get("templateName", "?") for t in (step.get("analysis") or {}).get("templates") or []]
        return f"analysis {', '.join(templates)}"
    return "?"


def images_of(template: Any) -> list[str]:
    spec = dig(template, "spec") or {}
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
    spec_paused = bool(dig(rollout, "spec", "paused"))
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
    bg = dig(rollout, "spec", "strategy", "blueGreen") or {}
    seconds = bg.get("autoPromotionSeconds")
    started = parse_time(dig(rollout, "status", "stepStartedAt"))
    if not seconds or started is None or bg.get("autoPromotionEnabled") is False:
        return None
    if dig(rollout, "status", "stableRS") == dig(rollout, "status", "currentPodHash"):
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


def restart_state(rollout: Obj) -> str | None:
    """The pending `spec.restartAt` (not yet carried out: `status.restartedAt` differs); None when none."""
    at = dig(rollout, "spec", "restartAt")
    if not at or at == dig(rollout, "status", "restartedAt"):
        return None
    return str(at)


def pod_state(pod: Obj) -> tuple[str, str]:
    """(status, ready containers) of a pod, as kubectl shows them."""
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    total = len(dig(pod, "spec", "containers") or []) or len(containers)
    ready = sum(1 for c in containers if c.get("ready"))
    state = str(status.get("phase") or "Unknown")
    for c in containers:
        waiting = dig(c, "state", "waiting", "reason")
        if waiting:
            state = str(waiting)
    if dig(pod, "metadata", "deletionTimestamp"):
        state = "Terminating"
    return state, f"{ready}/{total}"


def is_complete(rollout: Obj) -> bool:
    """The current revision is the stable one, not aborted: a restart can run (once pods are available).

    The phase is not asked: a restart's own evictions flip it to Progressing and back.
    """
    status = rollout.get("status") or {}
    stable = status.get("stableRS")
    return bool(stable) and stable == status.get("currentPodHash") and not status.get("abort")


def restart_line(rollout: Obj, pods: Sequence[Obj] | None) -> str | None:
    """A pending restart in words (None when there is none): waiting for the rollout, or pods left.

    The operator restarts only a complete rollout (core.housekeeping.restart), one pod at a time.
    """
    at = restart_state(rollout)
    if at is None:
        return None
    start = parse_time(at)
    older = None
    if pods is not None and start is not None:
        older = sum(
            1
            for p in pods
            if (created := parse_time(dig(p, "metadata", "creationTimestamp"))) is not None
            and created < start
            and not dig(p, "metadata", "deletionTimestamp")
        )
    left = "" if older is None else f"; {older} pod{'' if older == 1 else 's'} created before it left"
    if not is_complete(rollout):
        return f"pending (restartAt {at}): starts once the rollout is complete{left}"
    return f"in progress (restartAt {at}): pods replaced one at a time{left}"


_COUNTDOWN = re.compile(r" for \S+ more \(until ([^)]+)\)")
_AUTO_PROMOTION = re.compile(r"promoting automatically in [0-9hms]+")


def live_message(message: str) -> str:
    """The operator's message without the countdown it wrote at its last pass.

    "paused at step 2/4 for 1m59s more (until T)" was true when written; beside a
    countdown that moves, it reads "paused at step 2/4 until T"; blue-green's "promoting
    automatically in 45s" reads "promoting automatically" beside the Promotion line.
    """
    return _AUTO_PROMOTION.sub("promoting automatically", _COUNTDOWN.sub(r" until \1", message))

"""What the dashboard's pages show, as plain JSON-ready dicts: pure, no I/O, no clock of its own.

The server (`dashboard.py`) folds watch events into a `Store` and turns it into these
views; the page (`dashboard_assets/app.js`) only draws them. Deciding here keeps the
tables testable without a browser (`tests/unit/test_dashboard_model.py`) and keeps the
words the same as the CLI's (`_facts`: step `k/n`, ages, step descriptions, roles).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tidegate.cli._facts import (
    Obj,
    age,
    canary_weight,
    describe_step,
    dig,
    hash_of,
    images_of,
    live_message,
    parse_time,
    phase_of,
    pod_state,
    revision_of,
    roles_of,
    step_index,
    step_of,
    steps_of,
    strategy_of,
    weights_verified,
)
from tidegate.core.names import REVISION_ANNOTATION, ROLLOUT_LABEL

Key = tuple[str, str]
"""(namespace, name)"""

HISTORY_POINTS = 500
"""Weight samples kept per Rollout (a point is added only when the weight or step changes)."""
EVENTS_SHOWN = 12

# The buttons, in the order the page shows them: (action, label, what the confirmation asks).
ACTIONS: tuple[tuple[str, str, str], ...] = (
    ("promote", "Promote", "end the current pause or skip the current step"),
    ("promote-full", "Promote full", "skip every remaining step and go to 100% now"),
    ("abort", "Abort", "send all traffic back to the stable version"),
    ("retry", "Retry", "start the steps of the aborted revision again"),
    ("pause", "Pause", "hold the rollout where it is (spec.paused: true)"),
    ("resume", "Resume", "lift spec.paused"),
    ("restart", "Restart", "replace its pods one at a time (spec.restartAt: now)"),
)


def key_of(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


@dataclass(frozen=True)
class WeightPoint:
    at: float
    """Seconds since the epoch."""
    weight: int
    step: str
    phase: str


def record_weight(history: list[WeightPoint], rollout: Obj, at: datetime) -> bool:
    """Append the Rollout's weight to its history when weight, step or phase changed; True if added.

    A blue-green Rollout or one without a weight yet counts as 0 (all on stable) until
    the operator reports one: the chart then starts at the baseline rather than nowhere.
    """
    weight = canary_weight(rollout)
    point = WeightPoint(at.timestamp(), weight or 0, step_of(rollout), phase_of(rollout))
    if history and (history[-1].weight, history[-1].step, history[-1].phase) == (
        point.weight,
        point.step,
        point.phase,
    ):
        return False
    history.append(point)
    del history[:-HISTORY_POINTS]
    return True


@dataclass
class Store:
    """The objects the dashboard's watches have seen, by kind and (namespace, name)."""

    rollouts: dict[Key, Obj] = field(default_factory=dict)
    replica_sets: dict[Key, Obj] = field(default_factory=dict)
    pods: dict[Key, Obj] = field(default_factory=dict)
    analysis_runs: dict[Key, Obj] = field(default_factory=dict)
    events: dict[Key, Obj] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    """kind -> why its watch fails (an RBAC refusal reads `... is forbidden: User ...`)."""
    history: dict[Key, list[WeightPoint]] = field(default_factory=dict)

    def kind(self, kind: str) -> dict[Key, Obj]:
        return {
            "rollouts": self.rollouts,
            "replicasets": self.replica_sets,
            "pods": self.pods,
            "analysisruns": self.analysis_runs,
            "events": self.events,
        }[kind]

    def apply(self, kind: str, change_type: str, objects: Iterable[Obj], message: str, at: datetime) -> None:
        """Fold one watch change in: ADDED/MODIFIED/DELETED, SYNC (the whole list) or ERROR."""
        if change_type == "ERROR":
            self.errors[kind] = message
            return
        self.errors.pop(kind, None)
        store = self.kind(kind)
        objects = list(objects)
        if change_type == "SYNC":
            store.clear()
        for obj in objects:
            key = key_of(obj)
            if change_type == "DELETED":
                store.pop(key, None)
                if kind == "rollouts":
                    self.history.pop(key, None)
            else:
                store[key] = obj
                if kind == "rollouts":
                    record_weight(self.history.setdefault(key, []), obj, at)


# ---------------------------------------------------------------------------
# Overview


def revision_number(rollout: Obj, replica_sets: Iterable[Obj]) -> int | None:
    """The revision of the Rollout's current pod template: its ReplicaSet's, else the Rollout's note."""
    current = dig(rollout, "status", "currentPodHash")
    for rs in replica_sets:
        if current and hash_of(rs) == current and revision_of(rs):
            return revision_of(rs)
    noted = dig(rollout, "metadata", "annotations", REVISION_ANNOTATION)
    try:
        return int(noted) if noted else None
    except ValueError:
        return None


def _sets_of(store: Store, key: Key) -> list[Obj]:
    namespace, name = key
    return [
        rs
        for (ns, _n), rs in store.replica_sets.items()
        if ns == namespace and dig(rs, "metadata", "labels", ROLLOUT_LABEL) == name
    ]


def overview_row(rollout: Obj, replica_sets: Sequence[Obj], now: datetime) -> Obj:
    namespace, name = key_of(rollout)
    status = rollout.get("status") or {}
    return {
        "namespace": namespace,
        "name": name,
        "phase": phase_of(rollout),
        "message": live_message(str(status.get("message") or "")),
        "strategy": strategy_of(rollout),
        "step": step_of(rollout),
        "weight": canary_weight(rollout),
        "revision": revision_number(rollout, replica_sets),
        "created": dig(rollout, "metadata", "creationTimestamp"),
        "age": age(dig(rollout, "metadata", "creationTimestamp"), now),
    }


def overview(store: Store, namespace: str | None, now: datetime) -> Obj:
    """Every Rollout seen, sorted by namespace and name; `namespace` None: all namespaces."""
    rows = [
        overview_row(r, _sets_of(store, key), now)
        for key, r in sorted(store.rollouts.items())
        if namespace is None or key[0] == namespace
    ]
    return {"namespace": namespace, "rollouts": rows, "errors": dict(sorted(store.errors.items()))}


# ---------------------------------------------------------------------------
# One Rollout


def step_rows(rollout: Obj) -> list[Obj]:
    """The canary steps, each done, current or todo (all done once the index is past the last)."""
    index = step_index(rollout)
    rows = []
    for i, step in enumerate(steps_of(rollout)):
        state = "done" if i < index else "current" if i == index else "todo"
        rows.append({"number": i + 1, "text": describe_step(step), "state": state})
    return rows


def measured_number(value: Any) -> float | None:
    """A measurement's value as a number to plot: `0.97`, `[0.97]` (the first element), else None."""
    if value is None or value == "":
        return None
    parsed: Any = value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return None
    while isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    if isinstance(parsed, bool) or not isinstance(parsed, int | float):
        return None
    number = float(parsed)
    return number if math.isfinite(number) else None


_THRESHOLD = re.compile(
    r"^\s*(?:len\(result\)\s*>\s*0\s*&&\s*)?result(?:\[0\])?\s*(>=|<=|>|<)\s*(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)\s*$"
)


def thresholds(metric_spec: Obj) -> list[Obj]:
    """The lines to draw across a metric's chart: a condition that compares the first value with a number.

    `result[0] >= 0.95` (optionally behind `len(result) > 0 &&`) is a line at 0.95, the
    side that passes or fails said by `kind`; any other expression draws no line (its
    text is still shown beside the chart).
    """
    lines = []
    for field_name, kind in (("successCondition", "success"), ("failureCondition", "failure")):
        text = metric_spec.get(field_name)
        match = _THRESHOLD.match(text) if isinstance(text, str) else None
        if match:
            lines.append({"kind": kind, "op": match.group(1), "value": float(match.group(2))})
    return lines


def _criterion(metric_spec: Obj) -> str:
    """What a metric's measurements are held against, in the spec's own words."""
    judge = metric_spec.get("judge")
    if isinstance(judge, dict):
        method = judge.get("method") or "MannWhitney"
        direction = judge.get("direction") or "Increase"
        return (
            f"judge {method}: canary against stable ({direction} is worse), "
            f"tolerance {judge.get('tolerance', 0.05)}, confidence {judge.get('confidence', 0.99)}"
        )
    parts = []
    if metric_spec.get("successCondition"):
        parts.append(f"successCondition {metric_spec['successCondition']}")
    if metric_spec.get("failureCondition"):
        parts.append(f"failureCondition {metric_spec['failureCondition']}")
    return "; ".join(parts) or "no condition: every measurement that returns counts as successful"


def analysis_run_view(run: Obj, now: datetime) -> Obj:
    status = run.get("status") or {}
    specs = {str(m.get("name")): m for m in dig(run, "spec", "metrics") or []}
    metrics = []
    for result in status.get("metricResults") or []:
        name = str(result.get("name"))
        spec = specs.get(name, {})
        measurements = [
            {
                "number": i,
                "phase": str(m.get("phase") or "-"),
                "value": m.get("value"),
                "plotted": measured_number(m.get("value")),
                "finishedAt": m.get("finishedAt"),
                "message": m.get("message") or "",
                "details": dict(m.get("metadata") or {}),
            }
            for i, m in enumerate(result.get("measurements") or [], 1)
        ]
        metrics.append(
            {
                "name": name,
                "phase": str(result.get("phase") or "Running"),
                "message": result.get("message") or "",
                "criterion": _criterion(spec),
                "thresholds": thresholds(spec),
                "judged": isinstance(spec.get("judge"), dict),
                "counts": {
                    k: int(result.get(k) or 0) for k in ("successful", "failed", "inconclusive", "error")
                },
                "measurements": measurements,
            }
        )
    for name, spec in specs.items():  # metrics not measured yet still show what they will be held to
        if all(m["name"] != name for m in metrics):
            metrics.append(
                {
                    "name": name,
                    "phase": "Pending",
                    "message": "",
                    "criterion": _criterion(spec),
                    "thresholds": thresholds(spec),
                    "judged": isinstance(spec.get("judge"), dict),
                    "counts": {"successful": 0, "failed": 0, "inconclusive": 0, "error": 0},
                    "measurements": [],
                }
            )
    return {
        "name": str(dig(run, "metadata", "name")),
        "phase": str(status.get("phase") or "Pending"),
        "message": status.get("message") or "",
        "created": dig(run, "metadata", "creationTimestamp"),
        "age": age(dig(run, "metadata", "creationTimestamp"), now),
        "metrics": metrics,
    }


def revision_rows(rollout: Obj, replica_sets: Sequence[Obj], pods: Sequence[Obj], now: datetime) -> list[Obj]:
    """One row per ReplicaSet (newest revision first), with its images and its pods."""
    by_hash: dict[str, list[Obj]] = {}
    for pod in pods:
        by_hash.setdefault(hash_of(pod), []).append(pod)
    rows = []
    for rs in sorted(replica_sets, key=lambda r: (-revision_of(r), str(dig(r, "metadata", "name")))):
        pod_hash = hash_of(rs)
        pod_rows = []
        for pod in sorted(by_hash.pop(pod_hash, []), key=lambda p: str(dig(p, "metadata", "name"))):
            state, ready = pod_state(pod)
            pod_rows.append(
                {
                    "name": str(dig(pod, "metadata", "name")),
                    "status": state,
                    "ready": ready,
                    "restarts": sum(
                        int(c.get("restartCount") or 0) for c in dig(pod, "status", "containerStatuses") or []
                    ),
                    "age": age(dig(pod, "metadata", "creationTimestamp"), now),
                }
            )
        rs_status = rs.get("status") or {}
        rows.append(
            {
                "revision": revision_of(rs),
                "name": str(dig(rs, "metadata", "name")),
                "hash": pod_hash,
                "roles": roles_of(rollout, pod_hash),
                "images": images_of(dig(rs, "spec", "template")),
                "desired": int(dig(rs, "spec", "replicas") or 0),
                "ready": int(rs_status.get("readyReplicas") or 0),
                "available": int(rs_status.get("availableReplicas") or 0),
                "age": age(dig(rs, "metadata", "creationTimestamp"), now),
                "pods": pod_rows,
            }
        )
    return rows


def event_rows(events: Iterable[Obj], names: set[str], now: datetime) -> list[Obj]:
    """The latest Events about the Rollout or its AnalysisRuns (`names`), newest first."""

    def last_seen(event: Obj) -> datetime:
        for path in (("lastTimestamp",), ("eventTime",), ("metadata", "creationTimestamp")):
            seen = parse_time(dig(event, *path))
            if seen is not None:
                return seen
        return datetime.min.replace(tzinfo=now.tzinfo)

    mine = [e for e in events if dig(e, "involvedObject", "name") in names]
    mine.sort(key=last_seen, reverse=True)
    return [
        {
            "type": str(e.get("type") or "Normal"),
            "reason": str(e.get("reason") or ""),
            "object": f"{dig(e, 'involvedObject', 'kind')}/{dig(e, 'involvedObject', 'name')}",
            "message": str(e.get("message") or ""),
            "count": int(e.get("count") or 1),
            "age": age(last_seen(e).isoformat(), now),
        }
        for e in mine[:EVENTS_SHOWN]
    ]


def rollout_view(store: Store, key: Key, now: datetime) -> Obj:
    """Everything the Rollout page shows; `found: False` when the watch has not seen it (or it went)."""
    namespace, name = key
    rollout = store.rollouts.get(key)
    errors = dict(sorted(store.errors.items()))
    if rollout is None:
        return {"namespace": namespace, "name": name, "found": False, "errors": errors}
    sets = _sets_of(store, key)
    hashes = {hash_of(rs) for rs in sets}
    pods = [p for (ns, _n), p in store.pods.items() if ns == namespace and hash_of(p) in hashes]
    runs = sorted(
        (
            r
            for (ns, _n), r in store.analysis_runs.items()
            if ns == namespace and dig(r, "metadata", "labels", ROLLOUT_LABEL) == name
        ),
        key=lambda r: (str(dig(r, "metadata", "creationTimestamp") or ""), str(dig(r, "metadata", "name"))),
        reverse=True,
    )
    names = {name, *(str(dig(r, "metadata", "name")) for r in runs)}
    events = [e for (ns, _n), e in store.events.items() if ns == namespace]
    status = rollout.get("status") or {}
    return {
        **overview_row(rollout, sets, now),
        "found": True,
        "verified": weights_verified(rollout),
        "paused": bool(dig(rollout, "spec", "paused")),
        "aborted": bool(status.get("abort")),
        "steps": step_rows(rollout),
        "history": [
            {"at": p.at, "weight": p.weight, "step": p.step, "phase": p.phase}
            for p in store.history.get(key, [])
        ],
        "analysisRuns": [analysis_run_view(r, now) for r in runs],
        "revisions": revision_rows(rollout, sets, pods, now),
        "events": event_rows(events, names, now),
        "actions": [{"action": a, "label": label, "asks": asks} for a, label, asks in ACTIONS],
        "errors": errors,
    }


def view_json(view: Mapping[str, Any]) -> str:
    return json.dumps(view, sort_keys=True, separators=(",", ":"))

"""simulate(rollout, templates) -> Timeline: what a Rollout's strategy will do, offline.

The timeline is the *minimum* course of a rollout: pods become ready at once, every
analysis succeeds, and a person promotes the moment they are asked to. Timed pauses
and analysis windows are what make it last; indefinite pauses are counted apart as
manual promotions. Pod counts come from the planner's own arithmetic (imported, not
copied), so the plan shows what the operator will do:

- with a traffic router: canary pods follow the weight (`canary_replicas_for_weight`)
  unless a setCanaryScale says otherwise; the stable keeps spec.replicas, or shrinks
  with the weight under dynamicStableScale;
- without one: the weight is a share of pods, reached within maxSurge / maxUnavailable
  (the planner's `_basic_canary_counts`, run pass by pass on simulated ReplicaSets).

An analysis window is initialDelay + interval x (count - 1) for a metric (a metric
without an interval is measured once, at initialDelay); a run lasts as long as its
longest metric. Blue-green follows Argo Rollouts' order: preview, pre-promotion
analysis, the pause (manual, or autoPromotionSeconds), promotion to full size and the
switch, post-promotion analysis, then the old pods go after scaleDownDelaySeconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from tidegate.api.analysis import AnalysisTemplateSpec, Metric
from tidegate.api.rollout import (
    BlueGreenStrategy,
    CanaryStep,
    CanaryStrategy,
    Rollout,
    RolloutAnalysis,
    RolloutStatus,
)
from tidegate.core.args import ArgumentError, render_query
from tidegate.core.durations import DurationError, format_duration, parse_duration
from tidegate.core.model import ObservedState, ReplicaSetInfo, RouterState
from tidegate.core.planner import (
    _basic_canary_counts,
    _canary_scale_at,
    _header_routes_at,
    _Pass,
    _weight_at,
    canary_replicas_for_weight,
    percent_of,
)
from tidegate.core.traffic import max_weight

__all__ = [
    "AnalysisWindow",
    "BackgroundAnalysis",
    "Row",
    "Timeline",
    "analysis_window",
    "metric_window",
    "simulate",
    "template_key",
]

RowKind = Literal[
    "setWeight",
    "pause",
    "setCanaryScale",
    "setHeaderRoute",
    "analysis",
    "preview",
    "prePromotionAnalysis",
    "autoPromotion",
    "promote",
    "postPromotionAnalysis",
    "scaleDown",
]


def template_key(name: str, cluster_scope: bool = False) -> str:
    """Key of a template in the mapping simulate() takes.

    >>> template_key("success-rate"), template_key("success-rate", cluster_scope=True)
    ('success-rate', 'ClusterAnalysisTemplate/success-rate')
    """
    return f"ClusterAnalysisTemplate/{name}" if cluster_scope else name


@dataclass(frozen=True)
class AnalysisWindow:
    """How long an analysis run lasts at the least, when every measurement succeeds."""

    templates: tuple[str, ...]
    seconds: float | None
    """None: unknown (a template is missing, a metric runs until stopped, ...)."""
    longest_metric: str | None = None
    unknown_because: str | None = None

    def describe(self) -> str:
        """`window 2m10s (longest metric: errors)`, or `unknown duration: <why>`."""
        if self.seconds is None:
            return f"unknown duration: {self.unknown_because}"
        if self.longest_metric is None:
            return f"window {format_duration(self.seconds)}"
        return f"window {format_duration(self.seconds)} (longest metric: {self.longest_metric})"


@dataclass(frozen=True)
class Row:
    """One line of the timeline: a step (canary) or a phase (blue-green)."""

    kind: RowKind
    action: str
    """What happens, in words: `setWeight 10`, `pause 30s`, `analysis success-rate`."""
    weight: int
    """Percentage of traffic on the new version once this row is in place."""
    canary_pods: int
    """Pods of the new version (blue-green: the preview, then the new active)."""
    stable_pods: int
    """Pods of the previous version."""
    at: float
    """Seconds since the rollout began at which this row starts, at the soonest."""
    wait: float | None = 0.0
    """How long the row holds the rollout: 0 for an immediate action, None when unknown."""
    step: int | None = None
    """Canary step number, from 1; None for rows that are not steps."""
    waits_for_promote: bool = False
    """An indefinite pause: nothing moves until `tidegate promote`."""
    header_routes: tuple[str, ...] = ()
    """Managed header routes in place during this row."""
    notes: tuple[str, ...] = ()
    """Anything else worth knowing (surge, analysis details)."""


@dataclass(frozen=True)
class BackgroundAnalysis:
    templates: tuple[str, ...]
    starting_step: int
    """Step number (from 1) at which it starts; len(steps) + 1 means at promotion."""
    at: float
    window: AnalysisWindow


@dataclass(frozen=True)
class Timeline:
    name: str
    strategy: Literal["canary", "blueGreen"]
    replicas: int
    traffic_router: str | None
    """`istio`, `gatewayAPI`, or None (canary: pod counts split the traffic; blue-green: Service switch)."""
    rows: tuple[Row, ...]
    total: float
    """Minimum seconds to full promotion: timed pauses and known analysis windows."""
    manual_promotions: int
    """Indefinite pauses on the way, each waiting for `tidegate promote`."""
    unknown: tuple[str, ...] = ()
    """Waits of unknown duration on the way, with the reason."""
    background: BackgroundAnalysis | None = None
    paused_by_spec: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    def describe_total(self) -> str:
        """`1m10s + 2 manual promotions + unknown (analysis x: ...)`."""
        parts = [format_duration(self.total)]
        if self.manual_promotions:
            s = "" if self.manual_promotions == 1 else "s"
            parts.append(f"{self.manual_promotions} manual promotion{s}")
        if self.paused_by_spec:
            parts.append("a resume (spec.paused)")
        parts.extend(f"unknown ({why})" for why in self.unknown)
        return " + ".join(parts)


# ---------------------------------------------------------------------------
# Analysis windows


def _resolve_count(count: int | str | None, args: Mapping[str, str]) -> tuple[int | None, str | None]:
    """The number of measurements, with `{{args.NAME}}` resolved; (None, why) when unknown."""
    if count is None or isinstance(count, int):
        return count, None
    try:
        text = render_query(count, args, escape="none").strip()
    except ArgumentError as exc:
        return None, f"count {count!r}: {exc}"
    if not text.isdigit():
        return None, f"count {count!r} is not a number"
    return int(text), None


def metric_window(metric: Metric, args: Mapping[str, str] | None = None) -> tuple[float | None, str | None]:
    """(seconds, None) for a metric's window, or (None, why) when it has no end or cannot be known.

    >>> from tidegate.api.analysis import Metric
    >>> m = Metric.model_validate({"name": "m", "interval": "30s", "count": 5, "initialDelay": "10s"})
    >>> metric_window(m)
    (130.0, None)
    """
    try:
        given = args or {}
        delay = (
            render_query(str(metric.initial_delay), given, escape="none") if metric.initial_delay else None
        )
        every = (
            render_query(str(metric.interval), given, escape="none") if metric.interval is not None else None
        )
        initial = parse_duration(delay) if delay is not None else 0.0
        interval = parse_duration(every) if every is not None else None
    except (DurationError, ArgumentError) as exc:
        return None, f"metric {metric.name}: {exc}"
    count, why = _resolve_count(metric.count, args or {})
    if why is not None:
        return None, f"metric {metric.name}: {why}"
    if interval is None:
        return initial, None  # measured once
    if count is None:
        return (
            None,
            f"metric {metric.name} measures every {format_duration(interval)} until stopped (no count)",
        )
    return initial + interval * max(count - 1, 0), None


def _template_args(spec: AnalysisTemplateSpec, analysis: RolloutAnalysis) -> dict[str, str]:
    values = {a.name: a.value for a in spec.args if a.value is not None}
    values.update({a.name: a.value for a in analysis.args if a.value is not None})
    return values


def analysis_window(
    analysis: RolloutAnalysis, templates: Mapping[str, AnalysisTemplateSpec]
) -> AnalysisWindow:
    """The window of a run of these templates: its longest metric."""
    names = tuple(t.template_name for t in analysis.templates)
    longest: tuple[float, str] | None = None
    for ref in analysis.templates:
        spec = templates.get(template_key(ref.template_name, ref.cluster_scope))
        if spec is None:
            kind = "ClusterAnalysisTemplate" if ref.cluster_scope else "AnalysisTemplate"
            return AnalysisWindow(names, None, unknown_because=f"{kind} {ref.template_name} not given")
        args = _template_args(spec, analysis)
        for metric in spec.metrics:
            seconds, why = metric_window(metric, args)
            if seconds is None:
                return AnalysisWindow(names, None, unknown_because=why)
            if longest is None or seconds > longest[0]:
                longest = (seconds, metric.name)
    if longest is None:  # pragma: no cover - a template has at least one metric
        return AnalysisWindow(names, 0.0)
    return AnalysisWindow(names, longest[0], longest_metric=longest[1])


# ---------------------------------------------------------------------------
# Canary


def _describe_step(step: CanaryStep) -> str:
    if step.set_weight is not None:
        return f"setWeight {step.set_weight}"
    if step.pause is not None:
        if step.pause.duration is None:
            return "pause (waits for promote)"
        return f"pause {step.pause.duration}"
    if step.set_canary_scale is not None:
        scale = step.set_canary_scale
        if scale.replicas is not None:
            return f"setCanaryScale replicas={scale.replicas}"
        if scale.weight is not None:
            return f"setCanaryScale weight={scale.weight}"
        return "setCanaryScale matchTrafficWeight"
    if step.set_header_route is not None:
        route = step.set_header_route
        if not route.match:
            return f"setHeaderRoute {route.name} (removed)"
        matches = []
        for m in route.match:
            condition = m.condition()
            if condition is None:
                continue
            where, name, hv = condition
            name = f"?{name}" if where == "queryParam" else name
            if hv.exact is not None:
                matches.append(f"{name}={hv.exact}")
            elif hv.prefix is not None:
                matches.append(f"{name}^={hv.prefix}")
            else:
                matches.append(f"{name}~={hv.regex}")
        return f"setHeaderRoute {route.name} ({', '.join(matches)})"
    if step.analysis is not None:
        return "analysis " + ", ".join(t.template_name for t in step.analysis.templates)
    return "(no action)"


def _kind(step: CanaryStep) -> RowKind:
    if step.set_weight is not None:
        return "setWeight"
    if step.pause is not None:
        return "pause"
    if step.set_canary_scale is not None:
        return "setCanaryScale"
    if step.set_header_route is not None:
        return "setHeaderRoute"
    return "analysis"


def _router(canary: CanaryStrategy) -> str | None:
    routing = canary.traffic_routing
    return routing.router() if routing is not None else None


class _BasicCanary:
    """Pod counts without a traffic router, by running the planner's arithmetic pass by pass.

    Each pass the planner picks targets from what is available; here pods are ready at
    once, so the passes converge in a few rounds. The peak is the most pods running at
    one time on the way (maxSurge at work).
    """

    def __init__(self, rollout: Rollout, canary: CanaryStrategy) -> None:
        self.rollout = rollout
        self.canary = canary
        self.replicas = rollout.spec.desired_replicas
        self.canary_pods = 0
        self.stable_pods = self.replicas

    def _counts(self, weight: int) -> tuple[int, int]:
        def rs(pod_hash: str, replicas: int) -> ReplicaSetInfo:
            return ReplicaSetInfo(
                name=pod_hash, pod_hash=pod_hash, revision=1, replicas=replicas,
                status_replicas=replicas, ready=replicas, available=replicas,
            )  # fmt: skip

        obs = ObservedState(
            rollout=self.rollout,
            replica_sets=(rs("stable", self.stable_pods), rs("canary", self.canary_pods)),
            services={},
            router=RouterState(kind="none"),
            now=_EPOCH,
        )
        return _basic_canary_counts(
            _Pass(obs=obs, status=RolloutStatus()), self.canary, weight, "canary", "stable", self.replicas
        )

    def move_to(self, weight: int, scale: int | None) -> int:
        """Converge on a step's counts; returns the peak number of pods on the way."""
        peak = self.canary_pods + self.stable_pods
        for _ in range(4 * self.replicas + 8):
            canary_target, stable_target = self._counts(weight)
            if scale is not None:
                canary_target = scale
            if (canary_target, stable_target) == (self.canary_pods, self.stable_pods):
                break
            self.canary_pods, self.stable_pods = canary_target, stable_target
            peak = max(peak, self.canary_pods + self.stable_pods)
        return peak


_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # any time: the arithmetic does not read the clock


def _simulate_canary(
    rollout: Rollout, canary: CanaryStrategy, templates: Mapping[str, AnalysisTemplateSpec]
) -> Timeline:
    replicas = rollout.spec.desired_replicas
    steps = canary.steps
    router = _router(canary)
    basic = None if router else _BasicCanary(rollout, canary)
    rows: list[Row] = []
    notes: list[str] = []
    unknown: list[str] = []
    manual = 0
    t = 0.0
    if basic is not None:
        surge = percent_of(canary.max_surge, replicas, round_up=True)
        unavailable = percent_of(canary.max_unavailable, replicas, round_up=False)
        notes.append(
            "the weight is the canary's share of pods (maxSurge "
            f"{canary.max_surge} = {surge}, maxUnavailable {canary.max_unavailable} = {unavailable})"
        )
    starts: list[float] = []
    for i, step in enumerate(steps):
        weight = _weight_at(steps, i)
        top = max_weight(canary)
        scale = _canary_scale_at(steps, i, replicas, top)
        step_notes: list[str] = []
        if basic is None:
            canary_pods = scale if scale is not None else canary_replicas_for_weight(weight, replicas, top)
            stable_pods = replicas
            if canary.dynamic_stable_scale:
                # The planner keeps as many stable pods as the stable's share of traffic needs.
                stable_pods = canary_replicas_for_weight(top - weight, replicas, top)
        else:
            before = basic.canary_pods + basic.stable_pods
            peak = basic.move_to(weight, scale)
            canary_pods, stable_pods = basic.canary_pods, basic.stable_pods
            if peak > max(before, canary_pods + stable_pods):
                step_notes.append(f"up to {peak} pods during the change")
        wait: float | None = 0.0
        waits = False
        if step.pause is not None:
            if step.pause.duration is None:
                waits = True
                manual += 1
            else:
                try:
                    wait = parse_duration(step.pause.duration)
                except DurationError as exc:
                    wait = None
                    unknown.append(f"step {i + 1}: {exc}")
        elif step.analysis is not None:
            window = analysis_window(step.analysis, templates)
            wait = window.seconds
            step_notes.append(window.describe())
            if window.seconds is None:
                unknown.append(f"step {i + 1}: {window.unknown_because}")
        starts.append(t)
        rows.append(
            Row(
                kind=_kind(step),
                action=_describe_step(step),
                weight=weight,
                canary_pods=canary_pods,
                stable_pods=stable_pods,
                at=t,
                wait=wait,
                step=i + 1,
                waits_for_promote=waits,
                header_routes=tuple(h.name for h in _header_routes_at(steps, i)),
                notes=tuple(step_notes),
            )
        )
        t += wait or 0.0

    # After the last step the planner scales both versions to full size, moves all
    # traffic, makes the new version stable, then retires the old one.
    full = max_weight(canary)
    rows.append(Row("promote", "promote: all traffic to the new version", full, replicas, replicas, t))
    delay = canary.scale_down_delay()
    rows.append(
        Row(
            "scaleDown",
            "scale down the previous version",
            full,
            replicas,
            0,
            t + delay,
            notes=(f"scaleDownDelaySeconds {delay}",) if delay else (),
        )
    )

    background = None
    if canary.analysis is not None:
        starting = canary.analysis.starting_step or 0
        at = starts[starting] if starting < len(starts) else t
        window = analysis_window(canary.analysis, templates)
        background = BackgroundAnalysis(
            templates=tuple(ref.template_name for ref in canary.analysis.templates),
            starting_step=starting + 1,
            at=at,
            window=window,
        )
    return Timeline(
        name=rollout.metadata.name or "",
        strategy="canary",
        replicas=replicas,
        traffic_router=router,
        rows=tuple(rows),
        total=t,
        manual_promotions=manual,
        unknown=tuple(unknown),
        background=background,
        paused_by_spec=rollout.spec.paused,
        notes=tuple(notes),
    )


# ---------------------------------------------------------------------------
# Blue-green


def _simulate_blue_green(
    rollout: Rollout, bg: BlueGreenStrategy, templates: Mapping[str, AnalysisTemplateSpec]
) -> Timeline:
    replicas = rollout.spec.desired_replicas
    preview = bg.preview_replica_count or replicas
    rows: list[Row] = []
    unknown: list[str] = []
    manual = 0
    t = 0.0
    where = f" behind {bg.preview_service}" if bg.preview_service else ""
    pods = "pod" if preview == 1 else "pods"
    rows.append(Row("preview", f"preview: new version at {preview} {pods}{where}", 0, preview, replicas, t))

    def analysis_row(kind: RowKind, label: str, analysis: RolloutAnalysis, weight: int, new: int) -> Row:
        window = analysis_window(analysis, templates)
        if window.seconds is None:
            unknown.append(f"{label}: {window.unknown_because}")
        names = ", ".join(ref.template_name for ref in analysis.templates)
        return Row(
            kind,
            f"{label} {names}",
            weight,
            new,
            replicas,
            t,
            window.seconds,
            notes=(window.describe(),),
        )

    if bg.pre_promotion_analysis is not None:
        rows.append(
            analysis_row(
                "prePromotionAnalysis", "prePromotionAnalysis", bg.pre_promotion_analysis, 0, preview
            )
        )
        t += rows[-1].wait or 0.0
    if not bg.auto_promotion_enabled:
        manual += 1
        rows.append(
            Row("pause", "pause (waits for promote)", 0, preview, replicas, t, waits_for_promote=True)
        )
    elif bg.auto_promotion_seconds:
        seconds = float(bg.auto_promotion_seconds)
        rows.append(Row("autoPromotion", f"autoPromotionSeconds {bg.auto_promotion_seconds}", 0, preview,
                        replicas, t, seconds))  # fmt: skip
        t += seconds
    promote_notes = (
        (f"new version scaled from {preview} to {replicas} pods first",) if preview < replicas else ()
    )
    rows.append(
        Row("promote", f"promote: switch {bg.active_service} to the new version", 100, replicas, replicas, t,
            notes=promote_notes)
    )  # fmt: skip
    if bg.post_promotion_analysis is not None:
        rows.append(
            analysis_row(
                "postPromotionAnalysis", "postPromotionAnalysis", bg.post_promotion_analysis, 100, replicas
            )
        )
        t += rows[-1].wait or 0.0
    delay = bg.scale_down_delay_seconds
    rows.append(
        Row("scaleDown", "scale down the previous version", 100, replicas, 0, t + delay,
            notes=(f"scaleDownDelaySeconds {delay}",) if delay else ())
    )  # fmt: skip
    return Timeline(
        name=rollout.metadata.name or "",
        strategy="blueGreen",
        replicas=replicas,
        traffic_router=None,
        rows=tuple(rows),
        total=t,
        manual_promotions=manual,
        unknown=tuple(unknown),
        paused_by_spec=rollout.spec.paused,
    )


def simulate(rollout: Rollout, templates: Mapping[str, AnalysisTemplateSpec]) -> Timeline:
    """The minimum timeline of a Rollout's strategy (see the module's docstring).

    `templates` maps a template_key() to its spec: AnalysisTemplates by name,
    ClusterAnalysisTemplates by `ClusterAnalysisTemplate/<name>`.
    """
    strategy = rollout.spec.strategy
    if strategy.canary is not None:
        return _simulate_canary(rollout, strategy.canary, templates)
    if strategy.blue_green is not None:
        return _simulate_blue_green(rollout, strategy.blue_green, templates)
    raise ValueError("the Rollout has no strategy (canary or blueGreen)")

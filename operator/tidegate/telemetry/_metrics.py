"""Prometheus metrics of the operator itself.

Everything lives in one dedicated `CollectorRegistry` per `Telemetry` object (never the
process-global registry), so that tests and a second operator in the same process stay
isolated.

Label cardinality is bounded on purpose: per-Rollout series carry `namespace` and `name`
(plus `phase` or `strategy` where the value needs it), never pod names, hashes or
revisions. `forget()` drops every series of a deleted Rollout.

The per-Rollout gauges are not stored as prometheus_client gauges: a custom collector
renders them at scrape time from the last observation, which is how the time spent in
the current phase can be exact without a timer updating it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PHASES: tuple[str, ...] = ("Healthy", "Progressing", "Paused", "Degraded")
"""Rollout phases, as in `status.phase`; the only values the `phase` label takes."""

ANALYSIS_OUTCOMES: tuple[str, ...] = ("Successful", "Failed", "Error", "Inconclusive")
"""Terminal phases of an analysis metric; the only values counted as outcomes."""

RECONCILE_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_ROLLOUT_LABELS = ("namespace", "name")


@dataclass
class _RolloutState:
    phase: str
    phase_since: float
    step: int | None
    weight: float
    strategy: str


class Telemetry:
    """The operator's metrics, with the small API the controller calls.

    >>> t = Telemetry(process_metrics=False)
    >>> t.observe_rollout("shop", "web", phase="Progressing", step=1, weight=10, strategy="canary")
    >>> t.count_promotion("shop", "web")
    >>> t.forget("shop", "web")

    Thread-safe: kopf may run synchronous handlers in worker threads.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        process_metrics: bool = True,
    ) -> None:
        """`clock` returns epoch seconds (inject a fake one in tests); `process_metrics`
        adds the standard process_* and python_info series to the registry."""
        self.registry: CollectorRegistry = registry if registry is not None else CollectorRegistry()
        self._clock = clock
        self._lock = threading.Lock()
        self._rollouts: dict[tuple[str, str], _RolloutState] = {}
        self._outcome_labels: dict[tuple[str, str], set[tuple[str, str]]] = {}

        self._aborts = Counter(
            "tidegate_rollout_aborts",
            "Rollouts aborted (by analysis, deadline or a person).",
            _ROLLOUT_LABELS,
            registry=self.registry,
        )
        self._promotions = Counter(
            "tidegate_rollout_promotions",
            "Rollouts whose new revision became the stable one.",
            _ROLLOUT_LABELS,
            registry=self.registry,
        )
        self._analysis_outcomes = Counter(
            "tidegate_analysis_outcomes",
            "Analysis metrics that reached a terminal phase (Successful, Failed, Error, Inconclusive).",
            ("namespace", "rollout", "metric", "phase"),
            registry=self.registry,
        )
        self._reconcile = Histogram(
            "tidegate_reconcile_duration_seconds",
            "Duration of one reconcile pass of a Rollout (observe, plan, execute).",
            ("outcome",),
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self._api_errors = Counter(
            "tidegate_api_errors",
            "Failed Kubernetes API calls, by verb, resource and HTTP status code.",
            ("verb", "resource", "code"),
            registry=self.registry,
        )
        self.registry.register(_RolloutCollector(self))
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)

    # -- per-Rollout state -------------------------------------------------------------

    def observe_rollout(
        self,
        namespace: str,
        name: str,
        *,
        phase: str,
        step: int | None,
        weight: float,
        strategy: str,
        phase_since: float | datetime | None = None,
    ) -> None:
        """Record the Rollout's state after a reconcile pass.

        `phase` is one of `PHASES` (anything else raises ValueError: the label set is
        closed). `step` is the current step index, None when the strategy has no steps
        (no `tidegate_rollout_step` series then). `weight` is the percent of traffic on
        the new revision. `phase_since` is when the current phase began (epoch seconds or
        an aware datetime, e.g. the Ready condition's lastTransitionTime, so a restart of
        the operator does not reset it); without it the first observation of a phase
        starts its clock.
        """
        if phase not in PHASES:
            raise ValueError(f"unknown rollout phase {phase!r}; expected one of {', '.join(PHASES)}")
        if isinstance(phase_since, datetime):
            phase_since = phase_since.timestamp()
        key = (namespace, name)
        with self._lock:
            previous = self._rollouts.get(key)
            if phase_since is None:
                if previous is not None and previous.phase == phase:
                    phase_since = previous.phase_since
                else:
                    phase_since = self._clock()
            if previous is None:
                # Start the counters at zero so that increase() sees the first event.
                self._aborts.labels(namespace, name)
                self._promotions.labels(namespace, name)
            self._rollouts[key] = _RolloutState(
                phase=phase, phase_since=phase_since, step=step, weight=float(weight), strategy=strategy
            )

    def count_abort(self, namespace: str, name: str) -> None:
        """Count one abort of the Rollout (call once per abort, not once per pass)."""
        self._aborts.labels(namespace, name).inc()

    def count_promotion(self, namespace: str, name: str) -> None:
        """Count one promotion: the new revision became stable."""
        self._promotions.labels(namespace, name).inc()

    def count_analysis_outcome(self, namespace: str, name: str, metric: str, phase: str) -> None:
        """Count one analysis metric reaching `phase` (one of `ANALYSIS_OUTCOMES`)."""
        if phase not in ANALYSIS_OUTCOMES:
            raise ValueError(
                f"unknown analysis outcome {phase!r}; expected one of {', '.join(ANALYSIS_OUTCOMES)}"
            )
        with self._lock:
            self._outcome_labels.setdefault((namespace, name), set()).add((metric, phase))
            self._analysis_outcomes.labels(namespace, name, metric, phase).inc()

    def forget(self, namespace: str, name: str) -> None:
        """Drop every series of a deleted Rollout. Forgetting an unknown Rollout is a no-op."""
        key = (namespace, name)
        with self._lock:
            self._rollouts.pop(key, None)
            for counter in (self._aborts, self._promotions):
                _remove_quietly(counter, namespace, name)
            for metric, phase in self._outcome_labels.pop(key, set()):
                _remove_quietly(self._analysis_outcomes, namespace, name, metric, phase)

    # -- operator-wide ---------------------------------------------------------------

    @contextmanager
    def time_reconcile(self) -> Iterator[None]:
        """Time the enclosed reconcile pass; `outcome` is `error` when it raised.

        Works around `await` too: ``with telemetry.time_reconcile(): await reconcile()``.
        """
        start = time.perf_counter()
        outcome = "error"
        try:
            yield
            outcome = "success"
        finally:
            self._reconcile.labels(outcome).observe(time.perf_counter() - start)

    def count_api_error(self, verb: str, resource: str, code: int | str) -> None:
        """Count a failed API call, e.g. ``count_api_error("patch", "virtualservices", 409)``.

        Use 0 (or "none") for failures without an HTTP status (timeouts, refused connections).
        """
        self._api_errors.labels(verb, resource, str(code)).inc()

    # -- for the collector -----------------------------------------------------------

    def _snapshot(self) -> tuple[float, list[tuple[tuple[str, str], _RolloutState]]]:
        with self._lock:
            return self._clock(), sorted((k, _RolloutState(**vars(v))) for k, v in self._rollouts.items())


def _remove_quietly(metric: Counter, *labels: str) -> None:
    with suppress(KeyError):  # never observed: nothing to remove
        metric.remove(*labels)


class _RolloutCollector(Collector):
    """Renders the per-Rollout gauges from `Telemetry`'s last observations."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    def describe(self) -> Iterable[Metric]:
        # Names only: lets the registry detect duplicates without calling collect().
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        now, rollouts = self._telemetry._snapshot()
        info, phase, phase_seconds, step, weight = self._families()
        for (namespace, name), state in rollouts:
            info.add_metric([namespace, name, state.strategy], 1)
            for candidate in PHASES:
                phase.add_metric([namespace, name, candidate], 1 if candidate == state.phase else 0)
            phase_seconds.add_metric([namespace, name, state.phase], max(0.0, now - state.phase_since))
            if state.step is not None:
                step.add_metric([namespace, name], state.step)
            weight.add_metric([namespace, name], state.weight)
        return [info, phase, phase_seconds, step, weight]

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily
    ]:
        return (
            GaugeMetricFamily(
                "tidegate_rollout_info",
                "Always 1; carries the Rollout's strategy (canary or blueGreen).",
                labels=[*_ROLLOUT_LABELS, "strategy"],
            ),
            GaugeMetricFamily(
                "tidegate_rollout_phase",
                "1 for the Rollout's current phase, 0 for the others.",
                labels=[*_ROLLOUT_LABELS, "phase"],
            ),
            GaugeMetricFamily(
                "tidegate_rollout_phase_seconds",
                "Seconds the Rollout has spent in its current phase (label phase).",
                labels=[*_ROLLOUT_LABELS, "phase"],
            ),
            GaugeMetricFamily(
                "tidegate_rollout_step",
                "Index of the Rollout's current canary step.",
                labels=list(_ROLLOUT_LABELS),
            ),
            GaugeMetricFamily(
                "tidegate_rollout_canary_weight",
                "Percent of traffic sent to the new revision.",
                labels=list(_ROLLOUT_LABELS),
            ),
        )

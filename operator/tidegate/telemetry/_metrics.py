"""Prometheus metrics of the operator itself.

Everything lives in one dedicated `CollectorRegistry` per `Telemetry` object (never the
process-global registry), so that tests and a second operator in the same process stay
isolated.

Label cardinality is bounded on purpose: per-Rollout series carry `namespace` and `rollout`
(the one label naming a Rollout, on every series about one), plus `phase`, `strategy`,
`state`, `kind` or `metric` where the value needs it; never pod names, hashes or
revisions. AnalysisRun series are kept for the latest run of each kind (step, background,
prePromotion, postPromotion) of a Rollout, not per run name, for the same reason.
`forget()` drops every series of a deleted Rollout.

The per-Rollout gauges are not stored as prometheus_client gauges: a custom collector
renders them at scrape time from the last observation, which is how the time spent in
the current phase can be exact without a timer updating it.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tidegate import __version__

PHASES: tuple[str, ...] = ("Healthy", "Progressing", "Paused", "Degraded")
"""Rollout phases, as in `status.phase`; the only values the `phase` label takes."""

ANALYSIS_OUTCOMES: tuple[str, ...] = ("Successful", "Failed", "Error", "Inconclusive")
"""Terminal phases of an analysis metric; the only values counted as outcomes."""

ANALYSIS_PHASES: tuple[str, ...] = ("Pending", "Running", *ANALYSIS_OUTCOMES)
"""Phases of an AnalysisRun and of each of its metrics, as in their status."""

REPLICA_STATES: tuple[str, ...] = ("desired", "current", "updated", "ready", "available")
"""The `state` label of tidegate_rollout_replicas: spec.replicas, then status.replicas & co."""

RECONCILE_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
QUEUE_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0)

_ROLLOUT_LABELS = ("namespace", "rollout")


@dataclass
class _RolloutState:
    phase: str
    phase_since: float
    step: int | None
    weight: float
    strategy: str
    steps: int | None = None
    replicas: dict[str, int] | None = None


@dataclass
class _RunState:
    name: str
    phase: str
    metrics: dict[str, str]


class Telemetry:
    """The operator's metrics, with the small API the controller calls.

    >>> t = Telemetry(process_metrics=False)
    >>> t.observe_rollout("shop", "web", phase="Progressing", step=1, weight=10, strategy="canary")
    >>> t.observe_analysis_run("shop", "web", "step", "web-5d8f-s1-0", "Running", {"success-rate": "Running"})
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
        self._runs: dict[tuple[str, str], dict[str, _RunState]] = {}
        self._outcome_labels: dict[tuple[str, str], set[tuple[str, str]]] = {}

        build = Gauge(
            "tidegate_build_info",
            "Always 1; the operator's version and the Python it runs on.",
            ("version", "python_version"),
            registry=self.registry,
        )
        build.labels(__version__, platform.python_version()).set(1)

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
        # Argo Rollouts' notification_send_success / notification_send_error / notification_send,
        # with Tidegate's rollout label; `service` is the name a subscription gives (slack, a webhook's name).
        self._notifications_sent = Counter(
            "tidegate_notifications_sent",
            "Notifications delivered (HTTP 2xx from the service).",
            (*_ROLLOUT_LABELS, "service", "trigger"),
            registry=self.registry,
        )
        self._notification_failures = Counter(
            "tidegate_notification_failures",
            "Notification delivery attempts that failed (each attempt; `final` when given up).",
            (*_ROLLOUT_LABELS, "service", "trigger", "final"),
            registry=self.registry,
        )
        self._notification_seconds = Histogram(
            "tidegate_notification_send_seconds",
            "Time of one notification delivery attempt.",
            ("service",),
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self._notification_labels: dict[tuple[str, str], set[tuple[str, ...]]] = {}
        self._analysis_outcomes = Counter(
            "tidegate_analysis_outcomes",
            "Analysis metrics that reached a terminal phase (Successful, Failed, Error, Inconclusive).",
            (*_ROLLOUT_LABELS, "metric", "phase"),
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
        self._api_requests = Counter(
            "tidegate_api_requests",
            "Kubernetes API requests of the operator, by verb, resource and HTTP status code.",
            ("verb", "resource", "code"),
            registry=self.registry,
        )
        self._conflicts = Counter(
            "tidegate_write_conflicts",
            "Writes that met a newer object (409, or a failed resourceVersion test) and were planned again.",
            ("resource",),
            registry=self.registry,
        )
        self._leader = Gauge(
            "tidegate_leader",
            "1 while this process holds the leader Lease and reconciles; 0 on a standby.",
            registry=self.registry,
        )
        # client-go's workqueue metrics (workqueue_depth, _adds_total, _queue_duration_seconds).
        self._queue_depth = Gauge(
            "tidegate_workqueue_depth",
            "Rollouts waiting in the reconcile queue for a worker.",
            registry=self.registry,
        )
        self._queue_adds = Counter(
            "tidegate_workqueue_adds",
            "Rollouts put in the reconcile queue (a key already waiting is not added twice).",
            registry=self.registry,
        )
        self._queue_latency = Histogram(
            "tidegate_workqueue_queue_duration_seconds",
            "How long a Rollout waited in the reconcile queue before a worker took it.",
            buckets=QUEUE_BUCKETS,
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
        steps: int | None = None,
        replicas: dict[str, int] | None = None,
    ) -> None:
        """Record the Rollout's state after a reconcile pass.

        `phase` is one of `PHASES` (anything else raises ValueError: the label set is
        closed). `step` is the current step counted from 1, as the CLI shows it (n of n
        once every step is done), None when the strategy has no steps (no
        `tidegate_rollout_step` series then); `steps` is how many there are.
        `replicas` maps `REPLICA_STATES` to counts. `weight` is the percent of traffic on
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
                phase=phase,
                phase_since=phase_since,
                step=step,
                weight=float(weight),
                strategy=strategy,
                steps=steps,
                replicas=dict(replicas) if replicas else None,
            )

    def observe_analysis_run(
        self, namespace: str, rollout: str, kind: str, run: str, phase: str, metrics: dict[str, str]
    ) -> None:
        """Record the phase of a Rollout's latest AnalysisRun of `kind` and of its metrics.

        A later run of the same kind replaces the earlier one's series. Phases outside
        `ANALYSIS_PHASES` raise ValueError.
        """
        for value in (phase, *metrics.values()):
            if value not in ANALYSIS_PHASES:
                raise ValueError(
                    f"unknown analysis phase {value!r}; expected one of {', '.join(ANALYSIS_PHASES)}"
                )
        with self._lock:
            self._runs.setdefault((namespace, rollout), {})[kind] = _RunState(run, phase, dict(metrics))

    def forget_analysis_run(self, namespace: str, rollout: str, run: str) -> None:
        """The run was deleted: drop its series, if it is the latest of its kind."""
        with self._lock:
            runs = self._runs.get((namespace, rollout), {})
            for kind, state in list(runs.items()):
                if state.name == run:
                    del runs[kind]

    def count_abort(self, namespace: str, name: str) -> None:
        """Count one abort of the Rollout (call once per abort, not once per pass)."""
        self._aborts.labels(namespace, name).inc()

    def count_promotion(self, namespace: str, name: str) -> None:
        """Count one promotion: the new revision became stable."""
        self._promotions.labels(namespace, name).inc()

    def count_notification(
        self, namespace: str, name: str, service: str, trigger: str, seconds: float, failed: str | None
    ) -> None:
        """One delivery attempt: `failed` None when delivered, else "true" (given up) or "false" (retried)."""
        with self._lock:
            self._notification_seconds.labels(service).observe(seconds)
            if failed is None:
                self._notification_labels.setdefault((namespace, name), set()).add((service, trigger))
                self._notifications_sent.labels(namespace, name, service, trigger).inc()
            else:
                self._notification_labels.setdefault((namespace, name), set()).add((service, trigger, failed))
                self._notification_failures.labels(namespace, name, service, trigger, failed).inc()

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
            self._runs.pop(key, None)
            for counter in (self._aborts, self._promotions):
                _remove_quietly(counter, namespace, name)
            for labels in self._notification_labels.pop(key, set()):
                counter = self._notifications_sent if len(labels) == 2 else self._notification_failures
                _remove_quietly(counter, namespace, name, *labels)
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

    def count_api_request(self, verb: str, resource: str, code: int) -> None:
        """Count one request of the operator's API client (`k8s.client.Clients.load(on_request=...)`)."""
        self._api_requests.labels(verb, resource, str(code)).inc()

    def queue_added(self, depth: int) -> None:
        """A key went into the reconcile queue, which now holds `depth` keys."""
        self._queue_adds.inc()
        self._queue_depth.set(depth)

    def queue_taken(self, waited: float, depth: int) -> None:
        """A worker took a key that waited `waited` seconds; `depth` keys are left."""
        self._queue_latency.observe(max(0.0, waited))
        self._queue_depth.set(depth)

    def count_conflicts(self, resource: str, n: int = 1) -> None:
        """Count writes retried because the object changed under them: conflicts, not errors."""
        if n:
            self._conflicts.labels(resource).inc(n)

    def set_leader(self, leading: bool) -> None:
        self._leader.set(1 if leading else 0)

    # -- for the collector -----------------------------------------------------------

    def _snapshot(
        self,
    ) -> tuple[
        float, list[tuple[tuple[str, str], _RolloutState]], list[tuple[tuple[str, str, str], _RunState]]
    ]:
        with self._lock:
            rollouts = sorted(((k, _RolloutState(**vars(v))) for k, v in self._rollouts.items()), key=_first)
            runs = []
            for (namespace, rollout), kinds in self._runs.items():
                for kind, st in kinds.items():
                    runs.append(((namespace, rollout, kind), _RunState(st.name, st.phase, dict(st.metrics))))
            runs.sort(key=_first)
            return self._clock(), rollouts, runs


def _first(item: tuple[Any, Any]) -> Any:
    return item[0]


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
        now, rollouts, runs = self._telemetry._snapshot()
        info, phase, phase_seconds, step, steps, weight, replicas, run_phase, metric_phase = self._families()
        for (namespace, name), state in rollouts:
            info.add_metric([namespace, name, state.strategy], 1)
            for candidate in PHASES:
                phase.add_metric([namespace, name, candidate], 1 if candidate == state.phase else 0)
            phase_seconds.add_metric([namespace, name, state.phase], max(0.0, now - state.phase_since))
            if state.step is not None:
                step.add_metric([namespace, name], state.step)
            if state.steps is not None:
                steps.add_metric([namespace, name], state.steps)
            weight.add_metric([namespace, name], state.weight)
            for replica_state in REPLICA_STATES:
                if state.replicas is not None and replica_state in state.replicas:
                    replicas.add_metric([namespace, name, replica_state], state.replicas[replica_state])
        for (namespace, name, kind), run in runs:
            for candidate in ANALYSIS_PHASES:
                run_phase.add_metric([namespace, name, kind, candidate], 1 if candidate == run.phase else 0)
            for metric, metric_state in sorted(run.metrics.items()):
                for candidate in ANALYSIS_PHASES:
                    metric_phase.add_metric(
                        [namespace, name, kind, metric, candidate], 1 if candidate == metric_state else 0
                    )
        return [info, phase, phase_seconds, step, steps, weight, replicas, run_phase, metric_phase]

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        labels = list(_ROLLOUT_LABELS)
        return (
            GaugeMetricFamily(
                "tidegate_rollout_info",
                "Always 1; carries the Rollout's strategy (canary or blueGreen).",
                labels=[*labels, "strategy"],
            ),
            GaugeMetricFamily(
                "tidegate_rollout_phase",
                "1 for the Rollout's current phase, 0 for the others.",
                labels=[*labels, "phase"],
            ),
            GaugeMetricFamily(
                "tidegate_rollout_phase_seconds",
                "Seconds the Rollout has spent in its current phase (label phase).",
                labels=[*labels, "phase"],
            ),
            GaugeMetricFamily(
                "tidegate_rollout_step",
                "The Rollout's current canary step, from 1 as the CLI shows it (n once all n are done).",
                labels=labels,
            ),
            GaugeMetricFamily(
                "tidegate_rollout_steps",
                "How many canary steps the Rollout has.",
                labels=labels,
            ),
            GaugeMetricFamily(
                "tidegate_rollout_canary_weight",
                "Percent of traffic sent to the new revision.",
                labels=labels,
            ),
            GaugeMetricFamily(
                "tidegate_rollout_replicas",
                "The Rollout's pods by state: desired (spec.replicas), current, updated, ready, available.",
                labels=[*labels, "state"],
            ),
            GaugeMetricFamily(
                "tidegate_analysis_run_phase",
                "1 for the phase of the Rollout's latest AnalysisRun of each kind, 0 for the others.",
                labels=[*labels, "kind", "phase"],
            ),
            GaugeMetricFamily(
                "tidegate_analysis_run_metric_phase",
                "1 for the phase of each metric of the Rollout's latest AnalysisRun of each kind.",
                labels=[*labels, "kind", "metric", "phase"],
            ),
        )

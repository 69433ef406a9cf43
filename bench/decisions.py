"""Decision quality of canary judges, decided by the operator's own AnalysisRun code.

    .venv/bin/python bench/decisions.py [--json] [--trials N] [--seed S] [--classes A,B]

Every trial simulates one canary analysis and runs it through the functions the controller
runs (`k8s.analysis.step_analysis_run` -> `core.analysis_run`): `begin_step` (start,
conclude, which metrics are due), then per due metric the queries `judge_queries` names,
answered by a simulated Prometheus on the span `judged_window` gives, turned into judge data
by `judge_data` and judged by `judged_measurement` (thresholds: the provider's own
`_instant_result`, then `measurement_of`), then `finish_step` (record, conclude, stop as
soon as the outcome is settled) and `next_due` for the next step's time. Nothing here
decides; `tests/unit/test_bench_decisions.py` checks that step_analysis_run and this
driver give the same measurements and verdicts on the same data.

The service: stable 900 requests/s, canary 100 requests/s (setWeight 10 of 1000 requests/s);
requests per 10 s step Poisson, errors binomial (baseline 0.5%), latencies lognormal
(median 80 ms, sigma 0.5, p99 ~ 256 ms), recorded in a histogram with bounds 5% apart.
Each trial has its own baseline (day-to-day), a slow drift shared by both versions, step
noise shared by both, and a little noise of each version's own (overdispersion the
sequential tests do not model). The analysis: 2 metrics (errors, latency), initialDelay
60 s, interval 60 s, count 5, i.e. looks at 1..5 minutes.

Classes: healthy A/A; error rate x2; p99 +30% (tail only, median unchanged); latency +10%
(whole distribution); very little canary traffic (0.2 requests/s); and one the judges
were not tuned on: a slow leak, the canary's error rate rising linearly from x1 to x3.

Judges (AnalysisTemplates), on the SAME streams:

- threshold: success rate over the canary's last minute `result[0] >= 0.99` and p99 over
  the last minute `result[0] < 0.3`; failureLimit 0 or 1; Tidegate's noDataPolicy
  Inconclusive (an empty window pauses), and noDataPolicy Failed, which is what Argo's
  `NaN >= 0.99` (false: a failed measurement) does;
- Mann-Whitney (alpha spending over count 5): per-step error ratios and p99s (10 s steps,
  steps with fewer than 20 requests left out), confidence 0.99, tolerance 5%;
- sequential: Counts (5xx against requests, per 10 s step) and Distribution (the histogram's
  buckets, p50 and p99), confidence 0.99, tolerance 5%.

Rate = share of trials the run aborted (Failed): detection for regressions, false aborts for
healthy canaries, with a 95% Wilson interval; rate_within_two: aborted by the second look;
median_intervals / median_seconds: when the run reached its verdict (abort, pause or pass).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

try:
    from tidegate.api.analysis import AnalysisRunSpec, AnalysisRunStatus, Measurement, Metric
    from tidegate.core import analysis_run as runs
    from tidegate.core.assessment import compile_conditions
    from tidegate.metrics.prometheus import PrometheusMetricProvider
except ImportError:  # run from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
    from tidegate.api.analysis import AnalysisRunSpec, AnalysisRunStatus, Measurement, Metric
    from tidegate.core import analysis_run as runs
    from tidegate.core.assessment import compile_conditions
    from tidegate.metrics.prometheus import PrometheusMetricProvider

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

Z99 = float(ndtri(0.99))
T0 = datetime(2026, 1, 1, tzinfo=UTC)
HASHES = {"Latest": "canary", "Stable": "stable"}

CLASSES: tuple[str, ...] = (
    "healthy A/A",
    "error rate x2",
    "p99 latency +30%",
    "latency +10%",
    "low traffic",
    "slow leak to x3",
)
HEALTHY: frozenset[str] = frozenset({"healthy A/A", "low traffic"})
UNTUNED: frozenset[str] = frozenset({"slow leak to x3"})


@dataclass(frozen=True)
class World:
    """What the simulated service looks like; the same for every judge."""

    intervals: int = 5
    interval_s: float = 60.0
    step_s: float = 10.0
    stable_rps: float = 900.0
    canary_rps: float = 100.0
    low_canary_rps: float = 0.2
    error_rate: float = 0.005
    error_day_sd: float = 0.25
    latency_median_s: float = 0.080
    latency_sigma: float = 0.5
    latency_day_sd: float = 0.08
    drift_sd: float = 0.10
    shared_step_sd_latency: float = 0.03
    shared_step_sd_error: float = 0.20
    own_step_sd_latency: float = 0.02
    own_step_sd_error: float = 0.10
    bucket_factor: float = 1.05
    bucket_low_s: float = 0.005
    bucket_high_s: float = 10.0

    @property
    def steps_per_interval(self) -> int:
        return round(self.interval_s / self.step_s)

    @property
    def steps(self) -> int:
        return self.intervals * self.steps_per_interval

    @property
    def bounds(self) -> FloatArray:
        count = math.ceil(math.log(self.bucket_high_s / self.bucket_low_s) / math.log(self.bucket_factor)) + 1
        return np.asarray(self.bucket_low_s * self.bucket_factor ** np.arange(count), dtype=np.float64)


@dataclass(frozen=True)
class Regression:
    error_factor: float = 1.0
    error_factor_end: float | None = None
    """The error factor at the end of the analysis, rising linearly from error_factor."""
    latency_factor: float = 1.0
    p99_factor: float = 1.0
    """Widens the tail so that p99 grows by this factor, median unchanged."""
    low_traffic: bool = False


REGRESSIONS: dict[str, Regression] = {
    "healthy A/A": Regression(),
    "error rate x2": Regression(error_factor=2.0),
    "p99 latency +30%": Regression(p99_factor=1.3),
    "latency +10%": Regression(latency_factor=1.1),
    "low traffic": Regression(low_traffic=True),
    "slow leak to x3": Regression(error_factor=1.0, error_factor_end=3.0),
}


@dataclass(frozen=True)
class Version:
    """One version's simulated steps, (trials, steps) arrays, and its histogram."""

    requests: FloatArray
    errors: FloatArray
    p99: FloatArray
    buckets: np.ndarray[Any, np.dtype[np.int64]]
    """(trials, steps, bounds): cumulative counts at or below each bound."""


@dataclass(frozen=True)
class Streams:
    canary: Version
    stable: Version
    bounds: FloatArray
    world: World

    @property
    def trials(self) -> int:
        return int(self.canary.requests.shape[0])


def sample_quantile(
    rng: np.random.Generator, n: FloatArray, q: float, mu: FloatArray, sigma: FloatArray
) -> FloatArray:
    """The linear-interpolated q-quantile of n lognormal(mu, sigma) draws, drawn exactly; NaN for n == 0.

    The k-th smallest of n uniforms is Beta(k, n - k + 1); the next one lies above it as
    the smallest of the remaining n - k uniforms. No need to draw every request.
    """
    size = np.maximum(n, 1.0)
    h = (size - 1.0) * q
    below = np.floor(h)
    frac = h - below
    u1 = rng.beta(below + 1.0, size - below)
    rest = size - below - 1.0
    u2 = np.where(rest > 0, u1 + (1.0 - u1) * rng.beta(1.0, np.maximum(rest, 1.0)), u1)
    x1 = np.exp(mu + sigma * ndtri(u1))
    x2 = np.exp(mu + sigma * ndtri(u2))
    return np.where(n > 0, x1 + frac * (x2 - x1), np.nan)


def generate(world: World, regression: Regression, trials: int, rng: np.random.Generator) -> Streams:
    """Simulate `trials` analyses of one class, vectorised over trials and steps."""
    steps = world.steps
    shape = (trials, steps)
    t = (np.arange(steps) + 0.5) / steps
    drift = rng.normal(0.0, world.drift_sd, (trials, 1)) * (t - 0.5)
    day_error = rng.normal(0.0, world.error_day_sd, (trials, 1))
    day_latency = rng.normal(0.0, world.latency_day_sd, (trials, 1))
    shared_error = rng.normal(0.0, world.shared_step_sd_error, shape)
    shared_latency = rng.normal(0.0, world.shared_step_sd_latency, shape)
    base_log_error = math.log(world.error_rate) + day_error + drift + shared_error
    base_mu = math.log(world.latency_median_s) + day_latency + drift + shared_latency
    bounds = world.bounds

    def version(rps: float, error_factor: FloatArray, latency_factor: float, sigma: float) -> Version:
        requests = rng.poisson(rps * world.step_s, shape).astype(np.float64)
        log_error = base_log_error + np.log(error_factor) + rng.normal(0.0, world.own_step_sd_error, shape)
        errors = rng.binomial(requests.astype(np.int64), np.minimum(np.exp(log_error), 1.0)).astype(
            np.float64
        )
        mu = base_mu + math.log(latency_factor) + rng.normal(0.0, world.own_step_sd_latency, shape)
        p99 = sample_quantile(rng, requests, 0.99, mu, np.full(shape, sigma))
        cdf = ndtr((np.log(bounds)[None, None, :] - mu[..., None]) / sigma)
        cells = np.diff(np.concatenate([np.zeros((*shape, 1)), cdf, np.ones((*shape, 1))], axis=2), axis=2)
        counts = rng.multinomial(requests.astype(np.int64), np.clip(cells, 0.0, None))
        return Version(requests, errors, p99, np.cumsum(counts[..., :-1], axis=2))

    canary_rps = world.low_canary_rps if regression.low_traffic else world.canary_rps
    end = regression.error_factor_end if regression.error_factor_end is not None else regression.error_factor
    factor = np.broadcast_to(regression.error_factor + (end - regression.error_factor) * t, shape)
    canary_sigma = world.latency_sigma + math.log(regression.p99_factor) / Z99
    canary = version(canary_rps, np.asarray(factor), regression.latency_factor, canary_sigma)
    stable = version(world.stable_rps, np.ones(shape), 1.0, world.latency_sigma)
    return Streams(canary, stable, bounds, world)


# --- the simulated Prometheus ------------------------------------------------------------

Series = list[tuple[dict[str, str], list[tuple[float, float]]]]

ERRORS_Q = 'sum(increase(http_requests_total{code=~"5..",rollouts_pod_template_hash="{{hash}}"}[10s]))'
REQUESTS_Q = 'sum(increase(http_requests_total{rollouts_pod_template_hash="{{hash}}"}[10s]))'
BUCKETS_Q = (
    'sum by (le) (increase(http_request_duration_seconds_bucket{rollouts_pod_template_hash="{{hash}}"}[10s]))'
)
THIN = ' and sum(increase(http_requests_total{rollouts_pod_template_hash="{{hash}}"}[10s])) >= 20'
RATIO_Q = f"({ERRORS_Q} / {REQUESTS_Q}){THIN}"
P99_Q = f"histogram_quantile(0.99, {BUCKETS_Q}){THIN}"
SUCCESS_1M_Q = "canary success rate over the last minute"
P99_1M_Q = "canary p99 over the last minute"


class SimulatedPrometheus:
    """Answers the bench templates' queries from one trial's streams, as Prometheus would."""

    def __init__(self, streams: Streams, trial: int) -> None:
        self.streams = streams
        self.trial = trial

    def _steps(self, start: datetime, end: datetime) -> Iterator[tuple[int, float]]:
        step = self.streams.world.step_s
        moment = start
        while moment <= end:
            index = round((moment - T0).total_seconds() / step) - 1
            if 0 <= index < self.streams.world.steps:
                yield index, moment.timestamp()
            moment += timedelta(seconds=step)

    def range(self, query: str, start: datetime, end: datetime) -> Series:
        """A range query over the grid [start, end]; `{{hash}}` was `canary` or `stable`."""
        version = self.streams.canary if '"canary"' in query else self.streams.stable
        row = self.trial
        generic = query.replace('"canary"', '"{{hash}}"').replace('"stable"', '"{{hash}}"')
        points = list(self._steps(start, end))
        if generic == ERRORS_Q:
            return [({}, [(t, float(version.errors[row, i])) for i, t in points])]
        if generic == REQUESTS_Q:
            return [({}, [(t, float(version.requests[row, i])) for i, t in points])]
        if generic == BUCKETS_Q:
            series: Series = [
                ({"le": repr(float(bound))}, [(t, float(version.buckets[row, i, b])) for i, t in points])
                for b, bound in enumerate(self.streams.bounds)
            ]
            series.append(({"le": "+Inf"}, [(t, float(version.requests[row, i])) for i, t in points]))
            return series
        thick = [(i, t) for i, t in points if version.requests[row, i] >= 20]
        if generic == RATIO_Q:
            return [({}, [(t, float(version.errors[row, i] / version.requests[row, i])) for i, t in thick])]
        if generic == P99_Q:
            return [({}, [(t, float(version.p99[row, i])) for i, t in thick])]
        raise ValueError(f"the simulated Prometheus does not know {query!r}")

    def instant(self, query: str, now: datetime) -> dict[str, Any]:
        """An instant query's `data`: the canary's last minute as one window."""
        world = self.streams.world
        last = round((now - T0).total_seconds() / world.step_s)
        window = slice(max(0, last - world.steps_per_interval), last)
        canary = self.streams.canary
        requests = float(canary.requests[self.trial, window].sum())
        if query == SUCCESS_1M_Q:
            value = 1.0 - float(canary.errors[self.trial, window].sum()) / requests if requests else math.nan
        elif query == P99_1M_Q:
            cumulative = canary.buckets[self.trial, window].sum(axis=0).astype(np.float64)
            value = self._quantile(0.99, cumulative, requests)
        else:
            raise ValueError(f"the simulated Prometheus does not know {query!r}")
        return {"resultType": "vector", "result": [{"metric": {}, "value": [now.timestamp(), repr(value)]}]}

    def _quantile(self, q: float, cumulative: FloatArray, total: float) -> float:
        from tidegate.core.judge import histogram_quantile

        return histogram_quantile(q, list(self.streams.bounds), cumulative, total) if total else math.nan


# --- judges: AnalysisRun specs -------------------------------------------------------------


def _metric(name: str, **fields: Any) -> dict[str, Any]:
    timing = {"interval": "60s", "initialDelay": "60s", "count": 5}
    return {"name": name, **timing, **fields}


def _prometheus(query: str, ranged: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"address": "http://prometheus.invalid", "query": query}
    if ranged:
        body["range"] = {"window": "5m", "step": "10s"}
    return {"prometheus": body}


def threshold_spec(failure_limit: int, no_data_policy: str) -> AnalysisRunSpec:
    common = {"failureLimit": failure_limit, "noDataPolicy": no_data_policy}
    return AnalysisRunSpec.model_validate(
        {
            "metrics": [
                _metric(
                    "success-rate",
                    successCondition="result[0] >= 0.99",
                    provider=_prometheus(SUCCESS_1M_Q, False),
                    **common,
                ),
                _metric(
                    "p99", successCondition="result[0] < 0.3", provider=_prometheus(P99_1M_Q, False), **common
                ),
            ]
        }
    )


def mann_whitney_spec() -> AnalysisRunSpec:
    judge = {"direction": "Increase", "confidence": 0.99, "tolerance": 0.05}
    return AnalysisRunSpec.model_validate(
        {
            "metrics": [
                _metric(
                    "error-ratio", judge={**judge, "query": RATIO_Q}, provider=_prometheus(RATIO_Q, True)
                ),
                _metric("p99", judge={**judge, "query": P99_Q}, provider=_prometheus(P99_Q, True)),
            ]
        }
    )


def sequential_spec() -> AnalysisRunSpec:
    judge = {"confidence": 0.99, "tolerance": 0.05}
    return AnalysisRunSpec.model_validate(
        {
            "metrics": [
                _metric(
                    "errors",
                    judge={**judge, "method": "Counts", "query": ERRORS_Q, "totalQuery": REQUESTS_Q},
                    provider=_prometheus(ERRORS_Q, True),
                ),
                _metric(
                    "latency",
                    judge={**judge, "method": "Distribution", "query": BUCKETS_Q, "quantiles": [0.5, 0.99]},
                    provider=_prometheus(BUCKETS_Q, True),
                ),
            ]
        }
    )


JUDGES: dict[str, Callable[[], AnalysisRunSpec]] = {
    "threshold, failureLimit 0": lambda: threshold_spec(0, "Inconclusive"),
    "threshold, failureLimit 1": lambda: threshold_spec(1, "Inconclusive"),
    "threshold, failureLimit 0, noDataPolicy Failed (Argo's NaN)": lambda: threshold_spec(0, "Failed"),
    "Mann-Whitney (alpha spending)": mann_whitney_spec,
    "sequential (Counts + Distribution)": sequential_spec,
}


def judges() -> list[str]:
    return list(JUDGES)


# --- the operator's path -------------------------------------------------------------------


@dataclass(frozen=True)
class RunOutcome:
    phase: str
    """The run's final phase: Successful, Failed, Error or Inconclusive."""
    seconds: float
    """From the run's start to its verdict."""
    looks: int
    """Measurements taken by the metric that took most."""
    status: AnalysisRunStatus


def measure(
    metric: Metric, result: Any, status: AnalysisRunStatus, prom: SimulatedPrometheus, now: datetime
) -> Measurement:
    """One measurement as `k8s.analysis._measure` takes it, Prometheus simulated."""
    if metric.judge is not None:
        span = runs.judged_window(metric, runs.run_started(status, now), now)
        queries = runs.judge_queries(metric, HASHES)
        answers = [prom.range(q, *span) for q in queries] if span is not None else [[] for _ in queries]
        canary, stable = runs.judge_data(metric, answers)
        return runs.judged_measurement(metric, result, canary, stable, started_at=now, finished_at=now)
    assert metric.provider is not None and metric.provider.prometheus is not None
    answer = PrometheusMetricProvider._instant_result(prom.instant(metric.provider.prometheus.query, now))
    return runs.measurement_of(
        metric,
        compile_conditions(metric),
        value=answer.value,
        text=answer.text,
        error=answer.error,
        no_data=answer.no_data,
        started_at=now,
        finished_at=now,
    )


def run_analysis(spec: AnalysisRunSpec, prom: SimulatedPrometheus) -> RunOutcome:
    """One AnalysisRun from start to verdict, stepped as the controller steps it."""
    status = AnalysisRunStatus()
    now = T0
    for _ in range(1000):
        status, due = runs.begin_step(spec, status, now, {})
        if due:
            results = {result.name: result for result in status.metric_results}
            measured = [(m, measure(m, results[m.name], status, prom, now)) for m in due]
            status = runs.finish_step(spec, status, measured)
        if runs.is_finished(status.phase):
            looks = max(result.count for result in status.metric_results)
            return RunOutcome(status.phase, (now - T0).total_seconds(), looks, status)
        moment = runs.next_due(spec, status, now)
        if moment is None:
            raise RuntimeError(f"run neither finished nor due: {status.message}")
        now = max(moment, now)
    raise RuntimeError("run did not finish in 1000 steps")


def wilson(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


# --- statistics and table -----------------------------------------------------------------


def row(cls: str, judge: str, outcomes: Sequence[RunOutcome], interval_s: float) -> dict[str, Any]:
    trials = len(outcomes)
    aborts = [o for o in outcomes if o.phase in ("Failed", "Error")]
    low, high = wilson(len(aborts), trials)
    within_two = sum(1 for o in aborts if o.seconds <= 2 * interval_s + 1e-6)
    seconds = [o.seconds for o in outcomes]
    return {
        "class": cls,
        "judge": judge,
        "trials": trials,
        "measure": "false_abort" if cls in HEALTHY else "detection",
        "rate": len(aborts) / trials,
        "ci_low": low,
        "ci_high": high,
        "median_intervals": float(np.median([o.looks for o in outcomes])),
        "median_seconds": float(np.median(seconds)),
        "rate_within_two": within_two / trials,
        "inconclusive": sum(1 for o in outcomes if o.phase == "Inconclusive") / trials,
    }


def run(
    trials: int,
    seed: int,
    world: World | None = None,
    classes: Sequence[str] = CLASSES,
    judge_names: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Every judge on the same streams of every class; one row per (class, judge)."""
    world = world or World()
    names = list(judge_names or JUDGES)
    specs = {name: JUDGES[name]() for name in names}
    rows: list[dict[str, Any]] = []
    for cls in classes:
        rng = np.random.default_rng([seed, CLASSES.index(cls)])
        outcomes: dict[str, list[RunOutcome]] = {name: [] for name in names}
        started = time.perf_counter()
        chunk = 100  # the histograms of 100 trials at a time keep memory small
        for first in range(0, trials, chunk):
            streams = generate(world, REGRESSIONS[cls], min(chunk, trials - first), rng)
            for trial in range(streams.trials):
                prom = SimulatedPrometheus(streams, trial)
                for name in names:
                    outcomes[name].append(run_analysis(specs[name], prom))
        for name in names:
            rows.append(row(cls, name, outcomes[name], world.interval_s))
        if progress:
            progress(f"{cls:<18} {time.perf_counter() - started:6.1f}s")
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    header = (
        f"{'class':<18} {'judge':<58} {'trials':>6} {'rate':>7} {'95% CI':>17} "
        f"{'by look 2':>9} {'paused':>7} {'med. s':>7}"
    )
    lines = [header, "-" * len(header)]
    previous = None
    for r in rows:
        if previous is not None and r["class"] != previous:
            lines.append("")
        previous = r["class"]
        ci = f"[{r['ci_low'] * 100:5.1f}, {r['ci_high'] * 100:5.1f}]%"
        lines.append(
            f"{r['class']:<18} {r['judge']:<58} {r['trials']:>6} {r['rate'] * 100:6.1f}% {ci:>17} "
            f"{r['rate_within_two'] * 100:8.1f}% {r['inconclusive'] * 100:6.1f}% {r['median_seconds']:>7.0f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print the table as a JSON list of rows")
    parser.add_argument("--trials", type=int, default=1000, help="trials per class (default 1000)")
    parser.add_argument("--seed", type=int, default=20240601, help="random seed (default 20240601)")
    parser.add_argument("--classes", default=",".join(CLASSES), help="comma-separated classes (default all)")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    unknown = [c for c in classes if c not in CLASSES]
    if unknown:
        parser.error(f"unknown classes {unknown}; known: {', '.join(CLASSES)}")
    world = World()
    started = time.perf_counter()

    def progress(line: str) -> None:
        if not args.json:
            print(line, file=sys.stderr)

    rows = run(args.trials, args.seed, world, classes=classes, progress=progress)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(format_table(rows))
    print(
        f"\n{args.trials} trials per class, seed {args.seed}, through the operator's AnalysisRun path; "
        f"{world.intervals} looks, one every {world.interval_s:g}s; canary {world.canary_rps:g}/s, "
        f"stable {world.stable_rps:g}/s, 10 s steps; {time.perf_counter() - started:.0f}s"
    )
    print(
        "Goals: error x2 and p99 +30% aborted by look 2 in >= 99%; latency +10% by the end >= 95%; "
        "A/A false aborts <= 1%; low traffic never aborts."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

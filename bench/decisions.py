"""Decision quality of canary judges on simulated metric streams (no cluster, fixed seeds).

    .venv/bin/python bench/decisions.py [--json] [--trials N] [--seed S] [--step SECONDS] [--canary-rps R]

Every trial simulates one canary analysis: `intervals` measurements, one a minute, of a
service whose stable version takes 900 requests/s and whose canary takes 100 requests/s
(setWeight 10 of 1000 requests/s). Requests per step are Poisson, errors binomial,
latencies lognormal (median 80 ms, sigma 0.5, so p99 ~ 256 ms). Each trial has its own
baseline (error rate and latency vary from day to day), a slow drift over the analysis
shared by both versions (load), step-to-step noise shared by both (hiccups) and a little
noise of each version's own. Per-step p99s are drawn exactly as the linear-interpolated
sample quantile of that step's requests (order statistics), not from histogram buckets.

Classes: a healthy canary (A/A); error rate x2; p99 latency +30% (tail only, median
unchanged); latency +10% (whole distribution); a healthy canary with very little traffic.

Judges, all on the SAME streams:

- threshold, as users write them in Argo Rollouts: success rate over the canary's last
  minute `>= 0.99` (baseline error rate 0.5%) and p99 over the last minute `< 300 ms`
  (~1.17x the baseline p99); a measurement with no data (NaN) fails, as `NaN >= 0.99` is
  false; failureLimit 0 (abort on the first failed measurement) and 1 (on the second).
- statistical: tidegate.core.judge on both metrics (direction Increase, confidence 0.99,
  tolerance 5%), samples = one value per step (default 10 s, assuming a 5 s scrape) since
  the start of the analysis, for each version; a step with fewer than 20 requests gives no
  sample (the judged query filters on traffic, e.g. `... and increase(requests[10s]) >= 20`).
  Looks corrected by Pocock-type alpha spending over the 5 planned looks (the default),
  by Bonferroni, or not corrected. combine() with passScore 0.9 and marginalScore 0.6
  at every look: Failed aborts at once; otherwise the analysis goes on, and the last
  look's verdict is the run's (Inconclusive pauses for a person, Successful passes).

Rate = share of trials that aborted: detection rate for regressions, false-abort rate for
healthy canaries; 95% Wilson interval. median_intervals = median interval at which the
run reached its verdict (abort, pause, or pass after the last interval).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.special import ndtri

try:
    from tidegate.api.analysis import Judge
    from tidegate.core.judge import JudgeVerdict, combine, judge_metric
except ImportError:  # run from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
    from tidegate.api.analysis import Judge
    from tidegate.core.judge import JudgeVerdict, combine, judge_metric

Outcome = Literal["abort", "pause", "pass"]
FloatArray = np.ndarray[Any, np.dtype[np.float64]]

Z99 = float(ndtri(0.99))

CLASSES: tuple[str, ...] = ("healthy A/A", "error rate x2", "p99 latency +30%", "latency +10%", "low traffic")
HEALTHY: frozenset[str] = frozenset({"healthy A/A", "low traffic"})


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
    """Log-sd of a trial's baseline error rate around error_rate (day-to-day variation)."""
    latency_median_s: float = 0.080
    latency_sigma: float = 0.5
    latency_day_sd: float = 0.08
    drift_sd: float = 0.10
    """Log-sd of the drift (shared by both versions) from the start to the end of a trial."""
    shared_step_sd_latency: float = 0.03
    shared_step_sd_error: float = 0.20
    own_step_sd_latency: float = 0.02
    own_step_sd_error: float = 0.10

    @property
    def steps_per_interval(self) -> int:
        return round(self.interval_s / self.step_s)

    @property
    def steps(self) -> int:
        return self.intervals * self.steps_per_interval


@dataclass(frozen=True)
class Regression:
    """How the canary differs from the stable in one class."""

    error_factor: float = 1.0
    latency_factor: float = 1.0
    """Scales every latency (median and p99)."""
    p99_factor: float = 1.0
    """Scales the p99 by widening the tail, median unchanged."""
    low_traffic: bool = False
    """The canary gets World.low_canary_rps instead of World.canary_rps."""


REGRESSIONS: dict[str, Regression] = {
    "healthy A/A": Regression(),
    "error rate x2": Regression(error_factor=2.0),
    "p99 latency +30%": Regression(p99_factor=1.3),
    "latency +10%": Regression(latency_factor=1.1),
    "low traffic": Regression(low_traffic=True),
}


@dataclass(frozen=True)
class Streams:
    """What Prometheus would answer in `trials` analyses; (trials, steps) or (trials, intervals) arrays."""

    canary_requests: FloatArray
    stable_requests: FloatArray
    canary_error_ratio: FloatArray
    stable_error_ratio: FloatArray
    canary_p99: FloatArray
    stable_p99: FloatArray
    canary_interval_error_ratio: FloatArray
    canary_interval_p99: FloatArray
    steps_per_interval: int

    @property
    def trials(self) -> int:
        return int(self.canary_requests.shape[0])


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
    """Simulate `trials` analyses of one class; vectorised over trials and steps."""
    steps = world.steps
    shape = (trials, steps)
    t = (np.arange(steps) + 0.5) / steps
    drift = rng.normal(0.0, world.drift_sd, (trials, 1)) * (t - 0.5)  # log-factor, shared
    day_error = rng.normal(0.0, world.error_day_sd, (trials, 1))
    day_latency = rng.normal(0.0, world.latency_day_sd, (trials, 1))
    shared_error = rng.normal(0.0, world.shared_step_sd_error, shape)
    shared_latency = rng.normal(0.0, world.shared_step_sd_latency, shape)

    canary_rps = world.low_canary_rps if regression.low_traffic else world.canary_rps
    sigma = world.latency_sigma
    canary_sigma = sigma + math.log(regression.p99_factor) / Z99
    base_log_error = math.log(world.error_rate) + day_error + drift + shared_error
    base_mu = math.log(world.latency_median_s) + day_latency + drift + shared_latency

    def version(
        rps: float, error_factor: float, latency_factor: float, version_sigma: float
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
        requests = rng.poisson(rps * world.step_s, shape).astype(np.float64)
        log_error = base_log_error + math.log(error_factor) + rng.normal(0.0, world.own_step_sd_error, shape)
        error_p = np.minimum(np.exp(log_error), 1.0)
        errors = rng.binomial(requests.astype(np.int64), error_p).astype(np.float64)
        mu = base_mu + math.log(latency_factor) + rng.normal(0.0, world.own_step_sd_latency, shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = errors / requests
        p99 = sample_quantile(rng, requests, 0.99, mu, np.full(shape, version_sigma))
        return requests, errors, ratio, p99, mu

    c_req, c_err, c_ratio, c_p99, c_mu = version(
        canary_rps, regression.error_factor, regression.latency_factor, canary_sigma
    )
    s_req, _, s_ratio, s_p99, _ = version(world.stable_rps, 1.0, 1.0, sigma)

    # The threshold judge's view: the canary's last minute as one window.
    per = world.steps_per_interval
    win_req = c_req.reshape(trials, world.intervals, per).sum(axis=2)
    win_err = c_err.reshape(trials, world.intervals, per).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        win_ratio = win_err / win_req
    # The minute pools steps with slightly different log-scales: a lognormal with their
    # traffic-weighted mean log-scale and a sigma widened by their spread matches it closely.
    mus = c_mu.reshape(trials, world.intervals, per)
    weights = c_req.reshape(trials, world.intervals, per) + 1e-12
    mean_mu = (mus * weights).sum(axis=2) / weights.sum(axis=2)
    spread = ((mus - mean_mu[..., None]) ** 2 * weights).sum(axis=2) / weights.sum(axis=2)
    win_p99 = sample_quantile(rng, win_req, 0.99, mean_mu, np.sqrt(canary_sigma**2 + spread))
    return Streams(c_req, s_req, c_ratio, s_ratio, c_p99, s_p99, win_ratio, win_p99, per)


# --- judges -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdJudge:
    """Argo-style: fixed lines on the canary alone, failureLimit failed measurements tolerated."""

    success_rate_min: float = 0.99
    p99_max_s: float = 0.300
    failure_limit: int = 0

    @property
    def name(self) -> str:
        return f"threshold, failureLimit {self.failure_limit}"

    def run(self, streams: Streams) -> tuple[list[Outcome], list[int]]:
        with np.errstate(invalid="ignore"):
            # NaN compares false: a window without data is a failed measurement, as in Argo.
            error_failed = ~(1.0 - streams.canary_interval_error_ratio >= self.success_rate_min)
            latency_failed = ~(streams.canary_interval_p99 < self.p99_max_s)
        outcomes: list[Outcome] = []
        intervals: list[int] = []
        limit = self.failure_limit
        aborted = (np.cumsum(error_failed, axis=1) > limit) | (np.cumsum(latency_failed, axis=1) > limit)
        for row in aborted:
            hits = np.flatnonzero(row)
            if hits.size:
                outcomes.append("abort")
                intervals.append(int(hits[0]) + 1)
            else:
                outcomes.append("pass")
                intervals.append(row.size)
        return outcomes, intervals


Correction = Literal["spending", "bonferroni", "none"]


@dataclass(frozen=True)
class StatisticalJudge:
    """tidegate.core.judge on per-step samples since the analysis began, both metrics."""

    correction: Correction = "spending"
    confidence: float = 0.99
    tolerance: float = 0.05
    min_requests: float = 20.0
    pass_score: float = 0.9
    marginal_score: float = 0.6

    @property
    def name(self) -> str:
        return {
            "spending": "statistical (alpha spending)",
            "bonferroni": "statistical (Bonferroni)",
            "none": "statistical (no correction)",
        }[self.correction]

    def run(self, streams: Streams) -> tuple[list[Outcome], list[int]]:
        per = streams.steps_per_interval
        looks = streams.canary_error_ratio.shape[1] // per
        confidence = self.confidence
        if self.correction == "bonferroni":
            confidence = 1.0 - (1.0 - self.confidence) / looks
        error_judge = Judge(query="errors{{hash}}", confidence=confidence, tolerance=self.tolerance)
        latency_judge = Judge(query="p99{{hash}}", confidence=confidence, tolerance=self.tolerance)
        # The judged query returns no sample for a step with too little traffic.
        c_ok = streams.canary_requests >= self.min_requests
        s_ok = streams.stable_requests >= self.min_requests
        series = (
            (error_judge, _keep(c_ok, streams.canary_error_ratio), _keep(s_ok, streams.stable_error_ratio)),
            (latency_judge, _keep(c_ok, streams.canary_p99), _keep(s_ok, streams.stable_p99)),
        )
        outcomes: list[Outcome] = []
        intervals: list[int] = []
        for trial in range(streams.trials):
            outcome: Outcome = "pass"
            at = looks
            for look in range(1, looks + 1):
                upto = look * per
                if self.correction == "spending":
                    look_args = {"look": look, "planned_looks": looks}
                else:
                    look_args = {"look": 1, "planned_looks": 1}
                verdicts: list[tuple[Judge, JudgeVerdict]] = [
                    (
                        judge,
                        judge_metric(
                            canary[trial, :upto],
                            stable[trial, :upto],
                            judge,
                            no_data_policy="Inconclusive",
                            **look_args,
                        ),
                    )
                    for judge, canary, stable in series
                ]
                run = combine(verdicts, self.pass_score, self.marginal_score)
                if run.phase == "Failed":
                    outcome, at = "abort", look
                    break
                # An interim look stops only on Failed: too little data *yet* is no reason to
                # pause. The last look's verdict is the run's.
                if look == looks and run.phase == "Inconclusive":
                    outcome = "pause"
            outcomes.append(outcome)
            intervals.append(at)
        return outcomes, intervals


def _keep(mask: np.ndarray[Any, np.dtype[np.bool_]], values: FloatArray) -> FloatArray:
    return np.where(mask, values, np.nan)


# --- statistics and table -----------------------------------------------------------------


def wilson(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def row(cls: str, judge: str, outcomes: Sequence[Outcome], intervals: Sequence[int]) -> dict[str, Any]:
    trials = len(outcomes)
    aborts = sum(1 for o in outcomes if o == "abort")
    low, high = wilson(aborts, trials)
    early = sum(1 for o, i in zip(outcomes, intervals, strict=True) if o == "abort" and i <= 2)
    return {
        "class": cls,
        "judge": judge,
        "trials": trials,
        "measure": "false_abort" if cls in HEALTHY else "detection",
        "rate": aborts / trials,
        "ci_low": low,
        "ci_high": high,
        "median_intervals": float(np.median(intervals)),
        "within_2": early / trials,
        "inconclusive": sum(1 for o in outcomes if o == "pause") / trials,
    }


def judges() -> list[ThresholdJudge | StatisticalJudge]:
    return [
        ThresholdJudge(failure_limit=0),
        ThresholdJudge(failure_limit=1),
        StatisticalJudge(correction="spending"),
        StatisticalJudge(correction="bonferroni"),
        StatisticalJudge(correction="none"),
    ]


def run(
    trials: int,
    seed: int,
    world: World | None = None,
    classes: Sequence[str] = CLASSES,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Every judge on the same streams of every class; one row per (class, judge)."""
    world = world or World()
    rows: list[dict[str, Any]] = []
    for index, cls in enumerate(classes):
        rng = np.random.default_rng([seed, index])
        streams = generate(world, REGRESSIONS[cls], trials, rng)
        for judge in judges():
            started = time.perf_counter()
            outcomes, intervals = judge.run(streams)
            rows.append(row(cls, judge.name, outcomes, intervals))
            if progress:
                progress(f"{cls:<18} {judge.name:<30} {time.perf_counter() - started:6.1f}s")
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    header = (
        f"{'class':<18} {'judge':<30} {'trials':>6} {'measure':<11} {'rate':>7} "
        f"{'95% CI':>17} {'by int. 2':>9} {'paused':>7} {'med. int.':>9}"
    )
    lines = [header, "-" * len(header)]
    previous = None
    for r in rows:
        if previous is not None and r["class"] != previous:
            lines.append("")
        previous = r["class"]
        ci = f"[{r['ci_low'] * 100:5.1f}, {r['ci_high'] * 100:5.1f}]%"
        lines.append(
            f"{r['class']:<18} {r['judge']:<30} {r['trials']:>6} {r['measure']:<11} "
            f"{r['rate'] * 100:6.1f}% {ci:>17} {r['within_2'] * 100:8.1f}% {r['inconclusive'] * 100:6.1f}% "
            f"{r['median_intervals']:>9.1f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print the table as a JSON list of rows")
    parser.add_argument("--trials", type=int, default=1000, help="trials per class (default 1000)")
    parser.add_argument("--seed", type=int, default=20240601, help="random seed (default 20240601)")
    parser.add_argument("--step", type=float, default=10.0, help="seconds per judged sample (default 10)")
    parser.add_argument("--canary-rps", type=float, default=100.0, help="canary traffic (default 100/s)")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    world = replace(World(), step_s=args.step, canary_rps=args.canary_rps)
    if world.steps_per_interval < 1 or abs(world.steps_per_interval * world.step_s - world.interval_s) > 1e-9:
        parser.error(f"--step must divide the {world.interval_s:g}s interval")
    started = time.perf_counter()

    def progress(line: str) -> None:
        if not args.json:
            print(line, file=sys.stderr)

    rows = run(args.trials, args.seed, world, progress=progress)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(format_table(rows))
    print(
        f"\n{args.trials} trials per class, seed {args.seed}, {world.intervals} intervals of "
        f"{world.interval_s:g}s, canary {world.canary_rps:g}/s, stable {world.stable_rps:g}/s, "
        f"judged samples every {world.step_s:g}s; "
        f"{time.perf_counter() - started:.0f}s"
    )
    print("Goals: detect error x2 and p99 +30% in >= 99% within 2 intervals; false aborts on A/A <= 1%.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

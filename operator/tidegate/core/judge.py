"""Statistical canary judges: compare the canary with the stable, purely.

`judge_metric` decides a Mann-Whitney judged metric at one look; `judge_counts` and
`judge_distribution` decide the sequential (anytime-valid) judges at one look, over every step
since the run began (see "sequential judges" below); `combine` turns the verdicts of all
judged metrics into the verdict of the run.

Definitions (docs/statistical-judge.md explains them for users):

- *samples*: finite values of one metric, one per time step (or pod) of the query window,
  for each version. NaN and +/-inf are dropped first.
- *effect*: the Hodges-Lehmann shift (the median of all pairwise differences
  canary_i - stable_j, the estimate that goes with the Mann-Whitney test) divided by the
  magnitude of the stable median; 0.30 means the canary is typically 30% higher. When the
  stable median is 0 the stable mean is the scale; when that is 0 too, any positive shift
  is +inf.
- *alpha of a look*: the false-alarm budget `1 - confidence` is spent over the planned
  looks with the Pocock-type spending function of Lan and DeMets,
  `spent(t) = (1 - confidence) * ln(1 + (e - 1) * t)` with `t = look / planned_looks`;
  look k is tested at `spent(k / K) - spent((k - 1) / K)`. The per-look alphas add up to
  `1 - confidence`, so by the union bound the chance of any false alarm over all planned
  looks stays within it, however the looks' windows overlap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.stats import mannwhitneyu

from tidegate.api.analysis import Judge

JudgePhase = Literal["Successful", "Failed", "Inconclusive"]

MIN_SAMPLES = 5
"""Fewest finite samples per version the judge tests at all; fewer is no data."""

_MAX_SAMPLES_FOR_SHIFT = 500
"""Above this many samples a side, the shift estimate uses evenly spaced quantiles (bounded work)."""

_SCORE_EPSILON = 1e-9
"""Rounding slack when comparing a weighted score with pass/marginal scores."""

FloatArray = npt.NDArray[np.float64]
Samples = Sequence[float] | FloatArray
"""Values of one metric for one version: a list, or a numpy array of floats."""


@dataclass(frozen=True)
class JudgeVerdict:
    """The verdict on one judged metric at one look."""

    phase: JudgePhase
    canary_n: int
    """Finite canary samples tested."""
    stable_n: int
    """Finite stable samples tested."""
    p_value: float | None
    """Mann-Whitney p-value (one-sided in the bad direction, two-sided for Either); None: not tested."""
    effect: float | None
    """Relative shift of canary vs stable (0.3 = 30% higher); None: not estimated."""
    alpha: float
    """Significance level of this look, after the repeated-looks correction."""
    message: str
    """Why, in a sentence."""

    def metadata(self) -> dict[str, str]:
        """Facts to record in an AnalysisRun measurement's metadata."""
        return {
            "canaryN": str(self.canary_n),
            "stableN": str(self.stable_n),
            "pValue": "n/a" if self.p_value is None else f"{self.p_value:.4g}",
            "effect": "n/a" if self.effect is None else f"{self.effect:.4g}",
            "alpha": f"{self.alpha:.4g}",
            "verdict": self.phase,
        }


@dataclass(frozen=True)
class RunVerdict:
    """The verdict on all judged metrics of a run."""

    phase: JudgePhase
    score: float
    """Weighted share of Successful metrics, 0..1."""
    max_score: float
    """The score if every Inconclusive metric passed."""
    message: str
    """Why, in a sentence."""


def look_alpha(confidence: float, look: int, planned_looks: int) -> float:
    """Significance level of look `look` (1-based) out of `planned_looks`.

    Pocock-type alpha spending: early looks get a little more than an even share, and the
    shares add up to `1 - confidence`.

    >>> round(look_alpha(0.99, 1, 1), 6), round(look_alpha(0.99, 1, 5), 6), round(look_alpha(0.99, 5, 5), 6)
    (0.01, 0.002954, 0.001352)
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    if planned_looks < 1:
        raise ValueError(f"planned_looks must be at least 1, got {planned_looks!r}")
    if not 1 <= look <= planned_looks:
        raise ValueError(f"look must be between 1 and planned_looks ({planned_looks}), got {look!r}")
    total = 1.0 - confidence

    def spent(fraction: float) -> float:
        return total * math.log1p((math.e - 1.0) * fraction)

    if planned_looks == 1:
        return total
    return spent(look / planned_looks) - spent((look - 1) / planned_looks)


def judge_metric(
    canary: Samples,
    stable: Samples,
    judge: Judge,
    *,
    no_data_policy: str,
    look: int,
    planned_looks: int,
) -> JudgeVerdict:
    """Judge one metric at one look: is the canary worse than the stable by more than the tolerance?

    Failed needs both a significant Mann-Whitney test in the bad direction at this look's
    alpha and a relative effect beyond `judge.tolerance` (tolerance 0: any significant
    shift fails). Too little data follows `no_data_policy` and is never Successful.
    """
    if no_data_policy not in ("Inconclusive", "Failed"):
        raise ValueError(f"no_data_policy must be Inconclusive or Failed, got {no_data_policy!r}")
    alpha = look_alpha(judge.confidence, look, planned_looks)
    canary_values = _finite(canary)
    stable_values = _finite(stable)
    n, m = canary_values.size, stable_values.size
    dropped = (np.size(canary) - n) + (np.size(stable) - m)
    dropped_note = f"; {dropped} non-finite value{'s' if dropped != 1 else ''} dropped" if dropped else ""

    shortage = _shortage(n, m, alpha, two_sided=judge.direction == "Either")
    if shortage:
        return JudgeVerdict(
            phase="Failed" if no_data_policy == "Failed" else "Inconclusive",
            canary_n=n,
            stable_n=m,
            p_value=None,
            effect=None,
            alpha=alpha,
            message=f"not enough data: {shortage}{dropped_note} (noDataPolicy {no_data_policy})",
        )

    p_value = _p_value(canary_values, stable_values, judge.direction)
    effect = _relative_shift(canary_values, stable_values)
    significant = p_value < alpha
    worse = _is_worse(effect, judge)
    facts = f"effect {_percent(effect)}, p={p_value:.3g}, alpha={alpha:.3g}, n={n}/{m}{dropped_note}"
    bad = {"Increase": "increase", "Decrease": "decrease", "Either": "change"}[judge.direction]
    tolerance = _percent(judge.tolerance, signed=False)
    if significant and worse:
        phase: JudgePhase = "Failed"
        why = f"canary shows a significant {bad} beyond the {tolerance} tolerance"
    elif significant:
        phase = "Successful"
        why = f"canary shows a significant {bad} within the {tolerance} tolerance"
    else:
        phase = "Successful"
        why = f"no significant {bad} in the canary compared with the stable"
    return JudgeVerdict(
        phase=phase,
        canary_n=n,
        stable_n=m,
        p_value=p_value,
        effect=effect,
        alpha=alpha,
        message=f"{why} ({facts})",
    )


def combine(
    verdicts: Sequence[tuple[Judge, JudgeVerdict]], pass_score: float, marginal_score: float
) -> RunVerdict:
    """Verdict of a run from its judged metrics' verdicts.

    score = weight of Successful metrics / total weight; max_score also counts the
    Inconclusive ones as passing. An Inconclusive metric is unknown, not half a pass: the
    run is Successful only if it passes with every Inconclusive metric counted as failing
    (score >= pass_score) and Failed only if it fails with all of them counted as passing
    (max_score < marginal_score); in between it is Inconclusive. A Failed critical metric
    fails the run whatever the score; an Inconclusive critical metric keeps it from being
    Successful.
    """
    if not verdicts:
        return RunVerdict("Inconclusive", 0.0, 0.0, "no judged metrics to score")
    total = sum(judge.weight for judge, _ in verdicts)
    passed = sum(judge.weight for judge, v in verdicts if v.phase == "Successful")
    unknown = sum(judge.weight for judge, v in verdicts if v.phase == "Inconclusive")
    score, max_score = passed / total, (passed + unknown) / total
    counts = {phase: sum(1 for _, v in verdicts if v.phase == phase) for phase in _PHASES}
    tally = ", ".join(f"{counts[p]} {p.lower()}" for p in _PHASES if counts[p])
    shown = f"{score:.3g}" if unknown == 0 else f"{score:.3g}..{max_score:.3g}"
    summary = f"score {shown} ({tally}; pass {pass_score:g}, marginal {marginal_score:g})"

    critical_failed = [v for judge, v in verdicts if judge.critical and v.phase == "Failed"]
    if critical_failed:
        why = f"a critical metric failed: {critical_failed[0].message}; {summary}"
        return RunVerdict("Failed", score, max_score, why)
    if max_score < marginal_score - _SCORE_EPSILON:
        return RunVerdict("Failed", score, max_score, summary)
    if score >= pass_score - _SCORE_EPSILON:
        critical_open = [v for judge, v in verdicts if judge.critical and v.phase == "Inconclusive"]
        if not critical_open:
            return RunVerdict("Successful", score, max_score, summary)
        why = f"a critical metric is inconclusive: {critical_open[0].message}; {summary}"
        return RunVerdict("Inconclusive", score, max_score, why)
    why = f"undecided, inconclusive metrics: {summary}" if unknown else f"marginal {summary}"
    return RunVerdict("Inconclusive", score, max_score, why)


_PHASES: tuple[JudgePhase, ...] = ("Successful", "Inconclusive", "Failed")


def _finite(values: Samples) -> FloatArray:
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def _shortage(n: int, m: int, alpha: float, *, two_sided: bool) -> str:
    """Why n canary and m stable samples are too few to test at alpha; empty when they suffice.

    Besides MIN_SAMPLES a side, the samples must be able to reach significance at all: the
    smallest exact Mann-Whitney p-value is 1 / C(n+m, n) (twice that, two-sided). A test
    that could never reject would pass every canary, so it counts as no data.
    """
    if n < MIN_SAMPLES or m < MIN_SAMPLES:
        return f"{n} canary and {m} stable samples, at least {MIN_SAMPLES} of each needed"
    log_arrangements = math.lgamma(n + m + 1) - math.lgamma(n + 1) - math.lgamma(m + 1)
    smallest_p = math.exp(math.log(2.0 if two_sided else 1.0) - log_arrangements)
    if smallest_p >= alpha:
        return (
            f"{n} canary and {m} stable samples cannot reach significance at alpha={alpha:.3g} "
            f"(smallest possible p-value {smallest_p:.3g})"
        )
    return ""


def _p_value(canary: FloatArray, stable: FloatArray, direction: str) -> float:
    alternative = {"Increase": "greater", "Decrease": "less", "Either": "two-sided"}[direction]
    if np.all(canary == canary[0]) and np.all(stable == canary[0]):
        return 1.0  # all values equal: no shift, and scipy's normal approximation has no variance
    result = mannwhitneyu(canary, stable, alternative=alternative)
    p_value = float(result.pvalue)
    return 1.0 if math.isnan(p_value) else p_value


def _thin(values: FloatArray) -> FloatArray:
    if values.size <= _MAX_SAMPLES_FOR_SHIFT:
        return values
    return np.quantile(values, np.linspace(0.0, 1.0, _MAX_SAMPLES_FOR_SHIFT))


def _relative_shift(canary: FloatArray, stable: FloatArray) -> float:
    """Hodges-Lehmann shift of canary over stable, relative to the stable's median (or mean)."""
    shift = float(np.median(np.subtract.outer(_thin(canary), _thin(stable))))
    scale = abs(float(np.median(stable))) or abs(float(np.mean(stable)))
    if scale == 0.0:
        return 0.0 if shift == 0.0 else math.copysign(math.inf, shift)
    return shift / scale


def _is_worse(effect: float, judge: Judge) -> bool:
    if judge.tolerance == 0.0:
        return True  # no tolerance: the significant test in the bad direction decides alone
    signed = {"Increase": effect, "Decrease": -effect, "Either": abs(effect)}[judge.direction]
    return signed > judge.tolerance


def _percent(value: float, *, signed: bool = True) -> str:
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return f"{value * 100:+.1f}%" if signed else f"{value * 100:.1f}%"


# --- sequential judges: anytime-valid e-processes ------------------------------------------
#
# After Lindon, Sanden & Shirikian, "Rapid Regression Detection in Software Deployments
# through Sequential Testing" (KDD 2022). Both judges below compute, at every look, an
# e-process E_t over all steps since the run began: a nonnegative process with E_0 = 1 whose
# expectation stays <= 1 at every step while the canary is no worse than the tolerance. By
# Ville's inequality P(sup_t E_t >= 1/alpha) <= alpha, so the run may look after every
# interval, as often as it likes, and stop at the first look with E >= 1/alpha, with the
# false-alarm rate held at alpha = 1 - confidence. No planned-look correction is needed.
#
# The building block (`_ratio_log_factors`): in one step the canary has n requests and c
# events, the stable m requests and s events. For a rate ratio r = (canary rate) / (stable
# rate) tested against the null ratio r0, the factor
#
#     L(r) = (r D0 / (r0 D))^c (D0 / D)^s,    D = r n + m,  D0 = r0 n + m
#
# is the likelihood ratio of "the canary's share of the step's events is r n / (r n + m)"
# against the same with r0 -- the conditional-binomial model of two Poisson counts. Its
# expectation is exactly 1 when the counts are Poisson with ratio r0 and at most 1 when they
# are binomial (events out of requests, log(1 + x) <= x) or the ratio is below r0; the
# product over steps is then a test supermartingale whatever the shared rate does from one
# step to the next (load, time of day). Mixing over alternatives r > r0 with fixed prior
# weights (`_RATIO_GRID`, `_RATIO_WEIGHTS`) keeps that property: the mixture SPRT.
#
# numpy is already a dependency for the Mann-Whitney judge; the formulas are short enough
# that no further library is used.

_GRID_POINTS = 48
_GRID_MAX = 16.0
"""Alternatives r / r0 from just above 1 to 16x."""
_PRIOR_LOG_SD = 0.7
"""Half-normal prior on log(r / r0): most weight on ratios up to ~2x beyond the null."""

_RATIO_STEPS = np.exp(np.linspace(math.log(1.02), math.log(_GRID_MAX), _GRID_POINTS))
_PRIOR = np.exp(-0.5 * (np.log(_RATIO_STEPS) / _PRIOR_LOG_SD) ** 2)
_RATIO_WEIGHTS: FloatArray = _PRIOR / _PRIOR.sum()
"""Mixture weights over `_RATIO_STEPS` (fixed before any data: the mixture stays valid)."""

DETECTABLE_FACTOR = 2.0
"""A sequential judge passes at its last look only if a canary this many times worse than
the null (twice the tolerated rate) would have been detected with the traffic seen;
otherwise the data is too thin to vouch for the canary (noDataPolicy)."""

DEFAULT_QUANTILES: tuple[float, ...] = (0.5, 0.99)


@dataclass(frozen=True)
class SequentialVerdict:
    """The verdict of a sequential judge at one look."""

    phase: JudgePhase
    e_value: float
    """The e-process at this look (evidence against "the canary is no worse"); 1: none."""
    threshold: float
    """1 / alpha: the e-value at which the canary is judged worse."""
    effect: float | None
    """Counts: canary rate / stable rate - 1; Distribution: the largest relative slowdown
    at the judged quantiles. None: not estimated."""
    canary_total: float
    """Canary requests the look saw."""
    stable_total: float
    """Stable requests the look saw."""
    steps: int
    """Steps (range-query points) with data for both versions."""
    message: str
    """Why, in a sentence."""
    facts: Mapping[str, str] = field(default_factory=dict)
    """Further figures for the measurement's metadata (counts, quantiles)."""

    def metadata(self) -> dict[str, str]:
        return {
            "eValue": f"{self.e_value:.4g}",
            "threshold": f"{self.threshold:.4g}",
            "effect": "n/a" if self.effect is None else f"{self.effect:.4g}",
            "canaryN": f"{self.canary_total:.0f}",
            "stableN": f"{self.stable_total:.0f}",
            "steps": str(self.steps),
            **self.facts,
            "verdict": self.phase,
        }


CountStep = tuple[float, float]
"""(events, requests) of one version in one step."""
HistogramStep = Mapping[float, float]
"""Cumulative bucket counts of one version in one step: upper bound `le` -> requests at or
below it (+inf: all requests)."""


def _ratio_log_factors(
    c: FloatArray, n: FloatArray, s: FloatArray, m: FloatArray, null_ratio: float
) -> FloatArray:
    """log L(r) summed over steps, for every alternative r = null_ratio * _RATIO_STEPS.

    Inputs are per-step arrays (canary events, canary requests, stable events, stable requests)."""
    r = null_ratio * _RATIO_STEPS[:, None]
    d = r * n[None, :] + m[None, :]
    d0 = null_ratio * n + m
    terms = c[None, :] * np.log(r * d0[None, :] / (null_ratio * d)) + s[None, :] * np.log(d0[None, :] / d)
    return np.asarray(terms.sum(axis=1), dtype=np.float64)


def _log_mixture(log_factors: FloatArray) -> float:
    """log of the prior-weighted mixture of exp(log_factors) (log-sum-exp)."""
    top = float(np.max(log_factors))
    return top + math.log(float(np.sum(_RATIO_WEIGHTS * np.exp(log_factors - top))))


def _clean_counts(steps: Sequence[tuple[CountStep, CountStep]]) -> tuple[FloatArray, ...]:
    """Per-step arrays (c, n, s, m) of the steps where both versions had requests; counts
    from `increase()` are extrapolated (not whole numbers), so they are clipped to [0, requests]."""
    rows = [
        (float(cs[0]), float(cs[1]), float(ss[0]), float(ss[1]))
        for cs, ss in steps
        if all(math.isfinite(float(x)) for x in (*cs, *ss)) and cs[1] > 0 and ss[1] > 0
    ]
    if not rows:
        empty = np.zeros(0)
        return empty, empty, empty, empty
    c, n, s, m = (np.asarray(column, dtype=np.float64) for column in zip(*rows, strict=True))
    return np.clip(c, 0.0, n), n, np.clip(s, 0.0, m), m


def _directed(
    canary: FloatArray, canary_n: FloatArray, stable: FloatArray, stable_n: FloatArray, direction: str
) -> list[tuple[FloatArray, FloatArray, FloatArray, FloatArray]]:
    """The (worse, worse_n, better, better_n) orientations the direction tests: Increase, the
    canary's rate above the stable's; Decrease, the stable's above the canary's (swapped);
    Either, both, each e-process at half weight."""
    up = (canary, canary_n, stable, stable_n)
    down = (stable, stable_n, canary, canary_n)
    return {"Increase": [up], "Decrease": [down], "Either": [up, down]}[direction]


def _log_e(
    orientations: Sequence[tuple[FloatArray, FloatArray, FloatArray, FloatArray]], null_ratio: float
) -> float:
    logs = [_log_mixture(_ratio_log_factors(*o, null_ratio)) for o in orientations]
    top = max(logs)
    return top + math.log(sum(math.exp(x - top) for x in logs) / len(logs))


def _sequential_phase(
    e_log: float,
    power_log: float,
    threshold: float,
    *,
    usable: bool,
    final: bool,
    no_data_policy: str,
) -> tuple[JudgePhase, str]:
    no_data: JudgePhase = "Failed" if no_data_policy == "Failed" else "Inconclusive"
    if not usable:
        return no_data, f"no steps with requests on both versions (noDataPolicy {no_data_policy})"
    if e_log >= math.log(threshold):
        return "Failed", "the evidence that the canary is worse reached the threshold"
    if final and power_log < math.log(threshold):
        return no_data, (
            f"too little traffic to vouch for the canary: even a canary {DETECTABLE_FACTOR:g}x worse "
            f"than tolerated would not have been detected (noDataPolicy {no_data_policy})"
        )
    if final:
        return "Successful", "no evidence that the canary is worse, with enough traffic to have seen it"
    return "Successful", "no evidence yet that the canary is worse"


def _e_text(e_log: float) -> str:
    return f"{math.exp(e_log):.3g}" if e_log < 700 else "+inf"


def judge_counts(
    steps: Sequence[tuple[CountStep, CountStep]],
    judge: Judge,
    *,
    no_data_policy: str,
    final: bool,
) -> SequentialVerdict:
    """The Counts judge at one look: is the canary's event rate above the stable's by more
    than the tolerance?

    `steps` are every step since the run began, (canary (events, requests), stable (events,
    requests)) aligned by time. Failed as soon as the mixture e-process reaches 1 / alpha;
    at the last look (`final`), Successful only when the traffic seen could have shown a
    canary DETECTABLE_FACTOR times worse than tolerated, else `no_data_policy`.
    """
    threshold = 1.0 / (1.0 - judge.confidence)
    null_ratio = 1.0 + judge.tolerance
    c, n, s, m = _clean_counts(steps)
    usable = c.size > 0
    e_log = power_log = 0.0
    effect: float | None = None
    facts: dict[str, str] = {}
    if usable:
        e_log = _log_e(_directed(c, n, s, m, judge.direction), null_ratio)
        # What the same traffic would show of a canary DETECTABLE_FACTOR times worse than tolerated.
        bad = DETECTABLE_FACTOR * null_ratio
        base = s.sum() / m.sum() if m.sum() > 0 else 0.0
        hypothetical = np.minimum(n * base * bad, n)
        if judge.direction == "Decrease":
            c_base = c.sum() / n.sum()
            power_log = _log_e(_directed(c, n, np.minimum(m * c_base * bad, m), m, "Decrease"), null_ratio)
        else:
            power_log = _log_e(_directed(hypothetical, n, s, m, "Increase"), null_ratio)
        canary_rate, stable_rate = c.sum() / n.sum(), s.sum() / m.sum()
        if stable_rate > 0:
            effect = canary_rate / stable_rate - 1.0
        elif canary_rate > 0:
            effect = math.inf
        else:
            effect = 0.0
        facts = {
            "canaryEvents": f"{c.sum():.0f}",
            "stableEvents": f"{s.sum():.0f}",
            "canaryRate": f"{canary_rate:.4g}",
            "stableRate": f"{stable_rate:.4g}",
        }
    phase, why = _sequential_phase(
        e_log, power_log, threshold, usable=usable, final=final, no_data_policy=no_data_policy
    )
    figures = (
        f"e={_e_text(e_log)}, threshold {threshold:g}, rate ratio "
        f"{'n/a' if effect is None else _ratio_text(effect)} (tolerated {null_ratio:g}x), "
        f"events {facts.get('canaryEvents', '0')}/{n.sum():.0f} canary, "
        f"{facts.get('stableEvents', '0')}/{m.sum():.0f} stable"
    )
    return SequentialVerdict(
        phase=phase,
        e_value=math.exp(min(e_log, 700.0)),
        threshold=threshold,
        effect=effect,
        canary_total=float(n.sum()),
        stable_total=float(m.sum()),
        steps=int(c.size),
        message=f"{why} ({figures})",
        facts=facts,
    )


def _ratio_text(effect: float) -> str:
    return "+inf" if math.isinf(effect) else f"{1.0 + effect:.3g}x"


def _bounds(steps: Sequence[tuple[HistogramStep, HistogramStep]]) -> list[float]:
    """Finite bucket bounds both versions report in every step, ascending."""
    common: set[float] | None = None
    for canary, stable in steps:
        bounds = {float(b) for b in canary if math.isfinite(float(b))} & {
            float(b) for b in stable if math.isfinite(float(b))
        }
        common = bounds if common is None else common & bounds
    return sorted(common or ())


def _total(histogram: HistogramStep) -> float:
    return float(max((v for b, v in histogram.items() if math.isinf(float(b))), default=0.0))


def _cumulative(histogram: HistogramStep, bounds: Sequence[float]) -> FloatArray:
    """Counts at or below each bound, made non-decreasing and clipped to the total
    (`increase()` extrapolates each bucket on its own)."""
    values = np.asarray([float(histogram.get(b, 0.0)) for b in bounds], dtype=np.float64)
    return np.minimum(np.maximum.accumulate(np.maximum(values, 0.0)), _total(histogram))


def histogram_quantile(q: float, bounds: Sequence[float], cumulative: FloatArray, total: float) -> float:
    """The q-quantile of a histogram by linear interpolation within its bucket, as
    Prometheus' histogram_quantile does (the first bucket starts at 0); NaN without data,
    the highest finite bound when the quantile lies in the +Inf bucket."""
    if total <= 0 or not bounds:
        return math.nan
    rank = q * total
    index = int(np.searchsorted(cumulative, rank, side="left"))
    if index >= len(bounds):
        return float(bounds[-1])
    lower = 0.0 if index == 0 else float(bounds[index - 1])
    below = 0.0 if index == 0 else float(cumulative[index - 1])
    inside = float(cumulative[index]) - below
    if inside <= 0:
        return float(bounds[index])
    return lower + (float(bounds[index]) - lower) * (rank - below) / inside


def judge_distribution(
    steps: Sequence[tuple[HistogramStep, HistogramStep]],
    judge: Judge,
    *,
    no_data_policy: str,
    final: bool,
) -> SequentialVerdict:
    """The Distribution judge at one look: is the canary slower than the stable, beyond the
    tolerance, at the stable's quantiles (default p50 and p99)?

    For each quantile q and each step, the bucket bound b at the stable's q-quantile is
    chosen from the stable's buckets of the *earlier* steps only (a predictable choice: the
    e-process stays valid), and b' is the smallest bound at least (1 + tolerance) * b. A
    canary no slower than (1 + tolerance) times the stable, in the sense of stochastic order,
    has at most the stable's share of requests above b beyond b'; the step's counts above
    b' (canary) and above b (stable) enter the rate-ratio e-process with null ratio 1. The
    quantiles' e-processes are averaged (an average of e-processes is one).
    """
    threshold = 1.0 / (1.0 - judge.confidence)
    quantiles = tuple(judge.quantiles or DEFAULT_QUANTILES)
    bounds = _bounds(steps)
    rows = [
        (_cumulative(cs, bounds), _total(cs), _cumulative(ss, bounds), _total(ss))
        for cs, ss in steps
        if _total(cs) > 0 and _total(ss) > 0
    ]
    usable = bool(rows) and len(bounds) > 1
    e_log = power_log = 0.0
    effect: float | None = None
    facts: dict[str, str] = {}
    if usable:
        scale = 1.0 + judge.tolerance
        bound_array = np.asarray(bounds)
        per_orientation: list[float] = []
        power_orientation: list[float] = []
        orientations = {"Increase": [False], "Decrease": [True], "Either": [False, True]}[judge.direction]
        for swapped in orientations:
            per_q: list[float] = []
            power_q: list[float] = []
            for q in quantiles:
                worse, worse_n, better, better_n = _exceedances(rows, bound_array, q, scale, swapped=swapped)
                if worse.size == 0:
                    per_q.append(0.0)
                    power_q.append(0.0)
                    continue
                per_q.append(_log_mixture(_ratio_log_factors(worse, worse_n, better, better_n, 1.0)))
                share = better.sum() / better_n.sum()
                bad = np.minimum(worse_n * share * DETECTABLE_FACTOR, worse_n)
                power_q.append(_log_mixture(_ratio_log_factors(bad, worse_n, better, better_n, 1.0)))
            per_orientation.append(_log_mean(per_q))
            power_orientation.append(_log_mean(power_q))
        e_log = _log_mean(per_orientation)
        power_log = _log_mean(power_orientation)
        canary_cum = np.sum([row[0] for row in rows], axis=0)
        stable_cum = np.sum([row[2] for row in rows], axis=0)
        canary_total = sum(row[1] for row in rows)
        stable_total = sum(row[3] for row in rows)
        changes: list[float] = []
        for q in quantiles:
            cq = histogram_quantile(q, bounds, canary_cum, canary_total)
            sq = histogram_quantile(q, bounds, stable_cum, stable_total)
            label = f"p{q * 100:g}"
            facts[f"canary{label.upper()}"] = f"{cq:.4g}"
            facts[f"stable{label.upper()}"] = f"{sq:.4g}"
            if sq > 0 and math.isfinite(cq):
                changes.append(cq / sq - 1.0)
        if changes:
            signed = {"Increase": max(changes), "Decrease": min(changes)}.get(
                judge.direction, max(changes, key=abs)
            )
            effect = signed
    phase, why = _sequential_phase(
        e_log, power_log, threshold, usable=usable, final=final, no_data_policy=no_data_policy
    )
    at = ", ".join(
        f"p{q * 100:g} {facts.get(f'canaryP{q * 100:g}', 'n/a')} vs {facts.get(f'stableP{q * 100:g}', 'n/a')}"
        for q in quantiles
    )
    canary_n = sum(row[1] for row in rows)
    stable_n = sum(row[3] for row in rows)
    figures = (
        f"e={_e_text(e_log)}, threshold {threshold:g}, canary vs stable {at}, "
        f"tolerance {judge.tolerance * 100:g}%, n={canary_n:.0f}/{stable_n:.0f}"
    )
    return SequentialVerdict(
        phase=phase,
        e_value=math.exp(min(e_log, 700.0)),
        threshold=threshold,
        effect=effect,
        canary_total=float(canary_n),
        stable_total=float(stable_n),
        steps=len(rows),
        message=f"{why} ({figures})",
        facts=facts,
    )


def _log_mean(logs: Sequence[float]) -> float:
    top = max(logs)
    return top + math.log(sum(math.exp(x - top) for x in logs) / len(logs))


def _exceedances(
    rows: Sequence[tuple[FloatArray, float, FloatArray, float]],
    bounds: FloatArray,
    q: float,
    scale: float,
    *,
    swapped: bool,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Per step: requests of the judged version above b' and its total, requests of the
    reference version above b and its total, with b the reference's q-quantile bound from
    the earlier steps and b' the smallest bound >= scale * b. Steps before the reference
    has any data, or whose b or b' would be beyond the last finite bound, are left out."""
    worse: list[float] = []
    worse_n: list[float] = []
    better: list[float] = []
    better_n: list[float] = []
    pooled = np.zeros(bounds.size)
    pooled_total = 0.0
    for canary_cum, canary_total, stable_cum, stable_total in rows:
        if swapped:
            judged_cum, judged_total, ref_cum, ref_total = stable_cum, stable_total, canary_cum, canary_total
        else:
            judged_cum, judged_total, ref_cum, ref_total = canary_cum, canary_total, stable_cum, stable_total
        if pooled_total > 0:
            b = int(np.searchsorted(pooled, q * pooled_total, side="left"))
            if b < bounds.size:
                b_shifted = int(np.searchsorted(bounds, bounds[b] * scale * (1 - 1e-12), side="left"))
                if b_shifted < bounds.size:
                    worse.append(judged_total - float(judged_cum[b_shifted]))
                    worse_n.append(judged_total)
                    better.append(ref_total - float(ref_cum[b]))
                    better_n.append(ref_total)
        pooled = pooled + ref_cum
        pooled_total += ref_total
    return (
        np.clip(np.asarray(worse, dtype=np.float64), 0.0, None),
        np.asarray(worse_n, dtype=np.float64),
        np.clip(np.asarray(better, dtype=np.float64), 0.0, None),
        np.asarray(better_n, dtype=np.float64),
    )

"""Statistical canary judge: compare the canary's samples with the stable's (Mann-Whitney U).

`judge_metric` decides one judged metric at one look of an analysis; `combine` turns the
verdicts of all judged metrics into the verdict of the run. Both are pure.

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
from collections.abc import Sequence
from dataclasses import dataclass
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

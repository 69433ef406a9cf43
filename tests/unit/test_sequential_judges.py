"""Tables for the sequential judges (core.judge.judge_counts, judge_distribution), and their
false-alarm rate under the null checked by simulation at a fixed seed, looking at every step."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tidegate.api.analysis import Judge
from tidegate.core.judge import HistogramStep, histogram_quantile, judge_counts, judge_distribution

BOUNDS = [0.005 * 1.05**k for k in range(160)]


def counts_judge(**fields: object) -> Judge:
    return Judge.model_validate({"method": "Counts", "query": "e", "totalQuery": "r", **fields})


def distribution_judge(**fields: object) -> Judge:
    return Judge.model_validate({"method": "Distribution", "query": "b", **fields})


def count_steps(
    canary_rate: float, stable_rate: float, steps: int = 12, n: float = 1000.0, m: float = 9000.0
):
    """Steps whose counts are exactly their expectation (hand-made, no noise)."""
    return [((canary_rate * n, n), (stable_rate * m, m))] * steps


def histogram(n: int, median: float, sigma: float, rng: np.random.Generator) -> HistogramStep:
    values = np.sort(np.exp(rng.normal(math.log(median), sigma, n)))
    cumulative = np.searchsorted(values, BOUNDS, side="right")
    return {**{b: float(c) for b, c in zip(BOUNDS, cumulative, strict=True)}, math.inf: float(n)}


# --- Counts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("canary_rate", "direction", "phase"),
    [
        (0.01, "Increase", "Successful"),  # identical
        (0.02, "Increase", "Failed"),  # twice the errors
        (0.005, "Increase", "Successful"),  # half the errors: the good direction
        (0.005, "Decrease", "Failed"),  # fewer events is worse (e.g. successful checkouts)
        (0.02, "Decrease", "Successful"),
        (0.02, "Either", "Failed"),
        (0.005, "Either", "Failed"),
        (0.0102, "Increase", "Successful"),  # 2% more: within the 5% tolerance
    ],
)
def test_counts_table(canary_rate: float, direction: str, phase: str) -> None:
    verdict = judge_counts(
        count_steps(canary_rate, 0.01),
        counts_judge(direction=direction),
        no_data_policy="Inconclusive",
        final=True,
    )
    assert verdict.phase == phase, verdict.message
    assert verdict.threshold == pytest.approx(100.0)
    assert (verdict.e_value >= 100.0) == (phase == "Failed")
    assert verdict.effect == pytest.approx(canary_rate / 0.01 - 1.0)


@pytest.mark.parametrize("policy", ["Inconclusive", "Failed"])
def test_counts_without_data_follow_the_declared_policy(policy: str) -> None:
    for steps in ([], [((0.0, 0.0), (5.0, 900.0))]):
        verdict = judge_counts(steps, counts_judge(), no_data_policy=policy, final=False)
        assert verdict.phase == policy and "noDataPolicy" in verdict.message


def test_counts_with_too_little_traffic_never_pass_at_the_last_look() -> None:
    # 2 canary requests a step, 0.5% errors: a canary twice as bad would not show.
    thin = count_steps(0.0, 0.005, n=2.0)
    assert (
        judge_counts(thin, counts_judge(), no_data_policy="Inconclusive", final=False).phase == "Successful"
    )
    last = judge_counts(thin, counts_judge(), no_data_policy="Inconclusive", final=True)
    assert last.phase == "Inconclusive" and "too little traffic" in last.message


def test_counts_evidence_grows_with_the_steps_seen() -> None:
    judge = counts_judge()
    values = [
        judge_counts(
            count_steps(0.013, 0.01, steps=k), judge, no_data_policy="Inconclusive", final=False
        ).e_value
        for k in (1, 4, 16, 64)
    ]
    assert values == sorted(values) and values[-1] >= 100.0


def test_counts_false_alarms_stay_within_alpha_at_every_look() -> None:
    """At the edge of the null (canary rate exactly 1 + tolerance times the stable's, Poisson
    and binomial counts), looking after every one of 20 steps: false alarms <= alpha."""
    rng = np.random.default_rng(20240601)
    judge = counts_judge(confidence=0.9, tolerance=0.05)  # alpha 0.1: a rate 200 trials can check
    trials, alarms = 200, 0
    for _ in range(trials):
        steps = []
        for _step in range(20):
            n, m = rng.poisson(1000), rng.poisson(9000)
            steps.append(
                ((float(rng.poisson(n * 0.0105)), float(n)), (float(rng.binomial(m, 0.01)), float(m)))
            )
            if judge_counts(steps, judge, no_data_policy="Inconclusive", final=False).phase == "Failed":
                alarms += 1
                break
    # alpha = 0.1; 200 trials: the 0.1 rate plus 2.5 standard errors.
    assert alarms / trials <= 0.1 + 2.5 * math.sqrt(0.09 / trials), alarms


# --- Distribution ------------------------------------------------------------------------------


def histogram_steps(canary_median: float, canary_sigma: float, seed: int = 1, steps: int = 12):
    rng = np.random.default_rng(seed)
    return [
        (histogram(1000, canary_median, canary_sigma, rng), histogram(9000, 0.080, 0.5, rng))
        for _ in range(steps)
    ]


@pytest.mark.parametrize(
    ("median", "sigma", "direction", "phase"),
    [
        (0.080, 0.5, "Increase", "Successful"),  # identical distributions
        (0.080 * 1.3, 0.5, "Increase", "Failed"),  # 30% slower throughout
        (0.080, 0.5 + math.log(1.3) / 2.326, "Increase", "Failed"),  # p99 +30%, median unchanged
        (0.080 * 0.8, 0.5, "Increase", "Successful"),  # faster: the good direction
        (0.080 * 0.8, 0.5, "Decrease", "Failed"),
        (0.080 * 1.02, 0.5, "Increase", "Successful"),  # 2% slower: within the 5% tolerance
    ],
)
def test_distribution_table(median: float, sigma: float, direction: str, phase: str) -> None:
    verdict = judge_distribution(
        histogram_steps(median, sigma),
        distribution_judge(direction=direction),
        no_data_policy="Inconclusive",
        final=True,
    )
    assert verdict.phase == phase, verdict.message
    assert {"canaryP50", "stableP50", "canaryP99", "stableP99"} <= set(verdict.facts)


def test_distribution_effect_is_the_slowdown_at_the_quantiles() -> None:
    verdict = judge_distribution(
        histogram_steps(0.080 * 1.3, 0.5), distribution_judge(), no_data_policy="Inconclusive", final=True
    )
    assert verdict.effect is not None and 0.2 < verdict.effect < 0.4
    assert "p50" in verdict.message and "p99" in verdict.message


@pytest.mark.parametrize("policy", ["Inconclusive", "Failed"])
def test_distribution_without_data_follows_the_declared_policy(policy: str) -> None:
    empty: HistogramStep = {math.inf: 0.0}
    for steps in ([], [(empty, empty)]):
        verdict = judge_distribution(steps, distribution_judge(), no_data_policy=policy, final=True)
        assert verdict.phase == policy and "noDataPolicy" in verdict.message


def test_distribution_false_alarms_stay_within_alpha_at_every_look() -> None:
    """At the edge of the null (the canary exactly 1 + tolerance times slower everywhere),
    looking after every step: false alarms <= alpha."""
    rng = np.random.default_rng(7)
    judge = distribution_judge(confidence=0.9, tolerance=0.05)
    trials, alarms = 100, 0
    for _ in range(trials):
        steps: list[tuple[HistogramStep, HistogramStep]] = []
        for _step in range(10):
            steps.append((histogram(300, 0.080 * 1.05, 0.5, rng), histogram(900, 0.080, 0.5, rng)))
            if judge_distribution(steps, judge, no_data_policy="Inconclusive", final=False).phase == "Failed":
                alarms += 1
                break
    assert alarms / trials <= 0.1 + 2.5 * math.sqrt(0.09 / trials), alarms


def test_histogram_quantile_interpolates_within_the_bucket() -> None:
    bounds = [0.1, 0.2, 0.4]
    cumulative = np.asarray([50.0, 90.0, 100.0])
    assert histogram_quantile(0.5, bounds, cumulative, 100.0) == pytest.approx(0.1)
    assert histogram_quantile(0.7, bounds, cumulative, 100.0) == pytest.approx(0.15)
    assert histogram_quantile(0.25, bounds, cumulative, 100.0) == pytest.approx(0.05)
    assert math.isnan(histogram_quantile(0.5, bounds, np.zeros(3), 0.0))

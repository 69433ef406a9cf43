"""Tables for the statistical canary judge (tidegate.core.judge) and a smoke test of its benchmark."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tidegate.api.analysis import Judge
from tidegate.core.judge import MIN_SAMPLES, JudgeVerdict, combine, judge_metric, look_alpha

RNG = np.random.default_rng(7)
STABLE = list(RNG.lognormal(np.log(100.0), 0.3, 60))
SAME = list(STABLE)
HIGHER = [x * 1.5 for x in RNG.lognormal(np.log(100.0), 0.3, 60)]
LOWER = [x * 0.6 for x in RNG.lognormal(np.log(100.0), 0.3, 60)]


def judge(**fields: object) -> Judge:
    return Judge.model_validate({"query": "rate(x{pod_template_hash='{{hash}}'}[10s])", **fields})


def verdict(
    canary: list[float],
    stable: list[float],
    *,
    policy: str = "Inconclusive",
    look: int = 1,
    planned_looks: int = 1,
    **fields: object,
) -> JudgeVerdict:
    return judge_metric(
        canary, stable, judge(**fields), no_data_policy=policy, look=look, planned_looks=planned_looks
    )


# --- judge_metric ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("canary", "direction", "phase"),
    [
        (SAME, "Increase", "Successful"),
        (SAME, "Decrease", "Successful"),
        (SAME, "Either", "Successful"),
        (HIGHER, "Increase", "Failed"),
        (LOWER, "Decrease", "Failed"),
        (HIGHER, "Either", "Failed"),
        (LOWER, "Either", "Failed"),
        (LOWER, "Increase", "Successful"),  # shift in the good direction
        (HIGHER, "Decrease", "Successful"),  # shift in the good direction
    ],
)
def test_direction_table(canary: list[float], direction: str, phase: str) -> None:
    result = verdict(canary, STABLE, direction=direction)
    assert result.phase == phase
    assert (result.canary_n, result.stable_n) == (60, 60)
    assert result.alpha == pytest.approx(0.01)


def test_identical_samples_have_no_effect() -> None:
    result = verdict(SAME, STABLE)
    assert result.effect == 0.0
    assert result.p_value is not None and result.p_value > 0.4
    assert result.message.startswith("no significant increase in the canary")


def test_clear_increase_reports_effect_and_p_value() -> None:
    result = verdict(HIGHER, STABLE)
    assert result.p_value is not None and result.p_value < 1e-6
    assert result.effect is not None and 0.3 < result.effect < 0.8
    assert "beyond the 5.0% tolerance" in result.message


def test_good_direction_has_large_p_value_and_negative_effect() -> None:
    result = verdict(LOWER, STABLE, direction="Increase")
    assert result.p_value is not None and result.p_value > 0.99
    assert result.effect is not None and result.effect < -0.2


def test_either_is_two_sided() -> None:
    one_sided = verdict(HIGHER, STABLE, direction="Increase")
    two_sided = verdict(HIGHER, STABLE, direction="Either")
    assert one_sided.p_value is not None and two_sided.p_value is not None
    assert two_sided.p_value == pytest.approx(2 * one_sided.p_value)


# A shift of +2% that the test finds significant: tight samples, many of them.
TIGHT_STABLE = [100.0 + 0.01 * i for i in range(200)]
TIGHT_CANARY = [102.0 + 0.01 * i for i in range(200)]


@pytest.mark.parametrize(
    ("tolerance", "phase"),
    [
        (0.05, "Successful"),  # significant, but +2% is within 5%
        (0.03, "Successful"),
        (0.01, "Failed"),  # +2% is beyond 1%
        (0.0, "Failed"),  # no tolerance: significance alone decides
    ],
)
def test_significant_shift_within_tolerance_passes(tolerance: float, phase: str) -> None:
    result = verdict(TIGHT_CANARY, TIGHT_STABLE, tolerance=tolerance)
    assert result.p_value is not None and result.p_value < 1e-10
    assert result.effect == pytest.approx(0.02, abs=0.001)
    assert result.phase == phase


def test_within_tolerance_message_says_so() -> None:
    assert "within the 5.0% tolerance" in verdict(TIGHT_CANARY, TIGHT_STABLE).message


NAN = math.nan
INF = math.inf
TOO_FEW = [1.0] * (MIN_SAMPLES - 1)


@pytest.mark.parametrize(
    ("canary", "stable"),
    [
        ([], STABLE),
        (STABLE, []),
        ([], []),
        (TOO_FEW, STABLE),
        (STABLE, TOO_FEW),
        ([NAN] * 30, STABLE),
        ([INF, -INF, NAN] * 10, STABLE),
        ([*TOO_FEW, NAN, NAN, INF], STABLE),  # enough values, too few finite ones
    ],
)
@pytest.mark.parametrize("policy", ["Inconclusive", "Failed"])
def test_no_data_follows_policy_and_is_never_successful(
    canary: list[float], stable: list[float], policy: str
) -> None:
    result = verdict(canary, stable, policy=policy)
    assert result.phase == policy
    assert result.phase != "Successful"
    assert result.p_value is None and result.effect is None
    assert "not enough data" in result.message


def test_no_data_is_inconclusive_by_default_policy_value() -> None:
    assert verdict([], STABLE).phase == "Inconclusive"


def test_samples_that_cannot_reach_significance_count_as_no_data() -> None:
    # 5 against 5: the smallest exact one-sided p-value is 1/252 ~ 0.004, above this look's alpha.
    canary, stable = [10.0, 11, 12, 13, 14], [1.0, 2, 3, 4, 5]
    assert look_alpha(0.99, 1, 10) < 1 / 252
    result = verdict(canary, stable, look=1, planned_looks=10)
    assert result.phase == "Inconclusive"
    assert "cannot reach significance" in result.message
    assert verdict(canary, stable, look=1, planned_looks=1).phase == "Failed"  # alpha 0.01 > 1/252


def test_nan_and_inf_are_dropped_before_testing() -> None:
    clean = verdict(HIGHER, STABLE)
    dirty = verdict([*HIGHER, NAN, INF], [NAN, *STABLE, -INF, NAN])
    assert dirty.phase == clean.phase == "Failed"
    assert (dirty.canary_n, dirty.stable_n) == (60, 60)
    assert dirty.p_value == pytest.approx(clean.p_value)
    assert dirty.effect == pytest.approx(clean.effect)
    assert "5 non-finite values dropped" in dirty.message


def test_all_equal_values_pass_with_p_value_one() -> None:
    result = verdict([3.0] * 10, [3.0] * 12)
    assert result.phase == "Successful"
    assert result.p_value == 1.0
    assert result.effect == 0.0


@pytest.mark.parametrize(
    ("canary", "stable", "effect"),
    [
        ([0.0] * 10, [0.0] * 10, 0.0),
        ([1.0] * 10, [0.0] * 10, math.inf),  # stable median and mean 0: any increase is infinite
        # stable median 0: its mean (0.1) is the scale; the median pairwise difference is 0.5
        ([0.0] * 5 + [2.0] * 5, [0.0] * 9 + [1.0], 0.5 / 0.1),
    ],
)
def test_effect_scale_when_stable_is_zero(canary: list[float], stable: list[float], effect: float) -> None:
    result = verdict(canary, stable)
    assert result.effect == pytest.approx(effect) if math.isfinite(effect) else result.effect == effect


@pytest.mark.parametrize("planned", [2, 3, 5, 10, 20])
def test_correction_makes_alpha_smaller_with_more_planned_looks(planned: int) -> None:
    assert look_alpha(0.99, 1, planned) < look_alpha(0.99, 1, planned - 1)
    alphas = [look_alpha(0.99, look, planned) for look in range(1, planned + 1)]
    assert sum(alphas) == pytest.approx(0.01)  # the whole budget, spread over the looks
    assert alphas == sorted(alphas, reverse=True)  # early looks get a little more
    assert all(a >= 0.01 / planned * 0.5 for a in alphas)


@pytest.mark.parametrize(
    ("confidence", "look", "planned", "alpha"),
    [
        (0.99, 1, 1, 0.01),
        (0.95, 1, 1, 0.05),
        (0.99, 1, 5, 0.01 * math.log(1 + (math.e - 1) / 5)),
        (0.99, 5, 5, 0.01 * (1 - math.log(1 + (math.e - 1) * 4 / 5))),
    ],
)
def test_look_alpha_values(confidence: float, look: int, planned: int, alpha: float) -> None:
    assert look_alpha(confidence, look, planned) == pytest.approx(alpha)


@pytest.mark.parametrize(("look", "planned"), [(0, 5), (6, 5), (1, 0), (-1, 3)])
def test_look_outside_the_plan_is_an_error(look: int, planned: int) -> None:
    with pytest.raises(ValueError, match="look"):
        verdict(SAME, STABLE, look=look, planned_looks=planned)


def test_unknown_no_data_policy_is_an_error() -> None:
    with pytest.raises(ValueError, match="no_data_policy"):
        verdict(SAME, STABLE, policy="Successful")


# p ~ 0.0053: significant at 0.01 (one look) but not at 0.0030 (look 1 of 5).
BORDER_STABLE = [float(x) for x in range(10, 30)]
BORDER_CANARY = [x + 5.5 for x in BORDER_STABLE]


def test_correction_changes_a_borderline_verdict() -> None:
    single = verdict(BORDER_CANARY, BORDER_STABLE, look=1, planned_looks=1)
    corrected = verdict(BORDER_CANARY, BORDER_STABLE, look=1, planned_looks=5)
    assert single.p_value == corrected.p_value
    assert single.p_value is not None and corrected.alpha < single.p_value < single.alpha
    assert single.phase == "Failed"
    assert corrected.phase == "Successful"


def test_metadata_records_the_facts() -> None:
    result = verdict(HIGHER, STABLE)
    meta = result.metadata()
    assert set(meta) == {"canaryN", "stableN", "pValue", "effect", "alpha", "verdict"}
    assert meta["canaryN"] == "60" and meta["stableN"] == "60"
    assert meta["verdict"] == "Failed"
    assert meta["alpha"] == "0.01"
    assert float(meta["pValue"]) == pytest.approx(result.p_value, rel=1e-3)
    assert float(meta["effect"]) == pytest.approx(result.effect, rel=1e-3)
    assert all(isinstance(v, str) for v in meta.values())


def test_metadata_without_a_test() -> None:
    meta = verdict([], STABLE).metadata()
    assert meta["pValue"] == "n/a" and meta["effect"] == "n/a"
    assert meta["verdict"] == "Inconclusive" and meta["canaryN"] == "0"


def test_verdict_is_frozen() -> None:
    result = verdict(SAME, STABLE)
    with pytest.raises(AttributeError):
        result.phase = "Failed"  # type: ignore[misc]


# --- combine ---------------------------------------------------------------------------------


def outcome(phase: str) -> JudgeVerdict:
    return JudgeVerdict(
        phase=phase,  # type: ignore[arg-type]
        canary_n=20,
        stable_n=20,
        p_value=None,
        effect=None,
        alpha=0.01,
        message=f"metric {phase.lower()}",
    )


def metrics(*spec: tuple[str, float] | tuple[str, float, bool]) -> list[tuple[Judge, JudgeVerdict]]:
    rows = []
    for item in spec:
        phase, weight = item[0], item[1]
        critical = item[2] if len(item) > 2 else False
        rows.append((judge(weight=weight, critical=critical), outcome(phase)))
    return rows


S, F, INC = "Successful", "Failed", "Inconclusive"


@pytest.mark.parametrize(
    ("spec", "phase", "score"),
    [
        pytest.param([(S, 1)] * 3, S, 1.0, id="all pass"),
        pytest.param([(F, 1)] * 3, F, 0.0, id="all fail"),
        pytest.param([(S, 1)] * 9 + [(F, 1)], S, 0.9, id="exactly pass score"),
        pytest.param([(S, 0.7), (S, 0.2), (F, 0.1)], S, 0.9, id="pass score with rounding"),
        pytest.param([(S, 89), (F, 11)], INC, 0.89, id="just below pass score"),
        pytest.param([(S, 6), (F, 4)], INC, 0.6, id="exactly marginal score"),
        pytest.param([(S, 59), (F, 41)], F, 0.59, id="just below marginal score"),
        pytest.param([(S, 10), (F, 1, True)], F, 10 / 11, id="critical failure beats score"),
        pytest.param([(S, 10), (F, 1)], S, 10 / 11, id="same failure, not critical"),
        pytest.param([(S, 1), (F, 3)], F, 0.25, id="weights count"),
        pytest.param([(S, 3), (F, 1)], INC, 0.75, id="weights count, other way"),
    ],
)
def test_combine_scores(spec: list[tuple[str, float]], phase: str, score: float) -> None:
    result = combine(metrics(*spec), pass_score=0.9, marginal_score=0.6)
    assert result.phase == phase
    assert result.score == pytest.approx(score)


@pytest.mark.parametrize(
    ("spec", "phase", "score", "max_score"),
    [
        # Inconclusive is unknown: Successful only if it would pass were they all failing,
        # Failed only if it would fail were they all passing.
        pytest.param([(INC, 1)] * 2, INC, 0.0, 1.0, id="all inconclusive: never failed, never passed"),
        pytest.param([(S, 1), (INC, 1)], INC, 0.5, 1.0, id="half unknown"),
        pytest.param([(S, 9), (INC, 1)], S, 0.9, 1.0, id="passes whatever the unknown is"),
        pytest.param([(F, 1), (INC, 1)], F, 0.0, 0.5, id="fails whatever the unknown is"),
        pytest.param([(S, 5), (F, 4), (INC, 1)], INC, 0.5, 0.6, id="unknown could reach marginal"),
        pytest.param([(S, 9), (INC, 1, True)], INC, 0.9, 1.0, id="critical inconclusive blocks success"),
        pytest.param([(S, 1), (F, 1), (INC, 1, True)], INC, 1 / 3, 2 / 3, id="critical unknown, marginal"),
    ],
)
def test_combine_inconclusive(
    spec: list[tuple[str, float]], phase: str, score: float, max_score: float
) -> None:
    result = combine(metrics(*spec), pass_score=0.9, marginal_score=0.6)
    assert result.phase == phase
    assert result.score == pytest.approx(score)
    assert result.max_score == pytest.approx(max_score)


def test_combine_without_metrics_is_inconclusive() -> None:
    assert combine([], 0.9, 0.6).phase == "Inconclusive"


def test_combine_message_names_the_critical_failure() -> None:
    result = combine(metrics((S, 10), (F, 1, True)), 0.9, 0.6)
    assert "critical" in result.message and "metric failed" in result.message


@pytest.mark.parametrize(("pass_score", "marginal", "phase"), [(1.0, 0.5, INC), (0.5, 0.4, S), (1.0, 1.0, F)])
def test_combine_uses_the_given_scores(pass_score: float, marginal: float, phase: str) -> None:
    assert combine(metrics((S, 2), (F, 1)), pass_score, marginal).phase == phase

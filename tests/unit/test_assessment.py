"""Assessment tables: a measurement's phase, a metric's phase, the run's phase, timing."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tidegate.api.analysis import Measurement, Metric, MetricResult
from tidegate.api.rollout import MeasurementRetention, MetricNameRef
from tidegate.core.assessment import (
    DEFAULT_MEASUREMENT_RETENTION,
    Tally,
    assess_metric,
    assess_run,
    assess_value,
    compile_conditions,
    effective_count,
    is_dry_run,
    is_no_data,
    next_measurement_due,
    record,
    retain,
    retention_limit,
)
from tidegate.core.expressions import ExpressionError

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
NAN = math.nan

PHASES = {"S": "Successful", "F": "Failed", "I": "Inconclusive", "E": "Error", "R": "Running"}


def metric(**fields: Any) -> Metric:
    return Metric(name="success-rate", **fields)


def measurements(code: str, *, start: datetime = T0, every: float = 30.0) -> list[Measurement]:
    """'SSF' -> three measurements, 30s apart; R is one still in progress."""
    out = []
    for i, letter in enumerate(code):
        at = start + timedelta(seconds=i * every)
        out.append(
            Measurement(
                phase=PHASES[letter],
                value=None if letter in "ER" else f"0.{90 + i}",
                message="boom" if letter == "E" else None,
                started_at=at.isoformat(),
                finished_at=None if letter == "R" else (at + timedelta(seconds=1)).isoformat(),
            )
        )
    return out


# --- one measurement ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("success", "failure", "value", "phase", "message"),
    [
        # Both conditions.
        ("result[0] >= 0.95", "result[0] < 0.5", [0.99], "Successful", "successCondition result[0] >= 0.95"),
        ("result[0] >= 0.95", "result[0] < 0.5", [0.4], "Failed", "failureCondition result[0] < 0.5"),
        ("result[0] >= 0.95", "result[0] < 0.5", [0.7], "Inconclusive", "neither successCondition"),
        ("result[0] >= 0.5", "result[0] < 0.9", [0.7], "Failed", "failureCondition"),  # both true: fail
        # Only one: the other is its negation (Argo).
        ("result[0] >= 0.95", None, [0.99], "Successful", "successCondition result[0] >= 0.95"),
        ("result[0] >= 0.95", None, [0.90], "Failed", "successCondition result[0] >= 0.95 is false"),
        (None, "result[0] < 0.5", [0.4], "Failed", "failureCondition result[0] < 0.5"),
        (None, "result[0] < 0.5", [0.6], "Successful", "failureCondition result[0] < 0.5 is false"),
        # None: the value is recorded.
        (None, None, [0.1], "Successful", "value recorded"),
        # Ints and doubles.
        ("result[0] >= 1", None, [1.0], "Successful", "successCondition"),
        # Errors in the expression.
        ("result[1] > 0", None, [0.5], "Error", "index out of range"),
        ("result[0]", None, [0.5], "Error", "must be true or false"),
        (None, "result.x > 1", {"y": 1}, "Error", "no such member"),
        # A vector with some NaN still holds data.
        ("result.exists(x, isNaN(x))", None, [0.5, NAN], "Successful", "successCondition"),
    ],
)
def test_assess_value(
    success: str | None, failure: str | None, value: object, phase: str, message: str
) -> None:
    spec = metric(success_condition=success, failure_condition=failure)
    compiled_success, compiled_failure = compile_conditions(spec)
    got_phase, got_message = assess_value(spec, compiled_success, compiled_failure, value)
    assert (got_phase, message in got_message) == (phase, True), got_message


@pytest.mark.parametrize(
    ("value", "reason"),
    [(None, "null result"), ([], "empty result"), (NAN, "NaN"), ([NAN, NAN], "every value is NaN")],
)
@pytest.mark.parametrize("policy", ["Inconclusive", "Failed"])
@pytest.mark.parametrize(
    ("success", "failure"),
    [
        ("true", None),  # a condition that would pass anything
        (None, "false"),
        ("len(result) == 0 || isNaN(result)", None),
        (None, None),
    ],
)
def test_no_data_follows_the_policy_and_is_never_successful(
    value: object, reason: str, policy: str, success: str | None, failure: str | None
) -> None:
    spec = metric(success_condition=success, failure_condition=failure, no_data_policy=policy)
    phase, message = assess_value(spec, *compile_conditions(spec), value)
    assert phase == policy
    assert message == f"no data ({reason}); noDataPolicy {policy}"


def test_no_data_defaults_to_inconclusive() -> None:
    spec = metric(success_condition="true")
    assert assess_value(spec, *compile_conditions(spec), [])[0] == "Inconclusive"


def test_a_provider_can_say_there_is_no_data() -> None:
    spec = metric(success_condition="true")
    phase, message = assess_value(spec, *compile_conditions(spec), 0.0, no_data=True)
    assert (phase, message) == ("Inconclusive", "no data (no data); noDataPolicy Inconclusive")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "null result"),
        ([], "empty result"),
        ((), "empty result"),
        (NAN, "NaN"),
        ([NAN], "every value is NaN"),
        ([NAN, 1.0], None),
        (0.0, None),
        ([0.0], None),
        ({}, None),
        ("", None),
        (False, None),
    ],
)
def test_is_no_data(value: object, expected: str | None) -> None:
    assert is_no_data(value) == expected


def test_compile_conditions_names_the_metric_and_field() -> None:
    with pytest.raises(
        ExpressionError, match=r"metric success-rate: failureCondition: condition 'result\[0\] <'"
    ):
        compile_conditions(metric(success_condition="result[0] > 1", failure_condition="result[0] <"))
    assert compile_conditions(metric(success_condition="  ")) == (None, None)


# --- a metric ------------------------------------------------------------------------------

COUNTED = {"interval": "30s", "count": 5}


@pytest.mark.parametrize(
    ("fields", "code", "phase"),
    [
        # failureLimit: failed measurements tolerated; one more fails the metric.
        ({**COUNTED, "failure_limit": 0}, "", "Running"),
        ({**COUNTED, "failure_limit": 0}, "S", "Running"),
        ({**COUNTED, "failure_limit": 0}, "F", "Failed"),
        ({**COUNTED, "failure_limit": 1}, "F", "Running"),
        ({**COUNTED, "failure_limit": 1}, "FS", "Running"),
        ({**COUNTED, "failure_limit": 1}, "FSF", "Failed"),
        ({**COUNTED, "failure_limit": 2}, "FF", "Running"),
        ({**COUNTED, "failure_limit": 2}, "FFF", "Failed"),
        ({**COUNTED, "failure_limit": 4}, "FFFF", "Running"),
        ({**COUNTED, "failure_limit": 4}, "FFFFF", "Failed"),  # count reached, limit exceeded
        ({**COUNTED, "failure_limit": 5}, "FFFFF", "Successful"),  # tolerated: count reached
        # inconclusiveLimit.
        ({**COUNTED, "inconclusive_limit": 0}, "I", "Inconclusive"),
        ({**COUNTED, "inconclusive_limit": 1}, "I", "Running"),
        ({**COUNTED, "inconclusive_limit": 1}, "ISI", "Inconclusive"),
        ({**COUNTED, "inconclusive_limit": 2}, "SSSII", "Successful"),
        # consecutiveErrorLimit (default 4): errors in a row tolerated.
        (COUNTED, "EEEE", "Running"),
        (COUNTED, "EEEEE", "Error"),
        (COUNTED, "EEEESEEEE", "Running"),  # a success resets the streak
        (COUNTED, "EEEESEEEEE", "Error"),
        ({**COUNTED, "failure_limit": 3}, "EEEEFEEEE", "Running"),  # so does any non-error
        ({**COUNTED, "inconclusive_limit": 3}, "EEEEIEEEE", "Running"),
        ({**COUNTED, "consecutive_error_limit": 0}, "E", "Error"),
        ({**COUNTED, "consecutive_error_limit": 1}, "E", "Running"),
        ({**COUNTED, "consecutive_error_limit": 1}, "EE", "Error"),
        ({**COUNTED, "consecutive_error_limit": 1}, "ESE", "Running"),
        # count: errors do not count toward it.
        (COUNTED, "SSSS", "Running"),
        (COUNTED, "SSSSS", "Successful"),
        (COUNTED, "SSESS", "Running"),
        (COUNTED, "SSESSES", "Successful"),
        ({**COUNTED, "failure_limit": 1}, "SFSSS", "Successful"),
        ({**COUNTED, "inconclusive_limit": 1}, "SISSS", "Successful"),
        ({"interval": "30s", "count": "3"}, "SSS", "Successful"),  # count as a string
        ({"interval": "30s", "count": 0}, "S" * 50, "Running"),  # 0 = until stopped
        # No interval: measure once.
        ({}, "", "Running"),
        ({}, "S", "Successful"),
        ({}, "F", "Failed"),
        ({}, "I", "Inconclusive"),
        ({"failure_limit": 1}, "F", "Successful"),
        ({}, "E", "Running"),  # an error is retried
        ({}, "EEEES", "Successful"),
        ({}, "EEEEE", "Error"),
        # Interval without count: until stopped.
        ({"interval": "1m"}, "S" * 100, "Running"),
        ({"interval": "1m"}, "S" * 100 + "F", "Failed"),
        # A measurement in progress.
        (COUNTED, "SSSSR", "Running"),
        ({}, "R", "Running"),
    ],
)
def test_metric_phase(fields: dict[str, Any], code: str, phase: str) -> None:
    assert assess_metric(metric(**fields), measurements(code)).phase == phase


def test_failed_message_names_metric_value_condition_and_limit() -> None:
    spec = metric(**COUNTED, failure_limit=1)
    failed = Measurement(phase="Failed", value="0.80", message="failureCondition result[0] < 0.9")
    verdict = assess_metric(spec, [failed, *measurements("S"), failed])
    assert verdict.phase == "Failed"
    assert verdict.message == (
        "metric success-rate failed: measured 0.80 (failureCondition result[0] < 0.9), "
        "2 failed measurements exceed failureLimit 1"
    )


def test_error_message_names_the_streak_and_last_error() -> None:
    verdict = assess_metric(metric(**COUNTED), measurements("EEEEE"))
    assert verdict.message == (
        "metric success-rate errored: 5 errors in a row exceed consecutiveErrorLimit 4; last: boom"
    )


def test_inconclusive_message() -> None:
    spec = metric(**COUNTED)
    inconclusive = Measurement(phase="Inconclusive", value="[]", message="no data (empty result)")
    verdict = assess_metric(spec, [inconclusive])
    assert verdict.message == (
        "metric success-rate inconclusive: measured [] (no data (empty result)), "
        "1 inconclusive measurements exceed inconclusiveLimit 0"
    )


def test_successful_and_running_messages() -> None:
    spec = metric(interval="30s", count=3, failure_limit=1)
    assert assess_metric(spec, []).message == "metric success-rate: waiting for the first measurement"
    assert assess_metric(spec, measurements("SE")).message == (
        "metric success-rate: 1 of 3 measurements; last boom"
    )
    assert assess_metric(spec, measurements("SFS")).message == (
        "metric success-rate successful: 3 measurements (2 successful, 1 failed); last measured 0.92"
    )


def test_dry_run_marks_the_message_but_keeps_the_phase() -> None:
    verdict = assess_metric(metric(), measurements("F"), dry_run=True)
    assert verdict.phase == "Failed"
    assert verdict.message.startswith("metric success-rate (dry-run) failed:")


@pytest.mark.parametrize(("code", "phase"), [("", "Successful"), ("SS", "Successful"), ("F", "Failed")])
def test_terminated_ends_a_running_metric_successfully(code: str, phase: str) -> None:
    assert assess_metric(metric(interval="1m"), measurements(code), terminated=True).phase == phase


def test_counters_of_a_metric_result_survive_retention() -> None:
    """Only the last measurement is retained, yet the counters remember two failures."""
    result = MetricResult(
        name="success-rate", count=3, successful=1, failed=2, measurements=measurements("F")
    )
    assert assess_metric(metric(**COUNTED, failure_limit=1), result).phase == "Failed"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [({}, 1), ({"count": 3}, 3), ({"interval": "1m"}, None), ({"interval": "1m", "count": "4"}, 4)],
)
def test_effective_count(fields: dict[str, Any], expected: int | None) -> None:
    assert effective_count(metric(**fields)) == expected


@pytest.mark.parametrize("count", ["three", "-1"])
def test_a_count_that_is_not_a_whole_number_is_an_error(count: str) -> None:
    with pytest.raises(ValueError, match="metric success-rate: count"):
        effective_count(metric(count=count))


# --- timing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "code", "now", "due"),
    [
        # The first measurement: after initialDelay.
        ({"interval": "30s"}, "", 0, 0),
        ({"interval": "30s", "initial_delay": "10s"}, "", 0, 10),
        ({"interval": "30s", "initial_delay": "10s"}, "", 4, 10),
        ({"interval": "30s", "initial_delay": "10s"}, "", 25, 25),  # late: due now
        ({"initial_delay": "1m"}, "", 0, 60),
        # Then every interval after the last one finished (finished at 1s, 31s, ...).
        ({"interval": "30s"}, "S", 5, 31),
        ({"interval": "30s"}, "SS", 40, 61),
        ({"interval": "30s"}, "SS", 100, 100),
        # After an error: 10s, or the interval when shorter.
        ({"interval": "30s"}, "E", 2, 11),
        ({"interval": "5s"}, "E", 2, 6),
        ({}, "E", 2, 11),
        # A count without interval: back to back.
        ({"count": 2}, "S", 2, 2),
        # Nothing more due.
        ({}, "S", 5, None),
        ({"interval": "30s", "count": 2}, "SS", 100, None),
        ({"interval": "30s"}, "F", 100, None),
        ({"interval": "30s"}, "EEEEE", 200, None),
        ({"interval": "30s"}, "SR", 100, None),
    ],
)
def test_next_measurement_due(fields: dict[str, Any], code: str, now: float, due: float | None) -> None:
    got = next_measurement_due(metric(**fields), measurements(code), T0, T0 + timedelta(seconds=now))
    assert got == (None if due is None else T0 + timedelta(seconds=due))


def test_next_measurement_due_reads_times_without_zone_as_utc() -> None:
    last = Measurement(phase="Successful", value="1", finished_at="2024-05-01T12:00:00")
    assert next_measurement_due(metric(interval="1m"), [last], T0, T0) == T0 + timedelta(minutes=1)
    zulu = Measurement(phase="Successful", value="1", finished_at="2024-05-01T12:00:00Z")
    assert next_measurement_due(metric(interval="1m"), [zulu], T0, T0) == T0 + timedelta(minutes=1)


# --- bookkeeping -------------------------------------------------------------------------------


@pytest.mark.parametrize(("available", "limit", "kept"), [(12, 10, 10), (3, 10, 3), (5, 1, 1), (0, 10, 0)])
def test_retain_keeps_the_latest(available: int, limit: int, kept: int) -> None:
    items = measurements("S" * available)
    assert retain(items, limit) == items[available - kept :]


def test_retain_defaults_to_ten_and_refuses_zero() -> None:
    assert DEFAULT_MEASUREMENT_RETENTION == 10
    assert len(retain(measurements("S" * 15))) == 10
    with pytest.raises(ValueError, match="at least 1"):
        retain([], 0)


def test_retention_limit() -> None:
    retentions = [MeasurementRetention(metric_name="latency", limit=3)]
    assert retention_limit(retentions, "latency") == 3
    assert retention_limit(retentions, "success-rate") == 10
    assert retention_limit([], "latency") == 10


def test_is_dry_run_matches_exact_names() -> None:
    refs = [MetricNameRef(metric_name="latency")]
    assert is_dry_run(refs, "latency")
    assert not is_dry_run(refs, "latency-p99")
    assert not is_dry_run([MetricNameRef(metric_name=".*")], "latency")


def test_record_counts_retains_and_assesses() -> None:
    spec = metric(**COUNTED, failure_limit=1)
    result = MetricResult(name="success-rate")
    for item in measurements("EESFEE"):
        result = record(result, item, metric=spec, retention=3)
    assert (result.count, result.successful, result.failed, result.error, result.consecutive_error) == (
        2,
        1,
        1,
        4,
        2,
    )
    assert [m.phase for m in result.measurements] == ["Failed", "Error", "Error"]
    assert result.phase == "Running"
    result = record(result, measurements("F")[0], metric=spec, retention=3)
    assert result.phase == "Failed"
    assert result.message is not None and result.message.startswith("metric success-rate failed:")
    assert result.consecutive_error == 0


def test_record_marks_dry_run() -> None:
    result = record(MetricResult(name="x"), measurements("F")[0], metric=metric(), dry_run=True)
    assert result.dry_run and result.phase == "Failed"


def test_tally_from_list_equals_tally_of_record() -> None:
    tally = Tally.of(measurements("SEFIE"))
    assert (tally.count, tally.successful, tally.failed, tally.inconclusive, tally.error) == (3, 1, 1, 1, 2)
    assert tally.consecutive_error == 1


# --- the run ------------------------------------------------------------------------------------


def result_of(name: str, phase: str, *, dry_run: bool = False) -> MetricResult:
    return MetricResult(name=name, phase=phase, message=f"metric {name} {phase.lower()}", dry_run=dry_run)


@pytest.mark.parametrize(
    ("results", "phase"),
    [
        ([], "Pending"),
        ([("a", "Successful", False)], "Successful"),
        ([("a", "Successful", False), ("b", "Successful", False)], "Successful"),
        ([("a", "Successful", False), ("b", "Running", False)], "Running"),
        ([("a", "Running", False), ("b", "Inconclusive", False)], "Inconclusive"),
        ([("a", "Inconclusive", False), ("b", "Error", False)], "Error"),
        ([("a", "Error", False), ("b", "Failed", False)], "Failed"),
        ([("a", "Failed", False), ("b", "Running", False)], "Failed"),
        ([("a", "Successful", False), ("b", "Pending", False)], "Pending"),
        # Dry-run metrics never fail the run...
        ([("a", "Successful", False), ("b", "Failed", True)], "Successful"),
        ([("a", "Successful", False), ("b", "Error", True)], "Successful"),
        ([("a", "Running", False), ("b", "Inconclusive", True)], "Running"),
        ([("b", "Failed", True)], "Successful"),
        # ...but the run waits for them.
        ([("a", "Successful", False), ("b", "Running", True)], "Running"),
    ],
)
def test_run_phase_worst_wins(results: list[tuple[str, str, bool]], phase: str) -> None:
    verdict = assess_run([result_of(name, p, dry_run=dry) for name, p, dry in results])
    assert verdict.phase == phase


def test_run_message_names_the_worst_metrics() -> None:
    verdict = assess_run(
        [
            result_of("a", "Failed"),
            result_of("b", "Successful"),
            result_of("c", "Failed"),
            result_of("d", "Error"),
        ]
    )
    assert verdict.message == "metric a failed; metric c failed"


def test_run_message_mentions_dry_run_failures() -> None:
    verdict = assess_run([result_of("a", "Successful"), result_of("b", "Failed", dry_run=True)])
    assert verdict.message == "all metrics successful: a (dry-run, not counted: metric b failed)"


# --- consecutiveSuccessLimit: Argo v1.8's assessMetricStatus, row by row ------------------

CSL_ONLY = {"interval": "60s", "failure_limit": -1}
CSL_AND_FAILURES = {"interval": "60s", "failure_limit": 4, "consecutive_success_limit": 4}


def counters(failed: int, successful: int, streak: int, *, last: str = "Failed") -> MetricResult:
    return MetricResult(
        name="success-rate",
        failed=failed,
        successful=successful,
        count=failed + successful,
        consecutive_success=streak,
        measurements=[
            Measurement(phase=last, value="99", started_at=T0.isoformat(), finished_at=T0.isoformat())
        ],
    )


@pytest.mark.parametrize(
    ("fields", "result", "running", "terminated"),
    [
        # TestAssessMetricStatusConsecutiveSuccessLimit: failureLimit -1, no count.
        ({**CSL_ONLY, "consecutive_success_limit": 3}, counters(3, 4, 3), "Successful", "Successful"),
        ({**CSL_ONLY, "consecutive_success_limit": 5}, counters(3, 4, 3), "Running", "Successful"),
        # ... count 7, reached.
        ({**CSL_ONLY, "consecutive_success_limit": 5, "count": 7}, counters(3, 4, 3), "Failed", "Failed"),
        (
            {**CSL_ONLY, "consecutive_success_limit": 3, "count": 7},
            counters(3, 4, 3),
            "Successful",
            "Successful",
        ),
        # ... count 9, not reached.
        (
            {**CSL_ONLY, "consecutive_success_limit": 3, "count": 9},
            counters(3, 4, 3),
            "Successful",
            "Successful",
        ),
        (
            {**CSL_ONLY, "consecutive_success_limit": 5, "count": 9},
            counters(3, 4, 3),
            "Running",
            "Successful",
        ),
        # TestAssessMetricStatusFailureLimitAndConsecutiveSuccessLimit: failureLimit 4, limit 4.
        (CSL_AND_FAILURES, counters(3, 4, 3), "Running", "Successful"),
        (CSL_AND_FAILURES, counters(5, 4, 0), "Failed", "Failed"),
        (CSL_AND_FAILURES, counters(3, 5, 4, last="Successful"), "Successful", "Successful"),
        (CSL_AND_FAILURES, counters(5, 5, 4, last="Successful"), "Failed", "Failed"),
        # ... count 10, reached: short of the streak is Inconclusive while failures are counted.
        ({**CSL_AND_FAILURES, "count": 10}, counters(4, 6, 3), "Inconclusive", "Inconclusive"),
        ({**CSL_AND_FAILURES, "count": 10}, counters(5, 5, 3), "Failed", "Failed"),
        ({**CSL_AND_FAILURES, "count": 10}, counters(4, 6, 4, last="Successful"), "Successful", "Successful"),
        ({**CSL_AND_FAILURES, "count": 10}, counters(5, 5, 4, last="Successful"), "Failed", "Failed"),
        # consecutiveSuccessLimit 0 or omitted: off, the count decides as before.
        (
            {"interval": "60s", "count": 7, "consecutive_success_limit": 0},
            counters(0, 7, 7),
            "Successful",
            "Successful",
        ),
        (
            {"interval": "60s", "count": 7, "consecutive_success_limit": "2"},
            counters(0, 2, 2),
            "Successful",
            "Successful",
        ),
    ],
)
def test_consecutive_success_limit_as_argo_assesses_it(
    fields: dict[str, Any], result: MetricResult, running: str, terminated: str
) -> None:
    assert assess_metric(metric(**fields), result).phase == running
    assert assess_metric(metric(**fields), result, terminated=True).phase == terminated


def test_the_streak_is_counted_and_reset_by_anything_but_a_success() -> None:
    m = metric(interval="30s", consecutive_success_limit=3, failure_limit=5)
    result = MetricResult(name="success-rate")
    streaks = []
    for measurement in measurements("SSFSSESSS"):
        result = record(result, measurement, metric=m)
        streaks.append(result.consecutive_success)
    assert streaks == [1, 2, 0, 1, 2, 0, 1, 2, 3]
    assert result.phase == "Successful"
    assert "3 successful measurements in a row reach consecutiveSuccessLimit 3" in (result.message or "")


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"failure_limit": -1}, "failureLimit and consecutiveSuccessLimit cannot both be disabled"),
        ({"failure_limit": -2, "consecutive_success_limit": 1}, "failureLimit cannot be negative except -1"),
        ({"consecutive_success_limit": -1}, "consecutiveSuccessLimit cannot be negative"),
    ],
)
def test_limits_argo_refuses_are_errors_naming_the_field(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        assess_metric(metric(interval="30s", **fields), [])

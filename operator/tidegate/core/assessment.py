"""Assessment: what a measurement means, what a metric's measurements mean, and the run's verdict.

The semantics are Argo Rollouts' (`analysis.assessMetricStatus` and `EvaluateResult`):

- a measurement is Successful, Failed, Inconclusive or Error (`assess_value`);
- a metric fails when its failed measurements exceed `failureLimit`, is Inconclusive when
  its inconclusive ones exceed `inconclusiveLimit`, errs when its errors *in a row* exceed
  `consecutiveErrorLimit`; any measurement that is not an error resets that streak;
- errors do not count toward `count`; reaching `count` with no limit exceeded is
  Successful; a metric without `interval` (and without `count`) measures once;
- `consecutiveSuccessLimit` successes in a row make a metric Successful at once; with it,
  reaching `count` without them is Inconclusive, or Failed when `failureLimit` is -1
  (Argo v1.8's `assessMetricStatus`);
- the run takes the worst phase of its metrics (`assess_run`); dry-run metrics are
  recorded and reported but never fail the run.

Tidegate's addition: a result without data (empty vector, NaN, null) is never
Successful; the metric's `noDataPolicy` says whether it is Inconclusive (default) or Failed.

Counting works on a `MetricResult`'s counters (which survive `measurementRetention`) or
on a plain list of measurements (all of them); `record` keeps both in step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from tidegate.api.analysis import AnalysisPhase, Measurement, Metric, MetricResult
from tidegate.api.rollout import MeasurementRetention, MetricNameRef
from tidegate.core.durations import parse_duration
from tidegate.core.expressions import CompiledExpression, ExpressionError, compile_expression

__all__ = [
    "DEFAULT_MEASUREMENT_RETENTION",
    "ERROR_RETRY_INTERVAL",
    "MeasurementPhase",
    "MetricPhase",
    "Tally",
    "Verdict",
    "assess_metric",
    "assess_run",
    "assess_value",
    "compile_conditions",
    "effective_count",
    "is_dry_run",
    "is_no_data",
    "limits",
    "next_measurement_due",
    "record",
    "retain",
    "retention_limit",
]

DEFAULT_MEASUREMENT_RETENTION = 10
"""Measurements kept per metric when measurementRetention does not say."""

ERROR_RETRY_INTERVAL = 10.0
"""Seconds before measuring again after an error (Argo's DefaultErrorRetryInterval), or the
metric's interval when that is shorter."""

MeasurementPhase = Literal["Successful", "Failed", "Inconclusive", "Error"]
MetricPhase = Literal["Running", "Successful", "Failed", "Error", "Inconclusive"]

_IN_PROGRESS: frozenset[str] = frozenset({"Running", "Pending"})


@dataclass(frozen=True)
class Verdict:
    phase: AnalysisPhase
    message: str


# --- one measurement -----------------------------------------------------------------


def is_no_data(value: object) -> str | None:
    """Why `value` holds no data (null, empty, NaN, all NaN), or None when it holds some."""
    if value is None:
        return "null result"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, list | tuple):
        if not value:
            return "empty result"
        if all(isinstance(item, float) and math.isnan(item) for item in value):
            return "every value is NaN"
    return None


def compile_conditions(metric: Metric) -> tuple[CompiledExpression | None, CompiledExpression | None]:
    """The metric's (successCondition, failureCondition), compiled; ExpressionError names the metric."""
    compiled: list[CompiledExpression | None] = []
    for field_name, text in (
        ("successCondition", metric.success_condition),
        ("failureCondition", metric.failure_condition),
    ):
        if text is None or not text.strip():
            compiled.append(None)
            continue
        try:
            compiled.append(compile_expression(text))
        except ExpressionError as error:
            raise ExpressionError(f"metric {metric.name}: {field_name}: {error}") from None
    return compiled[0], compiled[1]


def assess_value(
    metric: Metric,
    success: CompiledExpression | None,
    failure: CompiledExpression | None,
    value: object,
    *,
    no_data: bool = False,
) -> tuple[MeasurementPhase, str]:
    """The phase of one measurement, and why.

    No data (or `no_data=True` from the provider) follows the metric's `noDataPolicy`, never
    Successful. With both conditions, a true failureCondition wins (as in Argo); with only
    one, the other is its negation; with none, any value is Successful (recorded only).
    """
    reason = is_no_data(value) or ("no data" if no_data else None)
    if reason is not None:
        policy = metric.no_data_policy
        return policy, f"no data ({reason}); noDataPolicy {policy}"
    if success is None and failure is None:
        return "Successful", "no successCondition or failureCondition: value recorded"
    try:
        succeeded = success.evaluate(value) if success is not None else False
        failed = failure.evaluate(value) if failure is not None else False
    except ExpressionError as error:
        return "Error", str(error)
    if success is None:
        succeeded = not failed
    if failure is None:
        failed = not succeeded
    if failed:
        return "Failed", (
            f"failureCondition {failure.text}" if failure else f"successCondition {_text(success)} is false"
        )
    if succeeded:
        return "Successful", (
            f"successCondition {success.text}" if success else f"failureCondition {_text(failure)} is false"
        )
    return "Inconclusive", (
        f"neither successCondition {_text(success)} nor failureCondition {_text(failure)} is true"
    )


def _text(expression: CompiledExpression | None) -> str:
    return expression.text if expression is not None else ""


# --- a metric's measurements ---------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    """Counters of a metric's measurements, as MetricResult keeps them."""

    count: int = 0
    """Measurements that were not errors (these count toward `count`)."""
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0
    consecutive_error: int = 0
    consecutive_success: int = 0
    measurements: tuple[Measurement, ...] = field(default=())
    """The measurements at hand (all of them, or the retained ones of a MetricResult)."""

    @classmethod
    def of(cls, measurements: Sequence[Measurement] | MetricResult | Tally) -> Tally:
        if isinstance(measurements, Tally):
            return measurements
        if isinstance(measurements, MetricResult):
            return cls(
                count=measurements.count,
                successful=measurements.successful,
                failed=measurements.failed,
                inconclusive=measurements.inconclusive,
                error=measurements.error,
                consecutive_error=measurements.consecutive_error,
                consecutive_success=measurements.consecutive_success,
                measurements=tuple(measurements.measurements),
            )
        tally = cls()
        for measurement in measurements:
            tally = tally.add(measurement)
        return tally

    def add(self, measurement: Measurement) -> Tally:
        """The tally with one more measurement (an in-progress one counts for nothing yet)."""
        phase = measurement.phase
        measurements = (*self.measurements, measurement)
        if phase == "Error":
            return replace(
                self,
                error=self.error + 1,
                consecutive_error=self.consecutive_error + 1,
                consecutive_success=0,
                measurements=measurements,
            )
        if phase in _IN_PROGRESS:
            return replace(self, measurements=measurements)
        return replace(
            self,
            count=self.count + 1,
            successful=self.successful + (phase == "Successful"),
            failed=self.failed + (phase == "Failed"),
            inconclusive=self.inconclusive + (phase == "Inconclusive"),
            consecutive_error=0,
            consecutive_success=self.consecutive_success + 1 if phase == "Successful" else 0,
            measurements=measurements,
        )

    @property
    def last(self) -> Measurement | None:
        return self.measurements[-1] if self.measurements else None

    def last_of(self, phase: AnalysisPhase) -> Measurement | None:
        for measurement in reversed(self.measurements):
            if measurement.phase == phase:
                return measurement
        return self.last


def _whole_number(value: int | str, what: str, metric: Metric, *, off: int | None = None) -> int:
    """`off`: the one negative value allowed, meaning "no limit" (failureLimit's -1)."""
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"metric {metric.name}: {what} must be a whole number, not {value!r}") from None
    if number < 0 and number != off:
        allowed = f" except {off} (no limit)" if off is not None else ""
        raise ValueError(f"metric {metric.name}: {what} cannot be negative{allowed} ({number})")
    return number


FAILURE_LIMIT_OFF = -1
"""failureLimit -1: failures are not counted (Argo v1.8, with consecutiveSuccessLimit)."""


def limits(metric: Metric) -> tuple[int, int]:
    """(failureLimit, consecutiveSuccessLimit) as numbers; ValueError as Argo's `ValidateMetric`
    words them: -1 is the only negative failureLimit, and not both may be off."""
    failure_limit = _whole_number(metric.failure_limit, "failureLimit", metric, off=FAILURE_LIMIT_OFF)
    success_limit = (
        _whole_number(metric.consecutive_success_limit, "consecutiveSuccessLimit", metric)
        if metric.consecutive_success_limit is not None
        else 0
    )
    if success_limit == 0 and failure_limit == FAILURE_LIMIT_OFF:
        raise ValueError(
            f"metric {metric.name}: failureLimit and consecutiveSuccessLimit cannot both be disabled"
        )
    return failure_limit, success_limit


def effective_count(metric: Metric) -> int | None:
    """Measurements the metric takes: its count, 1 without an interval, None for "until stopped"."""
    count = _whole_number(metric.count, "count", metric) if metric.count is not None else 0
    if count > 0:
        return count
    if metric.interval is None:
        return 1
    return None


def _describe(measurement: Measurement | None) -> str:
    if measurement is None:
        return "no measurement"
    if measurement.value is not None:
        text = f"measured {measurement.value}"
        return f"{text} ({measurement.message})" if measurement.message else text
    return measurement.message or f"{measurement.phase.lower()} measurement"


def assess_metric(
    metric: Metric,
    measurements: Sequence[Measurement] | MetricResult | Tally,
    *,
    dry_run: bool = False,
    terminated: bool = False,
) -> Verdict:
    """The metric's phase from its measurements so far, with a message naming the metric and value.

    `terminated` (the run was told to stop): a metric still running ends Successful, as in Argo.
    `dry_run` only marks the message; the run ignores the phase (see `assess_run`).
    """
    tally = Tally.of(measurements)
    label = f"metric {metric.name}" + (" (dry-run)" if dry_run else "")
    failure_limit, success_limit = limits(metric)
    inconclusive_limit = _whole_number(metric.inconclusive_limit, "inconclusiveLimit", metric)
    consecutive_error_limit = _whole_number(metric.consecutive_error_limit, "consecutiveErrorLimit", metric)
    if failure_limit != FAILURE_LIMIT_OFF and tally.failed > failure_limit:
        return Verdict(
            "Failed",
            f"{label} failed: {_describe(tally.last_of('Failed'))}, "
            f"{tally.failed} failed measurements exceed failureLimit {failure_limit}",
        )
    if tally.consecutive_error > consecutive_error_limit:
        return Verdict(
            "Error",
            f"{label} errored: {tally.consecutive_error} errors in a row exceed consecutiveErrorLimit "
            f"{consecutive_error_limit}; last: {_describe(tally.last_of('Error'))}",
        )
    if tally.inconclusive > inconclusive_limit:
        return Verdict(
            "Inconclusive",
            f"{label} inconclusive: {_describe(tally.last_of('Inconclusive'))}, "
            f"{tally.inconclusive} inconclusive measurements exceed inconclusiveLimit "
            f"{inconclusive_limit}",
        )
    last = tally.last
    target = effective_count(metric)
    in_progress = last is not None and last.phase in _IN_PROGRESS
    # Argo v1.8's assessMetricStatus: the streak first, then the count.
    if not in_progress and success_limit > 0 and tally.consecutive_success >= success_limit:
        return Verdict(
            "Successful",
            f"{label} successful: {tally.consecutive_success} successful measurements in a row reach "
            f"consecutiveSuccessLimit {success_limit}; last {_describe(tally.last_of('Successful'))}",
        )
    if not in_progress and target is not None and tally.count >= target:
        if success_limit > 0:
            phase: AnalysisPhase = "Failed" if failure_limit == FAILURE_LIMIT_OFF else "Inconclusive"
            return Verdict(
                phase,
                f"{label} {phase.lower()}: count {target} reached with {tally.consecutive_success} "
                f"successful measurements in a row, short of consecutiveSuccessLimit {success_limit}; "
                f"last {_describe(last)}",
            )
        return Verdict(
            "Successful",
            f"{label} successful: {_summary(tally)}; last {_describe(tally.last_of('Successful'))}",
        )
    if terminated:
        return Verdict("Successful", f"{label} successful: terminated after {_summary(tally)}")
    if last is None:
        return Verdict("Running", f"{label}: waiting for the first measurement")
    of_target = f" of {target}" if target is not None else ""
    return Verdict("Running", f"{label}: {tally.count}{of_target} measurements; last {_describe(last)}")


def _summary(tally: Tally) -> str:
    parts = [f"{tally.successful} successful"]
    parts += [
        f"{number} {name}"
        for name, number in (
            ("failed", tally.failed),
            ("inconclusive", tally.inconclusive),
            ("errors", tally.error),
        )
        if number
    ]
    return f"{tally.count} measurements ({', '.join(parts)})"


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def next_measurement_due(
    metric: Metric,
    measurements: Sequence[Measurement] | MetricResult | Tally,
    started_at: datetime,
    now: datetime,
) -> datetime | None:
    """When the next measurement is due, never earlier than `now` (`now` means at once).

    None when no more are due: the metric has its verdict, or a measurement is in progress.
    The first is due `initialDelay` after `started_at`; the next one `interval` after the last
    one finished; after an error, ERROR_RETRY_INTERVAL (or the interval, if shorter).
    Pass timezone-aware datetimes; measurement times without a zone are taken as UTC.
    """
    tally = Tally.of(measurements)
    if assess_metric(metric, tally).phase != "Running":
        return None
    last = tally.last
    if last is None:
        delay = parse_duration(metric.initial_delay) if metric.initial_delay is not None else 0.0
        return max(started_at + timedelta(seconds=delay), now)
    if last.phase in _IN_PROGRESS:
        # A Job still running: looked at again at its resumeAt (Argo's Measurement.ResumeAt).
        resume = _parse_time(last.resume_at)
        return max(resume, now) if resume is not None else None
    interval = parse_duration(metric.interval) if metric.interval is not None else None
    if last.phase == "Error":
        wait = min(ERROR_RETRY_INTERVAL, interval) if interval is not None else ERROR_RETRY_INTERVAL
    else:
        wait = interval if interval is not None else 0.0
    finished = _parse_time(last.finished_at) or _parse_time(last.started_at) or now
    return max(finished + timedelta(seconds=wait), now)


# --- bookkeeping -----------------------------------------------------------------------


def retain(
    measurements: Sequence[Measurement], limit: int = DEFAULT_MEASUREMENT_RETENTION
) -> list[Measurement]:
    """The latest `limit` measurements, oldest first."""
    if limit < 1:
        raise ValueError(f"measurement retention must be at least 1, not {limit}")
    return list(measurements[-limit:])


def retention_limit(retentions: Sequence[MeasurementRetention], metric_name: str) -> int:
    """measurementRetention for a metric (the last entry naming it wins), or the default 10."""
    limit = DEFAULT_MEASUREMENT_RETENTION
    for retention in retentions:
        if retention.metric_name == metric_name:
            limit = retention.limit
    return limit


def is_dry_run(dry_run: Sequence[MetricNameRef], metric_name: str) -> bool:
    """Whether a metric is listed in dryRun (names are exact, not patterns)."""
    return any(ref.metric_name == metric_name for ref in dry_run)


def record(
    result: MetricResult,
    measurement: Measurement,
    *,
    metric: Metric,
    dry_run: bool = False,
    retention: int = DEFAULT_MEASUREMENT_RETENTION,
) -> MetricResult:
    """The MetricResult with one more measurement: counters, retained list, phase, message.

    A measurement that was in progress (a Job running) is replaced by the one given, its
    next sighting, as Argo's runMeasurements does; it was never counted.
    """
    tally = Tally.of(result)
    if tally.last is not None and tally.last.phase in _IN_PROGRESS:
        tally = replace(tally, measurements=tally.measurements[:-1])
    tally = tally.add(measurement)
    verdict = assess_metric(metric, tally, dry_run=dry_run)
    return result.model_copy(
        update={
            "name": metric.name,
            "phase": verdict.phase,
            "message": verdict.message,
            "measurements": retain(tally.measurements, retention),
            "count": tally.count,
            "successful": tally.successful,
            "failed": tally.failed,
            "inconclusive": tally.inconclusive,
            "error": tally.error,
            "consecutive_error": tally.consecutive_error,
            "consecutive_success": tally.consecutive_success,
            "dry_run": dry_run,
        }
    )


# --- the run ---------------------------------------------------------------------------

_SEVERITY: dict[str, int] = {
    "Successful": 0,
    "Pending": 1,
    "Running": 2,
    "Inconclusive": 3,
    "Error": 4,
    "Failed": 5,
}
_TERMINAL_WORDS = {"Failed": "failed", "Error": "errored", "Inconclusive": "was inconclusive"}


def assess_run(results: Sequence[MetricResult]) -> Verdict:
    """The run's phase: the worst of its metrics (Failed > Error > Inconclusive > Running > Successful).

    A dry-run metric keeps the run Running until it is done, but its verdict never counts;
    the message mentions dry-run metrics that would have failed the run.
    """
    if not results:
        return Verdict("Pending", "no metrics to measure")
    counted: list[tuple[AnalysisPhase, MetricResult]] = []
    dry_run_notes: list[str] = []
    for result in results:
        phase = result.phase
        if result.dry_run and phase not in _IN_PROGRESS:
            if phase in _TERMINAL_WORDS:
                dry_run_notes.append(f"metric {result.name} {_TERMINAL_WORDS[phase]}")
            phase = "Successful"
        counted.append((phase, result))
    worst = max(counted, key=lambda item: _SEVERITY[item[0]])[0]
    worst_results = [result for phase, result in counted if phase == worst]
    notes = f" (dry-run, not counted: {', '.join(dry_run_notes)})" if dry_run_notes else ""
    if worst == "Successful":
        counted_names = [result.name for result in results if not result.dry_run]
        if counted_names:
            message = f"all metrics successful: {', '.join(counted_names)}"
        else:
            message = "only dry-run metrics, all done"
        return Verdict("Successful", message + notes)
    messages = [result.message or f"metric {result.name}: {worst.lower()}" for result in worst_results]
    return Verdict(worst, "; ".join(messages) + notes)

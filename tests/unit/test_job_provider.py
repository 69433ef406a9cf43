"""The job provider's decisions: Job names and bodies as Argo's `newJobName` / `newMetricJob`
make them, what a Job's status means, when a running one is looked at again, and how an
in-progress measurement is carried through the metric's counters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tidegate.api.analysis import Measurement, Metric, MetricResult
from tidegate.core import analysis_run as runs
from tidegate.core.assessment import next_measurement_due, record
from tidegate.metrics.job import ANALYSIS_RUN_UID_LABEL, RunRef, job_body, job_name, job_verdict, resume_delay

UID = "4b3f7c1e-2d5a-4c8e-9f10-0123456789ab"
T0 = datetime(2026, 12, 2, 7, 0, 0, tzinfo=UTC)


def job_metric(**provider: Any) -> Metric:
    job = {
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "containers": [
                        {"name": "check", "image": "alpine:3.8", "command": ["sh", "-c"], "args": ["exit 0"]}
                    ],
                    "restartPolicy": "Never",
                }
            },
        },
        **provider,
    }
    return Metric.model_validate({"name": "smoke", "count": 1, "provider": {"job": job}})


@pytest.mark.parametrize(
    ("metric", "index", "name"),
    [
        ("smoke", 1, f"{UID}.smoke.1"),
        ("smoke", 12, f"{UID}.smoke.12"),
        # Over 63 characters: the metric name is cut, never the uid or the index (Argo's rule).
        ("integration-tests-against-the-canary", 3, f"{UID}.integration-tests-agains.3"),
    ],
)
def test_job_names_are_argos(metric: str, index: int, name: str) -> None:
    assert job_name(UID, metric, index) == name
    assert len(name) <= 63


def test_the_job_is_owned_by_the_run_labelled_with_its_uid_and_takes_the_arguments() -> None:
    metric = job_metric(metadata={"labels": {"team": "{{args.team}}"}, "annotations": {"a": "b"}})
    spec = metric.provider.job.spec  # type: ignore[union-attr]
    spec["template"]["spec"]["containers"][0]["args"] = ["curl -f http://{{args.service}}/health"]
    body = job_body(RunRef("web-abc-s1-0", "shop", UID), metric, 2, {"team": "pay", "service": "web-canary"})
    meta = body["metadata"]
    assert meta["name"] == f"{UID}.smoke.2" and meta["namespace"] == "shop"
    assert meta["labels"] == {"team": "pay", ANALYSIS_RUN_UID_LABEL: UID}
    assert meta["annotations"]["analysisrun.tidegate.io/name"] == "web-abc-s1-0"
    assert meta["annotations"]["analysisrun.tidegate.io/metric-name"] == "smoke"
    assert meta["annotations"]["a"] == "b"
    (owner,) = meta["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "AnalysisRun",
        "web-abc-s1-0",
        UID,
        True,
    )
    pod = body["spec"]["template"]
    assert pod["metadata"]["labels"] == {ANALYSIS_RUN_UID_LABEL: UID}
    assert pod["spec"]["containers"][0]["args"] == ["curl -f http://web-canary/health"]
    assert body["spec"]["backoffLimit"] == 0  # numbers stay numbers
    # The template in the metric is left as it was.
    assert spec["template"]["spec"]["containers"][0]["args"] == ["curl -f http://{{args.service}}/health"]


@pytest.mark.parametrize(
    ("conditions", "verdict"),
    [
        ([], None),
        ([{"type": "Complete", "status": "True"}], "Successful"),
        (
            [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}],
            "Successful",
        ),
        (
            [
                {"type": "FailureTarget", "status": "True"},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"},
            ],
            "Failed",
        ),
        ([{"type": "Failed", "status": "False"}], None),
        ([{"type": "Suspended", "status": "True"}], None),
    ],
)
def test_a_jobs_conditions_say_how_the_measurement_ended(
    conditions: list[dict[str, str]], verdict: str | None
) -> None:
    found = job_verdict({"status": {"conditions": conditions}})
    assert (found[0] if found else None) == verdict


@pytest.mark.parametrize(("elapsed", "delay"), [(0, 0.25), (0.5, 1.0), (2, 2.0), (50, 10.0), (200, 20.0)])
def test_a_running_job_is_looked_at_after_a_growing_delay(elapsed: float, delay: float) -> None:
    assert resume_delay(T0, T0 + timedelta(seconds=elapsed)) == pytest.approx(delay)


def running(resume_in: float) -> Measurement:
    return Measurement(
        phase="Running",
        started_at=T0.isoformat(),
        resume_at=(T0 + timedelta(seconds=resume_in)).isoformat(),
        metadata={"job-name": f"{UID}.smoke.1"},
    )


def test_a_measurement_in_progress_is_due_at_its_resume_time_and_replaced_when_it_ends() -> None:
    metric = job_metric()
    result = record(MetricResult(name="smoke"), running(3), metric=metric)
    assert (result.count, result.phase, len(result.measurements)) == (0, "Running", 1)
    assert next_measurement_due(metric, result, T0, T0) == T0 + timedelta(seconds=3)
    assert next_measurement_due(metric, result, T0, T0 + timedelta(seconds=9)) == T0 + timedelta(seconds=9)
    done = running(3).model_copy(
        update={"phase": "Failed", "finished_at": (T0 + timedelta(seconds=4)).isoformat()}
    )
    result = record(result, done, metric=metric)
    assert (result.count, result.failed, result.phase, len(result.measurements)) == (1, 1, "Failed", 1)


def test_measurements_in_flight_are_stopped_as_inconclusive() -> None:
    metric = job_metric()
    spec = runs.AnalysisRunSpec(metrics=[metric], terminate=True)
    status = runs.start(spec, runs.AnalysisRunStatus(), T0, {})
    status = runs.add_measurement(spec, status, metric, running(1))
    ((found, measurement),) = runs.in_flight(spec, status)
    assert found.name == "smoke" and runs.is_terminating(spec, status)
    stopped = runs.terminated_measurement(measurement, T0 + timedelta(seconds=5))
    assert (stopped.phase, stopped.message, stopped.resume_at) == ("Inconclusive", "Metric Terminated", None)
    status = runs.conclude(spec, runs.add_measurement(spec, status, metric, stopped), terminated=True)
    assert runs.in_flight(spec, status) == []
    assert status.phase == "Inconclusive"  # as Argo: a Job stopped in flight leaves the run inconclusive


@pytest.mark.parametrize(
    ("pod", "problem"),
    [
        ({"restartPolicy": "Never"}, "a Job needs a pod template"),
        (
            {"containers": [{"name": "c", "image": "i"}]},
            "restartPolicy: a Job's pods need Never or OnFailure",
        ),
    ],
)
def test_a_job_without_a_usable_pod_template_is_an_error_naming_the_field(
    pod: dict[str, Any], problem: str
) -> None:
    metric = Metric.model_validate(
        {"name": "smoke", "provider": {"job": {"spec": {"template": {"spec": pod}}}}}
    )
    problems = runs.metric_problems(runs.AnalysisRunSpec(metrics=[metric]), pod_hashes={})
    assert problem in problems["smoke"] and "provider.job.spec.template.spec" in problems["smoke"]


def test_jobs_whose_measurements_retention_dropped_are_the_ones_to_delete() -> None:
    from tidegate.metrics.job import jobs_dropped

    def result(*indexes: int) -> MetricResult:
        return MetricResult(
            name="smoke",
            measurements=[
                Measurement(phase="Successful", metadata={"job-name": f"j.{i}", "job-namespace": "shop"})
                for i in indexes
            ],
        )

    assert jobs_dropped([result(1, 2)], [result(2, 3)]) == [("shop", "j.1")]
    assert jobs_dropped([result(1)], [result(1)]) == []
    assert jobs_dropped([MetricResult(name="p", measurements=[Measurement(phase="Successful")])], []) == []

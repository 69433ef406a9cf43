"""The job metric provider on the real control plane: the AnalysisRun controller creates a Job
per measurement, the real kube-controller-manager's Job controller runs it (kwok plays the pods:
`exit 0` succeeds, `exit 1` fails, see `tidegate.sandbox.cluster.JOB_POD_FAILS`), and the run
reads the Job's conditions. A run told to stop deletes the Job still running; a deleted run
takes its Jobs with it (owner reference, garbage collector)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.kube import Kube, wait_until

pytestmark = pytest.mark.sandbox

FINISHED = ("Successful", "Failed", "Error", "Inconclusive")


def job_metric(name: str, script: str, **spec: Any) -> dict[str, Any]:
    """Argo's examples/analysis-templates.yaml shape: sh -c with the script as args."""
    return {
        "name": name,
        "count": 1,
        "interval": "5s",
        "failureLimit": 0,
        "provider": {
            "job": {
                "metadata": {"labels": {"suite": "smoke"}, "annotations": {"owner": "team-a"}},
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "check",
                                    "image": "alpine:3.8",
                                    "command": ["sh", "-c"],
                                    "args": [script],
                                }
                            ],
                            "restartPolicy": "Never",
                        }
                    },
                    **spec,
                },
            }
        },
    }


def run(name: str, *metrics: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "AnalysisRun",
        "metadata": {"name": name},
        "spec": {"metrics": list(metrics), **spec},
    }


def status_of(kube: Kube, name: str) -> dict[str, Any]:
    return kube.get("analysisruns.tidegate.io", name).get("status") or {}


def wait_run(kube: Kube, name: str, phase: str, timeout: float = 90) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        status = status_of(kube, name)
        if status.get("phase") in FINISHED and status.get("phase") != phase:
            raise AssertionError(f"run {name} ended {status.get('phase')}: {json.dumps(status, indent=1)}")
        return status if status.get("phase") == phase else None

    try:
        return wait_until(check, timeout, what=f"analysisrun {name} phase {phase}")
    except AssertionError as error:
        raise AssertionError(f"{error}\nstatus: {json.dumps(status_of(kube, name), indent=1)}") from None


def jobs(kube: Kube) -> list[dict[str, Any]]:
    return kube.list("jobs.batch")


def test_a_job_that_exits_0_is_a_successful_measurement_owned_by_its_run(kube: Kube) -> None:
    kube.apply(run("pass", job_metric("pass", "exit 0")))
    status = wait_run(kube, "pass", "Successful")
    (result,) = status["metricResults"]
    (measurement,) = result["measurements"]
    assert (result["count"], result["successful"], measurement["phase"]) == (1, 1, "Successful")
    uid = kube.get("analysisruns.tidegate.io", "pass")["metadata"]["uid"]
    assert measurement["metadata"] == {"job-name": f"{uid}.pass.1", "job-namespace": kube.namespace}
    job = kube.get("jobs.batch", f"{uid}.pass.1")
    (owner,) = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "AnalysisRun",
        "pass",
        uid,
        True,
    )
    assert job["metadata"]["labels"] == {"suite": "smoke", "analysisrun.tidegate.io/uid": uid}
    assert job["metadata"]["annotations"]["owner"] == "team-a"
    assert job["metadata"]["annotations"]["analysisrun.tidegate.io/metric-name"] == "pass"
    conditions = {c["type"]: c["status"] for c in job["status"]["conditions"]}
    assert conditions.get("Complete") == "True", conditions


def test_a_job_that_exits_1_is_a_failed_measurement_and_fails_the_run(kube: Kube) -> None:
    kube.apply(run("fail", job_metric("smoke", "exit 1")))
    status = wait_run(kube, "fail", "Failed")
    (result,) = status["metricResults"]
    assert (result["failed"], result["measurements"][0]["phase"]) == (1, "Failed")
    assert "metric smoke failed" in status["message"], status["message"]
    assert "job failed" in status["message"], status["message"]
    uid = kube.get("analysisruns.tidegate.io", "fail")["metadata"]["uid"]
    conditions = {
        c["type"]: c["status"] for c in kube.get("jobs.batch", f"{uid}.smoke.1")["status"]["conditions"]
    }
    assert conditions.get("Failed") == "True", conditions


def test_terminate_deletes_the_job_still_running_and_the_run_is_inconclusive(kube: Kube) -> None:
    # A suspended Job starts no pod: it stays running until someone acts.
    kube.apply(run("held", job_metric("held", "exit 0", suspend=True)))
    uid = wait_until(
        lambda: next(
            (j["metadata"]["labels"]["analysisrun.tidegate.io/uid"] for j in jobs(kube)),
            None,
        ),
        60,
        what="the run's Job",
    )
    measurement = wait_until(
        lambda: ((status_of(kube, "held").get("metricResults") or [{}])[0].get("measurements") or [None])[0],
        30,
        what="the measurement in progress",
    )
    assert measurement["phase"] == "Running" and measurement["resumeAt"], measurement
    assert status_of(kube, "held")["phase"] == "Running"
    kube.patch("analysisruns.tidegate.io", "held", {"spec": {"terminate": True}})
    status = wait_run(kube, "held", "Inconclusive")
    (stopped,) = status["metricResults"][0]["measurements"]
    assert (stopped["phase"], stopped["message"]) == ("Inconclusive", "Metric Terminated")
    wait_until(
        lambda: kube.get_or_none("jobs.batch", f"{uid}.held.1") is None,
        60,
        what=f"job {uid}.held.1 deleted",
    )


def test_a_deleted_run_takes_its_jobs_with_it(kube: Kube) -> None:
    kube.apply(run("gone", job_metric("gone", "exit 0")))
    wait_run(kube, "gone", "Successful")
    uid = kube.get("analysisruns.tidegate.io", "gone")["metadata"]["uid"]
    assert kube.get_or_none("jobs.batch", f"{uid}.gone.1") is not None
    kube.kubectl("delete", "analysisruns.tidegate.io", "gone", "--wait=true")
    wait_until(lambda: kube.get_or_none("jobs.batch", f"{uid}.gone.1") is None, 60, what="the Job collected")


def test_jobs_of_measurements_beyond_the_retention_are_deleted(kube: Kube) -> None:
    """Argo's GarbageCollect: as many Jobs as measurements kept (measurementRetention 1)."""
    metric = {**job_metric("kept", "exit 0"), "count": 3, "interval": "1s"}
    kube.apply(run("retained", metric, measurementRetention=[{"metricName": "kept", "limit": 1}]))
    status = wait_run(kube, "retained", "Successful")
    (result,) = status["metricResults"]
    assert result["count"] == 3 and len(result["measurements"]) == 1
    uid = kube.get("analysisruns.tidegate.io", "retained")["metadata"]["uid"]
    assert result["measurements"][0]["metadata"]["job-name"] == f"{uid}.kept.3"
    wait_until(
        lambda: sorted(j["metadata"]["name"] for j in jobs(kube)) == [f"{uid}.kept.3"],
        60,
        what=f"only job {uid}.kept.3 left",
    )


def test_a_streak_of_successes_ends_the_metric_before_its_count(kube: Kube) -> None:
    metric = {**job_metric("streak", "exit 0"), "count": 5, "interval": "1s", "failureLimit": -1}
    kube.apply(run("streak", {**metric, "consecutiveSuccessLimit": 2}))
    (result,) = wait_run(kube, "streak", "Successful")["metricResults"]
    assert (result["count"], result["consecutiveSuccess"]) == (2, 2), result

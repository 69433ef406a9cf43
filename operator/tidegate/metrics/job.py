"""Job: a Kubernetes Job per measurement, as Argo Rollouts' `metricproviders/job`.

A measurement creates a Job in the AnalysisRun's namespace, owned by the run (so deleting
the run deletes its Jobs), named `<run-uid>.<metric>.<n>` (`newJobName`: n is the metric's
measurements so far plus one, the metric name cut so the name fits 63 characters). The
measurement stays Running, with the Job's name in its metadata, and is looked at again at
its `resumeAt` (after `sqrt(2 * elapsed)` seconds, Argo's growing delay): the Job's
`Complete` condition makes it Successful, `Failed` makes it Failed. A measurement stopped in
flight (the run told to stop, or decided by another metric) deletes its Job and is
Inconclusive ("Metric Terminated").

The Kubernetes calls go through `JobApi`, which the `k8s` layer implements: this module
decides what to create and what a Job's status means.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from tidegate.api.analysis import Measurement, Metric, MetricResult
from tidegate.core.analysis_run import terminated_measurement
from tidegate.core.args import ArgumentError, render_query
from tidegate.metrics._base import shorten

__all__ = [
    "ANALYSIS_RUN_METRIC_ANNOTATION",
    "ANALYSIS_RUN_NAME_ANNOTATION",
    "ANALYSIS_RUN_UID_LABEL",
    "JOB_NAMESPACE_KEY",
    "JOB_NAME_KEY",
    "JobApi",
    "JobApiError",
    "JobMetricProvider",
    "RunRef",
    "job_body",
    "job_name",
    "job_verdict",
    "jobs_dropped",
    "resume_delay",
]

JOB_NAME_KEY = "job-name"
JOB_NAMESPACE_KEY = "job-namespace"
"""Keys of a job measurement's metadata (Argo's JobNameKey, JobNamespaceKey)."""
ANALYSIS_RUN_UID_LABEL = "analysisrun.tidegate.io/uid"
ANALYSIS_RUN_NAME_ANNOTATION = "analysisrun.tidegate.io/name"
ANALYSIS_RUN_NAMESPACE_ANNOTATION = "analysisrun.tidegate.io/namespace"
ANALYSIS_RUN_METRIC_ANNOTATION = "analysisrun.tidegate.io/metric-name"
"""Argo's analysisrun.argoproj.io/* keys, under Tidegate's group."""

NAME_LIMIT = 63
"""Argo's defaults.Kubernetes_DNS_Limit: the Job controller puts the Job's name in a pod label."""


class JobApiError(Exception):
    """A Job call the API server refused; the message is the server's, free of secrets."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class JobApi(Protocol):
    """The Kubernetes calls the provider needs (implemented in `tidegate.k8s.analysis`)."""

    async def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create the Job; JobApiError with status 409 when one of that name exists."""
        ...

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Job, or None when there is none of that name."""
        ...

    async def delete(self, namespace: str, name: str) -> None:
        """Delete the Job and its pods (foreground); no error when it is gone."""
        ...


@dataclass(frozen=True)
class RunRef:
    """The AnalysisRun a Job belongs to."""

    name: str
    namespace: str
    uid: str
    api_version: str = "tidegate.io/v1alpha1"


def _timestamp(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def job_name(run_uid: str, metric_name: str, index: int) -> str:
    """Argo's `newJobName`: `<uid>.<metric>.<index>`, the metric name cut to fit 63 characters.

    >>> job_name("4b3f7c1e-0000-4000-8000-000000000000", "smoke", 1)
    '4b3f7c1e-0000-4000-8000-000000000000.smoke.1'
    >>> len(job_name("4b3f7c1e-0000-4000-8000-000000000000", "a-very-long-metric-name-indeed", 12))
    63
    """
    name = f"{run_uid}.{metric_name}.{index}"
    if len(name) <= NAME_LIMIT:
        return name
    keep = len(metric_name) - (len(name) - NAME_LIMIT)
    return f"{run_uid}.{metric_name[: max(keep, 0)]}.{index}"


def _render(value: Any, args: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return render_query(value, args, escape="none")
    if isinstance(value, dict):
        return {key: _render(item, args) for key, item in value.items()}
    if isinstance(value, list):
        return [_render(item, args) for item in value]
    return value


def job_body(run: RunRef, metric: Metric, index: int, args: Mapping[str, str]) -> dict[str, Any]:
    """The Job of a measurement (Argo's `newMetricJob`): the template's metadata and spec with
    `{{args.NAME}}` replaced, the run's uid as a label on the Job and its pods, the run's name,
    namespace and the metric as annotations, owned by the run. ArgumentError for a missing
    argument."""
    job = metric.provider.job if metric.provider is not None else None
    if job is None:
        raise ValueError(f"metric {metric.name} has no job provider")
    spec = _render(json.loads(json.dumps(job.spec)), args)
    labels = {**_render(dict(job.metadata.labels), args), ANALYSIS_RUN_UID_LABEL: run.uid}
    annotations = {
        **_render(dict(job.metadata.annotations), args),
        ANALYSIS_RUN_NAME_ANNOTATION: run.name,
        ANALYSIS_RUN_NAMESPACE_ANNOTATION: run.namespace,
        ANALYSIS_RUN_METRIC_ANNOTATION: metric.name,
    }
    template = spec.setdefault("template", {})
    pod_meta = template.setdefault("metadata", {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), ANALYSIS_RUN_UID_LABEL: run.uid}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(run.uid, metric.name, index),
            "namespace": run.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": run.api_version,
                    "kind": "AnalysisRun",
                    "name": run.name,
                    "uid": run.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def job_verdict(job: Mapping[str, Any]) -> tuple[str, str] | None:
    """(phase, message) once the Job has finished: condition Complete -> Successful, Failed ->
    Failed (Argo's `Resume` reads the same two conditions); None while it runs."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        kind = condition.get("type")
        detail = condition.get("message") or condition.get("reason") or ""
        if kind == "Complete":
            return "Successful", shorten(f"job completed{': ' + detail if detail else ''}")
        if kind == "Failed":
            return "Failed", shorten(f"job failed{': ' + detail if detail else ''}")
    return None


def resume_delay(started: datetime, now: datetime) -> float:
    """Seconds until a running Job is looked at again: sqrt(2 * elapsed), Argo's growing delay
    (1 s after 0.5 s, 10 s after 50 s), at least a quarter of a second."""
    elapsed = max((now - started).total_seconds(), 0.0)
    return max(math.sqrt(2 * elapsed), 0.25)


def _jobs_of(results: Sequence[MetricResult]) -> dict[tuple[str, str], None]:
    return {
        (m.metadata.get(JOB_NAMESPACE_KEY) or "", m.metadata[JOB_NAME_KEY]): None
        for result in results
        for m in result.measurements
        if m.metadata.get(JOB_NAME_KEY)
    }


def jobs_dropped(before: Sequence[MetricResult], after: Sequence[MetricResult]) -> list[tuple[str, str]]:
    """(namespace, name) of the Jobs whose measurements `measurementRetention` dropped between two
    statuses: they go with them (Argo's JobProvider.GarbageCollect keeps as many Jobs as
    measurements)."""
    kept = _jobs_of(after)
    return [job for job in _jobs_of(before) if job not in kept]


class JobMetricProvider:
    """Measures a metric whose provider is `job`: run, resume, terminate (Argo's JobProvider)."""

    def __init__(self, api: JobApi) -> None:
        self._api = api

    async def run(
        self, run: RunRef, metric: Metric, index: int, args: Mapping[str, str], now: datetime
    ) -> Measurement:
        """Create the measurement's Job; the measurement is Running, to be resumed at once."""
        started = _timestamp(now)
        try:
            body = job_body(run, metric, index, args)
        except ArgumentError as error:
            return self._error(metric, started, str(error))
        name = body["metadata"]["name"]
        try:
            await self._api.create(run.namespace, body)
        except JobApiError as error:
            if error.status != 409:
                return self._error(metric, started, f"cannot create job {name}: {error}")
            if await self._existing(run, name) is None:
                return self._error(metric, started, f"job {name} exists and belongs to another AnalysisRun")
        return Measurement(
            phase="Running",
            started_at=started,
            message=f"job {name} created",
            metadata={JOB_NAME_KEY: name, JOB_NAMESPACE_KEY: run.namespace},
            resume_at=started,
        )

    async def _existing(self, run: RunRef, name: str) -> dict[str, Any] | None:
        """A Job of that name made for this run (a create whose answer was lost), else None:
        Argo's duplicate check by owner uid."""
        try:
            found = await self._api.get(run.namespace, name)
        except JobApiError:
            return None
        owners = ((found or {}).get("metadata") or {}).get("ownerReferences") or []
        return found if any(owner.get("uid") == run.uid for owner in owners) else None

    async def resume(
        self, run: RunRef, metric: Metric, measurement: Measurement, now: datetime
    ) -> Measurement:
        """Look at the measurement's Job: finished -> its verdict, else Running until later."""
        name = measurement.metadata.get(JOB_NAME_KEY)
        namespace = measurement.metadata.get(JOB_NAMESPACE_KEY) or run.namespace
        if not name:
            return self._finish_error(metric, measurement, now, "job metadata reference missing")
        try:
            job = await self._api.get(namespace, name)
        except JobApiError as error:
            return self._finish_error(metric, measurement, now, f"cannot read job {name}: {error}")
        if job is None:
            return self._finish_error(metric, measurement, now, f"job {name} not found")
        verdict = job_verdict(job)
        if verdict is not None:
            phase, message = verdict
            return measurement.model_copy(
                update={
                    "phase": phase,
                    "message": message,
                    "value": phase,
                    "finished_at": _timestamp(now),
                    "resume_at": None,
                }
            )
        started = _parse(measurement.started_at) or now
        later = now + timedelta(seconds=resume_delay(started, now))
        active = int((job.get("status") or {}).get("active") or 0)
        return measurement.model_copy(
            update={"message": f"job {name} running ({active} active)", "resume_at": _timestamp(later)}
        )

    async def terminate(self, run: RunRef, measurement: Measurement, now: datetime) -> Measurement:
        """Delete the measurement's Job (and its pods); the measurement is Inconclusive."""
        name = measurement.metadata.get(JOB_NAME_KEY)
        namespace = measurement.metadata.get(JOB_NAMESPACE_KEY) or run.namespace
        if name:
            try:
                await self._api.delete(namespace, name)
            except JobApiError as error:
                return measurement.model_copy(
                    update={
                        "phase": "Error",
                        "message": f"cannot delete job {name}: {error}",
                        "finished_at": _timestamp(now),
                        "resume_at": None,
                    }
                )
        return terminated_measurement(measurement, now)

    @staticmethod
    def _error(metric: Metric, started: str, text: str) -> Measurement:
        return Measurement(
            phase="Error",
            message=shorten(f"metric {metric.name}: {text}"),
            started_at=started,
            finished_at=started,
        )

    @staticmethod
    def _finish_error(metric: Metric, measurement: Measurement, now: datetime, text: str) -> Measurement:
        return measurement.model_copy(
            update={
                "phase": "Error",
                "message": shorten(f"metric {metric.name}: {text}"),
                "finished_at": _timestamp(now),
                "resume_at": None,
            }
        )

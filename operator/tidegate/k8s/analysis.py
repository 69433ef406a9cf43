"""AnalysisRuns against the API server: build one from a Rollout's analysis, create, list,
terminate and prune them, and take one controller step of a run (measure what is due,
write the status).

Decisions live in `tidegate.core.analysis_run`; this module reads, measures and writes.
Secrets (authentication, `secretKeyRef` arguments) are read at measurement time through
`KubeSecretReader` and never logged or written: a secret argument's value is scrubbed from
anything a provider returns before it reaches the status.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

import httpx
from pydantic import ValidationError

from tidegate.api.analysis import (
    AnalysisRunSpec,
    AnalysisRunStatus,
    AnalysisTemplateSpec,
    Argument,
    Measurement,
    Metric,
    MetricResult,
)
from tidegate.api.rollout import AnalysisTemplateRef, Rollout, RolloutAnalysis
from tidegate.core import analysis_run as runs
from tidegate.core.analysis_run import AnalysisSpecError, TemplateSource
from tidegate.core.assessment import compile_conditions
from tidegate.core.model import ROLLOUT_LABEL
from tidegate.k8s.client import ApiException, Clients, call
from tidegate.metrics import (
    JobApi,
    JobApiError,
    JobMetricProvider,
    MeasurementError,
    Outbound,
    PrometheusMetricProvider,
    RunRef,
    SecretReader,
    UnknownProviderError,
    default_outbound,
    jobs_dropped,
    provider_for,
)

__all__ = [
    "GROUP",
    "PLURAL",
    "VERSION",
    "AnalysisSpecError",
    "KubeJobApi",
    "KubeSecretReader",
    "StepOutcome",
    "build_analysis_run",
    "create_analysis_run",
    "list_analysis_runs",
    "prune_analysis_runs",
    "read_template",
    "read_templates",
    "step_analysis_run",
    "terminate_analysis_run",
]

log = logging.getLogger("tidegate.analysis")

GROUP, VERSION = "tidegate.io", "v1alpha1"
PLURAL = "analysisruns"
FIELD_MANAGER = "tidegate"
REDACTED = "<redacted>"

Clock = Callable[[], datetime]

_CONDITIONS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="conditions")
"""Where success and failure conditions are evaluated (two at a time, whatever the number of runs)."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "spec"
    return f"{where}: {first.get('msg')}"


# --- building ----------------------------------------------------------------------------


async def read_template(clients: Clients, namespace: str, ref: AnalysisTemplateRef) -> TemplateSource:
    """The template a reference names; AnalysisSpecError when it is missing or invalid."""
    kind = "ClusterAnalysisTemplate" if ref.cluster_scope else "AnalysisTemplate"
    try:
        if ref.cluster_scope:
            found = await call(
                clients.custom.get_cluster_custom_object,
                GROUP,
                VERSION,
                "clusteranalysistemplates",
                ref.template_name,
            )
        else:
            found = await call(
                clients.custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                "analysistemplates",
                ref.template_name,
            )
    except ApiException as error:
        if error.status == 404:
            where = "" if ref.cluster_scope else f" in namespace {namespace}"
            raise AnalysisSpecError(f"{kind} {ref.template_name!r} not found{where}") from None
        raise
    body = cast(dict[str, Any], found)
    try:
        spec = AnalysisTemplateSpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        raise AnalysisSpecError(
            f"{kind} {ref.template_name!r}: invalid spec: {_first_error(error)}"
        ) from None
    return TemplateSource(name=ref.template_name, spec=spec, cluster_scope=ref.cluster_scope)


async def read_templates(
    clients: Clients, namespace: str, refs: Sequence[AnalysisTemplateRef]
) -> list[TemplateSource]:
    """The templates `refs` name and, level by level, those their `spec.templates` name
    (read once each), in the order `runs.flatten_templates` merges them."""
    found: dict[runs.TemplateKey, TemplateSource] = {}
    wanted = list(refs)
    while wanted:
        fresh = list(
            {runs.template_key(ref): ref for ref in wanted if runs.template_key(ref) not in found}.values()
        )
        sources = await asyncio.gather(*(read_template(clients, namespace, ref) for ref in fresh))
        for ref, source in zip(fresh, sources, strict=True):
            found[runs.template_key(ref)] = source
        wanted = [inner for source in sources for inner in source.spec.templates]
    return runs.flatten_templates(refs, found)


async def build_analysis_run(
    clients: Clients,
    rollout: Rollout,
    analysis: RolloutAnalysis,
    *,
    name: str,
    kind: str,
    pod_hashes: dict[str, str],
) -> dict[str, Any]:
    """The AnalysisRun for a Rollout's analysis reference (not created; see create_analysis_run).

    Reads the templates, merges them, resolves the arguments (the Rollout's override the
    templates'; podTemplateHashValue from `pod_hashes` {"Stable": ..., "Latest": ...}; fieldRef
    from the Rollout). AnalysisSpecError names a missing template, an argument without a value,
    a metric defined twice.
    """
    namespace = rollout.metadata.namespace or "default"
    sources = await read_templates(clients, namespace, analysis.templates)
    merged = runs.merge_templates(sources)
    document = rollout.model_dump(by_alias=True, mode="json", exclude_none=True)
    args = runs.resolve_args(merged.args, analysis.args, rollout=document, pod_hashes=pod_hashes)
    return runs.run_body(
        rollout,
        analysis.dry_run,
        analysis.measurement_retention,
        merged,
        args,
        name=name,
        kind=kind,
        pod_hashes=pod_hashes,
    )


async def create_analysis_run(clients: Clients, body: dict[str, Any]) -> dict[str, Any]:
    """Create the run; when it exists already (409), the existing one is returned."""
    namespace = body["metadata"].get("namespace") or "default"
    try:
        created = await call(
            clients.custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            body,
            field_manager=FIELD_MANAGER,
        )
        return cast(dict[str, Any], created)
    except ApiException as error:
        if error.status != 409:
            raise
    existing = await call(
        clients.custom.get_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        body["metadata"]["name"],
    )
    return cast(dict[str, Any], existing)


async def terminate_analysis_run(clients: Clients, namespace: str, name: str) -> bool:
    """Ask a run to stop (spec.terminate: true); False when it does not exist."""
    try:
        await call(
            clients.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"spec": {"terminate": True}},
            field_manager=FIELD_MANAGER,
        )
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


async def list_analysis_runs(clients: Clients, namespace: str, rollout_name: str) -> list[dict[str, Any]]:
    """The Rollout's runs (by label), oldest first."""
    listing = await call(
        clients.custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        label_selector=f"{ROLLOUT_LABEL}={rollout_name}",
    )
    items: list[dict[str, Any]] = cast(dict[str, Any], listing).get("items") or []
    return sorted(
        items,
        key=lambda run: (run["metadata"].get("creationTimestamp") or "", run["metadata"].get("name") or ""),
    )


async def prune_analysis_runs(
    clients: Clients,
    namespace: str,
    rollout_name: str,
    keep_per_phase: int = 3,
    known: list[dict[str, Any]] | None = None,
    limits: tuple[int, int] | None = None,
) -> list[str]:
    """Delete the oldest finished runs beyond `keep_per_phase` per outcome (or beyond the
    Rollout's `limits`: successful, unsuccessful); never a running one.

    `known`: the Rollout's runs as the operator's cache holds them (else they are listed).
    Returns the names deleted.
    """
    if known is None:
        known = await list_analysis_runs(clients, namespace, rollout_name)
    ordered = sorted(
        known,
        key=lambda run: (run["metadata"].get("creationTimestamp") or "", run["metadata"].get("name") or ""),
    )
    if limits is not None:
        from tidegate.core.housekeeping import runs_beyond_history

        doomed = runs_beyond_history(ordered, *limits)
    else:
        doomed = runs.prunable_runs(ordered, keep_per_phase)
    deleted: list[str] = []
    for name in doomed:
        try:
            await call(
                clients.custom.delete_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                propagation_policy="Background",
            )
        except ApiException as error:
            if error.status != 404:
                raise
            continue
        deleted.append(name)
    return deleted


# --- secrets -----------------------------------------------------------------------------


class KubeSecretReader:
    """Reads Secret keys from the Kubernetes API (base64-decoded), caching within one step.

    Error messages name the Secret and key, never the content.
    """

    def __init__(self, clients: Clients, namespace: str) -> None:
        self._clients = clients
        self._namespace = namespace
        self._cache: dict[str, dict[str, str]] = {}

    async def read(self, name: str, key: str) -> str:
        data = self._cache.get(name)
        if data is None:
            try:
                secret = await call(self._clients.core.read_namespaced_secret, name, self._namespace)
            except ApiException as error:
                if error.status == 404:
                    raise KeyError(f"secret {name} not found in namespace {self._namespace}") from None
                raise PermissionError(
                    f"cannot read secret {name} in namespace {self._namespace}: "
                    f"HTTP {error.status} {error.reason}"
                ) from None
            data = {str(k): str(v) for k, v in (secret.data or {}).items()}
            self._cache[name] = data
        if key not in data:
            raise KeyError(f"secret {name} has no key {key}")
        try:
            return base64.b64decode(data[key]).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise ValueError(f"secret {name} key {key} is not UTF-8 text") from None


# --- one controller step -----------------------------------------------------------------


@dataclass(frozen=True)
class StepOutcome:
    """What one step of a run did, for the daemon that drives it."""

    delay: float | None
    """Seconds until the next measurement is due; None: nothing to do until an event."""
    phase: str | None
    """The run's phase after the step (None: not known, e.g. gone or not yet started)."""
    message: str | None = None
    """The run's message after the step."""
    finished_now: bool = False
    """The run reached a final phase in this step (post an Event)."""
    gone: bool = False
    """The run no longer exists (or is being deleted)."""

    @property
    def finished(self) -> bool:
        return self.gone or runs.is_finished(self.phase)


def _pod_hashes(metadata: Mapping[str, Any]) -> dict[str, str]:
    annotations = metadata.get("annotations") or {}
    hashes = {
        "Stable": annotations.get(runs.STABLE_HASH_ANNOTATION),
        "Latest": annotations.get(runs.LATEST_HASH_ANNOTATION),
    }
    return {which: value for which, value in hashes.items() if value}


def _problems(spec: AnalysisRunSpec, pod_hashes: Mapping[str, str]) -> dict[str, str]:
    problems = runs.metric_problems(spec, pod_hashes=pod_hashes)
    for metric in spec.metrics:
        if metric.name in problems or metric.judge is not None or _is_job(metric):
            continue
        try:
            provider_for(metric)
        except UnknownProviderError as error:
            problems[metric.name] = str(error)
    return problems


def _is_job(metric: Metric) -> bool:
    return metric.provider is not None and metric.provider.job is not None


class KubeJobApi:
    """Jobs through the batch/v1 API, as plain JSON (the Job is sent as the template wrote it)."""

    def __init__(self, clients: Clients) -> None:
        self._clients = clients
        self._api: Any = None

    @property
    def _batch(self) -> Any:
        if self._api is None:  # built on first use: most runs measure no Job
            from kubernetes.client import BatchV1Api

            self._api = BatchV1Api(self._clients.api)
        return self._api

    @staticmethod
    def _refused(error: ApiException) -> JobApiError:
        try:
            message = json.loads(error.body or "{}").get("message") or error.reason
        except ValueError:
            message = error.reason
        return JobApiError(f"HTTP {error.status}: {message}", status=error.status)

    async def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = await call(
                self._batch.create_namespaced_job,
                namespace,
                body,
                field_manager=FIELD_MANAGER,
                _preload_content=False,
            )
        except ApiException as error:
            raise self._refused(error) from None
        return cast(dict[str, Any], json.loads(cast(Any, answer).data))

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            answer = await call(self._batch.read_namespaced_job, name, namespace, _preload_content=False)
        except ApiException as error:
            if error.status == 404:
                return None
            raise self._refused(error) from None
        return cast(dict[str, Any], json.loads(cast(Any, answer).data))

    async def delete(self, namespace: str, name: str) -> None:
        try:
            await call(self._batch.delete_namespaced_job, name, namespace, propagation_policy="Foreground")
        except ApiException as error:
            if error.status != 404:
                raise self._refused(error) from None


class _Scrubber:
    """Removes the values of secret arguments from provider output."""

    def __init__(self) -> None:
        self.secrets: list[str] = []

    def __call__(self, text: str | None) -> str | None:
        if text is None:
            return None
        for secret in sorted(self.secrets, key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, REDACTED)
                # A secret URL is named in messages without its query string: that part too.
                address = secret.split("?", 1)[0].split("#", 1)[0]
                if len(address) >= 4 and "://" in address:
                    text = text.replace(address, REDACTED)
        return text


def _carries_secret(metric: Metric, args: Sequence[Argument]) -> bool:
    """Whether a measurement of `metric` sends a Secret: a secretKeyRef argument it uses."""
    by_name = {arg.name: arg for arg in args}
    return any(
        (by_name[name].value_from or {}).get("secretKeyRef") is not None
        for name in runs.used_args(metric)
        if name in by_name and by_name[name].value is None
    )


async def _argument_values(
    metric: Metric, args: Sequence[Argument], secrets: SecretReader, scrub: _Scrubber
) -> dict[str, str]:
    """Values of the arguments the metric uses; secretKeyRef ones read now (MeasurementError)."""
    by_name = {arg.name: arg for arg in args}
    values: dict[str, str] = {}
    for name in runs.used_args(metric):
        arg = by_name.get(name)
        if arg is None:
            continue  # rendering reports the missing argument
        if arg.value is not None:
            values[name] = arg.value
            continue
        ref = (arg.value_from or {}).get("secretKeyRef") or {}
        try:
            value = await secrets.read(str(ref.get("name")), str(ref.get("key")))
        except Exception as error:  # any reader failure is a measurement error, named but not leaked
            raise MeasurementError(f"argument {name!r}: cannot read it from a secret: {error}") from None
        scrub.secrets.append(value)
        values[name] = value
    return values


async def _judged_data(
    metric: Metric,
    run_started: datetime,
    now: datetime,
    pod_hashes: Mapping[str, str],
    secrets: SecretReader,
    args: Mapping[str, str],
    *,
    spec_args: Sequence[Argument],
    transport: httpx.AsyncBaseTransport | None,
) -> tuple[runs.JudgeData, runs.JudgeData]:
    """The judged metric's data for (canary, stable): its range queries over
    `runs.judged_window` (from the run's start), once per version."""
    assert metric.judge is not None and metric.provider is not None  # see _problems
    assert metric.provider.prometheus is not None
    spec = metric.provider.prometheus
    span = runs.judged_window(metric, run_started, now)
    if span is None:
        return [], []
    start, end = span[0].timestamp(), span[1].timestamp()
    outbound = default_outbound().with_secrets(_carries_secret(metric, spec_args))
    prometheus = PrometheusMetricProvider(transport=transport, outbound=_transported(outbound, transport))

    async def series(query: str) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        return await prometheus.query_range_series(
            spec, secrets, args=args, query=query, start=start, end=end
        )

    answers = await asyncio.gather(*(series(query) for query in runs.judge_queries(metric, pod_hashes)))
    return runs.judge_data(metric, answers)


async def _measure(
    metric: Metric,
    result: MetricResult,
    spec: AnalysisRunSpec,
    pod_hashes: Mapping[str, str],
    secrets: SecretReader,
    *,
    run_started: datetime,
    clock: Clock,
    transport: httpx.AsyncBaseTransport | None,
    run: RunRef,
    jobs: JobMetricProvider,
) -> Measurement:
    started = clock()
    scrub = _Scrubber()
    try:
        args = await _argument_values(metric, spec.args, secrets, scrub)
        if _is_job(metric):
            last = result.measurements[-1] if result.measurements else None
            if last is not None and last.phase in runs.IN_PROGRESS:
                measured = await jobs.resume(run, metric, last, started)
            else:
                # Argo's getJobIDSuffix: every measurement so far, errors too, plus one.
                measured = await jobs.run(run, metric, result.count + result.error + 1, args, started)
            return measured.model_copy(update={"message": scrub(measured.message)})
        if metric.judge is not None:
            canary, stable = await _judged_data(
                metric,
                run_started,
                started,
                pod_hashes,
                secrets,
                args,
                spec_args=spec.args,
                transport=transport,
            )
            return runs.judged_measurement(
                metric, result, canary, stable, started_at=started, finished_at=clock()
            )
        outbound = default_outbound().with_secrets(_carries_secret(metric, spec.args))
        provider = provider_for(metric, outbound=_transported(outbound, transport))
        answer = await provider.measure(metric, args, secrets)
    except Exception as error:  # a measurement that cannot be taken is an Error measurement
        what = (
            str(error)
            if isinstance(error, MeasurementError)
            else f"unexpected {type(error).__name__}: {error}"
        )
        if not isinstance(error, MeasurementError):
            log.warning("metric %s: measurement failed unexpectedly: %s", metric.name, type(error).__name__)
        return Measurement(
            phase="Error",
            message=scrub(f"metric {metric.name}: {what}"),
            started_at=runs.timestamp(started),
            finished_at=runs.timestamp(clock()),
        )
    finished = clock()
    # The conditions run in a thread of their own pool, never on the event loop: a costly one
    # (bounded by its expressions.Budget) slows no other Rollout and no health probe.
    return await asyncio.get_running_loop().run_in_executor(
        _CONDITIONS,
        functools.partial(
            runs.measurement_of,
            metric,
            compile_conditions(metric),
            value=answer.value,
            text=scrub(answer.text) or "",
            error=scrub(answer.error),
            no_data=answer.no_data,
            started_at=started,
            finished_at=finished,
        ),
    )


def _transported(outbound: Outbound, transport: httpx.AsyncBaseTransport | None) -> Outbound:
    return outbound if transport is None else replace(outbound, transport=transport)


class _Conflict(Exception):
    """The run changed since it was read (its resourceVersion moved)."""


class _StatusWriter:
    """Writes a run's status as a merge patch, only when it changed, and never over a newer
    object: the patch carries the resourceVersion it was computed from (409 -> _Conflict)."""

    def __init__(self, clients: Clients, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        self._clients = clients
        self._namespace = namespace
        self._name = name
        self.raw: dict[str, Any] = dict(body.get("status") or {})
        self._version = (body.get("metadata") or {}).get("resourceVersion")
        self._generation = (body.get("metadata") or {}).get("generation")

    async def write(self, status: AnalysisRunStatus) -> bool:
        new = status.wire()
        try:
            known = AnalysisRunStatus.model_validate(self.raw).wire()
        except ValidationError:
            known = dict(self.raw)
        # Compared in normal form: a representation the server keeps differently never
        # turns into a write on every pass.
        if known == new:
            return False
        patch: dict[str, Any] = {"status": runs.merge_patch(self.raw, new)}
        for _attempt in range(3):
            if self._version:
                patch["metadata"] = {"resourceVersion": self._version}
            try:
                answer = await call(
                    self._clients.custom.patch_namespaced_custom_object_status,
                    GROUP,
                    VERSION,
                    self._namespace,
                    PLURAL,
                    self._name,
                    patch,
                    field_manager=FIELD_MANAGER,
                )
                break
            except ApiException as error:
                if error.status != 409:
                    raise
            await self._still_current()
        else:
            raise _Conflict
        written = cast(dict[str, Any], answer)
        self.raw = dict(written.get("status") or new)
        self._version = (written.get("metadata") or {}).get("resourceVersion")
        return True

    async def _still_current(self) -> None:
        """After a conflict: carry on when only metadata moved (kopf's finalizer, a label);
        _Conflict when the spec or the status changed (terminate, an edit, another writer)."""
        try:
            found = await call(
                self._clients.custom.get_namespaced_custom_object,
                GROUP,
                VERSION,
                self._namespace,
                PLURAL,
                self._name,
            )
        except ApiException as error:
            if error.status == 404:
                raise _Conflict from None
            raise
        body = cast(dict[str, Any], found)
        metadata = body.get("metadata") or {}
        if metadata.get("generation") != self._generation or (body.get("status") or {}) != self.raw:
            raise _Conflict
        self._version = metadata.get("resourceVersion")


async def _stop_in_flight(
    spec: AnalysisRunSpec, status: AnalysisRunStatus, run: RunRef, jobs: JobMetricProvider, now: datetime
) -> AnalysisRunStatus:
    """Stop the measurements still in progress (delete their Jobs): the run was told to stop or
    has its verdict (Argo's runMeasurements, terminating)."""
    for metric, measurement in runs.in_flight(spec, status):
        stopped = await jobs.terminate(run, measurement, now)
        status = runs.add_measurement(spec, status, metric, stopped)
    return status


CONFLICT_RETRY = 0.2
"""Seconds before stepping again when the run changed under a step."""


async def step_analysis_run(
    clients: Clients,
    namespace: str,
    name: str,
    *,
    clock: Clock = _utc_now,
    transport: httpx.AsyncBaseTransport | None = None,
    secrets: SecretReader | None = None,
    job_api: JobApi | None = None,
) -> StepOutcome:
    """One pass over a run: start it, measure the metrics that are due, conclude, write status.

    A finished run is left alone. spec.terminate ends the run with the verdict it has. A
    metric that cannot be measured as written is Error at once, which ends the run (unless
    dry-run).
    """
    try:
        found = await call(
            clients.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
        )
    except ApiException as error:
        if error.status == 404:
            return StepOutcome(delay=None, phase=None, gone=True)
        raise
    body = cast(dict[str, Any], found)
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return StepOutcome(delay=None, phase=None, gone=True)
    writer = _StatusWriter(clients, namespace, name, body)
    raw_status = writer.raw
    if runs.is_finished(raw_status.get("phase")):
        return StepOutcome(delay=None, phase=raw_status.get("phase"), message=raw_status.get("message"))
    now = clock()
    try:
        spec = AnalysisRunSpec.model_validate(body.get("spec") or {})
        status = AnalysisRunStatus.model_validate(raw_status)
    except ValidationError as error:
        status = AnalysisRunStatus(
            phase="Error",
            message=f"invalid AnalysisRun: {_first_error(error)}",
            started_at=raw_status.get("startedAt") or runs.timestamp(now),
        )
        try:
            await writer.write(status)
        except _Conflict:
            return StepOutcome(delay=CONFLICT_RETRY, phase=raw_status.get("phase"))
        return StepOutcome(delay=None, phase=status.phase, message=status.message, finished_now=True)

    before = status
    metadata = body.get("metadata") or {}
    pod_hashes = _pod_hashes(metadata)
    problems = _problems(spec, pod_hashes)
    run = RunRef(name=name, namespace=namespace, uid=str(metadata.get("uid") or ""))
    job_calls = job_api or KubeJobApi(clients)
    jobs = JobMetricProvider(job_calls)
    if spec.terminate and runs.in_flight(spec, status):
        status = await _stop_in_flight(spec, runs.start(spec, status, now, problems), run, jobs, now)
    status, due = runs.begin_step(spec, status, now, problems)
    if due:
        # Show Running (startedAt) before the first, possibly slow, measurements.
        try:
            await writer.write(status)
        except _Conflict:
            return StepOutcome(delay=CONFLICT_RETRY, phase=raw_status.get("phase"))
        reader = secrets or KubeSecretReader(clients, namespace)
        results = {result.name: result for result in status.metric_results}
        run_started = runs.run_started(status, now)
        measurements = await asyncio.gather(
            *(
                _measure(
                    metric,
                    results[metric.name],
                    spec,
                    pod_hashes,
                    reader,
                    run_started=run_started,
                    clock=clock,
                    transport=transport,
                    run=run,
                    jobs=jobs,
                )
                for metric in due
            )
        )
        for metric, measurement in zip(due, measurements, strict=True):
            log.debug(
                "analysisrun %s/%s metric %s: %s %s",
                namespace,
                name,
                metric.name,
                measurement.phase,
                measurement.value,
            )
        status = runs.finish_step(spec, status, list(zip(due, measurements, strict=True)))
    if runs.is_finished(status.phase) and runs.in_flight(spec, status):
        status = await _stop_in_flight(spec, status, run, jobs, clock())
    try:
        await writer.write(status)
    except _Conflict:
        # Changed meanwhile (terminate, an edit): measurements taken now are dropped and
        # taken again by the next step, which sees the change.
        return StepOutcome(delay=CONFLICT_RETRY, phase=raw_status.get("phase"))
    for job_namespace, job in jobs_dropped(before.metric_results, status.metric_results):
        try:  # best effort: a Job left behind still goes with the run
            await job_calls.delete(job_namespace or namespace, job)
        except JobApiError as error:
            log.warning("analysisrun %s/%s: cannot delete job %s: %s", namespace, name, job, error)
    if runs.is_finished(status.phase):
        return StepOutcome(delay=None, phase=status.phase, message=status.message, finished_now=True)
    later = clock()
    moment = runs.next_due(spec, status, later)
    delay = max(0.0, (moment - later).total_seconds()) if moment is not None else None
    return StepOutcome(delay=delay, phase=status.phase, message=status.message)

"""kopf wiring of the AnalysisRun controller and of the checks on analysis templates.

Every unfinished AnalysisRun has a daemon that takes one step (`step_analysis_run`:
measure what is due, write the status) and then sleeps until the next measurement is due
or an event of the run wakes it (spec.terminate, an edit, its own status write). A finished
run has no daemon (the `when` filter stops it and keeps it from being spawned after a
restart): it costs nothing. A failing step is logged and retried with backoff; it never
takes the operator down.

Templates have no status subresource: a successCondition or failureCondition that does not
compile is reported as a Warning Event on the template, once per generation.

Importing this module registers everything; `tidegate.cli.operator_cmd` imports it next to
`tidegate.handlers.operator`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, cast

import kopf

from tidegate.core.analysis_run import is_finished, template_problems
from tidegate.k8s.analysis import GROUP, PLURAL, VERSION, StepOutcome, step_analysis_run
from tidegate.k8s.client import Clients

log = logging.getLogger("tidegate.analysis")

MAX_BACKOFF = 60.0
"""Longest wait before retrying a run whose step failed."""

_clients: Clients | None = None
_wakers: dict[tuple[str, str], asyncio.Event] = {}
_checked_templates: dict[tuple[str, str], int | None] = {}
"""(kind, uid) -> the generation whose expressions were checked (warn once per generation)."""


def _api() -> Clients:
    global _clients
    if _clients is None:
        _clients = Clients.load()
    return _clients


@kopf.on.startup()
async def analysis_startup(**_: Any) -> None:
    _api()


def _wake(namespace: str | None, name: str | None) -> None:
    if namespace and name:
        waker = _wakers.get((namespace, name))
        if waker is not None:
            waker.set()


def _unfinished(**kwargs: Any) -> bool:
    return not is_finished((kwargs.get("status") or {}).get("phase"))


@kopf.on.event(GROUP, VERSION, PLURAL)
async def analysisrun_changed(**kwargs: Any) -> None:
    _wake(kwargs.get("namespace"), kwargs.get("name"))


def _post_verdict(body: Any, outcome: StepOutcome) -> None:
    phase = outcome.phase or "Unknown"
    kopf.event(
        cast(kopf.Body, body),
        type="Normal" if phase == "Successful" else "Warning",
        reason=f"AnalysisRun{phase}",
        message=outcome.message or phase,
    )


async def _count_outcomes(namespace: str, name: str) -> None:
    """Per-metric outcomes of a finished run, for tidegate_analysis_outcomes_total."""
    from tidegate.handlers.operator import TELEMETRY
    from tidegate.k8s.client import call

    api = _api()
    run: Any = await call(api.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name)
    rollout = ((run.get("metadata") or {}).get("labels") or {}).get("rollout.tidegate.io/name", "")
    for result in (run.get("status") or {}).get("metricResults") or []:
        phase = result.get("phase")
        if phase in ("Successful", "Failed", "Error", "Inconclusive"):
            TELEMETRY.count_analysis_outcome(namespace, rollout, result.get("name", ""), phase)


@kopf.daemon(GROUP, VERSION, PLURAL, when=_unfinished, cancellation_timeout=2.0)
async def analysisrun_loop(**kwargs: Any) -> None:
    name: str = kwargs["name"]
    namespace: str = kwargs["namespace"]
    stopped: kopf.DaemonStopped = kwargs["stopped"]
    key = (namespace, name)
    waker = _wakers.setdefault(key, asyncio.Event())
    waker.set()
    backoff = 1.0
    delay: float | None = None
    try:
        while not stopped:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waker.wait(), timeout=delay)
            waker.clear()
            if stopped:
                break
            try:
                outcome = await step_analysis_run(_api(), namespace, name)
            except Exception as exc:
                log.warning(
                    "analysisrun %s/%s: step failed, retrying in %.0fs: %s",
                    namespace,
                    name,
                    backoff,
                    exc,
                    extra={"namespace": namespace, "analysisrun": name},
                )
                delay, backoff = backoff, min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = 1.0
            if outcome.finished_now:
                with contextlib.suppress(Exception):
                    _post_verdict(kwargs["body"], outcome)
                with contextlib.suppress(Exception):
                    await _count_outcomes(namespace, name)
            if outcome.finished:
                return
            delay = outcome.delay
    finally:
        if _wakers.get(key) is waker:
            del _wakers[key]


def _check_template(kind: str, body: Any, event_type: str | None) -> None:
    metadata = body.get("metadata") or {}
    key = (kind, str(metadata.get("uid") or metadata.get("name")))
    if event_type == "DELETED":
        _checked_templates.pop(key, None)
        return
    generation = metadata.get("generation")
    if key in _checked_templates and _checked_templates[key] == generation:
        return
    _checked_templates[key] = generation
    for problem in template_problems(body.get("spec") or {}):
        log.warning("%s %s: %s", kind, metadata.get("name"), problem)
        kopf.event(cast(kopf.Body, body), type="Warning", reason="InvalidExpression", message=problem)


@kopf.on.event(GROUP, VERSION, "analysistemplates")
async def analysistemplate_changed(**kwargs: Any) -> None:
    _check_template("AnalysisTemplate", kwargs["body"], kwargs.get("type"))


@kopf.on.event(GROUP, VERSION, "clusteranalysistemplates")
async def clusteranalysistemplate_changed(**kwargs: Any) -> None:
    _check_template("ClusterAnalysisTemplate", kwargs["body"], kwargs.get("type"))

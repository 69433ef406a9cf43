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
from dataclasses import dataclass
from typing import Any, cast

import kopf

from tidegate.core.analysis_run import KIND_LABEL, is_finished, template_problems
from tidegate.core.model import ROLLOUT_LABEL
from tidegate.core.outbound import literal_problem
from tidegate.handlers.operator import TELEMETRY, _State, transition_fields, wait_for_wake, wake_blocked
from tidegate.k8s.analysis import GROUP, PLURAL, VERSION, StepOutcome, step_analysis_run
from tidegate.k8s.client import Clients
from tidegate.metrics import default_outbound
from tidegate.telemetry import ANALYSIS_OUTCOMES, ANALYSIS_PHASES

log = logging.getLogger("tidegate.analysis")
transitions = logging.getLogger("tidegate.rollout")
"""The same logger as the Rollouts' transitions: a run's measurements and verdict are theirs."""

MAX_BACKOFF = 60.0
"""Longest wait before retrying a run whose step failed."""

_clients: Clients | None = None
_wakers: dict[tuple[str, str], asyncio.Event] = {}
_checked_templates: dict[tuple[str, str], int | None] = {}
"""(kind, uid) -> the generation whose expressions were checked (warn once per generation)."""
_runs_seen: dict[tuple[str, str], RunSeen] = {}
"""What the watch last showed of each AnalysisRun: its phase and measurements per metric."""


@dataclass(frozen=True)
class RunSeen:
    phase: str
    counts: dict[str, int]


@dataclass(frozen=True)
class RunNews:
    """What changed in a run between two sightings (`run_news`)."""

    measurements: list[dict[str, Any]]
    """New measurements, each with the metric's name under `metric`, oldest first."""
    verdict: str | None
    """The run's final phase, when this sighting is the first to show it finished."""
    outcomes: list[tuple[str, str]]
    """(metric, phase) of every metric that reached a final phase with the verdict."""


def run_news(before: RunSeen | None, status: dict[str, Any]) -> tuple[RunNews, RunSeen]:
    """Compare a run's status with the previous sighting; nothing is news on the first one
    (an operator starting up, or taking over, does not replay history).

    >>> seen = RunSeen("Running", {"m": 1})
    >>> status = {"phase": "Successful", "metricResults": [
    ...     {"name": "m", "phase": "Successful", "count": 2,
    ...      "measurements": [{"phase": "Successful", "value": "1"}, {"phase": "Successful", "value": "2"}]}]}
    >>> news, _ = run_news(seen, status)
    >>> [m["value"] for m in news.measurements], news.verdict, news.outcomes
    (['2'], 'Successful', [('m', 'Successful')])
    """
    phase = str(status.get("phase") or "Pending")
    results = [r for r in status.get("metricResults") or [] if isinstance(r, dict)]
    now = RunSeen(phase, {str(r.get("name")): int(r.get("count") or 0) for r in results})
    if before is None:
        return RunNews([], None, []), now
    measurements: list[dict[str, Any]] = []
    for result in results:
        name = str(result.get("name"))
        new = now.counts[name] - before.counts.get(name, 0)
        kept = [m for m in result.get("measurements") or [] if isinstance(m, dict)]
        for m in kept[len(kept) - min(new, len(kept)) :] if new > 0 else []:
            measurements.append({**m, "metric": name})
    verdict = phase if is_finished(phase) and not is_finished(before.phase) else None
    outcomes = []
    if verdict is not None:
        outcomes = [
            (str(r.get("name")), str(r.get("phase"))) for r in results if r.get("phase") in ANALYSIS_OUTCOMES
        ]
    return RunNews(measurements, verdict, outcomes), now


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
    with contextlib.suppress(Exception):  # telemetry never fails the handler
        _report(kwargs.get("type"), kwargs.get("body") or {})


def _report(event_type: str | None, body: Any) -> None:
    """Log a run's new measurements and its verdict, count its outcomes, set its phase gauges."""
    meta = body.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    labels = meta.get("labels") or {}
    rollout, kind = str(labels.get(ROLLOUT_LABEL) or ""), str(labels.get(KIND_LABEL) or "step")
    if event_type == "DELETED":
        _runs_seen.pop((namespace, name), None)
        TELEMETRY.forget_analysis_run(namespace, rollout, name)
        return
    status = body.get("status") or {}
    news, _runs_seen[(namespace, name)] = run_news(_runs_seen.get((namespace, name)), status)
    if rollout:
        phases = {
            str(r.get("name")): str(r.get("phase"))
            for r in status.get("metricResults") or []
            if r.get("phase") in ANALYSIS_PHASES
        }
        phase = str(status.get("phase") or "Pending")
        if phase in ANALYSIS_PHASES:
            TELEMETRY.observe_analysis_run(namespace, rollout, kind, name, phase, phases)
    owner = (_State.cache.rollouts.get((namespace, rollout)) if _State.cache is not None else None) or {
        "metadata": {"namespace": namespace, "name": rollout}
    }
    fields = {**transition_fields(owner, _State.cache), "analysisrun": name}
    for m in news.measurements:
        value = m.get("value")
        text = (
            f"analysis run {name}: metric {m['metric']} measured {value if value is not None else 'nothing'}"
        )
        text += f": {m.get('phase')}" + (f" ({m['message']})" if m.get("message") else "")
        level = logging.INFO if m.get("phase") == "Successful" else logging.WARNING
        transitions.log(
            level,
            text,
            extra={**fields, "reason": "AnalysisMeasured", "metric": m["metric"], "phase": m.get("phase")},
        )
    if news.verdict is not None:
        text = f"analysis run {name}: {news.verdict}" + (
            f": {status['message']}" if status.get("message") else ""
        )
        level = logging.INFO if news.verdict == "Successful" else logging.WARNING
        transitions.log(
            level, text, extra={**fields, "reason": f"AnalysisRun{news.verdict}", "phase": news.verdict}
        )
        for metric, outcome in news.outcomes:
            TELEMETRY.count_analysis_outcome(namespace, rollout, metric, outcome)


def _post_verdict(body: Any, outcome: StepOutcome) -> None:
    phase = outcome.phase or "Unknown"
    kopf.event(
        cast(kopf.Body, body),
        type="Normal" if phase == "Successful" else "Warning",
        reason=f"AnalysisRun{phase}",
        message=outcome.message or phase,
    )


async def _step(body: Any, namespace: str, name: str) -> StepOutcome:
    outcome = await step_analysis_run(_api(), namespace, name)
    if outcome.finished_now:
        # Logged and counted where the watch shows the run finished (_report), so that a
        # verdict written just before this daemon is cancelled is counted all the same.
        with contextlib.suppress(Exception):
            _post_verdict(body, outcome)
    return outcome


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
            await wait_for_wake(waker, stopped, delay)
            waker.clear()
            if stopped:
                break
            # One step and, when it finishes the run, its verdict and outcome counts, never cut:
            # the run's own status write makes kopf stop this daemon (the `when` filter).
            task = asyncio.ensure_future(_step(kwargs["body"], namespace, name))
            try:
                outcome = await asyncio.shield(task)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await task
                raise
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
    for problem in outbound_problems(body.get("spec") or {}):
        log.warning("%s %s: %s", kind, metadata.get("name"), problem)
        kopf.event(cast(kopf.Body, body), type="Warning", reason="OutboundRefused", message=problem)


def outbound_problems(spec: dict[str, Any]) -> list[str]:
    """URLs and addresses of a template that the operator's outbound policy refuses as written."""
    policy = default_outbound().policy
    problems = []
    for metric in spec.get("metrics") or []:
        provider = (metric.get("provider") if isinstance(metric, dict) else None) or {}
        for field, url in (
            ("web.url", (provider.get("web") or {}).get("url")),
            ("prometheus.address", (provider.get("prometheus") or {}).get("address")),
        ):
            if isinstance(url, str) and (problem := literal_problem(policy, url)) is not None:
                problems.append(f"metric {metric.get('name')}: provider.{field}: {problem}")
    return problems


@kopf.on.event(GROUP, VERSION, "analysistemplates")
async def analysistemplate_changed(**kwargs: Any) -> None:
    _check_template("AnalysisTemplate", kwargs["body"], kwargs.get("type"))
    wake_blocked((kwargs["body"].get("metadata") or {}).get("namespace"))


@kopf.on.event(GROUP, VERSION, "clusteranalysistemplates")
async def clusteranalysistemplate_changed(**kwargs: Any) -> None:
    _check_template("ClusterAnalysisTemplate", kwargs["body"], kwargs.get("type"))
    wake_blocked(None)

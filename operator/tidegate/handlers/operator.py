"""kopf wiring.

kopf's on.update ignores status, where runtime control lives (abort, promote), so
Tidegate is level-triggered: every watch event of a Rollout or of something it owns
wakes that Rollout's loop (a kopf daemon), which runs one reconcile pass and then
sleeps until the next event or the wake-up time the pass asked for. An idle
Rollout makes no API requests beyond the watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, cast

import kopf

from tidegate.core.model import ROLLOUT_LABEL, Event
from tidegate.handlers.reconcile import PassResult, reconcile, release_traffic
from tidegate.k8s.client import ApiException, Clients
from tidegate.telemetry import Telemetry

GROUP, VERSION = "tidegate.io", "v1alpha1"
FINALIZER = "tidegate.io/traffic"
log = logging.getLogger("tidegate.operator")

_wakers: dict[tuple[str, str], asyncio.Event] = {}
_clients: Clients | None = None
TELEMETRY = Telemetry()
MAX_BACKOFF = 60.0


def _wake(namespace: str | None, name: str | None) -> None:
    if namespace and name:
        waker = _wakers.get((namespace, name))
        if waker is not None:
            waker.set()


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _clients
    _clients = Clients.load()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="tidegate.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="tidegate.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


@kopf.on.event(GROUP, VERSION, "rollouts")
async def rollout_event(**kwargs: Any) -> None:
    _wake(kwargs["namespace"], kwargs["name"])


@kopf.on.event("apps", "v1", "replicasets", labels={ROLLOUT_LABEL: kopf.PRESENT})
async def replicaset_event(**kwargs: Any) -> None:
    _wake(kwargs["namespace"], kwargs["labels"].get(ROLLOUT_LABEL))


@kopf.on.event(GROUP, VERSION, "analysisruns", labels={ROLLOUT_LABEL: kopf.PRESENT})
async def analysisrun_event(**kwargs: Any) -> None:
    _wake(kwargs["namespace"], kwargs["labels"].get(ROLLOUT_LABEL))


async def _emit(body: dict[str, Any], event: Event) -> None:
    meta = body.get("metadata") or {}
    ns, name = meta.get("namespace", ""), meta.get("name", "")
    if event.reason == "RolloutAborted":
        TELEMETRY.count_abort(ns, name)
    elif event.reason == "RolloutPromoted":
        TELEMETRY.count_promotion(ns, name)
    kopf.event(cast(kopf.Body, body), type=event.type, reason=event.reason, message=event.message)


def _observe(namespace: str, name: str, result: PassResult) -> None:
    st = result.status
    weight = (((st.get("canary") or {}).get("weights") or {}).get("canary") or {}).get("weight", 0)
    step = st.get("currentStepIndex") if result.strategy == "canary" else None
    since = next(
        (c.get("lastTransitionTime") for c in st.get("conditions") or [] if c.get("type") == "Ready"), None
    )
    from datetime import datetime

    try:
        phase_since = datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None
    except ValueError:
        phase_since = None
    phase = st.get("phase") or "Progressing"
    TELEMETRY.observe_rollout(
        namespace,
        name,
        phase=phase,
        step=step,
        weight=weight or 0,
        strategy=result.strategy,
        phase_since=phase_since,
    )


@kopf.daemon(GROUP, VERSION, "rollouts", cancellation_timeout=2.0)
async def rollout_loop(**kwargs: Any) -> None:
    assert _clients is not None
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
            try:
                with TELEMETRY.time_reconcile():
                    result = await reconcile(_clients, namespace, name, _emit)
                if result is None:
                    delay = None
                else:
                    delay = result.requeue_after
                    _observe(namespace, name, result)
                backoff = 1.0
            except ApiException as exc:
                TELEMETRY.count_api_error("reconcile", "rollouts", exc.status or "none")
                log.warning(
                    "reconcile of %s/%s: API error %s %s: %s",
                    namespace,
                    name,
                    exc.status,
                    exc.reason,
                    str(exc.body)[:500],
                    extra={"namespace": namespace, "rollout": name},
                )
                delay, backoff = backoff, min(backoff * 2, MAX_BACKOFF)
            except Exception as exc:
                log.warning(
                    "reconcile of %s/%s failed: %s",
                    namespace,
                    name,
                    exc,
                    extra={"namespace": namespace, "rollout": name},
                )
                delay, backoff = backoff, min(backoff * 2, MAX_BACKOFF)
    finally:
        if _wakers.get(key) is waker:
            del _wakers[key]


@kopf.on.delete(GROUP, VERSION, "rollouts")
async def rollout_deleted(**kwargs: Any) -> None:
    """Deletion never strands traffic: back to stable before the finalizer goes."""
    assert _clients is not None
    await release_traffic(_clients, kwargs["namespace"], kwargs["name"])
    TELEMETRY.forget(kwargs["namespace"], kwargs["name"])

"""kopf wiring.

kopf's on.update ignores status, where runtime control lives (abort, promote), so
Tidegate is level-triggered: every watch event of a Rollout, and every change the
watch-fed cache (tidegate.k8s.cache) sees in an object a Rollout uses — its ReplicaSets
and AnalysisRuns, its Services and their EndpointSlices, its VirtualService and
DestinationRule — adds that Rollout to a work queue (client-go's workqueue: a key is
worked on by one worker at a time; added again meanwhile, it is worked on once more
after), and a few workers run one pass each from the cache. A pass that wants to be
called again at a time (a pause ending) puts its key back for then. An idle Rollout
costs nothing: no task, no API request beyond the watches; the operator's own writes
are already in the cache, so their echo wakes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

import kopf

from tidegate.core.hashing import HASH_LABEL, pod_template_hash
from tidegate.core.model import ANALYSIS_BLOCKED, REVISION_ANNOTATION, Event
from tidegate.handlers.reconcile import PassResult, reconcile, release_traffic
from tidegate.k8s.cache import Cache, rollout_refs
from tidegate.k8s.client import ApiException, Clients
from tidegate.k8s.events import post_event
from tidegate.k8s.notifyconfig import read_notification_config
from tidegate.notifications import Notifier
from tidegate.telemetry import Telemetry

GROUP, VERSION = "tidegate.io", "v1alpha1"
FINALIZER = "tidegate.io/traffic"
log = logging.getLogger("tidegate.operator")
transitions = logging.getLogger("tidegate.rollout")
"""One line per transition of a Rollout (each Event it gets, a weight verified on the router)."""

TELEMETRY = Telemetry()
MAX_BACKOFF = 60.0
RESYNC_SECONDS = 60.0
"""A Rollout that is not Healthy is looked at at least this often, whatever the watches say."""
STOP_TIMEOUT = 30.0
"""How long the operator waits for the passes under way to finish when it stops."""


WORKERS = 8
"""Passes of different Rollouts at once (client-go's controllers default to a few workers)."""


class WorkQueue:
    """Keys (namespace, name) to reconcile, each worked on by one worker at a time.

    As client-go's workqueue: adding a key that waits changes nothing; adding a key that is
    being worked on marks it dirty, and it goes back in the queue when that pass is done;
    `add_after` keeps the earliest time asked for.
    """

    def __init__(
        self,
        on_add: Callable[[int], None] | None = None,
        on_get: Callable[[float, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`on_add(depth)` after a key goes in; `on_get(waited, depth)` when a worker takes one
        (client-go's workqueue_adds_total, workqueue_depth, workqueue_queue_duration_seconds)."""
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._dirty: set[tuple[str, str]] = set()
        self._processing: set[tuple[str, str]] = set()
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._queued_at: dict[tuple[str, str], float] = {}
        self._on_add, self._on_get, self._clock = on_add, on_get, clock

    def _put(self, key: tuple[str, str]) -> None:
        self._queued_at.setdefault(key, self._clock())
        self._queue.put_nowait(key)
        if self._on_add is not None:
            self._on_add(self._queue.qsize())

    def add(self, key: tuple[str, str]) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._put(key)

    def add_after(self, key: tuple[str, str], delay: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        timer = self._timers.get(key)
        if timer is not None and timer.when() <= due:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(due, self.add, key)

    def forget(self, key: tuple[str, str]) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    async def get(self) -> tuple[str, str]:
        key = await self._queue.get()
        self._dirty.discard(key)
        self._processing.add(key)
        queued = self._queued_at.pop(key, None)
        if self._on_get is not None and queued is not None:
            self._on_get(self._clock() - queued, self._queue.qsize())
        return key

    def done(self, key: tuple[str, str]) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._put(key)

    def __len__(self) -> int:
        return self._queue.qsize()


class _State:
    """Process-wide wiring: set by `bind()` before kopf starts (or by the startup handler)."""

    clients: Clients | None = None
    cache: Cache | None = None
    queue = WorkQueue(on_add=TELEMETRY.queue_added, on_get=TELEMETRY.queue_taken)
    weights: dict[tuple[str, str], tuple[float, bool]] = {}
    """The canary weight and its `verified` seen after each Rollout's last pass."""
    workers: list[asyncio.Task[None]] = []
    backoff: dict[tuple[str, str], float] = {}
    locks: dict[tuple[str, str], asyncio.Lock] = {}
    notifier: Notifier | None = None
    notifications_namespace = "default"
    """Where tidegate-notification-configmap and -secret are: the operator's own namespace."""


def wake(namespace: str | None, name: str | None) -> None:
    if namespace and name:
        _State.queue.add((namespace, name))


def wake_blocked(namespace: str | None) -> None:
    """Wake the Rollouts (of a namespace, or all) waiting for an analysis template."""
    if _State.cache is None:
        return
    for (ns, name), body in list(_State.cache.rollouts.items()):
        if (namespace is None or ns == namespace) and (body.get("status") or {}).get(ANALYSIS_BLOCKED):
            wake(ns, name)


def bind(clients: Clients, cache: Cache, notifications_namespace: str | None = None) -> None:
    """Give the handlers the clients and the (already started) cache of this process."""
    _State.clients, _State.cache = clients, cache
    if notifications_namespace:
        _State.notifications_namespace = notifications_namespace
    cache.wake = wake


def _lock(key: tuple[str, str]) -> asyncio.Lock:
    return _State.locks.setdefault(key, asyncio.Lock())


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    if _State.clients is None or _State.cache is None:
        clients = Clients.load()
        cache = Cache(clients)
        await cache.start()
        await cache.wait_synced(timeout=60)
        bind(clients, cache)
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="tidegate.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="tidegate.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


def _start_workers() -> None:
    """Started from inside a kopf handler: kopf.event() needs the context kopf sets for handlers
    (its event-posting queue), which the startup handler does not have yet."""
    if not _State.workers:
        _State.workers = [asyncio.create_task(_worker(), name=f"reconcile-{i}") for i in range(WORKERS)]
    if _State.notifier is None and _State.clients is not None:
        clients = _State.clients

        async def load_config() -> Any:
            return await read_notification_config(clients, _State.notifications_namespace)

        _State.notifier = Notifier(load_config, _NotificationReporter(), wake)
        if _State.cache is not None:
            # What a previous leader recorded and did not deliver is owed still.
            for body in list(_State.cache.rollouts.values()):
                _State.notifier.offer(body)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    """Stop the workers between passes: a pass already running finishes (bounded)."""
    workers, _State.workers = _State.workers, []
    for task in workers:
        task.cancel()
    if workers:
        _done, left = await asyncio.wait(workers, timeout=STOP_TIMEOUT)
        if left:
            log.warning(
                "stopping: %d passes still under way after %gs are left to kopf to cancel; "
                "the requests they have sent land before the Lease is released",
                len(left),
                STOP_TIMEOUT,
            )
    notifier, _State.notifier = _State.notifier, None
    if notifier is not None:
        await notifier.stop()


@kopf.on.event(GROUP, VERSION, "rollouts")
async def rollout_event(**kwargs: Any) -> None:
    """Keep the Rollout in the cache; wake its loop unless the event echoes our own write."""
    cache = _State.cache
    if cache is None:
        return
    _start_workers()
    event, namespace, name = kwargs["event"], kwargs["namespace"], kwargs["name"]
    raw = event.get("object") or {}
    if event.get("type") == "DELETED":
        cache.forget_rollout(namespace, name)
        _State.queue.forget((namespace, name))
        _State.backoff.pop((namespace, name), None)
        _State.weights.pop((namespace, name), None)
        if _State.notifier is not None:
            _State.notifier.forget(namespace, name)
        return
    if cache.put_rollout(raw, rollout_refs(raw)):
        wake(namespace, name)


def transition_fields(body: dict[str, Any], cache: Cache | None) -> dict[str, Any]:
    """What a log line about the Rollout carries: namespace, rollout, revision, step.

    `revision` is the number of the ReplicaSet of the Rollout's template (the REV column
    of `tidegate get rollout`), None before it exists; `step` is the canary step the
    Rollout is at after the transition (its status as the pass planned it), counted from
    1 as the CLI and the Events count it (n of n once all are done), None without steps.
    """
    meta = body.get("metadata") or {}
    spec, st = body.get("spec") or {}, body.get("status") or {}
    namespace, name = meta.get("namespace", ""), meta.get("name", "")
    fields: dict[str, Any] = {"namespace": namespace, "rollout": name, "revision": None, "step": None}
    steps = (((spec.get("strategy") or {}).get("canary") or {}).get("steps")) or []
    if steps:
        fields["step"] = min(int(st.get("currentStepIndex") or 0), len(steps) - 1) + 1
    if cache is not None and isinstance(spec.get("template"), dict):
        with contextlib.suppress(Exception):  # a log field must never fail the pass
            current = pod_template_hash(spec["template"], int(st.get("collisionCount") or 0))
            for rs in cache.owned(cache.replicasets, namespace, name):
                rs_meta = rs.get("metadata") or {}
                if (rs_meta.get("labels") or {}).get(HASH_LABEL) == current:
                    fields["revision"] = int((rs_meta.get("annotations") or {}).get(REVISION_ANNOTATION, 0))
    return fields


def log_transition(body: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
    fields = transition_fields(body, _State.cache)
    transitions.log(logging.WARNING if warning else logging.INFO, message, extra={**fields, "reason": reason})


async def _emit(body: dict[str, Any], event: Event) -> None:
    meta = body.get("metadata") or {}
    ns, name = meta.get("namespace", ""), meta.get("name", "")
    if event.reason == "RolloutAborted":
        TELEMETRY.count_abort(ns, name)
    elif event.reason == "RolloutPromoted":
        TELEMETRY.count_promotion(ns, name)
    log_transition(body, event.reason, event.message, event.type == "Warning")
    clients = _State.clients
    assert clients is not None
    # Awaited inside the pass, with our own client: a pass that finishes has posted its Events,
    # even one finishing while the operator stops (kopf's poster is stopped by then).
    await post_event(clients, body, event.type, event.reason, event.message)


class _NotificationReporter:
    """Each delivery's outcome: a metric always; a Warning Event on the Rollout for each failure."""

    @staticmethod
    def _labels(body: dict[str, Any], item: dict[str, Any], destination: str) -> tuple[str, str, str, str]:
        meta = body.get("metadata") or {}
        return (
            meta.get("namespace", ""),
            meta.get("name", ""),
            destination.partition(":")[0],
            item["trigger"],
        )

    def sent(self, body: dict[str, Any], item: dict[str, Any], destination: str, seconds: float) -> None:
        ns, name, service, trigger = self._labels(body, item, destination)
        TELEMETRY.count_notification(ns, name, service, trigger, seconds, None)
        log.info(
            "notification %s (%s) sent to %s",
            item.get("id"),
            trigger,
            destination,
            extra={"namespace": ns, "rollout": name},
        )

    def failed(
        self,
        body: dict[str, Any],
        item: dict[str, Any],
        destination: str,
        why: str,
        attempt: int,
        final: bool,
        seconds: float,
    ) -> None:
        ns, name, service, trigger = self._labels(body, item, destination)
        TELEMETRY.count_notification(ns, name, service, trigger, seconds, "true" if final else "false")
        outcome = "given up" if final else "will retry"
        message = f"notification {trigger} to {destination} failed (attempt {attempt}, {outcome}): {why}"
        log_transition(body, "NotificationFailed", message, warning=True)
        with contextlib.suppress(Exception):  # an Event must never stop a delivery lane
            kopf.event(cast(kopf.Body, body), type="Warning", reason="NotificationFailed", message=message)


def _log_verified(namespace: str, name: str, weights: dict[str, Any]) -> None:
    """A line when the router is read back carrying the weight the Rollout asked for."""
    key = (namespace, name)
    now = (float((weights.get("canary") or {}).get("weight") or 0), bool(weights.get("verified")))
    before = _State.weights.get(key)
    _State.weights[key] = now
    if before is not None and now[1] and before != now:
        cache = _State.cache
        body = cache.rollouts.get(key) if cache is not None else None
        message = f"canary weight {now[0]:g}% verified on the router"
        log_transition(
            body or {"metadata": {"namespace": namespace, "name": name}}, "WeightVerified", message
        )


def _observe(namespace: str, name: str, result: PassResult) -> None:
    st = result.status
    weights = (st.get("canary") or {}).get("weights") or {}
    weight = (weights.get("canary") or {}).get("weight", 0)
    step = None
    if result.strategy == "canary" and result.steps:
        # 1-based, as the CLI shows it; n of n once every step is done.
        step = min(int(st.get("currentStepIndex") or 0) + 1, result.steps)
    if result.strategy == "canary":
        _log_verified(namespace, name, weights)
    since = next(
        (c.get("lastTransitionTime") for c in st.get("conditions") or [] if c.get("type") == "Ready"), None
    )
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
        steps=result.steps if result.strategy == "canary" else None,
        replicas={
            "desired": result.desired,
            "current": int(st.get("replicas") or 0),
            "updated": int(st.get("updatedReplicas") or 0),
            "ready": int(st.get("readyReplicas") or 0),
            "available": int(st.get("availableReplicas") or 0),
        },
    )
    TELEMETRY.count_conflicts("rollouts", result.conflicts)


async def run_pass(namespace: str, name: str) -> float | None:
    """One pass, never two at once for one Rollout; returns the wanted delay (None: wait)."""
    clients, cache = _State.clients, _State.cache
    assert clients is not None and cache is not None
    notifier = _State.notifier
    notified = notifier.notified(namespace, name) if notifier is not None else frozenset()
    async with _lock((namespace, name)):
        with TELEMETRY.time_reconcile():
            result = await reconcile(clients, cache, namespace, name, _emit, notified=notified)
    if result is None:
        return None
    if notifier is not None:
        # The outbox as written: deliveries start in their own tasks, the pass is over.
        notifier.offer(cache.rollouts.get((namespace, name)))
    _observe(namespace, name, result)
    return next_pass_in(result)


def next_pass_in(result: PassResult) -> float | None:
    """The pass's own wake-up time; a Rollout that is not Healthy is looked at every RESYNC_SECONDS."""
    if result.requeue_after is None and result.status.get("phase") != "Healthy":
        return RESYNC_SECONDS
    return result.requeue_after


async def wait_for_wake(waker: asyncio.Event, stopped: kopf.DaemonStopped, delay: float | None) -> None:
    """Until the waker is set, the daemon is asked to stop, or the delay is over."""

    async def until_stopped() -> None:
        await stopped.wait()

    waits = [asyncio.ensure_future(waker.wait()), asyncio.ensure_future(until_stopped())]
    try:
        await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()


async def _worker() -> None:
    """Take a key, run its pass to the end (shielded from cancellation), put it back when asked."""
    queue = _State.queue
    while True:
        key = await queue.get()
        task = asyncio.ensure_future(_work(key))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await task  # the pass finishes; the worker stops after it
            raise
        finally:
            queue.done(key)


async def _work(key: tuple[str, str]) -> None:
    namespace, name = key
    try:
        delay = await run_pass(namespace, name)
        _State.backoff.pop(key, None)
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
        delay = _State.backoff[key] = min(_State.backoff.get(key, 0.5) * 2, MAX_BACKOFF)
    except Exception as exc:
        log.warning(
            "reconcile of %s/%s failed: %s",
            namespace,
            name,
            exc,
            extra={"namespace": namespace, "rollout": name},
        )
        delay = _State.backoff[key] = min(_State.backoff.get(key, 0.5) * 2, MAX_BACKOFF)
    if delay is not None:
        _State.queue.add_after(key, delay)


@kopf.on.delete(GROUP, VERSION, "rollouts")
async def rollout_deleted(**kwargs: Any) -> None:
    """Deletion never strands traffic: back to stable before the finalizer goes."""
    namespace: str = kwargs["namespace"]
    name: str = kwargs["name"]
    clients, cache = _State.clients, _State.cache
    assert clients is not None and cache is not None
    lock = _lock((namespace, name))
    if lock.locked():
        log.info(
            "deletion of %s/%s waits for the pass under way",
            namespace,
            name,
            extra={"namespace": namespace, "rollout": name},
        )
    async with lock:
        await release_traffic(clients, cache, namespace, name)
    TELEMETRY.forget(namespace, name)
    _State.locks.pop((namespace, name), None)
    _State.queue.forget((namespace, name))

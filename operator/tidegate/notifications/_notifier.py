"""Deliveries run in their own tasks, one lane per (Rollout, destination), never inside a pass.

A pass records what it owes in status; `offer()` (called after the pass, with the Rollout as
written) puts each owed delivery in its lane, in the order of the notifications' ids. A lane
sends, retries with backoff (notifications-engine's retryMax / retryWaitMin / retryWaitMax,
3 / 1s / 5s by default), and once a delivery is done — sent, or given up — records it and
wakes the Rollout, whose next pass removes it from the outbox. A receiver that hangs holds
only its own lane, for at most its timeout per attempt; a reconcile pass never waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx

from tidegate.core.notify_services import Config, NotificationError, Retry, build_request

log = logging.getLogger("tidegate.notifications")
Key = tuple[str, str]
Lane = tuple[str, str, str]


class Reporter(Protocol):
    def sent(self, body: dict[str, Any], item: dict[str, Any], destination: str, seconds: float) -> None: ...

    def failed(
        self,
        body: dict[str, Any],
        item: dict[str, Any],
        destination: str,
        why: str,
        attempt: int,
        final: bool,
        seconds: float,
    ) -> None: ...


def _pending(body: dict[str, Any]) -> list[dict[str, Any]]:
    notes = (body.get("status") or {}).get("notifications") or {}
    return sorted(notes.get("pending") or [], key=lambda i: int(i.get("id") or 0))


class _Transient(Exception):
    pass


class Notifier:
    def __init__(
        self,
        load_config: Callable[[], Awaitable[Config]],
        reporter: Reporter,
        wake: Callable[[str, str], None],
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self._load_config = load_config
        self._reporter = reporter
        self._wake = wake
        self._sleep = sleep
        self._client = httpx.AsyncClient(transport=transport, follow_redirects=False)
        self._bodies: dict[Key, dict[str, Any]] = {}
        self._done: dict[Key, set[str]] = {}
        self._queued: dict[Key, set[str]] = {}
        self._lanes: dict[Lane, deque[dict[str, Any]]] = {}
        self._tasks: dict[Lane, asyncio.Task[None]] = {}

    # -- what the handlers call -------------------------------------------------------

    def offer(self, body: dict[str, Any] | None) -> None:
        """Queue what the Rollout's outbox still owes and is not queued or done already."""
        if not body:
            return
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        pending = _pending(body)
        if not pending and key not in self._bodies:
            return
        self._bodies[key] = body
        owed = {f"{item.get('id')}/{d}" for item in pending for d in item.get("destinations") or []}
        # A delivery no longer in the outbox has been removed by a status write: forget it.
        done = self._done.setdefault(key, set())
        done &= owed
        queued = self._queued.setdefault(key, set())
        queued &= owed | {k for lane in self._lanes_of(key) for k in self._lane_keys(lane)}
        for item in pending:
            for dest in item.get("destinations") or []:
                ref = f"{item.get('id')}/{dest}"
                if ref in done or ref in queued:
                    continue
                queued.add(ref)
                lane = (key[0], key[1], dest)
                self._lanes.setdefault(lane, deque()).append(item)
                task = self._tasks.get(lane)
                if task is None or task.done():
                    self._tasks[lane] = asyncio.create_task(self._run_lane(lane), name=f"notify-{dest}")
        if not pending:
            self._bodies.pop(key, None)
            self._done.pop(key, None)
            self._queued.pop(key, None)

    def notified(self, namespace: str, name: str) -> frozenset[str]:
        """Deliveries done (`id/service:recipient`) that the outbox in status still lists."""
        return frozenset(self._done.get((namespace, name), ()))

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        for lane in list(self._lanes_of(key)):
            task = self._tasks.pop(lane, None)
            if task is not None:
                task.cancel()
            self._lanes.pop(lane, None)
        for table in (self._bodies, self._done, self._queued):
            table.pop(key, None)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self._client.aclose()

    def idle(self) -> bool:
        return all(t.done() for t in self._tasks.values())

    # -- lanes ------------------------------------------------------------------------

    def _lanes_of(self, key: Key) -> list[Lane]:
        return [lane for lane in self._lanes if lane[:2] == key]

    def _lane_keys(self, lane: Lane) -> set[str]:
        return {f"{item.get('id')}/{lane[2]}" for item in self._lanes.get(lane, ())}

    async def _run_lane(self, lane: Lane) -> None:
        queue = self._lanes.get(lane)
        key = (lane[0], lane[1])
        while queue:
            item = queue[0]
            await self._deliver(key, item, lane[2])
            queue.popleft()
            ref = f"{item.get('id')}/{lane[2]}"
            self._queued.get(key, set()).discard(ref)
            if key in self._bodies:
                self._done.setdefault(key, set()).add(ref)
                self._wake(*key)

    async def _deliver(self, key: Key, item: dict[str, Any], dest: str) -> None:
        attempt = 0
        while True:
            attempt += 1
            body = self._bodies.get(key) or {"metadata": {"namespace": key[0], "name": key[1]}}
            started = time.monotonic()
            retry = Retry()
            try:
                config = await self._load_config()
                request, service = build_request(config, body, item, dest)
                retry = service.retry
                await self._send(request)
            except NotificationError as exc:
                self._reporter.failed(body, item, dest, str(exc), attempt, True, time.monotonic() - started)
                return
            except _Transient as exc:
                final = attempt > retry.max
                self._reporter.failed(body, item, dest, str(exc), attempt, final, time.monotonic() - started)
                if final:
                    return
                await self._sleep(retry.delay(attempt))
                continue
            except Exception as exc:  # reading the configuration, say: try again
                final = attempt > retry.max
                why = f"{type(exc).__name__}: {exc}"
                self._reporter.failed(body, item, dest, why, attempt, final, time.monotonic() - started)
                if final:
                    return
                await self._sleep(retry.delay(attempt))
                continue
            self._reporter.sent(body, item, dest, time.monotonic() - started)
            return

    async def _send(self, request: Any) -> None:
        try:
            response = await self._client.request(
                request.method,
                request.url,
                headers=list(request.headers),
                content=request.body.encode(),
                auth=request.auth,
                timeout=request.timeout,
            )
        except httpx.TimeoutException as exc:
            raise _Transient(f"no answer within {request.timeout:g}s ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc
        if 200 <= response.status_code < 300:
            return
        text = response.text[:200].strip()
        why = f"HTTP {response.status_code} from the service" + (f": {text}" if text else "")
        # As retryablehttp (notifications-engine's client): 5xx and 429 are worth another try.
        if response.status_code >= 500 or response.status_code == 429:
            raise _Transient(why)
        raise NotificationError(why)

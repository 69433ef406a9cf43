"""An abort written between the operator's read and its status write is never lost.

The interleaving is made deterministic: the session's operator is stopped, and this
test runs the operator's own pass (`reconcile`) in-process against the real API
server, writing the abort from the `before_status_write` hook — after the pass has
planned from the old Rollout, before it writes. The write must meet a 409, plan
again from the newer Rollout, and end aborted.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tests.e2e.test_canary import HOST, canary
from tests.kube import Kube
from tidegate.core.model import Event
from tidegate.handlers.reconcile import PassResult, reconcile
from tidegate.k8s.cache import Cache
from tidegate.k8s.client import Clients


async def _passes_until(
    clients: Clients, cache: Cache, kube: Kube, events: list[Event], done: Any, what: str
) -> PassResult:
    async def emit(_: dict[str, Any], event: Event) -> None:
        events.append(event)

    deadline = time.monotonic() + 60
    last: PassResult | None = None
    while time.monotonic() < deadline:
        cache.forget_rollout(kube.namespace, "web")  # no kopf here to feed it: read afresh
        last = await reconcile(clients, cache, kube.namespace, "web", emit)
        if last is not None and done(last.status):
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last status: {last and last.status}")


def test_an_abort_written_during_a_promoting_pass_wins(quiet: Kube) -> None:
    kube = quiet
    for path in HOST:
        kube.apply_file(path)
    kube.apply(canary([{"setWeight": 30}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]))

    async def scenario() -> None:
        clients = Clients.load(str(kube.sandbox.kubeconfig))
        cache = Cache(clients, (kube.namespace,))
        await cache.start()
        await cache.wait_synced(timeout=30)
        events: list[Event] = []
        try:
            await _passes_until(
                clients, cache, kube, events, lambda s: s.get("phase") == "Healthy", "Healthy"
            )
            image = [
                {
                    "op": "replace",
                    "path": "/spec/template/spec/containers/0/image",
                    "value": "registry.example/web:2.0",
                }
            ]
            kube.kubectl("patch", "rollout.tidegate.io", "web", "--type=json", "-p", json.dumps(image))
            await _passes_until(
                clients, cache, kube, events, lambda s: s.get("phase") == "Paused", "paused at 30%"
            )
            kube.patch_status("web", {"pauseConditions": []})  # promote: the next pass moves on
            events.clear()
            written: list[str] = []

            async def abort_meanwhile() -> None:
                if not written:
                    kube.patch_status("web", {"abort": True})
                    written.append("abort")

            cache.forget_rollout(kube.namespace, "web")

            async def emit(_: dict[str, Any], event: Event) -> None:
                events.append(event)

            result = await reconcile(
                clients, cache, kube.namespace, "web", emit, before_status_write=abort_meanwhile
            )
            assert written == ["abort"], "the hook ran between planning and writing"
            assert result is not None and result.conflicts >= 1, "the stale write met a 409"
            status = kube.status("web")
            assert status["abort"] is True, f"the abort was lost: {status}"
            assert status["phase"] == "Degraded", status.get("message")
            assert status.get("currentStepIndex") == 1, "the promoting pass did not advance past the abort"
            reasons = [e.reason for e in events]
            assert "RolloutAborted" in reasons
            assert reasons.count("StepCompleted") == 0, f"the discarded plan's Events were posted: {reasons}"
        finally:
            cache.stop()

    asyncio.run(scenario())


def test_a_planner_that_raises_on_its_input_is_invalid_spec_and_not_a_retry_loop(
    quiet: Kube, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The planner is pure, so a value it cannot use fails it the same way every pass. No spec the
    CRD admits is known to do that any more, so a planner that raises stands in for one (a fake is
    the only way to reach this error path): the pass is InvalidSpec with an Event, asks for no
    retry, and the running version is left as it was."""
    from tidegate.core import planner

    kube = quiet
    for path in HOST:
        kube.apply_file(path)
    kube.apply(canary([{"setWeight": 30}, {"pause": {}}]))

    async def scenario() -> None:
        clients = Clients.load(str(kube.sandbox.kubeconfig))
        cache = Cache(clients, (kube.namespace,))
        await cache.start()
        await cache.wait_synced(timeout=30)
        events: list[Event] = []
        try:
            await _passes_until(
                clients, cache, kube, events, lambda s: s.get("phase") == "Healthy", "Healthy"
            )
            before = kube.replica_sets("web")

            def fails(_: Any) -> Any:
                raise ZeroDivisionError("a value the planner cannot use")

            monkeypatch.setattr(planner, "plan", fails)
            events.clear()
            result = await _passes_until(
                clients, cache, kube, events, lambda s: s.get("phase") == "Degraded", "InvalidSpec"
            )
            invalid = next(c for c in result.status["conditions"] if c["type"] == "InvalidSpec")
            assert invalid["status"] == "True", invalid
            assert "cannot plan this spec: ZeroDivisionError" in invalid["message"], invalid["message"]
            assert result.requeue_after is None, "no retry loop: the same input would fail again"
            assert any(e.reason == "InvalidSpec" and e.type == "Warning" for e in events), events
            after = kube.replica_sets("web")
            assert [rs["metadata"]["resourceVersion"] for rs in after] == [
                rs["metadata"]["resourceVersion"] for rs in before
            ], "the running version's ReplicaSet was left as it was"
        finally:
            cache.stop()

    asyncio.run(scenario())

"""Leader election against the real API server: one leader at a time, hand-over on release,
take-over only after a silent leader's lease ran out by the standby's own clock, and no
write from a standby while the Lease is held.

Who wrote what is read from a watch on the Lease (every write is one event, in order),
not from the electors: each candidate only ever writes its own identity, or "" on release.
Short durations (lease 3 s, renew 2 s, retry 0.5 s) keep the waits small; every wait is
on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
from kubernetes import client, watch

from tests.kube import Kube
from tidegate.k8s.client import Clients
from tidegate.k8s.leader import LeaderElector, LeadershipLost
from tidegate.sandbox.cluster import free_port

pytestmark = pytest.mark.sandbox

LEASE, RENEW, RETRY = 3.0, 2.0, 0.5
MARGIN = 1.5  # API round trips and scheduling on a loaded two-core machine
NAME = "tidegate-operator"
T = TypeVar("T")


@dataclass(frozen=True)
class Write:
    holder: str
    duration: int
    transitions: int
    resource_version: str


@dataclass
class LeaseWrites:
    """Every version of the Lease from the moment of `start()`, as the API server's watch reports them."""

    kube: Kube
    seen: list[Write] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    async def __aenter__(self) -> LeaseWrites:
        coordination = client.CoordinationV1Api(Clients.load(str(self.kube.sandbox.kubeconfig)).api)
        since = coordination.list_namespaced_lease(self.kube.namespace).metadata.resource_version
        threading.Thread(target=self._watch, args=(coordination, since), daemon=True).start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._stop.set()

    def _watch(self, coordination: client.CoordinationV1Api, rv: str) -> None:
        # Resumes from the last version seen, so no write falls between two watch requests.
        while not self._stop.is_set():
            try:
                for event in watch.Watch().stream(
                    coordination.list_namespaced_lease,
                    self.kube.namespace,
                    field_selector=f"metadata.name={NAME}",
                    resource_version=rv,
                    timeout_seconds=2,
                ):
                    lease = event["object"]
                    rv = lease.metadata.resource_version
                    spec = lease.spec
                    self.seen.append(
                        Write(
                            spec.holder_identity or "",
                            spec.lease_duration_seconds,
                            spec.lease_transitions,
                            rv,
                        )
                    )
            except Exception:  # the API server restarting or going away at the end of the session
                self._stop.wait(0.2)

    async def settle(self) -> list[Write]:
        """All writes up to now: wait until the watch has caught up with the Lease as it is."""
        rv = (await read_lease(self.kube)).metadata.resource_version
        await eventually(lambda: self.seen and self.seen[-1].resource_version == rv, 10, f"watch at {rv}")
        return list(self.seen)


async def eventually(check: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        await asyncio.sleep(0.02)


async def read_lease(kube: Kube) -> client.V1Lease:
    api = client.CoordinationV1Api(Clients.load(str(kube.sandbox.kubeconfig)).api)
    return await asyncio.to_thread(api.read_namespaced_lease, NAME, kube.namespace)


def elector(kube: Kube, identity: str) -> LeaderElector:
    """Each candidate with its own client, as if in its own pod."""
    clients = Clients.load(str(kube.sandbox.kubeconfig))
    return LeaderElector(clients, kube.namespace, NAME, identity, LEASE, RENEW, RETRY)


async def stop(task: asyncio.Task[None]) -> None:
    """Stop a task the way kill -9 stops a process: it just ceases; nothing is written on the way out."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, LeadershipLost):
        async with asyncio.timeout(5):  # a task that ignores its cancel fails the test, not hangs it
            await task


async def renewals(writes: LeaseWrites, holder: str, count: int) -> None:
    await eventually(
        lambda: sum(w.holder == holder for w in writes.seen) >= count,
        LEASE * 3,
        f"{count} writes by {holder}",
    )


@pytest.mark.parametrize("candidates", [2, 4])
def test_exactly_one_candidate_leads_and_standbys_never_write(bare_kube: Kube, candidates: int) -> None:
    async def scenario() -> None:
        async with LeaseWrites(bare_kube) as writes:
            electors = [elector(bare_kube, f"pod-{i}") for i in range(candidates)]
            acquiring = {asyncio.create_task(e.acquire()): e for e in electors}
            done, _ = await asyncio.wait(acquiring, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            assert len(done) == 1, "exactly one candidate wins the Lease's creation"
            leader = acquiring.pop(done.pop())
            holding = asyncio.create_task(leader.hold())
            # Two lease durations of renewals while the standbys retry every retry period.
            until = time.monotonic() + 2 * LEASE
            while time.monotonic() < until:
                assert [e.identity for e in electors if e.is_leader] == [leader.identity]
                assert not holding.done() and not any(t.done() for t in acquiring)
                await asyncio.sleep(0.05)
            for task in [holding, *acquiring]:
                await stop(task)

            seen = await writes.settle()
            assert len(seen) >= 2 * LEASE / RETRY / 2, "the leader renews every retry period"
            assert {(w.holder, w.duration, w.transitions) for w in seen} == {(leader.identity, 3, 0)}

    asyncio.run(scenario())


def test_candidates_racing_for_a_released_lease_get_one_winner(bare_kube: Kube) -> None:
    """All read the free Lease at once and all try to write it: the resourceVersion lets one through."""

    async def scenario() -> None:
        seed = elector(bare_kube, "pod-seed")
        await asyncio.wait_for(seed.acquire(), 10)
        await seed.release()
        async with LeaseWrites(bare_kube) as writes:
            electors = [elector(bare_kube, f"pod-{i}") for i in range(4)]
            acquiring = {asyncio.create_task(e.acquire()): e for e in electors}
            done, _ = await asyncio.wait(acquiring, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(RETRY * 3)  # time for a second, wrongly successful, writer to show up
            assert sum(t.done() for t in acquiring) == 1 and sum(e.is_leader for e in electors) == 1
            winner = acquiring.pop(done.pop())
            for task in acquiring:
                await stop(task)
            seen = await writes.settle()
            assert [(w.holder, w.transitions) for w in seen] == [(winner.identity, 1)]

    asyncio.run(scenario())


def test_release_hands_over_at_the_standbys_next_retry(bare_kube: Kube) -> None:
    async def scenario() -> None:
        async with LeaseWrites(bare_kube) as writes:
            a, b = elector(bare_kube, "pod-a"), elector(bare_kube, "pod-b")
            await asyncio.wait_for(a.acquire(), 10)
            holding = asyncio.create_task(a.hold())
            standby = asyncio.create_task(b.acquire())
            await renewals(writes, "pod-a", 3)
            assert not standby.done()

            await stop(holding)
            await a.release()
            assert not a.is_leader
            await asyncio.wait_for(standby, RETRY + MARGIN)
            assert b.is_leader

            seen = await writes.settle()
            assert [(w.holder, w.duration, w.transitions) for w in seen[-2:]] == [("", 1, 0), ("pod-b", 3, 1)]
            assert {w.holder for w in seen[:-2]} == {"pod-a"}

    asyncio.run(scenario())


def test_a_silent_leader_is_replaced_only_after_its_lease_ran_out_by_the_standbys_clock(
    bare_kube: Kube,
) -> None:
    async def scenario() -> None:
        async with LeaseWrites(bare_kube) as writes:
            a, b = elector(bare_kube, "pod-a"), elector(bare_kube, "pod-b")
            await asyncio.wait_for(a.acquire(), 10)
            holding = asyncio.create_task(a.hold())
            await renewals(writes, "pod-a", 3)
            await stop(holding)  # like kill -9: no release

            # b cannot have seen a's last record before now, so it must wait a whole lease from here.
            started = time.monotonic()
            await asyncio.wait_for(b.acquire(), LEASE + 2 * RETRY + MARGIN)
            assert time.monotonic() - started >= LEASE
            assert b.is_leader and not a.is_leader, "a's own clock gave its lease up no later than b took it"

            seen = await writes.settle()
            assert [(w.holder, w.transitions) for w in seen if w.holder != "pod-a"] == [("pod-b", 1)]
            assert seen[-1].holder == "pod-b", "b wrote nothing before it took over"

    asyncio.run(scenario())


def test_lease_transitions_count_each_change_of_holder_and_not_renewals(bare_kube: Kube) -> None:
    async def scenario() -> None:
        async with LeaseWrites(bare_kube) as writes:
            a, b = elector(bare_kube, "pod-a"), elector(bare_kube, "pod-b")
            await asyncio.wait_for(a.acquire(), 10)
            for old, new, released in [(a, b, True), (b, a, True), (a, b, False)]:
                holding = asyncio.create_task(old.hold())
                await renewals(
                    writes, old.identity, len([w for w in writes.seen if w.holder == old.identity]) + 2
                )
                standby = asyncio.create_task(new.acquire())
                await stop(holding)
                if released:
                    await old.release()
                await asyncio.wait_for(standby, (RETRY if released else LEASE + 2 * RETRY) + MARGIN)

            seen = await writes.settle()
            changes = [
                (w.holder, w.transitions)
                for i, w in enumerate(seen)
                if i == 0 or w.holder != seen[i - 1].holder
            ]
            assert changes == [("pod-a", 0), ("", 0), ("pod-b", 1), ("", 1), ("pod-a", 2), ("pod-b", 3)]
            for before, after in itertools.pairwise(seen):
                if before.holder == after.holder:
                    assert before.transitions == after.transitions, "a renewal is not a transition"
            assert (await read_lease(bare_kube)).spec.lease_transitions == 3

    asyncio.run(scenario())


def test_hold_raises_when_another_identity_has_taken_the_lease(bare_kube: Kube) -> None:
    async def scenario() -> None:
        a = elector(bare_kube, "pod-a")
        await asyncio.wait_for(a.acquire(), 10)
        holding = asyncio.create_task(a.hold())
        lease = await read_lease(bare_kube)
        lease.spec.holder_identity = "intruder"
        api = client.CoordinationV1Api(Clients.load(str(bare_kube.sandbox.kubeconfig)).api)
        # Retry on 409: a's renewals move the resourceVersion on under us.
        while True:
            try:
                await asyncio.to_thread(api.replace_namespaced_lease, NAME, bare_kube.namespace, lease)
                break
            except client.ApiException as exc:
                assert exc.status == 409
                lease = await read_lease(bare_kube)
                lease.spec.holder_identity = "intruder"
        with pytest.raises(LeadershipLost, match="intruder"):
            await asyncio.wait_for(holding, RETRY + MARGIN)
        assert not a.is_leader
        assert (await read_lease(bare_kube)).spec.holder_identity == "intruder", "a never wrote over it"

    asyncio.run(scenario())


def test_hold_raises_when_it_cannot_renew_within_the_renew_deadline(bare_kube: Kube) -> None:
    async def scenario() -> None:
        a = elector(bare_kube, "pod-a")
        await asyncio.wait_for(a.acquire(), 10)
        holding = asyncio.create_task(a.hold())
        await asyncio.sleep(RETRY * 2)
        assert not holding.done()
        # A network partition: a's client now reaches nothing.
        a.clients.api.configuration.host = f"https://127.0.0.1:{free_port()}"
        partitioned = time.monotonic()
        with pytest.raises(LeadershipLost, match="within"):
            await asyncio.wait_for(holding, RENEW + RETRY + MARGIN)
        assert time.monotonic() - partitioned >= RENEW - RETRY, "it kept trying until the renew deadline"
        assert not a.is_leader

    asyncio.run(scenario())

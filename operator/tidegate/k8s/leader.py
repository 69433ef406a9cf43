"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics.

A port of client-go's tools/leaderelection (tryAcquireOrRenew, renew, release):

- Expiry is judged by OUR clock, never by the renewTime written in the Lease: a
  candidate remembers when it first saw the current record (`observed_time`) and may
  take the Lease over only when `lease_duration_seconds` have passed since then with
  the record unchanged. Clocks of different machines never get compared.
- Every write is a PUT carrying the resourceVersion of the object it was decided from,
  so of two candidates deciding on the same version only one can win; the other gets
  409 and has simply lost this round. A missing Lease is created; 409 AlreadyExists on
  create is the same lost race.
- `leaseTransitions` grows by one on each change of holder, never on a renewal.
- `release()` (client-go's ReleaseOnCancel) writes an empty holder with a one-second
  duration, so a standby takes over at its next retry instead of waiting out the lease.

Two deliberate differences: the retry period has no jitter (a standby retries every
`retry_period`), and after our own successful write we count the lease from the moment
the request was SENT rather than when the answer came back: that can only make us stop
believing we lead earlier than the other candidates start believing we don't.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import urllib3
from kubernetes import client

from tidegate.k8s.client import ApiException, Clients, call, is_conflict, is_not_found

log = logging.getLogger("tidegate.leader")
T = TypeVar("T")

# What a failed attempt can raise; any of them just means "not this round" (client-go: return false).
_TRANSIENT = (ApiException, urllib3.exceptions.HTTPError, OSError, TimeoutError)


class LeadershipLost(Exception):
    """This process no longer holds the Lease; whatever it did as leader must stop."""


@dataclass(frozen=True)
class LeaseRecord:
    """The Lease spec as client-go's LeaderElectionRecord; equality is its 'raw record changed' test."""

    holder: str
    lease_duration_seconds: int
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int

    @classmethod
    def of(cls, spec: client.V1LeaseSpec | None) -> LeaseRecord:
        spec = spec or client.V1LeaseSpec()
        return cls(
            holder=spec.holder_identity or "",
            lease_duration_seconds=spec.lease_duration_seconds or 0,
            acquire_time=spec.acquire_time,
            renew_time=spec.renew_time,
            transitions=spec.lease_transitions or 0,
        )

    def spec(self) -> client.V1LeaseSpec:
        return client.V1LeaseSpec(
            holder_identity=self.holder,
            lease_duration_seconds=self.lease_duration_seconds,
            acquire_time=self.acquire_time,
            renew_time=self.renew_time,
            lease_transitions=self.transitions,
        )


def lease_expired(observed_time: float, lease_duration_seconds: int, now: float) -> bool:
    """client-go's `!isLeaseValid`: valid while observed_time + duration is still after now."""
    return observed_time + lease_duration_seconds <= now


def may_write(record: LeaseRecord, identity: str, observed_time: float, now: float) -> bool:
    """Whether a candidate that observed `record` at `observed_time` may write the Lease at `now`."""
    return (
        not record.holder
        or record.holder == identity
        or lease_expired(observed_time, record.lease_duration_seconds, now)
    )


def _wall_now() -> datetime:
    # The server parses MicroTime with exactly six fractional digits, and isoformat()
    # drops them when they are all zero.
    now = datetime.now(UTC)
    return now if now.microsecond else now.replace(microsecond=1)


@dataclass
class LeaderElector:
    clients: Clients
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    clock: Callable[[], float] = time.monotonic

    _coordination: client.CoordinationV1Api = field(init=False, repr=False)
    _lease: client.V1Lease | None = field(default=None, init=False, repr=False)
    _observed: LeaseRecord | None = field(default=None, init=False, repr=False)
    _observed_time: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        # client-go's NewLeaderElector checks, with its jitter factor of 1.2.
        if not self.identity:
            raise ValueError("leader election needs a non-empty identity")
        if not (self.lease_duration >= 1 and self.retry_period > 0):
            raise ValueError("lease_duration must be at least 1s and retry_period positive")
        if not self.lease_duration > self.renew_deadline > 1.2 * self.retry_period:
            raise ValueError("need lease_duration > renew_deadline > 1.2 * retry_period")
        self._coordination = client.CoordinationV1Api(self.clients.api)

    @property
    def is_leader(self) -> bool:
        """We wrote the current record and, by our own clock, it has not expired."""
        observed = self._observed
        return (
            observed is not None
            and observed.holder == self.identity
            and not lease_expired(self._observed_time, observed.lease_duration_seconds, self.clock())
        )

    async def acquire(self) -> None:
        while not await self._try_acquire_or_renew(self.renew_deadline):
            await asyncio.sleep(self.retry_period)
        log.info("%s acquired lease %s/%s", self.identity, self.namespace, self.name)

    async def hold(self) -> None:
        """Renew every retry_period until we cannot; then raise LeadershipLost (it never returns)."""
        where = f"lease {self.namespace}/{self.name}"
        while True:
            deadline = self.clock() + self.renew_deadline
            while True:
                if not self._holds():
                    holder = self._observed.holder if self._observed else "someone else, or no one"
                    self._forget()
                    raise LeadershipLost(f"{where} is held by {holder!r}, not by {self.identity!r}")
                remaining = deadline - self.clock()
                if remaining <= 0:
                    self._forget()
                    raise LeadershipLost(f"could not renew {where} within {self.renew_deadline}s")
                if await self._try_acquire_or_renew(remaining):
                    break
                await asyncio.sleep(min(self.retry_period, max(deadline - self.clock(), 0.0)))
            await asyncio.sleep(self.retry_period)

    async def release(self) -> None:
        """Give the Lease up if we hold it (cancel `hold()` first). A failure is logged, not raised.

        A renewal cut off by that cancel may still land and move the Lease past the version we
        know; on that 409 re-read once, and release if the Lease still names us.
        """
        try:
            for attempt in (1, 2):
                observed = self._observed
                if observed is None or not self._holds():
                    break
                now = _wall_now()
                released = LeaseRecord("", 1, now, now, observed.transitions)
                try:
                    await self._update(released, self.clock(), self.renew_deadline)
                except ApiException as exc:
                    if attempt == 2 or not is_conflict(exc):
                        raise
                    lease = await self._call(
                        self._coordination.read_namespaced_lease,
                        self.renew_deadline,
                        self.name,
                        self.namespace,
                    )
                    self._lease, self._observed = lease, LeaseRecord.of(lease.spec)
                else:
                    log.info("%s released lease %s/%s", self.identity, self.namespace, self.name)
                    return
        except _TRANSIENT as exc:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, exc)
        self._forget()

    def _holds(self) -> bool:
        """client-go's IsLeader: the last record we saw or wrote names us."""
        return self._observed is not None and self._observed.holder == self.identity

    def _forget(self) -> None:
        # Lost or gave up: the next attempt starts from a fresh read and a fresh observation.
        self._observed, self._lease = None, None

    async def _try_acquire_or_renew(self, timeout: float) -> bool:
        started = self.clock()

        def left() -> float:  # one deadline for the whole attempt, however many requests it takes
            return max(started + timeout - self.clock(), 0.001)

        now = _wall_now()
        desired = LeaseRecord(self.identity, int(self.lease_duration), now, now, 0)
        try:
            # 1. Fast path: renew against the version we wrote last time.
            observed = self._observed
            if observed is not None and self._lease is not None and self.is_leader:
                renewal = replace(
                    desired, acquire_time=observed.acquire_time, transitions=observed.transitions
                )
                try:
                    await self._update(renewal, started, left())
                    return True
                except _TRANSIENT as exc:
                    log.info(
                        "optimistic renewal of %s/%s failed (%s); reading", self.namespace, self.name, exc
                    )
            # 2. Read, or create when missing.
            try:
                lease = await self._call(
                    self._coordination.read_namespaced_lease, left(), self.name, self.namespace
                )
            except ApiException as exc:
                if not is_not_found(exc):
                    raise
                await self._create(desired, started, left())
                return True
            # 3. A record we have not seen before starts its lease on our clock now.
            self._lease = lease
            record = LeaseRecord.of(lease.spec)
            if record != self._observed:
                self._observed, self._observed_time = record, self.clock()
            if not may_write(record, self.identity, self._observed_time, started):
                return False
            # 4. Renew what we hold, or take over (one more transition).
            if self._holds():
                desired = replace(desired, acquire_time=record.acquire_time, transitions=record.transitions)
            else:
                desired = replace(desired, transitions=record.transitions + 1)
            await self._update(desired, started, left())
            return True
        except _TRANSIENT as exc:
            if is_conflict(exc):
                log.debug("lease %s/%s: another candidate wrote first", self.namespace, self.name)
            else:
                log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            return False

    async def _create(self, record: LeaseRecord, started: float, timeout: float) -> None:
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace), spec=record.spec()
        )
        self._remember(
            await self._call(self._coordination.create_namespaced_lease, timeout, self.namespace, body),
            started,
        )

    async def _update(self, record: LeaseRecord, started: float, timeout: float) -> None:
        assert self._lease is not None  # every update follows a read or a write of the Lease
        # The read object's metadata carries its resourceVersion: a concurrent write makes this 409.
        body = self._lease.model_copy(update={"spec": record.spec()})
        self._remember(
            await self._call(
                self._coordination.replace_namespaced_lease, timeout, self.name, self.namespace, body
            ),
            started,
        )

    def _remember(self, written: client.V1Lease, started: float) -> None:
        self._lease = written
        self._observed, self._observed_time = LeaseRecord.of(written.spec), started

    @staticmethod
    async def _call(fn: Callable[..., T], timeout: float, *args: Any) -> T:
        # The thread cannot be cancelled, so bound the request itself as well as our wait for it.
        # Not asyncio.wait_for: on 3.11 it can swallow a cancel that meets a finished call,
        # and then a cancelled hold() would go on renewing.
        async with asyncio.timeout(timeout):
            return await call(fn, *args, _request_timeout=timeout)


__all__ = ["LeaderElector", "LeadershipLost", "LeaseRecord", "lease_expired", "may_write"]

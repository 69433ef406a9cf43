"""The arithmetic of leader election: when an observed Lease record may be written over."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from kubernetes import client

from tidegate.k8s.client import Clients
from tidegate.k8s.leader import LeaderElector, LeadershipLost, LeaseRecord, lease_expired, may_write


@pytest.mark.parametrize(
    ("observed_time", "duration", "now", "expired"),
    [
        (100.0, 15, 100.0, False),  # just observed
        (100.0, 15, 114.9, False),
        (100.0, 15, 115.0, True),  # client-go: valid only while observed + duration is AFTER now
        (100.0, 15, 200.0, True),
        (100.0, 1, 100.5, False),  # a released lease (duration 1) still counts for its second
        (100.0, 1, 101.0, True),
        (100.0, 0, 100.0, True),  # no duration recorded: expired at once
        (100.0, 15, 50.0, False),  # observed "in the future" of now: certainly not expired
    ],
)
def test_lease_expires_duration_after_it_was_observed(
    observed_time: float, duration: int, now: float, expired: bool
) -> None:
    assert lease_expired(observed_time, duration, now) is expired


def record(holder: str, duration: int = 15) -> LeaseRecord:
    return LeaseRecord(holder, duration, None, None, 3)


@pytest.mark.parametrize(
    ("observed", "now", "allowed"),
    [
        (record("b"), 101.0, False),  # someone else's live lease: hands off
        (record("b"), 115.0, True),  # someone else's lease, expired by our observation
        (record("a"), 101.0, True),  # our own lease: renew
        (record(""), 101.0, True),  # released: take it at once
        (record("", duration=1), 100.0, True),  # released, even inside its one second
    ],
)
def test_a_candidate_writes_only_over_free_own_or_expired_records(
    observed: LeaseRecord, now: float, allowed: bool
) -> None:
    assert may_write(observed, "a", observed_time=100.0, now=now) is allowed


def test_record_reads_missing_fields_of_a_bare_lease_as_empty() -> None:
    assert LeaseRecord.of(None) == LeaseRecord("", 0, None, None, 0)
    assert LeaseRecord.of(client.V1LeaseSpec(holder_identity=None)) == LeaseRecord("", 0, None, None, 0)


def test_record_round_trips_through_the_lease_spec() -> None:
    t = datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    r = LeaseRecord("pod-1", 15, t, t, 2)
    assert LeaseRecord.of(r.spec()) == r


def offline_elector(**timing: float) -> LeaderElector:
    """An elector whose client points nowhere: for what must be decided before any request."""
    api = client.ApiClient(client.Configuration(host="https://127.0.0.1:9"))
    clients = Clients(
        api=api, core=client.CoreV1Api(api), apps=client.AppsV1Api(api), custom=client.CustomObjectsApi(api)
    )
    return LeaderElector(clients, "ns", "tidegate-operator", "pod-a", **timing)


@pytest.mark.parametrize(
    "timing",
    [
        {"lease_duration": 10.0, "renew_deadline": 10.0},  # client-go: lease must outlast the deadline
        {"renew_deadline": 2.0, "retry_period": 2.0},  # ... and the deadline 1.2 retry periods
        {"lease_duration": 0.5, "renew_deadline": 0.4, "retry_period": 0.1},  # Lease counts whole seconds
        {"retry_period": 0.0},
    ],
)
def test_timings_that_cannot_work_are_refused(timing: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        offline_elector(**timing)


def test_an_elector_that_never_acquired_is_not_leader_cannot_hold_and_releases_nothing() -> None:
    elector = offline_elector()
    assert not elector.is_leader
    with pytest.raises(LeadershipLost):
        asyncio.run(elector.hold())
    asyncio.run(elector.release())  # no request: it holds nothing

"""The operator's work queue: one pass per Rollout at a time, none lost, none doubled."""

from __future__ import annotations

import asyncio

from tidegate.handlers.operator import WorkQueue

A, B = ("ns", "a"), ("ns", "b")


def test_a_key_added_twice_while_waiting_is_worked_on_once() -> None:
    async def scenario() -> None:
        q = WorkQueue()
        q.add(A)
        q.add(A)
        q.add(B)
        assert [await q.get(), await q.get()] == [A, B]
        assert len(q) == 0

    asyncio.run(scenario())


def test_a_key_added_while_worked_on_comes_back_after_not_during() -> None:
    async def scenario() -> None:
        q = WorkQueue()
        q.add(A)
        key = await q.get()
        q.add(A)  # an event while its pass runs
        assert len(q) == 0, "never two passes of one Rollout at once"
        q.done(key)
        assert await asyncio.wait_for(q.get(), 1) == A, "and the change is not lost"

    asyncio.run(scenario())


def test_add_after_keeps_the_earliest_time_and_an_add_cancels_it() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        q = WorkQueue()
        start = loop.time()
        q.add_after(A, 0.3)
        q.add_after(A, 5.0)  # later: ignored
        assert await asyncio.wait_for(q.get(), 2) == A
        assert 0.25 <= loop.time() - start < 2
        q.done(A)
        q.add_after(B, 0.2)
        q.add(B)  # woken early: the timer is no longer needed
        assert await q.get() == B
        q.done(B)
        await asyncio.sleep(0.3)  # past the cancelled timer's time: it must not add B again
        assert len(q) == 0

    asyncio.run(scenario())


def test_a_forgotten_key_is_not_woken_by_its_timer() -> None:
    async def scenario() -> None:
        q = WorkQueue()
        q.add_after(A, 0.1)
        q.forget(A)
        await asyncio.sleep(0.2)  # past the timer's time
        assert len(q) == 0

    asyncio.run(scenario())


def test_a_rollout_that_is_not_healthy_is_looked_at_again_even_without_events() -> None:
    from tidegate.handlers.operator import RESYNC_SECONDS, next_pass_in
    from tidegate.handlers.reconcile import PassResult

    assert next_pass_in(PassResult(None, {"phase": "Healthy"})) is None, (
        "an idle Healthy Rollout costs nothing"
    )
    assert next_pass_in(PassResult(None, {"phase": "Paused"})) == RESYNC_SECONDS
    assert next_pass_in(PassResult(None, {"phase": "Degraded"})) == RESYNC_SECONDS
    assert next_pass_in(PassResult(3.0, {"phase": "Paused"})) == 3.0, "a pause ending sooner wins"

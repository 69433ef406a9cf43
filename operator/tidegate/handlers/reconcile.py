"""One reconcile pass: observe (from the cache) -> plan -> execute. No decisions here."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from tidegate.api.rollout import Rollout
from tidegate.core import conditions, planner
from tidegate.core.model import ANALYSIS_BLOCKED, Event, SetTraffic
from tidegate.k8s.cache import Cache, rollout_refs
from tidegate.k8s.client import ApiException, Clients, call
from tidegate.k8s.execute import GROUP, VERSION, Hook, StatusConflict, execute, write_status
from tidegate.k8s.observe import observe
from tidegate.routers import router_for

log = logging.getLogger("tidegate.reconcile")

EventSink = Callable[[dict[str, Any], Event], Awaitable[None]]
STATUS_CONFLICT_RETRIES = 3
"""A pass whose status write meets a newer Rollout re-reads it and plans again, this many times."""
BLOCKED_REPLAN_SECONDS = 0.05
"""After a pass found an analysis's template missing: soon, to take the canary's traffic away."""


@dataclass(frozen=True)
class PassResult:
    requeue_after: float | None
    """Seconds until the next pass is needed, or None (wait for events)."""
    status: dict[str, Any]
    strategy: str = "canary"
    conflicts: int = 0
    """Writes that met a newer object and were planned again (not errors)."""
    steps: int = 0
    """How many canary steps the Rollout has."""
    desired: int = 0
    """spec.replicas."""


async def read_rollout(clients: Clients, cache: Cache, namespace: str, name: str) -> dict[str, Any] | None:
    """The Rollout from the API server (after a conflict, or before the cache has it)."""
    try:
        response: Any = await call(
            clients.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "rollouts",
            name,
            _preload_content=False,
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    raw: dict[str, Any] = json.loads(response.data)
    cache.put_rollout(raw, rollout_refs(raw))
    return raw


async def reconcile(
    clients: Clients,
    cache: Cache,
    namespace: str,
    name: str,
    emit: EventSink,
    before_status_write: Hook | None = None,
    notified: frozenset[str] = frozenset(),
) -> PassResult | None:
    """Run one pass; None when the Rollout is gone. `notified`: notification deliveries done
    since the last status write, which this pass removes from the outbox."""
    conflicts = 0
    for attempt in range(STATUS_CONFLICT_RETRIES + 1):
        raw = cache.rollouts.get((namespace, name)) if attempt == 0 else None
        if raw is None:
            raw = await read_rollout(clients, cache, namespace, name)
        if raw is None or (raw.get("metadata") or {}).get("deletionTimestamp"):
            return None
        try:
            return await _pass(clients, cache, raw, emit, conflicts, before_status_write, notified)
        except StatusConflict:
            conflicts += 1
            log.info(
                "status of %s/%s changed meanwhile; planning again from the newer Rollout",
                namespace,
                name,
                extra={"namespace": namespace, "rollout": name},
            )
    raise StatusConflict(f"{namespace}/{name}: {conflicts} conflicting status writes in a row")


async def _pass(
    clients: Clients,
    cache: Cache,
    raw: dict[str, Any],
    emit: EventSink,
    conflicts: int,
    before_status_write: Hook | None,
    notified: frozenset[str] = frozenset(),
) -> PassResult:
    try:
        rollout = Rollout.from_body(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"invalid spec: {where}: {first.get('msg')} (the running version keeps serving)"
        return await _invalid(clients, cache, raw, emit, message, conflicts)
    router = router_for(rollout, clients, cache)
    observed = await observe(cache, clients, rollout, router)
    if notified:
        observed = dataclasses.replace(observed, notified=notified)
    try:
        plan = planner.plan(observed)
    except Exception as exc:  # the planner is pure: the same input fails again
        # A value the planner cannot use (one the CRD let through, or one stored before a CRD
        # upgrade): retrying would fail the same way, so it is InvalidSpec and the pass waits
        # for a change (of the spec, or of what it observes), never a retry loop.
        log.warning(
            "planning %s/%s failed on its input",
            rollout.metadata.namespace,
            rollout.metadata.name,
            exc_info=True,
            extra={"namespace": rollout.metadata.namespace, "rollout": rollout.metadata.name},
        )
        message = (
            f"invalid spec: the operator cannot plan this spec: {type(exc).__name__}: {str(exc)[:300]} "
            "(the running version keeps serving)"
        )
        return await _invalid(clients, cache, raw, emit, message, conflicts)

    # Events go out with the status this pass plans, so that a sink reading the Rollout (the
    # transition log's step) sees where the Rollout is after the event, not before the pass.
    planned = plan.status.wire()
    reported = {**raw, "status": planned}

    async def post(event: Event) -> None:
        await emit(reported, event)

    outcome = await execute(clients, cache, observed.rollout, raw, plan, router, post, before_status_write)
    if outcome.written is not None:
        cache.put_rollout(outcome.written, rollout_refs(outcome.written))
    for event in outcome.events:
        await emit(reported, event)
    canary = rollout.spec.strategy.canary
    strategy = "canary" if canary is not None else "blueGreen"
    steps = len(canary.steps) if canary is not None else 0
    requeue = plan.requeue_after
    if outcome.refused is not None:
        # The API server refused a write: the same plan would be refused again until something
        # changes, and every change (the spec, an owned object) wakes the Rollout anyway.
        requeue = None
    elif outcome.patch.get(ANALYSIS_BLOCKED):
        # The run could not be made: no AnalysisRun event will come, so the next pass (which
        # takes the canary's traffic away while the template is missing) is this pass's to ask for.
        requeue = BLOCKED_REPLAN_SECONDS
    return PassResult(
        requeue,
        planned,
        strategy,
        conflicts + router.conflicts,
        steps=steps,
        desired=rollout.spec.replicas if rollout.spec.replicas is not None else 1,
    )


async def _invalid(
    clients: Clients, cache: Cache, raw: dict[str, Any], emit: EventSink, message: str, conflicts: int
) -> PassResult:
    """InvalidSpec without a plan: nothing is done, the running version keeps serving; the
    status and the Event are written once (until the message or the generation changes)."""
    old = raw.get("status") or {}
    generation = (raw.get("metadata") or {}).get("generation")
    status = conditions.invalid_spec_status(message, old, planner.iso(datetime.now(UTC)), generation)
    if old.get("message") != message or old.get("observedGeneration") != generation:
        written = await write_status(clients, raw, status)
        cache.put_rollout(written, rollout_refs(written))
        await emit(raw, Event("InvalidSpec", message, "Warning"))
    return PassResult(None, status, conflicts=conflicts)


async def release_traffic(clients: Clients, cache: Cache, namespace: str, name: str) -> None:
    """Before a Rollout goes away: all traffic to stable, managed routes removed."""
    raw = cache.rollouts.get((namespace, name)) or await read_rollout(clients, cache, namespace, name)
    if raw is None:
        return
    try:
        rollout = Rollout.from_body(raw)
    except ValidationError:
        return
    stable = rollout.status.stable_rs
    if stable is None:
        return
    router = router_for(rollout, clients, cache)
    state = await router.read(stable, stable)
    if state.ok and (state.canary_weight != 0 or state.header_routes or state.mirror_routes):
        await router.apply(SetTraffic(0, stable, rollout.status.current_pod_hash or stable, ()))
        log.info(
            "released traffic of %s/%s to stable %s",
            namespace,
            name,
            stable,
            extra={"namespace": namespace, "rollout": name},
        )

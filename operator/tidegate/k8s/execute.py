"""Apply a Plan: its actions in order (each idempotent), then one status patch with the diff."""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, assert_never

from tidegate.api.rollout import Rollout
from tidegate.core import conditions
from tidegate.core.hashing import HASH_LABEL
from tidegate.core.model import (
    ANALYSIS_BLOCKED,
    REVISION_ANNOTATION,
    ROLLOUT_LABEL,
    SCALE_DOWN_AT_ANNOTATION,
    AnyAction,
    CreateAnalysisRun,
    CreateReplicaSet,
    DeleteReplicaSet,
    Event,
    MarkScaleDown,
    Plan,
    ReplacePod,
    RouterState,
    ScaleDeployment,
    ScaleReplicaSet,
    SetPodMetadata,
    SetServiceSelector,
    SetTraffic,
    TerminateAnalysisRun,
    TrafficRouter,
)
from tidegate.core.patches import merge_patch
from tidegate.core.planner import iso
from tidegate.core.traffic import effective_canary_weight
from tidegate.k8s.cache import Cache
from tidegate.k8s.client import ApiException, Clients, call, create_raw, refusal

GROUP, VERSION = "tidegate.io", "v1alpha1"
FIELD_MANAGER = "tidegate"

Hook = Callable[[], Awaitable[None]]
EventSink = Callable[[Event], Awaitable[None]]


class StatusConflict(Exception):
    """The Rollout changed since the pass read it (409): re-read and plan again."""


@dataclass
class Outcome:
    """What a pass wrote: the status patch (empty: none) and the Events to post after it."""

    patch: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    written: dict[str, Any] | None = None
    """The Rollout as the API server answered the status write."""
    refused: str | None = None
    """The InvalidSpec message, when the API server refused one of the plan's writes."""


def replica_set_body(rollout: Rollout, action: CreateReplicaSet) -> dict[str, Any]:
    template = copy.deepcopy(action.template)
    meta = template.setdefault("metadata", {})
    labels = {**(meta.get("labels") or {}), HASH_LABEL: action.pod_hash}
    meta["labels"] = labels
    selector = {**rollout.spec.pod_selector.match_labels, HASH_LABEL: action.pod_hash}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": action.name,
            "namespace": rollout.metadata.namespace,
            "labels": {**labels, ROLLOUT_LABEL: rollout.metadata.name or ""},
            "annotations": {REVISION_ANNOTATION: str(action.revision)},
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "Rollout",
                    "name": rollout.metadata.name,
                    "uid": rollout.metadata.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "replicas": action.replicas,
            "minReadySeconds": rollout.spec.min_ready_seconds,
            "selector": {
                "matchLabels": selector,
                **(
                    {"matchExpressions": [e.wire() for e in rollout.spec.pod_selector.match_expressions]}
                    if rollout.spec.pod_selector.match_expressions
                    else {}
                ),
            },
            "template": template,
        },
    }


def status_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The merge patch turning the stored status into the planned one (empty: write nothing)."""
    return merge_patch(old, new)


def _json(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(response.data)
    return body


async def execute(
    clients: Clients,
    cache: Cache,
    rollout: Rollout,
    raw: dict[str, Any],
    plan: Plan,
    router: TrafficRouter,
    emit: EventSink,
    before_status_write: Hook | None = None,
) -> Outcome:
    """Apply the plan's actions in order, then write the status diff guarded by resourceVersion.

    An Event that tells of an action (Event.action) is posted once that action is done; the
    others tell of decisions recorded in status, so they are collected and the caller posts
    them once the status write has succeeded: a pass planned again after a conflict never
    posts them twice, nor those of the plan it threw away. Every write's answer goes into
    the cache at once (read-your-writes).
    """
    namespace = rollout.metadata.namespace or "default"
    status = plan.status.wire()  # the wire form: what the API server stores, patched by the diff
    events: list[Event] = []
    refused: str | None = None
    for action in plan.actions:
        try:
            await _apply(clients, cache, rollout, namespace, action, router, status, events, emit)
        except ApiException as exc:
            if not is_refusal(exc, action):
                raise  # the API server's trouble (5xx, 429, a conflict, a race), not the spec's
            # Refused for what the spec makes us write: say so, naming the field, and do nothing
            # more this pass, so the running version keeps serving as it is.
            field_name, what = refused_write(rollout, action)
            refused = (
                f"invalid spec: {field_name}: the API server refused {what}: {refusal(exc)} "
                "(the running version keeps serving)"
            )
            now = iso(datetime.now(UTC))
            # Transition times from the stored status: the next pass, refused alike, writes nothing.
            stored = {**status, "conditions": (raw.get("status") or {}).get("conditions") or []}
            status.update(conditions.invalid_spec_status(refused, stored, now, rollout.metadata.generation))
            if (raw.get("status") or {}).get("message") != refused:
                events.append(Event("InvalidSpec", refused, "Warning"))  # once, not every pass
            break
    raw_status = raw.get("status") or {}
    if status.get("phase") == "Healthy" and raw_status.get("phase") != "Healthy":
        from tidegate.k8s.analysis import prune_analysis_runs

        name = rollout.metadata.name or ""
        known = cache.owned(cache.analysisruns, namespace, name)
        history = rollout.spec.analysis
        limits = (
            (history.successful_run_history_limit, history.unsuccessful_run_history_limit)
            if history is not None
            else (5, 5)  # Argo Rollouts' DefaultAnalysisRun(Uns|S)uccessfulHistoryLimit
        )
        await prune_analysis_runs(clients, namespace, name, known=known, limits=limits)
    patch = status_diff(raw_status, status)
    written = None
    if patch:
        if before_status_write is not None:
            await before_status_write()
        written = await write_status(clients, raw, patch)
    return Outcome(patch, events, written, refused)


REFUSALS = frozenset({400, 403, 413, 422})
"""What the API server answers a write it will never accept as it is: bad request, forbidden
(RBAC, admission), too large, invalid. 404 too, for a create (the kind or namespace is not there)."""


def is_refusal(exc: ApiException, action: AnyAction) -> bool:
    if exc.status in REFUSALS:
        return True
    return exc.status == 404 and isinstance(action, CreateReplicaSet | CreateAnalysisRun)


def refused_write(rollout: Rollout, action: AnyAction) -> tuple[str, str]:
    """(the spec field the refused write comes from, what was written) for the InvalidSpec message."""
    canary = rollout.spec.strategy.canary is not None
    strategy = "spec.strategy.canary" if canary else "spec.strategy.blueGreen"
    template = "spec.template" if rollout.spec.template is not None else "spec.workloadRef"
    if isinstance(action, CreateReplicaSet):
        return template, f"ReplicaSet {action.name}"
    if isinstance(action, ScaleReplicaSet):
        return "spec.replicas", f"scaling ReplicaSet {action.name} to {action.replicas}"
    if isinstance(action, MarkScaleDown):
        return f"{strategy}.scaleDownDelaySeconds", f"the scale-down time of ReplicaSet {action.name}"
    if isinstance(action, ScaleDeployment):
        return "spec.workloadRef", f"scaling Deployment {action.name} to {action.replicas}"
    if isinstance(action, DeleteReplicaSet):
        return "spec.revisionHistoryLimit", f"deleting ReplicaSet {action.name}"
    if isinstance(action, SetServiceSelector):
        return strategy, f"the selector of Service {action.service}"
    if isinstance(action, SetTraffic):
        return f"{strategy}.trafficRouting", "the traffic router's weights"
    if isinstance(action, CreateAnalysisRun):
        return strategy, f"AnalysisRun {action.name}"
    if isinstance(action, TerminateAnalysisRun):
        return strategy, f"terminating AnalysisRun {action.name}"
    if isinstance(action, SetPodMetadata):
        roles = "canaryMetadata/stableMetadata" if canary else "activeMetadata/previewMetadata"
        return f"{strategy}.{roles}", f"the pod metadata of ReplicaSet {action.replica_set}"
    if isinstance(action, ReplacePod):
        return "spec.restartAt", f"evicting pod {action.pod}"
    return "spec", f"{type(action).__name__}"


async def _apply(
    clients: Clients,
    cache: Cache,
    rollout: Rollout,
    namespace: str,
    action: AnyAction,
    router: TrafficRouter,
    status: dict[str, Any],
    events: list[Event],
    emit: EventSink,
) -> None:
    """One action of a plan (idempotent)."""
    if isinstance(action, CreateReplicaSet):
        try:
            created = await call(
                create_raw,
                clients,
                f"/apis/apps/v1/namespaces/{namespace}/replicasets",
                replica_set_body(rollout, action),
                FIELD_MANAGER,
            )
            cache.put(cache.replicasets, created)
        except ApiException as exc:
            if exc.status != 409:
                raise
            # made already (by our previous pass): the cache catches up
    elif isinstance(action, ScaleReplicaSet):
        scaled = await call(
            clients.apps.patch_namespaced_replica_set,
            action.name,
            namespace,
            {"spec": {"replicas": action.replicas}},
            field_manager=FIELD_MANAGER,
            _preload_content=False,
        )
        cache.put(cache.replicasets, _json(scaled))
    elif isinstance(action, MarkScaleDown):
        value = iso(action.at) if action.at is not None else None
        marked = await call(
            clients.apps.patch_namespaced_replica_set,
            action.name,
            namespace,
            {"metadata": {"annotations": {SCALE_DOWN_AT_ANNOTATION: value}}},
            field_manager=FIELD_MANAGER,
            _preload_content=False,
        )
        cache.put(cache.replicasets, _json(marked))
    elif isinstance(action, ScaleDeployment):
        # The Deployment's watch brings the change to the cache.
        await call(
            clients.apps.patch_namespaced_deployment_scale,
            action.name,
            namespace,
            {"spec": {"replicas": action.replicas}},
            field_manager=FIELD_MANAGER,
            _preload_content=False,
        )
    elif isinstance(action, DeleteReplicaSet):
        await call(clients.apps.delete_namespaced_replica_set, action.name, namespace)
    elif isinstance(action, SetServiceSelector):
        switched = await call(
            clients.core.patch_namespaced_service,
            action.service,
            namespace,
            {"spec": {"selector": {HASH_LABEL: action.pod_hash}}},
            field_manager=FIELD_MANAGER,
            _preload_content=False,
        )
        cache.put(cache.services, _json(switched))
    elif isinstance(action, SetTraffic):
        state = await router.apply(action)
        _record_weights(status, state, action)
    elif isinstance(action, Event):
        if action.action:
            await emit(action)
        else:
            events.append(action)
    elif isinstance(action, CreateAnalysisRun):
        await _create_run(clients, rollout, action, status, events)
    elif isinstance(action, TerminateAnalysisRun):
        from tidegate.k8s.analysis import terminate_analysis_run

        await terminate_analysis_run(clients, namespace, action.name)
    elif isinstance(action, SetPodMetadata):
        await _set_pod_metadata(clients, cache, rollout, namespace, action)
    elif isinstance(action, ReplacePod):
        from tidegate.k8s.restart import evict_one

        await evict_one(clients, namespace, action)
    else:
        assert_never(action)


async def write_status(clients: Clients, raw: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A merge patch of status carrying the resourceVersion it was planned from.

    The API server refuses it with 409 when the Rollout changed since (an abort written
    meanwhile, say), which raises StatusConflict: nothing written by another client
    between our read and our write is ever overwritten.
    """
    meta = raw.get("metadata") or {}
    try:
        response = await call(
            clients.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            meta.get("namespace"),
            "rollouts",
            meta.get("name"),
            {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": patch},
            field_manager=FIELD_MANAGER,
            _preload_content=False,
        )
    except ApiException as exc:
        if exc.status == 409:
            raise StatusConflict(str(meta.get("resourceVersion"))) from exc
        raise
    return _json(response)


async def _create_run(
    clients: Clients, rollout: Rollout, action: CreateAnalysisRun, status: dict[str, Any], events: list[Event]
) -> None:
    """Build the run from its templates; a reference that cannot be resolved is an InvalidSpec."""
    from tidegate.core.analysis_run import AnalysisSpecError
    from tidegate.k8s.analysis import build_analysis_run, create_analysis_run

    try:
        body = await build_analysis_run(
            clients,
            rollout,
            action.analysis,
            name=action.name,
            kind=action.kind,
            pod_hashes={"Stable": action.stable_hash, "Latest": action.latest_hash},
        )
    except AnalysisSpecError as exc:
        message = f"invalid spec: analysis {action.kind}: {exc} (the running version keeps serving)"
        # Only known after reading the templates: the conditions still come from core/conditions.
        now = iso(datetime.now(UTC))
        status.update(conditions.invalid_spec_status(message, status, now, rollout.metadata.generation))
        status[ANALYSIS_BLOCKED] = str(exc)  # the planner holds the canary at 0% meanwhile
        events.append(Event("InvalidSpec", message, "Warning"))
        return
    await create_analysis_run(clients, body)
    status.pop(ANALYSIS_BLOCKED, None)  # made: the canary may have its traffic again


async def _set_pod_metadata(
    clients: Clients, cache: Cache, rollout: Rollout, namespace: str, action: SetPodMetadata
) -> None:
    """The role's labels and annotations on the ReplicaSet's template, then on its running
    pods, in place (Argo Rollouts' syncEphemeralMetadata): no pod restarts."""
    meta: dict[str, Any] = {}
    if action.labels:
        meta["labels"] = dict(action.labels)
    if action.annotations:
        meta["annotations"] = dict(action.annotations)
    patched = await call(
        clients.apps.patch_namespaced_replica_set,
        action.replica_set,
        namespace,
        {"spec": {"template": {"metadata": meta}}},
        field_manager=FIELD_MANAGER,
        _preload_content=False,
    )
    cache.put(cache.replicasets, _json(patched))
    selector = ",".join(
        f"{k}={v}"
        for k, v in sorted({**rollout.spec.pod_selector.match_labels, HASH_LABEL: action.pod_hash}.items())
    )
    listed = await call(
        clients.core.list_namespaced_pod, namespace, label_selector=selector, _preload_content=False
    )
    for pod in _json(listed).get("items") or []:
        name = (pod.get("metadata") or {}).get("name")
        try:
            await call(
                clients.core.patch_namespaced_pod,
                name,
                namespace,
                {"metadata": meta},
                field_manager=FIELD_MANAGER,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status != 404:  # a pod gone meanwhile has nothing to change
                raise


def _record_weights(status: dict[str, Any], state: RouterState, action: SetTraffic) -> None:
    canary = status.setdefault("canary", {})
    weights = canary.setdefault("weights", {})
    weights.setdefault("canary", {})["weight"] = state.canary_weight
    weights.setdefault("stable", {})["weight"] = state.stable_weight
    weights["verified"] = bool(
        state.ok
        and state.canary_weight
        == effective_canary_weight(action.canary_weight, action.max_weight, state.additional_weight)
        and state.canary_weight + state.stable_weight + state.additional_weight == action.max_weight
    )

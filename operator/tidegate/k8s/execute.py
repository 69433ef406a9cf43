"""Apply a Plan: its actions in order (each idempotent), then one status patch with the diff."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

from tidegate.api.rollout import Rollout
from tidegate.core.hashing import HASH_LABEL
from tidegate.core.model import (
    REVISION_ANNOTATION,
    ROLLOUT_LABEL,
    SCALE_DOWN_AT_ANNOTATION,
    CreateAnalysisRun,
    CreateReplicaSet,
    DeleteReplicaSet,
    Event,
    MarkScaleDown,
    Plan,
    ReplacePod,
    RouterState,
    ScaleReplicaSet,
    SetServiceSelector,
    SetTraffic,
    TerminateAnalysisRun,
)
from tidegate.core.patches import merge_patch
from tidegate.core.planner import iso
from tidegate.k8s.client import ApiException, Clients, call
from tidegate.routers import TrafficRouter

GROUP, VERSION = "tidegate.io", "v1alpha1"
FIELD_MANAGER = "tidegate"

EventSink = Callable[[Event], Awaitable[None]]


def replica_set_body(rollout: Rollout, action: CreateReplicaSet) -> dict[str, Any]:
    template = copy.deepcopy(action.template)
    meta = template.setdefault("metadata", {})
    labels = {**(meta.get("labels") or {}), HASH_LABEL: action.pod_hash}
    meta["labels"] = labels
    selector = {**rollout.spec.selector.match_labels, HASH_LABEL: action.pod_hash}
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
                    {"matchExpressions": [e.wire() for e in rollout.spec.selector.match_expressions]}
                    if rollout.spec.selector.match_expressions
                    else {}
                ),
            },
            "template": template,
        },
    }


def status_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The merge patch turning the stored status into the planned one (empty: write nothing)."""
    return merge_patch(old, new)


async def execute(
    clients: Clients,
    rollout: Rollout,
    raw_status: dict[str, Any],
    plan: Plan,
    router: TrafficRouter,
    emit: EventSink,
) -> dict[str, Any]:
    """Apply the plan; returns the status patch that was written (empty: nothing changed)."""
    namespace = rollout.metadata.namespace or "default"
    status = copy.deepcopy(plan.status)
    for action in plan.actions:
        if isinstance(action, CreateReplicaSet):
            try:
                await call(
                    clients.apps.create_namespaced_replica_set,
                    namespace,
                    replica_set_body(rollout, action),
                    field_manager=FIELD_MANAGER,
                )
            except ApiException as exc:
                if exc.status != 409:
                    raise
        elif isinstance(action, ScaleReplicaSet):
            await call(
                clients.apps.patch_namespaced_replica_set,
                action.name,
                namespace,
                {"spec": {"replicas": action.replicas}},
                field_manager=FIELD_MANAGER,
            )
        elif isinstance(action, MarkScaleDown):
            value = iso(action.at) if action.at is not None else None
            await call(
                clients.apps.patch_namespaced_replica_set,
                action.name,
                namespace,
                {"metadata": {"annotations": {SCALE_DOWN_AT_ANNOTATION: value}}},
                field_manager=FIELD_MANAGER,
            )
        elif isinstance(action, DeleteReplicaSet):
            await call(clients.apps.delete_namespaced_replica_set, action.name, namespace)
        elif isinstance(action, SetServiceSelector):
            await call(
                clients.core.patch_namespaced_service,
                action.service,
                namespace,
                {"spec": {"selector": {HASH_LABEL: action.pod_hash}}},
                field_manager=FIELD_MANAGER,
            )
        elif isinstance(action, SetTraffic):
            state = await router.apply(action)
            _record_weights(status, state, action)
        elif isinstance(action, Event):
            await emit(action)
        elif isinstance(action, CreateAnalysisRun):
            await _create_run(clients, rollout, action, status, emit)
        elif isinstance(action, TerminateAnalysisRun):
            from tidegate.k8s.analysis import terminate_analysis_run

            await terminate_analysis_run(clients, namespace, action.name)
        elif isinstance(action, ReplacePod):
            from tidegate.k8s.restart import evict_one

            await evict_one(clients, namespace, action)
    if status.get("phase") == "Healthy" and raw_status.get("phase") != "Healthy":
        from tidegate.k8s.analysis import prune_analysis_runs

        await prune_analysis_runs(clients, namespace, rollout.metadata.name or "")
    patch = status_diff(raw_status, status)
    if patch:
        await call(
            clients.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            "rollouts",
            rollout.metadata.name,
            {"status": patch},
            field_manager=FIELD_MANAGER,
        )
    return patch


async def _create_run(
    clients: Clients, rollout: Rollout, action: CreateAnalysisRun, status: dict[str, Any], emit: EventSink
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
        status["phase"] = "Degraded"
        status["message"] = message
        for cond in status.get("conditions") or []:
            if cond.get("type") == "InvalidSpec":
                cond.update(status="True", reason="InvalidSpec", message=message)
            elif cond.get("type") in ("Ready", "Healthy"):
                cond.update(status="False", reason="Degraded", message=message)
        await emit(Event("InvalidSpec", message, "Warning"))
        return
    await create_analysis_run(clients, body)


def _record_weights(status: dict[str, Any], state: RouterState, action: SetTraffic) -> None:
    canary = status.setdefault("canary", {})
    weights = canary.setdefault("weights", {})
    weights.setdefault("canary", {})["weight"] = state.canary_weight
    weights.setdefault("stable", {})["weight"] = state.stable_weight
    weights["verified"] = bool(
        state.ok
        and state.canary_weight == action.canary_weight
        and state.stable_weight == 100 - action.canary_weight
    )

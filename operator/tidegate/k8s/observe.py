"""Read the cluster into a frozen ObservedState for one Rollout."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from tidegate.api.rollout import Rollout
from tidegate.core.hashing import HASH_LABEL, pod_template_hash
from tidegate.core.model import (
    REVISION_ANNOTATION,
    ROLLOUT_LABEL,
    SCALE_DOWN_AT_ANNOTATION,
    AnalysisRunInfo,
    ObservedState,
    ReplicaSetInfo,
    ServiceInfo,
)
from tidegate.k8s.client import ApiException, Clients, call
from tidegate.routers import TrafficRouter

GROUP, VERSION = "tidegate.io", "v1alpha1"


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def replica_set_info(rs: dict[str, Any]) -> ReplicaSetInfo:
    meta = rs.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    spec = rs.get("spec") or {}
    status = rs.get("status") or {}
    try:
        revision = int(annotations.get(REVISION_ANNOTATION, "0"))
    except ValueError:
        revision = 0
    return ReplicaSetInfo(
        name=meta["name"],
        pod_hash=labels.get(HASH_LABEL, ""),
        revision=revision,
        replicas=int(spec.get("replicas") or 0),
        status_replicas=int(status.get("replicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
        available=int(status.get("availableReplicas") or 0),
        template=_strip_hash(spec.get("template") or {}),
        scale_down_at=_time(annotations.get(SCALE_DOWN_AT_ANNOTATION)),
        created_at=_time(meta.get("creationTimestamp")),
    )


def _strip_hash(template: dict[str, Any]) -> dict[str, Any]:
    meta = dict(template.get("metadata") or {})
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != HASH_LABEL}
    meta["labels"] = labels
    return {**template, "metadata": meta}


async def get_rollout(clients: Clients, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        obj = await call(
            clients.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, "rollouts", name
        )
        return cast(dict[str, Any], obj)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


async def list_replica_sets(
    clients: Clients, namespace: str, name: str, uid: str | None
) -> list[dict[str, Any]]:
    result: Any = await call(
        clients.apps.list_namespaced_replica_set,
        namespace,
        label_selector=f"{ROLLOUT_LABEL}={name}",
        _preload_content=False,
    )
    import json

    items: list[dict[str, Any]] = json.loads(result.data).get("items") or []
    return [
        rs
        for rs in items
        if uid is None or any(o.get("uid") == uid for o in (rs["metadata"].get("ownerReferences") or []))
    ]


def service_names(rollout: Rollout) -> list[str]:
    strategy = rollout.spec.strategy
    names: list[str | None] = []
    if strategy.canary is not None:
        names = [strategy.canary.stable_service, strategy.canary.canary_service]
    elif strategy.blue_green is not None:
        names = [strategy.blue_green.active_service, strategy.blue_green.preview_service]
    return [n for n in names if n]


async def read_service(clients: Clients, namespace: str, name: str) -> ServiceInfo:
    try:
        svc: Any = await call(clients.core.read_namespaced_service, name, namespace, _preload_content=False)
    except ApiException as exc:
        if exc.status == 404:
            return ServiceInfo(name=name, exists=False)
        raise
    import json

    body = json.loads(svc.data)
    return ServiceInfo(name=name, exists=True, selector=dict((body.get("spec") or {}).get("selector") or {}))


async def observe(
    clients: Clients, rollout: Rollout, router: TrafficRouter, now: datetime | None = None
) -> ObservedState:
    namespace = rollout.metadata.namespace or "default"
    name = rollout.metadata.name or ""
    sets = [
        replica_set_info(rs) for rs in await list_replica_sets(clients, namespace, name, rollout.metadata.uid)
    ]
    services = {n: await read_service(clients, namespace, n) for n in service_names(rollout)}
    stable_hash = rollout.status.stable_rs
    current_hash = pod_template_hash(rollout.spec.template.wire())
    state = await router.read(stable_hash, current_hash)
    runs = await observe_analysis_runs(clients, namespace, name)
    old_pods: tuple[str, ...] = ()
    if rollout.spec.restart_at and rollout.status.restarted_at != rollout.spec.restart_at:
        old_pods = await pods_created_before(clients, namespace, rollout, rollout.spec.restart_at)
    return ObservedState(
        rollout=rollout,
        replica_sets=tuple(sorted(sets, key=lambda r: r.revision)),
        services=services,
        router=state,
        now=now or datetime.now(UTC),
        analysis_runs=runs,
        pods_to_restart=old_pods,
    )


async def pods_created_before(
    clients: Clients, namespace: str, rollout: Rollout, when: str
) -> tuple[str, ...]:
    selector = ",".join(f"{k}={v}" for k, v in sorted(rollout.spec.selector.match_labels.items()))
    result: Any = await call(
        clients.core.list_namespaced_pod, namespace, label_selector=selector, _preload_content=False
    )
    import json

    limit = _time(when)
    names = []
    for pod in json.loads(result.data).get("items") or []:
        meta = pod.get("metadata") or {}
        created = _time(meta.get("creationTimestamp"))
        if meta.get("deletionTimestamp") or created is None or limit is None:
            continue
        # creationTimestamp has whole seconds: a pod stamped with restartAt's own second
        # may predate it, so it is replaced too (a replacement made in that second at
        # worst goes round once more).
        if created <= limit:
            names.append(meta["name"])
    return tuple(sorted(names))


async def observe_analysis_runs(clients: Clients, namespace: str, name: str) -> tuple[AnalysisRunInfo, ...]:
    from tidegate.core.analysis_run import KIND_LABEL
    from tidegate.k8s.analysis import list_analysis_runs

    out = []
    for run in await list_analysis_runs(clients, namespace, name):
        meta = run.get("metadata") or {}
        labels = meta.get("labels") or {}
        status = run.get("status") or {}
        out.append(
            AnalysisRunInfo(
                name=meta.get("name", ""),
                kind=labels.get(KIND_LABEL, ""),
                pod_hash=labels.get(HASH_LABEL, ""),
                phase=status.get("phase") or "Pending",
                message=status.get("message") or "",
            )
        )
    return tuple(out)

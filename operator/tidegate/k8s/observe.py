"""Read the cluster into a frozen ObservedState for one Rollout."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from tidegate.api.meta import LabelSelector
from tidegate.api.rollout import Rollout
from tidegate.core.analysis_run import KIND_LABEL
from tidegate.core.hashing import HASH_LABEL, pod_template_hash
from tidegate.core.model import (
    REVISION_ANNOTATION,
    SCALE_DOWN_AT_ANNOTATION,
    AnalysisRunInfo,
    ObservedState,
    ReplicaSetInfo,
    ServiceInfo,
    WorkloadInfo,
)
from tidegate.k8s.cache import Cache
from tidegate.k8s.client import ApiException, Clients, call

if TYPE_CHECKING:
    from tidegate.core.model import TrafficRouter

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


def owned_replica_sets(cache: Cache, namespace: str, name: str, uid: str | None) -> list[dict[str, Any]]:
    """The Rollout's ReplicaSets from the cache: its label, and its uid as controller."""
    return [
        rs
        for rs in cache.owned(cache.replicasets, namespace, name)
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


def service_info(cache: Cache, namespace: str, name: str) -> ServiceInfo:
    body = cache.services.get(namespace, name)
    if body is None:
        return ServiceInfo(name=name, exists=False)
    served = cache.endpointslices.served
    pods = cache.ready_endpoint_pods(namespace, name) if served else None
    return ServiceInfo(
        name=name,
        exists=True,
        selector=dict((body.get("spec") or {}).get("selector") or {}),
        ready_endpoints=cache.ready_endpoints(namespace, name) if served else None,
        ready_pods=pods,
    )


def workload_info(cache: Cache, namespace: str, name: str) -> WorkloadInfo:
    body = cache.deployments.get(namespace, name)
    if body is None:
        return WorkloadInfo(name=name, exists=False)
    spec = body.get("spec") or {}
    replicas = spec.get("replicas")
    return WorkloadInfo(
        name=name,
        exists=True,
        template=dict(spec.get("template") or {}),
        replicas=1 if replicas is None else int(replicas),
        selector=dict(spec.get("selector") or {}),
    )


async def observe(
    cache: Cache, clients: Clients, rollout: Rollout, router: TrafficRouter, now: datetime | None = None
) -> ObservedState:
    """Everything one pass decides on, from the watch-fed cache (no API read in steady state)."""
    namespace = rollout.metadata.namespace or "default"
    name = rollout.metadata.name or ""
    sets = [replica_set_info(rs) for rs in owned_replica_sets(cache, namespace, name, rollout.metadata.uid)]
    workload = None
    if rollout.spec.workload_ref is not None:
        workload = workload_info(cache, namespace, rollout.spec.workload_ref.name)
        if rollout.spec.selector is None and workload.exists:
            # Argo Rollouts' workloadRef: the Deployment's selector when the Rollout has none.
            selector = LabelSelector.model_validate(workload.selector)
            rollout = rollout.model_copy(
                update={"spec": rollout.spec.model_copy(update={"selector": selector})}
            )
    template = rollout.spec.template.wire() if rollout.spec.template is not None else None
    if template is None and workload is not None and workload.exists:
        template = workload.template
    stable_hash = rollout.status.stable_rs
    current_hash = pod_template_hash(template) if template is not None else None
    state = await router.read(stable_hash, current_hash)
    services = {n: service_info(cache, namespace, n) for n in service_names(rollout)}
    if state.subset_host and state.subset_host not in services:
        host = service_info(cache, namespace, state.subset_host)
        if host.exists:  # the subsets' Service, read for its endpoints (its absence is Istio's matter)
            services[host.name] = host
    runs = analysis_run_infos(cache.owned(cache.analysisruns, namespace, name))
    old_pods: tuple[str, ...] = ()
    now = now or datetime.now(UTC)
    restart_at = _time(rollout.spec.restart_at) if rollout.spec.restart_at else None
    if (
        restart_at is not None
        and restart_at.tzinfo is not None
        and restart_at <= now  # a restartAt in the future lists nothing until then
        and rollout.status.restarted_at != rollout.spec.restart_at
    ):
        # Pods are not cached (a Rollout's pods are many); they are listed only while a
        # restart is pending.
        old_pods = await pods_created_before(clients, namespace, rollout, rollout.spec.restart_at or "")
    return ObservedState(
        rollout=rollout,
        replica_sets=tuple(sorted(sets, key=lambda r: r.revision)),
        services=services,
        router=state,
        now=now,
        analysis_runs=runs,
        pods_to_restart=old_pods,
        workload=workload,
    )


async def pods_created_before(
    clients: Clients, namespace: str, rollout: Rollout, when: str
) -> tuple[str, ...]:
    selector = ",".join(f"{k}={v}" for k, v in sorted(rollout.spec.pod_selector.match_labels.items()))
    result: Any = await call(
        clients.core.list_namespaced_pod, namespace, label_selector=selector, _preload_content=False
    )
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


def analysis_run_infos(items: list[dict[str, Any]]) -> tuple[AnalysisRunInfo, ...]:
    out = []
    ordered = sorted(
        items,
        key=lambda run: (run["metadata"].get("creationTimestamp") or "", run["metadata"].get("name") or ""),
    )
    for run in ordered:
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

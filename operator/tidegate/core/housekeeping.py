"""Housekeeping once a rollout is complete: old ReplicaSets past the history limit, restartAt."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tidegate.api.rollout import PodMetadata
from tidegate.core.model import (
    DeleteReplicaSet,
    ReplacePod,
    ScaleDeployment,
    SetPodMetadata,
)
from tidegate.core.toolkit import (
    Pass,
    parse_time,
    restart_pending,
    rs_by_hash,
)

RESTART_RECHECK_SECONDS = 3600.0
"""A restartAt further ahead is looked at again after this long: the wait is a monotonic
timer, the time is the wall clock's, and a clock set forward meanwhile is caught within it."""


def trim_history(p: Pass) -> None:
    """Keep revisionHistoryLimit old ReplicaSets (scaled to 0) for undo; delete older ones."""
    if p.invalid or not p.complete:
        return
    keep = {p.status.stable_rs, p.status.current_pod_hash}
    old = [
        rs
        for rs in p.obs.replica_sets
        if rs.pod_hash not in keep and rs.replicas == 0 and rs.status_replicas == 0
    ]
    old.sort(key=lambda rs: rs.revision, reverse=True)
    for rs in old[p.obs.rollout.spec.revision_history_limit :]:
        p.actions.append(DeleteReplicaSet(rs.name))
        p.event(
            "ReplicaSetDeleted",
            f"deleted ReplicaSet {rs.name} (revision {rs.revision}): past revisionHistoryLimit",
            action=True,
        )


def restart(p: Pass) -> None:
    """spec.restartAt: replace pods created before it, one at a time, once the rollout is complete."""
    r = p.obs.rollout
    if not restart_pending(r) or not p.complete:
        return
    try:
        at = parse_time(r.spec.restart_at)
    except ValueError:
        return  # not a time: spec_problems makes it InvalidSpec (the CRD's rule refuses it too)
    if at is None or at.tzinfo is None:
        return
    if at > p.obs.now:
        # Argo Rollouts' RolloutPodRestarter.Reconcile: a restartAt in the future is enqueued
        # for that time (enqueueAfter), nothing is evicted before it.
        p.wake_in(min((at - p.obs.now).total_seconds(), RESTART_RECHECK_SECONDS))
        return
    if not p.obs.pods_to_restart:
        p.status.restarted_at = r.spec.restart_at
        p.event("RestartCompleted", f"every pod created before {r.spec.restart_at} was replaced")
        return
    current = rs_by_hash(p.obs, p.status.current_pod_hash)
    replicas = r.spec.desired_replicas
    left = len(p.obs.pods_to_restart)
    if left >= sum(rs.status_replicas for rs in p.obs.replica_sets):
        # Every pod is older than restartAt: nothing was replaced yet, the restart starts now.
        p.event("RestartStarted", f"replacing {left} pods created before {r.spec.restart_at}, one at a time")
    if current is not None and current.available >= replicas:
        p.actions.append(ReplacePod(p.obs.pods_to_restart[0]))
        p.message = f"restarting: replacing pod {p.obs.pods_to_restart[0]} ({left} left)"
    else:
        p.message = f"restarting: waiting for a replacement pod to be available ({left} left)"
    p.wake_in(1.0)


def scale_workload(p: Pass) -> None:
    """A workloadRef Deployment's own pods, by its scaleDown (Argo Rollouts' semantics).

    Only while the Rollout runs its first revision, the migration from the Deployment:
    `onsuccess` scales it to 0 once the Rollout is Healthy; `never` leaves it; `progressively`
    keeps it at what the Rollout's ready pods do not yet carry (`spec.replicas - ready`), down
    as they come and to 0 once Healthy, and back up if they stop being ready ("If the Rollout
    fails the Deployment will be scaled back up": Argo's reconcileNewReplicaSet scales the
    Deployment to that count either way). As in Argo, nothing is written while no Rollout pod
    is ready: a Rollout that never got going leaves the Deployment as it found it.
    """
    ref = p.obs.rollout.spec.workload_ref
    workload = p.obs.workload
    if ref is None or workload is None or not workload.exists or p.invalid or ref.scale_down == "never":
        return
    current = rs_by_hash(p.obs, p.status.current_pod_hash)
    if current is None or current.revision != 1:
        return
    if p.complete:
        target = 0
    elif ref.scale_down == "progressively" and current.ready > 0:
        target = max(0, p.obs.rollout.spec.desired_replicas - current.ready)
    else:
        return
    if target != workload.replicas:
        p.actions.append(ScaleDeployment(workload.name, target))
        verb = "scaled" if target < workload.replicas else "scaled back up"
        p.event(
            "WorkloadScaledDown" if target < workload.replicas else "WorkloadScaledUp",
            f"{verb} Deployment {workload.name} to {target} (workloadRef scaleDown: {ref.scale_down})",
            action=True,
        )


SUCCESSFUL = "Successful"


def runs_beyond_history(runs: Sequence[Mapping[str, Any]], successful: int, unsuccessful: int) -> list[str]:
    """Finished AnalysisRuns beyond the Rollout's history limits (spec.analysis), oldest first.

    Argo Rollouts' limits: `successful` Successful runs are kept, and `unsuccessful` of the
    Failed, Error and Inconclusive ones together. Running and Pending runs are never counted
    nor deleted. Newest by creationTimestamp, then name.
    """
    kept: dict[bool, list[tuple[str, str]]] = {True: [], False: []}
    for run in runs:
        meta = run.get("metadata") or {}
        phase = (run.get("status") or {}).get("phase")
        if phase not in (SUCCESSFUL, "Failed", "Error", "Inconclusive") or meta.get("deletionTimestamp"):
            continue
        kept[phase == SUCCESSFUL].append((str(meta.get("creationTimestamp") or ""), str(meta.get("name"))))
    doomed: list[str] = []
    for ok, limit in ((True, successful), (False, unsuccessful)):
        entries = sorted(kept[ok], reverse=True)
        doomed += [name for _, name in entries[limit:]]
    return sorted(doomed)


def role_metadata(p: Pass) -> tuple[dict[str, PodMetadata | None], set[str], set[str]]:
    """{pod hash: the ephemeral metadata its role wants}, and every label and annotation
    key any role sets (those are Tidegate's to change on these pods).

    Canary: the stable pods get stableMetadata, the canary's canaryMetadata; blue-green: the
    active pods activeMetadata, the preview's previewMetadata (Argo Rollouts' semantics)."""
    st, strategy = p.status, p.obs.rollout.spec.strategy
    current = st.current_pod_hash
    roles: dict[str, PodMetadata | None] = {}
    metas: list[PodMetadata | None] = []
    if strategy.canary is not None:
        c = strategy.canary
        metas = [c.stable_metadata, c.canary_metadata]
        if st.stable_rs:
            roles[st.stable_rs] = c.stable_metadata
        if current and current != st.stable_rs:
            roles[current] = c.canary_metadata
    elif strategy.blue_green is not None:
        bg = strategy.blue_green
        metas = [bg.active_metadata, bg.preview_metadata]
        active = st.blue_green.active_selector or st.stable_rs
        if active:
            roles[active] = bg.active_metadata
        if current and current != active:
            roles[current] = bg.preview_metadata
    labels = {k for m in metas if m is not None for k in m.labels}
    annotations = {k for m in metas if m is not None for k in m.annotations}
    return roles, labels, annotations


def _changes(
    have: dict[str, str], want: dict[str, str], managed: set[str]
) -> tuple[tuple[str, str | None], ...]:
    out: list[tuple[str, str | None]] = [(k, v) for k, v in sorted(want.items()) if have.get(k) != v]
    out += [(k, None) for k in sorted(managed - set(want)) if k in have]
    return tuple(out)


def sync_pod_metadata(p: Pass) -> None:
    """Each ReplicaSet of a role, and its pods, carry that role's labels and annotations."""
    if p.invalid:
        return
    roles, label_keys, annotation_keys = role_metadata(p)
    if not label_keys and not annotation_keys:
        return
    for pod_hash, meta in roles.items():
        rs = rs_by_hash(p.obs, pod_hash)
        if rs is None:
            continue  # made with its role's metadata (toolkit.with_role_metadata)
        have = rs.template.get("metadata") or {}
        labels = _changes(dict(have.get("labels") or {}), meta.labels if meta else {}, label_keys)
        annotations = _changes(
            dict(have.get("annotations") or {}), meta.annotations if meta else {}, annotation_keys
        )
        if labels or annotations:
            p.actions.append(SetPodMetadata(rs.name, pod_hash, labels, annotations))

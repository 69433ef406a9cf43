"""Blue-green: preview the new version beside the old, then switch the active Service at once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tidegate.core import analysis
from tidegate.core.durations import format_duration
from tidegate.core.toolkit import (
    Pass,
    add_pause,
    clear_pauses,
    detect_retry,
    ensure_replica_set,
    iso,
    iso_ceil,
    parse_time,
    paused_for,
    point_service,
    promote_past_abort,
    retire_others,
    rollback_within_window,
    rs_by_hash,
    service_hashes,
)


def plan_blue_green(p: Pass, current_hash: str, template: dict[str, Any]) -> None:
    obs, st = p.obs, p.status
    bg = obs.rollout.spec.strategy.blue_green
    assert bg is not None
    replicas = obs.rollout.spec.desired_replicas
    status_bg = st.blue_green

    if obs.rollout.status.current_pod_hash != current_hash:
        # A new revision (or the first): start over; a preview in flight is replaced.
        clear_pauses(st)
        st.promote_full = False
        st.step_started_at = None
        status_bg.promoting = False
        if obs.rollout.status.current_pod_hash is not None:
            st.abort = False
            st.aborted_at = None
            st.abort_message = None
            p.event("NewRevision", f"new revision {current_hash}")

    detect_retry(p, current_hash)
    active_hash = st.stable_rs
    if active_hash is None or rs_by_hash(obs, active_hash) is None:
        active_hash = current_hash  # first deploy: straight to active, no preview phase
        st.stable_rs = current_hash

    def retire(keep: set[str], delay: float) -> None:

        retire_others(p, keep, delay, service_hashes(p), bg.scale_down_delay_revision_limit)

    if active_hash == current_hash:
        rs = ensure_replica_set(p, current_hash, template, replicas)
        clear_pauses(st)
        st.abort = False
        st.aborted_at = None
        available = rs.available if rs else 0
        if available < replicas and (available == 0 or _other_active(p, current_hash)):
            p.message = f"waiting for {available}/{replicas} pods available"
            return
        switched = point_service(p, bg.active_service, current_hash)
        switched = point_service(p, bg.preview_service, current_hash) and switched
        status_bg.active_selector = current_hash
        status_bg.preview_selector = current_hash if bg.preview_service else None
        if switched:
            started = parse_time(status_bg.scale_down_delay_start_time) or obs.now
            delay = bg.scale_down_delay_seconds - (obs.now - started).total_seconds()
            retire({current_hash}, max(delay, 0.0))
            if delay > 0 and any(r.replicas > 0 for r in obs.replica_sets if r.pod_hash != current_hash):
                p.message = f"healthy; the previous version is scaled down in {format_duration(delay)}"
                p.wake_in(delay)
        if available < replicas:
            p.message = f"waiting for {available}/{replicas} pods available"
        elif switched:
            # All traffic is on the new version: Healthy, even while old pods wait out
            # their scale-down delay.
            p.complete = True
            p.message = p.message or "healthy"
        return

    stable = ensure_replica_set(p, active_hash, _template(p, active_hash, template), replicas)
    promote_past_abort(p, current_hash)
    if st.abort or not status_bg.promoting:
        # Until the switch (and after an abort) the active Service stays on the stable version.
        point_service(p, bg.active_service, active_hash)
        status_bg.active_selector = active_hash

    if st.abort:
        p.aborted = True
        if not st.aborted_at:
            st.aborted_at = iso(obs.now)
            p.event("RolloutAborted", f"aborted revision {current_hash}: active stays on {active_hash}", True)
        clear_pauses(st)
        st.aborted_revision = current_hash
        status_bg.promoting = False
        why = st.abort_message or "aborted by request"
        p.message = f"rollout aborted ({why}): the active Service stays on the stable version"
        preview = rs_by_hash(obs, current_hash)
        if bg.preview_service:
            point_service(p, bg.preview_service, active_hash)
            status_bg.preview_selector = active_hash
        if preview is not None and preview.replicas > 0 and bg.abort_scale_down_delay_seconds == 0:
            # Argo Rollouts' GetAbortScaleDownDelaySecondsOrDefault: an explicit 0 means never.
            p.message += "; preview pods kept (abortScaleDownDelaySeconds: 0)"
        elif preview is not None and preview.replicas > 0:
            aborted_at = parse_time(st.aborted_at) or obs.now
            remaining = (
                aborted_at + timedelta(seconds=bg.abort_scale_down_delay_seconds) - obs.now
            ).total_seconds()
            if remaining <= 0:
                from tidegate.core.model import ScaleReplicaSet

                p.actions.append(ScaleReplicaSet(preview.name, 0))
            else:
                p.wake_in(remaining)
                p.message += f"; preview pods scaled down in {format_duration(remaining)}"
        retire({active_hash, current_hash}, 0)
        return

    promoting = (
        st.promote_full or status_bg.promoting is True or rollback_within_window(p, current_hash, active_hash)
    )
    preview_count = replicas if promoting else (bg.preview_replica_count or replicas)
    preview = ensure_replica_set(p, current_hash, template, preview_count)
    retire({active_hash, current_hash}, 0)
    available = preview.available if preview else 0
    del stable

    if obs.rollout.spec.paused:
        p.paused = True
        p.message = "paused by spec.paused"
        return
    if not promoting:
        if available < preview_count:
            # Paused only once the preview is fully available, as Argo Rollouts' blue-green
            # (so `kubectl wait --for=condition=Paused` means the preview can be tried).
            p.message = f"preview: waiting for {available}/{preview_count} new pods ready"
            return
        if bg.preview_service and not point_service(p, bg.preview_service, current_hash):
            p.message = f"pointing {bg.preview_service} at the preview"
            return
        status_bg.preview_selector = current_hash
        if not st.step_started_at:
            st.step_started_at = iso_ceil(obs.now)
        if bg.pre_promotion_analysis is not None and not _analysis_passed(
            p, bg.pre_promotion_analysis, "pre", active_hash, current_hash, "preview ready"
        ):
            return
        if not bg.auto_promotion_enabled:
            if not _pause_for_person(p, False):
                p.message = "preview ready; paused until promoted (`tidegate promote`)"
                return
        elif bg.auto_promotion_seconds:
            since = parse_time(st.step_started_at) or obs.now
            left = bg.auto_promotion_seconds - (obs.now - since).total_seconds()
            if left > 0:
                p.message = f"preview ready; promoting automatically in {format_duration(left)}"
                p.wake_in(left)
                return
        status_bg.promoting = True
        p.event("RolloutPromoting", f"promoting revision {current_hash}")
        p.wake_in(0.05)
        p.message = "promoting: scaling the new version to full size"
        return

    # Promotion: full size first, then switch the active Service, then the old pods go later.
    if available < replicas:
        p.message = f"promoting: waiting for {available}/{replicas} new pods available before switching"
        return
    if bg.preview_service:
        point_service(p, bg.preview_service, current_hash)
    switched_now = not point_service(p, bg.active_service, current_hash)
    status_bg.active_selector = current_hash
    if switched_now:
        p.message = "switched the active Service"
        if bg.post_promotion_analysis is not None:
            return  # read the switch back before the post-promotion analysis starts
    if bg.post_promotion_analysis is not None and not _analysis_passed(
        # The previous version stays scaled up until this passes: a failure switches back.
        p,
        bg.post_promotion_analysis,
        "post",
        active_hash,
        current_hash,
        "switched",
    ):
        return
    st.stable_rs = current_hash
    status_bg.promoting = False
    st.promote_full = False
    status_bg.active_selector = current_hash
    status_bg.scale_down_delay_start_time = iso_ceil(obs.now)
    p.event("RolloutPromoted", f"active Service {bg.active_service} switched to {current_hash}")
    p.message = "switched the active Service"
    p.wake_in(0.05)


def _analysis_passed(
    p: Pass, spec: Any, where: str, stable_hash: str, latest_hash: str, situation: str
) -> bool:
    """Run the pre- or post-promotion analysis; True once it passed (or a person promoted past it)."""

    outcome, run, name = analysis.ensure(
        p, spec, kind=where, tag=where, stable_hash=stable_hash, latest_hash=latest_hash
    )
    if where == "pre":
        p.status.blue_green.pre_promotion_analysis_run_status = analysis.run_status(run, name)
    else:
        p.status.blue_green.post_promotion_analysis_run_status = analysis.run_status(run, name)
    if outcome == "failed":
        analysis.abort_for(p, run, name)
        return False
    if outcome == "inconclusive":
        return analysis.inconclusive_pause(p, f"{where}-promotion")
    if outcome != "successful":
        p.message = f"{situation}; {where}-promotion analysis {name} running"
        return False
    return True


def _template(p: Pass, pod_hash: str, fallback: dict[str, Any]) -> dict[str, Any]:

    rs = rs_by_hash(p.obs, pod_hash)
    return rs.template if rs is not None and rs.template else fallback


def _other_active(p: Pass, current_hash: str) -> bool:
    return any(rs.available > 0 for rs in p.obs.replica_sets if rs.pod_hash != current_hash)


def _pause_for_person(p: Pass, auto: bool) -> bool:
    """Hold a BlueGreenPause when auto-promotion is off; True once a person promoted."""

    st = p.status
    if auto:
        return True
    if paused_for(st, "BlueGreenPause"):
        p.paused = True
        return False
    if st.controller_pause:
        return True  # we had paused and the condition is gone: promoted
    add_pause(st, "BlueGreenPause", iso_ceil(p.obs.now))
    p.paused = True
    p.event("RolloutPaused", "blue-green preview: paused until promoted")
    return False

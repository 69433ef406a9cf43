"""The planner, table by table: given an observed cluster, the actions and status it decides."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.unit.planner_fixtures import (
    NOW,
    V1,
    V2,
    bg_rollout,
    canary_rollout,
    h,
    istio,
    later,
    observed,
    rs,
    steps_hash,
)
from tidegate.api.rollout import Rollout, RolloutStatus
from tidegate.core.model import (
    CreateReplicaSet,
    Event,
    MarkScaleDown,
    MirrorRoute,
    Plan,
    RouterState,
    ScaleReplicaSet,
    SetServiceSelector,
    SetTraffic,
)
from tidegate.core.planner import _basic_canary_counts, canary_replicas_for_weight, plan

SERVICES_ON_V1 = {"web-stable": V1, "web-canary": V1}


def with_status(rollout: Rollout, index: int, **extra: Any) -> Rollout:
    status = {
        "stableRS": V1,
        "currentPodHash": V2,
        "currentStepIndex": index,
        "currentStepHash": steps_hash(rollout),
        **extra,
    }
    return rollout.model_copy(update={"status": type(rollout.status).model_validate(status)})


def kinds(p: Plan) -> list[type]:
    return [type(a) for a in p.actions if not isinstance(a, Event)]


def of(p: Plan, kind: type) -> list[Any]:
    return [a for a in p.actions if isinstance(a, kind)]


# --------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize(
    ("weight", "replicas", "expected"),
    [
        (0, 5, 0),
        (1, 5, 1),
        (10, 5, 1),
        (20, 5, 1),
        (21, 5, 2),
        (50, 5, 3),
        (100, 5, 5),
        (33, 3, 1),
        (34, 3, 2),
    ],
)
def test_canary_replicas_follow_the_weight(weight: int, replicas: int, expected: int) -> None:
    assert canary_replicas_for_weight(weight, replicas) == expected


# --------------------------------------------------------------------------- first deploy


def test_first_deploy_creates_the_replicaset_at_full_scale_and_skips_steps() -> None:
    r = canary_rollout(image="web:1")
    p = plan(observed(r, [], SERVICES_ON_V1 | {"web-stable": None, "web-canary": None}, istio()))
    creates = of(p, CreateReplicaSet)
    assert [(c.pod_hash, c.replicas, c.revision) for c in creates] == [(V1, 4, 1)]
    assert creates[0].name == f"web-{V1}"
    assert p.status.stable_rs == V1 and p.status.current_step_index == 2
    assert p.status.phase == "Progressing"
    ready = {c["type"]: c["status"] for c in p.status.wire()["conditions"]}["Ready"]
    assert ready == "False"


def test_first_deploy_becomes_healthy_once_available_and_services_point_at_it() -> None:
    r = canary_rollout(image="web:1", status={"stableRS": V1, "currentPodHash": V1})
    p = plan(observed(r, [rs("web:1", 4)], {"web-stable": None, "web-canary": None}, istio()))
    assert {(a.service, a.pod_hash) for a in of(p, SetServiceSelector)} == {
        ("web-stable", V1),
        ("web-canary", V1),
    }
    # Services moved this pass; Healthy comes on the pass that sees them in place.
    p2 = plan(observed(r, [rs("web:1", 4)], SERVICES_ON_V1, istio()))
    assert kinds(p2) == []
    assert p2.status.phase == "Healthy"
    assert {c["type"]: c["status"] for c in p2.status.wire()["conditions"]}["Ready"] == "True"
    assert p2.status.observed_generation == 2


# --------------------------------------------------------------------------- canary steps


def test_new_revision_creates_the_canary_sized_to_the_first_weight() -> None:
    r = canary_rollout(status={"stableRS": V1, "currentPodHash": V1, "currentStepIndex": 2})
    p = plan(observed(r, [rs("web:1", 4)], SERVICES_ON_V1, istio()))
    creates = of(p, CreateReplicaSet)
    assert [(c.pod_hash, c.replicas, c.revision) for c in creates] == [(V2, 1, 2)]
    assert p.status.current_step_index == 0
    assert of(p, SetTraffic) == [], "no traffic before the canary pods are ready"
    assert "waiting for 0/1 canary pods ready" in p.status.message


def test_weight_goes_to_the_canary_only_once_its_pods_are_ready_and_selected() -> None:
    r = with_status(canary_rollout(), 0)
    not_ready = plan(
        observed(r, [rs("web:1", 4), rs("web:2", 1, available=0, revision=2)], SERVICES_ON_V1, istio())
    )
    assert of(not_ready, SetTraffic) == []
    ready = plan(observed(r, [rs("web:1", 4), rs("web:2", 1, revision=2)], SERVICES_ON_V1, istio()))
    assert of(ready, SetServiceSelector) == [SetServiceSelector("web-canary", V2)]
    assert of(ready, SetTraffic) == [], "the canary Service moves first, the weight on the next pass"
    selected = plan(
        observed(
            r, [rs("web:1", 4), rs("web:2", 1, revision=2)], {"web-stable": V1, "web-canary": V2}, istio()
        )
    )
    assert of(selected, SetTraffic) == [SetTraffic(25, V1, V2, ())]
    assert selected.status.current_step_index == 0


def test_step_completes_when_the_router_reads_back_the_weight() -> None:
    r = with_status(canary_rollout(), 0)
    p = plan(
        observed(
            r, [rs("web:1", 4), rs("web:2", 1, revision=2)], {"web-stable": V1, "web-canary": V2}, istio(25)
        )
    )
    assert of(p, SetTraffic) == []
    assert p.status.current_step_index == 1
    assert p.status.wire()["canary"]["weights"]["canary"]["weight"] == 25
    assert p.status.wire()["canary"]["weights"]["verified"] is True


SERVICES_SPLIT = {"web-stable": V1, "web-canary": V2}


def test_the_plan_is_a_typed_status_that_leaves_the_observed_one_alone() -> None:
    """The planner takes and returns RolloutStatus: the status it plans round-trips through the
    wire form the API server stores, and the observed status (the cache's) is not changed."""
    r = with_status(
        canary_rollout(steps=[{"setWeight": 25}, {"pause": {"duration": "60s"}}, {"setWeight": 50}]), 1
    )
    before = r.status.wire()
    p = plan(observed(r, [rs("web:1", 4), rs("web:2", 1, revision=2)], SERVICES_SPLIT, istio(25)))
    assert isinstance(p.status, RolloutStatus)
    assert RolloutStatus.model_validate(p.status.wire()) == p.status
    assert p.status.pause_conditions and p.status.pause_conditions[0].reason == "CanaryPauseStep"
    assert r.status.wire() == before, "the planner wrote into the status it observed"


def test_timed_pause_holds_then_ends_on_time() -> None:
    r = with_status(
        canary_rollout(steps=[{"setWeight": 25}, {"pause": {"duration": "60s"}}, {"setWeight": 50}]), 1
    )
    sets = [rs("web:1", 4), rs("web:2", 1, revision=2)]
    first = plan(observed(r, sets, SERVICES_SPLIT, istio(25)))
    assert first.status.phase == "Paused"
    assert first.status.wire()["pauseConditions"] == [
        {"reason": "CanaryPauseStep", "startTime": "2026-01-01T12:00:00Z"}
    ]
    assert first.requeue_after == pytest.approx(60)
    assert "paused at step 2/3 for 1m00s more" in first.status.message
    # An operator restart 30 s later: the start time in status keeps the pause on schedule.
    resumed = r.model_copy(update={"status": type(r.status).model_validate(first.status)})
    mid = plan(observed(resumed, sets, SERVICES_SPLIT, istio(25), now=later(30)))
    assert mid.status.current_step_index == 1 and mid.requeue_after == pytest.approx(30)
    done = plan(observed(resumed, sets, SERVICES_SPLIT, istio(25), now=later(60)))
    assert done.status.current_step_index == 2
    assert done.status.wire()["pauseConditions"] == []


def test_indefinite_pause_waits_for_promote() -> None:
    r = with_status(canary_rollout(), 1)
    sets = [rs("web:1", 4), rs("web:2", 1, revision=2)]
    p = plan(observed(r, sets, SERVICES_SPLIT, istio(25)))
    assert (p.status.phase == "Paused" and p.requeue_after is None) or p.requeue_after > 60
    assert p.status.controller_pause is True
    # `tidegate promote` clears the pause conditions; the next pass moves on.
    promoted = with_status(canary_rollout(), 1, controllerPause=True, pauseConditions=[])
    p2 = plan(observed(promoted, sets, SERVICES_SPLIT, istio(25)))
    assert p2.status.current_step_index == 2


def test_after_the_last_step_the_canary_is_scaled_up_before_it_takes_all_traffic() -> None:
    r = with_status(canary_rollout(), 2)
    small = plan(observed(r, [rs("web:1", 4), rs("web:2", 1, revision=2)], SERVICES_SPLIT, istio(25)))
    assert of(small, ScaleReplicaSet) == [ScaleReplicaSet(f"web-{V2}", 4)]
    assert of(small, SetTraffic) == []
    full = plan(observed(r, [rs("web:1", 4), rs("web:2", 4, revision=2)], SERVICES_SPLIT, istio(25)))
    assert of(full, SetTraffic) == [SetTraffic(100, V1, V2, ())]
    moved = plan(observed(r, [rs("web:1", 4), rs("web:2", 4, revision=2)], SERVICES_SPLIT, istio(100)))
    assert moved.status.stable_rs == V2


def test_after_promotion_services_move_then_weight_then_the_old_pods_go_after_the_delay() -> None:
    r = canary_rollout(
        status={"stableRS": V2, "currentPodHash": V2, "currentStepIndex": 2}, scaleDownDelaySeconds=30
    )
    r = r.model_copy(update={"status": r.status.model_copy(update={"current_step_hash": steps_hash(r)})})
    sets = [rs("web:1", 4), rs("web:2", 4, revision=2)]
    p = plan(observed(r, sets, SERVICES_SPLIT, istio(100)))
    assert of(p, SetServiceSelector) == [SetServiceSelector("web-stable", V2)]
    assert of(p, ScaleReplicaSet) == []
    p2 = plan(observed(r, sets, {"web-stable": V2, "web-canary": V2}, istio(100)))
    assert of(p2, SetTraffic) == [SetTraffic(0, V2, V2, ())]
    assert of(p2, ScaleReplicaSet) == [], "old pods stay until the traffic is read back off them"
    p3 = plan(observed(r, sets, {"web-stable": V2, "web-canary": V2}, istio(0)))
    assert of(p3, MarkScaleDown) == [MarkScaleDown(f"web-{V1}", later(30))]
    assert of(p3, ScaleReplicaSet) == []
    marked = [rs("web:1", 4, scale_down_at=later(30)), rs("web:2", 4, revision=2)]
    p4 = plan(observed(r, marked, {"web-stable": V2, "web-canary": V2}, istio(0), now=later(31)))
    assert of(p4, ScaleReplicaSet) == [ScaleReplicaSet(f"web-{V1}", 0)]
    assert p4.status.phase == "Healthy"


def test_abort_sends_all_traffic_to_stable_at_once_and_scales_the_canary_down_later() -> None:
    r = with_status(canary_rollout(abortScaleDownDelaySeconds=30), 1, abort=True)
    sets = [rs("web:1", 4), rs("web:2", 2, revision=2)]
    p = plan(observed(r, sets, SERVICES_SPLIT, istio(50, ("canary-header",))))
    assert of(p, SetTraffic) == [SetTraffic(0, V1, V2, ())]
    assert of(p, ScaleReplicaSet) == []
    assert p.status.phase == "Degraded" and p.status.aborted_at == "2026-01-01T12:00:00Z"
    assert any(isinstance(a, Event) and a.reason == "RolloutAborted" for a in p.actions)
    aborted = with_status(
        canary_rollout(abortScaleDownDelaySeconds=30), 1, abort=True, abortedAt="2026-01-01T12:00:00Z"
    )
    back = plan(observed(aborted, sets, SERVICES_SPLIT, istio(0), now=later(5)))
    assert of(back, SetServiceSelector) == [SetServiceSelector("web-canary", V1)], (
        "once traffic is back, the canary Service selects the stable pods too (as Argo's)"
    )
    waiting = plan(observed(aborted, sets, SERVICES_ON_V1, istio(0), now=later(10)))
    assert of(waiting, ScaleReplicaSet) == [] and waiting.requeue_after == pytest.approx(20)
    gone = plan(observed(aborted, sets, SERVICES_ON_V1, istio(0), now=later(30)))
    assert of(gone, ScaleReplicaSet) == [ScaleReplicaSet(f"web-{V2}", 0)]


@pytest.mark.parametrize(
    ("spec", "router", "scaled_at"),
    [
        ({}, True, 30),  # unset with a router: 30 s (Argo's DefaultAbortScaleDownDelaySeconds)
        ({"abortScaleDownDelaySeconds": 0}, True, None),  # an explicit 0: never
        ({"abortScaleDownDelaySeconds": 5}, True, 5),
        ({}, False, 0),  # without a router: at once
    ],
)
def test_abort_scale_down_delay_has_argos_defaults(
    spec: dict[str, Any], router: bool, scaled_at: int | None
) -> None:
    r = with_status(canary_rollout(router=router, **spec), 1, abort=True, abortedAt="2026-01-01T12:00:00Z")
    sets = [rs("web:1", 4), rs("web:2", 2, revision=2)]
    services = SERVICES_ON_V1 if router else {}
    for seconds in (0, 5, 30, 3600):
        p = plan(observed(r, sets, services, istio(0) if router else None, now=later(seconds)))
        scaled = ScaleReplicaSet(f"web-{V2}", 0) in of(p, ScaleReplicaSet)
        assert scaled is (scaled_at is not None and seconds >= scaled_at), (seconds, p.status.message)


def test_updating_back_to_the_stable_template_is_immediate() -> None:
    r = canary_rollout(image="web:1", status={"stableRS": V1, "currentPodHash": V2, "currentStepIndex": 1})
    sets = [rs("web:1", 4), rs("web:2", 2, revision=2)]
    p = plan(observed(r, sets, SERVICES_SPLIT, istio(50)))
    assert of(p, SetServiceSelector) == [SetServiceSelector("web-canary", V1)]
    p2 = plan(observed(r, sets, SERVICES_ON_V1, istio(50)))
    assert of(p2, SetTraffic) == [SetTraffic(0, V1, V1, ())]
    assert p2.status.current_step_index == 2


def test_promote_full_skips_the_remaining_steps() -> None:
    r = with_status(
        canary_rollout(steps=[{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]),
        1,
        promoteFull=True,
    )
    p = plan(observed(r, [rs("web:1", 4), rs("web:2", 1, revision=2)], SERVICES_SPLIT, istio(10)))
    assert of(p, ScaleReplicaSet) == [ScaleReplicaSet(f"web-{V2}", 4)]
    assert p.status.current_step_index == 4


def test_header_route_is_set_with_its_step_and_removed_at_the_end() -> None:
    steps = [
        {"setCanaryScale": {"replicas": 1}},
        {
            "setHeaderRoute": {
                "name": "hdr",
                "match": [{"headerName": "x-canary", "headerValue": {"exact": "true"}}],
            }
        },
        {"pause": {}},
    ]
    r = with_status(
        canary_rollout(
            steps=steps,
            trafficRouting={"managedRoutes": [{"name": "hdr"}], "istio": {"virtualService": {"name": "web"}}},
        ),
        1,
    )
    p = plan(observed(r, [rs("web:1", 4), rs("web:2", 1, revision=2)], SERVICES_SPLIT, istio(0)))
    (traffic,) = of(p, SetTraffic)
    assert traffic.canary_weight == 0
    assert [(hr.name, hr.match) for hr in traffic.header_routes] == [
        ("hdr", (("x-canary", "exact", "true"),))
    ]
    done = plan(observed(r, [rs("web:1", 4), rs("web:2", 1, revision=2)], SERVICES_SPLIT, istio(0, ("hdr",))))
    assert done.status.current_step_index == 2


def test_invalid_spec_changes_nothing() -> None:
    bad = canary_rollout(steps=[{"setHeaderRoute": {"name": "nope", "match": []}}])
    p = plan(observed(bad, [rs("web:1", 4)], SERVICES_ON_V1, istio()))
    assert kinds(p) == []
    assert p.status.phase == "Degraded"
    invalid = {c["type"]: c for c in p.status.wire()["conditions"]}["InvalidSpec"]
    assert invalid["status"] == "True" and "managedRoutes" in invalid["message"]


def test_missing_service_is_a_condition_not_a_crash() -> None:
    r = with_status(canary_rollout(), 0)
    obs = observed(r, [rs("web:1", 4)], SERVICES_ON_V1, istio())
    from tidegate.core.model import ServiceInfo

    obs = type(obs)(**{**obs.__dict__, "services": {"web-stable": ServiceInfo("web-stable", False)}})
    p = plan(obs)
    assert kinds(p) == [] and "Service web-stable not found" in p.status.message
    assert p.requeue_after is not None


def test_progress_deadline_marks_degraded_and_can_abort() -> None:
    steps = [{"setWeight": 25}, {"pause": {}}]
    base = dict(progressAt="2026-01-01T11:00:00Z", availableReplicas=4, updatedReplicas=1)
    r = with_status(canary_rollout(steps=steps), 0, **base)
    r = r.model_copy(update={"spec": r.spec.model_copy(update={"progress_deadline_seconds": 60})})
    stuck = [rs("web:1", 4), rs("web:2", 1, available=0, revision=2)]
    p = plan(observed(r, stuck, SERVICES_ON_V1, istio()))
    assert p.status.phase == "Degraded"
    cond = {c["type"]: c for c in p.status.wire()["conditions"]}["Progressing"]
    assert (cond["status"], cond["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert not p.status.abort
    ra = r.model_copy(update={"spec": r.spec.model_copy(update={"progress_deadline_abort": True})})
    assert plan(observed(ra, stuck, SERVICES_ON_V1, istio())).status.abort is True


def test_dynamic_stable_scale_never_drops_below_what_stable_still_carries() -> None:
    r = with_status(canary_rollout(steps=[{"setWeight": 75}, {"pause": {}}], dynamicStableScale=True), 0)
    sets = [rs("web:1", 4), rs("web:2", 3, revision=2)]
    before = plan(observed(r, sets, SERVICES_SPLIT, istio(0)))
    assert ScaleReplicaSet(f"web-{V1}", 1) not in of(before, ScaleReplicaSet)
    after = plan(observed(r, sets, SERVICES_SPLIT, istio(75)))
    assert ScaleReplicaSet(f"web-{V1}", 1) in of(after, ScaleReplicaSet)


@pytest.mark.parametrize(
    ("weight", "canary_available", "stable_spec", "expected"),
    [
        # replicas 4, maxSurge 25% (1), maxUnavailable 0
        (25, 0, 4, (1, 4)),  # surge one canary pod; stable stays until it is available
        (25, 1, 4, (1, 3)),  # canary available: stable down to 3
        (50, 1, 3, (2, 3)),  # next canary pod within surge; stable waits for it
        (50, 2, 3, (2, 2)),
        (100, 2, 2, (3, 2)),  # full weight: surge again, stable shrinks as canary pods come up
    ],
)
def test_without_a_router_pod_counts_stay_within_surge_and_availability(
    weight: int, canary_available: int, stable_spec: int, expected: tuple[int, int]
) -> None:
    from tests.unit.planner_fixtures import observed as obs_of

    r = canary_rollout(router=False, maxUnavailable=0)
    sets = [
        rs("web:1", stable_spec),
        rs("web:2", max(canary_available, 0), available=canary_available, revision=2),
    ]
    from tidegate.core.planner import _Pass

    p = _Pass(obs=obs_of(r, sets), status={})
    assert r.spec.strategy.canary is not None
    assert _basic_canary_counts(p, r.spec.strategy.canary, weight, V2, V1, 4) == expected


# --------------------------------------------------------------------------- blue-green


BG_SERVICES = {"web-active": V1, "web-preview": V1}


def bg_status(**extra: Any) -> dict[str, Any]:
    return {"stableRS": V1, "currentPodHash": V2, **extra}


def test_blue_green_first_deploy_goes_straight_to_active() -> None:
    r = bg_rollout(image="web:1")
    p = plan(observed(r, [rs("web:1", 3)], {"web-active": None, "web-preview": None}))
    assert {a.service for a in of(p, SetServiceSelector)} == {"web-active", "web-preview"}
    assert p.status.stable_rs == V1


def test_blue_green_preview_then_pause_then_switch_only_when_full() -> None:
    r = bg_rollout(autoPromotionEnabled=False, previewReplicaCount=1, status=bg_status())
    sets = [rs("web:1", 3), rs("web:2", 1, revision=2)]
    p = plan(observed(r, sets, BG_SERVICES))
    assert of(p, SetServiceSelector) == [SetServiceSelector("web-preview", V2)]
    p2 = plan(observed(r, sets, {"web-active": V1, "web-preview": V2}))
    assert p2.status.phase == "Paused"
    assert [c["reason"] for c in p2.status.wire()["pauseConditions"]] == ["BlueGreenPause"]
    promoted = bg_rollout(
        autoPromotionEnabled=False,
        previewReplicaCount=1,
        status=bg_status(controllerPause=True, pauseConditions=[]),
    )
    p3 = plan(observed(promoted, sets, {"web-active": V1, "web-preview": V2}))
    assert p3.status.wire()["blueGreen"]["promoting"] is True
    promoting = bg_rollout(
        autoPromotionEnabled=False,
        previewReplicaCount=1,
        status=bg_status(controllerPause=True, blueGreen={"promoting": True}),
    )
    p4 = plan(observed(promoting, sets, {"web-active": V1, "web-preview": V2}))
    assert of(p4, ScaleReplicaSet) == [ScaleReplicaSet(f"web-{V2}", 3)]
    assert SetServiceSelector("web-active", V2) not in of(p4, SetServiceSelector)
    full = [rs("web:1", 3), rs("web:2", 3, revision=2)]
    p5 = plan(observed(promoting, full, {"web-active": V1, "web-preview": V2}))
    assert of(p5, SetServiceSelector) == [SetServiceSelector("web-active", V2)]


@pytest.mark.parametrize(("delay", "scaled"), [(0, False), (1, True)])
def test_blue_green_abort_keeps_active_on_stable(delay: int, scaled: bool) -> None:
    """abortScaleDownDelaySeconds: 0 keeps the preview pods for good, as Argo's does."""
    r = bg_rollout(
        status=bg_status(abort=True, abortedAt="2026-01-01T12:00:00Z"), abortScaleDownDelaySeconds=delay
    )
    sets = [rs("web:1", 3), rs("web:2", 3, revision=2)]
    p = plan(observed(r, sets, {"web-active": V1, "web-preview": V2}, now=later(60)))
    assert SetServiceSelector("web-active", V2) not in of(p, SetServiceSelector)
    assert SetServiceSelector("web-preview", V1) in of(p, SetServiceSelector)
    assert p.status.phase == "Degraded"
    assert (ScaleReplicaSet(f"web-{V2}", 0) in of(p, ScaleReplicaSet)) is scaled


def test_blue_green_auto_promotion_seconds() -> None:
    r = bg_rollout(autoPromotionSeconds=30, status=bg_status(stepStartedAt="2026-01-01T12:00:00Z"))
    sets = [rs("web:1", 3), rs("web:2", 3, revision=2)]
    early = plan(observed(r, sets, {"web-active": V1, "web-preview": V2}, now=later(10)))
    assert early.requeue_after == pytest.approx(20) and "automatically" in early.status.message
    due = plan(observed(r, sets, {"web-active": V1, "web-preview": V2}, now=later(30)))
    assert due.status.wire()["blueGreen"]["promoting"] is True


def test_now_is_used_for_timestamps() -> None:
    assert NOW.isoformat().startswith("2026-01-01T12:00:00")


def test_a_new_revision_mid_rollout_first_takes_traffic_off_the_superseded_canary() -> None:
    from tests.unit.planner_fixtures import h

    v3 = h("web:3")
    r = canary_rollout(image="web:3", status={"stableRS": V1, "currentPodHash": V2, "currentStepIndex": 1})
    sets = [rs("web:1", 4), rs("web:2", 2, revision=2)]
    p = plan(observed(r, sets, SERVICES_SPLIT, istio(50)))
    assert of(p, SetTraffic) == [SetTraffic(0, V1, V2, ())]
    assert not any(c.pod_hash == v3 for c in of(p, SetServiceSelector))
    assert p.status.current_step_index == 0


def _settled(r: Rollout, obs_of: Any, seconds: float) -> dict[str, Any]:
    """Plan, feed the status back as the API server would store it, plan again later."""
    from tidegate.k8s.execute import status_diff

    first = plan(obs_of(r, NOW))
    stored = r.model_copy(update={"status": type(r.status).model_validate(first.status.wire())})
    again = plan(obs_of(stored, later(seconds)))
    return status_diff(first.status.wire(), again.status.wire())


@pytest.mark.parametrize("seconds", [1, 5, 65])
def test_a_healthy_rollout_settles_and_writes_nothing(seconds: float) -> None:
    r = canary_rollout(image="web:1", status={"stableRS": V1, "currentPodHash": V1})
    diff = _settled(
        r, lambda ro, now: observed(ro, [rs("web:1", 4)], SERVICES_ON_V1, istio(), now=now), seconds
    )
    assert diff == {}


@pytest.mark.parametrize("seconds", [1, 65])
def test_an_indefinitely_paused_rollout_settles_and_writes_nothing(seconds: float) -> None:
    r = with_status(canary_rollout(), 1)
    sets = [rs("web:1", 4), rs("web:2", 1, revision=2)]
    first = plan(observed(r, sets, SERVICES_SPLIT, istio(25)))
    paused = r.model_copy(update={"status": type(r.status).model_validate(first.status)})
    diff = _settled(paused, lambda ro, now: observed(ro, sets, SERVICES_SPLIT, istio(25), now=now), seconds)
    assert diff == {}


# --------------------------------------------------------------------------- analysis


def _run(name: str, phase: str, kind: str = "step") -> Any:
    from tidegate.core.model import AnalysisRunInfo

    return AnalysisRunInfo(
        name=name, kind=kind, pod_hash=V2, phase=phase, message=f"metric m {phase.lower()}"
    )


def _with_runs(obs: Any, *runs: Any) -> Any:
    return type(obs)(**{**obs.__dict__, "analysis_runs": tuple(runs)})


ANALYSIS = {"templates": [{"templateName": "success-rate"}]}


@pytest.mark.parametrize(
    ("phase", "index", "abort", "paused"),
    [
        (None, 1, False, False),  # created, then waited for
        ("Running", 1, False, False),
        ("Successful", 2, False, False),
        ("Failed", 1, True, False),
        ("Error", 1, True, False),
        ("Inconclusive", 1, False, True),
    ],
)
def test_an_analysis_step_follows_its_run(phase: str | None, index: int, abort: bool, paused: bool) -> None:
    from tidegate.core.model import CreateAnalysisRun

    steps = [{"setWeight": 25}, {"analysis": ANALYSIS}, {"setWeight": 50}, {"pause": {}}]
    r = with_status(canary_rollout(steps=steps), 1)
    name = f"web-{V2}-s1-0"
    obs = observed(r, [rs("web:1", 4), rs("web:2", 1, revision=2)], SERVICES_SPLIT, istio(25))
    if phase is not None:
        obs = _with_runs(obs, _run(name, phase))
    p = plan(obs)
    creates = of(p, CreateAnalysisRun)
    assert [c.name for c in creates] == ([name] if phase is None else [])
    assert p.status.current_step_index == index
    assert bool(p.status.abort) is abort
    if abort:
        assert "metric m" in p.status.message and p.status.abort_message.startswith(f"analysis run {name}")
    assert (p.status.phase == "Paused") is paused
    if paused:
        assert [c["reason"] for c in p.status.wire()["pauseConditions"]] == ["InconclusiveAnalysisRun"]


def test_a_new_revision_terminates_the_previous_revisions_running_analysis() -> None:
    from tidegate.core.model import AnalysisRunInfo, TerminateAnalysisRun

    steps = [{"setWeight": 25}, {"analysis": ANALYSIS}]
    r = canary_rollout(
        image="web:3", steps=steps, status={"stableRS": V1, "currentPodHash": V2, "currentStepIndex": 1}
    )
    old = AnalysisRunInfo(name=f"web-{V2}-s1-0", kind="step", pod_hash=V2, phase="Running")
    p = plan(
        _with_runs(observed(r, [rs("web:1", 4), rs("web:2", 1, revision=2)], SERVICES_SPLIT, istio(25)), old)
    )
    assert TerminateAnalysisRun(old.name) in of(p, TerminateAnalysisRun)


def test_blue_green_pre_promotion_analysis_gates_the_switch() -> None:
    from tidegate.core.model import CreateAnalysisRun

    r = bg_rollout(status=bg_status(), prePromotionAnalysis=ANALYSIS)
    sets = [rs("web:1", 3), rs("web:2", 3, revision=2)]
    services = {"web-active": V1, "web-preview": V2}
    p = plan(observed(r, sets, services))
    assert [c.kind for c in of(p, CreateAnalysisRun)] == ["pre"]
    assert not p.status.wire()["blueGreen"].get("promoting")
    failed = plan(_with_runs(observed(r, sets, services), _run(f"web-{V2}-pre-0", "Failed", "pre")))
    assert failed.status.abort is True
    assert SetServiceSelector("web-active", V2) not in of(failed, SetServiceSelector)
    passed = plan(_with_runs(observed(r, sets, services), _run(f"web-{V2}-pre-0", "Successful", "pre")))
    assert passed.status.wire()["blueGreen"]["promoting"] is True


def test_blue_green_post_promotion_failure_switches_back() -> None:
    r = bg_rollout(status=bg_status(blueGreen={"promoting": True}), postPromotionAnalysis=ANALYSIS)
    sets = [rs("web:1", 3), rs("web:2", 3, revision=2)]
    switched = {"web-active": V2, "web-preview": V2}
    running = plan(_with_runs(observed(r, sets, switched), _run(f"web-{V2}-post-0", "Running", "post")))
    assert running.status.stable_rs == V1, "not stable until the post-promotion analysis passes"
    assert of(running, ScaleReplicaSet) == [], "the previous version stays scaled up"
    failed = plan(_with_runs(observed(r, sets, switched), _run(f"web-{V2}-post-0", "Failed", "post")))
    assert failed.status.abort is True
    aborted = bg_rollout(
        status=bg_status(abort=True, blueGreen={"promoting": False}), postPromotionAnalysis=ANALYSIS
    )
    back = plan(observed(aborted, sets, switched))
    assert SetServiceSelector("web-active", V1) in of(back, SetServiceSelector)


def test_old_replicasets_beyond_the_history_limit_are_deleted() -> None:
    from tests.unit.planner_fixtures import h
    from tidegate.core.model import DeleteReplicaSet

    r = canary_rollout(
        image="web:4", status={"stableRS": h("web:4"), "currentPodHash": h("web:4"), "currentStepIndex": 2}
    )
    r = r.model_copy(update={"spec": r.spec.model_copy(update={"revision_history_limit": 1})})
    r = r.model_copy(update={"status": r.status.model_copy(update={"current_step_hash": steps_hash(r)})})
    sets = [
        rs("web:1", 0, revision=1),
        rs("web:2", 0, revision=2),
        rs("web:3", 0, revision=3),
        rs("web:4", 4, revision=4),
    ]
    svcs = {"web-stable": h("web:4"), "web-canary": h("web:4")}
    p = plan(observed(r, sets, svcs, istio()))
    assert p.status.phase == "Healthy"
    assert sorted(a.name for a in of(p, DeleteReplicaSet)) == sorted([f"web-{V1}", f"web-{V2}"])


# ---------------------------------------------------------------------------
# Intents: any client writes the same field and gets the same result.


@pytest.mark.parametrize(
    ("index", "controller_pause"),
    [(1, True), (2, False), (0, False)],
)
def test_retry_is_clearing_abort_and_the_operator_restarts_the_steps(
    index: int, controller_pause: bool
) -> None:
    """`kubectl patch --subresource=status -p '{"status":{"abort":false}}'` is a whole retry."""
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}]
    cleared = with_status(
        canary_rollout(steps=steps),
        index,
        abort=False,
        abortedRevision=V2,
        abortedAt="2026-01-01T11:00:00Z",
        controllerPause=controller_pause,
        pauseConditions=[{"reason": "CanaryPauseStep", "startTime": "2026-01-01T11:00:00Z"}],
        analysisRound=3,
    )
    p = plan(observed(cleared, [rs("web:1", 4), rs("web:2", 0, revision=2)], SERVICES_SPLIT, istio(0)))
    assert p.status.current_step_index == 0
    assert p.status.analysis_round == 4
    assert p.status.aborted_revision is None and "abortedAt" not in p.status
    assert p.status.progress_at == "2026-01-01T12:00:00Z"
    assert [e.reason for e in of(p, Event)].count("RolloutRetried") == 1
    # The canary is scaled for step 1 again rather than left where the abort put it.
    assert ScaleReplicaSet(f"web-{V2}", 1) in of(p, ScaleReplicaSet)


def test_a_still_aborted_rollout_is_not_retried() -> None:
    aborted = with_status(
        canary_rollout(), 1, abort=True, abortedRevision=V2, abortedAt="2026-01-01T11:00:00Z"
    )
    p = plan(observed(aborted, [rs("web:1", 4), rs("web:2", 1, revision=2)], SERVICES_SPLIT, istio(0)))
    assert p.status.current_step_index == 1 and p.status.phase == "Degraded"


@pytest.mark.parametrize(
    ("skip", "index", "expected_index"),
    [
        (0, 0, 1),  # the named step is the current one: it is done
        (1, 1, 2),  # skipping a pause step clears its pause
        (0, 1, 1),  # a late write (the rollout moved on) changes nothing
        (2, 1, 1),  # a step not reached yet is not skipped in advance
    ],
)
def test_skip_step_completes_only_the_step_it_names(skip: int, index: int, expected_index: int) -> None:
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}]
    r = with_status(canary_rollout(steps=steps), index, skipStep=skip, controllerPause=index == 1)
    p = plan(observed(r, [rs("web:1", 4), rs("web:2", 1, revision=2)], SERVICES_SPLIT, istio(0)))
    assert p.status.current_step_index == expected_index
    assert "skipStep" not in p.status


def test_a_pause_never_ends_before_its_duration_when_it_starts_mid_second() -> None:
    steps = [{"setWeight": 25}, {"pause": {"duration": "10s"}}, {"setWeight": 50}]
    r = with_status(canary_rollout(steps=steps), 1)
    sets = [rs("web:1", 4), rs("web:2", 1, revision=2)]
    start = later(0.7)
    first = plan(observed(r, sets, SERVICES_SPLIT, istio(25), now=start))
    assert first.status.wire()["pauseConditions"][0]["startTime"] == "2026-01-01T12:00:01Z"
    paused = r.model_copy(update={"status": type(r.status).model_validate(first.status)})
    for elapsed in (9.3, 9.9, 10.0 - 1e-3):
        mid = plan(observed(paused, sets, SERVICES_SPLIT, istio(25), now=start + timedelta(seconds=elapsed)))
        assert mid.status.current_step_index == 1, f"pause ended after {elapsed}s of 10s"
    done = plan(observed(paused, sets, SERVICES_SPLIT, istio(25), now=later(11)))
    assert done.status.current_step_index == 2


@pytest.mark.parametrize(
    ("endpoints", "sets_weight"),
    [(None, True), (0, False), (1, True), (2, True)],
)
def test_weight_waits_for_the_canary_services_ready_endpoints(
    endpoints: int | None, sets_weight: bool
) -> None:
    """A ready pod is not yet an endpoint: the weight follows the canary Service's EndpointSlices."""
    from dataclasses import replace

    r = with_status(canary_rollout(), 0)
    obs = observed(r, [rs("web:1", 4), rs("web:2", 1, revision=2)], SERVICES_SPLIT, istio(0))
    services = {**obs.services, "web-canary": replace(obs.services["web-canary"], ready_endpoints=endpoints)}
    p = plan(replace(obs, services=services))
    assert (of(p, SetTraffic) == [SetTraffic(25, V1, V2, ())]) is sets_weight
    if not sets_weight:
        assert "ready endpoints of Service web-canary" in p.status.message


def test_a_pause_is_told_by_one_event_not_two() -> None:
    r = with_status(canary_rollout(), 1)
    p = plan(observed(r, [rs("web:1", 4), rs("web:2", 1, revision=2)], SERVICES_SPLIT, istio(25)))
    assert p.status.phase == "Paused"
    assert [e.reason for e in of(p, Event)].count("RolloutPaused") == 1


@pytest.mark.parametrize(
    ("ready_pods", "moves_subset"),
    [
        (None, True),  # endpoints unknown (no EndpointSlice API): the ReplicaSet's word is taken
        (frozenset(), False),
        (frozenset({f"web-{V1}-aaaaa"}), False),  # a stable pod is no canary endpoint
        (frozenset({f"web-{V2}-bbbbb"}), True),
    ],
)
def test_a_subset_split_moves_the_canary_subset_only_onto_ready_endpoints(
    ready_pods: frozenset[str] | None, moves_subset: bool
) -> None:
    """The canary subset is reached by header routes at any weight: it moves to the new pods
    only once the host Service lists one of them as a ready endpoint."""
    from dataclasses import replace

    r = with_status(
        canary_rollout(
            steps=[{"setWeight": 5}, {"pause": {}}],
            canaryService=None,
            stableService=None,
            trafficRouting={
                "istio": {
                    "virtualService": {"name": "web"},
                    "destinationRule": {
                        "name": "web",
                        "canarySubsetName": "canary",
                        "stableSubsetName": "stable",
                    },
                }
            },
        ),
        0,
    )
    router = replace(istio(0), stable_subset_hash=V1, canary_subset_hash=V1, subset_host="web")
    obs = observed(r, [rs("web:1", 4), rs("web:2", 1, revision=2)], {"web": None}, router)
    host = replace(obs.services["web"], ready_endpoints=len(ready_pods or ()), ready_pods=ready_pods)
    p = plan(replace(obs, services={"web": host}))
    assert (of(p, SetTraffic) == [SetTraffic(5, V1, V2, ())]) is moves_subset, p.status.message
    if not moves_subset:
        assert "canary subset in Service web" in p.status.message


def test_a_header_route_whose_match_changed_is_written_again() -> None:
    """Same name, new match: the route is compared by what it matches, not by name."""
    from dataclasses import replace

    from tidegate.core.model import HeaderRoute

    steps = [
        {"setWeight": 25},
        {"setHeaderRoute": {"name": "h", "match": [{"headerName": "x", "headerValue": {"exact": "new"}}]}},
        {"pause": {}},
    ]
    r = with_status(
        canary_rollout(
            steps=steps,
            trafficRouting={"managedRoutes": [{"name": "h"}], "istio": {"virtualService": {"name": "web"}}},
        ),
        1,
    )
    old = replace(istio(25, ("h",)), header_matches=(HeaderRoute("h", (("x", "exact", "old"),)),))
    p = plan(observed(r, [rs("web:1", 4), rs("web:2", 1, revision=2)], SERVICES_SPLIT, old))
    assert of(p, SetTraffic) == [SetTraffic(25, V1, V2, (HeaderRoute("h", (("x", "exact", "new"),)),))]
    same = replace(old, header_matches=(HeaderRoute("h", (("x", "exact", "new"),)),))
    assert (
        of(plan(observed(r, [rs("web:1", 4), rs("web:2", 1, revision=2)], SERVICES_SPLIT, same)), SetTraffic)
        == []
    )


def test_promote_full_on_an_aborted_canary_lifts_the_abort_and_promotes() -> None:
    """Argo Rollouts' controller: promoteFull clears the pause conditions and the abort."""
    r = with_status(canary_rollout(), 1, abort=True, abortedAt="2026-01-01T12:00:00Z", promoteFull=True)
    r = r.model_copy(
        update={"status": type(r.status).model_validate({**r.status.wire(), "abortedRevision": V2})}
    )
    p = plan(observed(r, [rs("web:1", 4), rs("web:2", 4, revision=2)], SERVICES_SPLIT, istio(0)))
    assert p.status.abort is False and p.status.aborted_revision is None
    assert p.status.phase != "Degraded"
    assert of(p, SetTraffic) == [SetTraffic(100, V1, V2, ())]


def test_blue_green_is_paused_only_once_the_preview_is_fully_available() -> None:
    r = bg_rollout(autoPromotionEnabled=False, status=bg_status())
    pending = plan(observed(r, [rs("web:1", 3), rs("web:2", 3, available=1, revision=2)], BG_SERVICES))
    assert pending.status.phase == "Progressing" and not pending.status.wire().get("pauseConditions")
    ready = plan(
        observed(r, [rs("web:1", 3), rs("web:2", 3, revision=2)], {"web-active": V1, "web-preview": V2})
    )
    assert ready.status.phase == "Paused"
    assert [c["reason"] for c in ready.status.wire()["pauseConditions"]] == ["BlueGreenPause"]


def test_blue_green_ready_and_available_replicas_count_the_active_pods_only() -> None:
    r = bg_rollout(autoPromotionEnabled=False, status=bg_status(blueGreen={"activeSelector": V1}))
    p = plan(observed(r, [rs("web:1", 3), rs("web:2", 3, revision=2)], {"web-active": V1, "web-preview": V2}))
    assert (p.status.ready_replicas, p.status.available_replicas, p.status.replicas) == (3, 3, 6)


CANARY_PATH = "spec.strategy.canary"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"scaleDownDelaySeconds": 10}, f"{CANARY_PATH}.scaleDownDelaySeconds: can only be used with"),
        ({"pingPong": {"pingService": "a", "pongService": "b"}}, f"{CANARY_PATH}.pingPong: not supported"),
        ({"steps": [{"experiment": {"templates": []}}]}, f"{CANARY_PATH}.steps[0].experiment: not supported"),
    ],
)  # fmt: skip
def test_argo_fields_tidegate_does_not_run_are_invalid_spec_by_name(
    fields: dict[str, Any], named: str
) -> None:
    r = with_status(canary_rollout(router=False, **fields), 0)
    p = plan(observed(r, [rs("web:1", 4), rs("web:2", 1, revision=2)]))
    assert named in p.status.message and p.status.phase == "Degraded"
    assert not [a for a in p.actions if not isinstance(a, Event)], "nothing changes for the running version"


@pytest.mark.parametrize(
    ("anti", "key", "entry_of"),
    [
        ({"preferredDuringSchedulingIgnoredDuringExecution": {"weight": 40}},
         "preferredDuringSchedulingIgnoredDuringExecution", lambda e: e["podAffinityTerm"]),
        ({"requiredDuringSchedulingIgnoredDuringExecution": {}},
         "requiredDuringSchedulingIgnoredDuringExecution", lambda e: e),
    ],
)  # fmt: skip
def test_anti_affinity_keeps_the_new_version_off_the_stable_pods_nodes(
    anti: dict[str, Any], key: str, entry_of: Any
) -> None:
    """Argo Rollouts' GenerateReplicaSetAffinity: a term on the stable hash, by hostname."""
    from tidegate.core.model import CreateReplicaSet

    r = with_status(canary_rollout(antiAffinity=anti), 0)
    p = plan(observed(r, [rs("web:1", 4)], SERVICES_ON_V1, istio()))
    created = of(p, CreateReplicaSet)[0]
    assert created.pod_hash == V2, "the hash is the template's as written"
    (entry,) = created.template["spec"]["affinity"]["podAntiAffinity"][key]
    term = entry_of(entry)
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchExpressions"] == [
        {"key": "rollouts-pod-template-hash", "operator": "In", "values": [V1]}
    ]


@pytest.mark.parametrize(("revisions", "skips"), [(0, False), (1, False), (2, True)])
def test_a_rollback_within_the_rollback_window_skips_the_steps(revisions: int, skips: bool) -> None:
    """Argo's isRollbackWithinWindow: back to web:2, made before the stable web:3 with one
    revision (web:9) between them."""
    from dataclasses import replace

    from tests.unit.planner_fixtures import h, later

    v3 = h("web:3")
    r = canary_rollout(image="web:2", status={"stableRS": v3, "currentPodHash": v3, "currentStepIndex": 2})
    window = type(r.spec).model_validate({**r.spec.wire(), "rollbackWindow": {"revisions": revisions}})
    r = r.model_copy(update={"spec": window})
    sets = [
        replace(rs("web:2", 0, revision=1), created_at=later(1)),
        replace(rs("web:9", 0, revision=2), created_at=later(2)),
        replace(rs("web:3", 4, revision=3), created_at=later(3)),
    ]
    p = plan(observed(r, sets, {"web-stable": v3, "web-canary": v3}, istio()))
    scaled = {a.name: a.replicas for a in of(p, ScaleReplicaSet)}
    assert (scaled.get(f"web-{V2}") == 4) is skips, (scaled, p.status.message)


def test_scale_down_delay_revision_limit_keeps_only_the_newest_old_versions_waiting() -> None:
    """Two old ReplicaSets with pods, limit 1: the older goes at once, the newer waits its delay."""
    r = canary_rollout(
        image="web:3",
        scaleDownDelaySeconds=30,
        scaleDownDelayRevisionLimit=1,
        status={"stableRS": h("web:3"), "currentPodHash": h("web:3"), "currentStepIndex": 2},
    )
    v3 = h("web:3")
    sets = [rs("web:1", 4, revision=1), rs("web:2", 4, revision=2), rs("web:3", 4, revision=3)]
    p = plan(observed(r, sets, {"web-stable": v3, "web-canary": v3}, istio()))
    assert of(p, ScaleReplicaSet) == [ScaleReplicaSet(f"web-{V1}", 0)]
    assert [a.name for a in of(p, MarkScaleDown)] == [f"web-{V2}"]


def test_ephemeral_metadata_follows_the_role_in_place() -> None:
    """canaryMetadata on the canary's pods; at promotion they get stableMetadata instead
    (Argo Rollouts' ephemeral metadata), without a new ReplicaSet."""
    from dataclasses import replace

    from tidegate.core.model import CreateReplicaSet, SetPodMetadata

    meta = {
        "canaryMetadata": {"labels": {"role": "canary"}},
        "stableMetadata": {"labels": {"role": "stable"}},
    }
    r = with_status(canary_rollout(**meta), 0)
    created = of(plan(observed(r, [rs("web:1", 4)], SERVICES_ON_V1, istio())), CreateReplicaSet)[0]
    assert created.template["metadata"]["labels"]["role"] == "canary"
    # The stable ReplicaSet of the first revision lacks its label: it is added in place.
    p = plan(observed(r, [rs("web:1", 4), rs("web:2", 1, revision=2)], SERVICES_SPLIT, istio()))
    assert SetPodMetadata(f"web-{V1}", V1, (("role", "stable"),), ()) in of(p, SetPodMetadata)
    # Promoted: web:2 is stable now, and its canary label is swapped.
    promoted = canary_rollout(**meta, status={"stableRS": V2, "currentPodHash": V2, "currentStepIndex": 2})
    canary_rs = rs("web:2", 4, revision=2)
    canary_rs = replace(
        canary_rs, template={**canary_rs.template, "metadata": {"labels": {"app": "web", "role": "canary"}}}
    )
    q = plan(observed(promoted, [rs("web:1", 4), canary_rs], {"web-stable": V2, "web-canary": V2}, istio()))
    assert SetPodMetadata(f"web-{V2}", V2, (("role", "stable"),), ()) in of(q, SetPodMetadata)


def test_a_blocked_analysis_holds_the_canary_at_zero_and_keeps_trying() -> None:
    """status.analysisBlocked (a template missing): weight 0 first, then the run is asked for
    again; the mark stays until a run is made (k8s/execute) or the step is behind."""
    from tidegate.core.model import CreateAnalysisRun

    steps = [{"setWeight": 20}, {"analysis": {"templates": [{"templateName": "ready-check"}]}}]
    r = with_status(canary_rollout(steps=steps), 1, analysisBlocked="AnalysisTemplate ready-check not found")
    sets = [rs("web:1", 4), rs("web:2", 1, revision=2)]
    moving = plan(observed(r, sets, SERVICES_SPLIT, istio(20)))
    assert of(moving, SetTraffic) == [SetTraffic(0, V1, V2, ())]
    assert moving.status.analysis_blocked, "the mark survives a pass that makes no run"
    held = plan(observed(r, sets, SERVICES_SPLIT, istio(0)))
    assert of(held, SetTraffic) == [] and len(of(held, CreateAnalysisRun)) == 1


def test_a_weight_the_router_does_not_take_is_written_again_seconds_apart_not_at_once() -> None:
    """The last write read back unverified and nothing moved: write again in 5 s, no Event."""
    st = {"canary": {"weights": {"canary": {"weight": 0}, "stable": {"weight": 100}, "verified": False}}}
    r = with_status(canary_rollout(), 0, **st)
    p = plan(observed(r, [rs("web:1", 4), rs("web:2", 1, revision=2)], SERVICES_SPLIT, istio(0)))
    assert of(p, SetTraffic) == [SetTraffic(25, V1, V2, ())]
    assert p.requeue_after == pytest.approx(5.0)
    assert "TrafficWeightSet" not in [e.reason for e in of(p, Event)]
    fresh = with_status(canary_rollout(), 0)
    q = plan(observed(fresh, [rs("web:1", 4), rs("web:2", 1, revision=2)], SERVICES_SPLIT, istio(0)))
    assert q.requeue_after is not None and q.requeue_after < 1, "a first write goes on at once"


def test_a_first_deploy_points_its_services_without_calling_it_a_correction() -> None:
    r = canary_rollout(image="web:1", status={"stableRS": V1, "currentPodHash": V1, "currentStepIndex": 2})
    p = plan(observed(r, [rs("web:1", 4)], {"web-stable": None, "web-canary": None}, istio()))
    reasons = [e.reason for e in of(p, Event)]
    assert "ServiceSelectorCorrected" not in reasons and "ServiceSwitched" in reasons


def test_the_canary_service_counts_only_the_canary_pods_endpoints() -> None:
    """Slices that still list the stable pods (the Service was just pointed back at the
    canary, after an abort) carry no canary weight."""
    from dataclasses import replace

    r = with_status(canary_rollout(), 0)
    obs = observed(r, [rs("web:1", 4), rs("web:2", 1, revision=2)], SERVICES_SPLIT, istio(0))
    stale = frozenset(f"web-{V1}-{i}" for i in range(4))
    services = {
        **obs.services,
        "web-canary": replace(obs.services["web-canary"], ready_endpoints=4, ready_pods=stale),
    }
    p = plan(replace(obs, services=services))
    assert of(p, SetTraffic) == [] and "ready canary endpoints" in p.status.message
    fresh = frozenset({f"web-{V2}-a"})
    services["web-canary"] = replace(services["web-canary"], ready_endpoints=1, ready_pods=fresh)
    assert of(plan(replace(obs, services=services)), SetTraffic) == [SetTraffic(25, V1, V2, ())]


@pytest.mark.parametrize("canary_set", ["deleted", "no pods ready"])
def test_a_canary_that_lost_every_pod_loses_its_weight_until_it_has_pods_again(canary_set: str) -> None:
    """Its share would reach no ready endpoint: the stable carries everything meanwhile."""
    r = with_status(canary_rollout(), 1)
    sets = [rs("web:1", 4)] + ([] if canary_set == "deleted" else [rs("web:2", 1, available=0, revision=2)])
    p = plan(observed(r, sets, SERVICES_SPLIT, istio(25)))
    assert of(p, SetTraffic) == [SetTraffic(0, V1, V2, ())], p.status.message
    assert "no ready pods" in p.status.message
    back = plan(observed(r, [rs("web:1", 4), rs("web:2", 1, revision=2)], SERVICES_SPLIT, istio(0)))
    assert of(back, SetTraffic) == [SetTraffic(25, V1, V2, ())], "the weight returns with a ready pod"


@pytest.mark.parametrize(
    ("stable_endpoints", "scales_down"),
    [
        (None, True),  # endpoints unknown: the ReplicaSet's word is taken
        (frozenset({f"web-{V1}-a", f"web-{V1}-b"}), False),  # the slices still list the old pods only
        (frozenset({f"web-{V1}-a", f"web-{V2}-b"}), True),
    ],
)
def test_the_old_version_is_scaled_down_only_once_the_service_reaches_a_new_pod(
    stable_endpoints: frozenset[str] | None, scales_down: bool
) -> None:
    """After a selector moves, its EndpointSlices lag: scaling the old pods away then would
    leave the Service carrying all traffic with no ready endpoint (issue 12's 7.35 s gap)."""
    from dataclasses import replace

    r = canary_rollout(
        image="web:2",
        router=False,
        status={"stableRS": V2, "currentPodHash": V2, "currentStepIndex": 2},
        stableService="web",
    )
    obs = observed(r, [rs("web:1", 4), rs("web:2", 4, revision=2)], {"web": V2})
    svc = replace(
        obs.services["web"], ready_endpoints=len(stable_endpoints or ()), ready_pods=stable_endpoints
    )
    p = plan(replace(obs, services={"web": svc}))
    scaled = [a for a in of(p, ScaleReplicaSet) if a.name == f"web-{V1}"]
    assert (scaled == [ScaleReplicaSet(f"web-{V1}", 0)]) is scales_down, (p.actions, p.status.message)
    if not scales_down:
        assert p.requeue_after is not None, "a backstop wake-up while the slices catch up"


# --------------------------------------------------------------------------- maxTrafficWeight, mirror routes
def test_max_traffic_weight_scales_the_steps_weights_and_the_canary_size() -> None:
    """Argo Rollouts' weightutil.MaxTrafficWeight: setWeight 250 of 1000 is a quarter of the
    traffic, and trafficWeightToReplicas gives the canary ceil(250 x 4 / 1000) = 1 pod."""
    routing = {"maxTrafficWeight": 1000, "istio": {"virtualService": {"name": "web"}}}
    r = with_status(canary_rollout(steps=[{"setWeight": 250}, {"pause": {}}], trafficRouting=routing), 0)
    sets = [rs("web:1", 4), rs("web:2", 1, revision=2)]
    p = plan(observed(r, sets, SERVICES_SPLIT, istio(0)))
    (traffic,) = of(p, SetTraffic)
    assert (traffic.canary_weight, traffic.max_weight) == (250, 1000)
    assert not of(p, ScaleReplicaSet), "one canary pod is the quarter of 4"
    assert "canary weight 0/1000 -> 250/1000" in [e.message for e in of(p, Event)]
    there = RouterState(kind="istio", canary_weight=250, stable_weight=750, managed_routes=("primary",))
    done = plan(observed(r, sets, SERVICES_SPLIT, there))
    assert not of(done, SetTraffic) and done.status.current_step_index == 1
    # 25 of 100 read back is not 250 of 1000.
    assert of(plan(observed(r, sets, SERVICES_SPLIT, istio(25))), SetTraffic)


def test_a_full_weight_beside_weighted_additional_subsets_is_in_place_once_capped() -> None:
    """additionalSubsetNames keep their 10: setWeight 100 is carried as canary 90 / stable 0 /
    additional 10, and that read-back completes the step instead of being written again."""
    routing = {"istio": {"virtualService": {"name": "web"}}}
    r = with_status(canary_rollout(steps=[{"setWeight": 100}, {"pause": {}}], trafficRouting=routing), 0)
    sets = [rs("web:1", 4), rs("web:2", 4, revision=2)]
    capped = RouterState(
        kind="istio", canary_weight=90, stable_weight=0, additional_weight=10, managed_routes=("primary",)
    )
    done = plan(observed(r, sets, SERVICES_SPLIT, capped))
    assert not of(done, SetTraffic) and done.status.current_step_index == 1, done.actions
    # Canary 100 with the additional subsets still at 10 would sum to 110: not in place.
    from dataclasses import replace

    over = replace(capped, canary_weight=100)
    assert of(plan(observed(r, sets, SERVICES_SPLIT, over)), SetTraffic)


def test_mirror_route_is_set_with_its_step_kept_through_weights_and_removed_at_the_end() -> None:
    mirror = {"name": "mirror", "match": [{"method": {"exact": "GET"}}], "percentage": 20}
    steps = [{"setWeight": 10}, {"setMirrorRoute": mirror}, {"setWeight": 30}, {"pause": {}}]
    routing = {"managedRoutes": [{"name": "mirror"}], "istio": {"virtualService": {"name": "web"}}}
    wanted = MirrorRoute("mirror", '[{"method":{"exact":"GET"}}]', 20)
    sets = [rs("web:1", 4), rs("web:2", 2, revision=2)]

    def router(canary: int, mirrors: tuple[MirrorRoute, ...]) -> RouterState:
        return RouterState(
            kind="istio", canary_weight=canary, stable_weight=100 - canary, mirror_routes=mirrors
        )

    r = with_status(canary_rollout(steps=steps, trafficRouting=routing), 1)
    (traffic,) = of(plan(observed(r, sets, SERVICES_SPLIT, router(10, ()))), SetTraffic)
    assert (traffic.canary_weight, traffic.mirror_routes) == (10, (wanted,))
    assert plan(observed(r, sets, SERVICES_SPLIT, router(10, (wanted,)))).status.current_step_index == 2
    r = with_status(canary_rollout(steps=steps, trafficRouting=routing), 2)
    (traffic,) = of(plan(observed(r, sets, SERVICES_SPLIT, router(10, (wanted,)))), SetTraffic)
    assert (traffic.canary_weight, traffic.mirror_routes) == (30, (wanted,))
    # Aborted: all traffic to stable and the mirror route gone (Argo's RemoveManagedRoutes).
    aborted = with_status(canary_rollout(steps=steps, trafficRouting=routing), 3, abort=True)
    (traffic,) = of(plan(observed(aborted, sets, SERVICES_SPLIT, router(30, (wanted,)))), SetTraffic)
    assert (traffic.canary_weight, traffic.mirror_routes) == (0, ())
    # Promoted: 100% and no mirror route.
    done = with_status(canary_rollout(steps=steps, trafficRouting=routing), 4)
    full = [rs("web:1", 4), rs("web:2", 4, revision=2)]
    (traffic,) = of(plan(observed(done, full, SERVICES_SPLIT, router(30, (wanted,)))), SetTraffic)
    assert (traffic.canary_weight, traffic.mirror_routes) == (100, ())

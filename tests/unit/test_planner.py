"""The planner, table by table: given an observed cluster, the actions and status it decides."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.planner_fixtures import (
    NOW,
    V1,
    V2,
    bg_rollout,
    canary_rollout,
    istio,
    later,
    observed,
    rs,
    steps_hash,
)
from tidegate.api.rollout import Rollout
from tidegate.core.model import (
    CreateReplicaSet,
    Event,
    MarkScaleDown,
    Plan,
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
    assert p.status["stableRS"] == V1 and p.status["currentStepIndex"] == 2
    assert p.status["phase"] == "Progressing"
    ready = {c["type"]: c["status"] for c in p.status["conditions"]}["Ready"]
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
    assert p2.status["phase"] == "Healthy"
    assert {c["type"]: c["status"] for c in p2.status["conditions"]}["Ready"] == "True"
    assert p2.status["observedGeneration"] == 2


# --------------------------------------------------------------------------- canary steps


def test_new_revision_creates_the_canary_sized_to_the_first_weight() -> None:
    r = canary_rollout(status={"stableRS": V1, "currentPodHash": V1, "currentStepIndex": 2})
    p = plan(observed(r, [rs("web:1", 4)], SERVICES_ON_V1, istio()))
    creates = of(p, CreateReplicaSet)
    assert [(c.pod_hash, c.replicas, c.revision) for c in creates] == [(V2, 1, 2)]
    assert p.status["currentStepIndex"] == 0
    assert of(p, SetTraffic) == [], "no traffic before the canary pods are ready"
    assert "waiting for 0/1 canary pods ready" in p.status["message"]


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
    assert selected.status["currentStepIndex"] == 0


def test_step_completes_when_the_router_reads_back_the_weight() -> None:
    r = with_status(canary_rollout(), 0)
    p = plan(
        observed(
            r, [rs("web:1", 4), rs("web:2", 1, revision=2)], {"web-stable": V1, "web-canary": V2}, istio(25)
        )
    )
    assert of(p, SetTraffic) == []
    assert p.status["currentStepIndex"] == 1
    assert p.status["canary"]["weights"]["canary"]["weight"] == 25
    assert p.status["canary"]["weights"]["verified"] is True


SERVICES_SPLIT = {"web-stable": V1, "web-canary": V2}


def test_timed_pause_holds_then_ends_on_time() -> None:
    r = with_status(
        canary_rollout(steps=[{"setWeight": 25}, {"pause": {"duration": "60s"}}, {"setWeight": 50}]), 1
    )
    sets = [rs("web:1", 4), rs("web:2", 1, revision=2)]
    first = plan(observed(r, sets, SERVICES_SPLIT, istio(25)))
    assert first.status["phase"] == "Paused"
    assert first.status["pauseConditions"] == [
        {"reason": "CanaryPauseStep", "startTime": "2026-01-01T12:00:00Z"}
    ]
    assert first.requeue_after == pytest.approx(60)
    assert "paused at step 2/3 for 1m00s more" in first.status["message"]
    # An operator restart 30 s later: the start time in status keeps the pause on schedule.
    resumed = r.model_copy(update={"status": type(r.status).model_validate(first.status)})
    mid = plan(observed(resumed, sets, SERVICES_SPLIT, istio(25), now=later(30)))
    assert mid.status["currentStepIndex"] == 1 and mid.requeue_after == pytest.approx(30)
    done = plan(observed(resumed, sets, SERVICES_SPLIT, istio(25), now=later(60)))
    assert done.status["currentStepIndex"] == 2
    assert done.status["pauseConditions"] == []


def test_indefinite_pause_waits_for_promote() -> None:
    r = with_status(canary_rollout(), 1)
    sets = [rs("web:1", 4), rs("web:2", 1, revision=2)]
    p = plan(observed(r, sets, SERVICES_SPLIT, istio(25)))
    assert (p.status["phase"] == "Paused" and p.requeue_after is None) or p.requeue_after > 60
    assert p.status["controllerPause"] is True
    # `tidegate promote` clears the pause conditions; the next pass moves on.
    promoted = with_status(canary_rollout(), 1, controllerPause=True, pauseConditions=[])
    p2 = plan(observed(promoted, sets, SERVICES_SPLIT, istio(25)))
    assert p2.status["currentStepIndex"] == 2


def test_after_the_last_step_the_canary_is_scaled_up_before_it_takes_all_traffic() -> None:
    r = with_status(canary_rollout(), 2)
    small = plan(observed(r, [rs("web:1", 4), rs("web:2", 1, revision=2)], SERVICES_SPLIT, istio(25)))
    assert of(small, ScaleReplicaSet) == [ScaleReplicaSet(f"web-{V2}", 4)]
    assert of(small, SetTraffic) == []
    full = plan(observed(r, [rs("web:1", 4), rs("web:2", 4, revision=2)], SERVICES_SPLIT, istio(25)))
    assert of(full, SetTraffic) == [SetTraffic(100, V1, V2, ())]
    moved = plan(observed(r, [rs("web:1", 4), rs("web:2", 4, revision=2)], SERVICES_SPLIT, istio(100)))
    assert moved.status["stableRS"] == V2


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
    assert p4.status["phase"] == "Healthy"


def test_abort_sends_all_traffic_to_stable_at_once_and_scales_the_canary_down_later() -> None:
    r = with_status(canary_rollout(abortScaleDownDelaySeconds=30), 1, abort=True)
    sets = [rs("web:1", 4), rs("web:2", 2, revision=2)]
    p = plan(observed(r, sets, SERVICES_SPLIT, istio(50, ("canary-header",))))
    assert of(p, SetTraffic) == [SetTraffic(0, V1, V2, ())]
    assert of(p, ScaleReplicaSet) == []
    assert p.status["phase"] == "Degraded" and p.status["abortedAt"] == "2026-01-01T12:00:00Z"
    assert any(isinstance(a, Event) and a.reason == "RolloutAborted" for a in p.actions)
    aborted = with_status(
        canary_rollout(abortScaleDownDelaySeconds=30), 1, abort=True, abortedAt="2026-01-01T12:00:00Z"
    )
    waiting = plan(observed(aborted, sets, SERVICES_SPLIT, istio(0), now=later(10)))
    assert of(waiting, ScaleReplicaSet) == [] and waiting.requeue_after == pytest.approx(20)
    gone = plan(observed(aborted, sets, SERVICES_SPLIT, istio(0), now=later(30)))
    assert of(gone, ScaleReplicaSet) == [ScaleReplicaSet(f"web-{V2}", 0)]


def test_updating_back_to_the_stable_template_is_immediate() -> None:
    r = canary_rollout(image="web:1", status={"stableRS": V1, "currentPodHash": V2, "currentStepIndex": 1})
    sets = [rs("web:1", 4), rs("web:2", 2, revision=2)]
    p = plan(observed(r, sets, SERVICES_SPLIT, istio(50)))
    assert of(p, SetServiceSelector) == [SetServiceSelector("web-canary", V1)]
    p2 = plan(observed(r, sets, SERVICES_ON_V1, istio(50)))
    assert of(p2, SetTraffic) == [SetTraffic(0, V1, V1, ())]
    assert p2.status["currentStepIndex"] == 2


def test_promote_full_skips_the_remaining_steps() -> None:
    r = with_status(
        canary_rollout(steps=[{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]),
        1,
        promoteFull=True,
    )
    p = plan(observed(r, [rs("web:1", 4), rs("web:2", 1, revision=2)], SERVICES_SPLIT, istio(10)))
    assert of(p, ScaleReplicaSet) == [ScaleReplicaSet(f"web-{V2}", 4)]
    assert p.status["currentStepIndex"] == 4


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
    assert done.status["currentStepIndex"] == 2


def test_invalid_spec_changes_nothing() -> None:
    bad = canary_rollout(steps=[{"setHeaderRoute": {"name": "nope", "match": []}}])
    p = plan(observed(bad, [rs("web:1", 4)], SERVICES_ON_V1, istio()))
    assert kinds(p) == []
    assert p.status["phase"] == "Degraded"
    invalid = {c["type"]: c for c in p.status["conditions"]}["InvalidSpec"]
    assert invalid["status"] == "True" and "managedRoutes" in invalid["message"]


def test_missing_service_is_a_condition_not_a_crash() -> None:
    r = with_status(canary_rollout(), 0)
    obs = observed(r, [rs("web:1", 4)], SERVICES_ON_V1, istio())
    from tidegate.core.model import ServiceInfo

    obs = type(obs)(**{**obs.__dict__, "services": {"web-stable": ServiceInfo("web-stable", False)}})
    p = plan(obs)
    assert kinds(p) == [] and "Service web-stable not found" in p.status["message"]
    assert p.requeue_after is not None


def test_progress_deadline_marks_degraded_and_can_abort() -> None:
    steps = [{"setWeight": 25}, {"pause": {}}]
    base = dict(progressAt="2026-01-01T11:00:00Z", availableReplicas=4, updatedReplicas=1)
    r = with_status(canary_rollout(steps=steps), 0, **base)
    r = r.model_copy(update={"spec": r.spec.model_copy(update={"progress_deadline_seconds": 60})})
    stuck = [rs("web:1", 4), rs("web:2", 1, available=0, revision=2)]
    p = plan(observed(r, stuck, SERVICES_ON_V1, istio()))
    assert p.status["phase"] == "Degraded"
    cond = {c["type"]: c for c in p.status["conditions"]}["Progressing"]
    assert (cond["status"], cond["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert not p.status.get("abort")
    ra = r.model_copy(update={"spec": r.spec.model_copy(update={"progress_deadline_abort": True})})
    assert plan(observed(ra, stuck, SERVICES_ON_V1, istio())).status["abort"] is True


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

    r = canary_rollout(router=False)
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
    assert p.status["stableRS"] == V1


def test_blue_green_preview_then_pause_then_switch_only_when_full() -> None:
    r = bg_rollout(autoPromotionEnabled=False, previewReplicaCount=1, status=bg_status())
    sets = [rs("web:1", 3), rs("web:2", 1, revision=2)]
    p = plan(observed(r, sets, BG_SERVICES))
    assert of(p, SetServiceSelector) == [SetServiceSelector("web-preview", V2)]
    p2 = plan(observed(r, sets, {"web-active": V1, "web-preview": V2}))
    assert p2.status["phase"] == "Paused"
    assert [c["reason"] for c in p2.status["pauseConditions"]] == ["BlueGreenPause"]
    promoted = bg_rollout(
        autoPromotionEnabled=False,
        previewReplicaCount=1,
        status=bg_status(controllerPause=True, pauseConditions=[]),
    )
    p3 = plan(observed(promoted, sets, {"web-active": V1, "web-preview": V2}))
    assert p3.status["blueGreen"]["promoting"] is True
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


def test_blue_green_abort_keeps_active_on_stable() -> None:
    r = bg_rollout(status=bg_status(abort=True), abortScaleDownDelaySeconds=0)
    sets = [rs("web:1", 3), rs("web:2", 3, revision=2)]
    p = plan(observed(r, sets, {"web-active": V1, "web-preview": V2}))
    assert SetServiceSelector("web-active", V2) not in of(p, SetServiceSelector)
    assert SetServiceSelector("web-preview", V1) in of(p, SetServiceSelector)
    assert p.status["phase"] == "Degraded"
    assert ScaleReplicaSet(f"web-{V2}", 0) in of(p, ScaleReplicaSet)


def test_blue_green_auto_promotion_seconds() -> None:
    r = bg_rollout(autoPromotionSeconds=30, status=bg_status(stepStartedAt="2026-01-01T12:00:00Z"))
    sets = [rs("web:1", 3), rs("web:2", 3, revision=2)]
    early = plan(observed(r, sets, {"web-active": V1, "web-preview": V2}, now=later(10)))
    assert early.requeue_after == pytest.approx(20) and "automatically" in early.status["message"]
    due = plan(observed(r, sets, {"web-active": V1, "web-preview": V2}, now=later(30)))
    assert due.status["blueGreen"]["promoting"] is True


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
    assert p.status["currentStepIndex"] == 0


def _settled(r: Rollout, obs_of: Any, seconds: float) -> dict[str, Any]:
    """Plan, feed the status back as the API server would store it, plan again later."""
    from tidegate.k8s.execute import status_diff

    first = plan(obs_of(r, NOW))
    stored = r.model_copy(update={"status": type(r.status).model_validate(first.status)})
    again = plan(obs_of(stored, later(seconds)))
    return status_diff(first.status, again.status)


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
    assert p.status["currentStepIndex"] == index
    assert bool(p.status.get("abort")) is abort
    if abort:
        assert "metric m" in p.status["message"] and p.status["abortMessage"].startswith(
            f"analysis run {name}"
        )
    assert (p.status["phase"] == "Paused") is paused
    if paused:
        assert [c["reason"] for c in p.status["pauseConditions"]] == ["InconclusiveAnalysisRun"]


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
    assert not p.status["blueGreen"].get("promoting")
    failed = plan(_with_runs(observed(r, sets, services), _run(f"web-{V2}-pre-0", "Failed", "pre")))
    assert failed.status["abort"] is True
    assert SetServiceSelector("web-active", V2) not in of(failed, SetServiceSelector)
    passed = plan(_with_runs(observed(r, sets, services), _run(f"web-{V2}-pre-0", "Successful", "pre")))
    assert passed.status["blueGreen"]["promoting"] is True


def test_blue_green_post_promotion_failure_switches_back() -> None:
    r = bg_rollout(status=bg_status(blueGreen={"promoting": True}), postPromotionAnalysis=ANALYSIS)
    sets = [rs("web:1", 3), rs("web:2", 3, revision=2)]
    switched = {"web-active": V2, "web-preview": V2}
    running = plan(_with_runs(observed(r, sets, switched), _run(f"web-{V2}-post-0", "Running", "post")))
    assert running.status["stableRS"] == V1, "not stable until the post-promotion analysis passes"
    assert of(running, ScaleReplicaSet) == [], "the previous version stays scaled up"
    failed = plan(_with_runs(observed(r, sets, switched), _run(f"web-{V2}-post-0", "Failed", "post")))
    assert failed.status["abort"] is True
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
    assert p.status["phase"] == "Healthy"
    assert sorted(a.name for a in of(p, DeleteReplicaSet)) == sorted([f"web-{V1}", f"web-{V2}"])

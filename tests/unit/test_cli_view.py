"""The CLI's live view rendered into a fixed-width buffer, and the pure decisions behind
the control commands (promote, abort, retry, set image, undo), from hand-made objects."""

from __future__ import annotations

import copy
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console

from tidegate.cli import control
from tidegate.cli.view import Snapshot, describe_step, render, step_of, weight_bar
from tidegate.core.hashing import HASH_LABEL, pod_template_hash

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
Obj = dict[str, Any]


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


STEPS: list[Obj] = [
    {"setWeight": 10},
    {"pause": {"duration": "30s"}},
    {"setCanaryScale": {"replicas": 2}},
    {
        "setHeaderRoute": {
            "name": "canary-header",
            "match": [{"headerName": "x-canary", "headerValue": {"exact": "true"}}],
        }
    },
    {"analysis": {"templates": [{"templateName": "success-rate"}, {"templateName": "latency"}]}},
    {"setWeight": 50},
    {"pause": {}},
]


def canary(index: int = 1, **status: Any) -> Obj:
    return {
        "metadata": {"name": "web", "namespace": "shop", "generation": 3, "creationTimestamp": ago(3600)},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "example/web:2"}]},
            },
            "strategy": {"canary": {"steps": copy.deepcopy(STEPS)}},
        },
        "status": {
            "observedGeneration": 3,
            "phase": "Paused",
            "message": "paused at step 2/7",
            "currentPodHash": "abc",
            "stableRS": "def",
            "currentStepIndex": index,
            "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": ago(12)}],
            "controllerPause": True,
            "replicas": 5,
            "updatedReplicas": 1,
            "readyReplicas": 5,
            "availableReplicas": 5,
            "canary": {"weights": {"canary": {"weight": 10}, "stable": {"weight": 90}, "verified": True}},
            **status,
        },
    }


def replica_set(name: str, pod_hash: str, revision: int, replicas: int, image: str, ready: int = -1) -> Obj:
    ready = replicas if ready < 0 else ready
    return {
        "metadata": {
            "name": name,
            "labels": {"app": "web", HASH_LABEL: pod_hash, "rollout.tidegate.io/name": "web"},
            "annotations": {"rollout.tidegate.io/revision": str(revision)},
            "creationTimestamp": ago(40 * revision),
        },
        "spec": {
            "replicas": replicas,
            "template": {
                "metadata": {"labels": {"app": "web", HASH_LABEL: pod_hash}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
        "status": {"replicas": replicas, "readyReplicas": ready, "availableReplicas": ready},
    }


def pod(name: str, pod_hash: str, ready: bool = True) -> Obj:
    return {
        "metadata": {
            "name": name,
            "labels": {"app": "web", HASH_LABEL: pod_hash},
            "creationTimestamp": ago(39),
        },
        "spec": {"containers": [{"name": "app"}]},
        "status": {"phase": "Running", "containerStatuses": [{"ready": ready, "restartCount": 0}]},
    }


SETS = [
    replica_set("web-def", "def", 1, 4, "example/web:1"),
    replica_set("web-abc", "abc", 2, 1, "example/web:2"),
]


def text(snap: Snapshot, now: datetime = NOW) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=100, force_terminal=False, color_system=None).print(render(snap, now))
    return buffer.getvalue()


def line_with(output: str, needle: str) -> str:
    lines = [line for line in output.splitlines() if needle in line]
    assert len(lines) == 1, f"{needle!r} in {len(lines)} lines of:\n{output}"
    return lines[0]


# ---------------------------------------------------------------------------
# The view


def test_the_current_step_is_marked_and_earlier_ones_done() -> None:
    out = text(Snapshot(canary(index=1), SETS, name="web", namespace="shop"))
    assert "▶" in line_with(out, "2. pause 30s")
    assert "✔" in line_with(out, "1. setWeight 10")
    for later in ("3. setCanaryScale replicas=2", "6. setWeight 50", "7. pause (until promoted)"):
        assert "▶" not in line_with(out, later) and "✔" not in line_with(out, later)
    assert line_with(out, "Step:").split() == ["Step:", "2/7"]
    assert "4. setHeaderRoute canary-header (x-canary=true)" in out
    assert "5. analysis success-rate, latency" in out


def test_the_marker_moves_with_the_step_index() -> None:
    out = text(Snapshot(canary(index=5, pauseConditions=[], controllerPause=False), SETS))
    assert "▶" in line_with(out, "6. setWeight 50")
    assert out.count("▶") == 1
    assert "✔" in line_with(out, "5. analysis")


def test_a_fully_promoted_canary_has_every_step_done_and_no_marker() -> None:
    healthy = canary(
        index=7,
        phase="Healthy",
        message="healthy",
        stableRS="abc",
        pauseConditions=[],
        controllerPause=False,
        canary={"weights": {"canary": {"weight": 0}, "stable": {"weight": 100}, "verified": None}},
    )
    out = text(Snapshot(healthy, [replica_set("web-abc", "abc", 2, 4, "example/web:2")]))
    assert "▶" not in out
    assert out.count("✔") >= 1 + len(STEPS)  # the phase icon and every step
    assert "7/7  (complete)" in out
    assert "Pause:" not in out


def test_the_weight_bar_and_percentages_read_back_from_status() -> None:
    out = text(Snapshot(canary(), SETS))
    weight = line_with(out, "Weight:")
    assert "██░░░░░░░░░░░░░░░░░░" in weight  # 10% of 20 cells
    assert "10% canary / 90% stable (verified)" in weight
    unverified = canary(canary={"weights": {"canary": {"weight": 50}, "verified": False}})
    weight = line_with(text(Snapshot(unverified, SETS)), "Weight:")
    assert "██████████░░░░░░░░░░" in weight and "50% canary / 50% stable" in weight
    assert "NOT verified" in weight
    no_router = canary(index=5, canary={"weights": {"canary": {"weight": 25}, "verified": None}})
    weight = line_with(text(Snapshot(no_router, SETS)), "Weight:")
    assert "25% canary" in weight and "by pod count" in weight and "step target 50%" in weight


def test_a_weight_out_of_max_traffic_weight_is_shown_as_a_percentage_too() -> None:
    doc = canary(canary={"weights": {"canary": {"weight": 250}, "stable": {"weight": 750}, "verified": True}})
    doc["spec"]["strategy"]["canary"]["trafficRouting"] = {"maxTrafficWeight": 1000}
    weight = line_with(text(Snapshot(doc, SETS)), "Weight:")
    assert "█████░░░░░░░░░░░░░░░" in weight
    assert "25% canary / 75% stable (250/1000) (verified)" in weight


@pytest.mark.parametrize(("weight", "cells"), [(0, 0), (1, 0), (3, 1), (50, 10), (99, 20), (100, 20)])
def test_weight_bar_cells(weight: int, cells: int) -> None:
    bar = weight_bar(weight)
    assert len(bar) == 20 and bar.count("█") == cells


def test_revisions_pods_and_counts() -> None:
    pods = [pod("web-abc-x1", "abc"), pod("web-def-y1", "def", ready=False)]
    out = text(Snapshot(canary(), SETS, pods=pods))
    assert "desired 4  current 5  updated 1  ready 5  available 5" in out
    canary_row = line_with(out, "web-abc ").split()
    assert canary_row[:7] == ["2", "web-abc", "canary", "1", "1", "1", "80s"]
    stable_row = line_with(out, "web-def ").split()
    assert stable_row[:6] == ["1", "web-def", "stable", "4", "4", "4"]
    assert line_with(out, "web-abc-x1").split()[:4] == ["web-abc-x1", "2", "Running", "1/1"]
    assert line_with(out, "web-def-y1").split()[:4] == ["web-def-y1", "1", "Running", "0/1"]
    assert "example/web:2 (canary)" in out and "example/web:1 (stable)" in out


def test_pause_countdown_for_a_timed_pause_and_an_indefinite_one() -> None:
    out = text(Snapshot(canary(index=1), SETS))
    assert line_with(out, "Pause:").split(None, 1)[1].strip() == "18s left of 30s"
    later = text(Snapshot(canary(index=1), SETS), NOW + timedelta(seconds=10))
    assert "8s left of 30s" in later
    indefinite = canary(index=6, pauseConditions=[{"reason": "CanaryPauseStep", "startTime": ago(600)}])
    assert "until promoted" in line_with(text(Snapshot(indefinite, SETS)), "Pause:")
    by_spec = canary(index=2, pauseConditions=[], controllerPause=False)
    by_spec["spec"]["paused"] = True
    assert "spec.paused" in line_with(text(Snapshot(by_spec, SETS)), "Pause:")


def test_analysis_runs_show_the_latest_measurement_per_metric() -> None:
    run = {
        "metadata": {"name": "web-abc-4", "creationTimestamp": ago(20)},
        "status": {
            "phase": "Running",
            "metricResults": [
                {
                    "name": "success-rate",
                    "phase": "Running",
                    "measurements": [
                        {"phase": "Successful", "value": "0.91"},
                        {"phase": "Successful", "value": "0.99"},
                    ],
                },
                {"name": "latency", "phase": "Pending"},
            ],
        },
    }
    out = text(Snapshot(canary(index=4, pauseConditions=[]), SETS, analysis_runs=[run]))
    row = line_with(out, "web-abc-4")
    assert "Running" in row and "success-rate=0.99 (Running)" in row and "latency=- (Pending)" in row


def test_blue_green_shows_active_and_preview_selectors() -> None:
    bg = canary()
    bg["spec"]["strategy"] = {
        "blueGreen": {
            "activeService": "web-active",
            "previewService": "web-preview",
            "autoPromotionEnabled": False,
        }
    }
    bg["status"] = {
        "observedGeneration": 3,
        "phase": "Paused",
        "message": "preview ready; paused until promoted",
        "currentPodHash": "abc",
        "stableRS": "def",
        "pauseConditions": [{"reason": "BlueGreenPause", "startTime": ago(5)}],
        "blueGreen": {"activeSelector": "def", "previewSelector": "abc"},
    }
    out = text(Snapshot(bg, SETS))
    assert "web-active -> def (revision 1)" in line_with(out, "Active:")
    assert "web-preview -> abc (revision 2)" in line_with(out, "Preview:")
    assert "until promoted" in line_with(out, "Pause:")
    assert "Steps:" not in out and "Weight:" not in out
    assert "active" in line_with(out, "web-def ") and "preview" in line_with(out, "web-abc ")


def test_blue_green_auto_promotion_countdown() -> None:
    bg = canary()
    bg["spec"]["strategy"] = {"blueGreen": {"activeService": "web-active", "autoPromotionSeconds": 60}}
    bg["status"] = {
        "observedGeneration": 3,
        "phase": "Progressing",
        "currentPodHash": "abc",
        "stableRS": "def",
        "stepStartedAt": ago(15),
        "blueGreen": {"activeSelector": "def"},
    }
    assert "promoting automatically in 45s" in text(Snapshot(bg, SETS))


def test_aborted_and_stale_status_are_called_out() -> None:
    aborted = canary(phase="Degraded", abort=True, pauseConditions=[], message="rollout aborted")
    assert "(aborted)" in line_with(text(Snapshot(aborted, SETS)), "Status:")
    stale = canary()
    stale["metadata"]["generation"] = 4
    assert "status is of generation 3, spec is generation 4" in text(Snapshot(stale, SETS))


def test_a_missing_rollout_renders_a_line() -> None:
    assert "rollout web not found in namespace shop" in text(Snapshot(None, name="web", namespace="shop"))


@pytest.mark.parametrize(
    ("step", "words"),
    [
        ({"setWeight": 10}, "setWeight 10"),
        ({"pause": {"duration": "30s"}}, "pause 30s"),
        ({"pause": {"duration": 45}}, "pause 45"),
        ({"pause": {}}, "pause (until promoted)"),
        ({"setCanaryScale": {"weight": 20}}, "setCanaryScale weight=20%"),
        ({"setCanaryScale": {"matchTrafficWeight": True}}, "setCanaryScale matchTrafficWeight"),
        ({"setHeaderRoute": {"name": "h"}}, "setHeaderRoute h (remove)"),
        (
            {
                "setHeaderRoute": {
                    "name": "h",
                    "match": [
                        {"headerName": "x-canary", "headerValue": {"exact": "true"}},
                        {"queryParamName": "canary", "queryParamValue": {"prefix": "beta"}},
                    ],
                }
            },
            "setHeaderRoute h (x-canary=true, ?canary^=beta)",
        ),
        ({"analysis": {"templates": [{"templateName": "a"}]}}, "analysis a"),
    ],
)
def test_describe_step(step: Obj, words: str) -> None:
    assert describe_step(step) == words


def test_step_counts_from_one_and_ends_at_n() -> None:
    assert step_of(canary(index=0)) == "1/7"
    assert step_of(canary(index=6)) == "7/7"
    assert step_of(canary(index=7)) == "7/7"


# ---------------------------------------------------------------------------
# Decisions behind the control commands


def test_promote_at_a_pause_step_clears_the_pause_conditions() -> None:
    d = control.decide_promote(canary(index=1), full=False)
    assert d.status == {"pauseConditions": []} and d.spec == {}
    assert d.message == "rollout web promoted: step 2/7 -> 3/7"


def test_promote_of_a_canary_not_paused_asks_the_operator_to_skip_the_current_step() -> None:
    # An analysis step in progress: no pause to clear, so the intent names the step.
    d = control.decide_promote(canary(index=4, pauseConditions=[], controllerPause=False), full=False)
    assert d.status == {"skipStep": 4} and d.spec == {}
    assert d.message == "rollout web promoted: step 5/7 (analysis success-rate, latency) skipped -> 6/7"
    assert "currentStepIndex" not in d.status and "stepStartedAt" not in d.status


def test_promote_refuses_a_step_already_asked_to_be_skipped() -> None:
    r = canary(index=4, pauseConditions=[], controllerPause=False, skipStep=4)
    with pytest.raises(control.Refusal, match="step 5/7 is already promoted"):
        control.decide_promote(r, full=False)
    # A skipStep left from an earlier step does not stop promoting this one.
    r["status"]["skipStep"] = 3
    assert control.decide_promote(r, full=False).status == {"skipStep": 4}


def test_promote_of_a_timed_pause_clears_its_pause_condition() -> None:
    r = canary(index=1)  # step 2/7 is pause 30s
    d = control.decide_promote(r, full=False)
    assert d.status == {"pauseConditions": []}
    assert d.message == "rollout web promoted: step 2/7 -> 3/7"


def test_promote_unpauses_spec_paused_without_skipping() -> None:
    r = canary(index=2, pauseConditions=[], controllerPause=False)
    r["spec"]["paused"] = True
    d = control.decide_promote(r, full=False)
    assert d.spec == {"paused": False} and d.status == {}


def test_promote_full_skips_the_remaining_steps() -> None:
    d = control.decide_promote(canary(index=1), full=True)
    assert d.status == {"pauseConditions": [], "promoteFull": True}
    assert "full promotion" in d.message


def test_promote_of_the_last_pause_step_says_promotion() -> None:
    r = canary(index=6, pauseConditions=[{"reason": "CanaryPauseStep", "startTime": ago(1)}])
    assert control.decide_promote(r, full=False).message.endswith("step 7/7 -> promotion")


@pytest.mark.parametrize(
    ("status", "words"),
    [
        ({"phase": "Healthy", "stableRS": "abc", "pauseConditions": []}, "fully promoted"),
        ({"phase": "Degraded", "abort": True}, "tidegate retry web"),
        ({"currentStepIndex": 7, "pauseConditions": [], "controllerPause": False}, "past its last step"),
    ],
)
def test_promote_refusals(status: Obj, words: str) -> None:
    with pytest.raises(control.Refusal, match=words):
        control.decide_promote(canary(**status), full=False)


def test_promote_blue_green() -> None:
    bg = canary()
    bg["spec"]["strategy"] = {"blueGreen": {"activeService": "a", "autoPromotionEnabled": False}}
    bg["status"]["pauseConditions"] = [{"reason": "BlueGreenPause", "startTime": ago(3)}]
    d = control.decide_promote(bg, full=False)
    assert (
        d.status == {"pauseConditions": []}
        and d.message == "rollout web promoted: preview abc becomes active once it runs at full size"
    )
    bg["status"]["pauseConditions"] = []
    assert control.decide_promote(bg, full=False).status == {"promoteFull": True}
    bg["status"]["blueGreen"] = {"promoting": True}
    with pytest.raises(control.Refusal, match="already promoting"):
        control.decide_promote(bg, full=False)


def test_abort_and_its_refusals() -> None:
    d = control.decide_abort(canary())
    assert d.status == {"abort": True} and "stable revision def" in d.message
    with pytest.raises(control.Refusal, match="already aborted"):
        control.decide_abort(canary(abort=True))
    with pytest.raises(control.Refusal, match="nothing to abort"):
        control.decide_abort(canary(phase="Healthy", stableRS="abc"))


def test_retry_writes_only_the_intent_abort_false() -> None:
    d = control.decide_retry(canary(abort=True, abortedAt=ago(60), abortedRevision="abc"))
    # The operator resets the step index, pauses, analysis round and clocks itself.
    assert d.status == {"abort": False} and d.spec == {} and d.json_patch == []
    assert d.message == "rollout web retried: steps start again at 1/7, with a new round of analysis runs"
    with pytest.raises(control.Refusal, match="not aborted"):
        control.decide_retry(canary())
    bg = canary(abort=True)
    bg["spec"]["strategy"] = {"blueGreen": {"activeService": "a"}}
    d = control.decide_retry(bg)
    assert d.status == {"abort": False} and d.message == "rollout web retried: the preview starts again"


def test_pause_and_resume() -> None:
    assert control.decide_pause(canary(pauseConditions=[])).spec == {"paused": True}
    r = canary(pauseConditions=[])
    r["spec"]["paused"] = True
    assert control.decide_pause(r).spec == {}
    d = control.decide_resume(r)
    assert d.spec == {"paused": False} and d.status == {}
    assert d.message == "rollout web resumed (spec.paused: false)"
    assert "nothing to resume" in control.decide_resume(canary(pauseConditions=[])).message


def test_resume_never_ends_a_pause_step() -> None:
    # The reported bug: `pause: {duration: 1h}` and resume (twice) promoted fully.
    r = canary(index=1)
    r["spec"]["strategy"]["canary"]["steps"][1] = {"pause": {"duration": "1h"}}
    for _ in range(2):
        d = control.decide_resume(r)
        assert d.status == {} and d.spec == {}
        assert d.message == (
            "rollout web is not paused (spec.paused is not set): nothing to resume; it waits in "
            "a pause step at step 2/7 (pause 1h): `tidegate promote web` ends a pause"
        )
    # Paused both ways: resume lifts spec.paused only, and says the pause step remains.
    r["spec"]["paused"] = True
    d = control.decide_resume(r)
    assert d.spec == {"paused": False} and d.status == {}
    assert "resumed (spec.paused: false); it waits in a pause step" in d.message
    inconclusive = canary(
        index=4, pauseConditions=[{"reason": "InconclusiveAnalysisRun", "startTime": ago(5)}]
    )
    assert "it waits in an inconclusive analysis at step 5/7" in control.decide_resume(inconclusive).message
    bg = canary(pauseConditions=[{"reason": "BlueGreenPause", "startTime": ago(5)}])
    bg["spec"]["strategy"] = {"blueGreen": {"activeService": "a", "autoPromotionEnabled": False}}
    assert (
        "it waits in the blue-green preview pause: `tidegate promote web`"
        in control.decide_resume(bg).message
    )


def test_set_image_by_container_name_and_unknown_names() -> None:
    r = canary()
    r["spec"]["template"]["spec"]["initContainers"] = [{"name": "init", "image": "busybox:1"}]
    d = control.decide_set_image(r, {"app": "example/web:3", "init": "busybox:2"})
    assert d.json_patch == [
        {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "example/web:3"},
        {"op": "replace", "path": "/spec/template/spec/initContainers/0/image", "value": "busybox:2"},
    ]
    with pytest.raises(control.Refusal, match="no container web; its containers: app, init"):
        control.decide_set_image(r, {"web": "x"})


def _defaulted(template: Obj, pod_hash: str) -> Obj:
    """The template as the API server stores it in a ReplicaSet: hash label plus defaults."""
    t = copy.deepcopy(template)
    t["metadata"]["labels"][HASH_LABEL] = pod_hash
    t["metadata"]["creationTimestamp"] = None
    t["spec"].update(restartPolicy="Always", dnsPolicy="ClusterFirst", securityContext={},
                     schedulerName="default-scheduler", terminationGracePeriodSeconds=30)  # fmt: skip
    for c in t["spec"]["containers"]:
        c.update(imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/termination-log",
                 terminationMessagePolicy="File", resources={})  # fmt: skip
    return t


def test_undo_restores_the_template_the_previous_revision_was_made_from() -> None:
    r = canary()
    v1: Obj = {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "example/web:1"}]},
    }
    # The user wrote imagePullPolicy explicitly in this one: only some defaults are the server's.
    v1["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    h1, h2 = pod_template_hash(v1), pod_template_hash(r["spec"]["template"])
    rs1 = replica_set("web-1", h1, 1, 4, "example/web:1")
    rs1["spec"]["template"] = _defaulted(v1, h1)
    rs2 = replica_set("web-2", h2, 2, 1, "example/web:2")
    d = control.decide_undo(r, [rs1, rs2], None)
    assert d.message == "rollout web rolled back to revision 1"
    assert d.json_patch == [{"op": "replace", "path": "/spec/template", "value": v1}]
    assert pod_template_hash(d.json_patch[0]["value"]) == h1
    with pytest.raises(control.Refusal, match="no revision 5"):
        control.decide_undo(r, [rs1, rs2], 5)
    with pytest.raises(control.Refusal, match="already runs the template of revision 2"):
        control.decide_undo(r, [rs1, rs2], 2)


def test_promote_full_of_an_aborted_rollout_asks_for_full_promotion_and_plain_promote_refuses() -> None:
    """As Argo Rollouts' `promote --full`: the operator lifts the abort (core/toolkit.py)."""
    r = canary(index=1, abort=True, abortedAt="2026-01-01T00:00:00Z")
    d = control.decide_promote(r, full=True)
    assert d.status == {"promoteFull": True}
    with pytest.raises(control.Refusal, match="promote --full"):
        control.decide_promote(r, full=False)


def test_the_routes_the_router_manages_are_listed_under_the_weight() -> None:
    routed = canary(
        canary={
            "weights": {"canary": {"weight": 5}, "verified": True},
            "managedRoutes": ["HTTPRoute/api-gateway/primary", "GRPCRoute/api-grpc/rules[0]"],
        }
    )
    out = text(Snapshot(routed, SETS))
    assert "5% canary / 95% stable (verified)" in line_with(out, "Weight:")
    assert line_with(out, "Routes:").split("Routes:")[1].strip() == (
        "HTTPRoute/api-gateway/primary, GRPCRoute/api-grpc/rules[0]"
    )
    assert "Routes:" not in text(Snapshot(canary(), SETS)), "no line without a router"

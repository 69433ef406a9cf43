"""core.simulate: the offline timeline of a Rollout, table by table."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.planner_fixtures import V1, V2, canary_rollout, observed, rs, steps_hash
from tidegate.api.analysis import AnalysisTemplateSpec, Metric
from tidegate.api.rollout import Rollout, RolloutAnalysis, RolloutStatus
from tidegate.core.model import CreateReplicaSet, ReplicaSetInfo, ScaleReplicaSet
from tidegate.core.planner import plan
from tidegate.core.simulate import analysis_window, metric_window, simulate, template_key


def rollout(strategy: dict[str, Any], replicas: int = 5, **spec: Any) -> Rollout:
    return Rollout.model_validate(
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}},
                "strategy": strategy,
                **spec,
            },
        }
    )


def istio_canary(steps: list[dict[str, Any]], **canary: Any) -> dict[str, Any]:
    return {
        "canary": {
            "stableService": "web-stable",
            "canaryService": "web-canary",
            "trafficRouting": {
                "managedRoutes": [{"name": "hdr"}],
                "istio": {"virtualService": {"name": "web"}},
            },
            "steps": steps,
            **canary,
        }
    }


def template(*metrics: dict[str, Any], args: list[dict[str, Any]] | None = None) -> AnalysisTemplateSpec:
    return AnalysisTemplateSpec.model_validate(
        {
            "args": args or [],
            "metrics": [{"provider": {"web": {"url": "http://x"}}, **m} for m in metrics],
        }
    )


def table(
    steps_rollout: Rollout, templates: dict[str, AnalysisTemplateSpec] | None = None
) -> list[tuple[Any, ...]]:
    """(action, weight, canary pods, stable pods, at, wait) per row."""
    timeline = simulate(steps_rollout, templates or {})
    return [(r.action, r.weight, r.canary_pods, r.stable_pods, r.at, r.wait) for r in timeline.rows]


# --------------------------------------------------------------------------- canary with a router


def test_weights_pods_and_times_follow_the_steps() -> None:
    r = rollout(
        istio_canary(
            [
                {"setWeight": 10},
                {"pause": {"duration": "30s"}},
                {"setCanaryScale": {"replicas": 2}},
                {"setWeight": 50},
                {"setCanaryScale": {"weight": 60}},
                {"pause": {"duration": "1m"}},
                {"setCanaryScale": {"matchTrafficWeight": True}},
                {"pause": {}},
                {"setWeight": 80},
            ]
        )
    )
    assert table(r) == [
        ("setWeight 10", 10, 1, 5, 0.0, 0.0),
        ("pause 30s", 10, 1, 5, 0.0, 30.0),
        ("setCanaryScale replicas=2", 10, 2, 5, 30.0, 0.0),
        ("setWeight 50", 50, 2, 5, 30.0, 0.0),  # setCanaryScale holds whatever the weight
        ("setCanaryScale weight=60", 50, 3, 5, 30.0, 0.0),
        ("pause 1m", 50, 3, 5, 30.0, 60.0),
        ("setCanaryScale matchTrafficWeight", 50, 3, 5, 90.0, 0.0),
        ("pause (waits for promote)", 50, 3, 5, 90.0, 0.0),
        ("setWeight 80", 80, 4, 5, 90.0, 0.0),
        ("promote: all traffic to the new version", 100, 5, 5, 90.0, 0.0),
        ("scale down the previous version", 100, 5, 0, 120.0, 0.0),  # scaleDownDelaySeconds: 30 s
    ]
    timeline = simulate(r, {})
    assert timeline.total == 90.0
    assert timeline.manual_promotions == 1
    assert timeline.traffic_router == "istio"
    assert [r.waits_for_promote for r in timeline.rows].count(True) == 1
    assert timeline.describe_total() == "1m30s + 1 manual promotion"


@pytest.mark.parametrize(
    ("weight", "replicas", "canary", "stable"),
    [(10, 5, 1, 5), (20, 5, 1, 4), (50, 5, 3, 3), (75, 4, 3, 1), (100, 4, 4, 0), (0, 4, 0, 4)],
)
def test_dynamic_stable_scale_shrinks_the_stable_with_its_share(
    weight: int, replicas: int, canary: int, stable: int
) -> None:
    r = rollout(istio_canary([{"setWeight": weight}], dynamicStableScale=True), replicas=replicas)
    row = simulate(r, {}).rows[0]
    assert (row.canary_pods, row.stable_pods) == (canary, stable)


def test_header_routes_last_until_removed_or_promoted() -> None:
    match = [{"headerName": "x-canary", "headerValue": {"exact": "true"}}]
    r = rollout(
        istio_canary(
            [
                {"setHeaderRoute": {"name": "hdr", "match": match}},
                {"setWeight": 10},
                {"setHeaderRoute": {"name": "hdr"}},
                {"setWeight": 20},
            ]
        )
    )
    timeline = simulate(r, {})
    assert [row.header_routes for row in timeline.rows] == [("hdr",), ("hdr",), (), (), (), ()]
    assert timeline.rows[0].action == "setHeaderRoute hdr (x-canary=true)"
    assert timeline.rows[2].action == "setHeaderRoute hdr (removed)"


def test_a_query_parameter_match_is_shown_with_a_question_mark() -> None:
    match = [{"queryParamName": "canary", "queryParamValue": {"regex": "1|yes"}}]
    routing = {"managedRoutes": [{"name": "hdr"}], "gatewayAPI": {"httpRoute": "web"}}
    timeline = simulate(
        rollout(istio_canary([{"setHeaderRoute": {"name": "hdr", "match": match}}], trafficRouting=routing)),
        {},
    )
    assert (timeline.traffic_router, timeline.rows[0].action) == (
        "gatewayAPI",
        "setHeaderRoute hdr (?canary~=1|yes)",
    )


def test_no_steps_goes_straight_to_promotion() -> None:
    timeline = simulate(rollout(istio_canary([]), replicas=3), {})
    assert [(r.kind, r.weight, r.canary_pods, r.stable_pods) for r in timeline.rows] == [
        ("promote", 100, 3, 3),
        ("scaleDown", 100, 3, 0),
    ]
    assert timeline.total == 0.0


def test_scale_down_delay_is_after_promotion_and_not_in_the_total() -> None:
    timeline = simulate(rollout(istio_canary([{"pause": {"duration": 20}}], scaleDownDelaySeconds=30)), {})
    assert [(r.kind, r.at) for r in timeline.rows] == [("pause", 0.0), ("promote", 20.0), ("scaleDown", 50.0)]
    assert timeline.total == 20.0


def test_spec_paused_is_said() -> None:
    timeline = simulate(rollout(istio_canary([{"setWeight": 10}]), paused=True), {})
    assert timeline.paused_by_spec
    assert timeline.describe_total() == "0s + a resume (spec.paused)"


# --------------------------------------------------------------------------- canary without a router


@pytest.mark.parametrize(
    ("replicas", "weight", "surge", "unavailable", "canary", "stable", "peak_note"),
    [
        (3, 34, "25%", 0, 1, 2, "up to 4 pods during the change"),
        (4, 25, "25%", 0, 1, 3, "up to 5 pods during the change"),
        (4, 50, 0, 1, 2, 2, None),  # no surge: stable first goes down by maxUnavailable
        (10, 30, "50%", "50%", 3, 7, None),
        (4, 100, 1, 0, 4, 0, "up to 5 pods during the change"),
    ],
)
def test_without_a_router_the_weight_is_a_share_of_pods(
    replicas: int, weight: int, surge: int | str, unavailable: int | str, canary: int, stable: int,
    peak_note: str | None,
) -> None:  # fmt: skip
    r = rollout(
        {"canary": {"steps": [{"setWeight": weight}], "maxSurge": surge, "maxUnavailable": unavailable}},
        replicas=replicas,
    )
    timeline = simulate(r, {})
    row = timeline.rows[0]
    assert (row.canary_pods, row.stable_pods) == (canary, stable)
    assert row.notes == ((peak_note,) if peak_note else ())
    assert timeline.traffic_router is None
    assert "share of pods" in timeline.notes[0]


def _drive_planner(
    replicas: int, weight: int, surge: int | str, unavailable: int | str
) -> tuple[int, int, int]:
    """Run the real planner on a cluster where pods are ready at once; (canary, stable, peak)."""
    r = canary_rollout(
        steps=[{"setWeight": weight}, {"pause": {}}],
        replicas=replicas,
        router=False,
        maxSurge=surge,
        maxUnavailable=unavailable,
    )
    status = RolloutStatus.model_validate(
        {"stableRS": V1, "currentPodHash": V2, "currentStepIndex": 0, "currentStepHash": steps_hash(r)}
    )
    sets: dict[str, ReplicaSetInfo] = {V1: rs("web:1", replicas)}
    peak = replicas
    for _ in range(50):
        r = r.model_copy(update={"status": status})
        p = plan(observed(r, list(sets.values())))
        status = p.status
        scaled = False
        for action in p.actions:
            if isinstance(action, CreateReplicaSet):
                sets[action.pod_hash] = rs("web:2", action.replicas, revision=2)
                scaled = True
            elif isinstance(action, ScaleReplicaSet):
                image = "web:1" if action.name.endswith(V1) else "web:2"
                sets[V1 if image == "web:1" else V2] = rs(image, action.replicas)
                scaled = True
        peak = max(peak, sum(s.replicas for s in sets.values()))
        if not scaled and status.current_step_index == 1:
            break
    assert status.current_step_index == 1, "the planner never finished the setWeight step"
    canary = sets[V2].replicas if V2 in sets else 0
    return canary, sets[V1].replicas, peak


@pytest.mark.parametrize(
    ("replicas", "weight", "surge", "unavailable"),
    [
        (3, 34, "25%", 0),
        (4, 25, "25%", 0),
        (4, 50, 0, 1),
        (10, 30, "50%", "50%"),
        (5, 60, 2, 1),
        (4, 100, 1, 0),
    ],
)
def test_pod_counts_without_a_router_match_the_planner(
    replicas: int, weight: int, surge: int | str, unavailable: int | str
) -> None:
    canary, stable, peak = _drive_planner(replicas, weight, surge, unavailable)
    r = rollout(
        {"canary": {"steps": [{"setWeight": weight}], "maxSurge": surge, "maxUnavailable": unavailable}},
        replicas=replicas,
    )
    row = simulate(r, {}).rows[0]
    assert (row.canary_pods, row.stable_pods) == (canary, stable)
    simulated_peak = max([replicas, canary + stable] + [int(n.split()[2]) for n in row.notes])
    assert simulated_peak == peak


# --------------------------------------------------------------------------- analysis windows


@pytest.mark.parametrize(
    ("metric", "args", "seconds"),
    [
        ({"interval": "30s", "count": 5, "initialDelay": "10s"}, {}, 130.0),
        ({"interval": "1m", "count": 1}, {}, 0.0),
        ({"initialDelay": "20s"}, {}, 20.0),  # no interval: measured once
        ({}, {}, 0.0),
        ({"interval": 15, "count": "4"}, {}, 45.0),
        ({"interval": "10s", "count": "{{args.n}}"}, {"n": "3"}, 20.0),
        ({"interval": "1m30s", "count": 3, "initialDelay": "500ms"}, {}, 180.5),
    ],
)
def test_metric_window(metric: dict[str, Any], args: dict[str, str], seconds: float) -> None:
    assert metric_window(Metric.model_validate({"name": "m", **metric}), args) == (seconds, None)


@pytest.mark.parametrize(
    ("metric", "why"),
    [
        ({"interval": "30s"}, "metric m measures every 30s until stopped (no count)"),
        ({"interval": "30s", "count": "{{args.n}}"}, "metric m: count '{{args.n}}': "),
        ({"interval": "30s", "count": "lots"}, "metric m: count 'lots' is not a number"),
        ({"interval": "soon", "count": 2}, "metric m: not a duration: 'soon'"),
    ],
)
def test_metric_window_unknown(metric: dict[str, Any], why: str) -> None:
    seconds, reason = metric_window(Metric.model_validate({"name": "m", **metric}))
    assert seconds is None
    assert reason is not None and reason.startswith(why)


def test_a_run_lasts_as_long_as_its_longest_metric_across_templates() -> None:
    templates = {
        "a": template({"name": "fast", "interval": "10s", "count": 3}),
        template_key("b", cluster_scope=True): template(
            {"name": "slow", "interval": "1m", "count": "{{args.count}}", "initialDelay": "30s"},
            args=[{"name": "count", "value": "2"}],
        ),
    }
    analysis = RolloutAnalysis.model_validate(
        {
            "templates": [{"templateName": "a"}, {"templateName": "b", "clusterScope": True}],
            "args": [{"name": "count", "value": "4"}],  # the Rollout's value wins over the default
        }
    )
    window = analysis_window(analysis, templates)
    assert (window.seconds, window.longest_metric) == (210.0, "slow")
    assert window.describe() == "window 3m30s (longest metric: slow)"

    missing = analysis_window(
        RolloutAnalysis.model_validate({"templates": [{"templateName": "zz"}]}), templates
    )
    assert missing.seconds is None
    assert missing.describe() == "unknown duration: AnalysisTemplate zz not given"


def test_analysis_steps_add_their_window_and_unknown_ones_are_listed() -> None:
    templates = {"rate": template({"name": "rate", "interval": "30s", "count": 3, "initialDelay": "15s"})}
    r = rollout(
        istio_canary(
            [
                {"setWeight": 20},
                {"analysis": {"templates": [{"templateName": "rate"}]}},
                {"pause": {"duration": "2m"}},
                {"analysis": {"templates": [{"templateName": "ghost"}]}},
                {"setWeight": 60},
            ],
            analysis={"templates": [{"templateName": "rate"}], "startingStep": 2},
        )
    )
    timeline = simulate(r, templates)
    assert [(row.kind, row.at, row.wait) for row in timeline.rows] == [
        ("setWeight", 0.0, 0.0),
        ("analysis", 0.0, 75.0),
        ("pause", 75.0, 120.0),
        ("analysis", 195.0, None),
        ("setWeight", 195.0, 0.0),
        ("promote", 195.0, 0.0),
        ("scaleDown", 225.0, 0.0),
    ]
    assert timeline.rows[1].notes == ("window 1m15s (longest metric: rate)",)
    assert timeline.total == 195.0
    assert timeline.unknown == ("step 4: AnalysisTemplate ghost not given",)
    assert timeline.describe_total() == "3m15s + unknown (step 4: AnalysisTemplate ghost not given)"
    background = timeline.background
    assert background is not None
    assert (background.templates, background.starting_step, background.at) == (("rate",), 3, 75.0)
    assert background.window.seconds == 75.0


def test_background_analysis_starts_at_once_by_default() -> None:
    r = rollout(istio_canary([{"pause": {"duration": 5}}], analysis={"templates": [{"templateName": "x"}]}))
    background = simulate(r, {}).background
    assert background is not None
    assert (background.starting_step, background.at, background.window.seconds) == (1, 0.0, None)


# --------------------------------------------------------------------------- blue-green


def blue_green(replicas: int = 3, **bg: Any) -> Rollout:
    return rollout(
        {"blueGreen": {"activeService": "web-active", "previewService": "web-preview", **bg}}, replicas
    )


def test_blue_green_auto_promotion() -> None:
    timeline = simulate(
        blue_green(previewReplicaCount=1, autoPromotionSeconds=60, scaleDownDelaySeconds=30), {}
    )
    assert [(r.kind, r.weight, r.canary_pods, r.stable_pods, r.at, r.wait) for r in timeline.rows] == [
        ("preview", 0, 1, 3, 0.0, 0.0),
        ("autoPromotion", 0, 1, 3, 0.0, 60.0),
        ("promote", 100, 3, 3, 60.0, 0.0),
        ("scaleDown", 100, 3, 0, 90.0, 0.0),
    ]
    assert timeline.rows[0].action == "preview: new version at 1 pod behind web-preview"
    assert timeline.rows[2].notes == ("new version scaled from 1 to 3 pods first",)
    assert (timeline.strategy, timeline.total, timeline.manual_promotions) == ("blueGreen", 60.0, 0)


def test_blue_green_defaults_promote_at_once() -> None:
    timeline = simulate(blue_green(replicas=2), {})
    assert [(r.kind, r.canary_pods, r.stable_pods, r.at) for r in timeline.rows] == [
        ("preview", 2, 2, 0.0),
        ("promote", 2, 2, 0.0),
        ("scaleDown", 2, 0, 30.0),  # scaleDownDelaySeconds defaults to 30
    ]
    assert timeline.total == 0.0


def test_blue_green_manual_with_analyses() -> None:
    templates = {
        "smoke": template({"name": "smoke", "initialDelay": "20s"}),
        "soak": template({"name": "soak", "interval": "1m", "count": 5}),
    }
    timeline = simulate(
        blue_green(
            autoPromotionEnabled=False,
            prePromotionAnalysis={"templates": [{"templateName": "smoke"}]},
            postPromotionAnalysis={"templates": [{"templateName": "soak"}]},
            scaleDownDelaySeconds=0,
        ),
        templates,
    )
    assert [(r.kind, r.weight, r.at, r.wait, r.waits_for_promote) for r in timeline.rows] == [
        ("preview", 0, 0.0, 0.0, False),
        ("prePromotionAnalysis", 0, 0.0, 20.0, False),
        ("pause", 0, 20.0, 0.0, True),
        ("promote", 100, 20.0, 0.0, False),
        ("postPromotionAnalysis", 100, 20.0, 240.0, False),
        ("scaleDown", 100, 260.0, 0.0, False),
    ]
    assert timeline.total == 260.0
    assert timeline.describe_total() == "4m20s + 1 manual promotion"

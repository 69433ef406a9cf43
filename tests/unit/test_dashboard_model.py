"""The dashboard's views as tables: what each row and section says for a given set of objects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tidegate.cli._dashboard_model import (
    ACTIONS,
    Store,
    WeightPoint,
    analysis_run_view,
    event_rows,
    measured_number,
    overview,
    record_weight,
    revision_number,
    rollout_view,
    step_rows,
    thresholds,
)
from tidegate.cli.control import intents

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
T0 = "2026-01-01T11:59:00Z"  # 60 s before NOW
HASH = "rollouts-pod-template-hash"


def rollout(
    name: str = "web",
    namespace: str = "shop",
    *,
    index: int = 1,
    weight: int | None = 25,
    phase: str = "Paused",
    current: str = "bbb",
    stable: str = "aaa",
    **status: Any,
) -> dict[str, Any]:
    st: dict[str, Any] = {
        "phase": phase,
        "currentStepIndex": index,
        "currentPodHash": current,
        "stableRS": stable,
    }
    if weight is not None:
        st["canary"] = {"weights": {"canary": {"weight": weight}, "verified": True}}
    st.update(status)
    return {
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": T0},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"canary": {"steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}]}},
        },
        "status": st,
    }


def replica_set(
    pod_hash: str, revision: int, *, owner: str = "web", namespace: str = "shop"
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{owner}-{pod_hash}",
            "namespace": namespace,
            "creationTimestamp": T0,
            "labels": {"rollout.tidegate.io/name": owner, HASH: pod_hash},
            "annotations": {"rollout.tidegate.io/revision": str(revision)},
        },
        "spec": {
            "replicas": 1,
            "template": {"spec": {"containers": [{"name": "app", "image": f"web:{revision}"}]}},
        },
        "status": {"readyReplicas": 1, "availableReplicas": 1},
    }


def pod(name: str, pod_hash: str, *, ready: bool = True, namespace: str = "shop") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": T0,
            "labels": {HASH: pod_hash},
        },
        "spec": {"containers": [{"name": "app"}]},
        "status": {"phase": "Running", "containerStatuses": [{"ready": ready, "restartCount": 0}]},
    }


@pytest.mark.parametrize(
    ("index", "states"),
    [
        (0, ["current", "todo", "todo"]),
        (1, ["done", "current", "todo"]),
        (3, ["done", "done", "done"]),  # past the last step: all done, none current
    ],
)
def test_steps_mark_the_current_one(index: int, states: list[str]) -> None:
    rows = step_rows(rollout(index=index))
    assert [r["state"] for r in rows] == states
    assert [r["text"] for r in rows] == ["setWeight 25", "pause (until promoted)", "setWeight 50"]


def test_overview_row_has_phase_strategy_step_weight_revision_and_age() -> None:
    store = Store()
    store.apply(
        "rollouts", "SYNC", [rollout(), rollout("api", index=0, weight=None, phase="Healthy")], "", NOW
    )
    store.apply("replicasets", "SYNC", [replica_set("aaa", 1), replica_set("bbb", 2)], "", NOW)
    view = overview(store, "shop", NOW)
    assert [
        (r["name"], r["phase"], r["strategy"], r["step"], r["weight"], r["revision"], r["age"])
        for r in view["rollouts"]
    ] == [
        ("api", "Healthy", "Canary", "1/3", None, None, "60s"),
        ("web", "Paused", "Canary", "2/3", 25, 2, "60s"),
    ]


def test_overview_of_one_namespace_leaves_the_others_out_and_all_namespaces_keeps_them() -> None:
    store = Store()
    store.apply("rollouts", "SYNC", [rollout(namespace="a"), rollout(namespace="b")], "", NOW)
    assert [r["namespace"] for r in overview(store, "a", NOW)["rollouts"]] == ["a"]
    assert [r["namespace"] for r in overview(store, None, NOW)["rollouts"]] == ["a", "b"]


def test_a_watch_refused_by_rbac_is_reported_until_the_kind_lists_again() -> None:
    store = Store()
    store.apply("pods", "ERROR", [], 'pods is forbidden: User "dev" cannot list resource "pods"', NOW)
    assert overview(store, "shop", NOW)["errors"] == {
        "pods": 'pods is forbidden: User "dev" cannot list resource "pods"'
    }
    store.apply("pods", "SYNC", [], "", NOW)
    assert overview(store, "shop", NOW)["errors"] == {}


def test_revision_is_the_current_replica_sets_else_the_rollouts_annotation() -> None:
    r = rollout()
    assert revision_number(r, [replica_set("aaa", 1), replica_set("bbb", 2)]) == 2
    r["metadata"]["annotations"] = {"rollout.tidegate.io/revision": "7"}
    assert revision_number(r, []) == 7
    assert revision_number(rollout(), []) is None


def test_weight_history_adds_a_point_only_when_weight_step_or_phase_changes() -> None:
    history: list[WeightPoint] = []
    assert record_weight(history, rollout(index=0, weight=None, phase="Healthy"), NOW)
    assert not record_weight(
        history, rollout(index=0, weight=None, phase="Healthy"), NOW + timedelta(seconds=1)
    )
    assert record_weight(history, rollout(index=1, weight=25), NOW + timedelta(seconds=2))
    assert record_weight(
        history, rollout(index=1, weight=25, phase="Progressing"), NOW + timedelta(seconds=3)
    )
    assert [(p.weight, p.step, p.phase) for p in history] == [
        (0, "1/3", "Healthy"),
        (25, "2/3", "Paused"),
        (25, "2/3", "Progressing"),
    ]


def test_a_deleted_rollout_loses_its_row_and_its_history() -> None:
    store = Store()
    store.apply("rollouts", "ADDED", [rollout()], "", NOW)
    store.apply("rollouts", "DELETED", [rollout()], "", NOW)
    assert overview(store, "shop", NOW)["rollouts"] == []
    assert store.history == {}
    assert rollout_view(store, ("shop", "web"), NOW)["found"] is False


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("0.97", 0.97),
        ("[0.97]", 0.97),
        ("[[3]]", 3.0),
        (12, 12.0),
        ("[]", None),
        ("NaN", None),
        ("up", None),
        ("true", None),
        (None, None),
        ("", None),
    ],
)
def test_measured_values_become_numbers_to_plot_or_none(value: Any, number: float | None) -> None:
    assert measured_number(value) == number


def test_analysis_run_view_holds_each_metric_against_its_condition_or_judge() -> None:
    run = {
        "metadata": {"name": "web-bbb-s1-0", "namespace": "shop", "creationTimestamp": T0},
        "spec": {
            "metrics": [
                {"name": "success-rate", "successCondition": "result[0] >= 0.95"},
                {"name": "latency", "judge": {"method": "MannWhitney", "tolerance": 0.1}},
                {"name": "later", "successCondition": "result < 1"},
            ]
        },
        "status": {
            "phase": "Running",
            "metricResults": [
                {
                    "name": "success-rate",
                    "phase": "Running",
                    "successful": 1,
                    "failed": 1,
                    "measurements": [
                        {"phase": "Successful", "value": "[0.99]"},
                        {"phase": "Failed", "value": "[0.5]", "message": "below"},
                    ],
                },
                {
                    "name": "latency",
                    "phase": "Successful",
                    "measurements": [
                        {"phase": "Successful", "value": "pass", "metadata": {"p-value": "0.4"}}
                    ],
                },
            ],
        },
    }
    view = analysis_run_view(run, NOW)
    metrics = {m["name"]: m for m in view["metrics"]}
    assert metrics["success-rate"]["criterion"] == "successCondition result[0] >= 0.95"
    assert metrics["success-rate"]["thresholds"] == [{"kind": "success", "op": ">=", "value": 0.95}]
    assert [(m["phase"], m["plotted"]) for m in metrics["success-rate"]["measurements"]] == [
        ("Successful", 0.99),
        ("Failed", 0.5),
    ]
    assert metrics["success-rate"]["counts"] == {"successful": 1, "failed": 1, "inconclusive": 0, "error": 0}
    assert metrics["latency"]["judged"] is True
    assert metrics["latency"]["criterion"].startswith("judge MannWhitney: canary against stable")
    assert metrics["latency"]["measurements"][0]["details"] == {"p-value": "0.4"}
    assert (metrics["later"]["phase"], metrics["later"]["measurements"]) == ("Pending", [])


def test_revisions_newest_first_with_images_roles_and_their_pods() -> None:
    store = Store()
    store.apply("rollouts", "SYNC", [rollout()], "", NOW)
    store.apply(
        "replicasets",
        "SYNC",
        [replica_set("aaa", 1), replica_set("bbb", 2), replica_set("ccc", 1, owner="api")],
        "",
        NOW,
    )
    store.apply(
        "pods",
        "SYNC",
        [pod("web-aaa-1", "aaa"), pod("web-bbb-1", "bbb", ready=False), pod("x", "zzz")],
        "",
        NOW,
    )
    view = rollout_view(store, ("shop", "web"), NOW)
    assert [
        (r["revision"], r["roles"], r["images"], [p["name"] for p in r["pods"]]) for r in view["revisions"]
    ] == [
        (2, ["canary"], ["web:2"], ["web-bbb-1"]),
        (1, ["stable"], ["web:1"], ["web-aaa-1"]),
    ]
    assert view["revisions"][0]["pods"][0]["ready"] == "0/1"


def test_events_of_the_rollout_and_its_runs_newest_first() -> None:
    def event(name: str, obj: str, at: str, reason: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "namespace": "shop"},
            "involvedObject": {"kind": "Rollout", "name": obj},
            "lastTimestamp": at,
            "reason": reason,
            "message": reason.lower(),
        }

    rows = event_rows(
        [
            event("e1", "web", "2026-01-01T11:58:00Z", "StepStarted"),
            event("e2", "web-run", "2026-01-01T11:59:30Z", "MetricFailed"),
            event("e3", "other", "2026-01-01T11:59:50Z", "Elsewhere"),
        ],
        {"web", "web-run"},
        NOW,
    )
    assert [(r["reason"], r["age"]) for r in rows] == [("MetricFailed", "30s"), ("StepStarted", "2m0s")]


def test_every_button_is_one_of_the_clis_intents() -> None:
    assert [a for a, _label, _asks in ACTIONS] == list(intents())


@pytest.mark.parametrize(
    ("spec", "lines"),
    [
        ({"successCondition": "result[0] >= 0.95"}, [{"kind": "success", "op": ">=", "value": 0.95}]),
        (
            {"successCondition": "len(result) > 0 && result[0] >= 0.9"},
            [{"kind": "success", "op": ">=", "value": 0.9}],
        ),
        ({"failureCondition": "result > 1e3"}, [{"kind": "failure", "op": ">", "value": 1000.0}]),
        ({"successCondition": "result[0] >= 0.9 && result[1] < 2"}, []),  # not one comparison: no line
        ({"judge": {"method": "Counts"}}, []),
    ],
)
def test_a_condition_comparing_the_value_with_a_number_is_a_line_on_the_chart(
    spec: dict[str, Any], lines: list[dict[str, Any]]
) -> None:
    assert thresholds(spec) == lines

"""What `get` and `list` print: kubectl's names for the kinds, tables a script can cut, -o formats."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click
import pytest
import yaml

from tidegate.cli._facts import Snapshot, live_message, restart_line
from tidegate.cli._output import (
    ANALYSIS_RUNS,
    ROLLOUTS,
    analysis_row,
    as_list,
    cell,
    print_objects,
    reason_of,
    resource_named,
    rollout_row,
)
from tidegate.cli.status_cmd import EXIT_HEALTHY, progress_line, verdict
from tidegate.cli.view import PIPE_WIDTH, render_analysis_run, render_text, render_text_of

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def rollout(**status: Any) -> dict[str, Any]:
    spec: dict[str, Any] = status.pop("spec", {})
    return {
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "creationTimestamp": "2026-01-01T11:59:00Z",
            "generation": 1,
        },
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "app", "image": "registry.example/web:2.0"}]}},
            "strategy": {"canary": {"steps": [{"setWeight": 25}, {"pause": {"duration": "1h"}}]}},
            **spec,
        },
        "status": {"observedGeneration": 1, **status},
    }


@pytest.mark.parametrize(
    "name",
    ["rollout", "rollouts", "ro", "Rollout", "ROLLOUTS", "rollouts.tidegate.io", "rollout.tidegate.io"],
)
def test_every_kubectl_name_of_rollouts(name: str) -> None:
    assert resource_named(name) is ROLLOUTS


@pytest.mark.parametrize(
    "name", ["analysisrun", "analysisruns", "ar", "AnalysisRun", "analysisruns.tidegate.io"]
)
def test_every_kubectl_name_of_analysis_runs(name: str) -> None:
    assert resource_named(name) is ANALYSIS_RUNS


def test_an_unknown_type_lists_the_known_ones() -> None:
    with pytest.raises(click.BadParameter) as err:
        resource_named("deployments")
    assert (
        "unknown resource type 'deployments'; known: rollouts (rollout, ro), analysisruns (analysisrun, ar)"
        in (err.value.message)
    )


@pytest.mark.parametrize(
    ("status", "spec", "reason"),
    [
        ({"phase": "Healthy"}, {}, "-"),
        ({"phase": "Degraded", "abort": True}, {}, "Aborted"),
        (
            {"phase": "Degraded", "conditions": [{"type": "InvalidSpec", "status": "True"}]},
            {},
            "InvalidSpec",
        ),
        (
            {
                "phase": "Degraded",
                "conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}],
            },
            {},
            "ProgressDeadlineExceeded",
        ),
        ({"phase": "Paused"}, {"paused": True}, "PausedBySpec"),
        ({"phase": "Paused", "pauseConditions": [{"reason": "CanaryPauseStep"}]}, {}, "CanaryPauseStep"),
        (
            {"phase": "Paused", "pauseConditions": [{"reason": "InconclusiveAnalysisRun"}]},
            {},
            "InconclusiveAnalysisRun",
        ),
        ({"phase": "Healthy"}, {"restartAt": "2026-01-01T12:00:00Z"}, "RestartPending"),
        (
            {"phase": "Healthy", "restartedAt": "2026-01-01T12:00:00Z"},
            {"restartAt": "2026-01-01T12:00:00Z"},
            "-",
        ),
    ],
    ids=[
        "none",
        "aborted",
        "invalid",
        "deadline",
        "spec-paused",
        "pause-step",
        "inconclusive",
        "restart",
        "restarted",
    ],
)
def test_the_reason_column_says_why_in_one_word(
    status: dict[str, Any], spec: dict[str, Any], reason: str
) -> None:
    assert reason_of(rollout(spec=spec, **status)) == reason


def test_an_aborted_rollout_row_has_a_bare_phase_and_no_space_in_any_cell() -> None:
    r = rollout(
        phase="Degraded",
        abort=True,
        message="aborted: metric success-rate measured 0.5",
        currentStepIndex=1,
        canary={"weights": {"canary": {"weight": 0}}},
        readyReplicas=4,
        updatedReplicas=1,
        availableReplicas=4,
    )
    row = rollout_row(r, NOW, wide=False, namespaces=True)
    assert row == ["shop", "web", "Canary", "Degraded", "Aborted", "2/2", "0%", "4/4", "1", "4", "60s"]
    wide = rollout_row(r, NOW, wide=True, namespaces=False)
    assert wide[-2:] == ["registry.example/web:2.0", "aborted: metric success-rate measured 0.5"]
    assert all(" " not in c for c in wide[:-1])  # only the last column, MESSAGE, is free text


def test_cells_never_hold_a_space() -> None:
    assert (cell(None), cell(""), cell("a b  c"), cell("x")) == ("-", "-", "a-b-c", "x")


def test_analysis_run_rows() -> None:
    run = {
        "metadata": {
            "name": "web-abc-s1-0",
            "namespace": "shop",
            "creationTimestamp": "2026-01-01T11:59:30Z",
            "labels": {"rollout.tidegate.io/name": "web"},
        },
        "spec": {"metrics": [{"name": "success-rate"}, {"name": "latency"}]},
        "status": {
            "phase": "Running",
            "message": "metric success-rate: 2 of 3",
            "metricResults": [
                {"name": "success-rate", "phase": "Successful", "measurements": [{"value": "[0.99, 1]"}]},
                {"name": "latency", "phase": "Running", "measurements": []},
            ],
        },
    }
    assert analysis_row(run, NOW, wide=False, namespaces=False) == [
        "web-abc-s1-0",
        "web",
        "Running",
        "1/2",
        "30s",
    ]
    wide = analysis_row(run, NOW, wide=True, namespaces=False)
    assert wide[-2] == "success-rate=[0.99,-1](Successful),latency=-(Running)"
    text = render_text_of(render_analysis_run(run, NOW), PIPE_WIDTH)
    assert "Rollout:    web" in text and "[0.99, 1]" in text


def test_o_name_json_and_yaml_print_the_api_objects(capsys: pytest.CaptureFixture[str]) -> None:
    r = rollout(phase="Healthy")
    print_objects(ROLLOUTS, [r, r], "name")
    assert capsys.readouterr().out == "rollout.tidegate.io/web\nrollout.tidegate.io/web\n"
    print_objects(ROLLOUTS, r, "json")
    assert json.loads(capsys.readouterr().out) == r
    print_objects(ROLLOUTS, [r], "yaml")
    assert yaml.safe_load(capsys.readouterr().out) == as_list([r])
    assert as_list([r])["kind"] == "List"


def test_the_piped_view_keeps_long_lines_whole() -> None:
    image = "registry.example/a-team/with-a-long-path/web-frontend-service:2.0.0-rc.1-" + "x" * 40
    r = rollout(phase="Paused", currentStepIndex=1, stableRS="h1", currentPodHash="h2")
    r["spec"]["template"]["spec"]["containers"][0]["image"] = image
    text = render_text(Snapshot(rollout=r, name="web", namespace="shop"), NOW, width=PIPE_WIDTH)
    assert any(line.startswith("Images:") and line.endswith(image) for line in text.splitlines()), text


def test_the_message_drops_the_countdown_the_pause_line_keeps() -> None:
    message = "paused at step 2/2 for 10s more (until 2026-01-01T12:00:10Z)"
    assert live_message(message) == "paused at step 2/2 until 2026-01-01T12:00:10Z"
    assert (
        live_message("step 1/2: waiting for 0/1 canary pods ready")
        == "step 1/2: waiting for 0/1 canary pods ready"
    )
    r = rollout(
        phase="Paused",
        message=message,
        currentStepIndex=1,
        pauseConditions=[{"reason": "CanaryPauseStep", "startTime": "2026-01-01T11:59:50Z"}],
    )
    r["spec"]["strategy"]["canary"]["steps"][1] = {"pause": {"duration": "20s"}}
    text = render_text(Snapshot(rollout=r, name="web", namespace="shop"), NOW)
    lines = {line.split(":", 1)[0]: line for line in text.splitlines() if ":" in line}
    assert lines["Message"].endswith("paused at step 2/2 until 2026-01-01T12:00:10Z")
    assert lines["Pause"].endswith("10s left of 20s")
    assert "more" not in text
    # `status` prints a line when it changes: the countdown written once is no change.
    assert progress_line(r) == "Paused (step 2/2): paused at step 2/2 until 2026-01-01T12:00:10Z"


def pod(name: str, created: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": created}}


def test_a_pending_restart_is_shown_and_status_waits_for_it() -> None:
    at = "2026-01-01T12:00:00Z"
    pods = [
        pod("a", "2026-01-01T11:00:00Z"),
        pod("b", "2026-01-01T11:00:00Z"),
        pod("c", "2026-01-01T12:00:05Z"),
    ]
    mid = rollout(
        spec={"restartAt": at}, phase="Paused", stableRS="h1", currentPodHash="h2", message="paused"
    )
    assert restart_line(mid, pods) == (
        f"pending (restartAt {at}): starts once the rollout is complete; 2 pods created before it left"
    )
    done = rollout(
        spec={"restartAt": at}, phase="Healthy", stableRS="h2", currentPodHash="h2", message="healthy"
    )
    assert restart_line(done, pods[:1]) == (
        f"in progress (restartAt {at}): pods replaced one at a time; 1 pod created before it left"
    )
    assert verdict(done) is None  # Healthy, but the restart is not carried out yet
    assert "restart in progress" in progress_line(done)
    done["status"]["restartedAt"] = at
    assert restart_line(done, pods) is None and verdict(done) == EXIT_HEALTHY
    text = render_text(Snapshot(rollout=mid, pods=pods, name="web", namespace="shop"), NOW)
    assert "Restart:    pending (restartAt 2026-01-01T12:00:00Z)" in text


def test_a_watched_table_prints_a_row_again_only_when_more_than_its_age_changed() -> None:
    from tidegate.cli._output import TableStream

    stream = TableStream(ROLLOUTS, wide=False, namespaces=False)
    first = stream.lines([rollout(phase="Healthy")], NOW)
    assert [line.split()[:3] for line in first] == [
        ["NAME", "STRATEGY", "PHASE"],
        ["web", "Canary", "Healthy"],
    ]
    later = NOW.replace(minute=5)
    assert stream.lines([rollout(phase="Healthy")], later) == []  # only AGE moved
    paused = stream.lines([rollout(phase="Paused", pauseConditions=[{"reason": "CanaryPauseStep"}])], later)
    assert [line.split()[2:4] for line in paused] == [["Paused", "CanaryPauseStep"]]
    # The first table's widths hold: PHASE starts where it did, the longer REASON pushes the rest.
    assert paused[0].index("Paused") == first[1].index("Healthy") == first[0].index("PHASE")

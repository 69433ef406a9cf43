"""What an SRE reads: the transition log lines' fields, the queue, build and analysis metrics,
third-party loggers held back, and a clear error for a bad --log-level."""

from __future__ import annotations

import asyncio
import json
import logging
import platform
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from tidegate import __version__
from tidegate.cli.main import cli
from tidegate.core.hashing import HASH_LABEL, pod_template_hash
from tidegate.core.model import REVISION_ANNOTATION
from tidegate.handlers.analysis import RunSeen, run_news
from tidegate.handlers.operator import WorkQueue, transition_fields
from tidegate.telemetry import NOISY_LOGGERS, JsonFormatter, Telemetry, TextFormatter, setup_logging

TEMPLATE = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "w:2"}]}}


def value(t: Telemetry, sample: str, /, **labels: str) -> float | None:
    return t.registry.get_sample_value(sample, labels)


@pytest.fixture
def telemetry() -> Telemetry:
    return Telemetry(process_metrics=False)


# -- metrics ----------------------------------------------------------------------------


def test_build_info_names_the_version_and_python(telemetry: Telemetry) -> None:
    labels = {"version": __version__, "python_version": platform.python_version()}
    assert value(telemetry, "tidegate_build_info", **labels) == 1


def test_replicas_by_state_and_the_number_of_steps(telemetry: Telemetry) -> None:
    counts = {"desired": 4, "current": 5, "updated": 1, "ready": 5, "available": 4}
    telemetry.observe_rollout(
        "shop", "web", phase="Paused", step=2, weight=25, strategy="canary", steps=5, replicas=counts
    )
    for state, n in counts.items():
        assert (
            value(telemetry, "tidegate_rollout_replicas", namespace="shop", rollout="web", state=state) == n
        )
    assert value(telemetry, "tidegate_rollout_steps", namespace="shop", rollout="web") == 5


def test_analysis_run_phases_keep_the_latest_run_of_each_kind(telemetry: Telemetry) -> None:
    ro = {"namespace": "shop", "rollout": "web"}
    telemetry.observe_analysis_run("shop", "web", "step", "web-a-s1-0", "Running", {"rate": "Running"})
    telemetry.observe_analysis_run("shop", "web", "background", "web-a-bg-0", "Running", {"p95": "Running"})
    assert value(telemetry, "tidegate_analysis_run_phase", **ro, kind="step", phase="Running") == 1
    assert value(telemetry, "tidegate_analysis_run_phase", **ro, kind="step", phase="Failed") == 0
    # The next step's run replaces the first one's series.
    telemetry.observe_analysis_run("shop", "web", "step", "web-a-s3-0", "Failed", {"rate": "Failed"})
    assert value(telemetry, "tidegate_analysis_run_phase", **ro, kind="step", phase="Failed") == 1
    assert (
        value(
            telemetry, "tidegate_analysis_run_metric_phase", **ro, kind="step", metric="rate", phase="Failed"
        )
        == 1
    )
    # Deleting the replaced run changes nothing; deleting the latest drops its series.
    telemetry.forget_analysis_run("shop", "web", "web-a-s1-0")
    assert value(telemetry, "tidegate_analysis_run_phase", **ro, kind="step", phase="Failed") == 1
    telemetry.forget_analysis_run("shop", "web", "web-a-s3-0")
    assert value(telemetry, "tidegate_analysis_run_phase", **ro, kind="step", phase="Failed") is None
    assert value(telemetry, "tidegate_analysis_run_phase", **ro, kind="background", phase="Running") == 1
    telemetry.forget("shop", "web")
    assert value(telemetry, "tidegate_analysis_run_phase", **ro, kind="background", phase="Running") is None
    with pytest.raises(ValueError, match="unknown analysis phase"):
        telemetry.observe_analysis_run("shop", "web", "step", "x", "Sideways", {})


def test_the_queue_reports_adds_depth_and_time_waited(telemetry: Telemetry) -> None:
    now = [100.0]
    A, B = ("ns", "a"), ("ns", "b")

    async def scenario() -> None:
        q = WorkQueue(on_add=telemetry.queue_added, on_get=telemetry.queue_taken, clock=lambda: now[0])
        q.add(A)
        q.add(B)
        q.add(A)  # already waiting: not added twice
        assert value(telemetry, "tidegate_workqueue_adds_total") == 2
        assert value(telemetry, "tidegate_workqueue_depth") == 2
        now[0] += 0.5
        assert await q.get() == A
        assert value(telemetry, "tidegate_workqueue_depth") == 1
        assert value(telemetry, "tidegate_workqueue_queue_duration_seconds_sum") == 0.5
        q.add(A)  # while worked on: queued again when its pass is done
        q.done(A)
        assert value(telemetry, "tidegate_workqueue_adds_total") == 3

    asyncio.run(scenario())


# -- analysis news ----------------------------------------------------------------------


def _result(name: str, phase: str, values: list[str], count: int | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "phase": phase,
        "count": len(values) if count is None else count,
        "measurements": [{"phase": "Successful", "value": v} for v in values],
    }


@pytest.mark.parametrize(
    ("before", "status", "values", "verdict", "outcomes"),
    [
        # First sighting (operator start, new leader): no history replayed.
        (None, {"phase": "Successful", "metricResults": [_result("m", "Successful", ["1"])]}, [], None, []),
        # Two new measurements of one metric.
        (
            RunSeen("Running", {"m": 1}),
            {"phase": "Running", "metricResults": [_result("m", "Running", ["1", "2", "3"])]},
            ["2", "3"],
            None,
            [],
        ),
        # Retention keeps 2 of 5 measurements; 3 are new: only the 2 kept can be told.
        (
            RunSeen("Running", {"m": 2}),
            {"phase": "Running", "metricResults": [_result("m", "Running", ["4", "5"], count=5)]},
            ["4", "5"],
            None,
            [],
        ),
        # The verdict, once, with every metric's outcome.
        (
            RunSeen("Running", {"m": 1, "n": 1}),
            {
                "phase": "Failed",
                "metricResults": [_result("m", "Successful", ["1"]), _result("n", "Failed", ["0"])],
            },
            [],
            "Failed",
            [("m", "Successful"), ("n", "Failed")],
        ),
        (
            RunSeen("Failed", {"m": 1}),
            {"phase": "Failed", "metricResults": [_result("m", "Failed", ["0"])]},
            [],
            None,
            [],
        ),
    ],
)
def test_run_news(
    before: RunSeen | None,
    status: dict[str, Any],
    values: list[str],
    verdict: str | None,
    outcomes: list[tuple[str, str]],
) -> None:
    news, _ = run_news(before, status)
    assert [m["value"] for m in news.measurements] == values
    assert (news.verdict, news.outcomes) == (verdict, outcomes)


# -- log lines --------------------------------------------------------------------------


class _Cache:
    """Only what transition_fields reads of the watch cache: a Rollout's ReplicaSets."""

    replicasets = "replicasets"

    def __init__(self, sets: list[dict[str, Any]]) -> None:
        self.sets = sets

    def owned(self, store: str, namespace: str, rollout: str) -> list[dict[str, Any]]:
        return self.sets


def _rollout(index: int | None, steps: int) -> dict[str, Any]:
    canary = {"steps": [{"setWeight": 10}] * steps}
    status = {} if index is None else {"currentStepIndex": index}
    return {
        "metadata": {"namespace": "shop", "name": "web"},
        "spec": {"template": TEMPLATE, "strategy": {"canary": canary}},
        "status": status,
    }


def _rs(pod_hash: str, revision: int) -> dict[str, Any]:
    return {
        "metadata": {"labels": {HASH_LABEL: pod_hash}, "annotations": {REVISION_ANNOTATION: str(revision)}}
    }


@pytest.mark.parametrize(
    ("index", "steps", "step"),
    [(None, 3, 1), (0, 3, 1), (1, 3, 2), (3, 3, 3), (0, 0, None)],
)
def test_transition_fields_count_steps_from_one(index: int | None, steps: int, step: int | None) -> None:
    fields = transition_fields(_rollout(index, steps), None)
    assert fields == {"namespace": "shop", "rollout": "web", "revision": None, "step": step}


def test_transition_fields_name_the_revision_of_the_template() -> None:
    cache: Any = _Cache([_rs("old", 1), _rs(pod_template_hash(TEMPLATE), 2)])
    assert transition_fields(_rollout(1, 3), cache)["revision"] == 2


def _format(formatter: logging.Formatter, **extra: Any) -> str:
    record = logging.LogRecord("tidegate.rollout", logging.INFO, __file__, 1, "paused at step 2/4", (), None)
    record.__dict__.update(extra)
    return formatter.format(record)


def test_a_transition_line_in_text_and_json() -> None:
    fields = {"namespace": "shop", "rollout": "web", "revision": 2, "step": 2, "reason": "RolloutPaused"}
    text = _format(TextFormatter(), **fields)
    assert text.endswith(
        "info    tidegate.rollout [shop/web] paused at step 2/4 revision=2 step=2 reason=RolloutPaused"
    )
    line = json.loads(_format(JsonFormatter(), **fields))
    assert {k: line[k] for k in (*fields, "level", "message")} == {
        **fields,
        "level": "info",
        "message": "paused at step 2/4",
    }


def test_text_fields_are_quoted_when_they_hold_spaces_and_none_is_left_out() -> None:
    text = _format(TextFormatter(), namespace="shop", rollout="web", revision=None, message_of="a b")
    assert text.endswith('paused at step 2/4 message_of="a b"'), text


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    yield
    root.handlers[:], root.level = handlers, level
    for name, lvl in levels.items():
        logging.getLogger(name).setLevel(lvl)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(("level", "shown"), [("info", False), ("debug", True)])
def test_third_party_request_lines_only_at_debug(
    level: str, shown: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging(level, json=False)
    logging.getLogger("httpx").info(
        'HTTP Request: GET http://prometheus/api/v1/query?query=up "HTTP/1.1 200 OK"'
    )
    logging.getLogger("kopf.objects").info("Handler 'rollout_event' succeeded.")
    logging.getLogger("httpx").warning("retrying")
    logging.getLogger("tidegate.rollout").info("paused at step 2/4")
    err = capsys.readouterr().err
    assert ("HTTP Request" in err, "succeeded" in err) == (shown, shown)
    assert "retrying" in err and "paused at step 2/4" in err


def test_a_bad_log_level_is_a_usage_error_naming_the_option() -> None:
    result = CliRunner().invoke(cli, ["operator", "--log-level", "verbose"])
    assert result.exit_code == 2
    assert "Invalid value for '--log-level': unknown log level 'verbose'" in result.output
    assert "Traceback" not in result.output

"""`tidegate plan` on the repository's examples: the timeline's weights, pods and total."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tidegate.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path("tests/fixtures/lint")


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def plan(*args: str) -> Result:
    return CliRunner().invoke(cli, ["plan", *args])


def plan_json(*args: str) -> dict[str, Any]:
    result = plan(*args, "-o", "json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def columns(data: dict[str, Any], *keys: str) -> list[tuple[Any, ...]]:
    return [tuple(row[k] for k in keys) for row in data["rows"]]


def test_basic_example_json() -> None:
    data = plan_json("examples/basic/rollout.yaml")
    assert (data["rollout"], data["strategy"], data["replicas"], data["trafficRouter"]) == (
        "hello",
        "canary",
        3,
        None,
    )
    assert columns(data, "step", "action", "weight", "canaryPods", "stablePods", "at", "wait") == [
        (1, "setWeight 34", 34, 1, 2, 0.0, 0.0),
        (2, "pause 10s", 34, 1, 2, 0.0, 10.0),
        (None, "promote: all traffic to the new version", 100, 3, 3, 10.0, 0.0),
        (None, "scale down the previous version", 100, 3, 0, 10.0, 0.0),
    ]
    assert data["rows"][0]["notes"] == ["up to 4 pods during the change"]  # maxSurge 25% of 3 = 1
    assert data["total"] == {
        "seconds": 10.0,
        "manualPromotions": 0,
        "unknown": [],
        "pausedBySpec": False,
        "text": "10s",
    }
    assert data["backgroundAnalysis"] is None


def test_basic_example_text() -> None:
    result = plan("examples/basic/rollout.yaml")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "Rollout hello: canary, 3 replicas, no traffic router\n"
        "  the weight is the canary's share of pods (maxSurge 25% = 1, maxUnavailable 25% = 0)\n"
        "\n"
        "STEP  ACTION                                   WEIGHT  CANARY  STABLE  AT    WAIT  NOTES\n"
        "1     setWeight 34                                34%       1       2  +0s   -     up to 4 pods during the change\n"  # noqa: E501
        "2     pause 10s                                   34%       1       2  +0s   10s\n"
        "-     promote: all traffic to the new version    100%       3       3  +10s  -\n"
        "-     scale down the previous version            100%       3       0  +10s  -\n"
        "\n"
        "Minimum time to full promotion: 10s\n"
    )


def test_canary_example() -> None:
    data = plan_json("examples/canary/")  # the directory: Services and VirtualService are skipped
    assert (data["rollout"], data["replicas"], data["trafficRouter"]) == ("web", 4, "istio")
    assert columns(data, "kind", "weight", "canaryPods", "stablePods", "at", "wait") == [
        ("setWeight", 10, 1, 4, 0.0, 0.0),
        ("pause", 10, 1, 4, 0.0, 10.0),
        ("setHeaderRoute", 10, 1, 4, 10.0, 0.0),
        ("setWeight", 50, 2, 4, 10.0, 0.0),
        ("pause", 50, 2, 4, 10.0, 10.0),
        ("setWeight", 100, 4, 4, 20.0, 0.0),
        ("pause", 100, 4, 4, 20.0, 5.0),
        ("promote", 100, 4, 4, 25.0, 0.0),
        ("scaleDown", 100, 4, 0, 30.0, 0.0),  # scaleDownDelaySeconds 5
    ]
    header_routes = [row["headerRoutes"] for row in data["rows"]]
    assert header_routes == [[], [], *[["canary-header"]] * 5, [], []]
    assert data["total"]["seconds"] == 25.0
    assert data["total"]["manualPromotions"] == 0


def test_canary_subset_example() -> None:
    data = plan_json("examples/canary-subset/")
    assert columns(data, "weight", "canaryPods", "stablePods") == [
        (5, 1, 3),
        (5, 1, 3),
        (50, 2, 3),
        (50, 2, 3),
        (100, 3, 3),
        (100, 3, 0),
    ]
    assert data["total"]["text"] == "10s"


def test_gateway_api_example() -> None:
    """The Gateway API router splits traffic like Istio's: canary pods follow the weight."""
    data = plan_json("examples/gateway-api/")  # Gateway, HTTPRoute and Services are skipped
    assert (data["rollout"], data["replicas"], data["trafficRouter"]) == ("api-gateway", 3, "gatewayAPI")
    assert columns(data, "kind", "weight", "canaryPods", "stablePods", "headerRoutes") == [
        ("setWeight", 5, 1, 3, []),
        ("setHeaderRoute", 5, 1, 3, ["canary-header"]),
        ("pause", 5, 1, 3, ["canary-header"]),
        ("setWeight", 50, 2, 3, ["canary-header"]),
        ("pause", 50, 2, 3, ["canary-header"]),
        ("promote", 100, 3, 3, []),
        ("scaleDown", 100, 3, 0, []),
    ]
    assert data["total"]["text"] == "5s + 1 manual promotion"


def test_blue_green_and_manual_pause_from_a_multi_rollout_file() -> None:
    shop = plan_json(str(FIXTURES / "good.yaml"), "--name", "shop")
    assert columns(shop, "kind", "weight", "canaryPods", "stablePods", "at") == [
        ("preview", 0, 1, 3, 0.0),
        ("autoPromotion", 0, 1, 3, 0.0),
        ("promote", 100, 3, 3, 60.0),
        ("scaleDown", 100, 3, 0, 90.0),
    ]
    web = plan(str(FIXTURES / "good.yaml"), "--name", "web")
    assert web.exit_code == 0
    assert "HEADER ROUTES" in web.stdout
    assert web.stdout.rstrip().endswith("Minimum time to full promotion: 30s + 1 manual promotion")


def test_analysis_windows_come_from_the_templates_in_the_files() -> None:
    # tests/fixtures/lint/analysis.yaml with the argument lint rejects spelled right
    data = plan_json("tests/fixtures/plan/analysis.yaml", "--name", "checkout")
    assert data["rows"][1]["action"] == "analysis error-rate, smoke"
    assert data["rows"][1]["wait"] is None  # error-rate has an interval and no count
    assert data["total"]["unknown"] == ["step 2: metric errors measures every 1m00s until stopped (no count)"]
    assert data["backgroundAnalysis"]["startingStep"] == 2
    late = plan_json("tests/fixtures/plan/analysis.yaml", "--name", "late")
    assert late["backgroundAnalysis"]["startingStep"] == 4  # past the steps: at promotion
    assert late["backgroundAnalysis"]["at"] == 0.0


def test_several_rollouts_need_a_name() -> None:
    result = plan(str(FIXTURES / "good.yaml"))
    assert result.exit_code == 2
    assert "the files hold 2 Rollouts (web, shop); choose one with --name" in result.output
    missing = plan(str(FIXTURES / "good.yaml"), "--name", "nope")
    assert missing.exit_code == 2
    assert "no Rollout named 'nope' in the files (Rollouts: shop, web)" in missing.output


def test_an_invalid_rollout_is_not_planned_with_lints_errors() -> None:
    result = plan(str(FIXTURES / "bad-rollout.yaml"), "--name", "typed")
    assert result.exit_code == 1
    assert (
        "Rollout/typed (document 4): spec.strategy.canary.steps[1].setWeight: "
        "must be a valid integer (got '10')" in result.stderr
    )
    assert "not planned (`tidegate lint` rejects the files)" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "fixture",
    ["tests/fixtures/lint/analysis.yaml", "examples/analysis/rollout.yaml"],
    ids=["an-argument-without-value", "a-template-not-given"],
)
def test_plan_exits_1_exactly_where_lint_does(fixture: str) -> None:
    linted = CliRunner().invoke(cli, ["lint", fixture])
    planned = plan(fixture, "--name", "checkout" if "fixtures" in fixture else "web")
    assert (linted.exit_code, planned.exit_code) == (1, 1), planned.output
    errors = [line for line in linted.stdout.splitlines() if ": error: " in line]
    assert errors and all(line in planned.stderr for line in errors)


def test_lint_warnings_alone_do_not_stop_a_plan() -> None:
    linted = CliRunner().invoke(cli, ["lint", "tests/fixtures/plan/analysis.yaml"])
    assert linted.exit_code == 0 and ": warning: " in linted.stdout
    assert plan("tests/fixtures/plan/analysis.yaml", "--name", "checkout").exit_code == 0


def test_help_has_an_example() -> None:
    result = plan("--help")
    assert result.exit_code == 0
    assert "Example:\n    tidegate plan examples/basic/rollout.yaml\n" in result.stdout

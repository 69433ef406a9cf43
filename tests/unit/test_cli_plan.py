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
        (1, "setWeight 34", 34, 2, 1, 0.0, 0.0),
        (2, "pause 10s", 34, 2, 1, 0.0, 10.0),
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
        "  the weight is the canary's share of pods (maxSurge 25% = 1, maxUnavailable 0 = 0)\n"
        "\n"
        "STEP  ACTION                                   WEIGHT  CANARY  STABLE  AT    WAIT  NOTES\n"
        "1     setWeight 34                                34%       2       1  +0s   -     up to 4 pods during the change\n"  # noqa: E501
        "2     pause 10s                                   34%       2       1  +0s   10s\n"
        "-     promote: all traffic to the new version    100%       3       3  +10s  -\n"
        "-     scale down the previous version            100%       3       0  +10s  -\n"
        "\n"
        "Minimum time to full promotion: 10s\n"
    )


@pytest.mark.skipif(not (ROOT / "examples/canary").is_dir(), reason="examples/canary/ not written yet")
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


@pytest.mark.skipif(
    not (ROOT / "examples/canary-subset").is_dir(), reason="examples/canary-subset/ not there"
)
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
    data = plan_json(str(FIXTURES / "analysis.yaml"), "--name", "checkout")
    assert data["rows"][1]["action"] == "analysis error-rate, smoke"
    assert data["rows"][1]["wait"] is None  # error-rate has an interval and no count
    assert data["total"]["unknown"] == ["step 2: metric errors measures every 1m00s until stopped (no count)"]
    assert data["backgroundAnalysis"]["startingStep"] == 2
    late = plan_json(str(FIXTURES / "analysis.yaml"), "--name", "late")
    assert late["backgroundAnalysis"]["startingStep"] == 4  # past the steps: at promotion
    assert late["backgroundAnalysis"]["at"] == 0.0


def test_several_rollouts_need_a_name() -> None:
    result = plan(str(FIXTURES / "good.yaml"))
    assert result.exit_code == 2
    assert "the files hold 2 Rollouts (web, shop); choose one with --name" in result.output
    missing = plan(str(FIXTURES / "good.yaml"), "--name", "nope")
    assert missing.exit_code == 2
    assert "no Rollout named 'nope' in the files (Rollouts: shop, web)" in missing.output


def test_an_invalid_rollout_points_to_lint() -> None:
    result = plan(str(FIXTURES / "bad-rollout.yaml"), "--name", "typed")
    assert result.exit_code == 1
    assert (
        "Rollout/typed: spec.strategy.canary.steps[0].setWeight: must be less than or equal to 100"
        in result.stderr
    )
    assert "`tidegate lint` tells more" in result.stderr


def test_help_has_an_example() -> None:
    result = plan("--help")
    assert result.exit_code == 0
    assert "Example:\n    tidegate plan examples/basic/rollout.yaml\n" in result.stdout

"""The pure parts of bench/steps.py: percentiles, latencies from weight events, counting, the table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def load_bench() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "steps.py"
    spec = importlib.util.spec_from_file_location("tidegate_bench_steps", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module
    spec.loader.exec_module(module)
    return module


bench = load_bench()


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([], 50, None),
        ([3.0], 99, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([4.0, 1.0, 3.0, 2.0], 90, 4.0),
        ([float(i) for i in range(1, 101)], 50, 50.0),
        ([float(i) for i in range(1, 101)], 90, 90.0),
        ([float(i) for i in range(1, 101)], 99, 99.0),
        ([float(i) for i in range(1, 101)], 100, 100.0),
        ([5.0, 1.0], 0, 1.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], p: float, expected: float | None) -> None:
    assert bench.percentile(values, p) == expected


def test_spread_cell_names_missing_samples() -> None:
    spread = bench.Spread.of([0.1, 0.2, 0.3])
    assert spread.cell(3) == "0.20 / 0.30 / 0.30 / 0.30"
    assert spread.cell(4).endswith("(n=3)")
    assert bench.Spread.of([]).cell(4) == "-"


def test_latencies_take_the_first_matching_change_after_each_write() -> None:
    ev = bench.WeightEvent
    events = [
        ev(9.0, "a", 50),  # before the write: ignored
        ev(10.5, "a", 50),
        ev(11.0, "b", 50),
        ev(20.0, "a", 100),
        ev(21.0, "a", 0),
        ev(22.0, "b", 100),
    ]
    assert bench.latencies(events, {"a": 10.0, "b": 10.0}, lambda w: w > 0) == [0.5, 1.0]
    assert bench.latencies(events, {"a": 19.0, "c": 1.0}, lambda _w: True) == [1.0]
    # back to 0 only counts after the weight went up again; b never came back
    assert bench.promoted_done(events, {"a": 19.0, "b": 19.0}) == [2.0]


def test_canary_weight_reads_the_primary_route() -> None:
    vs = bench.services_and_vs("web", "ns")[2]
    assert bench.canary_weight(vs, "web-canary") == 0
    vs["spec"]["http"][0]["route"][1]["weight"] = 50
    assert bench.canary_weight(vs, "web-canary") == 50
    assert bench.canary_weight(vs, "other") == 0


def test_count_requests_splits_reads_writes_and_watches_per_rollout() -> None:
    def req(verb: str, agent: str, received: float, resource: str = "rollouts.x") -> object:
        return bench.Request("id", verb, agent, resource, "/uri", received)

    requests = [
        req("get", "kopf/1", 1.0),
        req("list", "tidegate-operator/1", 1.5),
        req("patch", "kopf/1", 2.0, "rollouts.x/status"),
        req("patch", "kopf/1", 2.5, "rollouts.x/status"),
        req("watch", "kopf/1", 3.0),
        req("patch", "someone-else/1", 2.0),
        req("patch", "kopf/1", 9.0),  # after the window
    ]
    match = bench.agent_matcher(("kopf/", "tidegate-operator/"))
    count = bench.count_requests(requests, 0.0, 5.0, match, rollouts=2)
    assert (count.reads, count.writes, count.watches) == (1.0, 1.0, 0.5)
    assert count.by_verb_resource == {
        "patch rollouts.x/status": 1.0,
        "get rollouts.x": 0.5,
        "list rollouts.x": 0.5,
        "watch rollouts.x": 0.5,
    }


def test_render_has_a_column_per_controller() -> None:
    spread = bench.Spread.of([0.5, 1.0])
    figures = bench.StepFigures(2.0, bench.RequestCount(1.0, 2.0, 0.0, {"patch x": 2.0}), 0.0123)
    results = [
        bench.Result(name, "v1", 2, 3.0, spread, spread, spread, figures, figures, 50.0, 60.0, 70.0)
        for name in ("tidegate", "argo-rollouts")
    ]
    text = bench.render(results, header="h")
    lines = text.splitlines()
    assert lines[0] == "h"
    assert "tidegate v1" in lines[1] and "argo-rollouts v1" in lines[1]
    assert any(
        "update -> first weight" in line and line.count("0.50 / 1.00 / 1.00 / 1.00") == 2 for line in lines
    )
    assert any("CPU s per rollout" in line and line.count("0.0123") == 2 for line in lines)
    assert "argo-rollouts, step promote, requests per rollout: patch x 2" in text

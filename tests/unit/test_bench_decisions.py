"""bench/decisions.py decides through the operator's own path, and its rows keep their shape.

The key test steps the same simulated analyses twice: once with the controller's
`k8s.analysis.step_analysis_run` (its real code: status writes against an in-memory
AnalysisRun store, Prometheus answered over an httpx.MockTransport) and once with the
benchmark's driver. If the two could diverge -- the bench decided with a loop of its own,
or the controller measured, windowed or concluded differently -- the recorded measurements
or the verdicts would differ.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import httpx
import numpy as np
import pytest

from tidegate.api.analysis import AnalysisRunStatus
from tidegate.core import analysis_run as runs
from tidegate.k8s.analysis import step_analysis_run
from tidegate.k8s.client import Clients
from tidegate.metrics import MappingSecretReader


def load_bench() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "decisions.py"
    spec = importlib.util.spec_from_file_location("tidegate_bench_decisions", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


BENCH = load_bench()


def _apply_merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386, as the API server applies a merge patch."""
    result = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _apply_merge_patch(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


class _Store:
    """The CustomObjectsApi calls step_analysis_run makes, on one AnalysisRun in memory."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.version = 1

    def get_namespaced_custom_object(self, *_args: Any) -> dict[str, Any]:
        found = copy.deepcopy(self.body)
        found["metadata"]["resourceVersion"] = str(self.version)
        return found

    def patch_namespaced_custom_object_status(self, *args: Any, **_kwargs: Any) -> dict[str, Any]:
        patch = dict(args[5])
        patch.pop("metadata", None)
        self.body = _apply_merge_patch(self.body, patch)
        self.version += 1
        return self.get_namespaced_custom_object()


def _matrix(series: list[tuple[dict[str, str], list[tuple[float, float]]]]) -> dict[str, Any]:
    result = [{"metric": labels, "values": [[t, repr(v)] for t, v in points]} for labels, points in series]
    return {"status": "success", "data": {"resultType": "matrix", "result": result}}


def controller_run(spec: Any, prom: Any) -> AnalysisRunStatus:
    """The run stepped by k8s.analysis.step_analysis_run, with a fake clock."""
    now = [BENCH.T0]

    def answer(request: httpx.Request) -> httpx.Response:
        params = request.url.params
        if request.url.path.endswith("/query_range"):
            start = datetime.fromtimestamp(float(params["start"]), UTC)
            end = datetime.fromtimestamp(float(params["end"]), UTC)
            return httpx.Response(200, json=_matrix(prom.range(params["query"], start, end)))
        data = prom.instant(params["query"], now[0])
        return httpx.Response(200, json={"status": "success", "data": data})

    body = {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "AnalysisRun",
        "metadata": {
            "name": "run",
            "namespace": "default",
            "generation": 1,
            "annotations": {
                runs.STABLE_HASH_ANNOTATION: BENCH.HASHES["Stable"],
                runs.LATEST_HASH_ANNOTATION: BENCH.HASHES["Latest"],
            },
        },
        "spec": spec.wire(),
    }
    store = _Store(body)
    clients = cast(Clients, type("FakeClients", (), {"custom": store})())
    transport = httpx.MockTransport(answer)

    async def drive() -> None:
        for _ in range(100):
            outcome = await step_analysis_run(
                clients,
                "default",
                "run",
                clock=lambda: now[0],
                transport=transport,
                secrets=MappingSecretReader({}),
            )
            if outcome.finished:
                return
            assert outcome.delay is not None
            now[0] += timedelta(seconds=outcome.delay)
        raise AssertionError("the controller never finished the run")

    asyncio.run(drive())
    return AnalysisRunStatus.model_validate(store.body["status"])


def _essence(status: AnalysisRunStatus) -> list[tuple[Any, ...]]:
    return [
        (
            r.name,
            r.phase,
            r.count,
            [(m.phase, m.value, m.finished_at, dict(m.metadata)) for m in r.measurements],
        )
        for r in status.metric_results
    ]


@pytest.mark.parametrize("judge", BENCH.judges())
@pytest.mark.parametrize("cls", ["healthy A/A", "error rate x2", "p99 latency +30%"])
def test_the_bench_and_the_controller_take_the_same_decisions(cls: str, judge: str) -> None:
    streams = BENCH.generate(BENCH.World(), BENCH.REGRESSIONS[cls], 2, np.random.default_rng(5))
    spec = BENCH.JUDGES[judge]()
    for trial in range(streams.trials):
        prom = BENCH.SimulatedPrometheus(streams, trial)
        bench = BENCH.run_analysis(spec, prom)
        controller = controller_run(spec, prom)
        assert controller.phase == bench.phase == bench.status.phase
        assert controller.message == bench.status.message
        assert _essence(controller) == _essence(bench.status)
        assert all(result.measurements for result in controller.metric_results)


def test_a_regression_stops_the_run_at_the_look_that_settles_it() -> None:
    """Through the operator's path, the sequential judges abort a doubled error rate at the
    first look (the old benchmark's own loop stopped there, but the operator waited)."""
    streams = BENCH.generate(BENCH.World(), BENCH.REGRESSIONS["error rate x2"], 3, np.random.default_rng(2))
    spec = BENCH.JUDGES["sequential (Counts + Distribution)"]()
    for trial in range(streams.trials):
        outcome = BENCH.run_analysis(spec, BENCH.SimulatedPrometheus(streams, trial))
        assert outcome.phase == "Failed" and outcome.seconds <= 120, outcome.status.message
        latency = next(r for r in outcome.status.metric_results if r.name == "latency")
        assert latency.phase == "Running"  # not waited for: the score was settled


ROW_KEYS = {
    "class",
    "judge",
    "trials",
    "rate",
    "ci_low",
    "ci_high",
    "median_intervals",
    "median_seconds",
    "rate_within_two",
    "measure",
    "inconclusive",
}


def test_bench_json_rows(capsys: pytest.CaptureFixture[str]) -> None:
    classes = "healthy A/A,low traffic,slow leak to x3"
    assert BENCH.main(["--json", "--trials", "2", "--seed", "1", "--classes", classes]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 3 * len(BENCH.judges())
    assert any("sequential" in r["judge"] for r in rows)
    assert any(r["judge"].startswith("threshold") for r in rows)
    for r in rows:
        assert set(r) == ROW_KEYS
        assert r["trials"] == 2
        assert 0.0 <= r["ci_low"] <= r["rate"] <= r["ci_high"] <= 1.0
        assert 1.0 <= r["median_intervals"] <= 5.0 and 60.0 <= r["median_seconds"] <= 300.0
        assert r["measure"] == ("false_abort" if r["class"] in BENCH.HEALTHY else "detection")


def test_bench_is_reproducible() -> None:
    classes = ("healthy A/A", "error rate x2")
    names = ["sequential (Counts + Distribution)", "threshold, failureLimit 0"]
    assert BENCH.run(2, 11, classes=classes, judge_names=names) == BENCH.run(
        2, 11, classes=classes, judge_names=names
    )


def test_a_low_traffic_canary_is_never_aborted_by_a_judge() -> None:
    rows = BENCH.run(3, 3, classes=("low traffic",))
    judged = [r for r in rows if not r["judge"].startswith("threshold")]
    assert judged and all(r["rate"] == 0.0 and r["inconclusive"] == 1.0 for r in judged), judged


def test_bench_wilson_interval() -> None:
    low, high = BENCH.wilson(5, 100)
    assert (low, high) == (pytest.approx(0.0215, abs=1e-4), pytest.approx(0.1118, abs=1e-4))
    assert BENCH.wilson(0, 50)[0] == 0.0

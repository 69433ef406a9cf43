"""The sequential judges on real data: demo-app pods behind kwok, scraped by the sandbox's
real Prometheus, judged by the operator with examples/analysis/errors-counts.yaml and
latency-distribution.yaml (their Prometheus address pointed at the sandbox's).

At setWeight 50 each version gets ~10 requests/s from the load generator. The stable returns
500 for some requests (so a doubled rate has something to double); the demo app spreads
errors evenly, so counts are exactly the configured share.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import yaml

from tests.e2e.dsl import given
from tests.e2e.test_analysis import HOST, analysis_rollout, new_version, runs, templates
from tests.kube import REPO, Kube
from tidegate.sandbox import Sandbox
from tidegate.sandbox.prometheus import address

TEMPLATES = ("errors-counts", "latency-distribution")
INTERVAL_S = 30.0  # the templates' interval (and initialDelay)


def sequential_rollout(error_rate: str = "0.1") -> dict[str, Any]:
    doc = analysis_rollout(error_rate=error_rate, latency_ms="20")
    doc["spec"]["strategy"]["canary"]["steps"] = [
        {"setWeight": 50},
        {
            "analysis": {
                "templates": [{"templateName": name} for name in TEMPLATES],
                "args": [
                    {"name": "namespace", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
                ],
            }
        },
        {"setWeight": 100},
    ]
    return doc


def _load_template(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO / "examples/analysis" / f"{name}.yaml").read_text())
    return doc


def seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def finished_run(kube: Kube, phase: str) -> dict[str, Any]:
    found = [r for r in runs(kube) if r.get("status", {}).get("phase") == phase]
    assert len(found) == 1, [(r["metadata"]["name"], r.get("status", {}).get("phase")) for r in runs(kube)]
    return found[0]


def result(run: dict[str, Any], metric: str) -> dict[str, Any]:
    (found,) = [r for r in run["status"]["metricResults"] if r["name"] == metric]
    return found


def test_count_judge_aborts_twice_the_errors_within_two_intervals_then_promotes_an_identical_canary(
    kube: Kube, sandbox: Sandbox
) -> None:
    templates(kube, address(sandbox), *TEMPLATES)
    # 20% errors against 40%: at ~10 requests/s a version, about 100 against 200 errors a
    # minute, evidence enough by the second look even when the loaded machine sends less.
    s = given(kube).objects(*HOST).rollout(sequential_rollout(error_rate="0.2")).watched()
    s.when().applied().then().phase("Healthy")

    t = new_version(s, error_rate="0.4", latency_ms="20").then().weight(50)
    t.phase("Degraded", timeout=150).weight(0).message_contains("errors")
    run = finished_run(kube, "Failed")
    errors = result(run, "errors")
    assert errors["phase"] == "Failed", errors
    # Within two intervals: the failing look is the first or the second.
    assert errors["count"] <= 2, errors
    failing = errors["measurements"][-1]
    meta = failing["metadata"]
    assert float(meta["eValue"]) >= float(meta["threshold"]) == 100.0, meta
    assert 1.5 < 1.0 + float(meta["effect"]) < 2.5, meta  # the measured rate ratio: about 2
    elapsed = seconds(failing["finishedAt"]) - seconds(run["status"]["startedAt"])
    assert elapsed <= 2 * INTERVAL_S + 10, (elapsed, failing)
    # The run ended as soon as the count judge settled it, without waiting for latency.
    assert result(run, "latency")["count"] <= errors["count"]

    # The same version again, under a new image: promoted.
    t = new_version(s, error_rate="0.2", latency_ms="20", image="registry.example/web:3.0").then()
    t.phase("Healthy", timeout=240)
    run = finished_run(kube, "Successful")
    for metric in ("errors", "latency"):
        judged = result(run, metric)
        assert judged["phase"] == "Successful" and judged["count"] == 4, judged
        last = judged["measurements"][-1]
        assert float(last["metadata"]["eValue"]) < 100.0, last
        assert "enough traffic" in last["message"], last
    s.finish()


def test_a_canary_thirty_percent_slower_is_aborted_by_the_distribution_judge(
    kube: Kube, sandbox: Sandbox
) -> None:
    templates(kube, address(sandbox), "errors-counts")
    # The demo app's buckets are 5 ms apart: 25% at its 20 ms median. With the template's 5%
    # tolerance the bound b' >= 1.05 b is a whole bucket above b, and whether the 30% slowdown
    # shows then depends on which side of a bound the stable's median falls. Tolerance 0
    # compares the versions at the same bound.
    latency = _load_template("latency-distribution")
    latency["spec"]["metrics"][0]["judge"]["tolerance"] = 0.0
    latency["spec"]["metrics"][0]["provider"]["prometheus"]["address"] = address(sandbox)
    kube.apply(latency)
    s = given(kube).objects(*HOST).rollout(sequential_rollout()).watched()
    s.when().applied().then().phase("Healthy")
    # 26 ms against 20 ms: every quantile 30% slower, p99 too (about 52 ms against 40 ms).
    t = new_version(s, error_rate="0.1", latency_ms="26").then().weight(50)
    try:
        t.phase("Degraded", timeout=150)
    except AssertionError:
        for run in runs(kube):
            print(run["metadata"]["name"], yaml.safe_dump(run.get("status", {})))
        raise
    t.weight(0).message_contains("latency")
    run = finished_run(kube, "Failed")
    latency = result(run, "latency")
    assert latency["phase"] == "Failed", latency
    meta = latency["measurements"][-1]["metadata"]
    assert float(meta["eValue"]) >= 100.0, meta
    assert float(meta["canaryP99"]) > float(meta["stableP99"]), meta
    assert float(meta["effect"]) > 0.15, meta
    assert "tolerance 0%" in latency["measurements"][-1]["message"], latency["measurements"][-1]
    assert result(run, "errors")["phase"] in ("Running", "Successful"), result(run, "errors")
    s.finish()

"""Analysis on real data: demo-app processes behind kwok pods, scraped by a real Prometheus.

The sandbox runs one demo app per Ready pod whose template asks for it (annotations), with
the error rate and latency of its version, and a load generator that follows the
VirtualService's weights. Templates from examples/analysis/ are applied with their
Prometheus address pointed at the sandbox's.
"""

from __future__ import annotations

import copy
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.dsl import _load, given
from tests.kube import REPO, Kube, wait_until
from tidegate.sandbox import Sandbox
from tidegate.sandbox.assets import prometheus as prometheus_binary
from tidegate.sandbox.cluster import free_port
from tidegate.sandbox.prometheus import address, targets_file

HOST = "examples/canary/services.yaml", "examples/canary/virtualservice.yaml"


def templates(kube: Kube, prom: str, *names: str) -> None:
    for name in names:
        for doc in yaml.safe_load_all((REPO / "examples/analysis" / f"{name}.yaml").read_text()):
            for metric in doc["spec"]["metrics"]:
                metric["provider"]["prometheus"]["address"] = prom
            kube.apply(doc)


def analysis_rollout(error_rate: str = "0", latency_ms: str = "20", **changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(_load("examples/analysis/rollout.yaml", "Rollout"))
    ann = doc["spec"]["template"]["metadata"]["annotations"]
    ann["demo.tidegate.io/error-rate"] = error_rate
    ann["demo.tidegate.io/latency-ms"] = latency_ms
    doc["spec"]["strategy"]["canary"].update(changes)
    return doc


def new_version(
    s: Any, error_rate: str = "0", latency_ms: str = "20", image: str = "registry.example/web:2.0"
) -> Any:
    ann = s.doc["spec"]["template"]["metadata"]["annotations"]
    ann["demo.tidegate.io/error-rate"] = error_rate
    ann["demo.tidegate.io/latency-ms"] = latency_ms
    return s.when().image(image)


def runs(kube: Kube) -> list[dict[str, Any]]:
    return kube.list("analysisruns.tidegate.io")


def test_a_healthy_canary_passes_its_analysis_steps_and_is_promoted(kube: Kube, sandbox: Sandbox) -> None:
    templates(kube, address(sandbox), "success-rate")
    s = given(kube).objects(*HOST).rollout(analysis_rollout()).watched()
    s.when().applied().then().phase("Healthy")
    t = new_version(s).then().weight(25)
    t.holds(
        lambda: (
            kube.status("web").get("canary", {}).get("currentStepAnalysisRunStatus", {}).get("status")
            == "Running"
        ),
        "the step's analysis run running",
    )
    t.weight(50).phase("Healthy", timeout=120)
    done = [r for r in runs(kube) if r["status"].get("phase") == "Successful"]
    assert len(done) == 2, [(r["metadata"]["name"], r["status"].get("phase")) for r in runs(kube)]
    for run in done:
        ms = run["status"]["metricResults"][0]["measurements"]
        assert len(ms) == 3 and all(m["phase"] == "Successful" for m in ms)
        assert all(float(m["value"].strip("[]")) >= 0.95 for m in ms), ms
    s.finish()


def test_a_canary_with_20_percent_errors_is_aborted_within_two_intervals(
    kube: Kube, sandbox: Sandbox
) -> None:
    templates(kube, address(sandbox), "success-rate")
    s = given(kube).objects(*HOST).rollout(analysis_rollout()).watched()
    s.when().applied().then().phase("Healthy")
    t = new_version(s, error_rate="0.2").then().weight(25)
    t.phase("Degraded", timeout=120).weight(0).message_contains("success-rate")
    (run,) = [r for r in runs(kube) if r["status"].get("phase") == "Failed"]
    result = run["status"]["metricResults"][0]
    measurements = result["measurements"]
    first_bad = next(m for m in measurements if m["phase"] == "Failed")
    aborted_at = kube.status("web")["abortedAt"]
    from datetime import datetime

    def ts(text: str) -> float:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    assert ts(aborted_at) - ts(first_bad["finishedAt"]) <= 2 * 5 + 1, (aborted_at, first_bad)
    assert float(first_bad["value"].strip("[]")) < 0.9
    assert "success-rate" in kube.status("web")["message"]
    t.replica_sets({"registry.example/web:1.0": 4}, timeout=30)
    s.finish()


def test_empty_result_is_inconclusive_then_promote_continues(kube: Kube, sandbox: Sandbox) -> None:
    templates(kube, address(sandbox), "success-rate")
    doc = analysis_rollout()
    # Query a namespace that has no pods: an empty result.
    for step in doc["spec"]["strategy"]["canary"]["steps"]:
        if "analysis" in step:
            step["analysis"]["args"][0] = {"name": "namespace", "value": "nowhere"}
    s = given(kube).objects(*HOST).rollout(doc).watched()
    s.when().applied().then().phase("Healthy")
    t = new_version(s).then().weight(25).phase("Paused", timeout=60)
    st = kube.status("web")
    assert [c["reason"] for c in st["pauseConditions"]] == ["InconclusiveAnalysisRun"]
    assert st["canary"]["currentStepAnalysisRunStatus"]["status"] == "Inconclusive"
    t.when().promoted().then().weight(50).phase("Paused", timeout=60)
    t.when().promoted().then().phase("Healthy", timeout=60)
    s.finish()


@contextmanager
def private_prometheus(sandbox: Sandbox, workdir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A second Prometheus scraping the same demo pods, that a test may stop."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "pods",
                "file_sd_configs": [{"files": [str(targets_file(sandbox))], "refresh_interval": "1s"}],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(workdir / "prometheus.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [
            str(prometheus_binary()),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    import urllib.request

    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=1).status == 200,
            30,
            what="private Prometheus ready",
        )
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_prometheus_stopped_mid_analysis_is_never_a_promotion(
    kube: Kube, sandbox: Sandbox, tmp_path: Path
) -> None:
    with private_prometheus(sandbox, tmp_path / "prom") as (url, proc):
        templates(kube, url, "success-rate")
        doc = analysis_rollout()
        s = given(kube).objects(*HOST).rollout(doc).watched()
        s.when().applied().then().phase("Healthy")
        t = new_version(s).then().weight(25)
        t.holds(
            lambda: any(r.get("status", {}).get("metricResults") for r in runs(kube)), "a first measurement"
        )
        proc.terminate()
        proc.wait(timeout=10)
        t.phase("Degraded", timeout=120).weight(0)
        st = kube.status("web")
        assert st["stableRS"] != st["currentPodHash"], "never promoted"
        (run,) = [r for r in runs(kube) if r["status"].get("phase") == "Error"]
        assert run["status"]["metricResults"][0]["consecutiveError"] >= 5
        s.finish()


def test_blue_green_pre_promotion_failure_keeps_the_active_service_on_the_old_version(
    kube: Kube, sandbox: Sandbox
) -> None:
    templates(kube, address(sandbox), "success-rate")
    kube.apply_file(REPO / "examples/blue-green/services.yaml")
    # The load generator sends traffic through the preview Service during the preview.
    kube.kubectl("annotate", "service", "api-gateway-preview", "demo.tidegate.io/load=true", "--overwrite")
    doc = copy.deepcopy(_load("examples/blue-green/rollout.yaml", "Rollout"))
    doc["spec"]["template"]["metadata"]["annotations"] = {
        "demo.tidegate.io/app": "true",
        "demo.tidegate.io/error-rate": "0",
    }
    doc["spec"]["strategy"]["blueGreen"].update(
        autoPromotionEnabled=True,
        prePromotionAnalysis={
            "templates": [{"templateName": "success-rate"}],
            "args": [
                {"name": "namespace", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
            ],
        },
    )
    s = given(kube).rollout(doc).watched(active_service="api-gateway")
    s.when().applied().then().phase("Healthy")
    old = kube.status("api-gateway")["stableRS"]
    t = new_version(s, error_rate="0.3", image="registry.example/org/api-gateway:v1.2.3").then()
    t.phase("Degraded", timeout=120).message_contains("success-rate")
    sel = kube.get("service", "api-gateway")["spec"]["selector"]
    assert sel["rollouts-pod-template-hash"] == old
    assert kube.status("api-gateway")["stableRS"] == old
    s.finish()


def test_statistical_judge_aborts_a_slower_canary_and_promotes_an_identical_one(
    kube: Kube, sandbox: Sandbox
) -> None:
    templates(kube, address(sandbox), "canary-vs-stable")
    judged = [
        {"setWeight": 50},
        {
            "analysis": {
                "templates": [{"templateName": "canary-vs-stable"}],
                "args": [
                    {"name": "namespace", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
                ],
            }
        },
        {"setWeight": 100},
    ]
    doc = analysis_rollout(latency_ms="40")
    doc["spec"]["strategy"]["canary"]["steps"] = judged
    s = given(kube).objects(*HOST).rollout(doc).watched()
    s.when().applied().then().phase("Healthy")
    # 30% slower: aborted by the judge.
    t = new_version(s, latency_ms="52").then().weight(50)
    t.phase("Degraded", timeout=150).weight(0).message_contains("latency-mean")
    failed = [r for r in runs(kube) if r["status"].get("phase") == "Failed"]
    assert failed, [(r["metadata"]["name"], r["status"].get("phase")) for r in runs(kube)]
    meta = failed[0]["status"]["metricResults"][0]["measurements"][-1]["metadata"]
    assert {"pValue", "effect", "canaryN", "stableN"} <= set(meta), meta
    # An identical canary (same latency, new image): promoted.
    start = time.monotonic()
    t = new_version(s, latency_ms="40", image="registry.example/web:3.0").then()
    try:
        t.phase("Healthy", timeout=150)
    except AssertionError:
        for r in runs(kube):
            print(r["metadata"]["name"], yaml.safe_dump(r["status"]))
        raise
    assert time.monotonic() - start < 150
    s.finish()

"""Argo Rollouts' analysis, moved over by changing apiVersion: Argo's own example templates and
templates written in Argo's shapes (`tests/fixtures/argo/`) are accepted by the CRDs as written,
and behave as Argo documents them on the sandbox: a canary whose Job passes is promoted, one
whose Job fails is aborted, nested templates run as one AnalysisRun, a template loop is an
InvalidSpec while the stable keeps serving, a streak of successes ends a metric early."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from tests.e2e.dsl import _load, given
from tests.kube import REPO, Kube, wait_until

FIXTURES = REPO / "tests/fixtures/argo"
FILES = ("analysis-templates.yaml", "cluster-analysis-templates.yaml", "analysis-fields.yaml")


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((FIXTURES / name).read_text()) if d]


def apply_fixtures(kube: Kube) -> None:
    for name in FILES:
        kube.apply_file(FIXTURES / name)


def canary(*analysis: str, args: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The basic canary with one pod (Argo's default), no router: the surge pod is the canary, so
    the stable keeps its pod while the analysis runs; an analysis step between two weights."""
    doc = copy.deepcopy(_load("examples/basic/rollout.yaml", "Rollout"))
    doc["spec"]["replicas"] = 1
    step: dict[str, Any] = {"templates": [{"templateName": name} for name in analysis]}
    if args:
        step["args"] = args
    doc["spec"]["strategy"]["canary"] = {"steps": [{"setWeight": 50}, {"analysis": step}, {"setWeight": 50}]}
    return doc


def runs(kube: Kube) -> list[dict[str, Any]]:
    return kube.list("analysisruns.tidegate.io")


def contained(written: Any, stored: Any, path: str = "") -> list[str]:
    """Where `stored` lacks or changes what `written` says (defaults added are fine)."""
    if isinstance(written, dict):
        if not isinstance(stored, dict):
            return [f"{path}: {stored!r}"]
        return [
            p for key, value in written.items() for p in contained(value, stored.get(key), f"{path}.{key}")
        ]
    if isinstance(written, list):
        if not isinstance(stored, list) or len(stored) != len(written):
            return [f"{path}: {stored!r}"]
        return [
            p
            for i, (w, s) in enumerate(zip(written, stored, strict=True))
            for p in contained(w, s, f"{path}[{i}]")
        ]
    return [] if written == stored else [f"{path}: wrote {written!r}, stored {stored!r}"]


def test_argo_shaped_templates_are_accepted_and_stored_as_written(kube: Kube) -> None:
    """kubectl's strict field validation: an unknown or pruned field would fail the apply."""
    apply_fixtures(kube)
    for name in FILES:
        for doc in docs(name):
            plural = (
                "clusteranalysistemplates"
                if doc["kind"] == "ClusterAnalysisTemplate"
                else "analysistemplates"
            )
            stored = kube.get(f"{plural}.tidegate.io", doc["metadata"]["name"])
            assert stored["apiVersion"] == "tidegate.io/v1alpha1"
            assert contained(doc["spec"], stored["spec"], "spec") == [], (name, doc["metadata"]["name"])


def test_a_canary_whose_job_analysis_passes_is_promoted(kube: Kube) -> None:
    """Argo's `pass` template as Argo ships it: the Job exits 0, the step passes."""
    apply_fixtures(kube)
    s = given(kube).rollout(canary("pass")).watched()
    s.when().applied().then().phase("Healthy")
    s.when().image("registry.example/hello:2.0").then().phase("Healthy", timeout=120)
    (run,) = runs(kube)
    assert run["status"]["phase"] == "Successful", run["status"]
    (measurement,) = run["status"]["metricResults"][0]["measurements"]
    job = kube.get("jobs.batch", measurement["metadata"]["job-name"])
    assert job["metadata"]["name"] == f"{run['metadata']['uid']}.pass.1"
    assert job["metadata"]["ownerReferences"][0]["name"] == run["metadata"]["name"]
    assert {c["type"] for c in job["status"]["conditions"] if c["status"] == "True"} >= {"Complete"}
    s.finish()


def test_a_canary_whose_job_analysis_fails_is_aborted(kube: Kube) -> None:
    apply_fixtures(kube)
    s = (
        given(kube)
        .rollout(canary("smoke-fail", args=[{"name": "service", "value": "hello-canary"}]))
        .watched()
    )
    s.when().applied().then().phase("Healthy")
    t = s.when().image("registry.example/hello:2.0").then()
    t.phase("Degraded", timeout=120).message_contains("metric smoke failed")
    (run,) = runs(kube)
    assert run["status"]["phase"] == "Failed", run["status"]
    (measurement,) = run["status"]["metricResults"][0]["measurements"]
    job = kube.get("jobs.batch", measurement["metadata"]["job-name"])
    script = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert script == ["echo testing hello-canary; exit 1"], "the argument reached the Job"
    assert job["metadata"]["labels"]["suite"] == "smoke"
    t.replica_sets({"registry.example/hello:1.0": 1}, timeout=60)
    s.finish()


def test_nested_templates_run_as_one_analysis_and_a_streak_ends_a_metric_early(kube: Kube) -> None:
    """smoke-suite names Argo's `pass` and smoke-streak; the streak metric (count 4,
    consecutiveSuccessLimit 2) is Successful after 2 Jobs, not 4."""
    apply_fixtures(kube)
    s = given(kube).rollout(canary("smoke-suite")).watched()
    s.when().applied().then().phase("Healthy")
    s.when().image("registry.example/hello:2.0").then().phase("Healthy", timeout=120)
    (run,) = runs(kube)
    results = {r["name"]: r for r in run["status"]["metricResults"]}
    assert set(results) == {"pass", "streak"}, "the nested templates' metrics, merged into one run"
    streak = results["streak"]
    assert (streak["phase"], streak["count"], streak["consecutiveSuccess"]) == ("Successful", 2, 2), streak
    assert "consecutiveSuccessLimit 2" in streak["message"]
    s.finish()


def test_a_loop_of_nested_templates_is_an_invalid_spec_and_the_stable_keeps_serving(kube: Kube) -> None:
    apply_fixtures(kube)
    s = given(kube).rollout(canary("loop-a")).watched()
    s.when().applied().then().phase("Healthy")
    t = s.when().image("registry.example/hello:2.0").then()
    t.message_contains("nested templates form a loop: AnalysisTemplate loop-a -> AnalysisTemplate loop-b")
    status = kube.status("hello")
    assert any(c["type"] == "InvalidSpec" and c["status"] == "True" for c in status["conditions"]), status
    wait_until(
        lambda: any(e["reason"] == "InvalidSpec" and "loop" in e["message"] for e in kube.list("events")),
        30,
        what="an InvalidSpec Event naming the loop",
    )
    assert runs(kube) == []

    def stable_replicas() -> int:
        return sum(
            rs["spec"]["replicas"]
            for rs in kube.replica_sets("hello")
            if rs["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/hello:1.0"
        )

    t.holds(lambda: stable_replicas() == 1, "the stable ReplicaSet still at its pod")
    s.finish()


def test_the_fixture_files_are_argo_shaped() -> None:
    """Nothing Tidegate-only in them: apiVersion is the only change from Argo's shapes."""
    for name in FILES:
        text = (FIXTURES / name).read_text()
        assert "argoproj.io" not in text
        for doc in docs(name):
            assert doc["apiVersion"] == "tidegate.io/v1alpha1"
            metrics = doc["spec"].get("metrics") or []
            for metric in metrics:
                assert "noDataPolicy" not in metric and "judge" not in metric

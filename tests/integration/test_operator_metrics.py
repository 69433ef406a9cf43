"""The operator's own /metrics, scraped from the session operator while a canary walks
its steps: the weight gauge follows the steps, the phase and step gauges say where the
Rollout stands, promotions are counted, reconciles are timed; /healthz and /readyz answer.
"""

from __future__ import annotations

import copy
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.dsl import _load, given
from tests.kube import Kube, OperatorProcess, wait_until
from tidegate.sandbox import Sandbox
from tidegate.sandbox.prometheus import address

pytestmark = pytest.mark.sandbox

HOST = "examples/canary/services.yaml", "examples/canary/virtualservice.yaml"
STEPS = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
# The only label names the operator's series may carry: no pods, hashes or revisions.
BOUNDED_LABELS = {"namespace", "rollout", "phase", "strategy", "metric", "verb", "resource", "state"}
BOUNDED_LABELS |= {"code", "outcome", "le", "kind", "version", "python_version"}

Samples = list[tuple[str, dict[str, str], float]]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Scraper:
    def __init__(self, operator: OperatorProcess, namespace: str, name: str = "web") -> None:
        self.base = f"http://127.0.0.1:{operator.metrics_port}"
        self.labels = {"namespace": namespace, "rollout": name}

    def samples(self) -> Samples:
        code, text = get(f"{self.base}/metrics")
        assert code == 200, text
        return [
            (s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def value(self, series: str, /, **labels: str) -> float | None:
        """The one sample of `series` for this Rollout with these extra labels, or None."""
        wanted = {**self.labels, **labels}
        found = [v for n, lbls, v in self.samples() if n == series and lbls == wanted]
        assert len(found) <= 1, f"{series}{wanted}: {found}"
        return found[0] if found else None

    def phases(self) -> dict[str, float]:
        return {
            lbls["phase"]: v
            for n, lbls, v in self.samples()
            if n == "tidegate_rollout_phase"
            and {k: lbls.get(k) for k in ("namespace", "rollout")} == self.labels
        }

    def wait_for(self, series: str, expected: float, /, timeout: float = 30, **labels: str) -> None:
        seen: list[float | None] = []

        def check() -> bool:
            seen.append(self.value(series, **labels))
            return seen[-1] == expected

        try:
            wait_until(check, timeout, what=f"{series}{ {**self.labels, **labels} } == {expected}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; values seen: {sorted(set(map(str, seen)))}") from None

    def wait_phase(self, phase: str, timeout: float = 30) -> None:
        def only(phases: dict[str, float]) -> bool:
            return phases.get(phase) == 1 and sum(phases.values()) == 1

        wait_until(lambda: only(self.phases()), timeout, what=f"only phase {phase} at 1: {self.phases()}")


def canary() -> dict[str, Any]:
    doc = copy.deepcopy(_load("examples/canary/rollout.yaml", "Rollout"))
    doc["spec"]["strategy"]["canary"]["steps"] = STEPS
    return doc


def test_health_endpoints_answer(operator: OperatorProcess) -> None:
    base = f"http://127.0.0.1:{operator.metrics_port}"
    assert wait_until(lambda: get(f"{base}/healthz")[0] == 200, 60, what="/healthz 200")
    assert wait_until(lambda: get(f"{base}/readyz")[0] == 200, 60, what="/readyz 200")


def test_the_metrics_follow_a_canary_through_its_steps(kube: Kube, operator: OperatorProcess) -> None:
    m = Scraper(operator, kube.namespace)
    s = given(kube).objects(*HOST).rollout(canary())
    s.when().applied().then().phase("Healthy")
    m.wait_phase("Healthy")
    m.wait_for("tidegate_rollout_canary_weight", 0)
    assert m.value("tidegate_rollout_info", strategy="canary") == 1
    promotions = m.value("tidegate_rollout_promotions_total")
    assert promotions is not None, "the counter starts at zero with the Rollout's first observation"

    # Step 1 (setWeight 10), then paused at step 2 (index 1): the gauge counts from 1, as the CLI.
    t = s.when().image("registry.example/web:2.0").then().weight(10).step(1).phase("Paused")
    m.wait_for("tidegate_rollout_canary_weight", 10)
    m.wait_for("tidegate_rollout_step", 2)
    assert m.value("tidegate_rollout_steps") == len(STEPS)
    # 4 stable pods and 1 canary pod (10% of 4, rounded up).
    for state, n in {"desired": 4, "current": 5, "updated": 1, "ready": 5, "available": 5}.items():
        m.wait_for("tidegate_rollout_replicas", n, state=state)
    m.wait_phase("Paused")
    paused_for = m.value("tidegate_rollout_phase_seconds", phase="Paused")
    assert paused_for is not None and paused_for >= 0

    # Promoted: setWeight 50, paused at step 4 (index 3).
    t = t.when().promoted().then().weight(50).step(3).phase("Paused")
    m.wait_for("tidegate_rollout_canary_weight", 50)
    m.wait_for("tidegate_rollout_step", 4)
    m.wait_phase("Paused")
    assert m.value("tidegate_rollout_promotions_total") == promotions, "not promoted yet"

    # Promoted again: past the last step, the new revision becomes stable.
    t.when().promoted().then().phase("Healthy").weight(0)
    m.wait_for("tidegate_rollout_canary_weight", 0)
    m.wait_for("tidegate_rollout_step", len(STEPS))
    m.wait_phase("Healthy")
    m.wait_for("tidegate_rollout_promotions_total", promotions + 1)
    assert m.value("tidegate_rollout_aborts_total") == 0

    samples = m.samples()
    reconciles = [v for n, lbls, v in samples if n == "tidegate_reconcile_duration_seconds_count"]
    assert sum(reconciles) > 0
    names = {n for n, _, _ in samples}
    assert {"tidegate_build_info", "tidegate_workqueue_depth", "tidegate_workqueue_adds_total"} <= names
    assert sum(v for n, _, v in samples if n == "tidegate_workqueue_queue_duration_seconds_count") > 0
    patches = [
        v for n, lbls, v in samples if n == "tidegate_api_requests_total" and lbls.get("verb") == "patch"
    ]
    assert sum(patches) > 0, "the operator's own writes are counted by verb"
    for name, labels, _ in samples:
        if name.startswith("tidegate_"):
            assert set(labels) <= BOUNDED_LABELS, f"{name}{labels}: unbounded label"


def test_a_deleted_rollout_leaves_no_series(kube: Kube, operator: OperatorProcess) -> None:
    m = Scraper(operator, kube.namespace)
    s = given(kube).objects(*HOST).rollout(canary())
    s.when().applied().then().phase("Healthy")
    m.wait_phase("Healthy")
    kube.kubectl("delete", "rollout.tidegate.io/web", "--timeout=60s")

    def gone() -> bool:
        return not [
            n
            for n, lbls, _ in m.samples()
            if n.startswith("tidegate_rollout_") and lbls.get("namespace") == kube.namespace
        ]

    wait_until(gone, 30, what=f"no tidegate_rollout_* series of {kube.namespace}")


def _field(line: str, key: str) -> str:
    """The value of `key=` in a text log line."""
    return line.split(f" {key}=", 1)[1].split()[0]


def _lines_about(operator: OperatorProcess, namespace: str) -> list[str]:
    text = operator.log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if f"[{namespace}/web]" in line]


def test_logs_and_analysis_series_during_a_canary(
    kube: Kube, sandbox: Sandbox, operator: OperatorProcess
) -> None:
    """One line per transition with revision and step; the analysis run's phases as series."""
    kube.apply(
        {
            "apiVersion": "tidegate.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "always-one"},
            "spec": {
                "metrics": [
                    {
                        "name": "one",
                        "interval": "1s",
                        "count": 2,
                        "successCondition": "len(result) > 0 && result[0] == 1",
                        "provider": {"prometheus": {"address": address(sandbox), "query": "vector(1)"}},
                    }
                ]
            },
        }
    )
    doc = canary()
    doc["spec"]["strategy"]["canary"]["steps"] = [
        {"setWeight": 10},
        {"analysis": {"templates": [{"templateName": "always-one"}]}},
        {"pause": {}},
    ]
    m = Scraper(operator, kube.namespace)
    s = given(kube).objects(*HOST).rollout(doc)
    s.when().applied().then().phase("Healthy")
    s.when().image("registry.example/web:2.0").then().step(2).phase("Paused")
    m.wait_for("tidegate_analysis_run_phase", 1, kind="step", phase="Successful")
    m.wait_for("tidegate_analysis_run_metric_phase", 1, kind="step", metric="one", phase="Successful")
    m.wait_for("tidegate_analysis_outcomes_total", 1, metric="one", phase="Successful")
    kube.patch_status("web", {"abort": True})
    kube.wait_phase("web", "Degraded")

    def logged() -> list[str]:
        lines = _lines_about(operator, kube.namespace)
        return lines if any("reason=RolloutAborted" in line for line in lines) else []

    lines = wait_until(logged, 30, what=f"a RolloutAborted line about {kube.namespace}/web")
    reasons = [_field(line, "reason") for line in lines if " reason=" in line]
    for reason in (
        "ReplicaSetCreated",
        "TrafficWeightSet",
        "WeightVerified",
        "StepCompleted",
        "AnalysisRunCreated",
        "AnalysisMeasured",
        "AnalysisRunSuccessful",
        "RolloutPaused",
        "RolloutAborted",
    ):
        assert reason in reasons, f"no {reason} line; reasons logged: {reasons}"
    assert reasons.count("AnalysisMeasured") == 2, reasons
    new = lines[next(i for i, line in enumerate(lines) if "reason=NewRevision" in line) :]
    for line in new:
        assert " revision=2 " in line and " step=" in line, line
    # The step each line reports is where the Rollout is after it, counted from 1.
    steps = {_field(line, "reason"): _field(line, "step") for line in reversed(new)}  # first of each
    assert (steps["NewRevision"], steps["AnalysisRunCreated"], steps["RolloutPaused"]) == ("1", "2", "3"), (
        steps
    )
    assert not [line for line in operator.log_path.read_text().splitlines() if "HTTP Request:" in line]

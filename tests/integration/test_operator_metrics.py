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

pytestmark = pytest.mark.sandbox

HOST = "examples/canary/services.yaml", "examples/canary/virtualservice.yaml"
STEPS = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
# The only label names the operator's series may carry: no pods, hashes or revisions.
BOUNDED_LABELS = {"namespace", "name", "phase", "strategy", "rollout", "metric", "verb", "resource"}
BOUNDED_LABELS |= {"code", "outcome", "le"}

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
        self.labels = {"namespace": namespace, "name": name}

    def samples(self) -> Samples:
        code, text = get(f"{self.base}/metrics")
        assert code == 200, text
        return [
            (s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def value(self, metric: str, **labels: str) -> float | None:
        """The one sample of `metric` for this Rollout with these extra labels, or None."""
        wanted = {**self.labels, **labels}
        found = [v for n, lbls, v in self.samples() if n == metric and lbls == wanted]
        assert len(found) <= 1, f"{metric}{wanted}: {found}"
        return found[0] if found else None

    def phases(self) -> dict[str, float]:
        return {
            lbls["phase"]: v
            for n, lbls, v in self.samples()
            if n == "tidegate_rollout_phase" and {k: lbls[k] for k in ("namespace", "name")} == self.labels
        }

    def wait_for(self, metric: str, expected: float, timeout: float = 30, **labels: str) -> None:
        seen: list[float | None] = []

        def check() -> bool:
            seen.append(self.value(metric, **labels))
            return seen[-1] == expected

        try:
            wait_until(check, timeout, what=f"{metric}{ {**self.labels, **labels} } == {expected}")
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

    # Step 1 (setWeight 10), then paused at step 2 (index 1).
    t = s.when().image("registry.example/web:2.0").then().weight(10).step(1).phase("Paused")
    m.wait_for("tidegate_rollout_canary_weight", 10)
    m.wait_for("tidegate_rollout_step", 1)
    m.wait_phase("Paused")
    paused_for = m.value("tidegate_rollout_phase_seconds", phase="Paused")
    assert paused_for is not None and paused_for >= 0

    # Promoted: setWeight 50, paused at step 4 (index 3).
    t = t.when().promoted().then().weight(50).step(3).phase("Paused")
    m.wait_for("tidegate_rollout_canary_weight", 50)
    m.wait_for("tidegate_rollout_step", 3)
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

"""Canary scenarios on the sandbox with the real Istio CRDs; invariants watched throughout."""

from __future__ import annotations

import copy
import time
from typing import Any

from tests.e2e.dsl import _load, given
from tests.kube import Kube, OperatorProcess, wait_until

HOST = "examples/canary/services.yaml", "examples/canary/virtualservice.yaml"


def canary(steps: list[dict[str, Any]] | None = None, **canary_fields: Any) -> dict[str, Any]:
    doc = _load("examples/canary/rollout.yaml", "Rollout")
    doc = copy.deepcopy(doc)
    c = doc["spec"]["strategy"]["canary"]
    if steps is not None:
        c["steps"] = steps
    if not canary_fields.get("dynamicStableScale"):
        # Old pods go 2 s after promotion, not the default 30 s (the example's walk checks that one).
        c["scaleDownDelaySeconds"] = 2
    c.update(canary_fields)
    return doc


def hashes(kube: Kube) -> tuple[str, str]:
    st = kube.status("web")
    return st["stableRS"], st["currentPodHash"]


def test_host_split_walks_the_steps_to_full_promotion(kube: Kube) -> None:
    s = given(kube).objects(*HOST).rollout("examples/canary/rollout.yaml").watched()
    s.when().applied().then().phase("Healthy")
    t = s.when().image("registry.example/web:2.0").then()
    t.weight(10).step(1).phase("Paused").message_contains("paused at step 2/7")
    t.holds(
        lambda: any(
            r.get("name") == "canary-header"
            for r in kube.get("virtualservices.networking.istio.io", "web")["spec"]["http"]
        ),
        "the managed header route in the VirtualService",
    )
    vs = kube.get("virtualservices.networking.istio.io", "web")
    assert vs["spec"]["http"][0]["name"] == "canary-header", "managed routes go ahead of the user's"
    assert vs["spec"]["http"][0]["match"] == [{"headers": {"x-canary": {"exact": "true"}}}]
    t.weight(50).step(4).weight(100).step(6)
    t.phase("Healthy", timeout=60).weight(0)
    # The example's scaleDownDelaySeconds: the old pods stay a moment after promotion.
    t.replica_sets({"registry.example/web:1.0": 4, "registry.example/web:2.0": 4})
    t.replica_sets({"registry.example/web:2.0": 4}, timeout=60)
    vs = kube.get("virtualservices.networking.istio.io", "web")
    assert [r.get("name") for r in vs["spec"]["http"]] == ["primary"], "managed routes removed at the end"
    assert [d["weight"] for d in vs["spec"]["http"][0]["route"]] == [100, 0]
    stable, current = hashes(kube)
    assert stable == current
    for svc in ("web-stable", "web-canary"):
        sel = kube.get("service", svc)["spec"]["selector"]
        assert sel == {"app": "web", "rollouts-pod-template-hash": stable}, "user's selector keys kept"
    s.finish()


def test_subset_split_on_the_seed_shape(kube: Kube) -> None:
    s = given(kube).objects(
        "examples/canary-subset/service.yaml",
        "examples/canary-subset/destinationrule.yaml",
        "examples/canary-subset/virtualservice.yaml",
    )
    s = s.rollout("examples/canary-subset/rollout.yaml").watched()
    s.when().applied().then().phase("Healthy")
    stable = kube.status("api-gateway")["stableRS"]
    dr = kube.get("destinationrules.networking.istio.io", "api-gateway")
    assert [sub["labels"] for sub in dr["spec"]["subsets"]] == [{"rollouts-pod-template-hash": stable}] * 2
    doc = s.doc
    assert doc is not None
    doc["spec"]["template"]["metadata"]["labels"]["version"] = "v1.2.3"
    t = s.when().image("registry.example/org/api-gateway:v1.2.3").then()
    t.weight(5).vs_weights("api-gateway", 1, 95, 5)
    vs = kube.get("virtualservices.networking.istio.io", "api-gateway")
    assert vs["spec"]["http"][0]["route"] == [{"destination": {"host": "api-gateway", "subset": "canary"}}], (
        "the user's header route is left alone"
    )
    status = kube.status("api-gateway")
    assert status["canary"]["managedRoutes"] == ["http[1]"], "status says which routes are managed"
    dr = kube.get("destinationrules.networking.istio.io", "api-gateway")
    canary_hash = status["currentPodHash"]
    assert {sub["name"]: sub["labels"]["rollouts-pod-template-hash"] for sub in dr["spec"]["subsets"]} == {
        "stable": stable,
        "canary": canary_hash,
    }
    t.weight(50).phase("Healthy", timeout=60).vs_weights("api-gateway", 1, 100, 0)
    dr = kube.get("destinationrules.networking.istio.io", "api-gateway")
    assert {sub["labels"]["rollouts-pod-template-hash"] for sub in dr["spec"]["subsets"]} == {canary_hash}
    s.finish()


def test_indefinite_pause_waits_for_promote_and_promote_full_skips_the_rest(kube: Kube) -> None:
    steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 40}, {"pause": {}}, {"setWeight": 60}]
    s = given(kube).objects(*HOST).rollout(canary(steps)).watched()
    s.when().applied().then().phase("Healthy")
    t = s.when().image("registry.example/web:2.0").then().weight(20).phase("Paused")
    t.message_contains("until promoted")
    t = t.when().promoted().then().weight(40).step(3).phase("Paused")
    t.when().promoted(full=True).then().phase("Healthy").weight(0)
    assert kube.status("web")["stableRS"] == kube.status("web")["currentPodHash"]
    s.finish()


def test_abort_midway_then_retry(kube: Kube) -> None:
    steps = [{"setWeight": 30}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]
    s = given(kube).objects(*HOST).rollout(canary(steps, abortScaleDownDelaySeconds=3)).watched()
    s.when().applied().then().phase("Healthy")
    t = s.when().image("registry.example/web:2.0").then().weight(30).phase("Paused")
    t = t.when().aborted().then().weight(0).phase("Degraded").message_contains("aborted")
    t.replica_sets({"registry.example/web:1.0": 4}, timeout=30)
    wait_until(
        lambda: any(e["reason"] == "RolloutAborted" for e in kube.list("events")),
        30,
        what="a RolloutAborted Event",
    )
    t.when().retried().then().weight(30).phase("Paused")
    s.finish()


def test_abort_then_update_to_a_fixed_version(kube: Kube) -> None:
    steps = [{"setWeight": 30}, {"pause": {}}]
    s = given(kube).objects(*HOST).rollout(canary(steps, abortScaleDownDelaySeconds=1)).watched()
    s.when().applied().then().phase("Healthy")
    t = s.when().image("registry.example/web:2.0-bad").then().weight(30)
    t = t.when().aborted().then().phase("Degraded").weight(0)
    t = t.when().image("registry.example/web:2.1").then().weight(30).phase("Paused")
    t.when().promoted().then().phase("Healthy")
    t.replica_sets({"registry.example/web:2.1": 4}, timeout=30)
    s.finish()


def test_update_midway_restarts_the_steps_with_a_new_canary(kube: Kube) -> None:
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
    s = given(kube).objects(*HOST).rollout(canary(steps)).watched()
    s.when().applied().then().phase("Healthy")
    t = s.when().image("registry.example/web:2.0").then().weight(25).phase("Paused")
    t = t.when().promoted().then().weight(50).step(3)
    first_canary = kube.status("web")["currentPodHash"]
    t = t.when().image("registry.example/web:3.0").then()
    t.holds(lambda: kube.status("web")["currentPodHash"] != first_canary, "a new canary revision")
    t.weight(25).step(1).phase("Paused")
    wait_until(
        lambda: any(
            "starting the steps from the beginning" in e["message"]
            for e in kube.list("events")
            if e["reason"] == "NewRevision"
        ),
        30,
        what="a NewRevision Event",
    )
    t.replica_sets({"registry.example/web:1.0": 4, "registry.example/web:3.0": 1}, timeout=30)
    s.finish()


def test_rollback_to_the_stable_template_skips_the_steps(kube: Kube) -> None:
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
    s = given(kube).objects(*HOST).rollout(canary(steps)).watched()
    s.when().applied().then().phase("Healthy")
    s.when().image("registry.example/web:2.0").then().weight(25).phase("Paused")
    start = time.monotonic()
    t = s.when().image("registry.example/web:1.0").then().phase("Healthy", timeout=30).weight(0)
    assert time.monotonic() - start < 30
    t.replica_sets({"registry.example/web:1.0": 4}, timeout=30)
    s.finish()


def test_progress_deadline_marks_degraded_and_with_abort_returns_traffic(kube: Kube) -> None:
    steps = [{"setWeight": 25}, {"pause": {}}]
    s = given(kube).objects(*HOST).rollout(canary(steps)).watched()
    s.doc["spec"]["progressDeadlineSeconds"] = 8  # type: ignore[index]
    s.when().applied().then().phase("Healthy")
    # Canary pods that can never be scheduled: no progress.
    s.doc["spec"]["template"]["spec"]["nodeSelector"] = {"nowhere": "true"}  # type: ignore[index]
    t = s.when().image("registry.example/web:2.0").then().phase("Degraded", timeout=40)
    st = kube.status("web")
    cond = {c["type"]: c for c in st["conditions"]}["Progressing"]
    assert (cond["status"], cond["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert not st.get("abort")
    t.when().spec("spec.progressDeadlineAbort", True).then().holds(
        lambda: kube.status("web").get("abort") is True, "aborted by the deadline", timeout=40
    )
    t.weight(0).phase("Degraded")
    s.finish()


def test_kubectl_scale_during_a_canary(kube: Kube) -> None:
    steps = [{"setWeight": 50}, {"pause": {}}]
    s = given(kube).objects(*HOST).rollout(canary(steps)).watched()
    s.when().applied().then().phase("Healthy")
    t = s.when().image("registry.example/web:2.0").then().weight(50).phase("Paused")
    t.replica_sets({"registry.example/web:1.0": 4, "registry.example/web:2.0": 2})
    t = t.when().scaled(6).then().replica_sets({"registry.example/web:1.0": 6, "registry.example/web:2.0": 3})
    t.when().promoted().then().phase("Healthy").replica_sets({"registry.example/web:2.0": 6}, timeout=30)
    s.finish()


def test_operator_restart_mid_pause_keeps_the_pause_timing(kube: Kube, operator: OperatorProcess) -> None:
    steps = [{"setWeight": 20}, {"pause": {"duration": "15s"}}, {"setWeight": 40}, {"pause": {}}]
    s = given(kube).objects(*HOST).rollout(canary(steps)).watched()
    s.when().applied().then().phase("Healthy")
    s.when().image("registry.example/web:2.0").then().weight(20).step(1).phase("Paused")
    started = kube.status("web")["pauseConditions"][0]["startTime"]
    seen_steps: list[int] = []
    seen_starts: set[str] = {started}
    operator.kill()
    try:
        operator.start()

        def advanced() -> bool:
            st = kube.status("web")
            idx = st.get("currentStepIndex")
            if idx == 1:  # the 15 s pause (step 3's own pause comes later)
                seen_starts.update(
                    c["startTime"] for c in st.get("pauseConditions") or [] if c.get("startTime")
                )
            if not seen_steps or seen_steps[-1] != idx:
                seen_steps.append(idx)
            return bool(idx == 3)

        wait_until(advanced, 60, interval=0.2, what="step 3 after the restart")
    finally:
        if operator.proc is None:
            operator.start()
    from datetime import UTC, datetime

    began = datetime.fromisoformat(started.replace("Z", "+00:00"))
    elapsed = (datetime.now(UTC) - began).total_seconds()
    # The restarted operator goes on with the pause it found: the start time never changes,
    # and the pause never ends early (how late depends on the restart and the machine's load).
    assert seen_starts == {started}, f"the pause was started again: {sorted(seen_starts)}"
    assert 15 <= elapsed < 60, f"pause of 15 s ended {elapsed:.1f}s after it began"
    assert seen_steps == [1, 2, 3] or seen_steps == [1, 3] or seen_steps == [2, 3], seen_steps
    assert kube.status("web")["canary"]["weights"]["canary"]["weight"] in (20, 40)
    s.finish()


def test_missing_virtualservice_is_a_condition_not_a_crash(kube: Kube) -> None:
    kube.apply_file("examples/canary/services.yaml")
    s = given(kube).rollout(canary([{"setWeight": 10}]))
    s.when().applied().then().phase("Degraded").message_contains("VirtualService web not found")
    s.objects("examples/canary/virtualservice.yaml").then().phase("Healthy", timeout=40)


def test_deleting_a_rollout_mid_canary_returns_traffic_to_stable(kube: Kube) -> None:
    steps = [{"setWeight": 40}, {"pause": {}}]
    s = given(kube).objects(*HOST).rollout(canary(steps)).watched()
    s.when().applied().then().phase("Healthy")
    s.when().image("registry.example/web:2.0").then().weight(40)
    kube.kubectl("delete", "rollout.tidegate.io/web", "--timeout=60s")
    vs = kube.get("virtualservices.networking.istio.io", "web")
    assert [d["weight"] for d in vs["spec"]["http"][0]["route"]] == [100, 0]
    assert kube.get_or_none("service", "web-stable") is not None, "the user's Services stay"
    wait_until(lambda: not kube.replica_sets("web"), 60, what="ReplicaSets garbage-collected")
    s.finish()


def test_each_transition_of_a_canary_is_told_by_one_event(kube: Kube) -> None:
    """Issue 11: one Event per transition. A canary through setWeight / pause / setWeight to
    promotion: every Event the operator posts from the update on tells of a different
    transition (no reason and message twice, no Event counted twice by the API server), and
    the transitions users look for are all there."""
    steps = [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]
    s = given(kube).objects(*HOST).rollout(canary(steps)).watched()
    s.when().applied().then().phase("Healthy")

    def rollout_events() -> list[dict[str, Any]]:
        return [
            e
            for e in kube.list("events")
            if e["involvedObject"].get("kind") == "Rollout" and e["involvedObject"].get("name") == "web"
        ]

    before = {e["metadata"]["name"] for e in rollout_events()}
    t = s.when().image("registry.example/web:2.0").then().weight(50).phase("Paused")
    t = t.when().promoted().then().phase("Healthy", timeout=60).weight(0)
    t.replica_sets({"registry.example/web:2.0": 4}, timeout=60)
    wanted = {"NewRevision", "ReplicaSetCreated", "StepCompleted", "RolloutPaused", "RolloutPromoted"}

    def told() -> list[dict[str, Any]] | None:
        new = [e for e in rollout_events() if e["metadata"]["name"] not in before]
        reasons = {e["reason"] for e in new}
        done = any(e["reason"] == "RolloutHealthy" for e in new) and wanted <= reasons
        return new if done else None

    new = wait_until(told, 30, what=f"the update's Events, including {sorted(wanted)} and RolloutHealthy")
    seen = [(e["reason"], e["message"]) for e in new]
    repeated = sorted({x for x in seen if seen.count(x) > 1})
    assert not repeated, f"a transition told twice: {repeated} (all: {seen})"
    counted = [(e["reason"], e.get("count")) for e in new if (e.get("count") or 1) > 1]
    assert not counted, f"Events the API server counted more than once: {counted}"
    steps_done = [m for r, m in seen if r == "StepCompleted"]
    assert len(steps_done) == 3, f"one StepCompleted per step, saw {steps_done}"
    print(f"{len(new)} Events for the update and promotion: {[r for r, _ in seen]}")
    s.finish()

"""Runtime control as intents: each one written with a raw `kubectl patch`, no tidegate CLI.

The operator owns the bookkeeping (step index, start times, analysis rounds); a client
writes only what it wants: `status.abort`, cleared `status.pauseConditions`,
`status.skipStep`, `status.promoteFull`, `spec.paused`. Any client writing the same
intent (kubectl, an Argo CD action, a script, the CLI) gets the same result; the last
test shows it for retry, the CLI against the raw patch.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner
from kubernetes import client, config, watch

from tests.e2e.dsl import _load, given
from tests.kube import REPO, Kube, wait_until
from tidegate.cli.main import cli

pytestmark = pytest.mark.sandbox

HOST = "examples/canary/services.yaml", "examples/canary/virtualservice.yaml"
Status = dict[str, Any]


def canary(steps: list[dict[str, Any]], name: str = "web") -> dict[str, Any]:
    doc = copy.deepcopy(_load("examples/canary/rollout.yaml", "Rollout"))
    doc["spec"]["strategy"]["canary"]["steps"] = steps
    doc["spec"]["strategy"]["canary"]["abortScaleDownDelaySeconds"] = 2
    doc["spec"]["strategy"]["canary"]["scaleDownDelaySeconds"] = 2
    if name != "web":
        doc = json.loads(re.sub(r"\bweb\b", name, json.dumps(doc)))
    return doc


def host_objects(kube: Kube, name: str) -> None:
    """The example's Services and VirtualService, for a Rollout called `name`."""
    for path in HOST:
        kube.apply(re.sub(r"\bweb\b", name, (REPO / path).read_text()))


def intent(kube: Kube, name: str, status: dict[str, Any]) -> None:
    """What any client can do: a JSON merge patch of the status subresource."""
    kube.kubectl(
        "patch",
        f"rollout.tidegate.io/{name}",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def spec_intent(kube: Kube, name: str, spec: dict[str, Any]) -> None:
    kube.kubectl("patch", f"rollout.tidegate.io/{name}", "--type=merge", "-p", json.dumps({"spec": spec}))


def resource_version(kube: Kube, name: str) -> str:
    return str(kube.rollout(name)["metadata"]["resourceVersion"])


def statuses_after(
    kube: Kube, name: str, since: str, until: Callable[[Status], bool], timeout: float = 90
) -> list[Status]:
    """Every status the Rollout went through after resourceVersion `since`, up to `until`.

    A watch from a resourceVersion delivers every change after it, so a step index the
    operator held for one write only is seen too.
    """
    api_client = config.new_client_from_config(str(kube.sandbox.kubeconfig))  # type: ignore[no-untyped-call]
    api = client.CustomObjectsApi(api_client)
    seen: list[Status] = []
    deadline = time.monotonic() + timeout
    rv = since
    try:
        while time.monotonic() < deadline:
            w = watch.Watch()  # type: ignore[no-untyped-call]
            for event in w.stream(  # type: ignore[no-untyped-call]
                api.list_namespaced_custom_object,
                "tidegate.io",
                "v1alpha1",
                kube.namespace,
                "rollouts",
                field_selector=f"metadata.name={name}",
                resource_version=rv,
                timeout_seconds=max(1, int(deadline - time.monotonic())),
            ):
                obj = event["object"]
                if event["type"] == "ERROR":
                    raise AssertionError(f"watching rollout {name} from {rv}: {obj}")
                rv = obj["metadata"]["resourceVersion"]
                st = obj.get("status") or {}
                seen.append(st)
                if until(st):
                    w.stop()  # type: ignore[no-untyped-call]
                    return seen
    finally:
        api_client.close()
    brief = [(s.get("currentStepIndex"), s.get("phase"), s.get("abort")) for s in seen]
    raise AssertionError(f"timed out after {timeout:.0f}s; (step, phase, abort) seen: {brief}")


def step_indexes(history: list[Status]) -> list[int]:
    """The step indexes in the order they were written, repeats dropped."""
    out: list[int] = []
    for st in history:
        index = st.get("currentStepIndex")
        if isinstance(index, int) and (not out or out[-1] != index):
            out.append(index)
    return out


def paused_at(index: int) -> Callable[[Status], bool]:
    return lambda st: bool(
        st.get("currentStepIndex") == index and st.get("phase") == "Paused" and st.get("pauseConditions")
    )


def test_abort_returns_all_traffic_and_clearing_abort_restarts_the_steps(kube: Kube) -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 40}, {"pause": {}}]
    s = given(kube).objects(*HOST).rollout(canary(steps)).watched()
    s.when().applied().then().phase("Healthy")
    t = s.when().image("registry.example/web:2.0").then().weight(20).step(1).phase("Paused")
    intent(kube, "web", {"pauseConditions": []})
    t.weight(40).step(3).phase("Paused")

    # Given a canary at step 4/4, when `abort: true` is written,
    intent(kube, "web", {"abort": True})
    # then all traffic goes back to stable and the rollout is Degraded.
    t.phase("Degraded").weight(0).vs_weights("web", "primary", 100, 0).message_contains("aborted")
    t.replica_sets({"registry.example/web:1.0": 4}, timeout=30)
    before = kube.status("web")
    assert before["abort"] is True and before.get("abortedRevision") == before["currentPodHash"]
    round_before = int(before.get("analysisRound") or 0)

    # When only `abort: false` is written (the whole retry),
    since, asked = resource_version(kube, "web"), datetime.now(UTC).replace(microsecond=0)
    intent(kube, "web", {"abort": False})
    # then the operator starts the steps again at step 1: index 0, the first weight, the first pause.
    history = statuses_after(kube, "web", since, paused_at(1))
    assert step_indexes(history) == [3, 0, 1], step_indexes(history)
    t.weight(20).vs_weights("web", "primary", 80, 20).phase("Paused")
    st = kube.status("web")
    assert st["abort"] is False and st["currentStepIndex"] == 1
    assert int(st.get("analysisRound") or 0) == round_before + 1, "a new round of analysis runs"
    for gone in ("abortedAt", "abortedRevision", "abortMessage"):
        assert not st.get(gone), f"{gone} left after the retry: {st.get(gone)!r}"
    progress = datetime.fromisoformat(st["progressAt"].replace("Z", "+00:00"))
    assert progress >= asked, f"the progress clock counts from the retry: {progress} < {asked}"

    # And it carries on through the steps as a first attempt would.
    intent(kube, "web", {"pauseConditions": []})
    t.weight(40).step(3).phase("Paused")
    s.finish()


def test_clearing_pause_conditions_ends_a_pause_and_promote_full_promotes(kube: Kube) -> None:
    steps: list[dict[str, Any]] = [
        {"setWeight": 20},
        {"pause": {}},
        {"setWeight": 40},
        {"pause": {}},
        {"setWeight": 60},
    ]
    s = given(kube).objects(*HOST).rollout(canary(steps)).watched()
    s.when().applied().then().phase("Healthy")
    t = s.when().image("registry.example/web:2.0").then().weight(20).step(1).phase("Paused")
    t.message_contains("until promoted")

    # Argo's way of promoting a pause: clear the pause conditions.
    intent(kube, "web", {"pauseConditions": []})
    t.weight(40).step(3).phase("Paused")

    intent(kube, "web", {"promoteFull": True})
    t.phase("Healthy").weight(0).vs_weights("web", "primary", 100, 0)
    t.replica_sets({"registry.example/web:2.0": 4}, timeout=30)
    st = kube.status("web")
    assert st["stableRS"] == st["currentPodHash"] and st["currentStepIndex"] == len(steps)
    assert not st.get("promoteFull"), "the operator resets promoteFull once promoted"
    s.finish()


def slow_analysis(kube: Kube) -> None:
    """A template whose run stays Running for an hour: its first measurement is an hour away."""
    kube.apply(
        {
            "apiVersion": "tidegate.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "slow"},
            "spec": {
                "metrics": [
                    {
                        "name": "never-yet",
                        "initialDelay": "1h",
                        "successCondition": "result[0] >= 0",
                        "provider": {"prometheus": {"address": "http://127.0.0.1:9", "query": "vector(1)"}},
                    }
                ]
            },
        }
    )


def test_skip_step_completes_an_analysis_and_an_hour_long_pause(kube: Kube) -> None:
    slow_analysis(kube)
    steps: list[dict[str, Any]] = [
        {"setWeight": 20},
        {"analysis": {"templates": [{"templateName": "slow"}]}},
        {"setWeight": 40},
        {"pause": {"duration": "1h"}},
        {"setWeight": 60},
    ]
    s = given(kube).objects(*HOST).rollout(canary(steps)).watched()
    s.when().applied().then().phase("Healthy")
    t = s.when().image("registry.example/web:2.0").then().weight(20).step(1)
    t.holds(
        lambda: (
            kube.status("web").get("canary", {}).get("currentStepAnalysisRunStatus", {}).get("status")
            == "Running"
        ),
        "the step's analysis run running",
    )
    assert kube.status("web")["phase"] == "Progressing", "an analysis step is not a pause"

    # Not paused, so there is no pause condition to clear: the intent names the step.
    intent(kube, "web", {"skipStep": 1})
    t.weight(40).step(3).phase("Paused").message_contains("more (until")
    st = kube.status("web")
    assert "skipStep" not in st, "the operator clears skipStep once done"

    # A late or repeated write (the rollout has moved past step 1) changes nothing.
    intent(kube, "web", {"skipStep": 1})
    t.holds(lambda: "skipStep" not in kube.status("web"), "the stale skipStep cleared")
    st = kube.status("web")
    assert (st["currentStepIndex"], st["phase"]) == (3, "Paused"), st.get("message")

    # The hour-long pause ends at once: on to the last setWeight, then promotion.
    since = resource_version(kube, "web")
    intent(kube, "web", {"skipStep": 3})
    history = statuses_after(
        kube, "web", since, lambda st: st.get("phase") == "Healthy" and st["stableRS"] == st["currentPodHash"]
    )
    assert step_indexes(history)[:3] == [3, 4, 5], step_indexes(history)
    weights = [(h.get("canary") or {}).get("weights", {}).get("canary", {}).get("weight") for h in history]
    assert 60 in weights, weights
    t.phase("Healthy").weight(0)
    assert "skipStep" not in kube.status("web")
    s.finish()


def test_spec_paused_holds_the_rollout_and_unpausing_releases_it(kube: Kube) -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 40}]
    s = given(kube).objects(*HOST).rollout(canary(steps)).watched()
    s.when().applied().then().phase("Healthy")

    # Given spec.paused: true, a new revision waits before its first step.
    spec_intent(kube, "web", {"paused": True})
    t = s.when().image("registry.example/web:2.0").then().phase("Paused").step(0)
    t.message_contains("spec.paused").vs_weights("web", "primary", 100, 0)
    assert not kube.status("web").get("pauseConditions"), "spec.paused is not a pause condition"

    # spec.paused: false lets it walk the steps, to the pause step.
    spec_intent(kube, "web", {"paused": False})
    t.weight(20).step(1).phase("Paused").message_contains("until promoted")

    # spec.paused and a pause step are separate holds: lifting spec.paused leaves the pause step.
    spec_intent(kube, "web", {"paused": True})
    t.message_contains("spec.paused").step(1).phase("Paused")
    spec_intent(kube, "web", {"paused": False})
    t.message_contains("until promoted").step(1).phase("Paused").weight(20)
    assert kube.status("web")["pauseConditions"], "the pause step still waits for a promote"
    intent(kube, "web", {"pauseConditions": []})
    t.phase("Healthy").weight(0)
    assert kube.status("web")["currentStepIndex"] == len(steps)
    s.finish()


@pytest.fixture
def tidegate(kube: Kube, monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """The tidegate CLI entry point, in-process, against the test namespace."""
    monkeypatch.setenv("KUBECONFIG", str(kube.sandbox.kubeconfig))

    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, [*args, "-n", kube.namespace], catch_exceptions=False)
        assert result.exit_code == 0, f"tidegate {' '.join(args)} -> {result.exit_code}:\n{result.output}"
        return result.output

    return run


def test_the_cli_and_a_raw_patch_retry_alike(kube: Kube, tidegate: Callable[..., str]) -> None:
    steps: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 40}, {"pause": {}}]
    host_objects(kube, "cli")
    by_cli = given(kube).rollout(canary(steps, name="cli"))
    raw = given(kube).objects(*HOST).rollout(canary(steps))
    for s in (raw, by_cli):
        s.when().applied().then().phase("Healthy")
    # The invariants are armed by the first full stable: watch once both are up.
    raw.watched()
    for s in (raw, by_cli):
        s.when().image(f"registry.example/{s.name}:2.0")
    for s in (raw, by_cli):
        t = s.then().weight(20).step(1).phase("Paused")
        intent(kube, s.name, {"pauseConditions": []})
        t.weight(40).step(3).phase("Paused")
        intent(kube, s.name, {"abort": True})
        t.phase("Degraded").weight(0)
    rounds = {s.name: int(kube.status(s.name).get("analysisRound") or 0) for s in (raw, by_cli)}

    since = {s.name: resource_version(kube, s.name) for s in (raw, by_cli)}
    intent(kube, "web", {"abort": False})
    assert tidegate("retry", "cli").strip() == "rollout cli retried: steps start again at 1/4"

    outcome = {}
    for s in (raw, by_cli):
        history = statuses_after(kube, s.name, since[s.name], paused_at(1))
        s.then().weight(20).phase("Paused")
        st = kube.status(s.name)
        outcome[s.name] = {
            "steps": step_indexes(history),
            "currentStepIndex": st["currentStepIndex"],
            "abort": st["abort"],
            "analysisRounds": int(st.get("analysisRound") or 0) - rounds[s.name],
            "abortedRevision": st.get("abortedRevision"),
            "weight": st["canary"]["weights"]["canary"]["weight"],
        }
    expected = {
        "steps": [3, 0, 1],
        "currentStepIndex": 1,
        "abort": False,
        "analysisRounds": 1,
        "abortedRevision": None,
        "weight": 20,
    }
    assert outcome == {"web": expected, "cli": expected}, outcome
    wait_until(
        lambda: sum(e["reason"] == "RolloutRetried" for e in kube.list("events")) >= 2,
        30,
        what="a RolloutRetried Event for each rollout",
    )
    raw.finish()

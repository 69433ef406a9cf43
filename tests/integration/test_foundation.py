"""Foundation on the real sandbox: CRDs, the first reconcile to Ready, scale, GC, invalid specs."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from tests.kube import Kube, wait_until
from tidegate.sandbox import Sandbox
from tidegate.sandbox.assets import K8S_VERSION


def rollout(
    name: str = "web", replicas: int = 3, image: str = "example/web:1", **strategy: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
            "strategy": strategy or {"canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "1s"}}]}},
        },
    }


def test_sandbox_serves_the_pinned_version_with_ready_kwok_nodes(sandbox: Sandbox) -> None:
    version = json.loads(sandbox.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == f"v{K8S_VERSION}"
    assert version["clientVersion"]["gitVersion"] == f"v{K8S_VERSION}"
    nodes = json.loads(sandbox.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    assert len(nodes) >= 1
    for node in nodes:
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", node["metadata"]["name"]
    start = time.monotonic()
    assert sandbox.up(log=lambda _m: None) >= 0
    assert time.monotonic() - start < 5, "a second `up` must be fast when already up"


def test_rollout_reaches_ready_with_running_pods(kube: Kube) -> None:
    kube.apply(rollout())
    kube.kubectl("wait", "--for=condition=Ready", "rollout.tidegate.io/web", "--timeout=60s")
    st = kube.status("web")
    assert st["phase"] == "Healthy"
    assert st["observedGeneration"] == kube.rollout("web")["metadata"]["generation"]
    assert isinstance(st["observedGeneration"], int)
    assert st["readyReplicas"] == st["availableReplicas"] == st["updatedReplicas"] == 3
    assert st["selector"] == "app=web"
    sets = kube.replica_sets("web")
    assert len(sets) == 1
    rs = sets[0]
    pod_hash = rs["metadata"]["labels"]["rollouts-pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{pod_hash}"
    assert st["currentPodHash"] == st["stableRS"] == pod_hash
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "Rollout"
    pods = kube.list("pods", f"rollouts-pod-template-hash={pod_hash}")
    assert len(pods) == 3
    assert all(p["status"]["phase"] == "Running" for p in pods)
    assert all(p["spec"]["nodeName"].startswith("kwok-node-") for p in pods)
    # kopf posts Events from a queue, a moment after the status write.
    wait_until(
        lambda: (
            {"ReplicaSetCreated", "RolloutHealthy"}
            <= {e["reason"] for e in kube.list("events") if e["involvedObject"]["kind"] == "Rollout"}
        ),
        30,
        what="ReplicaSetCreated and RolloutHealthy Events",
    )


def test_scale_goes_through_the_scale_subresource(kube: Kube) -> None:
    kube.apply(rollout(replicas=2))
    kube.wait_phase("web", "Healthy")
    kube.kubectl("scale", "rollout.tidegate.io/web", "--replicas=4")
    scale = json.loads(
        kube.kubectl(
            "get", "--raw", f"/apis/tidegate.io/v1alpha1/namespaces/{kube.namespace}/rollouts/web/scale"
        ).stdout
    )
    assert scale["spec"]["replicas"] == 4
    wait_until(lambda: kube.status("web").get("availableReplicas") == 4, 60, what="4 available replicas")
    assert kube.replica_sets("web")[0]["spec"]["replicas"] == 4
    scale = json.loads(
        kube.kubectl(
            "get", "--raw", f"/apis/tidegate.io/v1alpha1/namespaces/{kube.namespace}/rollouts/web/scale"
        ).stdout
    )
    assert scale["status"]["replicas"] == 4
    assert scale["status"]["selector"] == "app=web"


def test_deleting_the_rollout_garbage_collects_its_replicaset(kube: Kube) -> None:
    kube.apply(rollout(name="gone"))
    kube.wait_phase("gone", "Healthy")
    assert kube.replica_sets("gone")
    kube.kubectl("delete", "rollout.tidegate.io/gone", "--timeout=60s")
    wait_until(lambda: not kube.replica_sets("gone"), 60, what="ReplicaSets garbage-collected")


def _refused(kube: Kube, doc: dict[str, Any]) -> str:
    proc = kube.kubectl("apply", "-f", "-", input=json.dumps(doc), check=False)
    assert proc.returncode != 0, "the API server accepted an invalid Rollout"
    return proc.stderr


def test_invalid_specs_are_refused_by_the_api_server_naming_the_field(kube: Kube) -> None:
    bad_weight = rollout()
    bad_weight["spec"]["strategy"]["canary"]["steps"][0]["setWeight"] = 150
    # A cross-field rule (the bound is trafficRouting.maxTrafficWeight when set), so the API
    # server names the steps list and the message names the field within each step.
    err = _refused(kube, bad_weight)
    assert (
        "spec.strategy.canary.steps" in err and "setWeight and setCanaryScale.weight must be at most" in err
    ), err

    two_strategies = rollout()
    two_strategies["spec"]["strategy"]["blueGreen"] = {"activeService": "web"}
    assert "exactly one of canary or blueGreen" in _refused(kube, two_strategies)

    two_actions = rollout()
    two_actions["spec"]["strategy"]["canary"]["steps"][0]["pause"] = {}
    err = _refused(kube, two_actions)
    assert "spec.strategy.canary.steps[0]" in err and "exactly one of setWeight" in err

    bad_duration = rollout()
    bad_duration["spec"]["strategy"]["canary"]["steps"][1]["pause"]["duration"] = "ten minutes"
    err = _refused(kube, bad_duration)
    assert "spec.strategy.canary.steps[1].pause.duration" in err and "must be a duration" in err


def test_invalid_spec_the_schema_cannot_catch_gets_invalidspec_and_keeps_serving(kube: Kube) -> None:
    kube.apply(rollout(name="sel"))
    kube.wait_phase("sel", "Healthy")
    broken = copy.deepcopy(rollout(name="sel", image="example/web:2"))
    broken["spec"]["selector"]["matchLabels"] = {"app": "other"}
    proc = kube.kubectl("apply", "-f", "-", input=json.dumps(broken), check=False)
    if proc.returncode != 0:
        # selector is immutable in spirit; use a semantic error the schema allows instead
        pass
    bad = rollout(name="sel", image="example/web:2")
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "not-sel"}
    kube.apply(bad)
    st = kube.wait_phase("sel", "Degraded")
    invalid = next(c for c in st["conditions"] if c["type"] == "InvalidSpec")
    assert invalid["status"] == "True"
    assert "spec.selector.matchLabels.app" in invalid["message"]
    # The running version keeps serving: its ReplicaSet is untouched, no new one.
    sets = kube.replica_sets("sel")
    assert len(sets) == 1 and sets[0]["status"]["availableReplicas"] == 3
    # ... and the operator is alive: a fix is picked up.
    kube.apply(rollout(name="sel", image="example/web:2"))
    kube.wait_phase("sel", "Healthy", timeout=60)


def test_an_analysis_template_that_does_not_exist_is_an_invalidspec_and_the_stable_keeps_serving(
    kube: Kube,
) -> None:
    steps = [{"setWeight": 50}, {"analysis": {"templates": [{"templateName": "no-such-template"}]}}]
    kube.apply(rollout(name="tpl", canary={"steps": steps}))
    kube.wait_phase("tpl", "Healthy")
    kube.apply(rollout(name="tpl", image="example/web:2", canary={"steps": steps}))

    def invalid() -> dict[str, Any] | None:
        st = kube.status("tpl")
        cond = next((c for c in st.get("conditions") or [] if c["type"] == "InvalidSpec"), {})
        return st if cond.get("status") == "True" else None

    st = wait_until(invalid, 60, what="InvalidSpec for the missing template")
    assert st["phase"] == "Degraded" and "no-such-template" in st["message"], st["message"]
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    # Without a router the 50% step shares pods between the versions; nothing goes below capacity.
    available = sum(rs["status"].get("availableReplicas") or 0 for rs in kube.replica_sets("tpl"))
    assert available >= 3, f"the running versions keep serving: {available} pods available"


def test_kubectl_explain_shows_descriptions(sandbox: Sandbox) -> None:
    out = sandbox.kubectl(
        "explain", "rollouts.spec.strategy.canary.steps", "--api-version=tidegate.io/v1alpha1"
    ).stdout
    assert "setWeight" in out
    assert "Send this share of traffic to the canary" in out


def test_printer_columns(kube: Kube) -> None:
    kube.apply(rollout(name="cols"))
    kube.wait_phase("cols", "Healthy")
    header = kube.kubectl("get", "rollouts.tidegate.io", "cols").stdout.splitlines()[0].split()
    assert header == [
        "NAME",
        "DESIRED",
        "CURRENT",
        "UP-TO-DATE",
        "AVAILABLE",
        "PHASE",
        "STEP",
        "CANARY-WEIGHT",
        "AGE",
    ]

"""Moving a Deployment under a Rollout as Argo Rollouts does: workloadRef's scaleDown modes
other than `onsuccess` (that one is `test_parity.py::test_a_deployment_is_adopted_through_
workload_ref_and_scaled_down_on_success`), and an HPA moved over to the Rollout.

Argo's semantics (rollout/replicaset.go, rollout/sync.go; docs/features/specification.md):
`never` leaves the Deployment as it is; `progressively`, while the Rollout's first revision is
not Healthy, sets the Deployment to `spec.replicas - status.readyReplicas` of the Rollout, so
the two together keep the desired count, down to 0 once Healthy; and an HPA whose
scaleTargetRef is the Rollout scales it through the Rollout's scale subresource.
"""

from __future__ import annotations

import json
import subprocess
import threading
from typing import Any

import pytest

from tests.e2e.dsl import given
from tests.e2e.test_parity import order_service
from tests.kube import Kube, wait_until

pytestmark = pytest.mark.sandbox

IMAGE_1 = "registry.example/order-service:1.0"


def adopting(scale_down: str, steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Argo's examples/workload-ref shape: no selector, no template, the Deployment's."""
    return {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "order-service"},
        "spec": {
            "replicas": 3,
            "workloadRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "order-service",
                "scaleDown": scale_down,
            },
            "strategy": {"canary": {"steps": steps or [{"setWeight": 34}, {"pause": {}}]}},
        },
    }


def deployment_running(kube: Kube) -> None:
    kube.apply(order_service())
    wait_until(
        lambda: (kube.get("deployments", "order-service").get("status") or {}).get("availableReplicas") == 3,
        60,
        what="the Deployment's 3 pods available",
    )


def deployment_replicas(kube: Kube) -> int:
    return int(kube.get("deployments", "order-service")["spec"]["replicas"])


class ReplicasWatch:
    """Every spec.replicas the Deployment is written with, in order, from a watch (polling
    could miss a value that lasted a moment)."""

    def __init__(self, kube: Kube, name: str) -> None:
        self.seen: list[int] = []
        sb = kube.sandbox
        self.proc = subprocess.Popen(
            [str(sb.kubectl_dir() / "kubectl"), f"--kubeconfig={sb.kubeconfig}", "-n", kube.namespace,
             "get", f"deployment/{name}", "--watch", "--output-watch-events", "-o", "json"],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        decoder, buffer = json.JSONDecoder(), ""
        for line in self.proc.stdout:
            buffer += line
            try:
                event, _ = decoder.raw_decode(buffer.strip())
            except json.JSONDecodeError:
                continue
            buffer = ""
            replicas = int(event["object"]["spec"]["replicas"])
            if not self.seen or self.seen[-1] != replicas:
                self.seen.append(replicas)

    def stop(self) -> list[int]:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.thread.join(timeout=10)
        return self.seen


def test_scale_down_never_leaves_the_deployment_at_its_replicas(kube: Kube) -> None:
    """The Rollout runs its own three pods beside the Deployment's three, through the first
    revision and an update, and never writes the Deployment."""
    deployment_running(kube)
    s = given(kube).rollout(adopting("never"))
    t = s.when().applied().then().phase("Healthy", timeout=60).replica_sets({IMAGE_1: 3})
    kube.patch(
        "deployments",
        "order-service",
        {"spec": {"template": {"spec": {"containers": [{"name": "order-service", "image": "x/o:2"}]}}}},
    )
    t.phase("Paused", timeout=60).replica_sets({IMAGE_1: 2, "x/o:2": 1})
    deployment = kube.get("deployments", "order-service")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["metadata"]["generation"] == 2, "written once, by the test's template edit"
    assert not [e for e in kube.list("events") if e["reason"] == "WorkloadScaledDown"]


def test_scale_down_progressively_hands_the_pods_over_one_by_one(kube: Kube) -> None:
    """A quota of 4 pods leaves room for one Rollout pod beside the Deployment's three: only
    scaling the Deployment down as each Rollout pod becomes ready lets the next one in, so the
    migration finishes only if the Deployment goes 3, 2, 1, 0 (onsuccess would wait forever)."""
    deployment_running(kube)
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "pods"},
            "spec": {"hard": {"pods": "4"}},
        }
    )
    wait_until(
        lambda: (kube.get("resourcequotas", "pods").get("status") or {}).get("used", {}).get("pods") == "3",
        30,
        what="the quota counting the Deployment's 3 pods",
    )
    watch = ReplicasWatch(kube, "order-service")
    s = given(kube).rollout(adopting("progressively"))
    s.when().applied().then().phase("Healthy", timeout=120).replica_sets({IMAGE_1: 3})
    wait_until(lambda: deployment_replicas(kube) == 0, 30, what="the Deployment at 0")
    scaled = sorted(e["message"] for e in kube.list("events") if e["reason"] == "WorkloadScaledDown")
    assert [m.split(" to ")[1].split(" ")[0] for m in scaled] == ["0", "1", "2"], scaled

    # Argo: "If the Rollout fails the Deployment will be scaled back up" (by what is missing).
    pod = kube.list("pods", "rollouts-pod-template-hash")[0]["metadata"]["name"]
    kube.kubectl(
        "patch", "pod", pod, "--subresource=status", "--type=strategic",
        "-p", json.dumps({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
    )  # fmt: skip
    wait_until(lambda: deployment_replicas(kube) == 1, 60, what="the Deployment scaled back up to 1")
    assert watch.stop() == [3, 2, 1, 0, 1]


def rollout_scale(kube: Kube, name: str) -> dict[str, Any]:
    path = f"/apis/tidegate.io/v1alpha1/namespaces/{kube.namespace}/rollouts/{name}/scale"
    out: dict[str, Any] = json.loads(kube.sandbox.kubectl("get", "--raw", path).stdout)
    return out


def test_an_hpa_pointed_at_the_rollout_scales_it_through_the_scale_subresource(kube: Kube) -> None:
    """Argo's HPA docs, moved over: scaleTargetRef kind Rollout, apiVersion tidegate.io/v1alpha1.
    The sandbox has no metrics-server, so the HPA cannot measure; it can still resolve its target
    (AbleToScale) and enforce minReplicas, which it does through /scale."""
    doc = {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "registry.example/web:1.0",
                            "resources": {"requests": {"cpu": "100m"}},
                        }
                    ]
                },
            },
            "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}},
        },
    }
    s = given(kube).rollout(doc)
    t = s.when().applied().then().phase("Healthy")
    scale = rollout_scale(kube, "web")
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2
    assert scale["status"]["replicas"] == 2
    assert scale["status"]["selector"].startswith("app=web"), scale["status"]

    kube.kubectl("scale", "rollouts.tidegate.io/web", "--replicas=3")
    t.phase("Healthy").replica_sets({"registry.example/web:1.0": 3})

    kube.apply(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "tidegate.io/v1alpha1", "kind": "Rollout", "name": "web"},
                "minReplicas": 4,
                "maxReplicas": 6,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 60},
                        },
                    }
                ],
            },
        }
    )

    def able_to_scale() -> dict[str, Any] | None:
        conditions = (kube.get("horizontalpodautoscalers", "web").get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "AbleToScale" and c["status"] == "True"), None)

    condition = wait_until(able_to_scale, 60, what="the HPA's AbleToScale condition True")
    assert condition["reason"] in ("SucceededGetScale", "SucceededRescale", "ReadyForNewScale"), condition
    # Below minReplicas the HPA rescales without metrics: it writes the Rollout through /scale.
    wait_until(lambda: kube.rollout("web")["spec"]["replicas"] == 4, 60, what="the HPA's minReplicas 4")
    t.phase("Healthy").replica_sets({"registry.example/web:1.0": 4})
    hpa = kube.get("horizontalpodautoscalers", "web")
    assert hpa["status"]["desiredReplicas"] == 4

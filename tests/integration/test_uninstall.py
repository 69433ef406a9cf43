"""Uninstalling never hangs: the documented order leaves nothing behind, and `tidegate release`
frees a Rollout left Terminating by the wrong order, refusing when it would strand traffic.

These tests delete the CRDs, so they run on a sandbox of their own (no Prometheus), with the
chart installed by `helm install` and the operator as a local process (kwok runs no
container) in the release namespace, taking the chart's Lease there.
"""

from __future__ import annotations

import copy
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.e2e.dsl import _load
from tests.kube import REPO, Kube, OperatorProcess, new_namespace, wait_until
from tidegate.cli.main import cli
from tidegate.sandbox import Sandbox
from tidegate.sandbox.assets import binary

pytestmark = pytest.mark.sandbox

RELEASE, SYSTEM = "tidegate", "tidegate-system"
HOST = "examples/canary/services.yaml", "examples/canary/virtualservice.yaml"


class Operator(OperatorProcess):
    """The session helper, with the namespace a pod of the chart would have."""

    def start(self) -> None:
        previous = os.environ.get("POD_NAMESPACE")
        os.environ["POD_NAMESPACE"] = SYSTEM
        try:
            super().start()
        finally:
            if previous is None:
                del os.environ["POD_NAMESPACE"]
            else:
                os.environ["POD_NAMESPACE"] = previous


def helm(sandbox: Sandbox, *args: str) -> str:
    home = Path(tempfile.gettempdir()) / "tidegate-uninstall-helm"
    env = {
        **os.environ,
        "KUBECONFIG": str(sandbox.kubeconfig),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    proc = subprocess.run([str(binary("helm")), *args], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, f"helm {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def own() -> Iterator[tuple[Sandbox, Operator]]:
    directory = Path(tempfile.mkdtemp(prefix="tidegate-uninstall-sandbox-"))
    os.rmdir(directory)
    sandbox = Sandbox(directory)
    sandbox.up(prometheus=False, log=lambda _m: None)
    operator = Operator(sandbox.kubeconfig, directory.parent / f"{directory.name}-operator.log")
    try:
        helm(sandbox, "install", RELEASE, str(REPO / "charts/tidegate"), "-n", SYSTEM, "--create-namespace")
        operator.start()
        yield sandbox, operator
    finally:
        operator.stop()
        sandbox.down(log=lambda _m: None)


def canary_mid_step(sandbox: Sandbox) -> Kube:
    """A canary paused at 20% with a header route set: traffic the operator must give back."""
    kube = Kube(sandbox, new_namespace(sandbox))
    for path in HOST:
        kube.apply_file(REPO / path)
    doc = copy.deepcopy(_load("examples/canary/rollout.yaml", "Rollout"))
    doc["spec"]["strategy"]["canary"]["steps"] = [
        {"setWeight": 20},
        {
            "setHeaderRoute": {
                "name": "canary-header",
                "match": [{"headerName": "x-canary", "headerValue": {"exact": "true"}}],
            }
        },
        {"pause": {}},
    ]
    kube.apply(doc)
    kube.wait_phase("web", "Healthy", timeout=90)
    kube.patch("rollout.tidegate.io", "web", {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "registry.example/web:2.0"}]}}}})  # fmt: skip
    kube.wait_phase("web", "Paused", timeout=90)
    assert vs_state(kube) == ([80, 20], True)
    return kube


def vs_state(kube: Kube) -> tuple[list[int], bool]:
    """The primary route's weights, and whether the managed header route is there."""
    http = kube.get("virtualservices.networking.istio.io", "web")["spec"]["http"]
    primary = next(r for r in http if r.get("name") == "primary")
    return [d.get("weight", 0) for d in primary["route"]], any(r.get("name") == "canary-header" for r in http)


def release(kube: Kube, code: int) -> Result:
    result = CliRunner().invoke(
        cli, ["release", "web", "-n", kube.namespace, "--kubeconfig", str(kube.sandbox.kubeconfig)]
    )
    assert result.exit_code == code, result.output + repr(result.exception)
    return result


def namespace_gone(sandbox: Sandbox, namespace: str, timeout: float = 90) -> None:
    def check() -> bool:
        return sandbox.kubectl("get", "namespace", namespace, check=False).returncode != 0

    wait_until(check, timeout, what=f"namespace {namespace} deleted (not left Terminating)")


def stable_endpoints(kube: Kube) -> int:
    slices = kube.list("endpointslices.discovery.k8s.io", "kubernetes.io/service-name=web-stable")
    return sum(
        1 for s in slices for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")
    )


def test_release_refuses_while_the_operator_runs(own: tuple[Sandbox, Operator]) -> None:
    sandbox, _ = own
    kube = canary_mid_step(sandbox)
    result = release(kube, 1)
    assert "the operator is running" in result.output and f"{SYSTEM}/tidegate-operator" in result.output
    assert vs_state(kube) == ([80, 20], True), "nothing changed"
    # With the operator there, deleting is all it takes: traffic first, then the Rollout goes.
    kube.kubectl("delete", "rollout.tidegate.io/web", "--timeout=60s")
    assert vs_state(kube) == ([100, 0], False)
    sandbox.kubectl("delete", "namespace", kube.namespace, "--wait=false")
    namespace_gone(sandbox, kube.namespace)


def _marked_for_deletion(kube: Kube) -> object:
    return (kube.get_or_none("rollout.tidegate.io", "web") or {}).get("metadata", {}).get("deletionTimestamp")


def test_release_frees_rollouts_the_wrong_uninstall_order_left_terminating(
    own: tuple[Sandbox, Operator],
) -> None:
    sandbox, operator = own
    kube, other = canary_mid_step(sandbox), canary_mid_step(sandbox)
    operator.stop()  # the operator uninstalled first; SIGTERM gives up its Lease
    try:
        kube.kubectl("delete", "rollout.tidegate.io/web", "--wait=false")
        wait_until(lambda: _marked_for_deletion(kube), 30, what="the Rollout marked for deletion")
        ro = kube.rollout("web")
        assert ro["metadata"]["finalizers"] == ["tidegate.io/traffic"], "held by the finalizer: the hang"
        assert vs_state(kube) == ([80, 20], True)

        # Refused while the stable Service has no ready endpoints: all traffic there would be lost.
        stable = f"web-{ro['status']['stableRS']}"
        kube.kubectl("scale", f"replicaset/{stable}", "--replicas=0")
        wait_until(lambda: stable_endpoints(kube) == 0, 60, what="no ready stable endpoints")
        result = release(kube, 1)
        assert "web-stable" in result.output and "no ready endpoints" in result.output, result.output
        assert vs_state(kube) == ([80, 20], True), "a refusal changes nothing"
        assert kube.rollout("web")["metadata"]["finalizers"] == ["tidegate.io/traffic"]

        kube.kubectl("scale", f"replicaset/{stable}", "--replicas=4")
        wait_until(lambda: stable_endpoints(kube) == 4, 60, what="4 ready stable endpoints")
        result = release(kube, 0)
        assert "all traffic to stable" in result.output and "finalizer removed" in result.output, (
            result.output
        )
        assert vs_state(kube) == ([100, 0], False), "traffic back on stable, header route removed"
        wait_until(
            lambda: kube.get_or_none("rollout.tidegate.io", "web") is None, 30, what="the Rollout gone"
        )

        # A namespace deleted with its Rollout stays Terminating; once its VirtualService is gone
        # nothing routes to the Rollout, and release lets it go.
        sandbox.kubectl("delete", "namespace", other.namespace, "--wait=false")
        wait_until(
            lambda: _marked_for_deletion(other), 30, what="the Rollout marked by the namespace's deletion"
        )
        wait_until(
            lambda: other.get_or_none("virtualservices.networking.istio.io", "web") is None,
            30,
            what="the namespace's VirtualService deleted",
        )
        result = release(other, 0)
        assert "nothing routes to it" in result.output, result.output
        namespace_gone(sandbox, other.namespace)
        sandbox.kubectl("delete", "namespace", kube.namespace, "--wait=false")
        namespace_gone(sandbox, kube.namespace)
    finally:
        operator.start()


def test_the_documented_uninstall_leaves_nothing(own: tuple[Sandbox, Operator]) -> None:
    """docs/install.md's order: Rollouts (the operator returns their traffic), the operator, the CRDs."""
    sandbox, operator = own
    kube = canary_mid_step(sandbox)

    # 1. Every Rollout, while the operator runs.
    sandbox.kubectl("delete", "rollouts.tidegate.io", "--all", "--all-namespaces", "--timeout=120s")
    assert vs_state(kube) == ([100, 0], False)
    # 2. The operator (the local process stands for the chart's pods), 3. the CRDs, 4. its namespace.
    helm(sandbox, "uninstall", RELEASE, "-n", SYSTEM, "--wait")
    operator.stop()
    sandbox.kubectl("delete", "-f", str(REPO / "charts/tidegate/crds/"), "--timeout=120s")
    sandbox.kubectl("delete", "namespace", SYSTEM, "--timeout=120s")

    crds = sandbox.kubectl("get", "crd", "-o", "name").stdout
    assert "tidegate.io" not in crds, crds
    labelled = sandbox.kubectl(
        "get", "clusterroles,clusterrolebindings", "-l", "app.kubernetes.io/part-of=tidegate", "-o", "name"
    ).stdout
    assert labelled.strip() == "", labelled
    assert helm(sandbox, "list", "-A", "-q").strip() == ""
    # What the user owns stays, pointing at the stable version; their namespace deletes at once.
    assert kube.get_or_none("virtualservices.networking.istio.io", "web") is not None
    assert vs_state(kube) == ([100, 0], False)
    sandbox.kubectl("delete", "namespace", kube.namespace, "--wait=false")
    namespace_gone(sandbox, kube.namespace)
    namespace_gone(sandbox, SYSTEM, timeout=10)

"""Installing Tidegate on the real sandbox: the Helm chart and the kustomize overlays are
accepted by the API server, and the chart's ServiceAccount holds exactly enough rights.

- `helm template --include-crds` (default and namespaced values) and `kustomize build` of
  both overlays go through a server-side dry run and then a real server-side apply, in
  namespaces that enforce the `restricted` Pod Security Standard: the operator's pod is
  admitted (kwok runs no container, so the in-cluster copy competes with nobody): both
  replicas, and the PodDisruptionBudget lets the disruption controller evict one at a time.
- Enough: the operator runs as the chart's ServiceAccount (a TokenRequest token in a
  kubeconfig of its own) and drives examples/canary to completion; no request of it is
  refused, neither in its log nor in the API server's audit log; it takes and renews the
  chart's Lease in the release namespace, with the chart's flags. The session's admin
  operator is stopped meanwhile, so that only this one reconciles.
- Not too much: `kubectl auth can-i --as=system:serviceaccount:NS:SA` is denied for
  Secrets, Pods, namespaces and wildcards, and in namespaced mode for any namespace the
  release does not watch. Each denial is paired with an allowed request of the same
  account, so that a misspelt account (denied everything) cannot pass.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import _log_dir
from tests.e2e.dsl import _load, given
from tests.kube import REPO, Kube, OperatorProcess, new_namespace, wait_until
from tidegate.sandbox import Sandbox
from tidegate.sandbox.assets import binary

pytestmark = pytest.mark.sandbox

CHART = REPO / "charts" / "tidegate"
OVERLAYS = {"staging": "tidegate-staging", "production": "tidegate-production"}
HOST = "examples/canary/services.yaml", "examples/canary/virtualservice.yaml"
CLUSTER_SCOPED = {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Namespace"}
RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"
# A 403 in the operator's log, from the reconcile loop ("API error 403 Forbidden") or kopf.
FORBIDDEN = re.compile(r"\b403\b|forbidden|not enough permissions", re.IGNORECASE)
SYSTEM_NAMESPACES = {"default", "kube-system", "kube-public", "kube-node-lease"}

Manifest = dict[str, Any]


# -- tools ----------------------------------------------------------------------------------


def run(*command: str | Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@functools.cache
def helm_env() -> dict[str, str]:
    """Keep helm's cache/config/data out of the user's home."""
    home = Path(tempfile.mkdtemp(prefix="tidegate-helm-"))
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def helm_template(release: str, namespace: str, *sets: str) -> str:
    args = ["template", release, str(CHART), "--namespace", namespace, "--include-crds"]
    for item in sets:
        args += ["--set", item]
    return run(binary("helm"), *args, env=helm_env())


def kustomize_build(overlay: str) -> str:
    return run(binary("kustomize"), "build", REPO / "deploy" / "overlays" / overlay)


def documents(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def dump(docs: list[Manifest]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def apply(sandbox: Sandbox, docs: list[Manifest], *, dry_run: bool) -> str:
    """`kubectl apply --server-side` (optionally `--dry-run=server`); fails with the server's reasons."""
    args = ["apply", "--server-side", "--field-manager=tidegate-install-test", "-f", "-"]
    if dry_run:
        # The sandbox applied the CRDs already (manager "kubectl", from the API models): a
        # copy that differs while someone edits the models (`make crds` not run yet) would
        # conflict. Forcing changes nothing in a dry run; the schema is still validated.
        args += ["--dry-run=server", "--force-conflicts"]
    proc = sandbox.kubectl(*args, input=dump(docs), check=False)
    assert proc.returncode == 0, f"the API server refused the manifests:\n{proc.stderr}"
    assert "Warning" not in proc.stderr, f"the API server warned:\n{proc.stderr}"
    return proc.stdout


def without_crds(docs: list[Manifest]) -> list[Manifest]:
    """The sandbox already serves the CRDs (rendered by crdgen, which test_generated keeps
    equal to charts/tidegate/crds). A real apply of a stale copy during development would
    change the schema under every other test, so the CRDs only go through the dry run."""
    return [d for d in docs if d["kind"] != "CustomResourceDefinition"]


def delete(sandbox: Sandbox, docs: list[Manifest]) -> None:
    objs = [d for d in docs if d["kind"] != "CustomResourceDefinition"]
    sandbox.kubectl("delete", "--wait=false", "--ignore-not-found", "-f", "-", input=dump(objs), check=False)


def operator_pods_admitted(sandbox: Sandbox, namespace: str, deployment: str, replicas: int) -> None:
    """The Deployment's pods passed admission (restricted Pod Security) and kwok made them
    available: all `replicas` of them (a leader and its standbys), spread or not."""

    def available() -> bool:
        obj = json.loads(
            sandbox.kubectl("-n", namespace, "get", "deployment", deployment, "-o", "json").stdout
        )
        return bool((obj.get("status") or {}).get("availableReplicas") == replicas)

    def seen() -> str:
        rs = sandbox.kubectl("-n", namespace, "get", "replicasets", "-o", "json", check=False).stdout
        return rs[-1500:]

    try:
        wait_until(available, 60, what=f"deployment {namespace}/{deployment} available")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nReplicaSets: {seen()}") from None


def budget_allows_one_eviction(sandbox: Sandbox, namespace: str, budget: str, replicas: int) -> None:
    """The controller-manager's disruption controller counts the operator's pods under the
    PodDisruptionBudget and allows evicting one of them at a time: a drain keeps a standby."""

    def status() -> dict[str, Any]:
        obj = json.loads(
            sandbox.kubectl("-n", namespace, "get", "poddisruptionbudget", budget, "-o", "json").stdout
        )
        return dict(obj.get("status") or {})

    wait_until(lambda: status().get("currentHealthy") == replicas, 60, what=f"{replicas} pods under {budget}")
    st = status()
    assert (st["expectedPods"], st["desiredHealthy"], st["disruptionsAllowed"]) == (
        replicas,
        replicas - 1,
        1,
    ), st


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


# -- releases -----------------------------------------------------------------------------------


@dataclass
class Release:
    """A chart rendered and applied into `namespace`; `account` is its ServiceAccount."""

    name: str
    namespace: str
    docs: list[Manifest]
    watched: list[str] = field(default_factory=list)

    @property
    def account(self) -> str:
        (sa,) = [d for d in self.docs if d["kind"] == "ServiceAccount"]
        return str(sa["metadata"]["name"])

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.account}"

    @property
    def deployment(self) -> str:
        return str(self._deployment["metadata"]["name"])

    @property
    def replicas(self) -> int:
        return int(self._deployment["spec"]["replicas"])

    @property
    def election_args(self) -> list[str]:
        """The leader-election flags the chart passes to the operator container."""
        (container,) = self._deployment["spec"]["template"]["spec"]["containers"]
        return [str(a) for a in container["args"] if str(a).startswith("--leader-elect")]

    @property
    def _deployment(self) -> Manifest:
        (deployment,) = [d for d in self.docs if d["kind"] == "Deployment"]
        return deployment


def install(sandbox: Sandbox, *sets: str, watched: list[str] | None = None) -> Release:
    namespace = new_namespace(sandbox, "tgrel")
    sandbox.kubectl("label", "namespace", namespace, RESTRICTED)
    name = f"tg{uuid.uuid4().hex[:6]}"
    if watched:
        sets = (*sets, "watchNamespaces={" + ",".join(watched) + "}")
    docs = documents(helm_template(name, namespace, *sets))
    assert {d["kind"] for d in docs} >= {"CustomResourceDefinition", "ServiceAccount", "Deployment"}
    apply(sandbox, docs, dry_run=True)
    apply(sandbox, without_crds(docs), dry_run=False)
    return Release(name, namespace, docs, watched or [])


def uninstall(sandbox: Sandbox, release: Release) -> None:
    delete(sandbox, release.docs)
    sandbox.kubectl("delete", "namespace", release.namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def cluster_release(sandbox: Sandbox) -> Iterator[Release]:
    """The chart with its default values: cluster mode."""
    release = install(sandbox)
    try:
        yield release
    finally:
        uninstall(sandbox, release)


@pytest.fixture(scope="module")
def namespaced_release(sandbox: Sandbox) -> Iterator[Release]:
    """A second release watching one namespace (the first of `watched`); the second
    namespace is one it does not watch."""
    watched, other = new_namespace(sandbox, "tga"), new_namespace(sandbox, "tgb")
    release = install(sandbox, watched=[watched])
    release.watched.append(other)  # [watched, not watched]
    try:
        yield release
    finally:
        uninstall(sandbox, release)
        for ns in (watched, other):
            sandbox.kubectl("delete", "namespace", ns, "--wait=false", check=False)


# -- rendering and applying --------------------------------------------------------------------


def test_the_default_chart_installs_and_its_pod_passes_restricted_pod_security(
    sandbox: Sandbox, cluster_release: Release
) -> None:
    release = cluster_release
    for doc in without_crds(release.docs):
        kind, name = doc["kind"], doc["metadata"]["name"]
        args = ["get", kind, name, "-o", "name"]
        if kind not in CLUSTER_SCOPED:
            args = ["-n", doc["metadata"]["namespace"], *args]
        assert sandbox.kubectl(*args, check=False).returncode == 0, f"{kind}/{name} not created"
    assert release.replicas == 2, "a leader and a standby by default"
    operator_pods_admitted(sandbox, release.namespace, release.deployment, release.replicas)
    (budget,) = [d for d in release.docs if d["kind"] == "PodDisruptionBudget"]
    budget_allows_one_eviction(sandbox, release.namespace, budget["metadata"]["name"], release.replicas)


def test_the_namespaced_chart_installs_roles_in_the_watched_namespace(
    sandbox: Sandbox, namespaced_release: Release
) -> None:
    release = namespaced_release
    watched, other = release.watched
    roles = json.loads(sandbox.kubectl("-n", watched, "get", "roles,rolebindings", "-o", "json").stdout)
    assert sorted(o["kind"] for o in roles["items"]) == ["Role", "RoleBinding"]
    assert (
        json.loads(sandbox.kubectl("-n", other, "get", "roles,rolebindings", "-o", "json").stdout)["items"]
        == []
    ), "nothing in a namespace the release does not watch"
    operator_pods_admitted(sandbox, release.namespace, release.deployment, release.replicas)


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_a_kustomize_overlay_installs_after_the_crds(sandbox: Sandbox, overlay: str) -> None:
    namespace = OVERLAYS[overlay]
    # As documented: the CRDs first (already served: a dry run shows they are accepted).
    proc = sandbox.kubectl(
        "apply", "--server-side", "--dry-run=server", "-f", str(REPO / "crds"), check=False
    )
    assert proc.returncode == 0, proc.stderr
    docs = documents(kustomize_build(overlay))
    (ns_doc,) = [d for d in docs if d["kind"] == "Namespace"]
    assert ns_doc["metadata"]["name"] == namespace
    assert ns_doc["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    try:
        # A dry run cannot create the namespace the other objects go to: create it for real.
        apply(sandbox, [ns_doc], dry_run=False)
        apply(sandbox, docs, dry_run=True)
        apply(sandbox, docs, dry_run=False)
        (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
        replicas = deployment["spec"]["replicas"]
        operator_pods_admitted(sandbox, namespace, deployment["metadata"]["name"], replicas)
        (budget,) = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
        budget_allows_one_eviction(sandbox, namespace, budget["metadata"]["name"], replicas)
    finally:
        delete(sandbox, docs)


# -- not too much -------------------------------------------------------------------------------


def can_i(sandbox: Sandbox, release: Release, verb: str, resource: str, namespace: str | None) -> bool:
    resource, _, subresource = resource.partition("/")  # kubectl reads "kind/x" as a name
    args = ["auth", "can-i", verb, resource, f"--as={release.user}"]
    if subresource:
        args.append(f"--subresource={subresource}")
    args += ["-n", namespace] if namespace else ["--all-namespaces"]
    proc = sandbox.kubectl(*args, check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl {' '.join(args)}: {proc.stdout} {proc.stderr}"
    return answer == "yes"


# (verb, resource): what the operator must never be able to do.
DENIED_EVERYWHERE = [
    ("delete", "secrets"),
    ("create", "secrets"),
    ("get", "secrets"),
    ("list", "secrets"),
    ("create", "pods"),
    ("delete", "pods"),
    ("delete", "namespaces"),
    ("list", "namespaces"),
    ("create", "namespaces"),
    ("*", "*"),
    ("*", "rollouts.tidegate.io"),
    ("delete", "rollouts.tidegate.io"),
    ("create", "deployments.apps"),
    ("update", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("create", "serviceaccounts/token"),
    ("create", "services"),
    ("delete", "virtualservices.networking.istio.io"),
    ("delete", "httproutes.gateway.networking.k8s.io"),
    ("create", "gateways.gateway.networking.k8s.io"),
]
# What it needs: the positive controls.
NEEDED = [
    ("watch", "rollouts.tidegate.io"),
    ("patch", "rollouts.tidegate.io/status"),
    ("create", "replicasets.apps"),
    ("delete", "replicasets.apps"),
    ("patch", "services"),
    ("patch", "virtualservices.networking.istio.io"),
    ("patch", "httproutes.gateway.networking.k8s.io"),
    ("watch", "grpcroutes.gateway.networking.k8s.io"),
    ("create", "analysisruns.tidegate.io"),
    ("create", "pods/eviction"),
    ("create", "events"),
]


def test_the_cluster_mode_account_is_denied_what_it_does_not_need(
    sandbox: Sandbox, cluster_release: Release
) -> None:
    elsewhere = new_namespace(sandbox, "tgx")
    try:
        for ns in (elsewhere, None):
            granted = [(v, r) for v, r in DENIED_EVERYWHERE if can_i(sandbox, cluster_release, v, r, ns)]
            assert granted == [], f"{cluster_release.user} may {granted} in {ns or 'all namespaces'}"
            missing = [(v, r) for v, r in NEEDED if not can_i(sandbox, cluster_release, v, r, ns)]
            assert missing == [], f"{cluster_release.user} may not {missing} in {ns or 'all namespaces'}"
        # The Lease role is in the release's namespace only.
        assert can_i(
            sandbox, cluster_release, "update", "leases.coordination.k8s.io", cluster_release.namespace
        )
        assert not can_i(sandbox, cluster_release, "update", "leases.coordination.k8s.io", elsewhere)
    finally:
        sandbox.kubectl("delete", "namespace", elsewhere, "--wait=false", check=False)


def test_the_namespaced_account_touches_only_its_namespace(
    sandbox: Sandbox, namespaced_release: Release
) -> None:
    release = namespaced_release
    watched, other = release.watched
    for verb, resource in NEEDED:
        assert can_i(sandbox, release, verb, resource, watched), f"may not {verb} {resource} in {watched}"
        assert not can_i(sandbox, release, verb, resource, other), f"may {verb} {resource} in {other}"
    for verb in ("get", "list", "watch", "create", "patch", "delete"):
        assert not can_i(sandbox, release, verb, "rollouts.tidegate.io", other)
        assert not can_i(sandbox, release, verb, "replicasets.apps", other)
    for verb, resource in DENIED_EVERYWHERE:
        for ns in (watched, other, None):
            assert not can_i(sandbox, release, verb, resource, ns), f"may {verb} {resource} in {ns}"
    assert not can_i(sandbox, release, "list", "namespaces", None), "namespaced mode lists no namespaces"
    assert not can_i(sandbox, release, "list", "rollouts.tidegate.io", None), "no cluster-wide list"
    # The cluster-scoped kinds stay readable (kopf's CRD discovery, ClusterAnalysisTemplates).
    assert can_i(sandbox, release, "watch", "customresourcedefinitions.apiextensions.k8s.io", None)
    assert can_i(sandbox, release, "list", "clusteranalysistemplates.tidegate.io", None)


# -- enough: the operator as the ServiceAccount --------------------------------------------------


def token_kubeconfig(sandbox: Sandbox, release: Release, path: Path) -> Path:
    """A kubeconfig with the sandbox's server and CA and a TokenRequest token of the account."""
    admin = yaml.safe_load(sandbox.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    token = sandbox.kubectl(
        "-n", release.namespace, "create", "token", release.account, "--duration=1h"
    ).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "sandbox",
                "cluster": {
                    "server": cluster["server"],
                    "certificate-authority-data": cluster["certificate-authority-data"],
                },
            }
        ],
        "users": [{"name": release.account, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "sandbox", "user": release.account}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    whoami = json.loads(run(binary("kubectl"), f"--kubeconfig={path}", "auth", "whoami", "-o", "json"))
    assert whoami["status"]["userInfo"]["username"] == release.user
    return path


class ServiceAccountOperator(OperatorProcess):
    """`tidegate operator` with the account's kubeconfig and the chart's --namespace and
    leader-election flags; its Lease in the release namespace, as POD_NAMESPACE puts it there."""

    namespaces: tuple[str, ...] = ()
    release: Release | None = None

    def start(self) -> None:
        assert self.release is not None, "run it as a release's account"
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "POD_NAMESPACE": self.release.namespace}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        argv = [sys.executable, "-m", "tidegate.cli.main", "operator", "--metrics-host", "127.0.0.1"]
        argv += ["--metrics-port", str(self.metrics_port), *self.release.election_args]
        for ns in self.namespaces:
            argv += ["--namespace", ns]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the operator exited: {self.log_path.read_text()[-3000:]}")
            return http_status(f"http://127.0.0.1:{self.metrics_port}/readyz") == 200

        wait_until(ready, timeout, interval=0.5, what="the operator's /readyz")

    def wait_leading(self, sandbox: Sandbox, timeout: float = 30) -> None:
        """It took the chart's Lease in the release namespace (with the chart's Lease Role)
        and says so on /metrics."""
        assert self.release is not None
        namespace = self.release.namespace
        (lease,) = [
            a.partition("=")[2]
            for a in self.release.election_args
            if a.startswith("--leader-elect-lease-name=")
        ]

        def holder() -> str:
            proc = sandbox.kubectl(
                "-n", namespace, "get", "lease", lease, "-o", "jsonpath={.spec.holderIdentity}", check=False
            )
            return proc.stdout.strip() if proc.returncode == 0 else ""

        wait_until(lambda: bool(holder()), timeout, interval=0.5, what=f"the Lease {namespace}/{lease} held")
        wait_until(
            lambda: "\ntidegate_leader 1.0" in self.metrics_text(), timeout, interval=0.5, what="leading"
        )

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as response:
            body: bytes = response.read()
        return "\n" + body.decode()

    def forbidden_lines(self, foreign: set[str]) -> list[str]:
        """403s in the log, except about objects in the `foreign` namespaces: other tests'
        leftovers (being deleted) that a cluster-wide operator also sees, some of which
        may want more (e.g. analysis credentials in Secrets, off by default)."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [
            line
            for line in lines
            if FORBIDDEN.search(line) and not any(re.search(rf"\b{re.escape(ns)}\b", line) for ns in foreign)
        ]


@pytest.fixture(scope="module")
def session_operator_stopped(operator: OperatorProcess) -> Iterator[None]:
    """Only one operator may reconcile a namespace: the session's (admin, cluster-wide) one
    is stopped while the ServiceAccount's runs, and started again afterwards."""
    operator.stop()
    try:
        yield
    finally:
        operator.start()
        wait_until(
            lambda: http_status(f"http://127.0.0.1:{operator.metrics_port}/readyz") == 200,
            60,
            interval=0.5,
            what="the session operator ready again",
        )


@pytest.fixture
def sa_operator(tmp_path: Path, session_operator_stopped: None) -> Iterator[ServiceAccountOperator]:
    op = ServiceAccountOperator(tmp_path / "kubeconfig", tmp_path / "operator.log")
    try:
        yield op
    finally:
        op.stop()
        if op.log_path.exists():  # kept with the session's logs, for a post-mortem
            (_log_dir() / f"operator-as-{op.log_path.parent.name}.log").write_bytes(op.log_path.read_bytes())


def short_pauses(doc: Manifest) -> Manifest:
    doc = copy.deepcopy(doc)
    for step in doc["spec"]["strategy"]["canary"]["steps"]:
        if "pause" in step and step["pause"].get("duration"):
            step["pause"]["duration"] = "1s"
    return doc


def other_tests_namespaces(sandbox: Sandbox, mine: str) -> set[str]:
    names = sandbox.kubectl("get", "namespaces", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    return set(names) - SYSTEM_NAMESPACES - {mine}


def audited_requests(sandbox: Sandbox, user: str) -> list[dict[str, Any]]:
    """Every request `user` made itself (not through impersonation), from the sandbox's audit log."""
    events = []
    for path in sorted(sandbox.logs.glob("audit*.log")):
        with path.open(errors="replace") as lines:
            for line in lines:
                if f'"username":"{user}"' not in line:
                    continue
                event = json.loads(line)
                if event.get("stage") == "ResponseComplete" and event["user"]["username"] == user:
                    events.append(event)
    return events


def request_kind(event: dict[str, Any]) -> tuple[str, str]:
    """(verb, "group/resource[/subresource]") of an audit event."""
    ref = event.get("objectRef") or {}
    resource = "/".join(x for x in (ref.get("resource"), ref.get("subresource")) if x)
    return event["verb"], f"{ref.get('apiGroup', '')}/{resource or event.get('requestURI', '')}"


def rollout_events(kube: Kube, reason: str) -> list[str]:
    events = [
        e for e in kube.list("events") if e["involvedObject"]["kind"] == "Rollout" and e["reason"] == reason
    ]
    events.sort(key=lambda e: e.get("firstTimestamp") or e["metadata"]["creationTimestamp"])
    return [e["message"] for e in events]


def test_the_operator_as_the_charts_account_drives_a_canary_to_completion(
    sandbox: Sandbox, cluster_release: Release, bare_kube: Kube, sa_operator: ServiceAccountOperator
) -> None:
    kube = bare_kube
    foreign = other_tests_namespaces(sandbox, kube.namespace)
    token_kubeconfig(sandbox, cluster_release, sa_operator.kubeconfig)
    sa_operator.release = cluster_release
    sa_operator.start()
    sa_operator.wait_ready()
    sa_operator.wait_leading(sandbox)

    doc = short_pauses(_load("examples/canary/rollout.yaml", "Rollout"))
    s = given(kube).objects(*HOST).rollout(doc)
    s.when().applied().then().phase("Healthy", timeout=60)
    first = kube.status("web")["stableRS"]
    t = s.when().image("registry.example/web:2.0").then()
    t.holds(lambda: kube.status("web").get("stableRS") not in (None, first), "the new revision stable", 120)
    t.phase("Healthy", timeout=60).weight(0)
    t.replica_sets({"registry.example/web:2.0": 4}, timeout=60)
    st = kube.status("web")
    assert st["stableRS"] == st["currentPodHash"] != first

    # It walked every step: weights 10, 50, 100 and back to 0; three pauses; a promotion.
    expected = [
        "canary weight 0% -> 10%",
        "canary weight 10% -> 50%",
        "canary weight 50% -> 100%",
        "canary weight 100% -> 0%",
    ]
    # kopf posts Events from a queue: the last one may trail the status by a moment.
    wait_until(
        lambda: rollout_events(kube, "TrafficWeightSet")[-4:] == expected, 30, what="the weight Events"
    )
    weights = rollout_events(kube, "TrafficWeightSet")
    assert weights[-4:] == [
        "canary weight 0% -> 10%",
        "canary weight 10% -> 50%",
        "canary weight 50% -> 100%",
        "canary weight 100% -> 0%",
    ], weights
    paused = [m for m in rollout_events(kube, "RolloutPaused") if re.fullmatch(r"paused at step \d+/7", m)]
    assert paused == ["paused at step 2/7", "paused at step 5/7", "paused at step 7/7"], paused
    assert rollout_events(kube, "RolloutPromoted"), "promoted"
    vs = kube.get("virtualservices.networking.istio.io", "web")
    assert [r.get("name") for r in vs["spec"]["http"]] == ["primary"], "the header route came and went"

    # Every request the operator made, as the API server audited it: none refused. (Other
    # tests' leftovers aside: their namespaces are being deleted.)
    requests = audited_requests(sandbox, cluster_release.user)
    assert any(request_kind(e) == ("patch", "tidegate.io/rollouts/status") for e in requests), "audited"
    leases = {
        (e["verb"], (e.get("objectRef") or {}).get("namespace"), (e.get("responseStatus") or {}).get("code"))
        for e in requests
        if request_kind(e)[1] == "coordination.k8s.io/leases"
    }
    assert ("update", cluster_release.namespace, 200) in leases, (
        f"renewed its Lease: {sorted(leases, key=str)}"
    )
    assert {namespace for _, namespace, _ in leases} == {cluster_release.namespace}, leases
    refused = [
        request_kind(e)
        for e in requests
        if (e.get("responseStatus") or {}).get("code") == 403
        and (e.get("objectRef") or {}).get("namespace") not in foreign
    ]
    assert refused == [], f"the API server refused the operator: {sorted(set(refused))}"
    forbidden = sa_operator.forbidden_lines(foreign)
    assert forbidden == [], "the operator was refused:\n" + "\n".join(forbidden[:20])


def test_the_operator_as_the_namespaced_account_serves_its_namespace(
    sandbox: Sandbox, namespaced_release: Release, sa_operator: ServiceAccountOperator
) -> None:
    watched, _other = namespaced_release.watched
    token_kubeconfig(sandbox, namespaced_release, sa_operator.kubeconfig)
    sa_operator.release = namespaced_release
    sa_operator.namespaces = (watched,)
    sa_operator.start()
    sa_operator.wait_ready(timeout=120)
    sa_operator.wait_leading(sandbox)

    kube = Kube(sandbox, watched)
    doc = short_pauses(_load("examples/canary/rollout.yaml", "Rollout"))
    steps = [{"setWeight": 20}, {"pause": {"duration": "1s"}}]
    doc["spec"]["strategy"]["canary"]["steps"] = steps
    s = given(kube).objects(*HOST).rollout(doc)
    s.when().applied().then().phase("Healthy", timeout=60)
    t = s.when().image("registry.example/web:2.0").then()
    t.holds(lambda: "canary weight 0% -> 20%" in rollout_events(kube, "TrafficWeightSet"), "weight 20%", 60)
    t.phase("Healthy", timeout=60).weight(0).replica_sets({"registry.example/web:2.0": 4}, timeout=60)

    refused = {
        request_kind(e)
        for e in audited_requests(sandbox, namespaced_release.user)
        if (e.get("responseStatus") or {}).get("code") == 403
    }
    # Namespaced mode turns kopf's namespace and CRD scans off (settings.scanning.disabled):
    # the chart grants no namespace access, so a scan would be refused and delay readiness.
    assert refused == set(), f"refused: {sorted(refused)}"
    forbidden = sa_operator.forbidden_lines(set())
    assert forbidden == [], "the operator was refused:\n" + "\n".join(forbidden[:20])

"""The Helm chart and the kustomize overlays, rendered offline by the real helm and kustomize.

The binaries come from the testenv cache that `make testenv` (hack/testenv/build.sh helm
kustomize) fills, at the versions in hack/testenv/versions.env; TIDEGATE_HELM and
TIDEGATE_KUSTOMIZE may name other binaries. Without them these tests skip (the CRD copy
check does not need them). Applying the output to a cluster is the integration suite's job.
"""

from __future__ import annotations

import filecmp
import functools
import os
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tidegate"
DEPLOY = ROOT / "deploy"
VERSIONS = ROOT / "hack" / "testenv" / "versions.env"
RELEASE_NAMESPACE = "tidegate-system"
WATCHED = ["team-a", "team-b"]

Manifest = dict[str, Any]


# -- tools -----------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    pairs = {}
    for line in VERSIONS.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip().strip('"')
    return pairs


def cache_dir() -> Path:
    if os.environ.get("TIDEGATE_CACHE"):
        return Path(os.environ["TIDEGATE_CACHE"]) / "testenv"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "tidegate" / "testenv"


@functools.cache
def tool(name: str) -> Path:
    override = os.environ.get(f"TIDEGATE_{name.upper()}")
    version = versions()[f"{name.upper()}_VERSION"]
    path = Path(override) if override else cache_dir() / f"{name}-v{version}" / name
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"{name} v{version} is not built at {path}: run `bash hack/testenv/build.sh helm kustomize`"
            f" or point TIDEGATE_{name.upper()} at a binary"
        )
    return path


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
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="tidegate-helm-"))
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def helm(*args: str) -> str:
    return run(tool("helm"), *args, env=helm_env())


def documents(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@functools.cache
def _template(sets: tuple[str, ...], release: str, extra: tuple[str, ...]) -> tuple[Manifest, ...]:
    args = ["template", release, str(CHART), "--namespace", RELEASE_NAMESPACE, *extra]
    for item in sets:
        args += ["--set", item]
    return tuple(documents(helm(*args)))


AGGREGATE = ("app.kubernetes.io/component", "aggregate-cluster-role")


def is_aggregate_role(obj: Manifest) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return obj["kind"] == "ClusterRole" and labels.get(AGGREGATE[0]) == AGGREGATE[1]


def template(*sets: str, release: str = "tidegate", extra: tuple[str, ...] = ()) -> list[Manifest]:
    """The operator's objects as the chart renders them (the users' aggregated roles aside:
    `aggregate_roles`)."""
    return [o for o in _template(tuple(sets), release, extra) if not is_aggregate_role(o)]


def aggregate_roles(*sets: str) -> list[Manifest]:
    return [o for o in _template(tuple(sets), "tidegate", ()) if is_aggregate_role(o)]


@functools.cache
def _kustomize(path: str) -> tuple[Manifest, ...]:
    return tuple(documents(run(tool("kustomize"), "build", DEPLOY / path)))


def kustomize(path: str) -> list[Manifest]:
    return list(_kustomize(path))


NAMESPACED = "watchNamespaces={" + ",".join(WATCHED) + "}"


# -- helpers on manifests ---------------------------------------------------------------------


def of_kind(objs: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: Iterable[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [o for o in of_kind(objs, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, (
        f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


def container(objs: Iterable[Manifest]) -> Manifest:
    deployment = one(objs, "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    operator: Manifest = containers[0]
    return operator


Grants = dict[tuple[str, str], frozenset[str]]


def grants(rules: list[Manifest]) -> Grants:
    """(apiGroup, resource) -> verbs, merged over the rules."""
    merged: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                merged.setdefault((group, resource), set()).update(rule["verbs"])
    return {key: frozenset(verbs) for key, verbs in merged.items()}


def all_rules(objs: Iterable[Manifest]) -> list[Manifest]:
    return [rule for o in objs if o["kind"] in ("ClusterRole", "Role") for rule in o.get("rules", [])]


def verbs(*names: str) -> frozenset[str]:
    return frozenset(names)


READ = verbs("get", "list", "watch")

# What the operator needs in every namespace it serves: no more. These are the verbs
# tests/integration/test_rbac.py sees the operator send (the API server's audit log), plus
# the few it lists there as needed but not exercised: `get` on the routed kinds (a re-read
# after a stale write) and `update` on the owners' finalizers (blockOwnerDeletion). No
# `update` elsewhere: every write is a patch.
READ_PATCH = READ | {"patch"}
NAMESPACED_GRANTS: Grants = {
    ("tidegate.io", "rollouts"): READ_PATCH,
    ("tidegate.io", "rollouts/status"): verbs("patch"),
    ("tidegate.io", "rollouts/finalizers"): verbs("update"),
    ("tidegate.io", "analysisruns/finalizers"): verbs("update"),
    ("batch", "jobs"): verbs("get", "create", "delete"),
    ("tidegate.io", "analysisruns"): READ | {"create", "patch", "delete"},
    ("tidegate.io", "analysisruns/status"): verbs("patch"),
    ("tidegate.io", "analysistemplates"): READ,
    ("apps", "replicasets"): verbs("list", "watch", "create", "patch", "delete"),
    ("", "services"): verbs("list", "watch", "patch"),
    ("discovery.k8s.io", "endpointslices"): verbs("list", "watch"),
    ("apps", "deployments"): verbs("list", "watch"),
    ("apps", "deployments/scale"): verbs("patch"),
    ("", "pods"): verbs("list", "patch"),
    ("", "pods/eviction"): verbs("create"),
    ("", "events"): verbs("create"),
    ("networking.istio.io", "virtualservices"): READ_PATCH,
    ("networking.istio.io", "destinationrules"): READ_PATCH,
    ("gateway.networking.k8s.io", "httproutes"): READ_PATCH,
    ("gateway.networking.k8s.io", "grpcroutes"): READ_PATCH,
}
CLUSTER_SCOPED_GRANTS: Grants = {
    ("tidegate.io", "clusteranalysistemplates"): READ,
    ("apiextensions.k8s.io", "customresourcedefinitions"): verbs("list", "watch"),
}
SECRET_GRANT: Grants = {("", "secrets"): verbs("get")}
LEASE_GRANTS: Grants = {("coordination.k8s.io", "leases"): verbs("get", "create", "update")}


def assert_no_wildcards(objs: Iterable[Manifest]) -> None:
    for rule in all_rules(objs):
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert "*" not in " ".join(rule.get(field, [])), f"wildcard in {field}: {rule}"


# -- chart: lint and schema --------------------------------------------------------------------


@pytest.mark.parametrize(
    "sets",
    [
        (),
        (NAMESPACED,),
        ("analysis.secretAccess=true", "serviceMonitor.enabled=true", "networkPolicy.enabled=false"),
        ("replicaCount=1", "leaderElection.enabled=false"),
    ],
    ids=["default", "namespaced", "options", "no-election"],
)
def test_helm_lint_is_clean(sets: tuple[str, ...]) -> None:
    args = ["lint", "--strict", str(CHART)]
    for item in sets:
        args += ["--set", item]
    output = helm(*args)
    assert "0 chart(s) failed" in output


def helm_template_fails(*sets: str) -> str:
    """`helm template` with these values must fail; its stderr."""
    args = [str(tool("helm")), "template", "t", str(CHART)]
    for item in sets:
        args += ["--set", item]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, env=helm_env(), check=False)
    assert result.returncode != 0, f"helm rendered {sets}"
    return result.stderr


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("replicaCount=-1", "at '/replicaCount': minimum: got -1, want 0"),
        ("logLevel=loud", "at '/logLevel': value must be one of 'debug', 'info', 'warning', 'error'"),
        ("logFormat=xml", "at '/logFormat': value must be one of 'json', 'text'"),
        ("watchNamespaces={a,a}", "at '/watchNamespaces': items at 0 and 1 are equal"),
        ("watchNamespaces={Not_A_NS}", "at '/watchNamespaces/0': 'Not_A_NS' does not match pattern"),
        ("typo=1", "additional properties 'typo' not allowed"),
        ("leaderElection.retryPeriod=0", "at '/leaderElection/retryPeriod': exclusiveMinimum: got 0"),
        ("leaderElection.leaseDuration=soon", "at '/leaderElection/leaseDuration': 'soon' does not match"),
        (
            "leaderElection.leaseName=Not_A_Name",
            "at '/leaderElection/leaseName': 'Not_A_Name' does not match",
        ),
        ("podDisruptionBudget.minAvailable=-1", "at '/podDisruptionBudget/minAvailable': minimum: got -1"),
        ("podDisruptionBudget.minAvailable=half", "at '/podDisruptionBudget/minAvailable': 'half' does not"),
        ("resources.requests.cpu=lots", "at '/resources/requests/cpu': 'lots' does not match pattern"),
        ("metrics.port=99999", "at '/metrics/port': maximum: got 99,999, want 65,535"),
        ("image.repository=", "at '/image/repository': minLength: got 0, want 1"),
    ],
)
def test_the_schema_refuses_bad_values_saying_what_is_wrong(value: str, complaint: str) -> None:
    """Each message names the value's path and the rule it breaks; none is a bare "'anyOf' failed"."""
    stderr = helm_template_fails(value)
    assert "don't meet the specifications of the schema" in stderr
    assert complaint in stderr, stderr
    assert not re.search(r"'(not|anyOf|oneOf|allOf)' failed", stderr), stderr


def test_the_schema_has_no_combinator_whose_failure_says_nothing() -> None:
    """Helm's validator reports a failed not/anyOf/oneOf as just that; rules that need one are
    template `fail`s with a sentence instead (image.tag=latest below)."""
    text = (CHART / "values.schema.json").read_text()
    assert not re.search(r'"(not|anyOf|oneOf)"\s*:', text)


def test_image_tag_latest_is_refused_with_a_reason() -> None:
    stderr = helm_template_fails("image.tag=latest")
    assert "image.tag=latest is refused: it names no version" in stderr, stderr


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ("replicaCount=2", "leaderElection.enabled=false"),
            "replicaCount=2 needs leaderElection.enabled=true: without the Lease every replica"
            " would reconcile the same Rollouts at once",
        ),
        (
            ("leaderElection.renewDeadline=20",),
            "leaderElection needs leaseDuration >= 1 and leaseDuration > renewDeadline > 1.2 x retryPeriod"
            " (got 15, 20, 2 seconds)",
        ),
        (
            ("leaderElection.renewDeadline=2.2",),
            "leaseDuration > renewDeadline > 1.2 x retryPeriod (got 15, 2.2, 2 seconds)",
        ),
        (
            (
                "leaderElection.leaseDuration=0.9",
                "leaderElection.renewDeadline=0.5",
                "leaderElection.retryPeriod=0.1",
            ),
            "leaseDuration >= 1",
        ),
        (
            ("podDisruptionBudget.minAvailable=2",),
            "podDisruptionBudget.minAvailable=2 must be below replicaCount=2,"
            " or no node drain could ever evict",
        ),
    ],
    ids=[
        "replicas-without-election",
        "renew-after-lease",
        "renew-too-close",
        "short-lease",
        "pdb-blocks-drains",
    ],
)
def test_the_chart_refuses_values_that_break_leader_election(sets: tuple[str, ...], message: str) -> None:
    stderr = helm_template_fails(*sets)
    assert "execution error" in stderr, "the templates' fail, not the schema"
    assert message in stderr


def test_every_value_is_documented_and_in_the_schema() -> None:
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])
    lines = (CHART / "values.yaml").read_text().splitlines()
    for index, line in enumerate(lines):
        if line and not line.startswith((" ", "#", "-")) and ":" in line:
            key = line.split(":", 1)[0]
            assert lines[index - 1].lstrip().startswith("#") or isinstance(values[key], dict), (
                f"values.yaml: {key} has no comment"
            )


# -- chart: RBAC -------------------------------------------------------------------------------


def test_default_render_has_the_expected_objects() -> None:
    objs = template()
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Service",
            "NetworkPolicy",
        ]
    )
    for obj in objs:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == RELEASE_NAMESPACE, obj["metadata"]


def test_cluster_mode_grants_exactly_what_the_operator_needs() -> None:
    objs = template()
    assert_no_wildcards(objs)
    cluster_role = one(objs, "ClusterRole")
    assert grants(cluster_role["rules"]) == NAMESPACED_GRANTS | CLUSTER_SCOPED_GRANTS
    binding = one(objs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "tidegate", "namespace": RELEASE_NAMESPACE}
    ]


def test_view_edit_and_admin_take_in_tidegates_kinds_as_argos_aggregate_roles_do() -> None:
    roles = {o["metadata"]["name"]: o for o in aggregate_roles()}
    assert set(roles) == {"tidegate-view", "tidegate-edit", "tidegate-admin"}
    for name, role in roles.items():
        to = name.removeprefix("tidegate-")
        assert role["metadata"]["labels"][f"rbac.authorization.k8s.io/aggregate-to-{to}"] == "true"
        assert_no_wildcards([role])
        assert {g for rule in role["rules"] for g in rule["apiGroups"]} == {"tidegate.io"}
    kinds = {"rollouts", "rollouts/scale", "rollouts/status", "analysistemplates", "analysisruns"}
    assert grants(roles["tidegate-view"]["rules"]) == {
        ("tidegate.io", kind): READ for kind in kinds | {"clusteranalysistemplates"}
    }
    write = verbs("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
    for name in ("tidegate-edit", "tidegate-admin"):
        granted = grants(roles[name]["rules"])
        assert granted == {
            **{("tidegate.io", kind): write for kind in kinds},
            ("tidegate.io", "clusteranalysistemplates"): READ,  # used by every namespace: admins' own
        }
    assert aggregate_roles("rbac.aggregateRoles=false") == []
    assert aggregate_roles("rbac.create=false") == []


def test_the_outbound_policy_values_reach_the_operators_environment() -> None:
    def env(*sets: str) -> dict[str, str]:
        return {e["name"]: e.get("value") for e in container(template(*sets)).get("env", [])}

    default = env()
    assert default["TIDEGATE_OUTBOUND_ALLOW"] == "", "empty: loopback, link-local, API server refused"
    assert default["TIDEGATE_OUTBOUND_SECRET_ALLOW"] == "", "empty: Secrets go nowhere"
    assert default["TIDEGATE_METRIC_MAX_RESPONSE_BYTES"] == "1048576"
    chosen = env(
        "analysis.outbound.allow={prometheus.monitoring.svc,10.0.0.0/8}",
        "analysis.outbound.deny={10.0.0.9}",
        "analysis.outbound.secretAllow={prometheus.monitoring.svc}",
        "analysis.outbound.maxResponseBytes=65536",
    )
    assert chosen["TIDEGATE_OUTBOUND_ALLOW"] == "prometheus.monitoring.svc 10.0.0.0/8"
    assert chosen["TIDEGATE_OUTBOUND_DENY"] == "10.0.0.9"
    assert chosen["TIDEGATE_OUTBOUND_SECRET_ALLOW"] == "prometheus.monitoring.svc"
    assert chosen["TIDEGATE_METRIC_MAX_RESPONSE_BYTES"] == "65536"


def test_no_secret_access_by_default_and_get_only_when_asked() -> None:
    assert not any("secrets" in rule["resources"] for rule in all_rules(template()))
    assert not any("secrets" in rule["resources"] for rule in all_rules(template(NAMESPACED)))

    for objs in (template("analysis.secretAccess=true"), template(NAMESPACED, "analysis.secretAccess=true")):
        secret_rules = [rule for rule in all_rules(objs) if "secrets" in rule["resources"]]
        assert secret_rules
        for rule in secret_rules:
            assert rule["verbs"] == ["get"], rule
            assert rule["apiGroups"] == [""]
            assert rule["resources"] == ["secrets"], "secrets get a rule of their own"
        assert_no_wildcards(objs)


def test_notifications_read_their_configmap_and_secret_by_name_in_the_release_namespace_only() -> None:
    assert not any("configmaps" in rule["resources"] for rule in all_rules(template()))
    for sets in (("notifications.enabled=true",), (NAMESPACED, "notifications.enabled=true")):
        objs = template(*sets)
        assert_no_wildcards(objs)
        role = one(objs, "Role", "tidegate-notifications")
        assert role["metadata"]["namespace"] == RELEASE_NAMESPACE
        assert role["rules"] == [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["tidegate-notification-configmap"],
                "verbs": ["get"],
            },
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": ["tidegate-notification-secret"],
                "verbs": ["get"],
            },
        ]
        binding = one(objs, "RoleBinding", "tidegate-notifications")
        assert binding["roleRef"]["name"] == "tidegate-notifications"
        policy = one(objs, "NetworkPolicy")
        assert {"ports": [{"port": 443, "protocol": "TCP"}]} in policy["spec"]["egress"]


def test_the_chart_creates_the_notification_configmap_and_secret_only_when_given(tmp_path: Path) -> None:
    assert not [o for o in template() if o["kind"] in ("ConfigMap", "Secret")]
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "notifications": {
                    "enabled": True,
                    "configMap": {"service.slack": "recipientUrls: {deploys: $slack-deploys}"},
                    "secret": {"slack-deploys": "http://hooks.example/x"},
                }
            }
        )
    )
    objs = template(extra=("-f", str(values)))
    configmap = one(objs, "ConfigMap", "tidegate-notification-configmap")
    assert configmap["data"] == {"service.slack": "recipientUrls: {deploys: $slack-deploys}"}
    secret = one(objs, "Secret", "tidegate-notification-secret")
    assert secret["stringData"] == {"slack-deploys": "http://hooks.example/x"}
    assert configmap["metadata"]["namespace"] == secret["metadata"]["namespace"] == RELEASE_NAMESPACE


def test_pods_are_never_created_directly_and_secrets_never_written() -> None:
    """No `create` on Pods, but `create` on ReplicaSets and Jobs, whose controllers create
    pods from a template the Rollout's or AnalysisTemplate's author writes: in substance the
    account can run any pod in any namespace it covers (README, "What the operator's
    ServiceAccount can do")."""
    for objs in (template("analysis.secretAccess=true"), template(NAMESPACED, "analysis.secretAccess=true")):
        assert "create" in grants(all_rules(objs))[("apps", "replicasets")], "pods, through ReplicaSets"
        for (group, resource), granted in grants(all_rules(objs)).items():
            if (group, resource) == ("", "pods"):
                assert granted == verbs("list", "patch"), "pods are listed and relabelled; never created"
            if (group, resource) == ("", "secrets"):
                assert granted == verbs("get")


def test_namespaced_mode_renders_a_role_per_watched_namespace() -> None:
    objs = template(NAMESPACED)
    assert_no_wildcards(objs)

    roles = {
        o["metadata"]["namespace"]: o for o in of_kind(objs, "Role") if "leader" not in o["metadata"]["name"]
    }
    assert sorted(roles) == WATCHED
    for namespace, role in roles.items():
        assert grants(role["rules"]) == NAMESPACED_GRANTS
        binding = one(
            (o for o in of_kind(objs, "RoleBinding") if o["metadata"]["namespace"] == namespace),
            "RoleBinding",
        )
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert binding["subjects"][0]["namespace"] == RELEASE_NAMESPACE

    # Only the cluster-scoped kinds stay in a ClusterRole; no namespaces access.
    (cluster_role,) = of_kind(objs, "ClusterRole")
    assert grants(cluster_role["rules"]) == CLUSTER_SCOPED_GRANTS
    (binding,) = of_kind(objs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == cluster_role["metadata"]["name"]

    args = container(objs)["args"]
    assert [a for a in args if a.startswith("--namespace")] == [f"--namespace={ns}" for ns in WATCHED]
    assert not any(a.startswith("--namespace") for a in container(template())["args"])


@pytest.mark.parametrize("sets", [(), (NAMESPACED,)], ids=["cluster", "namespaced"])
def test_the_lease_role_stays_in_the_release_namespace(sets: tuple[str, ...]) -> None:
    objs = template(*sets)
    lease_roles = [
        o for o in of_kind(objs, "Role") if ("coordination.k8s.io", "leases") in grants(o["rules"])
    ]
    assert len(lease_roles) == 1
    assert lease_roles[0]["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert grants(lease_roles[0]["rules"]) == LEASE_GRANTS
    cluster_grants = grants([r for o in of_kind(objs, "ClusterRole") for r in o["rules"]])
    assert ("coordination.k8s.io", "leases") not in cluster_grants


def test_rbac_can_be_left_to_an_administrator() -> None:
    objs = template("rbac.create=false")
    assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")]


# -- chart: the Deployment ----------------------------------------------------------------------


def test_the_deployment_follows_the_production_checklist() -> None:
    objs = template()
    deployment = one(objs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2, "a leader and a warm standby"
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }, "the Lease decides who acts: a new pod starts as a standby before an old one goes"
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == one(objs, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}

    c = container(objs)
    assert c["image"] == "tidegate:0.1.0", "the tag defaults to the chart's appVersion"
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}

    assert c["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) == {"cpu", "memory"}

    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts == {"tmp": "/tmp"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["tmp"]

    assert c["args"][:3] == ["--metrics-port=8080", "--log-level=info", "--log-format=json"]


# -- chart: leader election, disruption budget, spreading -------------------------------------------

DEFAULT_ELECTION_ARGS = [
    "--leader-elect=true",
    "--leader-elect-lease-name=tidegate-operator",
    "--leader-elect-lease-duration=15",
    "--leader-elect-renew-deadline=10",
    "--leader-elect-retry-period=2",
]


def election_args(c: Manifest) -> list[str]:
    return [a for a in c["args"] if a.startswith("--leader-elect")]


def operator_options(args: list[str]) -> dict[str, Any]:
    """The options `tidegate operator` parses from these arguments (unknown flags raise)."""
    from tidegate.cli.operator_cmd import command

    with command.make_context("operator", list(args)) as ctx:
        return dict(ctx.params)


def test_leader_election_is_on_by_default_with_client_go_timings() -> None:
    c = container(template())
    assert election_args(c) == DEFAULT_ELECTION_ARGS
    options = operator_options(c["args"])
    assert options["leader_elect"] is True
    assert options["leader_elect_lease_name"] == "tidegate-operator"
    assert (
        options["leader_elect_lease_duration"],
        options["leader_elect_renew_deadline"],
        options["leader_elect_retry_period"],
    ) == (15.0, 10.0, 2.0)
    # The Lease's namespace and the identity come from the pod, as the operator expects.
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"] if "valueFrom" in e}
    assert env == {"POD_NAMESPACE": "metadata.namespace", "POD_NAME": "metadata.name"}
    assert options["leader_elect_namespace"] is None and options["leader_elect_identity"] is None


@pytest.mark.parametrize(
    "args",
    [
        # Argo Rollouts' controller flags, as an Argo manifest carries them.
        [
            "--leader-elect=true",
            "--leader-election-lease-duration=30s",
            "--leader-election-renew-deadline=20s",
            "--leader-election-retry-period=4s",
        ],
        [
            "--leader-elect-lease-duration=30",
            "--leader-elect-renew-deadline=20",
            "--leader-elect-retry-period=4",
        ],
    ],
)
def test_argos_leader_election_flags_are_understood(args: list[str]) -> None:
    options = operator_options(args)
    assert (
        options["leader_elect"],
        options["leader_elect_lease_duration"],
        options["leader_elect_renew_deadline"],
        options["leader_elect_retry_period"],
    ) == (True, 30.0, 20.0, 4.0)


def test_a_duration_that_does_not_parse_is_refused_naming_it() -> None:
    import click

    with pytest.raises(click.BadParameter, match="not a duration"):
        operator_options(["--leader-election-lease-duration=soon"])


def test_the_charts_election_defaults_are_the_operators() -> None:
    from tidegate.cli.operator_cmd import command

    defaults = {p.name: p.default for p in command.params}
    election = yaml.safe_load((CHART / "values.yaml").read_text())["leaderElection"]
    assert election["enabled"] is defaults["leader_elect"]
    assert election["leaseName"] == defaults["leader_elect_lease_name"]
    assert float(election["leaseDuration"]) == defaults["leader_elect_lease_duration"]
    assert float(election["renewDeadline"]) == defaults["leader_elect_renew_deadline"]
    assert float(election["retryPeriod"]) == defaults["leader_elect_retry_period"]


def test_leader_election_values_reach_the_flags() -> None:
    c = container(
        template(
            "leaderElection.leaseName=tidegate-team-a",
            "leaderElection.leaseDuration=30",
            "leaderElection.renewDeadline=20.5",
            "leaderElection.retryPeriod=4",
        )
    )
    assert election_args(c) == [
        "--leader-elect=true",
        "--leader-elect-lease-name=tidegate-team-a",
        "--leader-elect-lease-duration=30",
        "--leader-elect-renew-deadline=20.5",
        "--leader-elect-retry-period=4",
    ]
    options = operator_options(c["args"])
    assert options["leader_elect_renew_deadline"] == 20.5


@pytest.mark.parametrize("replicas", [0, 1])
def test_without_leader_election_one_replica_at_most_and_recreate(replicas: int) -> None:
    objs = template(f"replicaCount={replicas}", "leaderElection.enabled=false")
    spec = one(objs, "Deployment")["spec"]
    assert spec["replicas"] == replicas
    assert spec["strategy"] == {"type": "Recreate"}, "no Lease: an upgrade must never overlap"
    c = container(objs)
    assert election_args(c) == ["--leader-elect=false"]
    assert operator_options(c["args"])["leader_elect"] is False
    assert not of_kind(objs, "PodDisruptionBudget")


def test_the_disruption_budget_keeps_a_replica_through_drains() -> None:
    objs = template()
    budget = one(objs, "PodDisruptionBudget")
    assert budget["apiVersion"] == "policy/v1"
    assert budget["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert budget["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": one(objs, "Deployment")["spec"]["selector"]["matchLabels"]},
    }
    pod_labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    assert (
        one(template("replicaCount=3", "podDisruptionBudget.minAvailable=2"), "PodDisruptionBudget")["spec"][
            "minAvailable"
        ]
        == 2
    )
    assert (
        one(template("podDisruptionBudget.minAvailable=50%"), "PodDisruptionBudget")["spec"]["minAvailable"]
        == "50%"
    )


@pytest.mark.parametrize(
    "sets",
    [("replicaCount=1",), ("replicaCount=0",), ("podDisruptionBudget.enabled=false",)],
    ids=["one-replica", "stopped", "disabled"],
)
def test_no_disruption_budget_without_a_standby_or_when_disabled(sets: tuple[str, ...]) -> None:
    # With one replica, minAvailable 1 would block every drain; 0 would do nothing.
    assert not of_kind(template(*sets), "PodDisruptionBudget")


def test_replicas_prefer_different_nodes_unless_affinity_is_set() -> None:
    objs = template()
    pod = one(objs, "Deployment")["spec"]["template"]
    anti = pod["spec"]["affinity"]["podAntiAffinity"]
    assert set(anti) == {"preferredDuringSchedulingIgnoredDuringExecution"}, "soft: never unschedulable"
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["weight"] == 100
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    selector = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
    assert selector == one(objs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()

    key = "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    custom = one(
        template(
            f"{key}.nodeSelectorTerms[0].matchExpressions[0].key=pool",
            f"{key}.nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
        ),
        "Deployment",
    )["spec"]["template"]["spec"]["affinity"]
    assert set(custom) == {"nodeAffinity"}, "a user's affinity replaces the default"


def test_log_settings_and_image_pins_reach_the_container() -> None:
    digest = "sha256:" + "a" * 64
    c = container(template("logLevel=debug", "logFormat=text", "metrics.port=9000", f"image.digest={digest}"))
    assert "--log-level=debug" in c["args"]
    assert "--log-format=text" in c["args"]
    assert "--metrics-port=9000" in c["args"]
    assert c["ports"][0]["containerPort"] == 9000
    assert c["image"] == f"tidegate@{digest}"


def test_the_metrics_service_selects_the_operator() -> None:
    objs = template()
    service = one(objs, "Service")
    pod_labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]


def test_servicemonitor_is_off_by_default() -> None:
    assert not of_kind(template(), "ServiceMonitor")
    objs = template("serviceMonitor.enabled=true", "serviceMonitor.labels.release=prometheus")
    monitor = one(objs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True, "keep the Rollouts' namespace label"
    service_labels = one(objs, "Service")["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()


def test_the_network_policy_admits_only_the_metrics_port() -> None:
    policy = one(template(), "NetworkPolicy")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]
    egress_ports = {(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]}
    assert egress_ports == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP"), (9090, "TCP")}

    custom = one(
        template(
            "networkPolicy.apiServer.cidrs={10.0.0.1/32}",
            "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team=monitoring",
        ),
        "NetworkPolicy",
    )["spec"]
    assert custom["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}]
    api_rule = next(r for r in custom["egress"] if {"port": 6443, "protocol": "TCP"} in r["ports"])
    assert api_rule["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert not of_kind(template("networkPolicy.enabled=false"), "NetworkPolicy")


def test_release_names_shape_resource_names() -> None:
    objs = template(release="canary-ops")
    assert one(objs, "Deployment")["metadata"]["name"] == "canary-ops-tidegate"
    assert one(objs, "ClusterRoleBinding")["subjects"][0]["name"] == "canary-ops-tidegate"


# -- CRDs ------------------------------------------------------------------------------------------


def test_the_charts_crds_are_the_repositorys_byte_for_byte() -> None:
    repo = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    chart = sorted(p.name for p in (CHART / "crds").iterdir())
    assert repo, "crds/ is empty"
    assert chart == repo, "run `make crds`"
    _, mismatch, errors = filecmp.cmpfiles(ROOT / "crds", CHART / "crds", repo, shallow=False)
    assert mismatch == [] and errors == [], "charts/tidegate/crds/ is stale: run `make crds`"


def test_helm_installs_the_crds() -> None:
    objs = template(extra=("--include-crds",))
    crds = {o["metadata"]["name"] for o in of_kind(objs, "CustomResourceDefinition")}
    assert crds == {
        "rollouts.tidegate.io",
        "analysistemplates.tidegate.io",
        "clusteranalysistemplates.tidegate.io",
        "analysisruns.tidegate.io",
    }


# -- kustomize ---------------------------------------------------------------------------------------

OVERLAYS = {
    "staging": {"namespace": "tidegate-staging", "prefix": "staging-", "log_level": "debug"},
    "production": {"namespace": "tidegate-production", "prefix": "prod-", "log_level": "info"},
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def overlay_setting(name: str, key: str) -> Any:
    return yaml.safe_load((DEPLOY / "overlays" / name / "kustomization.yaml").read_text())[key]


def config_map(objs: list[Manifest]) -> Manifest:
    return one(objs, "ConfigMap")


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlays_set_namespace_prefix_and_labels(overlay: str) -> None:
    expected = OVERLAYS[overlay]
    objs = kustomize(f"overlays/{overlay}")
    assert one(objs, "Namespace")["metadata"]["name"] == expected["namespace"]
    for obj in objs:
        meta = obj["metadata"]
        assert meta["labels"]["environment"] == overlay, meta["name"]
        if obj["kind"] == "Namespace":
            continue
        assert meta["name"].startswith(expected["prefix"]), meta["name"]
        if obj["kind"] not in CLUSTER_SCOPED:
            assert meta["namespace"] == expected["namespace"], meta["name"]

    deployment = one(objs, "Deployment")
    assert deployment["spec"]["template"]["metadata"]["labels"]["environment"] == overlay
    assert "environment" not in deployment["spec"]["selector"]["matchLabels"], "selectors are immutable"

    # Bindings follow the renamed ServiceAccount into the overlay's namespace.
    account = one(objs, "ServiceAccount")["metadata"]["name"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account
    for binding in of_kind(objs, "ClusterRoleBinding") + of_kind(objs, "RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": expected["namespace"]}
        ]
        ref = binding["roleRef"]
        assert [o for o in objs if (o["kind"], o["metadata"]["name"]) == (ref["kind"], ref["name"])]
    assert_no_wildcards(objs)


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlays_pin_the_image_tag(overlay: str) -> None:
    (image,) = overlay_setting(overlay, "images")
    c = container(kustomize(f"overlays/{overlay}"))
    assert c["image"] == f"{image['name']}:{image['newTag']}"
    assert image["newTag"] != "latest"


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlays_set_the_log_level_through_the_generated_config_map(overlay: str) -> None:
    objs = kustomize(f"overlays/{overlay}")
    generated = config_map(objs)
    name = generated["metadata"]["name"]
    assert name.startswith(f"{OVERLAYS[overlay]['prefix']}tidegate-config-"), (
        "hash suffix: a change rolls the pod"
    )
    assert generated["data"]["TIDEGATE_LOG_LEVEL"] == OVERLAYS[overlay]["log_level"]
    assert generated["data"]["TIDEGATE_LOG_FORMAT"] == "json"
    c = container(objs)
    assert c["envFrom"] == [{"configMapRef": {"name": name}}]
    assert "--log-level=$(TIDEGATE_LOG_LEVEL)" in c["args"]
    assert "--log-format=$(TIDEGATE_LOG_FORMAT)" in c["args"]


def cpu_millis(quantity: str) -> float:
    return float(quantity[:-1]) if quantity.endswith("m") else float(quantity) * 1000


def memory_mib(quantity: str) -> float:
    units = {"Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_production_gets_more_resources_and_a_network_policy() -> None:
    staging = container(kustomize("overlays/staging"))["resources"]
    production_objs = kustomize("overlays/production")
    production = container(production_objs)["resources"]
    for kind in ("requests", "limits"):
        assert cpu_millis(production[kind]["cpu"]) > cpu_millis(staging[kind]["cpu"])
        assert memory_mib(production[kind]["memory"]) > memory_mib(staging[kind]["memory"])
    policy = one(production_objs, "NetworkPolicy")
    pod_labels = one(production_objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["ingress"] == [{"ports": [{"port": 8080, "protocol": "TCP"}]}]


def test_the_base_has_the_shape_of_the_charts_default_render() -> None:
    base = kustomize("base")
    chart = template()

    shared_kinds = {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "PodDisruptionBudget",
    }
    for kind in shared_kinds:
        assert sorted(o["metadata"]["name"] for o in of_kind(base, kind)) == sorted(
            o["metadata"]["name"] for o in of_kind(chart, kind)
        ), kind
    for kind in ("ClusterRole", "Role"):
        for chart_role in of_kind(chart, kind):
            base_role = one(base, kind, chart_role["metadata"]["name"])
            assert grants(base_role["rules"]) == grants(chart_role["rules"]), chart_role["metadata"]["name"]

    base_deployment, chart_deployment = one(base, "Deployment"), one(chart, "Deployment")
    for field in ("replicas", "strategy", "selector"):
        assert base_deployment["spec"][field] == chart_deployment["spec"][field], field
    base_pod, chart_pod = (
        base_deployment["spec"]["template"]["spec"],
        chart_deployment["spec"]["template"]["spec"],
    )
    pod_fields = (
        "securityContext",
        "volumes",
        "serviceAccountName",
        "terminationGracePeriodSeconds",
        "affinity",
    )
    for field in pod_fields:
        assert base_pod[field] == chart_pod[field], field
    base_c, chart_c = container(base), container(chart)
    compared = ("image", "ports", "livenessProbe", "readinessProbe", "startupProbe", "resources")
    for field in (*compared, "securityContext", "volumeMounts", "env"):
        assert base_c[field] == chart_c[field], field
    assert election_args(base_c) == election_args(chart_c) == DEFAULT_ELECTION_ARGS
    assert one(base, "Service")["spec"] == one(chart, "Service")["spec"]
    assert one(base, "PodDisruptionBudget")["spec"] == one(chart, "PodDisruptionBudget")["spec"]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlays_run_a_leader_and_a_standby(overlay: str) -> None:
    objs = kustomize(f"overlays/{overlay}")
    deployment = one(objs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert election_args(container(objs)) == DEFAULT_ELECTION_ARGS
    budget = one(objs, "PodDisruptionBudget")
    assert budget["metadata"]["namespace"] == OVERLAYS[overlay]["namespace"]
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]

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
        pytest.skip(
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


def template(*sets: str, release: str = "tidegate", extra: tuple[str, ...] = ()) -> list[Manifest]:
    return list(_template(tuple(sets), release, extra))


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

# What the operator needs in every namespace it serves: no more.
NAMESPACED_GRANTS: Grants = {
    ("tidegate.io", "rollouts"): READ | {"patch", "update"},
    ("tidegate.io", "rollouts/status"): verbs("get", "patch", "update"),
    ("tidegate.io", "rollouts/finalizers"): verbs("update"),
    ("tidegate.io", "analysisruns"): READ | {"create", "patch", "update", "delete"},
    ("tidegate.io", "analysisruns/status"): verbs("get", "patch", "update"),
    ("tidegate.io", "analysistemplates"): READ,
    ("apps", "replicasets"): READ | {"create", "patch", "update", "delete"},
    ("", "services"): READ | {"patch", "update"},
    ("", "pods"): READ,
    ("", "pods/eviction"): verbs("create"),
    ("", "events"): verbs("create", "patch"),
    ("networking.istio.io", "virtualservices"): READ | {"patch", "update"},
    ("networking.istio.io", "destinationrules"): READ | {"patch", "update"},
}
CLUSTER_SCOPED_GRANTS: Grants = {
    ("tidegate.io", "clusteranalysistemplates"): READ,
    ("apiextensions.k8s.io", "customresourcedefinitions"): READ,
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
    ],
    ids=["default", "namespaced", "options"],
)
def test_helm_lint_is_clean(sets: tuple[str, ...]) -> None:
    args = ["lint", "--strict", str(CHART)]
    for item in sets:
        args += ["--set", item]
    output = helm(*args)
    assert "0 chart(s) failed" in output


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("replicaCount=2", "replicaCount"),
        ("image.tag=latest", "tag"),
        ("logLevel=loud", "logLevel"),
        ("watchNamespaces={a,a}", "watchNamespaces"),
        ("watchNamespaces={Not_A_Namespace}", "watchNamespaces"),
        ("typo=1", "typo"),
    ],
)
def test_the_schema_refuses_bad_values(value: str, complaint: str) -> None:
    result = subprocess.run(
        [str(tool("helm")), "template", "t", str(CHART), "--set", value],
        capture_output=True,
        text=True,
        timeout=120,
        env=helm_env(),
        check=False,
    )
    assert result.returncode != 0
    assert complaint in result.stderr


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


def test_pods_are_never_created_and_secrets_never_written() -> None:
    for objs in (template("analysis.secretAccess=true"), template(NAMESPACED, "analysis.secretAccess=true")):
        for (group, resource), granted in grants(all_rules(objs)).items():
            if (group, resource) == ("", "pods"):
                assert granted == READ
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
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}, "kopf peering is not a lock: never two at once"
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

    shared_kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service"}
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
    for field in ("securityContext", "volumes", "serviceAccountName", "terminationGracePeriodSeconds"):
        assert base_pod[field] == chart_pod[field], field
    base_c, chart_c = container(base), container(chart)
    compared = ("image", "ports", "livenessProbe", "readinessProbe", "startupProbe", "resources")
    for field in (*compared, "securityContext", "volumeMounts", "env"):
        assert base_c[field] == chart_c[field], field
    assert one(base, "Service")["spec"] == one(chart, "Service")["spec"]

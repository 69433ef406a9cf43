"""Moving from Argo Rollouts by changing only apiVersion (README "Moving from Argo Rollouts").

`tests/fixtures/argo/rollouts/` holds Rollouts in Argo Rollouts' own shapes, with Argo's
`argoproj.io/v1alpha1`; together they use every field the README's table calls *same*. Here
each file, with nothing but its `argoproj.io` apiVersions changed, is

- named honestly: every key it writes is a property of the CRD schema, and none lands in a
  field Tidegate keeps but refuses (the other routers, experiment and plugin steps, pingPong);
- accepted by the API server under strict field validation, and stored as written (read back,
  the spec equals the file's once the schema's own defaults are taken out: nothing pruned);
- clean under `tidegate lint` (warnings allowed, no error);

and the ones that need no Istio run on the sandbox: Healthy first, then an image update goes
through its steps as Argo documents them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from tests.kube import REPO, Kube, wait_until
from tidegate.cli.main import cli
from tidegate.core.schema_rules import crd_schema

FIXTURES = REPO / "tests/fixtures/argo/rollouts"
FILES = sorted(p.name for p in FIXTURES.glob("*.yaml"))
ARGO = "argoproj.io/v1alpha1"
TIDEGATE = "tidegate.io/v1alpha1"
PLURALS = {
    "Rollout": "rollouts.tidegate.io",
    "AnalysisTemplate": "analysistemplates.tidegate.io",
    "ClusterAnalysisTemplate": "clusteranalysistemplates.tidegate.io",
}

# Where a Rollout may hold what the schema does not spell out: the pod template (a PodTemplateSpec,
# checked by the API server when the ReplicaSet is made) and Argo's empty-object marker for required
# anti-affinity. Anything else under x-kubernetes-preserve-unknown-fields is a field Tidegate keeps
# but refuses, which a file of "same" fields must not use.
OPEN_ENDED = {
    "spec.template",
    "spec.strategy.canary.antiAffinity.requiredDuringSchedulingIgnoredDuringExecution",
    "spec.strategy.blueGreen.antiAffinity.requiredDuringSchedulingIgnoredDuringExecution",
    "spec.metrics[].provider.job.spec",  # a JobSpec, in an AnalysisTemplate
}

Doc = dict[str, Any]


def argo_docs(name: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all((FIXTURES / name).read_text()) if d]


def moved(name: str) -> list[Doc]:
    """The file's documents with only the apiVersion changed, for each Argo one."""
    docs = argo_docs(name)
    for doc in docs:
        if doc["apiVersion"] == ARGO:
            doc["apiVersion"] = TIDEGATE
    return docs


def moved_text(name: str) -> str:
    """The file's own text with only its apiVersion lines changed (comments and layout kept)."""
    text = (FIXTURES / name).read_text()
    return text.replace(f"apiVersion: {ARGO}", f"apiVersion: {TIDEGATE}")


def unknown_keys(value: Any, schema: Doc, path: str) -> list[str]:
    """Where `value` names a key its schema has no property for, or enters a refused field."""
    if re.sub(r"\[\d+\]", "[]", path) in OPEN_ENDED:
        return []
    if schema.get("x-kubernetes-preserve-unknown-fields") and path not in (
        "spec.strategy.canary.trafficRouting.plugins",  # the gatewayAPI alias is spelled out
    ):
        return [f"{path}: kept as written but not run by Tidegate"]
    if isinstance(value, dict):
        props = schema.get("properties")
        if props is None:
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):  # a map (labels, annotations)
                return [p for k, v in value.items() for p in unknown_keys(v, extra, f"{path}.{k}")]
            return [f"{path}: an object where the schema has none"]
        out = []
        for key, sub in value.items():
            if key not in props:
                out.append(f"{path}.{key}: not in the CRD schema")
            else:
                out += unknown_keys(sub, props[key], f"{path}.{key}")
        return out
    if isinstance(value, list):
        items = schema.get("items") or {}
        return [p for i, v in enumerate(value) for p in unknown_keys(v, items, f"{path}[{i}]")]
    return []


def without_defaults(stored: Any, written: Any, schema: Doc) -> Any:
    """`stored` less what the API server added from the schema's defaults where `written` had
    nothing; everything else (a changed or pruned field) is left for the comparison to show."""
    if isinstance(stored, dict) and isinstance(written, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        out = {}
        for key, value in stored.items():
            sub = props.get(key) or (extra if isinstance(extra, dict) else {})
            if key not in written and "default" in sub and value == sub["default"]:
                continue
            out[key] = without_defaults(value, written.get(key), sub)
        return out
    if isinstance(stored, list) and isinstance(written, list) and len(stored) == len(written):
        items = schema.get("items") or {}
        return [without_defaults(s, w, items) for s, w in zip(stored, written, strict=True)]
    return stored


@pytest.mark.parametrize("name", FILES)
def test_an_argo_file_names_only_fields_the_crd_knows(name: str) -> None:
    """The fixtures stay honest: a field Tidegate's schema does not have, or one it keeps only to
    refuse, would make a file pass for the wrong reason."""
    docs = argo_docs(name)
    assert any(d["kind"] == "Rollout" and d["apiVersion"] == ARGO for d in docs), "an Argo Rollout"
    for doc in docs:
        if doc["apiVersion"] != ARGO:
            continue
        schema = crd_schema(doc["kind"])
        problems = unknown_keys(doc["spec"], schema["properties"]["spec"], "spec")
        assert problems == [], f"{doc['kind']}/{doc['metadata']['name']}"


def test_the_argo_files_cover_every_same_field_of_the_readme() -> None:
    """Each Argo field the README calls the same appears in at least one file."""
    seen: set[str] = set()

    def walk(value: Any, path: str) -> None:
        seen.add(path)
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}")
        elif isinstance(value, list):
            for v in value:
                walk(v, f"{path}[]")

    for name in FILES:
        for doc in argo_docs(name):
            if doc["kind"] == "Rollout":
                walk(doc["spec"], "spec")
    canary, bg = "spec.strategy.canary", "spec.strategy.blueGreen"
    istio = f"{canary}.trafficRouting.istio"
    wanted = {
        "spec.replicas", "spec.workloadRef.scaleDown", "spec.rollbackWindow.revisions",
        "spec.restartAt", "spec.paused", "spec.progressDeadlineSeconds", "spec.progressDeadlineAbort",
        "spec.revisionHistoryLimit", "spec.minReadySeconds", "spec.analysis.successfulRunHistoryLimit",
        "spec.analysis.unsuccessfulRunHistoryLimit",
        f"{canary}.maxSurge", f"{canary}.maxUnavailable", f"{canary}.scaleDownDelaySeconds",
        f"{canary}.abortScaleDownDelaySeconds", f"{canary}.minPodsPerReplicaSet",
        f"{canary}.scaleDownDelayRevisionLimit", f"{canary}.canaryMetadata.labels",
        f"{canary}.stableMetadata.annotations",
        f"{canary}.antiAffinity.preferredDuringSchedulingIgnoredDuringExecution.weight",
        f"{canary}.antiAffinity.requiredDuringSchedulingIgnoredDuringExecution",
        f"{canary}.analysis.startingStep", f"{canary}.analysis.args[].valueFrom.podTemplateHashValue",
        f"{canary}.analysis.args[].valueFrom.fieldRef.fieldPath",
        f"{canary}.steps[].setWeight", f"{canary}.steps[].pause.duration",
        f"{canary}.steps[].analysis.templates[].clusterScope",
        f"{canary}.steps[].analysis.dryRun[].metricName",
        f"{canary}.steps[].analysis.measurementRetention[].limit",
        f"{canary}.steps[].setCanaryScale.replicas", f"{canary}.steps[].setCanaryScale.weight",
        f"{canary}.steps[].setCanaryScale.matchTrafficWeight",
        f"{canary}.steps[].setHeaderRoute.match[].headerValue.regex",
        f"{canary}.steps[].setMirrorRoute.percentage",
        f"{canary}.steps[].setMirrorRoute.match[].method.exact",
        f"{canary}.steps[].setMirrorRoute.match[].headers.agent-1b.exact",
        f"{canary}.trafficRouting.managedRoutes[].name", f"{canary}.trafficRouting.maxTrafficWeight",
        f"{istio}.virtualService.routes[]", f"{istio}.virtualServices[].name",
        f"{istio}.virtualServices[].tlsRoutes[].sniHosts[]", f"{istio}.virtualServices[].tcpRoutes[].port",
        f"{istio}.destinationRule.canarySubsetName", f"{istio}.destinationRule.additionalSubsetNames[]",
        f"{canary}.trafficRouting.plugins.argoproj-labs/gatewayAPI.httpRoutes[].useHeaderRoutes",
        f"{bg}.activeService", f"{bg}.previewService", f"{bg}.previewReplicaCount",
        f"{bg}.autoPromotionEnabled", f"{bg}.autoPromotionSeconds", f"{bg}.scaleDownDelaySeconds",
        f"{bg}.scaleDownDelayRevisionLimit", f"{bg}.abortScaleDownDelaySeconds",
        f"{bg}.prePromotionAnalysis.args[].value", f"{bg}.postPromotionAnalysis.templates[].templateName",
        f"{bg}.activeMetadata.labels", f"{bg}.previewMetadata.labels",
        f"{bg}.antiAffinity.preferredDuringSchedulingIgnoredDuringExecution.weight",
    }  # fmt: skip
    assert sorted(wanted - seen) == []


@pytest.mark.sandbox
@pytest.mark.parametrize("name", FILES)
def test_an_argo_file_with_only_its_api_version_changed_is_accepted_as_written(
    bare_kube: Kube, name: str, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_text(moved_text(name))
    # Strict field validation: an unknown or duplicated field is an error, not a warning.
    bare_kube.kubectl("apply", "--validate=strict", "-f", str(path))
    for doc in moved(name):
        if doc["apiVersion"] != TIDEGATE:
            continue
        stored = bare_kube.get(PLURALS[doc["kind"]], doc["metadata"]["name"])
        assert stored["apiVersion"] == TIDEGATE
        schema = crd_schema(doc["kind"])["properties"]["spec"]
        assert without_defaults(stored["spec"], doc["spec"], schema) == doc["spec"], doc["kind"]
        if doc["kind"] == "ClusterAnalysisTemplate":
            bare_kube.sandbox.kubectl("delete", PLURALS[doc["kind"]], doc["metadata"]["name"])

    # `tidegate lint FILE -o json`, in this process (the same command, without a Python start).
    lint = CliRunner().invoke(cli, ["lint", str(path), "-o", "json"])
    report = json.loads(lint.stdout)
    errors = [m for m in report["messages"] if m["severity"] == "error"]
    assert (lint.exit_code, errors) == (0, [])
    assert report["summary"]["objects"] == sum(1 for d in moved(name) if d["apiVersion"] == TIDEGATE)


# ---------------------------------------------------------------------------
# The files that need no Istio, run: Healthy, then an image update through the steps.


def rollout_of(name: str) -> Doc:
    return next(d for d in moved(name) if d["kind"] == "Rollout")


def apply_moved(kube: Kube, name: str) -> Doc:
    kube.kubectl("apply", "--validate=strict", "-f", "-", input=moved_text(name))
    return rollout_of(name)


def new_image(kube: Kube, doc: Doc, image: str = "argoproj/rollouts-demo:yellow") -> None:
    """`kubectl argo rollouts set image`'s effect: the container's image, nothing else."""
    doc["spec"]["template"]["spec"]["containers"][0]["image"] = image
    kube.apply(doc)


def pods_by_image(kube: Kube, name: str) -> dict[str, int]:
    """{image: available pods} of the Rollout's ReplicaSets that have any."""
    out = {}
    for rs in kube.replica_sets(name):
        available = (rs.get("status") or {}).get("availableReplicas") or 0
        if available:
            out[rs["spec"]["template"]["spec"]["containers"][0]["image"]] = available
    return out


def hold(kube: Kube, name: str, expected: dict[str, int], what: str) -> None:
    wait_until(lambda: pods_by_image(kube, name) == expected, 60, what=f"{what}: {expected}")


def promote(kube: Kube, name: str) -> None:
    """`kubectl argo rollouts promote` on a paused step: the pause condition is cleared."""
    kube.patch_status(name, {"pauseConditions": []})


BLUE, YELLOW = "argoproj/rollouts-demo:blue", "argoproj/rollouts-demo:yellow"


@pytest.mark.sandbox
def test_argos_basic_canary_runs_unchanged(kube: Kube) -> None:
    """replicas 1, setWeight 50, pause {}: Argo's basic canary keeps the one stable pod beside
    the canary's until promotion, then the new version alone."""
    doc = apply_moved(kube, "basic-canary.yaml")
    kube.wait_phase("basic-canary", "Healthy")
    new_image(kube, doc)
    st = kube.wait_phase("basic-canary", "Paused")
    assert st["currentStepIndex"] == 1
    hold(kube, "basic-canary", {BLUE: 1, YELLOW: 1}, "one pod of each version at setWeight 50")
    promote(kube, "basic-canary")
    kube.wait_phase("basic-canary", "Healthy")
    hold(kube, "basic-canary", {YELLOW: 1}, "the new version alone")


@pytest.mark.sandbox
def test_argos_canary_with_surge_limits_stops_at_each_weight(kube: Kube) -> None:
    """replicas 5, maxSurge 20%, maxUnavailable 0: a timed pause goes on by itself, pause {}
    waits at setWeight 40 with 2 canary and 3 stable pods (Argo's basic-canary counts), and
    never more than one pod above five (maxSurge 20% of 5)."""
    doc = apply_moved(kube, "canary-surge.yaml")
    kube.wait_phase("canary-surge", "Healthy")
    new_image(kube, doc)
    sizes: list[int] = []

    def paused_at_the_untimed_pause() -> bool:
        sizes.append(sum(rs["spec"]["replicas"] for rs in kube.replica_sets("canary-surge")))
        st = kube.status("canary-surge")
        return st.get("phase") == "Paused" and st.get("currentStepIndex") == 3

    wait_until(paused_at_the_untimed_pause, 60, what="the 1s pause over by itself, waiting at pause {}")
    hold(kube, "canary-surge", {BLUE: 3, YELLOW: 2}, "setWeight 40 of 5 pods")
    assert max(sizes) <= 6, f"maxSurge 20% of 5 is one pod; sizes seen {sizes}"
    promote(kube, "canary-surge")
    kube.wait_phase("canary-surge", "Healthy")
    hold(kube, "canary-surge", {YELLOW: 5}, "the new version alone")


@pytest.mark.sandbox
def test_argos_canary_metadata_and_anti_affinity_run_unchanged(kube: Kube) -> None:
    """canaryMetadata / stableMetadata label the pods by role; the canary's pods prefer nodes
    without the stable's (antiAffinity preferred, weight 1)."""
    doc = apply_moved(kube, "canary-metadata-antiaffinity.yaml")
    kube.wait_phase("canary-metadata", "Healthy")
    new_image(kube, doc)
    st = kube.wait_phase("canary-metadata", "Paused")
    stable, canary = st["stableRS"], st["currentPodHash"]

    def roles() -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for pod in kube.list("pods", "app=canary-metadata"):
            labels = pod["metadata"].get("labels") or {}
            out.setdefault(labels.get("rollouts-pod-template-hash", ""), set()).add(labels.get("role", ""))
        return out

    wait_until(lambda: roles() == {stable: {"stable"}, canary: {"canary"}}, 30, what="pods labelled by role")
    (rs,) = [r for r in kube.replica_sets("canary-metadata") if r["metadata"]["name"].endswith(canary)]
    (term,) = rs["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["weight"] == 1
    expressions = term["podAffinityTerm"]["labelSelector"]["matchExpressions"]
    assert {"key": "rollouts-pod-template-hash", "operator": "In", "values": [stable]} in expressions
    promote(kube, "canary-metadata")
    kube.wait_phase("canary-metadata", "Healthy")


def selector_hash(kube: Kube, service: str) -> str | None:
    selector: dict[str, str] = kube.get("services", service)["spec"]["selector"]
    return selector.get("rollouts-pod-template-hash")


@pytest.mark.sandbox
def test_argos_blue_green_waits_for_promotion_with_the_preview_on_the_new_version(kube: Kube) -> None:
    doc = apply_moved(kube, "bluegreen.yaml")
    kube.wait_phase("rollout-bluegreen", "Healthy")
    old = kube.status("rollout-bluegreen")["stableRS"]
    new_image(kube, doc)
    st = kube.wait_phase("rollout-bluegreen", "Paused")
    new = st["currentPodHash"]
    assert new != old
    active, preview = "rollout-bluegreen-active", "rollout-bluegreen-preview"
    assert (selector_hash(kube, active), selector_hash(kube, preview)) == (old, new)
    hold(kube, "rollout-bluegreen", {BLUE: 2, YELLOW: 2}, "the preview at full size beside the active")
    promote(kube, "rollout-bluegreen")
    kube.wait_phase("rollout-bluegreen", "Healthy")
    assert selector_hash(kube, "rollout-bluegreen-active") == new


@pytest.mark.sandbox
def test_argos_blue_green_promotes_itself_after_auto_promotion_seconds(kube: Kube) -> None:
    """previewReplicaCount 1 while in preview; promoted with no one's help after 2s; the old
    version scaled down after scaleDownDelaySeconds (5s)."""
    doc = apply_moved(kube, "bluegreen-auto-promotion.yaml")
    kube.wait_phase("bluegreen-auto", "Healthy")
    old = kube.status("bluegreen-auto")["stableRS"]
    new_image(kube, doc)
    wait_until(
        lambda: (
            pods_by_image(kube, "bluegreen-auto") == {BLUE: 2, YELLOW: 1}
            and selector_hash(kube, "bluegreen-auto-active") == old
        ),
        60,
        what="the preview at previewReplicaCount 1 beside the active, before the 2s are up",
    )
    new = kube.status("bluegreen-auto")["currentPodHash"]
    wait_until(
        lambda: selector_hash(kube, "bluegreen-auto-active") == new,
        60,
        what="the active Service on the new version, promoted by itself",
    )
    kube.wait_phase("bluegreen-auto", "Healthy")
    hold(kube, "bluegreen-auto", {YELLOW: 2}, "the old version scaled down after the delay")

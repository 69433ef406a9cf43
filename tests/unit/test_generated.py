"""Generated and repeated files stay in step with their sources."""

from __future__ import annotations

import re
from pathlib import Path

from tidegate.api.crdgen import crds, render
from tidegate.sandbox import assets

REPO = Path(__file__).resolve().parents[2]


def test_crds_are_generated_from_the_models() -> None:
    for name, crd in crds().items():
        path = REPO / "crds" / name
        assert path.exists(), f"crds/{name} missing: run `make crds`"
        assert path.read_text() == render(crd), f"crds/{name} is stale: run `make crds`"
    assert sorted(p.name for p in (REPO / "crds").glob("*.yaml")) == sorted(crds())


def test_testenv_versions_match_the_sandbox() -> None:
    env = dict(
        line.split("=", 1)
        for line in (REPO / "hack/testenv/versions.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["K8S_VERSION"] == assets.K8S_VERSION
    assert env["ETCD_VERSION"] == assets.ETCD_VERSION
    assert env["KWOK_VERSION"] == assets.KWOK_VERSION
    assert env["HELM_VERSION"] == assets.HELM_VERSION
    assert env["KUSTOMIZE_VERSION"] == assets.KUSTOMIZE_VERSION
    assert env["ISTIO_API_VERSION"] == assets.ISTIO_API_VERSION
    assert env["GATEWAY_API_VERSION"] == assets.GATEWAY_API_VERSION
    major, minor, _ = env["K8S_VERSION"].split(".")
    assert (int(major), int(minor)) >= (1, 34)


def _walk(node: dict[str, object], path: str = "") -> list[str]:
    """Problems that make a schema non-structural, for every schema node below `node`."""
    problems = [
        f"{path}: {bad}" for bad in ("$ref", "anyOf", "allOf", "oneOf", "title", "$defs") if bad in node
    ]
    special = "x-kubernetes-int-or-string" in node or "x-kubernetes-preserve-unknown-fields" in node
    if "type" not in node and not special:
        problems.append(f"{path}: no type")
    if "properties" in node and node.get("type") != "object":
        problems.append(f"{path}: properties without type object")
    props = node.get("properties") or {}
    assert isinstance(props, dict)
    for name, sub in props.items():
        problems += _walk(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        sub = node.get(key)
        if isinstance(sub, dict):
            problems += _walk(sub, f"{path}[{key}]")
    return problems


def test_crds_are_structural() -> None:
    for name, crd in crds().items():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert _walk(schema) == [], name


def test_rollout_crd_has_scale_status_and_columns() -> None:
    crd = crds()["rollouts.yaml"]["spec"]["versions"][0]
    assert crd["subresources"]["status"] == {}
    assert crd["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    names = [c["name"] for c in crd["additionalPrinterColumns"]]
    assert names == ["Desired", "Current", "Up-to-date", "Available", "Phase", "Step", "Canary-Weight", "Age"]


def test_cel_rules_cover_the_cross_field_rules() -> None:
    text = render(crds()["rollouts.yaml"])
    rules = re.findall(r"rule: (.*)", text)
    assert any("has(self.canary) != has(self.blueGreen)" in r for r in rules)
    assert any("has(self.setWeight), has(self.pause)" in r for r in rules)
    assert any("self.duration.matches" in r for r in rules)

"""Generate the CustomResourceDefinitions from the pydantic models.

pydantic emits JSON Schema (draft 2020-12, `$ref`s, `anyOf` with null, titles);
a CRD wants a *structural* OpenAPI v3 schema: everything inline, one type per node,
no titles. `structural()` does that translation; `crds()` adds the subresources,
printer columns and names. `python -m tidegate.api.crdgen DIR` writes the files.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from tidegate.api.analysis import AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate
from tidegate.api.rollout import Rollout

GROUP = "tidegate.io"
VERSION = "v1alpha1"

Schema = dict[str, Any]

DEFAULT_MAX_ITEMS = 256

_DROP = {"title", "$defs", "discriminator"}


def _resolve(node: Schema, defs: dict[str, Schema]) -> Schema:
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        # A field's own description beats the class docstring of its type.
        extra = {k: v for k, v in node.items() if k != "$ref"}
        target.update(extra)
        return _resolve(target, defs)
    return node


def _convert(node: Schema, defs: dict[str, Schema]) -> Schema:
    node = _resolve(node, defs)
    if node.get("x-kubernetes-int-or-string"):
        out: Schema = {"x-kubernetes-int-or-string": True}
        for key in ("description", "default", "maxLength"):
            if key in node:
                out[key] = node[key]
        return out
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(branches) == 1:
            merged = _resolve(branches[0], defs)
            merged = {**merged, **{k: v for k, v in rest.items() if k != "default" or v is not None}}
            return _convert(merged, defs)
        raise ValueError(f"cannot make a structural schema of anyOf {node['anyOf']!r}")
    out = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "default" and value is None:
            continue
        if key == "properties":
            out[key] = {name: _convert(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs)
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif value is not False:
                out[key] = _convert(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key == "exclusiveMinimum":
            out["minimum"] = value
            out["exclusiveMinimum"] = True
        elif key == "exclusiveMaximum":
            out["maximum"] = value
            out["exclusiveMaximum"] = True
        else:
            out[key] = value
    if out.get("type") == "array" and "maxItems" not in out:
        # Bounded lists keep the API server's CEL cost estimate within budget.
        out["maxItems"] = DEFAULT_MAX_ITEMS
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("x-kubernetes-preserve-unknown-fields") and "type" not in out:
        out["type"] = "object"
    if "properties" in out and "type" not in out:
        out["type"] = "object"
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def structural(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3 schema of a model (by alias, everything inline)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema = _convert(raw, defs)
    return schema


def _top_level(model: type[BaseModel], description: str) -> Schema:
    schema = structural(model)
    props = schema["properties"]
    props["apiVersion"] = {"type": "string", "description": "tidegate.io/v1alpha1"}
    props["kind"] = {"type": "string", "description": "Kind of the object."}
    props["metadata"] = {"type": "object"}
    if any("self.metadata.name" in r["rule"] for r in schema.get("x-kubernetes-validations", [])):
        # A rule's fieldPath must be a path of the schema: declare the name (a CRD may say
        # something of metadata.name and generateName only; the rest of metadata is the API
        # server's, never pruned by this schema).
        props["metadata"]["properties"] = {"name": {"type": "string"}}
    for key in ("apiVersion", "kind"):
        props[key].pop("default", None)
    if "status" in props:
        props["status"].pop("default", None)
    schema["description"] = description
    schema["required"] = [r for r in schema.get("required", []) if r not in ("metadata",)]
    return schema


_ROLLOUT_COLUMNS: list[Schema] = [
    {"name": "Desired", "type": "integer", "jsonPath": ".spec.replicas", "description": "Desired pods"},
    {"name": "Current", "type": "integer", "jsonPath": ".status.replicas", "description": "Pods"},
    {
        "name": "Up-to-date",
        "type": "integer",
        "jsonPath": ".status.updatedReplicas",
        "description": "Pods of the current revision",
    },
    {
        "name": "Available",
        "type": "integer",
        "jsonPath": ".status.availableReplicas",
        "description": "Available pods",
    },
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Rollout phase"},
    {"name": "Step", "type": "string", "jsonPath": ".status.step", "description": "Canary step k/n"},
    {
        "name": "Canary-Weight",
        "type": "integer",
        "jsonPath": ".status.canary.weights.canary.weight",
        "description": "Traffic weight of the canary, read back from the router",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

_ANALYSIS_RUN_COLUMNS: list[Schema] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _crd(
    kind: str,
    plural: str,
    scope: str,
    schema: Schema,
    *,
    short_names: list[str],
    columns: list[Schema] | None = None,
    subresources: Schema | None = None,
) -> Schema:
    version: Schema = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
    }
    if subresources:
        version["subresources"] = subresources
    if columns:
        version["additionalPrinterColumns"] = columns
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["tidegate"],
            },
            "versions": [version],
        },
    }


def crds() -> dict[str, Schema]:
    """File name -> CRD object."""
    rollout_schema = _top_level(Rollout, "A Deployment that rolls out step by step or by preview and switch.")
    template_schema = _top_level(AnalysisTemplate, "Metrics a rollout's analysis measures.")
    cluster_schema = _top_level(ClusterAnalysisTemplate, "An AnalysisTemplate for every namespace.")
    run_schema = _top_level(AnalysisRun, "One analysis of one rollout revision, with every measurement.")
    return {
        "rollouts.yaml": _crd(
            "Rollout",
            "rollouts",
            "Namespaced",
            rollout_schema,
            short_names=["tgro"],
            columns=_ROLLOUT_COLUMNS,
            subresources={
                "status": {},
                "scale": {
                    "specReplicasPath": ".spec.replicas",
                    "statusReplicasPath": ".status.replicas",
                    "labelSelectorPath": ".status.selector",
                },
            },
        ),
        "analysistemplates.yaml": _crd(
            "AnalysisTemplate", "analysistemplates", "Namespaced", template_schema, short_names=["tgat"]
        ),
        "clusteranalysistemplates.yaml": _crd(
            "ClusterAnalysisTemplate",
            "clusteranalysistemplates",
            "Cluster",
            cluster_schema,
            short_names=["tgcat"],
        ),
        "analysisruns.yaml": _crd(
            "AnalysisRun",
            "analysisruns",
            "Namespaced",
            run_schema,
            short_names=["tgar"],
            columns=_ANALYSIS_RUN_COLUMNS,
            subresources={"status": {}},
        ),
    }


HEADER = "# Generated by `make crds` from operator/tidegate/api; do not edit.\n"


def render(crd: Schema) -> str:
    return HEADER + yaml.safe_dump(crd, sort_keys=False, width=100)


def main(argv: list[str]) -> None:
    out = Path(argv[0] if argv else "crds")
    out.mkdir(parents=True, exist_ok=True)
    for name, crd in crds().items():
        (out / name).write_text(render(crd))


if __name__ == "__main__":
    main(sys.argv[1:])

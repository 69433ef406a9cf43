"""Namespace isolation: a Rollout steers objects of its own namespace, and of another only with
that namespace's consent.

Where a Rollout can name another namespace (everything else it names — Services, the
DestinationRule, the workloadRef Deployment, AnalysisTemplates, Secrets — is looked up in its
own namespace by construction; ClusterAnalysisTemplates are cluster-scoped and only read):

| field | names |
|---|---|
| `spec.strategy.canary.trafficRouting.istio.virtualService.name` | `namespace/name` of a VirtualService |
| `spec.strategy.canary.trafficRouting.gatewayAPI.namespace` | the namespace of the HTTPRoutes / GRPCRoutes |
| `...trafficRouting.plugins.argoproj-labs/gatewayAPI.namespace` | the same, in Argo's plugin form |

**Consent** is an annotation on the very object to be steered, in its namespace:

    metadata:
      annotations:
        tidegate.io/allow-rollouts-from: "shop, payments/web"

a comma- or space-separated list of namespaces (every Rollout of that namespace) or
`namespace/rollout` (that Rollout only). Only someone who may edit that object can write it —
and such a person could already set its weights — so the consent grants nothing its author
did not hold, like a Gateway API ReferenceGrant, but per object. It is read on every pass:
removing it stops the Rollout at its next pass (InvalidSpec; nothing is written any more).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tidegate.api.rollout import GATEWAY_API_PLUGIN, Rollout

__all__ = ["CONSENT_ANNOTATION", "Reference", "consents", "foreign_references", "refusal"]

CONSENT_ANNOTATION = "tidegate.io/allow-rollouts-from"

ROUTING = "spec.strategy.canary.trafficRouting"


@dataclass(frozen=True)
class Reference:
    """An object of another namespace that a Rollout names."""

    field: str
    """The spec field that names it (for the InvalidSpec message)."""
    kind: str
    plural: str
    namespace: str
    name: str


def foreign_references(rollout: Rollout) -> list[Reference]:
    """Every object outside the Rollout's namespace that its spec names."""
    own = rollout.metadata.namespace or "default"
    canary = rollout.spec.strategy.canary
    routing = canary.traffic_routing if canary is not None else None
    if routing is None:
        return []
    found: list[Reference] = []
    if routing.istio is not None:
        several = bool(routing.istio.virtual_services)
        for index, vs in enumerate(routing.istio.all_virtual_services()):
            if "/" not in vs.name:
                continue
            namespace, _, short = vs.name.partition("/")
            if namespace != own:
                where = f"virtualServices[{index}]" if several else "virtualService"
                field = f"{ROUTING}.istio.{where}.name"
                found.append(Reference(field, "VirtualService", "virtualservices", namespace, short))
    gateway = routing.gateway()
    if gateway is not None and gateway.namespace and gateway.namespace != own:
        where = "gatewayAPI" if routing.gateway_api is not None else f"plugins.{GATEWAY_API_PLUGIN}"
        for kind, route in gateway.routes():
            found.append(
                Reference(
                    f"{ROUTING}.{where}.namespace",
                    kind,
                    "httproutes" if kind == "HTTPRoute" else "grpcroutes",
                    gateway.namespace,
                    route.name,
                )
            )
    return found


def consents(annotations: Mapping[str, str] | None, namespace: str, rollout: str) -> bool:
    """Whether an object's consent annotation admits Rollout `namespace/rollout`.

    >>> consents({CONSENT_ANNOTATION: "shop, payments/web"}, "shop", "any")
    True
    >>> consents({CONSENT_ANNOTATION: "shop, payments/web"}, "payments", "api")
    False
    >>> consents({}, "shop", "web")
    False
    """
    text = (annotations or {}).get(CONSENT_ANNOTATION) or ""
    entries = {entry.strip() for entry in text.replace(",", " ").split() if entry.strip()}
    return namespace in entries or f"{namespace}/{rollout}" in entries


def refusal(
    reference: Reference, rollout_namespace: str, rollout: str, target: Mapping[str, object] | None
) -> str | None:
    """Why the Rollout may not steer `reference` (None: the target consents). `target` is the
    object as read (None: not found; a missing object consents to nothing)."""
    annotations: Mapping[str, str] | None = None
    if target is not None:
        metadata = target.get("metadata")
        if isinstance(metadata, Mapping):
            found = metadata.get("annotations")
            annotations = found if isinstance(found, Mapping) else None
    if consents(annotations, rollout_namespace, rollout):
        return None
    what = f"{reference.kind} {reference.namespace}/{reference.name}"
    state = "does not exist" if target is None else f"has no {CONSENT_ANNOTATION} annotation admitting it"
    return (
        f"{reference.field}: {what} is in another namespace and {state}; a Rollout steers objects "
        f"of its own namespace ({rollout_namespace}) unless the object consents "
        f"(annotation {CONSENT_ANNOTATION}: {rollout_namespace} or {rollout_namespace}/{rollout})"
    )

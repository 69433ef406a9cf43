"""Istio: weights in a VirtualService's HTTP routes, subsets in a DestinationRule.

Host-level split: the two destinations are the stable and canary Services.
Subset-level split (with destinationRule): one host, two subsets whose labels the
operator points at the stable / canary pod-template hashes.

Writes are JSON patches that touch only the weights, the managed header routes and
the subsets' labels, each guarded by a `test` of the resourceVersion, so that a
GitOps tool can ignore exactly those fields and a concurrent edit is never lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from tidegate.api.rollout import Rollout
from tidegate.core.hashing import HASH_LABEL
from tidegate.core.model import HeaderRoute, RouterState, SetTraffic
from tidegate.k8s.client import ApiException, Clients, call, is_not_found

GROUP = "networking.istio.io"
VERSIONS = ("v1", "v1beta1", "v1alpha3")
FIELD_MANAGER = "tidegate"


def _host_name(host: str) -> str:
    return host.split(".", 1)[0]


@dataclass
class _Found:
    version: str
    obj: dict[str, Any]


class IstioRouter:
    def __init__(self, rollout: Rollout, clients: Clients) -> None:
        canary = rollout.spec.strategy.canary
        assert canary is not None and canary.traffic_routing is not None
        istio = canary.traffic_routing.istio
        assert istio is not None
        self.rollout = rollout
        self.clients = clients
        self.namespace = rollout.metadata.namespace or "default"
        vs_name = istio.virtual_service.name
        if "/" in vs_name:
            self.vs_namespace, self.vs_name = vs_name.split("/", 1)
        else:
            self.vs_namespace, self.vs_name = self.namespace, vs_name
        self.route_names = list(istio.virtual_service.routes)
        self.dr = istio.destination_rule
        self.stable_service = canary.stable_service or ""
        self.canary_service = canary.canary_service or ""
        self.managed_route_names = [m.name for m in canary.traffic_routing.managed_routes]

    # ------------------------------------------------------------------ read
    async def _get(self, plural: str, name: str, namespace: str) -> _Found | None:
        for version in VERSIONS:
            try:
                obj = await call(
                    self.clients.custom.get_namespaced_custom_object, GROUP, version, namespace, plural, name
                )
                return _Found(version, cast(dict[str, Any], obj))
            except ApiException as exc:
                if exc.status == 404 and '"NotFound"' in str(exc.body or ""):
                    return None  # the kind is served, the object is missing
                if exc.status != 404:
                    raise
        return None

    def _is_stable(self, dest: dict[str, Any]) -> bool:
        d = dest.get("destination") or {}
        if self.dr is not None:
            return bool(d.get("subset") == self.dr.stable_subset_name)
        return _host_name(d.get("host", "")) == self.stable_service

    def _is_canary(self, dest: dict[str, Any]) -> bool:
        d = dest.get("destination") or {}
        if self.dr is not None:
            return bool(d.get("subset") == self.dr.canary_subset_name)
        return _host_name(d.get("host", "")) == self.canary_service

    def _managed_indexes(self, http: list[dict[str, Any]]) -> tuple[list[int], str | None]:
        """Indexes of the HTTP routes whose weights we set, or a problem."""
        if self.route_names:
            by_name = {r.get("name"): i for i, r in enumerate(http)}
            missing = [n for n in self.route_names if n not in by_name]
            if missing:
                return [], (
                    f"VirtualService {self.vs_name} has no HTTP route named "
                    f"{', '.join(missing)} (trafficRouting.istio.virtualService.routes)"
                )
            indexes = [by_name[n] for n in self.route_names]
        else:
            indexes = [
                i
                for i, r in enumerate(http)
                if r.get("name") not in self.managed_route_names
                and len(r.get("route") or []) == 2
                and any(self._is_stable(d) for d in r["route"])
                and any(self._is_canary(d) for d in r["route"])
            ]
            if not indexes:
                return [], (
                    f"VirtualService {self.vs_name} has no HTTP route whose destinations are exactly "
                    f"the stable and the canary ({self._describe()})"
                )
        for i in indexes:
            dests = http[i].get("route") or []
            if not (any(self._is_stable(d) for d in dests) and any(self._is_canary(d) for d in dests)):
                return [], (
                    f"HTTP route {http[i].get('name', i)} of VirtualService {self.vs_name} does not "
                    f"route to both the stable and the canary ({self._describe()})"
                )
        return indexes, None

    def _describe(self) -> str:
        if self.dr is not None:
            return f"subsets {self.dr.stable_subset_name}/{self.dr.canary_subset_name}"
        return f"hosts {self.stable_service}/{self.canary_service}"

    async def read(self, stable_hash: str | None, canary_hash: str | None) -> RouterState:
        vs = await self._get("virtualservices", self.vs_name, self.vs_namespace)
        if vs is None:
            return RouterState(kind="istio", ok=False, problem=f"VirtualService {self.vs_name} not found")
        http = (vs.obj.get("spec") or {}).get("http") or []
        indexes, problem = self._managed_indexes(http)
        if problem:
            return RouterState(kind="istio", ok=False, problem=problem)
        stable_subset_hash = canary_subset_hash = None
        if self.dr is not None:
            dr = await self._get("destinationrules", self.dr.name, self.namespace)
            if dr is None:
                return RouterState(
                    kind="istio", ok=False, problem=f"DestinationRule {self.dr.name} not found"
                )
            subsets = {s.get("name"): s for s in (dr.obj.get("spec") or {}).get("subsets") or []}
            for wanted in (self.dr.stable_subset_name, self.dr.canary_subset_name):
                if wanted not in subsets:
                    return RouterState(
                        kind="istio",
                        ok=False,
                        problem=f"DestinationRule {self.dr.name} has no subset {wanted}",
                    )
            stable_subset_hash = (subsets[self.dr.stable_subset_name].get("labels") or {}).get(HASH_LABEL)
            canary_subset_hash = (subsets[self.dr.canary_subset_name].get("labels") or {}).get(HASH_LABEL)
        first = http[indexes[0]]["route"]
        canary_weight = sum(int(d.get("weight", 0) or 0) for d in first if self._is_canary(d))
        stable_weight = sum(int(d.get("weight", 0) or 0) for d in first if self._is_stable(d))
        # Routes disagreeing with each other count as "not in place": report the first
        # route's weights but mark a mismatch by an impossible sum.
        for i in indexes[1:]:
            cw = sum(int(d.get("weight", 0) or 0) for d in http[i]["route"] if self._is_canary(d))
            if cw != canary_weight:
                stable_weight = -1
        headers = tuple(r.get("name") for r in http if r.get("name") in self.managed_route_names)
        return RouterState(
            kind="istio",
            canary_weight=canary_weight,
            stable_weight=stable_weight,
            managed_routes=tuple(str(http[i].get("name") or f"http[{i}]") for i in indexes),
            header_routes=tuple(h for h in headers if h),
            stable_subset_hash=stable_subset_hash,
            canary_subset_hash=canary_subset_hash,
        )

    # ----------------------------------------------------------------- write
    def _header_route(self, hr: HeaderRoute, canary_dest: dict[str, Any]) -> dict[str, Any]:
        headers = {name: {kind: value} for name, kind, value in hr.match}
        return {"name": hr.name, "match": [{"headers": headers}], "route": [{"destination": canary_dest}]}

    async def apply(self, action: SetTraffic) -> RouterState:
        if self.dr is not None:
            await self._apply_subsets(action.stable_hash, action.canary_hash)
        vs = await self._get("virtualservices", self.vs_name, self.vs_namespace)
        if vs is None:
            return RouterState(kind="istio", ok=False, problem=f"VirtualService {self.vs_name} not found")
        http: list[dict[str, Any]] = (vs.obj.get("spec") or {}).get("http") or []
        ops: list[dict[str, Any]] = [
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": vs.obj["metadata"]["resourceVersion"],
            }
        ]
        # 1. Remove managed header routes that are present (from the end, so indexes hold).
        present = [i for i, r in enumerate(http) if r.get("name") in self.managed_route_names]
        for i in reversed(present):
            ops.append({"op": "remove", "path": f"/spec/http/{i}"})
        remaining = [r for i, r in enumerate(http) if i not in present]
        indexes, problem = self._managed_indexes(remaining)
        if problem:
            return RouterState(kind="istio", ok=False, problem=problem)
        # 2. Weights of the managed routes (indexes in the list after removal).
        canary_dest: dict[str, Any] = {}
        for i in indexes:
            for j, dest in enumerate(remaining[i].get("route") or []):
                if self._is_canary(dest):
                    ops.append(
                        {
                            "op": "add",
                            "path": f"/spec/http/{i}/route/{j}/weight",
                            "value": action.canary_weight,
                        }
                    )
                    canary_dest = dict(dest.get("destination") or {})
                elif self._is_stable(dest):
                    ops.append(
                        {
                            "op": "add",
                            "path": f"/spec/http/{i}/route/{j}/weight",
                            "value": 100 - action.canary_weight,
                        }
                    )
        # 3. Desired header routes, ahead of the user's routes, in managedRoutes order.
        order = {n: k for k, n in enumerate(self.managed_route_names)}
        wanted = sorted(action.header_routes, key=lambda h: order.get(h.name, 0))
        for k, hr in enumerate(wanted):
            ops.append({"op": "add", "path": f"/spec/http/{k}", "value": self._header_route(hr, canary_dest)})
        await call(
            self.clients.custom.patch_namespaced_custom_object,
            GROUP,
            vs.version,
            self.vs_namespace,
            "virtualservices",
            self.vs_name,
            ops,
            field_manager=FIELD_MANAGER,
            _content_type="application/json-patch+json",
        )
        return await self.read(action.stable_hash, action.canary_hash)

    async def _apply_subsets(self, stable_hash: str, canary_hash: str) -> None:
        assert self.dr is not None
        dr = await self._get("destinationrules", self.dr.name, self.namespace)
        if dr is None:
            return
        subsets = (dr.obj.get("spec") or {}).get("subsets") or []
        ops: list[dict[str, Any]] = [
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": dr.obj["metadata"]["resourceVersion"],
            }
        ]
        for i, s in enumerate(subsets):
            want = {self.dr.stable_subset_name: stable_hash, self.dr.canary_subset_name: canary_hash}.get(
                s.get("name")
            )
            if want is None:
                continue
            # The hash alone selects the version's pods; other labels (e.g. `version`)
            # would stop matching once the template changes them, so they are replaced.
            if (s.get("labels") or {}) != {HASH_LABEL: want}:
                ops.append({"op": "add", "path": f"/spec/subsets/{i}/labels", "value": {HASH_LABEL: want}})
        if len(ops) > 1:
            await call(
                self.clients.custom.patch_namespaced_custom_object,
                GROUP,
                dr.version,
                self.namespace,
                "destinationrules",
                self.dr.name,
                ops,
                field_manager=FIELD_MANAGER,
                _content_type="application/json-patch+json",
            )

    async def release(self, stable_hash: str) -> None:
        """On deletion: all traffic to stable, managed routes removed."""
        try:
            await self.apply(SetTraffic(0, stable_hash, stable_hash, ()))
        except ApiException as exc:
            if not is_not_found(exc):
                raise

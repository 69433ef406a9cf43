"""Istio: weights in VirtualServices' HTTP, TLS and TCP routes, subsets in a DestinationRule.

Host-level split: the two destinations are the stable and canary Services.
Subset-level split (with destinationRule): one host, two subsets whose labels the
operator points at the stable / canary pod-template hashes; `additionalSubsetNames` are
further subsets that share the managed routes and keep the weights and labels they have.

A Rollout names one VirtualService (`virtualService`) or several (`virtualServices`, Argo
Rollouts' getVirtualServices); each is weighed alike, and the weight is verified only when
every one of them carries it. In each, the routes weighed are:

- HTTP: those named in `routes`, or (none named) every route whose destinations are exactly
  the stable and the canary (and additional subsets);
- TLS: those whose matches name one port and exactly the SNI hosts of a `tlsRoutes` item
  (Argo Rollouts' searchTlsRoute), or (none listed) every TLS route that is exactly the two;
- TCP: those whose matches name the port of a `tcpRoutes` item (searchTcpRoute), or every
  TCP route that is exactly the two.

A weighed route with a destination that is neither the stable nor the canary, one of them
twice, or additional subsets that weigh anything, could not sum to the total: it is a
SpecProblem (InvalidSpec naming the route and the VirtualService) and nothing is written
(route_unfit; Argo Rollouts' ValidateHTTPRoutes / validateVirtualServiceRouteDestinations).

Managed routes (`setHeaderRoute`, `setMirrorRoute`) go ahead of the user's HTTP routes in
managedRoutes order (Argo Rollouts' orderRoutes), in every VirtualService that has a
weighed HTTP route. A mirror route sends its matching requests where the weighed route
sends them, with the same weights, and copies `percentage` of them to the canary
(createMirrorRoute).

Writes are JSON patches that touch only the weights, the managed routes and the subsets'
labels, each guarded by a `test` of the resourceVersion, so that a GitOps tool can ignore
exactly those fields and a concurrent edit is never lost. The pure functions below do the
route arithmetic (tests/unit/test_istio.py); `IstioRouter` reads the objects from the
watch-fed cache and writes the patches.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tidegate.api.rollout import IstioTCPRoute, IstioTLSRoute, Rollout
from tidegate.core.hashing import HASH_LABEL
from tidegate.core.model import HeaderRoute, MirrorRoute, RouterState, SetTraffic
from tidegate.core.traffic import effective_canary_weight, max_weight
from tidegate.k8s.cache import Cache, Store
from tidegate.k8s.client import ApiException, Clients, is_not_found
from tidegate.routers._objects import Found, Objects, SpecProblem, retrying, rv_test

GROUP = "networking.istio.io"
Kind = Literal["http", "tls", "tcp"]
KINDS: tuple[Kind, ...] = ("http", "tls", "tcp")
Obj = dict[str, Any]
Role = Literal["stable", "canary", "additional"]


def _host_name(host: str) -> str:
    return host.split(".", 1)[0]


# --------------------------------------------------------------------------- arithmetic
@dataclass(frozen=True)
class Sides:
    """How a destination is recognised: by Service host, or by DestinationRule subset."""

    stable_service: str
    canary_service: str
    stable_subset: str | None = None
    canary_subset: str | None = None
    additional: frozenset[str] = frozenset()
    """additionalSubsetNames: subsets that share the routes and keep their weights."""

    def role(self, dest: Obj) -> Role | None:
        d = dest.get("destination") or {}
        subset = d.get("subset")
        if self.stable_subset is not None:
            if subset == self.stable_subset:
                return "stable"
            if subset == self.canary_subset:
                return "canary"
            # Argo Rollouts' isAnAdditionalSubsetName.
            return "additional" if subset and subset in self.additional else None
        host = _host_name(str(d.get("host", "")))
        if host == self.stable_service:
            return "stable"
        if host == self.canary_service:
            return "canary"
        return "additional" if subset and subset in self.additional else None

    def describe(self) -> str:
        if self.stable_subset is not None:
            return f"subsets {self.stable_subset}/{self.canary_subset}"
        return f"hosts {self.stable_service}/{self.canary_service}"


@dataclass(frozen=True)
class Target:
    """One VirtualService a Rollout weighs, and which of its routes."""

    namespace: str
    name: str
    routes: tuple[str, ...] = ()
    tls_routes: tuple[IstioTLSRoute, ...] = ()
    tcp_routes: tuple[IstioTCPRoute, ...] = ()
    where: str = "trafficRouting.istio.virtualService"
    """The spec field that names it, for messages."""


@dataclass(frozen=True)
class Managed:
    """The managed routes of a Rollout: which names are header routes, which mirror routes."""

    names: tuple[str, ...] = ()
    """managedRoutes, in order (the order they take at the top of the HTTP routes)."""
    mirrors: frozenset[str] = frozenset()
    """Those that setMirrorRoute steps name."""
    steps_route: bool = False
    """Some step adds a header or mirror route (they need a weighed HTTP route)."""


@dataclass(frozen=True)
class Reading:
    """One VirtualService as read: the weights of its first weighed route, whether all agree."""

    canary_weight: int
    stable_weight: int
    additional_weight: int
    agree: bool
    routes: tuple[str, ...]
    has_http: bool
    header_routes: tuple[str, ...] = ()
    header_matches: tuple[HeaderRoute, ...] = ()
    mirror_routes: tuple[MirrorRoute, ...] = ()


def _ports(route: Obj) -> set[Any]:
    return {m.get("port") for m in route.get("match") or [] if isinstance(m, dict)} or {None}


def _single_port(route: Obj) -> int | Literal[False] | None:
    """The one port a TLS/TCP route's matches name (None: no port); False for several, a route
    Argo Rollouts never picks ("if there are multiple ports ... never gonna match")."""
    ports = {p for p in _ports(route)}
    if len(ports) > 1:
        return False
    port = next(iter(ports))
    return int(port) if port else None


def tls_route_indexes(wanted: IstioTLSRoute, tls: Sequence[Obj]) -> list[int]:
    """Argo Rollouts' searchTlsRoute: one port, equal to the item's, and the SNI hosts of all
    the route's matches equal to the item's as sets."""
    out = []
    for i, route in enumerate(tls):
        port = _single_port(route)
        if port is False:
            continue
        hosts = {h for m in route.get("match") or [] for h in (m.get("sniHosts") or [])}
        if (port or 0) == (wanted.port or 0) and hosts == set(wanted.sni_hosts):
            out.append(i)
    return out


def tcp_route_indexes(wanted: IstioTCPRoute, tcp: Sequence[Obj]) -> list[int]:
    """Argo Rollouts' searchTcpRoute: the route's matches name one port, the item's."""
    out = []
    for i, route in enumerate(tcp):
        port = _single_port(route)
        if port is not False and (port or 0) == (wanted.port or 0):
            out.append(i)
    return out


def _exactly_ours(route: Obj, sides: Sides) -> bool:
    roles = [sides.role(d) for d in route.get("route") or []]
    return "stable" in roles and "canary" in roles and all(r is not None for r in roles)


def managed_indexes(
    target: Target, spec: Obj, sides: Sides, managed: Managed, top: int = 100
) -> dict[Kind, list[int]] | str:
    """Indexes of the routes of each kind whose weights Tidegate sets, or the problem (a
    SpecProblem when a weighed route cannot carry the weights: route_unfit)."""
    http: list[Obj] = spec.get("http") or []
    tls: list[Obj] = spec.get("tls") or []
    tcp: list[Obj] = spec.get("tcp") or []
    found: dict[Kind, list[int]] = {"http": [], "tls": [], "tcp": []}
    if target.routes:
        by_name = {r.get("name"): i for i, r in enumerate(http)}
        missing = [n for n in target.routes if n not in by_name]
        if missing:
            return (
                f"VirtualService {target.name} has no HTTP route named {', '.join(missing)} "
                f"({target.where}.routes)"
            )
        found["http"] = [by_name[n] for n in target.routes]
    else:
        found["http"] = [
            i for i, r in enumerate(http) if r.get("name") not in managed.names and _exactly_ours(r, sides)
        ]
    if target.tls_routes:
        for item in target.tls_routes:
            hit = tls_route_indexes(item, tls)
            if not hit:
                return (
                    f"VirtualService {target.name} has no TLS route matching port {item.port or 0} and "
                    f"SNI hosts {sorted(item.sni_hosts)} ({target.where}.tlsRoutes)"
                )
            found["tls"] += [i for i in hit if i not in found["tls"]]
    else:
        found["tls"] = [i for i, r in enumerate(tls) if _exactly_ours(r, sides)]
    if target.tcp_routes:
        for tcp_item in target.tcp_routes:
            hit = tcp_route_indexes(tcp_item, tcp)
            if not hit:
                return (
                    f"VirtualService {target.name} has no TCP route matching port {tcp_item.port or 0} "
                    f"({target.where}.tcpRoutes)"
                )
            found["tcp"] += [i for i in hit if i not in found["tcp"]]
    else:
        found["tcp"] = [i for i, r in enumerate(tcp) if _exactly_ours(r, sides)]
    if not any(found.values()):
        kinds = "HTTP" if not (tls or tcp) else "HTTP, TLS or TCP"
        return (
            f"VirtualService {target.name} has no {kinds} route whose destinations are exactly "
            f"the stable and the canary ({sides.describe()})"
        )
    routes = {"http": http, "tls": tls, "tcp": tcp}
    for kind, indexes in found.items():
        for i in indexes:
            roles = {sides.role(d) for d in routes[kind][i].get("route") or []}
            label = routes[kind][i].get("name") or f"{kind}[{i}]"
            if not {"stable", "canary"} <= roles:
                return (
                    f"{kind.upper()} route {label} of VirtualService {target.name} does not route to "
                    f"both the stable and the canary ({sides.describe()})"
                )
            unfit = route_unfit(kind, str(label), routes[kind][i], target, sides, top)
            if unfit is not None:
                return unfit
    return found


def _dest_text(d: Obj) -> str:
    dest = d.get("destination") or {}
    subset = f" subset {dest['subset']}" if dest.get("subset") else ""
    return f"host {dest.get('host', '')!s}{subset} (weight {d.get('weight', 0)})"


def route_unfit(
    kind: Kind, label: str, route: Obj, target: Target, sides: Sides, top: int
) -> SpecProblem | None:
    """Why a weighed route cannot carry the Rollout's weights (InvalidSpec), or None.

    Argo Rollouts refuses the same routes in ValidateHTTPRoutes / ValidateTlsRoutes /
    ValidateTcpRoutes (validateVirtualServiceRouteDestinations: the stable and the canary, no
    other destination). A destination that is neither would keep its weight on top of the
    stable's and the canary's: weights summing past the total, traffic its author never split.
    One stable or canary destination each, for the same reason. Additional subsets keep their
    weight, so they must weigh 0: full promotion sends the canary the whole total."""
    where = f"{kind.upper()} route {label} of VirtualService {target.name}"
    destinations = route.get("route") or []
    foreign = [d for d in destinations if sides.role(d) is None]
    if foreign:
        return SpecProblem(
            f"{where} has a destination that is neither the stable nor the canary "
            f"({', '.join(_dest_text(d) for d in foreign)}; {sides.describe()}): its weights would not "
            f"sum to {top} ({target.where})"
        )
    for side in ("stable", "canary"):
        count = sum(1 for d in destinations if sides.role(d) == side)
        if count > 1:
            return SpecProblem(
                f"{where} has {count} {side} destinations: each would get the {side} weight and the "
                f"weights would not sum to {top} ({target.where})"
            )
    return None


def route_weights(route: Obj, sides: Sides) -> tuple[int, int, int]:
    """(canary, stable, additional) weights of a weighed route as written."""
    out = {"canary": 0, "stable": 0, "additional": 0}
    for d in route.get("route") or []:
        role = sides.role(d)
        if role is not None:
            out[role] += int(d.get("weight", 0) or 0)
    return out["canary"], out["stable"], out["additional"]


def _without_managed(http: Sequence[Obj], managed: Managed) -> list[Obj]:
    return [r for r in http if r.get("name") not in managed.names]


def read_header_route(route: Obj) -> HeaderRoute:
    """A managed header route as it stands, in the shape the planner asks for.

    Anything but the one header match Tidegate writes reads as a match no step asks for,
    so an edited route is written again."""
    match = route.get("match") or []
    headers = (match[0].get("headers") if len(match) == 1 else None) or {}
    found = tuple(
        sorted(
            (str(name), str(kind), str(value))
            for name, spec in headers.items()
            for kind, value in (spec or {}).items()
        )
    )
    if len(match) != 1 or any(set(m) - {"headers"} for m in match):
        found += (("", "unmanaged", json.dumps(match, sort_keys=True)),)
    return HeaderRoute(str(route.get("name")), found)


def _istio_match(m: Obj) -> Obj:
    """An Argo RouteMatch (method, path, headers) as an Istio HTTPMatchRequest (path is `uri`)."""
    out: Obj = {}
    if m.get("method"):
        out["method"] = m["method"]
    if m.get("path"):
        out["uri"] = m["path"]
    if m.get("headers"):
        out["headers"] = m["headers"]
    return out


def _argo_match(m: Obj) -> Obj:
    out: Obj = {}
    for theirs, ours in (("method", "method"), ("uri", "path"), ("headers", "headers")):
        if m.get(theirs):
            out[ours] = m[theirs]
    return out


def mirror_route(mr: MirrorRoute, destinations: list[Obj], canary_dest: Obj) -> Obj:
    """The HTTP route a setMirrorRoute step adds (Argo Rollouts' createMirrorRoute): its
    matches, the weighed route's destinations and weights, and the canary as the mirror."""
    return {
        "name": mr.name,
        "match": [_istio_match(m) for m in json.loads(mr.matches)],
        "route": destinations,
        "mirror": canary_dest,
        "mirrorPercentage": {"value": mr.percentage},
    }


def read_mirror_route(route: Obj, destinations: list[Obj], canary_dest: Obj) -> MirrorRoute:
    """A managed mirror route as it stands. One whose destinations, weights or mirror differ
    from what Tidegate would write reads with matches no step asks for, so it is written again."""
    matches = [_argo_match(m) for m in route.get("match") or [] if isinstance(m, dict)]
    text = json.dumps(matches, sort_keys=True, separators=(",", ":"))
    if (
        route.get("route") != destinations
        or route.get("mirror") != canary_dest
        or (set(route) - {"name", "match", "route", "mirror", "mirrorPercentage"})
    ):
        text = "edited:" + text
    value = (route.get("mirrorPercentage") or {}).get("value", 100)
    return MirrorRoute(str(route.get("name")), text, int(value) if float(value).is_integer() else -1)


def _canary_dest(route: Obj, sides: Sides) -> Obj:
    return next(
        (dict(d.get("destination") or {}) for d in route.get("route") or [] if sides.role(d) == "canary"),
        {},
    )


def _weighed(route: Obj, sides: Sides, canary_weight: int, top: int) -> list[Obj]:
    """The route's destinations with the weights Tidegate sets (Argo Rollouts' processRoutes):
    the canary `canary_weight` (capped so that the additional subsets keep theirs), additional
    subsets as written, the stable the rest; other destinations as written."""
    _, _, additional = route_weights(route, sides)
    canary = effective_canary_weight(canary_weight, top, additional)
    stable = top - canary - additional
    out = []
    for d in route.get("route") or []:
        role = sides.role(d)
        if role == "canary":
            d = {**d, "weight": canary}
        elif role == "stable":
            d = {**d, "weight": stable}
        out.append(d)
    return out


def read_virtual_service(
    target: Target, obj: Obj, sides: Sides, managed: Managed, top: int = 100
) -> Reading | str:
    """One VirtualService's weights and managed routes, or the problem that stops Tidegate."""
    spec: Obj = obj.get("spec") or {}
    http = _without_managed(spec.get("http") or [], managed)
    indexes = managed_indexes(target, {**spec, "http": http}, sides, managed, top)
    if isinstance(indexes, str):
        return indexes
    routes = {"http": http, "tls": spec.get("tls") or [], "tcp": spec.get("tcp") or []}
    weights = [route_weights(routes[k][i], sides) for k in KINDS for i in indexes[k]]
    canary, stable, additional = weights[0]
    agree = all((c, s + a) == (canary, stable + additional) for c, s, a in weights)
    names = tuple(
        str(routes[k][i].get("name") or f"{k}[{i}]") if k == "http" else f"{k}[{i}]"
        for k in KINDS
        for i in indexes[k]
    )
    ours = [r for r in spec.get("http") or [] if r.get("name") in managed.names]
    headers = [r for r in ours if r.get("name") not in managed.mirrors]
    mirrors: list[MirrorRoute] = []
    if indexes["http"]:
        first = http[indexes["http"][0]]
        destinations = first.get("route") or []
        for r in ours:
            if r.get("name") in managed.mirrors:
                mirrors.append(read_mirror_route(r, destinations, _canary_dest(first, sides)))
    return Reading(
        canary_weight=canary,
        stable_weight=stable,
        additional_weight=additional,
        agree=agree,
        routes=names,
        has_http=bool(indexes["http"]),
        header_routes=tuple(str(r.get("name")) for r in headers),
        header_matches=tuple(read_header_route(r) for r in headers),
        mirror_routes=tuple(mirrors),
    )


def combine(readings: Sequence[tuple[Target, Reading]], several: bool) -> RouterState:
    """One RouterState from every VirtualService: the first one's weights, marked not in place
    (an impossible stable weight) when routes or VirtualServices disagree, or when the managed
    routes differ between the VirtualServices that carry them."""
    first = readings[0][1]
    agree = all(
        r.agree
        and (r.canary_weight, r.stable_weight + r.additional_weight)
        == (first.canary_weight, first.stable_weight + first.additional_weight)
        for _, r in readings
    )
    with_http = [r for _, r in readings if r.has_http]
    lead = with_http[0] if with_http else first
    for r in with_http[1:]:
        if (
            set(r.header_matches) != set(lead.header_matches)
            or set(r.mirror_routes) != set(lead.mirror_routes)
            or sorted(r.header_routes) != sorted(lead.header_routes)
        ):
            agree = False
    if any(r.header_routes or r.mirror_routes for _, r in readings if not r.has_http):
        agree = False
    return RouterState(
        kind="istio",
        canary_weight=first.canary_weight,
        stable_weight=first.stable_weight if agree else -1,
        additional_weight=first.additional_weight if agree else 0,
        managed_routes=tuple(
            f"{t.name}/{name}" if several else name for t, r in readings for name in r.routes
        ),
        header_routes=lead.header_routes,
        header_matches=lead.header_matches,
        mirror_routes=lead.mirror_routes,
    )


def _header_route(hr: HeaderRoute, canary_dest: Obj) -> Obj:
    headers = {name: {kind: value} for name, kind, value in hr.match}
    return {"name": hr.name, "match": [{"headers": headers}], "route": [{"destination": canary_dest}]}


def virtual_service_patch(
    target: Target, obj: Obj, sides: Sides, managed: Managed, action: SetTraffic, top: int = 100
) -> list[Obj] | str:
    """The JSON patch that puts one VirtualService in the wanted state, or the problem.

    1. the managed HTTP routes present are removed (from the end, so indexes hold);
    2. the weighed routes' stable and canary weights are set, in HTTP, TLS and TCP routes;
    3. the wanted header and mirror routes go ahead of the user's HTTP routes, in
       managedRoutes order (where the VirtualService has a weighed HTTP route).
    """
    spec: Obj = obj.get("spec") or {}
    http: list[Obj] = spec.get("http") or []
    ops: list[Obj] = [rv_test(obj)]
    present = [i for i, r in enumerate(http) if r.get("name") in managed.names]
    for i in reversed(present):
        ops.append({"op": "remove", "path": f"/spec/http/{i}"})
    remaining = [r for i, r in enumerate(http) if i not in present]
    indexes = managed_indexes(target, {**spec, "http": remaining}, sides, managed, top)
    if isinstance(indexes, str):
        return indexes
    routes = {"http": remaining, "tls": spec.get("tls") or [], "tcp": spec.get("tcp") or []}
    for kind in KINDS:
        for i in indexes[kind]:
            route = routes[kind][i]
            weighed = _weighed(route, sides, action.canary_weight, top)
            for j, (before, after) in enumerate(zip(route.get("route") or [], weighed, strict=True)):
                if sides.role(before) in ("stable", "canary"):
                    ops.append(
                        {"op": "add", "path": f"/spec/{kind}/{i}/route/{j}/weight", "value": after["weight"]}
                    )
    if indexes["http"]:
        first = remaining[indexes["http"][0]]
        canary_dest = _canary_dest(first, sides)
        destinations = _weighed(first, sides, action.canary_weight, top)
        wanted: list[tuple[str, Obj]] = [
            (h.name, _header_route(h, canary_dest)) for h in action.header_routes
        ]
        wanted += [(m.name, mirror_route(m, destinations, canary_dest)) for m in action.mirror_routes]
        order = {n: k for k, n in enumerate(managed.names)}
        wanted.sort(key=lambda w: order.get(w[0], 0))
        for k, (_, route) in enumerate(wanted):
            ops.append({"op": "add", "path": f"/spec/http/{k}", "value": route})
    return ops


# --------------------------------------------------------------------------- the router
def targets_of(rollout: Rollout) -> list[Target]:
    canary = rollout.spec.strategy.canary
    assert canary is not None and canary.traffic_routing is not None
    istio = canary.traffic_routing.istio
    assert istio is not None
    namespace = rollout.metadata.namespace or "default"
    several = bool(istio.virtual_services)
    out = []
    for k, vs in enumerate(istio.all_virtual_services()):
        ns, _, name = vs.name.rpartition("/")
        where = (
            f"trafficRouting.istio.virtualServices[{k}]" if several else "trafficRouting.istio.virtualService"
        )
        out.append(
            Target(ns or namespace, name, tuple(vs.routes), tuple(vs.tls_routes), tuple(vs.tcp_routes), where)
        )
    return out


def managed_of(rollout: Rollout) -> Managed:
    canary = rollout.spec.strategy.canary
    assert canary is not None and canary.traffic_routing is not None
    mirrors = frozenset(s.set_mirror_route.name for s in canary.steps if s.set_mirror_route is not None)
    steps_route = any(s.set_mirror_route or s.set_header_route for s in canary.steps)
    return Managed(tuple(m.name for m in canary.traffic_routing.managed_routes), mirrors, steps_route)


@dataclass
class IstioRouter:
    rollout: Rollout
    clients: Clients
    cache: Cache
    conflicts: int = 0
    """Writes retried because the object changed under us (counted, not errors)."""
    targets: list[Target] = field(init=False)
    several: bool = field(init=False)

    def __post_init__(self) -> None:
        canary = self.rollout.spec.strategy.canary
        assert canary is not None and canary.traffic_routing is not None
        istio = canary.traffic_routing.istio
        assert istio is not None
        self.objects = Objects(self.clients, self.cache, GROUP)
        self.namespace = self.rollout.metadata.namespace or "default"
        self.targets = targets_of(self.rollout)
        self.several = bool(istio.virtual_services)
        self.dr = istio.destination_rule
        self.sides = Sides(
            canary.stable_service or "",
            canary.canary_service or "",
            self.dr.stable_subset_name if self.dr else None,
            self.dr.canary_subset_name if self.dr else None,
            frozenset(self.dr.additional_subset_names) if self.dr else frozenset(),
        )
        self.managed = managed_of(self.rollout)
        self.top = max_weight(canary)

    # ------------------------------------------------------------------ read
    def _store(self, plural: str) -> Store | None:
        return self.cache.virtualservices if plural == "virtualservices" else self.cache.destinationrules

    async def _get(self, plural: str, name: str, namespace: str, fresh: bool = False) -> Found | None:
        """From the watch-fed cache; `fresh` reads the API server (after a stale write)."""
        return await self.objects.get(self._store(plural), plural, namespace, name, fresh)

    async def _patch(self, plural: str, found: Found, namespace: str, ops: list[Obj]) -> Obj:
        store = self._store(plural)
        assert store is not None
        return await self.objects.patch(store, plural, found, namespace, ops)

    async def read(self, stable_hash: str | None, canary_hash: str | None) -> RouterState:
        readings = []
        for target in self.targets:
            vs = await self._get("virtualservices", target.name, target.namespace)
            if vs is None:
                return RouterState(kind="istio", ok=False, problem=f"VirtualService {target.name} not found")
            reading = read_virtual_service(target, vs.obj, self.sides, self.managed, self.top)
            if isinstance(reading, str):
                return RouterState(
                    kind="istio", ok=False, problem=reading, invalid=isinstance(reading, SpecProblem)
                )
            readings.append((target, reading))
        if self.managed.steps_route and not any(r.has_http for _, r in readings):
            return RouterState(
                kind="istio",
                ok=False,
                problem="no VirtualService has a weighed HTTP route to put the setHeaderRoute / "
                "setMirrorRoute steps' routes ahead of",
            )
        state = combine(readings, self.several)
        if self.dr is None:
            return state
        dr = await self._get("destinationrules", self.dr.name, self.namespace)
        if dr is None:
            return RouterState(kind="istio", ok=False, problem=f"DestinationRule {self.dr.name} not found")
        subsets = {s.get("name"): s for s in (dr.obj.get("spec") or {}).get("subsets") or []}
        for wanted in (self.dr.stable_subset_name, self.dr.canary_subset_name):
            if wanted not in subsets:
                return RouterState(
                    kind="istio", ok=False, problem=f"DestinationRule {self.dr.name} has no subset {wanted}"
                )
        return RouterState(
            kind="istio",
            canary_weight=state.canary_weight,
            stable_weight=state.stable_weight,
            additional_weight=state.additional_weight,
            managed_routes=state.managed_routes,
            header_routes=state.header_routes,
            header_matches=state.header_matches,
            mirror_routes=state.mirror_routes,
            stable_subset_hash=(subsets[self.dr.stable_subset_name].get("labels") or {}).get(HASH_LABEL),
            canary_subset_hash=(subsets[self.dr.canary_subset_name].get("labels") or {}).get(HASH_LABEL),
            subset_host=self._local_service(str((dr.obj.get("spec") or {}).get("host") or "")),
        )

    def _local_service(self, host: str) -> str | None:
        """The Service of the Rollout's namespace that a host names (`web`, `web.<ns>`,
        `web.<ns>.svc…`); None for a host elsewhere."""
        parts = host.split(".")
        if not parts[0] or (len(parts) > 1 and parts[1] != self.namespace):
            return None
        return parts[0]

    # ----------------------------------------------------------------- write
    async def apply(self, action: SetTraffic) -> RouterState:
        """Write the weights (and subsets), then the state as the API server answered it."""
        if self.dr is not None:
            await self._retrying(
                lambda fresh: self._apply_subsets(action.stable_hash, action.canary_hash, fresh)
            )
        for target in self.targets:

            async def write(fresh: bool, target: Target = target) -> str | None:
                return await self._apply_weights(target, action, fresh)

            problem = await self._retrying(write)
            if problem is not None:
                return RouterState(
                    kind="istio", ok=False, problem=problem, invalid=isinstance(problem, SpecProblem)
                )
        return await self.read(action.stable_hash, action.canary_hash)

    async def _retrying(self, write: Any) -> Any:
        """A write planned from the cache; if the object changed meanwhile, re-read it and write again."""
        return await retrying(write, self._conflicted)

    def _conflicted(self) -> None:
        self.conflicts += 1

    async def _apply_weights(self, target: Target, action: SetTraffic, fresh: bool) -> str | None:
        vs = await self._get("virtualservices", target.name, target.namespace, fresh=fresh)
        if vs is None:
            return f"VirtualService {target.name} not found"
        ops = virtual_service_patch(target, vs.obj, self.sides, self.managed, action, self.top)
        if isinstance(ops, str):
            return ops
        await self._patch("virtualservices", vs, target.namespace, ops)
        return None

    async def _apply_subsets(self, stable_hash: str, canary_hash: str, fresh: bool) -> None:
        assert self.dr is not None
        dr = await self._get("destinationrules", self.dr.name, self.namespace, fresh=fresh)
        if dr is None:
            return
        subsets = (dr.obj.get("spec") or {}).get("subsets") or []
        ops: list[Obj] = [rv_test(dr.obj)]
        for i, s in enumerate(subsets):
            # Only the stable and canary subsets: additionalSubsetNames and any other subset
            # keep their labels (Argo Rollouts' UpdateHash ignores them).
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
            await self._patch("destinationrules", dr, self.namespace, ops)

    async def release(self, stable_hash: str) -> None:
        """On deletion: all traffic to stable, managed routes removed."""
        try:
            await self.apply(SetTraffic(0, stable_hash, stable_hash, (), (), self.top))
        except ApiException as exc:
            if not is_not_found(exc):
                raise

"""Gateway API: weights on the backendRefs of HTTPRoute and GRPCRoute rules, header rules.

A rule is managed when its backendRefs name both the stable and the canary Service (found by
name, as the Istio router finds unnamed routes): Tidegate sets their two weights to
100 - w and w and leaves every match, filter and other rule alone. A managed rule with any
other backendRef (or two of the stable or canary) is InvalidSpec naming the rule and the
route: its weights could not sum to 100, and nothing is written. A
setHeaderRoute step adds, for each managed rule of a route with `useHeaderRoutes`, a rule
named after the managed route (`name`, then `name-1`, `name-2`...) whose matches are the
source rule's with the step's headers added and whose one backendRef is the canary Service,
as the Argo Rollouts plugin argoproj-labs/gatewayAPI builds it (setHTTPHeaderRoute,
setGRPCHeaderRoute); those rules are removed by name.

Writes are JSON patches of exactly those fields, each guarded by a `test` of the
resourceVersion, so a GitOps tool can ignore exactly them and a concurrent edit is never
lost. The pure functions below do the route arithmetic (tests/unit/test_gatewayapi.py);
`GatewayAPIRouter` reads the routes from the watch-fed cache and writes the patches.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tidegate.api.rollout import Rollout
from tidegate.core.model import HeaderRoute, RouterState, SetTraffic
from tidegate.core.traffic import header_routes_at
from tidegate.k8s.cache import GATEWAY_GROUP, Cache, Store
from tidegate.k8s.client import Clients
from tidegate.routers._objects import Objects, SpecProblem, retrying, rv_test

RouteKind = Literal["HTTPRoute", "GRPCRoute"]
PLURALS: dict[RouteKind, str] = {"HTTPRoute": "httproutes", "GRPCRoute": "grpcroutes"}
MAX_RULES = 16
"""The Gateway API's bound on rules per route (its CRDs' maxItems)."""
DEFAULT_WEIGHT = 1
"""A backendRef without a weight has weight 1 (Gateway API)."""

Obj = dict[str, Any]


@dataclass(frozen=True)
class Backends:
    """The two Services a managed rule splits between, in the Rollout's namespace."""

    namespace: str
    stable: str
    canary: str


@dataclass(frozen=True)
class Route:
    kind: RouteKind
    namespace: str
    name: str
    use_header_routes: bool

    @property
    def plural(self) -> str:
        return PLURALS[self.kind]

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


# --------------------------------------------------------------------------- arithmetic
def role(ref: Obj, route_namespace: str, b: Backends) -> Literal["stable", "canary"] | None:
    """Which of the two Services a backendRef names (a core Service of the Rollout's namespace)."""
    if (ref.get("group") or "") != "" or (ref.get("kind") or "Service") != "Service":
        return None
    if (ref.get("namespace") or route_namespace) != b.namespace:
        return None
    name = ref.get("name")
    if name == b.stable:
        return "stable"
    if name == b.canary:
        return "canary"
    return None


def header_rule_of(name: Any, managed: Sequence[str]) -> str | None:
    """The managed route a rule name belongs to: `hdr`, or `hdr-<n>` (the plugin's
    isManagedRuleName); None for a rule of the user's."""
    if not isinstance(name, str):
        return None
    for base in managed:
        if name == base or (name.startswith(f"{base}-") and name[len(base) + 1 :].isdigit()):
            return base
    return None


def managed_rules(
    rules: Sequence[Obj], route_namespace: str, b: Backends, managed: Sequence[str]
) -> list[int]:
    """Indexes of the rules whose weights Tidegate sets: not a header rule of ours, and
    backendRefs naming both the stable and the canary Service."""
    out = []
    for i, rule in enumerate(rules):
        if header_rule_of(rule.get("name"), managed) is not None:
            continue
        roles = {role(ref, route_namespace, b) for ref in rule.get("backendRefs") or []}
        if {"stable", "canary"} <= roles:
            out.append(i)
    return out


def rule_unfit(route: Route, rule: Obj, label: str, b: Backends, top: int) -> SpecProblem | None:
    """Why a managed rule cannot carry the Rollout's weights (InvalidSpec), or None: a
    backendRef that is neither the stable nor the canary Service would keep its weight on top
    of theirs, and a second stable (or canary) ref would get the same weight again. The plugin
    (argoproj-labs/gatewayAPI) writes such a rule as it finds it; Tidegate refuses it, as Argo
    Rollouts' Istio router refuses such a route (validateVirtualServiceRouteDestinations)."""
    refs = rule.get("backendRefs") or []
    where = f"rule {label} of {route}"
    foreign = [ref for ref in refs if role(ref, route.namespace, b) is None]
    if foreign:
        names = ", ".join(
            f"{ref.get('kind') or 'Service'} {ref.get('name')} (weight "
            f"{DEFAULT_WEIGHT if ref.get('weight') is None else ref.get('weight')})"
            for ref in foreign
        )
        return SpecProblem(
            f"{where} has a backendRef that is neither the stable nor the canary Service ({names}; "
            f"{b.stable}/{b.canary}): its weights would not sum to {top}"
        )
    for side in ("stable", "canary"):
        count = sum(1 for ref in refs if role(ref, route.namespace, b) == side)
        if count > 1:
            return SpecProblem(
                f"{where} has {count} backendRefs to the {side} Service: each would get the {side} "
                f"weight and the weights would not sum to {top}"
            )
    return None


def rule_weights(rule: Obj, route_namespace: str, b: Backends) -> tuple[int, int]:
    """(canary, stable) weights of a managed rule as written (an unset weight is 1)."""
    weights = {"stable": 0, "canary": 0}
    for ref in rule.get("backendRefs") or []:
        r = role(ref, route_namespace, b)
        if r is not None:
            weight = ref.get("weight")
            weights[r] += int(DEFAULT_WEIGHT if weight is None else weight)
    return weights["canary"], weights["stable"]


@dataclass(frozen=True)
class Reading:
    """One route as read: weights of its first managed rule, and whether all rules agree."""

    canary_weight: int
    stable_weight: int
    agree: bool
    rules: tuple[str, ...]
    header_routes: tuple[str, ...]


def _no_managed_rule(route: Route, b: Backends) -> str:
    return (
        f"{route} has no rule whose backendRefs are both the stable and the canary Service "
        f"({b.stable}/{b.canary})"
    )


def header_rule_names(base: str, count: int) -> list[str]:
    """The names of a header route's rules, one per managed rule: `hdr`, `hdr-1`, `hdr-2`..."""
    return [base if k == 0 else f"{base}-{k}" for k in range(count)]


def _rule_label(rule: Obj, i: int) -> str:
    return str(rule.get("name") or f"rules[{i}]")


def _unfit(
    route: Route, rules: Sequence[Obj], indexes: Sequence[int], b: Backends, top: int
) -> SpecProblem | None:
    for i in indexes:
        unfit = rule_unfit(route, rules[i], _rule_label(rules[i], i), b, top)
        if unfit is not None:
            return unfit
    return None


def read_route(
    route: Route, obj: Obj, b: Backends, managed: Sequence[str], header_routes: int = 0, top: int = 100
) -> Reading | str:
    """The route's weights and header rules, or the problem that stops Tidegate managing it.

    A header route counts as present when each of its rules is (one per managed rule); some
    of them only, and the route does not agree with itself (it is written again).
    `header_routes` is the most the steps want at once: a route that could not take their
    rules within the Gateway API's bound is a problem now, not a write refused later."""
    rules: list[Obj] = (obj.get("spec") or {}).get("rules") or []
    indexes = managed_rules(rules, route.namespace, b, managed)
    if not indexes:
        return _no_managed_rule(route, b)
    unfit = _unfit(route, rules, indexes, b, top)
    if unfit is not None:
        return unfit
    own = sum(1 for r in rules if header_rule_of(r.get("name"), managed) is None)
    if route.use_header_routes and own + header_routes * len(indexes) > MAX_RULES:
        return (
            f"{route} has {own} rules; with the steps' {header_routes} header route(s), one rule per "
            f"managed rule, it would have {own + header_routes * len(indexes)}, more than the Gateway API's "
            f"{MAX_RULES}"
        )
    weights = {rule_weights(rules[i], route.namespace, b) for i in indexes}
    canary, stable = rule_weights(rules[indexes[0]], route.namespace, b)
    names = {r.get("name") for r in rules}
    present, partial = [], False
    for base in sorted(set(managed)):
        wanted = set(header_rule_names(base, len(indexes)))
        ours = {n for n in names if header_rule_of(n, [base]) == base}
        if ours == wanted:
            present.append(base)
        elif ours:
            partial = True
    return Reading(
        canary_weight=canary,
        stable_weight=stable,
        agree=len(weights) == 1 and not partial,
        rules=tuple(f"{route.kind}/{route.name}/{rules[i].get('name') or f'rules[{i}]'}" for i in indexes),
        header_routes=tuple(present),
    )


def _string_matches(conditions: Sequence[tuple[str, str, str]]) -> list[Obj]:
    """A setHeaderRoute's matches as Gateway API header (or query parameter) matches (the
    plugin's getHTTPHeaderRouteRuleList): exact stays Exact, a prefix becomes a RegularExpression."""
    out = []
    for name, how, value in conditions:
        if how == "exact":
            out.append({"name": name, "type": "Exact", "value": value})
        elif how == "prefix":
            # The plugin appends ".*" to the raw prefix; the prefix is escaped here so that
            # its dots and brackets match themselves.
            out.append({"name": name, "type": "RegularExpression", "value": f"{re.escape(value)}.*"})
        else:
            out.append({"name": name, "type": "RegularExpression", "value": value})
    return out


def header_rule(
    kind: RouteKind, source: Obj, name: str, hr: HeaderRoute, route_namespace: str, b: Backends
) -> Obj:
    """The rule a header route adds for one managed rule: its matches with the headers added,
    its filters, and the canary Service alone (the plugin's setHTTPHeaderRoute)."""
    headers = _string_matches(hr.match)
    query = _string_matches(hr.query) if kind == "HTTPRoute" else []
    canary_ref = next(r for r in source.get("backendRefs") or [] if role(r, route_namespace, b) == "canary")
    ref: Obj = {"group": "", "kind": "Service", "name": b.canary}
    for key in ("namespace", "port"):
        if canary_ref.get(key) is not None:
            ref[key] = canary_ref[key]

    def merged(m: Obj) -> Obj:
        out = {k: m[k] for k in ("path", "method") if m.get(k) is not None}
        if headers or m.get("headers"):
            out["headers"] = [*(m.get("headers") or []), *headers]
        if query or m.get("queryParams"):
            out["queryParams"] = [*(m.get("queryParams") or []), *query]
        return out

    matches = [merged(m) for m in source.get("matches") or []] or [merged({})]
    rule: Obj = {"name": name, "matches": matches, "backendRefs": [ref]}
    if source.get("filters"):
        rule["filters"] = list(source["filters"])
    return rule


def route_patch(
    route: Route,
    obj: Obj,
    b: Backends,
    managed: Sequence[str],
    canary_weight: int,
    header_routes: Sequence[HeaderRoute],
    top: int = 100,
) -> list[Obj] | str:
    """The JSON patch that puts one route in the wanted state, or the problem that prevents it.

    1. the header rules of ours present are removed (from the end, so indexes hold);
    2. the managed rules' two weights are set;
    3. the wanted header rules are appended, in managedRoutes order.
    """
    rules: list[Obj] = (obj.get("spec") or {}).get("rules") or []
    ops: list[Obj] = [rv_test(obj)]
    ours = [i for i, r in enumerate(rules) if header_rule_of(r.get("name"), managed) is not None]
    for i in reversed(ours):
        ops.append({"op": "remove", "path": f"/spec/rules/{i}"})
    remaining = [r for i, r in enumerate(rules) if i not in ours]
    indexes = managed_rules(remaining, route.namespace, b, managed)
    if not indexes:
        return _no_managed_rule(route, b)
    unfit = _unfit(route, remaining, indexes, b, top)
    if unfit is not None:
        return unfit
    for i in indexes:
        for j, ref in enumerate(remaining[i].get("backendRefs") or []):
            r = role(ref, route.namespace, b)
            if r is not None:
                # Out of trafficRouting.maxTrafficWeight, as the plugin writes them.
                weight = canary_weight if r == "canary" else top - canary_weight
                ops.append({"op": "add", "path": f"/spec/rules/{i}/backendRefs/{j}/weight", "value": weight})
    added: list[Obj] = []
    if route.use_header_routes:
        order = {n: k for k, n in enumerate(managed)}
        for hr in sorted(header_routes, key=lambda h: order.get(h.name, 0)):
            for name, i in zip(header_rule_names(hr.name, len(indexes)), indexes, strict=True):
                added.append(header_rule(route.kind, remaining[i], name, hr, route.namespace, b))
    if len(remaining) + len(added) > MAX_RULES:
        return (
            f"{route} would have {len(remaining) + len(added)} rules with the header routes, "
            f"more than the Gateway API's {MAX_RULES}"
        )
    ops.extend({"op": "add", "path": "/spec/rules/-", "value": rule} for rule in added)
    return ops


def combine(readings: Sequence[tuple[Route, Reading]]) -> RouterState:
    """One RouterState from every route: the first managed rule's weights, marked not in place
    (an impossible stable weight, as the Istio router does) when rules or routes disagree,
    or when the header routes differ between the routes that carry them."""
    first = readings[0][1]
    agree = all(
        r.agree and (r.canary_weight, r.stable_weight) == (first.canary_weight, first.stable_weight)
        for _, r in readings
    )
    with_headers = [r.header_routes for route, r in readings if route.use_header_routes]
    headers = with_headers[0] if with_headers else ()
    if any(h != headers for h in with_headers) or any(
        r.header_routes for route, r in readings if not route.use_header_routes
    ):
        agree = False
    return RouterState(
        kind="gatewayAPI",
        canary_weight=first.canary_weight,
        stable_weight=first.stable_weight if agree else -1,
        managed_routes=tuple(rule for _, r in readings for rule in r.rules),
        header_routes=headers,
    )


# --------------------------------------------------------------------------- the router
def routes_of(rollout: Rollout) -> list[Route]:
    canary = rollout.spec.strategy.canary
    assert canary is not None and canary.traffic_routing is not None
    config = canary.traffic_routing.gateway()
    assert config is not None
    namespace = config.namespace or rollout.metadata.namespace or "default"
    return [Route(kind, namespace, r.name, r.use_header_routes) for kind, r in config.routes()]


class GatewayAPIRouter:
    def __init__(self, rollout: Rollout, clients: Clients, cache: Cache) -> None:
        canary = rollout.spec.strategy.canary
        assert canary is not None and canary.traffic_routing is not None
        self.cache = cache
        self.objects = Objects(clients, cache, GATEWAY_GROUP)
        self.conflicts = 0
        """Writes retried because the object changed under us (counted, not errors)."""
        self.routes = routes_of(rollout)
        self.backends = Backends(
            rollout.metadata.namespace or "default", canary.stable_service or "", canary.canary_service or ""
        )
        self.managed = [m.name for m in canary.traffic_routing.managed_routes]
        self.top = canary.traffic_routing.max_weight()
        self.header_routes = max(
            (len(header_routes_at(canary.steps, i)) for i in range(len(canary.steps))), default=0
        )
        """The most header routes the steps want at once."""

    def _store(self, route: Route) -> Store:
        return self.cache.httproutes if route.kind == "HTTPRoute" else self.cache.grpcroutes

    def _missing(self, route: Route) -> str:
        if not self._store(route).served:
            return f"{route.kind} is not served by the API server (are the Gateway API CRDs installed?)"
        return f"{route} not found in namespace {route.namespace}"

    async def read(self, stable_hash: str | None, canary_hash: str | None) -> RouterState:
        readings = []
        for route in self.routes:
            found = await self.objects.get(self._store(route), route.plural, route.namespace, route.name)
            if found is None:
                return RouterState(kind="gatewayAPI", ok=False, problem=self._missing(route))
            reading = read_route(route, found.obj, self.backends, self.managed, self.header_routes, self.top)
            if isinstance(reading, str):
                return RouterState(
                    kind="gatewayAPI", ok=False, problem=reading, invalid=isinstance(reading, SpecProblem)
                )
            readings.append((route, reading))
        return combine(readings)

    async def apply(self, action: SetTraffic) -> RouterState:
        """Write each route's weights and header rules, then the state as the API server answered."""
        for route in self.routes:

            async def write(fresh: bool, route: Route = route) -> str | None:
                store = self._store(route)
                found = await self.objects.get(store, route.plural, route.namespace, route.name, fresh=fresh)
                if found is None:
                    return self._missing(route)
                ops = route_patch(
                    route,
                    found.obj,
                    self.backends,
                    self.managed,
                    action.canary_weight,
                    action.header_routes,
                    self.top,
                )
                if isinstance(ops, str):
                    return ops
                await self.objects.patch(store, route.plural, found, route.namespace, ops)
                return None

            problem = await retrying(write, self._conflicted)
            if problem is not None:
                return RouterState(
                    kind="gatewayAPI", ok=False, problem=problem, invalid=isinstance(problem, SpecProblem)
                )
        return await self.read(action.stable_hash, action.canary_hash)

    def _conflicted(self) -> None:
        self.conflicts += 1

"""Generators and properties for the fuzz tests (tests/unit/test_fuzz.py runs them a little,
bench/fuzz.py a lot): random Rollouts, AnalysisTemplates, VirtualServices and HTTPRoutes driven
through the pure planner, the validators and the routers' pure route arithmetic.

Each `check_*` function takes one generated case and raises AssertionError when a property
breaks; any other exception escaping is a failure too. The properties:

- nothing raises: spec_problems, template_problems, simulate, plan, the routers' read/patch;
- every weight a plan asks for is within 0..maxTrafficWeight, and every weighed route or rule
  written sums to maxTrafficWeight (100 unless set);
- a router target in another namespace is always one isolation knows of (the RefusedRouter
  guard sees it), so no plan writes outside the Rollout's namespace without consent;
- idempotence: a patch applied twice gives the object applied once; a plan's traffic applied
  and planned again asks for no further write of the same traffic.
"""

from __future__ import annotations

import copy
import dataclasses
from datetime import timedelta
from typing import Any

import jsonpatch
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.unit.planner_fixtures import NOW, V1, V2, rs, template
from tidegate.api.analysis import AnalysisTemplateSpec
from tidegate.api.rollout import Rollout
from tidegate.core.analysis_run import template_problems
from tidegate.core.hashing import HASH_LABEL
from tidegate.core.isolation import foreign_references
from tidegate.core.model import HeaderRoute, ObservedState, RouterState, ServiceInfo, SetTraffic
from tidegate.core.planner import plan
from tidegate.core.simulate import simulate, template_key
from tidegate.core.traffic import max_weight
from tidegate.core.validation import spec_problems
from tidegate.routers import gatewayapi, istio
from tidegate.routers._objects import SpecProblem

NS = "shop"
Obj = dict[str, Any]

# --------------------------------------------------------------------------- generators
REGEXES = st.one_of(
    st.sampled_from(["^a.*", "([", "(?<=a)b", "a{2,1}", "[a-z]+", "", "\\", "(?i)x", "a**"]),
    st.text(alphabet="ab([)]*+?.{}|^$\\", max_size=6),
)
HEADER_VALUES = st.one_of(
    st.builds(lambda v: {"exact": v}, st.text(alphabet="ab.-", max_size=4)),
    st.builds(lambda v: {"prefix": v}, st.text(alphabet="ab.[", max_size=4)),
    st.builds(lambda v: {"regex": v}, REGEXES),
)
HEADER_MATCH = st.one_of(
    st.builds(
        lambda n, v: {"headerName": n, "headerValue": v}, st.sampled_from(["x-canary", "x-b"]), HEADER_VALUES
    ),
    st.builds(lambda v: {"queryParamName": "q", "queryParamValue": v}, HEADER_VALUES),
)


def steps(top: int) -> st.SearchStrategy[list[Obj]]:
    step = st.one_of(
        st.builds(lambda w: {"setWeight": w}, st.integers(0, top)),
        st.just({"pause": {}}),
        st.builds(lambda s: {"pause": {"duration": f"{s}s"}}, st.integers(0, 120)),
        st.builds(lambda w: {"setCanaryScale": {"weight": w}}, st.integers(0, top)),
        st.builds(lambda n: {"setCanaryScale": {"replicas": n}}, st.integers(0, 6)),
        st.just({"setCanaryScale": {"matchTrafficWeight": True}}),
        st.builds(
            lambda m: {"setHeaderRoute": {"name": "hdr", "match": m}}, st.lists(HEADER_MATCH, max_size=2)
        ),
    )
    return st.lists(step, max_size=6)


@st.composite
def canary_docs(draw: st.DrawFn) -> Obj:
    router = draw(st.sampled_from([None, "istio", "istio-named", "istio-subset", "gateway"]))
    top = draw(st.sampled_from([100, 100, 1000])) if router is not None else 100
    canary: Obj = {"steps": draw(steps(top))}
    if router is not None:
        canary |= {"stableService": "web-stable", "canaryService": "web-canary"}
        routing: Obj = {"managedRoutes": [{"name": "hdr"}]}
        if top != 100:
            routing["maxTrafficWeight"] = top
        name = draw(st.sampled_from(["web", "web", f"{NS}/web", "edge/web"]))
        if router == "gateway":
            gateway: Obj = {"httpRoute": "web"}
            namespace = draw(st.sampled_from([None, NS, "edge"]))
            if namespace is not None:
                gateway["namespace"] = namespace
            routing["gatewayAPI"] = gateway
        else:
            vs: Obj = {"name": name}
            if router != "istio":
                vs["routes"] = ["primary"]
            routing["istio"] = {"virtualService": vs}
            if router == "istio-subset":
                routing["istio"]["destinationRule"] = {
                    "name": "web",
                    "stableSubsetName": "stable",
                    "canarySubsetName": "canary",
                }
        canary["trafficRouting"] = routing
    if draw(st.booleans()):
        canary["analysis"] = {"templates": [{"templateName": "rate"}]}
    return {"canary": canary}


BLUE_GREEN = st.builds(
    lambda auto, scale: {
        "blueGreen": {
            "activeService": "web-active",
            "previewService": "web-preview",
            **({"autoPromotionSeconds": auto} if auto is not None else {}),
            **({"scaleDownDelaySeconds": scale} if scale is not None else {}),
        }
    },
    st.one_of(st.none(), st.integers(0, 60)),
    st.one_of(st.none(), st.integers(0, 60)),
)


@st.composite
def rollout_docs(draw: st.DrawFn) -> Obj:
    strategy = draw(st.one_of(canary_docs(), canary_docs(), BLUE_GREEN))
    return {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": NS, "generation": 2, "uid": "u1"},
        "spec": {
            "replicas": draw(st.integers(0, 10)),
            "selector": {"matchLabels": {"app": "web"}},
            "template": template(draw(st.sampled_from(["web:1", "web:2"]))),
            "strategy": strategy,
        },
    }


HOSTS = ["web-stable", "web-canary", "legacy"]


@st.composite
def destinations(draw: st.DrawFn, subset: bool) -> list[Obj]:
    """Usually the stable and the canary, sometimes a third one or a duplicate."""
    if subset:
        names = draw(
            st.lists(st.sampled_from(["stable", "canary", "mystery"]), min_size=1, max_size=4).map(
                lambda n: [*n, "stable", "canary"] if len(n) == 1 else n
            )
        )
        return [
            {"destination": {"host": "web", "subset": n}, "weight": draw(st.integers(0, 100))} for n in names
        ]
    hosts = draw(
        st.one_of(
            st.just(["web-stable", "web-canary"]),
            st.lists(st.sampled_from(HOSTS), min_size=1, max_size=4),
        )
    )
    return [{"destination": {"host": h}, "weight": draw(st.integers(0, 100))} for h in hosts]


@st.composite
def virtual_services(draw: st.DrawFn, subset: bool = False) -> Obj:
    http = []
    for i in range(draw(st.integers(0, 3))):
        route: Obj = {"route": draw(destinations(subset))}
        name = draw(st.sampled_from(["primary", "secondary", None, "hdr"])) if i else "primary"
        if name is not None:
            route["name"] = name
        http.append(route)
    tcp = [
        {"match": [{"port": 5432}], "route": draw(destinations(subset))}
        for _ in range(draw(st.integers(0, 1)))
    ]
    spec: Obj = {"http": http}
    if tcp:
        spec["tcp"] = tcp
    return {"metadata": {"name": "web", "namespace": NS, "resourceVersion": "1"}, "spec": spec}


@st.composite
def http_routes(draw: st.DrawFn) -> Obj:
    rules = []
    for _ in range(draw(st.integers(0, 3))):
        refs = [
            {"name": n, "port": 80, **({"weight": w} if w is not None else {})}
            for n, w in draw(
                st.one_of(
                    st.just([("web-stable", 100), ("web-canary", 0)]),
                    st.lists(
                        st.tuples(st.sampled_from(HOSTS), st.one_of(st.none(), st.integers(0, 100))),
                        min_size=1,
                        max_size=4,
                    ),
                )
            )
        ]
        rule: Obj = {"backendRefs": refs}
        if draw(st.booleans()):
            rule["matches"] = [{"path": {"type": "PathPrefix", "value": "/"}}]
        rules.append(rule)
    return {"metadata": {"name": "web", "namespace": NS, "resourceVersion": "1"}, "spec": {"rules": rules}}


METRICS = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["rate", "latency", "x"]),
        "provider": st.just({"prometheus": {"address": "http://prom:9090", "query": "up"}}),
    },
    optional={
        "interval": st.sampled_from(["5s", "1m", "0s", "-1s", "abc", "1h30m"]),
        "count": st.one_of(st.integers(-1, 5), st.just("{{args.n}}")),
        "successCondition": st.sampled_from(["result[0] > 0.9", "result >", "len(result) == 1", "x", ""]),
        "failureLimit": st.integers(-1, 3),
        "initialDelay": st.sampled_from(["10s", "zz"]),
    },
)
TEMPLATES = st.fixed_dictionaries(
    {"metrics": st.lists(METRICS, max_size=3)},
    optional={"args": st.just([{"name": "n", "value": "3"}])},
)


@dataclasses.dataclass(frozen=True)
class Case:
    """One planner case: a Rollout, what the cluster holds, the router objects."""

    doc: Obj
    status: Obj
    sets: tuple[tuple[str, int, int], ...]
    vs: Obj
    route: Obj
    subset_hashes: tuple[str | None, str | None]
    service_hashes: tuple[str | None, str | None]
    """The pods the stable (active) and canary (preview) Services select."""


def clean_virtual_service(subset: bool, canary: int) -> Obj:
    """The usual VirtualService: one route `primary`, the stable and the canary."""
    if subset:
        dests = [("web", "stable", 100 - canary), ("web", "canary", canary)]
    else:
        dests = [("web-stable", None, 100 - canary), ("web-canary", None, canary)]
    route = [{"destination": {"host": h, **({"subset": s} if s else {})}, "weight": w} for h, s, w in dests]
    return {
        "metadata": {"name": "web", "namespace": NS, "resourceVersion": "1"},
        "spec": {"http": [{"name": "primary", "route": route}]},
    }


def clean_http_route(canary: int) -> Obj:
    refs = [
        {"name": "web-stable", "port": 80, "weight": 100 - canary},
        {"name": "web-canary", "port": 80, "weight": canary},
    ]
    return {
        "metadata": {"name": "web", "namespace": NS, "resourceVersion": "1"},
        "spec": {"rules": [{"backendRefs": refs}]},
    }


@st.composite
def planner_cases(draw: st.DrawFn) -> Case:
    doc = draw(rollout_docs())
    steps_count = len((doc["spec"]["strategy"].get("canary") or {}).get("steps") or [])
    status: Obj = {}
    if draw(st.booleans()):
        status = {
            "stableRS": V1,
            "currentPodHash": draw(st.sampled_from([V1, V2])),
            "currentStepIndex": draw(st.integers(0, steps_count)),
        }
        if draw(st.integers(0, 4)) == 0:
            status["abort"] = True
    sets = tuple(
        (image, n, n if draw(st.integers(0, 3)) else draw(st.integers(0, n)))
        for image in ("web:1", "web:2")
        if (n := draw(st.integers(-1, 6))) >= 0
    )
    subset = "destinationRule" in str(doc)
    weight = draw(st.sampled_from([0, 0, 25, 100]))
    clean = draw(st.integers(0, 3)) > 0
    return Case(
        doc,
        status,
        sets,
        clean_virtual_service(subset, weight) if clean else draw(virtual_services(subset)),
        clean_http_route(weight) if clean else draw(http_routes()),
        (draw(st.sampled_from([V1, V2, None])), draw(st.sampled_from([V1, V2, None]))),
        (draw(st.sampled_from([V1, V2, None])), draw(st.sampled_from([V2, V1, None]))),
    )


# --------------------------------------------------------------------------- routers, simulated
def _istio_parts(r: Rollout) -> tuple[istio.Target, istio.Sides, istio.Managed, int]:
    canary = r.spec.strategy.canary
    assert canary is not None and canary.traffic_routing is not None and canary.traffic_routing.istio
    dr = canary.traffic_routing.istio.destination_rule
    sides = istio.Sides(
        canary.stable_service or "",
        canary.canary_service or "",
        dr.stable_subset_name if dr else None,
        dr.canary_subset_name if dr else None,
    )
    return istio.targets_of(r)[0], sides, istio.managed_of(r), max_weight(canary)


def _gateway_parts(r: Rollout) -> tuple[gatewayapi.Route, gatewayapi.Backends, list[str], int]:
    canary = r.spec.strategy.canary
    assert canary is not None and canary.traffic_routing is not None
    backends = gatewayapi.Backends(NS, canary.stable_service or "", canary.canary_service or "")
    managed = [m.name for m in canary.traffic_routing.managed_routes]
    return gatewayapi.routes_of(r)[0], backends, managed, max_weight(canary)


def _problem_state(kind: Any, problem: str) -> RouterState:
    return RouterState(kind=kind, ok=False, problem=problem, invalid=isinstance(problem, SpecProblem))


def router_state(
    r: Rollout, case: Case, vs: Obj, route: Obj, hashes: tuple[str | None, str | None]
) -> RouterState:
    """What the operator's router would read from these objects (the routers' pure reading)."""
    canary = r.spec.strategy.canary
    kind = canary.traffic_routing.router() if canary is not None and canary.traffic_routing else None
    if kind is not None and foreign_references(r):
        # routers.router_for: another namespace, which never consents here (RefusedRouter).
        return RouterState(kind=kind, ok=False, problem="another namespace", refused=True)
    if kind == "istio":
        target, sides, managed, top = _istio_parts(r)
        reading = istio.read_virtual_service(target, vs, sides, managed, top)
        if isinstance(reading, str):
            return _problem_state("istio", reading)
        state = istio.combine([(target, reading)], False)
        return dataclasses.replace(state, stable_subset_hash=hashes[0], canary_subset_hash=hashes[1])
    if kind == "gatewayAPI":
        groute, backends, names, top = _gateway_parts(r)
        read = gatewayapi.read_route(groute, route, backends, names, 0, top)
        if isinstance(read, str):
            return _problem_state("gatewayAPI", read)
        return gatewayapi.combine([(groute, read)])
    return RouterState(kind="none")


def apply_traffic(r: Rollout, action: SetTraffic, vs: Obj, route: Obj) -> tuple[Obj, Obj]:
    """The router objects after the operator's write of `action` (unchanged when it refuses)."""
    canary = r.spec.strategy.canary
    assert canary is not None and canary.traffic_routing is not None
    if canary.traffic_routing.router() == "istio":
        target, sides, managed, top = _istio_parts(r)
        ops = istio.virtual_service_patch(target, vs, sides, managed, action, top)
        if isinstance(ops, list):
            new = jsonpatch.apply_patch(copy.deepcopy(vs), ops)
            assert_istio_sums(new, target, sides, managed, top)
            return new, route
        return vs, route
    groute, backends, names, top = _gateway_parts(r)
    gops = gatewayapi.route_patch(
        groute, route, backends, names, action.canary_weight, action.header_routes, top
    )
    if isinstance(gops, list):
        new = jsonpatch.apply_patch(copy.deepcopy(route), gops)
        assert_gateway_sums(new, groute, backends, names, top)
        return vs, new
    return vs, route


def assert_istio_sums(
    obj: Obj, target: istio.Target, sides: istio.Sides, managed: istio.Managed, top: int
) -> None:
    spec = obj.get("spec") or {}
    http = [r for r in spec.get("http") or [] if r.get("name") not in managed.names]
    indexes = istio.managed_indexes(target, {**spec, "http": http}, sides, managed, top)
    assert not isinstance(indexes, str), indexes
    routes = {"http": http, "tls": spec.get("tls") or [], "tcp": spec.get("tcp") or []}
    for kind, found in indexes.items():
        for i in found:
            total = sum(int(d.get("weight", 0) or 0) for d in routes[kind][i]["route"])
            assert total == top, (
                f"{kind}[{i}] of the VirtualService sums to {total}, not {top}: {routes[kind][i]}"
            )


def assert_gateway_sums(
    obj: Obj, route: gatewayapi.Route, b: gatewayapi.Backends, managed: list[str], top: int
) -> None:
    rules = obj["spec"].get("rules") or []
    for i in gatewayapi.managed_rules(rules, route.namespace, b, managed):
        total = sum(
            gatewayapi.DEFAULT_WEIGHT if ref.get("weight") is None else int(ref["weight"])
            for ref in rules[i]["backendRefs"]
        )
        assert total == top, f"rule {i} of the HTTPRoute sums to {total}, not {top}: {rules[i]}"


# --------------------------------------------------------------------------- properties
def observed_of(r: Rollout, case: Case, router: RouterState) -> ObservedState:
    strategy = r.spec.strategy
    names = ["web-active", "web-preview"] if strategy.blue_green is not None else ["web-stable", "web-canary"]
    services = {
        n: ServiceInfo(n, True, {"app": "web", **({HASH_LABEL: h} if h else {})})
        for n, h in zip(names, case.service_hashes, strict=True)
    }
    return ObservedState(
        rollout=r,
        replica_sets=tuple(rs(image, n, a, revision=k + 1) for k, (image, n, a) in enumerate(case.sets)),
        services=services,
        router=router,
        now=NOW + timedelta(seconds=30),
    )


def _traffic(actions: tuple[Any, ...]) -> list[SetTraffic]:
    return [a for a in actions if isinstance(a, SetTraffic)]


def check_plan(case: Case) -> None:
    """plan() on a random Rollout and cluster: no exception, weights in range and summing to the
    total once written, writes only where allowed, and a plan's traffic is a fixed point."""
    try:
        r = Rollout.model_validate({**case.doc, "status": case.status})
    except ValidationError:
        return  # the API server's schema refuses it: never reaches the planner
    spec_problems(r)
    check_namespaces(r)
    router = router_state(r, case, case.vs, case.route, case.subset_hashes)
    first = plan(observed_of(r, case, router))
    again = plan(observed_of(r, case, router))
    assert repr(first) == repr(again), "the same observation planned twice gave two plans"
    canary = r.spec.strategy.canary
    wanted = _traffic(first.actions)
    if canary is None or not wanted:
        return
    top = max_weight(canary)
    assert len(wanted) == 1, f"one traffic write per pass, not {wanted}"
    action = wanted[0]
    assert 0 <= action.canary_weight <= top == action.max_weight, action
    assert not router.invalid and not router.refused, f"traffic written through an unfit router: {router}"
    if canary.traffic_routing is None or canary.traffic_routing.router() is None:
        return
    vs, route = apply_traffic(r, action, case.vs, case.route)
    hashes = (action.stable_hash, action.canary_hash)
    after = router_state(r, case, vs, route, hashes)
    r2 = Rollout.model_validate({**case.doc, "status": first.status.wire()})
    second = plan(observed_of(r2, case, after))
    repeated = [a for a in _traffic(second.actions) if a == action]
    assert not repeated, f"the write {action} was read back as {after} and planned again: not idempotent"


def check_namespaces(r: Rollout) -> None:
    """Every router object outside the Rollout's namespace is a reference isolation checks."""
    canary = r.spec.strategy.canary
    kind = canary.traffic_routing.router() if canary is not None and canary.traffic_routing else None
    if kind is None:
        return
    foreign = {(ref.plural, ref.namespace, ref.name) for ref in foreign_references(r)}
    own = r.metadata.namespace
    if kind == "istio":
        for t in istio.targets_of(r):
            assert t.namespace == own or ("virtualservices", t.namespace, t.name) in foreign, t
    else:
        for g in gatewayapi.routes_of(r):
            assert g.namespace == own or (g.plural, g.namespace, g.name) in foreign, g


ISTIO_TARGETS = st.sampled_from(
    [
        istio.Target(NS, "web"),
        istio.Target(NS, "web", routes=("primary",)),
        istio.Target(NS, "web", routes=("primary",), tcp_routes=()),
    ]
)
SIDES = st.sampled_from(
    [istio.Sides("web-stable", "web-canary"), istio.Sides("web", "web", "stable", "canary")]
)


@dataclasses.dataclass(frozen=True)
class RouteCase:
    obj: Obj
    target: istio.Target
    sides: istio.Sides
    weight: int
    top: int
    headers: bool


@st.composite
def istio_cases(draw: st.DrawFn) -> RouteCase:
    sides = draw(SIDES)
    top = draw(st.sampled_from([100, 1000]))
    return RouteCase(
        draw(virtual_services(subset=sides.stable_subset is not None)),
        draw(ISTIO_TARGETS),
        sides,
        draw(st.integers(0, top)),
        top,
        draw(st.booleans()),
    )


MANAGED = istio.Managed(("hdr",), frozenset(), True)
HDR = HeaderRoute("hdr", (("x-canary", "exact", "true"),))


def check_virtual_service(case: RouteCase) -> None:
    """The Istio router's read and write on a random VirtualService: they agree on what they
    refuse; a write sums every weighed route to the total, reads back as written, and writing
    it again changes nothing."""
    headers = (HDR,) if case.headers else ()
    action = SetTraffic(case.weight, "s", "c", headers, (), case.top)
    read = istio.read_virtual_service(case.target, case.obj, case.sides, MANAGED, case.top)
    ops = istio.virtual_service_patch(case.target, case.obj, case.sides, MANAGED, action, case.top)
    assert isinstance(read, str) == isinstance(ops, str), (read, ops)
    if isinstance(read, str) and isinstance(ops, str):
        assert type(read) is type(ops) and read == ops
        return
    assert isinstance(ops, list)
    for op in ops[1:]:
        assert op["path"].startswith(("/spec/http/", "/spec/tls/", "/spec/tcp/")), op
    new = jsonpatch.apply_patch(copy.deepcopy(case.obj), ops)
    assert_istio_sums(new, case.target, case.sides, MANAGED, case.top)
    back = istio.read_virtual_service(case.target, new, case.sides, MANAGED, case.top)
    assert isinstance(back, istio.Reading), back
    assert back.canary_weight == case.weight and back.agree, back
    assert back.stable_weight + back.additional_weight == case.top - case.weight, back
    assert back.header_routes == (("hdr",) if case.headers and back.has_http else ()), back
    twice = istio.virtual_service_patch(case.target, new, case.sides, MANAGED, action, case.top)
    assert isinstance(twice, list)
    assert jsonpatch.apply_patch(copy.deepcopy(new), twice) == new, "a second write changed the object"


@dataclasses.dataclass(frozen=True)
class GatewayCase:
    obj: Obj
    weight: int
    top: int
    headers: bool


GATEWAY_CASES = st.builds(
    GatewayCase,
    http_routes(),
    st.integers(0, 100),
    st.just(100),
    st.booleans(),
)
GROUTE = gatewayapi.Route("HTTPRoute", NS, "web", use_header_routes=True)
BACKENDS = gatewayapi.Backends(NS, "web-stable", "web-canary")


def check_http_route(case: GatewayCase) -> None:
    """The Gateway API router's read and write on a random HTTPRoute, as for VirtualServices."""
    headers = (HDR,) if case.headers else ()
    read = gatewayapi.read_route(GROUTE, case.obj, BACKENDS, ["hdr"], len(headers), case.top)
    ops = gatewayapi.route_patch(GROUTE, case.obj, BACKENDS, ["hdr"], case.weight, headers, case.top)
    assert isinstance(read, str) == isinstance(ops, str), (read, ops)
    if isinstance(read, str) and isinstance(ops, str):
        assert type(read) is type(ops)
        return
    assert isinstance(ops, list)
    new = jsonpatch.apply_patch(copy.deepcopy(case.obj), ops)
    assert_gateway_sums(new, GROUTE, BACKENDS, ["hdr"], case.top)
    back = gatewayapi.read_route(GROUTE, new, BACKENDS, ["hdr"], len(headers), case.top)
    assert isinstance(back, gatewayapi.Reading), back
    assert (back.canary_weight, back.stable_weight, back.agree) == (case.weight, case.top - case.weight, True)
    twice = gatewayapi.route_patch(GROUTE, new, BACKENDS, ["hdr"], case.weight, headers, case.top)
    assert isinstance(twice, list)
    assert jsonpatch.apply_patch(copy.deepcopy(new), twice) == new, "a second write changed the route"


def check_templates(spec: Obj, doc: Obj) -> None:
    """An AnalysisTemplate's checks and the offline simulation never raise on what the schema takes."""
    template_problems(spec)
    try:
        parsed = AnalysisTemplateSpec.model_validate(spec)
        r = Rollout.model_validate(doc)
    except ValidationError:
        return
    spec_problems(r)
    simulate(r, {template_key("rate"): parsed})

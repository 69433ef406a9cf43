"""The Gateway API router's route arithmetic: which rules are managed, the weights read and
written, the header rules added and removed. Tables over routers.gatewayapi's pure functions."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import jsonpatch
import pytest

from tidegate.api.rollout import Rollout
from tidegate.core.model import HeaderRoute
from tidegate.core.validation import spec_problems
from tidegate.k8s.cache import rollout_refs
from tidegate.routers._objects import SpecProblem
from tidegate.routers.gatewayapi import (
    Backends,
    Reading,
    Route,
    combine,
    header_rule_of,
    managed_rules,
    read_route,
    route_patch,
    routes_of,
)

B = Backends("shop", "web-stable", "web-canary")
HTTP = Route("HTTPRoute", "shop", "web", use_header_routes=True)
GRPC = Route("GRPCRoute", "shop", "web", use_header_routes=True)
MANAGED = ["canary-header"]
X_CANARY = HeaderRoute("canary-header", (("x-canary", "exact", "true"),))


def ref(name: str, weight: int | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "port": 80, **extra}
    if weight is not None:
        out["weight"] = weight
    return out


def split(stable: int | None = 100, canary: int | None = 0, **rule: Any) -> dict[str, Any]:
    return {"backendRefs": [ref("web-stable", stable), ref("web-canary", canary)], **rule}


def route(*rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7"},
        "spec": {"rules": list(rules)},
    }


OWN_HEADER = {"name": "canary-header", "backendRefs": [ref("web-canary")]}


@pytest.mark.parametrize(
    ("rules", "managed"),
    [
        pytest.param([split()], [0], id="one rule with both Services"),
        pytest.param(
            [{"backendRefs": [ref("web-stable")]}, split()], [1], id="a stable-only rule is the owner's"
        ),
        pytest.param(
            [{"backendRefs": [ref("web-canary")]}, split()], [1], id="the owner's canary-only rule too"
        ),
        pytest.param([split(), split(name="api")], [0, 1], id="every rule with both"),
        pytest.param([split(), OWN_HEADER], [0], id="our header rule is not weighted"),
        pytest.param(
            [split(), {**split(), "name": "canary-header-1"}], [0], id="nor its numbered siblings (hdr-1)"
        ),
        pytest.param([{**split(), "name": "canary-header-x"}], [0], id="a name that only looks like ours"),
        pytest.param(
            [{"backendRefs": [ref("web-stable", kind="ServiceImport"), ref("web-canary")]}],
            [],
            id="a backendRef of another kind is not the Service",
        ),
        pytest.param(
            [{"backendRefs": [ref("web-stable", namespace="other"), ref("web-canary")]}],
            [],
            id="a Service of another namespace is not ours",
        ),
        pytest.param(
            [
                {
                    "backendRefs": [
                        ref("web-stable", namespace="shop", group=""),
                        ref("web-canary", kind="Service"),
                    ]
                }
            ],
            [0],
            id="explicit core group, kind and namespace",
        ),
    ],
)
def test_which_rules_are_managed(rules: list[dict[str, Any]], managed: list[int]) -> None:
    assert managed_rules(rules, "shop", B, MANAGED) == managed


@pytest.mark.parametrize(
    ("name", "base"),
    [
        ("canary-header", "canary-header"),
        ("canary-header-3", "canary-header"),
        ("canary-header-", None),
        ("canary-header-a", None),
        ("primary", None),
        (None, None),
    ],
)
def test_header_rule_names(name: str | None, base: str | None) -> None:
    assert header_rule_of(name, MANAGED) == base


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        pytest.param([split(95, 5)], (5, 95, True, ()), id="as written"),
        pytest.param([split(None, None)], (1, 1, True, ()), id="unset weights are 1 (Gateway API)"),
        pytest.param([split(90, 10), split(90, 10)], (10, 90, True, ()), id="rules agree"),
        pytest.param([split(90, 10), split(100, 0)], (10, 90, False, ()), id="rules disagree"),
        pytest.param([split(95, 5), OWN_HEADER], (5, 95, True, ("canary-header",)), id="header rule present"),
        pytest.param(
            [split(95, 5, name="a"), split(95, 5, name="b"), OWN_HEADER],
            (5, 95, False, ()),
            id="one of two header rules gone: written again",
        ),
        pytest.param(
            [
                split(95, 5, name="a"),
                split(95, 5, name="b"),
                OWN_HEADER,
                {**OWN_HEADER, "name": "canary-header-1"},
            ],
            (5, 95, True, ("canary-header",)),
            id="both header rules present",
        ),
    ],
)
def test_reading_a_route(rules: list[dict[str, Any]], expected: tuple[Any, ...]) -> None:
    reading = read_route(HTTP, route(*rules), B, MANAGED)
    assert isinstance(reading, Reading)
    assert (reading.canary_weight, reading.stable_weight, reading.agree, reading.header_routes) == expected


def test_a_route_without_both_services_is_a_problem_naming_them() -> None:
    problem = read_route(HTTP, route({"backendRefs": [ref("web-stable")]}), B, MANAGED)
    assert problem == (
        "HTTPRoute web has no rule whose backendRefs are both the stable and the canary Service "
        "(web-stable/web-canary)"
    )


def apply(
    obj: dict[str, Any], r: Route, weight: int, headers: tuple[HeaderRoute, ...] = ()
) -> dict[str, Any]:
    ops = route_patch(r, obj, B, MANAGED, weight, headers)
    assert not isinstance(ops, str), ops
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}, (
        "guarded by its version"
    )
    out: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(obj), ops)
    return out


PRIMARY = split(
    100,
    0,
    name="primary",
    matches=[{"path": {"type": "PathPrefix", "value": "/"}, "headers": [{"name": "x-team", "value": "a"}]}],
    filters=[
        {
            "type": "RequestHeaderModifier",
            "requestHeaderModifier": {"set": [{"name": "x-via", "value": "gw"}]},
        }
    ],
    timeouts={"request": "10s"},
)


def test_weights_are_written_on_the_two_backend_refs_only() -> None:
    out = apply(route(PRIMARY, {"backendRefs": [ref("web-canary", 3)]}), HTTP, 5)
    assert [r["weight"] for r in out["spec"]["rules"][0]["backendRefs"]] == [95, 5]
    assert out["spec"]["rules"][1] == {"backendRefs": [ref("web-canary", 3)]}, (
        "a rule of the owner's is untouched"
    )
    assert {k: v for k, v in out["spec"]["rules"][0].items() if k != "backendRefs"} == {
        k: v for k, v in PRIMARY.items() if k != "backendRefs"
    }, "matches, filters, timeouts, name kept"


def test_weights_are_out_of_max_traffic_weight() -> None:
    """trafficRouting.maxTrafficWeight 1000 (Argo accepts it with router plugins): 250 is a quarter."""
    obj = route(split(1000, 0))
    ops = route_patch(HTTP, obj, B, MANAGED, 250, (), 1000)
    assert not isinstance(ops, str), ops
    out = jsonpatch.apply_patch(copy.deepcopy(obj), ops)
    assert [r["weight"] for r in out["spec"]["rules"][0]["backendRefs"]] == [750, 250]


def test_header_rule_merges_the_source_rules_matches_and_copies_its_filters() -> None:
    prefix = HeaderRoute("canary-header", (("x-canary", "exact", "true"), ("x-user", "prefix", "qa.")))
    out = apply(route(PRIMARY), HTTP, 5, (prefix,))
    assert out["spec"]["rules"][1] == {
        "name": "canary-header",
        "matches": [
            {
                "path": {"type": "PathPrefix", "value": "/"},
                "headers": [
                    {"name": "x-team", "value": "a"},
                    {"name": "x-canary", "type": "Exact", "value": "true"},
                    {"name": "x-user", "type": "RegularExpression", "value": r"qa\..*"},
                ],
            }
        ],
        "filters": PRIMARY["filters"],
        "backendRefs": [{"group": "", "kind": "Service", "name": "web-canary", "port": 80}],
    }


def test_a_rule_without_matches_gets_the_headers_alone() -> None:
    out = apply(route(split()), HTTP, 0, (X_CANARY,))
    assert out["spec"]["rules"][1]["matches"] == [
        {"headers": [{"name": "x-canary", "type": "Exact", "value": "true"}]}
    ]


def test_one_header_rule_per_managed_rule_named_as_the_plugin_does() -> None:
    out = apply(route(split(name="a"), split(name="b")), HTTP, 10, (X_CANARY,))
    assert [r.get("name") for r in out["spec"]["rules"]] == ["a", "b", "canary-header", "canary-header-1"]


def test_header_rules_are_replaced_not_doubled_and_removed_when_not_wanted() -> None:
    once = apply(route(split()), HTTP, 10, (X_CANARY,))
    twice = apply({**once, "metadata": route()["metadata"]}, HTTP, 10, (X_CANARY,))
    assert [r.get("name") for r in twice["spec"]["rules"]] == [None, "canary-header"]
    gone = apply({**twice, "metadata": route()["metadata"]}, HTTP, 0)
    assert [r.get("name") for r in gone["spec"]["rules"]] == [None]
    assert [r["weight"] for r in gone["spec"]["rules"][0]["backendRefs"]] == [100, 0]


def test_a_route_without_use_header_routes_gets_weights_only() -> None:
    out = apply(route(split()), Route("HTTPRoute", "shop", "web", use_header_routes=False), 30, (X_CANARY,))
    assert len(out["spec"]["rules"]) == 1
    assert [r["weight"] for r in out["spec"]["rules"][0]["backendRefs"]] == [70, 30]


def test_grpc_header_rule_keeps_the_method() -> None:
    rule = split(matches=[{"method": {"service": "orders.v1.Orders"}, "headers": []}])
    out = apply(route(rule), GRPC, 5, (HeaderRoute("canary-header", (("x-canary", "regex", "t.*"),)),))
    assert out["spec"]["rules"][1]["matches"] == [
        {
            "method": {"service": "orders.v1.Orders"},
            "headers": [{"name": "x-canary", "type": "RegularExpression", "value": "t.*"}],
        }
    ]


def test_more_than_sixteen_rules_is_a_problem_not_a_rejected_write() -> None:
    rules = [split(name=f"r{i}") for i in range(9)]
    problem = route_patch(HTTP, route(*rules), B, MANAGED, 5, (X_CANARY,))
    assert (
        problem == "HTTPRoute web would have 18 rules with the header routes, more than the Gateway API's 16"
    )


def reading(canary: int, stable: int, agree: bool = True, headers: tuple[str, ...] = ()) -> Reading:
    return Reading(canary, stable, agree, ("HTTPRoute/web/rules[0]",), headers)


@pytest.mark.parametrize(
    ("readings", "canary", "stable", "headers"),
    [
        pytest.param([(HTTP, reading(5, 95))], 5, 95, (), id="one route"),
        pytest.param([(HTTP, reading(5, 95)), (GRPC, reading(5, 95))], 5, 95, (), id="routes agree"),
        pytest.param(
            [(HTTP, reading(5, 95)), (GRPC, reading(0, 100))], 5, -1, (), id="routes disagree: not in place"
        ),
        pytest.param([(HTTP, reading(5, 95, agree=False))], 5, -1, (), id="rules of a route disagree"),
        pytest.param(
            [(HTTP, reading(5, 95, headers=("h",))), (GRPC, reading(5, 95))],
            5,
            -1,
            ("h",),
            id="a header rule missing from one route",
        ),
        pytest.param(
            [
                (HTTP, reading(5, 95, headers=("h",))),
                (Route("HTTPRoute", "shop", "b", False), reading(5, 95)),
            ],
            5,
            95,
            ("h",),
            id="a route without useHeaderRoutes has none",
        ),
    ],
)
def test_combining_routes(
    readings: list[tuple[Route, Reading]], canary: int, stable: int, headers: tuple[str, ...]
) -> None:
    state = combine(readings)
    assert (state.kind, state.canary_weight, state.stable_weight, state.header_routes) == (
        "gatewayAPI",
        canary,
        stable,
        headers,
    )


def body(routing: dict[str, Any], **canary: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "w", "image": "w"}]},
            },
            "strategy": {
                "canary": {
                    "stableService": "web-stable",
                    "canaryService": "web-canary",
                    "trafficRouting": routing,
                    "steps": [{"setWeight": 10}],
                    **canary,
                }
            },
        },
    }


PLUGIN = "argoproj-labs/gatewayAPI"


@pytest.mark.parametrize(
    "routing",
    [
        pytest.param({"gatewayAPI": {"httpRoute": "web", "grpcRoutes": [{"name": "rpc"}]}}, id="native"),
        pytest.param(
            {"plugins": {PLUGIN: {"httpRoute": "web", "grpcRoutes": [{"name": "rpc"}]}}}, id="Argo plugin"
        ),
    ],
)
def test_native_block_and_argo_plugin_name_the_same_routes(routing: dict[str, Any]) -> None:
    r = Rollout.from_body(body(routing))
    assert spec_problems(r) == []
    assert routes_of(r) == [
        Route("HTTPRoute", "shop", "web", use_header_routes=True),
        Route("GRPCRoute", "shop", "rpc", use_header_routes=False),
    ], "httpRoute gets header routes; list items only when they say so (the plugin's defaults)"
    assert rollout_refs(body(routing)) >= {("httproutes", "shop", "web"), ("grpcroutes", "shop", "rpc")}


def test_the_plugins_namespace_names_where_the_routes_are() -> None:
    raw = body({"plugins": {PLUGIN: {"httpRoute": "edge", "namespace": "gateways"}}})
    assert routes_of(Rollout.from_body(raw)) == [Route("HTTPRoute", "gateways", "edge", True)]
    assert ("httproutes", "gateways", "edge") in rollout_refs(raw)


ROUTING = "spec.strategy.canary.trafficRouting"


@pytest.mark.parametrize(
    ("routing", "problem"),
    [
        ({"gatewayAPI": {}}, f"{ROUTING}.gatewayAPI: name at least one route"),
        (
            {"plugins": {PLUGIN: {"tcpRoutes": [{"name": "t"}], "httpRoute": "w"}}},
            f"{ROUTING}.plugins.{PLUGIN}.tcpRoutes: not supported",
        ),
        (
            {"gatewayAPI": {"httpRouteSelector": {"matchLabels": {"a": "b"}}}},
            f"{ROUTING}.gatewayAPI.httpRouteSelector: not supported",
        ),
        (
            {"plugins": {"argoproj-labs/contour": {}}},
            f"{ROUTING}.plugins.argoproj-labs/contour: plugin not supported",
        ),
        (
            {"gatewayAPI": {"httpRoute": "w"}, "istio": {"virtualService": {"name": "w"}}},
            f"{ROUTING}: give one router",
        ),
        (
            {"gatewayAPI": {"httpRoute": "w"}, "plugins": {PLUGIN: {"httpRoute": "w"}}},
            f"{ROUTING}: gatewayAPI and plugins.{PLUGIN} are the same router",
        ),
        (
            {"gatewayAPI": {"httpRoute": "w"}, "managedRoutes": [{"name": "Canary_Header"}]},
            f"{ROUTING}.managedRoutes[0].name: 'Canary_Header' must be a Gateway API rule name",
        ),
    ],
)
def test_bad_routing_is_refused_by_name(routing: dict[str, Any], problem: str) -> None:
    problems = spec_problems(Rollout.from_body(body(routing)))
    assert any(p.startswith(problem) for p in problems), problems


def test_the_plugin_form_needs_both_services() -> None:
    raw = body({"plugins": {PLUGIN: {"httpRoute": "w"}}})
    del raw["spec"]["strategy"]["canary"]["canaryService"]
    assert f"{ROUTING}: the Gateway API router needs both stableService and canaryService" in spec_problems(
        Rollout.from_body(raw)
    )


def test_routes_not_served_by_the_api_server_are_a_problem_saying_so() -> None:
    """The router against a real (never started) Cache whose HTTPRoute kind is not served:
    a read from the cache asks nothing of the API server."""
    from tidegate.k8s.cache import Cache
    from tidegate.routers.gatewayapi import GatewayAPIRouter

    cache = Cache(clients=None)  # type: ignore[arg-type]
    routing = {"gatewayAPI": {"httpRoute": "web"}, "managedRoutes": [{"name": "canary-header"}]}
    router = GatewayAPIRouter(Rollout.from_body(body(routing)), cache.clients, cache)
    cache.httproutes.served = False
    state = asyncio.run(router.read("s", "c"))
    assert (state.ok, state.problem) == (
        False,
        "HTTPRoute is not served by the API server (are the Gateway API CRDs installed?)",
    )
    cache.httproutes.served = True
    assert asyncio.run(router.read("s", "c")).problem == "HTTPRoute web not found in namespace shop"
    cache.httproutes.objects[("shop", "web")] = route(split(90, 10), OWN_HEADER)
    state = asyncio.run(router.read("s", "c"))
    assert (state.ok, state.canary_weight, state.stable_weight, state.header_routes) == (
        True,
        10,
        90,
        ("canary-header",),
    )
    assert state.managed_routes == ("HTTPRoute/web/rules[0]",)


def test_query_parameter_routes_add_query_matches_to_httproute_header_rules() -> None:
    """Tidegate's addition to setHeaderRoute: `queryParamName` matches, on HTTPRoutes."""
    hr = HeaderRoute("canary-header", (), (("canary", "exact", "1"), ("user", "prefix", "qa")))
    source = split(
        matches=[{"path": {"type": "PathPrefix", "value": "/"}, "queryParams": [{"name": "v", "value": "2"}]}]
    )
    out = apply(route(source), HTTP, 5, (hr,))
    assert out["spec"]["rules"][1]["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/"},
            "queryParams": [
                {"name": "v", "value": "2"},
                {"name": "canary", "type": "Exact", "value": "1"},
                {"name": "user", "type": "RegularExpression", "value": "qa.*"},
            ],
        }
    ]


def test_a_step_turns_header_and_query_conditions_into_one_header_route() -> None:
    from tidegate.core.traffic import header_routes_at

    match = [
        {"headerName": "x-canary", "headerValue": {"exact": "true"}},
        {"queryParamName": "canary", "queryParamValue": {"regex": "1|yes"}},
    ]
    r = Rollout.from_body(
        body(
            {"gatewayAPI": {"httpRoute": "web"}, "managedRoutes": [{"name": "canary-header"}]},
            steps=[{"setHeaderRoute": {"name": "canary-header", "match": match}}],
        )
    )
    canary = r.spec.strategy.canary
    assert canary is not None
    assert spec_problems(r) == []
    assert header_routes_at(canary.steps, 0) == (
        HeaderRoute("canary-header", (("x-canary", "exact", "true"),), (("canary", "regex", "1|yes"),)),
    )


QUERY_STEP = {
    "setHeaderRoute": {
        "name": "canary-header",
        "match": [{"queryParamName": "canary", "queryParamValue": {"exact": "1"}}],
    }
}


@pytest.mark.parametrize(
    ("routing", "problem"),
    [
        (
            {"istio": {"virtualService": {"name": "web"}}},
            "query parameter matches need trafficRouting.gatewayAPI (HTTPRoutes)",
        ),
        (
            {"gatewayAPI": {"grpcRoute": "rpc"}},
            "a GRPCRoute has no query parameters (a grpcRoute with header routes is set)",
        ),
    ],
)
def test_query_parameter_matches_only_where_a_route_can_carry_them(
    routing: dict[str, Any], problem: str
) -> None:
    routing = {**routing, "managedRoutes": [{"name": "canary-header"}]}
    problems = spec_problems(Rollout.from_body(body(routing, steps=[QUERY_STEP])))
    assert f"spec.strategy.canary.steps[0].setHeaderRoute.match[0].queryParamName: {problem}" in problems


def test_a_route_too_small_for_the_steps_header_rules_is_a_problem_when_read() -> None:
    """Found on the first read, before any step: the Rollout is Degraded naming the route
    instead of a write being refused at the header route's step."""
    rules = [split(name=f"r{i}") for i in range(6)] + [{"backendRefs": [ref("other")]}] * 4
    assert isinstance(read_route(HTTP, route(*rules), B, MANAGED, header_routes=1), Reading), "6 + 4 + 6 fits"
    problem = read_route(HTTP, route(*rules, {"backendRefs": [ref("other")]}), B, MANAGED, header_routes=1)
    assert problem == (
        "HTTPRoute web has 11 rules; with the steps' 1 header route(s), one rule per managed rule, "
        "it would have 17, more than the Gateway API's 16"
    )
    no_headers = Route("HTTPRoute", "shop", "web", use_header_routes=False)
    assert isinstance(read_route(no_headers, route(*rules, *rules), B, MANAGED, header_routes=1), Reading)


def test_header_route_steps_need_a_route_that_takes_them() -> None:
    routing = {"gatewayAPI": {"httpRoutes": [{"name": "web"}]}, "managedRoutes": [{"name": "canary-header"}]}
    steps = [
        {
            "setHeaderRoute": {
                "name": "canary-header",
                "match": [{"headerName": "x", "headerValue": {"exact": "1"}}],
            }
        }
    ]
    problems = spec_problems(Rollout.from_body(body(routing, steps=steps)))
    assert problems == [
        "spec.strategy.canary.steps[0].setHeaderRoute: no route takes header routes (httpRoute, grpcRoute, "
        "or an httpRoutes / grpcRoutes item with useHeaderRoutes: true)"
    ]


@pytest.mark.parametrize(
    ("refs", "problem"),
    [
        pytest.param(
            [ref("web-stable", 100), ref("web-canary", 0), ref("mirror", 7)],
            "rule primary of HTTPRoute web has a backendRef that is neither the stable nor the canary "
            "Service (Service mirror (weight 7); web-stable/web-canary): its weights would not sum to 100",
            id="a third backend (95 + 5 + 7 = 107 before)",
        ),
        pytest.param(
            [ref("web-stable", 50), ref("web-canary", 0), ref("web-stable", 50)],
            "rule primary of HTTPRoute web has 2 backendRefs to the stable Service: each would get the "
            "stable weight and the weights would not sum to 100",
            id="the stable twice",
        ),
    ],
)
def test_a_managed_rule_whose_weights_cannot_sum_to_100_is_a_spec_problem(
    refs: list[dict[str, Any]], problem: str
) -> None:
    """Issue 12: InvalidSpec naming the rule and the route; read and write refuse it alike."""
    obj = route({**PRIMARY, "backendRefs": refs})
    found = read_route(HTTP, obj, B, MANAGED)
    assert isinstance(found, SpecProblem)
    assert found == problem
    assert route_patch(HTTP, obj, B, MANAGED, 5, ()) == problem

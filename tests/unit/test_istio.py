"""The Istio router's route arithmetic: which HTTP, TLS and TCP routes are weighed, the weights
read and written out of maxTrafficWeight, additional subsets, header and mirror routes, and
several VirtualServices combined. Tables over routers.istio's pure functions."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import pytest

from tidegate.api.rollout import IstioTCPRoute, IstioTLSRoute, Rollout
from tidegate.core.model import HeaderRoute, MirrorRoute, SetTraffic
from tidegate.core.traffic import effective_canary_weight, mirror_routes_at
from tidegate.core.validation import spec_problems
from tidegate.k8s.cache import rollout_refs
from tidegate.routers._objects import SpecProblem
from tidegate.routers.istio import (
    Managed,
    Reading,
    Sides,
    Target,
    combine,
    managed_indexes,
    read_virtual_service,
    targets_of,
    tcp_route_indexes,
    tls_route_indexes,
    virtual_service_patch,
)

HOSTS = Sides("web-stable", "web-canary")
SUBSETS = Sides("web", "web", "stable", "canary", frozenset({"preview"}))
VS = Target("shop", "web")
NONE = Managed()
MANAGED = Managed(("canary-header", "mirror"), frozenset({"mirror"}), True)


def dest(
    host: str, weight: int | None = None, subset: str | None = None, port: int | None = None
) -> dict[str, Any]:
    d: dict[str, Any] = {"host": host}
    if subset:
        d["subset"] = subset
    if port:
        d["port"] = {"number": port}
    out: dict[str, Any] = {"destination": d}
    if weight is not None:
        out["weight"] = weight
    return out


def split(stable: int = 100, canary: int = 0, **route: Any) -> dict[str, Any]:
    return {"route": [dest("web-stable", stable), dest("web-canary", canary)], **route}


def tls(port: int | None, *hosts: str, stable: int = 100, canary: int = 0) -> dict[str, Any]:
    match: dict[str, Any] = {"sniHosts": list(hosts)}
    if port is not None:
        match["port"] = port
    return {"match": [match], **split(stable, canary)}


def tcp(*ports: int, stable: int = 100, canary: int = 0) -> dict[str, Any]:
    return {"match": [{"port": p} for p in ports], **split(stable, canary)}


def vs(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7"}, "spec": spec}


def applied(obj: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(obj), ops)
    return out


# --------------------------------------------------------------------------- which routes
@pytest.mark.parametrize(
    ("wanted", "routes", "found"),
    [
        pytest.param(
            IstioTLSRoute(port=443, sni_hosts=["a.example"]), [tls(443, "a.example")], [0], id="port and host"
        ),
        pytest.param(
            IstioTLSRoute(port=443, sni_hosts=["a.example", "b.example"]),
            [{"match": [{"port": 443, "sniHosts": ["b.example"]}, {"port": 443, "sniHosts": ["a.example"]}]}],
            [0],
            id="SNI hosts of all matches, in any order",
        ),
        pytest.param(
            IstioTLSRoute(port=443, sni_hosts=["a.example"]), [tls(8443, "a.example")], [], id="other port"
        ),
        pytest.param(
            IstioTLSRoute(port=443, sni_hosts=["a.example"]),
            [tls(443, "a.example", "b.example")],
            [],
            id="more hosts",
        ),
        pytest.param(
            IstioTLSRoute(port=443, sni_hosts=["a.example"]),
            [
                {
                    "match": [
                        {"port": 443, "sniHosts": ["a.example"]},
                        {"port": 8443, "sniHosts": ["a.example"]},
                    ]
                }
            ],
            [],
            id="two ports never match (Argo's searchTlsRoute)",
        ),
        pytest.param(
            IstioTLSRoute(sni_hosts=["a.example"]), [tls(None, "a.example")], [0], id="no port on either"
        ),
        pytest.param(
            IstioTLSRoute(port=443, sni_hosts=["a.example"]),
            [tls(443, "a.example"), tls(443, "b.example"), tls(443, "a.example")],
            [0, 2],
            id="every route that matches",
        ),
    ],
)
def test_tls_routes_are_found_by_port_and_sni_hosts(
    wanted: IstioTLSRoute, routes: list[dict[str, Any]], found: list[int]
) -> None:
    assert tls_route_indexes(wanted, routes) == found


@pytest.mark.parametrize(
    ("port", "routes", "found"),
    [
        pytest.param(5432, [tcp(5432)], [0], id="the port"),
        pytest.param(5432, [tcp(6379), tcp(5432)], [1], id="among others"),
        pytest.param(5432, [tcp(5432, 5433)], [], id="two ports never match (Argo's searchTcpRoute)"),
        pytest.param(5432, [tcp(5432, 5432)], [0], id="the same port twice is one port"),
        pytest.param(None, [split()], [0], id="no port: a route without matches"),
    ],
)
def test_tcp_routes_are_found_by_port(
    port: int | None, routes: list[dict[str, Any]], found: list[int]
) -> None:
    assert tcp_route_indexes(IstioTCPRoute(port=port), routes) == found


@pytest.mark.parametrize(
    ("target", "spec", "expected"),
    [
        pytest.param(VS, {"http": [split()]}, {"http": [0], "tls": [], "tcp": []}, id="unnamed HTTP route"),
        pytest.param(
            VS,
            {"http": [split(), {"route": [dest("other")]}], "tls": [tls(443, "a")], "tcp": [tcp(5432)]},
            {"http": [0], "tls": [0], "tcp": [0]},
            id="every kind that is exactly the two",
        ),
        pytest.param(
            Target("shop", "web", tcp_routes=(IstioTCPRoute(port=6379),)),
            {"tcp": [tcp(5432), tcp(6379)]},
            {"http": [], "tls": [], "tcp": [1]},
            id="tcpRoutes by port",
        ),
        pytest.param(
            Target("shop", "web", tls_routes=(IstioTLSRoute(port=443, sni_hosts=["b"]),)),
            {"tls": [tls(443, "a"), tls(443, "b")]},
            {"http": [], "tls": [1], "tcp": []},
            id="tlsRoutes by port and SNI hosts",
        ),
        pytest.param(
            Target("shop", "web", tcp_routes=(IstioTCPRoute(port=6379),)),
            {"tcp": [tcp(5432)]},
            "VirtualService web has no TCP route matching port 6379 "
            "(trafficRouting.istio.virtualService.tcpRoutes)",
            id="a listed TCP route missing",
        ),
        pytest.param(
            Target("shop", "web", tls_routes=(IstioTLSRoute(port=443, sni_hosts=["b"]),), where="X"),
            {"tls": [tls(443, "a")]},
            "VirtualService web has no TLS route matching port 443 and SNI hosts ['b'] (X.tlsRoutes)",
            id="a listed TLS route missing",
        ),
        pytest.param(
            VS,
            {"tcp": [{"route": [dest("web-stable", 100)]}]},
            "VirtualService web has no HTTP, TLS or TCP route whose destinations are exactly the stable and "
            "the canary (hosts web-stable/web-canary)",
            id="nothing to weigh",
        ),
        pytest.param(
            Target("shop", "web", tcp_routes=(IstioTCPRoute(port=5432),)),
            {"tcp": [{"match": [{"port": 5432}], "route": [dest("web-stable", 100)]}]},
            "TCP route tcp[0] of VirtualService web does not route to both the stable and the canary "
            "(hosts web-stable/web-canary)",
            id="a listed route without the canary",
        ),
    ],
)
def test_weighed_routes(target: Target, spec: dict[str, Any], expected: dict[str, list[int]] | str) -> None:
    assert managed_indexes(target, spec, HOSTS, NONE) == expected


def test_additional_subsets_share_a_route_found_without_a_name() -> None:
    route = {"route": [dest("web", 90, "stable"), dest("web", 10, "canary"), dest("web", 0, "preview")]}
    other = {"route": [dest("web", 90, "stable"), dest("web", 10, "canary"), dest("web", 0, "mystery")]}
    assert managed_indexes(VS, {"http": [route, other]}, SUBSETS, NONE) == {"http": [0], "tls": [], "tcp": []}


# --------------------------------------------------------------------------- weights written
@pytest.mark.parametrize(
    ("spec", "canary_weight", "top", "after"),
    [
        pytest.param({"http": [split()]}, 25, 100, {"http": [[75, 25]]}, id="out of 100"),
        pytest.param(
            {"http": [split()]}, 250, 1000, {"http": [[750, 250]]}, id="out of maxTrafficWeight 1000"
        ),
        pytest.param(
            {"tls": [tls(443, "a")], "tcp": [tcp(5432)]},
            30,
            100,
            {"tls": [[70, 30]], "tcp": [[70, 30]]},
            id="TLS and TCP routes",
        ),
        pytest.param(
            {"http": [split(), split(name="api")]},
            100,
            100,
            {"http": [[0, 100], [0, 100]]},
            id="every weighed route",
        ),
    ],
)
def test_weights_written_and_read_back(
    spec: dict[str, Any], canary_weight: int, top: int, after: dict[str, list[list[int]]]
) -> None:
    obj = vs(**spec)
    action = SetTraffic(canary_weight, "s", "c", max_weight=top)
    ops = virtual_service_patch(VS, obj, HOSTS, NONE, action, top)
    assert isinstance(ops, list)
    assert ops[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    new = applied(obj, ops)
    for kind, weights in after.items():
        assert [[d["weight"] for d in r["route"]] for r in new["spec"][kind]] == weights
    reading = read_virtual_service(VS, new, HOSTS, NONE)
    assert isinstance(reading, Reading)
    assert (reading.canary_weight, reading.stable_weight, reading.agree) == (
        canary_weight,
        top - canary_weight,
        True,
    )


def test_additional_subsets_keep_their_weight_and_the_stable_gets_the_rest() -> None:
    """Argo Rollouts' processRoutes: stable = max - canary - additional. The canary is capped at
    what the additional subsets leave, so even full promotion sums to the total (it once wrote
    100 + 10 and never verified)."""
    route = {
        "name": "primary",
        "route": [dest("web", 90, "stable"), dest("web", 0, "canary"), dest("web", 10, "preview")],
    }
    obj = vs(http=[route])
    for asked, canary_weight, stable in ((30, 30, 60), (95, 90, 0), (100, 90, 0)):
        ops = virtual_service_patch(VS, obj, SUBSETS, NONE, SetTraffic(asked, "s", "c"))
        assert isinstance(ops, list)
        new = applied(obj, ops)
        assert [d["weight"] for d in new["spec"]["http"][0]["route"]] == [stable, canary_weight, 10]
        reading = read_virtual_service(VS, new, SUBSETS, NONE)
        assert isinstance(reading, Reading)
        assert (reading.canary_weight, reading.stable_weight, reading.additional_weight) == (
            canary_weight,
            stable,
            10,
        )


def test_the_canary_is_capped_at_what_additional_subsets_leave() -> None:
    assert [effective_canary_weight(w, 100, 10) for w in (0, 30, 90, 95, 100)] == [0, 30, 90, 90, 90]
    assert effective_canary_weight(100, 100, 0) == 100
    assert effective_canary_weight(500, 1000, 0) == 500


def test_routes_that_disagree_do_not_read_as_in_place() -> None:
    reading = read_virtual_service(
        VS, vs(http=[split(70, 30)], tcp=[tcp(5432, stable=90, canary=10)]), HOSTS, NONE
    )
    assert isinstance(reading, Reading)
    assert reading.agree is False
    assert reading.routes == ("http[0]", "tcp[0]")


# --------------------------------------------------------------------------- managed routes
X_CANARY = HeaderRoute("canary-header", (("x-canary", "exact", "true"),))
GETS = MirrorRoute(
    "mirror",
    json.dumps(
        [{"method": {"exact": "GET"}, "path": {"prefix": "/api"}}], sort_keys=True, separators=(",", ":")
    ),
    50,
)


def test_mirror_and_header_routes_go_first_in_managed_routes_order() -> None:
    """Argo Rollouts' createMirrorRoute and orderRoutes: the mirror route carries the weighed
    route's destinations and weights, mirrors to the canary, and managed routes lead."""
    obj = vs(http=[split(name="primary")])
    ops = virtual_service_patch(VS, obj, HOSTS, MANAGED, SetTraffic(20, "s", "c", (X_CANARY,), (GETS,)))
    assert isinstance(ops, list)
    new = applied(obj, ops)
    http = new["spec"]["http"]
    assert [r["name"] for r in http] == ["canary-header", "mirror", "primary"]
    assert http[1] == {
        "name": "mirror",
        "match": [{"method": {"exact": "GET"}, "uri": {"prefix": "/api"}}],
        "route": [dest("web-stable", 80), dest("web-canary", 20)],
        "mirror": {"host": "web-canary"},
        "mirrorPercentage": {"value": 50},
    }
    reading = read_virtual_service(VS, new, HOSTS, MANAGED)
    assert isinstance(reading, Reading)
    assert reading.mirror_routes == (GETS,)
    assert reading.header_routes == ("canary-header",)
    # The next weight rewrites the mirror route's weights too; no mirror asked: it goes.
    again = applied(new, virtual_service_patch(VS, new, HOSTS, MANAGED, SetTraffic(50, "s", "c")))  # type: ignore[arg-type]
    assert [r["name"] for r in again["spec"]["http"]] == ["primary"]
    assert [d["weight"] for d in again["spec"]["http"][0]["route"]] == [50, 50]


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda r: r["route"][0].update(weight=100), id="its weights"),
        pytest.param(lambda r: r.update(mirror={"host": "web-stable"}), id="its mirror"),
        pytest.param(lambda r: r.update(mirrorPercentage={"value": 100}), id="its percentage"),
        pytest.param(lambda r: r["match"][0].pop("method"), id="its match"),
    ],
)
def test_a_mirror_route_edited_by_hand_reads_as_not_asked_for(edit: Any) -> None:
    obj = vs(http=[split(name="primary")])
    new = applied(obj, virtual_service_patch(VS, obj, HOSTS, MANAGED, SetTraffic(20, "s", "c", (), (GETS,))))  # type: ignore[arg-type]
    edit(new["spec"]["http"][0])
    reading = read_virtual_service(VS, new, HOSTS, MANAGED)
    assert isinstance(reading, Reading)
    assert reading.mirror_routes != (GETS,)


def test_mirror_routes_of_the_steps() -> None:
    doc = _rollout(
        {"virtualService": {"name": "web"}},
        steps=[
            {"setMirrorRoute": {"name": "mirror", "match": [{"method": {"exact": "GET"}}]}},
            {"setWeight": 10},
            {"setMirrorRoute": {"name": "mirror", "match": [{"path": {"prefix": "/api"}}], "percentage": 5}},
            {"setMirrorRoute": {"name": "mirror"}},
        ],
    )
    steps = Rollout.model_validate(doc).spec.strategy.canary.steps  # type: ignore[union-attr]
    assert mirror_routes_at(steps, 1) == (MirrorRoute("mirror", '[{"method":{"exact":"GET"}}]', 100),)
    assert mirror_routes_at(steps, 2) == (MirrorRoute("mirror", '[{"path":{"prefix":"/api"}}]', 5),)
    assert mirror_routes_at(steps, 3) == ()


# --------------------------------------------------------------------------- several VirtualServices
def _reading(canary: int, stable: int, **kw: Any) -> Reading:
    return Reading(canary, stable, 0, True, ("primary",), True, **kw)


@pytest.mark.parametrize(
    ("readings", "stable"),
    [
        pytest.param([_reading(30, 70), _reading(30, 70)], 70, id="all carry the weight"),
        pytest.param([_reading(30, 70), _reading(0, 100)], -1, id="one behind: not in place"),
        pytest.param(
            [_reading(30, 70, header_routes=("h",)), _reading(30, 70)], -1, id="header route on one only"
        ),
    ],
)
def test_several_virtual_services_are_in_place_only_together(readings: list[Reading], stable: int) -> None:
    state = combine([(Target("shop", f"vs{i}"), r) for i, r in enumerate(readings)], several=True)
    assert (state.canary_weight, state.stable_weight) == (30, stable)
    assert state.managed_routes == tuple(f"vs{i}/primary" for i in range(len(readings)))


def _rollout(istio: dict[str, Any], **canary: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "w", "image": "x"}]},
            },
            "strategy": {
                "canary": {
                    "stableService": "web-stable",
                    "canaryService": "web-canary",
                    "trafficRouting": {"managedRoutes": [{"name": "mirror"}], "istio": istio},
                    **canary,
                }
            },
        },
    }


def test_every_listed_virtual_service_is_a_target_and_wakes_the_rollout() -> None:
    doc = _rollout(
        {
            "virtualServices": [
                {"name": "web", "routes": ["primary"]},
                {"name": "edge/web-edge", "tcpRoutes": [{"port": 5432}]},
            ]
        }
    )
    targets = targets_of(Rollout.model_validate(doc))
    assert [(t.namespace, t.name, t.routes, t.tcp_routes, t.where) for t in targets] == [
        ("shop", "web", ("primary",), (), "trafficRouting.istio.virtualServices[0]"),
        ("edge", "web-edge", (), (IstioTCPRoute(port=5432),), "trafficRouting.istio.virtualServices[1]"),
    ]
    refs = rollout_refs(doc)
    assert {("virtualservices", "shop", "web"), ("virtualservices", "edge", "web-edge")} <= refs


@pytest.mark.parametrize(
    ("istio", "canary", "problem"),
    [
        pytest.param(
            {"virtualService": {"name": "web"}},
            {"steps": [{"setMirrorRoute": {"name": "other", "match": [{"method": {"exact": "GET"}}]}}]},
            "spec.strategy.canary.steps[0].setMirrorRoute.name: 'other' is not listed in "
            "trafficRouting.managedRoutes",
            id="mirror route not in managedRoutes",
        ),
        pytest.param(
            None,
            {"steps": [{"setMirrorRoute": {"name": "mirror", "match": [{"method": {"exact": "GET"}}]}}]},
            "spec.strategy.canary.steps[0].setMirrorRoute: needs trafficRouting.istio (only the Istio router "
            "mirrors traffic)",
            id="mirror route without Istio",
        ),
    ],
)
def test_mirror_route_problems(istio: dict[str, Any] | None, canary: dict[str, Any], problem: str) -> None:
    doc = _rollout(istio or {}, **canary)
    if istio is None:
        doc["spec"]["strategy"]["canary"]["trafficRouting"] = {
            "managedRoutes": [{"name": "mirror"}],
            "gatewayAPI": {"httpRoute": "web"},
        }
    assert problem in spec_problems(Rollout.model_validate(doc))


def test_max_traffic_weight_needs_a_router() -> None:
    doc = _rollout({"virtualService": {"name": "web"}})
    doc["spec"]["strategy"]["canary"]["trafficRouting"] = {"maxTrafficWeight": 1000}
    assert (
        "spec.strategy.canary.trafficRouting.maxTrafficWeight: needs a traffic router (istio or gatewayAPI)"
        in spec_problems(Rollout.model_validate(doc))
    )


# --------------------------------------------------------------------------- routes that cannot be weighed
PRIMARY = Target("shop", "web", routes=("primary",))


@pytest.mark.parametrize(
    ("target", "spec", "problem"),
    [
        pytest.param(
            PRIMARY,
            {"http": [{"name": "primary", "route": [*split(90, 0)["route"], dest("legacy", 10)]}]},
            "HTTP route primary of VirtualService web has a destination that is neither the stable nor the "
            "canary (host legacy (weight 10); hosts web-stable/web-canary): its weights would not sum to 100 "
            "(trafficRouting.istio.virtualService)",
            id="a third destination at weight 10 (110 before)",
        ),
        pytest.param(
            Target("shop", "web", tcp_routes=(IstioTCPRoute(port=5432),)),
            {"tcp": [{"match": [{"port": 5432}], "route": [*split()["route"], dest("legacy", 0)]}]},
            "TCP route tcp[0] of VirtualService web has a destination that is neither the stable nor the "
            "canary (host legacy (weight 0); hosts web-stable/web-canary): its weights would not sum to 100 "
            "(trafficRouting.istio.virtualService)",
            id="a third destination in a TCP route",
        ),
        pytest.param(
            VS,
            {"http": [{"route": [dest("web-stable", 50), dest("web-canary", 0), dest("web-stable", 50)]}]},
            "HTTP route http[0] of VirtualService web has 2 stable destinations: each would get the stable "
            "weight and the weights would not sum to 100 (trafficRouting.istio.virtualService)",
            id="the stable twice",
        ),
    ],
)
def test_a_weighed_route_whose_weights_cannot_sum_to_the_total_is_a_spec_problem(
    target: Target, spec: dict[str, Any], problem: str
) -> None:
    """Issue 12: InvalidSpec naming the route and the VirtualService; read and write refuse it
    alike, so the object is never patched."""
    obj = vs(**spec)
    found = read_virtual_service(target, obj, HOSTS, NONE)
    assert isinstance(found, SpecProblem)
    assert found == problem
    assert virtual_service_patch(target, obj, HOSTS, NONE, SetTraffic(25, "s", "c")) == problem


def test_an_unnamed_route_with_a_third_destination_is_not_weighed() -> None:
    """Without `routes`, only a route that is exactly the stable and the canary is weighed."""
    spec = {"http": [{"route": [*split()["route"], dest("legacy", 0)]}, split()]}
    assert managed_indexes(VS, spec, HOSTS, NONE) == {"http": [1], "tls": [], "tcp": []}


@pytest.mark.parametrize(
    ("step", "problem"),
    [
        pytest.param(
            {
                "setHeaderRoute": {
                    "name": "hdr",
                    "match": [{"headerName": "x", "headerValue": {"regex": "(["}}],
                }
            },
            "spec.strategy.canary.steps[0].setHeaderRoute.match[0].headerValue.regex: '([' is not an RE2 "
            "regular expression (missing ]: [)",
            id="header regex",
        ),
        pytest.param(
            {
                "setHeaderRoute": {
                    "name": "hdr",
                    "match": [
                        {"headerName": "x", "headerValue": {"exact": "a"}},
                        {"headerName": "y", "headerValue": {"regex": "(?<=a)b"}},
                    ],
                }
            },
            "spec.strategy.canary.steps[0].setHeaderRoute.match[1].headerValue.regex: '(?<=a)b' is not an "
            "RE2 regular expression (invalid perl operator: (?<=)",
            id="a Perl look-behind, not RE2",
        ),
        pytest.param(
            {"setMirrorRoute": {"name": "mirror", "match": [{"path": {"regex": "a{2,1}"}}]}},
            "spec.strategy.canary.steps[0].setMirrorRoute.match[0].path.regex: 'a{2,1}' is not an RE2 "
            "regular expression (invalid repetition size: {2,1})",
            id="mirror path regex",
        ),
    ],
)
def test_a_regex_that_re2_refuses_is_invalid_spec_naming_its_field(
    step: dict[str, Any], problem: str
) -> None:
    doc = _rollout({"virtualService": {"name": "web"}}, steps=[step])
    doc["spec"]["strategy"]["canary"]["trafficRouting"]["managedRoutes"] = [
        {"name": "hdr"},
        {"name": "mirror"},
    ]
    problems = spec_problems(Rollout.model_validate(doc))
    assert problem in problems


def test_an_re2_regex_is_accepted() -> None:
    step = {
        "setHeaderRoute": {
            "name": "hdr",
            "match": [{"headerName": "x", "headerValue": {"regex": "^(a|b)+$"}}],
        }
    }
    doc = _rollout({"virtualService": {"name": "web"}}, steps=[step])
    doc["spec"]["strategy"]["canary"]["trafficRouting"]["managedRoutes"] = [{"name": "hdr"}]
    assert spec_problems(Rollout.model_validate(doc)) == []


def test_a_route_that_cannot_be_weighed_is_invalid_spec_and_the_plan_moves_nothing() -> None:
    """The router's SpecProblem, read from the VirtualService, reaches the planner as InvalidSpec:
    no traffic write, no new ReplicaSet, the stable as it is."""
    from tests.unit.planner_fixtures import V1, canary_rollout, observed, rs
    from tidegate.core.model import CreateReplicaSet, RouterState
    from tidegate.core.planner import plan

    obj = vs(http=[{"name": "primary", "route": [*split(90, 0)["route"], dest("legacy", 10)]}])
    problem = read_virtual_service(Target("ns", "web", routes=("primary",)), obj, HOSTS, NONE)
    assert isinstance(problem, SpecProblem)
    router = RouterState(kind="istio", ok=False, problem=problem, invalid=True)
    r = canary_rollout(status={"stableRS": V1, "currentPodHash": V1})
    p = plan(observed(r, [rs("web:1", 4)], {"web-stable": V1, "web-canary": V1}, router=router))
    invalid = {c["type"]: c for c in p.status.wire()["conditions"]}["InvalidSpec"]
    assert invalid["status"] == "True" and problem in invalid["message"]
    assert not [a for a in p.actions if isinstance(a, SetTraffic | CreateReplicaSet)]
    assert p.status.phase == "Degraded"

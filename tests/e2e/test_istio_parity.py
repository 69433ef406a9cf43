"""Argo Rollouts' Istio fields on the sandbox: several VirtualServices, TLS and TCP routes,
maxTrafficWeight and setMirrorRoute, each under the zero-downtime watcher."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from tests.e2e.dsl import given
from tests.e2e.test_canary import HOST, canary
from tests.kube import Kube, wait_until

VS_KIND = "virtualservices.networking.istio.io"


def _vs(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name},
        "spec": {"hosts": [name], **spec},
    }


def _split(stable: int = 100, canary: int = 0, **route: Any) -> dict[str, Any]:
    return {
        **route,
        "route": [
            {"destination": {"host": "web-stable"}, "weight": stable},
            {"destination": {"host": "web-canary"}, "weight": canary},
        ],
    }


def _weights(kube: Kube, vs: str, kind: str = "http", index: int = 0) -> list[int]:
    route = kube.get(VS_KIND, vs)["spec"][kind][index]
    return [int(d.get("weight", 0)) for d in route["route"]]


def _istio(doc: dict[str, Any], istio: dict[str, Any], **routing: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["spec"]["strategy"]["canary"]["trafficRouting"] = {**routing, "istio": istio}
    return doc


def _events(kube: Kube, reason: str, after: str) -> list[dict[str, Any]]:
    return [
        e
        for e in kube.list("events")
        if e.get("reason") == reason and (e.get("lastTimestamp") or e.get("eventTime") or "") >= after
    ]


def test_several_virtual_services_carry_the_weight_and_a_hand_edit_of_the_second_is_put_back(
    kube: Kube,
) -> None:
    kube.apply(_vs("web-edge", http=[_split(name="edge")]))
    doc = _istio(
        canary([{"setWeight": 30}, {"pause": {}}]),
        {
            "virtualServices": [
                {"name": "web", "routes": ["primary"]},
                {"name": "web-edge", "routes": ["edge"]},
            ]
        },
    )
    s = given(kube).objects(*HOST).rollout(doc).watched()
    s.when().applied().then().phase("Healthy")
    t = s.when().image("registry.example/web:2.0").then().weight(30).phase("Paused")
    assert _weights(kube, "web") == [70, 30] and _weights(kube, "web-edge") == [70, 30]
    assert kube.status("web")["canary"]["managedRoutes"] == ["web/primary", "web-edge/edge"]
    began = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1))
    kube.kubectl(
        "patch",
        VS_KIND,
        "web-edge",
        "--type=json",
        "-p",
        json.dumps(
            [
                {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 100},
                {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 0},
            ]
        ),
    )
    wait_until(
        lambda: _weights(kube, "web-edge") == [70, 30], 5.0, interval=0.05, what="web-edge back at 70/30"
    )
    wait_until(
        lambda: _events(kube, "TrafficDriftCorrected", began), 30, what="a TrafficDriftCorrected Event"
    )
    assert _weights(kube, "web") == [70, 30], "the first VirtualService was left as it was"
    t.weight(30).phase("Paused")
    s.when().promoted().then().phase("Healthy").weight(0)
    assert _weights(kube, "web") == [100, 0] and _weights(kube, "web-edge") == [100, 0]
    s.finish()


def test_tls_and_tcp_route_weights_are_set_by_port_and_sni_hosts(kube: Kube) -> None:
    tls_route = {"match": [{"port": 443, "sniHosts": ["web.example"]}], **_split()}
    other_tls = {"match": [{"port": 443, "sniHosts": ["admin.example"]}], **_split()}
    tcp_route = {"match": [{"port": 5432}], **_split()}
    kube.apply(_vs("web-l4", tls=[other_tls, tls_route], tcp=[tcp_route]))
    istio = {
        "virtualService": {
            "name": "web-l4",
            "tlsRoutes": [{"port": 443, "sniHosts": ["web.example"]}],
            "tcpRoutes": [{"port": 5432}],
        }
    }
    doc = _istio(canary([{"setWeight": 40}, {"pause": {}}]), istio)
    s = given(kube).objects(*HOST).rollout(doc).watched()
    s.when().applied().then().phase("Healthy")
    s.when().image("registry.example/web:2.0").then().weight(40).phase("Paused")
    assert _weights(kube, "web-l4", "tls", 1) == [60, 40]
    assert _weights(kube, "web-l4", "tcp", 0) == [60, 40]
    assert _weights(kube, "web-l4", "tls", 0) == [100, 0], "a TLS route for other SNI hosts is the owner's"
    assert kube.status("web")["canary"]["managedRoutes"] == ["tls[1]", "tcp[0]"]
    s.when().promoted().then().phase("Healthy").weight(0)
    assert _weights(kube, "web-l4", "tls", 1) == [100, 0] and _weights(kube, "web-l4", "tcp", 0) == [100, 0]
    s.finish()


def test_max_traffic_weight_counts_the_weights_out_of_a_thousand(kube: Kube) -> None:
    kube.apply(_vs("web", http=[_split(1000, 0, name="primary")]))
    doc = _istio(
        canary([{"setWeight": 250}, {"pause": {}}]),
        {"virtualService": {"name": "web", "routes": ["primary"]}},
        maxTrafficWeight=1000,
    )
    s = given(kube).objects("examples/canary/services.yaml").rollout(doc).watched()
    s.when().applied().then().phase("Healthy")
    t = s.when().image("registry.example/web:2.0").then().weight(250).phase("Paused")
    assert _weights(kube, "web") == [750, 250]
    weights = kube.status("web")["canary"]["weights"]
    assert (weights["canary"]["weight"], weights["stable"]["weight"]) == (250, 750)
    # A quarter of the traffic: ceil(250 x 4 / 1000) = 1 canary pod beside the 4 stable ones.
    t.replica_sets({"registry.example/web:1.0": 4, "registry.example/web:2.0": 1})
    s.when().promoted().then().phase("Healthy").weight(0)
    assert _weights(kube, "web") == [1000, 0]
    s.finish()


def test_a_mirror_route_is_added_follows_the_weights_and_is_removed_on_abort(kube: Kube) -> None:
    mirror = {
        "name": "mirror",
        "match": [{"method": {"exact": "GET"}, "path": {"prefix": "/api"}}],
        "percentage": 25,
    }
    steps = [{"setWeight": 20}, {"setMirrorRoute": mirror}, {"pause": {}}, {"setWeight": 40}, {"pause": {}}]
    doc = _istio(
        canary(steps),
        {"virtualService": {"name": "web", "routes": ["primary"]}},
        managedRoutes=[{"name": "mirror"}],
    )
    s = given(kube).objects(*HOST).rollout(doc).watched()
    s.when().applied().then().phase("Healthy")
    t = s.when().image("registry.example/web:2.0").then().weight(20).step(2).phase("Paused")

    def http() -> list[dict[str, Any]]:
        routes: list[dict[str, Any]] = kube.get(VS_KIND, "web")["spec"]["http"]
        return routes

    assert [r.get("name") for r in http()] == ["mirror", "primary"], "the mirror route goes first"
    assert http()[0] == {
        "name": "mirror",
        "match": [{"method": {"exact": "GET"}, "uri": {"prefix": "/api"}}],
        "route": _split(80, 20)["route"],
        "mirror": {"host": "web-canary"},
        "mirrorPercentage": {"value": 25},
    }
    s.when().promoted()
    t.weight(40).step(4).phase("Paused")
    assert [d["weight"] for d in http()[0]["route"]] == [60, 40], "the mirror route follows the weight"
    s.when().aborted().then().phase("Degraded").weight(0)
    t.holds(lambda: [r.get("name") for r in http()] == ["primary"], "the mirror route removed on abort")
    assert _weights(kube, "web") == [100, 0]
    s.finish()

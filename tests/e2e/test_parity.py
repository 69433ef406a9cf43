"""Argo Rollouts parity: Rollouts written as Argo users write them behave as Argo's do."""

from __future__ import annotations

import copy
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.e2e.dsl import _load, given
from tests.kube import Kube, wait_until

HOST = "examples/canary/services.yaml", "examples/canary/virtualservice.yaml"


def basic(replicas: int, steps: list[dict[str, Any]], **canary: Any) -> dict[str, Any]:
    doc = copy.deepcopy(_load("examples/basic/rollout.yaml", "Rollout"))
    doc["spec"]["replicas"] = replicas
    doc["spec"]["strategy"]["canary"] = {"steps": steps, **canary}
    return doc


def pods_by_image(kube: Kube, name: str) -> dict[str, tuple[int, int]]:
    """{image: (spec replicas, available)} of the Rollout's ReplicaSets with pods."""
    out = {}
    for rs in kube.replica_sets(name):
        spec = rs["spec"]["replicas"]
        available = (rs.get("status") or {}).get("availableReplicas") or 0
        if spec or available:
            out[rs["spec"]["template"]["spec"]["containers"][0]["image"]] = (spec, available)
    return out


def test_a_one_replica_basic_canary_keeps_its_stable_pod_beside_the_canary(kube: Kube) -> None:
    """replicas 1 (Argo's default), setWeight 50, no router: the surge pod is the canary,
    the one stable pod stays until promotion (Argo's CalculateReplicaCountsForBasicCanary)."""
    s = given(kube).rollout(basic(1, [{"setWeight": 50}, {"pause": {}}])).watched()
    s.when().applied().then().phase("Healthy")
    t = s.when().image("registry.example/hello:2.0").then().phase("Paused")
    both = {"registry.example/hello:1.0": (1, 1), "registry.example/hello:2.0": (1, 1)}
    t.holds(lambda: pods_by_image(kube, "hello") == both, f"one pod of each version, {both}")
    t.when().promoted().then().phase("Healthy").replica_sets({"registry.example/hello:2.0": 1})
    s.finish()


def test_numbers_in_the_pod_template_reach_the_api_server_as_written(kube: Kube) -> None:
    """`cpu: 1` and `cpu: 0.001` are valid Quantities in a Deployment; they are in a Rollout."""
    doc = basic(2, [{"setWeight": 50}, {"pause": {"duration": "1s"}}])
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["resources"] = {"requests": {"cpu": 1, "memory": 64e6}, "limits": {"cpu": 2}}
    s = given(kube).rollout(doc)
    s.when().applied().then().phase("Healthy")
    rs = kube.replica_sets("hello")[0]
    assert rs["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "1"
    assert s.doc is not None
    s.doc["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = 0.001
    t = s.when().image("registry.example/hello:2.0").then().phase("Healthy", timeout=60)
    t.replica_sets({"registry.example/hello:2.0": 2}, timeout=60)


def test_abort_points_the_canary_service_back_at_the_stable_pods(kube: Kube) -> None:
    doc = copy.deepcopy(_load("examples/canary/rollout.yaml", "Rollout"))
    doc["spec"]["strategy"]["canary"]["steps"] = [{"setWeight": 30}, {"pause": {}}]
    s = given(kube).objects(*HOST).rollout(doc).watched()
    s.when().applied().then().phase("Healthy")
    t = s.when().image("registry.example/web:2.0").then().weight(30).phase("Paused")
    stable = kube.status("web")["stableRS"]
    t = t.when().aborted().then().weight(0).phase("Degraded")
    wait_until(
        lambda: (
            kube.get("services", "web-canary")["spec"]["selector"].get("rollouts-pod-template-hash") == stable
        ),
        30,
        what=f"the canary Service selecting the stable hash {stable}",
    )
    s.finish()


def test_a_template_the_api_server_refuses_is_an_invalid_spec_and_the_stable_keeps_serving(
    kube: Kube,
) -> None:
    doc = basic(2, [{"setWeight": 50}, {"pause": {}}])
    s = given(kube).rollout(doc)
    s.when().applied().then().phase("Healthy")
    assert s.doc is not None
    s.doc["spec"]["template"]["metadata"]["labels"]["team"] = "équipe"  # not a valid label value
    t = s.when().image("registry.example/hello:2.0").then()
    t.holds(
        lambda: any(
            c["type"] == "InvalidSpec"
            and c["status"] == "True"
            and "spec.template.labels" in c.get("message", "")
            for c in kube.status("hello").get("conditions") or []
        ),
        "an InvalidSpec condition naming spec.template.labels",
        timeout=60,
    )
    wait_until(
        lambda: any(e["reason"] == "InvalidSpec" for e in kube.list("events")),
        30,
        what="an InvalidSpec Event",
    )
    t.replica_sets({"registry.example/hello:1.0": 2})


def test_a_header_route_set_again_with_a_new_match_is_rewritten(kube: Kube) -> None:
    """Routes are compared by what they match, not by name only."""
    doc = copy.deepcopy(_load("examples/canary/rollout.yaml", "Rollout"))

    def header(value: str) -> dict[str, Any]:
        match = [{"headerName": "x-canary", "headerValue": {"exact": value}}]
        return {"setHeaderRoute": {"name": "canary-header", "match": match}}

    doc["spec"]["strategy"]["canary"]["steps"] = [
        {"setWeight": 10},
        header("alpha"),
        {"pause": {}},
        header("beta"),
        {"pause": {}},
    ]
    s = given(kube).objects(*HOST).rollout(doc).watched()
    s.when().applied().then().phase("Healthy")

    def match_of_header_route() -> Any:
        for route in kube.get("virtualservices.networking.istio.io", "web")["spec"]["http"]:
            if route.get("name") == "canary-header":
                return route["match"]
        return None

    t = s.when().image("registry.example/web:2.0").then().step(2).phase("Paused")
    t.holds(lambda: match_of_header_route() == [{"headers": {"x-canary": {"exact": "alpha"}}}], "match alpha")
    t = t.when().promoted().then().step(4).phase("Paused")
    t.holds(
        lambda: match_of_header_route() == [{"headers": {"x-canary": {"exact": "beta"}}}],
        "the header route rewritten to match beta",
        timeout=30,
    )
    s.finish()


def order_service(image: str = "registry.example/order-service:1.0") -> dict[str, Any]:
    """The seed's order-service Deployment, as its team runs it (trimmed to what kwok needs)."""
    labels = {"app": "order-service", "version": "v1"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "order-service", "labels": labels},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "order-service"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels, "annotations": {"prometheus.io/scrape": "true"}},
                "spec": {
                    "containers": [
                        {
                            "name": "order-service",
                            "image": image,
                            "ports": [{"name": "http", "containerPort": 3000}],
                            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
                        }
                    ]
                },
            },
        },
    }


def test_a_deployment_is_adopted_through_workload_ref_and_scaled_down_on_success(kube: Kube) -> None:
    """Argo Rollouts' workloadRef: the Rollout runs the Deployment's pod template, unchanged;
    scaleDown: onsuccess takes the Deployment to 0 once the Rollout is Healthy; an edit of
    the Deployment's template is a new revision of the Rollout."""
    kube.apply(order_service())
    wait_until(
        lambda: (kube.get("deployments", "order-service").get("status") or {}).get("availableReplicas") == 3,
        60,
        what="the Deployment's 3 pods available",
    )
    rollout = {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "order-service"},
        "spec": {
            "replicas": 3,
            # No selector: the Deployment's is used (Argo's examples/workload-ref shape).
            "workloadRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "order-service",
                "scaleDown": "onsuccess",
            },
            "strategy": {"canary": {"steps": [{"setWeight": 34}, {"pause": {}}]}},
        },
    }
    s = given(kube).rollout(rollout)
    t = s.when().applied().then().phase("Healthy", timeout=60)
    t.replica_sets({"registry.example/order-service:1.0": 3})
    wait_until(
        lambda: kube.get("deployments", "order-service")["spec"]["replicas"] == 0,
        30,
        what="the Deployment scaled to 0 once the Rollout is Healthy",
    )
    kube.patch(
        "deployments",
        "order-service",
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "order-service", "image": "registry.example/order-service:2.0"}
                        ]
                    }
                }
            }
        },
    )
    t.phase("Paused", timeout=60).holds(
        lambda: (
            {img: spec for img, (spec, _) in pods_by_image(kube, "order-service").items()}
            == {"registry.example/order-service:1.0": 2, "registry.example/order-service:2.0": 1}
        ),
        "the canary of the Deployment's new template beside the stable",
    )


def test_an_argo_field_tidegate_does_not_run_is_kept_and_refused_by_name(kube: Kube) -> None:
    """A router Tidegate does not drive is never pruned (whatever the client validates);
    the Rollout is InvalidSpec naming it, and the running version keeps all the traffic."""
    doc = copy.deepcopy(_load("examples/canary/rollout.yaml", "Rollout"))
    s = given(kube).objects(*HOST).rollout(doc).watched()
    s.when().applied().then().phase("Healthy")
    assert s.doc is not None
    s.doc["spec"]["strategy"]["canary"]["trafficRouting"]["nginx"] = {"stableIngress": "web"}
    t = s.when().image("registry.example/web:2.0").then()
    t.phase("Degraded").message_contains(
        "spec.strategy.canary.trafficRouting.nginx: not supported by Tidegate"
    )
    kept = kube.rollout("web")["spec"]["strategy"]["canary"]["trafficRouting"]
    assert kept["nginx"] == {"stableIngress": "web"}, "the field is stored as written"
    t.vs_weights("web", "primary", 100, 0).replica_sets({"registry.example/web:1.0": 4})
    assert any(c["type"] == "InvalidSpec" and c["status"] == "True" for c in kube.status("web")["conditions"])
    s.finish()


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"ok": 1}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_missing_analysis_template_holds_the_canary_at_zero_until_it_exists(kube: Kube) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        doc = copy.deepcopy(_load("examples/canary/rollout.yaml", "Rollout"))
        doc["spec"]["strategy"]["canary"]["steps"] = [
            {"setWeight": 20},
            {"analysis": {"templates": [{"templateName": "ready-check"}]}},
            {"setWeight": 60},
            {"pause": {}},
        ]
        s = given(kube).objects(*HOST).rollout(doc).watched()
        s.when().applied().then().phase("Healthy")
        t = s.when().image("registry.example/web:2.0").then()
        t.message_contains("ready-check").vs_weights("web", "primary", 100, 0)
        assert kube.status("web").get("analysisBlocked"), "status says why the canary has no traffic"
        kube.apply(
            {
                "apiVersion": "tidegate.io/v1alpha1",
                "kind": "AnalysisTemplate",
                "metadata": {"name": "ready-check"},
                "spec": {
                    "metrics": [
                        {
                            "name": "ok",
                            "count": 1,
                            "successCondition": "result == 1",
                            "provider": {
                                "web": {"url": f"http://127.0.0.1:{server.server_port}/", "jsonPath": "$.ok"}
                            },
                        }
                    ]
                },
            }
        )
        t.weight(60, timeout=60).phase("Paused").vs_weights("web", "primary", 40, 60)
        assert not kube.status("web").get("analysisBlocked")
        s.finish()
    finally:
        server.shutdown()
        server.server_close()


def test_ephemeral_metadata_moves_with_the_role_without_restarting_pods(kube: Kube) -> None:
    doc = copy.deepcopy(_load("examples/canary/rollout.yaml", "Rollout"))
    c = doc["spec"]["strategy"]["canary"]
    c["steps"] = [{"setWeight": 25}, {"pause": {}}]
    c["canaryMetadata"] = {"labels": {"role": "canary"}}
    c["stableMetadata"] = {"labels": {"role": "stable"}}
    s = given(kube).objects(*HOST).rollout(doc).watched()
    s.when().applied().then().phase("Healthy")

    def roles(image: str) -> dict[str, str | None]:
        return {
            p["metadata"]["name"]: (p["metadata"].get("labels") or {}).get("role")
            for p in kube.list("pods", "app=web")
            if p["spec"]["containers"][0]["image"] == image and not p["metadata"].get("deletionTimestamp")
        }

    t = s.when().image("registry.example/web:2.0").then().weight(25).phase("Paused")
    t.holds(
        lambda: set(roles("registry.example/web:2.0").values()) == {"canary"}, "canary pods labelled canary"
    )
    t.holds(
        lambda: set(roles("registry.example/web:1.0").values()) == {"stable"}, "stable pods labelled stable"
    )
    canary_pods = set(roles("registry.example/web:2.0"))
    t = t.when().promoted().then().phase("Healthy", timeout=60)
    t.holds(
        lambda: (
            set(roles("registry.example/web:2.0").values()) == {"stable"}
            and canary_pods <= set(roles("registry.example/web:2.0"))
        ),
        "the former canary pods, the same pods, labelled stable",
        timeout=30,
    )
    s.finish()

"""The demo app, its per-pod supervisor and the load generator.

First the pieces alone (a demoapp process; the pure routing and pod decisions), then the
whole on the real sandbox: ReplicaSets of annotated pods get processes, Prometheus
scrapes them with the pod's labels, the load follows a VirtualService's weights, and
scaling to zero takes the processes and the targets away.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.kube import Kube, wait_until
from tidegate.sandbox import Sandbox
from tidegate.sandbox.cluster import free_port
from tidegate.sandbox.loadgen import LOAD_ANNOTATION, Endpoint, _RoundRobin, plan_streams
from tidegate.sandbox.podprocs import (
    ANNOTATION_APP,
    ANNOTATION_ERROR_RATE,
    ANNOTATION_LATENCY_MS,
    demo_pod,
    merge_targets,
    target,
)
from tidegate.sandbox.prometheus import address, targets_file


# ------------------------------------------------------------------ demoapp alone
def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class _DemoApp:
    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tidegate.sandbox.demoapp", "--port", str(self.port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5)
        wait_until(lambda: self.client.get("/metrics").status_code == 200, 15, what="demoapp /metrics")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return _samples(self.client.get("/metrics").text)

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def demoapp() -> Iterator[type[_DemoApp]]:
    started: list[_DemoApp] = []

    class Started(_DemoApp):
        def __init__(self, *args: str) -> None:
            super().__init__(*args)
            started.append(self)

    yield Started
    for app in started:
        app.close()


def test_demoapp_answers_the_configured_error_rate_and_counts_it(demoapp: type[_DemoApp]) -> None:
    app = demoapp("--error-rate", "0.2", "--latency-ms", "5", "--no-sleep")
    codes = Counter(app.client.get(f"/any/path/{i}").status_code for i in range(200))
    assert codes == {200: 160, 500: 40}, "errors are spread evenly: exactly 20% of 200"
    samples = app.metrics()
    assert samples[("http_requests_total", (("code", "200"),))] == 160
    assert samples[("http_requests_total", (("code", "500"),))] == 40
    assert samples[("http_request_duration_seconds_count", ())] == 200
    assert samples[("http_request_duration_seconds_bucket", (("le", "+Inf"),))] == 200
    assert samples[("http_request_duration_seconds_bucket", (("le", "0.005"),))] == pytest.approx(100, abs=25)
    assert not [name for name, _labels in samples if name.endswith("_created")]


def test_demoapp_draws_random_errors_and_lognormal_latencies_and_sleeps_them(
    demoapp: type[_DemoApp],
) -> None:
    app = demoapp("--error-rate", "0.3", "--error-pattern", "random", "--seed", "1", "--latency-ms", "30")
    started = time.monotonic()
    answers = [app.client.get("/") for _ in range(150)]
    elapsed = time.monotonic() - started
    errors = sum(a.status_code == 500 for a in answers) / len(answers)
    assert 0.2 <= errors <= 0.4
    latencies = sorted(a.json()["latency_ms"] for a in answers)
    assert latencies[len(latencies) // 2] == pytest.approx(30, rel=0.15)
    assert elapsed >= 0.9 * sum(latencies) / 1000, "the handler waits the latency it records"


def test_demoapp_takes_its_configuration_from_the_environment() -> None:
    port = free_port()
    env = {**os.environ, "DEMO_PORT": str(port), "DEMO_ERROR_RATE": "1", "DEMO_LATENCY_MS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "tidegate.sandbox.demoapp"], env=env)
    try:
        answer = wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=2), 15, what="demoapp")
        assert answer.status_code == 500
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ------------------------------------------------------------ decisions, no I/O
def _pod(name: str, *, ready: bool = True, deleting: bool = False, **annotations: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "namespace": "shop",
        "name": name,
        "uid": f"uid-{name}",
        "labels": {"app": "web", "rollouts-pod-template-hash": "abc"},
        "annotations": {ANNOTATION_APP: "true", **annotations},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": str(ready)}]},
    }


def test_only_serving_annotated_pods_get_a_process_configured_by_annotations() -> None:
    pod = demo_pod(_pod("a", **{ANNOTATION_ERROR_RATE: "0.25", ANNOTATION_LATENCY_MS: "40"}))
    assert pod is not None
    assert (pod.key, pod.hash, pod.app, pod.error_rate, pod.latency_ms) == ("shop/a", "abc", "web", 0.25, 40)
    defaults = demo_pod(_pod("b"))
    assert defaults is not None and (defaults.error_rate, defaults.latency_ms) == (0.0, 20.0)
    assert demo_pod(_pod("c", ready=False)) is None
    assert demo_pod(_pod("d", deleting=True)) is None
    unannotated = _pod("e")
    del unannotated["metadata"]["annotations"][ANNOTATION_APP]
    assert demo_pod(unannotated) is None
    clamped = demo_pod(_pod("f", **{ANNOTATION_ERROR_RATE: "7", ANNOTATION_LATENCY_MS: "fast"}))
    assert clamped is not None and (clamped.error_rate, clamped.latency_ms) == (1.0, 20.0)


def test_targets_carry_the_pod_labels_and_others_entries_survive() -> None:
    pod = demo_pod(_pod("a"))
    assert pod is not None
    ours = target(pod, 4001)
    assert ours == {
        "targets": ["127.0.0.1:4001"],
        "labels": {
            "namespace": "shop",
            "pod": "a",
            "app": "web",
            "demo_pod": "true",
            "rollouts_pod_template_hash": "abc",
        },
    }
    theirs = {"targets": ["127.0.0.1:9999"], "labels": {"job_hint": "operator"}}
    stale = {"targets": ["127.0.0.1:4000"], "labels": {"demo_pod": "true", "namespace": "x", "pod": "y"}}
    assert merge_targets([theirs, stale], [ours]) == [theirs, ours]


def _svc(name: str, **selector: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "shop", "name": name}, "spec": {"selector": selector}}


def _vs(name: str, *routes: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"namespace": "shop", "name": name}, "spec": {"hosts": ["web"], "http": list(routes)}}


def _dest(host: str, weight: int | None = None, subset: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"destination": {"host": host}}
    if subset:
        d["destination"]["subset"] = subset
    if weight is not None:
        d["weight"] = weight
    return d


def _ep(pod: str, h: str, port: int, app: str = "web") -> Endpoint:
    return Endpoint("shop", pod, port, app, {"app": app, "rollouts-pod-template-hash": h})


WEB = [_ep("s-1", "s", 4001), _ep("s-2", "s", 4002), _ep("c-1", "c", 4003)]
SERVICES = [
    _svc("web", app="web"),
    _svc("web-stable", app="web", **{"rollouts-pod-template-hash": "s"}),
    _svc("web-canary", app="web", **{"rollouts-pod-template-hash": "c"}),
]


def _shares(stream: Any) -> dict[str, float]:
    return {e.pod: round(s, 6) for e, s in stream.shares}


def test_host_level_weights_split_over_the_pods_of_each_service_and_header_routes_are_ignored() -> None:
    header = {
        "name": "canary-header",
        "match": [{"headers": {"x-canary": {"exact": "true"}}}],
        "route": [_dest("web-canary")],
    }
    primary = {
        "name": "primary",
        "route": [_dest("web-stable", 80), _dest("web-canary.shop.svc.cluster.local", 20)],
    }
    [stream] = plan_streams(WEB, SERVICES, [_vs("web", header, primary)])
    assert stream.id == "shop/virtualservice/web"
    assert _shares(stream) == {"c-1": 0.2, "s-1": 0.4, "s-2": 0.4}
    assert stream.unroutable == 0


def test_subset_level_weights_use_the_destination_rule_labels() -> None:
    dr = {
        "metadata": {"namespace": "shop", "name": "web"},
        "spec": {
            "host": "web",
            "subsets": [
                {"name": "stable", "labels": {"rollouts-pod-template-hash": "s"}},
                {"name": "canary", "labels": {"rollouts-pod-template-hash": "c"}},
            ],
        },
    }
    primary = {"route": [_dest("web", 90, "stable"), _dest("web", 10, "canary")]}
    [stream] = plan_streams(WEB, SERVICES, [_vs("web", primary)], [dr])
    assert _shares(stream) == {"c-1": 0.1, "s-1": 0.45, "s-2": 0.45}


def test_weight_to_a_destination_without_pods_is_unroutable_and_apps_without_a_vs_spread_evenly() -> None:
    primary = {"route": [_dest("web-stable", 70), _dest("web-canary", 30)]}
    stable_only = [e for e in WEB if e.pod.startswith("s")] + [
        _ep("api-1", "x", 5001, "api"),
        _ep("api-2", "y", 5002, "api"),
    ]
    vs_stream, api = plan_streams(stable_only, SERVICES, [_vs("web", primary)])
    assert _shares(vs_stream) == {"s-1": 0.35, "s-2": 0.35}
    assert vs_stream.unroutable == pytest.approx(0.3)
    assert api.id == "shop/app/api" and _shares(api) == {"api-1": 0.5, "api-2": 0.5}


def test_the_first_virtual_service_by_name_claims_an_app() -> None:
    first = _vs("a-web", {"route": [_dest("web-stable")]})
    second = _vs("b-web", {"route": [_dest("web-canary")]})
    [stream] = plan_streams(WEB, SERVICES, [second, first])
    assert stream.id == "shop/virtualservice/a-web" and _shares(stream) == {"s-1": 0.5, "s-2": 0.5}


def test_an_annotated_service_carries_the_load_of_an_app_without_a_virtual_service() -> None:
    active = _svc("web-stable", app="web", **{"rollouts-pod-template-hash": "s"})
    active["metadata"]["annotations"] = {LOAD_ANNOTATION: "true"}
    [stream] = plan_streams(WEB, [active, SERVICES[2]])
    assert stream.id == "shop/service/web-stable" and _shares(stream) == {"s-1": 0.5, "s-2": 0.5}


def test_round_robin_keeps_exact_shares_over_short_windows() -> None:
    [stream] = plan_streams(
        WEB, SERVICES, [_vs("web", {"route": [_dest("web-stable", 80), _dest("web-canary", 20)]})]
    )
    rr = _RoundRobin(stream)
    picks = Counter(e.pod if e else None for e in (rr.pick() for _ in range(10)))
    assert picks == {"s-1": 4, "s-2": 4, "c-1": 2}


def _httproute(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"namespace": "shop", "name": name},
        "spec": {"rules": list(rules)},
    }


def test_httproute_weights_split_over_the_pods_and_header_rules_are_ignored() -> None:
    header = {
        "name": "canary-header",
        "matches": [{"headers": [{"name": "x-canary", "value": "true"}]}],
        "backendRefs": [{"name": "web-canary", "port": 80}],
    }
    primary = {
        "name": "primary",
        "backendRefs": [
            {"name": "web-stable", "port": 80, "weight": 95},
            {"name": "web-canary", "weight": 5},
        ],
    }
    [stream] = plan_streams(WEB, SERVICES, http_routes=[_httproute("web", header, primary)])
    assert (stream.id, stream.via) == ("shop/httproute/web", "HTTPRoute shop/web rule primary")
    assert _shares(stream) == {"c-1": 0.05, "s-1": 0.475, "s-2": 0.475}
    unweighted = {"backendRefs": [{"name": "web-stable"}, {"name": "web-canary"}]}
    [even] = plan_streams(WEB, SERVICES, http_routes=[_httproute("web", unweighted)])
    assert _shares(even) == {"c-1": 0.5, "s-1": 0.25, "s-2": 0.25}, "an unset weight is 1 (Gateway API)"


def test_a_virtual_service_claims_an_app_before_an_httproute() -> None:
    vs = _vs("web", {"route": [_dest("web-stable")]})
    route = _httproute("web", {"backendRefs": [{"name": "web-canary"}]})
    [stream] = plan_streams(WEB, SERVICES, [vs], http_routes=[route])
    assert stream.id == "shop/virtualservice/web"


def test_the_reader_lists_httproutes_from_the_api_server(kube: Kube) -> None:
    from kubernetes import config

    from tidegate.sandbox.loadgen import KubeRoutingReader

    route = _httproute("web", {"backendRefs": [{"name": "web-stable", "port": 80, "weight": 70}]})
    route["metadata"]["namespace"] = kube.namespace
    kube.apply(route)
    reader = KubeRoutingReader(config.new_client_from_config(config_file=str(kube.sandbox.kubeconfig)))
    _services, _vss, _drs, routes = reader.read([kube.namespace])
    assert [(r["metadata"]["name"], r["spec"]["rules"][0]["backendRefs"][0]["weight"]) for r in routes] == [
        ("web", 70)
    ]


# ---------------------------------------------------------------- on the sandbox
HASH = "rollouts-pod-template-hash"
STABLE, CANARY = "s7d8f9", "c4b5a6"
EXPECTED_P95_MS = {STABLE: 20 * math.exp(1.645 * 0.3), CANARY: 40 * math.exp(1.645 * 0.3)}


def _replica_set(name: str, pod_hash: str, replicas: int, error_rate: str, latency_ms: str) -> dict[str, Any]:
    labels = {"app": "web", HASH: pod_hash}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        ANNOTATION_APP: "true",
                        ANNOTATION_ERROR_RATE: error_rate,
                        ANNOTATION_LATENCY_MS: latency_ms,
                    },
                },
                "spec": {"containers": [{"name": "app", "image": "example/web:1"}]},
            },
        },
    }


def _service(name: str, pod_hash: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": "web", HASH: pod_hash}, "ports": [{"port": 80, "targetPort": 8080}]},
    }


def _virtual_service(stable: int, canary: int) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "web"},
        "spec": {
            "hosts": ["web"],
            "http": [
                {
                    "name": "primary",
                    "route": [
                        {"destination": {"host": "web-stable"}, "weight": stable},
                        {"destination": {"host": "web-canary"}, "weight": canary},
                    ],
                }
            ],
        },
    }


class _Prom:
    def __init__(self, sandbox: Sandbox) -> None:
        self.url = address(sandbox)

    def query(self, promql: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10).json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def by_hash(self, promql: str) -> dict[str, float]:
        return {
            r["metric"].get("rollouts_pod_template_hash", ""): float(r["value"][1])
            for r in self.query(promql)
        }

    def active_targets(self, namespace: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/targets", params={"state": "active"}, timeout=10).json()
        return [t for t in body["data"]["activeTargets"] if t["labels"].get("namespace") == namespace]


def _registry(sandbox: Sandbox, namespace: str) -> dict[str, dict[str, Any]]:
    path = sandbox.directory / "podprocs.json"
    pods: dict[str, dict[str, Any]] = json.loads(path.read_text())["pods"] if path.exists() else {}
    return {k: v for k, v in pods.items() if v["namespace"] == namespace}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def _success_rate(ns: str, h: str) -> str:
    sel = f'namespace="{ns}",rollouts_pod_template_hash="{h}"'
    ok = f'sum(rate(http_requests_total{{{sel},code!~"5.."}}[30s]))'
    return f"{ok} / sum(rate(http_requests_total{{{sel}}}[30s]))"


def _p95(ns: str, h: str) -> str:
    sel = f'namespace="{ns}",rollouts_pod_template_hash="{h}"'
    return f"histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{{{sel}}}[30s])))"


def _canary_share(prom: _Prom, ns: str, window: str) -> float | None:
    rates = prom.by_hash(
        f'sum by (rollouts_pod_template_hash) (rate(http_requests_total{{namespace="{ns}"}}[{window}]))'
    )
    total = sum(rates.values())
    return rates.get(CANARY, 0.0) / total if total > 0 else None


@pytest.mark.sandbox
def test_demo_pods_get_processes_scraped_by_prometheus_with_load_split_by_the_virtual_service(
    sandbox: Sandbox, bare_kube: Kube
) -> None:
    ns = bare_kube.namespace
    prom = _Prom(sandbox)
    bare_kube.apply(
        [
            _service("web-stable", STABLE),
            _service("web-canary", CANARY),
            _virtual_service(80, 20),
            _replica_set("web-stable", STABLE, 2, "0", "20"),
            _replica_set("web-canary", CANARY, 1, "0.2", "40"),
        ]
    )
    # The ReplicaSet controller creates the pods a moment later: wait for all three, Ready.
    wait_until(
        lambda: (
            sum(
                1
                for p in bare_kube.list("pods")
                if any(
                    c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])
                )
            )
            == 3
        ),
        60,
        what="3 demo pods Ready",
    )
    ready_at = time.monotonic()

    # One process per Ready pod, recorded with its hash, answering on 127.0.0.1.
    def three_processes() -> dict[str, dict[str, Any]] | None:
        found = _registry(sandbox, ns)
        return found if len(found) == 3 else None

    registry = wait_until(three_processes, 30, what="3 demo processes")
    assert Counter(e["hash"] for e in registry.values()) == {STABLE: 2, CANARY: 1}
    for entry in registry.values():
        assert _alive(entry["pid"])
        assert entry["app"] == "web" and entry["labels"][HASH] == entry["hash"]
        assert httpx.get(f"http://127.0.0.1:{entry['port']}/metrics", timeout=5).status_code == 200

    # The analysis queries answer with the configured behaviour, soon after the pods are Ready.
    def analysis_answers() -> dict[str, float] | None:
        got = {
            "stable_success": prom.value(_success_rate(ns, STABLE)),
            "canary_success": prom.value(_success_rate(ns, CANARY)),
            "stable_p95_ms": (prom.value(_p95(ns, STABLE)) or math.nan) * 1000,
            "canary_p95_ms": (prom.value(_p95(ns, CANARY)) or math.nan) * 1000,
        }
        if any(v is None or math.isnan(v) for v in got.values()):
            return None
        return {k: float(v) for k, v in got.items() if v is not None}

    answers = wait_until(analysis_answers, 30, interval=0.5, what="success rate and p95 per hash")
    first_answer = time.monotonic() - ready_at
    print(f"\nfirst answers {first_answer:.1f}s after the pods were Ready: {answers}")
    assert first_answer < 20

    def settled() -> dict[str, float] | None:
        got = analysis_answers()
        if got is None:
            return None
        ok = (
            got["stable_success"] == 1.0
            and abs(got["canary_success"] - 0.8) <= 0.05
            and abs(got["stable_p95_ms"] / EXPECTED_P95_MS[STABLE] - 1) <= 0.25
            and abs(got["canary_p95_ms"] / EXPECTED_P95_MS[CANARY] - 1) <= 0.25
        )
        return got if ok else None

    settled_answers = wait_until(settled, 30, interval=1, what=f"expected answers (last: {answers})")
    print(f"expected answers {time.monotonic() - ready_at:.1f}s after Ready: {settled_answers}")

    # The share of requests per hash follows the VirtualService, and follows a change of it.
    wait_until(
        lambda: (s := _canary_share(prom, ns, "10s")) is not None and abs(s - 0.2) <= 0.04,
        30,
        what="a canary share of 20%",
    )
    bare_kube.apply(_virtual_service(50, 50))
    changed = time.monotonic()
    wait_until(
        lambda: (s := _canary_share(prom, ns, "5s")) is not None and abs(s - 0.5) <= 0.06,
        30,
        what="a canary share of 50% after the weights changed",
    )
    print(f"share followed the new weights in {time.monotonic() - changed:.1f}s")
    status = json.loads((sandbox.directory / "loadgen.json").read_text())
    stream = status["streams"][f"{ns}/virtualservice/web"]
    assert stream["failed"] == 0 and stream["unroutable"] == 0, stream

    # A changed annotation gives the pod a new process that behaves accordingly.
    stable_key, stable_entry = next((k, e) for k, e in registry.items() if e["hash"] == STABLE)
    bare_kube.kubectl("annotate", "pod", stable_entry["pod"], f"{ANNOTATION_ERROR_RATE}=0.5", "--overwrite")
    wait_until(
        lambda: (e := _registry(sandbox, ns).get(stable_key)) and e["error_rate"] == 0.5,
        15,
        what="a new process for the re-annotated pod",
    )
    wait_until(lambda: not _alive(stable_entry["pid"]), 15, what="the old process to exit")

    # Scaling to zero stops the processes and removes their targets.
    canary_pids = [e["pid"] for e in registry.values() if e["hash"] == CANARY]
    bare_kube.kubectl("scale", "replicaset/web-canary", "--replicas=0")
    wait_until(
        lambda: [e for e in _registry(sandbox, ns).values() if e["hash"] == CANARY] == [],
        30,
        what="the canary's process leaving the registry",
    )
    wait_until(lambda: not any(_alive(pid) for pid in canary_pids), 15, what="the canary's process to exit")
    listed = json.loads(targets_file(sandbox).read_text())
    assert {
        t["labels"].get("rollouts_pod_template_hash") for t in listed if t["labels"].get("namespace") == ns
    } == {STABLE}
    wait_until(
        lambda: {t["labels"].get("rollouts_pod_template_hash") for t in prom.active_targets(ns)} == {STABLE},
        30,
        what="Prometheus dropping the canary's target",
    )
    bare_kube.kubectl("scale", "replicaset/web-stable", "--replicas=0")
    wait_until(lambda: _registry(sandbox, ns) == {}, 30, what="no processes left in the namespace")
    wait_until(lambda: prom.active_targets(ns) == [], 30, what="no targets left in the namespace")

"""Hostile input on the sandbox: what a Rollout or AnalysisTemplate author cannot make the
operator do (README, "Security").

- Another namespace's traffic: a Rollout naming `victim/web` is InvalidSpec naming the field,
  and the victim's VirtualService is never written (its resourceVersion does not move), until
  the VirtualService itself consents; then the canary runs through it.
- Outbound requests: web metrics pointed at the API server or a metadata address are refused
  (Error, the rollout aborted), nothing of an answer reaches status.
- An answer of 20 MiB and a condition cubic in the result: measurement Errors with a clear
  message, while the operator's /healthz answers every probe within the chart's liveness
  timeout and its RSS stays under the chart's memory limit.

The operator here runs with the sandbox's outbound policy (loopback named in its allow list,
`tidegate.sandbox.OUTBOUND_ENV`), so the test's own servers on 127.0.0.1 are reachable; the
chart's default refuses loopback too (`tests/integration/test_outbound.py`).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from bench.hostile import rss_bytes

from tests.kube import Kube, OperatorProcess, new_namespace, wait_until
from tidegate.core.isolation import CONSENT_ANNOTATION
from tidegate.sandbox import Sandbox

pytestmark = pytest.mark.sandbox

MiB = 1024 * 1024
LIVENESS_TIMEOUT = 5.0
"""The chart's livenessProbe timeoutSeconds: a probe slower than this is a failed probe."""
MEMORY_LIMIT = 512 * MiB
"""The chart's memory limit (resources.limits.memory)."""
FIELD = "spec.strategy.canary.trafficRouting.istio.virtualService.name"


def services(kube: Kube) -> None:
    kube.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name},
                "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]},
            }
            for name in ("web-stable", "web-canary")
        ]
    )


def virtual_service(
    namespace: str, hosts_of: str | None = None, consent: str | None = None
) -> dict[str, Any]:
    """`web` in `namespace`, 100/0 between web-stable and web-canary (of `hosts_of`, by FQDN)."""

    def host(name: str) -> str:
        return f"{name}.{hosts_of}.svc.cluster.local" if hosts_of else name

    metadata: dict[str, Any] = {"name": "web", "namespace": namespace}
    if consent is not None:
        metadata["annotations"] = {CONSENT_ANNOTATION: consent}
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": metadata,
        "spec": {
            "hosts": ["web"],
            "http": [
                {
                    "name": "primary",
                    "route": [
                        {"destination": {"host": host("web-stable")}, "weight": 100},
                        {"destination": {"host": host("web-canary")}, "weight": 0},
                    ],
                }
            ],
        },
    }


def rollout(
    image: str = "registry.example/web:1.0", routing: dict[str, Any] | None = None, **canary: Any
) -> dict[str, Any]:
    strategy: dict[str, Any] = {"steps": [{"setWeight": 25}, {"pause": {}}], **canary}
    if routing is not None:
        strategy |= {
            "stableService": "web-stable",
            "canaryService": "web-canary",
            "scaleDownDelaySeconds": 5,
            "trafficRouting": routing,
        }
    return {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]},
            },
            "strategy": {"canary": strategy},
        },
    }


def weights(vs: dict[str, Any]) -> list[int]:
    return [int(d.get("weight", 0)) for d in vs["spec"]["http"][0]["route"]]


def condition(kube: Kube, name: str, kind: str) -> dict[str, Any] | None:
    st = kube.status(name)
    return next((c for c in st.get("conditions") or [] if c.get("type") == kind), None)


def seen_generation(kube: Kube, name: str) -> bool:
    r = kube.rollout(name)
    return (r.get("status") or {}).get("observedGeneration") == r["metadata"]["generation"]


@pytest.fixture
def victim(sandbox: Sandbox) -> Iterator[Kube]:
    namespace = new_namespace(sandbox, "victim")
    try:
        yield Kube(sandbox, namespace)
    finally:
        sandbox.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# --- another namespace's traffic ------------------------------------------------------------


def test_a_rollout_cannot_move_another_namespaces_traffic_until_that_object_consents(
    kube: Kube, victim: Kube
) -> None:
    victim.apply(virtual_service(victim.namespace))
    before = victim.get("virtualservices.networking.istio.io", "web")
    services(kube)
    attack = rollout(routing={"istio": {"virtualService": {"name": f"{victim.namespace}/web"}}})
    kube.apply(attack)

    def refused() -> dict[str, Any] | None:
        invalid = condition(kube, "web", "InvalidSpec")
        ok = invalid and invalid.get("status") == "True" and seen_generation(kube, "web")
        return invalid if ok else None

    invalid = wait_until(refused, 60, what=f"InvalidSpec on the attacker (status: {kube.status('web')})")
    assert invalid["message"].startswith(
        f"{FIELD}: VirtualService {victim.namespace}/web is in another namespace"
    ), invalid["message"]
    assert kube.status("web")["phase"] == "Degraded"
    events = kube.list("events")
    assert any(e.get("type") == "Warning" and FIELD in (e.get("message") or "") for e in events), [
        (e.get("reason"), e.get("message")) for e in events
    ]
    # A new revision too: the operator has seen it and decided; the victim's object never moved.
    attack["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example/web:2.0"
    kube.apply(attack)
    wait_until(lambda: seen_generation(kube, "web") and refused(), 60, what="the new generation refused")
    after = victim.get("virtualservices.networking.istio.io", "web")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], "written to"
    assert weights(after) == [100, 0]
    assert kube.list("replicasets", "rollout.tidegate.io/name=web") == [], "nothing runs under a refused spec"


def test_the_consent_path_a_virtual_service_of_another_namespace_that_admits_the_rollout(
    kube: Kube, victim: Kube
) -> None:
    # The VirtualService lives in a shared namespace and routes to the Rollout's Services by FQDN.
    victim.apply(virtual_service(victim.namespace, hosts_of=kube.namespace))
    services(kube)
    doc = rollout(
        routing={"istio": {"virtualService": {"name": f"{victim.namespace}/web", "routes": ["primary"]}}}
    )
    kube.apply(doc)
    wait_until(
        lambda: (condition(kube, "web", "InvalidSpec") or {}).get("status") == "True",
        60,
        what="InvalidSpec before the consent",
    )
    # The owner of the VirtualService admits this one Rollout: its edit wakes the Rollout.
    victim.kubectl(
        "annotate", "virtualservices.networking.istio.io", "web", f"{CONSENT_ANNOTATION}={kube.namespace}/web"
    )
    kube.wait_phase("web", "Healthy", timeout=90)
    doc["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example/web:2.0"
    kube.apply(doc)

    def at_25() -> bool:
        return weights(victim.get("virtualservices.networking.istio.io", "web")) == [75, 25]

    wait_until(at_25, 90, what=f"25% in the consenting VirtualService (status: {kube.status('web')})")
    assert (kube.status("web").get("canary") or {}).get("weights", {}).get("verified") is True


def test_argos_gateway_api_plugin_form_is_refused_for_another_namespace(kube: Kube, victim: Kube) -> None:
    victim.apply(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web"},
            "spec": {
                "parentRefs": [{"name": "platform"}],
                "rules": [
                    {
                        "name": "primary",
                        "backendRefs": [
                            {"name": "web-stable", "port": 80, "weight": 100},
                            {"name": "web-canary", "port": 80, "weight": 0},
                        ],
                    }
                ],
            },
        }
    )
    before = victim.get("httproutes.gateway.networking.k8s.io", "web")
    services(kube)
    plugin = {"plugins": {"argoproj-labs/gatewayAPI": {"httpRoute": "web", "namespace": victim.namespace}}}
    kube.apply(rollout(routing=plugin))
    field_name = "spec.strategy.canary.trafficRouting.plugins.argoproj-labs/gatewayAPI.namespace"

    def refused() -> str | None:
        invalid = condition(kube, "web", "InvalidSpec") or {}
        message = str(invalid.get("message") or "")
        return message if invalid.get("status") == "True" and seen_generation(kube, "web") else None

    message = wait_until(refused, 60, what=f"InvalidSpec (status: {kube.status('web')})")
    assert message.startswith(f"{field_name}: HTTPRoute {victim.namespace}/web is in another namespace"), (
        message
    )
    after = victim.get("httproutes.gateway.networking.k8s.io", "web")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


# --- analysis: outbound requests, big answers, costly conditions ------------------------------


@dataclass
class Endpoint:
    url: str
    hits: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.endpoint.hits.append(self.path)
        try:
            if self.path.startswith("/big"):  # 20 MiB of JSON numbers, with no declared length
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                chunk = b"1," * (MiB // 2)
                self.wfile.write(b"[")
                for _ in range(20):
                    self.wfile.write(chunk)
                self.wfile.write(b"1]")
            else:  # /list: 60 numbers
                body = json.dumps(list(range(60))).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    endpoint: Endpoint


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.endpoint = Endpoint(f"http://127.0.0.1:{server.server_port}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.endpoint
    finally:
        server.shutdown()


def template(kube: Kube, url: str, condition_text: str = "true", json_path: str = "$") -> None:
    kube.apply(
        {
            "apiVersion": "tidegate.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "hostile"},
            "spec": {
                "metrics": [
                    {
                        "name": "hostile",
                        "successCondition": condition_text,
                        "consecutiveErrorLimit": 0,
                        "provider": {"web": {"url": url, "jsonPath": json_path, "timeoutSeconds": 5}},
                    }
                ]
            },
        }
    )


def analysed(kube: Kube) -> dict[str, Any]:
    """A Rollout whose second revision runs the `hostile` analysis at its first step."""
    doc = rollout(steps=[{"setWeight": 50}, {"analysis": {"templates": [{"templateName": "hostile"}]}}])
    kube.apply(doc)
    kube.wait_phase("web", "Healthy", timeout=60)
    doc["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example/web:2.0"
    kube.apply(doc)
    return doc


def measured_error(kube: Kube, timeout: float = 90) -> str:
    def error() -> str | None:
        for run in kube.list("analysisruns.tidegate.io"):
            for result in (run.get("status") or {}).get("metricResults") or []:
                for m in result.get("measurements") or []:
                    if m.get("phase") == "Error":
                        return str(m.get("message"))
        return None

    return wait_until(
        error, timeout, what=f"an Error measurement (runs: {kube.list('analysisruns.tidegate.io')})"
    )


def assert_aborted_without_the_answer(kube: Kube, text: str) -> None:
    st = kube.wait_phase("web", "Degraded", timeout=60)
    assert st.get("abort") is True, st
    assert text in str(st.get("message")), st.get("message")


@dataclass
class Probe:
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)


@contextmanager
def probing(operator: OperatorProcess) -> Iterator[Probe]:
    """Probe /healthz as the kubelet does (timeout: the chart's) and sample RSS, meanwhile."""
    probe, stop = Probe(), threading.Event()
    assert operator.proc is not None
    pid = operator.proc.pid

    def run() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                url = f"http://127.0.0.1:{operator.metrics_port}/healthz"
                with urllib.request.urlopen(url, timeout=LIVENESS_TIMEOUT) as answer:
                    answer.read()
                probe.latencies.append(time.monotonic() - started)
            except Exception as error:
                probe.failures.append(f"{type(error).__name__}: {error}")
            probe.rss.append(rss_bytes(pid))
            stop.wait(0.25)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield probe
    finally:
        stop.set()
        thread.join(timeout=LIVENESS_TIMEOUT + 1)


def test_a_web_metric_aimed_at_the_api_server_is_refused_and_its_answer_is_nowhere(
    kube: Kube, sandbox: Sandbox
) -> None:
    api = f"https://127.0.0.1:{sandbox.state()['ports']['apiserver']}"
    template(kube, f"{api}/version", json_path="$.gitVersion")
    analysed(kube)
    message = measured_error(kube)
    assert (
        "refused by the operator's outbound policy" in message and "is the Kubernetes API server" in message
    )
    assert_aborted_without_the_answer(kube, "is the Kubernetes API server")
    statuses = json.dumps([run.get("status") for run in kube.list("analysisruns.tidegate.io")])
    assert "v1.35" not in statuses and "gitCommit" not in statuses, "the API server's answer is nowhere"


def test_a_web_metric_aimed_at_the_metadata_address_is_refused(kube: Kube) -> None:
    template(kube, "http://169.254.169.254/latest/meta-data/iam/security-credentials/")
    analysed(kube)
    message = measured_error(kube)
    assert "169.254.169.254 is refused: a link-local address" in message, message
    assert_aborted_without_the_answer(kube, "169.254.169.254")


def test_a_20_mib_answer_is_an_error_while_the_operator_stays_responsive_and_small(
    kube: Kube, operator: OperatorProcess, endpoint: Endpoint
) -> None:
    template(kube, f"{endpoint.url}/big", json_path="$[0]")
    with probing(operator) as probe:
        analysed(kube)
        message = measured_error(kube)
    assert "the answer is larger than the 1048576-byte cap" in message, message
    assert_aborted_without_the_answer(kube, "1048576-byte cap")
    assert probe.latencies and not probe.failures, probe.failures
    assert max(probe.rss) < MEMORY_LIMIT, f"RSS {max(probe.rss) / MiB:.0f} MiB"
    print(
        f"20 MiB answer: {len(probe.latencies)} probes, slowest {max(probe.latencies) * 1000:.0f} ms; "
        f"RSS up to {max(probe.rss) / MiB:.0f} MiB"
    )


def test_a_condition_cubic_in_the_result_is_an_error_while_healthz_answers(
    kube: Kube, operator: OperatorProcess, endpoint: Endpoint
) -> None:
    template(
        kube, f"{endpoint.url}/list", "result.map(a, result.map(b, result.map(c, a + b + c))).size() > 0"
    )
    with probing(operator) as probe:
        analysed(kube)
        message = measured_error(kube)
    assert "stopped: it ran past its" in message and "budget" in message, message
    assert "the result has 60 elements" in message
    assert_aborted_without_the_answer(kube, "budget")
    assert probe.latencies and not probe.failures, probe.failures
    print(f"cubic condition: {len(probe.latencies)} probes, slowest {max(probe.latencies) * 1000:.0f} ms")

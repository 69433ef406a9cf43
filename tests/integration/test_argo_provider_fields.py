"""Argo Rollouts' provider fields against real servers: Prometheus `headers`, `insecure`,
`authentication.basicAuth` / `oauth2` and web `jsonBody` / `insecure` against a local HTTP(S)
server that answers as the Prometheus API does and records what it was sent; `rangeQuery`
against a real Prometheus. Secrets reach the templates through `{{args.NAME}}`, as in Argo."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_client import CollectorRegistry, Gauge

from tests.integration._prometheus import PrometheusServer, running_prometheus, serve_exporter
from tests.kube import wait_until
from tidegate.api.analysis import Metric
from tidegate.metrics import MappingSecretReader, PrometheusMetricProvider, ProviderResult, WebMetricProvider
from tidegate.sandbox.certs import write_pki

CLIENT_SECRET = "cl13nt-s3cret-do-not-leak"
PASSWORD = "pa55-do-not-leak"
TOKEN = "t0ken-from-the-endpoint"
NO_SECRETS = MappingSecretReader({})


@dataclass
class Recorder:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, document: Any, status: int = 200) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        parts = urlsplit(self.path)
        seen = {
            "method": self.command,
            "path": parts.path,
            "headers": dict(self.headers.items()),
            "body": body,
        }
        self.server.record.requests.append(seen)
        if parts.path == "/token":
            expected = "Basic " + base64.b64encode(f"rollouts:{CLIENT_SECRET}".encode()).decode()
            form = parse_qs(body)
            if self.headers.get("Authorization") != expected or form.get("grant_type") != [
                "client_credentials"
            ]:
                self._json({"error": "invalid_client"}, status=401)
            else:
                self._json({"access_token": TOKEN, "token_type": "Bearer", "expires_in": 60})
        elif parts.path == "/api/v1/query":
            self._json(
                {
                    "status": "success",
                    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "1"]}]},
                }
            )
        elif parts.path == "/echo":
            self._json({"got": json.loads(body) if body else None})
        else:
            self._json({"error": "not found"}, status=404)

    do_GET = do_POST = do_PUT = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    record: Recorder


def _serve(tls: Path | None = None) -> Iterator[Recorder]:
    server = _Server(("127.0.0.1", 0), _Handler)
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls / "apiserver.crt", tls / "apiserver.key")
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    server.record = Recorder(url=f"{scheme}://127.0.0.1:{server.server_port}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.record
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def http() -> Iterator[Recorder]:
    yield from _serve()


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorder]:
    """The same server over TLS, with a certificate no client trusts (a private CA)."""
    pki = tmp_path_factory.mktemp("pki")
    write_pki(pki)
    yield from _serve(pki)


def prom(address: str, **fields: Any) -> Metric:
    return Metric.model_validate(
        {"name": "m", "provider": {"prometheus": {"address": address, "query": "up", **fields}}}
    )


def measure(provider: Any, metric: Metric, args: dict[str, str] | None = None) -> ProviderResult:
    result: ProviderResult = asyncio.run(provider.measure(metric, args or {}, NO_SECRETS))
    return result


def last(recorder: Recorder, path: str) -> dict[str, Any]:
    return next(r for r in reversed(recorder.requests) if r["path"] == path)


def test_prometheus_headers_are_sent_with_arguments_replaced(http: Recorder) -> None:
    metric = prom(
        http.url, headers=[{"key": "X-Scope-OrgID", "value": "{{args.tenant}}"}, {"key": "X-A", "value": "b"}]
    )
    result = measure(PrometheusMetricProvider(), metric, {"tenant": "team-7"})
    assert (result.error, result.value) == (None, [1.0])
    headers = last(http, "/api/v1/query")["headers"]
    assert (headers["X-Scope-OrgID"], headers["X-A"]) == ("team-7", "b")


def test_prometheus_basic_auth_from_arguments(http: Recorder) -> None:
    metric = prom(
        http.url, authentication={"basicAuth": {"username": "grafana", "password": "{{args.password}}"}}
    )
    result = measure(PrometheusMetricProvider(), metric, {"password": PASSWORD})
    assert result.error is None
    expected = "Basic " + base64.b64encode(f"grafana:{PASSWORD}".encode()).decode()
    assert last(http, "/api/v1/query")["headers"]["Authorization"] == expected
    # Argo's NewPrometheusAPI: both are mandatory.
    half = prom(http.url, authentication={"basicAuth": {"username": "grafana"}})
    assert "basic auth setup: password" in (measure(PrometheusMetricProvider(), half).error or "")


def test_prometheus_oauth2_fetches_a_client_credentials_token_and_sends_it(http: Recorder) -> None:
    oauth2 = {
        "tokenUrl": f"{http.url}/token",
        "clientId": "rollouts",
        "clientSecret": "{{args.client-secret}}",
        "scopes": ["metrics.read", "metrics.list"],
    }
    result = measure(
        PrometheusMetricProvider(),
        prom(http.url, authentication={"oauth2": oauth2}),
        {"client-secret": CLIENT_SECRET},
    )
    assert (result.error, result.value) == (None, [1.0])
    assert parse_qs(last(http, "/token")["body"]) == {
        "grant_type": ["client_credentials"],
        "scope": ["metrics.read metrics.list"],
    }
    assert last(http, "/api/v1/query")["headers"]["Authorization"] == f"Bearer {TOKEN}"
    wrong = measure(
        PrometheusMetricProvider(),
        prom(http.url, authentication={"oauth2": oauth2}),
        {"client-secret": "nope"},
    )
    assert wrong.error is not None and "no access_token (invalid_client)" in wrong.error
    assert "nope" not in wrong.error and CLIENT_SECRET not in wrong.error


def test_insecure_skips_certificate_verification_and_only_then(https: Recorder) -> None:
    refused = measure(PrometheusMetricProvider(), prom(https.url))
    assert refused.error is not None and "CERTIFICATE_VERIFY_FAILED" in refused.error
    assert measure(PrometheusMetricProvider(), prom(https.url, insecure=True)).value == [1.0]
    web = Metric.model_validate(
        {"name": "w", "provider": {"web": {"url": f"{https.url}/echo", "jsonPath": "$.got"}}}
    )
    assert measure(WebMetricProvider(), web).error is not None
    web_insecure = Metric.model_validate(
        {
            "name": "w",
            "provider": {"web": {"url": f"{https.url}/echo", "jsonPath": "$.got", "insecure": True}},
        }
    )
    assert measure(WebMetricProvider(), web_insecure).no_data  # the echo of no body: null


def test_web_json_body_is_sent_as_json_with_arguments_replaced(http: Recorder) -> None:
    metric = Metric.model_validate(
        {
            "name": "w",
            "provider": {
                "web": {
                    "url": f"{http.url}/echo",
                    "method": "POST",
                    "jsonPath": "$.got",
                    "jsonBody": {
                        "service": "{{args.service}}",
                        "window": 5,
                        "tags": ["a", "{{args.service}}"],
                    },
                    "headers": [{"key": "X-Token", "value": "{{args.token}}"}],
                }
            },
        }
    )
    result = measure(WebMetricProvider(), metric, {"service": "web-canary", "token": "t"})
    assert result.value == {"service": "web-canary", "window": 5, "tags": ["a", "web-canary"]}
    sent = last(http, "/echo")
    assert sent["headers"]["Content-Type"] == "application/json" and sent["headers"]["X-Token"] == "t"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    registry = CollectorRegistry()
    latency = Gauge("tidegate_argo_range_latency", "per pod", ["pod"], registry=registry)
    latency.labels(pod="a").set(0.1)
    latency.labels(pod="b").set(0.2)
    with (
        serve_exporter(registry) as exporter,
        running_prometheus(tmp_path_factory.mktemp("prom"), [exporter.target]) as server,
    ):
        server.wait_for("count(tidegate_argo_range_latency)", lambda data: bool(data["result"]))
        yield server


def test_range_query_gives_every_sample_of_every_series_in_one_list(prometheus: PrometheusServer) -> None:
    """Argo's processResponse for a matrix: one flat list, so a condition over `result` sees
    every sample of every series."""
    metric = prom(
        prometheus.url,
        query="tidegate_argo_range_latency",
        rangeQuery={"start": 'now() - duration("{{args.lookback}}")', "end": "now()", "step": "1s"},
    )

    def four_samples() -> ProviderResult | None:
        result = measure(PrometheusMetricProvider(), metric, {"lookback": "20s"})
        return result if isinstance(result.value, list) and len(result.value) >= 4 else None

    result = wait_until(four_samples, 30, what="a range of at least 4 samples")
    assert result.error is None and all(isinstance(v, float) for v in result.value)
    assert set(result.value) == {0.1, 0.2}
    bad = prom(prometheus.url, rangeQuery={"start": "yesterday", "step": "1s"})
    error = measure(PrometheusMetricProvider(), bad).error or ""
    assert "rangeQuery.start" in error and "now()" in error

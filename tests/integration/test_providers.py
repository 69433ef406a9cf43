"""Metric providers against real servers: a local HTTP server (web) and a real Prometheus."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from tests.integration._prometheus import PrometheusServer, free_port, running_prometheus, serve_exporter
from tidegate.api.analysis import Metric, PrometheusProvider
from tidegate.core.args import render_query
from tidegate.metrics import (
    MappingSecretReader,
    MeasurementError,
    PrometheusMetricProvider,
    Provider,
    ProviderResult,
    UnknownProviderError,
    WebMetricProvider,
    provider_for,
)

TOKEN = "s3cr3t-t0ken-do-not-leak"
PASSWORD = "hunter2-do-not-leak"
SECRETS = MappingSecretReader(
    {("api-auth", "token"): TOKEN, ("api-auth", "user"): "metrics-reader", ("api-auth", "password"): PASSWORD}
)
BEARER = {"bearerToken": {"name": "api-auth", "key": "token"}}
BASIC = {
    "basicUsername": {"name": "api-auth", "key": "user"},
    "basicPassword": {"name": "api-auth", "key": "password"},
}


def web_metric(**web: Any) -> Metric:
    return Metric.model_validate({"name": "web-check", "provider": {"web": web}})


def prom_metric(address: str, query: str, **extra: Any) -> Metric:
    return Metric.model_validate(
        {"name": "prom-check", "provider": {"prometheus": {"address": address, "query": query, **extra}}}
    )


def spec_of(metric: Metric) -> PrometheusProvider:
    assert metric.provider is not None and metric.provider.prometheus is not None
    return metric.provider.prometheus


def measure(provider: Provider, metric: Metric, args: Mapping[str, str] | None = None) -> ProviderResult:
    return asyncio.run(provider.measure(metric, args or {}, SECRETS))


def assert_no_leak(*texts: object) -> None:
    encoded = base64.b64encode(f"metrics-reader:{PASSWORD}".encode()).decode()
    for text in texts:
        for secret in (TOKEN, PASSWORD, encoded):
            assert secret not in str(text)


# --- a local HTTP server -------------------------------------------------------------------


@dataclass
class WebServer:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, document: Any, status: int = 200) -> None:
        self._answer(status, json.dumps(document).encode())

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        seen = {
            "method": self.command,
            "path": self.path,
            "headers": dict(self.headers.items()),
            "body": body,
        }
        self.server.record.requests.append(seen)
        path = self.path.split("?", 1)[0]
        if path == "/ok":
            self._json({"data": {"ok": True, "rate": 0.99, "items": [{"v": 1}, {"v": 2.5}], "empty": []}})
        elif path == "/echo":
            self._json(
                {"method": self.command, "body": json.loads(body) if body else None, "path": self.path}
            )
        elif path == "/fail":
            # A careless server echoing the credentials it got back in its error page.
            self._answer(
                500, f"internal error; you sent {self.headers.get('Authorization')}".encode(), "text/plain"
            )
        elif path.startswith("/slow"):  # /slow or /slow/<seconds>
            time.sleep(float(path.removeprefix("/slow").strip("/") or 3))
            self._json({"late": True})
        elif path == "/text":
            self._answer(200, b"<html>not json</html>", "text/html")
        elif path == "/nan":
            self._answer(200, b'{"value": NaN}')
        else:
            self._json({"error": "not found"}, status=404)

    do_GET = do_POST = do_PUT = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    record: WebServer


@pytest.fixture(scope="module")
def web() -> Iterator[WebServer]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.record = WebServer(url=f"http://127.0.0.1:{server.server_port}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.record
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_web_get_with_json_path(web: WebServer) -> None:
    result = measure(WebMetricProvider(), web_metric(url=f"{web.url}/ok", jsonPath="$.data.rate"))
    assert result == ProviderResult(0.99, "0.99")


@pytest.mark.parametrize(
    ("json_path", "value", "no_data"),
    [
        ("$.data.ok", True, False),
        ("{$.data.ok}", True, False),  # Argo's Kubernetes-style JSONPath
        ("$.data.items[*].v", [1, 2.5], False),
        ("$.data.items[?(@.v > 2)].v", 2.5, False),
        ("$.data.empty", [], True),
        ("$.data.missing", None, True),
        ("$", {"data": {"ok": True, "rate": 0.99, "items": [{"v": 1}, {"v": 2.5}], "empty": []}}, False),
    ],
)
def test_web_json_path(web: WebServer, json_path: str, value: object, no_data: bool) -> None:
    result = measure(WebMetricProvider(), web_metric(url=f"{web.url}/ok", jsonPath=json_path))
    assert (result.value, result.no_data, result.error) == (value, no_data, None)


def test_web_nan_is_no_data(web: WebServer) -> None:
    result = measure(WebMetricProvider(), web_metric(url=f"{web.url}/nan", jsonPath="$.value"))
    assert result.no_data and math.isnan(result.value)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_web_post_and_put_with_body_and_headers(web: WebServer, method: str) -> None:
    metric = web_metric(
        url=f"{web.url}/echo?service={{{{args.service}}}}",
        method=method,
        body='{"service": "{{args.service}}", "window": "5m"}',
        headers=[{"key": "X-Team", "value": "{{args.team}}"}],
        jsonPath="$.body",
    )
    result = measure(WebMetricProvider(), metric, {"service": "check out", "team": "payments"})
    assert result.error is None
    assert result.value == {"service": "check out", "window": "5m"}
    sent = web.requests[-1]
    assert sent["method"] == method
    assert sent["path"] == "/echo?service=check%20out"  # URL-escaped in the URL
    assert sent["headers"]["X-Team"] == "payments"
    assert sent["headers"]["Content-Type"] == "application/json"


def test_web_url_arguments_cannot_add_path_or_query(web: WebServer) -> None:
    metric = web_metric(url=f"{web.url}/echo?service={{{{args.service}}}}", jsonPath="$.path")
    result = measure(WebMetricProvider(), metric, {"service": "x&admin=true#/../ok"})
    assert result.value == "/echo?service=x%26admin%3Dtrue%23%2F..%2Fok"


def test_web_a_whole_url_can_be_an_argument(web: WebServer) -> None:
    """Argo Rollouts' `url: "{{args.secret-url}}"`: the argument is the address."""
    metric = web_metric(url="{{args.url}}", jsonPath="$.path")
    result = measure(WebMetricProvider(), metric, {"url": f"{web.url}/echo?service=a&b=c"})
    assert (result.error, result.value) == (None, "/echo?service=a&b=c")
    failing = measure(WebMetricProvider(), web_metric(url="{{args.url}}"), {"url": f"{web.url}/fail"})
    assert failing.error is not None and f"{web.url}/fail" in failing.error, "the message names the URL used"


@pytest.mark.parametrize(
    ("path", "timeout", "message"),
    [
        ("/fail", 5, "HTTP 500"),
        ("/missing", 5, "HTTP 404"),
        ("/text", 5, "answer is not JSON"),
        ("/slow", 1, "timed out after 1s"),
    ],
)
def test_web_errors_are_results_not_exceptions(web: WebServer, path: str, timeout: int, message: str) -> None:
    metric = web_metric(url=f"{web.url}{path}", timeoutSeconds=timeout, authentication=BEARER)
    started = time.monotonic()
    result = measure(WebMetricProvider(), metric)
    assert result.error is not None and message in result.error, result.error
    assert result.value is None
    assert_no_leak(result)
    assert time.monotonic() - started < timeout + 1.5


def test_web_unreachable_server_is_an_error() -> None:
    result = measure(WebMetricProvider(), web_metric(url=f"http://127.0.0.1:{free_port()}/ok"))
    assert result.error is not None and "cannot connect" in result.error


def test_web_bad_json_path_and_missing_argument_are_errors(web: WebServer) -> None:
    result = measure(WebMetricProvider(), web_metric(url=f"{web.url}/ok", jsonPath="$.data["))
    assert result.error is not None and "jsonPath '$.data[' does not parse" in result.error
    result = measure(WebMetricProvider(), web_metric(url=f"{web.url}/{{{{args.nope}}}}"))
    assert result.error is not None and "missing argument 'nope'" in result.error


@pytest.mark.parametrize(
    ("authentication", "expected"),
    [
        (BEARER, f"Bearer {TOKEN}"),
        (BASIC, "Basic " + base64.b64encode(f"metrics-reader:{PASSWORD}".encode()).decode()),
    ],
)
def test_web_auth_header_is_sent_from_the_secret_and_never_leaked(
    web: WebServer, authentication: dict[str, Any], expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ok = measure(
        WebMetricProvider(),
        web_metric(url=f"{web.url}/ok", jsonPath="$.data.ok", authentication=authentication),
    )
    assert ok.value is True
    assert web.requests[-1]["headers"]["Authorization"] == expected
    failed = measure(WebMetricProvider(), web_metric(url=f"{web.url}/fail", authentication=authentication))
    assert web.requests[-1]["headers"]["Authorization"] == expected
    # The server echoed the credentials back in its error page: the page is never shown.
    assert failed.error is not None and failed.error.endswith("HTTP 500") and "internal" not in failed.error
    assert_no_leak(ok, failed, caplog.text)


def test_web_missing_secret_is_an_error_without_values(web: WebServer) -> None:
    metric = web_metric(
        url=f"{web.url}/ok", authentication={"bearerToken": {"name": "other", "key": "token"}}
    )
    result = measure(WebMetricProvider(), metric)
    assert result.error is not None and "cannot read bearer token from secret other/token" in result.error


# --- the registry --------------------------------------------------------------------------


def test_provider_for_picks_by_the_field_that_is_set() -> None:
    assert isinstance(provider_for(web_metric(url="http://x")), WebMetricProvider)
    assert isinstance(provider_for(prom_metric("http://x", "up")), PrometheusMetricProvider)


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        (None, "no provider this operator supports (set exactly one of: prometheus, web)"),
        ({"datadog": {"query": "x"}}, "no provider this operator supports"),
        (
            {"web": {"url": "http://x"}, "prometheus": {"address": "http://x", "query": "up"}},
            "prometheus and web are both set",
        ),
    ],
)
def test_an_unknown_provider_is_a_spec_error(provider: dict[str, Any] | None, message: str) -> None:
    metric = Metric.model_validate({"name": "m", "provider": provider})
    with pytest.raises(UnknownProviderError, match=re.escape(message)):
        provider_for(metric)


def test_transport_is_injected() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/query"
        assert request.url.params["query"] == 'up{job="a\\x22b"}'
        assert request.url.params["timeout"] == "10"
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "scalar", "result": [0, "1"]}}
        )

    provider = provider_for(
        prom_metric("http://prom:9090", 'up{job="{{args.job}}"}'), transport=httpx.MockTransport(answer)
    )
    result = measure(provider, prom_metric("http://prom:9090", 'up{job="{{args.job}}"}'), {"job": 'a"b'})
    assert result == ProviderResult(1.0, "1")


def test_a_transport_failure_mentioning_the_token_does_not_leak_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    def explode(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused while sending {request.headers['Authorization']}", request=request)

    provider = PrometheusMetricProvider(transport=httpx.MockTransport(explode))
    metric = prom_metric("http://prom:9090", "up", authentication=BEARER)
    result = measure(provider, metric)
    assert result.error is not None and "cannot connect" in result.error and "<redacted>" in result.error
    with pytest.raises(MeasurementError) as raised:
        asyncio.run(provider.query_range(spec_of(metric), SECRETS))
    assert_no_leak(result, raised.value, repr(raised.value), caplog.text)
    # No exception chain leads back to the request and its headers.
    assert raised.value.__cause__ is None and raised.value.__context__ is None


# --- a real Prometheus ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    registry = CollectorRegistry()
    requests = Counter("tidegate_test_requests", "requests", ["code"], registry=registry)
    requests.labels(code="200").inc(95)
    requests.labels(code="500").inc(5)
    Gauge("tidegate_test_success_ratio", "a ratio", registry=registry).set(0.97)
    Gauge("tidegate_test_nan", "not a number", registry=registry).set(math.nan)
    latency = Gauge("tidegate_test_latency_seconds", "per pod", ["pod"], registry=registry)
    latency.labels(pod="b").set(0.2)  # registered first, sorted last
    latency.labels(pod="a").set(0.1)
    latency.labels(pod="c").set(0.3)
    workdir = tmp_path_factory.mktemp("prometheus")
    with serve_exporter(registry) as exporter, running_prometheus(workdir, [exporter.target]) as server:
        server.wait_for("count(tidegate_test_latency_seconds)", lambda data: bool(data["result"]))
        server.wait_for("tidegate_test_requests_total", lambda data: len(data["result"]) == 2)
        yield server


@pytest.mark.parametrize(
    ("query", "value", "text"),
    [
        ("tidegate_test_latency_seconds", [0.1, 0.2, 0.3], "[0.1, 0.2, 0.3]"),  # sorted by labels
        ("scalar(tidegate_test_success_ratio)", 0.97, "0.97"),
        ("tidegate_test_success_ratio", [0.97], "[0.97]"),
        (
            'sum(tidegate_test_requests_total{code!~"5.."}) / sum(tidegate_test_requests_total)',
            [0.95],
            "[0.95]",
        ),
        ("vector(1) * 2", [2.0], "[2]"),
        ("42", 42.0, "42"),
    ],
)
def test_prometheus_values(prometheus: PrometheusServer, query: str, value: object, text: str) -> None:
    result = measure(PrometheusMetricProvider(), prom_metric(prometheus.url, query))
    assert result == ProviderResult(value, text)


@pytest.mark.parametrize(
    "query",
    [
        "tidegate_test_never_exported",  # empty vector
        "scalar(tidegate_test_nan)",  # NaN scalar
        "tidegate_test_nan",  # vector of NaN
        "sum(tidegate_test_requests_total{code='404'}) / sum(tidegate_test_requests_total{code='404'})",
        "vector(0) / vector(0)",  # 0/0: the ratio of no traffic
    ],
)
def test_prometheus_no_data(prometheus: PrometheusServer, query: str) -> None:
    result = measure(PrometheusMetricProvider(), prom_metric(prometheus.url, query))
    assert result.no_data and result.error is None


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("sum(", "bad_data"),
        ("rate(tidegate_test_success_ratio)", "bad_data"),
        ('up{job="{{args.missing}}"}', "missing argument 'missing'"),
    ],
)
def test_prometheus_bad_query_is_an_error_not_an_exception(
    prometheus: PrometheusServer, query: str, message: str
) -> None:
    result = measure(PrometheusMetricProvider(), prom_metric(prometheus.url, query))
    assert result.error is not None and message in result.error, result.error
    assert result.value is None


def test_prometheus_unreachable_is_an_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    metric = prom_metric(f"http://127.0.0.1:{free_port()}", "up", authentication=BEARER)
    result = measure(PrometheusMetricProvider(), metric)
    assert result.error is not None and "cannot connect" in result.error
    assert_no_leak(result, caplog.text)


def test_prometheus_timeout_is_an_error(web: WebServer) -> None:
    """A server that does not answer in time (the web test server's /slow stands in for it)."""
    metric = prom_metric(f"{web.url}/slow/8#", "up", timeout="1s")
    started = time.monotonic()
    result = measure(PrometheusMetricProvider(), metric)
    assert result.error is not None and "timed out after 1s" in result.error, result.error
    assert time.monotonic() - started < 5  # the query timeout plus the client's grace of 2s


def test_prometheus_sends_the_bearer_token(
    prometheus: PrometheusServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    metric = prom_metric(prometheus.url, "scalar(tidegate_test_success_ratio)", authentication=BEARER)
    result = measure(PrometheusMetricProvider(), metric)
    assert result.value == 0.97
    bad = measure(PrometheusMetricProvider(), prom_metric(prometheus.url, "sum(", authentication=BEARER))
    assert_no_leak(result, bad, caplog.text)


@pytest.mark.parametrize(
    "value",
    [
        'x"} or vector(1) #',
        "x'} or vector(1) #",
        '", "", "") or vector(7) #',
        "back\\slash\\",
        "back`tick",
        "line\nbreak\ttab",
        "ünïcødé",
    ],
)
@pytest.mark.parametrize("quote", ['"', "'"])
def test_prometheus_reads_an_argument_as_one_string_literal(
    prometheus: PrometheusServer, value: str, quote: str
) -> None:
    """Prometheus itself parses the rendered query: the label holds the raw value, no extra series."""
    q = quote
    template = f"label_replace(vector(1), {q}v{q}, {q}{{{{args.v}}}}{q}, {q}{q}, {q}{q})"
    data = prometheus.query(render_query(template, {"v": value}, escape="promql"))
    assert [series["metric"] for series in data["result"]] == [{"v": value}]
    result = measure(
        PrometheusMetricProvider(), prom_metric(prometheus.url, f"count({template})"), {"v": value}
    )
    assert result.value == [1.0]


def test_prometheus_range_query(prometheus: PrometheusServer) -> None:
    metric = prom_metric(
        prometheus.url, "tidegate_test_latency_seconds", range={"window": "30s", "step": "1s"}
    )
    result = measure(PrometheusMetricProvider(), metric)
    assert result.error is None and not result.no_data
    series = result.value
    assert isinstance(series, list) and len(series) == 3
    assert [set(samples) for samples in series] == [{0.1}, {0.2}, {0.3}]
    samples = asyncio.run(PrometheusMetricProvider().query_range(spec_of(metric), SECRETS))
    assert samples and set(samples) == {0.1, 0.2, 0.3}
    assert len(samples) == sum(len(s) for s in series)


def test_prometheus_range_query_of_nothing_is_no_data(prometheus: PrometheusServer) -> None:
    metric = prom_metric(
        prometheus.url, "tidegate_test_never_exported", range={"window": "30s", "step": "1s"}
    )
    result = measure(PrometheusMetricProvider(), metric)
    assert result.no_data and result.value == []
    spec = spec_of(metric)
    assert asyncio.run(PrometheusMetricProvider().query_range(spec, SECRETS)) == []


def test_query_range_renders_arguments_and_raises_on_errors(prometheus: PrometheusServer) -> None:
    metric = prom_metric(
        prometheus.url, 'tidegate_test_latency_seconds{pod="{{args.pod}}"}', range={"window": "30s"}
    )
    spec = spec_of(metric)
    samples = asyncio.run(PrometheusMetricProvider().query_range(spec, SECRETS, args={"pod": "b"}))
    assert samples and set(samples) == {0.2}
    with pytest.raises(MeasurementError, match="bad_data"):
        asyncio.run(PrometheusMetricProvider().query_range(spec, SECRETS, query="sum("))


def test_query_range_series_keeps_times_and_labels_and_starts_where_asked(
    prometheus: PrometheusServer,
) -> None:
    """The judges' span: points on the grid from `start` (the run's start + a step), none before."""
    metric = prom_metric(
        prometheus.url, 'tidegate_test_latency_seconds{pod="a"}', range={"window": "5m", "step": "1s"}
    )
    spec = spec_of(metric)
    end = time.time()
    start = end - 3.0
    series = asyncio.run(PrometheusMetricProvider().query_range_series(spec, SECRETS, start=start, end=end))
    (labels, points) = series[0]
    assert len(series) == 1 and labels["pod"] == "a"
    times = [moment for moment, _ in points]
    # Prometheus answers with millisecond timestamps (a run's start is written in milliseconds too).
    assert times and times[0] >= start - 1e-3 and times[-1] <= end + 1e-3, (start, end, times)
    assert all(abs((b - a) - 1.0) < 1e-3 for a, b in itertools.pairwise(times)), times
    assert {value for _, value in points} == {0.1}

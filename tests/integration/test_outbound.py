"""Hostile metric endpoints against the real providers: real local servers that drip, flood and
redirect, and the outbound policy refusing loopback, metadata-like and API-server addresses.

The servers are real sockets on 127.0.0.1 (http.server); the policy under test is built per
test. A resolver is injected only where real DNS cannot be made to answer (a name resolving
to a loopback address, as in DNS rebinding).
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.integration.test_providers import (
    BEARER,
    SECRETS,
    WebServer,
    assert_no_leak,
    prom_metric,
    web_metric,
)
from tidegate.core.outbound import OutboundPolicy, parse_entries
from tidegate.metrics import Outbound, PrometheusMetricProvider, ProviderResult, WebMetricProvider
from tidegate.metrics._base import Provider

MiB = 1024 * 1024
LOOPBACK = OutboundPolicy(allow=parse_entries("127.0.0.0/8"), secret_allow=parse_entries("127.0.0.0/8"))
"""The sandbox's kind of policy: loopback named explicitly."""
DEFAULT = OutboundPolicy()
"""What the chart ships: nothing allowed beyond the defaults (loopback refused)."""


class _Hostile(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.record.requests.append({"path": self.path, "headers": dict(self.headers.items())})
        # The first path segment says what to do (a Prometheus address gets /api/v1/... appended).
        path = "/" + self.path.split("?", 1)[0].strip("/").split("/", 1)[0]
        try:
            if path == "/drip":  # headers at once, then one byte every 2 s, for a minute
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "60")
                self.end_headers()
                for _ in range(30):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(2)
            elif path in ("/big", "/big-chunked"):  # 20 MiB of JSON
                chunk = b"[" + b"1," * (MiB // 2 - 1) + b"1]"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if path == "/big":
                    self.send_header("Content-Length", str(20 * len(chunk)))
                    self.end_headers()
                    for _ in range(20):
                        self.wfile.write(chunk)
                else:  # no declared length: only the streamed count can stop it
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for _ in range(20):
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
            elif path == "/bomb":  # 20 MiB of zeros in about 20 KiB of gzip
                body = gzip.compress(b"0" * (20 * MiB))
                self.send_response(200)
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                body = b'{"data": {"rate": 0.99, "key": "AKIAIOSFODNN7EXAMPLE"}}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up: what the tests want


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    record: WebServer


@pytest.fixture(scope="module")
def hostile() -> Iterator[WebServer]:
    server = _Server(("127.0.0.1", 0), _Hostile)
    server.record = WebServer(url=f"http://127.0.0.1:{server.server_port}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.record
    finally:
        server.shutdown()


def measure(provider: Provider, metric: Any, args: Mapping[str, str] | None = None) -> ProviderResult:
    return asyncio.run(provider.measure(metric, args or {}, SECRETS))


def timed(provider: Provider, metric: Any) -> tuple[ProviderResult, float]:
    started = time.monotonic()
    result = measure(provider, metric)
    return result, time.monotonic() - started


# --- the total deadline ----------------------------------------------------------------------


def test_a_server_dripping_a_byte_every_two_seconds_times_out_at_the_total_deadline(
    hostile: WebServer,
) -> None:
    provider = WebMetricProvider(outbound=Outbound(LOOPBACK))
    result, took = timed(provider, web_metric(url=f"{hostile.url}/drip", timeoutSeconds=3))
    assert result.error is not None and "timed out after 3s" in result.error, result.error
    assert took < 6, f"the request took {took:.1f}s: the deadline is per read, not total"


def test_prometheus_that_drips_times_out_too(hostile: WebServer) -> None:
    provider = PrometheusMetricProvider(outbound=Outbound(LOOPBACK))
    metric = prom_metric(hostile.url + "/drip", "up", timeout="2s")
    result, took = timed(provider, metric)
    assert result.error is not None and "timed out after 2s" in result.error, result.error
    assert took < 7, f"the request took {took:.1f}s"


# --- the size cap -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/big", "/big-chunked", "/bomb"])
def test_a_20_mib_answer_stops_at_the_cap_and_never_reaches_the_status(hostile: WebServer, path: str) -> None:
    provider = WebMetricProvider(outbound=Outbound(LOOPBACK))
    result, took = timed(provider, web_metric(url=f"{hostile.url}{path}", jsonPath="$[0]"))
    assert result.error is not None and "1048576-byte cap" in result.error, result.error
    assert result.value is None and len(result.error) <= 200
    assert took < 5, f"{took:.1f}s"


def test_the_cap_is_configurable(hostile: WebServer) -> None:
    small = OutboundPolicy(allow=LOOPBACK.allow, max_response_bytes=16)
    result = measure(WebMetricProvider(outbound=Outbound(small)), web_metric(url=f"{hostile.url}/ok"))
    assert result.error is not None and "more than the 16-byte cap" in result.error, result.error
    ok = measure(WebMetricProvider(outbound=Outbound(LOOPBACK)), web_metric(url=f"{hostile.url}/ok"))
    assert ok.error is None


def test_prometheus_answers_are_capped_too(hostile: WebServer) -> None:
    provider = PrometheusMetricProvider(outbound=Outbound(LOOPBACK))
    result = measure(provider, prom_metric(hostile.url + "/big", "up"))
    assert result.error is not None and "1048576-byte cap" in result.error, result.error


def test_only_the_selected_value_reaches_the_result_never_the_body(hostile: WebServer) -> None:
    provider = WebMetricProvider(outbound=Outbound(LOOPBACK))
    result = measure(provider, web_metric(url=f"{hostile.url}/ok", jsonPath="$.data.rate"))
    assert (result.value, result.text) == (0.99, "0.99")
    redirected = measure(provider, web_metric(url=f"{hostile.url}/redirect"))
    assert redirected.error is not None and redirected.error.endswith("HTTP 302 (redirects are not followed)")
    assert [r["path"] for r in hostile.requests].count("/redirect") == 1, "the redirect was not followed"


# --- where requests may go ---------------------------------------------------------------------


def test_loopback_is_refused_without_an_allow_list_and_nothing_is_sent(hostile: WebServer) -> None:
    before = len(hostile.requests)
    result = measure(WebMetricProvider(outbound=Outbound(DEFAULT)), web_metric(url=f"{hostile.url}/ok"))
    assert result.error is not None, result
    assert (
        "refused by the operator's outbound policy: 127.0.0.1 is refused: a loopback address" in result.error
    )
    assert len(hostile.requests) == before, "no request reached the server"


BROAD = OutboundPolicy(allow=parse_entries("0.0.0.0/0 ::/0 127.0.0.0/8 ::1"))
"""The sandbox's policy: everything, loopback named; link-local still refused."""


@pytest.mark.parametrize(
    ("policy", "url", "problem"),
    [
        (BROAD, "http://169.254.169.254/latest/meta-data/iam/security-credentials/", "a link-local address"),
        (BROAD, "http://[fd00:ec2::254]/latest/meta-data/", "the cloud metadata address"),
        (BROAD, "http://metadata.google.internal/computeMetadata/v1/", "a metadata or loopback name"),
        (BROAD, "http://localhost:2379/version", "a metadata or loopback name"),
        (BROAD, "http://0.0.0.0:9090/", "an unspecified address"),
        (DEFAULT, "http://2130706433:2379/version", "a loopback address"),  # 127.0.0.1 as one number
        (DEFAULT, "http://[::ffff:127.0.0.1]:2379/version", "a loopback address"),
        (BROAD, "file:///etc/passwd", "only http and https"),
    ],
)
def test_metadata_like_addresses_are_refused_before_connecting(
    policy: OutboundPolicy, url: str, problem: str
) -> None:
    provider = WebMetricProvider(outbound=Outbound(policy))
    # A connection attempt to these addresses would wait out the 30 s timeout; the refusal is
    # the policy's, before any connection, so it comes back well inside it.
    result, took = timed(provider, web_metric(url=url, timeoutSeconds=30))
    assert result.error is not None and problem in result.error, result.error
    assert took < 15, f"{took:.1f}s: refused before any connection, not timed out"


def test_a_name_with_one_bad_address_is_refused_and_the_connection_uses_the_checked_address(
    hostile: WebServer,
) -> None:
    async def rebinding(host: str, port: int) -> list[str]:
        return ["10.1.2.3", "127.0.0.1"] if host == "two.test" else ["127.0.0.1"]

    refused = measure(
        WebMetricProvider(outbound=Outbound(OutboundPolicy(), resolver=rebinding)),
        web_metric(url=f"http://two.test:{hostile.url.rsplit(':', 1)[1]}/ok"),
    )
    assert (
        refused.error is not None and "two.test (127.0.0.1) is refused: a loopback address" in refused.error
    )
    # Allowed: the request goes to the address that was checked (the name is not in any DNS),
    # with the URL's host in its Host header.
    allowed = measure(
        WebMetricProvider(outbound=Outbound(LOOPBACK, resolver=rebinding)),
        web_metric(url=f"http://one.test:{hostile.url.rsplit(':', 1)[1]}/ok", jsonPath="$.data.rate"),
    )
    assert allowed.value == 0.99, allowed
    assert hostile.requests[-1]["headers"]["Host"].startswith("one.test")


def test_the_api_servers_address_is_refused_even_where_its_network_is_allowed(hostile: WebServer) -> None:
    port = int(hostile.url.rsplit(":", 1)[1])
    policy = OutboundPolicy(allow=LOOPBACK.allow, api_servers=frozenset({("127.0.0.1", port)}))
    before = len(hostile.requests)
    result = measure(WebMetricProvider(outbound=Outbound(policy)), web_metric(url=f"{hostile.url}/ok"))
    assert result.error is not None and f"127.0.0.1:{port} is the Kubernetes API server" in result.error
    assert len(hostile.requests) == before


def test_a_secret_goes_only_to_hosts_allowed_for_secrets(hostile: WebServer) -> None:
    open_policy = OutboundPolicy(allow=LOOPBACK.allow)  # loopback allowed, Secrets nowhere
    before = len(hostile.requests)
    metric = web_metric(url=f"{hostile.url}/ok", jsonPath="$.data.rate", authentication=BEARER)
    refused = measure(WebMetricProvider(outbound=Outbound(open_policy)), metric)
    assert refused.error is not None and "not allowed to receive Secrets" in refused.error, refused.error
    assert len(hostile.requests) == before, "the token never left"
    assert_no_leak(refused)
    sent = measure(WebMetricProvider(outbound=Outbound(LOOPBACK)), metric)
    assert sent.value == 0.99
    assert hostile.requests[-1]["headers"]["Authorization"].startswith("Bearer ")

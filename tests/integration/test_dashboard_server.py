"""The dashboard's HTTP server on a real socket: its assets ship in the package, and it refuses
what a local server must refuse (another Host, a write without its header) before any API call.

No cluster is needed: the Hub's watches are not started and the Api points at a closed port,
so a request that reached the cluster would fail loudly rather than pass.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator

import pytest

from tidegate.cli._kube import Cluster
from tidegate.cli._kubeconfig import Credentials
from tidegate.cli._rest import Api
from tidegate.cli.dashboard import DashboardServer, Hub, serve


@pytest.fixture
def server() -> Iterator[DashboardServer]:
    hub = Hub(Cluster(api=Api(Credentials(server="http://127.0.0.1:9")), namespace="shop"))
    srv = serve(hub, 0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        hub.stop()
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def request(
    srv: DashboardServer,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: str | None = None,
) -> tuple[int, str, bytes]:
    port = srv.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body, headers={"Host": f"127.0.0.1:{port}", **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, response.getheader("Content-Type") or "", data


@pytest.mark.parametrize(
    ("path", "content_type", "marker"),
    [
        ("/", "text/html", b'<script src="/app.js">'),
        ("/rollouts/shop/web", "text/html", b'<main id="page">'),
        ("/app.js", "text/javascript", b"new EventSource("),
        ("/app.css", "text/css", b"ol#steps"),
    ],
)
def test_the_page_and_its_assets_are_served_from_the_package(
    server: DashboardServer, path: str, content_type: str, marker: bytes
) -> None:
    status, got_type, body = request(server, "GET", path)
    assert (status, got_type.split(";")[0]) == (200, content_type)
    assert marker in body


def test_another_host_header_is_refused(server: DashboardServer) -> None:
    status, _type, body = request(server, "GET", "/", headers={"Host": "attacker.example:3100"})
    assert status == 403 and json.loads(body)["message"] == "unexpected Host header"


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},  # no X-Tidegate-Dashboard: a cross-site fetch cannot add it
        {"Content-Type": "text/plain", "X-Tidegate-Dashboard": "1"},  # what an HTML form can send
    ],
)
def test_a_write_without_json_and_the_header_is_refused(
    server: DashboardServer, headers: dict[str, str]
) -> None:
    status, _type, body = request(server, "POST", "/api/rollouts/shop/web/abort", headers=headers, body="{}")
    assert status == 403, body
    assert "X-Tidegate-Dashboard" in json.loads(body)["message"]


def test_unknown_actions_and_other_namespaces_are_refused(server: DashboardServer) -> None:
    headers = {"Content-Type": "application/json", "X-Tidegate-Dashboard": "1"}
    status, _type, body = request(server, "POST", "/api/rollouts/shop/web/delete", headers=headers, body="{}")
    assert (status, json.loads(body)["message"]) == (400, "unknown action 'delete'")
    status, _type, body = request(server, "POST", "/api/rollouts/other/web/abort", headers=headers, body="{}")
    assert (status, json.loads(body)["message"]) == (400, "namespace 'other' is not shown")

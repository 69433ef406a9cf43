"""`tidegate dashboard`: a web page of the Rollouts, live, on 127.0.0.1, with the person's own kubeconfig.

The server is the standard library's threaded HTTP server: nothing to install, and the
CLI's own watch feed (`_kube.WatchFeed`, one list+watch thread per kind) and steering code
(`control.steer`) are synchronous already. It watches Rollouts, their ReplicaSets, pods,
AnalysisRuns and Tidegate's Events in one namespace (or all, `-A`), folds the changes into
a `Store`, and pushes each page's view to the browser as server-sent events whenever a
change arrives: the page never polls. What the kubeconfig's user may not read shows up on
the page as the API server's own refusal; a button whose write RBAC refuses says so too.

The buttons POST the name of an intent; the server carries it out exactly as the CLI
command of that name does (`control.intents`), with the same words back.

Safety of a local server: it binds 127.0.0.1 only; it answers only requests whose Host
header is that address (so a DNS-rebinding page cannot reach it) and takes writes only as
JSON with a custom header, which a cross-site form or fetch cannot send without a CORS
preflight that this server never grants.
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import click

from tidegate.cli._dashboard_model import Store, overview, rollout_view, view_json
from tidegate.cli._kube import Change, CliError, Cluster, Source, Target, WatchFeed
from tidegate.cli._options import cluster_options
from tidegate.cli._rest import ApiError, path_for
from tidegate.core.hashing import HASH_LABEL
from tidegate.core.names import ROLLOUT_LABEL

DEFAULT_PORT = 3100  # Argo Rollouts' dashboard port, so muscle memory carries over
KEEPALIVE_SECONDS = 15.0
ASSETS = {
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}
CSRF_HEADER = "X-Tidegate-Dashboard"


def sources(cluster: Cluster) -> list[Source]:
    """What the dashboard watches: in the namespace, or everywhere with -A."""
    namespace = None if cluster.all_namespaces else cluster.namespace
    return [
        Source("rollouts", path_for("tidegate.io", "v1alpha1", "rollouts", namespace), {}),
        Source(
            "replicasets", path_for("apps", "v1", "replicasets", namespace), {"labelSelector": ROLLOUT_LABEL}
        ),
        Source("pods", path_for("", "v1", "pods", namespace), {"labelSelector": HASH_LABEL}),
        Source(
            "analysisruns", path_for("tidegate.io", "v1alpha1", "analysisruns", namespace), {}, optional=True
        ),
        Source(
            "events",
            path_for("", "v1", "events", namespace),
            {"fieldSelector": "involvedObject.apiVersion=tidegate.io/v1alpha1"},
        ),
    ]


class Hub:
    """The watched state, shared by the request threads; `version` counts the changes folded in."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.store = Store()
        self.version = 0
        self.changed = threading.Condition()
        self.closed = False
        self._feed = WatchFeed(cluster)

    def start(self) -> Hub:
        self._feed.start(*sources(self.cluster))
        threading.Thread(target=self._fold, name="dashboard-fold", daemon=True).start()
        return self

    def stop(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()
        self._feed.stop()
        self._feed.changes.put(Change("", "STOP"))

    def _fold(self) -> None:
        """Fold the feed's changes into the store, a burst (a list's worth) under one lock and one wake-up."""
        while True:
            batch = [self._feed.changes.get()]
            with contextlib.suppress(queue.Empty):
                while len(batch) < 500 and batch[-1].type != "STOP":
                    batch.append(self._feed.changes.get_nowait())
            with self.changed:
                for c in batch:
                    if c.type != "STOP":
                        self.store.apply(c.kind, c.type, c.objects, c.message, datetime.now(UTC))
                self.version += 1
                self.changed.notify_all()
            if batch[-1].type == "STOP":
                return

    def view(self, page: str, key: tuple[str, str] | None) -> str:
        now = datetime.now(UTC)
        with self.changed:
            if key is None:
                namespace = None if self.cluster.all_namespaces else self.cluster.namespace
                view = overview(self.store, namespace, now)
            else:
                view = rollout_view(self.store, key, now)
        view["context"] = {
            "namespace": self.cluster.namespace,
            "allNamespaces": self.cluster.all_namespaces,
            "page": page,
        }
        return view_json(view)

    def wait(self, seen: int, timeout: float) -> int:
        """Block until a change newer than `seen` (or the timeout, or close); the version then."""
        with self.changed:
            self.changed.wait_for(lambda: self.version > seen or self.closed, timeout)
            return self.version

    def act(self, namespace: str, name: str, action: str) -> tuple[int, dict[str, Any]]:
        """Carry out one intent as the CLI does; (HTTP status, {ok, message})."""
        from tidegate.cli.control import intents, steer

        if action not in intents():
            return HTTPStatus.BAD_REQUEST, {"ok": False, "message": f"unknown action {action!r}"}
        if not self.cluster.all_namespaces and namespace != self.cluster.namespace:
            return HTTPStatus.BAD_REQUEST, {"ok": False, "message": f"namespace {namespace!r} is not shown"}
        cluster = Cluster(api=self.cluster.api, namespace=namespace)
        try:
            decision = steer(cluster, name, action)
        except CliError as exc:
            cause = exc.__cause__
            status = cause.status if isinstance(cause, ApiError) else HTTPStatus.CONFLICT
            return status, {"ok": False, "message": exc.message}
        return HTTPStatus.OK, {"ok": True, "message": decision.message}


def _asset(name: str) -> bytes:
    return resources.files("tidegate.cli").joinpath("dashboard_assets", name).read_bytes()


def handler_for(hub: Hub, allowed_hosts: set[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "tidegate-dashboard"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the terminal is the person's: no access log

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: Any) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def _host_ok(self) -> bool:
            if self.headers.get("Host", "") in allowed_hosts:
                return True
            self._json(HTTPStatus.FORBIDDEN, {"ok": False, "message": "unexpected Host header"})
            return False

        def do_GET(self) -> None:
            if not self._host_ok():
                return
            url = urlsplit(self.path)
            if url.path in ASSETS:
                file, content_type = ASSETS[url.path]
                self._send(HTTPStatus.OK, _asset(file), content_type)
            elif url.path == "/api/stream":
                query = parse_qs(url.query)
                ns, name = query.get("namespace", [""])[0], query.get("name", [""])[0]
                self._stream((ns, name) if name else None)
            elif url.path == "/" or url.path.startswith("/rollouts/"):
                self._send(HTTPStatus.OK, _asset("index.html"), "text/html; charset=utf-8")
            else:
                self._json(HTTPStatus.NOT_FOUND, {"ok": False, "message": "not found"})

        def _stream(self, key: tuple[str, str] | None) -> None:
            """Server-sent events: the page's view now, then again after every change that alters it."""
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            page = "rollout" if key else "overview"
            seen, sent = -1, ""
            try:
                while not hub.closed:
                    version = hub.wait(seen, KEEPALIVE_SECONDS)
                    if version == seen:
                        self.wfile.write(b": keepalive\n\n")
                    else:
                        seen = version
                        data = hub.view(page, key)
                        if data != sent:
                            sent = data
                            self.wfile.write(f"id: {version}\ndata: {data}\n\n".encode())
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return

        def do_POST(self) -> None:
            if not self._host_ok():
                return
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.split("/") if p]
            # /api/rollouts/NAMESPACE/NAME/ACTION
            if len(parts) != 5 or parts[:2] != ["api", "rollouts"]:
                self._json(HTTPStatus.NOT_FOUND, {"ok": False, "message": "not found"})
                return
            if self.headers.get(CSRF_HEADER) != "1" or not (
                self.headers.get("Content-Type") or ""
            ).startswith("application/json"):
                self._json(
                    HTTPStatus.FORBIDDEN, {"ok": False, "message": f"writes need JSON and {CSRF_HEADER}"}
                )
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            status, payload = hub.act(parts[2], parts[3], parts[4])
            self._json(status, payload)

    return Handler


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True


def serve(hub: Hub, port: int) -> DashboardServer:
    """Bind 127.0.0.1:port (0: any free port); the caller runs `serve_forever`."""
    server = DashboardServer(("127.0.0.1", port), BaseHTTPRequestHandler)
    actual = server.server_address[1]
    server.RequestHandlerClass = handler_for(hub, {f"127.0.0.1:{actual}", f"localhost:{actual}"})
    return server


@click.command("dashboard")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port (0: any free).",
)
@click.option("--no-browser", is_flag=True, help="Do not open the page in a web browser.")
@cluster_options(all_namespaces=True)
def command(port: int, no_browser: bool, target: Target) -> None:
    """Serve a live web dashboard of the Rollouts on 127.0.0.1, until Ctrl-C.

    An overview of every Rollout in the namespace (-A: in all), and a page per Rollout:
    its steps, a chart of the canary weight over time, AnalysisRuns with each metric's
    measurements plotted against its condition or judge, revisions with their images and
    pods, recent Events; buttons promote, promote --full, abort, retry, pause, resume and
    restart write the same intents as the commands of those names, after a confirmation.
    It uses your kubeconfig's credentials and nothing more: what RBAC refuses, the page
    says so. Updates arrive from the API server's watches as they happen.

    \b
    Example:
      tidegate dashboard -n shop
      kubectl tidegate dashboard -A --port 3200 --no-browser
    """
    cluster = target.connect()
    hub = Hub(cluster)
    try:
        server = serve(hub, port)
    except OSError as exc:
        raise CliError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from exc
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    where = "all namespaces" if cluster.all_namespaces else f"namespace {cluster.namespace}"
    click.echo(f"Tidegate dashboard at {url} ({where}); Ctrl-C stops it")
    hub.start()
    if not no_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()
        server.server_close()

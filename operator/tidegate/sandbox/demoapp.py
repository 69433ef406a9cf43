"""The demo app: an HTTP server whose error rate and latency are set per version.

    python -m tidegate.sandbox.demoapp --port 8080 --error-rate 0.2 --latency-ms 40

Every path but `/metrics` answers 200, or 500 for the configured share of requests, after
a latency drawn from a lognormal distribution around `--latency-ms` (the median) with
shape `--latency-sigma`. `/metrics` exports, for Prometheus:

    http_requests_total{code="200"|"500"}      counter
    http_request_duration_seconds_bucket{le}   histogram (+ _sum, _count)
    demoapp_config{error_rate, latency_ms}     gauge, always 1: what this process was told

Choices, and why:

- Errors are spread evenly by default (request n fails when floor(n * rate) grows), so
  that any window of N requests holds N * rate errors, plus or minus one. Analysis on a
  demo must be reproducible; `--error-pattern random` draws each request instead.
- The handler sleeps the drawn latency (clients see it) but records the *drawn* value in
  the histogram, not the wall-clock time: on a busy two-core machine the scheduler would
  add noise that says nothing about the version. `--no-sleep` skips the sleep.
- Pod name and hash are not labels of the app: Prometheus adds them as target labels
  (see podprocs.py), as a Kubernetes service discovery would.

Configuration also comes from the environment (DEMO_PORT, DEMO_ERROR_RATE,
DEMO_LATENCY_MS, DEMO_LATENCY_SIGMA); flags win. Only 127.0.0.1 is ever bound.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

HOST = "127.0.0.1"

LATENCY_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.015,
    0.02,
    0.025,
    0.03,
    0.035,
    0.04,
    0.05,
    0.06,
    0.07,
    0.08,
    0.1,
    0.125,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
)
"""Seconds. Fine steps (5 ms) from 5 to 40 ms, where demo medians sit, so that
histogram_quantile's linear interpolation inside a bucket stays within a few percent."""

MAX_LATENCY_SECONDS = 10.0
"""A drawn latency is capped here so that one unlucky draw cannot hold a thread for long."""


@dataclass(frozen=True)
class Behaviour:
    error_rate: float = 0.0
    latency_ms: float = 20.0
    latency_sigma: float = 0.3
    error_pattern: str = "even"  # "even" | "random"
    sleep: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error rate must be within [0, 1], got {self.error_rate}")
        if self.latency_ms < 0 or self.latency_sigma < 0:
            raise ValueError("latency and its sigma must not be negative")
        if self.error_pattern not in ("even", "random"):
            raise ValueError(f"error pattern must be 'even' or 'random', got {self.error_pattern!r}")


class DemoApp:
    """The behaviour and the metrics, apart from any server: `handle()` decides one request."""

    def __init__(self, behaviour: Behaviour, *, seed: int | None = None) -> None:
        self.behaviour = behaviour
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests", "HTTP requests answered, by status code", ["code"], registry=self.registry
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (the simulated latency)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        config = Gauge(
            "demoapp_config",
            "The behaviour this process was configured with (always 1)",
            ["error_rate", "latency_ms", "latency_sigma"],
            registry=self.registry,
        )
        config.labels(str(behaviour.error_rate), str(behaviour.latency_ms), str(behaviour.latency_sigma)).set(
            1
        )
        # Both codes exist from the start, so rate() of either is 0 rather than no data.
        self.requests.labels("200")
        self.requests.labels("500")
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._served = 0

    def _is_error(self) -> bool:
        rate = self.behaviour.error_rate
        with self._lock:
            n = self._served
            self._served += 1
            if self.behaviour.error_pattern == "random":
                return self._random.random() < rate
        return math.floor((n + 1) * rate) > math.floor(n * rate)

    def _latency(self) -> float:
        b = self.behaviour
        if b.latency_ms <= 0:
            return 0.0
        with self._lock:
            drawn = self._random.lognormvariate(math.log(b.latency_ms / 1000.0), b.latency_sigma)
        return min(drawn, MAX_LATENCY_SECONDS)

    def handle(self) -> tuple[int, float]:
        """Decide one request: its status code and latency (seconds); count it."""
        code = 500 if self._is_error() else 200
        latency = self._latency()
        self.requests.labels(str(code)).inc()
        self.duration.observe(latency)
        return code, latency

    def metrics(self) -> bytes:
        return generate_latest(self.registry)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the load generator reuses connections
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall
    server: _Server

    def do_GET(self) -> None:
        app = self.server.app
        if self.path.split("?", 1)[0] == "/metrics":
            self._send(200, app.metrics(), CONTENT_TYPE_LATEST)
            return
        self._drain_body()
        code, latency = app.handle()
        if app.behaviour.sleep and latency > 0:
            time.sleep(latency)
        body = json.dumps({"code": code, "latency_ms": round(latency * 1000, 3)}).encode()
        self._send(code, body, "application/json")

    do_POST = do_GET
    do_PUT = do_GET
    do_DELETE = do_GET

    def do_HEAD(self) -> None:
        self._send(200, b"", "text/plain")

    def _drain_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(length)

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown the sandbox's logs


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, app: DemoApp, port: int = 0, listen_fd: int | None = None) -> None:
        self.app = app
        if listen_fd is None:
            super().__init__((HOST, port), _Handler)
            return
        # A socket the supervisor bound and passed on: its port was known before we started.
        super().__init__((HOST, 0), _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = socket.socket(fileno=listen_fd)
        self.server_address = self.socket.getsockname()
        self.socket.listen(128)


def serve(
    app: DemoApp, port: int = 0, listen_fd: int | None = None
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Serve `app` on 127.0.0.1 in a background thread; returns the server and the thread."""
    server = _Server(app, port, listen_fd)
    thread = threading.Thread(target=server.serve_forever, name="demoapp", daemon=True)
    thread.start()
    return server, thread


def _exit_with_parent() -> None:
    """Exit when the process that started us is gone (a supervisor killed with SIGKILL)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tidegate.sandbox.demoapp", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=int(_env_float("DEMO_PORT", 0)), help="0 picks a free one")
    p.add_argument("--listen-fd", type=int, default=None, help="serve on this inherited, bound socket")
    p.add_argument("--error-rate", type=float, default=_env_float("DEMO_ERROR_RATE", 0.0))
    p.add_argument("--latency-ms", type=float, default=_env_float("DEMO_LATENCY_MS", 20.0))
    p.add_argument("--latency-sigma", type=float, default=_env_float("DEMO_LATENCY_SIGMA", 0.3))
    p.add_argument("--error-pattern", choices=("even", "random"), default="even")
    p.add_argument("--no-sleep", action="store_true", help="record the latency without waiting it")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--exit-with-parent", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from prometheus_client import disable_created_metrics

    args = parse_args(argv)
    # No *_created series: fewer series, and nothing analysis wants.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        behaviour = Behaviour(
            error_rate=args.error_rate,
            latency_ms=args.latency_ms,
            latency_sigma=args.latency_sigma,
            error_pattern=args.error_pattern,
            sleep=not args.no_sleep,
        )
    except ValueError as exc:
        sys.exit(f"demoapp: {exc}")
    if args.exit_with_parent:
        _exit_with_parent()
    server = _Server(DemoApp(behaviour, seed=args.seed), args.port, args.listen_fd)
    signal.signal(signal.SIGTERM, lambda _s, _f: sys.exit(0))
    print(
        f"demoapp: listening on http://{HOST}:{server.server_address[1]} "
        f"error_rate={behaviour.error_rate} latency_ms={behaviour.latency_ms}",
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.5)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()

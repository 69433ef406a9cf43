"""A real Prometheus for tests, and a prometheus_client exporter for it to scrape.

    registry = CollectorRegistry()
    Gauge("demo_ratio", "a ratio", registry=registry).set(0.97)
    with serve_exporter(registry) as exporter, running_prometheus(tmp_path, [exporter.target]) as prom:
        prom.wait_for("demo_ratio", lambda data: bool(data["result"]))
        ...  # prom.url is http://127.0.0.1:<port>

The binary is Debian's `prometheus` package (`make testenv` installs it), or the path in
$TIDEGATE_PROMETHEUS. Nothing is installed here: a missing binary fails the test with a
message saying how to get it. Prometheus listens on 127.0.0.1 on a free port and keeps its
data in the given directory, so it never meets a system-wide instance.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, start_http_server

__all__ = ["Exporter", "PrometheusServer", "find_prometheus", "running_prometheus", "serve_exporter"]

START_TIMEOUT = 60.0
"""Seconds for Prometheus to become ready (its first start on a slow machine takes a few)."""


def find_prometheus() -> str:
    """Path of the prometheus binary; fails the test with instructions when there is none."""
    candidates = [os.environ.get("TIDEGATE_PROMETHEUS"), shutil.which("prometheus"), "/usr/bin/prometheus"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        "the prometheus binary is missing: run `make testenv` (installs Debian's prometheus package, "
        "or `apt-get install -y prometheus`), or set TIDEGATE_PROMETHEUS to its path",
        pytrace=False,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Exporter:
    """A /metrics endpoint serving one registry on 127.0.0.1."""

    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextmanager
def serve_exporter(registry: CollectorRegistry) -> Iterator[Exporter]:
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield Exporter(port=server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class PrometheusServer:
    """One Prometheus process scraping `targets` every `scrape_interval`."""

    def __init__(self, workdir: Path, targets: list[str], *, scrape_interval: str = "1s") -> None:
        self.binary = find_prometheus()
        self.workdir = workdir
        self.targets = targets
        self.scrape_interval = scrape_interval
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        config = self.workdir / "prometheus.yml"
        targets = ", ".join(f'"{target}"' for target in self.targets)
        config.write_text(
            "global:\n"
            f"  scrape_interval: {self.scrape_interval}\n"
            f"  evaluation_interval: {self.scrape_interval}\n"
            "scrape_configs:\n"
            "  - job_name: exporter\n"
            "    static_configs:\n"
            f"      - targets: [{targets}]\n"
        )
        return config

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start(self) -> None:
        config = self._write_config()
        for _attempt in range(3):  # a free port can be taken between choosing and binding it
            self.port = free_port()
            storage = self.workdir / f"data-{self.port}"
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [
                        self.binary,
                        f"--config.file={config}",
                        f"--storage.tsdb.path={storage}",
                        f"--web.listen-address=127.0.0.1:{self.port}",
                        "--storage.tsdb.retention.time=1h",
                        "--log.level=warn",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.workdir,
                )
            if self._wait_ready():
                return
            if "address already in use" not in self.log_tail():
                break
        self.stop()
        pytest.fail(
            f"prometheus did not become ready on {self.url}; its log:\n{self.log_tail()}", pytrace=False
        )

    def _wait_ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        return False

    def query(self, promql: str) -> dict[str, Any]:
        """The `data` of an instant query; fails the test on an API error."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            pytest.fail(f"query {promql!r} failed: {body}", pytrace=False)
        data: dict[str, Any] = body["data"]
        return data

    def wait_for(
        self, promql: str, ready: Callable[[dict[str, Any]], bool], *, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Poll a query until `ready(data)` holds; fail with the last answer at the deadline."""
        deadline = time.monotonic() + timeout
        data: dict[str, Any] = {}
        while time.monotonic() < deadline:
            data = self.query(promql)
            if ready(data):
                return data
            time.sleep(0.25)
        pytest.fail(
            f"prometheus never answered {promql!r} as expected within {timeout:.0f}s; "
            f"last answer: {data}; log:\n{self.log_tail()}",
            pytrace=False,
        )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


@contextmanager
def running_prometheus(
    workdir: Path, targets: list[str], *, scrape_interval: str = "1s"
) -> Iterator[PrometheusServer]:
    server = PrometheusServer(workdir, targets, scrape_interval=scrape_interval)
    try:
        server.start()
        yield server
    finally:
        server.stop()

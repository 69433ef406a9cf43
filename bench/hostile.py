"""What hostile analysis costs the operator: RSS and /healthz latency while a web metric answers
20 MiB (or 100 MiB), and while a condition cubic in its 60-element result is evaluated.

    .venv/bin/python bench/hostile.py [--cases big20,big100,cubic] [--json]

Starts its own sandbox (a temporary directory, no Prometheus), the operator as a subprocess with
the sandbox's outbound policy (loopback allowed, `tidegate.sandbox.OUTBOUND_ENV`), and a local
HTTP server. For each case: a namespace, an AnalysisTemplate whose web metric calls that server,
a canary Rollout whose new revision runs it; from the update until the measurement is recorded
(an Error: the size cap, or the condition's budget), /healthz is probed every 0.25 s with the
chart's liveness timeout (5 s) and the operator's VmRSS sampled. Prints, per case: probes, failed
probes, p50 / p99 / max latency, RSS before and at its peak, seconds to the measurement, and its
message. Before the size cap and the budget (issue 12): 20 MiB froze the operator ~130 s with RSS
from 187 MB to 1.04 GB; the cubic condition timed out 10 of 19 probes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from bench.idle import free_port

MIB = 1024 * 1024
LIVENESS_TIMEOUT = 5.0
CUBIC = "result.map(a, result.map(b, result.map(c, a + b + c))).size() > 0"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        try:
            if self.path.startswith("/big/"):
                size = int(self.path.rsplit("/", 1)[1]) * MIB
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                chunk = b"1," * (MIB // 2)
                self.wfile.write(b"[")
                for _ in range(size // len(chunk)):
                    self.wfile.write(chunk)
                self.wfile.write(b"1]")
            else:
                body = json.dumps(list(range(60))).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


@dataclass
class Case:
    name: str
    probes: int = 0
    failed: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    rss_before_mib: float = 0.0
    rss_peak_mib: float = 0.0
    seconds_to_measurement: float = 0.0
    message: str = ""
    failures: list[str] = field(default_factory=list)


def rss_bytes(pid: int) -> int:
    """A process's resident set size (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _say(message: str) -> None:
    print(f"[hostile] {message}", file=sys.stderr, flush=True)


def _docs(url: str, condition: str, json_path: str) -> list[dict[str, Any]]:
    template = {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "hostile"},
        "spec": {
            "metrics": [
                {
                    "name": "hostile",
                    "successCondition": condition,
                    "consecutiveErrorLimit": 0,
                    "provider": {"web": {"url": url, "jsonPath": json_path, "timeoutSeconds": 30}},
                }
            ]
        },
    }
    rollout = {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.example/web:1.0"}]},
            },
            "strategy": {
                "canary": {
                    "steps": [{"setWeight": 50}, {"analysis": {"templates": [{"templateName": "hostile"}]}}]
                }
            },
        },
    }
    return [template, rollout]


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise TimeoutError(f"no {what} within {timeout:.0f}s")


def run_case(
    sandbox: Any, pid: int, metrics_port: int, name: str, url: str, condition: str, path: str
) -> Case:
    namespace = f"bench-hostile-{name}"
    sandbox.kubectl("create", "namespace", namespace)
    sandbox.kubectl("-n", namespace, "wait", "--for=create", "serviceaccount/default", "--timeout=60s")
    docs = _docs(url, condition, path)

    def kubectl(*args: str, input: str | None = None) -> str:
        return str(sandbox.kubectl("-n", namespace, *args, input=input).stdout)

    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    def healthy() -> bool:
        st = json.loads(kubectl("get", "rollout.tidegate.io/web", "-o", "json")).get("status") or {}
        return st.get("phase") == "Healthy"

    _wait(healthy, 90, "Healthy rollout")
    case = Case(name, rss_before_mib=rss_bytes(pid) / MIB)
    latencies: list[float] = []
    rss: list[int] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{metrics_port}/healthz", timeout=LIVENESS_TIMEOUT
                ) as answer:
                    answer.read()
                latencies.append(time.monotonic() - started)
            except Exception as error:
                case.failed += 1
                case.failures.append(f"{type(error).__name__}: {error}")
            rss.append(rss_bytes(pid))
            stop.wait(0.25)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    started = time.monotonic()
    docs[1]["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example/web:2.0"
    kubectl("apply", "-f", "-", input=yaml.safe_dump(docs[1]))

    def measured() -> str | None:
        for run in json.loads(kubectl("get", "analysisruns.tidegate.io", "-o", "json"))["items"]:
            for result in (run.get("status") or {}).get("metricResults") or []:
                for m in result.get("measurements") or []:
                    if m.get("phase") and m.get("phase") != "Running":
                        return f"{m['phase']}: {m.get('message')}"
        return None

    try:
        case.message = _wait(measured, 600, "measurement")
        case.seconds_to_measurement = time.monotonic() - started
        time.sleep(2)  # two more seconds of probes after the measurement, for the figures
    finally:
        stop.set()
        thread.join(timeout=LIVENESS_TIMEOUT + 1)
    case.probes = len(latencies) + case.failed
    if latencies:
        ordered = sorted(latencies)
        case.p50_ms = statistics.median(ordered) * 1000
        case.p99_ms = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        case.max_ms = ordered[-1] * 1000
    case.rss_peak_mib = max(rss, default=0) / MIB
    return case


def render(cases: list[Case]) -> str:
    lines = [
        "| case | probes | failed | p50 ms | p99 ms | max ms | RSS before MiB | RSS peak MiB"
        " | s to measurement |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        lines.append(
            f"| {c.name} | {c.probes} | {c.failed} | {c.p50_ms:.1f} | {c.p99_ms:.1f} | {c.max_ms:.1f} | "
            f"{c.rss_before_mib:.0f} | {c.rss_peak_mib:.0f} | {c.seconds_to_measurement:.1f} |"
        )
    lines += [f"- {c.name}: {c.message}" for c in cases]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default="big20,big100,cubic")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        from tidegate.sandbox import OUTBOUND_ENV
        from tidegate.sandbox.cluster import Sandbox
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
        from tidegate.sandbox import OUTBOUND_ENV
        from tidegate.sandbox.cluster import Sandbox

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    catalogue = {
        "big20": (f"{base}/big/20", "true", "$[0]"),
        "big100": (f"{base}/big/100", "true", "$[0]"),
        "cubic": (f"{base}/list", CUBIC, "$"),
    }
    keep = Path(tempfile.mkdtemp(prefix="tidegate-bench-hostile-logs-"))
    sandbox = Sandbox(Path(tempfile.mkdtemp(prefix="tidegate-bench-hostile-")))
    operator: subprocess.Popen[bytes] | None = None
    cases: list[Case] = []
    try:
        _say(f"sandbox in {sandbox.directory} (operator log in {keep})")
        sandbox.up(prometheus=False, log=_say)
        metrics_port = free_port()
        with open(keep / "operator.log", "ab") as log:
            operator = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tidegate.cli.main",
                    "operator",
                    "--metrics-host=127.0.0.1",
                    f"--metrics-port={metrics_port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **OUTBOUND_ENV, "KUBECONFIG": str(sandbox.kubeconfig)},
                start_new_session=True,
            )
        for name in args.cases.split(","):
            url, condition, path = catalogue[name]
            _say(f"case {name}")
            cases.append(run_case(sandbox, operator.pid, metrics_port, name, url, condition, path))
    finally:
        if operator is not None:
            os.killpg(operator.pid, signal.SIGTERM)
            operator.wait(timeout=30)
        sandbox.down(log=_say)
        server.shutdown()
    print(json.dumps([asdict(c) for c in cases], indent=2) if args.json else render(cases))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

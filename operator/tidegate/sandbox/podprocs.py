"""The per-pod process supervisor: a real demo app behind every Ready demo pod.

kwok's pods run no containers. For every Running and Ready pod annotated
`demo.tidegate.io/app: "true"` (in any namespace) this supervisor runs one demoapp
process on 127.0.0.1, configured by the pod's annotations:

    demo.tidegate.io/error-rate     share of requests answered 500 (default 0)
    demo.tidegate.io/latency-ms     median latency in ms (default 20)
    demo.tidegate.io/latency-sigma  lognormal shape (default 0.3)

It stops the process when the pod goes away, starts terminating or stops being Ready,
and restarts it when those annotations change. For each process it keeps:

- a Prometheus file-discovery target (the sandbox's `targets.json`) labelled
  `namespace`, `pod`, `rollouts_pod_template_hash`, `app` and `demo_pod="true"`. The file
  is rewritten whole: entries whose labels lack `demo_pod` belong to others and are kept.
- an entry in `<sandbox>/podprocs.json`: {"pods": {"<ns>/<pod>": {port, hash, namespace,
  app, pod, labels, error_rate, latency_ms, pid}}}, which the load generator reads.

It also runs the load generator (loadgen.py) on a thread, unless `--rate 0`.

    python -m tidegate.sandbox.podprocs --kubeconfig K --sandbox-dir D

`tidegate sandbox up` starts it (`start_supervisor`) after Prometheus, records its pid as
`podprocs` and `down` stops it with its process group, demo apps included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tidegate.core.hashing import HASH_LABEL
from tidegate.sandbox._base import SandboxDir, _pid_alive
from tidegate.sandbox._base import SandboxDir as Sandbox

ANNOTATION_APP = "demo.tidegate.io/app"
ANNOTATION_ERROR_RATE = "demo.tidegate.io/error-rate"
ANNOTATION_LATENCY_MS = "demo.tidegate.io/latency-ms"
ANNOTATION_LATENCY_SIGMA = "demo.tidegate.io/latency-sigma"
DEFAULT_ERROR_RATE = 0.0
DEFAULT_LATENCY_MS = 20.0
DEFAULT_LATENCY_SIGMA = 0.3

REGISTRY_FILE = "podprocs.json"
LOADGEN_STATUS_FILE = "loadgen.json"
DEMO_LABEL = "demo_pod"
HASH_TARGET_LABEL = HASH_LABEL.replace("-", "_")  # rollouts_pod_template_hash
RESTART_BACKOFF_SECONDS = 2.0
"""A pod whose process died is given a new one at most this often."""

log = logging.getLogger("tidegate.sandbox.podprocs")


# ---------------------------------------------------------------- decisions (pure)
@dataclass(frozen=True)
class DemoPod:
    """A pod that should have a demo app process now, and how that process behaves."""

    namespace: str
    name: str
    uid: str
    hash: str
    app: str
    labels: tuple[tuple[str, str], ...]
    error_rate: float = DEFAULT_ERROR_RATE
    latency_ms: float = DEFAULT_LATENCY_MS
    latency_sigma: float = DEFAULT_LATENCY_SIGMA

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _number(annotations: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = annotations.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(str(raw).strip().rstrip("%")) / (100.0 if str(raw).strip().endswith("%") else 1.0)
    except ValueError:
        log.warning("ignoring %s=%r: not a number; using %s", name, raw, default)
        return default
    return min(max(value, low), high)


def is_demo(pod: Mapping[str, Any]) -> bool:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(ANNOTATION_APP, "")).lower() == "true"


def is_serving(pod: Mapping[str, Any]) -> bool:
    """Running, Ready and not terminating: the state in which endpoints list a pod."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def demo_pod(pod: Mapping[str, Any]) -> DemoPod | None:
    """The process a pod (the API's JSON form) should have, or None for no process."""
    if not (is_demo(pod) and is_serving(pod)):
        return None
    meta = pod.get("metadata") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    annotations = meta.get("annotations") or {}
    return DemoPod(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name")),
        uid=str(meta.get("uid") or ""),
        hash=labels.get(HASH_LABEL, ""),
        app=labels.get("app", ""),
        labels=tuple(sorted(labels.items())),
        error_rate=_number(annotations, ANNOTATION_ERROR_RATE, DEFAULT_ERROR_RATE, 0.0, 1.0),
        latency_ms=_number(annotations, ANNOTATION_LATENCY_MS, DEFAULT_LATENCY_MS, 0.0, 10_000.0),
        latency_sigma=_number(annotations, ANNOTATION_LATENCY_SIGMA, DEFAULT_LATENCY_SIGMA, 0.0, 3.0),
    )


def target(pod: DemoPod, port: int) -> dict[str, Any]:
    """The file-discovery entry for one pod's process."""
    labels = {"namespace": pod.namespace, "pod": pod.name, "app": pod.app, DEMO_LABEL: "true"}
    if pod.hash:
        labels[HASH_TARGET_LABEL] = pod.hash
    return {"targets": [f"127.0.0.1:{port}"], "labels": labels}


def merge_targets(
    existing: Iterable[Mapping[str, Any]], ours: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Others' entries (no `demo_pod` label) as they were, then ours."""
    kept = [dict(e) for e in existing if DEMO_LABEL not in (e.get("labels") or {})]
    return kept + sorted(ours, key=lambda t: (t["labels"]["namespace"], t["labels"]["pod"]))


def registry_entry(pod: DemoPod, port: int, pid: int) -> dict[str, Any]:
    return {
        "namespace": pod.namespace,
        "pod": pod.name,
        "port": port,
        "hash": pod.hash,
        "app": pod.app,
        "labels": dict(pod.labels),
        "error_rate": pod.error_rate,
        "latency_ms": pod.latency_ms,
        "pid": pid,
    }


# --------------------------------------------------------------------- processes
@dataclass
class _Process:
    pod: DemoPod
    port: int
    proc: subprocess.Popen[bytes]
    started: float


class Supervisor:
    """Watches pods, runs their processes, keeps the targets and the registry in step."""

    def __init__(
        self,
        sandbox_dir: Path,
        api_client: Any,
        *,
        rate: float = 20.0,
        max_in_flight: int = 64,
        python: str = sys.executable,
    ) -> None:

        self.sandbox = SandboxDir(sandbox_dir)
        self.api_client = api_client
        self.rate = rate
        self.max_in_flight = max_in_flight
        self.python = python
        self.registry_path = sandbox_dir / REGISTRY_FILE
        self.stop_event = threading.Event()
        self._changed = threading.Event()
        self._lock = threading.Lock()
        self._pods: dict[str, dict[str, Any]] = {}  # annotated pods, as the watch last saw them
        self._procs: dict[str, _Process] = {}
        self._last_start: dict[str, float] = {}
        self._registry: dict[str, dict[str, Any]] = {}
        self._registry_lock = threading.Lock()
        self._written_registry: dict[str, dict[str, Any]] | None = None
        self.loadgen: Any = None

    # ------------------------------------------------------------------ watch
    def _set_pod(self, event_type: str, pod: Mapping[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        with self._lock:
            if event_type == "DELETED" or not is_demo(pod):
                if self._pods.pop(key, None) is None:
                    return
            else:
                self._pods[key] = dict(pod)
        self._changed.set()

    def _relist(self, core: Any) -> str:
        resp: Any = core.list_pod_for_all_namespaces(_preload_content=False, _request_timeout=30)
        body = json.loads(resp.data)
        pods = {
            f"{p['metadata']['namespace']}/{p['metadata']['name']}": p
            for p in body.get("items") or []
            if is_demo(p)
        }
        with self._lock:
            self._pods = pods
        self._changed.set()
        return str(body["metadata"]["resourceVersion"])

    def watch_pods(self) -> None:
        """List, then watch from that resourceVersion; list again after any error."""
        from kubernetes import client
        from kubernetes.watch.watch import iter_resp_lines

        core = client.CoreV1Api(self.api_client)
        version: str | None = None
        while not self.stop_event.is_set():
            try:
                if version is None:
                    version = self._relist(core)
                stream: Any = core.list_pod_for_all_namespaces(
                    watch=True,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=120,
                    _preload_content=False,
                    _request_timeout=(10, 150),
                )
                try:
                    for line in iter_resp_lines(stream):  # type: ignore[no-untyped-call]
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":  # 410 Gone, usually: list again
                            log.info("watch: %s; listing again", obj.get("message"))
                            version = None
                            break
                        version = (obj.get("metadata") or {}).get("resourceVersion") or version
                        if event.get("type") != "BOOKMARK":
                            self._set_pod(str(event.get("type")), obj)
                        if self.stop_event.is_set():
                            return
                finally:
                    stream.close()
                    stream.release_conn()
            except Exception as exc:
                log.warning("watch: %s; listing again in 1s", exc)
                version = None
                self.stop_event.wait(1.0)

    # -------------------------------------------------------------- processes
    def _start(self, pod: DemoPod) -> None:
        # Bind here and hand the socket over: the port is known (for the targets and the
        # load) before the child has started, and no other process can take it meanwhile.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            port = int(sock.getsockname()[1])
            fd = sock.fileno()
            argv = [
                self.python,
                "-m",
                "tidegate.sandbox.demoapp",
                "--listen-fd",
                str(fd),
                "--error-rate",
                str(pod.error_rate),
                "--latency-ms",
                str(pod.latency_ms),
                "--latency-sigma",
                str(pod.latency_sigma),
                "--exit-with-parent",
            ]
            self.sandbox.logs.mkdir(parents=True, exist_ok=True)
            with open(self.sandbox.logs / "demoapp.log", "ab") as out:
                out.write(f"--- {time.strftime('%H:%M:%S')} {pod.key} on port {port}\n".encode())
                out.flush()
                proc = subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, pass_fds=(fd,)
                )
        finally:
            sock.close()
        self._procs[pod.key] = _Process(pod, port, proc, time.monotonic())
        self._last_start[pod.key] = time.monotonic()
        log.info(
            "started %s on 127.0.0.1:%d (pid %d, hash %s, error-rate %s, latency %sms)",
            pod.key,
            port,
            proc.pid,
            pod.hash or "-",
            pod.error_rate,
            pod.latency_ms,
        )

    def _stop(self, key: str, why: str) -> None:
        running = self._procs.pop(key)
        proc = running.proc
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=3)
        log.info("stopped %s (port %d): %s", key, running.port, why)

    def reconcile(self) -> None:
        """One pass: processes for exactly the serving demo pods; then targets and registry."""
        with self._lock:
            raw = list(self._pods.values())
        desired = {p.key: p for p in (demo_pod(r) for r in raw) if p is not None}
        for key in list(self._procs):
            running = self._procs[key]
            if key not in desired:
                self._stop(key, "the pod is gone, terminating or not Ready")
            elif desired[key] != running.pod:
                self._stop(key, "its pod or annotations changed")
            elif running.proc.poll() is not None:
                log.warning("%s: demoapp exited with %s", key, running.proc.returncode)
                self._procs.pop(key)
        now = time.monotonic()
        for key, pod in desired.items():
            if key in self._procs:
                continue
            if now - self._last_start.get(key, -1e9) < RESTART_BACKOFF_SECONDS:
                continue  # the periodic pass tries again
            try:
                self._start(pod)
            except OSError as exc:
                log.error("%s: cannot start demoapp: %s", key, exc)
        for key in list(self._last_start):
            if key not in desired:
                del self._last_start[key]
        self._publish()

    def _publish(self) -> None:
        registry = {key: registry_entry(p.pod, p.port, p.proc.pid) for key, p in sorted(self._procs.items())}
        with self._registry_lock:
            self._registry = registry
        if registry != self._written_registry:
            _write_json(self.registry_path, {"pods": registry})
            self._written_registry = registry
        self._sync_targets([target(p.pod, p.port) for p in self._procs.values()])

    def _sync_targets(self, ours: list[dict[str, Any]]) -> None:
        from tidegate.sandbox.prometheus import targets_file, write_targets

        path = targets_file(self.sandbox)
        if not path.parent.is_dir():
            return  # no Prometheus in this sandbox
        try:
            existing = json.loads(path.read_text())
        except (OSError, ValueError):
            existing = []
        merged = merge_targets(existing if isinstance(existing, list) else [], ours)
        if merged != existing:  # also repairs the file when someone else dropped our entries
            write_targets(self.sandbox, merged)

    def registry(self) -> dict[str, dict[str, Any]]:
        with self._registry_lock:
            return dict(self._registry)

    # -------------------------------------------------------------------- run
    def run(self) -> None:
        threading.Thread(target=self.watch_pods, name="pod-watch", daemon=True).start()
        if self.rate > 0:
            from tidegate.sandbox.loadgen import KubeRoutingReader, LoadGenerator

            self.loadgen = LoadGenerator(
                self.registry,
                KubeRoutingReader(self.api_client),
                rate=self.rate,
                max_in_flight=self.max_in_flight,
                status_path=self.sandbox.directory / LOADGEN_STATUS_FILE,
            )
            self.loadgen.start()
        log.info("supervising demo pods (load: %s req/s per app)", self.rate or "off")
        try:
            while not self.stop_event.is_set():
                self._changed.wait(1.0)  # also a periodic pass: dead processes, lost targets
                self._changed.clear()
                if self.stop_event.is_set():
                    break
                try:
                    self.reconcile()
                except Exception:
                    log.exception("reconcile failed; trying again")
        finally:
            self.shutdown()

    def stop(self) -> None:
        self.stop_event.set()
        self._changed.set()  # wake the loop now

    def shutdown(self) -> None:
        if self.loadgen is not None:
            self.loadgen.stop()
        running = list(self._procs.values())
        self._procs.clear()
        for p in running:  # all at once: each exits on SIGTERM within milliseconds
            if p.proc.poll() is None:
                p.proc.terminate()
        for p in running:
            try:
                p.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.proc.kill()
        log.info("stopped %d demo app processes: the supervisor stops", len(running))
        with contextlib.suppress(Exception):
            self._publish()


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


# -------------------------------------------------------------- start / command
def start_supervisor(sandbox: Sandbox, log: Callable[[str], None] = print) -> None:
    """Start the supervisor as a sandbox child (pid `podprocs`), unless it already runs."""
    state = sandbox.state()
    pid = state.get("pids", {}).get("podprocs")
    if pid and _pid_alive(pid):
        return
    argv = [
        sys.executable,
        "-m",
        "tidegate.sandbox.podprocs",
        "--kubeconfig",
        str(sandbox.kubeconfig),
        "--sandbox-dir",
        str(sandbox.directory),
    ]
    sandbox._spawn(state, "podprocs", argv)
    log(f"sandbox: demo pod supervisor running (pid {state['pids']['podprocs']})")


def main(argv: list[str] | None = None) -> None:
    from kubernetes import config

    p = argparse.ArgumentParser(
        prog="python -m tidegate.sandbox.podprocs", description=__doc__.split("\n")[0]
    )
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--sandbox-dir", required=True, type=Path)
    p.add_argument("--rate", type=float, default=20.0, help="load per app in requests/s; 0: no load")
    p.add_argument("--max-in-flight", type=int, default=64)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api = config.new_client_from_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    supervisor = Supervisor(args.sandbox_dir, api, rate=args.rate, max_in_flight=args.max_in_flight)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: supervisor.stop())
    supervisor.run()


if __name__ == "__main__":
    main()

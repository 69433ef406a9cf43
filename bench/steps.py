"""Tidegate and Argo Rollouts side by side: N concurrent Istio canaries through their steps.

    make argo && .venv/bin/python bench/steps.py [--count 100] [--quick] [--json]

Starts its own sandbox (a temporary directory, no Prometheus) and installs both groups'
CRDs on its one API server: tidegate.io (crds/) and argoproj.io (from the module source
that `make argo` downloaded). Then, for each controller in turn (never both at once, so
neither steals the other's CPU on a small machine), in a namespace of its own:

1. creates N Services pairs (stable, canary), N VirtualServices (route `primary`, stable
   100 / canary 0) and N Rollouts of the same shape for both (replicas 1, canary with
   stableService/canaryService, trafficRouting.istio.virtualService, scaleDownDelaySeconds 0,
   steps setWeight 50 / pause {} / setWeight 100), starts the controller and waits until
   every Rollout is Healthy (setup; not measured);
2. step "update": patches each Rollout's image at once (a thread pool) and waits until every
   one is paused at weight 50; step "promote": writes what a promote is for a Rollout
   paused on `pause: {}` and waits until every one is fully promoted with its old
   ReplicaSet scaled to zero. For both controllers the promote is the one merge patch of
   the status subresource `kubectl argo rollouts promote` sends in that state:
   `{"status": {"pauseConditions": null}}` (spec.paused is false, so it writes no spec patch;
   pkg/kubectl-argo-rollouts/cmd/promote in Argo's source). Tidegate's CLI writes
   `pauseConditions: []`, which a merge patch treats alike.

Figures, per controller:

- latencies across Rollouts, from the bench's own write (taken just before it is sent) to
  the VirtualService change seen on the bench's watch: update -> first canary weight (50),
  promote -> next weight (100), promote -> canary weight back to 0 (promotion done);
  p50/p90/p99/max by nearest rank;
- API requests per Rollout in each step, from the API server's audit log (the sandbox
  writes one at level Metadata) filtered by the controller's user agents, counted by the
  time the API server received them, in a window from the step's first write until the
  step is done everywhere plus a settle time: reads (get, list), writes (create, update,
  patch, delete), watch (re)connects;
- the controller's CPU seconds (utime + stime of its process tree, /proc/PID/stat) per
  Rollout per step, and its RSS (VmRSS after setup and at the end, VmHWM for the peak).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.idle import (  # noqa: E402 - the repository root is on sys.path only from here
    MIB,
    Request,
    agent_matcher,
    audit_files,
    collect_requests,
    read_audit_events,
)

ARGO_VERSION = os.environ.get("ARGO_ROLLOUTS_VERSION", "1.10.2")
BENCH_AGENT = "tidegate-bench-steps/1"
READ_VERBS = frozenset({"get", "list"})
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
STEPS: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]
PROMOTE_PATCH: dict[str, Any] = {"status": {"pauseConditions": None}}


# ------------------------------------------------------------------------------ arithmetic


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p% of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class Spread:
    n: int
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(
            n=len(values),
            p50=percentile(values, 50),
            p90=percentile(values, 90),
            p99=percentile(values, 99),
            max=max(values) if values else None,
        )

    def cell(self, expected: int | None = None) -> str:
        if self.p50 is None or self.p90 is None or self.p99 is None or self.max is None:
            return "-"
        text = f"{self.p50:.2f} / {self.p90:.2f} / {self.p99:.2f} / {self.max:.2f}"
        if expected is not None and self.n < expected:
            text += f" (n={self.n})"
        return text


@dataclass(frozen=True)
class WeightEvent:
    """The canary weight of one VirtualService's route changed, as the bench's watch saw it."""

    time: float
    name: str
    weight: int


def first_after(
    events: Iterable[WeightEvent], name: str, since: float, want: Callable[[int], bool]
) -> float | None:
    """Time of the first weight change of `name` at or after `since` that `want` accepts."""
    for ev in events:
        if ev.name == name and ev.time >= since and want(ev.weight):
            return ev.time
    return None


def latencies(
    events: Sequence[WeightEvent], writes: dict[str, float], want: Callable[[int], bool]
) -> list[float]:
    """Per Rollout: from its write to the first weight change after it that `want` accepts."""
    ordered = sorted(events, key=lambda ev: ev.time)
    out = []
    for name, t in writes.items():
        seen = first_after(ordered, name, t, want)
        if seen is not None:
            out.append(seen - t)
    return out


def promoted_done(events: Sequence[WeightEvent], writes: dict[str, float]) -> list[float]:
    """Per Rollout: from the promote to the canary weight back at 0 after it was above 0."""
    ordered = sorted(events, key=lambda ev: ev.time)
    out = []
    for name, t in writes.items():
        raised = first_after(ordered, name, t, lambda w: w > 0)
        if raised is None:
            continue
        back = first_after(ordered, name, raised, lambda w: w == 0)
        if back is not None:
            out.append(back - t)
    return out


@dataclass
class RequestCount:
    reads: float = 0.0
    writes: float = 0.0
    watches: float = 0.0
    by_verb_resource: dict[str, float] = field(default_factory=dict)
    """`verb resource` -> requests per Rollout, most first."""


def count_requests(
    requests: Iterable[Request], start: float, end: float, match: Callable[[str], bool], rollouts: int
) -> RequestCount:
    """Requests of the matching user agents received in [start, end), per Rollout."""
    inside = [r for r in requests if match(r.user_agent) and start <= r.received < end]
    per = max(rollouts, 1)
    kinds = Counter(
        "read" if r.verb in READ_VERBS else "write" if r.verb in WRITE_VERBS else r.verb for r in inside
    )
    detail = Counter(f"{r.verb} {r.resource}" for r in inside)
    return RequestCount(
        reads=round(kinds["read"] / per, 2),
        writes=round(kinds["write"] / per, 2),
        watches=round(kinds["watch"] / per, 2),
        by_verb_resource={k: round(v / per, 2) for k, v in detail.most_common()},
    )


# -------------------------------------------------------------------------------- results


@dataclass
class StepFigures:
    seconds: float
    """From the step's first write until it was done for every Rollout (no settle time)."""
    requests: RequestCount
    cpu_s_per_rollout: float


@dataclass
class Result:
    controller: str
    version: str
    rollouts: int
    setup_s: float
    update_to_first_weight: Spread
    promote_to_next_weight: Spread
    promote_to_weight_zero: Spread
    update: StepFigures
    promote: StepFigures
    rss_after_setup_mib: float
    rss_end_mib: float
    rss_peak_mib: float
    load_1m: tuple[float, float] = (0.0, 0.0)
    """The machine's 1-minute load average when the update started and when the promote ended:
    other work on the machine shows up in the latencies first."""


def render(results: Sequence[Result], *, header: str = "") -> str:
    """One column per controller."""
    if not results:
        return header
    cols = [f"{r.controller} {r.version}" for r in results]
    rows: list[tuple[str, list[str]]] = []
    n = results[0].rollouts

    def row(label: str, cell: Callable[[Result], str]) -> None:
        rows.append((label, [cell(r) for r in results]))

    row("rollouts", lambda r: str(r.rollouts))
    row("setup: create -> all Healthy (s)", lambda r: f"{r.setup_s:.1f}")
    rows.append(("latency, s: p50 / p90 / p99 / max", ["" for _ in results]))
    row("  update -> first weight (50)", lambda r: r.update_to_first_weight.cell(n))
    row("  promote -> next weight (100)", lambda r: r.promote_to_next_weight.cell(n))
    row("  promote -> weight back to 0", lambda r: r.promote_to_weight_zero.cell(n))
    for step in ("update", "promote"):

        def figures(r: Result, step: str = step) -> StepFigures:
            return r.update if step == "update" else r.promote

        rows.append((f"step {step}", ["" for _ in results]))
        row("  done everywhere after (s)", lambda r, f=figures: f"{f(r).seconds:.1f}")
        row(
            "  API reads / writes / watches per rollout",
            lambda r, f=figures: (
                f"{f(r).requests.reads:.2f} / {f(r).requests.writes:.2f} / {f(r).requests.watches:.2f}"
            ),
        )
        row("  CPU s per rollout", lambda r, f=figures: f"{f(r).cpu_s_per_rollout:.4f}")
    row("machine load (1 min) at update / end", lambda r: f"{r.load_1m[0]:.1f} / {r.load_1m[1]:.1f}")
    row(
        "RSS after setup / end / peak (MiB)",
        lambda r: f"{r.rss_after_setup_mib:.0f} / {r.rss_end_mib:.0f} / {r.rss_peak_mib:.0f}",
    )
    width = max(len(label) for label, _ in rows)
    colw = [max(len(c), *(len(cells[i]) for _, cells in rows)) for i, c in enumerate(cols)]
    lines = [header] if header else []
    lines.append(f"{'':<{width}}  " + "  ".join(f"{c:<{colw[i]}}" for i, c in enumerate(cols)))
    for label, cells in rows:
        lines.append(f"{label:<{width}}  " + "  ".join(f"{c:<{colw[i]}}" for i, c in enumerate(cells)))
    for r in results:
        for step, figs in (("update", r.update), ("promote", r.promote)):
            detail = ", ".join(f"{k} {v:g}" for k, v in figs.requests.by_verb_resource.items())
            lines.append(f"{r.controller}, step {step}, requests per rollout: {detail or 'none'}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- objects


def services_and_vs(name: str, namespace: str) -> list[dict[str, Any]]:
    def service(suffix: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"{name}-{suffix}", "namespace": namespace},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }

    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hosts": [name],
            "http": [
                {
                    "name": "primary",
                    "route": [
                        {"destination": {"host": f"{name}-stable"}, "weight": 100},
                        {"destination": {"host": f"{name}-canary"}, "weight": 0},
                    ],
                }
            ],
        },
    }
    return [service("stable"), service("canary"), vs]


def rollout_doc(
    api_version: str, name: str, namespace: str, image: str, replicas: int, scale_down_delay: int
) -> dict[str, Any]:
    """The same spec for both controllers: Tidegate's field names are Argo's."""
    return {
        "apiVersion": api_version,
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": namespace, "labels": {"bench": "steps"}},
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080}]}]},
            },
            "strategy": {
                "canary": {
                    "stableService": f"{name}-stable",
                    "canaryService": f"{name}-canary",
                    "scaleDownDelaySeconds": scale_down_delay,
                    "trafficRouting": {"istio": {"virtualService": {"name": name, "routes": ["primary"]}}},
                    "steps": STEPS,
                }
            },
        },
    }


def canary_weight(vs: dict[str, Any], canary_host: str) -> int:
    for route in (vs.get("spec") or {}).get("http") or []:
        if route.get("name") != "primary":
            continue
        for dest in route.get("route") or []:
            if (dest.get("destination") or {}).get("host") == canary_host:
                return int(dest.get("weight") or 0)
    return 0


# ----------------------------------------------------------------------------- processes


def tree_pids(root: int) -> list[int]:
    """`root` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu_seconds(root: int) -> float:
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def tree_memory(root: int) -> dict[str, int]:
    """VmRSS and VmHWM summed over the process tree, in bytes."""
    out = {"VmRSS": 0, "VmHWM": 0}
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in out:
                        out[key] += int(value.split()[0]) * 1024
        except OSError:
            continue
    return out


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def argo_dir() -> Path:
    root = Path(
        os.environ.get("TIDEGATE_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tidegate"
    )
    return root / f"argo-rollouts-v{ARGO_VERSION}"


@dataclass
class Controller:
    name: str
    version: str
    group: str
    agents: tuple[str, ...]
    argv: Callable[[Path, str], list[str]]
    """(kubeconfig, namespace) -> the command line."""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def api_version(self) -> str:
        return f"{self.group}/v1alpha1"


def tidegate_controller(ref: str, workdir: Path) -> Controller:
    """Tidegate as committed at `ref` (a snapshot of operator/ by `git archive`, first on
    PYTHONPATH), so edits in progress in a shared working tree are not what is measured;
    an empty ref runs the working tree (the installed editable package)."""
    from importlib.metadata import version

    env: dict[str, str] = {}
    label = version("tidegate")
    if ref:
        sha = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", ref], capture_output=True, text=True, check=True
        ).stdout.strip()
        snapshot = workdir / f"tidegate-{sha}"
        snapshot.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", sha, "operator"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(snapshot)], input=archive, check=True)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(snapshot / "operator"), os.environ.get("PYTHONPATH", "")) if p
        )
        label += f" @ {sha}"
    else:
        label += " (working tree)"
    return Controller(
        name="tidegate",
        version=label,
        group="tidegate.io",
        agents=("tidegate-operator/", "kopf/"),
        argv=lambda _kubeconfig, ns: [
            sys.executable,
            "-m",
            "tidegate.cli.main",
            "operator",
            "--metrics-port",
            "0",
            "-n",
            ns,
        ],
        env=env,
    )


def argo_controller(extra: Sequence[str] = ()) -> Controller:
    binary = argo_dir() / "rollouts-controller"
    if not binary.exists():
        raise SystemExit(f"{binary} is missing: run `make argo` first (or pass --controllers tidegate)")

    def argv(kubeconfig: Path, ns: str) -> list[str]:
        from tidegate.sandbox.cluster import free_port

        return [
            str(binary),
            f"--kubeconfig={kubeconfig}",
            "--namespaced",
            f"--namespace={ns}",
            "--leader-elect=false",
            "--istio-api-version=v1",
            f"--metricsPort={free_port()}",
            f"--healthzPort={free_port()}",
            *extra,
        ]

    return Controller(
        name="argo-rollouts",
        version=f"v{ARGO_VERSION}",
        group="argoproj.io",
        agents=("rollouts-controller/",),
        argv=argv,
    )


# ------------------------------------------------------------------------------ the watch


class WeightWatch:
    """Every change of the canary weight of the namespace's VirtualServices, time-stamped."""

    def __init__(self, client: Any, namespace: str) -> None:
        from kubernetes import client as k

        self.api = k.CustomObjectsApi(client)
        self.namespace = namespace
        self.events: list[WeightEvent] = []
        self.last: dict[str, int] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="vs-watch")
        self.ready = threading.Event()

    def _list(self) -> str:
        out = self.api.list_namespaced_custom_object(
            "networking.istio.io", "v1", self.namespace, "virtualservices"
        )
        for vs in out["items"]:
            self._seen(vs, record=False)
        return str(out["metadata"]["resourceVersion"])

    def _seen(self, vs: dict[str, Any], *, record: bool = True) -> None:
        now = time.time()
        name = vs["metadata"]["name"]
        weight = canary_weight(vs, f"{name}-canary")
        with self.lock:
            if self.last.get(name) != weight:
                self.last[name] = weight
                if record:
                    self.events.append(WeightEvent(now, name, weight))

    def _run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        rv = self._list()
        self.ready.set()
        while not self.stopping.is_set():
            w = watch.Watch()
            try:
                for ev in w.stream(
                    self.api.list_namespaced_custom_object,
                    "networking.istio.io",
                    "v1",
                    self.namespace,
                    "virtualservices",
                    resource_version=rv,
                    timeout_seconds=30,
                    allow_watch_bookmarks=True,
                ):
                    obj = ev["object"]
                    rv = obj["metadata"]["resourceVersion"]
                    if ev["type"] in ("ADDED", "MODIFIED"):
                        self._seen(obj)
                    if self.stopping.is_set():
                        break
            except ApiException as exc:
                if exc.status == 410:  # expired: list again (a change in between is recorded late)
                    rv = self._list()
                    continue
                raise
            finally:
                w.stop()

    def start(self) -> WeightWatch:
        self.thread.start()
        if not self.ready.wait(30):
            raise TimeoutError("the VirtualService watch did not start")
        return self

    def stop(self) -> None:
        self.stopping.set()

    def weights(self) -> dict[str, int]:
        with self.lock:
            return dict(self.last)

    def snapshot(self) -> list[WeightEvent]:
        with self.lock:
            return list(self.events)


# -------------------------------------------------------------------------------- the run


@dataclass
class Options:
    count: int
    replicas: int
    timeout: float
    settle: float
    threads: int
    scale_down_delay: int


def _wait(
    check: Callable[[], tuple[bool, str]], timeout: float, what: str, proc: subprocess.Popen[bytes], log: Path
) -> float:
    """Poll `check` (done, progress note) until done; returns the seconds it took."""
    start = time.monotonic()
    last_note = 0.0
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the controller exited with {proc.returncode} while waiting for {what}; see {log}"
            )
        done, note = check()
        elapsed = time.monotonic() - start
        if done:
            return elapsed
        if elapsed > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}: {note}")
        if elapsed - last_note >= 10:
            last_note = elapsed
            _say(f"  {what}: {note} after {elapsed:.0f}s")
        time.sleep(0.5)


def run_controller(
    sandbox: Any, api_client: Any, ctl: Controller, opts: Options, logs: Path
) -> tuple[Result, dict[str, tuple[float, float]]]:
    """One controller through setup, update and promote; returns its result and the two step windows."""
    from kubernetes import client as k

    custom = k.CustomObjectsApi(api_client)
    apps = k.AppsV1Api(api_client)
    ns = f"bench-steps-{ctl.name}"
    plural = "rollouts"
    names = [f"canary-{i:04d}" for i in range(opts.count)]
    sandbox.kubectl("create", "namespace", ns)
    sandbox.kubectl("-n", ns, "wait", "--for=create", "serviceaccount/default", "--timeout=60s")

    docs: list[dict[str, Any]] = []
    for name in names:
        docs.extend(services_and_vs(name, ns))
    sandbox.kubectl("create", "-f", "-", input=yaml.safe_dump_all(docs))
    watch = WeightWatch(api_client, ns).start()

    log_path = logs / f"{ctl.name}.log"
    logf = open(log_path, "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        ctl.argv(sandbox.kubeconfig, ns),
        stdout=logf,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **ctl.env, "KUBECONFIG": str(sandbox.kubeconfig)},
        start_new_session=True,
    )
    logf.close()
    pid = proc.pid
    _say(f"{ctl.name} {ctl.version}: pid {pid}, namespace {ns}, log {log_path}")
    try:

        def rollouts() -> dict[str, dict[str, Any]]:
            items = custom.list_namespaced_custom_object(ctl.group, "v1alpha1", ns, plural)["items"]
            return {r["metadata"]["name"]: r for r in items}

        def replica_sets() -> dict[str, list[dict[str, Any]]]:
            out: dict[str, list[dict[str, Any]]] = {}
            for rs in apps.list_namespaced_replica_set(ns).to_dict()["items"]:
                for owner in rs["metadata"].get("owner_references") or []:
                    if owner["kind"] == "Rollout":
                        out.setdefault(owner["name"], []).append(rs)
            return out

        def healthy(r: dict[str, Any], old_stable: str | None) -> bool:
            st = r.get("status") or {}
            if (
                st.get("phase") != "Healthy"
                or not st.get("stableRS")
                or st.get("stableRS") != st.get("currentPodHash")
            ):
                return False
            if ctl.group == "tidegate.io" and st.get("observedGeneration") != r["metadata"].get("generation"):
                return False
            return st.get("stableRS") != old_stable

        def scaled_down(rs_by_rollout: dict[str, list[dict[str, Any]]], name: str, stable: str) -> bool:
            for rs in rs_by_rollout.get(name, []):
                labels = rs["metadata"].get("labels") or {}
                if (
                    labels.get("rollouts-pod-template-hash") != stable
                    and (rs["spec"].get("replicas") or 0) > 0
                ):
                    return False
            return True

        # ---- setup
        started = time.monotonic()
        sandbox.kubectl(
            "create",
            "-f",
            "-",
            input=yaml.safe_dump_all(
                [
                    rollout_doc(
                        ctl.api_version,
                        n,
                        ns,
                        "example.invalid/app:1.0",
                        opts.replicas,
                        opts.scale_down_delay,
                    )
                    for n in names
                ]
            ),
        )

        def all_healthy_first() -> tuple[bool, str]:
            rs = rollouts()
            phases = Counter(str((r.get("status") or {}).get("phase")) for r in rs.values())
            ok = len(rs) == len(names) and all(healthy(r, None) for r in rs.values())
            return ok, f"{dict(phases)}"

        _wait(all_healthy_first, opts.timeout, "setup: every Rollout Healthy", proc, log_path)
        setup_s = time.monotonic() - started
        stable_before = {n: (r.get("status") or {}).get("stableRS") for n, r in rollouts().items()}
        _say(f"  setup: {len(names)} Rollouts Healthy after {setup_s:.1f}s; settling {opts.settle:.0f}s")
        time.sleep(opts.settle)
        rss_after_setup = tree_memory(pid)["VmRSS"]

        pool = ThreadPoolExecutor(max_workers=opts.threads)

        def burst(write: Callable[[str], Any]) -> dict[str, float]:
            stamps: dict[str, float] = {}

            def one(name: str) -> None:
                stamps[name] = time.time()
                write(name)

            list(pool.map(one, names))
            return stamps

        # ---- step: update
        cpu0 = tree_cpu_seconds(pid)
        load0 = os.getloadavg()[0]
        t_update = time.time()
        image_patch = {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "example.invalid/app:2.0",
                                "ports": [{"containerPort": 8080}],
                            }
                        ]
                    }
                }
            }
        }
        updates = burst(
            lambda n: custom.patch_namespaced_custom_object(ctl.group, "v1alpha1", ns, plural, n, image_patch)
        )

        def all_paused() -> tuple[bool, str]:
            rs = rollouts()
            weights = watch.weights()
            paused = [
                n
                for n, r in rs.items()
                if any(
                    c.get("reason") == "CanaryPauseStep"
                    for c in (r.get("status") or {}).get("pauseConditions") or []
                )
                and weights.get(n) == 50
            ]
            return len(paused) == len(names), f"{len(paused)}/{len(names)} paused at weight 50"

        update_s = _wait(all_paused, opts.timeout, "step update: every Rollout paused at 50", proc, log_path)
        time.sleep(opts.settle)
        t_update_end = time.time()
        cpu1 = tree_cpu_seconds(pid)
        _say(f"  update: every Rollout paused at 50 after {update_s:.1f}s")

        # ---- step: promote
        t_promote = time.time()
        promotes = burst(
            lambda n: custom.patch_namespaced_custom_object_status(
                ctl.group, "v1alpha1", ns, plural, n, PROMOTE_PATCH
            )
        )

        def all_promoted() -> tuple[bool, str]:
            rs = rollouts()
            by = replica_sets()
            done = [
                n
                for n, r in rs.items()
                if healthy(r, stable_before.get(n)) and scaled_down(by, n, r["status"]["stableRS"])
            ]
            return len(done) == len(names), f"{len(done)}/{len(names)} fully promoted"

        promote_s = _wait(
            all_promoted, opts.timeout, "step promote: every Rollout fully promoted", proc, log_path
        )
        time.sleep(opts.settle)
        t_promote_end = time.time()
        cpu2 = tree_cpu_seconds(pid)
        mem = tree_memory(pid)
        load1 = os.getloadavg()[0]
        pool.shutdown()
        _say(f"  promote: every Rollout fully promoted after {promote_s:.1f}s")
        events = watch.snapshot()
    finally:
        watch.stop()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    n = len(names)
    result = Result(
        controller=ctl.name,
        version=ctl.version,
        rollouts=n,
        setup_s=round(setup_s, 1),
        update_to_first_weight=Spread.of(latencies(events, updates, lambda w: w > 0)),
        promote_to_next_weight=Spread.of(latencies(events, promotes, lambda w: True)),
        promote_to_weight_zero=Spread.of(promoted_done(events, promotes)),
        update=StepFigures(round(update_s, 2), RequestCount(), round((cpu1 - cpu0) / n, 4)),
        promote=StepFigures(round(promote_s, 2), RequestCount(), round((cpu2 - cpu1) / n, 4)),
        rss_after_setup_mib=round(rss_after_setup / MIB, 1),
        rss_end_mib=round(mem["VmRSS"] / MIB, 1),
        rss_peak_mib=round(mem["VmHWM"] / MIB, 1),
        load_1m=(round(load0, 1), round(load1, 1)),
    )
    return result, {"update": (t_update, t_update_end), "promote": (t_promote, t_promote_end)}


def run(args: argparse.Namespace) -> list[Result]:
    try:
        from tidegate.sandbox.cluster import Sandbox
    except ImportError:  # run from a checkout without an installed package
        sys.path.insert(0, str(REPO / "operator"))
        from tidegate.sandbox.cluster import Sandbox
    from kubernetes import client as k
    from kubernetes import config as kconfig

    logs = Path(tempfile.mkdtemp(prefix="tidegate-bench-steps-logs-"))
    controllers = []
    for name in args.controllers.split(","):
        if name == "tidegate":
            controllers.append(tidegate_controller(args.tidegate_ref, logs))
        elif name in ("argo", "argo-rollouts"):
            controllers.append(argo_controller(args.argo_arg))
        else:
            raise SystemExit(f"unknown controller {name!r}: tidegate, argo")
    opts = Options(
        count=args.count,
        replicas=args.replicas,
        timeout=args.timeout,
        settle=args.settle,
        threads=args.threads,
        scale_down_delay=args.scale_down_delay,
    )

    sandbox = Sandbox(Path(tempfile.mkdtemp(prefix="tidegate-bench-steps-")))
    results: list[Result] = []
    windows: list[dict[str, tuple[float, float]]] = []
    try:
        _say(f"sandbox in {sandbox.directory} (controller logs in {logs})")
        sandbox.up(prometheus=False, log=_say)
        if any(c.group == "argoproj.io" for c in controllers):
            sandbox.kubectl("apply", "--server-side", "-f", str(argo_dir() / "crds.yaml"))
            sandbox.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        config = k.Configuration()
        kconfig.load_kube_config(config_file=str(sandbox.kubeconfig), client_configuration=config)
        config.connection_pool_maxsize = max(args.threads, 4) + 4
        api_client = k.ApiClient(config)
        api_client.user_agent = BENCH_AGENT
        for ctl in controllers:
            result, window = run_controller(sandbox, api_client, ctl, opts, logs)
            results.append(result)
            windows.append(window)
        time.sleep(1)  # the audit log is written as requests complete
        requests = collect_requests(read_audit_events(audit_files(sandbox.logs)))
        for ctl, result, window in zip(controllers, results, windows, strict=True):
            match = agent_matcher(ctl.agents)
            result.update.requests = count_requests(requests, *window["update"], match, result.rollouts)
            result.promote.requests = count_requests(requests, *window["promote"], match, result.rollouts)
        if args.keep_logs:
            for f in sandbox.logs.glob("*.log"):
                shutil.copy(f, logs / f.name)
        return results
    finally:
        sandbox.down(log=_say)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=100, help="concurrent Rollouts per controller")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 Rollouts, short settle")
    parser.add_argument("--controllers", default="tidegate,argo", help="comma-separated: tidegate, argo")
    parser.add_argument(
        "--tidegate-ref",
        default="HEAD",
        help="the commit of Tidegate to run (a snapshot of operator/); '' runs the working tree",
    )
    parser.add_argument(
        "--argo-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="an extra flag for Argo's controller, e.g. --argo-arg=--qps=200 (repeatable)",
    )
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument(
        "--scale-down-delay",
        type=int,
        default=5,
        help="scaleDownDelaySeconds of both; 0 makes Argo v1.10.2 re-enqueue a Rollout in a hot loop "
        "without ever scaling its old ReplicaSet down",
    )
    parser.add_argument("--threads", type=int, default=16, help="client threads for each burst of writes")
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds after each step before its window ends"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per wait")
    parser.add_argument("--keep-logs", action="store_true", help="copy the sandbox's logs before down")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.settle = min(args.count, 3), min(args.settle, 1.0)
    began = time.monotonic()
    results = run(args)
    _say(f"benchmark took {time.monotonic() - began:.0f}s")
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        header = (
            f"{args.count} concurrent Istio canaries per controller, replicas {args.replicas}, "
            "steps setWeight 50 / pause {} / setWeight 100; "
            f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
        )
        print(render(results, header=header))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What an idle operator costs: RSS and API requests per minute with N Healthy Rollouts.

    .venv/bin/python bench/idle.py [--rollouts 200] [--idle-seconds 60] [--json]

Starts its own sandbox (a temporary directory, no Prometheus) and the operator as a
subprocess (`python -m tidegate.cli.main operator --metrics-port 0`), creates N canary
Rollouts (replicas 1, no traffic router) spread over a few namespaces with one
`kubectl create`, waits until every one is Healthy at its current generation, lets the
cluster settle, then measures over one idle window:

- the operator's RSS (VmRSS of /proc/PID/status at the start and the end of the window,
  VmHWM for the peak since it started) and its CPU time in the window;
- the API requests the operator made, from the API server's audit log (level Metadata,
  one JSON event per line). The operator is two clients: its `kubernetes` client
  (user agent `tidegate-operator/<version>`) and kopf's aiohttp client (`kopf/<version>`).
  A request is counted once (merged over its audit stages by auditID) when the API server
  RECEIVED it inside the window (`requestReceivedTimestamp` in [start, end)). A watch is a
  long-running request: it counts in the window only when it was opened in the window (a
  reconnect after its server-side timeout); the watches that were already open are
  reported apart as "open watches" at the start and at the end of the window (a watch
  is open at t when it was received before t and its ResponseComplete, if any, is after t);
- the API server's own `apiserver_request_total` delta over the window, scraped from its
  /metrics with the sandbox's admin certificate. That metric has no user-agent label, so
  it is the whole cluster's rate (controller-manager, scheduler, kwok heartbeats, ...),
  given for context next to the audit log's per-client counts.

Every non-watch request of the operator in the window is a finding (polling): the table
lists it by verb and resource with an example URI, the number of distinct URIs and the
median interval between two requests to the same URI.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

OPERATOR_AGENTS = ("tidegate-operator/", "kopf/")
"""User-agent prefixes of the operator's two API clients."""

MIB = 1024 * 1024


# ----------------------------------------------------------------------------- audit log


def parse_time(stamp: str) -> float:
    """RFC 3339 with micro-seconds, as the audit log writes it -> epoch seconds."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class AuditEvent:
    audit_id: str
    stage: str
    verb: str
    user_agent: str
    request_uri: str
    resource: str
    """`plural.group[/subresource]`, `plural` for the core group, the path for non-resource URLs."""
    received: float
    stage_time: float


def resource_of(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    plural = ref.get("resource")
    if not plural:
        return str(event.get("requestURI", "")).split("?", 1)[0]
    name = f"{plural}.{ref['apiGroup']}" if ref.get("apiGroup") else str(plural)
    if ref.get("subresource"):
        name += f"/{ref['subresource']}"
    return name


def parse_audit_line(line: str) -> AuditEvent | None:
    """One line of the audit log; None for a line that is not a complete audit event."""
    line = line.strip()
    if not line:
        return None
    try:
        event = json.loads(line)
        return AuditEvent(
            audit_id=str(event["auditID"]),
            stage=str(event["stage"]),
            verb=str(event.get("verb", "")),
            user_agent=str(event.get("userAgent", "")),
            request_uri=str(event.get("requestURI", "")),
            resource=resource_of(event),
            received=parse_time(event["requestReceivedTimestamp"]),
            stage_time=parse_time(event["stageTimestamp"]),
        )
    except (ValueError, KeyError, TypeError):
        return None  # a line cut short by rotation or by a write in progress


def read_audit_events(paths: Iterable[Path]) -> Iterator[AuditEvent]:
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                event = parse_audit_line(line)
                if event is not None:
                    yield event


def audit_files(logs: Path) -> list[Path]:
    """The live audit log and its rotated backups (`audit-<time>.log`), oldest first."""
    return sorted(logs.glob("audit*.log"), key=lambda p: (p.name == "audit.log", p.name))


@dataclass
class Request:
    """One API request, merged over its audit stages."""

    audit_id: str
    verb: str
    user_agent: str
    resource: str
    uri: str
    received: float
    completed: float | None = None
    """stageTimestamp of ResponseComplete; None while a watch is still open."""

    @property
    def is_watch(self) -> bool:
        return self.verb == "watch"


def collect_requests(events: Iterable[AuditEvent]) -> list[Request]:
    by_id: dict[str, Request] = {}
    for ev in events:
        req = by_id.get(ev.audit_id)
        if req is None:
            req = by_id[ev.audit_id] = Request(
                ev.audit_id, ev.verb, ev.user_agent, ev.resource, ev.request_uri, ev.received
            )
        if ev.stage == "ResponseComplete":
            req.completed = ev.stage_time
    return sorted(by_id.values(), key=lambda r: r.received)


def agent_matcher(prefixes: Sequence[str]) -> Callable[[str], bool]:
    return lambda agent: any(agent.startswith(p) for p in prefixes)


def agent_name(agent: str) -> str:
    """`kube-controller-manager/v1.35.4 (linux/amd64) kubernetes/abc/...` -> `kube-controller-manager`."""
    return agent.split("/", 1)[0].split(" ", 1)[0] or "(none)"


def open_at(req: Request, t: float) -> bool:
    return req.is_watch and req.received <= t and (req.completed is None or req.completed > t)


@dataclass
class Row:
    verb: str
    resource: str
    count: int
    per_min: float
    distinct_uris: int
    median_interval_s: float | None
    """Median time between two requests to the same URI (the polling period), if any repeats."""
    example_uri: str


@dataclass
class WindowCount:
    seconds: float
    total: int
    per_min: float
    non_watch: int
    non_watch_per_min: float
    watch_connects: int
    open_watches_start: int
    open_watches_end: int
    by_agent: dict[str, int]
    rows: list[Row]


def per_min(count: int, seconds: float) -> float:
    return round(count * 60.0 / seconds, 2) if seconds > 0 else 0.0


def count_window(
    requests: Iterable[Request], start: float, end: float, match: Callable[[str], bool]
) -> WindowCount:
    """Requests of the matching user agents received in [start, end), and their open watches."""
    seconds = end - start
    mine = [r for r in requests if match(r.user_agent)]
    inside = [r for r in mine if start <= r.received < end]
    groups: dict[tuple[str, str], list[Request]] = defaultdict(list)
    for r in inside:
        groups[(r.verb, r.resource)].append(r)
    rows: list[Row] = []
    for (verb, resource), reqs in groups.items():
        by_uri: dict[str, list[float]] = defaultdict(list)
        for r in reqs:
            by_uri[r.uri].append(r.received)
        gaps = [b - a for times in by_uri.values() for a, b in pairwise(times)]
        rows.append(
            Row(
                verb=verb,
                resource=resource,
                count=len(reqs),
                per_min=per_min(len(reqs), seconds),
                distinct_uris=len(by_uri),
                median_interval_s=round(statistics.median(gaps), 2) if gaps else None,
                example_uri=reqs[0].uri,
            )
        )
    rows.sort(key=lambda row: (-row.count, row.verb, row.resource))
    non_watch = sum(1 for r in inside if not r.is_watch)
    return WindowCount(
        seconds=round(seconds, 2),
        total=len(inside),
        per_min=per_min(len(inside), seconds),
        non_watch=non_watch,
        non_watch_per_min=per_min(non_watch, seconds),
        watch_connects=len(inside) - non_watch,
        open_watches_start=sum(1 for r in mine if open_at(r, start)),
        open_watches_end=sum(1 for r in mine if open_at(r, end)),
        by_agent=dict(Counter(agent_name(r.user_agent) for r in inside).most_common()),
        rows=rows,
    )


LEASE = "leases.coordination.k8s.io"
"""The leader renews its Lease every retry period (2 s): the one request an idle leader must make."""


def findings(operator: WindowCount) -> list[str]:
    """Every non-watch request of the operator in an idle window, but the Lease renewal, is polling."""
    out = []
    for row in operator.rows:
        if row.verb == "watch" or (row.verb == "update" and row.resource == LEASE):
            continue
        every = f", every {row.median_interval_s:.1f}s per URI" if row.median_interval_s else ""
        out.append(
            f"{row.verb} {row.resource}: {row.count} requests ({row.per_min:.1f}/min) "
            f"over {row.distinct_uris} URIs{every}; e.g. {row.example_uri}"
        )
    return out


# ------------------------------------------------------------------- apiserver /metrics


def request_totals(metrics_text: str) -> dict[str, float]:
    """`apiserver_request_total` summed by verb, from the Prometheus text format."""
    out: dict[str, float] = defaultdict(float)
    for line in metrics_text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels, _, rest = line[len("apiserver_request_total{") :].rpartition("}")
        match = re.search(r'(?:^|,)verb="([^"]*)"', labels)
        out[match.group(1) if match else ""] += float(rest.split()[0])
    return dict(out)


def totals_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    verbs = set(before) | set(after)
    delta = {v: round(after.get(v, 0.0) - before.get(v, 0.0)) for v in verbs}
    return dict(sorted(((v, d) for v, d in delta.items() if d), key=lambda kv: (-kv[1], kv[0])))


# ------------------------------------------------------------------------- the process


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- report


@dataclass
class Report:
    rollouts: int
    namespaces: int
    sandbox_up_s: float
    time_to_healthy_s: float
    idle_window_s: float
    rss_baseline_mib: float
    """Before any Rollout existed (the operator's watches open)."""
    rss_start_mib: float
    rss_end_mib: float
    rss_peak_mib: float
    cpu_window_s: float
    operator: WindowCount
    all_clients: WindowCount
    apiserver_request_total: dict[str, int]
    findings: list[str] = field(default_factory=list)
    operator_agents: list[str] = field(default_factory=lambda: list(OPERATOR_AGENTS))
    routed: bool = False
    """Each Rollout with a stable and a canary Service and an Istio VirtualService."""
    passes_to_healthy: int = 0
    """Reconcile passes from creating the Rollouts until all were Healthy."""
    reads_to_healthy: int = 0
    """API reads (get, list; not watches) of the operator over the same time."""

    @property
    def reads_per_pass(self) -> float:
        return self.reads_to_healthy / self.passes_to_healthy if self.passes_to_healthy else 0.0

    @property
    def apiserver_total(self) -> int:
        return sum(self.apiserver_request_total.values())

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["apiserver_request_total"] = {
            "delta": self.apiserver_total,
            "per_min": per_min(self.apiserver_total, self.idle_window_s),
            "by_verb": self.apiserver_request_total,
        }
        return data


def render(report: Report) -> str:
    op, everyone = report.operator, report.all_clients
    w = report.idle_window_s
    lines = [
        "Tidegate idle benchmark",
        f"  rollouts                    {report.rollouts} in {report.namespaces} namespaces"
        + (", each with 2 Services and a VirtualService" if report.routed else ", no traffic router"),
        f"  sandbox up (API ready)      {report.sandbox_up_s:.1f} s",
        f"  time to all Healthy         {report.time_to_healthy_s:.1f} s",
        f"  API reads per pass          {report.reads_per_pass:.3f} ({report.reads_to_healthy} gets and "
        f"lists in {report.passes_to_healthy} reconcile passes, from create to all Healthy)",
        f"  idle window                 {w:.1f} s",
        f"  operator RSS, no rollouts   {report.rss_baseline_mib:.1f} MiB",
        f"  operator RSS start/end/peak {report.rss_start_mib:.1f} / {report.rss_end_mib:.1f} / "
        f"{report.rss_peak_mib:.1f} MiB",
        f"  operator CPU in window      {report.cpu_window_s:.2f} s "
        f"({100 * report.cpu_window_s / w if w else 0:.2f} % of one core)",
        f"  operator open watches       {op.open_watches_start} at start, {op.open_watches_end} at end; "
        f"{op.watch_connects} (re)connected in window",
        f"  operator requests/min       {op.per_min:.2f} ({op.total} requests: {op.non_watch} non-watch "
        f"= {op.non_watch_per_min:.2f}/min, {op.watch_connects} watch (re)connects)",
    ]
    if op.rows:
        width = max(40, *(len(row.resource) for row in op.rows))
        lines.append(
            f"    {'verb':<8} {'resource':<{width}} {'count':>6} {'/min':>8} {'URIs':>5} {'every':>7}"
        )
        for row in op.rows:
            every = f"{row.median_interval_s:.1f}s" if row.median_interval_s is not None else "-"
            lines.append(
                f"    {row.verb:<8} {row.resource:<{width}} {row.count:>6} {row.per_min:>8.2f} "
                f"{row.distinct_uris:>5} {every:>7}"
            )
    lines.append(
        f"  all clients/min (audit)     {everyone.per_min:.2f} ({everyone.total} requests received in "
        f"window: {everyone.non_watch} non-watch, {everyone.watch_connects} watch (re)connects)"
    )
    for agent, count in everyone.by_agent.items():
        lines.append(f"    {agent:<40} {count:>6} {per_min(count, w):>8.2f}/min")
    api_total = report.apiserver_total
    by_verb = ", ".join(f"{v} {n}" for v, n in report.apiserver_request_total.items()) or "none"
    lines.append(
        f"  all clients/min (apiserver_request_total) {per_min(api_total, w):.2f} "
        f"({api_total} requests completed in window: {by_verb})"
    )
    if report.findings:
        lines.append("findings: the operator made requests beyond its watches while idle")
        lines.extend(f"  - {f}" for f in report.findings)
    else:
        lines.append(
            "findings: none; no request from the operator beyond its watches (and the leader's Lease "
            "renewal) while idle"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------ the cluster


def routed_docs(name: str, namespace: str) -> list[dict[str, Any]]:
    """The stable and canary Services and the VirtualService of one routed Rollout."""
    services = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"{name}-{role}", "namespace": namespace},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
        }
        for role in ("stable", "canary")
    ]
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
    return [*services, vs]


def rollout_docs(count: int, namespaces: Sequence[str], routed: bool = False) -> list[dict[str, Any]]:
    docs = []
    for i in range(count):
        name = f"idle-{i:04d}"
        strategy: dict[str, Any] = {"steps": [{"setWeight": 50}, {"pause": {"duration": "10s"}}]}
        if routed:
            namespace = namespaces[i % len(namespaces)]
            docs.extend(routed_docs(name, namespace))
            strategy |= {
                "stableService": f"{name}-stable",
                "canaryService": f"{name}-canary",
                "trafficRouting": {"istio": {"virtualService": {"name": name, "routes": ["primary"]}}},
            }
        docs.append(
            {
                "apiVersion": "tidegate.io/v1alpha1",
                "kind": "Rollout",
                "metadata": {
                    "name": name,
                    "namespace": namespaces[i % len(namespaces)],
                    "labels": {"bench": "idle"},
                },
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "app", "image": "example.invalid/idle:1.0"}]},
                    },
                    "strategy": {"canary": strategy},
                },
            }
        )
    return docs


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def reconcile_passes(port: int) -> float:
    """tidegate_reconcile_duration_seconds_count, summed over outcomes, from the operator's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "tidegate_reconcile_duration_seconds_count"
    )


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _wait(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def run(args: argparse.Namespace) -> Report:
    try:
        from tidegate.sandbox.cluster import Sandbox
    except ImportError:  # run from a checkout without an installed package
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
        from tidegate.sandbox.cluster import Sandbox

    keep = Path(tempfile.mkdtemp(prefix="tidegate-bench-idle-logs-"))
    sandbox = Sandbox(Path(tempfile.mkdtemp(prefix="tidegate-bench-idle-")))
    operator: subprocess.Popen[bytes] | None = None
    is_operator = agent_matcher(OPERATOR_AGENTS)
    try:
        _say(f"sandbox in {sandbox.directory} (logs kept in {keep})")
        up_s = sandbox.up(prometheus=False, log=_say)
        audit_log = sandbox.logs / "audit.log"

        namespaces = [f"bench-idle-{i}" for i in range(args.namespaces)]
        for ns in namespaces:
            sandbox.kubectl("create", "namespace", ns)
        for ns in namespaces:  # pods need the namespace's default ServiceAccount
            sandbox.kubectl("-n", ns, "wait", "--for=create", "serviceaccount/default", "--timeout=60s")

        log = open(keep / "operator.log", "ab")  # noqa: SIM115 - owned by the child
        metrics_port = free_port()
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
            env={**os.environ, "KUBECONFIG": str(sandbox.kubeconfig)},
            start_new_session=True,
        )
        log.close()
        pid = operator.pid

        def watching_rollouts() -> bool:
            if operator is not None and operator.poll() is not None:
                raise RuntimeError(f"the operator exited with {operator.returncode}; see {keep}/operator.log")
            return any(
                is_operator(e.user_agent) and e.verb == "watch" and e.resource == "rollouts.tidegate.io"
                for e in read_audit_events([audit_log])
            )

        _wait(watching_rollouts, 120, "the operator's watch on rollouts")
        time.sleep(2)
        rss_baseline = proc_status(pid)["VmRSS"]
        _say(f"operator pid {pid} is watching; RSS {rss_baseline / MIB:.1f} MiB")

        started = time.monotonic()
        created_at = time.time()
        passes_before = reconcile_passes(metrics_port)
        sandbox.kubectl(
            "create",
            "-f",
            "-",
            input=yaml.safe_dump_all(rollout_docs(args.rollouts, namespaces, routed=args.routed)),
        )
        _say(f"created {args.rollouts} Rollouts in {time.monotonic() - started:.1f}s")

        jsonpath = (
            '{range .items[*]}{.status.phase}{" "}{.status.observedGeneration}'
            '{" "}{.metadata.generation}{"\\n"}{end}'
        )
        last_note = 0.0
        while True:
            if operator.poll() is not None:
                raise RuntimeError(f"the operator exited with {operator.returncode}; see {keep}/operator.log")
            out = sandbox.kubectl(
                "get", "rollouts.tidegate.io", "-A", "-l", "bench=idle", "-o", f"jsonpath={jsonpath}"
            ).stdout
            phases: Counter[str] = Counter()
            for line in out.splitlines():
                phase, observed, generation = ([*line.split(), "", "", ""])[:3]
                healthy = phase == "Healthy" and observed == generation
                phases["Healthy" if healthy else (phase or "(no status)")] += 1
            elapsed = time.monotonic() - started
            if phases["Healthy"] == args.rollouts:
                break
            if elapsed > args.healthy_timeout:
                raise TimeoutError(f"not all Rollouts Healthy after {elapsed:.0f}s: {dict(phases)}")
            if elapsed - last_note >= 5:
                last_note = elapsed
                _say(f"{phases['Healthy']}/{args.rollouts} Healthy after {elapsed:.0f}s: {dict(phases)}")
            time.sleep(2)
        to_healthy = time.monotonic() - started
        healthy_at = time.time()
        passes = reconcile_passes(metrics_port) - passes_before
        _say(f"all {args.rollouts} Healthy after {to_healthy:.1f}s; settling {args.settle_seconds:.0f}s")
        time.sleep(args.settle_seconds)

        _say(f"idle window of {args.idle_seconds:.0f}s")
        before_metrics = request_totals(sandbox.api_get("/metrics"))
        t0 = time.time()
        rss_start, cpu_start = proc_status(pid)["VmRSS"], cpu_seconds(pid)
        time.sleep(args.idle_seconds)
        t1 = time.time()
        status, cpu_end = proc_status(pid), cpu_seconds(pid)
        after_metrics = request_totals(sandbox.api_get("/metrics"))
        if operator.poll() is not None:
            raise RuntimeError(f"the operator exited with {operator.returncode}; see {keep}/operator.log")
        time.sleep(1)  # the audit log is written as requests complete

        requests = collect_requests(read_audit_events(audit_files(sandbox.logs)))
        op = count_window(requests, t0, t1, is_operator)
        reads = sum(
            1
            for r in requests
            if is_operator(r.user_agent)
            and r.verb in ("get", "list")
            and created_at <= r.received < healthy_at
        )
        report = Report(
            rollouts=args.rollouts,
            namespaces=len(namespaces),
            sandbox_up_s=round(up_s, 1),
            time_to_healthy_s=round(to_healthy, 1),
            idle_window_s=round(t1 - t0, 2),
            rss_baseline_mib=round(rss_baseline / MIB, 1),
            rss_start_mib=round(rss_start / MIB, 1),
            rss_end_mib=round(status["VmRSS"] / MIB, 1),
            rss_peak_mib=round(status["VmHWM"] / MIB, 1),
            cpu_window_s=round(cpu_end - cpu_start, 2),
            routed=args.routed,
            passes_to_healthy=int(passes),
            reads_to_healthy=reads,
            operator=op,
            all_clients=count_window(requests, t0, t1, lambda _agent: True),
            apiserver_request_total=totals_delta(before_metrics, after_metrics),
            findings=findings(op),
        )
        if args.keep_logs:
            for f in sandbox.logs.glob("*.log"):
                shutil.copy(f, keep / f.name)
        return report
    finally:
        if operator is not None and operator.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(operator.pid, signal.SIGTERM)
            try:
                operator.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(operator.pid, signal.SIGKILL)
                operator.wait(timeout=5)
        sandbox.down(log=_say)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rollouts", type=int, default=200)
    parser.add_argument("--namespaces", type=int, default=4)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--settle-seconds", type=float, default=10.0)
    parser.add_argument("--healthy-timeout", type=float, default=600.0)
    parser.add_argument("--keep-logs", action="store_true", help="copy the sandbox's logs before down")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--routed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="give each Rollout two Services and a VirtualService (default); --no-routed: pod counts only",
    )
    args = parser.parse_args(argv)
    began = time.monotonic()
    report = run(args)
    _say(f"benchmark took {time.monotonic() - began:.0f}s")
    print(json.dumps(report.to_json(), indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Failover: two operators on one sandbox, the leader killed with SIGKILL at random moments of a canary.

Each operator runs as its own ServiceAccount (slot A and slot B), so the API server's
audit log says which one made every request. The leader is killed -9 at a random moment,
restarted at once as the new standby, and so on, while a canary walks its steps. Then:

- every revision converges (Healthy, the new revision stable);
- the VirtualService's canary weight, as a watch saw it, walks the setWeight steps in
  order: every one seen, none repeated, none skipped;
- the step index only ever moves forward;
- no request that writes comes from the slot that does not hold the Lease (the holder
  at any moment is the slot that wrote the Lease last, from the same audit log);
- each pause lasts at least its duration and at most duration + lease + 2 s (+1 s for
  the watch that observes it).

`tests/e2e/test_failover.py` runs a few kills in `make test`; this prints the figures
for many: `python bench/failover.py --kills 20`.

Clean stops, with the default lease (15 s, renew 10 s, retry 2 s):

- `--mode sigterm --trials 20`: SIGTERM of the leader with a standby running, a new revision
  written right after. Prints SIGTERM -> the Lease held by the standby (from a watch on the
  Lease, which must pass through an empty holder: released, not expired), SIGTERM -> the new
  leader's first pass (its reconcile count on /metrics) and SIGTERM -> its first write of a
  pass (audit log).
- `--mode restart --trials 20`: SIGTERM of a lone operator, a new revision written while it
  is down, and the operator started again: start -> it leads, start -> first pass and write.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.kube import Kube, free_port, new_namespace, start_sandbox, wait_until  # noqa: E402

from tidegate.sandbox import Sandbox  # noqa: E402

WRITES = {"create", "update", "patch", "delete", "deletecollection"}
PAUSE = 3
"""Seconds of each timed pause step."""


def _ts(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# --------------------------------------------------------------------------- identities


def service_account_kubeconfig(sandbox: Sandbox, namespace: str, name: str, directory: Path) -> Path:
    """A kubeconfig that authenticates as ServiceAccount `name` (bound to cluster-admin)."""
    sandbox.kubectl("-n", namespace, "create", "serviceaccount", name)
    sandbox.kubectl(
        "create",
        "clusterrolebinding",
        f"{namespace}-{name}",
        "--clusterrole=cluster-admin",
        f"--serviceaccount={namespace}:{name}",
    )
    token = sandbox.kubectl("-n", namespace, "create", "token", name, "--duration=2h").stdout.strip()
    config = yaml.safe_load(sandbox.kubeconfig.read_text())
    user = config["contexts"][0]["context"]["user"]
    config["users"] = [{"name": user, "user": {"token": token}}]
    path = directory / f"{name}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Slot:
    """One of the two operator replicas: a ServiceAccount and the process running as it."""

    name: str
    kubeconfig: Path
    log: Path
    lease: tuple[str, str]
    timing: tuple[float, float, float]
    starts: int = 0
    proc: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.lease[0]}:{self.name}"

    @property
    def identity(self) -> str:
        return f"{self.name}-{self.starts}"

    def start(self) -> None:
        self.starts += 1
        lease_ns, lease_name = self.lease
        duration, deadline, retry = self.timing
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tidegate.cli.main",
                    "operator",
                    "--metrics-host=127.0.0.1",
                    f"--metrics-port={self.metrics_port}",
                    f"--leader-elect-namespace={lease_ns}",
                    f"--leader-elect-lease-name={lease_name}",
                    f"--leader-elect-identity={self.identity}",
                    f"--leader-elect-lease-duration={duration}",
                    f"--leader-elect-renew-deadline={deadline}",
                    f"--leader-elect-retry-period={retry}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
                start_new_session=True,
            )

    def send(self, sig: int) -> None:
        """Send `sig` and return at once (`wait()` for the exit)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def wait(self) -> int | None:
        """Wait for the process to exit; its exit code."""
        if self.proc is None:
            return None
        code = self.proc.wait(timeout=30)
        self.proc = None
        return code

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        self.send(sig)
        return self.wait()

    def passes(self) -> int:
        """Reconcile passes this process has run, from its /metrics (0 as a standby)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines()
            if line.startswith("tidegate_reconcile_duration_seconds_count")
        )

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=2) as r:
                return int(r.status) == 200
        except OSError:
            return False


# ----------------------------------------------------------------------------- watching


@dataclass
class Recorder:
    """The VirtualService's canary weight and the Rollout's step index, as watches saw them."""

    kube: Kube
    weights: list[tuple[float, int]] = field(default_factory=list)
    steps: list[tuple[float, str, int]] = field(default_factory=list)
    """(time, currentPodHash, currentStepIndex)"""
    pauses: dict[tuple[str, int], tuple[float, float | None]] = field(default_factory=dict)
    """(revision, step index) -> (startTime written by the operator, time the step was left)"""
    _procs: list[subprocess.Popen[str]] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)

    leases: list[tuple[float, str]] = field(default_factory=list)
    """(time, holderIdentity) of every version of the Lease followed by `follow_lease`"""

    def start(self) -> None:
        self._follow("virtualservices.networking.istio.io", "web", self._vs)
        self._follow("rollouts.tidegate.io", "web", self._rollout)

    def follow_lease(self, name: str) -> None:
        """Every write of the Lease (the watch reports each version once, in order)."""
        self._follow(
            "leases.coordination.k8s.io",
            name,
            lambda now, lease: self.leases.append(
                (now, str((lease.get("spec") or {}).get("holderIdentity") or ""))
            ),
        )

    def _follow(self, kind: str, name: str, handle: Any) -> None:
        proc = subprocess.Popen(
            [*self._kubectl(), "get", kind, name, "--watch", "--output-watch-events", "-o", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._procs.append(proc)

        def run() -> None:
            decoder = json.JSONDecoder()
            buffer = ""
            assert proc.stdout is not None
            for line in proc.stdout:
                buffer += line
                try:
                    event, _ = decoder.raw_decode(buffer.strip())
                except ValueError:
                    continue
                buffer = ""
                handle(time.time(), event.get("object") or {})

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _kubectl(self) -> list[str]:
        return [
            str(self.kube.sandbox.kubectl_dir() / "kubectl"),
            f"--kubeconfig={self.kube.sandbox.kubeconfig}",
            "-n",
            self.kube.namespace,
        ]

    def _vs(self, now: float, vs: dict[str, Any]) -> None:
        http = (vs.get("spec") or {}).get("http") or []
        primary = next((r for r in http if r.get("name") == "primary"), None)
        if primary is None:
            return
        weight = next(
            (d.get("weight", 0) for d in primary.get("route") or [] if "canary" in d["destination"]["host"]),
            0,
        )
        if not self.weights or self.weights[-1][1] != weight:
            self.weights.append((now, int(weight)))

    def _rollout(self, now: float, rollout: dict[str, Any]) -> None:
        st = rollout.get("status") or {}
        rev, index = st.get("currentPodHash") or "", st.get("currentStepIndex")
        if index is None:
            return
        if not self.steps or self.steps[-1][1:] != (rev, index):
            previous = self.steps[-1] if self.steps else None
            self.steps.append((now, rev, int(index)))
            if previous is not None and previous[1] == rev and (rev, previous[2]) in self.pauses:
                start, end = self.pauses[(rev, previous[2])]
                if end is None:
                    self.pauses[(rev, previous[2])] = (start, now)
        for cond in st.get("pauseConditions") or []:
            if cond.get("reason") == "CanaryPauseStep" and (rev, index) not in self.pauses:
                self.pauses[(rev, int(index))] = (_ts(cond["startTime"]), None)

    def stop(self) -> None:
        for proc in self._procs:
            proc.terminate()
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


# ------------------------------------------------------------------------------ checking


def audit_writes(
    logs: Path, users: set[str], since: float, refused: bool = False
) -> list[tuple[float, str, str, str]]:
    """(time, user, verb, resource) of every write by `users`, and of their Lease writes;
    `refused`: those the API server refused as well (a 409 reached it too)."""
    out = []
    for path in sorted(logs.glob("audit*.log"), key=lambda p: (p.name == "audit.log", p.name)):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                user = (event.get("user") or {}).get("username", "")
                if user not in users or event.get("stage") != "ResponseComplete":
                    continue
                if event.get("verb") not in WRITES:
                    continue
                code = (event.get("responseStatus") or {}).get("code", 0)
                if not refused and not 200 <= int(code) < 300:
                    continue  # refused writes changed nothing (a standby's Lease attempt, a 409)
                at = _ts(event["requestReceivedTimestamp"])
                if at < since:
                    continue
                ref = event.get("objectRef") or {}
                resource = ref.get("resource", "") + (
                    f"/{ref['subresource']}" if ref.get("subresource") else ""
                )
                out.append((at, user, str(event.get("verb")), resource))
    return sorted(out)


def standby_writes(writes: list[tuple[float, str, str, str]]) -> list[str]:
    """Writes (other than to the Lease) by a slot that had not written the Lease last."""
    holder: str | None = None
    bad = []
    for at, user, verb, resource in writes:
        if resource == "leases":
            holder = user
            continue
        if user != holder:
            bad.append(f"{verb} {resource} by {user} at {at:.3f} while {holder} held the Lease")
    return bad


def _changes(weights: list[int]) -> list[int]:
    return [w for i, w in enumerate(weights) if i == 0 or weights[i - 1] != w]


def weight_problems(weights: list[int], expected: list[int]) -> list[str]:
    """The canary weights seen must be `expected` in order: none skipped, none repeated."""
    seen = _changes(weights)
    if seen != expected:
        return [f"canary weights seen {seen}, expected {expected}"]
    return []


@dataclass
class Report:
    kills: int = 0
    revisions: int = 0
    failovers: list[float] = field(default_factory=list)
    """Seconds from a kill to the next pass of the new leader (its first write)."""
    pause_overruns: list[float] = field(default_factory=list)
    outages: list[tuple[float, float]] = field(default_factory=list)
    """(kill, new leader seen) wall-clock pairs: the times no operator led."""
    problems: list[str] = field(default_factory=list)


def _holder(kube: Kube, lease: tuple[str, str]) -> str:
    got = kube.sandbox.kubectl("-n", lease[0], "get", "lease", lease[1], "-o", "json", check=False)
    if got.returncode != 0:
        return ""
    return str((json.loads(got.stdout).get("spec") or {}).get("holderIdentity") or "")


def _stage(
    sandbox: Sandbox,
    prefix: str,
    timing: tuple[float, float, float],
    steps: list[dict[str, Any]],
    names: tuple[str, ...] = ("slot-a", "slot-b"),
    metrics: bool = False,
) -> tuple[Kube, tuple[str, str], list[Slot], dict[str, Any]]:
    """A namespace with the canary example's Services and VirtualService, a slot per name (not
    started) and the Rollout to apply, with these steps."""
    ns = new_namespace(sandbox, prefix)
    kube = Kube(sandbox, ns)
    work = Path(tempfile.mkdtemp(prefix=f"tidegate-{prefix}-"))
    lease = (ns, "tidegate-failover")
    slots = [
        Slot(
            name,
            service_account_kubeconfig(sandbox, ns, name, work),
            work / f"{name}.log",
            lease,
            timing,
            metrics_port=free_port() if metrics else 0,
        )
        for name in names
    ]
    for path in ("examples/canary/services.yaml", "examples/canary/virtualservice.yaml"):
        kube.apply_file(ROOT / path)
    doc = yaml.safe_load((ROOT / "examples/canary/rollout.yaml").read_text())
    canary = doc["spec"]["strategy"]["canary"]
    canary["steps"] = steps
    canary["trafficRouting"].pop("managedRoutes", None)
    canary["scaleDownDelaySeconds"] = 0
    return kube, lease, slots, doc


def _set_image(kube: Kube, image: str) -> None:
    patch = [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image}]
    kube.kubectl("patch", "rollout.tidegate.io", "web", "--type=json", "-p", json.dumps(patch))


def run(
    sandbox: Sandbox,
    kills: int,
    seed: int = 1,
    timing: tuple[float, float, float] = (6.0, 4.0, 1.0),
    log: Any = print,
) -> Report:
    rng = random.Random(seed)
    weights_per_step = list(range(10, 100, 10))
    steps: list[dict[str, Any]] = []
    for w in weights_per_step:
        steps += [{"setWeight": w}, {"pause": {"duration": f"{PAUSE}s"}}]
    kube, lease, slots, doc = _stage(sandbox, "failover", timing, steps)
    report = Report()
    began = time.time()
    recorder = Recorder(kube)
    for slot in slots:
        slot.start()
    try:
        kube.apply(doc)
        kube.wait_phase("web", "Healthy", timeout=120)
        recorder.start()
        image = 1
        while report.kills < kills:
            image += 1
            report.revisions += 1
            _set_image(kube, f"registry.example/web:{image}.0")
            while report.kills < kills:
                # One read: phase and observedGeneration from separate reads raced (a stale
                # Healthy of the old generation, then the new generation observed) and ended
                # the revision before any kill.
                current = kube.rollout("web")
                st = current.get("status") or {}
                if st.get("phase") == "Healthy" and current["metadata"]["generation"] == st.get(
                    "observedGeneration"
                ):
                    break
                holder = wait_until(lambda: _holder(kube, lease), 60, what="a leader")
                leader = next((s for s in slots if s.identity == holder and s.proc is not None), None)
                if leader is None:
                    continue
                time.sleep(rng.uniform(0.2, 2.5))  # a random moment of the leader's life, not a wait
                leader.kill()
                killed_at = time.time()
                report.kills += 1
                leader.start()  # back as the standby, as a Deployment would restart it
                old = holder
                new = wait_until(
                    lambda old=old: (h := _holder(kube, lease)) and h != old and h, 60, what="a new leader"
                )
                report.failovers.append(time.time() - killed_at)
                report.outages.append((killed_at, time.time()))
                log(f"kill {report.kills}: {holder} killed, {new} leads after {time.time() - killed_at:.1f}s")
            kube.wait_phase("web", "Healthy", timeout=180)
        wait_until(
            lambda: kube.status("web").get("stableRS") == kube.status("web").get("currentPodHash"),
            60,
            what="the last revision stable",
        )
        # The watches deliver the last weight (0 on the new stable) shortly after.
        final = 1 + report.revisions * (len(weights_per_step) + 2)
        with contextlib.suppress(AssertionError):
            wait_until(
                lambda: len(_changes([w for _, w in recorder.weights])) >= final, 15, what="the last weights"
            )
    finally:
        recorder.stop()
        for slot in slots:
            slot.kill(signal.SIGTERM)
    # Weights, per revision: 0 -> 10 ... 90 -> 100 -> 0 (the new revision is stable).
    expected = [0]
    for _ in range(report.revisions):
        expected += [*weights_per_step, 100, 0]
    report.problems += weight_problems([w for _, w in recorder.weights], expected)
    per_rev: dict[str, list[int]] = {}
    for _, rev, index in recorder.steps:
        per_rev.setdefault(rev, []).append(index)
    for rev, indexes in per_rev.items():
        if any(b < a for a, b in itertools.pairwise(indexes)):
            report.problems.append(f"revision {rev}: step index went back: {indexes}")
    for (rev, index), (start, end) in sorted(recorder.pauses.items()):
        if end is None:
            continue
        overrun = end - start - PAUSE
        report.pause_overruns.append(overrun)
        # A pause may outlast its duration by the time no operator led during it (two kills can
        # land in one pause), plus one retry period and 2 s for the new leader's first pass.
        leaderless = sum(max(0.0, min(end, b) - max(start, a)) for a, b in report.outages)
        if overrun < 0 or overrun > leaderless + timing[2] + 2:
            report.problems.append(
                f"pause at step {index + 1} of {rev} lasted {end - start:.2f}s "
                f"({leaderless:.1f}s of it with no leader)"
            )
    writes = audit_writes(sandbox.logs, {s.user for s in slots}, began)
    report.problems += standby_writes(writes)
    sandbox.kubectl("delete", "namespace", kube.namespace, "--wait=false", check=False)
    return report


# ------------------------------------------------------------------- clean stops, restarts

PASS_WRITES = {"rollouts/status", "replicasets", "services", "virtualservices", "events"}
"""What a reconcile pass writes (kopf's own bookkeeping patches `rollouts`, Leases are the elector's)."""


@dataclass
class Handover:
    """One SIGTERM of the leader with a standby running, timed from the SIGTERM (wall clock)."""

    at: float
    """When the SIGTERM was sent."""
    old: Slot
    new: Slot
    released: bool
    """The Lease went through an empty holder between the two: released, not waited out."""
    exit_code: int | None
    to_holder: float
    """SIGTERM -> the Lease names the standby."""
    to_pass: float | None
    """SIGTERM -> the new leader has run a pass (its reconcile count, polled every 20 ms)."""
    to_write: float | None = None
    """SIGTERM -> the first write of a pass after the SIGTERM (audit log); None if none came."""
    writer: str = ""
    """Who made that write: the new leader's user, unless the old one finished a pass in flight."""


@dataclass
class Restart:
    """One SIGTERM of the only operator and its start again."""

    at: float
    """When it was started again."""
    exit_code: int | None
    down: float
    """SIGTERM -> the process has exited (passes finished, Lease released)."""
    to_lead: float
    """start -> the Lease names the new process."""
    to_pass: float | None
    """start -> its first pass."""
    to_write: float | None = None
    """start -> its first write of a pass (of the revision written while it was down)."""


def _poll(check: Any, timeout: float, interval: float = 0.02) -> float | None:
    """The wall-clock time `check()` first held, or None after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return time.time()
        time.sleep(interval)
    return None


def _first_pass_writes(kube: Kube, slots: list[Slot], since: list[float]) -> list[tuple[float, str] | None]:
    """For each time, the first write of a pass after it by any slot (time, user): audit log."""
    writes = audit_writes(kube.sandbox.logs, {s.user for s in slots}, min(since, default=0))
    passes = [(at, user) for at, user, _, res in writes if res in PASS_WRITES]
    return [next(((at, user) for at, user in passes if at >= t), None) for t in since]


def handovers(
    sandbox: Sandbox,
    trials: int,
    timing: tuple[float, float, float] = (15.0, 10.0, 2.0),
    log: Any = print,
) -> list[Handover]:
    """SIGTERM the leader `trials` times (restarting it as the standby each time), a new revision
    written right after each SIGTERM so that the new leader has a pass to write."""
    kube, lease, slots, doc = _stage(sandbox, "handover", timing, [], metrics=True)
    recorder = Recorder(kube)
    out: list[Handover] = []
    for slot in slots:
        slot.start()
    try:
        kube.apply(doc)
        kube.wait_phase("web", "Healthy", timeout=120)
        recorder.follow_lease(lease[1])
        # The watch reports the Lease as it is first, then each write: live once it has.
        wait_until(lambda: recorder.leases, 30, what="the watch on the Lease")
        for trial in range(trials):
            holder = wait_until(lambda: _holder(kube, lease), 60, what="a leader")
            leader = next(s for s in slots if s.identity == holder)
            standby = next(s for s in slots if s is not leader)
            wait_until(standby.ready, 60, what=f"{standby.identity} Ready")
            assert standby.passes() == 0, "a standby runs no pass"
            seen = len(recorder.leases)
            sigterm = time.time()
            leader.send(signal.SIGTERM)
            _set_image(kube, f"registry.example/web:handover-{trial}")
            passed = _poll(lambda s=standby: s.passes() > 0, 60)
            code = leader.wait()
            took = wait_until(
                lambda s=standby, seen=seen: next(
                    (at for at, h in recorder.leases[seen:] if h == s.identity), None
                ),
                60,
                what=f"the Lease held by {standby.identity}",
            )
            released = "" in [h for at, h in recorder.leases[seen:] if at <= took]
            to_pass = None if passed is None else passed - sigterm
            out.append(Handover(sigterm, leader, standby, released, code, took - sigterm, to_pass))
            log(
                f"handover {trial + 1}: {leader.identity} -> {standby.identity}: Lease after "
                f"{took - sigterm:.2f}s ({'released' if released else 'NOT released'}), first pass "
                f"after {'-' if to_pass is None else f'{to_pass:.2f}'}s, old leader exited {code}"
            )
            leader.start()  # back as the standby, as a Deployment would restart it
            kube.wait_phase("web", "Healthy", timeout=120)
        for h, first in zip(out, _first_pass_writes(kube, slots, [h.at for h in out]), strict=True):
            if first is not None:
                h.to_write, h.writer = first[0] - h.at, first[1]
    finally:
        recorder.stop()
        for slot in slots:
            slot.kill(signal.SIGTERM)
        sandbox.kubectl("delete", "namespace", kube.namespace, "--wait=false", check=False)
    return out


def restarts(
    sandbox: Sandbox,
    trials: int,
    timing: tuple[float, float, float] = (15.0, 10.0, 2.0),
    log: Any = print,
) -> list[Restart]:
    """One operator, SIGTERM'd and started again `trials` times; a new revision is written while
    it is down, so that its first pass has something to write."""
    kube, lease, slots, doc = _stage(sandbox, "restart", timing, [], names=("slot-a",), metrics=True)
    (slot,) = slots
    out: list[Restart] = []
    slot.start()
    try:
        kube.apply(doc)
        kube.wait_phase("web", "Healthy", timeout=120)
        for trial in range(trials):
            sigterm = time.time()
            code = slot.kill(signal.SIGTERM)
            down = time.time() - sigterm
            _set_image(kube, f"registry.example/web:restart-{trial}")
            slot.start()
            started = time.time()
            led = _poll(lambda: _holder(kube, lease) == slot.identity, 60, interval=0.05)
            passed = _poll(lambda: slot.passes() > 0, 60)
            if led is None:
                raise AssertionError(f"{slot.identity} never took the Lease; {slot.log}")
            to_pass = None if passed is None else passed - started
            out.append(Restart(started, code, down, led - started, to_pass))
            log(
                f"restart {trial + 1}: down in {down:.2f}s (exit {code}), leads {led - started:.2f}s "
                f"after its start, first pass after {'-' if to_pass is None else f'{to_pass:.2f}'}s"
            )
            kube.wait_phase("web", "Healthy", timeout=120)
        for r, first in zip(out, _first_pass_writes(kube, slots, [r.at for r in out]), strict=True):
            if first is not None:
                r.to_write = first[0] - r.at
    finally:
        slot.kill(signal.SIGTERM)
        sandbox.kubectl("delete", "namespace", kube.namespace, "--wait=false", check=False)
    return out


def _figure(name: str, values: list[float | None]) -> str:
    got = sorted(v for v in values if v is not None)
    if not got:
        return f"{name}: no sample"
    missing = f" ({len(values) - len(got)} without)" if len(got) < len(values) else ""
    return f"{name}: p50 {got[len(got) // 2]:.2f}s  max {got[-1]:.2f}s  over {len(got)}{missing}"


def _clean(sandbox: Sandbox, args: argparse.Namespace) -> int:
    """--mode sigterm / restart: print the figures; 1 when a handover was not a release."""
    timing = tuple(args.lease)
    problems = []
    if args.mode == "sigterm":
        hs = handovers(sandbox, args.trials, timing)
        print(f"SIGTERM of the leader, a standby running: {len(hs)} trials (lease {timing[0]:.0f}s)")
        print(_figure("SIGTERM -> Lease held by the standby", [h.to_holder for h in hs]))
        print(_figure("SIGTERM -> first pass of the new leader", [h.to_pass for h in hs]))
        print(_figure("SIGTERM -> first write of the new leader", [h.to_write for h in hs]))
        for i, h in enumerate(hs, 1):
            if not h.released:
                problems.append(f"handover {i}: the Lease was not released")
            if h.exit_code != 0:
                problems.append(f"handover {i}: the old leader exited {h.exit_code}")
            if h.writer and h.writer != h.new.user:
                problems.append(f"handover {i}: the first write after SIGTERM was {h.writer}'s")
    else:
        rs = restarts(sandbox, args.trials, timing)
        print(f"SIGTERM and start again of the only operator: {len(rs)} trials (lease {timing[0]:.0f}s)")
        print(_figure("SIGTERM -> exited", [r.down for r in rs]))
        print(_figure("start -> leads", [r.to_lead for r in rs]))
        print(_figure("start -> first pass", [r.to_pass for r in rs]))
        after_lead = [None if r.to_pass is None else r.to_pass - r.to_lead for r in rs]
        print(_figure("leads -> first pass", after_lead))
        print(_figure("start -> first write", [r.to_write for r in rs]))
        problems += [f"restart {i}: exited {r.exit_code}" for i, r in enumerate(rs, 1) if r.exit_code != 0]
    print("problems:" if problems else "problems: none")
    for problem in problems:
        print(f"  {problem}")
    return 1 if problems else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mode",
        choices=("kill", "sigterm", "restart"),
        default="kill",
        help="kill: kill -9 during a canary (the default); sigterm: clean stops of the leader with a "
        "standby; restart: SIGTERM and start of a lone operator",
    )
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--trials", type=int, default=20, help="stops in --mode sigterm and restart")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--lease", type=float, nargs=3, default=(15.0, 10.0, 2.0), metavar=("DURATION", "RENEW", "RETRY")
    )
    args = parser.parse_args()
    sandbox = start_sandbox(Path(tempfile.mkdtemp(prefix="tidegate-bench-failover-")))
    try:
        if args.mode != "kill":
            raise SystemExit(_clean(sandbox, args))
        report = run(sandbox, args.kills, args.seed, tuple(args.lease))
    finally:
        sandbox.down()
    failovers = sorted(report.failovers)
    print(f"kills: {report.kills} over {report.revisions} revisions (lease {args.lease[0]:.0f}s)")
    if failovers:
        median = failovers[len(failovers) // 2]
        print(
            f"kill -9 -> new leader: min {failovers[0]:.1f}s  median {median:.1f}s  max {failovers[-1]:.1f}s"
        )
    if report.pause_overruns:
        over = report.pause_overruns
        print(f"pause length beyond its {PAUSE}s: min {min(over):.2f}s, max {max(over):.2f}s")
    print("problems:" if report.problems else "problems: none")
    for problem in report.problems:
        print(f"  {problem}")
    raise SystemExit(1 if report.problems else 0)


if __name__ == "__main__":
    main()

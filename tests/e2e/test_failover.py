"""Failover on the sandbox: two operators, the leader killed -9 at random moments of a canary,
and the leader stopped cleanly (SIGTERM) with a standby running.

The scenarios and their checks are `bench/failover.py` (the same code path; the bench runs
many kills with the default 15 s lease, and prints the clean stops' figures). Here: three
kills, with a short lease so the suite stays quick, and two clean stops with the default one.
"""

from __future__ import annotations

import json
import signal
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from bench.failover import Slot, _holder, handovers, run, service_account_kubeconfig

from tests.kube import Kube, OperatorProcess, free_port, new_namespace, wait_until
from tidegate.sandbox import Sandbox


def test_the_leader_killed_at_random_moments_never_repeats_or_skips_a_step(
    sandbox: Sandbox, operator: OperatorProcess
) -> None:
    operator.stop()  # its own Lease is another one; stopped so that only the two below act
    try:
        report = run(sandbox, kills=3, seed=7, timing=(6.0, 4.0, 1.0))
    finally:
        operator.start()
    assert report.kills == 3
    assert not report.problems, "\n".join(report.problems)
    assert all(f < 6.0 + 2.0 + 2.0 for f in report.failovers), report.failovers


def test_sigterm_hands_the_lease_over_by_release_and_the_standby_runs_the_next_pass(
    sandbox: Sandbox, operator: OperatorProcess
) -> None:
    """The default lease (15 s): a standby that waited for it to expire could not lead sooner."""
    lease_duration = 15.0
    operator.stop()  # its own Lease is another one; stopped so that only the two below act
    try:
        done = handovers(sandbox, trials=2, timing=(lease_duration, 10.0, 2.0))
    finally:
        operator.start()
    assert len(done) == 2
    for i, h in enumerate(done, 1):
        what = f"handover {i} ({h.old.identity} -> {h.new.identity})"
        assert h.exit_code == 0, f"{what}: the old leader exited {h.exit_code}; {h.old.log}"
        assert h.released, f"{what}: the Lease never had an empty holder: it was not released"
        assert h.to_holder < lease_duration, (
            f"{what}: the standby led {h.to_holder:.1f}s after SIGTERM, as late as an expiry"
        )
        # The revision written right after the SIGTERM went Healthy (`handovers` waits for its
        # observedGeneration), and its first pass was the new leader's.
        assert h.to_pass is not None, f"{what}: the new leader ran no pass; {h.new.log}"
        assert h.writer == h.new.user, f"{what}: the first pass write after SIGTERM was {h.writer!r}'s"


def test_a_standby_is_ready_and_a_leader_that_loses_its_lease_exits(sandbox: Sandbox) -> None:
    """Readiness is the caches, not the Lease; a Lease taken by another identity stops the leader."""
    ns = new_namespace(sandbox, "lease")
    work = Path(tempfile.mkdtemp(prefix="tidegate-lease-"))
    lease = (ns, "tidegate-lost")
    slots = [
        Slot(
            name,
            service_account_kubeconfig(sandbox, ns, name, work),
            work / f"{name}.log",
            lease,
            (6.0, 4.0, 1.0),
            metrics_port=free_port(),
        )
        for name in ("slot-a", "slot-b")
    ]
    kube = Kube(sandbox, ns)
    try:
        for slot in slots:
            slot.start()

        def ready(slot: Slot) -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{slot.metrics_port}/readyz", timeout=2) as r:
                    return int(r.status) == 200
            except OSError:
                return False

        holder = wait_until(lambda: _holder(kube, lease), 60, what="a leader")
        leader = next(s for s in slots if s.identity == holder)
        standby = next(s for s in slots if s is not leader)
        wait_until(lambda: ready(standby), 60, what="the standby Ready")
        assert _holder(kube, lease) == leader.identity, "the standby did not take the Lease"
        # SIGTERM releases the Lease: once the old leader has exited, the standby leads at its
        # next retry (1 s here). Unreleased, it would wait out the 6 s lease from its last look.
        leader.kill(signal.SIGTERM)  # returns once the process has exited
        exited_at = time.monotonic()
        wait_until(lambda: _holder(kube, lease) == standby.identity, 30, what="the standby to lead")
        took = time.monotonic() - exited_at
        assert took < 4.0, f"the standby led {took:.1f}s after the leader exited: the Lease was not released"
        leader, standby = standby, leader
        standby.start()
        # Someone else takes the Lease (as after a partition): the leader must stop acting.
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        sandbox.kubectl(
            "-n",
            ns,
            "patch",
            "lease",
            lease[1],
            "--type=merge",
            "-p",
            json.dumps(
                {"spec": {"holderIdentity": "intruder", "renewTime": now, "leaseDurationSeconds": 60}}
            ),
        )
        assert leader.proc is not None
        code = wait_until(
            lambda: leader.proc.poll() if leader.proc else None, 30, what="the old leader to exit"
        )
        assert code == 1, f"exit code {code}"
        assert "lost the leader Lease" in leader.log.read_text()
    finally:
        for slot in slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.kill(signal.SIGTERM)
        sandbox.kubectl("delete", "namespace", ns, "--wait=false", check=False)

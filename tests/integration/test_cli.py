"""The SRE commands against the real sandbox with the operator running: promote, abort,
retry, pause, resume, undo, set image, status, list, get (and get --watch)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.kube import REPO, Kube, WaitTimeout, wait_until
from tidegate.cli.main import cli

pytestmark = pytest.mark.sandbox

HASH = "rollouts-pod-template-hash"


def canary_rollout(name: str = "web", image: str = "example/web:1") -> dict[str, Any]:
    return {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
            "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}},
        },
    }


@pytest.fixture
def tg(kube: Kube, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run `tidegate ARGS -n <test namespace>` in-process; check the exit code; return the result."""
    monkeypatch.setenv("KUBECONFIG", str(kube.sandbox.kubeconfig))

    def run(*args: str, code: int = 0) -> Result:
        result = CliRunner().invoke(cli, [*args, "-n", kube.namespace], catch_exceptions=False)
        assert result.exit_code == code, f"tidegate {' '.join(args)} -> {result.exit_code}:\n{result.output}"
        return result

    return run


def template_image(kube: Kube, name: str = "web") -> str:
    image: str = kube.rollout(name)["spec"]["template"]["spec"]["containers"][0]["image"]
    return image


def paused_at_step_2(kube: Kube, name: str = "web") -> dict[str, Any]:
    def check() -> dict[str, Any]:
        st = kube.status(name)
        ok = st.get("phase") == "Paused" and st.get("currentStepIndex") == 1 and st.get("pauseConditions")
        return st if ok and not st.get("abort") else {}

    try:
        return wait_until(check, 60, what=f"{name} paused at step 2")
    except WaitTimeout as exc:
        raise WaitTimeout(f"{exc}; now: {kube._brief(name)}") from None


def revisions(kube: Kube, name: str = "web") -> dict[int, str]:
    return {
        int(rs["metadata"]["annotations"]["rollout.tidegate.io/revision"]): rs["metadata"]["labels"][HASH]
        for rs in kube.replica_sets(name)
    }


def test_set_image_pause_promote_and_the_read_commands(kube: Kube, tg: Any) -> None:
    kube.apply(canary_rollout())
    healthy = tg("status", "web", "--timeout", "60s")
    assert "rollout web is Healthy" in healthy.output

    refused = tg("promote", "web", code=1)
    assert "Healthy and fully promoted" in refused.output and "nothing to promote" in refused.output
    assert "not aborted" in tg("retry", "web", code=1).output
    assert "nothing to abort" in tg("abort", "web", code=1).output

    listed = json.loads(tg("list", "rollouts", "-o", "json").stdout)
    assert [(r["name"], r["strategy"], r["phase"], r["step"]) for r in listed] == [
        ("web", "Canary", "Healthy", "2/2")
    ]
    assert listed[0]["namespace"] == kube.namespace and listed[0]["available"] == 2
    table = tg("list", "rollouts").output.splitlines()
    assert table[0].split()[:4] == ["NAME", "STRATEGY", "PHASE", "STEP"] and table[1].split()[:3] == [
        "web",
        "Canary",
        "Healthy",
    ]

    unknown = tg("set", "image", "web", "web=example/web:2", code=1)
    assert "no container web; its containers: app" in unknown.output
    changed = tg("set", "image", "web", "app=example/web:2")
    assert "app example/web:1 -> example/web:2" in changed.output
    assert template_image(kube) == "example/web:2"
    paused_at_step_2(kube)

    timed_out = tg("status", "web", "--timeout", "2s", code=2)
    assert "timed out after 2s" in timed_out.output and "Paused (step 2/2)" in timed_out.output
    assert tg("status", "web", "--no-watch", code=2).output.startswith("Paused (step 2/2)")

    view = tg("get", "rollout", "web").output
    marked = [line for line in view.splitlines() if "▶" in line]
    assert len(marked) == 1 and "2. pause (until promoted)" in marked[0], view
    assert "50% canary / 50% stable" in view and "until promoted" in view
    assert "example/web:2 (canary)" in view and "example/web:1 (stable)" in view

    promoted = tg("promote", "web")
    assert promoted.output.strip() == "rollout web promoted: step 2/2 -> promotion"
    assert "rollout web is Healthy" in tg("status", "web", "--timeout", "60s").output
    st = kube.status("web")
    assert st["stableRS"] == st["currentPodHash"] == revisions(kube)[2]
    assert "nothing to promote" in tg("promote", "web", code=1).output


def test_abort_retry_status_and_undo(kube: Kube, tg: Any) -> None:
    kube.apply(canary_rollout())
    tg("status", "web", "--timeout", "60s")
    tg("set", "image", "web", "app=example/web:2")
    paused_at_step_2(kube)
    tg("promote", "web")
    tg("status", "web", "--timeout", "60s")
    tg("set", "image", "web", "app=example/web:3")
    paused_at_step_2(kube)

    aborted = tg("abort", "web")
    assert f"stable revision {revisions(kube)[2]}" in aborted.output
    degraded = tg("status", "web", "--timeout", "60s", code=1)
    # Exit 1 as soon as the abort is requested; the operator's Degraded may follow a moment later.
    assert "(aborted)" in degraded.output
    wait_until(
        lambda: kube.status("web").get("phase") == "Degraded", 60, what="the operator reports Degraded"
    )
    assert kube.status("web")["phase"] == "Degraded"
    assert "already aborted" in tg("abort", "web", code=1).output
    assert "tidegate retry web" in tg("promote", "web", code=1).output

    retried = tg("retry", "web")
    assert "steps start again at 1/2" in retried.output
    st = paused_at_step_2(kube)
    assert st["abort"] is False and not st.get("abortedAt")

    # Back to the previous revision (2), the stable one: a fast rollback, no steps.
    assert tg("undo", "web").output.strip() == "rollout web rolled back to revision 2"
    assert template_image(kube) == "example/web:2"
    assert "rollout web is Healthy" in tg("status", "web", "--timeout", "60s").output
    assert kube.status("web")["stableRS"] == revisions(kube)[2]

    # Back to revision 1: its own template (same hash, so its ReplicaSet is reused).
    assert tg("undo", "web", "--to-revision", "1").output.strip() == "rollout web rolled back to revision 1"
    assert template_image(kube) == "example/web:1"
    wait_until(
        lambda: kube.status("web").get("currentPodHash") == revisions(kube)[1],
        30,
        what="the undone template hashes to revision 1's ReplicaSet",
    )
    assert sorted(revisions(kube)) == [1, 2, 3]
    assert "no revision 9" in tg("undo", "web", "--to-revision", "9", code=1).output


def _reader(proc: subprocess.Popen[str], sink: list[str]) -> threading.Thread:
    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.append(line)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def test_pause_resume_restart_and_get_watch(kube: Kube, tg: Any) -> None:
    kube.apply(canary_rollout())
    tg("status", "web", "--timeout", "60s")

    assert "paused (spec.paused: true)" in tg("pause", "web").output
    assert kube.rollout("web")["spec"]["paused"] is True
    assert "already paused" in tg("pause", "web").output
    tg("set", "image", "web", "app=example/web:2")
    kube.wait_phase("web", "Paused")
    assert kube.status("web").get("currentStepIndex") == 0

    # The live view, redrawn from watch events, in a separate process ended with Ctrl-C.
    env = {**os.environ, "KUBECONFIG": str(kube.sandbox.kubeconfig), "COLUMNS": "120"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidegate.cli.main", "get", "rollout", "web", "--watch", "-n", kube.namespace],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    lines: list[str] = []
    _reader(proc, lines)
    try:
        wait_until(lambda: any("spec.paused" in line for line in lines), 30, what="the first frame")
        resumed = tg("resume", "web")
        assert "spec.paused: false" in resumed.output
        assert kube.rollout("web")["spec"]["paused"] is False
        paused_at_step_2(kube)
        wait_until(
            lambda: any("▶  2. pause (until promoted)" in line for line in lines),
            30,
            what="a redrawn frame with the marker on step 2",
        )
        # resume also clears the pause conditions: past the pause step, then Healthy.
        assert "pause conditions cleared (CanaryPauseStep)" in tg("resume", "web").output
        kube.wait_phase("web", "Healthy")
        wait_until(lambda: any("✔ Healthy" in line for line in lines[-40:]), 30, what="a Healthy frame")
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "nothing to resume" in tg("resume", "web").output

    restarted = tg("restart", "web")
    restart_at = kube.rollout("web")["spec"]["restartAt"]
    assert f"pods created before {restart_at}" in restarted.output

    # --kubeconfig and --context work without KUBECONFIG.
    explicit = ["--kubeconfig", str(kube.sandbox.kubeconfig), "--context", "tidegate-sandbox"]
    result = CliRunner(env={"KUBECONFIG": None}).invoke(
        cli, ["list", "rollouts", "-A", "-o", "yaml", *explicit], catch_exceptions=False
    )
    assert result.exit_code == 0 and f"namespace: {kube.namespace}" in result.output
    missing = CliRunner().invoke(
        cli, ["get", "rollout", "web", "--context", "nope", "--kubeconfig", str(kube.sandbox.kubeconfig)]
    )
    assert missing.exit_code == 1 and "nope" in missing.output

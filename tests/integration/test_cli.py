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
from pathlib import Path
from typing import Any

import pytest
import yaml
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
    assert listed["kind"] == "List"
    assert [(r["metadata"]["name"], r["status"]["phase"], r["status"]["step"]) for r in listed["items"]] == [
        ("web", "Healthy", "2/2")
    ]
    assert listed["items"][0]["metadata"]["namespace"] == kube.namespace
    table = tg("list", "rollouts").output.splitlines()
    assert table[0].split()[:5] == ["NAME", "STRATEGY", "PHASE", "REASON", "STEP"]
    assert table[1].split()[:5] == ["web", "Canary", "Healthy", "-", "2/2"]

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
    assert retried.output.strip() == "rollout web retried: steps start again at 1/2"
    # retry wrote only abort: false; the operator started the steps again.
    st = paused_at_step_2(kube)
    assert st["abort"] is False and not st.get("abortedAt") and not st.get("abortedRevision")

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


def _ctrl_c_as_in_a_terminal() -> None:
    """The watch gets SIGINT as a terminal's Ctrl-C would deliver it. A suite started in the
    background by a non-interactive shell runs with SIGINT ignored, and a child inherits that
    (so does Python, which then installs no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
        preexec_fn=_ctrl_c_as_in_a_terminal,
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
        # resume is spec.paused only: a pause step waits for promote, however often resumed.
        for _ in range(2):
            not_paused = tg("resume", "web").output
            assert "is not paused (spec.paused is not set): nothing to resume" in not_paused
            assert "it waits in a pause step at step 2/2" in not_paused
            assert "`tidegate promote web` ends a pause" in not_paused
        st = kube.status("web")
        assert st["currentStepIndex"] == 1 and st["pauseConditions"], "resume left the pause step alone"
        assert tg("promote", "web").output.strip() == "rollout web promoted: step 2/2 -> promotion"
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
    assert f"restart requested (restartAt {restart_at}): pods created before it" in restarted.output
    # status waits for the restart, not only for Healthy; get shows it while it runs.
    seen = tg("status", "web", "--timeout", "90s").output
    assert "rollout web is Healthy" in seen
    assert kube.status("web").get("restartedAt") == restart_at
    reasons = kube.kubectl(
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=Rollout,involvedObject.name=web",
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{'\\n'}{end}",
    ).stdout
    assert "RestartStarted: replacing 2 pods created before" in reasons, reasons
    assert f"RestartCompleted: every pod created before {restart_at} was replaced" in reasons, reasons
    assert "RolloutHealthy: restarting" not in reasons, reasons

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


def test_kubectl_names_output_formats_and_flags_before_the_verb(kube: Kube, tg: Any) -> None:
    image = "registry.example/a-team/with-a-long-path/web-frontend-service:1.0.0-" + "x" * 40
    kube.apply(canary_rollout(image=image))
    tg("status", "web", "--timeout", "60s")
    ns = kube.namespace
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Result:
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        assert result.exit_code == code, f"tidegate {' '.join(args)} -> {result.exit_code}:\n{result.output}"
        return result

    names = {
        run("-n", ns, "get", kind, *rest, "-o", "name").stdout
        for kind in ("rollout", "rollouts", "ro", "rollouts.tidegate.io")
        for rest in ((), ("web",))
    }
    assert names == {"rollout.tidegate.io/web\n"}
    assert run("list", "rollout", "-n", ns, "-o", "name").stdout == "rollout.tidegate.io/web\n"
    obj = yaml.safe_load(run("--namespace", ns, "get", "ro", "web", "-o", "yaml").stdout)
    assert (
        obj["kind"] == "Rollout" and obj["metadata"]["name"] == "web" and obj["status"]["phase"] == "Healthy"
    )
    wide = run("get", "ro", "-n", ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == [
        "NAME",
        "STRATEGY",
        "PHASE",
        "REASON",
        "STEP",
        "WEIGHT",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "AGE",
        "IMAGES",
        "MESSAGE",
    ]
    assert wide[1].split()[:11] == [
        "web",
        "Canary",
        "Healthy",
        "-",
        "2/2",
        "0%",
        "2/2",
        "2",
        "2",
        wide[1].split()[9],
        image,
    ]
    everywhere = run("-A", "get", "rollouts").stdout.splitlines()
    assert everywhere[0].split()[:2] == ["NAMESPACE", "NAME"] and any(
        line.split()[:2] == [ns, "web"] for line in everywhere
    )
    assert "No analysisruns found in namespace" in run("get", "ar", "-n", ns).output
    assert run("--request-timeout", "5s", "-n", ns, "get", "rollout", "web").exit_code == 0

    # Piped (not a terminal), the view is never wrapped: the long image stays on its line.
    env = {**os.environ, "KUBECONFIG": str(kube.sandbox.kubeconfig), "COLUMNS": "80"}
    piped = subprocess.run(
        [sys.executable, "-m", "tidegate.cli.main", "get", "rollout", "web", "-n", ns],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=True,
    ).stdout
    assert any(
        line.startswith("Images:") and line.endswith(f"{image} (stable)") for line in piped.splitlines()
    ), piped


def test_get_analysisruns(kube: Kube, tg: Any) -> None:
    """An AnalysisRun of a step whose web metric cannot be reached: listed, shown, measured."""
    kube.apply(
        {
            "apiVersion": "tidegate.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "unreachable"},
            "spec": {
                "metrics": [
                    {
                        "name": "health",
                        "interval": "1s",
                        "count": 1,
                        "consecutiveErrorLimit": 0,
                        "successCondition": "result == true",
                        "provider": {"web": {"url": "http://127.0.0.1:9/health", "jsonPath": "$.ok"}},
                    }
                ]
            },
        }
    )
    rollout = canary_rollout()
    rollout["spec"]["strategy"]["canary"]["steps"] = [
        {"setWeight": 50},
        {"analysis": {"templates": [{"templateName": "unreachable"}]}},
    ]
    kube.apply(rollout)
    tg("status", "web", "--timeout", "60s")
    tg("set", "image", "web", "app=example/web:2")
    wait_until(lambda: kube.status("web").get("abort"), 60, what="the analysis to fail and abort the rollout")
    runs = wait_until(
        lambda: [
            r
            for r in json.loads(tg("get", "analysisruns", "-o", "json").stdout)["items"]
            if (r.get("status") or {}).get("phase") in ("Error", "Failed")
        ],
        60,
        what="a finished AnalysisRun",
    )
    name = runs[0]["metadata"]["name"]
    table = tg("get", "ar").stdout.splitlines()
    assert table[0].split() == ["NAME", "ROLLOUT", "PHASE", "METRICS", "AGE"]
    assert table[1].split()[:4] == [name, "web", runs[0]["status"]["phase"], "1/1"]
    assert tg("list", "analysisrun", "-o", "name").stdout == f"analysisrun.tidegate.io/{name}\n"
    shown = tg("get", "analysisrun", name).stdout
    assert f"Name:       {name}" in shown and "Rollout:    web" in shown and "health" in shown
    assert "Error" in shown  # the measurement's phase
    assert tg("get", "ro", "-o", "wide").stdout.splitlines()[1].split()[2:4] == ["Degraded", "Aborted"]


def test_resume_never_skips_a_timed_pause(kube: Kube, tg: Any) -> None:
    """The issue's case: `pause: {duration: 1h}`, resume twice (and once after a pause)."""
    rollout = canary_rollout()
    rollout["spec"]["strategy"]["canary"]["steps"] = [
        {"setWeight": 50},
        {"pause": {"duration": "1h"}},
        {"setWeight": 100},
    ]
    kube.apply(rollout)
    tg("status", "web", "--timeout", "60s")
    tg("set", "image", "web", "app=example/web:2")
    before = paused_at_step_2(kube)
    for _ in range(2):
        out = tg("resume", "web").output
        assert "is not paused (spec.paused is not set): nothing to resume" in out
        assert "it waits in a pause step at step 2/3 (pause 1h)" in out
    tg("pause", "web")
    assert "resumed (spec.paused: false)" in tg("resume", "web").output
    wait_until(
        lambda: kube.rollout("web")["metadata"]["generation"] == kube.status("web").get("observedGeneration"),
        30,
        what="the operator to observe the resume",
    )
    after = kube.status("web")
    assert after["currentStepIndex"] == 1 and after["phase"] == "Paused"
    assert after["pauseConditions"] == before["pauseConditions"], "the hour's start time is untouched"


def test_kubectl_completes_tidegates_verbs_and_rollout_names(kube: Kube, tg: Any) -> None:
    """kubectl (1.26+) runs kubectl_complete-tidegate from PATH for `kubectl tidegate <TAB>`."""
    kube.apply(canary_rollout(name="checkout"))
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "kubectl_complete-tidegate").exists(), "installed with the package (pyproject scripts)"
    env = {
        **os.environ,
        "KUBECONFIG": str(kube.sandbox.kubeconfig),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    kubectl = str(kube.sandbox.kubectl_dir() / "kubectl")

    def complete(*words: str) -> list[str]:
        done = subprocess.run(
            [kubectl, "__complete", "tidegate", *words], capture_output=True, text=True, env=env, check=True
        )
        return [line.split("\t")[0] for line in done.stdout.splitlines()]

    verbs = complete("")
    assert {"get", "list", "promote", "status", "completion"} <= set(verbs) and verbs[-1] == ":4"
    assert complete("get", "") == ["rollouts", "analysisruns", ":4"]
    assert complete("get", "rollout", "-n", kube.namespace, "ch") == ["checkout", ":4"]
    assert complete("promote", "--namespace", kube.namespace, "") == ["checkout", ":4"]
    assert kube.namespace in complete("status", "-n", "")


def test_get_rollouts_watch_prints_a_row_per_change(kube: Kube, tg: Any) -> None:
    """`get rollouts -w` (no NAME), piped: the table, then a line per changed row; Ctrl-C exits 0."""
    kube.apply(canary_rollout())
    tg("status", "web", "--timeout", "60s")
    env = {**os.environ, "KUBECONFIG": str(kube.sandbox.kubeconfig)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidegate.cli.main", "get", "rollouts", "-w", "-n", kube.namespace],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )
    lines: list[str] = []
    _reader(proc, lines)
    try:
        wait_until(lambda: len(lines) >= 2, 30, what="the header and the first row")
        assert lines[0].split()[:3] == ["NAME", "STRATEGY", "PHASE"] and lines[1].split()[:3] == [
            "web",
            "Canary",
            "Healthy",
        ]
        tg("set", "image", "web", "app=example/web:2")
        paused = wait_until(
            lambda: [line for line in lines[2:] if line.split()[2:4] == ["Paused", "CanaryPauseStep"]],
            60,
            what="a row for the pause step",
        )
        assert paused[0].split()[4] == "2/2"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

"""The README's "Try it by hand" block, run as a bash script on a sandbox of its own.

The block is taken from README.md as it is, so it cannot rot. Two changes only, both
standing in for the person at the keyboard: each command that runs until Ctrl-C
(`--watch`, `-w`) gets `timeout -s INT`, and its output is checked afterwards. The
shell starts without `.venv/bin` on PATH and without KUBECONFIG, as a fresh terminal
would; the sandbox lives in its own directory, so it never meets the test session's.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.kube import REPO

pytestmark = pytest.mark.sandbox

WATCH_SECONDS = 20
SCRIPT_TIMEOUT = 600


def readme_block() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Try it by hand", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README.md: no ```sh block under ## Try it by hand"
    return [line for line in block.group(1).splitlines() if line.strip()]


def as_script(lines: list[str], marks: Path) -> str:
    """The block with each watch stopped after WATCH_SECONDS (its output kept in `marks`)."""
    out = ["set -euo pipefail", "set -x"]
    for i, line in enumerate(lines):
        command = line.split("  #", 1)[0].rstrip()
        if re.search(r"(--watch|\s-w)(\s|$)", command):
            log = marks / f"watch-{i}.log"
            # timeout exits 124 when it had to stop the command: the watch ran until "Ctrl-C".
            out.append(f"timeout -s INT {WATCH_SECONDS} {command} > {log} 2>&1 || test $? -eq 124")
        else:
            out.append(command)
    return "\n".join(out) + "\n"


def fresh_shell_env(sandbox_dir: Path) -> dict[str, str]:
    venv_bin = str(REPO / ".venv" / "bin")
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p) != Path(venv_bin)]
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "VIRTUAL_ENV")}
    env.update(PATH=os.pathsep.join(path), TIDEGATE_SANDBOX_DIR=str(sandbox_dir), COLUMNS="80")
    return env


def test_the_try_it_by_hand_block_works_as_written() -> None:
    lines = readme_block()
    assert any("--watch" in line for line in lines) and lines[-1].startswith("tidegate sandbox down")
    work = Path(tempfile.mkdtemp(prefix="tidegate-readme-"))
    sandbox_dir = work / "sandbox"
    script = work / "try-it.sh"
    script.write_text(as_script(lines, work))
    env = fresh_shell_env(sandbox_dir)
    assert shutil.which("tidegate", path=env["PATH"]) is None, "tidegate must not be on PATH before the block"
    proc = subprocess.Popen(
        ["bash", str(script)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=SCRIPT_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the README block did not finish within {SCRIPT_TIMEOUT}s:\n{output[-6000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if sandbox_dir.exists():  # the block failed before its `sandbox down`
            subprocess.run(
                [sys.executable, "-m", "tidegate.cli.main", "sandbox", "down"],
                env={**env, "PATH": os.environ.get("PATH", "")},
                cwd=REPO,
                capture_output=True,
                check=False,
            )
    assert proc.returncode == 0, f"the README block failed (exit {proc.returncode}):\n{output[-6000:]}"

    watches = sorted(work.glob("watch-*.log"))
    assert len(watches) == 2, watches
    live, table = (w.read_text() for w in watches)
    # The live view, piped: whole frames, the canary's image and steps, no wrapped lines.
    assert "Name:" in live and "registry.example/web:2.0" in live and "setWeight 10" in live, live[-3000:]
    assert "Traceback" not in live
    # kubectl's own table of the CRD's printer columns.
    assert table.split()[:3] == ["NAME", "DESIRED", "CURRENT"] and "web" in table, table
    # `sandbox up` said how to go on, with a command that works from this shell.
    assert 'run: eval "$(.venv/bin/tidegate sandbox env)"' in output
    assert "rollout web is Healthy" in output
    assert not sandbox_dir.exists(), "sandbox down removed its directory"

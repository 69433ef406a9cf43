"""`make demo`, non-interactive: it finishes by itself and tells the story."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.kube import REPO


def test_the_demo_runs_to_the_end_and_leaves_nothing_running() -> None:
    directory = Path(tempfile.mkdtemp(prefix="tidegate-demo-"))
    os.rmdir(directory)
    env = {**os.environ, "TIDEGATE_SANDBOX_DIR": str(directory)}
    proc = subprocess.run(
        [sys.executable, "-m", "tidegate.cli.demo", "--no-live"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "version 2.0 promoted" in out
    assert "version 3.0 aborted by analysis" in out and "success-rate" in out
    assert "Nothing left running" in out
    assert not directory.exists(), "the sandbox's state was not removed"
    assert _processes_mentioning(str(directory)) == [], "sandbox processes left running"


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention `text` (the sandbox's folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(cmdline)
    return found

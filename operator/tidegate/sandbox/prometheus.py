"""A real Prometheus for the sandbox (Debian's package), scraping file-discovered targets."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tidegate.sandbox import assets
from tidegate.sandbox._base import SandboxDir as Sandbox
from tidegate.sandbox._base import free_port, wait_for

SCRAPE_INTERVAL = "1s"


def targets_file(sandbox: Sandbox) -> Path:
    return sandbox.directory / "prometheus" / "targets.json"


def write_targets(sandbox: Sandbox, targets: list[dict[str, Any]]) -> None:
    """File service discovery: [{"targets": ["127.0.0.1:port"], "labels": {...}}]."""
    path = targets_file(sandbox)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(targets))
    tmp.replace(path)


def start_prometheus(sandbox: Sandbox, log: Callable[[str], None]) -> None:

    binary = assets.prometheus()
    root = sandbox.directory / "prometheus"
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {
                "job_name": "sandbox-pods",
                "file_sd_configs": [{"files": [str(targets_file(sandbox))], "refresh_interval": "1s"}],
            }
        ],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    if not targets_file(sandbox).exists():
        write_targets(sandbox, [])
    logf = open(sandbox.logs / "prometheus.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [
            str(binary),
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=2h",
            "--web.enable-lifecycle",
        ],
        stdout=logf,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    logf.close()
    state = sandbox.state()
    state.setdefault("pids", {})["prometheus"] = proc.pid
    state["ports"]["prometheus"] = port
    sandbox._save(state)
    wait_for(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1).status == 200,
        60,
        "Prometheus ready",
    )
    log(f"sandbox: Prometheus on http://127.0.0.1:{port}")


def address(sandbox: Sandbox) -> str:
    return f"http://127.0.0.1:{sandbox.state()['ports']['prometheus']}"

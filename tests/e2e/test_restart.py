"""`tidegate restart`: every pod older than spec.restartAt is replaced, one at a time, through the
eviction API, so a PodDisruptionBudget holds throughout."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any

from tests.kube import Kube, wait_until


def test_restart_replaces_every_pod_within_the_disruption_budget(kube: Kube) -> None:
    kube.apply(
        {
            "apiVersion": "tidegate.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "registry.example/web:1"}]},
                },
                "strategy": {"canary": {"steps": [{"setWeight": 50}]}},
            },
        }
    )
    kube.apply(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "web"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
        }
    )
    kube.wait_phase("web", "Healthy")
    wait_until(
        lambda: kube.get("pdb", "web").get("status", {}).get("disruptionsAllowed") == 1,
        60,
        what="the PDB allows one disruption",
    )
    before = {p["metadata"]["name"] for p in kube.list("pods", "app=web")}
    assert len(before) == 3

    lowest: list[int] = []
    stop = threading.Event()

    def watch_ready() -> None:
        while not stop.is_set():
            pods: list[dict[str, Any]] = kube.list("pods", "app=web")
            ready = sum(
                1
                for p in pods
                if not p["metadata"].get("deletionTimestamp")
                and any(
                    c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])
                )
            )
            lowest.append(ready)
            stop.wait(0.2)

    watcher = threading.Thread(target=watch_ready, daemon=True)
    watcher.start()
    try:
        env = {**os.environ, "KUBECONFIG": str(kube.sandbox.kubeconfig)}
        out = subprocess.run(
            [sys.executable, "-m", "tidegate.cli.main", "restart", "web", "-n", kube.namespace],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "restart" in out.lower()
        restart_at = kube.rollout("web")["spec"]["restartAt"]
        wait_until(
            lambda: kube.status("web").get("restartedAt") == restart_at,
            120,
            what="status.restartedAt set once every old pod is replaced",
        )
    finally:
        stop.set()
        watcher.join(timeout=5)
    after = {
        p["metadata"]["name"]
        for p in kube.list("pods", "app=web")
        if not p["metadata"].get("deletionTimestamp")
    }
    assert not (before & after), f"pods not replaced: {before & after}"
    assert len(after) == 3
    assert min(lowest) >= 2, f"ready pods dropped to {min(lowest)} (PDB minAvailable 2)"
    wait_until(
        lambda: any(e["reason"] == "RestartCompleted" for e in kube.list("events")),
        30,
        what="a RestartCompleted Event",
    )
    assert kube.status("web")["phase"] == "Healthy"

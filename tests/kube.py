"""Test helpers shared by the integration and e2e suites: a sandbox, an operator, kubectl.

Waiting is always on a condition with a deadline, and a timeout says what was seen.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tidegate.sandbox import Sandbox
from tidegate.sandbox.cluster import free_port

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent


class WaitTimeout(AssertionError):
    pass


def wait_until(check: Callable[[], T], timeout: float = 60, interval: float = 0.25, what: str = "") -> T:
    """Call `check` until it returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except Exception as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            raise WaitTimeout(
                f"timed out after {timeout:.0f}s waiting for {what or check}; last seen: {last!r}"
            )
        time.sleep(interval)


@dataclass
class Kube:
    sandbox: Sandbox
    namespace: str = "default"

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.sandbox.kubectl("-n", self.namespace, *args, input=input, check=check)

    def apply(self, docs: str | list[dict[str, Any]] | dict[str, Any]) -> None:
        if isinstance(docs, dict):
            docs = [docs]
        text = docs if isinstance(docs, str) else yaml.safe_dump_all(docs)
        self.kubectl("apply", "-f", "-", input=text)

    def apply_file(self, path: str | Path) -> None:
        self.kubectl("apply", "-f", str(path))

    def get(self, kind: str, name: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.kubectl("get", kind, name, "-o", "json").stdout)
        return out

    def get_or_none(self, kind: str, name: str) -> dict[str, Any] | None:
        proc = self.kubectl("get", kind, name, "-o", "json", check=False)
        if proc.returncode != 0:
            return None
        out: dict[str, Any] = json.loads(proc.stdout)
        return out

    def list(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-o", "json"]
        if selector:
            args += ["-l", selector]
        items: list[dict[str, Any]] = json.loads(self.kubectl(*args).stdout)["items"]
        return items

    def rollout(self, name: str) -> dict[str, Any]:
        return self.get("rollouts.tidegate.io", name)

    def status(self, name: str) -> dict[str, Any]:
        return self.rollout(name).get("status") or {}

    def patch_status(self, name: str, patch: dict[str, Any]) -> None:
        self.kubectl(
            "patch",
            "rollouts.tidegate.io",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": patch}),
        )

    def patch(self, kind: str, name: str, patch: dict[str, Any]) -> None:
        self.kubectl("patch", kind, name, "--type=merge", "-p", json.dumps(patch))

    def wait_phase(self, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            st = self.status(name)
            if st.get("phase") == phase and st.get("observedGeneration") == self.rollout(name)[
                "metadata"
            ].get("generation"):
                return st
            return None

        return wait_until(check, timeout, what=f"rollout {name} phase {phase} (status: {self._brief(name)})")

    def _brief(self, name: str) -> str:
        try:
            st = self.status(name)
        except Exception as exc:
            return repr(exc)
        return f"{st.get('phase')} step={st.get('step')} msg={st.get('message')!r}"

    def replica_sets(self, rollout: str) -> list[dict[str, Any]]:
        return self.list("replicasets", f"rollout.tidegate.io/name={rollout}")


@dataclass
class OperatorProcess:
    kubeconfig: Path
    log_path: Path
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tidegate.cli.main",
                "operator",
                "--metrics-host",
                "127.0.0.1",
                "--metrics-port",
                str(self.metrics_port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def start_sandbox(directory: Path) -> Sandbox:
    sandbox = Sandbox(directory)
    sandbox.up(prometheus=True, log=lambda m: print(m, file=sys.stderr))
    return sandbox


def new_namespace(sandbox: Sandbox, prefix: str = "t") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    sandbox.kubectl("create", "namespace", name)
    Kube(sandbox, name).kubectl(
        "wait",
        "--for=jsonpath={.metadata.name}=default",
        "serviceaccount/default",
        "--timeout=30s",
        check=False,
    )
    return name


def iter_docs(path: Path) -> Iterator[dict[str, Any]]:
    yield from (d for d in yaml.safe_load_all(path.read_text()) if d)

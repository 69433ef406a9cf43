"""Session fixtures: one sandbox and one operator for every test that needs a cluster."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube import Kube, OperatorProcess, new_namespace, start_sandbox
from tidegate.sandbox import OUTBOUND_ENV, Sandbox

# The sandbox's Prometheus and the tests' own servers listen on loopback, which the operator
# (and the providers called in-process) refuse unless the policy names it: the sandbox's policy,
# for this process and the operators it starts.
os.environ.update(OUTBOUND_ENV)

_LOGS: list[Path] = []


def _log_dir() -> Path:
    """One folder of logs per test session (kept after the run, for a failure's post-mortem)."""
    if not _LOGS:
        _LOGS.append(Path(tempfile.mkdtemp(prefix="tidegate-test-logs-")))
    return _LOGS[0]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _LOGS:
        terminalreporter.write_line(f"logs of the sandbox and the operator: {_LOGS[0]}")


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    directory = Path(tempfile.mkdtemp(prefix="tidegate-test-sandbox-"))
    os.rmdir(directory)
    sb = start_sandbox(directory)
    try:
        yield sb
    finally:
        logs = _log_dir()
        if sb.logs.exists():
            for f in sb.logs.glob("*.log"):
                if f.name != "audit.log":
                    (logs / f.name).write_bytes(f.read_bytes()[-2_000_000:])
        sb.down(log=lambda _m: None)


@pytest.fixture(scope="session")
def operator(sandbox: Sandbox) -> Iterator[OperatorProcess]:
    op = OperatorProcess(sandbox.kubeconfig, _log_dir() / "operator.log")
    op.start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture
def kube(sandbox: Sandbox, operator: OperatorProcess) -> Iterator[Kube]:
    """A fresh namespace on the sandbox, with the operator running."""
    ns = new_namespace(sandbox)
    yield Kube(sandbox, ns)
    sandbox.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture
def bare_kube(sandbox: Sandbox) -> Iterator[Kube]:
    """A fresh namespace on the sandbox, no operator needed."""
    ns = new_namespace(sandbox)
    yield Kube(sandbox, ns)
    sandbox.kubectl("delete", "namespace", ns, "--wait=false", check=False)

"""Fixtures of the integration suite that several modules share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kube import Kube, OperatorProcess, new_namespace
from tidegate.sandbox import Sandbox


@pytest.fixture
def quiet(sandbox: Sandbox, operator: OperatorProcess) -> Iterator[Kube]:
    """A namespace with no operator running: only what the test itself runs acts."""
    operator.stop()
    ns = new_namespace(sandbox)
    try:
        yield Kube(sandbox, ns)
    finally:
        sandbox.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        operator.start()

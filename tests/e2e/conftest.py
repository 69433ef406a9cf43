"""e2e scenarios record their wall time; the session prints them at the end."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

_TIMES: list[tuple[str, float]] = []


@pytest.fixture(autouse=True)
def _wall_time(request: pytest.FixtureRequest) -> Iterator[None]:
    from tests.e2e.dsl import ACTIVE_WATCHERS

    start = time.monotonic()
    try:
        yield
    finally:
        _TIMES.append((request.node.nodeid, time.monotonic() - start))
        while ACTIVE_WATCHERS:
            ACTIVE_WATCHERS.pop().stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _TIMES:
        return
    terminalreporter.section("e2e wall times")
    for nodeid, seconds in _TIMES:
        terminalreporter.write_line(f"{seconds:7.1f}s  {nodeid}")
    terminalreporter.write_line(f"{sum(s for _, s in _TIMES):7.1f}s  total")

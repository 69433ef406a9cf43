"""`tidegate release`'s decision: when it may move traffic and drop the finalizer, and when it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from tidegate.cli._kube import CliError
from tidegate.cli.release_cmd import FINALIZER, Seen, decide_release


def rollout(stable: str | None = "a", finalizers: tuple[str, ...] = (FINALIZER,)) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "finalizers": list(finalizers)},
        "spec": {"strategy": {"canary": {"stableService": "web-stable"}}},
        "status": {"stableRS": stable} if stable else {},
    }


@pytest.mark.parametrize(
    ("seen", "move", "says"),
    [
        (Seen(rollout(), canary_weight=20, stable_ready=4), True, "canary weight 20% -> 0%"),
        (
            Seen(rollout(), header_routes=("canary-header",), stable_ready=4),
            True,
            "header routes canary-header",
        ),
        (Seen(rollout(), canary_weight=0, stable_ready=0), False, "all traffic is on stable already"),
        (Seen(rollout(stable=None), router_ok=False, router_missing=True), False, "nothing routes to it"),
        (Seen(rollout(finalizers=())), False, "nothing to release"),
        # No finalizer: nothing to do, even with the operator running.
        (Seen(rollout(finalizers=("other",)), leases=("Lease x",)), False, "nothing to release"),
    ],
)
def test_release_goes_ahead(seen: Seen, move: bool, says: str) -> None:
    decision = decide_release(seen)
    assert decision.move_traffic is move
    assert says in decision.message


@pytest.mark.parametrize(
    ("seen", "says"),
    [
        (
            Seen(rollout(), canary_weight=20, stable_ready=4, leases=("Lease s/l held by p",)),
            "the operator is running",
        ),
        (
            Seen(rollout(), canary_weight=20, stable_ready=0),
            "web-stable of rollout web has no ready endpoints",
        ),
        (Seen(rollout(stable=None), canary_weight=20, stable_ready=4), "no stable revision recorded"),
        (
            Seen(rollout(), router_ok=False, router_problem="DestinationRule web has no subset x"),
            "cannot read",
        ),
    ],
)
def test_release_refuses(seen: Seen, says: str) -> None:
    with pytest.raises(CliError, match=says):
        decide_release(seen)

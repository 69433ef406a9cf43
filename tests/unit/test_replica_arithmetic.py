"""The replica arithmetic of a canary without a traffic router, against Argo Rollouts' own tables.

The rows are the cases of Argo Rollouts v1.10.2's utils/replicaset/canary_test.go
(TestApproximateWeightedNewStableReplicaCounts and the basic-canary rows of
TestCalculateReplicaCountsForCanary), so Tidegate splits pods exactly as Argo does.
"""

from __future__ import annotations

import pytest

from tidegate.core.traffic import Pods, approximate_split, basic_canary_split

# (replicas, weight, maxWeight, surge pods, expected canary, expected stable)
APPROXIMATE = [
    (0, 0, 100, 0, 0, 0),
    (0, 50, 100, 0, 0, 0),
    (0, 100, 100, 0, 0, 0),
    (0, 0, 100, 1, 0, 0),
    (0, 50, 100, 1, 0, 0),
    (0, 100, 100, 1, 0, 0),
    (1, 0, 100, 0, 0, 1),
    (1, 1, 100, 0, 0, 1),
    (1, 49, 100, 0, 0, 1),
    (1, 50, 100, 0, 1, 0),
    (1, 99, 100, 0, 1, 0),
    (1, 100, 100, 0, 1, 0),
    (1, 0, 100, 1, 0, 1),
    (1, 1, 100, 1, 1, 1),
    (1, 49, 100, 1, 1, 1),
    (1, 50, 100, 1, 1, 1),
    (1, 99, 100, 1, 1, 1),
    (1, 100, 100, 1, 1, 0),
    (2, 0, 100, 0, 0, 2),
    (2, 1, 100, 0, 1, 1),
    (2, 50, 100, 0, 1, 1),
    (2, 99, 100, 0, 1, 1),
    (2, 100, 100, 0, 2, 0),
    (2, 0, 100, 1, 0, 2),
    (2, 1, 100, 1, 1, 2),
    (2, 50, 100, 1, 1, 1),
    (2, 99, 100, 1, 2, 1),
    (2, 100, 100, 1, 2, 0),
    (3, 10, 100, 0, 1, 2),
    (3, 25, 100, 0, 1, 2),
    (3, 33, 100, 0, 1, 2),
    (3, 34, 100, 0, 1, 2),
    (3, 49, 100, 0, 1, 2),
    (3, 50, 100, 0, 2, 1),
    (3, 10, 100, 1, 1, 3),
    (3, 25, 100, 1, 1, 3),
    (3, 33, 100, 1, 1, 2),
    (3, 34, 100, 1, 1, 2),
    (3, 49, 100, 1, 2, 2),
    (3, 50, 100, 1, 2, 2),
    (10, 0, 100, 1, 0, 10),
    (10, 1, 100, 0, 1, 9),
    (10, 14, 100, 0, 1, 9),
    (10, 15, 100, 0, 2, 8),
    (10, 16, 100, 0, 2, 8),
    (10, 99, 100, 0, 9, 1),
    (10, 100, 100, 1, 10, 0),
    (10, 0, 100, 1, 0, 10),
    (10, 1, 100, 1, 1, 10),
    (10, 18, 100, 1, 2, 9),
    (10, 19, 100, 1, 2, 9),
    (10, 20, 100, 1, 2, 8),
    (10, 23, 100, 1, 2, 8),
    (10, 24, 100, 1, 3, 8),
    (10, 25, 100, 1, 3, 8),
    (10, 99, 100, 1, 10, 1),
    (10, 100, 100, 1, 10, 0),
]


@pytest.mark.parametrize(("replicas", "weight", "max_weight", "surge", "canary", "stable"), APPROXIMATE)
def test_the_split_closest_to_the_weight(
    replicas: int, weight: int, max_weight: int, surge: int, canary: int, stable: int
) -> None:
    assert approximate_split(replicas, weight, max_weight, surge) == (canary, stable)


# (Argo's case name, replicas, setWeight, maxSurge, maxUnavailable, promoteFull,
#  stable (spec, available), canary (spec, available), older (spec, available) or None,
#  expected (canary, stable))
BASIC = [
    (
        "Do not add extra RSs in scaleDownCount when .Spec.Replica < AvailableReplicas",
        10,
        100,
        3,
        0,
        False,
        (7, 8),
        (6, 3),
        None,
        (6, 7),
    ),
    ("Use max surge int to scale up canary", 10, 20, 2, 0, False, (10, 10), (0, 0), None, (2, 10)),
    ("Use max surge percentage to scale up canary", 10, 20, "20%", 0, False, (10, 10), (0, 0), None, (2, 10)),
    ("Scale down extra stable replicas", 10, 20, "20%", 0, False, (10, 10), (2, 2), None, (2, 8)),
    ("Do not go past max surge", 10, 30, 2, 0, False, (10, 10), (0, 0), None, (2, 10)),
    ("Use max unavailable int to scale down stableRS", 10, 20, 0, 2, False, (10, 10), (0, 0), None, (0, 8)),
    (
        "Use max surge percentage to scale down stableRS",
        10,
        20,
        0,
        "20%",
        False,
        (10, 10),
        (0, 0),
        None,
        (0, 8),
    ),
    ("Do not go past max unavailable", 10, 30, 0, 2, False, (10, 10), (0, 0), None, (0, 8)),
    ("Use Max Surge and Max Unavailable", 10, 50, 2, 1, False, (10, 10), (0, 0), None, (2, 9)),
    ("Scale canaryRS to zero on setWeight of 0%", 10, 0, 1, 1, False, (10, 10), (1, 1), None, (0, 10)),
    ("Scale stable to zero on setWeight of 100%", 10, 100, 1, 1, False, (1, 1), (10, 10), None, (10, 0)),
    (
        "Do not scale canaryRS down to zero on non-zero weight",
        1,
        20,
        1,
        0,
        False,
        (1, 1),
        (0, 0),
        None,
        (1, 1),
    ),
    (
        "Do not scale canaryRS down to zero on non-100 weight",
        1,
        90,
        1,
        0,
        False,
        (1, 1),
        (0, 0),
        None,
        (1, 1),
    ),
    ("Scale canaryRS to zero on <50 weight without surge", 1, 49, 0, 1, False, (1, 1), (0, 0), None, (0, 1)),
    (
        "Scale stableRS down to zero on >=50 weight without surge",
        1,
        51,
        0,
        1,
        False,
        (1, 1),
        (0, 0),
        None,
        (0, 0),
    ),
    (
        "Scale canaryRS to one on >=50 weight without surge and stable replicas",
        1,
        51,
        0,
        1,
        False,
        (0, 0),
        (0, 0),
        None,
        (1, 0),
    ),
    ("Scale up Stable before canaryRS", 10, 30, 1, 0, False, (1, 1), (0, 0), (3, 3), (1, 7)),
    ("Scale down canaryRS and stable", 10, 30, 0, 3, False, (8, 5), (4, 4), None, (3, 7)),
    ("Scale down stable and canary available", 10, 100, 1, 0, False, (10, 2), (10, 8), None, (9, 2)),
    (
        "Do not scale down canaryRS or stable when older RS count >= scaleDownCount",
        10,
        30,
        0,
        1,
        False,
        (8, 6),
        (4, 2),
        (3, 3),
        (4, 8),
    ),
    (
        "Do not round past maxSurge with uneven setWeight divisor",
        10,
        5,
        0,
        1,
        False,
        (10, 10),
        (0, 0),
        None,
        (0, 9),
    ),
    (
        "Do not round past maxSurge with uneven setWeight divisor (part 2)",
        10,
        5,
        0,
        1,
        False,
        (9, 9),
        (0, 0),
        None,
        (1, 9),
    ),
    (
        "Use maxUnavailable of 1 when percentage of maxUnavailable and maxSurge result in 0 replicas",
        10,
        10,
        "0%",
        "0%",
        False,
        (10, 10),
        (0, 0),
        None,
        (0, 9),
    ),
    (
        "honor maxSurge during scale up when stableRS unavailable",
        4,
        100,
        1,
        0,
        False,
        (4, 1),
        (0, 0),
        None,
        (1, 4),
    ),
    (
        "scale down to maxunavailable without exceeding maxSurge",
        3,
        99,
        0,
        2,
        False,
        (3, 3),
        (0, 0),
        None,
        (0, 1),
    ),
    (
        "honor maxUnavailable during scale down stableRS unavailable",
        4,
        100,
        1,
        0,
        False,
        (4, 1),
        (1, 1),
        None,
        (1, 3),
    ),
    (
        "honor maxUnavailable when aborting or reducing weight part 1",
        4,
        0,
        1,
        0,
        False,
        (0, 0),
        (4, 4),
        None,
        (4, 1),
    ),
    (
        "honor maxUnavailable when aborting or reducing weight part 2",
        4,
        0,
        1,
        0,
        False,
        (1, 0),
        (4, 4),
        None,
        (4, 1),
    ),
    (
        "honor maxUnavailable when aborting or reducing weight part 3",
        4,
        0,
        1,
        0,
        False,
        (1, 1),
        (4, 4),
        None,
        (3, 1),
    ),
    ("promote full does not consider weight", 4, 1, 4, 4, True, (4, 4), (0, 0), None, (4, 0)),
    ("promote full still honors maxSurge/maxUnavailable", 4, 1, 3, 0, True, (4, 4), (0, 0), None, (3, 4)),
]


@pytest.mark.parametrize(
    ("name", "replicas", "weight", "surge", "unavailable", "full", "stable", "canary", "older", "expected"),
    BASIC,
    ids=[row[0] for row in BASIC],
)
def test_each_pass_moves_pods_as_argo_rollouts_does(
    name: str,
    replicas: int,
    weight: int,
    surge: int | str,
    unavailable: int | str,
    full: bool,
    stable: tuple[int, int],
    canary: tuple[int, int],
    older: tuple[int, int] | None,
    expected: tuple[int, int],
) -> None:
    got = basic_canary_split(
        replicas,
        100 if full else weight,
        surge,
        unavailable,
        Pods(*canary),
        Pods(*stable),
        older[0] if older else 0,
    )
    assert got == expected


def converge(
    replicas: int, weight: int, surge: int | str = "25%", unavailable: int | str = "25%"
) -> tuple[int, int]:
    """Run pass after pass, every pod becoming available at once, until the counts hold."""
    canary, stable = Pods(0, 0), Pods(replicas, replicas)
    for _ in range(50):
        c, s = basic_canary_split(replicas, weight, surge, unavailable, canary, stable)
        if (c, s) == (canary.spec, stable.spec):
            return c, s
        canary, stable = Pods(c, c), Pods(s, s)
    raise AssertionError("the split never settled")


@pytest.mark.parametrize(
    ("replicas", "weight", "expected"),
    [
        (1, 25, (1, 1)),  # Argo's default replicas: the surge pod keeps one stable pod
        (1, 50, (1, 1)),
        (1, 100, (1, 0)),
        (2, 25, (1, 2)),
        (3, 50, (2, 2)),
        (4, 0, (0, 4)),
    ],
)
def test_with_argos_defaults_a_weight_of_1_to_99_keeps_a_pod_on_each_side(
    replicas: int, weight: int, expected: tuple[int, int]
) -> None:
    assert converge(replicas, weight) == expected


def test_superseded_pods_count_against_max_surge() -> None:
    """A second update while the first canary still runs: no pod above replicas + maxSurge."""
    got = basic_canary_split(4, 50, 1, 0, Pods(0, 0), Pods(4, 4), others=1)
    assert got == (0, 4), "the old canary's pod uses the one surge pod; the new canary waits for it to go"


def test_analysis_run_history_keeps_argos_limits_per_outcome() -> None:
    from tidegate.core.housekeeping import runs_beyond_history

    def run(name: str, phase: str, at: str) -> dict[str, object]:
        return {"metadata": {"name": name, "creationTimestamp": at}, "status": {"phase": phase}}

    runs = [
        run("ok-1", "Successful", "2026-01-01T00:00:01Z"),
        run("ok-2", "Successful", "2026-01-01T00:00:02Z"),
        run("ok-3", "Successful", "2026-01-01T00:00:03Z"),
        run("bad-1", "Failed", "2026-01-01T00:00:01Z"),
        run("bad-2", "Error", "2026-01-01T00:00:02Z"),
        run("bad-3", "Inconclusive", "2026-01-01T00:00:03Z"),
        run("live", "Running", "2026-01-01T00:00:00Z"),
    ]
    assert runs_beyond_history(runs, 2, 1) == ["bad-1", "bad-2", "ok-1"]
    assert runs_beyond_history(runs, 5, 5) == []
    assert runs_beyond_history(runs, 0, 0) == ["bad-1", "bad-2", "bad-3", "ok-1", "ok-2", "ok-3"]


def test_min_pods_per_replica_set_floors_a_routed_canary() -> None:
    """Argo's 'Honor MinPodsPerReplicaSet' rows: 10 replicas at 5% -> 2 canary pods; capped at replicas."""
    from tests.unit.planner_fixtures import canary_rollout, observed, rs
    from tidegate.core.toolkit import Pass
    from tidegate.core.traffic import desired_traffic

    for replicas, weight, floor, expected in ((10, 5, 2, 2), (1, 100, 2, 1), (10, 0, 2, 0)):
        r = canary_rollout(replicas=replicas, minPodsPerReplicaSet=floor)
        assert r.spec.strategy.canary is not None
        p = Pass(obs=observed(r, [rs("web:1", replicas)]), status={})
        steps = [r.spec.strategy.canary.steps[0].model_copy(update={"set_weight": weight})]
        want = desired_traffic(p, r.spec.strategy.canary, steps, 0, "x", "y", replicas)
        assert want.canary_replicas == expected, (replicas, weight, floor)

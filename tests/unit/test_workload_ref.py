"""workloadRef's scaleDown, as Argo Rollouts decides it (rollout/replicaset.go
reconcileNewReplicaSet, rollout/sync.go): what the planner writes to the Deployment."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.unit.planner_fixtures import observed, rs, template
from tidegate.api.rollout import Rollout
from tidegate.core.model import ScaleDeployment, WorkloadInfo
from tidegate.core.planner import plan


def adopting(scale_down: str, replicas: int = 3) -> Rollout:
    return Rollout.model_validate(
        {
            "metadata": {"name": "web", "namespace": "ns", "generation": 1, "uid": "u1"},
            "spec": {
                "replicas": replicas,
                "workloadRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": "web",
                    "scaleDown": scale_down,
                },
                "strategy": {"canary": {"steps": [{"setWeight": 34}, {"pause": {}}]}},
            },
        }
    )


def deployment_writes(scale_down: str, deployment: int, ready: int, revision: int = 1) -> list[int]:
    """The replicas the pass writes to a Deployment at `deployment` while the Rollout's first
    ReplicaSet (3 wanted) has `ready` pods ready."""
    obs = observed(adopting(scale_down), [rs("web:1", 3, available=ready, revision=revision)])
    workload = WorkloadInfo(
        name="web",
        exists=True,
        template=template("web:1"),
        replicas=deployment,
        selector={"matchLabels": {"app": "web"}},
    )
    actions = plan(replace(obs, workload=workload)).actions
    return [a.replicas for a in actions if isinstance(a, ScaleDeployment)]


@pytest.mark.parametrize(
    ("scale_down", "deployment", "ready", "writes"),
    [
        ("never", 3, 0, []),
        ("never", 3, 3, []),  # Healthy: the Deployment keeps its pods
        ("onsuccess", 3, 2, []),  # not Healthy yet
        ("onsuccess", 3, 3, [0]),
        ("progressively", 3, 0, []),  # no Rollout pod ready: nothing is written (Argo's guard)
        ("progressively", 3, 1, [2]),
        ("progressively", 2, 2, [1]),
        ("progressively", 2, 1, []),  # already at 3 - 1: nothing to write
        ("progressively", 1, 3, [0]),  # Healthy
        ("progressively", 0, 2, [1]),  # a Rollout pod no longer ready: scaled back up (Argo)
        ("progressively", 0, 0, []),  # every Rollout pod down: Argo writes nothing either
    ],
)
def test_scale_down_modes_as_argo_decides_them(
    scale_down: str, deployment: int, ready: int, writes: list[int]
) -> None:
    assert deployment_writes(scale_down, deployment, ready) == writes


def test_only_the_first_revision_migrates_the_deployment() -> None:
    assert deployment_writes("progressively", 3, 1, revision=2) == []
    assert deployment_writes("onsuccess", 3, 3, revision=2) == []

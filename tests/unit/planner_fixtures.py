"""Builders of ObservedState for the planner's tables."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from tidegate.api.rollout import Rollout
from tidegate.core.hashing import pod_template_hash
from tidegate.core.model import ObservedState, ReplicaSetInfo, RouterState, ServiceInfo

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def template(image: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": image}]}}


def h(image: str) -> str:
    return pod_template_hash(template(image))


V1, V2 = h("web:1"), h("web:2")


def canary_rollout(
    image: str = "web:2",
    steps: list[dict[str, Any]] | None = None,
    replicas: int = 4,
    router: bool = True,
    status: dict[str, Any] | None = None,
    **canary: Any,
) -> Rollout:
    strategy: dict[str, Any] = {"steps": steps if steps is not None else [{"setWeight": 25}, {"pause": {}}]}
    if router:
        strategy |= {
            "stableService": "web-stable",
            "canaryService": "web-canary",
            "trafficRouting": {"istio": {"virtualService": {"name": "web"}}},
        }
    strategy |= canary
    return Rollout.model_validate(
        {
            "metadata": {"name": "web", "namespace": "ns", "generation": 2, "uid": "u1"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": template(image),
                "strategy": {"canary": strategy},
            },
            "status": status or {},
        }
    )


def bg_rollout(
    image: str = "web:2", replicas: int = 3, status: dict[str, Any] | None = None, **bg: Any
) -> Rollout:
    return Rollout.model_validate(
        {
            "metadata": {"name": "web", "namespace": "ns", "generation": 2, "uid": "u1"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": template(image),
                "strategy": {
                    "blueGreen": {"activeService": "web-active", "previewService": "web-preview", **bg}
                },
            },
            "status": status or {},
        }
    )


def rs(
    image: str,
    replicas: int,
    available: int | None = None,
    revision: int = 1,
    scale_down_at: datetime | None = None,
) -> ReplicaSetInfo:
    av = replicas if available is None else available
    return ReplicaSetInfo(
        name=f"web-{h(image)}",
        pod_hash=h(image),
        revision=revision,
        replicas=replicas,
        status_replicas=replicas,
        ready=av,
        available=av,
        template=template(image),
        scale_down_at=scale_down_at,
    )


def observed(
    rollout: Rollout,
    sets: list[ReplicaSetInfo],
    services: dict[str, str | None] | None = None,
    router: RouterState | None = None,
    now: datetime = NOW,
) -> ObservedState:
    svcs = {}
    for name, pod_hash in (services or {}).items():
        svcs[name] = ServiceInfo(
            name, True, {"app": "web", **({"rollouts-pod-template-hash": pod_hash} if pod_hash else {})}
        )
    return ObservedState(
        rollout=rollout,
        replica_sets=tuple(sets),
        services=svcs,
        router=router or RouterState(kind="none"),
        now=now,
    )


def istio(canary: int = 0, headers: tuple[str, ...] = ()) -> RouterState:
    return RouterState(
        kind="istio",
        canary_weight=canary,
        stable_weight=100 - canary,
        managed_routes=("primary",),
        header_routes=headers,
    )


def status_mid_canary(index: int = 0, **extra: Any) -> dict[str, Any]:

    st = {"stableRS": V1, "currentPodHash": V2, "currentStepIndex": index, "currentStepHash": None}
    st.update(extra)
    return copy.deepcopy(st)


def steps_hash(rollout: Rollout) -> str:
    from tidegate.core.planner import _steps_hash

    assert rollout.spec.strategy.canary is not None
    return _steps_hash(rollout.spec.strategy.canary.steps)


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)

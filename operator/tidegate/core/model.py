"""What a reconcile pass sees (ObservedState) and what it decides (Plan, Action)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from tidegate.api.rollout import Rollout

REVISION_ANNOTATION = "rollout.tidegate.io/revision"
SCALE_DOWN_AT_ANNOTATION = "rollout.tidegate.io/scale-down-at"
ROLLOUT_LABEL = "rollout.tidegate.io/name"


@dataclass(frozen=True)
class ReplicaSetInfo:
    name: str
    pod_hash: str
    revision: int
    replicas: int
    """spec.replicas"""
    status_replicas: int = 0
    ready: int = 0
    available: int = 0
    template: dict[str, Any] = field(default_factory=dict)
    scale_down_at: datetime | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    exists: bool
    selector: dict[str, str] = field(default_factory=dict)

    @property
    def pod_hash(self) -> str | None:
        from tidegate.core.hashing import HASH_LABEL

        return self.selector.get(HASH_LABEL)


@dataclass(frozen=True)
class RouterState:
    """The traffic router as read back from the cluster."""

    kind: Literal["istio", "none"]
    ok: bool = True
    """False: the router's objects are missing or unusable (see problem)."""
    problem: str | None = None
    canary_weight: int = 0
    stable_weight: int = 100
    managed_routes: tuple[str, ...] = ()
    """Names (or indexes) of the HTTP routes whose weights Tidegate sets."""
    header_routes: tuple[str, ...] = ()
    """Names of the managed header routes present."""
    stable_subset_hash: str | None = None
    canary_subset_hash: str | None = None


@dataclass(frozen=True)
class AnalysisRunInfo:
    name: str
    kind: str
    """step | background | pre | post"""
    pod_hash: str
    phase: str
    message: str = ""


@dataclass(frozen=True)
class ObservedState:
    rollout: Rollout
    replica_sets: tuple[ReplicaSetInfo, ...]
    services: dict[str, ServiceInfo]
    router: RouterState
    now: datetime
    analysis_runs: tuple[AnalysisRunInfo, ...] = ()
    pods_to_restart: tuple[str, ...] = ()
    """Pods created before spec.restartAt (read only while a restart is pending)."""


# ---------------------------------------------------------------------------
# Actions: idempotent, applied in order by k8s/execute.


@dataclass(frozen=True)
class CreateReplicaSet:
    name: str
    pod_hash: str
    revision: int
    replicas: int
    template: dict[str, Any]


@dataclass(frozen=True)
class ScaleReplicaSet:
    name: str
    replicas: int


@dataclass(frozen=True)
class MarkScaleDown:
    """Annotate a ReplicaSet with the time it may be scaled to 0 (None: clear)."""

    name: str
    at: datetime | None


@dataclass(frozen=True)
class DeleteReplicaSet:
    name: str


@dataclass(frozen=True)
class SetServiceSelector:
    service: str
    pod_hash: str


@dataclass(frozen=True)
class HeaderRoute:
    name: str
    match: tuple[tuple[str, str, str], ...]
    """(header name, kind exact|prefix|regex, value)"""


@dataclass(frozen=True)
class SetTraffic:
    canary_weight: int
    stable_hash: str
    canary_hash: str
    header_routes: tuple[HeaderRoute, ...] = ()


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    type: Literal["Normal", "Warning"] = "Normal"


@dataclass(frozen=True)
class ReplacePod:
    """Evict one pod created before spec.restartAt, through the eviction API (PDBs apply)."""

    pod: str


@dataclass(frozen=True)
class CreateAnalysisRun:
    name: str
    kind: str
    analysis: Any
    """The RolloutAnalysis (templates, args) to build the run from."""
    stable_hash: str
    latest_hash: str


@dataclass(frozen=True)
class TerminateAnalysisRun:
    name: str


Action = (
    CreateReplicaSet | ScaleReplicaSet | MarkScaleDown | DeleteReplicaSet | SetServiceSelector | SetTraffic
)
# Events and ReplacePod are actions too, listed apart so that the type above stays the
# set of things that change traffic or capacity.
AnyAction = Action | Event | ReplacePod | CreateAnalysisRun | TerminateAnalysisRun


@dataclass(frozen=True)
class Plan:
    actions: tuple[AnyAction, ...]
    status: dict[str, Any]
    """The whole new status (wire form). execute() patches only what differs."""
    requeue_after: float | None = None
    """Seconds until the next pass is needed without any event (a pause ending)."""

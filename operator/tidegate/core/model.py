"""What a reconcile pass sees (ObservedState) and what it decides (Plan, Action)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from tidegate.api.rollout import Rollout, RolloutStatus
from tidegate.core.names import REVISION_ANNOTATION as REVISION_ANNOTATION  # re-exported
from tidegate.core.names import ROLLOUT_LABEL as ROLLOUT_LABEL

ANALYSIS_BLOCKED = "analysisBlocked"
"""Status key: why the last pass could not make an AnalysisRun (a missing template, say);
set by k8s/execute, read and lifted by the planner."""

SCALE_DOWN_AT_ANNOTATION = "rollout.tidegate.io/scale-down-at"


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
    ready_endpoints: int | None = None
    """Ready endpoints in the Service's EndpointSlices (what its traffic actually reaches);
    None when unknown. A ready pod is not yet an endpoint: the slice follows a moment later."""
    ready_pods: frozenset[str] | None = None
    """Names of the pods behind those ready endpoints; None when unknown."""

    def ready_pods_of(self, replica_set: str) -> int | None:
        """Ready endpoints whose pod belongs to `replica_set` (the ReplicaSet controller names
        its pods `<replicaset>-<suffix>`); None when unknown."""
        if self.ready_pods is None:
            return None
        return sum(1 for pod in self.ready_pods if pod.startswith(f"{replica_set}-"))

    @property
    def pod_hash(self) -> str | None:
        from tidegate.core.hashing import HASH_LABEL

        return self.selector.get(HASH_LABEL)


@dataclass(frozen=True)
class RouterState:
    """The traffic router as read back from the cluster."""

    kind: Literal["istio", "gatewayAPI", "none"]
    ok: bool = True
    """False: the router's objects are missing or unusable (see problem)."""
    problem: str | None = None
    canary_weight: int = 0
    stable_weight: int = 100
    additional_weight: int = 0
    """Weight of destinations neither stable nor canary that share the managed routes (Istio's
    additionalSubsetNames), left as written: the stable has what they and the canary leave."""
    managed_routes: tuple[str, ...] = ()
    """Names (or indexes) of the routes / rules whose weights Tidegate sets."""
    header_routes: tuple[str, ...] = ()
    """Names of the managed header routes present."""
    header_matches: tuple[HeaderRoute, ...] | None = None
    """The managed header routes present, with their matches as read back (None: the
    router does not read them back, and routes are compared by name)."""
    mirror_routes: tuple[MirrorRoute, ...] | None = None
    """The managed mirror routes present, as read back (None: the router has none to read)."""
    stable_subset_hash: str | None = None
    canary_subset_hash: str | None = None
    subset_host: str | None = None
    """The Service (short name) behind the DestinationRule's subsets, when it is split by subset."""
    refused: bool = False
    """The router's objects are in another namespace that has not consented: `problem` says
    which field (InvalidSpec; the router reads and writes nothing)."""
    invalid: bool = False
    """The router's objects do not fit the spec (a weighed route with a foreign destination,
    weights that cannot sum to maxTrafficWeight): `problem` names the route and the object
    (InvalidSpec; nothing is written to them)."""


@dataclass(frozen=True)
class AnalysisRunInfo:
    name: str
    kind: str
    """step | background | pre | post"""
    pod_hash: str
    phase: str
    message: str = ""


@dataclass(frozen=True)
class WorkloadInfo:
    """The Deployment a Rollout's workloadRef names, as the cache holds it."""

    name: str
    exists: bool
    template: dict[str, Any] = field(default_factory=dict)
    replicas: int = 0
    selector: dict[str, Any] = field(default_factory=dict)


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
    workload: WorkloadInfo | None = None
    """The Deployment of spec.workloadRef (None without one)."""
    notified: frozenset[str] = frozenset()
    """Notification deliveries done since the last status write, as `id/service:recipient`
    (delivered, or given up): the pass removes them from status.notifications.pending."""

    @property
    def template(self) -> dict[str, Any] | None:
        """The pod template the Rollout runs: its own, or its workloadRef Deployment's
        (None while that Deployment is missing)."""
        spec = self.rollout.spec
        if spec.template is not None:
            return spec.template.wire()
        if self.workload is not None and self.workload.exists:
            return self.workload.template
        return None


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
class ScaleDeployment:
    """Scale the workloadRef Deployment (its scaleDown: onsuccess / progressively)."""

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
    query: tuple[tuple[str, str, str], ...] = ()
    """(query parameter name, kind exact|prefix|regex, value): Gateway API HTTPRoutes only."""


@dataclass(frozen=True)
class MirrorRoute:
    """A setMirrorRoute step's route: requests matching are copied to the canary."""

    name: str
    matches: str
    """The step's `match` list in Argo's shape (method, path, headers), as canonical JSON."""
    percentage: int = 100


@dataclass(frozen=True)
class SetTraffic:
    canary_weight: int
    stable_hash: str
    canary_hash: str
    header_routes: tuple[HeaderRoute, ...] = ()
    mirror_routes: tuple[MirrorRoute, ...] = ()
    max_weight: int = 100
    """The total weight (trafficRouting.maxTrafficWeight): the stable gets max_weight - canary."""


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    type: Literal["Normal", "Warning"] = "Normal"
    action: bool = False
    """It tells of the action just before it (a ReplicaSet created, a weight set): posted once
    that action is done, even if the pass's status write then meets a conflict. Other
    Events tell of a decision recorded in status and are posted only after that write."""


@dataclass(frozen=True)
class SetPodMetadata:
    """Give a ReplicaSet's template and its running pods these labels and annotations in place
    (None removes a key): the ephemeral metadata of the role they now have."""

    replica_set: str
    pod_hash: str
    labels: tuple[tuple[str, str | None], ...]
    annotations: tuple[tuple[str, str | None], ...]


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
    CreateReplicaSet
    | ScaleReplicaSet
    | MarkScaleDown
    | DeleteReplicaSet
    | SetServiceSelector
    | SetTraffic
    | ScaleDeployment
)
# Events and ReplacePod are actions too, listed apart so that the type above stays the
# set of things that change traffic or capacity.
AnyAction = Action | Event | ReplacePod | SetPodMetadata | CreateAnalysisRun | TerminateAnalysisRun


@dataclass(frozen=True)
class Plan:
    actions: tuple[AnyAction, ...]
    status: RolloutStatus
    """The whole new status. execute() patches only what differs from the stored one."""
    requeue_after: float | None = None
    """Seconds until the next pass is needed without any event (a pause ending)."""


class TrafficRouter(Protocol):
    """A traffic router (routers/): the core only names its shape, routers implement it."""

    async def read(self, stable_hash: str | None, canary_hash: str | None) -> RouterState:
        """The router's state as it is in the cluster (never raises for a missing object)."""
        ...

    async def apply(self, action: SetTraffic) -> RouterState:
        """Set weights and managed routes; returns the state the API server answered with."""
        ...

    @property
    def conflicts(self) -> int:
        """Writes retried at once because the object had changed since it was read."""
        ...

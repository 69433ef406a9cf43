"""The Rollout resource: spec (field names as Argo Rollouts') and status (plus kstatus)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tidegate.api._base import ApiModel, Duration, IntOrString, cel, duration_rule, validations
from tidegate.api.meta import Condition, LabelSelector, ObjectMeta, PodTemplateSpec

# ---------------------------------------------------------------------------
# Analysis references (shared by canary steps, background analysis, blue-green hooks)


class FieldRef(ApiModel):
    field_path: str
    """A field of the Rollout, e.g. `metadata.labels['app']`."""


class ArgumentValueFrom(ApiModel):
    pod_template_hash_value: Literal["Stable", "Latest"] | None = None
    """Take the pod-template hash of the stable or the latest (canary) ReplicaSet."""
    field_ref: FieldRef | None = None
    """Take the value from a field of the Rollout."""


class AnalysisRunArgument(ApiModel):
    name: str
    """Name of the template argument this sets."""
    value: str | None = None
    """Literal value."""
    value_from: ArgumentValueFrom | None = None
    """Where to take the value from, when it is not literal."""


class AnalysisTemplateRef(ApiModel):
    template_name: str
    """Name of an AnalysisTemplate (or ClusterAnalysisTemplate with clusterScope)."""
    cluster_scope: bool = False
    """Look the name up among ClusterAnalysisTemplates."""


class MetricNameRef(ApiModel):
    metric_name: str
    """Name of a metric of the template(s); `.*` would be a literal name, not a pattern."""


class MeasurementRetention(ApiModel):
    metric_name: str
    """Metric whose measurements are kept."""
    limit: int = Field(ge=1)
    """How many of the latest measurements the AnalysisRun keeps."""


class RolloutAnalysis(ApiModel):
    """Analysis to run: one or more templates, merged into one AnalysisRun."""

    templates: list[AnalysisTemplateRef] = Field(min_length=1)
    """Templates whose metrics the run measures."""
    args: list[AnalysisRunArgument] = Field(default_factory=list)
    """Values for the templates' arguments."""
    dry_run: list[MetricNameRef] = Field(default_factory=list)
    """Metrics measured and recorded but never failing the run."""
    measurement_retention: list[MeasurementRetention] = Field(default_factory=list)
    """How many measurements to keep per metric (default 10)."""


class RolloutAnalysisBackground(RolloutAnalysis):
    """Analysis that runs in the background for the whole canary."""

    starting_step: int | None = Field(default=None, ge=0)
    """Index of the step at which the background analysis starts (default: at once)."""


# ---------------------------------------------------------------------------
# Canary


class CanaryPause(ApiModel):
    """Pause the rollout: for a duration, or until promoted when no duration is given."""

    model_config = {"json_schema_extra": validations(duration_rule("duration"))}

    duration: Duration | None = None
    """How long to pause: `30s`, `10m`, `1h`, or a whole number of seconds. Omitted: until promoted."""


class SetCanaryScale(ApiModel):
    """Scale the canary independently of its traffic weight."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "[has(self.replicas), has(self.weight), "
                "has(self.matchTrafficWeight) && self.matchTrafficWeight].filter(x, x).size() == 1",
                "setCanaryScale takes exactly one of replicas, weight, matchTrafficWeight: true",
            )
        )
    }

    replicas: int | None = Field(default=None, ge=0)
    """Run exactly this many canary pods."""
    weight: int | None = Field(default=None, ge=0, le=100)
    """Run this percentage of spec.replicas as canary pods."""
    match_traffic_weight: bool | None = None
    """Go back to scaling the canary with its traffic weight."""


class StringMatch(ApiModel):
    """Match a string exactly, by prefix or by RE2 regular expression (one of them)."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "[has(self.exact), has(self.prefix), has(self.regex)].filter(x, x).size() == 1",
                "give exactly one of exact, prefix, regex",
            )
        )
    }

    exact: str | None = None
    """The value equals this."""
    prefix: str | None = None
    """The value starts with this."""
    regex: str | None = None
    """The value matches this RE2 expression."""


class HeaderRoutingMatch(ApiModel):
    header_name: str = Field(min_length=1)
    """HTTP header to match."""
    header_value: StringMatch
    """How its value must match."""


class SetHeaderRoute(ApiModel):
    """Send requests that match the headers to the canary, whatever the weight."""

    name: str = Field(min_length=1)
    """Name of the managed route; must be listed in trafficRouting.managedRoutes."""
    match: list[HeaderRoutingMatch] = Field(default_factory=list)
    """Header matches (all must hold). Empty: remove the managed route."""


class CanaryStep(ApiModel):
    """One step of a canary: exactly one action."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "[has(self.setWeight), has(self.pause), has(self.setCanaryScale), "
                "has(self.setHeaderRoute), has(self.analysis)].filter(x, x).size() == 1",
                "a step has exactly one of setWeight, pause, setCanaryScale, setHeaderRoute, analysis",
            )
        )
    }

    set_weight: int | None = Field(default=None, ge=0, le=100)
    """Send this percentage of traffic to the canary (0 to 100)."""
    pause: CanaryPause | None = None
    """Wait for a duration, or until promoted (`pause: {}`)."""
    set_canary_scale: SetCanaryScale | None = None
    """Scale the canary apart from its traffic weight."""
    set_header_route: SetHeaderRoute | None = None
    """Route requests with matching headers to the canary."""
    analysis: RolloutAnalysis | None = None
    """Run an analysis; the step completes when the run succeeds."""


class ManagedRoute(ApiModel):
    name: str = Field(min_length=1)
    """Name of a route the operator may add to (and remove from) the VirtualService."""


class IstioVirtualService(ApiModel):
    name: str = Field(min_length=1)
    """Name of the VirtualService (in the Rollout's namespace, or `namespace/name`)."""
    routes: list[str] = Field(default_factory=list)
    """Names of the HTTP routes whose weights are set. Empty: every HTTP route whose
    destinations are exactly the stable and the canary."""


class IstioDestinationRule(ApiModel):
    name: str = Field(min_length=1)
    """Name of the DestinationRule whose subsets the operator labels with pod-template hashes."""
    canary_subset_name: str = Field(min_length=1)
    """Subset that selects the canary."""
    stable_subset_name: str = Field(min_length=1)
    """Subset that selects the stable version."""


class IstioTrafficRouting(ApiModel):
    virtual_service: IstioVirtualService
    """The VirtualService whose route weights the operator sets."""
    destination_rule: IstioDestinationRule | None = None
    """For a subset-level split; omitted: a host-level split between the two Services."""


class TrafficRouting(ApiModel):
    managed_routes: list[ManagedRoute] = Field(default_factory=list)
    """Routes the operator adds for setHeaderRoute steps, ahead of the user's routes."""
    istio: IstioTrafficRouting | None = None
    """Route traffic with an Istio VirtualService."""


class CanaryStrategy(ApiModel):
    """Shift traffic to the new version step by step."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "!has(self.trafficRouting) || !has(self.trafficRouting.istio) "
                "|| has(self.trafficRouting.istio.destinationRule) "
                "|| (has(self.stableService) && has(self.canaryService))",
                "a host-level Istio split needs both stableService and canaryService",
                ".trafficRouting",
            ),
            cel(
                "!has(self.stableService) || !has(self.canaryService) "
                "|| self.stableService != self.canaryService",
                "stableService and canaryService must be different Services",
                ".canaryService",
            ),
        )
    }

    stable_service: str | None = None
    """Service the operator points at the stable pods (selector on the pod-template hash)."""
    canary_service: str | None = None
    """Service the operator points at the canary pods."""
    max_surge: IntOrString = "25%"
    """Without a traffic router: how many pods above spec.replicas may run (count or percent)."""
    max_unavailable: IntOrString = 0
    """Without a traffic router: how many pods below spec.replicas may be unavailable."""
    dynamic_stable_scale: bool = False
    """Scale the stable down as the canary's weight grows (needs a traffic router)."""
    abort_scale_down_delay_seconds: int = Field(default=30, ge=0)
    """After an abort, how long the canary pods stay before they are scaled to 0."""
    scale_down_delay_seconds: int = Field(default=0, ge=0)
    """After promotion, how long the old stable pods stay before they are scaled to 0."""
    analysis: RolloutAnalysisBackground | None = None
    """Background analysis for the whole canary."""
    traffic_routing: TrafficRouting | None = None
    """How traffic is split; omitted: by replica counts alone."""
    steps: list[CanaryStep] = Field(default_factory=list)
    """The steps, in order. Empty: go straight to 100%."""


# ---------------------------------------------------------------------------
# Blue-green


class BlueGreenStrategy(ApiModel):
    """Run the new version beside the old one, then switch the active Service at once."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "!has(self.previewService) || self.previewService != self.activeService",
                "previewService must differ from activeService",
                ".previewService",
            )
        )
    }

    active_service: str = Field(min_length=1)
    """Service that carries production traffic; its selector is switched on promotion."""
    preview_service: str | None = None
    """Service pointed at the new version before promotion."""
    preview_replica_count: int | None = Field(default=None, ge=1)
    """Pods of the new version before promotion (default: spec.replicas)."""
    auto_promotion_enabled: bool = True
    """Promote without a person; false: pause with BlueGreenPause until promoted."""
    auto_promotion_seconds: int | None = Field(default=None, ge=0)
    """Wait this long with the preview ready before promoting by itself."""
    scale_down_delay_seconds: int = Field(default=30, ge=0)
    """After the switch, how long the old pods stay (in-flight requests, DNS, caches)."""
    abort_scale_down_delay_seconds: int = Field(default=30, ge=0)
    """After an abort, how long the preview pods stay before they are scaled to 0."""
    pre_promotion_analysis: RolloutAnalysis | None = None
    """Analysis that must succeed before the switch."""
    post_promotion_analysis: RolloutAnalysis | None = None
    """Analysis after the switch; a failure switches back."""


class RolloutStrategy(ApiModel):
    """Exactly one of canary or blueGreen."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "has(self.canary) != has(self.blueGreen)",
                "strategy takes exactly one of canary or blueGreen",
            )
        )
    }

    canary: CanaryStrategy | None = None
    """Step-by-step traffic shifting."""
    blue_green: BlueGreenStrategy | None = None
    """Preview, then switch the active Service."""


# ---------------------------------------------------------------------------
# Rollout


class RolloutSpec(ApiModel):
    """Desired state of a Rollout."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "!has(self.restartAt) || self.restartAt.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}T.*$')",
                "restartAt must be an RFC 3339 time",
                ".restartAt",
            ),
        )
    }

    replicas: int | None = Field(default=1, ge=0)
    """Number of pods (default 1). Also reachable through the scale subresource."""
    selector: LabelSelector
    """Label selector of the pods; must match the template's labels."""
    template: PodTemplateSpec
    """Pod template; a change starts a new revision."""
    min_ready_seconds: int = Field(default=0, ge=0)
    """Seconds a pod must be ready before it counts as available."""
    revision_history_limit: int = Field(default=10, ge=0)
    """Old ReplicaSets (scaled to 0) kept for undo."""
    progress_deadline_seconds: int = Field(default=600, ge=1)
    """Seconds without progress before Progressing=False (ProgressDeadlineExceeded)."""
    progress_deadline_abort: bool = False
    """Also abort when the progress deadline is exceeded."""
    paused: bool = False
    """Pause the rollout (spec side; `tidegate pause`)."""
    restart_at: str | None = None
    """Pods created before this time are replaced one at a time, honouring PodDisruptionBudgets."""
    strategy: RolloutStrategy
    """Canary or blue-green."""

    @property
    def desired_replicas(self) -> int:
        return 1 if self.replicas is None else self.replicas


# ---------------------------------------------------------------------------
# Status


class PauseCondition(ApiModel):
    reason: Literal["CanaryPauseStep", "BlueGreenPause", "InconclusiveAnalysisRun", "PausedBySpec"]
    """Why the rollout is paused."""
    start_time: str
    """When the pause began (RFC 3339); durations count from here, across operator restarts."""


class WeightDestination(ApiModel):
    weight: int = 0
    """Percentage of traffic."""
    pod_template_hash: str | None = None
    """Pod-template hash of the pods behind it."""
    service_name: str | None = None
    """Service that selects them."""


class TrafficWeights(ApiModel):
    canary: WeightDestination = Field(default_factory=WeightDestination)
    """Weight of the canary, as read back from the router."""
    stable: WeightDestination = Field(default_factory=WeightDestination)
    """Weight of the stable version, as read back from the router."""
    verified: bool | None = None
    """The router was read back after the last change and carries these weights."""


class RolloutAnalysisRunStatus(ApiModel):
    name: str
    """AnalysisRun name."""
    status: str
    """Its phase."""
    message: str | None = None
    """Why, when it did not succeed."""


class CanaryStatus(ApiModel):
    weights: TrafficWeights | None = None
    """Traffic weights as read back from the router."""
    current_step_analysis_run_status: RolloutAnalysisRunStatus | None = None
    """Run of the current analysis step."""
    current_background_analysis_run_status: RolloutAnalysisRunStatus | None = None
    """Background analysis run."""
    managed_routes: list[str] | None = None
    """HTTP routes of the VirtualService whose weights the operator sets."""


class BlueGreenStatus(ApiModel):
    active_selector: str | None = None
    """Pod-template hash the active Service selects."""
    preview_selector: str | None = None
    """Pod-template hash the preview Service selects."""
    scale_down_delay_start_time: str | None = None
    """When the old version's scale-down delay began."""
    promoting: bool | None = None
    """Promotion under way: the new version is scaled to full size before the switch."""
    pre_promotion_analysis_run_status: RolloutAnalysisRunStatus | None = None
    """Pre-promotion analysis run."""
    post_promotion_analysis_run_status: RolloutAnalysisRunStatus | None = None
    """Post-promotion analysis run."""


class RolloutStatus(ApiModel):
    """Observed state of a Rollout: kstatus-compliant, with Argo Rollouts' fields."""

    observed_generation: int | None = None
    """metadata.generation this status describes (an integer, for kstatus)."""
    phase: Literal["Healthy", "Progressing", "Paused", "Degraded"] | None = None
    """Healthy, Progressing, Paused or Degraded."""
    message: str | None = None
    """What the rollout waits for, in words."""
    current_pod_hash: str | None = None
    """Pod-template hash of spec.template."""
    stable_rs: str | None = Field(default=None, alias="stableRS")
    """Pod-template hash of the stable ReplicaSet."""
    current_step_index: int | None = None
    """Index of the current canary step."""
    step: str | None = None
    """Current canary step as k/n (for kubectl get)."""
    current_step_hash: str | None = None
    """Hash of the steps; a change of steps restarts them."""
    abort: bool = False
    """Runtime control: abort the rollout (written by `tidegate abort`)."""
    aborted_at: str | None = None
    """When the abort began."""
    abort_message: str | None = None
    """Why the operator aborted (an analysis run, the progress deadline)."""
    promote_full: bool = False
    """Runtime control: skip the remaining steps and analysis."""
    pause_conditions: list[PauseCondition] = Field(default_factory=list)
    """Why the rollout is paused, and since when."""
    controller_pause: bool = False
    """The operator paused the rollout (a pause step, or an inconclusive analysis)."""
    replicas: int = 0
    """Pods of all its ReplicaSets."""
    updated_replicas: int = 0
    """Pods of the current revision."""
    ready_replicas: int = 0
    """Ready pods."""
    available_replicas: int = 0
    """Available pods."""
    selector: str | None = None
    """Label selector as a string (for the scale subresource and HPA)."""
    canary: CanaryStatus = Field(default_factory=CanaryStatus)
    """Canary progress."""
    blue_green: BlueGreenStatus = Field(default_factory=BlueGreenStatus)
    """Blue-green progress."""
    conditions: list[Condition] = Field(default_factory=list)
    """Available, Progressing, Paused, Completed, Healthy, InvalidSpec and Ready."""
    restarted_at: str | None = None
    """The spec.restartAt that was last carried out."""
    step_started_at: str | None = None
    """When the current step (or phase of a blue-green rollout) began."""
    progress_at: str | None = None
    """When the rollout last made progress (for progressDeadlineSeconds)."""
    inconclusive_paused: bool | None = None
    """The operator paused on an inconclusive analysis run."""
    analysis_round: int = 0
    """Bumped by a retry, so that analysis runs start afresh."""
    aborted_revision: str | None = None
    """Pod-template hash that was aborted; a retry or a new revision clears it."""


class Rollout(ApiModel):
    """A Deployment that rolls out step by step (canary) or by preview and switch (blue-green)."""

    api_version: str = "tidegate.io/v1alpha1"
    kind: str = "Rollout"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: RolloutSpec
    status: RolloutStatus = Field(default_factory=RolloutStatus)

    @classmethod
    def from_body(cls, body: Any) -> Rollout:
        return cls.model_validate(dict(body))

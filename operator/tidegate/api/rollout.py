"""The Rollout resource: spec (field names as Argo Rollouts') and status (plus kstatus)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tidegate.api._base import ApiModel, Duration, IntOrString, cel, duration_rules, int32, validations
from tidegate.api.meta import Condition, LabelSelector, ObjectMeta, PodTemplateSpec

RFC3339_PATTERN = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"([.][0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
"""A time as Go's time.RFC3339 parses it (upper-case T and Z, an offset or Z)."""

MAX_NAME_LENGTH = 52
"""A Rollout's name is at most 52 characters: its ReplicaSets are `<name>-<pod-template hash>`
and the name is a label value (63 at most) on them and their pods."""

DEFAULT_SCALE_DOWN_DELAY = 30
"""Seconds old pods stay once traffic left them (Argo Rollouts' DefaultScaleDownDelaySeconds)."""

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
    limit: int = int32(default=..., ge=1)
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

    starting_step: int | None = int32(default=None, ge=0)
    """Index of the step at which the background analysis starts (default: at once)."""


# ---------------------------------------------------------------------------
# Canary


class CanaryPause(ApiModel):
    """Pause the rollout: for a duration, or until promoted when no duration is given."""

    model_config = {"json_schema_extra": validations(*duration_rules("duration"))}

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

    replicas: int | None = int32(default=None, ge=0)
    """Run exactly this many canary pods."""
    weight: int | None = int32(default=None, ge=0)
    """Run this share of spec.replicas as canary pods: a percentage, or out of
    trafficRouting.maxTrafficWeight when that is set (Argo Rollouts' trafficWeightToReplicas)."""
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


class QueryParamMatch(StringMatch):
    """A query parameter's value: exactly, by prefix or by RE2 regular expression (one of them)."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "[has(self.exact), has(self.prefix), has(self.regex)].filter(x, x).size() == 1",
                "give exactly one of exact, prefix, regex for the query parameter",
            )
        )
    }


class HeaderRoutingMatch(ApiModel):
    """One condition of a header route: a header (Argo's fields), or a query parameter."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "(has(self.headerName) && has(self.headerValue) "
                "&& !has(self.queryParamName) && !has(self.queryParamValue)) "
                "|| (has(self.queryParamName) && has(self.queryParamValue) "
                "&& !has(self.headerName) && !has(self.headerValue))",
                "a match is headerName with headerValue, or queryParamName with queryParamValue",
            )
        )
    }

    header_name: str | None = Field(default=None, min_length=1)
    """HTTP header to match."""
    header_value: StringMatch | None = None
    """How its value must match."""
    query_param_name: str | None = Field(default=None, min_length=1)
    """Tidegate's addition: a query parameter to match instead of a header (Gateway API
    HTTPRoutes only)."""
    query_param_value: QueryParamMatch | None = None
    """How the query parameter's value must match."""

    def condition(self) -> tuple[Literal["header", "queryParam"], str, StringMatch] | None:
        """What it matches: (header | queryParam, name, value); None when incomplete (the CRD's
        rule refuses that)."""
        if self.header_name is not None and self.header_value is not None:
            return "header", self.header_name, self.header_value
        if self.query_param_name is not None and self.query_param_value is not None:
            return "queryParam", self.query_param_name, self.query_param_value
        return None


def _one_of(what: str) -> dict[str, Any]:
    return validations(
        cel(
            "[has(self.exact), has(self.prefix), has(self.regex)].filter(x, x).size() == 1",
            f"give exactly one of exact, prefix, regex for the mirror route's {what}",
        )
    )


class MethodMatch(StringMatch):
    """An HTTP method: exactly, by prefix or by RE2 regular expression (one of them)."""

    model_config = {"json_schema_extra": _one_of("method")}


class PathMatch(StringMatch):
    """A URL path: exactly, by prefix or by RE2 regular expression (one of them)."""

    model_config = {"json_schema_extra": _one_of("path")}


class MirrorHeaderMatch(StringMatch):
    """A header's value: exactly, by prefix or by RE2 regular expression (one of them)."""

    model_config = {"json_schema_extra": _one_of("header")}


class RouteMatch(ApiModel):
    """What requests a mirror route copies (Argo Rollouts' RouteMatch): all given must hold."""

    method: MethodMatch | None = None
    """The HTTP method."""
    path: PathMatch | None = None
    """The URL path (Istio's `uri`)."""
    headers: dict[str, MirrorHeaderMatch] = Field(default_factory=dict, max_length=16)
    """Request headers, by name (at most 16, which keeps the CRD's rules within the API
    server's cost budget)."""


class SetMirrorRoute(ApiModel):
    """Mirror requests that match to the canary, as Argo Rollouts' setMirrorRoute step does with
    Istio: a route named after a managed route, ahead of the user's, whose traffic goes where
    the managed route's weights send it and is also copied to the canary."""

    name: str = Field(min_length=1)
    """Name of the managed route; must be listed in trafficRouting.managedRoutes."""
    match: list[RouteMatch] = Field(default_factory=list, max_length=16)
    """Requests to mirror (any of the matches, at most 16). Empty: remove the mirror route."""
    percentage: int | None = Field(default=None, ge=0, le=100)
    """Share of the matching requests that is mirrored; unset: 100."""


class SetHeaderRoute(ApiModel):
    """Send requests that match the headers to the canary, whatever the weight."""

    name: str = Field(min_length=1)
    """Name of the managed route; must be listed in trafficRouting.managedRoutes."""
    match: list[HeaderRoutingMatch] = Field(default_factory=list)
    """Header (or query parameter) matches, all must hold. Empty: remove the managed route."""


class CanaryStep(ApiModel):
    """One step of a canary: exactly one action."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "[has(self.setWeight), has(self.pause), has(self.setCanaryScale), "
                "has(self.setHeaderRoute), has(self.analysis), has(self.experiment), "
                "has(self.plugin), has(self.setMirrorRoute)].filter(x, x).size() == 1",
                "a step has exactly one of setWeight, pause, setCanaryScale, setHeaderRoute, "
                "setMirrorRoute, analysis",
            )
        )
    }

    set_weight: int | None = int32(default=None, ge=0)
    """Send this share of traffic to the canary: 0 to 100, or to trafficRouting.maxTrafficWeight
    when that is set."""
    pause: CanaryPause | None = None
    """Wait for a duration, or until promoted (`pause: {}`)."""
    set_canary_scale: SetCanaryScale | None = None
    """Scale the canary apart from its traffic weight."""
    set_header_route: SetHeaderRoute | None = None
    """Route requests with matching headers to the canary."""
    analysis: RolloutAnalysis | None = None
    """Run an analysis; the step completes when the run succeeds."""
    experiment: dict[str, Any] | None = None
    """Argo Rollouts' Experiment step: not supported (InvalidSpec)."""
    plugin: dict[str, Any] | None = None
    """Argo Rollouts' step plugin: not supported (InvalidSpec)."""
    set_mirror_route: SetMirrorRoute | None = None
    """Copy matching requests to the canary (Istio mirror); their answers are dropped."""


class ManagedRoute(ApiModel):
    name: str = Field(min_length=1)
    """Name of a route the operator may add to (and remove from) the VirtualService."""


class IstioTLSRoute(ApiModel):
    """A VirtualService's TLS routes to weigh, found as Argo Rollouts' searchTlsRoute finds them:
    every `tls` route whose matches name this one port and exactly these SNI hosts."""

    port: int | None = Field(default=None, ge=0, le=65535)
    """The port of the route's matches (unset: matches that name no port)."""
    sni_hosts: list[str] = Field(default_factory=list)
    """The SNI hosts of the route's matches, all of them (in any order)."""


class IstioTCPRoute(ApiModel):
    """A VirtualService's TCP routes to weigh (Argo Rollouts' searchTcpRoute): every `tcp` route
    whose matches name this one port."""

    port: int | None = Field(default=None, ge=0, le=65535)
    """The port of the route's matches (unset: matches that name no port)."""


class IstioVirtualService(ApiModel):
    name: str = Field(min_length=1)
    """Name of the VirtualService (in the Rollout's namespace, or `namespace/name`)."""
    routes: list[str] = Field(default_factory=list)
    """Names of the HTTP routes whose weights are set. Empty: every HTTP route whose
    destinations are exactly the stable and the canary."""
    tls_routes: list[IstioTLSRoute] = Field(default_factory=list)
    """TLS routes whose weights are set, by port and SNI hosts. Empty: every TLS route whose
    destinations are exactly the stable and the canary."""
    tcp_routes: list[IstioTCPRoute] = Field(default_factory=list)
    """TCP routes whose weights are set, by port. Empty: every TCP route whose destinations
    are exactly the stable and the canary."""


class IstioDestinationRule(ApiModel):
    name: str = Field(min_length=1)
    """Name of the DestinationRule whose subsets the operator labels with pod-template hashes."""
    canary_subset_name: str = Field(min_length=1)
    """Subset that selects the canary."""
    stable_subset_name: str = Field(min_length=1)
    """Subset that selects the stable version."""
    additional_subset_names: list[str] = Field(default_factory=list)
    """Subsets that are neither stable nor canary but share the managed routes (Argo Rollouts'
    additionalSubsetNames): their weights and labels are left as written, and the stable
    gets what the canary and they leave."""


class IstioTrafficRouting(ApiModel):
    model_config = {
        "json_schema_extra": validations(
            cel(
                "has(self.virtualService) != has(self.virtualServices)",
                "give exactly one of virtualService, virtualServices",
            ),
            cel(
                "!has(self.virtualServices) || size(self.virtualServices) > 0",
                "virtualServices needs at least one VirtualService",
                ".virtualServices",
            ),
        )
    }

    virtual_service: IstioVirtualService | None = None
    """The VirtualService whose route weights the operator sets."""
    virtual_services: list[IstioVirtualService] | None = None
    """Several VirtualServices, each weighed alike (Argo Rollouts' virtualServices); the weight is
    verified only when every one of them carries it."""
    destination_rule: IstioDestinationRule | None = None
    """For a subset-level split; omitted: a host-level split between the two Services."""

    def all_virtual_services(self) -> list[IstioVirtualService]:
        """virtualService, or the virtualServices list (Argo Rollouts' getVirtualServices)."""
        if self.virtual_services:
            return list(self.virtual_services)
        return [self.virtual_service] if self.virtual_service is not None else []


GATEWAY_API_PLUGIN = "argoproj-labs/gatewayAPI"
"""The Argo Rollouts plugin whose configuration Tidegate reads as its own gatewayAPI block."""


class GatewayAPIRoute(ApiModel):
    """One route, as the plugin's `httpRoutes` / `grpcRoutes` items (its HTTPRoute/GRPCRoute types)."""

    name: str = Field(min_length=1, max_length=253)
    """Name of the route object."""
    use_header_routes: bool = False
    """Add the setHeaderRoute steps' rules to this route (the plugin's default: false)."""


class GatewayAPITrafficRouting(ApiModel):
    """The Gateway API router. Field names, types and defaults are those of the Argo Rollouts
    plugin argoproj-labs/gatewayAPI (its GatewayAPITrafficRouting), so that a plugin
    configuration moves over unchanged; only HTTPRoutes and GRPCRoutes are routed."""

    http_route: str | None = Field(default=None, min_length=1, max_length=253)
    """One HTTPRoute, with header routes (the plugin's insertGatewayAPIRouteLists)."""
    grpc_route: str | None = Field(default=None, min_length=1, max_length=253)
    """One GRPCRoute, with header routes."""
    http_routes: list[GatewayAPIRoute] = Field(default_factory=list)
    """HTTPRoutes, each saying whether it gets the header routes."""
    grpc_routes: list[GatewayAPIRoute] = Field(default_factory=list)
    """GRPCRoutes, each saying whether it gets the header routes."""
    namespace: str | None = Field(default=None, min_length=1, max_length=63)
    """Namespace of the routes; omitted: the Rollout's."""
    # The plugin's other fields, declared so that they are refused by name (InvalidSpec)
    # rather than pruned in silence by the API server.
    tcp_route: str | None = None
    """Not supported by Tidegate (TCPRoute has no header matches; refused as InvalidSpec)."""
    tls_route: str | None = None
    """Not supported by Tidegate (refused as InvalidSpec)."""
    tcp_routes: list[GatewayAPIRoute] = Field(default_factory=list)
    """Not supported by Tidegate (refused as InvalidSpec)."""
    tls_routes: list[GatewayAPIRoute] = Field(default_factory=list)
    """Not supported by Tidegate (refused as InvalidSpec)."""
    http_route_selector: LabelSelector | None = None
    """Not supported by Tidegate: name the routes (refused as InvalidSpec)."""
    grpc_route_selector: LabelSelector | None = None
    """Not supported by Tidegate: name the routes (refused as InvalidSpec)."""
    disable_in_progress_label: bool = False
    """Accepted for the plugin's sake; Tidegate never labels routes."""
    in_progress_label_key: str | None = None
    """Accepted for the plugin's sake; Tidegate never labels routes."""
    in_progress_label_value: str | None = None
    """Accepted for the plugin's sake; Tidegate never labels routes."""

    def routes(self) -> list[tuple[Literal["HTTPRoute", "GRPCRoute"], GatewayAPIRoute]]:
        """(kind, route) of every routed object, in order: the single-name fields first with
        header routes on, as the plugin's insertGatewayAPIRouteLists appends them."""
        out: list[tuple[Literal["HTTPRoute", "GRPCRoute"], GatewayAPIRoute]] = []
        kinds: tuple[tuple[Literal["HTTPRoute", "GRPCRoute"], str | None, list[GatewayAPIRoute]], ...] = (
            ("HTTPRoute", self.http_route, self.http_routes),
            ("GRPCRoute", self.grpc_route, self.grpc_routes),
        )
        for kind, single, many in kinds:
            out.extend((kind, r) for r in many)
            if single:
                out.append((kind, GatewayAPIRoute(name=single, use_header_routes=True)))
        return out

    def unsupported(self) -> list[str]:
        """The plugin's fields set here that Tidegate does not route with."""
        return [
            name
            for name, value in (
                ("tcpRoute", self.tcp_route),
                ("tlsRoute", self.tls_route),
                ("tcpRoutes", self.tcp_routes),
                ("tlsRoutes", self.tls_routes),
                ("httpRouteSelector", self.http_route_selector),
                ("grpcRouteSelector", self.grpc_route_selector),
            )
            if value
        ]


class TrafficRoutingPlugins(ApiModel):
    """Argo Rollouts' `trafficRouting.plugins` map; the Gateway API plugin's entry is read as
    `gatewayAPI`, any other plugin is refused (InvalidSpec) by name."""

    model_config = {"extra": "allow"}

    gateway_api: GatewayAPITrafficRouting | None = Field(default=None, alias=GATEWAY_API_PLUGIN)
    """The argoproj-labs/gatewayAPI plugin's configuration: the same as `gatewayAPI`."""

    def others(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())


class TrafficRouting(ApiModel):
    managed_routes: list[ManagedRoute] = Field(default_factory=list)
    """Routes the operator adds for setHeaderRoute steps, ahead of the user's routes."""
    istio: IstioTrafficRouting | None = None
    """Route traffic with an Istio VirtualService."""
    gateway_api: GatewayAPITrafficRouting | None = Field(default=None, alias="gatewayAPI")
    """Route traffic with Gateway API HTTPRoutes / GRPCRoutes (backendRef weights)."""
    plugins: TrafficRoutingPlugins | None = None
    """Argo Rollouts' router plugins; `argoproj-labs/gatewayAPI` is an alias of `gatewayAPI`."""
    max_traffic_weight: int | None = Field(default=None, ge=1, le=1000000)
    """The total weight of traffic (Argo Rollouts' maxTrafficWeight): setWeight steps and the
    routers' weights are out of it. Unset: 100."""

    # Argo Rollouts' other routers: kept as written (never pruned), refused with InvalidSpec.
    nginx: dict[str, Any] | None = None
    """Argo Rollouts' NGINX Ingress router: not supported (InvalidSpec)."""
    alb: dict[str, Any] | None = None
    """Argo Rollouts' AWS ALB router: not supported (InvalidSpec)."""
    smi: dict[str, Any] | None = None
    """Argo Rollouts' SMI router: not supported (InvalidSpec)."""
    ambassador: dict[str, Any] | None = None
    """Argo Rollouts' Ambassador router: not supported (InvalidSpec)."""
    app_mesh: dict[str, Any] | None = None
    """Argo Rollouts' App Mesh router: not supported (InvalidSpec)."""
    traefik: dict[str, Any] | None = None
    """Argo Rollouts' Traefik router: not supported (InvalidSpec)."""
    apisix: dict[str, Any] | None = None
    """Argo Rollouts' Apache APISIX router: not supported (InvalidSpec)."""

    def gateway(self) -> GatewayAPITrafficRouting | None:
        """The Gateway API configuration, native or written as Argo's plugin."""
        if self.gateway_api is not None:
            return self.gateway_api
        return self.plugins.gateway_api if self.plugins is not None else None

    def max_weight(self) -> int:
        """The total weight (Argo Rollouts' weightutil.MaxTrafficWeight: 100 unless set)."""
        return self.max_traffic_weight or 100

    def router(self) -> Literal["istio", "gatewayAPI"] | None:
        """Which router splits the traffic (None: pod counts alone)."""
        if self.istio is not None:
            return "istio"
        if self.gateway() is not None:
            return "gatewayAPI"
        return None


class PodMetadata(ApiModel):
    """Labels and annotations for the pods of one role (Argo Rollouts' ephemeral metadata)."""

    labels: dict[str, str] = Field(default_factory=dict)
    """Labels of the role's pods."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations of the role's pods."""


class PreferredAntiAffinity(ApiModel):
    weight: int = Field(ge=1, le=100)
    """Weight of the injected preference (1 to 100)."""


class AntiAffinity(ApiModel):
    """Keep a new version's pods off the nodes of the stable's (Argo Rollouts' antiAffinity).

    Exactly one of the two is set (the operator's check: InvalidSpec otherwise)."""

    preferred_during_scheduling_ignored_during_execution: PreferredAntiAffinity | None = None
    """A preference, with its weight."""
    required_during_scheduling_ignored_during_execution: dict[str, Any] | None = None
    """A requirement (`{}`)."""


_MAX_WEIGHT = (
    "(has(self.trafficRouting) && has(self.trafficRouting.maxTrafficWeight) "
    "? self.trafficRouting.maxTrafficWeight : 100)"
)


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
                "!has(self.trafficRouting) || !has(self.trafficRouting.gatewayAPI) "
                "|| (has(self.stableService) && has(self.canaryService))",
                "the Gateway API router needs both stableService and canaryService",
                ".trafficRouting",
            ),
            cel(
                "!has(self.stableService) || !has(self.canaryService) "
                "|| self.stableService != self.canaryService",
                "stableService and canaryService must be different Services",
                ".canaryService",
            ),
            # Argo Rollouts' ValidateRolloutStrategyCanary: InvalidSetWeightMessage, out of
            # weightutil.MaxTrafficWeight.
            cel(
                "!has(self.steps) || self.steps.all(s, "
                "(!has(s.setWeight) || s.setWeight <= " + _MAX_WEIGHT + ") && "
                "(!has(s.setCanaryScale) || !has(s.setCanaryScale.weight) "
                "|| s.setCanaryScale.weight <= " + _MAX_WEIGHT + "))",
                "setWeight and setCanaryScale.weight must be at most trafficRouting.maxTrafficWeight "
                "(100 when it is unset)",
                ".steps",
            ),
        )
    }

    stable_service: str | None = None
    """Service the operator points at the stable pods (selector on the pod-template hash)."""
    canary_service: str | None = None
    """Service the operator points at the canary pods."""
    max_surge: IntOrString = "25%"
    """Without a traffic router: how many pods above spec.replicas may run (count or percent)."""
    max_unavailable: IntOrString = "25%"
    """Without a traffic router: how many pods below spec.replicas may be unavailable."""
    dynamic_stable_scale: bool = False
    """Scale the stable down as the canary's weight grows (needs a traffic router)."""
    abort_scale_down_delay_seconds: int | None = int32(default=None, ge=0)
    """After an abort, how long the canary pods stay before they are scaled to 0: with a
    traffic router 30 s when unset, and 0 means never; without a router at once."""
    scale_down_delay_seconds: int | None = int32(default=None, ge=0)
    """After promotion, how long the old stable pods stay before they are scaled to 0
    (proxies may still route to them): 30 s when unset; needs a traffic router."""
    analysis: RolloutAnalysisBackground | None = None
    """Background analysis for the whole canary."""
    traffic_routing: TrafficRouting | None = None
    """How traffic is split; omitted: by replica counts alone."""
    steps: list[CanaryStep] = Field(default_factory=list)
    """The steps, in order. Empty: go straight to 100%."""
    min_pods_per_replica_set: int | None = int32(default=None, ge=1)
    """With a traffic router: a ReplicaSet that has pods has at least this many (capped at
    spec.replicas), for availability at small weights."""
    canary_metadata: PodMetadata | None = None
    """Labels and annotations the canary pods carry while they are the canary (changed in place,
    without restarting them, when the role changes)."""
    stable_metadata: PodMetadata | None = None
    """Labels and annotations the stable pods carry while they are the stable (changed in place,
    without restarting them, when the role changes)."""
    anti_affinity: AntiAffinity | None = None
    """Schedule the new version's pods away from the stable version's nodes."""
    scale_down_delay_revision_limit: int | None = int32(default=None, ge=0)
    """How many old ReplicaSets may keep their pods while they wait out scaleDownDelaySeconds
    (the newest); unset: no limit."""
    ping_pong: dict[str, Any] | None = None
    """Argo Rollouts' ping-pong Services: not supported (InvalidSpec)."""

    def scale_down_delay(self) -> int:
        """Seconds the old stable stays after promotion (Argo Rollouts'
        GetScaleDownDelaySecondsOrDefault: 30 with a traffic router, else none)."""
        if self.traffic_routing is None:
            return 0
        return (
            DEFAULT_SCALE_DOWN_DELAY
            if self.scale_down_delay_seconds is None
            else self.scale_down_delay_seconds
        )

    def abort_scale_down_delay(self) -> int | None:
        """Seconds the aborted canary stays; None: it is never scaled down (Argo Rollouts'
        GetAbortScaleDownDelaySecondsOrDefault: an explicit 0 with a router means never)."""
        if self.traffic_routing is None:
            return 0
        if self.abort_scale_down_delay_seconds is None:
            return DEFAULT_SCALE_DOWN_DELAY
        return self.abort_scale_down_delay_seconds or None


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
    preview_replica_count: int | None = int32(default=None, ge=1)
    """Pods of the new version before promotion (default: spec.replicas)."""
    auto_promotion_enabled: bool = True
    """Promote without a person; false: pause with BlueGreenPause until promoted."""
    auto_promotion_seconds: int | None = int32(default=None, ge=0)
    """Wait this long with the preview ready before promoting by itself."""
    scale_down_delay_seconds: int = int32(default=30, ge=0)
    """After the switch, how long the old pods stay (in-flight requests, DNS, caches)."""
    abort_scale_down_delay_seconds: int = int32(default=30, ge=0)
    """After an abort, how long the preview pods stay before they are scaled to 0 (0: never)."""
    pre_promotion_analysis: RolloutAnalysis | None = None
    """Analysis that must succeed before the switch."""
    post_promotion_analysis: RolloutAnalysis | None = None
    """Analysis after the switch; a failure switches back."""
    active_metadata: PodMetadata | None = None
    """Labels and annotations the active pods carry while they are the active (changed in place,
    without restarting them, when the role changes)."""
    preview_metadata: PodMetadata | None = None
    """Labels and annotations the preview pods carry while they are the preview (changed in place,
    without restarting them, when the role changes)."""
    anti_affinity: AntiAffinity | None = None
    """Schedule the new version's pods away from the stable version's nodes."""
    scale_down_delay_revision_limit: int | None = int32(default=None, ge=0)
    """How many old ReplicaSets may keep their pods while they wait out scaleDownDelaySeconds
    (the newest); unset: no limit."""


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


class WorkloadRef(ApiModel):
    """A Deployment whose pod template the Rollout runs (Argo Rollouts' workloadRef)."""

    api_version: str = "apps/v1"
    """apps/v1."""
    kind: Literal["Deployment"] = "Deployment"
    """Deployment (the only kind referenced)."""
    name: str = Field(min_length=1, max_length=253)
    """The Deployment, in the Rollout's namespace."""
    scale_down: Literal["never", "onsuccess", "progressively"] = "never"
    """What happens to the Deployment's own pods: left alone (never), scaled to 0 once the
    Rollout is healthy (onsuccess), or scaled down as the Rollout's pods become available
    (progressively)."""


class RollbackWindow(ApiModel):
    revisions: int = int32(default=0, ge=0)
    """How many revisions back a rollback skips the steps (Argo Rollouts' rollbackWindow)."""


class AnalysisHistory(ApiModel):
    successful_run_history_limit: int = int32(default=5, ge=0)
    """Successful AnalysisRuns kept (Argo Rollouts' default 5)."""
    unsuccessful_run_history_limit: int = int32(default=5, ge=0)
    """Failed, Error and Inconclusive AnalysisRuns kept (Argo Rollouts' default 5)."""


class RolloutSpec(ApiModel):
    """Desired state of a Rollout."""

    model_config = {
        "json_schema_extra": validations(
            # Argo Rollouts' restartAt is a metav1.Time (RFC 3339, as Go's time.RFC3339 parses
            # it). The form first, so that garbage gets this message; timestamp() then refuses
            # a day the calendar does not have (2024-02-30).
            cel(
                f"!has(self.restartAt) || (self.restartAt.matches('{RFC3339_PATTERN}') "
                "&& timestamp(self.restartAt) > timestamp('0001-01-01T00:00:00Z'))",
                "restartAt must be an RFC 3339 time such as 2026-01-31T12:00:00Z",
                ".restartAt",
            ),
            cel(
                "has(self.template) != has(self.workloadRef)",
                "exactly one of template and workloadRef is set",
            ),
            cel(
                "has(self.selector) || has(self.workloadRef)",
                "selector is required (it may be omitted with workloadRef)",
                ".selector",
            ),
        )
    }

    # Argo Rollouts' RolloutSpec: replicas, minReadySeconds, revisionHistoryLimit and
    # progressDeadlineSeconds are int32 (and so are its strategies' counts and seconds).
    replicas: int | None = int32(default=1, ge=0)
    """Number of pods (default 1). Also reachable through the scale subresource."""
    selector: LabelSelector | None = None
    """Label selector of the pods; must match the template's labels. With workloadRef it may
    be omitted: the Deployment's selector is used."""
    template: PodTemplateSpec | None = None
    """Pod template; a change starts a new revision. Omitted with workloadRef."""
    workload_ref: WorkloadRef | None = None
    """Run the pod template of this Deployment instead of `template`."""
    analysis: AnalysisHistory | None = None
    """How many finished AnalysisRuns are kept."""
    rollback_window: RollbackWindow | None = None
    """Going back to one of the last `revisions` revisions skips the steps (a fast rollback)."""
    min_ready_seconds: int = int32(default=0, ge=0)
    """Seconds a pod must be ready before it counts as available."""
    revision_history_limit: int = int32(default=10, ge=0)
    """Old ReplicaSets (scaled to 0) kept for undo."""
    progress_deadline_seconds: int = int32(default=600, ge=1)
    """Seconds without progress before Progressing=False (ProgressDeadlineExceeded)."""
    progress_deadline_abort: bool = False
    """Also abort when the progress deadline is exceeded."""
    paused: bool = False
    """Pause the rollout (spec side; `tidegate pause`)."""
    restart_at: str | None = Field(default=None, max_length=64)
    """Pods created before this time are replaced one at a time, honouring PodDisruptionBudgets;
    a time in the future is waited for."""
    strategy: RolloutStrategy
    """Canary or blue-green."""

    @property
    def desired_replicas(self) -> int:
        return 1 if self.replicas is None else self.replicas

    @property
    def pod_selector(self) -> LabelSelector:
        """The selector (empty until a workloadRef's Deployment lends its own)."""
        return self.selector if self.selector is not None else LabelSelector()


# ---------------------------------------------------------------------------
# Status


PauseReason = Literal["CanaryPauseStep", "BlueGreenPause", "InconclusiveAnalysisRun", "PausedBySpec"]


class PauseCondition(ApiModel):
    reason: PauseReason
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


class PendingNotification(ApiModel):
    """A transition the operator has still to tell some subscribers of (the notification outbox)."""

    id: int
    """Sequence number of the notification in this Rollout (status.notifications.seq)."""
    trigger: str
    """Argo Rollouts' trigger name, e.g. on-rollout-aborted."""
    reason: str
    """Reason of the Event that told of the transition."""
    message: str
    """What happened, in words."""
    time: str
    """When the transition was decided (RFC 3339)."""
    revision: str | None = None
    """Pod-template hash of the Rollout's template then."""
    step: int | None = None
    """The canary step then, counted from 1."""
    destinations: list[str] = Field(default_factory=list)
    """`service:recipient` still to be sent to; each is removed once delivered or given up."""


class NotificationsStatus(ApiModel):
    """What the operator owes subscribers: written with the transition itself, in the same status write."""

    seq: int = 0
    """Sequence number of the last notification recorded."""
    completed_revision: str | None = None
    """The revision on-rollout-completed was last recorded for (once per revision)."""
    pending: list[PendingNotification] = Field(default_factory=list)
    """Notifications not yet delivered to every destination."""


class RolloutStatus(ApiModel):
    """Observed state of a Rollout: kstatus-compliant, with Argo Rollouts' fields."""

    observed_generation: int | None = None
    """metadata.generation this status describes (an integer, for kstatus)."""
    analysis_blocked: str | None = None
    """Why the last pass could not make an AnalysisRun (a template missing, say); the canary
    is held at 0% until it can."""
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
    skip_step: int | None = int32(default=None, ge=0)
    """Runtime control: complete step N (0-based, as currentStepIndex) now; the operator clears it."""
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
    notifications: NotificationsStatus | None = None
    """The notification outbox (only for a Rollout with subscriptions): README "Notifications"."""


class Rollout(ApiModel):
    """A Deployment that rolls out step by step (canary) or by preview and switch (blue-green)."""

    # On the root, where the API server lets a CRD's rules read metadata.name.
    model_config = {
        "json_schema_extra": validations(
            cel(
                f"!has(self.metadata.name) || self.metadata.name.size() <= {MAX_NAME_LENGTH}",
                f"metadata.name must be at most {MAX_NAME_LENGTH} characters (its ReplicaSets "
                "are <name>-<pod-template hash>, a label value of at most 63)",
                ".metadata.name",
            )
        )
    }

    api_version: str = "tidegate.io/v1alpha1"
    kind: str = "Rollout"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: RolloutSpec
    status: RolloutStatus = Field(default_factory=RolloutStatus)

    @classmethod
    def from_body(cls, body: Any) -> Rollout:
        return cls.model_validate(dict(body))

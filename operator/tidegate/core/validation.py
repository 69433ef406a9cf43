"""Problems in a Rollout spec (-> InvalidSpec): the CRD's own rules, then the operator's.

The API server enforces the CRD's rules on every write, so a stored Rollout normally
passes them; they are evaluated again here (from the same schema, with the same evaluator
as `tidegate lint`) for objects stored before a CRD upgrade and for specs built in code.
The operator's checks are those the CRD cannot express: the selector against the
template's labels, header routes against managedRoutes and Istio, a duration the
operator cannot use (a negative number of seconds).
"""

from __future__ import annotations

import functools
import json
import re
from datetime import datetime

import re2

from tidegate.api.rollout import (
    GATEWAY_API_PLUGIN,
    Rollout,
    SetHeaderRoute,
    SetMirrorRoute,
    StringMatch,
    TrafficRouting,
)
from tidegate.core.durations import DurationError, parse_duration
from tidegate.core.schema_rules import check_rules, crd_schema

ROUTING = "spec.strategy.canary.trafficRouting"
RULE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
"""A Gateway API rule name (SectionName): the header rules Tidegate adds carry a managed route's name."""

# Flipped on when the analysis controller is wired in; until then an analysis in
# the spec is reported, never silently skipped.
ANALYSIS_SUPPORTED = True


def rule_problems(r: Rollout) -> list[str]:
    """The Rollout CRD's x-kubernetes-validations rules that the spec (and the name) break."""
    return list(_root_rule_problems(r.metadata.name)) + list(
        _spec_rule_problems(json.dumps(r.spec.wire(), sort_keys=True))
    )


@functools.lru_cache(maxsize=256)
def _root_rule_problems(name: str | None) -> tuple[str, ...]:
    """The rules on the object's root, which may read metadata.name (and nothing else of it)."""
    root = crd_schema("Rollout")
    schema = {
        "type": "object",
        "properties": {"metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
        "x-kubernetes-validations": root.get("x-kubernetes-validations", []),
    }
    found = check_rules(schema, {"metadata": {"name": name} if name is not None else {}})
    return tuple(str(v) for v in found.violations)


# The planner asks on every pass and a spec rarely changes: remember the last answers
# (cel-python interprets a rule in about a millisecond).
@functools.lru_cache(maxsize=256)
def _spec_rule_problems(spec: str) -> tuple[str, ...]:
    schema = crd_schema("Rollout")["properties"]["spec"]
    found = check_rules(schema, json.loads(spec), ("spec",))
    return tuple(str(v) for v in found.violations)


def spec_problems(r: Rollout) -> list[str]:
    """The CRD's rules, then the operator's checks (one problem per path)."""
    problems = rule_problems(r)
    reported = {p.partition(": ")[0] for p in problems}
    problems += [p for p in operator_problems(r) if p.partition(": ")[0] not in reported]
    return problems


def operator_problems(r: Rollout) -> list[str]:
    """What the operator refuses that the CRD schema and rules cannot catch."""
    problems: list[str] = []
    spec = r.spec
    problems += unsupported_fields(r)
    if spec.restart_at and restart_time(spec.restart_at) is None:
        problems.append(f"spec.restartAt: {spec.restart_at!r} is not an RFC 3339 time with an offset or Z")
    labels = ((spec.template.metadata if spec.template else None) or {}).get("labels") or {}
    selector = spec.pod_selector.match_labels
    lent = spec.selector is None and spec.workload_ref is not None  # the Deployment's, once read
    if not selector and not spec.pod_selector.match_expressions and not lent:
        problems.append("spec.selector: must select the pods (matchLabels)")
    for key, value in selector.items():
        if spec.template is None:
            break  # a workloadRef's template is checked against the selector once read
        if labels.get(key) != value:
            problems.append(
                f"spec.selector.matchLabels.{key}: {value!r} does not match the template's labels "
                f"(spec.template.metadata.labels.{key} is {labels.get(key)!r})"
            )
    canary = spec.strategy.canary
    if canary is not None:
        routing = canary.traffic_routing
        managed = {m.name for m in routing.managed_routes} if routing else set()
        for i, step in enumerate(canary.steps):
            where = f"spec.strategy.canary.steps[{i}]"
            if step.set_header_route is not None:
                problems.extend(header_regex_problems(where, step.set_header_route))
                problems.extend(query_param_problems(where, step.set_header_route, routing))
                gateway = routing.gateway() if routing is not None else None
                if routing is None or routing.router() is None:
                    problems.append(f"{where}.setHeaderRoute: needs trafficRouting (istio or gatewayAPI)")
                elif gateway is not None and not any(r.use_header_routes for _, r in gateway.routes()):
                    problems.append(
                        f"{where}.setHeaderRoute: no route takes header routes (httpRoute, grpcRoute, "
                        "or an httpRoutes / grpcRoutes item with useHeaderRoutes: true)"
                    )
                elif step.set_header_route.name not in managed:
                    problems.append(
                        f"{where}.setHeaderRoute.name: {step.set_header_route.name!r} is not listed "
                        "in trafficRouting.managedRoutes"
                    )
            if step.set_mirror_route is not None:
                problems.extend(mirror_regex_problems(where, step.set_mirror_route))
                problems.extend(mirror_route_problems(where, step.set_mirror_route, routing))
            if step.pause is not None and step.pause.duration is not None:
                # The CRD's rule checks the form; this also refuses a negative number.
                try:
                    parse_duration(step.pause.duration)
                except DurationError as exc:
                    problems.append(f"{where}.pause.duration: {exc}")
            if step.analysis is not None and not ANALYSIS_SUPPORTED:
                problems.append(f"{where}.analysis: analysis steps are not supported yet by this operator")
        if canary.analysis is not None and not ANALYSIS_SUPPORTED:
            problems.append("spec.strategy.canary.analysis: background analysis is not supported yet")
        if routing is not None:
            problems.extend(routing_problems(routing))
            if routing.gateway() is not None and not (canary.stable_service and canary.canary_service):
                problems.append(
                    f"{ROUTING}: the Gateway API router needs both stableService and canaryService"
                )
        if routing is not None and routing.max_traffic_weight is not None and routing.router() is None:
            problems.append(f"{ROUTING}.maxTrafficWeight: needs a traffic router (istio or gatewayAPI)")
        if canary.dynamic_stable_scale and (routing is None or routing.router() is None):
            problems.append("spec.strategy.canary.dynamicStableScale: needs trafficRouting")
    bg = spec.strategy.blue_green
    if bg is not None and not ANALYSIS_SUPPORTED:
        if bg.pre_promotion_analysis is not None:
            problems.append(
                "spec.strategy.blueGreen.prePromotionAnalysis: not supported yet by this operator"
            )
        if bg.post_promotion_analysis is not None:
            problems.append(
                "spec.strategy.blueGreen.postPromotionAnalysis: not supported yet by this operator"
            )
    return problems


def restart_time(text: str) -> datetime | None:
    """spec.restartAt as a time; None when it is not one (or has no zone: it would be ambiguous)."""
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def unsupported_fields(r: Rollout) -> list[str]:
    """Argo Rollouts' fields that Tidegate keeps but does not act on, each named.

    The CRD keeps them (they are never pruned in silence, whatever the client), and a
    Rollout that sets one is InvalidSpec: running without, say, its router would send
    traffic where its author did not mean it to go. The running version keeps serving.
    """
    spec = r.spec
    found: list[str] = []

    def check(obj: object, where: str, names: tuple[str, ...]) -> None:
        for name in names:
            if getattr(obj, name, None) is not None:
                alias = "".join(w if i == 0 else w.capitalize() for i, w in enumerate(name.split("_")))
                found.append(f"{where}.{alias}: not supported by Tidegate")

    canary = spec.strategy.canary
    if canary is not None:
        where = "spec.strategy.canary"
        check(
            canary,
            where,
            ("ping_pong",),
        )
        if canary.traffic_routing is not None:
            check(
                canary.traffic_routing,
                f"{where}.trafficRouting",
                ("nginx", "alb", "smi", "ambassador", "app_mesh", "traefik", "apisix"),
            )
        for i, step in enumerate(canary.steps):
            check(step, f"{where}.steps[{i}]", ("experiment", "plugin"))
        if canary.scale_down_delay_seconds is not None and canary.traffic_routing is None:
            # Argo Rollouts' validation: InvalidCanaryScaleDownDelay.
            found.append(f"{where}.scaleDownDelaySeconds: can only be used with traffic routing")
        if canary.scale_down_delay_seconds is not None and canary.dynamic_stable_scale:
            found.append(f"{where}.dynamicStableScale: cannot be used with scaleDownDelaySeconds")
    for where, strategy in (("canary", canary), ("blueGreen", spec.strategy.blue_green)):
        anti = getattr(strategy, "anti_affinity", None)
        if anti is not None and (anti.preferred_during_scheduling_ignored_during_execution is None) == (
            anti.required_during_scheduling_ignored_during_execution is None
        ):
            found.append(
                f"spec.strategy.{where}.antiAffinity: give exactly one of "
                "preferredDuringSchedulingIgnoredDuringExecution, "
                "requiredDuringSchedulingIgnoredDuringExecution"
            )
    return found


def workload_problems(r: Rollout, template: dict[str, object]) -> list[str]:
    """A workloadRef Deployment's pod template must carry the Rollout's selector labels."""
    if r.spec.workload_ref is None:
        return []
    meta = template.get("metadata")
    labels = (meta.get("labels") if isinstance(meta, dict) else None) or {}
    return [
        f"spec.selector.matchLabels.{key}: the Deployment {r.spec.workload_ref.name}'s pod template "
        f"has no label {key}={value}"
        for key, value in r.spec.pod_selector.match_labels.items()
        if labels.get(key) != value
    ]


def routing_problems(routing: TrafficRouting) -> list[str]:
    """One router; Argo's plugin map only for the Gateway API plugin; only the route kinds routed."""
    problems = []
    if routing.plugins is not None:
        for other in routing.plugins.others():
            problems.append(
                f"{ROUTING}.plugins.{other}: plugin not supported by Tidegate "
                f"(routers: istio, gatewayAPI, plugins.{GATEWAY_API_PLUGIN})"
            )
        if routing.plugins.gateway_api is not None and routing.gateway_api is not None:
            problems.append(
                f"{ROUTING}: gatewayAPI and plugins.{GATEWAY_API_PLUGIN} are the same router; give one"
            )
    gateway = routing.gateway()
    if gateway is None:
        return problems
    where = (
        f"{ROUTING}.gatewayAPI"
        if routing.gateway_api is not None
        else f"{ROUTING}.plugins.{GATEWAY_API_PLUGIN}"
    )
    if routing.istio is not None:
        problems.append(f"{ROUTING}: give one router, istio or gatewayAPI")
    for name in gateway.unsupported():
        problems.append(f"{where}.{name}: not supported by Tidegate (it routes HTTPRoutes and GRPCRoutes)")
    if not gateway.routes():
        problems.append(f"{where}: name at least one route (httpRoute, grpcRoute, httpRoutes or grpcRoutes)")
    for i, m in enumerate(routing.managed_routes):
        if len(m.name) > 240 or not RULE_NAME.match(m.name):
            problems.append(
                f"{ROUTING}.managedRoutes[{i}].name: {m.name!r} must be a Gateway API rule name "
                "(lower case letters, digits, '-' and '.'; at most 240 characters)"
            )
    return problems


@functools.lru_cache(maxsize=1024)
def re2_error(pattern: str) -> str | None:
    """Why RE2 (the syntax of Istio's and Envoy's `regex`, and of the Gateway API's
    RegularExpression) refuses the pattern; None when it compiles. Pure: it compiles a string.

    Argo Rollouts writes a header route's regex into the VirtualService unchecked; Istio then
    refuses the whole VirtualService (or Envoy rejects the route), so the check comes first."""
    options = re2.Options()
    options.log_errors = False  # the message is the answer, not a line on stderr
    try:
        re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        return detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
    return None


def header_regex_problems(where: str, route: SetHeaderRoute) -> list[str]:
    """Each `regex` of a setHeaderRoute (header and query parameter values) must be RE2."""
    problems = []
    for j, m in enumerate(route.match):
        for field, value in (("headerValue", m.header_value), ("queryParamValue", m.query_param_value)):
            if value is None or value.regex is None:
                continue
            error = re2_error(value.regex)
            if error is not None:
                problems.append(
                    f"{where}.setHeaderRoute.match[{j}].{field}.regex: {value.regex!r} is not an RE2 "
                    f"regular expression ({error})"
                )
    return problems


def mirror_regex_problems(where: str, route: SetMirrorRoute) -> list[str]:
    """Each `regex` of a setMirrorRoute (method, path, headers) must be RE2."""
    problems = []
    for j, m in enumerate(route.match):
        fields: list[tuple[str, StringMatch | None]] = [("method", m.method), ("path", m.path)]
        fields += [(f"headers.{name}", value) for name, value in sorted(m.headers.items())]
        for field, value in fields:
            if value is None or value.regex is None:
                continue
            error = re2_error(value.regex)
            if error is not None:
                problems.append(
                    f"{where}.setMirrorRoute.match[{j}].{field}.regex: {value.regex!r} is not an RE2 "
                    f"regular expression ({error})"
                )
    return problems


def query_param_problems(where: str, route: SetHeaderRoute, routing: TrafficRouting | None) -> list[str]:
    """Query parameter matches (Tidegate's addition to setHeaderRoute) need HTTPRoutes to carry
    them: Istio's router does not write them, a GRPCRoute has no query parameters."""
    gateway = routing.gateway() if routing is not None else None
    grpc = gateway is not None and any(k == "GRPCRoute" and r.use_header_routes for k, r in gateway.routes())
    problems = []
    for j, m in enumerate(route.match):
        if m.query_param_name is None:
            continue
        at = f"{where}.setHeaderRoute.match[{j}].queryParamName"
        if gateway is None:
            problems.append(f"{at}: query parameter matches need trafficRouting.gatewayAPI (HTTPRoutes)")
        elif grpc:
            problems.append(
                f"{at}: a GRPCRoute has no query parameters (a grpcRoute with header routes is set)"
            )
    return problems


def mirror_route_problems(where: str, route: SetMirrorRoute, routing: TrafficRouting | None) -> list[str]:
    """A mirror route needs Istio (Argo Rollouts' InvalidSetMirrorRouteTrafficPolicy; the Gateway
    API router does not mirror) and a name listed in managedRoutes
    (ValidateStepRouteFoundInManagedRoute)."""
    at = f"{where}.setMirrorRoute"
    if routing is None or routing.istio is None:
        return [f"{at}: needs trafficRouting.istio (only the Istio router mirrors traffic)"]
    if route.name not in {m.name for m in routing.managed_routes}:
        return [f"{at}.name: {route.name!r} is not listed in trafficRouting.managedRoutes"]
    return []

"""Problems in a Rollout spec that the CRD schema cannot catch (-> InvalidSpec)."""

from __future__ import annotations

from tidegate.api.rollout import Rollout
from tidegate.core.durations import DurationError, parse_duration

# Flipped on when the analysis controller is wired in; until then an analysis in
# the spec is reported, never silently skipped.
ANALYSIS_SUPPORTED = True


def spec_problems(r: Rollout) -> list[str]:
    problems: list[str] = []
    spec = r.spec
    labels = (spec.template.metadata or {}).get("labels") or {}
    selector = spec.selector.match_labels
    if not selector and not spec.selector.match_expressions:
        problems.append("spec.selector: must select the pods (matchLabels)")
    for key, value in selector.items():
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
                if routing is None or routing.istio is None:
                    problems.append(f"{where}.setHeaderRoute: needs trafficRouting.istio")
                elif step.set_header_route.name not in managed:
                    problems.append(
                        f"{where}.setHeaderRoute.name: {step.set_header_route.name!r} is not listed "
                        "in trafficRouting.managedRoutes"
                    )
            if step.pause is not None and step.pause.duration is not None:
                try:
                    parse_duration(step.pause.duration)
                except DurationError as exc:
                    problems.append(f"{where}.pause.duration: {exc}")
            if step.analysis is not None and not ANALYSIS_SUPPORTED:
                problems.append(f"{where}.analysis: analysis steps are not supported yet by this operator")
        if canary.analysis is not None and not ANALYSIS_SUPPORTED:
            problems.append("spec.strategy.canary.analysis: background analysis is not supported yet")
        if canary.dynamic_stable_scale and (routing is None or routing.istio is None):
            problems.append("spec.strategy.canary.dynamicStableScale: needs trafficRouting")
        if (
            routing is not None
            and routing.istio is not None
            and routing.istio.destination_rule is None
            and not (canary.stable_service and canary.canary_service)
        ):
            problems.append(
                "spec.strategy.canary.trafficRouting: a host-level split needs "
                "stableService and canaryService"
            )
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

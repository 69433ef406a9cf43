"""Canary traffic: the weight, header routes and pod counts a step wants, and setting them."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from tidegate.api.rollout import CanaryStep, CanaryStrategy
from tidegate.core.hashing import canonical, short_hash
from tidegate.core.model import (
    HeaderRoute,
    MirrorRoute,
    SetTraffic,
)
from tidegate.core.toolkit import (
    Pass,
    canary_replicas_for_weight,
    percent_of,
    rs_by_hash,
)

UNVERIFIED_RETRY_SECONDS = 5.0
"""How soon a weight the router read back unverified is written again."""


def steps_hash(steps: list[CanaryStep]) -> str:
    return short_hash(canonical([s.wire() for s in steps]))


def weight_at(steps: list[CanaryStep], index: int) -> int:
    weight = 0
    for step in steps[: index + 1]:
        if step.set_weight is not None:
            weight = step.set_weight
    return weight


def max_weight(canary: CanaryStrategy) -> int:
    """The total weight steps and routers count in (Argo Rollouts' weightutil.MaxTrafficWeight)."""
    return canary.traffic_routing.max_weight() if canary.traffic_routing is not None else 100


def effective_canary_weight(weight: int, top: int, additional: int) -> int:
    """The canary's share of a route whose additionalSubsetNames destinations keep `additional`:
    never more than what they leave, so the route always sums to `top` (full promotion gives the
    canary top - additional, the stable 0). Argo Rollouts' processRoutes takes the additional
    subsets' weight from the stable; this also keeps a full promotion from summing above top."""
    return max(0, min(weight, top - additional))


def weight_text(weight: int, top: int) -> str:
    """A weight as people read it: `25%`, or `250/1000` out of a maxTrafficWeight."""
    return f"{weight}%" if top == 100 else f"{weight}/{top}"


def canary_scale_at(steps: list[CanaryStep], index: int, replicas: int, top: int = 100) -> int | None:
    override: int | None = None
    for step in steps[: index + 1]:
        scale = step.set_canary_scale
        if scale is None:
            continue
        if scale.replicas is not None:
            override = scale.replicas
        elif scale.weight is not None:
            # Argo Rollouts' trafficWeightToReplicas: out of maxTrafficWeight, rounded up.
            override = math.ceil(scale.weight * replicas / top)
        else:
            override = None
    return override


def header_routes_at(steps: list[CanaryStep], index: int) -> tuple[HeaderRoute, ...]:
    routes: dict[str, HeaderRoute] = {}
    for step in steps[: index + 1]:
        hr = step.set_header_route
        if hr is None:
            continue
        if not hr.match:
            routes.pop(hr.name, None)
            continue
        found: dict[str, list[tuple[str, str, str]]] = {"header": [], "queryParam": []}
        for m in hr.match:
            condition = m.condition()
            if condition is None:
                continue
            where, name, hv = condition
            kind, value = next(
                (k, v)
                for k, v in (("exact", hv.exact), ("prefix", hv.prefix), ("regex", hv.regex))
                if v is not None
            )
            found[where].append((name, kind, value))
        routes[hr.name] = HeaderRoute(hr.name, tuple(found["header"]), tuple(found["queryParam"]))
    return tuple(routes.values())


def mirror_routes_at(steps: list[CanaryStep], index: int) -> tuple[MirrorRoute, ...]:
    """The mirror routes in force at a step: each setMirrorRoute sets its route, one with no
    match removes it (Argo Rollouts' reconcileVirtualServiceMirrorRoutes)."""
    routes: dict[str, MirrorRoute] = {}
    for step in steps[: index + 1]:
        mr = step.set_mirror_route
        if mr is None:
            continue
        if not mr.match:
            routes.pop(mr.name, None)
            continue
        matches = canonical([{k: v for k, v in m.wire().items() if v} for m in mr.match])
        routes[mr.name] = MirrorRoute(mr.name, matches, 100 if mr.percentage is None else mr.percentage)
    return tuple(routes.values())


def router_on(canary: CanaryStrategy) -> bool:
    """A traffic router (Istio or Gateway API) splits the traffic, not pod counts."""
    return canary.traffic_routing is not None and canary.traffic_routing.router() is not None


@dataclass(frozen=True)
class Pods:
    """A ReplicaSet's size as the replica arithmetic sees it."""

    spec: int
    available: int


def resolve_fenceposts(max_surge: int | str, max_unavailable: int | str, replicas: int) -> tuple[int, int]:
    """maxSurge and maxUnavailable as pod counts (Argo Rollouts' resolveFenceposts, MaxUnavailable).

    Surge rounds up and unavailability down; when both come to 0, one pod may be unavailable.
    """
    surge = percent_of(max_surge, replicas, round_up=True)
    unavailable = percent_of(max_unavailable, replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, 0 if replicas == 0 else min(unavailable, replicas)


def _tied(weight: int, max_weight: int, total: int) -> bool:
    return math.modf(total * (weight / max_weight))[0] == 0.5


def approximate_split(replicas: int, weight: int, max_weight: int, surge: int) -> tuple[int, int]:
    """The canary and stable pod counts whose ratio is closest to `weight`.

    Argo Rollouts' approximateWeightedCanaryStableReplicaCounts: with a surge pod allowed,
    replicas + 1 pods are considered too, so a weight of 1-99 keeps at least one pod on each
    side (1 replica at 50% -> 1 + 1); a 0 canary is allowed only at weight 0 or full, or
    with a single replica and no surge.
    """
    if replicas == 0:
        return 0, 0
    exact = replicas * weight / max_weight
    ceil_, floor_ = math.ceil(exact), math.floor(exact)
    zero_allowed = weight in (0, max_weight) or (replicas == 1 and surge == 0)
    options: list[tuple[int, int]] = []  # (canary, total)
    if ceil_ < replicas or zero_allowed:
        options.append((ceil_, replicas))
    if not _tied(weight, max_weight, replicas) and (floor_ != 0 or zero_allowed):
        options.append((floor_, replicas))
    if surge > 0:
        options.append((ceil_, replicas + 1))
        if not _tied(weight, max_weight, replicas + 1) and (floor_ != 0 or zero_allowed):
            options.append((floor_, replicas + 1))
    if not options:
        return 0, replicas

    def delta(option: tuple[int, int]) -> float:
        return abs(option[0] * max_weight / option[1] - weight)

    best = options[0]
    for option in options[1:]:
        if delta(option) < delta(best):
            best = option
    return best[0], best[1] - best[0]


def _for_scale_down(rs: Pods | None, ignore_availability: bool) -> int:
    if rs is None:
        return 0
    if rs.spec < rs.available or ignore_availability:
        return rs.spec  # pods above spec are going anyway: never count them as available
    return rs.available


def _drain(rs: Pods | None, desired: int, scale_down: int, count: int) -> int:
    if rs is not None and rs.spec > desired:
        return max(desired, rs.spec - scale_down)
    return count


def _within_limits(
    drain: Pods | None,
    adjust: Pods | None,
    drain_count: int,
    adjust_count: int,
    max_total: int,
    min_available: int,
) -> tuple[int, int]:
    """Argo Rollouts' adjustReplicaWithinLimits: keep the sum within maxSurge and the
    available pods at or above the minimum, trimming the draining side last."""
    over = max(0, adjust_count + drain_count - max_total)
    available = min(drain.available, drain_count) if drain is not None else 0
    if adjust is not None:
        adjust_count -= over
        available += min(adjust.available, adjust_count)
        extra = max(0, adjust.available - adjust_count)
        adjust_count += min(extra, max(0, min_available - available))
        drain_count -= max(0, adjust_count + drain_count - max_total)
    return drain_count, adjust_count


def basic_canary_split(
    replicas: int,
    weight: int,
    max_surge: int | str,
    max_unavailable: int | str,
    canary: Pods | None,
    stable: Pods | None,
    others: int = 0,
    max_weight: int = 100,
) -> tuple[int, int]:
    """(canary, stable) pod counts for this pass of a canary without a traffic router.

    Argo Rollouts' CalculateReplicaCountsForBasicCanary, step for step: the target split
    comes from `approximate_split`; each pass grows towards it within maxSurge (the pods
    of `others`, superseded ReplicaSets, count against it) and shrinks only while the
    available pods stay at or above replicas - maxUnavailable. Passes repeat until the
    counts stop changing. `stable` None means there is no stable ReplicaSet apart from
    the canary: the canary goes to full size.
    """
    surge, unavailable = resolve_fenceposts(max_surge, max_unavailable, replicas)
    want_canary, want_stable = approximate_split(replicas, weight, max_weight, surge)
    canary_count = canary.spec if canary is not None else 0
    stable_count = 0
    if stable is not None:
        stable_count = stable.spec
    else:
        want_canary, want_stable = replicas, 0
    max_total = replicas + surge
    scale_up = max_total - (others + (canary.spec if canary else 0) + (stable.spec if stable else 0))
    if stable is not None and stable.spec < want_stable and scale_up > 0:
        if stable.spec + scale_up < want_stable:
            stable_count, scale_up = stable.spec + scale_up, 0
        else:
            stable_count, scale_up = want_stable, scale_up - (want_stable - stable.spec)
    if canary is not None and canary.spec < want_canary and scale_up > 0:
        canary_count = min(canary.spec + scale_up, want_canary)
    if others > 0:
        return canary_count, stable_count  # superseded ReplicaSets go first
    min_available = replicas - unavailable
    increasing = canary is None or want_canary >= canary.spec
    to_scale_down = _for_scale_down(canary, not increasing) + _for_scale_down(stable, increasing)
    if to_scale_down <= min_available:
        return canary_count, stable_count
    scale_down = to_scale_down - min_available
    if not increasing:
        canary_count = _drain(canary, want_canary, scale_down, canary_count)
        canary_count, stable_count = _within_limits(
            canary, stable, canary_count, stable_count, max_total, min_available
        )
    elif stable is not None:
        stable_count = _drain(stable, want_stable, scale_down, stable_count)
        stable_count, canary_count = _within_limits(
            stable, canary, stable_count, canary_count, max_total, min_available
        )
    return canary_count, stable_count


def basic_canary_counts(
    p: Pass, canary: CanaryStrategy, weight: int, current_hash: str, stable_hash: str, replicas: int
) -> tuple[int, int]:
    """Without a traffic router the weight is a share of pods: `basic_canary_split` on the
    Rollout's ReplicaSets as observed."""

    def pods(pod_hash: str) -> Pods | None:
        rs = rs_by_hash(p.obs, pod_hash)
        return Pods(rs.replicas, rs.available) if rs is not None else None

    # A canary not created yet is one of 0 pods (Argo creates it at 0, then scales it).
    others = sum(rs.replicas for rs in p.obs.replica_sets if rs.pod_hash not in (current_hash, stable_hash))
    return basic_canary_split(
        replicas,
        weight,
        canary.max_surge,
        canary.max_unavailable,
        pods(current_hash) or Pods(0, 0),
        pods(stable_hash) if stable_hash != current_hash else None,
        others,
    )


def at_basic_split(
    p: Pass, canary_target: int, stable_target: int, current_hash: str, stable_hash: str
) -> bool:
    """The split is reached (Argo Rollouts' AtDesiredReplicaCountsForCanary): both ReplicaSets
    at their counts with every pod available, and no pod of another ReplicaSet left."""
    for pod_hash, target in ((current_hash, canary_target), (stable_hash, stable_target)):
        rs = rs_by_hash(p.obs, pod_hash)
        if rs is None or rs.replicas != target or rs.available != target:
            return False
    return all(
        rs.available == 0 for rs in p.obs.replica_sets if rs.pod_hash not in (current_hash, stable_hash)
    )


def _matches(routes: tuple[HeaderRoute, ...]) -> set[tuple[str, tuple[tuple[str, str, str], ...]]]:
    """Header routes by name and match, in no particular order."""
    return {(r.name, tuple(sorted(r.match))) for r in routes}


def set_traffic(
    p: Pass,
    canary: CanaryStrategy,
    weight: int,
    stable_hash: str,
    canary_hash: str,
    header_routes: tuple[HeaderRoute, ...] = (),
    mirror_routes: tuple[MirrorRoute, ...] = (),
) -> bool:
    """Ask the router for a weight (out of maxTrafficWeight); True when the read-back already
    shows it. Header and mirror routes not given are removed."""
    router = p.obs.router
    if not router_on(canary):
        return True
    top = max_weight(canary)
    wanted_headers = tuple(sorted(h.name for h in header_routes))
    in_place = (
        router.canary_weight == effective_canary_weight(weight, top, router.additional_weight)
        and router.canary_weight + router.stable_weight + router.additional_weight == top
        and tuple(sorted(router.header_routes)) == wanted_headers
        and (router.header_matches is None or _matches(router.header_matches) == _matches(header_routes))
        and (router.mirror_routes is None or set(router.mirror_routes) == set(mirror_routes))
        and (
            canary.traffic_routing is None
            or canary.traffic_routing.istio is None
            or canary.traffic_routing.istio.destination_rule is None
            or (router.stable_subset_hash == stable_hash and router.canary_subset_hash == canary_hash)
        )
    )
    if in_place:
        return True
    p.actions.append(SetTraffic(weight, stable_hash, canary_hash, header_routes, mirror_routes, top))
    recorded = p.obs.rollout.status.canary.weights
    if (
        recorded is not None
        and not recorded.verified
        and (recorded.canary.weight, recorded.stable.weight) == (router.canary_weight, router.stable_weight)
    ):
        # Our last write was read back unverified and nothing has moved since: the router
        # does not take this weight. Write again, but a few seconds apart, not in a hot loop.
        p.wake_in(UNVERIFIED_RETRY_SECONDS)
        return False
    if recorded is not None and recorded.verified and recorded.canary.weight == weight:
        # The router carried this very weight when we last looked: someone else changed it.
        p.event(
            "TrafficDriftCorrected",
            f"traffic was changed outside Tidegate (canary weight {weight_text(router.canary_weight, top)}, "
            f"header routes {', '.join(router.header_routes) or 'none'}); set back to "
            f"{weight_text(weight, top)}",
            warning=True,
            action=True,
        )
    elif router.canary_weight != weight:
        p.event(
            "TrafficWeightSet",
            f"canary weight {weight_text(router.canary_weight, top)} -> {weight_text(weight, top)}",
            action=True,
        )
    p.wake_in(0.0)  # the cache holds the router's answer to the write: go on at once
    return False


def routed_canary_hash(p: Pass, canary: CanaryStrategy) -> str | None:
    """The pods the canary side of the router reaches now: canary Service or canary subset."""
    if (
        canary.traffic_routing
        and canary.traffic_routing.istio
        and canary.traffic_routing.istio.destination_rule
    ):
        return p.obs.router.canary_subset_hash
    svc = p.obs.services.get(canary.canary_service or "")
    return svc.pod_hash if svc is not None else None


def min_pods(canary: CanaryStrategy, replicas: int) -> Callable[[int], int]:
    """minPodsPerReplicaSet: a ReplicaSet that has pods has at least that many, capped at
    spec.replicas (Argo Rollouts' CheckMinPodsPerReplicaSet)."""
    floor = min(canary.min_pods_per_replica_set or 0, replicas)
    return lambda count: count if count == 0 else max(count, floor)


@dataclass(frozen=True)
class DesiredTraffic:
    """What one canary step wants: its weight, header routes and the two ReplicaSets' sizes."""

    weight: int
    headers: tuple[HeaderRoute, ...]
    canary_replicas: int
    stable_replicas: int
    mirrors: tuple[MirrorRoute, ...] = ()


def desired_traffic(
    p: Pass,
    canary: CanaryStrategy,
    steps: list[CanaryStep],
    index: int,
    current_hash: str,
    stable_hash: str,
    replicas: int,
) -> DesiredTraffic:
    """The one place that turns a step index into weights and pod counts."""
    weight = weight_at(steps, index)
    headers = header_routes_at(steps, index)
    top = max_weight(canary)
    scale = canary_scale_at(steps, index, replicas, top)
    if router_on(canary):
        at_least = min_pods(canary, replicas)
        canary_target = (
            scale if scale is not None else at_least(canary_replicas_for_weight(weight, replicas, top))
        )
        stable_target = replicas
        if canary.dynamic_stable_scale:
            # Never below what the traffic now on stable (read back) needs (Argo Rollouts'
            # CalculateReplicaCountsForTrafficRoutedCanary, out of maxTrafficWeight).
            on_stable = max(top - weight, p.obs.router.stable_weight)
            stable_target = at_least(max(1 if on_stable > 0 else 0, math.ceil(on_stable * replicas / top)))
    else:
        # setCanaryScale needs a traffic router; without one the weight is the pod split
        # (Argo Rollouts' UseSetCanaryScale ignores it too).
        canary_target, stable_target = basic_canary_counts(
            p, canary, weight, current_hash, stable_hash, replicas
        )
    return DesiredTraffic(weight, headers, canary_target, stable_target, mirror_routes_at(steps, index))

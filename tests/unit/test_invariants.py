"""The e2e zero-downtime watcher's core, fed synthetic deliveries: seeded violations are
caught, clean sequences pass, deliveries are folded in resourceVersion order and a re-list
forgets what was deleted. The same `Folding` runs behind the e2e `Watcher`."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.e2e.invariants import BOOKMARK, GAP, GATEWAY_KINDS, KINDS, RELIST, Delivery, Folding, fold_all

H1, H2 = "h1", "h2"


# ------------------------------------------------------------------ objects
def meta(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, **extra}


def rollout(replicas: int = 2, stable: str = H1) -> dict[str, Any]:
    return {"metadata": meta("web"), "spec": {"replicas": replicas}, "status": {"stableRS": stable}}


def rs(h: str, replicas: int, available: int, ready: int | None = None) -> dict[str, Any]:
    return {
        "metadata": meta(f"web-{h}", labels={"rollouts-pod-template-hash": h}),
        "spec": {"replicas": replicas},
        "status": {"availableReplicas": available, "readyReplicas": available if ready is None else ready},
    }


def svc(name: str, h: str | None = None) -> dict[str, Any]:
    selector = {"app": "web", **({"rollouts-pod-template-hash": h} if h else {})}
    return {"metadata": meta(name), "spec": {"selector": selector}}


def pod(name: str, h: str) -> dict[str, Any]:
    return {"metadata": meta(name, labels={"app": "web", "rollouts-pod-template-hash": h})}


def slice_(service: str, suffix: str = "a", **pods: bool | None) -> dict[str, Any]:
    """An EndpointSlice of `service` with one endpoint per pod; True/False/None is `ready`."""
    endpoints = []
    for i, (name, ready) in enumerate(pods.items()):
        conditions = {} if ready is None else {"ready": ready}
        endpoints.append(
            {
                "addresses": [f"10.0.0.{i + 1}"],
                "conditions": conditions,
                "targetRef": {"kind": "Pod", "name": name},
            }
        )
    return {
        "metadata": meta(f"{service}-{suffix}", labels={"kubernetes.io/service-name": service}),
        "endpoints": endpoints,
    }


def vs(*routes: list[tuple[str, int | None]] | list[tuple[str, str, int | None]]) -> dict[str, Any]:
    """Routes of (host, weight) or (host, subset, weight) destinations."""
    http = []
    for i, route in enumerate(routes):
        dests = []
        for d in route:
            dest: dict[str, Any] = {"host": d[0]}
            if len(d) == 3:
                dest["subset"] = d[1]
            entry: dict[str, Any] = {"destination": dest}
            if d[-1] is not None:
                entry["weight"] = d[-1]
            dests.append(entry)
        http.append({"name": f"r{i}", "route": dests})
    return {"metadata": meta("web"), "spec": {"http": http}}


def dr(host: str, **subsets: str) -> dict[str, Any]:
    return {
        "metadata": meta(host),
        "spec": {
            "host": host,
            "subsets": [{"name": n, "labels": {"rollouts-pod-template-hash": h}} for n, h in subsets.items()],
        },
    }


# ------------------------------------------------------------------ deliveries
@dataclass
class Cluster:
    """Hands out deliveries with increasing revisions, as one etcd would."""

    rvs: itertools.count[int] = field(default_factory=lambda: itertools.count(100))

    def listed(self, kind: str, *objects: dict[str, Any]) -> Delivery:
        return Delivery(kind, RELIST, next(self.rvs), objects=objects)

    def put(self, kind: str, obj: dict[str, Any]) -> Delivery:
        return Delivery(kind, "MODIFIED", next(self.rvs), obj)

    def delete(self, kind: str, obj: dict[str, Any]) -> Delivery:
        return Delivery(kind, "DELETED", next(self.rvs), obj)

    def gap(self, kind: str) -> Delivery:
        return Delivery(kind, GAP, next(self.rvs))

    def bookmarks(self) -> list[Delivery]:
        rv = next(self.rvs)
        return [Delivery(kind, BOOKMARK, rv) for kind in KINDS]


def host_canary(c: Cluster) -> list[Delivery]:
    """A Healthy host-split canary setup: stable at 100, canary Service over no pod yet."""
    return [
        c.listed("rollout", rollout()),
        c.listed("rs", rs(H1, 2, 2)),
        c.listed("pod", pod("s1", H1), pod("s2", H1)),
        c.listed("svc", svc("web-stable", H1), svc("web-canary", H1)),
        c.listed("eps", slice_("web-stable", s1=True, s2=True), slice_("web-canary", s1=True, s2=True)),
        c.listed("dr"),
        c.listed("vs", vs([("web-stable", 100), ("web-canary", 0)])),
    ]


def canary_ready(c: Cluster, ready: bool | None = True) -> list[Delivery]:
    """The canary ReplicaSet and pod come up, and the canary Service is pointed at them."""
    return [
        c.put("rs", rs(H2, 1, 1)),
        c.put("pod", pod("c1", H2)),
        c.put("svc", svc("web-canary", H2)),
        c.put("eps", slice_("web-canary", c1=ready)),
    ]


def folded(deliveries: list[Delivery], **kw: Any) -> list[str]:
    return fold_all(deliveries, **kw).violations


# ------------------------------------------------------------------ the invariants
def test_a_clean_canary_walk_has_no_violation() -> None:
    c = Cluster()
    walk = host_canary(c) + canary_ready(c)
    for w in (10, 50, 100):
        walk.append(c.put("vs", vs([("web-stable", 100 - w), ("web-canary", w)])))
    walk += [
        c.put("rollout", rollout(stable=H2)),
        c.put("svc", svc("web-stable", H2)),
        c.put("eps", slice_("web-stable", c1=True)),
        c.put("vs", vs([("web-stable", 100), ("web-canary", 0)])),
        c.put("rs", rs(H1, 0, 0)),
    ]
    folding = fold_all(walk)
    assert folding.violations == []
    assert folding.events == len(walk)


def test_endpoint_ready_unset_counts_as_ready() -> None:
    c = Cluster()
    walk = host_canary(c) + canary_ready(c, ready=None)
    walk.append(c.put("vs", vs([("web-stable", 90), ("web-canary", 10)])))
    assert folded(walk) == []


@dataclass
class Case:
    id: str
    then: Any  # Cluster -> deliveries after the Healthy host-split setup
    caught: str | None  # a piece of the one violation expected, or None for a clean run


CASES = [
    Case(
        "weight 10 to a canary Service whose slice has no ready endpoint",
        lambda c: [*canary_ready(c, ready=False), c.put("vs", vs([("web-stable", 90), ("web-canary", 10)]))],
        "weight 10 to web-canary with no ready endpoint",
    ),
    Case(
        "the ReplicaSet says ready but the slice does not: the slice wins",
        lambda c: [
            c.put("rs", rs(H2, 1, 1, ready=1)),
            c.put("pod", pod("c1", H2)),
            c.put("svc", svc("web-canary", H2)),
            c.put("eps", slice_("web-canary")),
            c.put("vs", vs([("web-stable", 90), ("web-canary", 10)])),
        ],
        "weight 10 to web-canary with no ready endpoint",
    ),
    Case(
        "the slice says ready while the ReplicaSet has not caught up: no violation",
        lambda c: [
            c.put("rs", rs(H2, 1, 0, ready=0)),
            c.put("pod", pod("c1", H2)),
            c.put("svc", svc("web-canary", H2)),
            c.put("eps", slice_("web-canary", c1=True)),
            c.put("vs", vs([("web-stable", 90), ("web-canary", 10)])),
        ],
        None,
    ),
    Case(
        "weights summing to 90",
        lambda c: [*canary_ready(c), c.put("vs", vs([("web-stable", 80), ("web-canary", 10)]))],
        "route r0 weights sum to 90",
    ),
    Case(
        "weights summing to 100 over three destinations",
        lambda c: [
            *canary_ready(c),
            c.put("vs", vs([("web-stable", 80), ("web-canary", 10), ("web-canary", 10)])),
        ],
        None,
    ),
    Case(
        "the stable ReplicaSet loses a replica before promotion",
        lambda c: [*canary_ready(c), c.put("rs", rs(H1, 2, 1))],
        "stable ReplicaSet web-h1 dropped to 1 available (had 2 of 2)",
    ),
    Case(
        "a scale-down of the stable ReplicaSet lowers the bar",
        lambda c: [c.put("rollout", rollout(replicas=1)), c.put("rs", rs(H1, 1, 1))],
        None,
    ),
    Case(
        "the stable Service's slice loses its last ready endpoint",
        lambda c: [c.put("eps", slice_("web-stable", s1=False, s2=False))],
        "weight 100 to web-stable with no ready endpoint",
    ),
    Case(
        "one endpoint in two slices (a move between slices) is still one ready endpoint",
        lambda c: [
            *canary_ready(c),
            c.put("eps", slice_("web-canary", "b", c1=True)),
            c.put("eps", slice_("web-canary", c1=False)),
            c.put("vs", vs([("web-stable", 90), ("web-canary", 10)])),
        ],
        None,
    ),
    Case(
        "the Rollout is deleted: its pods go with it, by design",
        lambda c: [
            c.delete("rollout", rollout()),
            c.put("eps", slice_("web-stable")),
            c.put("rs", rs(H1, 0, 0)),
        ],
        None,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_host_split(case: Case) -> None:
    c = Cluster()
    violations = folded(host_canary(c) + case.then(c))
    if case.caught is None:
        assert violations == []
    else:
        assert len(violations) == 1, violations
        assert case.caught in violations[0]


def test_nothing_is_judged_before_the_first_revision_serves() -> None:
    """Weight to a Service whose slice is still empty, while the first pods start."""
    c = Cluster()
    walk = [
        c.listed("rollout", rollout()),
        c.listed("rs", rs(H1, 2, 0)),
        c.listed("pod"),
        c.listed("svc", svc("web-stable", H1), svc("web-canary", H1)),
        c.listed("eps", slice_("web-stable"), slice_("web-canary")),
        c.listed("dr"),
        c.listed("vs", vs([("web-stable", 100), ("web-canary", 0)])),
        c.put("rs", rs(H1, 2, 2)),  # the ReplicaSet leads the slice: not armed yet
        c.put("pod", pod("s1", H1)),
        c.put("eps", slice_("web-stable", s1=True)),
    ]
    assert folded(walk) == []
    walk.append(c.put("eps", slice_("web-stable", s1=False)))
    assert len(folded(walk)) == 1


# ------------------------------------------------------------------ subsets
def subset_canary(c: Cluster) -> list[Delivery]:
    return [
        c.listed("rollout", rollout()),
        c.listed("rs", rs(H1, 2, 2)),
        c.listed("pod", pod("s1", H1), pod("s2", H1)),
        c.listed("svc", svc("api")),
        c.listed("eps", slice_("api", s1=True, s2=True)),
        c.listed("dr", dr("api", stable=H1, canary=H1)),
        c.listed(
            "vs",
            vs([("api", "canary", None)], [("api", "stable", 100), ("api", "canary", 0)]),
        ),
    ]


@pytest.mark.parametrize("canary_pod_ready", [True, False])
def test_subset_readiness_comes_from_the_endpoints_of_the_subsets_pods(canary_pod_ready: bool) -> None:
    c = Cluster()
    walk = [
        *subset_canary(c),
        c.put("rs", rs(H2, 1, 1)),  # the ReplicaSet says ready either way
        c.put("pod", pod("c1", H2)),
        c.put("eps", slice_("api", s1=True, s2=True, c1=canary_pod_ready)),
        c.put("dr", dr("api", stable=H1, canary=H2)),
        c.put("vs", vs([("api", "canary", None)], [("api", "stable", 95), ("api", "canary", 5)])),
    ]
    violations = folded(walk)
    if canary_pod_ready:
        assert violations == []
    else:
        # The header route (one destination, no weight: all of its traffic) first, then 5%.
        assert [v.split(": ", 1)[1].split(" (")[0] for v in violations] == [
            "weight None to api/canary",
            "weight None to api/canary",
            "weight 5 to api/canary",
        ], violations


def test_a_subset_endpoint_whose_pod_is_gone_counts_for_no_subset() -> None:
    c = Cluster()
    walk = [*subset_canary(c), c.put("dr", dr("api", stable=H1, canary=H1)), c.delete("pod", pod("s1", H1))]
    assert folded(walk) == []
    walk.append(c.delete("pod", pod("s2", H1)))
    violations = folded(walk)
    assert violations and "weight 100 to api/stable" in violations[-1], violations


# ------------------------------------------------------------------ blue-green
def test_the_active_service_keeps_its_ready_endpoints() -> None:
    c = Cluster()
    walk = [
        c.listed("rollout", rollout()),
        c.listed("rs", rs(H1, 2, 2)),
        c.listed("pod", pod("s1", H1), pod("s2", H1)),
        c.listed("svc", svc("api", H1)),
        c.listed("eps", slice_("api", s1=True, s2=True)),
        c.listed("dr"),
        c.listed("vs"),
        c.put("svc", svc("api", H2)),
        c.put("eps", slice_("api", g1=True, g2=True)),  # switched to green at once
    ]
    assert folded(walk, active_service="api") == []
    walk.append(c.put("eps", slice_("api", g1=True, g2=False)))
    violations = folded(walk, active_service="api")
    assert violations == [
        f"rv {walk[-1].rv} eps MODIFIED api-a: active Service api has 1 ready endpoints, fewer than 2"
    ]


# ------------------------------------------------------------------ ordering
def test_deliveries_are_folded_in_revision_order_not_arrival_order() -> None:
    """The canary slice turned ready (rv n) before the weight moved (rv n+1): clean, even
    when the VirtualService's stream delivers first."""
    c = Cluster()
    setup = host_canary(c) + canary_ready(c, ready=False)
    ready = c.put("eps", slice_("web-canary", c1=True))
    weight = c.put("vs", vs([("web-stable", 90), ("web-canary", 10)]))
    assert folded([*setup, weight, ready]) == []
    # The other way round in the cluster: the weight moved first, and that state is judged.
    c = Cluster()
    setup = host_canary(c) + canary_ready(c, ready=False)
    weight = c.put("vs", vs([("web-stable", 90), ("web-canary", 10)]))
    ready = c.put("eps", slice_("web-canary", c1=True))
    violations = folded([*setup, ready, weight])
    assert len(violations) == 1 and violations[0].startswith(f"rv {weight.rv} vs MODIFIED web:")


def test_a_delivery_waits_for_every_stream_or_the_window() -> None:
    c = Cluster()
    folding = Folding(window=1.0)
    for d in host_canary(c):
        folding.offer(d, now=0.0)
    assert folding.events == 1, "only the first list is below every stream's revision"
    for b in c.bookmarks():
        folding.offer(b, now=0.0)
    assert folding.events == 7, "bookmarks are not folded, they release what they pass"
    weight = c.put("vs", vs([("web-stable", 90), ("web-canary", 10)]))
    folding.offer(weight, now=0.0)
    assert folding.events == 7, "the other streams have not passed its revision"
    folding.tick(now=0.5)
    assert folding.events == 7
    folding.tick(now=1.0)
    assert folding.events == 8, "the window has passed"
    more = c.put("vs", vs([("web-stable", 80), ("web-canary", 20)]))
    folding.offer(more, now=2.0)
    for b in c.bookmarks():
        folding.offer(b, now=2.0)
    assert folding.events == 9, "every stream has passed its revision (bookmarks)"
    assert folding.late == []


def test_a_delivery_later_than_the_window_is_folded_in_its_place() -> None:
    """The weight is folded after the window; the older slice update then arrives: the
    fold starts again from the log and the verdict is that of the revision order."""
    c = Cluster()
    setup = host_canary(c) + canary_ready(c, ready=False)
    ready = c.put("eps", slice_("web-canary", c1=True))
    weight = c.put("vs", vs([("web-stable", 90), ("web-canary", 10)]))
    folding = Folding(window=1.0)
    for d in setup:
        folding.offer(d, now=0.0)
    folding.offer(weight, now=0.0)
    folding.tick(now=5.0)
    assert len(folding.violations) == 1, "folded early, on a state that never existed"
    folding.offer(ready, now=5.0)
    folding.drain()
    assert len(folding.late) == 1, folding.late
    assert folding.violations == []
    assert folding.events == len(setup) + 2


# ------------------------------------------------------------------ re-lists
def test_a_relist_forgets_what_was_deleted_while_disconnected() -> None:
    """The canary slice (all ready) is deleted while the EndpointSlice stream is down; the
    re-list does not have it, so weight to web-canary then has nothing behind it."""
    c = Cluster()
    walk = host_canary(c) + canary_ready(c)
    walk += [
        c.gap("eps"),
        c.put("rs", rs(H2, 1, 1)),  # judged on no state: checks wait for the re-list
        c.listed("eps", slice_("web-stable", s1=True, s2=True)),
    ]
    assert folded(walk) == []
    walk.append(c.put("vs", vs([("web-stable", 90), ("web-canary", 10)])))
    violations = folded(walk)
    assert len(violations) == 1 and "weight 10 to web-canary with no ready endpoint" in violations[0]


def test_checks_pause_between_a_gap_and_its_relist() -> None:
    c = Cluster()
    walk = host_canary(c) + canary_ready(c, ready=False)
    walk += [
        c.gap("eps"),
        c.put("vs", vs([("web-stable", 90), ("web-canary", 10)])),  # unknown slices: not judged
        c.listed("eps", slice_("web-stable", s1=True, s2=True), slice_("web-canary", c1=True)),
    ]
    assert folded(walk) == []


# ------------------------------------------------------------------ Gateway API routes
GATEWAY = (*KINDS, *GATEWAY_KINDS)


def httproute(*rules: list[tuple[str, int | None]]) -> dict[str, Any]:
    """Rules of (Service, weight) backendRefs; a weight of None is left unset (Gateway API: 1)."""
    out = []
    for refs in rules:
        out.append({"backendRefs": [{"name": n, **({} if w is None else {"weight": w})} for n, w in refs]})
    return {"metadata": meta("web", namespace="shop"), "spec": {"rules": out}}


def gateway_canary(c: Cluster) -> list[Delivery]:
    setup = [d for d in host_canary(c) if d.kind != "vs"]
    return [
        *setup,
        c.listed("vs"),
        c.listed("grpcroute"),
        c.listed("httproute", httproute([("web-stable", 100), ("web-canary", 0)])),
    ]


@pytest.mark.parametrize(
    ("then", "caught"),
    [
        pytest.param(
            lambda c: [
                *canary_ready(c),
                c.put("httproute", httproute([("web-stable", 95), ("web-canary", 5)])),
            ],
            None,
            id="a clean step to 5%",
        ),
        pytest.param(
            lambda c: [
                *canary_ready(c, ready=False),
                c.put("httproute", httproute([("web-stable", 95), ("web-canary", 5)])),
            ],
            "httproute web rule 0: weight 5 to web-canary with no ready endpoint",
            id="weight to a canary with no ready endpoint",
        ),
        pytest.param(
            lambda c: [
                *canary_ready(c),
                c.put("httproute", httproute([("web-stable", 90), ("web-canary", 5)])),
            ],
            "httproute web rule 0 weights sum to 95",
            id="weights that do not sum to 100",
        ),
        pytest.param(
            lambda c: [
                *canary_ready(c, ready=False),
                c.put(
                    "httproute", httproute([("web-stable", 100), ("web-canary", 0)], [("web-canary", None)])
                ),
            ],
            "httproute web rule 1: weight 1 to web-canary with no ready endpoint",
            id="a header rule (unset weight: 1) to a canary with no ready endpoint",
        ),
    ],
)
def test_httproute_rules_are_judged_like_virtualservice_routes(then: Any, caught: str | None) -> None:
    c = Cluster()
    violations = folded(gateway_canary(c) + then(c), kinds=GATEWAY)
    if caught is None:
        assert violations == []
    else:
        assert len(violations) == 1 and caught in violations[0], violations

"""Zero-downtime invariants, checked on every state the watched objects went through.

A watcher follows VirtualServices, DestinationRules, Services, EndpointSlices, Pods,
ReplicaSets and Rollouts of one namespace (and, asked to, HTTPRoutes and GRPCRoutes) and
checks, on each state:

1. the weights of every HTTP, TLS and TCP route that has weights sum to 100 (or to the
   Rollout's maxTrafficWeight), and so do those of every Gateway API rule whose backendRefs
   all carry a weight;
2. no weight > 0 goes to a Service or subset with zero ready endpoints (read from the
   EndpointSlices, which is what the data plane routes to); a backendRef without a weight
   has weight 1, as the Gateway API defines it;
3. the stable ReplicaSet keeps every replica available until the canary is promoted
   (its available count never drops below the highest it reached, for the same size);
4. blue-green (`active_service`): once the first revision is ready, the active Service
   keeps at least spec.replicas ready endpoints.

The code is split in two. The pure core, `Folding` (a reorder buffer, a log and a
`Fold` of the state), takes `Delivery` records and a clock value; it does no I/O, so the
unit tests drive it with synthetic sequences (tests/unit/test_invariants.py). `Watcher`
is the I/O shell: one list-then-watch thread per kind (a reflector) puts deliveries into
one queue, and one thread feeds them to the `Folding`.

Ordering. Each watch stream delivers its kind in resourceVersion order, but streams race
one another. Every resourceVersion here is an etcd revision of the same etcd, so all
kinds share one total order (compared as integers). A delivery is folded once every
stream has reported reaching its revision (an event, a bookmark or a list at or above
it), or once it has waited `window` seconds: a quiet stream says nothing, and its lists
and bookmarks carry the revision of that kind's watch cache, which moves only with its
own writes, so in practice the window releases most deliveries. A delivery that arrives
below what was already folded (a list served at its kind's older cache revision, a slow
stream) is put in its place in the log and the whole log is folded again from the start,
so the verdict is always that of the revision order: the invariants are judged on states
that existed, whatever the window. `stop` waits (with a deadline) until every stream
has delivered what a fresh list shows, then folds everything.

Re-lists. A reflector lists (keeping the list's resourceVersion), then watches from it and
resumes from the last revision seen when a watch times out. On any error (410 Gone, a
dropped connection) it reports a gap and lists again; a list replaces what is known of
its kind, so objects deleted meanwhile are forgotten. Checks pause from a gap (and before
the first list of every kind) until the list is folded: the state in between is unknown.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, config, watch

HASH = "rollouts-pod-template-hash"
SERVICE_NAME = "kubernetes.io/service-name"

WATCH_SECONDS = 4
KINDS = ("vs", "dr", "rollout", "svc", "eps", "pod", "rs")
GATEWAY_KINDS = ("httproute", "grpcroute")
"""Watched on request (`Watcher(gateway=True)`): Gateway API routes."""

# Delivery types besides the watch's ADDED / MODIFIED / DELETED.
RELIST = "RELIST"  # `objects` is the whole kind as listed at `rv`
GAP = "GAP"  # the stream lost track after `rv`; a RELIST follows
BOOKMARK = "BOOKMARK"  # the stream has reached `rv`; nothing changed


@dataclass(frozen=True)
class Delivery:
    kind: str
    type: str
    rv: int
    obj: dict[str, Any] | None = None
    objects: tuple[dict[str, Any], ...] = ()

    @property
    def name(self) -> str:
        return str(((self.obj or {}).get("metadata") or {}).get("name", ""))


def _rv(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["resourceVersion"])


def _short(host: Any) -> str:
    return str(host or "").split(".")[0]


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --------------------------------------------------------------------------- the fold
@dataclass
class Fold:
    """The state of the watched kinds, one delivery at a time, and the invariants on it.

    `apply` must be called in revision order (`Folding` sees to it)."""

    active_service: str | None = None
    kinds: tuple[str, ...] = KINDS
    violations: list[str] = field(default_factory=list)
    events: int = 0
    state: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    synced: set[str] = field(default_factory=set)
    _stable_peak: dict[str, int] = field(default_factory=dict)
    _armed: bool = False
    _active_armed: bool = False

    def __post_init__(self) -> None:
        for kind in self.kinds:
            self.state.setdefault(kind, {})

    def apply(self, d: Delivery) -> None:
        if d.type == BOOKMARK:
            return
        objects = self.state[d.kind]
        if d.type == RELIST:
            self.state[d.kind] = {o["metadata"]["name"]: o for o in d.objects}
            self.synced.add(d.kind)
        elif d.type == GAP:
            self.synced.discard(d.kind)
        elif d.type == "DELETED":
            objects.pop(d.name, None)
        else:
            assert d.obj is not None
            objects[d.name] = d.obj
        self.events += 1
        if self.synced.issuperset(self.kinds):
            self._check(f"rv {d.rv} {d.kind} {d.type} {d.name}".rstrip())

    # ------------------------------------------------------------- readiness
    def _ready_endpoints(self, service: str) -> list[dict[str, Any]]:
        """Ready endpoints of a Service, from its EndpointSlices (`ready` unset means ready).

        One endpoint may sit in two slices while the controller moves it; count it once."""
        ready: dict[Any, dict[str, Any]] = {}
        for eps in self.state["eps"].values():
            if (eps["metadata"].get("labels") or {}).get(SERVICE_NAME) != service:
                continue
            for ep in eps.get("endpoints") or []:
                if (ep.get("conditions") or {}).get("ready") is False:
                    continue
                ref = ep.get("targetRef") or {}
                key = (
                    (ref.get("kind"), ref.get("name"))
                    if ref.get("name")
                    else tuple(ep.get("addresses") or [])
                )
                ready[key] = ep
        return list(ready.values())

    def _ready_in_subset(self, service: str, labels: dict[str, str]) -> int:
        """Ready endpoints of the host Service whose pod carries the subset's labels.

        An EndpointSlice endpoint has no labels, only a targetRef to its Pod; Istio puts an
        endpoint in a subset by that Pod's labels, so the watcher follows Pods too and
        does the same. This is the data plane's own view, where the ReplicaSets'
        readyReplicas would be the controller's (and lag or lead the slices). An endpoint
        whose Pod is gone counts as in no subset: nothing would answer there."""
        pods = self.state["pod"]
        count = 0
        for ep in self._ready_endpoints(service):
            ref = ep.get("targetRef") or {}
            pod = pods.get(ref.get("name", "")) if ref.get("kind") == "Pod" else None
            if pod is not None and _matches(labels, pod["metadata"].get("labels") or {}):
                count += 1
        return count

    def _subset_labels(self, host: str, subset: str) -> dict[str, str] | None:
        for dr in self.state["dr"].values():
            spec = dr.get("spec") or {}
            if _short(spec.get("host")) != host:
                continue
            for s in spec.get("subsets") or []:
                if s.get("name") == subset:
                    return dict(s.get("labels") or {})
        return None

    # ------------------------------------------------------------- checks
    def _check(self, trigger: str) -> None:
        unserved = self._check_routes(trigger)
        stable_full = self._check_stable(trigger)
        if unserved and self._armed:
            for message in unserved:
                self._violate(f"{trigger}: {message}")
        # Armed once the first revision serves: its ReplicaSet is fully available and every
        # weighted destination has a ready endpoint (the slices trail the ReplicaSet).
        if stable_full and not unserved:
            self._armed = True
        if self.active_service:
            self._check_active(trigger)

    def _check_routes(self, trigger: str) -> list[str]:
        """Checks the weights (reported at once) and returns the weighted destinations
        with no ready endpoint (reported by the caller once armed)."""
        unserved = []
        top = self._max_weight()
        for vs in self.state["vs"].values():
            spec = vs.get("spec") or {}
            routes = [r for kind in ("http", "tls", "tcp") for r in spec.get(kind) or []]
            for route in routes:
                dests = route.get("route") or []
                weights = [d.get("weight") for d in dests]
                # Sums are judged against the Rollout's maxTrafficWeight, so only once it is seen.
                if len(dests) > 1 and any(w is not None for w in weights) and self.state["rollout"]:
                    total = sum(int(w or 0) for w in weights)
                    if total != top:
                        self._violate(f"{trigger}: route {route.get('name')} weights sum to {total}")
                for d in dests:
                    weight = d.get("weight")
                    if len(dests) > 1 and not weight:
                        continue
                    if not self.state["rollout"] and int(weight or 100) == 100:
                        continue  # the Rollout was deleted: its pods go with it, by design
                    dest = d.get("destination") or {}
                    host = _short(dest.get("host"))
                    if host not in self.state["svc"]:
                        continue  # not a Service of this namespace
                    if "subset" in dest:
                        labels = self._subset_labels(host, dest["subset"])
                        if labels is None:
                            continue
                        ready = self._ready_in_subset(host, labels)
                        what = f"{host}/{dest['subset']} ({labels})"
                    else:
                        ready = len(self._ready_endpoints(host))
                        what = host
                    if ready == 0:
                        unserved.append(f"weight {weight} to {what} with no ready endpoint")
        for kind in GATEWAY_KINDS:
            for route in self.state.get(kind, {}).values():
                unserved += self._check_gateway_route(trigger, kind, route)
        return unserved

    def _max_weight(self) -> int:
        """The total the routes' weights keep: the Rollouts' maxTrafficWeight, else 100."""
        tops = set()
        for r in self.state["rollout"].values():
            canary = ((r.get("spec") or {}).get("strategy") or {}).get("canary") or {}
            tops.add(int((canary.get("trafficRouting") or {}).get("maxTrafficWeight") or 100))
        return tops.pop() if len(tops) == 1 else 100

    def _check_gateway_route(self, trigger: str, kind: str, route: dict[str, Any]) -> list[str]:
        unserved = []
        name = route["metadata"]["name"]
        route_ns = route["metadata"].get("namespace")
        for i, rule in enumerate((route.get("spec") or {}).get("rules") or []):
            refs = rule.get("backendRefs") or []
            weights = [r.get("weight") for r in refs]
            where = f"{kind} {name} rule {rule.get('name') or i}"
            if len(refs) > 1 and all(w is not None for w in weights) and sum(weights) != self._max_weight():
                self._violate(f"{trigger}: {where} weights sum to {sum(weights)}")
            for ref in refs:
                weight = int(ref.get("weight", 1))
                if weight == 0:
                    continue
                if not self.state["rollout"] and (len(refs) == 1 or weight == 100):
                    continue  # the Rollout was deleted: its pods go with it, by design
                service = ref.get("name")
                if (ref.get("group") or "") != "" or (ref.get("kind") or "Service") != "Service":
                    continue
                if ref.get("namespace", route_ns) != route_ns or service not in self.state["svc"]:
                    continue  # not a Service of this namespace
                if not self._ready_endpoints(service):
                    unserved.append(f"{where}: weight {weight} to {service} with no ready endpoint")
        return unserved

    def _check_active(self, trigger: str) -> None:
        service = self.active_service or ""
        if service not in self.state["svc"] or not self.state["rollout"]:
            return
        replicas = min(
            int((ro.get("spec") or {}).get("replicas") or 1) for ro in self.state["rollout"].values()
        )
        ready = len(self._ready_endpoints(service))
        if ready >= replicas:
            self._active_armed = True
        elif self._active_armed:
            self._violate(
                f"{trigger}: active Service {service} has {ready} ready endpoints, fewer than {replicas}"
            )

    def _check_stable(self, trigger: str) -> bool:
        """Checks the stable ReplicaSets; True when one is fully available."""
        full = False
        for ro in self.state["rollout"].values():
            stable = (ro.get("status") or {}).get("stableRS")
            replicas = int((ro.get("spec") or {}).get("replicas") or 1)
            if not stable:
                continue
            for rs in self.state["rs"].values():
                if (rs["metadata"].get("labels") or {}).get(HASH) != stable:
                    continue
                available = int((rs.get("status") or {}).get("availableReplicas") or 0)
                key = rs["metadata"]["name"]
                peak = min(self._stable_peak.get(key, 0), replicas)  # a scale-down lowers the bar
                if available < peak:
                    self._violate(
                        f"{trigger}: stable ReplicaSet {key} dropped to {available} available "
                        f"(had {peak} of {replicas}) before promotion"
                    )
                self._stable_peak[key] = max(peak, min(available, replicas))
                full = full or available >= replicas
        return full

    @property
    def armed(self) -> bool:
        """The first revision served: from then on, traffic must always have ready endpoints."""
        return self._armed

    def _violate(self, message: str) -> None:
        if message not in self.violations:
            self.violations.append(message)


# --------------------------------------------------------------------------- ordering
@dataclass
class Folding:
    """Deliveries from several streams in, a `Fold` in revision order out.

    `now` is passed in (seconds, any monotonic origin) so that tests choose the clock."""

    active_service: str | None = None
    kinds: tuple[str, ...] = KINDS
    window: float = 0.5
    fold: Fold = field(init=False)
    late: list[str] = field(default_factory=list)
    """Deliveries that arrived after a later revision was folded (each caused a re-fold)."""
    _watermark: dict[str, int] = field(default_factory=dict)
    _pending: list[tuple[int, int, float, Delivery]] = field(default_factory=list)
    _log: list[tuple[int, int, Delivery]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.fold = self._new_fold()
        self._watermark = dict.fromkeys(self.kinds, 0)

    def _new_fold(self) -> Fold:
        return Fold(active_service=self.active_service, kinds=self.kinds)

    @property
    def violations(self) -> list[str]:
        return self.fold.violations

    @property
    def events(self) -> int:
        return self.fold.events

    @property
    def folded_rv(self) -> int:
        return self._log[-1][0] if self._log else 0

    def offer(self, d: Delivery, now: float) -> None:
        """Take one delivery and fold whatever is safe to fold by now."""
        if d.kind in self._watermark:
            self._watermark[d.kind] = max(self._watermark[d.kind], d.rv)
        heapq.heappush(self._pending, (d.rv, next(self._seq), now, d))
        self.tick(now)

    def tick(self, now: float) -> None:
        """Fold, in revision order, what every stream has passed or what waited `window`."""
        cut = self.cut
        while self._pending:
            rv, _seq, arrived, _d = self._pending[0]
            if rv > cut and now - arrived < self.window:
                break
            rv, seq, _arrived, d = heapq.heappop(self._pending)
            self._fold(rv, seq, d)

    @property
    def cut(self) -> int:
        """Every stream has delivered all it has up to this revision."""
        return min(self._watermark.values(), default=0)

    def drain(self) -> None:
        """Fold everything pending (the streams have stopped)."""
        while self._pending:
            rv, seq, _arrived, d = heapq.heappop(self._pending)
            self._fold(rv, seq, d)

    def _fold(self, rv: int, seq: int, d: Delivery) -> None:
        if d.type == BOOKMARK:
            return  # it moved its stream's watermark; there is nothing to fold
        entry = (rv, seq, d)
        if rv >= self.folded_rv:
            self._log.append(entry)
            self.fold.apply(d)
            return
        # Late: it belongs before what was already folded. Put it in its place and fold
        # the log again, so that no verdict rests on a state that never existed.
        bisect.insort(self._log, entry, key=lambda e: (e[0], e[1]))
        what = " ".join(filter(None, (d.kind, d.type, d.name)))
        self.late.append(f"{what} at rv {rv}, after rv {self.folded_rv}")
        self.fold = self._new_fold()
        for _rv, _seq, logged in self._log:
            self.fold.apply(logged)


def fold_all(deliveries: Iterable[Delivery], active_service: str | None = None, **kw: Any) -> Folding:
    """Offer `deliveries` in the order given, all at one instant, then drain: a test helper."""
    folding = Folding(active_service=active_service, **kw)
    for d in deliveries:
        folding.offer(d, now=0.0)
    folding.drain()
    return folding


# --------------------------------------------------------------------------- the watcher
@dataclass
class Watcher:
    kubeconfig: str
    namespace: str
    active_service: str | None = None
    """Blue-green: once the first revision is ready, this Service always has at least
    spec.replicas ready endpoints."""
    gateway: bool = False
    """Watch HTTPRoutes and GRPCRoutes too (the Gateway API's CRDs must be installed)."""
    window: float = 0.5
    folding: Folding = field(init=False)
    _queue: queue.Queue[Delivery] = field(default_factory=queue.Queue)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _sources: dict[str, Callable[..., Any]] = field(default_factory=dict)
    _delivered: dict[str, dict[str, int]] = field(default_factory=dict)
    _folder: threading.Thread | None = None
    _stopped: bool = False

    def __post_init__(self) -> None:
        self.folding = Folding(active_service=self.active_service, window=self.window, kinds=self.kinds)

    @property
    def kinds(self) -> tuple[str, ...]:
        return KINDS + GATEWAY_KINDS if self.gateway else KINDS

    @property
    def violations(self) -> list[str]:
        with self._changed:
            return list(self.folding.violations)

    @property
    def events(self) -> int:
        with self._changed:
            return self.folding.events

    def start(self) -> Watcher:
        api = config.new_client_from_config(config_file=self.kubeconfig)
        custom = client.CustomObjectsApi(api)
        core = client.CoreV1Api(api)
        apps = client.AppsV1Api(api)
        discovery = client.DiscoveryV1Api(api)
        ns = self.namespace
        sources: dict[str, Callable[..., Any]] = {
            "vs": lambda **kw: custom.list_namespaced_custom_object(
                "networking.istio.io", "v1", ns, "virtualservices", **kw
            ),
            "dr": lambda **kw: custom.list_namespaced_custom_object(
                "networking.istio.io", "v1", ns, "destinationrules", **kw
            ),
            "rollout": lambda **kw: custom.list_namespaced_custom_object(
                "tidegate.io", "v1alpha1", ns, "rollouts", **kw
            ),
            "svc": lambda **kw: core.list_namespaced_service(ns, **kw),
            "eps": lambda **kw: discovery.list_namespaced_endpoint_slice(ns, **kw),
            "pod": lambda **kw: core.list_namespaced_pod(ns, **kw),
            "rs": lambda **kw: apps.list_namespaced_replica_set(ns, **kw),
            "httproute": lambda **kw: custom.list_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", ns, "httproutes", **kw
            ),
            "grpcroute": lambda **kw: custom.list_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", ns, "grpcroutes", **kw
            ),
        }
        sources = {kind: fn for kind, fn in sources.items() if kind in self.kinds}
        assert set(sources) == set(self.kinds)
        self._sources = sources
        self._delivered = {kind: {} for kind in sources}
        self._folder = threading.Thread(target=self._fold_loop, daemon=True)
        self._folder.start()
        for kind, fn in sources.items():
            t = threading.Thread(target=self._reflect, args=(kind, fn), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _reflect(self, kind: str, list_fn: Callable[..., Any]) -> None:
        """List, then watch from the list's revision; on any error report a gap and list again."""
        rv: int | None = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    body = json.loads(list_fn(_preload_content=False).data)
                    rv = int(body["metadata"]["resourceVersion"])
                    self._deliver(Delivery(kind, RELIST, rv, objects=tuple(body.get("items") or ())))
                # A short server-side timeout: the API server sends a bookmark 2 s before it,
                # so even a quiet stream reports its progress every few seconds.
                for ev in watch.Watch().stream(
                    list_fn,
                    resource_version=str(rv),
                    allow_watch_bookmarks=True,
                    timeout_seconds=WATCH_SECONDS,
                    deserialize=False,
                ):
                    obj = ev["object"]
                    rv = _rv(obj)
                    self._deliver(Delivery(kind, ev["type"], rv, None if ev["type"] == BOOKMARK else obj))
                    if self._stop.is_set():
                        return
            except Exception:  # 410 Gone, a dropped connection, an ERROR event: list again
                if self._stop.is_set():
                    return
                if rv is not None:
                    self._deliver(Delivery(kind, GAP, rv))
                rv = None
                self._stop.wait(0.2)  # back off before listing again

    def _deliver(self, d: Delivery) -> None:
        with self._changed:  # what each stream has delivered, for `stop` to compare with a list
            seen = self._delivered.setdefault(d.kind, {})
            if d.type == RELIST:
                seen.clear()
                seen.update((o["metadata"]["name"], _rv(o)) for o in d.objects)
            elif d.type == "DELETED":
                seen.pop(d.name, None)
            elif d.obj is not None:
                seen[d.name] = d.rv
        self._queue.put(d)

    def _fold_loop(self) -> None:
        while not self._stop.is_set():
            try:
                d: Delivery | None = self._queue.get(timeout=self.window / 2)
            except queue.Empty:
                d = None
            with self._changed:
                if d is not None:
                    self.folding.offer(d, time.monotonic())
                else:
                    self.folding.tick(time.monotonic())
                self._changed.notify_all()

    def _caught_up(self, kind: str, list_fn: Callable[..., Any]) -> bool:
        """The stream of `kind` has delivered what a fresh list shows (names and revisions)."""
        body = json.loads(list_fn(_preload_content=False).data)
        listed = {o["metadata"]["name"]: _rv(o) for o in body.get("items") or ()}
        with self._changed:
            return self._delivered[kind] == listed

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching once every stream has delivered what a list made now shows, then
        fold all of it in revision order."""
        if self._stopped:
            return
        self._stopped = True
        waiting = dict(self._sources)
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            for kind, fn in list(waiting.items()):
                try:
                    if self._caught_up(kind, fn):
                        del waiting[kind]
                except Exception:
                    pass  # the list failed: try again until the deadline
            if waiting:
                self._stop.wait(0.1)  # poll interval of a wait with a deadline
        self._stop.set()
        if self._folder is not None:
            self._folder.join(timeout=10)
        with self._changed:
            while True:
                try:
                    d = self._queue.get_nowait()
                except queue.Empty:
                    break
                self.folding.offer(d, time.monotonic())
            self.folding.drain()
            if waiting:
                self.folding.fold.violations.append(
                    f"the watcher had not caught up with {sorted(waiting)} after {timeout:.0f}s"
                )

    def assert_clean(self) -> None:
        assert self.events > 0, "the invariant watcher saw no events at all"
        with self._changed:
            armed = self.folding.fold.armed
        assert armed, (
            "the invariant watcher never saw the first revision serve (its stable ReplicaSet fully "
            "available, every weighted destination with a ready endpoint), so it judged no traffic"
        )
        assert not self.violations, "zero-downtime invariants violated:\n" + "\n".join(self.violations)

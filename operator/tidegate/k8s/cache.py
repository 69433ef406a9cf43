"""Watch-fed caches of everything a Rollout reads, with a reverse index to the Rollouts.

A reconcile pass reads from here, never from the API server: in steady state a pass
makes no GET and no LIST (Argo Rollouts' controller reads its informers' listers the
same way). Each kind is one list+watch (client-go's reflector: list, watch from the
list's resourceVersion, list again on 410 Gone), run in a thread of its own because the
official client is synchronous; every change is handed to the event loop, which stores it
and wakes the Rollouts that use the object:

- ReplicaSets and AnalysisRuns carry the `rollout.tidegate.io/name` label, so they are
  watched with a server-side label selector: foreign ReplicaSets are never streamed.
- Services, VirtualServices, DestinationRules, HTTPRoutes and GRPCRoutes are found through
  the reverse index built from each Rollout's spec (its Services, its router objects).

The operator's own writes are stored from the API server's response at once
(read-your-writes); the watch event that echoes a write carries the same
resourceVersion and then changes nothing and wakes nothing, so a pass is not repeated
because of its own writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from kubernetes.watch.watch import iter_resp_lines

from tidegate.core.model import ROLLOUT_LABEL
from tidegate.k8s.client import ApiException, Clients

log = logging.getLogger("tidegate.cache")

Key = tuple[str, str]
"""(namespace, name)"""
Obj = dict[str, Any]
Waker = Callable[[str, str], None]

ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")
GATEWAY_GROUP = "gateway.networking.k8s.io"
WATCH_SECONDS = 290
RETRY_SECONDS = 5.0


def rv_newer(new: Obj, old: Obj | None) -> bool:
    """True when `new` is a later state than `old` (etcd revisions: integers in practice)."""
    if old is None:
        return True
    a = (new.get("metadata") or {}).get("resourceVersion")
    b = (old.get("metadata") or {}).get("resourceVersion")
    if a == b:
        return False
    try:
        return int(str(a)) > int(str(b))
    except ValueError:
        return True


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


UNREAD_ANNOTATIONS = (LAST_APPLIED, "tidegate.io/last-handled-configuration")
"""kubectl's last-applied copy and kopf's diff base: copies of the spec that no pass reads."""


def trimmed(obj: Obj) -> Obj:
    """The object without what no pass reads: managedFields and copies of the spec in annotations.

    Those are often more than half of an object's size, and the cache holds every Service
    and VirtualService of the watched namespaces.
    """
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return obj
    annotations = meta.get("annotations") or {}
    if "managedFields" not in meta and not any(a in annotations for a in UNREAD_ANNOTATIONS):
        return obj
    meta = {k: v for k, v in meta.items() if k != "managedFields"}
    if any(a in annotations for a in UNREAD_ANNOTATIONS):
        meta["annotations"] = {k: v for k, v in annotations.items() if k not in UNREAD_ANNOTATIONS}
    return {**obj, "metadata": meta}


def _meta(obj: Obj, *extra: str) -> Obj:
    meta = obj.get("metadata") or {}
    return {k: meta[k] for k in ("name", "namespace", "resourceVersion", *extra) if k in meta}


def service_view(obj: Obj) -> Obj:
    """What a pass reads of a Service: its name and selector."""
    return {"metadata": _meta(obj), "spec": {"selector": (obj.get("spec") or {}).get("selector") or {}}}


def endpointslice_view(obj: Obj) -> Obj:
    """What a pass reads of an EndpointSlice: its Service, and each endpoint's pod and readiness."""
    endpoints = [
        {
            "targetRef": {k: v for k, v in (e.get("targetRef") or {}).items() if k in ("uid", "name")},
            "conditions": {k: v for k, v in (e.get("conditions") or {}).items() if k == "ready"},
            **({} if e.get("targetRef") else {"addresses": e.get("addresses")}),
        }
        for e in obj.get("endpoints") or []
    ]
    return {"metadata": _meta(obj, "labels"), "endpoints": endpoints}


def _key(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


@dataclass(frozen=True)
class Kind:
    """One watched resource kind and how to list it."""

    name: str
    group: str
    version: str
    plural: str
    label_selector: str | None = None
    view: Callable[[Obj], Obj] = trimmed
    """What of each object is kept: the cache holds every object of its kind in the watched namespaces."""

    def path(self, namespace: str | None) -> str:
        base = "/api/v1" if self.group == "" else f"/apis/{self.group}/{self.version}"
        if namespace:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"


REPLICASETS = Kind("replicasets", "apps", "v1", "replicasets", ROLLOUT_LABEL)
ANALYSISRUNS = Kind("analysisruns", "tidegate.io", "v1alpha1", "analysisruns", ROLLOUT_LABEL)
SERVICES = Kind("services", "", "v1", "services", view=service_view)
ENDPOINTSLICES = Kind("endpointslices", "discovery.k8s.io", "v1", "endpointslices", view=endpointslice_view)
HTTPROUTES = Kind("httproutes", GATEWAY_GROUP, "v1", "httproutes")
GRPCROUTES = Kind("grpcroutes", GATEWAY_GROUP, "v1", "grpcroutes")
"""Both v1 since Gateway API v1.1 (GRPCRoute) and v1.0 (HTTPRoute)."""
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def deployment_view(obj: Obj) -> Obj:
    """What a pass reads of a Deployment (a workloadRef): its pod template, selector and replicas."""
    spec = obj.get("spec") or {}
    kept = {
        "replicas": spec.get("replicas"),
        "selector": spec.get("selector"),
        "template": spec.get("template"),
    }
    return {"metadata": _meta(obj), "spec": kept}


DEPLOYMENTS = Kind("deployments", "apps", "v1", "deployments", view=deployment_view)


@dataclass
class Store:
    """Objects of one kind by (namespace, name); `served` is False while the kind is not installed."""

    kind: Kind
    objects: dict[Key, Obj] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    served: bool = True

    def get(self, namespace: str, name: str) -> Obj | None:
        return self.objects.get((namespace, name))


def get_raw(clients: Clients, path: str, params: list[tuple[str, str]], timeout: Any) -> Any:
    """A GET whose body is not read yet (a list to parse, or a watch to stream)."""
    api: Any = clients.api
    method, url, headers, _, _ = api.param_serialize(
        "GET",
        path,
        query_params=params,
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, header_params=headers, _request_timeout=timeout)
    if not 200 <= response.status < 300:
        raise ApiException(status=response.status, reason=response.reason, body=response.read())
    return response


class _Reflector(threading.Thread):
    """List, then watch from the list's resourceVersion; list again when the watch expires."""

    def __init__(self, cache: Cache, store: Store, namespace: str | None) -> None:
        super().__init__(name=f"watch-{store.kind.name}-{namespace or 'all'}", daemon=True)
        self.cache, self.store, self.namespace = cache, store, namespace
        self.stopping = threading.Event()
        self._response: Any = None

    def _request(self, **query: Any) -> Any:
        kind = self.store.kind
        params = [(k, v) for k, v in query.items() if v is not None]
        if kind.label_selector:
            params.append(("labelSelector", kind.label_selector))
        timeout = (10, WATCH_SECONDS + 30) if query.get("watch") else 60
        return get_raw(self.cache.clients, kind.path(self.namespace), params, timeout)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._list_and_watch()
                continue  # the watch expired (410): list again at once
            except ApiException as exc:
                if exc.status == 404:
                    self.cache.submit(self.store, "UNSERVED", {})  # not installed: look again later
                elif exc.status == 410:
                    continue
                else:
                    log.warning("watch of %s: API error %s %s", self.store.kind.name, exc.status, exc.reason)
            except Exception as exc:  # a dropped connection: list and watch again
                if self.stopping.is_set():
                    return
                log.warning("watch of %s ended: %s", self.store.kind.name, exc)
            self.stopping.wait(RETRY_SECONDS)

    def _list_and_watch(self) -> None:
        response = self._request()
        body = json.loads(response.read())
        items = body.get("items") or []
        rv = (body.get("metadata") or {}).get("resourceVersion")
        self.cache.submit(self.store, "LIST", {"items": items, "namespace": self.namespace})
        while not self.stopping.is_set():
            stream = self._request(
                watch="true",
                resourceVersion=rv,
                allowWatchBookmarks="true",
                timeoutSeconds=str(WATCH_SECONDS),
            ).response
            self._response = stream
            try:
                for line in cast(Iterable[str], iter_resp_lines(stream)):  # type: ignore[no-untyped-call]
                    if not line:
                        continue
                    event = json.loads(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            return  # expired: list again at once
                        raise RuntimeError(obj.get("message") or "watch error")
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    if kind != "BOOKMARK":
                        self.cache.submit(self.store, kind, obj)
            finally:
                stream.release_conn()

    def stop(self) -> None:
        self.stopping.set()
        response = self._response
        if response is not None:
            # Unblocks the read in the watch thread (urllib3 >= 2.3); otherwise the thread
            # ends at its watch timeout.
            with contextlib.suppress(Exception):
                response.shutdown()


class Cache:
    """The operator's view of the cluster, fed by watches, read by every pass."""

    def __init__(
        self,
        clients: Clients,
        namespaces: tuple[str, ...] = (),
        wake: Waker | None = None,
    ) -> None:
        self.clients = clients
        self.namespaces = namespaces
        self.wake: Waker = wake or (lambda ns, name: None)
        self.replicasets = Store(REPLICASETS)
        self.analysisruns = Store(ANALYSISRUNS)
        self.services = Store(SERVICES)
        self.endpointslices = Store(ENDPOINTSLICES)
        self.deployments = Store(DEPLOYMENTS)
        self.httproutes = Store(HTTPROUTES)
        self.grpcroutes = Store(GRPCROUTES)
        self.virtualservices: Store | None = None
        self.destinationrules: Store | None = None
        self.rollouts: dict[Key, Obj] = {}
        # Reverse index: (kind, namespace, name) of a referenced object -> Rollouts using it.
        self._users: dict[tuple[str, str, str], set[Key]] = defaultdict(set)
        self._refs: dict[Key, set[tuple[str, str, str]]] = {}
        # ReplicaSets and AnalysisRuns of each Rollout, by the rollout label.
        self._owned: dict[str, dict[Key, set[Key]]] = {
            "replicasets": defaultdict(set),
            "analysisruns": defaultdict(set),
        }
        # EndpointSlices of each Service, by the kubernetes.io/service-name label.
        self._slices: dict[Key, set[Key]] = defaultdict(set)
        # DestinationRules of each host Service (same namespace, short name): a change in
        # the host's EndpointSlices wakes the Rollouts that use the DestinationRule.
        self._hosts: dict[Key, set[Key]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[_Reflector] = []

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        version = await asyncio.to_thread(self._istio_version)
        self.virtualservices = Store(Kind("virtualservices", ISTIO_GROUP, version, "virtualservices"))
        self.destinationrules = Store(Kind("destinationrules", ISTIO_GROUP, version, "destinationrules"))
        for store in self.stores():
            for ns in self.namespaces or (None,):
                thread = _Reflector(self, store, ns)
                self._threads.append(thread)
                thread.start()

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(asyncio.gather(*(s.synced.wait() for s in self.stores())), timeout)

    def stop(self) -> None:
        for thread in self._threads:
            thread.stop()

    def stores(self) -> list[Store]:
        extra = [s for s in (self.virtualservices, self.destinationrules) if s is not None]
        return [
            self.replicasets,
            self.analysisruns,
            self.services,
            self.endpointslices,
            self.deployments,
            self.httproutes,
            self.grpcroutes,
            *extra,
        ]

    def _istio_version(self) -> str:
        """The first Istio version the API server serves (v1 since Istio 1.22)."""
        for version in ISTIO_VERSIONS:
            try:
                get_raw(self.clients, f"/apis/{ISTIO_GROUP}/{version}", [], 30).read()
                return version
            except ApiException:
                continue
        return ISTIO_VERSIONS[0]

    # ------------------------------------------------- events (event loop only)
    def submit(self, store: Store, kind: str, obj: Obj) -> None:
        """From a watch thread: hand an event to the event loop."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: the operator is stopping
            self._loop.call_soon_threadsafe(self._apply, store, kind, obj)

    def _apply(self, store: Store, kind: str, obj: Obj) -> None:
        if kind == "UNSERVED":
            store.served = False
            store.synced.set()
            return
        if kind == "LIST":
            store.served = True
            namespace = obj["namespace"]
            fresh = {_key(o): o for o in obj["items"]}
            gone = [k for k in store.objects if (namespace is None or k[0] == namespace) and k not in fresh]
            for k in gone:
                self._store_delete(store, store.objects[k])
            for o in fresh.values():
                self._store_put(store, o)
            store.synced.set()
            return
        if kind == "DELETED":
            self._store_delete(store, obj)
        else:
            self._store_put(store, obj)

    def put(self, store: Store, obj: Obj) -> None:
        """Store the API server's answer to our own write (read-your-writes)."""
        self._store_put(store, obj, wake=False)

    def _store_put(self, store: Store, obj: Obj, wake: bool = True) -> None:
        key = _key(obj)
        old = store.objects.get(key)
        if not rv_newer(obj, old):
            return  # our own write coming back, or an older state than we hold
        obj = store.kind.view(obj)
        store.objects[key] = obj
        self._index_owned(store, key, obj)
        if wake:
            self._wake_users(store, key, obj)

    def _store_delete(self, store: Store, obj: Obj) -> None:
        key = _key(obj)
        old = store.objects.pop(key, None)
        if store.kind is ENDPOINTSLICES:
            for members in self._slices.values():
                members.discard(key)
        if store is self.destinationrules:
            for members in self._hosts.values():
                members.discard(key)
        if store.kind.plural in self._owned:
            for members in self._owned[store.kind.plural].values():
                members.discard(key)
        self._wake_users(store, key, old or obj)

    def _index_owned(self, store: Store, key: Key, obj: Obj) -> None:
        if store.kind is ENDPOINTSLICES:
            service = ((obj.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
            if service:
                self._slices[(key[0], service)].add(key)
            return
        if store is self.destinationrules:
            for members in self._hosts.values():
                members.discard(key)  # the host may have changed
            host = str((obj.get("spec") or {}).get("host") or "").split(".", 1)[0]
            if host:
                self._hosts[(key[0], host)].add(key)
            return
        owned = self._owned.get(store.kind.plural)
        if owned is None:
            return
        rollout = ((obj.get("metadata") or {}).get("labels") or {}).get(ROLLOUT_LABEL)
        if rollout:
            owned[(key[0], rollout)].add(key)

    def _wake_users(self, store: Store, key: Key, obj: Obj) -> None:
        if store.kind is ENDPOINTSLICES:
            service = ((obj.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
            for ns, name in self._users.get(("services", key[0], service or ""), ()):
                self.wake(ns, name)
            for dr in self._hosts.get((key[0], service or ""), ()):
                for ns, name in self._users.get(("destinationrules", *dr), ()):
                    self.wake(ns, name)
            return
        if store.kind.plural in self._owned:
            rollout = ((obj.get("metadata") or {}).get("labels") or {}).get(ROLLOUT_LABEL)
            if rollout:
                self.wake(key[0], rollout)
            return
        for ns, name in self._users.get((store.kind.plural, *key), ()):
            self.wake(ns, name)

    # ------------------------------------------------------------- Rollouts
    def put_rollout(self, obj: Obj, refs: Iterable[tuple[str, str, str]]) -> bool:
        """Store a Rollout and what it references; False when it is not newer than ours."""
        key = _key(obj)
        if not rv_newer(obj, self.rollouts.get(key)):
            return False
        self.rollouts[key] = trimmed(obj)
        self.set_refs(key, refs)
        return True

    def forget_rollout(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self.rollouts.pop(key, None)
        self.set_refs(key, ())

    def set_refs(self, key: Key, refs: Iterable[tuple[str, str, str]]) -> None:
        new = set(refs)
        for ref in self._refs.get(key, set()) - new:
            self._users[ref].discard(key)
            if not self._users[ref]:
                del self._users[ref]
        for ref in new:
            self._users[ref].add(key)
        self._refs[key] = new

    # ---------------------------------------------------------------- reads
    def ready_endpoints(self, namespace: str, service: str) -> int:
        """Ready endpoints of a Service over its EndpointSlices (an endpoint in two slices counts once).

        A condition left unset counts as ready, as the EndpointSlice API defines it.
        """
        return len(self._ready(namespace, service))

    def ready_endpoint_pods(self, namespace: str, service: str) -> frozenset[str]:
        """Names of the pods behind a Service's ready endpoints."""
        return frozenset(name for name in self._ready(namespace, service).values() if name)

    def _ready(self, namespace: str, service: str) -> dict[str, str]:
        seen: dict[str, str] = {}
        for key in self._slices.get((namespace, service), set()):
            slice_ = self.endpointslices.objects.get(key)
            for endpoint in (slice_ or {}).get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready") is False:
                    continue
                ref = endpoint.get("targetRef") or {}
                seen[str(ref.get("uid") or ref.get("name") or endpoint.get("addresses"))] = str(
                    ref.get("name") or ""
                )
        return seen

    def owned(self, store: Store, namespace: str, rollout: str) -> list[Obj]:
        keys = self._owned[store.kind.plural].get((namespace, rollout), set())
        return [store.objects[k] for k in sorted(keys) if k in store.objects]


def rollout_refs(body: Obj) -> set[tuple[str, str, str]]:
    """The objects a Rollout reads, as (plural, namespace, name), from its raw spec.

    Read from the raw body, not the model, so that a Rollout whose spec is invalid is
    still woken when the objects it names appear or change.
    """
    meta = body.get("metadata") or {}
    namespace = meta.get("namespace") or ""
    strategy = (body.get("spec") or {}).get("strategy") or {}
    canary = strategy.get("canary") or {}
    blue_green = strategy.get("blueGreen") or {}
    refs: set[tuple[str, str, str]] = set()
    for svc in (
        canary.get("stableService"),
        canary.get("canaryService"),
        blue_green.get("activeService"),
        blue_green.get("previewService"),
    ):
        if isinstance(svc, str) and svc:
            refs.add(("services", namespace, svc))
    workload = ((body.get("spec") or {}).get("workloadRef") or {}).get("name")
    if isinstance(workload, str) and workload:
        refs.add(("deployments", namespace, workload))
    istio = (canary.get("trafficRouting") or {}).get("istio") or {}
    # virtualService, and every item of virtualServices: a hand edit of any wakes the Rollout.
    listed = istio.get("virtualServices")
    for item in [istio.get("virtualService")] + (listed if isinstance(listed, list) else []):
        vs = item.get("name") if isinstance(item, dict) else None
        if isinstance(vs, str) and vs:
            vs_ns, _, vs_name = vs.rpartition("/")
            refs.add(("virtualservices", vs_ns or namespace, vs_name))
    dr = (istio.get("destinationRule") or {}).get("name")
    if isinstance(dr, str) and dr:
        refs.add(("destinationrules", namespace, dr))
    refs |= gateway_refs(canary.get("trafficRouting") or {}, namespace)
    return refs


def gateway_refs(routing: Obj, namespace: str) -> set[tuple[str, str, str]]:
    """HTTPRoutes and GRPCRoutes of a raw trafficRouting: native `gatewayAPI` or Argo's plugin."""
    refs: set[tuple[str, str, str]] = set()
    plugins = routing.get("plugins")
    plugins = plugins if isinstance(plugins, dict) else {}
    for config in (routing.get("gatewayAPI"), plugins.get("argoproj-labs/gatewayAPI")):
        if not isinstance(config, dict):
            continue
        ns = config.get("namespace") if isinstance(config.get("namespace"), str) else None
        for plural, single, many in (
            ("httproutes", "httpRoute", "httpRoutes"),
            ("grpcroutes", "grpcRoute", "grpcRoutes"),
        ):
            names = [config.get(single)]
            names += [r.get("name") for r in config.get(many) or [] if isinstance(r, dict)]
            refs.update((plural, ns or namespace, n) for n in names if isinstance(n, str) and n)
    return refs

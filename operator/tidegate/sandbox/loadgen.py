"""The load generator: a steady request rate per app, split as the mesh would split it.

No Istio data plane runs in the sandbox, so this plays the mesh's part for the demo
apps that podprocs.py runs: it reads the routing objects from the API and sends each
request straight to the chosen pod's process on 127.0.0.1.

Per refresh (every second) it builds *streams*, each sending `rate` requests per second:

- a VirtualService stream, for each VirtualService (in the namespace of some demo pods)
  whose primary HTTP route reaches demo pods. The primary route is the first HTTP route
  that is not a header route (a route with a `match` on headers, like Tidegate's managed
  routes); header routes are ignored. Each destination takes its `weight` (a lone
  destination without one takes 100) and spreads it evenly over its pods:
  `host` names a Service (`name`, `name.namespace`, `name.namespace.svc.cluster.local`)
  whose selector picks the pods, and a `subset` narrows them further by the labels of
  that subset in the DestinationRule for the same host. The first VirtualService by name
  claims an app (pods with the same `app` label in a namespace); later ones reaching the
  same app are skipped, so an app never gets twice the rate.
- an HTTPRoute stream, for each HTTPRoute that no VirtualService beat to the app, likewise:
  its primary rule is the first rule with backendRefs and no header match (Tidegate's header
  rules are skipped so), and each backendRef to a Service takes its `weight` (1 when unset,
  as the Gateway API defines it) spread evenly over that Service's pods.
- a Service stream, for each Service annotated `demo.tidegate.io/load: "true"` that reaches
  demo pods of an app no VirtualService claims: its pods alike. For blue-green, annotate
  the active Service, and the preview gets no load (as with real users).
- an even stream for each app that nothing above claims: all its pods alike, as a plain
  Service selecting the `app` label would spread it (replica counts set the shares).

Weight sent to a destination that has no pods is *unroutable*: the request is not sent
(Istio would answer 503 without reaching any pod) and only counted here. Pods are picked
by smooth weighted round robin, so that the shares hold over short windows, not only on
average. Counts per stream go to a status file (`loadgen.json` in the sandbox directory
when run by the supervisor).

Standalone (when the supervisor runs with `--rate 0`):

    python -m tidegate.sandbox.loadgen --kubeconfig K --sandbox-dir D --rate 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

HOST = "127.0.0.1"
MAX_RATE = 200.0
"""Requests per second per stream, at most: the sandbox shares two cores with everything else."""
MAX_IN_FLIGHT = 256
ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")
GATEWAY_GROUP, GATEWAY_VERSION = "gateway.networking.k8s.io", "v1"
LOAD_ANNOTATION = "demo.tidegate.io/load"
"""On a Service: an app without a VirtualService gets its load through this Service only."""

log = logging.getLogger("tidegate.sandbox.loadgen")


# --------------------------------------------------------------------- planning (pure)
@dataclass(frozen=True)
class Endpoint:
    """One demo pod's process, as podprocs.json records it."""

    namespace: str
    pod: str
    port: int
    app: str = ""
    labels: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pod}"


@dataclass(frozen=True)
class Stream:
    """Requests at one rate, split over endpoints by share; `unroutable` is the rest."""

    id: str
    via: str
    shares: tuple[tuple[Endpoint, float], ...]
    unroutable: float = 0.0


def endpoints_from_registry(pods: Mapping[str, Mapping[str, Any]]) -> list[Endpoint]:
    """podprocs.json's `pods` mapping -> endpoints (entries without a port are skipped)."""
    found = []
    for key, entry in sorted(pods.items()):
        if not entry.get("port"):
            continue
        found.append(
            Endpoint(
                namespace=str(entry.get("namespace") or key.split("/", 1)[0]),
                pod=str(entry.get("pod") or key.split("/", 1)[-1]),
                port=int(entry["port"]),
                app=str(entry.get("app") or ""),
                labels=dict(entry.get("labels") or {}),
            )
        )
    return found


def _meta(obj: Mapping[str, Any]) -> tuple[str, str]:
    m = obj.get("metadata") or {}
    return str(m.get("namespace") or "default"), str(m.get("name") or "")


def _host_service(host: str, namespace: str) -> tuple[str, str]:
    """A mesh host -> (Service namespace, Service name)."""
    parts = host.split(".")
    if len(parts) >= 2 and parts[1] != "svc":
        return parts[1], parts[0]
    return namespace, parts[0]


def _is_header_route(route: Mapping[str, Any]) -> bool:
    return any(m.get("headers") for m in route.get("match") or [])


def _primary_route(vs: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for route in (vs.get("spec") or {}).get("http") or []:
        if route.get("route") and not _is_header_route(route):
            return dict(route)
    return None


def _matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


class _Index:
    def __init__(
        self,
        endpoints: list[Endpoint],
        services: Iterable[Mapping[str, Any]],
        destination_rules: Iterable[Mapping[str, Any]],
    ) -> None:
        self.endpoints = endpoints
        self.selectors: dict[tuple[str, str], dict[str, str]] = {}
        for svc in services:
            selector = (svc.get("spec") or {}).get("selector") or {}
            if selector:  # a Service without a selector reaches no pods of ours
                self.selectors[_meta(svc)] = dict(selector)
        self.subsets: dict[tuple[str, str, str], dict[str, str]] = {}
        for dr in sorted(destination_rules, key=_meta):
            dr_ns = _meta(dr)[0]
            dr_spec = dr.get("spec") or {}
            host_ns, host = _host_service(str(dr_spec.get("host") or ""), dr_ns)
            for subset in dr_spec.get("subsets") or []:
                self.subsets.setdefault(
                    (host_ns, host, str(subset.get("name"))), dict(subset.get("labels") or {})
                )

    def pods_of(self, destination: Mapping[str, Any], namespace: str) -> list[Endpoint]:
        svc_ns, svc = _host_service(str(destination.get("host") or ""), namespace)
        selector = self.selectors.get((svc_ns, svc))
        if selector is None:
            return []
        subset = destination.get("subset")
        if subset:
            subset_labels = self.subsets.get((svc_ns, svc, str(subset)))
            if subset_labels is None:
                return []
            selector = {**selector, **subset_labels}
        return [e for e in self.endpoints if e.namespace == svc_ns and _matches(selector, e.labels)]


def _weighted_stream(
    stream_id: str, via: str, weighted: Iterable[tuple[float, list[Endpoint]]]
) -> Stream | None:
    """Each (weight, pods) spread evenly over its pods; weight to no pod is unroutable."""
    shares: dict[Endpoint, float] = {}
    reached: list[Endpoint] = []
    unroutable = total = 0.0
    for w, pods in weighted:
        reached += pods
        total += w
        if not pods:
            unroutable += w
            continue
        for pod in pods:
            shares[pod] = shares.get(pod, 0.0) + w / len(pods)
    if not reached:
        return None
    if total <= 0:
        return Stream(stream_id, via, tuple((p, 0.0) for p in reached), 1.0)
    return Stream(
        stream_id,
        via,
        tuple((p, s / total) for p, s in sorted(shares.items(), key=lambda i: i[0].key)),
        unroutable / total,
    )


def _vs_stream(vs: Mapping[str, Any], index: _Index) -> Stream | None:
    namespace, name = _meta(vs)
    route = _primary_route(vs)
    if route is None:
        return None
    destinations = list(route.get("route") or [])
    weighted = []
    for dest in destinations:
        weight = dest.get("weight")
        w = float(weight) if weight is not None else (100.0 if len(destinations) == 1 else 0.0)
        weighted.append((w, index.pods_of(dest.get("destination") or {}, namespace)))
    route_name = route.get("name")
    via = f"VirtualService {namespace}/{name}" + (f" route {route_name}" if route_name else "")
    return _weighted_stream(f"{namespace}/virtualservice/{name}", via, weighted)


def _primary_rule(route: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for rule in (route.get("spec") or {}).get("rules") or []:
        if rule.get("backendRefs") and not any(m.get("headers") for m in rule.get("matches") or []):
            return dict(rule)
    return None


def _http_route_stream(route: Mapping[str, Any], index: _Index) -> Stream | None:
    """An HTTPRoute's primary rule as a stream: each Service backendRef's weight over its pods."""
    namespace, name = _meta(route)
    rule = _primary_rule(route)
    if rule is None:
        return None
    weighted = [
        (
            float(ref.get("weight", 1)),
            index.pods_of({"host": f"{ref.get('name')}.{ref.get('namespace') or namespace}"}, namespace),
        )
        for ref in rule.get("backendRefs") or []
        if (ref.get("group") or "") == "" and (ref.get("kind") or "Service") == "Service"
    ]
    rule_name = rule.get("name")
    via = f"HTTPRoute {namespace}/{name}" + (f" rule {rule_name}" if rule_name else "")
    return _weighted_stream(f"{namespace}/httproute/{name}", via, weighted)


def plan_streams(
    endpoints: Iterable[Endpoint],
    services: Iterable[Mapping[str, Any]] = (),
    virtual_services: Iterable[Mapping[str, Any]] = (),
    destination_rules: Iterable[Mapping[str, Any]] = (),
    http_routes: Iterable[Mapping[str, Any]] = (),
) -> list[Stream]:
    """Which pods each stream's requests go to, and in what shares.

    >>> web = [Endpoint("shop", "web-a", 4001, "web", {"app": "web", "v": "1"}),
    ...        Endpoint("shop", "web-b", 4002, "web", {"app": "web", "v": "2"})]
    >>> [(e.pod, s) for e, s in plan_streams(web)[0].shares]
    [('web-a', 0.5), ('web-b', 0.5)]
    """
    eps = sorted(endpoints, key=lambda e: e.key)
    services = list(services)
    index = _Index(eps, services, destination_rules)
    streams: list[Stream] = []
    claimed: set[tuple[str, str]] = set()
    candidates = [_vs_stream(vs, index) for vs in sorted(virtual_services, key=_meta)]
    candidates += [_http_route_stream(r, index) for r in sorted(http_routes, key=_meta)]
    for stream in candidates:
        if stream is None:
            continue
        apps = {(e.namespace, e.app) for e, _share in stream.shares}
        if apps & claimed:
            continue
        claimed |= apps
        streams.append(stream)
    for svc in sorted(services, key=_meta):
        if ((svc.get("metadata") or {}).get("annotations") or {}).get(LOAD_ANNOTATION) != "true":
            continue
        namespace, name = _meta(svc)
        pods = index.pods_of({"host": name}, namespace)
        apps = {(e.namespace, e.app) for e in pods}
        if not pods or apps & claimed:
            continue
        claimed |= apps
        streams.append(
            Stream(
                f"{namespace}/service/{name}",
                f"Service {namespace}/{name} ({LOAD_ANNOTATION})",
                tuple((p, 1.0 / len(pods)) for p in pods),
            )
        )
    by_app: dict[tuple[str, str], list[Endpoint]] = {}
    for e in eps:
        if (e.namespace, e.app) not in claimed:
            by_app.setdefault((e.namespace, e.app), []).append(e)
    for (namespace, app), pods in sorted(by_app.items()):
        streams.append(
            Stream(
                f"{namespace}/app/{app}",
                f"all pods of app {app!r} in {namespace} (no VirtualService or HTTPRoute)",
                tuple((p, 1.0 / len(pods)) for p in pods),
            )
        )
    return streams


class _RoundRobin:
    """Smooth weighted round robin (nginx's): exact shares over every short window."""

    def __init__(self, stream: Stream) -> None:
        self.choices: list[tuple[Endpoint | None, float]] = [(e, s) for e, s in stream.shares if s > 0]
        if stream.unroutable > 0:
            self.choices.append((None, stream.unroutable))
        self.total = sum(s for _e, s in self.choices)
        self.current = [0.0] * len(self.choices)

    def pick(self) -> Endpoint | None:
        if not self.choices or self.total <= 0:
            return None
        best = 0
        for i, (_e, share) in enumerate(self.choices):
            self.current[i] += share
            if self.current[i] > self.current[best]:
                best = i
        self.current[best] -= self.total
        return self.choices[best][0]


# ------------------------------------------------------------------- reading the API
Routing = tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]
"""(Services, VirtualServices, DestinationRules, HTTPRoutes): plan_streams' arguments."""


class RoutingReader(Protocol):
    def read(self, namespaces: Iterable[str]) -> Routing:
        """(Services, VirtualServices, DestinationRules, HTTPRoutes) of these namespaces."""
        ...


class KubeRoutingReader:
    """Lists Services, VirtualServices, DestinationRules and HTTPRoutes with the official client."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self._version: dict[str, str | None] = {}

    def _istio(self, namespace: str, plural: str) -> list[dict[str, Any]]:
        from kubernetes.client.exceptions import ApiException

        versions = [self._version[plural]] if plural in self._version else list(ISTIO_VERSIONS)
        for version in versions:
            if version is None:
                return []
            try:
                body: Any = self.custom.list_namespaced_custom_object(
                    ISTIO_GROUP, version, namespace, plural, _request_timeout=10
                )
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            self._version[plural] = version
            items: list[dict[str, Any]] = body.get("items") or []
            return items
        self._version[plural] = None  # Istio's CRDs are not installed: no routing objects
        return []

    def _http_routes(self, namespace: str) -> list[dict[str, Any]]:
        from kubernetes.client.exceptions import ApiException

        if self._version.get("httproutes", GATEWAY_VERSION) is None:
            return []
        try:
            body: Any = self.custom.list_namespaced_custom_object(
                GATEWAY_GROUP, GATEWAY_VERSION, namespace, "httproutes", _request_timeout=10
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            self._version["httproutes"] = None  # the Gateway API's CRDs are not installed
            return []
        items: list[dict[str, Any]] = body.get("items") or []
        return items

    def read(self, namespaces: Iterable[str]) -> Routing:
        services: list[dict[str, Any]] = []
        virtual_services: list[dict[str, Any]] = []
        destination_rules: list[dict[str, Any]] = []
        http_routes: list[dict[str, Any]] = []
        for ns in sorted(set(namespaces)):
            resp: Any = self.core.list_namespaced_service(ns, _preload_content=False, _request_timeout=10)
            services += json.loads(resp.data).get("items") or []
            virtual_services += self._istio(ns, "virtualservices")
            destination_rules += self._istio(ns, "destinationrules")
            http_routes += self._http_routes(ns)
        return services, virtual_services, destination_rules, http_routes


# ------------------------------------------------------------------------- sending
@dataclass
class _Counts:
    sent_by_pod: dict[str, int] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    unroutable: int = 0
    dropped: int = 0


class _StreamRunner:
    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.rr = _RoundRobin(stream)
        self.counts = _Counts()

    def update(self, stream: Stream) -> None:
        if stream != self.stream:
            self.stream = stream
            self.rr = _RoundRobin(stream)

    def status(self) -> dict[str, Any]:
        return {
            "via": self.stream.via,
            "shares": {e.key: round(s, 6) for e, s in self.stream.shares},
            "ports": {e.key: e.port for e, _s in self.stream.shares},
            "unroutable_share": round(self.stream.unroutable, 6),
            "sent_by_pod": dict(self.counts.sent_by_pod),
            "codes": dict(self.counts.codes),
            "failed": self.counts.failed,
            "unroutable": self.counts.unroutable,
            "dropped": self.counts.dropped,
        }


class LoadGenerator:
    """Runs the streams on an asyncio loop in a thread of its own.

    `endpoints` returns podprocs.json's `pods` mapping (the supervisor hands over its
    registry; the standalone command reads the file); `reader` lists the routing objects.
    """

    def __init__(
        self,
        endpoints: Callable[[], Mapping[str, Mapping[str, Any]]],
        reader: RoutingReader,
        *,
        rate: float = 20.0,
        max_in_flight: int = 64,
        refresh_seconds: float = 1.0,
        status_path: Path | None = None,
    ) -> None:
        if not 0 < rate <= MAX_RATE:
            raise ValueError(f"rate must be within (0, {MAX_RATE:g}] requests per second, got {rate}")
        self.endpoints = endpoints
        self.reader = reader
        self.rate = rate
        self.max_in_flight = max(1, min(max_in_flight, MAX_IN_FLIGHT))
        self.refresh_seconds = refresh_seconds
        self.status_path = status_path
        self.runners: dict[str, _StreamRunner] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._requests: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._routing: Routing = ([], [], [], [])
        self._routing_error: str | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._session: aiohttp.ClientSession | None = None

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._stopping = asyncio.Event()
            ready.set()
            try:
                self._loop.run_until_complete(self.run())
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="loadgen", daemon=True)
        self._thread.start()
        ready.wait(5)

    def stop(self, timeout: float = 5.0) -> None:
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)

    async def run(self) -> None:
        if self._stopping is None:
            self._stopping = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=10, connect=2)
        connector = aiohttp.TCPConnector(limit=self.max_in_flight, keepalive_timeout=5)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            self._session = session
            try:
                while not self._stopping.is_set():
                    try:
                        await self.refresh()
                    except Exception:
                        log.exception("loadgen: refresh failed")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self.refresh_seconds)
            finally:
                for task in [*self._tasks.values(), *self._requests]:
                    task.cancel()
                await asyncio.gather(*self._tasks.values(), *self._requests, return_exceptions=True)

    # ---------------------------------------------------------------- refresh
    async def refresh(self) -> None:
        endpoints = endpoints_from_registry(self.endpoints())
        namespaces = {e.namespace for e in endpoints}
        if namespaces:
            try:
                self._routing = await asyncio.to_thread(self.reader.read, namespaces)
                self._routing_error = None
            except Exception as exc:  # keep the last routing we read; say so once
                if self._routing_error != str(exc):
                    log.warning("loadgen: cannot read routing objects, keeping the last ones: %s", exc)
                self._routing_error = str(exc)
        streams = {s.id: s for s in plan_streams(endpoints, *self._routing)}
        for sid in list(self._tasks):
            if sid not in streams:
                self._tasks.pop(sid).cancel()
                self.runners.pop(sid, None)
                log.info("loadgen: stream %s stopped", sid)
        for sid, stream in streams.items():
            if sid in self.runners:
                before = self.runners[sid].stream
                self.runners[sid].update(stream)
                if before != stream:
                    log.info("loadgen: stream %s now %s", sid, _describe(stream))
                continue
            runner = _StreamRunner(stream)
            self.runners[sid] = runner
            self._tasks[sid] = asyncio.create_task(self._drive(runner), name=f"stream {sid}")
            log.info("loadgen: stream %s started: %s", sid, _describe(stream))
        self._write_status()

    def status(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "updated": time.time(),
            "routing_error": self._routing_error,
            "streams": {sid: r.status() for sid, r in sorted(self.runners.items())},
        }

    def _write_status(self) -> None:
        if self.status_path is None:
            return
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(), indent=1))
        tmp.replace(self.status_path)

    # ---------------------------------------------------------------- sending
    async def _drive(self, runner: _StreamRunner) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate
        due = loop.time()
        while True:
            due += interval
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:
                due = loop.time()  # fell far behind (a stalled machine): do not send a burst
            target = runner.rr.pick()
            counts = runner.counts
            if target is None:
                counts.unroutable += 1
                continue
            if self._in_flight >= self.max_in_flight:
                counts.dropped += 1
                continue
            task = asyncio.create_task(self._send(counts, target))
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)

    async def _send(self, counts: _Counts, target: Endpoint) -> None:
        assert self._session is not None
        self._in_flight += 1
        try:
            async with self._session.get(f"http://{HOST}:{target.port}/") as resp:
                await resp.read()
                code = str(resp.status)
            counts.codes[code] = counts.codes.get(code, 0) + 1
            counts.sent_by_pod[target.key] = counts.sent_by_pod.get(target.key, 0) + 1
        except asyncio.CancelledError:
            raise
        except Exception:
            counts.failed += 1
        finally:
            self._in_flight -= 1


def _describe(stream: Stream) -> str:
    parts = [f"{e.pod}={s:.0%}" for e, s in stream.shares]
    if stream.unroutable:
        parts.append(f"unroutable={stream.unroutable:.0%}")
    return f"{stream.via}: {', '.join(parts)}"


# ---------------------------------------------------------------------- command
def read_registry(path: Path) -> dict[str, dict[str, Any]]:
    """The `pods` of a podprocs.json; empty while there is none (or it is being replaced)."""
    try:
        pods: dict[str, dict[str, Any]] = json.loads(path.read_text()).get("pods") or {}
    except (OSError, ValueError):
        return {}
    return pods


def main(argv: list[str] | None = None) -> None:
    from kubernetes import config

    p = argparse.ArgumentParser(prog="python -m tidegate.sandbox.loadgen", description=__doc__.split("\n")[0])
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--sandbox-dir", required=True, type=Path)
    p.add_argument("--rate", type=float, default=20.0, help="requests per second per app")
    p.add_argument("--max-in-flight", type=int, default=64)
    p.add_argument("--status", type=Path, default=None, help="write counts here (JSON)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    api = config.new_client_from_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    registry = args.sandbox_dir / "podprocs.json"
    gen = LoadGenerator(
        lambda: read_registry(registry),
        KubeRoutingReader(api),
        rate=args.rate,
        max_in_flight=args.max_in_flight,
        status_path=args.status,
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: done.set())
    gen.start()
    done.wait()
    gen.stop()


if __name__ == "__main__":
    main()

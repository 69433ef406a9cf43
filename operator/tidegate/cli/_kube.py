"""Cluster access for the CLI: kubeconfig, context and namespace resolved as kubectl does.

- `cluster_options` adds `--kubeconfig`, `--context`, `-n/--namespace` (and `-A` where
  a command lists) and hands the command a `Target`; `Target.connect()` builds a `Cluster`.
- The namespace defaults to the kubeconfig context's namespace, else `default`
  (in a pod: the service account's namespace).
- `Cluster` reads a Rollout and what belongs to it: ReplicaSets and AnalysisRuns by the
  label `rollout.tidegate.io/name=<name>`, pods by the Rollout's selector; it patches the
  Rollout's spec or, for runtime control, its status subresource.
- `WatchFeed` runs one list+watch per kind in a thread (kubernetes.watch.Watch streams)
  and feeds a queue; `LiveState` folds the changes into a `view.Snapshot`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import click

from tidegate import __version__
from tidegate.cli.view import Obj, Snapshot
from tidegate.core.model import ROLLOUT_LABEL

GROUP, VERSION = "tidegate.io", "v1alpha1"
FIELD_MANAGER = "tidegate-cli"
USER_AGENT = f"tidegate-cli/{__version__}"
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# A watch is re-opened after this long (the API server would end it around 30-60 minutes).
WATCH_SECONDS = 300

F = TypeVar("F", bound=Callable[..., Any])


class CliError(click.ClickException):
    """A refusal or a failure the user can act on: printed as `Error: ...`, exit 1."""


# ---------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class Target:
    """Where a command points: kubeconfig file(s), context, namespace."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    all_namespaces: bool = False

    def config_file(self) -> str | None:
        # KUBECONFIG is read here, not at import time (the kubernetes client reads it once).
        return self.kubeconfig or os.environ.get("KUBECONFIG") or None

    def resolved_namespace(self) -> str:
        if self.namespace:
            return self.namespace
        from kubernetes import config
        from kubernetes.config.config_exception import ConfigException

        try:
            contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                config_file=self.config_file()
            )
        except (ConfigException, OSError):
            with contextlib.suppress(OSError):
                return IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
            return "default"
        chosen = (
            next((c for c in contexts if c.get("name") == self.context), None) if self.context else active
        )
        return str(((chosen or {}).get("context") or {}).get("namespace") or "default")

    def connect(self) -> Cluster:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        cfg = client.Configuration()
        try:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=self.config_file(), context=self.context, client_configuration=cfg
            )
        except (ConfigException, OSError) as exc:
            if self.kubeconfig or self.context:
                raise CliError(f"kubeconfig: {exc}") from exc
            try:
                config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            except ConfigException:
                raise CliError(f"no cluster configured: {exc} (set KUBECONFIG or pass --kubeconfig)") from exc
        api = client.ApiClient(cfg)
        api.user_agent = USER_AGENT
        return Cluster(api=api, namespace=self.resolved_namespace(), all_namespaces=self.all_namespaces)


def cluster_options(*, all_namespaces: bool = False) -> Callable[[F], F]:
    """Add kubectl's connection options; the command receives them as `target: Target`."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(
            *args: Any,
            kubeconfig: str | None,
            context: str | None,
            namespace: str | None,
            all_namespaces: bool = False,
            **kwargs: Any,
        ) -> Any:
            target = Target(kubeconfig, context, namespace, all_namespaces)
            return fn(*args, target=target, **kwargs)

        options = [
            click.option("--kubeconfig", metavar="PATH", help="Kubeconfig file (default: $KUBECONFIG)."),
            click.option("--context", metavar="NAME", help="Kubeconfig context (default: the current one)."),
            click.option(
                "-n",
                "--namespace",
                metavar="NS",
                help="Namespace (default: the context's namespace, else `default`).",
            ),
        ]
        if all_namespaces:
            options.append(
                click.option("-A", "--all-namespaces", is_flag=True, help="List across all namespaces.")
            )
        decorated: Any = wrapper
        for option in reversed(options):
            decorated = option(decorated)
        return cast(F, decorated)

    return decorate


@contextlib.contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Turn API and connection failures into one readable line (exit 1)."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ApiException as exc:
        raise CliError(f"{what}: {api_message(exc)}") from exc
    except HTTPError as exc:
        raise CliError(f"{what}: cannot reach the cluster: {exc}") from exc


def api_message(exc: Any) -> str:
    """The API server's own message from an ApiException, else its reason."""
    body = getattr(exc, "body", None)
    if body:
        with contextlib.suppress(ValueError, TypeError):
            message = json.loads(body).get("message")
            if message:
                return str(message)
    return f"{getattr(exc, 'status', '?')} {getattr(exc, 'reason', '')}".strip()


# ---------------------------------------------------------------------------
# Reads and writes


def _body(response: Any) -> Any:
    return json.loads(response.data)


@dataclass
class Cluster:
    api: Any
    namespace: str
    all_namespaces: bool = False

    @functools.cached_property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    @functools.cached_property
    def apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.api)

    @functools.cached_property
    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    # -- Rollouts

    def rollout(self, name: str) -> Obj:
        """The Rollout; a clear error (exit 1) when it does not exist."""
        from kubernetes.client.exceptions import ApiException

        with api_errors(f"reading rollout {name}"):
            try:
                response = self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, "rollouts", name, _preload_content=False
                )
            except ApiException as exc:
                if exc.status == 404:
                    raise CliError(f'rollout "{name}" not found in namespace "{self.namespace}"') from exc
                raise
        return cast(Obj, _body(response))

    def rollouts(self) -> list[Obj]:
        with api_errors("listing rollouts"):
            if self.all_namespaces:
                body = _body(
                    self.custom.list_cluster_custom_object(GROUP, VERSION, "rollouts", _preload_content=False)
                )
            else:
                body = _body(
                    self.custom.list_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, "rollouts", _preload_content=False
                    )
                )
        return list(body.get("items") or [])

    def replica_sets(self, name: str) -> list[Obj]:
        with api_errors(f"listing the ReplicaSets of {name}"):
            body = _body(
                self.apps.list_namespaced_replica_set(
                    self.namespace, label_selector=f"{ROLLOUT_LABEL}={name}", _preload_content=False
                )
            )
        return list(body.get("items") or [])

    def pods(self, rollout: Obj) -> list[Obj]:
        selector = pod_selector(rollout)
        if not selector:
            return []
        with api_errors("listing pods"):
            body = _body(
                self.core.list_namespaced_pod(self.namespace, label_selector=selector, _preload_content=False)
            )
        return list(body.get("items") or [])

    def analysis_runs(self, name: str) -> list[Obj]:
        from kubernetes.client.exceptions import ApiException

        with api_errors(f"listing the AnalysisRuns of {name}"):
            try:
                response = self.custom.list_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    "analysisruns",
                    label_selector=f"{ROLLOUT_LABEL}={name}",
                    _preload_content=False,
                )
            except ApiException as exc:
                if exc.status == 404:
                    return []  # the AnalysisRun CRD is not installed
                raise
        return list(_body(response).get("items") or [])

    def snapshot(self, name: str) -> Snapshot:
        rollout = self.rollout(name)
        return Snapshot(
            rollout=rollout,
            replica_sets=self.replica_sets(name),
            pods=self.pods(rollout),
            analysis_runs=self.analysis_runs(name),
            name=name,
            namespace=self.namespace,
        )

    def patch_status(self, name: str, status: Obj, resource_version: str | None = None) -> Obj:
        """JSON merge patch of the status subresource (runtime control GitOps never reverts)."""
        return self._merge(
            self.custom.patch_namespaced_custom_object_status, name, {"status": status}, resource_version
        )

    def patch_spec(self, name: str, spec: Obj, resource_version: str | None = None) -> Obj:
        """JSON merge patch of the Rollout's spec."""
        return self._merge(self.custom.patch_namespaced_custom_object, name, {"spec": spec}, resource_version)

    def _merge(self, patch: Any, name: str, body: Obj, resource_version: str | None) -> Obj:
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        response = patch(
            GROUP,
            VERSION,
            self.namespace,
            "rollouts",
            name,
            body,
            field_manager=FIELD_MANAGER,
            _preload_content=False,
        )
        return cast(Obj, _body(response))

    def json_patch(self, name: str, operations: list[Obj]) -> Obj:
        """RFC 6902 JSON patch of the Rollout (`test` operations make it conditional)."""
        return cast(
            Obj,
            _body(
                self.custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    "rollouts",
                    name,
                    operations,
                    field_manager=FIELD_MANAGER,
                    _content_type="application/json-patch+json",
                    _preload_content=False,
                )
            ),
        )

    # -- Watch sources

    def rollout_source(self, name: str) -> Source:
        return Source(
            "rollout",
            self.custom.list_namespaced_custom_object,
            (GROUP, VERSION, self.namespace, "rollouts"),
            {"field_selector": f"metadata.name={name}"},
        )

    def replica_set_source(self, name: str) -> Source:
        return Source(
            "replicaset",
            self.apps.list_namespaced_replica_set,
            (self.namespace,),
            {"label_selector": f"{ROLLOUT_LABEL}={name}"},
        )

    def pod_source(self, rollout: Obj) -> Source | None:
        selector = pod_selector(rollout)
        if not selector:
            return None
        return Source("pod", self.core.list_namespaced_pod, (self.namespace,), {"label_selector": selector})

    def analysis_run_source(self, name: str) -> Source:
        return Source(
            "analysisrun",
            self.custom.list_namespaced_custom_object,
            (GROUP, VERSION, self.namespace, "analysisruns"),
            {"label_selector": f"{ROLLOUT_LABEL}={name}"},
            optional=True,
        )


def pod_selector(rollout: Obj) -> str:
    labels = ((rollout.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


# ---------------------------------------------------------------------------
# Watching


@dataclass(frozen=True)
class Source:
    """One list+watch: which kind, and the list function with its arguments."""

    kind: str
    list_fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    optional: bool = False
    """A 404 on the list means the kind is not installed: watch nothing, report nothing."""


@dataclass(frozen=True)
class Change:
    kind: str
    type: str
    """ADDED, MODIFIED, DELETED; SYNC (objects is the whole list); ERROR (message)."""
    objects: tuple[Obj, ...] = ()
    message: str = ""


class WatchFeed:
    """One thread per Source: list, then watch from the list's resourceVersion, forever.

    Each thread puts `Change`s on the queue. A watch that expires (410 Gone) or breaks
    is re-listed; the list arrives as a SYNC so that nothing missed stays stale.
    """

    def __init__(self, changes: queue.Queue[Change] | None = None, retry_seconds: float = 2.0) -> None:
        self.changes: queue.Queue[Change] = changes if changes is not None else queue.Queue()
        self._stop = threading.Event()
        self._watches: list[Any] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._retry = retry_seconds

    @property
    def kinds(self) -> list[str]:
        """The kinds being watched."""
        return [t.name.removeprefix("watch-") for t in self._threads]

    def start(self, *sources: Source | None) -> WatchFeed:
        for source in sources:
            if source is None:
                continue
            thread = threading.Thread(
                target=self._run, args=(source,), name=f"watch-{source.kind}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            for w in self._watches:
                with contextlib.suppress(Exception):
                    w.stop()

    def __enter__(self) -> WatchFeed:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _run(self, source: Source) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        while not self._stop.is_set():
            try:
                listed = _body(source.list_fn(*source.args, _preload_content=False, **source.kwargs))
                version = str((listed.get("metadata") or {}).get("resourceVersion") or "")
                self.changes.put(Change(source.kind, "SYNC", tuple(listed.get("items") or [])))
                while not self._stop.is_set():
                    w = watch.Watch()  # type: ignore[no-untyped-call]
                    with self._lock:
                        self._watches.append(w)
                    try:
                        for event in w.stream(  # type: ignore[no-untyped-call]
                            source.list_fn,
                            *source.args,
                            resource_version=version,
                            timeout_seconds=WATCH_SECONDS,
                            allow_watch_bookmarks=True,
                            **source.kwargs,
                        ):
                            if self._stop.is_set():
                                break
                            obj = event.get("raw_object") or {}
                            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                            if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                                self.changes.put(Change(source.kind, str(event["type"]), (obj,)))
                    finally:
                        with self._lock:
                            self._watches.remove(w)
            except ApiException as exc:
                if exc.status == 410:
                    continue  # expired: list again
                if exc.status == 404 and source.optional:
                    self.changes.put(Change(source.kind, "SYNC", ()))
                    return
                self.changes.put(Change(source.kind, "ERROR", message=api_message(exc)))
                self._stop.wait(self._retry)
            except Exception as exc:
                if self._stop.is_set():
                    return
                self.changes.put(Change(source.kind, "ERROR", message=f"{type(exc).__name__}: {exc}"))
                self._stop.wait(self._retry)


@dataclass
class LiveState:
    """The objects seen so far, by kind and name; `apply` folds in a Change."""

    name: str
    namespace: str
    rollout: Obj | None = None
    replica_sets: dict[str, Obj] = field(default_factory=dict)
    pods: dict[str, Obj] = field(default_factory=dict)
    analysis_runs: dict[str, Obj] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def apply(self, change: Change) -> None:
        if change.type == "ERROR":
            self.errors[change.kind] = change.message
            return
        self.errors.pop(change.kind, None)
        if change.kind == "rollout":
            if change.type == "SYNC":
                self.rollout = change.objects[0] if change.objects else None
            elif change.type == "DELETED":
                self.rollout = None
            else:
                self.rollout = change.objects[0]
            return
        store = {"replicaset": self.replica_sets, "pod": self.pods, "analysisrun": self.analysis_runs}[
            change.kind
        ]
        if change.type == "SYNC":
            store.clear()
        for obj in change.objects:
            key = str((obj.get("metadata") or {}).get("name"))
            if change.type == "DELETED":
                store.pop(key, None)
            else:
                store[key] = obj

    def snapshot(self) -> Snapshot:
        return Snapshot(
            rollout=self.rollout,
            replica_sets=list(self.replica_sets.values()),
            pods=list(self.pods.values()),
            analysis_runs=list(self.analysis_runs.values()),
            name=self.name,
            namespace=self.namespace,
        )

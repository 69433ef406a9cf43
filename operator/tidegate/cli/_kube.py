"""Cluster access for the CLI: kubeconfig, context and namespace resolved as kubectl does.

- `Target` is where a command points (the flags of `_options.cluster_options`);
  `Target.connect()` reads the kubeconfig (`_kubeconfig`) and builds a `Cluster`.
- The namespace defaults to the kubeconfig context's namespace, else `default`
  (in a pod: the service account's namespace).
- `Cluster` reads a Rollout and what belongs to it: ReplicaSets and AnalysisRuns by the
  label `rollout.tidegate.io/name=<name>`, pods by the Rollout's selector; it patches the
  Rollout's spec or, for runtime control, its status subresource.
- `WatchFeed` runs one list+watch per kind in a thread and feeds a queue; `LiveState`
  folds the changes into a `Snapshot`.

Requests go through `_rest.Api` (urllib3), not the generated kubernetes client, so
that a command starts in a fraction of a second (`bench/cli_startup.py`).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import click

from tidegate.cli._facts import Obj, Snapshot
from tidegate.cli._rest import Api, ApiError, Unreachable, path_for
from tidegate.core.names import ROLLOUT_LABEL

if TYPE_CHECKING:
    from tidegate.cli._kubeconfig import Credentials

GROUP, VERSION = "tidegate.io", "v1alpha1"
FIELD_MANAGER = "tidegate-cli"
# A watch is re-opened after this long (the API server would end it around 30-60 minutes).
WATCH_SECONDS = 300


class CliError(click.ClickException):
    """A refusal or a failure the user can act on: printed as `Error: ...`, exit 1."""


# ---------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class Target:
    """Where a command points: kubeconfig file(s), context, namespace, request timeout."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    all_namespaces: bool = False
    request_timeout: float | None = None

    def credentials(self) -> Credentials:
        from tidegate.cli._kubeconfig import KubeconfigError, in_cluster, load

        try:
            return load(self.kubeconfig, self.context)
        except KubeconfigError as exc:
            pod = None if (self.kubeconfig or self.context) else in_cluster()
            if pod is None:
                hint = "" if (self.kubeconfig or self.context) else " (set KUBECONFIG or pass --kubeconfig)"
                raise CliError(f"kubeconfig: {exc}{hint}") from exc
            return pod
        except OSError as exc:
            raise CliError(f"kubeconfig: {exc}") from exc

    def connect(self) -> Cluster:
        creds = self.credentials()
        try:
            api = Api(creds, request_timeout=self.request_timeout)
        except Unreachable as exc:
            raise CliError(f"cannot reach the cluster at {creds.server}: {exc}") from exc
        return Cluster(
            api=api, namespace=self.namespace or creds.namespace, all_namespaces=self.all_namespaces
        )


@contextlib.contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Turn API and connection failures into one readable line (exit 1)."""
    try:
        yield
    except ApiError as exc:
        raise CliError(f"{what}: {exc.message}") from exc
    except Unreachable as exc:
        raise CliError(f"{what}: cannot reach the cluster: {exc}") from exc


# ---------------------------------------------------------------------------
# Reads and writes


@dataclass
class Cluster:
    api: Api
    namespace: str
    all_namespaces: bool = False

    def _path(
        self, plural: str, name: str | None = None, *, group: str = GROUP, version: str = VERSION
    ) -> str:
        return path_for(group, version, plural, self.namespace, name)

    def _list_path(self, plural: str, *, group: str = GROUP, version: str = VERSION) -> str:
        return path_for(group, version, plural, None if self.all_namespaces else self.namespace)

    def names(self, path: str, **params: Any) -> list[str]:
        """The names of the objects a list returns (for completion)."""
        body = self.api.get(path, **params)
        return sorted(str((i.get("metadata") or {}).get("name")) for i in body.get("items") or [])

    # -- Rollouts

    def rollout(self, name: str) -> Obj:
        """The Rollout; a clear error (exit 1) when it does not exist."""
        with api_errors(f"reading rollout {name}"):
            try:
                return cast(Obj, self.api.get(self._path("rollouts", name)))
            except ApiError as exc:
                if exc.status == 404:
                    raise CliError(f'rollout "{name}" not found in namespace "{self.namespace}"') from exc
                raise

    def rollouts(self) -> list[Obj]:
        with api_errors("listing rollouts"):
            body = self.api.get(self._list_path("rollouts"))
        return list(body.get("items") or [])

    def replica_sets(self, name: str) -> list[Obj]:
        with api_errors(f"listing the ReplicaSets of {name}"):
            body = self.api.get(
                path_for("apps", "v1", "replicasets", self.namespace), labelSelector=f"{ROLLOUT_LABEL}={name}"
            )
        return list(body.get("items") or [])

    def pods(self, rollout: Obj) -> list[Obj]:
        selector = pod_selector(rollout)
        if not selector:
            return []
        with api_errors("listing pods"):
            body = self.api.get(path_for("", "v1", "pods", self.namespace), labelSelector=selector)
        return list(body.get("items") or [])

    def analysis_runs(self, rollout: str | None = None) -> list[Obj]:
        """AnalysisRuns of one Rollout (by its label), or all of the namespace (-A: of every one)."""
        what = f"listing the AnalysisRuns of {rollout}" if rollout else "listing analysisruns"
        with api_errors(what):
            try:
                if rollout:
                    body = self.api.get(
                        self._path("analysisruns"), labelSelector=f"{ROLLOUT_LABEL}={rollout}"
                    )
                else:
                    body = self.api.get(self._list_path("analysisruns"))
            except ApiError as exc:
                if exc.status == 404:
                    return []  # the AnalysisRun CRD is not installed
                raise
        return list(body.get("items") or [])

    def analysis_run(self, name: str) -> Obj:
        with api_errors(f"reading analysisrun {name}"):
            try:
                return cast(Obj, self.api.get(self._path("analysisruns", name)))
            except ApiError as exc:
                if exc.status == 404:
                    raise CliError(f'analysisrun "{name}" not found in namespace "{self.namespace}"') from exc
                raise

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
        return self._merge(self._path("rollouts", name) + "/status", {"status": status}, resource_version)

    def patch_spec(self, name: str, spec: Obj, resource_version: str | None = None) -> Obj:
        """JSON merge patch of the Rollout's spec."""
        return self._merge(self._path("rollouts", name), {"spec": spec}, resource_version)

    def _merge(self, path: str, body: Obj, resource_version: str | None) -> Obj:
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return cast(
            Obj,
            self.api.request(
                "PATCH",
                path,
                params={"fieldManager": FIELD_MANAGER},
                body=body,
                content_type="application/merge-patch+json",
            ),
        )

    def json_patch(self, name: str, operations: list[Obj]) -> Obj:
        """RFC 6902 JSON patch of the Rollout (`test` operations make it conditional)."""
        return cast(
            Obj,
            self.api.request(
                "PATCH",
                self._path("rollouts", name),
                params={"fieldManager": FIELD_MANAGER},
                body=operations,
                content_type="application/json-patch+json",
            ),
        )

    # -- Watch sources

    def rollout_source(self, name: str) -> Source:
        return Source("rollout", self._path("rollouts"), {"fieldSelector": f"metadata.name={name}"})

    def rollouts_source(self) -> Source:
        return Source("rollouts", self._list_path("rollouts"), {})

    def analysis_runs_source(self) -> Source:
        return Source("analysisruns", self._list_path("analysisruns"), {}, optional=True)

    def replica_set_source(self, name: str) -> Source:
        return Source(
            "replicaset",
            path_for("apps", "v1", "replicasets", self.namespace),
            {"labelSelector": f"{ROLLOUT_LABEL}={name}"},
        )

    def pod_source(self, rollout: Obj) -> Source | None:
        selector = pod_selector(rollout)
        if not selector:
            return None
        return Source("pod", path_for("", "v1", "pods", self.namespace), {"labelSelector": selector})

    def analysis_run_source(self, name: str) -> Source:
        return Source(
            "analysisrun",
            self._path("analysisruns"),
            {"labelSelector": f"{ROLLOUT_LABEL}={name}"},
            optional=True,
        )

    def watch(self, source: Source, resource_version: str, timeout: float) -> Iterator[Obj]:
        """Watch events of `source` from `resource_version` (the server ends it after `timeout`)."""
        return self.api.stream(
            source.path,
            resourceVersion=resource_version,
            timeoutSeconds=max(1, int(timeout)),
            allowWatchBookmarks=True,
            **source.params,
        )


def pod_selector(rollout: Obj) -> str:
    labels = ((rollout.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


# ---------------------------------------------------------------------------
# Watching


@dataclass(frozen=True)
class Source:
    """One list+watch: which kind, the list's path and its query parameters."""

    kind: str
    path: str
    params: dict[str, Any]
    optional: bool = False
    """A 404 on the list means the kind is not installed: watch nothing, report nothing."""


@dataclass(frozen=True)
class Change:
    kind: str
    type: str
    """ADDED, MODIFIED, DELETED; SYNC (objects is the whole list); ERROR (message)."""
    objects: tuple[Obj, ...] = ()
    message: str = ""


class _Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class WatchFeed:
    """One thread per Source: list, then watch from the list's resourceVersion, forever.

    Each thread puts `Change`s on the queue. A watch that expires (410 Gone) or breaks
    is re-listed; the list arrives as a SYNC so that nothing missed stays stale.
    """

    def __init__(
        self, cluster: Cluster, changes: queue.Queue[Change] | None = None, retry_seconds: float = 2.0
    ) -> None:
        self.cluster = cluster
        self.changes: queue.Queue[Change] = changes if changes is not None else queue.Queue()
        self._stop = threading.Event()
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
        self.cluster.api.close_streams()

    def __enter__(self) -> WatchFeed:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _run(self, source: Source) -> None:
        api = self.cluster.api
        while not self._stop.is_set():
            try:
                listed = api.get(source.path, **source.params)
                version = str((listed.get("metadata") or {}).get("resourceVersion") or "")
                self.changes.put(Change(source.kind, "SYNC", tuple(listed.get("items") or [])))
                while not self._stop.is_set():
                    for event in self.cluster.watch(source, version, WATCH_SECONDS):
                        if self._stop.is_set():
                            return
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            if obj.get("code") == 410:
                                raise _Expired
                            raise ApiError(
                                int(obj.get("code") or 500),
                                str(obj.get("reason") or ""),
                                str(obj.get("message") or ""),
                            )
                        version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                        if kind in ("ADDED", "MODIFIED", "DELETED"):
                            self.changes.put(Change(source.kind, str(kind), (obj,)))
            except _Expired:
                continue
            except ApiError as exc:
                if exc.status == 410:
                    continue  # expired: list again
                if exc.status == 404 and source.optional:
                    self.changes.put(Change(source.kind, "SYNC", ()))
                    return
                self.changes.put(Change(source.kind, "ERROR", message=exc.message))
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

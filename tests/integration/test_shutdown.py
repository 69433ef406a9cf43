"""A stopping operator lands no write after its pass, and deletion never runs beside a pass.

The operator runs in this process, as `tidegate operator` runs it (`operator_cmd._run`: the
caches, the Lease, kopf and its cleanup), against the real API server, and it is stopped
the way a pod is: SIGTERM. Its clients are the real ones except for one thing: a closed
`Gate` holds the pass's status write in its worker thread, just before the request goes
out — the "PATCH already running in a worker thread" that a cancelled pass used to leave
behind. What was written, and when, is read from the API server's audit log: the
operator runs as a ServiceAccount of its own, so every request of it is its.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from bench.failover import audit_writes, service_account_kubeconfig
from kubernetes import client
from kubernetes.config import kube_config

from tests.e2e.test_canary import HOST, canary
from tests.kube import Kube
from tidegate.cli.operator_cmd import _run
from tidegate.core.hashing import HASH_LABEL
from tidegate.handlers import operator as handlers
from tidegate.k8s.client import Clients

pytestmark = pytest.mark.sandbox

T = TypeVar("T")
LEASE = "tidegate-operator"
TIMING = {"lease_duration": 6.0, "renew_deadline": 4.0, "retry_period": 1.0}
IMAGE = "registry.example/web:2.0"


class Gate:
    """Holds the operator's status writes in their worker thread while closed."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()
        self.held = threading.Event()
        """Set once a write has been stopped at the closed gate."""

    def close(self) -> None:
        self.held.clear()
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def pass_through(self) -> None:
        if not self._open.is_set():
            self.held.set()
            if not self._open.wait(120):
                raise TimeoutError("the test never opened the gate")


@dataclasses.dataclass
class Call:
    method: str
    plural: str
    started: float
    ended: float | None = None


class GatedCustomObjects(client.CustomObjectsApi):
    """The real custom-objects API; each write is recorded, a status write waits at the gate."""

    def __init__(self, api: client.ApiClient, gate: Gate) -> None:
        super().__init__(api)
        self.gate = gate
        self.calls: list[Call] = []

    def _record(self, method: str, plural: str, fn: Callable[[], T]) -> T:
        call = Call(method, plural, time.monotonic())
        self.calls.append(call)
        try:
            return fn()
        finally:
            call.ended = time.monotonic()

    def patch_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> Any:
        self.gate.pass_through()
        parent = super().patch_namespaced_custom_object_status
        return self._record("patch status", args[3], lambda: parent(*args, **kwargs))

    def patch_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> Any:
        parent = super().patch_namespaced_custom_object
        return self._record("patch", args[3], lambda: parent(*args, **kwargs))


@pytest.fixture
def fresh_handlers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The handlers' process-wide state as a new process starts with it (bound by `_run`)."""
    state = handlers._State
    queue = handlers.WorkQueue(on_add=handlers.TELEMETRY.queue_added, on_get=handlers.TELEMETRY.queue_taken)
    for attr, value in {
        "clients": None,
        "cache": None,
        "queue": queue,
        "weights": {},
        "workers": [],
        "backoff": {},
        "locks": {},
        "notifier": None,
    }.items():
        monkeypatch.setattr(state, attr, value)
    yield


@dataclasses.dataclass
class InProcessOperator:
    """`tidegate operator` in this process, as its own ServiceAccount, with gated status writes."""

    kube: Kube
    kubeconfig: Path
    user: str
    gate: Gate = dataclasses.field(default_factory=Gate)
    custom: GatedCustomObjects | None = None
    task: asyncio.Task[int] | None = None
    identity: str = dataclasses.field(default_factory=lambda: f"in-process-{uuid.uuid4().hex[:6]}")

    @classmethod
    def make(cls, kube: Kube, monkeypatch: pytest.MonkeyPatch) -> InProcessOperator:
        directory = Path(tempfile.mkdtemp(prefix="tidegate-shutdown-"))
        name = "operator"
        kubeconfig = service_account_kubeconfig(kube.sandbox, kube.namespace, name, directory)
        # kopf's own requests and the AnalysisRun handlers' clients: the same account. The client
        # library reads KUBECONFIG once, at import, hence its default location as well.
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
        return cls(kube, kubeconfig, f"system:serviceaccount:{kube.namespace}:{name}")

    def start(self) -> None:
        clients = Clients.load(str(self.kubeconfig))
        self.custom = GatedCustomObjects(clients.api, self.gate)
        election = {
            "identity": self.identity,
            "lease": {"namespace": self.kube.namespace, "name": LEASE, **TIMING},
        }
        self.task = asyncio.create_task(
            _run(
                (self.kube.namespace,),
                "127.0.0.1",
                0,
                election,
                self.kube.namespace,
                clients=dataclasses.replace(clients, custom=self.custom),
            )
        )

    @staticmethod
    def sigterm() -> float:
        """Stop it as the kubelet stops a pod; kopf's own handler (or `_run`'s before kopf runs) takes it."""
        os.kill(os.getpid(), signal.SIGTERM)
        return time.time()

    async def stopped(self, timeout: float = 60) -> float:
        """Wait for `_run` to return; the wall-clock time it did."""
        assert self.task is not None
        code = await asyncio.wait_for(asyncio.shield(self.task), timeout)
        at = time.time()
        assert code == 0, f"the operator exited with {code}"
        return at

    async def ensure_stopped(self) -> None:
        """However the test went: stop the operator and open the gate, so nothing is left running."""
        self.gate.open()
        if self.task is not None and not self.task.done():
            self.sigterm()
            try:
                await asyncio.wait_for(asyncio.shield(self.task), 60)
            except (TimeoutError, Exception):
                self.task.cancel()


async def eventually(check: Callable[[], Awaitable[T]], timeout: float, what: str) -> T:
    """Await `check()` until it is truthy; fail saying what was last seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await check()
        except Exception as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")
        await asyncio.sleep(0.1)


def _status(kube: Kube) -> dict[str, Any]:
    return kube.rollout("web").get("status") or {}


async def healthy(kube: Kube) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        rollout = await asyncio.to_thread(kube.rollout, "web")
        st = rollout.get("status") or {}
        generation = rollout["metadata"]["generation"]
        done = st.get("phase") == "Healthy" and st.get("observedGeneration") == generation
        return st if done else None

    return await eventually(check, 90, "the Rollout Healthy")


def canary_weight(kube: Kube) -> int:
    vs = kube.get("virtualservice", "web")
    primary = next(r for r in vs["spec"]["http"] if r.get("name") == "primary")
    route = primary["route"]
    return int(next((d.get("weight", 0) for d in route if "canary" in d["destination"]["host"]), 0))


def new_image(kube: Kube) -> None:
    patch = [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": IMAGE}]
    kube.kubectl("patch", "rollout.tidegate.io", "web", "--type=json", "-p", json.dumps(patch))


def lease_spec(kube: Kube) -> dict[str, Any]:
    return dict(kube.get("lease", LEASE).get("spec") or {})


def audit_flushed(kube: Kube) -> None:
    """Everything the API server did before now is in its audit log: a marker written now is."""
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "configmap", marker)

    def logged() -> bool:
        return any(marker in p.read_text(errors="replace") for p in kube.sandbox.logs.glob("audit*.log"))

    deadline = time.monotonic() + 30
    while not logged():
        assert time.monotonic() < deadline, f"{marker} never reached the audit log"
        time.sleep(0.2)


def test_a_stopping_operator_finishes_its_pass_and_writes_nothing_after_stop_returns(
    quiet: Kube, fresh_handlers: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    kube = quiet
    caplog.set_level(logging.INFO, logger="tidegate.rollout")
    for path in HOST:
        kube.apply_file(path)
    kube.apply(canary([{"setWeight": 30}, {"pause": {}}]))
    op = InProcessOperator.make(kube, monkeypatch)
    began = time.time()
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        op.start()
        try:
            await healthy(kube)
            op.gate.close()
            seen["image_at"] = time.time()
            await asyncio.to_thread(new_image, kube)
            # The pass has done its actions (canary ReplicaSet, weight 30 on the router) and its
            # status PATCH is in a worker thread, held just before the request goes out.
            held = await asyncio.to_thread(op.gate.held.wait, 60)
            assert held, f"no status write reached the gate; status: {_status(kube)}"
            before = await asyncio.to_thread(lease_spec, kube)
            assert before.get("holderIdentity") == op.identity, before
            seen["sigterm_at"] = op.sigterm()

            # Stopping, the operator keeps the Lease while its pass is in flight (a standby that
            # took it now would act beside the write still to land): it renews it, and has not
            # returned. A stop that cut the pass would release the Lease instead.
            await _keeps_the_lease(kube, op, before, "given up while the pass was held", "a pass")
            op.gate.open()
            seen["stopped_at"] = await op.stopped()
        finally:
            await op.ensure_stopped()

    asyncio.run(scenario())  # returns once every worker thread of the operator has ended
    audit_flushed(kube)
    writes = audit_writes(kube.sandbox.logs, {op.user}, began)
    sent = audit_writes(kube.sandbox.logs, {op.user}, began, refused=True)
    late = [w for w in sent if w[0] >= seen["stopped_at"]]
    assert not late, f"writes after stop returned at {seen['stopped_at']:.3f}: {late}"
    during = [(verb, res) for at, _, verb, res in writes if seen["sigterm_at"] <= at < seen["stopped_at"]]
    assert ("patch", "rollouts/status") in during, f"the held status write did not land in the stop: {during}"
    assert ("update", "leases") in during, "the Lease was renewed, then released, before stop returned"
    released = lease_spec(kube)
    assert released.get("holderIdentity") in ("", None), f"stop released the Lease: {released}"

    # The pass is whole: its status write landed (after a 409 from kopf's own annotation patch
    # it may have planned once more), and what the status reports is what the cluster has.
    rollout = kube.rollout("web")
    st = rollout.get("status") or {}
    assert st.get("observedGeneration") == rollout["metadata"]["generation"], st
    canary_rs = [
        rs
        for rs in kube.replica_sets("web")
        if rs["metadata"]["labels"].get(HASH_LABEL) == st["currentPodHash"]
    ]
    assert canary_rs, f"the status names a ReplicaSet {st['currentPodHash']} that is not there"
    assert st["updatedReplicas"] == canary_rs[0]["spec"]["replicas"], (st, canary_rs[0]["spec"])
    assert st["canary"]["weights"]["canary"]["weight"] == canary_weight(kube), st["canary"]["weights"]
    # Every Event the operator emitted (each is logged as a transition first) was posted.
    emitted = Counter(
        r.__dict__["reason"]
        for r in caplog.records
        if r.name == "tidegate.rollout" and "reason" in r.__dict__
    )
    events = kube.list("events")
    posted = Counter(e["reason"] for e in events if e["involvedObject"].get("name") == "web")
    lost = emitted - posted
    assert emitted and not lost, f"Events emitted but never posted: {dict(lost)} (posted: {dict(posted)})"


def test_deletion_waits_for_the_pass_under_way_and_runs_after_it(
    quiet: Kube, fresh_handlers: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    kube = quiet
    caplog.set_level(logging.INFO, logger="tidegate.operator")
    for path in HOST:
        kube.apply_file(path)
    kube.apply(canary([{"setWeight": 30}, {"pause": {}}]))
    op = InProcessOperator.make(kube, monkeypatch)
    key = f"{kube.namespace}/web"

    def waiting_logged() -> bool:
        return any("deletion of" in r.getMessage() and key in r.getMessage() for r in caplog.records)

    async def scenario() -> None:
        op.start()
        try:
            await healthy(kube)
            await asyncio.to_thread(new_image, kube)

            async def paused_at_30() -> bool:
                st = await asyncio.to_thread(_status, kube)
                return st.get("phase") == "Paused" and await asyncio.to_thread(canary_weight, kube) == 30

            await eventually(paused_at_30, 90, "the canary paused at 30%")
            # A pass that leaves the traffic where it is (a scale), held at its status write.
            op.gate.close()
            replicas = int((await asyncio.to_thread(kube.rollout, "web"))["spec"]["replicas"])
            await asyncio.to_thread(
                kube.patch, "rollout.tidegate.io", "web", {"spec": {"replicas": replicas + 1}}
            )
            assert await asyncio.to_thread(op.gate.held.wait, 60), f"no status write held: {_status(kube)}"
            await asyncio.to_thread(kube.kubectl, "delete", "rollout.tidegate.io", "web", "--wait=false")

            async def waiting() -> bool:
                return waiting_logged()

            await eventually(waiting, 30, "the delete handler to wait for the pass")
            # While the pass is held, the delete handler has done nothing: traffic is where the
            # pass put it, and the finalizer holds the Rollout.
            assert await asyncio.to_thread(canary_weight, kube) == 30, "deletion ran beside the pass"
            assert op.custom is not None
            vs_writes_while_held = len([c for c in op.custom.calls if c.plural == "virtualservices"])
            op.gate.open()

            async def gone() -> bool:
                return await asyncio.to_thread(kube.get_or_none, "rollout.tidegate.io", "web") is None

            await eventually(gone, 60, "the Rollout deleted (the finalizer removed)")
            assert await asyncio.to_thread(canary_weight, kube) == 0, "deletion put traffic back on stable"
            calls = op.custom.calls
            status = [c for c in calls if c.method == "patch status"]
            release = [c for c in calls if c.plural == "virtualservices"][vs_writes_while_held:]
            assert status and release, calls
            assert status[-1].ended is not None and status[-1].ended <= release[0].started, (
                f"the release began before the pass's status write ended: {calls}"
            )
            op.sigterm()
            await op.stopped()
        finally:
            await op.ensure_stopped()

    asyncio.run(scenario())


def test_a_pass_that_outlasts_the_stop_timeout_lands_its_write_before_the_lease_is_released(
    quiet: Kube, fresh_handlers: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Past STOP_TIMEOUT the cleanup stops waiting and kopf cancels the pass: its request in a worker
    thread cannot be cancelled. The operator must hold (and renew) the Lease until that request
    has ended, and return only then."""
    kube = quiet
    monkeypatch.setattr(handlers, "STOP_TIMEOUT", 0.5)
    caplog.set_level(logging.INFO, logger="tidegate.operator")
    caplog.set_level(logging.DEBUG, logger="kopf._core.reactor.running")
    for path in HOST:
        kube.apply_file(path)
    kube.apply(canary([{"setWeight": 30}, {"pause": {}}]))
    op = InProcessOperator.make(kube, monkeypatch)
    began = time.time()
    seen: dict[str, Any] = {}

    def logged(logger: str, text: str) -> bool:
        return any(r.name == logger and text in r.getMessage() for r in caplog.records)

    async def scenario() -> None:
        op.start()
        try:
            await healthy(kube)
            op.gate.close()
            await asyncio.to_thread(new_image, kube)
            assert await asyncio.to_thread(op.gate.held.wait, 60), f"no status write held: {_status(kube)}"
            seen["sigterm_at"] = op.sigterm()

            async def given_up() -> bool:
                return logged("tidegate.operator", "still under way")

            await eventually(given_up, 30, "the cleanup to stop waiting for the held pass")

            # kopf gives the tasks left 5 s, then cancels them: the pass is cut, its write held.
            async def kopf_done() -> bool:
                return logged("kopf._core.reactor.running", "Hung tasks are stopped")

            await eventually(kopf_done, 30, "kopf to cancel what was left")
            before = await asyncio.to_thread(lease_spec, kube)

            lost = "released with the pass's request still to land"
            await _keeps_the_lease(kube, op, before, lost, "a request")
            op.gate.open()
            seen["stopped_at"] = await op.stopped()
        finally:
            await op.ensure_stopped()

    asyncio.run(scenario())
    audit_flushed(kube)
    sent = audit_writes(kube.sandbox.logs, {op.user}, began, refused=True)
    late = [w for w in sent if w[0] >= seen["stopped_at"]]
    assert not late, f"requests after stop returned at {seen['stopped_at']:.3f}: {late}"
    held = [at for at, _, verb, res in sent if res == "rollouts/status" and at >= seen["sigterm_at"]]
    assert held, "the held status write never reached the API server"
    lease_writes = [at for at, _, _, res in sent if res == "leases"]
    assert lease_writes[-1] > held[-1], "the Lease was released before the held write reached the server"
    assert lease_spec(kube).get("holderIdentity") in ("", None), "and then it was released"


async def _keeps_the_lease(kube: Kube, op: Any, before: dict[str, Any], lost: str, held: str) -> None:
    """The stopping operator renews its Lease (or gives it up: the failure) while `held` is in flight."""

    async def renewed_or_released() -> dict[str, Any] | None:
        spec = await asyncio.to_thread(lease_spec, kube)
        moved = spec.get("renewTime") != before.get("renewTime")
        return spec if moved or spec.get("holderIdentity") != op.identity else None

    after = await eventually(renewed_or_released, 3 * TIMING["retry_period"] + 5, "a Lease write")
    assert after.get("holderIdentity") == op.identity, f"the Lease was {lost}: {after}"
    assert op.task is not None and not op.task.done(), f"stop returned with {held} in flight"

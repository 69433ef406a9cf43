"""Notifications on the sandbox: a local HTTP receiver records what arrives.

A canary promoted step by step tells each transition exactly once — also when the operator is
killed (SIGKILL) while notifications it decided are still undelivered; a canary aborted while one
receiver answers 500 and another hangs goes on at its own pace, and the failures become Warning
Events on the Rollout and a metric.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.e2e.dsl import given
from tests.e2e.test_canary import HOST, canary
from tests.kube import Kube, OperatorProcess, wait_until

# The session operator runs without POD_NAMESPACE: its notification namespace is the Lease's default.
NOTIFY_NS = os.environ.get("POD_NAMESPACE") or "default"
SUB = "notifications.tidegate.io/subscribe."
ALL = (
    "on-rollout-updated",
    "on-rollout-step-completed",
    "on-rollout-paused",
    "on-rollout-resumed",
    "on-rollout-promoted",
    "on-rollout-aborted",
    "on-analysis-run-failed",
    "on-analysis-run-inconclusive",
    "on-rollout-completed",
)


class Receiver:
    """A threaded HTTP server; per first path segment it accepts (200), fails (500), refuses (503)
    or hangs until released. Only accepted requests count as delivered."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.modes: dict[str, str] = {}
        self.accepted: list[tuple[str, dict[str, Any]]] = []
        self.attempts: Counter[str] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                lane = self.path.strip("/").split("/")[0]
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with receiver.lock:
                    receiver.attempts[lane] += 1
                    mode = receiver.modes.get(lane, "ok")
                if mode == "hang":
                    with receiver.lock:
                        receiver.in_flight[lane] += 1
                    released = receiver.release.wait(120)
                    with receiver.lock:
                        receiver.in_flight[lane] -= 1
                    mode = "ok" if released else "fail"
                code = {"ok": 200, "fail": 500, "closed": 503}[mode]
                if code == 200:
                    with receiver.lock:
                        receiver.accepted.append((lane, body))
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no" if code != 200 else b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, lane: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{lane}"

    def got(self, lane: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for name, body in self.accepted if name == lane]

    def triggers(self, lane: str) -> list[str]:
        return [str(b.get("trigger")) for b in self.got(lane)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.release.set()
        r.server.shutdown()


def configure(kube: Kube, data: dict[str, str], secret: dict[str, str]) -> None:
    docs = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "tidegate-notification-configmap", "namespace": NOTIFY_NS},
            "data": data,
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "tidegate-notification-secret", "namespace": NOTIFY_NS},
            "stringData": secret,
        },
    ]
    Kube(kube.sandbox, NOTIFY_NS).apply(docs)


def unconfigure(kube: Kube) -> None:
    k = Kube(kube.sandbox, NOTIFY_NS)
    k.kubectl("delete", "configmap", "tidegate-notification-configmap", "--ignore-not-found")
    k.kubectl("delete", "secret", "tidegate-notification-secret", "--ignore-not-found")


def subscribed(doc: dict[str, Any], subscriptions: dict[str, str]) -> dict[str, Any]:
    doc["metadata"].setdefault("annotations", {}).update({SUB + k: v for k, v in subscriptions.items()})
    return doc


def wait_for(check: Callable[[], Any], timeout: float, what: str, seen: Callable[[], Any]) -> Any:
    """wait_until, and on timeout also what `seen()` shows then (the receiver, the outbox)."""
    try:
        return wait_until(check, timeout, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; seen: {seen()!r}") from None


def outbox(kube: Kube) -> list[dict[str, Any]]:
    return list(((kube.status("web").get("notifications") or {}).get("pending")) or [])


def test_a_promoted_canary_tells_each_transition_once_even_across_an_operator_kill(
    kube: Kube, operator: OperatorProcess, receiver: Receiver
) -> None:
    configure(
        kube,
        {
            "service.webhook.rec": f"url: {receiver.url('rec')}\n"
            "retryMax: 100\nretryWaitMin: 200ms\nretryWaitMax: 500ms\n",
            "service.slack": "recipientUrls:\n  deploys: $slack-deploys\n",
            "service.teams": f"recipientUrls:\n  ops: {receiver.url('teams')}\n",
            "template.rollout-promoted": "message: "
            "'{{.rollout.metadata.name}} promoted to {{.notification.revision}}'\n"
            "teams:\n  title: '{{.rollout.metadata.name}} promoted'\n",
        },
        {"slack-deploys": receiver.url("slack")},
    )
    try:
        steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}, {"pause": {"duration": "2s"}}]
        doc = subscribed(
            canary(steps),
            {
                **{f"{t}.rec": "" for t in ALL},
                "on-rollout-promoted.slack": "deploys",
                "on-rollout-promoted.teams": "ops",
            },
        )
        s = given(kube).objects(*HOST).rollout(doc)
        s.when().applied().then().phase("Healthy")
        wait_for(
            lambda: receiver.triggers("rec") == ["on-rollout-completed"],
            30,
            "the first completion told",
            lambda: receiver.triggers("rec"),
        )
        s.when().image("registry.example/web:2.0").then().weight(20).phase("Paused")
        wait_for(
            lambda: receiver.triggers("rec")[-1:] == ["on-rollout-paused"] and not outbox(kube),
            30,
            "the pause told and acknowledged",
            lambda: (receiver.triggers("rec"), outbox(kube)),
        )
        # The receiver refuses (503) from now on: what the operator decides stays in its outbox.
        with receiver.lock:
            receiver.modes["rec"] = "closed"
        s.when().promoted()
        owed = wait_until(lambda: outbox(kube), 30, what="a notification owed in status.notifications")
        operator.kill()  # SIGKILL, with notifications decided and not delivered
        try:
            with receiver.lock:
                receiver.modes["rec"] = "ok"
            operator.start()
            s.then().phase("Healthy", timeout=90)
        finally:
            if operator.proc is None:
                operator.start()
        wait_for(
            lambda: receiver.triggers("rec").count("on-rollout-completed") == 2 and not outbox(kube),
            60,
            "the second completion told and the outbox empty",
            lambda: (receiver.triggers("rec"), outbox(kube)),
        )
        got = receiver.got("rec")
        assert [b["trigger"] for b in got] == [
            "on-rollout-completed",  # the first revision, at creation
            "on-rollout-updated",
            "on-rollout-step-completed",  # setWeight 20
            "on-rollout-paused",
            "on-rollout-step-completed",  # promoted past the pause
            "on-rollout-step-completed",  # setWeight 60
            "on-rollout-paused",
            "on-rollout-resumed",
            "on-rollout-step-completed",  # the 2 s pause ended
            "on-rollout-promoted",
            "on-rollout-completed",
        ], [(b["trigger"], b["message"]) for b in got]
        ids = [b["id"] for b in got]
        assert len(set(ids)) == len(ids) and ids == sorted(ids, key=lambda i: int(i.rsplit("-", 1)[1])), ids
        assert owed[0]["id"] in [int(i.rsplit("-", 1)[1]) for i in ids], "what was owed at the kill arrived"
        assert all(b["namespace"] == kube.namespace and b["rollout"] == "web" for b in got)
        current = kube.status("web")["currentPodHash"]
        (slack,) = receiver.got("slack")
        assert slack == {"text": f"web promoted to {current}"}
        (teams,) = receiver.got("teams")
        assert (teams["@type"], teams["title"], teams["text"]) == (
            "MessageCard",
            "web promoted",
            slack["text"],
        )
    finally:
        unconfigure(kube)


def test_failing_and_hanging_receivers_never_hold_the_rollout_and_each_failure_is_an_event_and_a_metric(
    kube: Kube, operator: OperatorProcess, receiver: Receiver
) -> None:
    receiver.modes.update({"broken": "fail", "stuck": "hang"})
    configure(
        kube,
        {
            "service.webhook.ok": f"url: {receiver.url('ok')}\n",
            "service.webhook.broken": f"url: {receiver.url('broken')}\nretryMax: 1\nretryWaitMin: 200ms\n",
            "service.webhook.stuck": f"url: {receiver.url('stuck')}\ntimeout: 90s\nretryMax: 0\n",
        },
        {},
    )
    try:
        doc = subscribed(
            canary([{"setWeight": 20}, {"pause": {}}]),
            {
                **{f"{t}.ok": "" for t in ALL},
                "on-rollout-aborted.broken": "",
                "on-rollout-updated.stuck": "",
                "on-rollout-paused.stuck": "",
                "on-rollout-aborted.stuck": "",
            },
        )
        s = given(kube).objects(*HOST).rollout(doc)
        s.when().applied().then().phase("Healthy")
        updated = time.monotonic()
        t = s.when().image("registry.example/web:2.0").then().weight(20).phase("Paused")
        paused_after = time.monotonic() - updated
        # The stuck receiver has held the first notification (on-rollout-updated) all this time.
        wait_for(
            lambda: receiver.in_flight["stuck"] == 1, 10, "a hanging request", lambda: receiver.in_flight
        )
        assert receiver.got("stuck") == [], "the rollout got to Paused without the stuck receiver's answer"
        t.when().aborted().then().phase("Degraded").weight(0)
        wait_for(
            lambda: "on-rollout-aborted" in receiver.triggers("ok"),
            30,
            "the abort told",
            lambda: receiver.triggers("ok"),
        )
        assert receiver.in_flight["stuck"] == 1 and receiver.got("stuck") == [], "still hanging all along"

        def failures() -> list[str]:
            out = kube.kubectl(
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=web,reason=NotificationFailed",
                "-o",
                "json",
            ).stdout
            return sorted(e["message"] for e in json.loads(out)["items"] if "to broken:" in e["message"])

        events = wait_for(
            lambda: len(failures()) == 2 and failures(), 30, "two NotificationFailed Events", failures
        )
        assert "attempt 1, will retry): HTTP 500 from the service" in events[0], events
        assert "attempt 2, given up): HTTP 500 from the service" in events[1], events

        def metric() -> float:
            from prometheus_client.parser import text_string_to_metric_families

            with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5) as r:
                text = r.read().decode()
            wanted = {
                "namespace": kube.namespace,
                "rollout": "web",
                "service": "broken",
                "trigger": "on-rollout-aborted",
                "final": "true",
            }
            return sum(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "tidegate_notification_failures_total" and sample.labels == wanted
            )

        assert wait_until(metric, 15, what="tidegate_notification_failures_total for broken") == 1.0
        assert receiver.attempts["broken"] == 2
        receiver.release.set()
        wait_for(
            lambda: (
                receiver.triggers("stuck")
                == ["on-rollout-updated", "on-rollout-paused", "on-rollout-aborted"]
            ),
            30,
            "the stuck receiver's notifications, in order, once released",
            lambda: receiver.triggers("stuck"),
        )
        wait_for(lambda: not outbox(kube), 30, "the outbox empty", lambda: outbox(kube))
        assert receiver.triggers("ok") == [
            "on-rollout-completed",
            "on-rollout-updated",
            "on-rollout-step-completed",
            "on-rollout-paused",
            "on-rollout-aborted",
        ]
        print(f"paused {paused_after:.1f}s after the update while a receiver hung")
    finally:
        unconfigure(kube)

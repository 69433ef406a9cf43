"""Notifications, decided purely: subscriptions, triggers, the outbox, templates and requests;
then the delivery lanes against an httpx.MockTransport (a fake clock for the backoff)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import httpx
import pytest

from tests.unit.planner_fixtures import V1, V2, bg_rollout, canary_rollout, istio, observed, rs, steps_hash
from tidegate.core.model import Event
from tidegate.core.notifications import (
    MAX_PENDING,
    Subscription,
    outbox,
    subscriptions,
    transitions,
)
from tidegate.core.notify_services import NotificationError, Retry, build_request, parse_config, render
from tidegate.core.planner import plan
from tidegate.notifications import Notifier

SUB = "notifications.tidegate.io/subscribe."
COMPLETE = [{"type": "Completed", "status": "True"}]
NOT_COMPLETE = [{"type": "Completed", "status": "False"}]

# --------------------------------------------------------------------------- subscriptions


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        (
            {SUB + "on-rollout-aborted.slack": "deploys"},
            [Subscription("on-rollout-aborted", "slack", ("deploys",))],
        ),
        # ;-separated, blanks dropped, as notifications-engine's parseRecipients
        (
            {SUB + "on-rollout-paused.teams": "a; b;"},
            [Subscription("on-rollout-paused", "teams", ("a", "b"))],
        ),
        # a webhook needs no recipient: an empty value is one empty recipient
        ({SUB + "on-rollout-completed.audit": ""}, [Subscription("on-rollout-completed", "audit", ("",))]),
        # Argo's own prefix is read too, so a Rollout moved over keeps its subscriptions
        (
            {"notifications.argoproj.io/subscribe.on-rollout-step-completed.slack": "x"},
            [Subscription("on-rollout-step-completed", "slack", ("x",))],
        ),
        ({SUB + "no-service": "x", "other/key": "y", SUB + ".slack": "z"}, []),
    ],
)
def test_subscriptions_are_read_from_annotations_in_argos_shape(
    annotations: dict[str, str], expected: list[Subscription]
) -> None:
    assert list(subscriptions(annotations)) == expected


# --------------------------------------------------------------------------- triggers


def ev(reason: str, action: bool = False) -> Event:
    return Event(reason, f"{reason} message", action=action)


@pytest.mark.parametrize(
    ("events", "old", "new", "completed_revision", "expected"),
    [
        ([ev("NewRevision")], {}, {}, None, ["on-rollout-updated"]),
        ([ev("StepCompleted")], {}, {}, None, ["on-rollout-step-completed"]),
        ([ev("RolloutPaused")], {}, {}, None, ["on-rollout-paused"]),
        (
            [ev("RolloutResumed"), ev("StepCompleted")],
            {},
            {},
            None,
            ["on-rollout-resumed", "on-rollout-step-completed"],
        ),
        ([ev("RolloutPromoted")], {}, {}, None, ["on-rollout-promoted"]),
        ([ev("RolloutAborted")], {}, {}, None, ["on-rollout-aborted"]),
        ([ev("AnalysisRunFailed")], {}, {}, None, ["on-analysis-run-failed"]),
        ([ev("RolloutRetried")], {}, {}, None, ["on-rollout-retried"]),
        ([ev("ProgressDeadlineExceeded")], {}, {}, None, ["on-progress-deadline-exceeded"]),
        # an Event telling of an action (a weight set) is no transition of the Rollout
        ([ev("TrafficWeightSet", action=True), ev("AnalysisRunCreated", action=True)], {}, {}, None, []),
        ([ev("RolloutHealthy"), ev("RolloutProgressing")], {}, {}, None, []),
        # an inconclusive analysis pauses the rollout: paused, and inconclusive, once
        (
            [ev("RolloutPaused")],
            {},
            {"pauseConditions": [{"reason": "InconclusiveAnalysisRun"}], "message": "m"},
            None,
            ["on-rollout-paused", "on-analysis-run-inconclusive"],
        ),
        (
            [],
            {"pauseConditions": [{"reason": "InconclusiveAnalysisRun"}]},
            {"pauseConditions": [{"reason": "InconclusiveAnalysisRun"}]},
            None,
            [],
        ),
        # completed: once per revision, however often the condition flickers
        (
            [],
            {"conditions": NOT_COMPLETE},
            {"conditions": COMPLETE, "currentPodHash": V2},
            V1,
            ["on-rollout-completed"],
        ),
        ([], {"conditions": NOT_COMPLETE}, {"conditions": COMPLETE, "currentPodHash": V2}, V2, []),
        ([], {}, {"conditions": NOT_COMPLETE, "currentPodHash": V2}, V1, []),
    ],
)
def test_triggers_come_from_the_passes_events_and_status(
    events: list[Event],
    old: dict[str, Any],
    new: dict[str, Any],
    completed_revision: str | None,
    expected: list[str],
) -> None:
    assert [t.trigger for t in transitions(events, old, new, completed_revision)] == expected


# --------------------------------------------------------------------------- the outbox


def test_no_subscriptions_no_outbox() -> None:
    assert outbox({}, [ev("RolloutAborted")], {}, {}, frozenset(), "t") == (None, 0)


def test_each_transition_is_recorded_once_per_subscribed_destination() -> None:
    annotations = {
        SUB + "on-rollout-aborted.slack": "a;b",
        SUB + "on-rollout-aborted.hook": "",
        SUB + "on-rollout-paused.hook": "",
    }
    new = {"currentPodHash": V2, "currentStepIndex": 1}
    notes, dropped = outbox(
        annotations, [ev("RolloutAborted")], {}, new, frozenset(), "2026-01-01T00:00:00Z", steps=3
    )
    assert dropped == 0
    assert notes == {
        "seq": 1,
        "pending": [
            {
                "id": 1,
                "trigger": "on-rollout-aborted",
                "reason": "RolloutAborted",
                "message": "RolloutAborted message",
                "time": "2026-01-01T00:00:00Z",
                "destinations": ["hook:", "slack:a", "slack:b"],
                "revision": V2,
                "step": 2,
            }
        ],
    }


def test_delivered_destinations_leave_the_outbox_and_ids_keep_counting() -> None:
    annotations = {SUB + "on-rollout-paused.hook": ""}
    old = {
        "notifications": {
            "seq": 4,
            "pending": [
                {
                    "id": 3,
                    "trigger": "on-rollout-paused",
                    "reason": "r",
                    "message": "m",
                    "time": "t",
                    "destinations": ["hook:", "slack:x"],
                },
                {
                    "id": 4,
                    "trigger": "on-rollout-paused",
                    "reason": "r",
                    "message": "m",
                    "time": "t",
                    "destinations": ["hook:"],
                },
            ],
        }
    }
    notes, _ = outbox(annotations, [ev("RolloutPaused")], old, {}, frozenset({"3/hook:", "4/hook:"}), "t")
    assert notes is not None
    assert [(i["id"], i["destinations"]) for i in notes["pending"]] == [(3, ["slack:x"]), (5, ["hook:"])]
    assert notes["seq"] == 5


def test_subscriptions_added_to_a_complete_rollout_do_not_tell_its_completion_again() -> None:
    annotations = {SUB + "on-rollout-completed.hook": ""}
    old = {"conditions": COMPLETE, "currentPodHash": V1}
    notes, _ = outbox(annotations, [], old, {"conditions": COMPLETE, "currentPodHash": V1}, frozenset(), "t")
    assert notes == {"seq": 0, "pending": [], "completedRevision": V1}
    # ... and the next revision's completion is told
    notes, _ = outbox(
        annotations,
        [],
        {**old, "notifications": notes},
        {"conditions": COMPLETE, "currentPodHash": V2},
        frozenset(),
        "t",
    )
    assert notes is not None and [i["trigger"] for i in notes["pending"]] == ["on-rollout-completed"]
    assert notes["completedRevision"] == V2


def test_the_outbox_is_bounded_oldest_dropped() -> None:
    annotations = {SUB + "on-rollout-paused.hook": ""}
    pending = [
        {
            "id": i,
            "trigger": "on-rollout-paused",
            "reason": "r",
            "message": "m",
            "time": "t",
            "destinations": ["hook:"],
        }
        for i in range(1, MAX_PENDING + 1)
    ]
    old = {"notifications": {"seq": MAX_PENDING, "pending": pending}}
    notes, dropped = outbox(annotations, [ev("RolloutPaused")], old, {}, frozenset(), "t")
    assert dropped == 1 and notes is not None
    assert [i["id"] for i in notes["pending"]][:1] == [2] and len(notes["pending"]) == MAX_PENDING


def test_the_planner_records_a_pause_in_the_status_it_writes_and_drops_what_was_delivered() -> None:
    r = canary_rollout()
    r = r.model_copy(
        update={
            "metadata": r.metadata.model_copy(update={"annotations": {SUB + "on-rollout-paused.hook": ""}}),
            "status": type(r.status).model_validate(
                {
                    "stableRS": V1,
                    "currentPodHash": V2,
                    "currentStepIndex": 1,
                    "currentStepHash": steps_hash(r),
                }
            ),
        }
    )
    obs = observed(
        r, [rs("web:1", 4), rs("web:2", 1, revision=2)], {"web-stable": V1, "web-canary": V2}, istio(25)
    )
    first = plan(obs)
    assert first.status.phase == "Paused"
    pending = first.status.wire()["notifications"]["pending"]
    assert [(i["trigger"], i["step"], i["destinations"]) for i in pending] == [
        ("on-rollout-paused", 2, ["hook:"])
    ]
    # the next pass, told the delivery is done, removes it, and tells nothing new
    again = replace(
        obs,
        rollout=r.model_copy(update={"status": type(r.status).model_validate(first.status)}),
        notified=frozenset({"1/hook:"}),
    )
    assert plan(again).status.wire()["notifications"] == {"seq": 1, "pending": []}


def test_a_blue_green_preview_pause_is_told_too() -> None:
    r = bg_rollout(
        autoPromotionEnabled=False, previewReplicaCount=1, status={"stableRS": V1, "currentPodHash": V2}
    )
    r = r.model_copy(
        update={
            "metadata": r.metadata.model_copy(
                update={"annotations": {SUB + "on-rollout-paused.teams": "ops"}}
            )
        }
    )
    p = plan(observed(r, [rs("web:1", 3), rs("web:2", 1, revision=2)], {"web-active": V1, "web-preview": V2}))
    assert p.status.phase == "Paused"
    pending = p.status.wire()["notifications"]["pending"]
    assert [(i["trigger"], i["destinations"], "step" in i) for i in pending] == [
        ("on-rollout-paused", ["teams:ops"], False)
    ]


# --------------------------------------------------------------------------- templates


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{.rollout.metadata.name}} in {{ .rollout.metadata.namespace }}", "web in shop"),
        ("{{.recipient}}/{{.notification.step}}", "deploys/2"),
        ("{{.rollout.spec.strategy.canary.steps.0.setWeight}}", "10"),
        ("{{.rollout.metadata.missing}}|", "|"),
        ("{{.rollout.metadata.labels}}", '{"app":"web"}'),
        ("no actions", "no actions"),
    ],
)
def test_templates_substitute_field_references(template: str, expected: str) -> None:
    ctx = {
        "rollout": {
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {"strategy": {"canary": {"steps": [{"setWeight": 10}]}}},
        },
        "recipient": "deploys",
        "notification": {"step": 2},
    }
    assert render(template, ctx) == expected


@pytest.mark.parametrize("template", ["{{range .rollout.spec}}x{{end}}", "{{.a | upper}}", "{{ if .a }}"])
def test_other_template_actions_are_refused_not_half_rendered(template: str) -> None:
    with pytest.raises(NotificationError, match="not supported"):
        render(template, {})


# --------------------------------------------------------------------------- services and requests

ROLLOUT = {"metadata": {"name": "web", "namespace": "shop", "uid": "u1"}}
ITEM = {
    "id": 7,
    "trigger": "on-rollout-aborted",
    "reason": "RolloutAborted",
    "message": "aborted revision abc",
    "time": "t",
    "revision": "abc",
    "step": 2,
}


def request_for(data: dict[str, str], destination: str, secret: dict[str, str] | None = None) -> Any:
    return build_request(parse_config(data, secret or {}), ROLLOUT, ITEM, destination)[0]


def test_a_webhook_gets_a_json_body_by_default_with_its_headers_and_secrets() -> None:
    req = request_for(
        {"service.webhook.audit": "url: $audit-url\nheaders:\n- name: X-Token\n  value: $token\n"},
        "audit:",
        {"audit-url": "http://127.0.0.1:9/hook", "token": "s3cret"},
    )
    assert (req.method, req.url) == ("POST", "http://127.0.0.1:9/hook")
    assert ("X-Token", "s3cret") in req.headers and ("Content-Type", "application/json") in req.headers
    assert json.loads(req.body) == {
        "id": "u1-7",
        "trigger": "on-rollout-aborted",
        "reason": "RolloutAborted",
        "message": "aborted revision abc",
        "time": "t",
        "revision": "abc",
        "step": 2,
        "namespace": "shop",
        "rollout": "web",
        "recipient": "",
        "text": "Rollout shop/web: rollout aborted: aborted revision abc",
    }


def test_a_webhook_template_sets_method_path_and_body_as_argos_does() -> None:
    req = request_for(
        {
            "service.webhook.audit": "url: http://h/base\n",
            "template.rollout-aborted": "webhook:\n  audit:\n    method: PUT\n"
            "    path: /r/{{.rollout.metadata.name}}\n"
            '    body: \'{"r": "{{.rollout.metadata.name}}"}\'\n',
        },
        "audit:",
    )
    assert (req.method, req.url, req.body) == ("PUT", "http://h/base/r/web", '{"r": "web"}')


def test_slack_posts_the_message_to_the_recipients_incoming_webhook() -> None:
    data = {
        "service.slack": "recipientUrls:\n  deploys: $slack-deploys\nusername: tidegate\nicon: ':ocean:'\n",
        "template.rollout-aborted": "message: '{{.rollout.metadata.name}} aborted'\nslack:\n"
        '  attachments: \'[{"title": "{{.rollout.metadata.name}}"}]\'\n',
    }
    req = request_for(data, "slack:deploys", {"slack-deploys": "http://slack.local/T/B/x"})
    assert req.url == "http://slack.local/T/B/x"
    assert json.loads(req.body) == {
        "text": "web aborted",
        "attachments": [{"title": "web"}],
        "username": "tidegate",
        "icon_emoji": ":ocean:",
    }


def test_teams_gets_a_message_card() -> None:
    data = {
        "service.teams": "recipientUrls:\n  ops: http://teams.local/hook\n",
        "template.rollout-aborted": "message: m\nteams:\n  title: '{{.rollout.metadata.name}}'\n"
        '  facts: \'[{"name": "step", "value": "{{.notification.step}}"}]\'\n',
    }
    body = json.loads(request_for(data, "teams:ops").body)
    assert body == {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "text": "m",
        "title": "web",
        "summary": "web",
        "sections": [{"facts": [{"name": "step", "value": "2"}]}],
    }


@pytest.mark.parametrize(
    ("data", "destination", "secret", "error"),
    [
        (
            {},
            "slack:deploys",
            {},
            "service 'slack' is not configured in ConfigMap tidegate-notification-configmap",
        ),
        ({"service.slack": "token: $t"}, "slack:x", {"t": "x"}, "Slack's API token is not supported"),
        (
            {"service.slack": "recipientUrls: {a: 'http://x'}"},
            "slack:b",
            {},
            "no recipientUrls entry for recipient 'b'",
        ),
        (
            {"service.webhook.h": "url: $nope"},
            "h:",
            {},
            r"\$nope is not a key of Secret tidegate-notification-secret",
        ),
        (
            {
                "service.webhook.h": "url: http://x",
                "trigger.on-rollout-aborted": "- send: [x]\n  when: 'true'",
            },
            "h:",
            {},
            "when is not supported",
        ),
        (
            {"service.webhook.h": "url: http://x", "trigger.on-rollout-aborted": "- send: [nope]"},
            "h:",
            {},
            "template 'nope'",
        ),
        ({"service.email": "host: x"}, "email:a", {}, "service type 'email' is not supported"),
        # a broken service is named in the failure of its own subscribers only
        ({"service.webhook.myslack": "url: $gone"}, "slack:a", {}, "service 'slack' is not configured"),
        ({"service.webhook.myslack": "url: $gone"}, "myslack:", {}, r"service.webhook.myslack: \$gone"),
    ],
)
def test_configuration_problems_say_what_is_wrong(
    data: dict[str, str], destination: str, secret: dict[str, str], error: str
) -> None:
    with pytest.raises(NotificationError, match=error):
        request_for(data, destination, secret)


def test_retry_delays_double_up_to_the_cap() -> None:
    assert [Retry(3, 1.0, 5.0).delay(n) for n in range(1, 5)] == [1.0, 2.0, 4.0, 5.0]
    config = parse_config(
        {
            "service.webhook.h": "url: http://x\nretryMax: 5\nretryWaitMin: 100ms\n"
            "retryWaitMax: 1s\ntimeout: 2s"
        },
        {},
    )
    assert (config.services["h"].retry, config.services["h"].timeout) == (Retry(5, 0.1, 1.0), 2.0)


# --------------------------------------------------------------------------- delivery lanes


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []
        self.failed: list[tuple[int, str, int, bool, str]] = []

    def sent_(self, body: Any, item: Any, destination: str, seconds: float) -> None:
        self.sent.append((item["id"], destination))

    def failed_(
        self, body: Any, item: Any, destination: str, why: str, attempt: int, final: bool, seconds: float
    ) -> None:
        self.failed.append((item["id"], destination, attempt, final, why))


class _Reporter:
    def __init__(self, r: Recorder) -> None:
        self.sent, self.failed = r.sent_, r.failed_


def body_with(pending: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": "web", "uid": "u1"},
        "status": {"notifications": {"seq": 9, "pending": pending}},
    }


def owed(i: int, *dests: str) -> dict[str, Any]:
    return {**ITEM, "id": i, "destinations": list(dests)}


CONFIG = {
    "service.webhook.h": "url: http://hook.local/\nretryMax: 2\n",
    "service.webhook.g": "url: http://other.local/\n",
}


def run_notifier(
    handler: Any, offers: list[dict[str, Any]], config: dict[str, str] | None = None
) -> tuple[Recorder, list[float], list[tuple[str, str]], frozenset[str]]:
    rec, sleeps, woken = Recorder(), [], []

    async def go() -> frozenset[str]:
        async def load() -> Any:
            return parse_config(config or CONFIG, {})

        async def sleep(seconds: float) -> None:
            sleeps.append(seconds)

        n = Notifier(
            load,
            _Reporter(rec),
            lambda ns, name: woken.append((ns, name)),
            httpx.MockTransport(handler),
            sleep,
        )
        for body in offers:
            n.offer(body)
            n.offer(body)  # offered twice (every pass offers): queued once
        for _ in range(200):
            await asyncio.sleep(0)
            if n.idle():
                break
        done = n.notified("shop", "web")
        await n.stop()
        return done

    done = asyncio.run(go())
    return rec, sleeps, woken, done


def test_deliveries_go_out_once_in_order_and_are_reported_done() -> None:
    seen: list[tuple[str, int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        note_id = json.loads(request.content)["id"]  # "<uid>-<seq>": what a receiver dedupes by
        seen.append((request.url.host, int(note_id.split("-")[1])))
        return httpx.Response(200)

    rec, sleeps, woken, done = run_notifier(handler, [body_with([owed(1, "h:", "g:"), owed(2, "h:")])])
    assert [i for host, i in seen if host == "hook.local"] == [1, 2]
    assert sorted(rec.sent) == [(1, "g:"), (1, "h:"), (2, "h:")] and rec.failed == [] and sleeps == []
    assert done == {"1/h:", "1/g:", "2/h:"} and set(woken) == {("shop", "web")}


def test_a_5xx_is_retried_with_backoff_then_given_up_each_failure_reported() -> None:
    rec, sleeps, _, done = run_notifier(
        lambda r: httpx.Response(500, text="boom"), [body_with([owed(1, "h:")])]
    )
    assert [(a, final) for _, _, a, final, _ in rec.failed] == [(1, False), (2, False), (3, True)]
    assert "HTTP 500 from the service: boom" in rec.failed[0][4]
    assert sleeps == [1.0, 2.0] and rec.sent == [] and done == {"1/h:"}  # given up: it leaves the outbox


def test_a_failure_then_success_is_delivered_once() -> None:
    answers = iter([httpx.Response(503), httpx.Response(200)])
    rec, sleeps, _, _ = run_notifier(lambda r: next(answers), [body_with([owed(1, "h:")])])
    assert rec.sent == [(1, "h:")] and [f[2] for f in rec.failed] == [1] and sleeps == [1.0]


def test_a_4xx_is_not_retried_nor_is_a_configuration_problem() -> None:
    rec, sleeps, _, _ = run_notifier(
        lambda r: httpx.Response(404), [body_with([owed(1, "h:"), owed(2, "slack:x")])]
    )
    assert sorted((i, final) for i, _, _, final, _ in rec.failed) == [(1, True), (2, True)] and sleeps == []


def test_a_delivery_acknowledged_in_status_is_forgotten_and_never_sent_again() -> None:
    rec, _, _, done = run_notifier(lambda r: httpx.Response(200), [body_with([owed(1, "h:")]), body_with([])])
    assert rec.sent == [(1, "h:")] and done == frozenset()


def test_a_hanging_destination_holds_only_its_own_lane() -> None:
    async def go() -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
        rec = Recorder()
        release = asyncio.Event()

        async def handler(request: httpx.Request) -> httpx.Response:
            if request.url.host == "other.local":  # service g hangs until released
                await release.wait()
            return httpx.Response(200)

        async def load() -> Any:
            return parse_config(CONFIG, {})

        n = Notifier(load, _Reporter(rec), lambda ns, name: None, httpx.MockTransport(handler))
        n.offer(body_with([owed(1, "g:", "h:"), owed(2, "g:", "h:")]))
        for _ in range(100):
            await asyncio.sleep(0)
        while_hanging = list(rec.sent)
        release.set()
        for _ in range(100):
            await asyncio.sleep(0)
            if n.idle():
                break
        await n.stop()
        return while_hanging, rec.sent

    while_hanging, sent = asyncio.run(go())
    assert while_hanging == [(1, "h:"), (2, "h:")]
    assert sent == [(1, "h:"), (2, "h:"), (1, "g:"), (2, "g:")]

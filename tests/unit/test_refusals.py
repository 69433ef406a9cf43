"""A write the API server refuses is InvalidSpec naming the spec field and quoting the API
server (k8s/execute), written once: the next pass, refused alike, writes nothing. The API
server's own trouble (5xx, 429) is raised, for the retry with backoff."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest

from tests.unit.planner_fixtures import canary_rollout
from tidegate.api.rollout import RolloutStatus
from tidegate.core.model import Plan, ScaleReplicaSet, SetPodMetadata
from tidegate.k8s.client import ApiException
from tidegate.k8s.execute import execute

API_WORDS = (
    'ReplicaSet.apps "web-abc" is invalid: metadata.labels: Invalid value: "équipe": a valid label ...'
)


class FakeClients:
    """The few client methods execute() calls; a patch of a ReplicaSet is refused with `code`."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.status_writes: list[dict[str, Any]] = []
        self.apps = SimpleNamespace(patch_namespaced_replica_set=self._refuse)
        self.core = SimpleNamespace()
        self.custom = SimpleNamespace(patch_namespaced_custom_object_status=self._write_status)

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise ApiException(status=self.code, reason="Unprocessable", body=json.dumps({"message": API_WORDS}))

    def _write_status(
        self, group: str, version: str, ns: str, plural: str, name: str, body: Any, **kw: Any
    ) -> Any:
        self.status_writes.append(body["status"])
        obj = {"metadata": {"name": name, "namespace": ns, "resourceVersion": "2"}, "status": body["status"]}
        return SimpleNamespace(data=json.dumps(obj))


class FakeCache:
    def put(self, store: Any, obj: Any) -> None:
        pass


async def _no_emit(event: Any) -> None:
    pass


def run(clients: FakeClients, raw_status: dict[str, Any], action: Any) -> Any:
    rollout = canary_rollout()
    raw = {"metadata": {"name": "web", "namespace": "shop", "resourceVersion": "1"}, "status": raw_status}
    planned = {"phase": "Healthy", "message": "healthy", "conditions": [], "observedGeneration": 1}
    plan = Plan(actions=(action,), status=RolloutStatus.model_validate(planned))
    return asyncio.run(execute(clients, FakeCache(), rollout, raw, plan, None, _no_emit))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("action", "field", "what"),
    [
        (ScaleReplicaSet("web-abc", 3), "spec.replicas", "scaling ReplicaSet web-abc to 3"),
        (
            SetPodMetadata("web-abc", "abc", (("team", "équipe"),), ()),
            "spec.strategy.canary.canaryMetadata/stableMetadata",
            "the pod metadata of ReplicaSet web-abc",
        ),
    ],
)
@pytest.mark.parametrize("code", [400, 403, 422])
def test_a_refused_write_is_invalid_spec_naming_the_field_and_quoting_the_api_server(
    action: Any, field: str, what: str, code: int
) -> None:
    clients = FakeClients(code)
    outcome = run(clients, {}, action)
    keeps = "(the running version keeps serving)"
    assert outcome.refused == f"invalid spec: {field}: the API server refused {what}: {API_WORDS} {keeps}"
    [written] = clients.status_writes
    assert written["phase"] == "Degraded" and written["message"] == outcome.refused
    invalid = next(c for c in written["conditions"] if c["type"] == "InvalidSpec")
    assert invalid["status"] == "True"
    assert [(e.reason, e.type) for e in outcome.events] == [("InvalidSpec", "Warning")]
    # The next pass is refused alike: same status, so nothing is written (no write, no event loop).
    again = FakeClients(code)
    second = run(again, {**written}, action)
    assert second.refused == outcome.refused and second.patch == {} and again.status_writes == []
    assert second.events == []  # the Event was posted with the first refusal


@pytest.mark.parametrize("code", [500, 503, 429, 409])
def test_the_api_servers_own_trouble_is_raised_for_a_retry(code: int) -> None:
    clients = FakeClients(code)
    with pytest.raises(ApiException):
        run(clients, {}, ScaleReplicaSet("web-abc", 3))
    assert clients.status_writes == []

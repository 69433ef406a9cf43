"""Hostile specs on the sandbox: no input makes the operator loop hot or stall in silence
(README, "What the schema refuses").

- Out-of-bounds values (a name over 52 characters, int32 fields past int32, a pause of
  99999999999999999999h, a restartAt that is not a time) are refused by the API server with
  the field named, and the stable version's ReplicaSet keeps serving.
- A restartAt in the future evicts nothing and the operator's requests for that Rollout stay
  few (counted in the sandbox's audit log); once the time comes, the restart runs.
- A ReplicaSet the API server refuses (a non-ASCII label value in the pod template) makes the
  Rollout InvalidSpec (Degraded) with a Warning Event quoting the API server, the stable keeps
  serving, and the refused create is not retried in a loop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.kube import Kube, wait_until

pytestmark = pytest.mark.sandbox

INT32_MAX = 2**31 - 1
OPERATOR_AGENTS = ("tidegate-operator", "kopf")
"""The operator's two clients, by user agent: its `kubernetes` client and kopf's aiohttp."""


def rollout(
    name: str = "web", image: str = "registry.example/web:1", app: str = "web", **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{"name": "web", "image": image}]},
            },
            "strategy": {"canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "1s"}}]}},
            **spec,
        },
    }


def healthy(kube: Kube, doc: dict[str, Any]) -> dict[str, Any]:
    """Apply, wait for Healthy; the stable ReplicaSet (with its pods ready)."""
    kube.apply(doc)
    st = kube.wait_phase(doc["metadata"]["name"], "Healthy", timeout=90)
    return stable_rs(kube, doc["metadata"]["name"], st["stableRS"])


def stable_rs(kube: Kube, name: str, pod_hash: str) -> dict[str, Any]:
    rs = kube.get("replicasets", f"{name}-{pod_hash}")
    assert (rs.get("status") or {}).get("readyReplicas") == rs["spec"]["replicas"] == 2, rs.get("status")
    return rs


def apply_refused(kube: Kube, doc: dict[str, Any]) -> str:
    """kubectl apply, which must fail; the API server's words."""
    proc = kube.kubectl("apply", "-f", "-", input=json.dumps(doc), check=False)
    assert proc.returncode != 0, f"accepted: {json.dumps(doc['spec'])[:300]}"
    return proc.stderr


def condition(kube: Kube, name: str, kind: str) -> dict[str, Any]:
    st = kube.status(name)
    return next((c for c in st.get("conditions") or [] if c.get("type") == kind), {})


# --- the operator's requests, from the API server's audit log ---------------------------------


def operator_requests(kube: Kube, since: float, until: float | None = None) -> list[dict[str, Any]]:
    """The operator's completed requests about this namespace received in [since, until)
    (watches left out: they are long-running, not polling)."""
    out = []
    with open(kube.sandbox.logs / "audit.log") as log:
        for line in log:
            if kube.namespace not in line or '"ResponseComplete"' not in line:
                continue
            event = json.loads(line)
            if event.get("stage") != "ResponseComplete" or event.get("verb") == "watch":
                continue
            if (event.get("objectRef") or {}).get("namespace") != kube.namespace:
                continue
            if not str(event.get("userAgent") or "").startswith(OPERATOR_AGENTS):
                continue
            received = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
            t = received.timestamp()
            if t >= since and (until is None or t < until):
                out.append(event)
    return out


def brief(events: list[dict[str, Any]]) -> list[str]:
    return [
        f"{e['verb']} {(e.get('objectRef') or {}).get('resource')}"
        f"/{(e.get('objectRef') or {}).get('subresource') or ''} {e['responseStatus'].get('code')}"
        for e in events
    ]


def quiet_for(seconds: float) -> Callable[[], bool]:
    """A deadline check for wait_until: True once `seconds` have passed."""
    end = time.monotonic() + seconds
    return lambda: time.monotonic() >= end


SETTLE, TAIL = 5.0, 10.0
"""Seconds the operator has to notice a change, then the seconds in which it must be quiet."""


def observe_requests(
    kube: Kube, start: float, what: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The operator's requests since `start`, until SETTLE + TAIL seconds from now: (all of them,
    those of the last TAIL seconds)."""
    settled = time.time() + SETTLE
    wait_until(lambda: time.time() >= settled, SETTLE + 5, interval=0.5, what="settling")
    wait_until(quiet_for(TAIL), TAIL + 5, interval=1, what="the observation window")
    end = time.time()
    every = operator_requests(kube, start, end)
    tail = [e for e in every if _received(e) >= settled]
    took = end - start
    print(f"\n{what}: {len(every)} operator requests in {took:.1f}s ({len(every) / took:.2f}/s)")
    print(f"  {len(tail)} in the last {end - settled:.1f}s; all: {brief(every)}")
    return every, tail


def _received(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()


# --- the API server refuses, naming the field --------------------------------------------------


def test_out_of_bounds_specs_are_refused_by_the_api_server_naming_the_field(kube: Kube) -> None:
    doc = rollout()
    stable = healthy(kube, doc)
    long_name = "w" * 53
    refused = apply_refused(kube, rollout(name=long_name, app="long"))
    assert "metadata.name must be at most 52 characters" in refused, refused
    assert kube.get_or_none("rollouts.tidegate.io", long_name) is None
    fits = rollout(name="w" * 52, app="long")
    fits["metadata"] |= {"labels": {"team": "web"}, "annotations": {"notifications.tidegate.io/x": "kept"}}
    assert healthy(kube, fits)  # the longest name that fits runs
    # The schema declares metadata.name (for the rule's fieldPath); the rest of metadata is kept.
    meta = kube.rollout("w" * 52)["metadata"]
    assert meta["labels"] == {"team": "web"} and meta["annotations"]["notifications.tidegate.io/x"] == "kept"

    def canary_with(**fields: Any) -> dict[str, Any]:
        d = rollout()
        d["spec"]["strategy"]["canary"].update(fields)
        return d

    cases: list[tuple[dict[str, Any], str, str]] = [
        (rollout(minReadySeconds=INT32_MAX + 1), "spec.minReadySeconds", "2147483647"),
        (rollout(progressDeadlineSeconds=INT32_MAX + 1), "spec.progressDeadlineSeconds", "2147483647"),
        (rollout(replicas=INT32_MAX + 1), "spec.replicas", "2147483647"),
        (rollout(revisionHistoryLimit=10**12), "spec.revisionHistoryLimit", "2147483647"),
        (
            canary_with(
                scaleDownDelaySeconds=10**12,
                stableService="web-stable",
                canaryService="web-canary",
                trafficRouting={"istio": {"virtualService": {"name": "web"}}},
            ),
            "spec.strategy.canary.scaleDownDelaySeconds",
            "2147483647",
        ),
        (
            canary_with(steps=[{"setWeight": 50}, {"pause": {"duration": "99999999999999999999h"}}]),
            "spec.strategy.canary.steps[1].pause.duration",
            "duration must be at most a year",
        ),
        (
            canary_with(steps=[{"pause": {"duration": 31536001}}]),
            "spec.strategy.canary.steps[0].pause.duration",
            "duration must be at most a year",
        ),
        (
            rollout(restartAt="2024-13-45Tgarbage"),
            "spec.restartAt",
            "restartAt must be an RFC 3339 time",
        ),
    ]
    for bad, field, words in cases:
        message = apply_refused(kube, bad)
        assert field in message and words in message, (field, message)
    # None of them reached the operator: the stable ReplicaSet serves as before, untouched.
    after = stable_rs(kube, "web", stable["metadata"]["labels"]["rollouts-pod-template-hash"])
    assert after["metadata"]["resourceVersion"] == stable["metadata"]["resourceVersion"]
    assert kube.status("web")["phase"] == "Healthy"


# --- restartAt in the future ----------------------------------------------------------------


def test_a_restart_at_in_the_future_evicts_nothing_until_its_time_and_the_requests_stay_few(
    kube: Kube,
) -> None:
    doc = rollout()
    healthy(kube, doc)
    pods = {p["metadata"]["name"] for p in kube.list("pods", "app=web")}
    start = time.time()
    kube.patch("rollouts.tidegate.io", "web", {"spec": {"restartAt": "2999-01-01T00:00:00Z"}})
    requests, tail = observe_requests(kube, start, "restartAt 2999")
    evictions = [e for e in requests if (e.get("objectRef") or {}).get("subresource") == "eviction"]
    assert evictions == [], brief(evictions)
    # A handful for noticing the change (its status write), then nothing at all.
    assert len(requests) <= 5, brief(requests)
    assert tail == [], brief(tail)
    assert kube.rollout("web")["status"].get("observedGeneration") == 2
    assert {p["metadata"]["name"] for p in kube.list("pods", "app=web")} == pods
    st = kube.status("web")
    assert st["phase"] == "Healthy" and st.get("restartedAt") is None, st
    reasons = {e.get("reason") for e in kube.list("events")}
    assert not reasons & {"RestartStarted", "RestartCompleted"}, reasons

    # A restartAt a few seconds ahead: waited for, then carried out.
    at = (datetime.now(UTC) + timedelta(seconds=8)).replace(microsecond=0)
    stamp = at.isoformat().replace("+00:00", "Z")
    kube.patch("rollouts.tidegate.io", "web", {"spec": {"restartAt": stamp}})
    wait_until(
        lambda: kube.status("web").get("restartedAt") == stamp,
        90,
        what=f"the restart at {stamp} carried out (status: {kube.status('web')})",
    )
    evicted = [
        e
        for e in operator_requests(kube, start)
        if (e.get("objectRef") or {}).get("subresource") == "eviction"
    ]
    assert evicted, "the restart evicted the old pods"
    first = min(datetime.fromisoformat(e["requestReceivedTimestamp"].replace("Z", "+00:00")) for e in evicted)
    assert first >= at, f"an eviction at {first}, before restartAt {at}"
    assert not pods & {p["metadata"]["name"] for p in kube.list("pods", "app=web")}


# --- a ReplicaSet the API server refuses ------------------------------------------------------


def test_a_replica_set_the_api_server_refuses_is_invalid_spec_and_the_stable_keeps_serving(
    kube: Kube,
) -> None:
    doc = rollout()
    stable = healthy(kube, doc)
    stable_hash = stable["metadata"]["labels"]["rollouts-pod-template-hash"]
    # The Rollout's template is kept as written (preserve-unknown-fields); a label value that is
    # not ASCII is the ReplicaSet's to refuse.
    doc["spec"]["template"]["metadata"]["labels"]["team"] = "équipe"
    doc["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example/web:2"
    start = time.time()
    kube.apply(doc)

    def invalid() -> dict[str, Any] | None:
        c = condition(kube, "web", "InvalidSpec")
        return c if c.get("status") == "True" else None

    found = wait_until(invalid, 60, what=f"InvalidSpec (status: {kube.status('web')})")
    message = found["message"]
    assert message.startswith("invalid spec: spec.template: the API server refused ReplicaSet web-"), message
    assert "labels: Invalid value" in message and "équipe" in message, message  # the API server's words
    assert kube.status("web")["phase"] == "Degraded"
    warnings = wait_until(
        lambda: [
            e for e in kube.list("events") if e.get("reason") == "InvalidSpec" and e.get("type") == "Warning"
        ],
        30,
        what="a Warning Event",
    )
    assert "spec.template" in warnings[0]["message"]

    # No retry loop: a handful of creates, then quiet; the stable serves throughout.
    requests, tail = observe_requests(kube, start, "refused ReplicaSet")
    creates = [e for e in requests if e["verb"] == "create" and e["objectRef"]["resource"] == "replicasets"]
    assert 1 <= len(creates) <= 3, brief(creates)
    assert tail == [], brief(tail)
    # One Warning, not one per refused pass (the other Event posted is NewRevision's).
    posted = [e for e in requests if e["verb"] == "create" and e["objectRef"]["resource"] == "events"]
    assert len(posted) <= 2, brief(posted)
    invalid_events = [e for e in kube.list("events") if e.get("reason") == "InvalidSpec"]
    assert len(invalid_events) == 1 and invalid_events[0].get("count", 1) == 1, invalid_events
    assert stable_rs(kube, "web", stable_hash)
    assert [rs["metadata"]["name"] for rs in kube.replica_sets("web")] == [f"web-{stable_hash}"]

    # A fixed spec goes on from there.
    doc["spec"]["template"]["metadata"]["labels"]["team"] = "equipe"
    kube.apply(doc)
    kube.wait_phase("web", "Healthy", timeout=90)
    assert condition(kube, "web", "InvalidSpec").get("status") == "False"


def test_a_first_revision_the_api_server_refuses_gets_a_status_not_silence(kube: Kube) -> None:
    doc = rollout(name="fresh")
    doc["spec"]["template"]["metadata"]["labels"]["team"] = "équipe"
    kube.apply(doc)
    st = kube.wait_phase("fresh", "Degraded", timeout=60)
    assert "spec.template: the API server refused ReplicaSet fresh-" in st["message"], st["message"]
    assert kube.replica_sets("fresh") == []


def test_role_metadata_the_api_server_refuses_is_invalid_spec_and_the_stable_keeps_serving(
    kube: Kube,
) -> None:
    doc = rollout()
    stable = healthy(kube, doc)
    stable_hash = stable["metadata"]["labels"]["rollouts-pod-template-hash"]
    # Patched onto the stable ReplicaSet and its pods in place (no restart): the API server refuses.
    doc["spec"]["strategy"]["canary"]["stableMetadata"] = {"labels": {"role": "écurie"}}
    start = time.time()
    kube.apply(doc)
    st = kube.wait_phase("web", "Degraded", timeout=60)
    field = "spec.strategy.canary.canaryMetadata/stableMetadata"
    assert st["message"].startswith(
        f"invalid spec: {field}: the API server refused the pod metadata of ReplicaSet web-{stable_hash}"
    ), st["message"]
    wait_until(
        lambda: any(
            field in (e.get("message") or "") for e in kube.list("events") if e.get("type") == "Warning"
        ),
        30,
        what="a Warning Event naming the field",
    )
    requests, tail = observe_requests(kube, start, "refused stableMetadata")
    patches = [e for e in requests if e["verb"] == "patch" and e["objectRef"]["resource"] == "replicasets"]
    assert 1 <= len(patches) <= 3, brief(patches)
    assert tail == [], brief(tail)
    after = stable_rs(kube, "web", stable_hash)
    assert "role" not in (after["spec"]["template"]["metadata"].get("labels") or {})
    doc["spec"]["strategy"]["canary"]["stableMetadata"] = {"labels": {"role": "ecurie"}}
    kube.apply(doc)
    kube.wait_phase("web", "Healthy", timeout=60)

"""The Event a pass posts about its Rollout: kopf's shape, a message the API server accepts."""

from __future__ import annotations

from tidegate.k8s.events import COMPONENT, MAX_MESSAGE, event_body

ROLLOUT = {
    "apiVersion": "tidegate.io/v1alpha1",
    "kind": "Rollout",
    "metadata": {"namespace": "team-a", "name": "web", "uid": "u-1"},
}


def test_the_event_names_the_rollout_and_comes_from_tidegate() -> None:
    body = event_body(ROLLOUT, "Normal", "StepCompleted", "step 1/2 done")
    assert body["metadata"] == {"namespace": "team-a", "generateName": "web."}
    assert body["involvedObject"] == {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "Rollout",
        "name": "web",
        "namespace": "team-a",
        "uid": "u-1",
    }
    assert (body["type"], body["reason"], body["message"]) == ("Normal", "StepCompleted", "step 1/2 done")
    assert body["source"] == {"component": COMPONENT} and body["reportingComponent"] == COMPONENT


def test_a_long_message_keeps_its_start_and_end_within_the_limit() -> None:
    message = "a" * 600 + "b" * 600
    cut = event_body(ROLLOUT, "Warning", "InvalidSpec", message)["message"]
    assert len(cut) == MAX_MESSAGE
    assert cut.startswith("a" * 500) and cut.endswith("b" * 500) and "..." in cut

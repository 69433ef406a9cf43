"""The watch-fed cache's bookkeeping: what it stores, what it forgets, whom it wakes.

These drive the exact methods the watch threads hand their events to (`Cache._apply`, on
the event loop); the threads themselves run against the real API server in every e2e test.
"""

from __future__ import annotations

from typing import Any, cast

import pytest

from tidegate.k8s.cache import Cache, rollout_refs, rv_newer, trimmed


def obj(name: str, rv: str, namespace: str = "ns", **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": rv, **meta}}


def rollout(name: str = "web", rv: str = "1", vs: str = "web") -> dict[str, Any]:
    return {
        **obj(name, rv),
        "spec": {
            "strategy": {
                "canary": {
                    "stableService": f"{name}-stable",
                    "canaryService": f"{name}-canary",
                    "trafficRouting": {
                        "istio": {"virtualService": {"name": vs}, "destinationRule": {"name": "dr"}}
                    },
                }
            }
        },
    }


@pytest.fixture
def cache() -> tuple[Cache, list[tuple[str, str]]]:
    woken: list[tuple[str, str]] = []
    c = Cache(cast(Any, None), wake=lambda ns, name: woken.append((ns, name)))
    c.virtualservices = type(c.services)(
        type(c.services.kind)("virtualservices", "x", "v1", "virtualservices")
    )
    return c, woken


@pytest.mark.parametrize(
    ("new", "old", "expected"),
    [("5", None, True), ("5", "5", False), ("6", "5", True), ("4", "5", False), ("abc", "5", True)],
)
def test_only_a_later_state_replaces_what_is_held(new: str, old: str | None, expected: bool) -> None:
    assert rv_newer(obj("a", new), obj("a", old) if old else None) is expected


def test_managed_fields_and_last_applied_are_not_kept() -> None:
    big = obj(
        "a",
        "1",
        managedFields=[{"manager": "kubectl"}],
        annotations={"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "me"},
    )
    small = trimmed(big)
    assert "managedFields" not in small["metadata"]
    assert small["metadata"]["annotations"] == {"keep": "me"}
    assert "managedFields" in big["metadata"], "the watch's object itself is left alone"


def test_a_change_of_a_referenced_object_wakes_the_rollouts_that_name_it(cache: Any) -> None:
    c, woken = cache
    c.put_rollout(rollout("web"), rollout_refs(rollout("web")))
    c.put_rollout(rollout("api", vs="shared"), rollout_refs(rollout("api", vs="shared")))
    c._apply(c.services, "MODIFIED", obj("web-stable", "10"))
    assert woken == [("ns", "web")]
    c._apply(c.virtualservices, "MODIFIED", obj("shared", "11"))
    assert woken[-1] == ("ns", "api")
    c._apply(c.services, "MODIFIED", obj("nobody-uses-me", "12"))
    assert len(woken) == 2


def test_the_echo_of_our_own_write_wakes_nothing(cache: Any) -> None:
    c, woken = cache
    c.put_rollout(rollout("web"), rollout_refs(rollout("web")))
    c.put(c.services, obj("web-stable", "20"))  # the answer to our PATCH
    c._apply(c.services, "MODIFIED", obj("web-stable", "20"))  # the watch event of that PATCH
    assert woken == []
    c._apply(c.services, "MODIFIED", obj("web-stable", "21"))  # someone else's edit
    assert woken == [("ns", "web")]


def test_owned_objects_wake_their_rollout_by_label_and_a_relist_forgets_the_deleted(cache: Any) -> None:
    c, woken = cache
    labels = {"rollout.tidegate.io/name": "web"}
    c._apply(
        c.replicasets,
        "LIST",
        {"items": [obj("web-1", "1", labels=labels), obj("web-2", "2", labels=labels)], "namespace": None},
    )
    assert [r["metadata"]["name"] for r in c.owned(c.replicasets, "ns", "web")] == ["web-1", "web-2"]
    c._apply(c.replicasets, "LIST", {"items": [obj("web-2", "2", labels=labels)], "namespace": None})
    assert [r["metadata"]["name"] for r in c.owned(c.replicasets, "ns", "web")] == ["web-2"]
    assert ("ns", "web") in woken, "the deletion seen on re-list wakes the Rollout"


def test_a_rollout_that_stops_naming_an_object_is_no_longer_woken_by_it(cache: Any) -> None:
    c, woken = cache
    c.put_rollout(rollout("web", "1"), rollout_refs(rollout("web", "1")))
    moved = rollout("web", "2", vs="other")
    c.put_rollout(moved, rollout_refs(moved))
    c._apply(c.virtualservices, "MODIFIED", obj("web", "30"))
    assert woken == []
    c._apply(c.virtualservices, "MODIFIED", obj("other", "31"))
    assert woken == [("ns", "web")]


def test_refs_are_read_from_the_raw_spec_even_when_it_is_invalid() -> None:
    body = rollout("web", vs="team/web")
    body["spec"]["replicas"] = "not a number"
    assert rollout_refs(body) == {
        ("services", "ns", "web-stable"),
        ("services", "ns", "web-canary"),
        ("virtualservices", "team", "web"),
        ("destinationrules", "ns", "dr"),
    }


def test_ready_endpoints_count_each_pod_once_and_an_edit_of_a_slice_wakes_the_service_users(
    cache: Any,
) -> None:
    c, woken = cache
    c.put_rollout(rollout("web"), rollout_refs(rollout("web")))
    label = {"kubernetes.io/service-name": "web-canary"}

    def slice_(name: str, rv: str, *ready: bool | None) -> dict[str, Any]:
        endpoints = [
            {
                "targetRef": {"kind": "Pod", "name": f"pod-{i}"},
                "conditions": {} if r is None else {"ready": r},
            }
            for i, r in enumerate(ready)
        ]
        return {**obj(name, rv, labels=label), "endpoints": endpoints}

    c._apply(c.endpointslices, "ADDED", slice_("web-canary-a", "1", True, False, None))
    assert c.ready_endpoints("ns", "web-canary") == 2, "unset ready counts as ready, False does not"
    c._apply(c.endpointslices, "ADDED", slice_("web-canary-b", "2", True))
    assert c.ready_endpoints("ns", "web-canary") == 2, "pod-0 in two slices counts once"
    assert woken == [("ns", "web"), ("ns", "web")]
    c._apply(c.endpointslices, "DELETED", slice_("web-canary-a", "3"))
    assert c.ready_endpoints("ns", "web-canary") == 1


def test_the_endpoints_of_a_destination_rules_host_wake_the_rollouts_that_use_the_rule(cache: Any) -> None:
    """A subset split reads the host Service's endpoints, which the Rollout never names."""
    c, woken = cache
    c.destinationrules = type(c.services)(
        type(c.services.kind)("destinationrules", "x", "v1", "destinationrules")
    )
    c.put_rollout(rollout("web"), rollout_refs(rollout("web")))
    c._apply(
        c.destinationrules, "ADDED", {**obj("dr", "1"), "spec": {"host": "gateway.ns.svc.cluster.local"}}
    )
    woken.clear()
    slice_ = {
        **obj("gateway-a", "2", labels={"kubernetes.io/service-name": "gateway"}),
        "endpoints": [{"targetRef": {"kind": "Pod", "name": "web-abc-x1"}, "conditions": {"ready": True}}],
    }
    c._apply(c.endpointslices, "ADDED", slice_)
    assert woken == [("ns", "web")]
    assert c.ready_endpoint_pods("ns", "gateway") == frozenset({"web-abc-x1"})
    c._apply(c.destinationrules, "MODIFIED", {**obj("dr", "3"), "spec": {"host": "other"}})
    woken.clear()
    c._apply(
        c.endpointslices, "MODIFIED", {**slice_, **obj("gateway-a", "4", labels=slice_["metadata"]["labels"])}
    )
    assert woken == [], "the rule moved to another host: the old host's endpoints wake no one"


def test_services_are_kept_as_their_selector_only(cache: Any) -> None:
    c, _ = cache
    svc = {
        **obj("web-stable", "5", labels={"x": "y"}),
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    }
    c._apply(c.services, "ADDED", svc)
    assert c.services.get("ns", "web-stable") == {
        "metadata": {"name": "web-stable", "namespace": "ns", "resourceVersion": "5"},
        "spec": {"selector": {"app": "web"}},
    }

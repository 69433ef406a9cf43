"""Blue-green scenarios; a watcher checks the active Service never selects too few available pods."""

from __future__ import annotations

import copy
import time
from typing import Any

from tests.e2e.dsl import _load, given
from tests.kube import Kube, wait_until

SERVICES = "examples/blue-green/services.yaml"
V1 = "registry.example/org/api-gateway:v1.2.2"
V2 = "registry.example/org/api-gateway:v1.2.3"


def bg(**fields: Any) -> dict[str, Any]:
    doc = copy.deepcopy(_load("examples/blue-green/rollout.yaml", "Rollout"))
    doc["spec"]["strategy"]["blueGreen"].update(fields)
    return doc


def selector_hash(kube: Kube, service: str) -> str | None:
    sel = kube.get("service", service)["spec"]["selector"]
    return sel.get("rollouts-pod-template-hash")


def test_first_deploy_goes_straight_to_active(kube: Kube) -> None:
    s = given(kube).objects(SERVICES).rollout(bg()).watched(active_service="api-gateway")
    s.when().applied().then().phase("Healthy")
    st = kube.status("api-gateway")
    assert not st.get("pauseConditions"), "no preview phase on the first deploy"
    assert st["blueGreen"]["activeSelector"] == st["stableRS"] == selector_hash(kube, "api-gateway")
    assert kube.get("service", "api-gateway")["spec"]["selector"]["app"] == "api-gateway", "user's keys kept"
    s.finish()


def test_update_with_manual_promote_and_scale_down_delay(kube: Kube) -> None:
    s = (
        given(kube)
        .objects(SERVICES)
        .rollout(bg(scaleDownDelaySeconds=8))
        .watched(active_service="api-gateway")
    )
    s.when().applied().then().phase("Healthy")
    old = kube.status("api-gateway")["stableRS"]
    t = s.when().image(V2).then().phase("Paused").message_contains("until promoted")
    st = kube.status("api-gateway")
    new = st["currentPodHash"]
    assert [c["reason"] for c in st["pauseConditions"]] == ["BlueGreenPause"]
    assert selector_hash(kube, "api-gateway-preview") == new and st["blueGreen"]["previewSelector"] == new
    assert selector_hash(kube, "api-gateway") == old, "active untouched before promotion"
    t = t.when().promoted().then().holds(lambda: selector_hash(kube, "api-gateway") == new, "active switched")
    switched = time.monotonic()
    t.phase("Healthy").message_contains("scaled down in")
    # The old pods stay for the delay, then go.
    seen = {
        rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs["spec"]["replicas"]
        for rs in kube.replica_sets("api-gateway")
    }
    assert seen == {V1: 3, V2: 3}, f"old pods gone before the delay: {seen}"
    t.replica_sets({V2: 3}, timeout=30)
    assert time.monotonic() - switched >= 6, "old pods scaled down before scaleDownDelaySeconds"
    s.finish()


def test_update_with_auto_promotion_seconds(kube: Kube) -> None:
    s = given(kube).objects(SERVICES).rollout(bg(autoPromotionEnabled=True, autoPromotionSeconds=4))
    s = s.watched(active_service="api-gateway")
    s.when().applied().then().phase("Healthy")
    t = s.when().image(V2).then().message_contains("promoting automatically")
    new = kube.status("api-gateway")["currentPodHash"]
    t.phase("Healthy", timeout=40)
    assert selector_hash(kube, "api-gateway") == new
    s.finish()


def test_abort_then_retry(kube: Kube) -> None:
    s = (
        given(kube)
        .objects(SERVICES)
        .rollout(bg(abortScaleDownDelaySeconds=2))
        .watched(active_service="api-gateway")
    )
    s.when().applied().then().phase("Healthy")
    old = kube.status("api-gateway")["stableRS"]
    t = s.when().image(V2).then().phase("Paused")
    t = t.when().aborted().then().phase("Degraded").message_contains("aborted")
    assert selector_hash(kube, "api-gateway") == old
    t.replica_sets({V1: 3}, timeout=30)
    t = t.when().retried().then().phase("Paused")
    t.replica_sets({V1: 3, V2: 3}, timeout=30)
    t.when().promoted().then().phase("Healthy")
    assert selector_hash(kube, "api-gateway") == kube.status("api-gateway")["currentPodHash"]
    s.finish()


def test_update_during_preview_replaces_the_preview(kube: Kube) -> None:
    s = given(kube).objects(SERVICES).rollout(bg()).watched(active_service="api-gateway")
    s.when().applied().then().phase("Healthy")
    t = s.when().image(V2).then().phase("Paused")
    first_preview = kube.status("api-gateway")["currentPodHash"]
    v3 = "registry.example/org/api-gateway:v1.2.4"
    t = (
        t.when()
        .image(v3)
        .then()
        .holds(
            lambda: kube.status("api-gateway")["currentPodHash"] != first_preview, "a new preview revision"
        )
    )
    t.phase("Paused").replica_sets({V1: 3, v3: 3}, timeout=30)
    assert selector_hash(kube, "api-gateway-preview") == kube.status("api-gateway")["currentPodHash"]
    s.finish()


def test_promote_when_the_new_version_never_becomes_ready(kube: Kube) -> None:
    s = given(kube).objects(SERVICES).rollout(bg()).watched(active_service="api-gateway")
    s.when().applied().then().phase("Healthy")
    old = kube.status("api-gateway")["stableRS"]
    s.doc["spec"]["template"]["spec"]["nodeSelector"] = {"nowhere": "true"}  # type: ignore[index]
    # Not Paused while the preview cannot start: Argo's blue-green pauses only once it is ready.
    t = s.when().image(V2).then().phase("Progressing").message_contains("preview: waiting for 0/3")
    t = t.when().promoted(full=True).then().message_contains("waiting for 0/3 new pods available")
    wait_until(
        lambda: kube.status("api-gateway").get("message", "").startswith("promoting"),
        10,
        what="still waiting",
    )
    assert selector_hash(kube, "api-gateway") == old, "the active Service is untouched"
    s.finish()


def test_missing_active_service_is_a_clear_condition(kube: Kube) -> None:
    s = given(kube).rollout(bg())
    s.when().applied().then().phase("Degraded").message_contains("Service api-gateway not found")
    s.objects(SERVICES).then().phase("Healthy", timeout=40)

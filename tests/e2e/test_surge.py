"""maxSurge holds across superseded revisions (Argo Rollouts' CalculateReplicaCountsForBasicCanary
counts the pods of every ReplicaSet of the Rollout against spec.replicas + maxSurge)."""

from __future__ import annotations

import threading
from typing import Any

from kubernetes import client, config, watch

from tests.e2e.dsl import given
from tests.e2e.test_parity import basic, pods_by_image
from tests.kube import Kube


class ReplicaSetWatch:
    """Every state of the namespace's ReplicaSets as the API server's watch delivers it, and
    the most pods (the sum of spec.replicas) they were ever asked for at once."""

    def __init__(self, kube: Kube) -> None:
        api = client.AppsV1Api(config.new_client_from_config(str(kube.sandbox.kubeconfig)))
        self.namespace = kube.namespace
        self.api = api
        self.replicas: dict[str, int] = {}
        self.most = 0
        self.when_most: dict[str, int] = {}
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ReplicaSetWatch:
        self.thread.start()
        return self

    def _run(self) -> None:
        listed = self.api.list_namespaced_replica_set(self.namespace)
        rv = listed.metadata.resource_version
        for rs in listed.items:
            self._seen(rs.metadata.name, rs.spec.replicas or 0)
        w = watch.Watch()
        while not self.stopped.is_set():
            for event in w.stream(
                self.api.list_namespaced_replica_set, self.namespace, resource_version=rv, timeout_seconds=2
            ):
                obj: Any = event["object"]
                rv = obj.metadata.resource_version
                self._seen(obj.metadata.name, 0 if event["type"] == "DELETED" else obj.spec.replicas or 0)
                if self.stopped.is_set():
                    break

    def _seen(self, name: str, replicas: int) -> None:
        self.replicas[name] = replicas
        total = sum(self.replicas.values())
        if total > self.most:
            self.most, self.when_most = total, dict(self.replicas)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)


def test_a_new_revision_while_the_canary_scales_keeps_within_max_surge(kube: Kube) -> None:
    """replicas 4, maxSurge 1, maxUnavailable 0: the limit is 5 pods. A third revision applied
    while the second's canary is still being scaled waits for the second's pods to go before
    its own canary grows."""
    doc = basic(4, [{"setWeight": 50}, {"pause": {}}], maxSurge=1, maxUnavailable=0)
    # Not under the zero-downtime watcher: without a router the 50% split shrinks the stable
    # to 2 pods by design, which the watcher's stable-keeps-its-pods rule is not about.
    s = given(kube).rollout(doc)
    s.when().applied().then().phase("Healthy")
    seen = ReplicaSetWatch(kube).start()
    try:
        s.when().image("registry.example/hello:2.0").then().holds(
            lambda: pods_by_image(kube, "hello").get("registry.example/hello:2.0", (0, 0))[0] > 0,
            "the second revision's canary scaling up",
        )
        s.when().image("registry.example/hello:3.0")
        t = s.then().phase("Paused")
        split = {"registry.example/hello:1.0": (2, 2), "registry.example/hello:3.0": (2, 2)}
        t.holds(lambda: pods_by_image(kube, "hello") == split, f"the 50% split of v3 and v1, {split}")
    finally:
        seen.stop()
    assert seen.most <= 5, (
        f"{seen.most} pods asked for at once, more than replicas + maxSurge: {seen.when_most}"
    )
    s.finish()

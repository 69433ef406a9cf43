"""A small given/when/then DSL for whole scenarios, after Argo Rollouts' e2e fixtures.

    given(kube).rollout("examples/canary/rollout.yaml").objects("examples/canary/services.yaml")
    .when().applied().then().phase("Healthy")
    .when().image("web:2").then().weight(10).step(1)

Every `then` waits for its condition with a deadline and fails with what it saw.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.invariants import Watcher
from tests.kube import REPO, Kube, wait_until

DEFAULT_TIMEOUT = 90.0
ACTIVE_WATCHERS: list[Watcher] = []


def given(kube: Kube) -> Given:
    return Given(kube)


class Scenario:
    def __init__(
        self, kube: Kube, rollout: dict[str, Any] | None = None, watcher: Watcher | None = None
    ) -> None:
        self.kube = kube
        self.doc = rollout
        self.watcher = watcher
        self.started = time.monotonic()

    @property
    def name(self) -> str:
        assert self.doc is not None
        return str(self.doc["metadata"]["name"])

    def status(self) -> dict[str, Any]:
        return self.kube.status(self.name)

    def when(self) -> When:
        return When(self)

    def then(self) -> Then:
        return Then(self)

    def finish(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher.assert_clean()


class Given(Scenario):
    def rollout(self, source: str | dict[str, Any], **changes: Any) -> Given:
        doc = copy.deepcopy(source) if isinstance(source, dict) else _load(source, "Rollout")
        for path, value in changes.items():
            _set(doc, path, value)
        self.doc = doc
        return self

    def objects(self, *paths: str) -> Given:
        for path in paths:
            self.kube.apply_file(REPO / path)
        return self

        return self

    def watched(self, active_service: str | None = None, gateway: bool = False) -> Given:
        self.watcher = Watcher(
            str(self.kube.sandbox.kubeconfig),
            self.kube.namespace,
            active_service=active_service,
            gateway=gateway,
        ).start()
        ACTIVE_WATCHERS.append(self.watcher)
        return self


class When(Scenario):
    def __init__(self, s: Scenario) -> None:
        super().__init__(s.kube, s.doc, s.watcher)

    def applied(self) -> When:
        assert self.doc is not None
        self.kube.apply(self.doc)
        return self

    def image(self, image: str) -> When:
        assert self.doc is not None
        self.doc["spec"]["template"]["spec"]["containers"][0]["image"] = image
        self.kube.apply(self.doc)
        return self

    def spec(self, path: str, value: Any) -> When:
        assert self.doc is not None
        _set(self.doc, path, value)
        self.kube.apply(self.doc)
        return self

    def promoted(self, full: bool = False) -> When:
        if full:
            self.kube.patch_status(self.name, {"promoteFull": True})
        else:
            self.kube.patch_status(self.name, {"pauseConditions": []})
        return self

    def aborted(self) -> When:
        self.kube.patch_status(self.name, {"abort": True})
        return self

    def retried(self) -> When:
        # The intent only: the operator restarts the steps (README: Runtime control).
        self.kube.patch_status(self.name, {"abort": False})
        return self

    def scaled(self, replicas: int) -> When:
        self.kube.kubectl("scale", f"rollout.tidegate.io/{self.name}", f"--replicas={replicas}")
        assert self.doc is not None
        self.doc["spec"]["replicas"] = replicas
        return self


class Then(Scenario):
    def __init__(self, s: Scenario) -> None:
        super().__init__(s.kube, s.doc, s.watcher)

    def _wait(self, check: Any, what: str, timeout: float = DEFAULT_TIMEOUT) -> Any:
        def seen() -> str:
            try:
                st = self.status()
            except Exception as exc:
                return repr(exc)
            w = ((st.get("canary") or {}).get("weights") or {}).get("canary", {}).get("weight")
            return f"phase={st.get('phase')} step={st.get('step')} weight={w} message={st.get('message')!r}"

        try:
            return wait_until(check, timeout, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n  rollout: {seen()}") from None

    def phase(self, phase: str, timeout: float = DEFAULT_TIMEOUT) -> Then:
        def check() -> bool:
            ro = self.kube.rollout(self.name)
            st = ro.get("status") or {}
            return bool(
                st.get("phase") == phase and st.get("observedGeneration") == ro["metadata"]["generation"]
            )

        self._wait(check, f"phase {phase}", timeout)
        return self

    def step(self, index: int, timeout: float = DEFAULT_TIMEOUT) -> Then:
        self._wait(lambda: self.status().get("currentStepIndex") == index, f"step index {index}", timeout)
        return self

    def weight(self, weight: int, timeout: float = DEFAULT_TIMEOUT) -> Then:
        """The canary weight, as read back from the VirtualService itself and reported verified."""

        def check() -> bool:
            st = self.status()
            w = (st.get("canary") or {}).get("weights") or {}
            return bool(w.get("canary", {}).get("weight") == weight and w.get("verified"))

        self._wait(check, f"canary weight {weight}% verified", timeout)
        return self

    def vs_weights(self, vs: str, route: int | str, stable: int, canary: int) -> Then:
        def check() -> bool:
            obj = self.kube.get("virtualservices.networking.istio.io", vs)
            http = obj["spec"]["http"]
            r = http[route] if isinstance(route, int) else next(x for x in http if x.get("name") == route)
            weights = [d.get("weight", 0) for d in r["route"]]
            return bool(weights == [stable, canary])

        self._wait(check, f"VirtualService {vs} route {route} at {stable}/{canary}")
        return self

    def message_contains(self, text: str, timeout: float = DEFAULT_TIMEOUT) -> Then:
        self._wait(
            lambda: text in (self.status().get("message") or ""), f"message containing {text!r}", timeout
        )
        return self

    def replica_sets(self, expected: dict[str, int], timeout: float = DEFAULT_TIMEOUT) -> Then:
        """{image: replicas} of the Rollout's ReplicaSets with replicas > 0."""

        def check() -> bool:
            seen = {}
            for rs in self.kube.replica_sets(self.name):
                if rs["spec"]["replicas"] > 0:
                    seen[rs["spec"]["template"]["spec"]["containers"][0]["image"]] = rs["spec"]["replicas"]
            return seen == expected

        self._wait(check, f"ReplicaSets {expected}", timeout)
        return self

    def holds(self, predicate: Any, what: str, timeout: float = DEFAULT_TIMEOUT) -> Then:
        self._wait(predicate, what, timeout)
        return self


def _load(path: str, kind: str) -> dict[str, Any]:
    for doc in yaml.safe_load_all((REPO / path).read_text()):
        if doc and doc.get("kind") == kind:
            return dict(doc)
    raise AssertionError(f"no {kind} in {path}")


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    node: Any = doc
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


__all__ = ["Path", "given"]

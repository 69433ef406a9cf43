"""Zero-downtime invariants, checked on every watch event of the objects that carry traffic.

A watcher follows VirtualServices, DestinationRules, Services, ReplicaSets and Rollouts
of one namespace (the API server's watch streams, in threads) and, after each event,
checks against the latest state it has seen:

1. the weights of every HTTP route that has weights sum to 100;
2. no weight > 0 goes to a Service or subset that selects zero ready pods;
3. the stable ReplicaSet keeps every replica available until the canary is promoted
   (its available count never drops below the highest it reached, for the same size).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, config, watch

HASH = "rollouts-pod-template-hash"


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@dataclass
class Watcher:
    kubeconfig: str
    namespace: str
    violations: list[str] = field(default_factory=list)
    events: int = 0
    _state: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _stable_peak: dict[str, tuple[int, int]] = field(default_factory=dict)
    _armed: bool = False
    active_service: str | None = None
    """Blue-green: once the first revision is available, this Service always selects at
    least spec.replicas available pods."""
    _active_armed: bool = False

    def start(self) -> Watcher:
        api = config.new_client_from_config(config_file=self.kubeconfig)
        custom = client.CustomObjectsApi(api)
        core = client.CoreV1Api(api)
        apps = client.AppsV1Api(api)
        ns = self.namespace
        sources = {
            "vs": lambda **kw: custom.list_namespaced_custom_object(
                "networking.istio.io", "v1", ns, "virtualservices", **kw
            ),
            "dr": lambda **kw: custom.list_namespaced_custom_object(
                "networking.istio.io", "v1", ns, "destinationrules", **kw
            ),
            "rollout": lambda **kw: custom.list_namespaced_custom_object(
                "tidegate.io", "v1alpha1", ns, "rollouts", **kw
            ),
            "svc": lambda **kw: core.list_namespaced_service(ns, **kw),
            "rs": lambda **kw: apps.list_namespaced_replica_set(ns, **kw),
        }
        for kind, fn in sources.items():
            self._state[kind] = {}
            t = threading.Thread(target=self._follow, args=(kind, fn, api), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _follow(self, kind: str, fn: Any, api: client.ApiClient) -> None:
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for ev in w.stream(fn, timeout_seconds=5):
                    obj = ev["object"]
                    if not isinstance(obj, dict):
                        obj = api.sanitize_for_serialization(obj)
                    name = obj["metadata"]["name"]
                    with self._lock:
                        if ev["type"] == "DELETED":
                            self._state[kind].pop(name, None)
                        else:
                            self._state[kind][name] = obj
                        self.events += 1
                        self._check(f"{kind} {ev['type']} {name}")
                    if self._stop.is_set():
                        break
            except Exception:
                time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    # ----------------------------------------------------------------- checks
    def _ready_for(self, selector: dict[str, str]) -> int:
        ready = 0
        for rs in self._state["rs"].values():
            labels = ((rs.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
            if _selects(selector, labels):
                ready += int((rs.get("status") or {}).get("readyReplicas") or 0)
        return ready

    def _subset_selectors(self) -> dict[str, dict[str, str]]:
        out = {}
        for dr in self._state["dr"].values():
            for subset in (dr.get("spec") or {}).get("subsets") or []:
                out[subset.get("name")] = subset.get("labels") or {}
        return out

    def _check(self, trigger: str) -> None:
        services = {n: (s.get("spec") or {}).get("selector") or {} for n, s in self._state["svc"].items()}
        subsets = self._subset_selectors()
        for vs in self._state["vs"].values():
            for route in (vs.get("spec") or {}).get("http") or []:
                dests = route.get("route") or []
                weights = [d.get("weight") for d in dests]
                if len(dests) > 1 and any(w is not None for w in weights):
                    total = sum(int(w or 0) for w in weights)
                    if total != 100:
                        self._violate(f"{trigger}: route {route.get('name')} weights sum to {total}")
                for d in dests:
                    weight = d.get("weight")
                    if len(dests) > 1 and not weight:
                        continue
                    dest = d.get("destination") or {}
                    host = str(dest.get("host", "")).split(".")[0]
                    if "subset" in dest:
                        selector = subsets.get(dest["subset"])
                        if selector is None:
                            continue
                        selector = {**services.get(host, {}), **selector}
                    else:
                        if host not in services:
                            continue
                        selector = services[host]
                    if not self._armed:
                        continue
                    if not self._state["rollout"] and int(weight or 100) == 100:
                        continue  # the Rollout was deleted: its pods go with it, by design
                    if self._ready_for(selector) == 0:
                        self._violate(
                            f"{trigger}: weight {weight} to {host}/{dest.get('subset', '-')} "
                            f"selecting {selector} with no ready pod"
                        )
        self._check_stable(trigger)
        if self.active_service:
            self._check_active(trigger, services)

    def _available_for(self, selector: dict[str, str]) -> int:
        total = 0
        for rs in self._state["rs"].values():
            labels = ((rs.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
            if _selects(selector, labels):
                total += int((rs.get("status") or {}).get("availableReplicas") or 0)
        return total

    def _check_active(self, trigger: str, services: dict[str, dict[str, str]]) -> None:
        selector = services.get(self.active_service or "")
        if not selector or not self._state["rollout"]:
            return
        replicas = min(
            int((ro.get("spec") or {}).get("replicas") or 1) for ro in self._state["rollout"].values()
        )
        available = self._available_for(selector)
        if available >= replicas:
            self._active_armed = True
        elif self._active_armed:
            self._violate(
                f"{trigger}: active Service {self.active_service} selects {available} available pods "
                f"({selector}), fewer than {replicas}"
            )

    def _check_stable(self, trigger: str) -> None:
        for ro in self._state["rollout"].values():
            st = ro.get("status") or {}
            stable = st.get("stableRS")
            replicas = int((ro.get("spec") or {}).get("replicas") or 1)
            if not stable:
                continue
            for rs in self._state["rs"].values():
                labels = rs["metadata"].get("labels") or {}
                if labels.get(HASH) != stable:
                    continue
                available = int((rs.get("status") or {}).get("availableReplicas") or 0)
                key = rs["metadata"]["name"]
                peak = min(self._stable_peak.get(key, 0), replicas)  # a scale-down lowers the bar
                if available < peak:
                    self._violate(
                        f"{trigger}: stable ReplicaSet {key} dropped to {available} available "
                        f"(had {peak} of {replicas}) before promotion"
                    )
                self._stable_peak[key] = max(peak, min(available, replicas))
                if available >= replicas:
                    self._armed = True

    def _violate(self, message: str) -> None:
        if message not in self.violations:
            self.violations.append(message)

    def assert_clean(self) -> None:
        assert self.events > 0, "the invariant watcher saw no events at all"
        assert not self.violations, "zero-downtime invariants violated:\n" + "\n".join(self.violations)

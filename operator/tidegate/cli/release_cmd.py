"""`tidegate release NAME`: what the operator does before a Rollout goes, done without it.

A Rollout carries the finalizer `tidegate.io/traffic`: deleting it, the operator first returns
all traffic to the stable version (managed header routes removed), then lets it go. With the
operator uninstalled first, the Rollout (and its namespace) stays Terminating. `release`
takes the operator's place: it reads the router through the operator's own code (the
watch cache and the Istio router of `tidegate.k8s` / `tidegate.routers`), sets 100% on the
stable version, reads it back, and removes the finalizer.

It refuses (exit 1, nothing changed) when that would strand traffic or race the operator:

- a fresh leader Lease says the operator is running (it releases the Rollout itself);
- the router carries traffic to the canary but no stable version is recorded;
- the stable Service has no ready endpoints, so moving all traffic there would drop it;
- the router's objects cannot be read (other than being gone: then nothing routes to the
  Rollout and the finalizer goes).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click

from tidegate.cli._kube import CliError, Target
from tidegate.cli._options import cluster_options

FINALIZER = "tidegate.io/traffic"
LEASE_NAME = "tidegate-operator"
Obj = dict[str, Any]


@dataclass(frozen=True)
class Seen:
    """What `release` found, for `decide_release`."""

    rollout: Obj
    router_ok: bool = True
    router_problem: str | None = None
    router_missing: bool = False
    canary_weight: int = 0
    header_routes: tuple[str, ...] = ()
    stable_ready: int | None = None
    """Ready endpoints of the stable Service (None: no stable Service, e.g. blue-green)."""
    leases: tuple[str, ...] = ()
    """Fresh leader Leases of the operator, as `namespace/name held by X, renewed Ns ago`."""


@dataclass(frozen=True)
class Release:
    move_traffic: bool
    message: str


def decide_release(seen: Seen) -> Release:
    """Whether and how to release the Rollout; raises CliError to refuse.

    >>> ro = {"metadata": {"name": "web", "finalizers": [FINALIZER]}, "status": {"stableRS": "a"}}
    >>> decide_release(Seen(ro, canary_weight=20, stable_ready=4)).move_traffic
    True
    """
    meta = seen.rollout.get("metadata") or {}
    st = seen.rollout.get("status") or {}
    name = meta.get("name")
    if FINALIZER not in (meta.get("finalizers") or []):
        return Release(False, f"rollout {name} has no {FINALIZER} finalizer: nothing to release")
    if seen.leases:
        raise CliError(
            f"the operator is running ({'; '.join(seen.leases)}): delete rollout {name} and it "
            "returns the traffic itself; `release` is for when the operator is gone"
        )
    if not seen.router_ok and not seen.router_missing:
        raise CliError(f"cannot read the traffic router of rollout {name}: {seen.router_problem}")
    needs_move = seen.router_ok and (seen.canary_weight > 0 or bool(seen.header_routes))
    stable = st.get("stableRS")
    if needs_move and not stable:
        raise CliError(
            f"rollout {name} sends {seen.canary_weight}% to its canary and has no stable revision "
            "recorded: there is no version to return the traffic to"
        )
    if needs_move and seen.stable_ready == 0:
        service = (
            ((seen.rollout.get("spec") or {}).get("strategy") or {}).get("canary", {}).get("stableService")
        )
        raise CliError(
            f"the stable Service {service} of rollout {name} has no ready endpoints: all traffic there "
            f"would be dropped (now {seen.canary_weight}% on the canary); scale the stable ReplicaSet "
            "up first"
        )
    if needs_move:
        what = f"canary weight {seen.canary_weight}% -> 0%"
        if seen.header_routes:
            what += f", header routes {', '.join(seen.header_routes)} removed"
        return Release(True, f"rollout {name}: all traffic to stable {stable} ({what}); finalizer removed")
    why = "nothing routes to it" if seen.router_missing else "all traffic is on stable already"
    return Release(False, f"rollout {name}: {why}; finalizer removed")


def _lease_holders(api: Any, name: str) -> tuple[str, ...]:
    from kubernetes import client

    leases = client.CoordinationV1Api(api).list_lease_for_all_namespaces(
        field_selector=f"metadata.name={name}"
    )
    now = datetime.now(UTC)
    fresh = []
    for lease in leases.items:
        spec = lease.spec
        if not spec or not spec.holder_identity or not spec.renew_time:
            continue
        age = (now - spec.renew_time).total_seconds()
        if age < float(spec.lease_duration_seconds or 15):
            where = f"{lease.metadata.namespace}/{name}" if lease.metadata else name
            fresh.append(f"Lease {where} held by {spec.holder_identity}, renewed {age:.0f}s ago")
    return tuple(fresh)


async def _release(target: Target, name: str, lease_name: str) -> str:
    from kubernetes.client.exceptions import ApiException
    from pydantic import ValidationError

    from tidegate.api.rollout import Rollout
    from tidegate.core.model import SetTraffic
    from tidegate.k8s.cache import Cache
    from tidegate.k8s.client import Clients, call
    from tidegate.k8s.execute import GROUP, VERSION
    from tidegate.routers import router_for

    namespace = target.namespace or target.credentials().namespace or "default"
    clients = Clients.load(target.kubeconfig or os.environ.get("KUBECONFIG") or None, target.context)
    try:
        response: Any = await call(
            clients.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "rollouts",
            name,
            _preload_content=False,
        )
        raw: Obj = json.loads(response.data)
    except ApiException as exc:
        raise CliError(f"rollout {name} in {namespace}: {exc.status} {exc.reason}") from exc
    try:
        leases = await asyncio.to_thread(_lease_holders, clients.api, lease_name)
        warning = None
    except ApiException as exc:
        leases, warning = (
            (),
            f"warning: cannot tell whether the operator runs (leases: {exc.status} {exc.reason})",
        )
    if warning:
        click.echo(warning, err=True)
    try:
        rollout = Rollout.from_body(raw)
    except ValidationError as exc:
        raise CliError(
            f"rollout {name}: its spec does not parse ({exc.errors()[0].get('msg')}); nothing done"
        ) from exc
    cache = Cache(clients, (namespace,))
    await cache.start()
    try:
        await cache.wait_synced(timeout=60)
        cache.put_rollout(raw, set())
        stable = rollout.status.stable_rs
        router = router_for(rollout, clients, cache)
        state = await router.read(stable, stable)
        canary = rollout.spec.strategy.canary
        stable_ready = (
            cache.ready_endpoints(namespace, canary.stable_service)
            if canary and canary.stable_service
            else None
        )
        problem = state.problem or ""
        missing = not state.ok and problem.startswith("VirtualService") and problem.endswith("not found")
        seen = Seen(
            raw,
            router_ok=state.ok,
            router_problem=state.problem,
            router_missing=missing,
            canary_weight=state.canary_weight,
            header_routes=state.header_routes,
            stable_ready=stable_ready,
            leases=leases,
        )
        decision = decide_release(seen)
        if FINALIZER not in ((raw.get("metadata") or {}).get("finalizers") or []):
            return decision.message
        if decision.move_traffic and stable is not None:
            after = await router.apply(SetTraffic(0, stable, rollout.status.current_pod_hash or stable, ()))
            if not after.ok or after.canary_weight != 0 or after.header_routes:
                raise CliError(
                    f"rollout {name}: the router did not take the release "
                    f"(canary weight {after.canary_weight}%, {after.problem or 'header routes left'}); "
                    "the finalizer stays"
                )
    finally:
        cache.stop()
    finalizers = list((raw.get("metadata") or {}).get("finalizers") or [])
    patch = [
        {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
        {"op": "replace", "path": "/metadata/finalizers", "value": [f for f in finalizers if f != FINALIZER]},
    ]
    try:
        await call(
            clients.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "rollouts",
            name,
            patch,
            _content_type="application/json-patch+json",
        )
    except ApiException as exc:
        if exc.status == 422 or exc.status == 409:
            raise CliError(f"rollout {name} changed meanwhile ({exc.reason}); run release again") from exc
        raise CliError(f"rollout {name}: removing the finalizer: {exc.status} {exc.reason}") from exc
    if not (raw.get("metadata") or {}).get("deletionTimestamp"):
        return (
            decision.message
            + " (the Rollout is not being deleted: a running operator adds the finalizer back)"
        )
    return decision.message


@click.command("release")
@click.argument("name")
@click.option(
    "--lease-name",
    default=LEASE_NAME,
    show_default=True,
    help="The operator's leader Lease; a fresh one in any namespace means the operator runs.",
)
@cluster_options()
def command(name: str, lease_name: str, target: Target) -> None:
    """Release a Rollout when the operator is gone: traffic to stable, finalizer off.

    All traffic goes to the stable version (read back), then the tidegate.io/traffic
    finalizer is removed, so that a Rollout (or a namespace) left Terminating by an
    uninstall in the wrong order goes away.

    Refused, changing nothing, while the operator runs (a fresh leader Lease), when no
    stable version is recorded, or when the stable Service has no ready endpoints.

    \b
    Example:
      tidegate release web -n shop
    """
    click.echo(asyncio.run(_release(target, name, lease_name)))

"""spec.restartAt: evict old pods one at a time through the eviction API (PodDisruptionBudgets apply)."""

from __future__ import annotations

import logging

from kubernetes import client

from tidegate.core.model import ReplacePod
from tidegate.k8s.client import ApiException, Clients, call

log = logging.getLogger("tidegate.restart")


async def evict_one(clients: Clients, namespace: str, action: ReplacePod) -> bool:
    """True when the eviction was accepted; a PDB refusal (429) just waits for the next pass."""
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name=action.pod, namespace=namespace))
    try:
        await call(clients.core.create_namespaced_pod_eviction, action.pod, namespace, body)
    except ApiException as exc:
        if exc.status in (404, 429):
            log.info("eviction of %s/%s not done now (%s)", namespace, action.pod, exc.status)
            return False
        raise
    return True

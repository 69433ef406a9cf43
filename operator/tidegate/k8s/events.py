"""Events about an object, posted with the operator's own client by the pass that decides them.

Not through kopf.event(): that queues the Event for kopf's poster, a task kopf stops before
it runs the cleanup handlers, where the passes still under way at a stop finish. A pass
awaits its Events like its other writes, so a pass that finishes has posted them, and
stopping waits for it. The body is the one kopf posts (core/v1, `kubectl describe` shows
it), from Tidegate's component.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import UTC, datetime
from typing import Any

import urllib3

from tidegate.k8s.client import ApiException, Clients, call

log = logging.getLogger("tidegate.events")

COMPONENT = "tidegate-operator"
MAX_MESSAGE = 1024
"""The API server refuses longer Event messages: the middle is cut out."""


def event_body(obj: dict[str, Any], type: str, reason: str, message: str) -> dict[str, Any]:
    """A core/v1 Event about `obj`, as kopf builds one (its `generateName`, its timestamps)."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or "default"
    if len(message) > MAX_MESSAGE:
        half = (MAX_MESSAGE - 3) // 2
        message = f"{message[:half]}...{message[-(MAX_MESSAGE - 3 - half) :]}"
    now = datetime.now(UTC).isoformat()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"namespace": namespace, "generateName": f"{meta.get('name') or 'object'}."},
        "action": "Reconcile",
        "type": type,
        "reason": reason,
        "message": message,
        "reportingComponent": COMPONENT,
        "reportingInstance": os.environ.get("POD_NAME") or socket.gethostname(),
        "source": {"component": COMPONENT},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "namespace": namespace,
            "uid": meta.get("uid"),
        },
        "firstTimestamp": now,
        "lastTimestamp": now,
        "eventTime": now,
    }


async def post_event(clients: Clients, obj: dict[str, Any], type: str, reason: str, message: str) -> None:
    """Create the Event; a failure is logged, never raised (an Event never fails the pass)."""
    body = event_body(obj, type, reason, message)
    try:
        await call(
            clients.core.create_namespaced_event,
            body["metadata"]["namespace"],
            body,
            _preload_content=False,
        )
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
        ref = body["involvedObject"]
        if isinstance(exc, ApiException) and exc.status == 403 and "NamespaceTerminating" in str(exc.body):
            # The namespace is being deleted, the Rollout with it: nobody will read the Event.
            log.debug("no Event %s about %s/%s: namespace terminating", reason, ref["namespace"], ref["name"])
            return
        why = f"HTTP {exc.status} {exc.reason}" if isinstance(exc, ApiException) else str(exc)
        log.warning("could not post Event %s about %s/%s: %s", reason, ref["namespace"], ref["name"], why)

"""The notification ConfigMap and Secret of the operator's namespace, read when a delivery needs them.

Read at every delivery attempt (two GETs; deliveries are few), so an edit of either takes effect
at the next notification without a restart. Either may be missing: no ConfigMap means the
built-in triggers and templates and no services; no Secret means no `$key` can be resolved.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from tidegate.core.notify_services import CONFIGMAP, SECRET, Config, NotificationError, parse_config
from tidegate.k8s.client import ApiException, Clients, call


async def _read(clients: Clients, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    fn = (
        clients.core.read_namespaced_config_map
        if kind == "configmap"
        else clients.core.read_namespaced_secret
    )
    try:
        response: Any = await call(fn, name, namespace, _preload_content=False)
    except ApiException as exc:
        if exc.status == 404:
            return None
        if exc.status == 403:
            # Not worth retrying: RBAC says no (the chart grants it with notifications.enabled=true).
            raise NotificationError(
                f"the operator may not read {kind} {name} in namespace {namespace} "
                "(Helm chart: notifications.enabled=true)"
            ) from exc
        raise
    body: dict[str, Any] = json.loads(response.data)
    return body


async def read_notification_config(clients: Clients, namespace: str) -> Config:
    configmap = await _read(clients, "configmap", namespace, CONFIGMAP)
    secret = await _read(clients, "secret", namespace, SECRET)
    data = {str(k): str(v) for k, v in ((configmap or {}).get("data") or {}).items()}
    secrets = {
        str(k): base64.b64decode(v).decode("utf-8", "replace")
        for k, v in ((secret or {}).get("data") or {}).items()
    }
    return parse_config(data, secrets)

"""The Kubernetes API clients, configured once, called off the event loop.

The official client is synchronous; every call goes through `call()`, which runs it
in a worker thread so the operator's event loop (kopf's watches) never blocks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tidegate import __version__

T = TypeVar("T")
USER_AGENT = f"tidegate-operator/{__version__}"


@dataclass(frozen=True)
class Clients:
    api: client.ApiClient
    core: client.CoreV1Api
    apps: client.AppsV1Api
    custom: client.CustomObjectsApi

    @classmethod
    def load(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        on_request: RequestHook | None = None,
    ) -> Clients:
        """`on_request(verb, resource, code)` is called after every request (the operator counts them)."""
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            cfg = client.Configuration.get_default_copy()
        except config.ConfigException:
            cfg = client.Configuration()
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=cfg
            )
        cfg.connection_pool_maxsize = 16
        api = client.ApiClient(cfg)
        api.user_agent = USER_AGENT
        if on_request is not None:
            _count_requests(api, on_request)
        return cls(
            api=api,
            core=client.CoreV1Api(api),
            apps=client.AppsV1Api(api),
            custom=client.CustomObjectsApi(api),
        )


RequestHook = Callable[[str, str, int], None]


def request_kind(method: str, url: str) -> tuple[str, str]:
    """(verb, resource) of a request, as the API server's own metrics name them.

    >>> request_kind("GET", "https://h/apis/apps/v1/namespaces/a/replicasets?labelSelector=x")
    ('list', 'replicasets')
    >>> request_kind("PATCH", "https://h/apis/tidegate.io/v1alpha1/namespaces/a/rollouts/web/status")
    ('patch', 'rollouts/status')
    >>> request_kind("GET", "https://h/api/v1/services?watch=true")
    ('watch', 'services')
    """
    path, _, query = url.partition("?")
    parts = [p for p in path.split("/") if p]
    for start in ("api", "apis"):
        if start in parts:
            parts = parts[parts.index(start) + (2 if start == "api" else 3) :]
            break
    if len(parts) >= 2 and parts[0] == "namespaces":
        parts = parts[2:]
    resource = "/".join([parts[0], *parts[2:3]]) if parts else ""
    verb = method.lower()
    if verb == "get":
        verb = "watch" if "watch=true" in query else ("get" if len(parts) >= 2 else "list")
    return verb, resource


def _count_requests(api: client.ApiClient, hook: RequestHook) -> None:
    rest: Any = api.rest_client
    inner = rest.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        verb, resource = request_kind(method, url)
        try:
            response = inner(method, url, *args, **kwargs)
        except ApiException as exc:
            hook(verb, resource, exc.status or 0)
            raise
        hook(verb, resource, int(getattr(response, "status", 0) or 0))
        return response

    rest.request = request


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kwargs)


def create_raw(clients: Clients, path: str, body: dict[str, Any], field_manager: str) -> dict[str, Any]:
    """POST a body as JSON, exactly as given, and return the created object.

    The typed methods validate a body against the client's models first, which refuses
    what the API server accepts (a Quantity written as a number, `cpu: 1`): a pod template
    goes to the API server as the user wrote it, and only the API server judges it.
    """
    api: Any = clients.api
    method, url, headers, data, _ = api.param_serialize(
        "POST",
        path,
        query_params=[("fieldManager", field_manager)],
        header_params={"Accept": "application/json", "Content-Type": "application/json"},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, header_params=headers, body=data)
    payload = response.read()
    if not 200 <= response.status < 300:
        raise ApiException(status=response.status, reason=response.reason, body=payload)
    created: dict[str, Any] = json.loads(payload)
    return created


def refusal(exc: ApiException) -> str:
    """The API server's own words for a refused write (they name the field)."""
    try:
        message = json.loads(exc.body or b"{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or exc.reason or exc.status)


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 404


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 409


__all__ = ["ApiException", "Clients", "call", "is_conflict", "is_not_found"]

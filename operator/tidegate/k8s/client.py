"""The Kubernetes API clients, configured once, called off the event loop.

The official client is synchronous; every call goes through `call()`, which runs it
in a worker thread so the operator's event loop (kopf's watches) never blocks.
"""

from __future__ import annotations

import asyncio
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
    def load(cls, kubeconfig: str | None = None, context: str | None = None) -> Clients:
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
        return cls(
            api=api,
            core=client.CoreV1Api(api),
            apps=client.AppsV1Api(api),
            custom=client.CustomObjectsApi(api),
        )


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kwargs)


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 404


def is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status == 409


__all__ = ["ApiException", "Clients", "call", "is_conflict", "is_not_found"]

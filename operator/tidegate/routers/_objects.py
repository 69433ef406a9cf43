"""What every router does with its objects: read them from the cache, JSON-patch them under a
resourceVersion `test`, and try again at once when the object changed under the write."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tidegate.k8s.cache import Cache, Store
from tidegate.k8s.client import ApiException, Clients, call

FIELD_MANAGER = "tidegate"
CONFLICT_RETRIES = 3
"""A failed resourceVersion `test` (422) or a 409 re-reads the object and tries again at once."""

T = TypeVar("T")


class StaleWrite(ApiException):
    """A JSON patch whose resourceVersion `test` failed: the object changed since it was read,
    told as the conflict (409) it is, whoever catches it."""

    def __init__(self, what: str) -> None:
        super().__init__(status=409, reason=f"Conflict: {what} changed since it was read")


def is_stale_write(exc: ApiException) -> bool:
    """A JSON patch whose resourceVersion `test` failed (StaleWrite), or a conflict (409)."""
    return bool(exc.status == 409)


def rv_test(obj: dict[str, Any]) -> dict[str, Any]:
    """The op that makes a patch fail (422) if the object changed since it was read."""
    return {"op": "test", "path": "/metadata/resourceVersion", "value": obj["metadata"]["resourceVersion"]}


class SpecProblem(str):
    """A router object that does not fit the Rollout (a weighed route with a destination that is
    neither the stable nor the canary, weights that cannot sum to the total): InvalidSpec, not
    something to wait for. Nothing is written to the object; the stable keeps serving."""


@dataclass
class Found:
    version: str
    obj: dict[str, Any]


@dataclass(frozen=True)
class Objects:
    """Custom objects of one API group, read from the watch-fed cache and patched in place."""

    clients: Clients
    cache: Cache
    group: str

    async def get(
        self, store: Store | None, plural: str, namespace: str, name: str, fresh: bool = False
    ) -> Found | None:
        """From the cache; `fresh` reads the API server (after a stale write)."""
        if store is None or not store.served:
            return None
        if not fresh:
            obj = store.get(namespace, name)
            return Found(store.kind.version, obj) if obj is not None else None
        try:
            response: Any = await call(
                self.clients.custom.get_namespaced_custom_object,
                self.group,
                store.kind.version,
                namespace,
                plural,
                name,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        obj = json.loads(response.data)
        self.cache.put(store, obj)
        return Found(store.kind.version, obj)

    async def patch(
        self, store: Store, plural: str, found: Found, namespace: str, ops: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Apply `ops`; StaleWrite when their resourceVersion `test` failed.

        The API server answers a failed `test` with a bare 422 Invalid, the same status as a
        patch the schema refuses, so the object is read again: a newer resourceVersion than
        the one tested means the write was stale (and the fresh object is in the cache)."""
        name = found.obj["metadata"]["name"]
        try:
            response: Any = await call(
                self.clients.custom.patch_namespaced_custom_object,
                self.group,
                found.version,
                namespace,
                plural,
                name,
                ops,
                field_manager=FIELD_MANAGER,
                _content_type="application/json-patch+json",
                _preload_content=False,
            )
        except ApiException as exc:
            tested = ops[0] if ops and ops[0] == rv_test(found.obj) else None
            if exc.status == 422 and tested is not None:
                now = await self.get(store, plural, namespace, name, fresh=True)
                if now is None or now.obj["metadata"]["resourceVersion"] != tested["value"]:
                    raise StaleWrite(f"{plural} {namespace}/{name}") from exc
            raise
        obj: dict[str, Any] = json.loads(response.data)
        self.cache.put(store, obj)
        return obj


async def retrying(write: Callable[[bool], Awaitable[T]], on_conflict: Callable[[], None]) -> T:
    """A write planned from the cache; if the object changed meanwhile, re-read it (`fresh`) and
    write again, at most CONFLICT_RETRIES times."""
    attempt = 0
    while True:
        try:
            return await write(attempt > 0)
        except ApiException as exc:
            if not is_stale_write(exc) or attempt == CONFLICT_RETRIES:
                raise
            on_conflict()
            attempt += 1

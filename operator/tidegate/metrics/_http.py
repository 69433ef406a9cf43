"""Every provider request goes through `fetch`: a total deadline, a size cap, the outbound policy.

- **Total deadline.** The whole request — name resolution, connection, TLS, headers and the
  body — runs under one `asyncio.timeout`; httpx's own timeouts are per read, so a server
  dripping one byte a second would otherwise never time out.
- **Size cap.** The body is streamed and the request dropped as soon as it passes
  `max_response_bytes` (a declared Content-Length above it is refused before any byte is read).
  A compressed answer is decompressed under the same cap, so a small gzip bomb stays small.
- **Where to.** `OutboundPolicy.url_problem` checks the scheme and host name; the connection goes
  through `GuardedBackend`, which resolves the host, checks *every* address it resolves to
  (`OutboundPolicy.address_problem`) and connects to a checked one — never resolving again, so DNS
  rebinding between the check and the connection gains nothing. Redirects are not followed and
  no proxy from the environment is used.
"""

from __future__ import annotations

import asyncio
import os
import socket
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpcore
import httpx

from tidegate.core.outbound import DEFAULT_MAX_RESPONSE_BYTES, OutboundPolicy, parse_entries

__all__ = [
    "Answer",
    "GuardedBackend",
    "Outbound",
    "OutboundRefused",
    "ResponseTooLarge",
    "configure_outbound",
    "default_outbound",
    "fetch",
    "policy_from_env",
]

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""host, port -> the addresses it resolves to."""

ENV_ALLOW = "TIDEGATE_OUTBOUND_ALLOW"
ENV_DENY = "TIDEGATE_OUTBOUND_DENY"
ENV_SECRET_ALLOW = "TIDEGATE_OUTBOUND_SECRET_ALLOW"
ENV_MAX_RESPONSE_BYTES = "TIDEGATE_METRIC_MAX_RESPONSE_BYTES"


class OutboundRefused(Exception):
    """The policy refuses this request; the message says which rule."""


class ResponseTooLarge(Exception):
    """The answer is larger than the cap."""


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in seen:
            seen.append(address)
    return seen


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the policy allows."""

    def __init__(self, policy: OutboundPolicy, *, secrets: bool, resolver: Resolver | None = None) -> None:
        self._policy = policy
        self._secrets = secrets
        self._resolve = resolver or system_resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self._resolve(host, port)
        except OSError as error:
            raise OutboundRefused(f"cannot resolve {host}: {error.strerror or error}") from None
        if not addresses:
            raise OutboundRefused(f"{host} resolves to no address")
        for address in addresses:  # every one: a name with one bad address is refused
            problem = self._policy.address_problem(host, address, port, secrets=self._secrets)
            if problem is not None:
                raise OutboundRefused(problem)
        return await self._inner.connect_tcp(
            addresses[0], port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        raise OutboundRefused("unix sockets are refused")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, backend: GuardedBackend, *, verify: bool = True) -> None:
        super().__init__(retries=0, trust_env=False)
        # httpx builds its pool with the default backend; the same pool with ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=4,
            network_backend=backend,
        )


@dataclass(frozen=True)
class Outbound:
    """The policy and, for tests, a transport to use instead of the guarded network."""

    policy: OutboundPolicy = field(default_factory=OutboundPolicy)
    transport: httpx.AsyncBaseTransport | None = None
    """Injected (httpx.MockTransport): the address checks are skipped, the rest applies."""
    resolver: Resolver | None = None
    secrets: bool = False
    """The request carries a Secret: only the Secrets allow list may receive it."""
    insecure: bool = False
    """The provider's `insecure: true` (Argo's): the server's TLS certificate is not verified."""

    def with_secrets(self, carries: bool = True) -> Outbound:
        return replace(self, secrets=self.secrets or carries)

    def with_insecure(self, insecure: bool) -> Outbound:
        return replace(self, insecure=insecure)

    def _transport(self) -> httpx.AsyncBaseTransport:
        if self.transport is not None:
            return self.transport
        backend = GuardedBackend(self.policy, secrets=self.secrets, resolver=self.resolver)
        return _GuardedTransport(backend, verify=not self.insecure)


def policy_from_env(
    environ: Mapping[str, str] | None = None, *, api_servers: frozenset[tuple[str, int]] = frozenset()
) -> OutboundPolicy:
    """The policy the operator runs with, from TIDEGATE_OUTBOUND_{ALLOW,DENY,SECRET_ALLOW} and
    TIDEGATE_METRIC_MAX_RESPONSE_BYTES (ValueError names a bad value)."""
    env = os.environ if environ is None else environ
    size = env.get(ENV_MAX_RESPONSE_BYTES, "").strip()
    try:
        limit = int(size) if size else DEFAULT_MAX_RESPONSE_BYTES
    except ValueError:
        raise ValueError(f"{ENV_MAX_RESPONSE_BYTES}={size!r} is not a number of bytes") from None
    if limit <= 0:
        raise ValueError(f"{ENV_MAX_RESPONSE_BYTES} must be more than 0")
    return OutboundPolicy(
        allow=parse_entries(env.get(ENV_ALLOW, "")),
        deny=parse_entries(env.get(ENV_DENY, "")),
        secret_allow=parse_entries(env.get(ENV_SECRET_ALLOW, "")),
        api_servers=api_servers,
        max_response_bytes=limit,
    )


_default: list[Outbound] = []


def configure_outbound(outbound: Outbound) -> None:
    """Set the operator's policy (at start-up, from its flags and environment)."""
    _default[:] = [outbound]


def default_outbound() -> Outbound:
    """The configured policy; until configured, the environment's (refusing loopback and the
    rest by default)."""
    if not _default:
        _default.append(Outbound(policy_from_env()))
    return _default[0]


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: bytes
    content_type: str


def _decoded(body: bytes, encoding: str, limit: int) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip", "deflate"):
        wbits = 16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS
        decoder = zlib.decompressobj(wbits)
        try:
            out = decoder.decompress(body, limit + 1)
        except zlib.error as error:
            raise ValueError(f"bad {encoding} body: {error}") from None
        if len(out) > limit:
            raise ResponseTooLarge(f"the answer is larger than the {limit}-byte cap once decompressed")
        return out
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


async def fetch(
    outbound: Outbound,
    method: str,
    url: str,
    *,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    content: str | bytes | None = None,
) -> Answer:
    """One request under the policy, the total deadline `timeout` and the size cap.

    Raises OutboundRefused, ResponseTooLarge, TimeoutError (the deadline), httpx.HTTPError.
    """
    problem = outbound.policy.url_problem(url, secrets=outbound.secrets)
    if problem is not None:
        raise OutboundRefused(problem)
    limit = outbound.policy.max_response_bytes
    sent = {**(headers or {}), "Accept-Encoding": "gzip, identity"}
    async with asyncio.timeout(timeout):
        async with (
            httpx.AsyncClient(
                # httpx's timeouts are per read: past the total deadline, so that it decides.
                transport=outbound._transport(),
                timeout=timeout + 1.0,
                follow_redirects=False,
                trust_env=False,
            ) as client,
            client.stream(method, url, headers=sent, params=params, content=content) as response,
        ):
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise ResponseTooLarge(f"the answer is {declared} bytes, more than the {limit}-byte cap")
            chunks: list[bytes] = []
            size = 0
            try:
                async for chunk in response.aiter_raw():
                    size += len(chunk)
                    if size > limit:
                        raise ResponseTooLarge(f"the answer is larger than the {limit}-byte cap")
                    chunks.append(chunk)
            except httpx.StreamConsumed:  # an injected transport's answer, already in memory
                if len(response.content) > limit:
                    raise ResponseTooLarge(f"the answer is larger than the {limit}-byte cap") from None
                kind = response.headers.get("content-type", "")
                return Answer(response.status_code, response.content, kind)
            body = _decoded(b"".join(chunks), response.headers.get("content-encoding", ""), limit)
            return Answer(response.status_code, body, response.headers.get("content-type", ""))

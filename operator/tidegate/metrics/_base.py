"""What every provider shares: the Protocol, the result, secrets and credential hygiene."""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx

from tidegate.api.analysis import Authentication, Metric, SecretKeyRef
from tidegate.metrics._http import (
    Answer,
    Outbound,
    OutboundRefused,
    ResponseTooLarge,
    default_outbound,
    fetch,
)

TEXT_LIMIT = 200
"""Longest value text or error message a provider returns (status fields stay readable)."""

REDACTED = "<redacted>"


@dataclass(frozen=True)
class ProviderResult:
    """One measurement as a provider saw it. Never carries a credential."""

    value: object
    """The raw result for the conditions: float, list of floats, list of lists, JSON data."""
    text: str
    """The value for people (status, events); empty when there is none."""
    error: str | None = None
    """Why there is no value: bad query, HTTP error, timeout, unreachable server."""
    no_data: bool = False
    """The query answered, without data (empty vector, NaN, no JSONPath match)."""


class SecretReader(Protocol):
    """Reads one key of a Secret in the AnalysisRun's namespace."""

    async def read(self, name: str, key: str) -> str: ...


class Provider(Protocol):
    """Takes one measurement; returns an error in the result instead of raising."""

    async def measure(
        self, metric: Metric, args: Mapping[str, str], secrets: SecretReader
    ) -> ProviderResult: ...


class UnknownProviderError(ValueError):
    """A metric names no provider this operator knows: an error in the spec."""


class MeasurementError(Exception):
    """A query that could not be answered (raised by helpers such as `query_range`, never by
    `measure`); its message is free of credentials."""


class MappingSecretReader:
    """Secrets from a mapping {(name, key): value}, for tests and offline tools."""

    def __init__(self, values: Mapping[tuple[str, str], str]) -> None:
        self._values = dict(values)

    async def read(self, name: str, key: str) -> str:
        try:
            return self._values[(name, key)]
        except KeyError:
            raise KeyError(f"secret {name} has no key {key}") from None


@dataclass(frozen=True)
class Credentials:
    """Request headers that carry credentials, and the secret strings to scrub from any text."""

    headers: dict[str, str]
    secrets: tuple[str, ...]

    def scrub(self, text: str) -> str:
        """`text` with every secret string (and URL user-info) replaced by <redacted>."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret:
                text = text.replace(secret, REDACTED)
        return scrub_url_userinfo(text)


NO_CREDENTIALS = Credentials(headers={}, secrets=())

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def scrub_url_userinfo(text: str) -> str:
    """Drop `user:password@` from URLs in `text`."""
    return _USERINFO.sub(lambda match: f"{match.group('scheme')}{REDACTED}@", text)


async def _read(secrets: SecretReader, ref: SecretKeyRef, what: str) -> str:
    try:
        return await secrets.read(ref.name, ref.key)
    except Exception as error:  # any reader failure becomes a measurement error
        # The reader's message names the Secret, not its content.
        raise MeasurementError(f"cannot read {what} from secret {ref.name}/{ref.key}: {error}") from None


async def read_credentials(authentication: Authentication | None, secrets: SecretReader) -> Credentials:
    """Read the Secret(s) named by `authentication` into headers (at measurement time)."""
    if authentication is None:
        return NO_CREDENTIALS
    if authentication.bearer_token is not None:
        token = (await _read(secrets, authentication.bearer_token, "bearer token")).strip()
        return Credentials(headers={"Authorization": f"Bearer {token}"}, secrets=(token,))
    if authentication.basic_username is not None or authentication.basic_password is not None:
        if authentication.basic_username is None or authentication.basic_password is None:
            raise MeasurementError("basic authentication needs both basicUsername and basicPassword")
        username = await _read(secrets, authentication.basic_username, "basic auth username")
        password = await _read(secrets, authentication.basic_password, "basic auth password")
        encoded = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        # The username is scrubbed too, unless it is too short to scrub without mangling text.
        scrubbed = (password, encoded, *((username,) if len(username) >= 4 else ()))
        return Credentials(headers={"Authorization": f"Basic {encoded}"}, secrets=scrubbed)
    return NO_CREDENTIALS


def describe_http_error(error: Exception, timeout: float) -> str:
    """A short, credential-free description of what went wrong with a request."""
    if isinstance(error, httpx.TimeoutException):
        return f"timed out after {format_number(timeout)}s ({type(error).__name__})"
    if isinstance(error, httpx.ConnectError):
        return f"cannot connect: {error}"
    return f"{type(error).__name__}: {error}"


def format_number(value: float) -> str:
    """A number for people: up to six significant digits, NaN and Inf spelled as Prometheus does."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.6g}"


def shorten(text: str, limit: int = TEXT_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_values(values: Iterable[object]) -> str:
    parts = [format_number(value) if isinstance(value, float) else str(value) for value in values]
    return "[" + ", ".join(parts) + "]"


def outbound_for(transport: httpx.AsyncBaseTransport | None, outbound: Outbound | None) -> Outbound:
    """What a provider sends its requests through: `outbound`, else the operator's policy (with
    `transport` in place of the network, for tests)."""
    if outbound is not None:
        return outbound
    configured = default_outbound()
    if transport is None:
        return configured
    return Outbound(configured.policy, transport=transport, secrets=configured.secrets)


async def bounded_request(
    outbound: Outbound,
    method: str,
    url: str,
    *,
    where: str,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
    content: str | None = None,
    said_timeout: float | None = None,
) -> Answer:
    """`fetch`, with every failure a credential-free MeasurementError that says `where`.

    `timeout` is the total deadline; `said_timeout` the one messages name (default: the same).
    """
    failure: str | None = None
    said = timeout if said_timeout is None else said_timeout
    try:
        return await fetch(
            outbound, method, url, timeout=timeout, headers=headers, params=params, content=content
        )
    except OutboundRefused as error:
        failure = f"{where}: refused by the operator's outbound policy: {error}"
    except ResponseTooLarge as error:
        failure = f"{where}: {error} (the operator's TIDEGATE_METRIC_MAX_RESPONSE_BYTES)"
    except TimeoutError:
        failure = f"{where}: timed out after {format_number(said)}s (no complete answer by the deadline)"
    except httpx.HTTPError as error:
        failure = f"{where}: {describe_http_error(error, said)}"
    except ValueError as error:  # a body that cannot be decoded
        failure = f"{where}: {error}"
    # Raised outside the handler: no exception chain leads back to the request's headers.
    raise MeasurementError(failure)


def parse_json(body: bytes, where: str) -> object:
    """The JSON document of a body already within the cap; MeasurementError (never the body) if not."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        pass
    raise MeasurementError(f"{where}: the answer is not JSON ({len(body)} bytes)")

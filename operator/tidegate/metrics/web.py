"""Web: call a URL (GET, POST, PUT) and pick the value out of its JSON answer with JSONPath.

`{{args.NAME}}` is URL-escaped in the URL and inserted as is in headers and the body.
`jsonPath` follows jsonpath-ng's extended syntax (`$.data.ok`, `$.items[*].latency`,
filters); Argo's Kubernetes-style `{$.data.ok}` is accepted too. No match is no data; one
match is that value; several are a list.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext.parser import parse as parse_json_path

from tidegate.api.analysis import Metric
from tidegate.core.args import ArgumentError, render_query
from tidegate.metrics._argo_auth import argo_credentials
from tidegate.metrics._base import (
    NO_CREDENTIALS,
    MeasurementError,
    ProviderResult,
    SecretReader,
    bounded_request,
    format_number,
    outbound_for,
    parse_json,
    read_credentials,
    scrub_url_userinfo,
    shorten,
)
from tidegate.metrics._http import Outbound

__all__ = ["WebMetricProvider"]

log = logging.getLogger(__name__)


def _where(url: str) -> str:
    """The endpoint, for messages: scheme://host[:port]/path, no user-info, no query string."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return scrub_url_userinfo(url.split("?", 1)[0])
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


def _display(value: object) -> str:
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, str):
        return shorten(value)
    try:
        return shorten(json.dumps(value, separators=(",", ":"), allow_nan=True))
    except (TypeError, ValueError):
        return shorten(repr(value))


def _is_no_data(value: object) -> bool:
    return value is None or value == [] or (isinstance(value, float) and math.isnan(value))


def _compile_path(text: str) -> Any:
    path = text.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1].strip()
    try:
        return parse_json_path(path or "$")
    except (JSONPathError, ValueError, TypeError, AttributeError) as error:
        raise MeasurementError(f"jsonPath {text!r} does not parse: {error}") from None


def _render_json(value: Any, args: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return render_query(value, args, escape="none")
    if isinstance(value, dict):
        return {key: _render_json(item, args) for key, item in value.items()}
    if isinstance(value, list):
        return [_render_json(item, args) for item in value]
    return value


def _select(body: bytes, path: Any, where: str) -> list[object]:
    document = parse_json(body, where)
    return [match.value for match in path.find(document)]


class WebMetricProvider:
    """Measures a metric whose provider is `web`."""

    def __init__(
        self, *, transport: httpx.AsyncBaseTransport | None = None, outbound: Outbound | None = None
    ) -> None:
        self._outbound = outbound_for(transport, outbound)

    async def measure(self, metric: Metric, args: Mapping[str, str], secrets: SecretReader) -> ProviderResult:
        spec = metric.provider.web if metric.provider is not None else None
        if spec is None:
            return ProviderResult(None, "", error=f"metric {metric.name} has no web provider")
        credentials = NO_CREDENTIALS
        where = _where(spec.url)
        try:
            url = render_query(spec.url, args, escape="url")
            where = _where(url)  # the URL used (a secret in it is redacted by the caller's scrubber)
            headers = {header.key: render_query(header.value, args, escape="none") for header in spec.headers}
            body = render_query(spec.body, args, escape="none") if spec.body is not None else None
            if spec.json_body is not None:
                if body is not None:
                    raise MeasurementError("give body or jsonBody, not both")
                # Argo's jsonBody: the JSON as written, arguments replaced in its strings.
                body = json.dumps(_render_json(spec.json_body, args))
            path = _compile_path(spec.json_path)
            credentials = await read_credentials(spec.authentication, secrets)
            if not credentials.headers:
                credentials = await argo_credentials(
                    spec.authentication, args, self._outbound.with_insecure(spec.insecure)
                )
            headers.update(credentials.headers)
            if body is not None and not any(key.lower() == "content-type" for key in headers):
                headers["Content-Type"] = "application/json"
            timeout = float(spec.timeout_seconds)
            log.debug("metric %s: %s %s", metric.name, spec.method, where)
            outbound = self._outbound.with_secrets(bool(credentials.headers)).with_insecure(spec.insecure)
            answer = await bounded_request(
                outbound,
                spec.method,
                url,
                where=f"{spec.method} {where}",
                timeout=timeout,
                headers=headers,
                content=body,
            )
            if answer.status_code >= 300:
                # The body is not shown: only a value the jsonPath selects reaches the status.
                moved = " (redirects are not followed)" if answer.status_code < 400 else ""
                raise MeasurementError(f"{spec.method} {where}: HTTP {answer.status_code}{moved}")
            # Parsing up to the cap and a JSONPath over it take a while on a large answer: in a
            # thread, so that no other Rollout (nor /healthz) waits for them.
            matches = await asyncio.to_thread(_select, answer.body, path, f"{spec.method} {where}")
        except (ArgumentError, MeasurementError) as error:
            return ProviderResult(None, "", error=credentials.scrub(shorten(str(error))))
        except Exception as error:  # a provider never raises; say what happened, without secrets
            message = f"{spec.method} {where}: unexpected {type(error).__name__}: {error}"
            return ProviderResult(None, "", error=credentials.scrub(shorten(message)))
        if not matches:
            return ProviderResult(None, "", no_data=True)
        value = matches[0] if len(matches) == 1 else matches
        return ProviderResult(value, credentials.scrub(_display(value)), no_data=_is_no_data(value))

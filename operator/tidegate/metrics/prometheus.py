"""Prometheus: instant queries (`/api/v1/query`) and range queries (`/api/v1/query_range`).

Result types become `result` for the conditions as follows:

| Prometheus            | result                                           | no data when            |
|-----------------------|--------------------------------------------------|-------------------------|
| scalar                | float                                            | NaN                     |
| vector                | list of floats, series sorted by their labels    | empty, or every value NaN |
| matrix (range query)  | list of per-series lists of floats, same order   | no sample, or all NaN   |
| string                | str                                              | never                   |
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from tidegate.api.analysis import Metric, PrometheusProvider, PrometheusRange
from tidegate.core.args import ArgumentError, render_query
from tidegate.core.durations import DurationError, parse_duration
from tidegate.metrics._base import (
    NO_CREDENTIALS,
    Credentials,
    MeasurementError,
    ProviderResult,
    SecretReader,
    describe_http_error,
    format_number,
    format_values,
    read_credentials,
    scrub_url_userinfo,
    shorten,
)

__all__ = ["PrometheusMetricProvider"]

log = logging.getLogger(__name__)

_CLIENT_GRACE = 2.0
"""Seconds the HTTP client waits beyond the query timeout, so that Prometheus' own timeout
error (which says which query) arrives before ours."""

Labels = tuple[tuple[str, str], ...]


def _where(address: str) -> str:
    """The server, for messages: scheme://host[:port], never user-info, path or query."""
    parts = urlsplit(address)
    if not parts.scheme or not parts.hostname:
        return scrub_url_userinfo(address)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def _float(sample: Any) -> float:
    return float(sample[1])


def _labels(series: Mapping[str, Any]) -> Labels:
    return tuple(sorted((str(k), str(v)) for k, v in (series.get("metric") or {}).items()))


def _all_nan(values: list[float]) -> bool:
    return all(math.isnan(value) for value in values)


class PrometheusMetricProvider:
    """Measures a metric whose provider is `prometheus`."""

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._transport = transport
        self._clock = clock

    async def measure(self, metric: Metric, args: Mapping[str, str], secrets: SecretReader) -> ProviderResult:
        spec = metric.provider.prometheus if metric.provider is not None else None
        if spec is None:
            return ProviderResult(None, "", error=f"metric {metric.name} has no prometheus provider")
        credentials = NO_CREDENTIALS
        try:
            query = render_query(spec.query, args, escape="promql")
            credentials = await read_credentials(spec.authentication, secrets)
            if spec.range is not None:
                series = await self._matrix(spec, query, credentials, end=None)
                return self._range_result(series)
            data = await self._request(spec, "/api/v1/query", {"query": query}, credentials)
            return self._instant_result(data)
        except (ArgumentError, DurationError, MeasurementError) as error:
            return ProviderResult(None, "", error=credentials.scrub(shorten(str(error))))
        except Exception as error:  # a provider never raises; say what happened, without secrets
            log.debug("metric %s: unexpected %s", metric.name, type(error).__name__)
            message = f"unexpected {type(error).__name__}: {error}"
            return ProviderResult(None, "", error=credentials.scrub(shorten(message)))

    async def query_range(
        self,
        spec: PrometheusProvider,
        secrets: SecretReader,
        *,
        args: Mapping[str, str] | None = None,
        query: str | None = None,
        end: float | None = None,
    ) -> list[float]:
        """Every sample of a range query over `spec.range` (window, step), flattened.

        `query` (default: `spec.query`) gets `{{args.NAME}}` rendered from `args`. For the
        statistical judge. Raises MeasurementError (credential-free) when there is no answer;
        NaN samples are dropped.
        """
        credentials = NO_CREDENTIALS
        try:
            rendered = render_query(query if query is not None else spec.query, args or {}, escape="promql")
            credentials = await read_credentials(spec.authentication, secrets)
            series = await self._matrix(spec, rendered, credentials, end=end)
        except (ArgumentError, DurationError, MeasurementError) as error:
            failure = credentials.scrub(str(error))
        else:
            return [value for _, values in series for value in values if not math.isnan(value)]
        # Raised outside the handler, so that no exception chain leads back to the request
        # (and its Authorization header).
        raise MeasurementError(failure)

    # --- requests ---------------------------------------------------------------------

    async def _matrix(
        self, spec: PrometheusProvider, query: str, credentials: Credentials, *, end: float | None
    ) -> list[tuple[Labels, list[float]]]:
        window_spec = spec.range or PrometheusRange()
        window = parse_duration(window_spec.window)
        step = parse_duration(window_spec.step)
        if step <= 0:
            raise MeasurementError("range step must be more than 0s")
        until = self._clock() if end is None else end
        params = {"query": query, "start": repr(until - window), "end": repr(until), "step": repr(step)}
        data = await self._request(spec, "/api/v1/query_range", params, credentials)
        if data.get("resultType") != "matrix":
            raise MeasurementError(f"range query returned {data.get('resultType')!r}, not a matrix")
        series = [
            (_labels(item), [_float(sample) for sample in item.get("values") or []])
            for item in data.get("result") or []
        ]
        return sorted(series, key=lambda entry: entry[0])

    async def _request(
        self, spec: PrometheusProvider, path: str, params: dict[str, str], credentials: Credentials
    ) -> dict[str, Any]:
        timeout = parse_duration(spec.timeout)
        where = _where(spec.address)
        url = spec.address.rstrip("/") + path
        query_params = {**params, "timeout": format(timeout, "g")}
        log.debug("prometheus %s%s", where, path)
        failure: str | None = None
        try:
            async with httpx.AsyncClient(
                transport=self._transport, timeout=timeout + _CLIENT_GRACE
            ) as client:
                response = await client.get(url, params=query_params, headers=credentials.headers)
        except httpx.HTTPError as error:
            failure = f"prometheus {where}: {describe_http_error(error, timeout)}"
        if failure is not None:  # raised outside the handler: no chain back to the request's headers
            raise MeasurementError(failure)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "status" not in body:
            raise MeasurementError(
                f"prometheus {where}: HTTP {response.status_code}, not a Prometheus API answer: "
                f"{shorten(response.text, 120)}"
            )
        if body.get("status") != "success":
            kind = body.get("errorType") or f"HTTP {response.status_code}"
            raise MeasurementError(f"prometheus {where}: {kind}: {body.get('error') or 'query failed'}")
        data = body.get("data")
        if not isinstance(data, dict):
            raise MeasurementError(f"prometheus {where}: answer without data")
        return data

    # --- results ----------------------------------------------------------------------

    @staticmethod
    def _instant_result(data: Mapping[str, Any]) -> ProviderResult:
        kind = data.get("resultType")
        result = data.get("result")
        if kind == "scalar":
            value = _float(result)
            return ProviderResult(value, format_number(value), no_data=math.isnan(value))
        if kind == "vector":
            samples = sorted(
                ((_labels(item), _float(item["value"])) for item in result or []), key=lambda s: s[0]
            )
            values = [value for _, value in samples]
            return ProviderResult(values, format_values(values), no_data=_all_nan(values))
        if kind == "matrix":
            series = sorted(
                ((_labels(item), [_float(s) for s in item.get("values") or []]) for item in result or []),
                key=lambda entry: entry[0],
            )
            return PrometheusMetricProvider._range_result(series)
        if kind == "string":
            text = str(result[1]) if isinstance(result, list) and len(result) > 1 else ""
            return ProviderResult(text, shorten(text))
        return ProviderResult(None, "", error=f"unexpected result type {kind!r}")

    @staticmethod
    def _range_result(series: list[tuple[Labels, list[float]]]) -> ProviderResult:
        values = [samples for _, samples in series]
        flat = [value for samples in values for value in samples]
        text = shorten("[" + ", ".join(format_values(samples) for samples in values) + "]")
        return ProviderResult(values, text, no_data=_all_nan(flat))

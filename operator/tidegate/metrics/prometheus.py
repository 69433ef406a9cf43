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

import json
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
from tidegate.core.time_expressions import TimeExpressionError, eval_time
from tidegate.metrics._argo_auth import argo_credentials, with_headers
from tidegate.metrics._base import (
    NO_CREDENTIALS,
    Credentials,
    MeasurementError,
    ProviderResult,
    SecretReader,
    bounded_request,
    format_number,
    format_values,
    outbound_for,
    read_credentials,
    scrub_url_userinfo,
    shorten,
)
from tidegate.metrics._http import Outbound

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
        outbound: Outbound | None = None,
    ) -> None:
        self._outbound = outbound_for(transport, outbound)
        self._clock = clock

    async def measure(self, metric: Metric, args: Mapping[str, str], secrets: SecretReader) -> ProviderResult:
        spec = metric.provider.prometheus if metric.provider is not None else None
        if spec is None:
            return ProviderResult(None, "", error=f"metric {metric.name} has no prometheus provider")
        credentials = NO_CREDENTIALS
        try:
            query = render_query(spec.query, args, escape="promql")
            credentials = await self._credentials(spec, args, secrets)
            if spec.range_query is not None:
                return await self._argo_range(spec, query, args, credentials)
            if spec.range is not None:
                series = await self._matrix(spec, query, credentials, end=None)
                return self._range_result(series)
            data = await self._request(spec, "/api/v1/query", {"query": query}, credentials)
            return self._instant_result(data)
        except (ArgumentError, DurationError, MeasurementError, TimeExpressionError) as error:
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
        start: float | None = None,
        end: float | None = None,
    ) -> list[float]:
        """Every sample of a range query over `spec.range` (window, step), flattened.

        `query` (default: `spec.query`) gets `{{args.NAME}}` rendered from `args`. For the
        statistical judge. `start` (epoch seconds; default `end - window`) and `end`
        (default now) bound the span. Raises MeasurementError (credential-free) when there
        is no answer; NaN samples are dropped.
        """
        series = await self.query_range_series(spec, secrets, args=args, query=query, start=start, end=end)
        return [value for _, points in series for _, value in points if not math.isnan(value)]

    async def query_range_series(
        self,
        spec: PrometheusProvider,
        secrets: SecretReader,
        *,
        args: Mapping[str, str] | None = None,
        query: str | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        """The series of a range query as (labels, [(time, value), ...]), sorted by labels.

        As `query_range`, without flattening: for judges that align steps by time or read
        the `le` label of histogram buckets.
        """
        credentials = NO_CREDENTIALS
        try:
            rendered = render_query(query if query is not None else spec.query, args or {}, escape="promql")
            credentials = await read_credentials(spec.authentication, secrets)
            series = await self._matrix_points(spec, rendered, credentials, start=start, end=end)
        except (ArgumentError, DurationError, MeasurementError) as error:
            failure = credentials.scrub(str(error))
        else:
            return [(dict(labels), points) for labels, points in series]
        # Raised outside the handler, so that no exception chain leads back to the request
        # (and its Authorization header).
        raise MeasurementError(failure)

    async def _credentials(
        self, spec: PrometheusProvider, args: Mapping[str, str], secrets: SecretReader
    ) -> Credentials:
        """Tidegate's Secret references, else Argo's basicAuth / oauth2; plus `headers`."""
        credentials = await read_credentials(spec.authentication, secrets)
        if not credentials.headers:
            credentials = await argo_credentials(
                spec.authentication, args, self._outbound.with_insecure(spec.insecure)
            )
        return with_headers(credentials, spec.headers, args)

    async def _argo_range(
        self, spec: PrometheusProvider, query: str, args: Mapping[str, str], credentials: Credentials
    ) -> ProviderResult:
        """Argo's rangeQuery: start and end as `now() - duration("...")`, every sample of every
        series in one list (Argo's processResponse for a matrix)."""
        assert spec.range_query is not None
        now = self._clock()
        times = {}
        for field in ("start", "end"):
            text = getattr(spec.range_query, field)
            try:
                times[field] = eval_time(render_query(text, args, escape="none"), now) if text else now
            except TimeExpressionError as error:
                raise MeasurementError(f"rangeQuery.{field}: {error}") from None
        step = parse_duration(spec.range_query.step) if spec.range_query.step is not None else 0.0
        if step <= 0:
            raise MeasurementError("rangeQuery.step must be more than 0s")
        params = {
            "query": query,
            "start": repr(times["start"]),
            "end": repr(times["end"]),
            "step": repr(step),
        }
        data = await self._request(spec, "/api/v1/query_range", params, credentials)
        if data.get("resultType") != "matrix":
            raise MeasurementError(f"range query returned {data.get('resultType')!r}, not a matrix")
        values = [_float(sample) for item in data.get("result") or [] for sample in item.get("values") or []]
        return ProviderResult(values, shorten(format_values(values)), no_data=_all_nan(values))

    # --- requests ---------------------------------------------------------------------

    async def _matrix(
        self, spec: PrometheusProvider, query: str, credentials: Credentials, *, end: float | None
    ) -> list[tuple[Labels, list[float]]]:
        series = await self._matrix_points(spec, query, credentials, start=None, end=end)
        return [(labels, [value for _, value in points]) for labels, points in series]

    async def _matrix_points(
        self,
        spec: PrometheusProvider,
        query: str,
        credentials: Credentials,
        *,
        start: float | None,
        end: float | None,
    ) -> list[tuple[Labels, list[tuple[float, float]]]]:
        window_spec = spec.range or PrometheusRange()
        window = parse_duration(window_spec.window)
        step = parse_duration(window_spec.step)
        if step <= 0:
            raise MeasurementError("range step must be more than 0s")
        until = self._clock() if end is None else end
        since = until - window if start is None else start
        params = {"query": query, "start": repr(since), "end": repr(until), "step": repr(step)}
        data = await self._request(spec, "/api/v1/query_range", params, credentials)
        if data.get("resultType") != "matrix":
            raise MeasurementError(f"range query returned {data.get('resultType')!r}, not a matrix")
        series = [
            (_labels(item), [(float(sample[0]), _float(sample)) for sample in item.get("values") or []])
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
        outbound = self._outbound.with_secrets(bool(credentials.headers)).with_insecure(spec.insecure)
        answer = await bounded_request(
            outbound,
            "GET",
            url,
            where=f"prometheus {where}",
            timeout=timeout + _CLIENT_GRACE,
            said_timeout=timeout,
            headers=credentials.headers,
            params=query_params,
        )
        try:
            body = json.loads(answer.body)
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict) or "status" not in body:
            # The body is not shown: only the selected value reaches the status.
            raise MeasurementError(
                f"prometheus {where}: HTTP {answer.status_code}, not a Prometheus API answer "
                f"({len(answer.body)} bytes of {answer.content_type or 'unknown type'})"
            )
        if body.get("status") != "success":
            kind = shorten(str(body.get("errorType") or f"HTTP {answer.status_code}"), 40)
            why = shorten(str(body.get("error") or "query failed"), 160)
            raise MeasurementError(f"prometheus {where}: {kind}: {why}")
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

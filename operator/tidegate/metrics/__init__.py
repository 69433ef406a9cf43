"""Metric providers behind one small Protocol, chosen by an explicit registry.

A provider takes one measurement (`Provider.measure`) and returns a `ProviderResult`; it
never raises for a bad query, an HTTP error, a timeout or an unreachable server. A metric
that names no known provider is an error in the spec (`UnknownProviderError`), never a
silent fallback.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tidegate.api.analysis import Metric
from tidegate.metrics._base import (
    MappingSecretReader,
    MeasurementError,
    Provider,
    ProviderResult,
    SecretReader,
    UnknownProviderError,
)
from tidegate.metrics.prometheus import PrometheusMetricProvider
from tidegate.metrics.web import WebMetricProvider

__all__ = [
    "PROVIDERS",
    "MappingSecretReader",
    "MeasurementError",
    "PrometheusMetricProvider",
    "Provider",
    "ProviderResult",
    "SecretReader",
    "UnknownProviderError",
    "WebMetricProvider",
    "provider_for",
]

ProviderFactory = Callable[[httpx.AsyncBaseTransport | None], Provider]

PROVIDERS: dict[str, ProviderFactory] = {
    "prometheus": lambda transport: PrometheusMetricProvider(transport=transport),
    "web": lambda transport: WebMetricProvider(transport=transport),
}
"""Provider field of `spec.metrics[].provider` -> how to build its provider."""


def provider_for(metric: Metric, *, transport: httpx.AsyncBaseTransport | None = None) -> Provider:
    """The provider for a metric, by which field of `provider` is set."""
    chosen = (
        [name for name in PROVIDERS if getattr(metric.provider, name, None) is not None]
        if metric.provider is not None
        else []
    )
    if not chosen:
        raise UnknownProviderError(
            f"metric {metric.name}: no provider this operator supports "
            f"(set exactly one of: {', '.join(PROVIDERS)})"
        )
    if len(chosen) > 1:
        raise UnknownProviderError(
            f"metric {metric.name}: {' and '.join(chosen)} are both set; a metric takes exactly one provider"
        )
    return PROVIDERS[chosen[0]](transport)

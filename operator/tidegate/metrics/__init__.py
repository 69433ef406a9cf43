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
from tidegate.metrics._http import (
    Outbound,
    configure_outbound,
    default_outbound,
    policy_from_env,
)
from tidegate.metrics.job import JobApi, JobApiError, JobMetricProvider, RunRef, jobs_dropped
from tidegate.metrics.prometheus import PrometheusMetricProvider
from tidegate.metrics.web import WebMetricProvider

__all__ = [
    "PROVIDERS",
    "JobApi",
    "JobApiError",
    "JobMetricProvider",
    "MappingSecretReader",
    "MeasurementError",
    "Outbound",
    "PrometheusMetricProvider",
    "Provider",
    "ProviderResult",
    "RunRef",
    "SecretReader",
    "UnknownProviderError",
    "WebMetricProvider",
    "configure_outbound",
    "default_outbound",
    "jobs_dropped",
    "policy_from_env",
    "provider_for",
]

ProviderFactory = Callable[[httpx.AsyncBaseTransport | None, Outbound | None], Provider]

PROVIDERS: dict[str, ProviderFactory] = {
    "prometheus": lambda transport, outbound: PrometheusMetricProvider(
        transport=transport, outbound=outbound
    ),
    "web": lambda transport, outbound: WebMetricProvider(transport=transport, outbound=outbound),
}
"""Provider field of `spec.metrics[].provider` -> how to build its provider.

The `job` provider is not here: its measurements outlive one call (a Job runs), so the
AnalysisRun controller drives it through `JobMetricProvider.run / resume / terminate`."""


def provider_for(
    metric: Metric, *, transport: httpx.AsyncBaseTransport | None = None, outbound: Outbound | None = None
) -> Provider:
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
    return PROVIDERS[chosen[0]](transport, outbound)

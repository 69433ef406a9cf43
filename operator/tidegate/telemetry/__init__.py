"""Telemetry of the operator itself: Prometheus metrics, health endpoints, structured logs.

Public surface:

- `Telemetry`: the metrics registry and the calls the controller makes
  (`observe_rollout`, `count_abort`, `count_promotion`, `count_analysis_outcome`,
  `time_reconcile`, `count_api_error`, `forget`).
- `TelemetryServer`: aiohttp server for `/metrics`, `/healthz`, `/readyz`.
- `setup_logging`, `JsonFormatter`, `TextFormatter`, `rollout_logger`: logging.

Imports only the standard library, prometheus_client and aiohttp (no kopf, no
kubernetes), so any layer above can use it.
"""

from tidegate.telemetry._logging import (
    JsonFormatter,
    RolloutLoggerAdapter,
    TextFormatter,
    parse_level,
    rollout_logger,
    setup_logging,
)
from tidegate.telemetry._metrics import ANALYSIS_OUTCOMES, PHASES, RECONCILE_BUCKETS, Telemetry
from tidegate.telemetry._server import DEFAULT_HOST, DEFAULT_PORT, TelemetryServer

__all__ = [
    "ANALYSIS_OUTCOMES",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "PHASES",
    "RECONCILE_BUCKETS",
    "JsonFormatter",
    "RolloutLoggerAdapter",
    "Telemetry",
    "TelemetryServer",
    "TextFormatter",
    "parse_level",
    "rollout_logger",
    "setup_logging",
]

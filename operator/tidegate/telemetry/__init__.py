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
    NOISY_LOGGERS,
    JsonFormatter,
    RolloutLoggerAdapter,
    TextFormatter,
    parse_level,
    rollout_logger,
    setup_logging,
)
from tidegate.telemetry._metrics import (
    ANALYSIS_OUTCOMES,
    ANALYSIS_PHASES,
    PHASES,
    RECONCILE_BUCKETS,
    REPLICA_STATES,
    Telemetry,
)
from tidegate.telemetry._server import DEFAULT_HOST, DEFAULT_PORT, TelemetryServer

__all__ = [
    "ANALYSIS_OUTCOMES",
    "ANALYSIS_PHASES",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "NOISY_LOGGERS",
    "PHASES",
    "RECONCILE_BUCKETS",
    "REPLICA_STATES",
    "JsonFormatter",
    "RolloutLoggerAdapter",
    "Telemetry",
    "TelemetryServer",
    "TextFormatter",
    "parse_level",
    "rollout_logger",
    "setup_logging",
]

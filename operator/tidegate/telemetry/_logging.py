"""Structured logging: one JSON object per line, or plain text for a terminal.

Every line carries `time`, `level`, `logger` and `message`; lines about a Rollout also
carry `namespace` and `rollout`. Those come from either

- the caller's extras: ``logger.info("...", extra={"namespace": ns, "rollout": name})``
  (not ``"name"``: the logging module reserves it for the logger's name and raises
  KeyError), or `rollout_logger(logger, ns, name)`, which adds them to every call; or
- kopf's per-object logger (the `logger` kwarg of a handler), whose records hold a
  `k8s_ref` dict (apiVersion, kind, name, uid, namespace). A Rollout's name becomes
  `rollout`; another kind's reference becomes ``"object": "Kind/name"``.

Other scalar extras (``extra={"step": 2}``) are copied as they are.
"""

from __future__ import annotations

import json as _json
import logging
import sys
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

NOISY_LOGGERS: tuple[str, ...] = (
    "asyncio",
    "aiohttp.access",
    "urllib3",
    "httpx",
    "httpcore",
    "kubernetes",
    "kopf.objects",
)
"""Third-party loggers held at warning unless the level is debug. kopf.objects logs a line per
handled watch event at info."""

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
# kopf's internals on its records: the reference is unpacked, the rest is not ours to print.
_KOPF_ATTRS = frozenset({"k8s_ref", "k8s_skip", "settings"})
_FIXED_KEYS = frozenset({"time", "level", "logger", "message", "namespace", "rollout", "object"})


def rollout_fields(record: logging.LogRecord) -> dict[str, str]:
    """The `namespace` / `rollout` (or `object`) a record is about, from extras or kopf's k8s_ref."""
    fields: dict[str, str] = {}
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, Mapping):
        if ref.get("namespace"):
            fields["namespace"] = str(ref["namespace"])
        kind, name = ref.get("kind"), ref.get("name")
        if name and kind in (None, "Rollout"):
            fields["rollout"] = str(name)
        elif name:
            fields["object"] = f"{kind}/{name}"
    for key in ("namespace", "rollout"):
        value = getattr(record, key, None)
        if value:
            fields[key] = str(value)
    return fields


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, then context."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(rollout_fields(record))
        payload.update(_extras(record))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return _json.dumps(payload, ensure_ascii=False, default=str)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """The record's own fields beyond the fixed ones (`extra=`), printable as they are."""
    out: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in _STANDARD_ATTRS or key in _KOPF_ATTRS or key in _FIXED_KEYS or key.startswith("_"):
            continue
        out[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
    return out


class TextFormatter(logging.Formatter):
    """``2026-01-02T03:04:05.678Z info    tidegate.rollout [shop/web] message revision=2 step=1``.

    For people: the Rollout in brackets, then the record's other fields as key=value (None
    left out), in the order they were given.
    """

    def format(self, record: logging.LogRecord) -> str:
        fields = rollout_fields(record)
        subject = fields.get("rollout") or fields.get("object")
        prefix = ""
        if subject:
            prefix = f"[{fields['namespace']}/{subject}] " if "namespace" in fields else f"[{subject}] "
        level = record.levelname.lower()
        extras = " ".join(f"{k}={_quoted(v)}" for k, v in _extras(record).items() if v is not None)
        line = f"{_timestamp(record)} {level:<7} {record.name} {prefix}{record.getMessage()}"
        if extras:
            line += " " + extras
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _quoted(value: Any) -> str:
    text = str(value)
    return _json.dumps(text) if (not text or any(c in text for c in ' "=')) else text


class _TelemetryHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler `setup_logging` installed, so a second call replaces it."""


def parse_level(level: str) -> int:
    """`debug`, `info`, `warning` (or `warn`), `error`, `critical`, in any case."""
    try:
        return LEVELS[level.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}") from None


def setup_logging(level: str = "info", json: bool = True) -> logging.Handler:
    """Send every log record to stderr, one JSON object per line (or text when `json` is false).

    Replaces the handler a previous call installed; leaves others (e.g. kopf's event
    poster on `kopf.objects`) alone. Returns the installed handler.
    """
    root_level = parse_level(level)  # before touching anything: a bad level changes nothing
    handler = _TelemetryHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _TelemetryHandler)]
    root.addHandler(handler)
    root.setLevel(root_level)
    # Other libraries' request lines (httpx logs every Prometheus query URL at info) only at
    # debug; their warnings and errors always.
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.DEBUG if root_level <= logging.DEBUG else logging.WARNING)
    return handler


class RolloutLoggerAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Adds `namespace` and `rollout` to every record, merged with the call's own extras."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


def rollout_logger(logger: logging.Logger, namespace: str, name: str) -> RolloutLoggerAdapter:
    """A logger whose lines are about the Rollout `namespace/name`."""
    return RolloutLoggerAdapter(logger, {"namespace": namespace, "rollout": name})

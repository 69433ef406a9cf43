"""Notification services and templates, in the shape of Argo's notifications-engine, decided purely.

The ConfigMap `tidegate-notification-configmap` (Argo: `argo-rollouts-notification-configmap`)
holds `service.<type>[.<name>]`, `template.<name>` and `trigger.<name>` keys, each a YAML
document; `$key` in a service's values is the Secret `tidegate-notification-secret`'s key
(notifications-engine's `replaceStringSecret`). This module turns that configuration and one
pending notification into the HTTP request to send; `tidegate.notifications` sends it.

Templates are Go-template field references, `{{.rollout.metadata.name}}`, `{{.recipient}}`,
`{{.notification.message}}`; other template actions (`range`, `if`, pipelines) are refused
with a message rather than sent half-rendered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from tidegate.core.durations import DurationError, parse_duration
from tidegate.core.notifications import TRIGGERS

CONFIGMAP = "tidegate-notification-configmap"
SECRET = "tidegate-notification-secret"
SERVICE_TYPES = ("webhook", "slack", "teams")
DEFAULT_TIMEOUT = 10.0


class NotificationError(Exception):
    """The notification cannot be sent as configured: retrying will not help."""


# ---------------------------------------------------------------------------
# Templates


_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
_FIELD = re.compile(r"^\.[A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*$")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def lookup(context: Mapping[str, Any], path: str) -> Any:
    """`.a.b.0` in the context; None where a key is missing (Go prints nothing for it either)."""
    value: Any = context
    for part in [p for p in path.split(".") if p]:
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def render(template: str, context: Mapping[str, Any]) -> str:
    """Substitute every `{{.path}}`; raise NotificationError for any other template action."""

    def one(match: re.Match[str]) -> str:
        expr = match.group(1).strip()
        if not _FIELD.match(expr):
            raise NotificationError(
                f"template action {{{{{expr}}}}} is not supported: only field references such as "
                "{{.rollout.metadata.name}}"
            )
        return _text(lookup(context, expr))

    return _ACTION.sub(one, template)


# ---------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class Retry:
    """notifications-engine's webhook options: retryMax (3), retryWaitMin (1s), retryWaitMax (5s)."""

    max: int = 3
    wait_min: float = 1.0
    wait_max: float = 5.0

    def delay(self, attempt: int) -> float:
        """Seconds before attempt `attempt + 1` (attempt counts from 1): doubling, capped.

        >>> [Retry().delay(n) for n in (1, 2, 3, 4)]
        [1.0, 2.0, 4.0, 5.0]
        """
        return float(min(self.wait_max, self.wait_min * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class Service:
    name: str
    """What subscriptions name: the instance name, or the type for an unnamed `service.<type>`."""
    type: str
    options: dict[str, Any] = field(default_factory=dict)
    retry: Retry = Retry()
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class Config:
    services: dict[str, Service]
    templates: dict[str, dict[str, Any]]
    triggers: dict[str, list[str]]
    """trigger name -> the templates it sends."""
    problems: dict[str, str]
    """ConfigMap key -> why it was not usable (a notification that needs it fails with this)."""


_SECRET_REF = re.compile(r"\$[\w-]+")


def _with_secrets(value: Any, secret: Mapping[str, str], key: str) -> Any:
    if isinstance(value, str):

        def one(m: re.Match[str]) -> str:
            name = m.group(0)[1:]
            if name not in secret:
                raise NotificationError(f"{key}: ${name} is not a key of Secret {SECRET}")
            return secret[name]

        return _SECRET_REF.sub(one, value)
    if isinstance(value, dict):
        return {k: _with_secrets(v, secret, key) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_secrets(v, secret, key) for v in value]
    return value


def _seconds(value: Any, default: float, key: str, name: str) -> float:
    if value is None:
        return default
    try:
        return float(value) if isinstance(value, int | float) else parse_duration(str(value))
    except (DurationError, ValueError) as exc:
        raise NotificationError(f"{key}: {name} {value!r} is not a duration") from exc


def builtin_template(trigger: str) -> dict[str, Any]:
    what = trigger.removeprefix("on-").replace("-", " ")
    return {
        "message": "Rollout {{.rollout.metadata.namespace}}/{{.rollout.metadata.name}}: "
        + what
        + ": {{.notification.message}}"
    }


def parse_config(data: Mapping[str, str], secret: Mapping[str, str]) -> Config:
    """The ConfigMap's data (and the Secret's, decoded) read as notifications-engine reads them;
    the built-in triggers send the built-in template named after them (`on-rollout-aborted`
    sends `rollout-aborted`), as Argo's notifications-install.yaml defines them."""
    services: dict[str, Service] = {}
    templates: dict[str, dict[str, Any]] = {t.removeprefix("on-"): builtin_template(t) for t in TRIGGERS}
    triggers: dict[str, list[str]] = {t: [t.removeprefix("on-")] for t in TRIGGERS}
    problems: dict[str, str] = {}
    for key in sorted(data):
        try:
            doc = yaml.safe_load(data[key]) if data[key] else None
        except yaml.YAMLError as exc:
            problems[key] = f"{key} is not YAML: {exc}"
            continue
        try:
            if key.startswith("service."):
                service = _service(key, doc, secret)
                services[service.name] = service
            elif key.startswith("template."):
                if not isinstance(doc, dict):
                    raise NotificationError(f"{key} must be a mapping (message, webhook, slack, teams)")
                templates[key.removeprefix("template.")] = doc
            elif key.startswith("trigger."):
                triggers[key.removeprefix("trigger.")] = _trigger(key, doc)
        except NotificationError as exc:
            problems[key] = str(exc)
    return Config(services, templates, triggers, problems)


def _service_name(key: str) -> str | None:
    """`service.slack` -> slack, `service.webhook.audit` -> audit: the name subscriptions use."""
    if not key.startswith("service."):
        return None
    parts = key.split(".", 2)
    return parts[2] if len(parts) > 2 else parts[1]


def _service(key: str, doc: Any, secret: Mapping[str, str]) -> Service:
    parts = key.split(".", 2)
    kind = parts[1] if len(parts) > 1 else ""
    if kind not in SERVICE_TYPES:
        raise NotificationError(
            f"{key}: service type {kind!r} is not supported (one of {', '.join(SERVICE_TYPES)})"
        )
    name = parts[2] if len(parts) > 2 else kind
    if not isinstance(doc, dict):
        raise NotificationError(f"{key} must be a mapping")
    options = _with_secrets(doc, secret, key)
    if kind == "webhook" and not options.get("url"):
        raise NotificationError(f"{key}: url is required")
    if kind in ("slack", "teams") and not isinstance(options.get("recipientUrls"), dict):
        hint = (
            " (Slack's API token is not supported: Tidegate posts to incoming webhooks)"
            if "token" in options
            else ""
        )
        raise NotificationError(f"{key}: recipientUrls (recipient: incoming webhook URL) is required{hint}")
    retry = Retry(
        max=int(options.get("retryMax", 3)),
        wait_min=_seconds(options.get("retryWaitMin"), 1.0, key, "retryWaitMin"),
        wait_max=_seconds(options.get("retryWaitMax"), 5.0, key, "retryWaitMax"),
    )
    timeout = _seconds(options.get("timeout"), DEFAULT_TIMEOUT, key, "timeout")
    return Service(name, kind, options, retry, timeout)


def _trigger(key: str, doc: Any) -> list[str]:
    if not isinstance(doc, list):
        raise NotificationError(f"{key} must be a list of conditions (- send: [template])")
    sends: list[str] = []
    for cond in doc:
        if not isinstance(cond, dict) or not isinstance(cond.get("send"), list):
            raise NotificationError(f"{key}: each condition needs send: [template, ...]")
        unsupported = sorted(k for k in cond if k not in ("send", "description"))
        if unsupported:
            raise NotificationError(f"{key}: {', '.join(unsupported)} is not supported (only send)")
        sends.extend(str(t) for t in cond["send"])
    return sends


# ---------------------------------------------------------------------------
# Requests


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: str
    timeout: float
    auth: tuple[str, str] | None = None


def context_for(rollout: Mapping[str, Any], item: Mapping[str, Any], recipient: str) -> dict[str, Any]:
    meta = rollout.get("metadata") or {}
    notification = {
        "id": f"{meta.get('uid') or meta.get('name')}-{item.get('id')}",
        "trigger": item.get("trigger"),
        "reason": item.get("reason"),
        "message": item.get("message"),
        "time": item.get("time"),
        "revision": item.get("revision"),
        "step": item.get("step"),
    }
    return {"rollout": rollout, "recipient": recipient, "notification": notification}


def _json_field(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise NotificationError(f"{where} is not JSON after rendering: {exc}") from exc


def build_request(
    config: Config, rollout: Mapping[str, Any], item: Mapping[str, Any], destination: str
) -> tuple[Request, Service]:
    """The one HTTP request that tells `destination` (`service:recipient`) of the notification."""
    service_name, _, recipient = destination.partition(":")
    trigger = str(item.get("trigger"))
    service = config.services.get(service_name)
    if service is None:
        key = next((k for k in config.problems if _service_name(k) == service_name), None)
        if key is not None:
            raise NotificationError(config.problems[key])
        raise NotificationError(f"service {service_name!r} is not configured in ConfigMap {CONFIGMAP}")
    if f"trigger.{trigger}" in config.problems:
        raise NotificationError(config.problems[f"trigger.{trigger}"])
    names = config.triggers.get(trigger)
    if not names:
        raise NotificationError(f"trigger {trigger!r} is not defined in ConfigMap {CONFIGMAP}")
    merged: dict[str, Any] = {}
    for name in names:
        if f"template.{name}" in config.problems:
            raise NotificationError(config.problems[f"template.{name}"])
        template = config.templates.get(name)
        if template is None:
            raise NotificationError(f"template {name!r} (trigger {trigger}) is not defined")
        for k, v in template.items():
            if isinstance(v, dict) and isinstance(merged.get(k), dict):
                merged[k] = {**merged[k], **v}
            else:
                merged[k] = v
    ctx = context_for(rollout, item, recipient)
    message = render(str(merged.get("message") or ""), ctx)
    if service.type == "webhook":
        return _webhook(service, merged, ctx, message), service
    url = (service.options.get("recipientUrls") or {}).get(recipient)
    if not url:
        raise NotificationError(f"service {service_name}: no recipientUrls entry for recipient {recipient!r}")
    own: dict[str, Any] = merged.get(service.type) or {}
    own = {k: render(str(v), ctx) for k, v in own.items() if v is not None}
    if service.type == "slack":
        body: dict[str, Any] = {"text": message}
        for k in ("attachments", "blocks"):
            if own.get(k, "").strip():
                body[k] = _json_field(own[k], f"template slack.{k}")
        if service.options.get("username"):
            body["username"] = service.options["username"]
        icon = str(service.options.get("icon") or "")
        if icon:
            body["icon_emoji" if icon.startswith(":") else "icon_url"] = icon
    else:  # teams: a MessageCard, as notifications-engine's teamsNotificationToMessage builds it
        if own.get("template", "").strip():
            return _post(service, str(url), own["template"]), service
        body = {"@type": "MessageCard", "@context": "https://schema.org/extensions", "text": message}
        for k in ("title", "summary", "themeColor"):
            if own.get(k):
                body[k] = own[k]
        body.setdefault("summary", own.get("title") or message[:80])
        sections = _json_field(own["sections"], "template teams.sections") if own.get("sections") else []
        if own.get("facts"):
            sections.append({"facts": _json_field(own["facts"], "template teams.facts")})
        if sections:
            body["sections"] = sections
        if own.get("potentialAction"):
            body["potentialAction"] = _json_field(own["potentialAction"], "template teams.potentialAction")
    return _post(service, str(url), json.dumps(body)), service


def _post(service: Service, url: str, body: str) -> Request:
    return Request("POST", url, (("Content-Type", "application/json"),), body, service.timeout)


def _webhook(service: Service, template: Mapping[str, Any], ctx: Mapping[str, Any], message: str) -> Request:
    opts = service.options
    own = (template.get("webhook") or {}).get(service.name) or {}
    method = str(own.get("method") or "POST").upper()
    url = (
        str(opts["url"]).rstrip("/") + render(str(own.get("path") or ""), ctx)
        if own.get("path")
        else str(opts["url"])
    )
    if own.get("body") is not None:
        body = render(str(own["body"]), ctx)
    else:
        rollout = ctx["rollout"].get("metadata") or {}
        note = ctx["notification"]
        body = json.dumps(
            {
                **note,
                "namespace": rollout.get("namespace"),
                "rollout": rollout.get("name"),
                "recipient": ctx["recipient"],
                "text": message,
            }
        )
    headers = [
        (str(h.get("name")), str(h.get("value"))) for h in opts.get("headers") or [] if isinstance(h, dict)
    ]
    if not any(n.lower() == "content-type" for n, _ in headers):
        headers.append(("Content-Type", "application/json"))
    basic = opts.get("basicAuth")
    auth = (
        (str(basic.get("username", "")), str(basic.get("password", ""))) if isinstance(basic, dict) else None
    )
    return Request(method, url, tuple(headers), body, service.timeout, auth)

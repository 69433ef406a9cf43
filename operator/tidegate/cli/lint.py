"""`tidegate lint FILE...`: check Rollouts and AnalysisTemplates before they reach a cluster.

The checks are those of the API server and of the operator, run offline:

1. the CRD schema, through the same pydantic models the CRDs are generated from (in
   strict mode, as the API server does not turn "10" into 10);
2. the CRDs' own CEL rules (`x-kubernetes-validations`), evaluated over the raw
   documents by `core.schema_rules` as the API server does, with the CRD's message and
   path. Transition rules (`oldSelf`) are not checked: a file has no old object; a rule
   that cannot be evaluated here is a warning, never a silent pass;
3. what the operator would refuse (`core.validation.operator_problems`, InvalidSpec) and
   what would fail later: templates that do not exist, arguments without a value,
   conditions that do not compile, `{{args.NAME}}` with no such argument, negative durations.

Errors make the exit status 1; warnings are printed and do not.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
import types
import typing
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import click
import yaml
from pydantic import BaseModel, ValidationError

from tidegate.api import API_VERSION, GROUP
from tidegate.api.analysis import AnalysisTemplate, AnalysisTemplateSpec, ClusterAnalysisTemplate
from tidegate.api.rollout import Rollout, RolloutAnalysis, RolloutSpec
from tidegate.core.args import placeholders
from tidegate.core.durations import DurationError, parse_duration
from tidegate.core.expressions import ExpressionError, compile_expression
from tidegate.core.schema_rules import PathPart, check_rules, crd_schema
from tidegate.core.schema_rules import format_path as format_path  # also cli.plan's
from tidegate.core.simulate import analysis_window, template_key
from tidegate.core.validation import operator_problems

Severity = Literal["error", "warning"]

TEMPLATE_KINDS = ("AnalysisTemplate", "ClusterAnalysisTemplate")
CHECKED_KINDS = ("Rollout", *TEMPLATE_KINDS)
# Kinds that commonly sit beside a Rollout; not checked, not warned about.
COMPANION_KINDS = frozenset({
    "Service", "VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "Deployment",
    "ConfigMap", "Secret", "Namespace", "ServiceAccount", "Role", "RoleBinding", "ClusterRole",
    "ClusterRoleBinding", "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget",
    "NetworkPolicy", "PeerAuthentication", "AuthorizationPolicy", "ServiceMonitor", "PodMonitor",
    "AnalysisRun", "HTTPRoute", "GRPCRoute", "GatewayClass", "ReferenceGrant",
})  # fmt: skip


# ---------------------------------------------------------------------------
# Messages


_PATH_TOKEN = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def parse_path(text: str) -> tuple[PathPart, ...]:
    """The inverse of format_path (a label key with dots is split; good enough to find a line)."""
    return tuple(int(i) if i else name for i, name in _PATH_TOKEN.findall(text))


@dataclass(frozen=True)
class Message:
    severity: Severity
    file: str
    document: int
    """Position of the YAML document in its file, from 1."""
    line: int | None
    """Line of the field (or of the nearest enclosing one that exists), from 1."""
    kind: str | None
    name: str | None
    path: str
    """Field path in camelCase, e.g. `spec.strategy.canary.steps[0].setWeight`; empty: the object."""
    text: str

    def format(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        if self.kind:
            obj = f"{self.kind}/{self.name}" if self.name else self.kind
            obj += f" (document {self.document})"
        else:
            obj = f"document {self.document}"
        path = f"{self.path}: " if self.path else ""
        return f"{where}: {self.severity}: {obj}: {path}{self.text}"


# ---------------------------------------------------------------------------
# Loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as text, as kubectl sends them to the API server."""


def _timestamp_as_text(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


@dataclass
class Document:
    file: str
    index: int
    """From 1."""
    data: Any
    node: yaml.Node | None = None

    @property
    def kind(self) -> str | None:
        kind = self.data.get("kind") if isinstance(self.data, dict) else None
        return kind if isinstance(kind, str) else None

    @property
    def api_version(self) -> str | None:
        value = self.data.get("apiVersion") if isinstance(self.data, dict) else None
        return value if isinstance(value, str) else None

    @property
    def name(self) -> str | None:
        meta = self.data.get("metadata") if isinstance(self.data, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        return name if isinstance(name, str) else None

    @property
    def namespace(self) -> str | None:
        meta = self.data.get("metadata") if isinstance(self.data, dict) else None
        ns = meta.get("namespace") if isinstance(meta, dict) else None
        return ns if isinstance(ns, str) else None

    def line_of(self, parts: Sequence[PathPart]) -> int | None:
        """Line of the deepest node along the path that exists."""
        node = self.node
        if node is None:
            return None
        line = node.start_mark.line + 1
        for part in parts:
            child: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == part:
                        child = value
                        line = key.start_mark.line + 1
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                child = node.value[part]
                line = child.start_mark.line + 1
            if child is None:
                break
            node = child
        return line


def expand_paths(paths: Iterable[str]) -> list[str]:
    """Files as given; a directory stands for its *.yaml and *.yml files (as `kubectl apply -f`)."""
    out: list[str] = []
    for p in paths:
        path = Path(p)
        if p != "-" and path.is_dir():
            out.extend(
                str(f) for f in sorted(path.iterdir()) if f.suffix in (".yaml", ".yml") and f.is_file()
            )
        else:
            out.append(p)
    return out


def load_documents(file: str) -> tuple[list[Document], list[Message]]:
    """The documents of a YAML file (`-`: standard input); a syntax error becomes a message."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [Message("error", file, 1, None, None, None, "", f"cannot read: {exc}")]
    docs: list[Document] = []
    messages: list[Message] = []
    loader = _Loader(text)
    index = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            index += 1
            if node is None:
                continue
            data = loader.construct_document(node)
            if data is not None:
                docs.append(Document(file, index, data, node))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        messages.append(Message("error", file, index + 1, line, None, None, "", f"YAML: {problem}"))
    finally:
        loader.dispose()
    return docs, messages


# ---------------------------------------------------------------------------
# Schema: pydantic errors, and fields the schema does not know


_UNION_TAGS = {"int": "an integer", "str": "a string", "float": "a number", "bool": "a boolean"}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _pydantic_text(error: Any) -> str:
    if error["type"] == "missing":
        return "is required"
    text = re.sub(r"^(Input|List|String|Value|Dictionary) should", "must", error["msg"])
    text = text.replace("a valid dictionary or instance of", "a mapping:").replace(" after validation", "")
    if re.search(r"a mapping: \w+$", text):
        text = "must be a mapping"
    if "input" in error and not isinstance(error["input"], dict | list):
        text += f" (got {_show(error['input'])})"
    return text


def schema_errors(exc: ValidationError) -> list[tuple[tuple[PathPart, ...], str]]:
    """(path, text) per problem; an `int | str` field's two errors become one."""
    groups: dict[tuple[PathPart, ...], list[tuple[list[str], Any]]] = {}
    for error in exc.errors(include_url=False):
        parts: list[PathPart] = []
        tags: list[str] = []
        for part in error["loc"]:
            if isinstance(part, str) and part in _UNION_TAGS:
                tags.append(part)
            else:
                parts.append(part)
        groups.setdefault(tuple(parts), []).append((tags, error))
    out: list[tuple[tuple[PathPart, ...], str]] = []
    for path, errors in groups.items():
        if len(errors) > 1 and all(tags for tags, _ in errors):
            kinds = " or ".join(_UNION_TAGS[tags[-1]] for tags, _ in errors)
            out.append((path, f"must be {kinds} (got {_show(errors[0][1].get('input'))})"))
        else:
            out.extend((path, _pydantic_text(error)) for _, error in errors)
    return out


def _models_in(annotation: Any) -> list[tuple[type[BaseModel], bool]]:
    """API models inside a field's type, each with whether it sits in a list."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    if origin is list:
        return [(m, True) for m, _ in _models_in(typing.get_args(annotation)[0])]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, False)]
    return []


def unknown_fields(
    model: type[BaseModel], data: Any, path: tuple[PathPart, ...]
) -> Iterator[tuple[tuple[PathPart, ...], str, str | None]]:
    """(path, key, closest known key) for each key the model does not define."""
    if not isinstance(data, dict) or model.model_config.get("extra") == "allow":
        return
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    for key, value in data.items():
        info = fields.get(key)
        if info is None:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            yield path, str(key), close[0] if close else None
            continue
        for sub, in_list in _models_in(info.annotation):
            if in_list and isinstance(value, list):
                for i, item in enumerate(value):
                    yield from unknown_fields(sub, item, (*path, key, i))
            elif not in_list and isinstance(value, dict):
                yield from unknown_fields(sub, value, (*path, key))


# ---------------------------------------------------------------------------
# Semantics (on the validated models)


def template_semantics(spec: AnalysisTemplateSpec) -> list[tuple[Severity, tuple[PathPart, ...], str]]:
    out: list[tuple[Severity, tuple[PathPart, ...], str]] = []
    declared = {a.name for a in spec.args}
    seen: dict[str, int] = {}
    for i, metric in enumerate(spec.metrics):
        at: tuple[PathPart, ...] = ("spec", "metrics", i)
        if metric.name in seen:
            again = f"metric name {metric.name!r} is already used by metrics[{seen[metric.name]}]"
            out.append(("error", (*at, "name"), again))
        seen.setdefault(metric.name, i)
        # The CRD's rules check the form of a duration; the operator also refuses a negative one.
        prometheus = metric.provider.prometheus if metric.provider is not None else None
        durations: list[tuple[tuple[PathPart, ...], int | str | None]] = [
            ((*at, "interval"), metric.interval),
            ((*at, "initialDelay"), metric.initial_delay),
        ]
        if prometheus is not None:
            durations.append(((*at, "provider", "prometheus", "timeout"), prometheus.timeout))
            if prometheus.range is not None:
                durations.append(
                    ((*at, "provider", "prometheus", "range", "window"), prometheus.range.window)
                )
                durations.append(((*at, "provider", "prometheus", "range", "step"), prometheus.range.step))
        for path, duration in durations:
            if duration is None or (isinstance(duration, str) and placeholders(duration)):
                continue  # `{{args.NAME}}`: resolved, and checked, when the run is made
            try:
                parse_duration(duration)
            except DurationError as exc:
                out.append(("error", path, str(exc)))
        for key, condition in (
            ("successCondition", metric.success_condition),
            ("failureCondition", metric.failure_condition),
        ):
            if condition is None:
                continue
            try:
                compile_expression(condition)
            except ExpressionError as exc:
                out.append(("error", (*at, key), str(exc)))
        counted = (
            ("count", metric.count),
            ("failureLimit", metric.failure_limit),
            ("inconclusiveLimit", metric.inconclusive_limit),
            ("consecutiveErrorLimit", metric.consecutive_error_limit),
        )
        for key, number in counted:
            if isinstance(number, str) and not number.strip().isdigit() and not placeholders(number):
                out.append(("error", (*at, key), f"must be a number or {{{{args.NAME}}}} (got {number!r})"))
        texts: list[tuple[tuple[PathPart, ...], str | None]] = [
            ((*at, key), str(number or "")) for key, number in counted if isinstance(number, str)
        ]
        provider = metric.provider
        if provider is not None and provider.prometheus is not None:
            texts.append(((*at, "provider", "prometheus", "query"), provider.prometheus.query))
        if provider is not None and provider.web is not None:
            web = provider.web
            texts.append(((*at, "provider", "web", "url"), web.url))
            texts.append(((*at, "provider", "web", "body"), web.body))
            texts += [
                ((*at, "provider", "web", "headers", j, "value"), h.value) for j, h in enumerate(web.headers)
            ]
        if metric.judge is not None:
            texts.append(((*at, "judge", "query"), metric.judge.query))
        for path, used_in in texts:
            for name in placeholders(used_in or ""):
                if name not in declared:
                    known = ", ".join(sorted(declared)) or "none"
                    why = (
                        f"{{{{args.{name}}}}} is used but spec.args declares no {name!r} (declared: {known})"
                    )
                    out.append(("warning", path, why))
    metric_names = set(seen)
    refs = [("dryRun", j, r.metric_name) for j, r in enumerate(spec.dry_run)]
    refs += [("measurementRetention", j, r.metric_name) for j, r in enumerate(spec.measurement_retention)]
    for key, j, metric_name in refs:
        if metric_name not in metric_names:
            out.append(("warning", ("spec", key, j, "metricName"), f"no metric is named {metric_name!r}"))
    return out


def analysis_refs(spec: RolloutSpec) -> list[tuple[tuple[PathPart, ...], RolloutAnalysis, bool]]:
    """Every analysis of a Rollout: (path, analysis, whether the rollout waits for its end)."""
    out: list[tuple[tuple[PathPart, ...], RolloutAnalysis, bool]] = []
    canary = spec.strategy.canary
    if canary is not None:
        for i, step in enumerate(canary.steps):
            if step.analysis is not None:
                out.append((("spec", "strategy", "canary", "steps", i, "analysis"), step.analysis, True))
        if canary.analysis is not None:
            out.append((("spec", "strategy", "canary", "analysis"), canary.analysis, False))
    bg = spec.strategy.blue_green
    if bg is not None:
        for key, analysis in (
            ("prePromotionAnalysis", bg.pre_promotion_analysis),
            ("postPromotionAnalysis", bg.post_promotion_analysis),
        ):
            if analysis is not None:
                out.append((("spec", "strategy", "blueGreen", key), analysis, True))
    return out


# ---------------------------------------------------------------------------
# Templates in the cluster


Lookup = tuple[Literal["found", "missing", "unknown"], AnalysisTemplateSpec | None, str]
"""found (with the spec, None when it does not validate), missing, or unknown (with why)."""


class TemplateSource(Protocol):
    """Where templates not given in the files are looked up."""

    def get(self, name: str, namespace: str | None, cluster_scope: bool) -> Lookup: ...


class ClusterTemplates:
    """Looks templates up in the cluster of the current kubeconfig; the client is imported lazily."""

    def __init__(self) -> None:
        self._api: Any = None
        self._problem: str | None = None
        self._namespace = "default"
        self._cache: dict[tuple[str, str, bool], Lookup] = {}

    def _connect(self) -> Any:
        if self._api is None and self._problem is None:
            try:
                from kubernetes import client, config

                configuration = client.Configuration()
                # KUBECONFIG is read now: the client reads it only once, when first imported.
                path = os.environ.get("KUBECONFIG") or None
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=path, client_configuration=configuration
                )
                configuration.retries = 0  # unreachable: say so at once
                _, active = config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
                self._namespace = (active or {}).get("context", {}).get("namespace") or "default"
                self._api = client.CustomObjectsApi(client.ApiClient(configuration))
            except Exception as exc:
                self._problem = f"cannot load the kubeconfig: {exc}"
        return self._api

    def get(self, name: str, namespace: str | None, cluster_scope: bool) -> Lookup:
        api = self._connect()
        if api is None:
            return "unknown", None, self._problem or "no cluster"
        ns = namespace or self._namespace
        key = (name, "" if cluster_scope else ns, cluster_scope)
        if key in self._cache:
            return self._cache[key]
        if self._problem is not None:
            return "unknown", None, self._problem
        from kubernetes.client.exceptions import ApiException

        version = API_VERSION.split("/")[1]
        try:
            if cluster_scope:
                body = api.get_cluster_custom_object(GROUP, version, "clusteranalysistemplates", name,
                                                     _request_timeout=5)  # fmt: skip
            else:
                body = api.get_namespaced_custom_object(GROUP, version, ns, "analysistemplates", name,
                                                        _request_timeout=5)  # fmt: skip
        except ApiException as exc:
            if exc.status == 404:
                result: Lookup = ("missing", None, f"not found in the cluster (namespace {ns})")
            else:
                result = ("unknown", None, f"the cluster answered {exc.status} {exc.reason}")
        except Exception as exc:
            self._problem = f"cluster unreachable: {type(exc).__name__}: {str(exc)[:120]}"
            return "unknown", None, self._problem
        else:
            try:
                result = ("found", AnalysisTemplateSpec.model_validate(body.get("spec") or {}), "")
            except ValidationError:
                result = ("found", None, "")
        self._cache[key] = result
        return result


# ---------------------------------------------------------------------------
# The linter


@dataclass
class _Known:
    """A template found in the files."""

    kind: str
    name: str
    namespace: str | None
    spec: AnalysisTemplateSpec | None


@dataclass
class Report:
    messages: list[Message] = field(default_factory=list)
    files: int = 0
    objects: int = 0
    skipped: int = 0

    @property
    def errors(self) -> int:
        return sum(1 for m in self.messages if m.severity == "error")

    @property
    def warnings(self) -> int:
        return sum(1 for m in self.messages if m.severity == "warning")

    def summary(self) -> str:
        def n(count: int, word: str) -> str:
            return f"{count} {word}{'' if count == 1 else 's'}"

        checked = f"{n(self.files, 'file')}, {n(self.objects, 'object')} checked"
        if self.skipped:
            checked += f", {self.skipped} skipped"
        if not self.messages:
            return f"{checked}: no problems"
        return f"{checked}: {n(self.errors, 'error')}, {n(self.warnings, 'warning')}"

    def as_json(self) -> dict[str, Any]:
        return {
            "messages": [asdict(m) for m in self.messages],
            "summary": {
                "files": self.files,
                "objects": self.objects,
                "skipped": self.skipped,
                "errors": self.errors,
                "warnings": self.warnings,
            },
        }


class Linter:
    def __init__(self, cluster: TemplateSource | None = None) -> None:
        self.cluster = cluster
        self.report = Report()
        self._templates: list[_Known] = []
        self._rollouts: list[tuple[Document, Rollout]] = []
        self._seen: dict[tuple[str, str | None, str], Document] = {}

    def add(self, doc: Document, severity: Severity, parts: Sequence[PathPart], text: str) -> None:
        self.report.messages.append(
            Message(
                severity,
                doc.file,
                doc.index,
                doc.line_of(parts),
                doc.kind,
                doc.name,
                format_path(parts),
                text,
            )
        )

    def lint_files(self, files: Sequence[str]) -> Report:
        docs: list[Document] = []
        for file in files:
            loaded, messages = load_documents(file)
            self.report.files += 1
            self.report.messages.extend(messages)
            docs.extend(loaded)
        return self.lint_documents(docs)

    def lint_documents(self, docs: Sequence[Document]) -> Report:
        for doc in docs:
            self._check_object(doc)
        for doc, rollout in self._rollouts:
            self._check_references(doc, rollout)
        order = {(d.file, d.index): i for i, d in enumerate(docs)}
        self.report.messages.sort(key=lambda m: (order.get((m.file, m.document), -1), m.line or 0))
        return self.report

    def _check_object(self, doc: Document) -> None:
        if not isinstance(doc.data, dict):
            self.report.objects += 1
            self.add(doc, "error", (), f"a Kubernetes object is a mapping, not {type(doc.data).__name__}")
            return
        kind = doc.kind
        if kind is None:
            self.report.objects += 1
            self.add(doc, "error", ("kind",), "is missing")
            return
        group = (doc.api_version or "").split("/")[0]
        if kind not in CHECKED_KINDS or (doc.api_version is not None and group not in (GROUP, "argoproj.io")):
            if group == GROUP:
                self.report.objects += 1
                self.add(
                    doc,
                    "warning",
                    ("kind",),
                    f"unknown kind {kind!r} in {GROUP} (known: {', '.join(CHECKED_KINDS)})",
                )
            elif kind in COMPANION_KINDS or kind in CHECKED_KINDS:
                self.report.skipped += 1
            else:
                self.report.objects += 1
                self.add(doc, "warning", ("kind",), f"unknown kind {kind!r}: not checked")
            return
        self.report.objects += 1
        if doc.api_version is None:
            self.add(doc, "error", ("apiVersion",), f"is missing (write {API_VERSION})")
        elif doc.api_version != API_VERSION:
            self.add(
                doc,
                "warning",
                ("apiVersion",),
                f"apiVersion is {doc.api_version!r}; Tidegate serves {API_VERSION!r}",
            )
        if not doc.name:
            self.add(doc, "error", ("metadata", "name"), "is required")
        key = (kind, doc.namespace, doc.name or "")
        if doc.name and key in self._seen:
            first = self._seen[key]
            self.add(
                doc,
                "warning",
                ("metadata", "name"),
                f"{kind} {doc.name!r} is also defined in {first.file} (document {first.index})",
            )
        self._seen.setdefault(key, doc)
        if kind == "Rollout":
            self._check_rollout(doc)
        else:
            self._check_template(doc, kind)

    def _schema(self, doc: Document, model: type[BaseModel], spec_model: type[BaseModel]) -> Any:
        for parts, key, close in unknown_fields(spec_model, doc.data.get("spec"), ("spec",)):
            hint = f" (did you mean {close!r}?)" if close else ""
            self.add(
                doc, "warning", (*parts, key), f"unknown field{hint}: the API server drops or rejects it"
            )
        try:
            return model.model_validate(doc.data, strict=True)
        except ValidationError as exc:
            for parts, text in schema_errors(exc):
                self.add(doc, "error", parts, text)
            return None

    def _crd_rules(self, doc: Document, kind: str) -> set[str]:
        """The CRD's CEL rules over the raw document; the paths they reported."""
        found = check_rules(crd_schema(kind), doc.data)
        for violation in found.violations:
            self.add(doc, "error", violation.path, violation.message)
        for unchecked in found.unchecked:
            self.add(
                doc, "warning", unchecked.path, f"CRD rule not checked, {unchecked.why}: {unchecked.rule}"
            )
        return {format_path(v.path) for v in found.violations}

    def _check_rollout(self, doc: Document) -> None:
        rollout = self._schema(doc, Rollout, RolloutSpec)
        reported = self._crd_rules(doc, "Rollout")
        if rollout is None:
            return
        for problem in operator_problems(rollout):
            path, _, text = problem.partition(": ")
            if path not in reported:
                self.add(doc, "error", parse_path(path), text)
                reported.add(path)
        canary = rollout.spec.strategy.canary
        if canary is not None and canary.analysis is not None:
            starting = canary.analysis.starting_step
            if starting is not None and starting >= len(canary.steps):
                where = ("spec", "strategy", "canary", "analysis", "startingStep")
                last = (
                    f"the last step is steps[{len(canary.steps) - 1}]"
                    if canary.steps
                    else "there are no steps"
                )
                self.add(
                    doc, "warning", where, f"{starting} is past the steps ({last}): it starts at promotion"
                )
        self._check_subscriptions(doc, rollout)
        self._rollouts.append((doc, rollout))

    def _check_subscriptions(self, doc: Document, rollout: Rollout) -> None:
        """A subscription to a trigger Tidegate never fires would never send: say so."""
        from tidegate.core.notifications import PREFIXES, TRIGGERS

        for key in sorted(rollout.metadata.annotations):
            prefix = next((p for p in PREFIXES if key.startswith(p)), None)
            if prefix is None:
                continue
            trigger, _, service = key[len(prefix) :].partition(".")
            where = ("metadata", "annotations", key)
            if not trigger or not service:
                self.add(
                    doc,
                    "warning",
                    where,
                    "a subscription is subscribe.<trigger>.<service>: this one never sends",
                )
            elif trigger not in TRIGGERS:
                self.add(
                    doc,
                    "warning",
                    where,
                    f"trigger {trigger!r} is not one Tidegate fires ({', '.join(TRIGGERS)}): it never sends",
                )

    def _check_template(self, doc: Document, kind: str) -> None:
        model = ClusterAnalysisTemplate if kind == "ClusterAnalysisTemplate" else AnalysisTemplate
        template = self._schema(doc, model, AnalysisTemplateSpec)
        reported = self._crd_rules(doc, kind)
        if kind == "ClusterAnalysisTemplate" and doc.namespace:
            self.add(
                doc,
                "warning",
                ("metadata", "namespace"),
                "a ClusterAnalysisTemplate is cluster-scoped; the namespace is ignored",
            )
        spec = template.spec if template is not None else None
        if spec is not None:
            for severity, parts, text in template_semantics(spec):
                if format_path(parts) not in reported:
                    self.add(doc, severity, parts, text)
        if doc.name:
            self._templates.append(_Known(kind, doc.name, doc.namespace, spec))

    def _find(self, name: str, namespace: str | None, cluster_scope: bool) -> _Known | None:
        kind = "ClusterAnalysisTemplate" if cluster_scope else "AnalysisTemplate"
        for known in self._templates:
            if known.kind != kind or known.name != name:
                continue
            if cluster_scope or known.namespace is None or namespace is None or known.namespace == namespace:
                return known
        return None

    def _check_references(self, doc: Document, rollout: Rollout) -> None:
        found: dict[str, AnalysisTemplateSpec] = {}
        for path, analysis, blocking in analysis_refs(rollout.spec):
            specs: list[tuple[str, AnalysisTemplateSpec]] = []
            complete = True
            for j, ref in enumerate(analysis.templates):
                kind = "ClusterAnalysisTemplate" if ref.cluster_scope else "AnalysisTemplate"
                at = (*path, "templates", j, "templateName")
                spec = self._template_spec(doc, rollout, at, kind, ref.template_name, ref.cluster_scope)
                if spec is None:
                    complete = False
                    continue
                specs.append((ref.template_name, spec))
                found[template_key(ref.template_name, ref.cluster_scope)] = spec
            self._check_args(doc, path, analysis, specs, complete)
            if blocking and complete:
                window = analysis_window(analysis, found)
                if window.seconds is None:
                    self.add(doc, "warning", path, f"this analysis never ends: {window.unknown_because}")

    def _template_spec(
        self,
        doc: Document,
        rollout: Rollout,
        at: tuple[PathPart, ...],
        kind: str,
        name: str,
        cluster_scope: bool,
    ) -> AnalysisTemplateSpec | None:
        known = self._find(name, rollout.metadata.namespace, cluster_scope)
        if known is not None:
            return known.spec
        if self.cluster is None:
            self.add(
                doc,
                "error",
                at,
                f"{kind} {name!r} is not in the given files (give its file, or --cluster to look it up)",
            )
            return None
        state, spec, why = self.cluster.get(name, rollout.metadata.namespace, cluster_scope)
        if state == "missing":
            self.add(
                doc, "error", at, f"{kind} {name!r} is neither in the given files nor in the cluster ({why})"
            )
        elif state == "unknown":
            self.add(
                doc,
                "warning",
                at,
                f"{kind} {name!r} is not in the given files, and the cluster could not tell ({why})",
            )
        return spec

    def _check_args(
        self,
        doc: Document,
        path: tuple[PathPart, ...],
        analysis: RolloutAnalysis,
        specs: list[tuple[str, AnalysisTemplateSpec]],
        complete: bool,
    ) -> None:
        given = {a.name for a in analysis.args}
        declared: set[str] = set()
        for name, spec in specs:
            for arg in spec.args:
                declared.add(arg.name)
                if arg.value is None and arg.value_from is None and arg.name not in given:
                    self.add(
                        doc,
                        "error",
                        (*path, "args"),
                        f"argument {arg.name!r} of template {name!r} has no value: set it here",
                    )
        if not complete:
            return
        for k, run_arg in enumerate(analysis.args):
            if run_arg.name not in declared:
                self.add(
                    doc,
                    "warning",
                    (*path, "args", k, "name"),
                    f"no template of this analysis declares an argument {run_arg.name!r}",
                )


# ---------------------------------------------------------------------------
# The command


def _print_text(report: Report) -> None:
    colours = {"error": "red", "warning": "yellow"}
    for m in report.messages:
        line = m.format()
        head, sep, rest = line.partition(f": {m.severity}: ")
        click.echo(
            head + sep.replace(m.severity, click.style(m.severity, fg=colours[m.severity], bold=True)) + rest
        )
    colour = "red" if report.errors else "yellow" if report.warnings else "green"
    click.echo(click.style(report.summary(), fg=colour))


@click.command("lint")
@click.argument("files", nargs=-1, required=True, metavar="FILE...", type=click.Path())
@click.option(
    "--cluster/--no-cluster",
    default=False,
    show_default=True,
    help="Also look referenced AnalysisTemplates up in the cluster of the current kubeconfig.",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Output format.",
)
def command(files: tuple[str, ...], cluster: bool, output: str) -> None:
    """Check Rollouts and (Cluster)AnalysisTemplates in YAML files, offline.

    Runs the CRDs' schema and rules, and what the operator would refuse: selector and
    labels, Services, header routes, templates referenced but not given, arguments,
    success and failure conditions. A directory stands for its *.yaml files; `-` reads
    standard input. Exit status: 1 when there is an error, 0 otherwise (warnings
    included).

    \b
    Example:
      tidegate lint examples/canary/
      tidegate lint rollout.yaml analysis.yaml --cluster
      helm template ./chart | tidegate lint - -o json
    """
    paths = expand_paths(files)
    for p in paths:
        if p != "-" and not Path(p).exists():
            raise click.BadParameter(f"{p}: no such file", param_hint="FILE")
    report = Linter(ClusterTemplates() if cluster else None).lint_files(paths)
    if output == "json":
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        _print_text(report)
    sys.exit(1 if report.errors else 0)

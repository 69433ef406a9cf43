"""AnalysisRuns, decided without I/O: how one is built from templates, and how it advances.

Building (`merge_templates`, `resolve_args`, `run_body`): the templates a Rollout names are
merged into one spec (a metric name defined twice is an error), the Rollout's arguments
override the templates' defaults, and `valueFrom` is resolved from the pod-template hashes
and the Rollout's own fields. Secret arguments (`valueFrom.secretKeyRef` in a template)
stay references; the controller reads them at measurement time, so that they are never
written into an object.

Running (`start`, `due_metrics`, `next_due`, `measurement_of`, `add_measurement`,
`conclude`): the controller asks which metrics are due, measures them, records what it
got and concludes the run's phase with `assessment.assess_run`. A metric that cannot be
measured as written (a condition that does not compile, an argument without a value, a
provider the operator does not have) is Error at once, before any measurement. A finished
run never changes again.

Judged metrics (`metric.judge`): each look runs the queries `judge_queries` names over the span
`judged_window` gives (from the run's start), `judge_data` turns the answers into the canary's and
the stable's data, and `judged_measurement` judges them (`core.judge`: Mann-Whitney U, or the
sequential Counts and Distribution e-processes). Their weighted score (`judge.combine`,
passScore/marginalScore) decides for them together, as early as it is settled.

`begin_step` and `finish_step` are one controller step without I/O; `k8s.analysis` and
`bench/decisions.py` both step runs through them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pydantic import ValidationError

from tidegate.api.analysis import (
    AnalysisPhase,
    AnalysisRunSpec,
    AnalysisRunStatus,
    AnalysisTemplateSpec,
    Argument,
    Judge,
    Measurement,
    Metric,
    MetricResult,
    RunSummary,
)
from tidegate.api.rollout import (
    AnalysisRunArgument,
    AnalysisTemplateRef,
    MeasurementRetention,
    MetricNameRef,
    Rollout,
)
from tidegate.core.args import ArgumentError, placeholders, render_query
from tidegate.core.assessment import (
    Verdict,
    _parse_time,
    assess_metric,
    assess_run,
    assess_value,
    compile_conditions,
    effective_count,
    is_dry_run,
    limits,
    next_measurement_due,
    record,
    retention_limit,
)
from tidegate.core.durations import DurationError, parse_duration
from tidegate.core.expressions import CompiledExpression, ExpressionError
from tidegate.core.hashing import HASH_LABEL
from tidegate.core.model import ROLLOUT_LABEL
from tidegate.core.patches import merge_patch

if TYPE_CHECKING:
    from tidegate.core.judge import CountStep, HistogramStep, JudgePhase

__all__ = [
    "API_VERSION",
    "HASH_PLACEHOLDER",
    "KIND_LABEL",
    "LATEST_HASH_ANNOTATION",
    "STABLE_HASH_ANNOTATION",
    "TERMINAL_PHASES",
    "AnalysisSpecError",
    "Conditions",
    "JudgeData",
    "TemplateSource",
    "add_measurement",
    "align",
    "begin_step",
    "conclude",
    "count_steps",
    "due_metrics",
    "expression_problems",
    "field_value",
    "finish_step",
    "flatten_templates",
    "histogram_steps",
    "in_flight",
    "is_final_look",
    "is_finished",
    "is_terminating",
    "judge_data",
    "judge_queries",
    "judge_query",
    "judged_measurement",
    "judged_window",
    "measurement_of",
    "merge_patch",
    "merge_templates",
    "metric_problems",
    "next_due",
    "prunable_runs",
    "resolve_args",
    "run_body",
    "run_started",
    "start",
    "template_key",
    "template_problems",
    "terminated_measurement",
    "timestamp",
    "total_query",
    "used_args",
]

API_VERSION = "tidegate.io/v1alpha1"
KIND_LABEL = "analysis.tidegate.io/kind"
"""Label of an AnalysisRun: what the run is for (e.g. step, background, pre-promotion)."""
STABLE_HASH_ANNOTATION = "analysis.tidegate.io/stable-hash"
LATEST_HASH_ANNOTATION = "analysis.tidegate.io/latest-hash"
"""Pod-template hashes the run compares (the statistical judge's `{{hash}}`)."""

TERMINAL_PHASES: frozenset[str] = frozenset({"Successful", "Failed", "Error", "Inconclusive"})
"""Phases of a finished run: it is never measured again."""

HASH_PLACEHOLDER = re.compile(r"\{\{\s*hash\s*\}\}")
"""`{{hash}}` in a judge's query: the pod-template hash of the version being queried."""

Conditions = tuple[CompiledExpression | None, CompiledExpression | None]
"""A metric's (successCondition, failureCondition), compiled."""


class AnalysisSpecError(ValueError):
    """The analysis a Rollout asks for cannot be built: a missing template, an argument
    without a value, a metric defined twice. The message says which."""


def is_finished(phase: str | None) -> bool:
    return phase in TERMINAL_PHASES


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds (measurements one second apart stay ordered)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# --- building --------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateSource:
    """One template a Rollout refers to, as read from the cluster."""

    name: str
    spec: AnalysisTemplateSpec
    cluster_scope: bool = False

    def describe(self) -> str:
        kind = "ClusterAnalysisTemplate" if self.cluster_scope else "AnalysisTemplate"
        return f"{kind} {self.name}"


TemplateKey = tuple[bool, str]
"""(clusterScope, templateName): one template a reference can name."""


def template_key(ref: AnalysisTemplateRef) -> TemplateKey:
    return (ref.cluster_scope, ref.template_name)


def _describe_key(key: TemplateKey) -> str:
    return f"{'ClusterAnalysisTemplate' if key[0] else 'AnalysisTemplate'} {key[1]}"


def flatten_templates(
    refs: Sequence[AnalysisTemplateRef], found: Mapping[TemplateKey, TemplateSource]
) -> list[TemplateSource]:
    """The templates `refs` name, each followed by the templates its `spec.templates` name, depth
    first, each template once (Argo Rollouts' `getAnalysisTemplatesFromRefs` with
    `FilterUniqueTemplates`). `found` holds every template reachable from `refs`.

    A template that leads back to itself is an AnalysisSpecError naming the loop (Argo would
    recurse without end); a reference missing from `found` is one naming the template.
    """
    order: list[TemplateSource] = []
    seen: set[TemplateKey] = set()

    def visit(ref: AnalysisTemplateRef, path: tuple[TemplateKey, ...]) -> None:
        key = template_key(ref)
        if key in path:
            loop = " -> ".join(_describe_key(k) for k in (*path[path.index(key) :], key))
            raise AnalysisSpecError(f"nested templates form a loop: {loop}")
        source = found.get(key)
        if source is None:
            raise AnalysisSpecError(f"{_describe_key(key)} not found")
        if key not in seen:
            seen.add(key)
            order.append(source)
        for inner in source.spec.templates:
            visit(inner, (*path, key))

    for ref in refs:
        visit(ref, ())
    return order


def _merge_arg(merged: dict[str, Argument], arg: Argument, source: str) -> None:
    known = merged.get(arg.name)
    if known is None:
        merged[arg.name] = arg
        return
    if arg.value is not None and known.value is not None and arg.value != known.value:
        raise AnalysisSpecError(
            f"argument {arg.name!r} has two defaults: {known.value!r} and {arg.value!r} ({source}); "
            "set it in the Rollout's analysis args or make the templates agree"
        )
    if arg.value_from is not None and known.value_from is not None and arg.value_from != known.value_from:
        raise AnalysisSpecError(f"argument {arg.name!r} has two different valueFrom ({source})")
    merged[arg.name] = known.model_copy(
        update={
            "value": known.value if known.value is not None else arg.value,
            "value_from": known.value_from if known.value_from is not None else arg.value_from,
        }
    )


def _agreed_score(sources: Sequence[TemplateSource], field: str, default: float) -> float:
    # The API server fills in the CRD's default, so "set" means "other than the default".
    chosen: tuple[float, str] | None = None
    for source in sources:
        value = float(getattr(source.spec, field))
        if value == default:
            continue
        if chosen is not None and chosen[0] != value:
            name = "passScore" if field == "pass_score" else "marginalScore"
            raise AnalysisSpecError(
                f"{name} differs between {chosen[1]} ({chosen[0]:g}) and {source.describe()} ({value:g})"
            )
        chosen = (value, source.describe())
    return chosen[0] if chosen is not None else default


def merge_templates(sources: Sequence[TemplateSource]) -> AnalysisTemplateSpec:
    """One spec from several templates, in order: metrics and their settings side by side.

    A metric name defined twice is an error (it would be ambiguous in status). Arguments of the
    same name merge when they agree; two different defaults are an error. passScore and
    marginalScore come from the templates that set them (to other than the default), which
    must agree.
    """
    if not sources:
        raise AnalysisSpecError("the analysis names no template")
    metrics: list[Metric] = []
    owner: dict[str, str] = {}
    args: dict[str, Argument] = {}
    dry_run: list[MetricNameRef] = []
    retention: list[MeasurementRetention] = []
    for source in sources:
        for metric in source.spec.metrics:
            if metric.name in owner:
                where = (
                    f"{owner[metric.name]} twice"
                    if owner[metric.name] == source.describe()
                    else f"both {owner[metric.name]} and {source.describe()}"
                )
                raise AnalysisSpecError(
                    f"metric {metric.name!r} is defined by {where}; metric names must be unique"
                )
            owner[metric.name] = source.describe()
            metrics.append(metric)
        for arg in source.spec.args:
            _merge_arg(args, arg, source.describe())
        dry_run += [ref for ref in source.spec.dry_run if ref not in dry_run]
        retention += source.spec.measurement_retention
    if not metrics:
        names = ", ".join(source.describe() for source in sources)
        raise AnalysisSpecError(f"the templates define no metric ({names})")
    defaults = AnalysisTemplateSpec.model_fields
    return AnalysisTemplateSpec(
        metrics=metrics,
        args=list(args.values()),
        dry_run=dry_run,
        measurement_retention=retention,
        pass_score=_agreed_score(sources, "pass_score", float(defaults["pass_score"].default)),
        marginal_score=_agreed_score(sources, "marginal_score", float(defaults["marginal_score"].default)),
    )


_PATH_TOKEN = re.compile(
    r"""\.?(?P<name>[A-Za-z_$][A-Za-z0-9_$-]*)      # .name
      | \[\s*(?P<index>[0-9]+)\s*\]                   # [0]
      | \[\s*'(?P<single>[^']*)'\s*\]                 # ['key']
      | \[\s*"(?P<double>[^"]*)"\s*\]                 # ["key"]
    """,
    re.VERBOSE,
)


def _path_steps(path: str) -> list[str | int]:
    steps: list[str | int] = []
    position = 0
    text = path.strip()
    while position < len(text):
        match = _PATH_TOKEN.match(text, position)
        if match is None or match.end() == position or (position == 0 and text.startswith(".")):
            raise ValueError(f"fieldPath {path!r} does not parse at {text[position:]!r}")
        if match.group("index") is not None:
            steps.append(int(match.group("index")))
        else:
            key = match.group("name") or match.group("single")
            steps.append(key if key is not None else match.group("double") or "")
        position = match.end()
    if not steps:
        raise ValueError("fieldPath is empty")
    return steps


def field_value(document: Mapping[str, Any], path: str) -> str:
    """The value at `path` in `document`, as text.

    Paths are written as in a Kubernetes fieldRef: `metadata.name`, `metadata.labels['app']`,
    `metadata.annotations["example.com/team"]`, `spec.template.spec.containers[0].image`.
    ValueError when the path does not parse or leads nowhere.
    """
    current: Any = document
    walked = ""
    for step in _path_steps(path):
        if isinstance(step, int):
            if not isinstance(current, list) or step >= len(current):
                raise ValueError(f"fieldPath {path!r}: {walked or 'the object'} has no element [{step}]")
            current = current[step]
            walked += f"[{step}]"
            continue
        if not isinstance(current, Mapping) or step not in current:
            raise ValueError(f"fieldPath {path!r}: {walked or 'the object'} has no field {step!r}")
        current = current[step]
        walked = f"{walked}.{step}" if walked else step
    if current is None:
        raise ValueError(f"fieldPath {path!r} is empty")
    if isinstance(current, bool):
        return "true" if current else "false"
    if isinstance(current, str | int | float):
        return str(current)
    raise ValueError(f"fieldPath {path!r} leads to a {type(current).__name__}, not a value")


def _resolve_from(
    name: str,
    value_from: Mapping[str, Any],
    *,
    rollout: Mapping[str, Any],
    pod_hashes: Mapping[str, str],
) -> str | None:
    """A valueFrom's value, or None for a secretKeyRef (read at measurement time)."""
    if value_from.get("secretKeyRef") is not None:
        return None
    which = value_from.get("podTemplateHashValue")
    if which is not None:
        if which not in ("Stable", "Latest"):
            raise AnalysisSpecError(
                f"argument {name!r}: podTemplateHashValue must be Stable or Latest, not {which!r}"
            )
        pod_hash = pod_hashes.get(which)
        if not pod_hash:
            raise AnalysisSpecError(f"argument {name!r}: there is no {which} pod-template hash yet")
        return pod_hash
    field_ref = value_from.get("fieldRef")
    if isinstance(field_ref, Mapping) and field_ref.get("fieldPath"):
        try:
            return field_value(rollout, str(field_ref["fieldPath"]))
        except ValueError as error:
            raise AnalysisSpecError(f"argument {name!r}: {error}") from None
    raise AnalysisSpecError(
        f"argument {name!r}: valueFrom needs one of podTemplateHashValue, fieldRef.fieldPath, secretKeyRef"
    )


def resolve_args(
    template_args: Sequence[Argument],
    rollout_args: Sequence[AnalysisRunArgument],
    *,
    rollout: Mapping[str, Any],
    pod_hashes: Mapping[str, str],
) -> list[Argument]:
    """The run's arguments: the templates' arguments with the Rollout's values applied.

    A Rollout argument overrides the template's default; `valueFrom` becomes a value (the
    Stable/Latest pod-template hash from `pod_hashes`, a field of `rollout`), except a
    template's `secretKeyRef`, which stays a reference. A template argument left without a
    value is an AnalysisSpecError naming it. Rollout arguments no template declares are
    ignored, as in Argo Rollouts.
    """
    given = {arg.name: arg for arg in rollout_args}
    resolved: list[Argument] = []
    for arg in template_args:
        value, value_from = arg.value, arg.value_from
        override = given.get(arg.name)
        if override is not None and (override.value is not None or override.value_from is not None):
            if override.value_from is not None:
                value, value_from = None, override.value_from.wire()
            else:
                value, value_from = override.value, None
        if value_from:
            from_value = _resolve_from(arg.name, value_from, rollout=rollout, pod_hashes=pod_hashes)
            if from_value is not None:
                value, value_from = from_value, None
            else:
                value = None
        elif value is None:
            raise AnalysisSpecError(
                f"argument {arg.name!r} has no value: the template declares it without a default and "
                "the Rollout's analysis args do not set it"
            )
        resolved.append(Argument(name=arg.name, value=value, value_from=value_from or None))
    return resolved


NUMBER_FIELDS = (
    "count",
    "interval",
    "initial_delay",
    "failure_limit",
    "inconclusive_limit",
    "consecutive_error_limit",
    "consecutive_success_limit",
)
"""Metric fields that may be `{{args.NAME}}` (int-or-string, as Argo Rollouts')."""


def resolve_numbers(metric: Metric, args: Sequence[Argument]) -> Metric:
    """The metric with `{{args.NAME}}` in its counts, limits and durations resolved, per run
    (Argo Rollouts resolves the whole metric against the run's arguments). An argument that
    comes from a Secret never sets a number; a missing one is an AnalysisSpecError."""
    values = {arg.name: arg.value for arg in args if arg.value is not None}
    changes: dict[str, int | str] = {}
    for field in NUMBER_FIELDS:
        raw = getattr(metric, field)
        if not isinstance(raw, str) or not placeholders(raw):
            continue
        try:
            text = render_query(raw, values, escape="none").strip()
        except ArgumentError as exc:
            raise AnalysisSpecError(f"metric {metric.name}: {field}: {exc}") from None
        changes[field] = int(text) if text.isdigit() and field not in ("interval", "initial_delay") else text
    return metric.model_copy(update=changes) if changes else metric


def run_body(
    rollout: Rollout,
    analysis_dry_run: Sequence[MetricNameRef],
    analysis_retention: Sequence[MeasurementRetention],
    merged: AnalysisTemplateSpec,
    args: Sequence[Argument],
    *,
    name: str,
    kind: str,
    pod_hashes: Mapping[str, str],
) -> dict[str, Any]:
    """The AnalysisRun object (wire form), owned by the Rollout."""
    meta = rollout.metadata
    if not meta.name or not meta.uid:
        raise ValueError("the Rollout needs metadata.name and metadata.uid to own an AnalysisRun")
    known = {metric.name for metric in merged.metrics}
    named = [ref.metric_name for ref in analysis_dry_run] + [ref.metric_name for ref in analysis_retention]
    for metric_name in named:
        if metric_name not in known:
            raise AnalysisSpecError(
                f"the analysis names metric {metric_name!r}, which no template defines "
                f"(metrics: {', '.join(sorted(known))})"
            )
    dry_run = list(merged.dry_run) + [ref for ref in analysis_dry_run if ref not in merged.dry_run]
    spec = AnalysisRunSpec(
        metrics=[resolve_numbers(metric, args) for metric in merged.metrics],
        args=list(args),
        dry_run=dry_run,
        measurement_retention=[*merged.measurement_retention, *analysis_retention],
        pass_score=merged.pass_score,
        marginal_score=merged.marginal_score,
    )
    labels = {ROLLOUT_LABEL: meta.name, KIND_LABEL: kind}
    if pod_hashes.get("Latest"):
        labels[HASH_LABEL] = pod_hashes["Latest"]
    annotations = {
        annotation: pod_hashes[which]
        for which, annotation in (("Stable", STABLE_HASH_ANNOTATION), ("Latest", LATEST_HASH_ANNOTATION))
        if pod_hashes.get(which)
    }
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": meta.namespace or "default",
        "labels": labels,
        "ownerReferences": [
            {
                "apiVersion": rollout.api_version,
                "kind": rollout.kind,
                "name": meta.name,
                "uid": meta.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": API_VERSION, "kind": "AnalysisRun", "metadata": metadata, "spec": spec.wire()}


# --- checking a run's spec -------------------------------------------------------------


def expression_problems(metrics: Sequence[Metric]) -> dict[str, str]:
    """Metric name -> why its successCondition or failureCondition does not compile."""
    problems: dict[str, str] = {}
    for metric in metrics:
        try:
            compile_conditions(metric)
        except ExpressionError as error:
            problems[metric.name] = str(error)
    return problems


def template_problems(spec: Mapping[str, Any]) -> list[str]:
    """Why a template's metrics cannot be measured as written: conditions that do not compile.

    Works on the raw spec (as a watch event delivers it), so that a template the model would
    reject still has every metric checked. One message per metric, naming it; empty: all fine.
    """
    problems: list[str] = []
    for raw in spec.get("metrics") or []:
        if not isinstance(raw, Mapping):
            continue
        try:
            metric = Metric.model_validate(raw)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first.get("loc", ()))
            problems.append(f"metric {raw.get('name')}: {where}: {first.get('msg')}")
            continue
        bad = next(
            (
                (key, value)
                for key, value in (
                    ("count", metric.count),
                    ("failureLimit", metric.failure_limit),
                    ("inconclusiveLimit", metric.inconclusive_limit),
                    ("consecutiveErrorLimit", metric.consecutive_error_limit),
                    ("consecutiveSuccessLimit", metric.consecutive_success_limit),
                )
                if isinstance(value, str)
                and not value.strip().lstrip("-").isdigit()
                and not placeholders(value)
            ),
            None,
        )
        if bad is not None:
            problems.append(
                f"metric {metric.name}: {bad[0]}: must be a number or {{{{args.NAME}}}} (got {bad[1]!r})"
            )
            continue
        try:
            compile_conditions(metric)
        except ExpressionError as error:
            problems.append(str(error))
            continue
        if metric.interval is not None and not placeholders(str(metric.interval)):
            try:
                seconds = parse_duration(metric.interval)
            except DurationError:
                continue  # the schema names a duration that does not parse
            if seconds < MIN_INTERVAL_SECONDS:
                problems.append(
                    f"metric {metric.name}: interval {metric.interval} is below the minimum of "
                    f"{MIN_INTERVAL_SECONDS:g}s between measurements"
                )
    return problems


def _texts(metric: Metric) -> list[str]:
    texts: list[str] = []
    if metric.provider is not None and metric.provider.prometheus is not None:
        prometheus = metric.provider.prometheus
        texts.append(prometheus.query)
        texts += [header.value for header in prometheus.headers]
        if prometheus.range_query is not None:
            texts += list(_strings(prometheus.range_query.wire()))
        if prometheus.authentication is not None:
            texts += list(_strings(prometheus.authentication.wire()))
    if metric.provider is not None and metric.provider.web is not None:
        web = metric.provider.web
        texts += [web.url, *(header.value for header in web.headers), *([web.body] if web.body else [])]
        texts += list(_strings(web.json_body))
        if web.authentication is not None:
            texts += list(_strings(web.authentication.wire()))
    if metric.provider is not None and metric.provider.job is not None:
        texts += list(_strings(metric.provider.job.wire()))
    if metric.judge is not None:
        texts.append(judge_text(metric))
        if metric.judge.total_query:
            texts.append(metric.judge.total_query)
    return texts


def _strings(value: object) -> Iterator[str]:
    """Every string in a JSON document (a Job's spec: where `{{args.NAME}}` may appear)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _refused_problem(metric: Metric) -> str | None:
    """Argo fields Tidegate keeps but does not act on: the metric errs at once, naming them."""
    for kind in ("prometheus", "web"):
        spec = getattr(metric.provider, kind, None) if metric.provider is not None else None
        if spec is not None and spec.authentication is not None and spec.authentication.sigv4:
            return (
                f"metric {metric.name}: provider.{kind}.authentication.sigv4: not supported by Tidegate "
                "(AWS SigV4 signing)"
            )
    return None


def _job_problem(metric: Metric) -> str | None:
    job = metric.provider.job if metric.provider is not None else None
    if job is None:
        return None
    template = job.spec.get("template")
    pod = template.get("spec") if isinstance(template, Mapping) else None
    if not isinstance(pod, Mapping) or not pod.get("containers"):
        return f"metric {metric.name}: provider.job.spec.template.spec.containers: a Job needs a pod template"
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        return (
            f"metric {metric.name}: provider.job.spec.template.spec.restartPolicy: a Job's pods need "
            f"Never or OnFailure (got {pod.get('restartPolicy')!r})"
        )
    return None


def used_args(metric: Metric) -> list[str]:
    """Names of the arguments a metric's query, URL, headers, body or judge query use."""
    return list(dict.fromkeys(name for text in _texts(metric) for name in placeholders(text)))


def _argument_problem(metric: Metric, args: Mapping[str, Argument]) -> str | None:
    for name in used_args(metric):
        arg = args.get(name)
        if arg is None:
            given = ", ".join(sorted(args)) or "none"
            return (
                f"metric {metric.name}: uses argument {name!r}, which the run does not define "
                f"(arguments: {given})"
            )
        if arg.value is None and not (arg.value_from or {}).get("secretKeyRef"):
            if arg.value_from:
                return (
                    f"metric {metric.name}: argument {name!r} has valueFrom {arg.value_from}; only "
                    "secretKeyRef is read by the run itself (a Rollout resolves the others when it "
                    "creates the run)"
                )
            return f"metric {metric.name}: argument {name!r} has no value"
    return None


def _judge_problem(metric: Metric, pod_hashes: Mapping[str, str]) -> str | None:
    if metric.judge is None:
        return None
    if metric.provider is None or metric.provider.prometheus is None:
        return (
            f"metric {metric.name}: a judge needs a prometheus provider "
            "(its address, authentication and range window/step are used for the judge's query)"
        )
    if not HASH_PLACEHOLDER.search(judge_text(metric)):
        return f"metric {metric.name}: the judge's query must contain {{{{hash}}}} to tell canary from stable"
    if metric.judge.method == "Counts" and not HASH_PLACEHOLDER.search(metric.judge.total_query or ""):
        return (
            f"metric {metric.name}: a Counts judge's totalQuery must contain {{{{hash}}}} "
            "(the requests of each version)"
        )
    missing = [which for which in ("Stable", "Latest") if not pod_hashes.get(which)]
    if missing:
        return (
            f"metric {metric.name}: a judge compares the Stable and Latest versions, but the run "
            f"has no {' and no '.join(missing)} pod-template hash (annotations {STABLE_HASH_ANNOTATION}, "
            f"{LATEST_HASH_ANNOTATION}; a Rollout sets them when it creates the run)"
        )
    return None


def judge_text(metric: Metric) -> str:
    """The judge's own query, else the prometheus provider's (both may use `{{hash}}`)."""
    if metric.judge is not None and metric.judge.query:
        return metric.judge.query
    if metric.provider is not None and metric.provider.prometheus is not None:
        return metric.provider.prometheus.query
    return ""


def judge_query(metric: Metric, pod_hash: str) -> str:
    """The judge's query for one version: `{{hash}}` replaced by its pod-template hash."""
    if metric.judge is None:
        raise ValueError(f"metric {metric.name} has no judge")
    return HASH_PLACEHOLDER.sub(lambda _match: pod_hash, judge_text(metric))


def total_query(metric: Metric, pod_hash: str) -> str:
    """A Counts judge's request query for one version (`{{hash}}` replaced)."""
    if metric.judge is None or not metric.judge.total_query:
        raise ValueError(f"metric {metric.name} has no judge totalQuery")
    return HASH_PLACEHOLDER.sub(lambda _match: pod_hash, metric.judge.total_query)


MIN_INTERVAL_SECONDS = 1.0
"""Shortest `interval` between measurements (Argo Rollouts sets none; `1ms` made ~34 requests/s)."""


def _timing_problem(metric: Metric) -> str | None:
    try:
        count = effective_count(metric)
        failure_limit, success_limit = limits(metric)
        if count is not None and metric.count is not None and success_limit > 0:
            # Argo's ValidateMetric, for the rules consecutiveSuccessLimit brings.
            needed = success_limit + max(failure_limit, 0)
            if count < needed:
                return f"metric {metric.name}: count ({count}) must be >= " + (
                    f"failureLimit + consecutiveSuccessLimit ({failure_limit} + {success_limit})"
                    if failure_limit >= 0
                    else f"consecutiveSuccessLimit ({success_limit})"
                )
        for field, value in (("interval", metric.interval), ("initialDelay", metric.initial_delay)):
            if value is not None:
                try:
                    seconds = parse_duration(value)
                except DurationError as error:
                    return f"metric {metric.name}: {field}: {error}"
                if field == "interval" and seconds < MIN_INTERVAL_SECONDS:
                    return (
                        f"metric {metric.name}: interval {value} is below the minimum of "
                        f"{MIN_INTERVAL_SECONDS:g}s between measurements"
                    )
    except ValueError as error:
        return str(error)
    return None


def metric_problems(spec: AnalysisRunSpec, *, pod_hashes: Mapping[str, str]) -> dict[str, str]:
    """Metric name -> why it cannot be measured as written (each message names the metric).

    `pod_hashes` ({"Stable": ..., "Latest": ...}, from the run's annotations) are what judged
    metrics compare; a judged metric without both is a problem.
    """
    args = {arg.name: arg for arg in spec.args}
    problems = expression_problems(spec.metrics)
    for metric in spec.metrics:
        if metric.name in problems:
            continue
        problem = (
            _timing_problem(metric)
            or _argument_problem(metric, args)
            or _judge_problem(metric, pod_hashes)
            or _job_problem(metric)
            or _refused_problem(metric)
        )
        if problem is not None:
            problems[metric.name] = problem
    return problems


# --- running ---------------------------------------------------------------------------


def start(
    spec: AnalysisRunSpec, status: AnalysisRunStatus, now: datetime, problems: Mapping[str, str]
) -> AnalysisRunStatus:
    """The status with startedAt set, one result per metric, and unmeasurable metrics in Error.

    Idempotent: results that exist are kept; a finished run is returned unchanged.
    """
    if is_finished(status.phase):
        return status
    existing = {result.name: result for result in status.metric_results}
    results: list[MetricResult] = []
    for metric in spec.metrics:
        dry_run = is_dry_run(spec.dry_run, metric.name)
        problem = problems.get(metric.name)
        result = existing.get(metric.name)
        if result is None:
            waiting = None if problem else assess_metric(metric, [], dry_run=dry_run).message
            result = MetricResult(name=metric.name, dry_run=dry_run, message=waiting)
        if problem is not None and result.phase == "Running":
            message = (
                problem if problem.startswith(f"metric {metric.name}") else f"metric {metric.name}: {problem}"
            )
            result = result.model_copy(update={"phase": "Error", "message": message})
        results.append(result.model_copy(update={"dry_run": dry_run}))
    return status.model_copy(
        update={
            "started_at": status.started_at or timestamp(now),
            "phase": "Running",
            "metric_results": results,
        }
    )


def run_started(status: AnalysisRunStatus, now: datetime) -> datetime:
    """When the run began (`status.startedAt`; `now` before it has started)."""
    return _parse_time(status.started_at) or now


_started_at = run_started


def _result(status: AnalysisRunStatus, name: str) -> MetricResult:
    for result in status.metric_results:
        if result.name == name:
            return result
    return MetricResult(name=name)


def _running(spec: AnalysisRunSpec, status: AnalysisRunStatus) -> list[tuple[Metric, MetricResult]]:
    if is_finished(status.phase):
        return []
    pairs = [(metric, _result(status, metric.name)) for metric in spec.metrics]
    return [(metric, result) for metric, result in pairs if result.phase == "Running"]


def due_metrics(spec: AnalysisRunSpec, status: AnalysisRunStatus, now: datetime) -> list[Metric]:
    """Metrics whose next measurement is due at `now`."""
    started = _started_at(status, now)
    due: list[Metric] = []
    for metric, result in _running(spec, status):
        moment = next_measurement_due(metric, result, started, now)
        if moment is not None and moment <= now:
            due.append(metric)
    return due


def next_due(spec: AnalysisRunSpec, status: AnalysisRunStatus, now: datetime) -> datetime | None:
    """The earliest moment a measurement is due (None: nothing more to measure)."""
    started = _started_at(status, now)
    moments = [
        next_measurement_due(metric, result, started, now) for metric, result in _running(spec, status)
    ]
    known = [moment for moment in moments if moment is not None]
    return min(known) if known else None


IN_PROGRESS: frozenset[str] = frozenset({"Running", "Pending"})


def in_flight(spec: AnalysisRunSpec, status: AnalysisRunStatus) -> list[tuple[Metric, Measurement]]:
    """Metrics whose latest measurement is still in progress (a Job running), with it."""
    found = []
    for metric in spec.metrics:
        result = _result(status, metric.name)
        if result.measurements and result.measurements[-1].phase in IN_PROGRESS:
            found.append((metric, result.measurements[-1]))
    return found


def is_terminating(spec: AnalysisRunSpec, status: AnalysisRunStatus) -> bool:
    """Whether measurements in flight are to be stopped rather than resumed (Argo's
    `analysisutil.IsTerminating`): the run was told to stop, or it has its verdict."""
    return spec.terminate or is_finished(status.phase)


def terminated_measurement(measurement: Measurement, now: datetime) -> Measurement:
    """A measurement stopped in flight: Inconclusive, "Metric Terminated" (Argo's
    JobProvider.Terminate and runMeasurements), so it changes nothing a run waits for."""
    return measurement.model_copy(
        update={
            "phase": "Inconclusive",
            "message": "Metric Terminated",
            "finished_at": timestamp(now),
            "resume_at": None,
        }
    )


def measurement_of(
    metric: Metric,
    conditions: Conditions,
    *,
    value: object,
    text: str,
    error: str | None,
    no_data: bool,
    started_at: datetime,
    finished_at: datetime,
) -> Measurement:
    """One finished measurement from what a provider returned."""
    times = {"started_at": timestamp(started_at), "finished_at": timestamp(finished_at)}
    if error is not None:
        return Measurement(phase="Error", message=error, **times)
    phase, message = assess_value(metric, conditions[0], conditions[1], value, no_data=no_data)
    return Measurement(phase=phase, value=text or None, message=message, **times)


def add_measurement(
    spec: AnalysisRunSpec, status: AnalysisRunStatus, metric: Metric, measurement: Measurement
) -> AnalysisRunStatus:
    """The status with one more measurement of `metric` (counters, retention, metric phase)."""
    results = [
        record(
            result,
            measurement,
            metric=metric,
            dry_run=is_dry_run(spec.dry_run, metric.name),
            retention=retention_limit(spec.measurement_retention, metric.name),
        )
        if result.name == metric.name
        else result
        for result in status.metric_results
    ]
    return status.model_copy(update={"metric_results": results})


JudgeData = Sequence[float] | Sequence["CountStep"] | Sequence["HistogramStep"]
"""What a judged metric's queries gave for one version, oldest step first: samples
(MannWhitney), (events, requests) per step (Counts), cumulative buckets per step
(Distribution). Counts and Distribution steps are aligned by time between the versions."""


def judged_window(metric: Metric, run_started: datetime, now: datetime) -> tuple[datetime, datetime] | None:
    """The span a judged metric's range queries cover at `now`: from the run's start (or
    `now - window`, if later) to `now`, on a grid of `step`s anchored at the run's start.

    The first point is one step after the start, so the first `increase(x[step])` holds
    nothing from before the run; the grid is the same at every look, so a look sees the
    earlier looks' steps again, unchanged (what a sequential judge's e-process needs). None:
    no whole step has passed yet.
    """
    window_spec = metric.provider.prometheus.range if metric.provider and metric.provider.prometheus else None
    window = parse_duration(window_spec.window if window_spec else "5m")
    step = parse_duration(window_spec.step if window_spec else "15s")
    if step <= 0:
        return None
    first = run_started + timedelta(seconds=step)
    earliest = now - timedelta(seconds=window)
    if earliest > first:
        skipped = math.ceil((earliest - first).total_seconds() / step - 1e-9)
        first += timedelta(seconds=skipped * step)
    if first > now:
        return None
    return first, now


def is_final_look(metric: Metric, result: MetricResult) -> bool:
    """Whether the next measurement of `metric` is its last planned one (its `count`)."""
    planned = effective_count(metric)
    return planned is not None and result.count + 1 >= planned


_T = TypeVar("_T")

Series = Sequence[tuple[Mapping[str, str], Sequence[tuple[float, float]]]]
"""A range query's answer: (labels, [(time, value), ...]) per series."""


def _by_time(series: Series) -> dict[float, float]:
    sums: dict[float, float] = {}
    for _, points in series:
        for moment, value in points:
            if math.isfinite(value):
                sums[moment] = sums.get(moment, 0.0) + value
    return sums


def count_steps(events: Series, totals: Series) -> dict[float, tuple[float, float]]:
    """Time -> (events, requests) of one version: each query's series summed per step; a
    step without requests is left out, one without events has 0."""
    event_sums, total_sums = _by_time(events), _by_time(totals)
    return {moment: (event_sums.get(moment, 0.0), total) for moment, total in total_sums.items()}


def histogram_steps(buckets: Series) -> dict[float, dict[float, float]]:
    """Time -> {le: cumulative count} of one version, from series labelled `le` (summed over
    any other labels); series without a numeric `le` are ignored."""
    steps: dict[float, dict[float, float]] = {}
    for labels, points in buckets:
        try:
            bound = float(labels.get("le", ""))
        except ValueError:
            continue
        for moment, value in points:
            if math.isfinite(value):
                step = steps.setdefault(moment, {})
                step[bound] = step.get(bound, 0.0) + value
    return {moment: step for moment, step in steps.items() if math.inf in step}


def align(canary: Mapping[float, _T], stable: Mapping[float, _T]) -> tuple[list[_T], list[_T]]:
    """The two versions' steps at the times both have, oldest first."""
    common = sorted(set(canary) & set(stable))
    return [canary[moment] for moment in common], [stable[moment] for moment in common]


def judge_queries(metric: Metric, pod_hashes: Mapping[str, str]) -> list[str]:
    """The range queries a judged metric runs at a look, in the order `judge_data` reads
    their answers: the judge's query for the canary (Latest) then the stable, and for
    Counts the totalQuery for both after them."""
    versions = (pod_hashes["Latest"], pod_hashes["Stable"])
    queries = [judge_query(metric, pod_hash) for pod_hash in versions]
    if metric.judge is not None and metric.judge.method == "Counts":
        queries += [total_query(metric, pod_hash) for pod_hash in versions]
    return queries


def judge_data(metric: Metric, answers: Sequence[Series]) -> tuple[JudgeData, JudgeData]:
    """(canary, stable) for `judged_measurement` from the answers to `judge_queries`."""
    if metric.judge is None:
        raise ValueError(f"metric {metric.name} has no judge")
    if metric.judge.method == "MannWhitney":
        canary, stable = (
            [value for _, points in answer for _, value in points if not math.isnan(value)]
            for answer in answers[:2]
        )
        return canary, stable
    if metric.judge.method == "Counts":
        return align(count_steps(answers[0], answers[2]), count_steps(answers[1], answers[3]))
    return align(histogram_steps(answers[0]), histogram_steps(answers[1]))


def judged_measurement(
    metric: Metric,
    result: MetricResult,
    canary: JudgeData,
    stable: JudgeData,
    *,
    started_at: datetime,
    finished_at: datetime,
) -> Measurement:
    """One look of a judged metric: the canary's data against the stable's.

    MannWhitney: the look number is the metric's measurements so far plus one, out of its
    `count` (planned looks; a metric without count plans as many looks as it has taken).
    Counts and Distribution: an anytime-valid e-process over every step since the run began
    (`core.judge`), the last planned look also checking that the traffic could have shown a
    regression. Counts and Distribution take `canary` and `stable` aligned step by step.
    """
    from tidegate.core import judge as judges  # numpy/scipy load only when a judge runs

    if metric.judge is None:
        raise ValueError(f"metric {metric.name} has no judge")
    times = {"started_at": timestamp(started_at), "finished_at": timestamp(finished_at)}
    if metric.judge.method == "MannWhitney":
        look = result.count + 1
        planned = max(effective_count(metric) or look, look)
        verdict = judges.judge_metric(
            cast("Sequence[float]", canary),
            cast("Sequence[float]", stable),
            metric.judge,
            no_data_policy=metric.no_data_policy,
            look=look,
            planned_looks=planned,
        )
        facts = verdict.metadata()
        return Measurement(
            phase=verdict.phase,
            value=f"effect {facts['effect']}, p {facts['pValue']}",
            message=verdict.message,
            metadata=facts,
            **times,
        )
    final = is_final_look(metric, result)
    if metric.judge.method == "Counts":
        count_steps = list(
            zip(cast("Sequence[CountStep]", canary), cast("Sequence[CountStep]", stable), strict=True)
        )
        sequential = judges.judge_counts(
            count_steps, metric.judge, no_data_policy=metric.no_data_policy, final=final
        )
    else:
        histogram_steps = list(
            zip(cast("Sequence[HistogramStep]", canary), cast("Sequence[HistogramStep]", stable), strict=True)
        )
        sequential = judges.judge_distribution(
            histogram_steps, metric.judge, no_data_policy=metric.no_data_policy, final=final
        )
    facts = sequential.metadata()
    return Measurement(
        phase=sequential.phase,
        value=f"e {facts['eValue']}, effect {facts['effect']}",
        message=sequential.message,
        metadata=facts,
        **times,
    )


_SEVERITY: dict[str, int] = {
    "Successful": 0,
    "Pending": 1,
    "Running": 2,
    "Inconclusive": 3,
    "Error": 4,
    "Failed": 5,
}
_JUDGED_OUTCOMES = frozenset({"Successful", "Failed", "Inconclusive"})


def _run_verdict(spec: AnalysisRunSpec, results: Sequence[MetricResult]) -> Verdict:
    """assess_run, with judged metrics scored together (judge.combine), deciding as early as
    the evidence allows.

    A Failed critical judged metric fails the run at once; so does a score that could no
    longer reach marginalScore even if every judged metric still running passed (those count
    as Inconclusive in `combine`: passing for maxScore, failing for score). Otherwise the run
    waits for its running metrics, as Argo Rollouts' `assessRunStatus` does, and once every
    judged metric is done their score decides for them. Errored and dry-run judged metrics go
    through assess_run like any other metric. Argo ends a run as soon as any metric fails
    (`analysisutil.IsTerminating`); a judged metric's failure alone does not, unless it
    settles the score.
    """
    from tidegate.core.judge import JudgeVerdict, combine

    judges: dict[str, Judge] = {metric.name: metric.judge for metric in spec.metrics if metric.judge}
    judged = [r for r in results if r.name in judges and not r.dry_run and r.phase in _JUDGED_OUTCOMES]
    running = [r for r in results if r.name in judges and not r.dry_run and r.phase == "Running"]
    plain = [r for r in results if r not in judged and r not in running]
    if not judged:
        return assess_run([*plain, *running])

    def as_verdict(r: MetricResult) -> tuple[Judge, JudgeVerdict]:
        phase = "Inconclusive" if r.phase == "Running" else r.phase
        message = r.message or f"metric {r.name}: {r.phase.lower()}"
        if r.phase == "Running":
            message = f"metric {r.name} is still running"
        verdict = JudgeVerdict(cast("JudgePhase", phase), 0, 0, None, None, 0.0, message)
        return judges[r.name], verdict

    scored = combine([as_verdict(r) for r in (*judged, *running)], spec.pass_score, spec.marginal_score)
    names = ", ".join(r.name for r in (*judged, *running))
    judged_verdict = Verdict(scored.phase, f"judged metrics {names}: {scored.message}")
    if running and scored.phase != "Failed":
        return assess_run([*plain, *running])
    if not plain:
        return judged_verdict
    others = assess_run(plain)
    if judged_verdict.phase == others.phase:
        return Verdict(others.phase, f"{others.message}; {judged_verdict.message}")
    return max(judged_verdict, others, key=lambda verdict: _SEVERITY[verdict.phase])


def conclude(
    spec: AnalysisRunSpec, status: AnalysisRunStatus, *, terminated: bool = False
) -> AnalysisRunStatus:
    """The status with the run's phase and message from its metrics.

    `terminated` (spec.terminate): metrics still running end Successful unless their
    measurements say otherwise, and the run ends with the verdict it has.
    """
    if is_finished(status.phase):
        return status
    results = list(status.metric_results)
    if terminated:
        metrics = {metric.name: metric for metric in spec.metrics}
        for index, result in enumerate(results):
            metric = metrics.get(result.name)
            if result.phase == "Running" and metric is not None:
                verdict = assess_metric(metric, result, dry_run=result.dry_run, terminated=True)
                results[index] = result.model_copy(
                    update={"phase": verdict.phase, "message": verdict.message}
                )
    verdict = _run_verdict(spec, results)
    phase: AnalysisPhase = verdict.phase
    message = verdict.message
    if terminated:
        message = f"terminated: {message}"
    elif phase == "Pending":
        phase = "Running"
    run, dry = summaries(results)
    return status.model_copy(
        update={
            "phase": phase,
            "message": message,
            "metric_results": results,
            "run_summary": run,
            "dry_run_summary": dry,
        }
    )


def summaries(results: Sequence[MetricResult]) -> tuple[RunSummary, RunSummary | None]:
    """Metrics by phase, the ones that count and the dry-run ones apart (Argo Rollouts'
    assessRunStatus fills RunSummary and DryRunSummary the same way; running metrics count
    in `count` only). The dry-run summary is None when no metric is a dry run."""

    def summary(group: list[MetricResult]) -> RunSummary:
        def of(phase: str) -> int:
            return sum(1 for r in group if r.phase == phase)

        return RunSummary(
            count=len(group),
            successful=of("Successful"),
            failed=of("Failed"),
            inconclusive=of("Inconclusive"),
            error=of("Error"),
        )

    dry = [r for r in results if r.dry_run]
    return summary([r for r in results if not r.dry_run]), (summary(dry) if dry else None)


def begin_step(
    spec: AnalysisRunSpec, status: AnalysisRunStatus, now: datetime, problems: Mapping[str, str]
) -> tuple[AnalysisRunStatus, list[Metric]]:
    """The first half of one controller step: start the run (idempotent), conclude what is
    already decided (spec.terminate too), and the metrics to measure now (none once finished).

    `k8s.analysis.step_analysis_run` and `bench/decisions.py` both step runs through
    begin_step, then measure, then finish_step: the benchmark decides what the operator does.
    """
    status = conclude(spec, start(spec, status, now, problems), terminated=spec.terminate)
    if is_finished(status.phase):
        return status, []
    return status, due_metrics(spec, status, now)


def finish_step(
    spec: AnalysisRunSpec, status: AnalysisRunStatus, measured: Sequence[tuple[Metric, Measurement]]
) -> AnalysisRunStatus:
    """The second half: record the measurements taken and conclude the run's phase."""
    for metric, measurement in measured:
        status = add_measurement(spec, status, metric, measurement)
    return conclude(spec, status) if measured else status


# --- pruning ---------------------------------------------------------------------------


def prunable_runs(runs: Sequence[Mapping[str, Any]], keep_per_phase: int) -> list[str]:
    """Names of finished runs beyond the newest `keep_per_phase` of each outcome.

    Running and Pending runs (and runs without a phase) are never pruned. Newest by
    creationTimestamp, then by name.
    """
    if keep_per_phase < 0:
        raise ValueError(f"keep_per_phase cannot be negative, not {keep_per_phase}")
    by_phase: dict[str, list[tuple[str, str]]] = {}
    for run in runs:
        metadata = run.get("metadata") or {}
        phase = (run.get("status") or {}).get("phase")
        name = metadata.get("name")
        if not is_finished(phase) or not name or metadata.get("deletionTimestamp"):
            continue
        by_phase.setdefault(str(phase), []).append((str(metadata.get("creationTimestamp") or ""), str(name)))
    doomed: list[str] = []
    for entries in by_phase.values():
        entries.sort(reverse=True)
        doomed += [name for _, name in entries[keep_per_phase:]]
    return sorted(doomed)

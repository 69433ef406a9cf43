"""AnalysisTemplate, ClusterAnalysisTemplate and AnalysisRun."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tidegate.api._base import ApiModel, Duration, IntOrString, cel, duration_rule, validations
from tidegate.api.meta import ObjectMeta
from tidegate.api.rollout import MeasurementRetention, MetricNameRef

AnalysisPhase = Literal["Pending", "Running", "Successful", "Failed", "Error", "Inconclusive"]


class SecretKeyRef(ApiModel):
    name: str
    """Secret in the namespace of the AnalysisRun."""
    key: str
    """Key within the Secret."""


class Authentication(ApiModel):
    """Credentials read from a Secret at measurement time; never written to status, logs or Events."""

    bearer_token: SecretKeyRef | None = None
    """Send `Authorization: Bearer <token>`."""
    basic_username: SecretKeyRef | None = None
    """Username for HTTP basic auth."""
    basic_password: SecretKeyRef | None = None
    """Password for HTTP basic auth."""


class PrometheusProvider(ApiModel):
    model_config = {"json_schema_extra": validations(duration_rule("timeout"))}

    address: str = Field(min_length=1)
    """Base URL of the Prometheus server, e.g. http://prometheus:9090."""
    query: str = Field(min_length=1)
    """PromQL; `{{args.NAME}}` is replaced by the argument, escaped as a string literal."""
    timeout: Duration = "10s"
    """How long a query may take."""
    authentication: Authentication | None = None
    """Credentials, from a Secret."""
    range: PrometheusRange | None = None
    """Run a range query (for statistical judges) instead of an instant query."""


class PrometheusRange(ApiModel):
    model_config = {"json_schema_extra": validations(duration_rule("window"), duration_rule("step"))}

    window: Duration = "5m"
    """How far back the range query reaches."""
    step: Duration = "15s"
    """Resolution of the range query."""


class WebHeader(ApiModel):
    key: str
    """Header name."""
    value: str
    """Header value."""


class WebProvider(ApiModel):
    url: str = Field(min_length=1)
    """URL to call; `{{args.NAME}}` is replaced (URL-escaped)."""
    method: Literal["GET", "POST", "PUT"] = "GET"
    """HTTP method."""
    headers: list[WebHeader] = Field(default_factory=list)
    """Extra headers."""
    body: str | None = None
    """Request body (POST, PUT)."""
    json_path: str = "$"
    """JSONPath of the value in the response, e.g. `$.data.ok`."""
    timeout_seconds: int = Field(default=10, ge=1)
    """How long a call may take."""
    authentication: Authentication | None = None
    """Credentials, from a Secret."""


class MetricProvider(ApiModel):
    """Where measurements come from: exactly one provider."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "[has(self.prometheus), has(self.web)].filter(x, x).size() == 1",
                "a provider takes exactly one of prometheus, web",
            )
        )
    }

    prometheus: PrometheusProvider | None = None
    """Prometheus instant query."""
    web: WebProvider | None = None
    """HTTP call returning JSON."""


class Judge(ApiModel):
    """Compare the canary's samples with the stable's instead of a fixed threshold."""

    query: str | None = None
    """Range query run once per version; `{{hash}}` becomes that version's pod-template hash.
    Omitted: the prometheus provider's query."""
    direction: Literal["Increase", "Decrease", "Either"] = "Increase"
    """Which change of the canary counts as worse."""
    confidence: float = Field(default=0.99, gt=0.5, lt=1.0)
    """Confidence level of the Mann-Whitney U test."""
    tolerance: float = Field(default=0.05, ge=0.0)
    """Relative effect below which a significant shift still passes (0.05 = 5%)."""
    critical: bool = False
    """A failure of this metric fails the whole run, whatever the score."""
    weight: float = Field(default=1.0, gt=0.0)
    """Weight of this metric in the score."""


class Metric(ApiModel):
    """One metric: how to measure it, how often, and what its results mean."""

    model_config = {
        "json_schema_extra": validations(
            duration_rule("interval"),
            duration_rule("initialDelay"),
            cel(
                "has(self.provider) || has(self.judge)",
                "a metric needs a provider",
                ".provider",
            ),
        )
    }

    name: str = Field(min_length=1)
    """Name of the metric, unique in the template."""
    interval: Duration | None = None
    """Time between measurements; omitted: measure once."""
    initial_delay: Duration | None = None
    """Wait this long before the first measurement."""
    count: IntOrString | None = None
    """Number of measurements; omitted with an interval: until the run is stopped."""
    success_condition: str | None = None
    """CEL expression over `result`; true means the measurement succeeded."""
    failure_condition: str | None = None
    """CEL expression over `result`; true means it failed. Neither true: Inconclusive."""
    failure_limit: int = Field(default=0, ge=0)
    """Failed measurements tolerated; one more fails the metric."""
    inconclusive_limit: int = Field(default=0, ge=0)
    """Inconclusive measurements tolerated; one more makes the metric Inconclusive."""
    consecutive_error_limit: int = Field(default=4, ge=0)
    """Errors in a row tolerated; one more makes the metric Error."""
    no_data_policy: Literal["Inconclusive", "Failed"] = "Inconclusive"
    """What an empty result or NaN means. Never Successful."""
    provider: MetricProvider | None = None
    """Where measurements come from."""
    judge: Judge | None = None
    """Statistical comparison of canary and stable (needs a prometheus provider with range)."""


class Argument(ApiModel):
    name: str
    """Argument name, used as `{{args.NAME}}`."""
    value: str | None = None
    """Default value; omitted: the Rollout must set it."""
    value_from: dict[str, Any] | None = None
    """Where the value comes from (secretKeyRef, podTemplateHashValue, fieldRef)."""


class AnalysisTemplateSpec(ApiModel):
    args: list[Argument] = Field(default_factory=list)
    """Arguments the template's queries use."""
    metrics: list[Metric] = Field(min_length=1)
    """Metrics to measure."""
    dry_run: list[MetricNameRef] = Field(default_factory=list)
    """Metrics recorded but never failing the run."""
    measurement_retention: list[MeasurementRetention] = Field(default_factory=list)
    """How many measurements to keep per metric (default 10)."""
    pass_score: float = Field(default=0.9, ge=0.0, le=1.0)
    """Judged metrics: weighted score at or above which the run passes."""
    marginal_score: float = Field(default=0.6, ge=0.0, le=1.0)
    """Judged metrics: below this the run fails; between marginal and pass it is Inconclusive."""


class AnalysisTemplate(ApiModel):
    api_version: str = "tidegate.io/v1alpha1"
    kind: str = "AnalysisTemplate"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: AnalysisTemplateSpec


class ClusterAnalysisTemplate(AnalysisTemplate):
    kind: str = "ClusterAnalysisTemplate"


class Measurement(ApiModel):
    phase: AnalysisPhase
    """Successful, Failed, Inconclusive or Error."""
    value: str | None = None
    """The measured value, as text."""
    started_at: str | None = None
    """When the measurement began."""
    finished_at: str | None = None
    """When it ended."""
    message: str | None = None
    """Why, for an error or no data."""
    metadata: dict[str, str] = Field(default_factory=dict)
    """Extra facts (judge: sample sizes, p-value, effect)."""


class MetricResult(ApiModel):
    name: str
    """Metric name."""
    phase: AnalysisPhase = "Running"
    """The metric's verdict so far."""
    measurements: list[Measurement] = Field(default_factory=list)
    """The latest measurements (measurementRetention)."""
    count: int = 0
    """Measurements taken."""
    successful: int = 0
    """Successful measurements."""
    failed: int = 0
    """Failed measurements."""
    inconclusive: int = 0
    """Inconclusive measurements."""
    error: int = 0
    """Measurements that erred."""
    consecutive_error: int = 0
    """Errors in a row, up to now."""
    message: str | None = None
    """Why the metric has its phase."""
    dry_run: bool = False
    """Recorded only; never fails the run."""


class AnalysisRunSpec(ApiModel):
    metrics: list[Metric] = Field(min_length=1)
    """Metrics to measure (resolved from the templates)."""
    args: list[Argument] = Field(default_factory=list)
    """Argument values (resolved)."""
    dry_run: list[MetricNameRef] = Field(default_factory=list)
    """Metrics recorded but never failing the run."""
    measurement_retention: list[MeasurementRetention] = Field(default_factory=list)
    """How many measurements to keep per metric."""
    terminate: bool = False
    """Stop measuring; the run ends with the verdict it has."""
    pass_score: float = 0.9
    """Judged metrics: pass score."""
    marginal_score: float = 0.6
    """Judged metrics: marginal score."""


class AnalysisRunStatus(ApiModel):
    phase: AnalysisPhase = "Pending"
    """Pending, Running, Successful, Failed, Error or Inconclusive."""
    message: str | None = None
    """Why the run has its phase (names the metric and the value)."""
    started_at: str | None = None
    """When the run began."""
    metric_results: list[MetricResult] = Field(default_factory=list)
    """One result per metric."""


class AnalysisRun(ApiModel):
    api_version: str = "tidegate.io/v1alpha1"
    kind: str = "AnalysisRun"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: AnalysisRunSpec
    status: AnalysisRunStatus = Field(default_factory=AnalysisRunStatus)

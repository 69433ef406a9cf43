"""AnalysisTemplate, ClusterAnalysisTemplate and AnalysisRun."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from tidegate.api._base import (
    ApiModel,
    Duration,
    IntOrString,
    cel,
    duration_bound_rule,
    duration_rule,
    duration_rules,
    validations,
)
from tidegate.api.meta import ObjectMeta
from tidegate.api.rollout import AnalysisTemplateRef, MeasurementRetention, MetricNameRef

AnalysisPhase = Literal["Pending", "Running", "Successful", "Failed", "Error", "Inconclusive"]


class SecretKeyRef(ApiModel):
    name: str
    """Secret in the namespace of the AnalysisRun."""
    key: str
    """Key within the Secret."""


class BasicAuth(ApiModel):
    """Argo Rollouts' basicAuth: the values are written in the template, usually as
    `{{args.NAME}}` of an argument whose valueFrom is a secretKeyRef."""

    username: str | None = None
    """Username; `{{args.NAME}}` is replaced."""
    password: str | None = None
    """Password; `{{args.NAME}}` is replaced (a secret argument's value never reaches the status)."""


class OAuth2(ApiModel):
    """Argo Rollouts' oauth2: a token from the client-credentials grant, sent as a bearer token."""

    token_url: str | None = None
    """The token endpoint (POST, grant_type=client_credentials)."""
    client_id: str | None = None
    """Client id; `{{args.NAME}}` is replaced."""
    client_secret: str | None = None
    """Client secret; `{{args.NAME}}` is replaced."""
    scopes: list[str] = Field(default_factory=list)
    """Scopes asked for."""


class Authentication(ApiModel):
    """Credentials read at measurement time; never written to status, logs or Events."""

    bearer_token: SecretKeyRef | None = None
    """Send `Authorization: Bearer <token>` (Tidegate's: the token read from a Secret)."""
    basic_username: SecretKeyRef | None = None
    """Username for HTTP basic auth, from a Secret (Tidegate's)."""
    basic_password: SecretKeyRef | None = None
    """Password for HTTP basic auth, from a Secret (Tidegate's)."""
    basic_auth: BasicAuth | None = None
    """HTTP basic auth as Argo Rollouts writes it (values or `{{args.NAME}}`)."""
    oauth2: OAuth2 | None = None
    """OAuth2 client credentials as Argo Rollouts writes them."""
    sigv4: dict[str, Any] | None = None
    """AWS SigV4 signing (Argo Rollouts): kept as written, refused (not supported by Tidegate)."""


class WebHeader(ApiModel):
    key: str
    """Header name."""
    value: str
    """Header value."""


def _range_query_step_rules() -> list[dict[str, str]]:
    return [
        {**rule, "message": "rangeQuery." + rule["message"]}
        for rule in (duration_rule("step"), duration_bound_rule("step"))
    ]


class PrometheusRangeQuery(ApiModel):
    model_config = {"json_schema_extra": validations(*_range_query_step_rules())}

    start: str | None = None
    """When the range starts: `now()`, or `now() - duration("1h")` (`{{args.NAME}}` allowed);
    omitted: now."""
    end: str | None = None
    """When the range ends, written as `start`; omitted: now."""
    step: Duration | None = None
    """Time between two samples, e.g. 30s (Argo Rollouts' DurationString)."""


class PrometheusProvider(ApiModel):
    model_config = {"json_schema_extra": validations(*duration_rules("timeout"))}

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
    headers: list[WebHeader] = Field(default_factory=list)
    """Extra HTTP headers (Argo Rollouts); `{{args.NAME}}` is replaced in their values."""
    insecure: bool = False
    """Skip TLS certificate verification (Argo Rollouts)."""
    range_query: PrometheusRangeQuery | None = None
    """Argo Rollouts' range query: `result` is every sample of every series, in one list."""


class PrometheusRange(ApiModel):
    model_config = {"json_schema_extra": validations(*duration_rules("window"), *duration_rules("step"))}

    window: Duration = "5m"
    """How far back the range query reaches."""
    step: Duration = "15s"
    """Resolution of the range query."""


class WebProvider(ApiModel):
    model_config = {
        "json_schema_extra": validations(
            cel("!has(self.body) || !has(self.jsonBody)", "give body or jsonBody, not both", ".jsonBody")
        )
    }

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
    json_body: Any = Field(default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    """The body as JSON (Argo Rollouts), sent with Content-Type application/json; give body or
    jsonBody, not both. `{{args.NAME}}` is replaced in its strings."""
    insecure: bool = False
    """Skip TLS certificate verification (Argo Rollouts)."""


class JobMetadata(ApiModel):
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels copied onto each Job."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations copied onto each Job."""


class JobProvider(ApiModel):
    """A Kubernetes Job per measurement (Argo Rollouts' JobMetric): it succeeds -> Successful,
    it fails -> Failed, Running while it runs."""

    metadata: JobMetadata = Field(default_factory=JobMetadata)
    """Labels and annotations for the Jobs."""
    spec: dict[str, Any]
    """A batch/v1 JobSpec, as in a Job (`template`, `backoffLimit`, ...); `{{args.NAME}}` is
    replaced in its strings."""


class MetricProvider(ApiModel):
    """Where measurements come from: exactly one provider."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "[has(self.prometheus), has(self.web), has(self.job)].filter(x, x).size() == 1",
                "a provider takes exactly one of prometheus, web, job",
            )
        )
    }

    prometheus: PrometheusProvider | None = None
    """Prometheus instant query."""
    web: WebProvider | None = None
    """HTTP call returning JSON."""
    job: JobProvider | None = None
    """A Kubernetes Job run in the AnalysisRun's namespace, owned by the run."""


class Judge(ApiModel):
    """Compare the canary with the stable instead of a fixed threshold.

    Three methods: `MannWhitney` (per-step samples, a rank test at each look with the
    false-alarm budget spent over `count` looks), and two anytime-valid sequential tests
    whose false-alarm rate holds at every look (Lindon, Sanden & Shirikian, KDD 2022):
    `Counts` (event counts against request counts: the ratio of the canary's rate to the
    stable's) and `Distribution` (histogram buckets: is the canary slower at the stable's
    quantiles?).
    """

    model_config = {
        "json_schema_extra": validations(
            cel(
                "self.method != 'Counts' || has(self.totalQuery)",
                "method Counts needs totalQuery (the requests each event count is out of)",
                ".totalQuery",
            ),
            cel(
                "self.method == 'Distribution' || !has(self.quantiles)",
                "quantiles apply to method Distribution only",
                ".quantiles",
            ),
        )
    }

    method: Literal["MannWhitney", "Counts", "Distribution"] = "MannWhitney"
    """MannWhitney: samples per step; Counts: a sequential test of event counts (`query`) out
    of request counts (`totalQuery`); Distribution: a sequential test on histogram buckets
    (`query` answers one series per `le` bucket boundary)."""
    query: str | None = None
    """Range query run once per version; `{{hash}}` becomes that version's pod-template hash.
    Omitted: the prometheus provider's query. Counts: events per step (`increase(...)`);
    Distribution: cumulative bucket counts per step, by `le`."""
    total_query: str | None = None
    """Counts: the requests per step the events are out of, per version (`{{hash}}`)."""
    quantiles: list[Annotated[float, Field(gt=0.0, lt=1.0)]] | None = Field(
        default=None, min_length=1, max_length=8
    )
    """Distribution: the stable's quantiles at which the canary must not be slower (by more
    than the tolerance); default [0.5, 0.99]."""
    direction: Literal["Increase", "Decrease", "Either"] = "Increase"
    """Which change of the canary counts as worse."""
    confidence: float = Field(default=0.99, gt=0.5, lt=1.0)
    """1 - the false-alarm budget of the whole analysis (all looks together)."""
    tolerance: float = Field(default=0.05, ge=0.0)
    """Change that still passes: MannWhitney, the relative shift; Counts, the rate ratio
    above 1 (0.05: a canary rate up to 1.05x the stable's passes); Distribution, the relative
    slowdown at each quantile."""
    critical: bool = False
    """A failure of this metric fails the whole run at once, whatever the score."""
    weight: float = Field(default=1.0, gt=0.0)
    """Weight of this metric in the score."""


class Metric(ApiModel):
    """One metric: how to measure it, how often, and what its results mean."""

    model_config = {
        "json_schema_extra": validations(
            *duration_rules("interval", args=True),
            *duration_rules("initialDelay", args=True),
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
    failure_limit: IntOrString = 0
    """Failed measurements tolerated; one more fails the metric (a number, or `{{args.NAME}}`
    resolved when the run is made, as Argo Rollouts allows). -1: no limit, for a metric that
    passes on `consecutiveSuccessLimit` alone (Argo Rollouts v1.8)."""
    inconclusive_limit: IntOrString = 0
    """Inconclusive measurements tolerated; one more makes the metric Inconclusive."""
    consecutive_error_limit: IntOrString = 4
    """Errors in a row tolerated; one more makes the metric Error."""
    consecutive_success_limit: IntOrString | None = None
    """Successful measurements in a row that make the metric Successful at once (0 or
    omitted: off). With `count`, reaching the count without them is Inconclusive (Failed
    when failureLimit is -1), as in Argo Rollouts v1.8."""
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
    model_config = {
        "json_schema_extra": validations(
            cel(
                "(has(self.metrics) && size(self.metrics) > 0)"
                " || (has(self.templates) && size(self.templates) > 0)",
                "a template needs metrics or templates",
                ".metrics",
            )
        )
    }

    args: list[Argument] = Field(default_factory=list)
    """Arguments the template's queries use."""
    metrics: list[Metric] = Field(default_factory=list)
    """Metrics to measure."""
    templates: list[AnalysisTemplateRef] = Field(default_factory=list)
    """Other templates (AnalysisTemplate, or ClusterAnalysisTemplate with clusterScope) whose
    metrics, args, dryRun and measurementRetention are merged into this one's, as Argo
    Rollouts flattens them; a template that leads back to itself is an InvalidSpec."""
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
    """Extra facts (judge: sample sizes, p-value, effect; job: job-name, job-namespace)."""
    resume_at: str | None = None
    """A measurement in progress (a Job running): when to look at it again."""


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
    consecutive_success: int = 0
    """Successful measurements in a row, up to now (consecutiveSuccessLimit)."""
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


class RunSummary(ApiModel):
    """How many metrics ended in each phase (Argo Rollouts' RunSummary)."""

    count: int = 0
    """Metrics counted."""
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0


class AnalysisRunStatus(ApiModel):
    phase: AnalysisPhase = "Pending"
    """Pending, Running, Successful, Failed, Error or Inconclusive."""
    message: str | None = None
    """Why the run has its phase (names the metric and the value)."""
    started_at: str | None = None
    """When the run began."""
    metric_results: list[MetricResult] = Field(default_factory=list)
    """One result per metric."""
    run_summary: RunSummary | None = None
    """The metrics that count, by phase."""
    dry_run_summary: RunSummary | None = None
    """The dry-run metrics, by phase; absent when the run has none."""


class AnalysisRun(ApiModel):
    api_version: str = "tidegate.io/v1alpha1"
    kind: str = "AnalysisRun"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: AnalysisRunSpec
    status: AnalysisRunStatus = Field(default_factory=AnalysisRunStatus)

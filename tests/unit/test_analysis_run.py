"""AnalysisRun tables: building (template merge, arguments, the body) and running (start,
due metrics, measurements, verdicts, terminate, problems), pruning and merge patches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tidegate.api.analysis import (
    AnalysisRunSpec,
    AnalysisRunStatus,
    AnalysisTemplateSpec,
    Argument,
    Measurement,
    Metric,
)
from tidegate.api.rollout import (
    AnalysisRunArgument,
    AnalysisTemplateRef,
    MeasurementRetention,
    MetricNameRef,
    Rollout,
)
from tidegate.core import analysis_run as runs
from tidegate.core.analysis_run import AnalysisSpecError, TemplateSource

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)

ROLLOUT = Rollout.model_validate(
    {
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": "1234-abcd",
            "labels": {"app": "web-app", "team": "checkout"},
            "annotations": {"example.com/owner": "sre"},
        },
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "example/web:2"}]},
            },
            "strategy": {"canary": {"steps": [{"setWeight": 50}]}},
        },
    }
)
DOCUMENT = ROLLOUT.model_dump(by_alias=True, mode="json", exclude_none=True)
HASHES = {"Stable": "aaa111", "Latest": "bbb222"}


def metric(name: str = "success-rate", **fields: Any) -> Metric:
    fields.setdefault("provider", {"prometheus": {"address": "http://prom:9090", "query": "vector(1)"}})
    return Metric.model_validate({"name": name, **fields})


def template(*metrics: Metric, **fields: Any) -> AnalysisTemplateSpec:
    return AnalysisTemplateSpec.model_validate(
        {"metrics": [m.model_dump(by_alias=True, exclude_none=True) for m in metrics], **fields}
    )


# --- field paths -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("metadata.name", "web"),
        ("metadata.namespace", "shop"),
        ("metadata.labels['app']", "web-app"),
        ('metadata.labels["team"]', "checkout"),
        ("metadata.annotations['example.com/owner']", "sre"),
        ("spec.template.spec.containers[0].image", "example/web:2"),
        ("spec.replicas", "3"),
        ("  metadata.name  ", "web"),
    ],
)
def test_field_value_reads_a_path_of_the_rollout(path: str, expected: str) -> None:
    assert runs.field_value(DOCUMENT, path) == expected


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("metadata.labels['nope']", "has no field 'nope'"),
        ("spec.template.spec.containers[3].image", "has no element [3]"),
        ("metadata.labels", "leads to a dict"),
        ("metadata..name", "does not parse"),
        (".metadata.name", "does not parse"),
        ("", "empty"),
        ("metadata.labels[app]", "does not parse"),
    ],
)
def test_field_value_says_why_a_path_leads_nowhere(path: str, error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("[", r"\[").replace("]", r"\]")):
        runs.field_value(DOCUMENT, path)


# --- arguments -------------------------------------------------------------------------


def arg(name: str, value: str | None = None, value_from: dict[str, Any] | None = None) -> Argument:
    return Argument(name=name, value=value, value_from=value_from)


def given(name: str, value: str | None = None, **value_from: Any) -> AnalysisRunArgument:
    return AnalysisRunArgument.model_validate(
        {"name": name, "value": value, **({"valueFrom": value_from} if value_from else {})}
    )


@pytest.mark.parametrize(
    ("template_args", "rollout_args", "expected"),
    [
        pytest.param([arg("svc", "default-svc")], [], {"svc": "default-svc"}, id="template default"),
        pytest.param(
            [arg("svc", "default-svc")], [given("svc", "web")], {"svc": "web"}, id="rollout overrides"
        ),
        pytest.param([arg("svc")], [given("svc", "web")], {"svc": "web"}, id="rollout sets a required arg"),
        pytest.param(
            [arg("canary"), arg("stable")],
            [
                given("canary", podTemplateHashValue="Latest"),
                given("stable", podTemplateHashValue="Stable"),
            ],
            {"canary": "bbb222", "stable": "aaa111"},
            id="pod template hashes",
        ),
        pytest.param(
            [arg("app", "x")],
            [given("app", fieldRef={"fieldPath": "metadata.labels['app']"})],
            {"app": "web-app"},
            id="fieldRef overrides a default",
        ),
        pytest.param(
            [arg("ns", value_from={"fieldRef": {"fieldPath": "metadata.namespace"}})],
            [],
            {"ns": "shop"},
            id="template valueFrom fieldRef",
        ),
        pytest.param(
            [arg("svc", "a")],
            [given("svc", "b"), given("unused", "z")],
            {"svc": "b"},
            id="rollout args no template declares are ignored",
        ),
        pytest.param(
            [arg("svc", "a")], [given("svc")], {"svc": "a"}, id="rollout arg without value keeps default"
        ),
    ],
)
def test_resolve_args(
    template_args: list[Argument], rollout_args: list[AnalysisRunArgument], expected: dict[str, str]
) -> None:
    resolved = runs.resolve_args(template_args, rollout_args, rollout=DOCUMENT, pod_hashes=HASHES)
    assert {a.name: a.value for a in resolved} == expected
    assert all(a.value_from is None for a in resolved)


def test_a_secret_argument_stays_a_reference() -> None:
    ref = {"secretKeyRef": {"name": "prom-auth", "key": "token"}}
    (resolved,) = runs.resolve_args([arg("token", value_from=ref)], [], rollout=DOCUMENT, pod_hashes=HASHES)
    assert resolved.value is None and resolved.value_from == ref


@pytest.mark.parametrize(
    ("template_args", "rollout_args", "hashes", "message"),
    [
        pytest.param([arg("svc")], [], HASHES, "argument 'svc' has no value", id="required, not given"),
        pytest.param(
            [arg("stable")],
            [given("stable", podTemplateHashValue="Stable")],
            {"Latest": "bbb222"},
            "argument 'stable': there is no Stable pod-template hash",
            id="no stable yet",
        ),
        pytest.param(
            [arg("app")],
            [given("app", fieldRef={"fieldPath": "metadata.labels['nope']"})],
            HASHES,
            "argument 'app': fieldPath",
            id="fieldRef leads nowhere",
        ),
        pytest.param(
            [arg("x", value_from={"configMapKeyRef": {"name": "a"}})],
            [],
            HASHES,
            "argument 'x': valueFrom needs one of",
            id="unknown valueFrom",
        ),
    ],
)
def test_resolve_args_errors_name_the_argument(
    template_args: list[Argument],
    rollout_args: list[AnalysisRunArgument],
    hashes: dict[str, str],
    message: str,
) -> None:
    with pytest.raises(AnalysisSpecError, match=message):
        runs.resolve_args(template_args, rollout_args, rollout=DOCUMENT, pod_hashes=hashes)


# --- merging templates -----------------------------------------------------------------


def test_merge_puts_metrics_args_and_settings_side_by_side() -> None:
    first = TemplateSource(
        "rates",
        template(
            metric("success-rate"),
            args=[{"name": "svc"}],
            dryRun=[{"metricName": "success-rate"}],
            measurementRetention=[{"metricName": "success-rate", "limit": 3}],
        ),
    )
    second = TemplateSource(
        "latency",
        template(metric("latency"), args=[{"name": "svc", "value": "web"}, {"name": "q", "value": "0.99"}]),
        cluster_scope=True,
    )
    merged = runs.merge_templates([first, second])
    assert [m.name for m in merged.metrics] == ["success-rate", "latency"]
    assert {a.name: a.value for a in merged.args} == {"svc": "web", "q": "0.99"}
    assert [r.metric_name for r in merged.dry_run] == ["success-rate"]
    assert [(r.metric_name, r.limit) for r in merged.measurement_retention] == [("success-rate", 3)]
    assert (merged.pass_score, merged.marginal_score) == (0.9, 0.6)


@pytest.mark.parametrize(
    ("sources", "message"),
    [
        pytest.param(
            [
                TemplateSource("a", template(metric("m"))),
                TemplateSource("b", template(metric("m")), cluster_scope=True),
            ],
            "metric 'm' is defined by both AnalysisTemplate a and ClusterAnalysisTemplate b",
            id="duplicate across templates",
        ),
        pytest.param(
            [TemplateSource("a", template(metric("m"), metric("m")))],
            "metric 'm' is defined by AnalysisTemplate a twice",
            id="duplicate in one template",
        ),
        pytest.param(
            [
                TemplateSource("a", template(metric("m1"), args=[{"name": "svc", "value": "x"}])),
                TemplateSource("b", template(metric("m2"), args=[{"name": "svc", "value": "y"}])),
            ],
            "argument 'svc' has two defaults",
            id="conflicting argument defaults",
        ),
        pytest.param(
            [
                TemplateSource("a", template(metric("m1"), passScore=0.8)),
                TemplateSource("b", template(metric("m2"), passScore=0.95)),
            ],
            "passScore differs between AnalysisTemplate a",
            id="conflicting pass scores",
        ),
        pytest.param([], "names no template", id="nothing"),
    ],
)
def test_merge_errors(sources: list[TemplateSource], message: str) -> None:
    with pytest.raises(AnalysisSpecError, match=message):
        runs.merge_templates(sources)


def test_scores_come_from_the_templates_that_set_them() -> None:
    merged = runs.merge_templates(
        [
            TemplateSource("a", template(metric("m1"))),
            TemplateSource("b", template(metric("m2"), passScore=0.95, marginalScore=0.5)),
        ]
    )
    assert (merged.pass_score, merged.marginal_score) == (0.95, 0.5)


# --- the body --------------------------------------------------------------------------


def test_run_body_is_owned_by_the_rollout_and_labelled() -> None:
    merged = runs.merge_templates(
        [TemplateSource("rates", template(metric("success-rate"), metric("errors")))]
    )
    body = runs.run_body(
        ROLLOUT,
        [MetricNameRef(metric_name="errors")],
        [MeasurementRetention(metric_name="errors", limit=2)],
        merged,
        [Argument(name="svc", value="web")],
        name="web-bbb222-2",
        kind="step",
        pod_hashes=HASHES,
    )
    assert body["apiVersion"] == "tidegate.io/v1alpha1" and body["kind"] == "AnalysisRun"
    meta = body["metadata"]
    assert meta["name"] == "web-bbb222-2" and meta["namespace"] == "shop"
    assert meta["labels"] == {
        "rollout.tidegate.io/name": "web",
        "rollouts-pod-template-hash": "bbb222",
        "analysis.tidegate.io/kind": "step",
    }
    assert meta["annotations"] == {
        runs.STABLE_HASH_ANNOTATION: "aaa111",
        runs.LATEST_HASH_ANNOTATION: "bbb222",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "tidegate.io/v1alpha1",
            "kind": "Rollout",
            "name": "web",
            "uid": "1234-abcd",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    spec = body["spec"]
    assert [m["name"] for m in spec["metrics"]] == ["success-rate", "errors"]
    assert spec["args"] == [{"name": "svc", "value": "web"}]
    assert spec["dryRun"] == [{"metricName": "errors"}]
    assert spec["measurementRetention"] == [{"metricName": "errors", "limit": 2}]
    assert (spec["passScore"], spec["marginalScore"], spec["terminate"]) == (0.9, 0.6, False)
    AnalysisRunSpec.model_validate(spec)


def test_run_body_rejects_a_dry_run_of_an_unknown_metric() -> None:
    merged = runs.merge_templates([TemplateSource("rates", template(metric("success-rate")))])
    with pytest.raises(AnalysisSpecError, match="names metric 'sucess-rate', which no template defines"):
        runs.run_body(
            ROLLOUT,
            [MetricNameRef(metric_name="sucess-rate")],
            [],
            merged,
            [],
            name="r",
            kind="step",
            pod_hashes=HASHES,
        )


# --- problems --------------------------------------------------------------------------


def run_spec(*metrics: Metric, **fields: Any) -> AnalysisRunSpec:
    return AnalysisRunSpec.model_validate(
        {"metrics": [m.model_dump(by_alias=True, exclude_none=True) for m in metrics], **fields}
    )


JUDGE = {"query": 'rate(x{hash="{{hash}}"}[1m])'}


@pytest.mark.parametrize(
    ("the_metric", "args", "hashes", "message"),
    [
        pytest.param(
            metric(successCondition="result[0] >>= 1"),
            [],
            HASHES,
            "metric success-rate: successCondition",
            id="expr",
        ),
        pytest.param(
            metric(failureCondition="results[0] < 1"), [], HASHES, "unknown name 'results'", id="unknown name"
        ),
        pytest.param(
            metric(provider={"prometheus": {"address": "http://p", "query": 'up{job="{{args.svc}}"}'}}),
            [],
            HASHES,
            "uses argument 'svc', which the run does not define",
            id="undefined arg",
        ),
        pytest.param(
            metric(provider={"web": {"url": "http://x/{{args.svc}}"}}),
            [{"name": "svc"}],
            HASHES,
            "argument 'svc' has no value",
            id="arg without value",
        ),
        pytest.param(
            metric(provider={"web": {"url": "http://x/{{args.svc}}"}}),
            [{"name": "svc", "valueFrom": {"podTemplateHashValue": "Stable"}}],
            HASHES,
            "only secretKeyRef is read by the run itself",
            id="unresolved valueFrom",
        ),
        pytest.param(
            metric(count="many", interval="1s"), [], HASHES, "count must be a whole number", id="count"
        ),
        pytest.param(metric(interval="soon"), [], HASHES, "interval: not a duration", id="interval"),
        # Argo's ValidateMetric, for consecutiveSuccessLimit (v1.8).
        pytest.param(
            metric(count=3, interval="1s", failureLimit=1, consecutiveSuccessLimit=3),
            [],
            HASHES,
            "count (3) must be >= failureLimit + consecutiveSuccessLimit (1 + 3)",
            id="count below failureLimit + consecutiveSuccessLimit",
        ),
        pytest.param(
            metric(count=2, interval="1s", failureLimit=-1, consecutiveSuccessLimit=3),
            [],
            HASHES,
            "count (2) must be >= consecutiveSuccessLimit (3)",
            id="count below consecutiveSuccessLimit",
        ),
        pytest.param(
            metric(
                provider={
                    "prometheus": {
                        "address": "https://aps-workspaces.example",
                        "query": "up",
                        "authentication": {"sigv4": {"region": "eu-west-1"}},
                    }
                }
            ),
            [],
            HASHES,
            "provider.prometheus.authentication.sigv4: not supported by Tidegate",
            id="sigv4 refused by name",
        ),
        pytest.param(
            metric(interval="1s", failureLimit=-1),
            [],
            HASHES,
            "failureLimit and consecutiveSuccessLimit cannot both be disabled",
            id="both limits off",
        ),
        pytest.param(
            metric(interval="1ms"),
            [],
            HASHES,
            "interval 1ms is below the minimum of 1s between measurements",
            id="interval below the floor",
        ),
        pytest.param(
            metric(interval="0"), [], HASHES, "interval 0 is below the minimum of 1s", id="interval zero"
        ),
        pytest.param(
            metric(judge=JUDGE),
            [],
            {"Latest": "bbb222"},
            "has no Stable pod-template hash",
            id="judge hashes",
        ),
        pytest.param(
            metric(judge=JUDGE, provider={"web": {"url": "http://x"}}),
            [],
            HASHES,
            "a judge needs a prometheus provider",
            id="judge provider",
        ),
        pytest.param(
            metric(judge={"query": "rate(x[1m])"}), [], HASHES, "must contain {{hash}}", id="judge hash"
        ),
    ],
)
def test_metric_problems(
    the_metric: Metric, args: list[dict[str, Any]], hashes: dict[str, str], message: str
) -> None:
    problems = runs.metric_problems(run_spec(the_metric, args=args), pod_hashes=hashes)
    assert list(problems) == [the_metric.name]
    assert message in problems[the_metric.name]
    assert problems[the_metric.name].startswith(f"metric {the_metric.name}")


def test_a_sound_spec_has_no_problems() -> None:
    spec = run_spec(
        metric(successCondition="result[0] >= 0.95", failureCondition="result[0] < 0.5"),
        metric("auth", provider={"web": {"url": "http://x/{{args.token}}"}}),
        metric("judged", judge=JUDGE),
        args=[{"name": "token", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
    )
    assert runs.metric_problems(spec, pod_hashes=HASHES) == {}


def test_template_problems_check_raw_specs() -> None:
    spec = {
        "metrics": [
            {"name": "ok", "successCondition": "result[0] > 1", "provider": {"web": {"url": "http://x"}}},
            {"name": "bad", "failureCondition": "result[0] <", "provider": {"web": {"url": "http://x"}}},
            {"name": "odd", "failureLimit": "lots"},
            {"name": "hot", "interval": "1ms", "provider": {"web": {"url": "http://x"}}},
            {"name": "later", "interval": "{{args.every}}", "provider": {"web": {"url": "http://x"}}},
        ]
    }
    problems = runs.template_problems(spec)
    assert len(problems) == 3
    assert problems[0].startswith("metric bad: failureCondition: condition 'result[0] <' does not parse")
    assert problems[1].startswith("metric odd: failureLimit")
    assert problems[2] == "metric hot: interval 1ms is below the minimum of 1s between measurements"


# --- running ---------------------------------------------------------------------------


def ok(value: float, at: datetime) -> Measurement:
    return Measurement(
        phase="Successful", value=f"[{value}]", started_at=runs.timestamp(at), finished_at=runs.timestamp(at)
    )


def measure(
    spec: AnalysisRunSpec, status: AnalysisRunStatus, name: str, value: Any, at: datetime
) -> AnalysisRunStatus:
    (the_metric,) = [m for m in spec.metrics if m.name == name]
    from tidegate.core.assessment import compile_conditions

    measurement = runs.measurement_of(
        the_metric,
        compile_conditions(the_metric),
        value=value,
        text=str(value),
        error=None,
        no_data=False,
        started_at=at,
        finished_at=at,
    )
    return runs.conclude(spec, runs.add_measurement(spec, status, the_metric, measurement))


RATE = metric(
    interval="1s", count=3, successCondition="result[0] >= 0.95", failureCondition="result[0] < 0.5"
)


def test_a_run_starts_running_and_measures_at_once() -> None:
    spec = run_spec(RATE)
    status = runs.conclude(spec, runs.start(spec, AnalysisRunStatus(), T0, {}))
    assert status.phase == "Running" and status.started_at == "2024-05-01T12:00:00.000Z"
    assert [r.name for r in status.metric_results] == ["success-rate"]
    assert "waiting for the first measurement" in (status.message or "")
    assert [m.name for m in runs.due_metrics(spec, status, T0)] == ["success-rate"]
    assert runs.next_due(spec, status, T0) == T0


def test_three_good_measurements_one_second_apart_succeed() -> None:
    spec = run_spec(RATE)
    status = runs.conclude(spec, runs.start(spec, AnalysisRunStatus(), T0, {}))
    moment = T0
    for index in range(3):
        assert runs.due_metrics(spec, status, moment), index
        status = measure(spec, status, "success-rate", [0.99], moment)
        if index < 2:
            later = moment + timedelta(milliseconds=500)
            assert runs.due_metrics(spec, status, later) == []
            assert runs.next_due(spec, status, later) == moment + timedelta(seconds=1)
        moment += timedelta(seconds=1)
    assert status.phase == "Successful"
    (result,) = status.metric_results
    assert (result.count, result.successful, len(result.measurements)) == (3, 3, 3)
    assert status.message == "all metrics successful: success-rate"
    assert runs.due_metrics(spec, status, moment) == [] and runs.next_due(spec, status, moment) is None


def test_a_failed_measurement_fails_the_run_naming_metric_and_value() -> None:
    spec = run_spec(RATE)
    status = runs.conclude(spec, runs.start(spec, AnalysisRunStatus(), T0, {}))
    status = measure(spec, status, "success-rate", [0.2], T0)
    assert status.phase == "Failed"
    assert "metric success-rate failed" in (status.message or "")
    assert "measured [0.2]" in (status.message or "")


def test_no_data_is_inconclusive_by_default() -> None:
    spec = run_spec(RATE)
    status = runs.conclude(spec, runs.start(spec, AnalysisRunStatus(), T0, {}))
    status = measure(spec, status, "success-rate", [], T0)
    assert status.phase == "Inconclusive"
    assert "no data (empty result)" in (status.message or "")


def test_a_problem_is_an_error_at_once_and_nothing_is_measured() -> None:
    bad = metric("bad", successCondition="result[0] >>= 1")
    spec = run_spec(RATE, bad)
    problems = runs.metric_problems(spec, pod_hashes={})
    status = runs.conclude(spec, runs.start(spec, AnalysisRunStatus(), T0, problems))
    assert status.phase == "Error"
    assert (status.message or "").startswith("metric bad: successCondition: condition 'result[0] >>= 1'")
    assert runs.due_metrics(spec, status, T0) == []


def test_a_dry_run_problem_does_not_end_the_run() -> None:
    bad = metric("bad", successCondition="result[0] >>= 1")
    spec = run_spec(RATE, bad, dryRun=[{"metricName": "bad"}])
    problems = runs.metric_problems(spec, pod_hashes={})
    status = runs.conclude(spec, runs.start(spec, AnalysisRunStatus(), T0, problems))
    assert status.phase == "Running"
    assert [m.name for m in runs.due_metrics(spec, status, T0)] == ["success-rate"]


def test_the_run_summary_counts_metrics_by_phase_and_the_dry_runs_apart() -> None:
    """Argo Rollouts' status.runSummary and status.dryRunSummary (assessRunStatus)."""
    from tidegate.api.analysis import RunSummary

    bad = metric("bad", successCondition="result[0] >>= 1")
    spec = run_spec(RATE, bad, dryRun=[{"metricName": "bad"}])
    problems = runs.metric_problems(spec, pod_hashes={})
    status = runs.conclude(spec, runs.start(spec, AnalysisRunStatus(), T0, problems))
    assert status.run_summary == RunSummary(count=1)
    assert status.dry_run_summary == RunSummary(count=1, error=1)
    status = measure(spec, status, "success-rate", [0.2], T0)
    assert status.run_summary == RunSummary(count=1, failed=1)
    plain = run_spec(RATE)
    alone = runs.conclude(plain, runs.start(plain, AnalysisRunStatus(), T0, {}))
    assert alone.dry_run_summary is None
    assert "dryRunSummary" not in alone.model_dump(by_alias=True, exclude_none=True)


def test_terminate_ends_with_the_verdict_it_has() -> None:
    spec = run_spec(metric(interval="1s", successCondition="result[0] > 0"))  # until stopped
    status = runs.conclude(spec, runs.start(spec, AnalysisRunStatus(), T0, {}))
    status = measure(spec, status, "success-rate", [1.0], T0)
    assert status.phase == "Running"
    ended = runs.conclude(spec, status, terminated=True)
    assert ended.phase == "Successful"
    assert (ended.message or "").startswith("terminated: ")
    assert runs.conclude(spec, ended) == ended  # finished: never changes again


def test_start_keeps_existing_results_and_a_finished_run() -> None:
    spec = run_spec(RATE)
    status = measure(
        spec, runs.conclude(spec, runs.start(spec, AnalysisRunStatus(), T0, {})), "success-rate", [0.99], T0
    )
    again = runs.start(spec, status, T0 + timedelta(seconds=5), {})
    assert again.metric_results == status.metric_results and again.started_at == status.started_at
    failed = status.model_copy(update={"phase": "Failed"})
    assert runs.start(spec, failed, T0, {"success-rate": "x"}) == failed


def test_retention_keeps_the_latest_measurements() -> None:
    spec = run_spec(
        metric(interval="1s", count=5), measurementRetention=[{"metricName": "success-rate", "limit": 2}]
    )
    status = runs.conclude(spec, runs.start(spec, AnalysisRunStatus(), T0, {}))
    for index in range(5):
        status = measure(spec, status, "success-rate", [float(index)], T0 + timedelta(seconds=index))
    (result,) = status.metric_results
    assert result.count == 5 and [m.value for m in result.measurements] == ["[3.0]", "[4.0]"]


def test_a_provider_error_is_an_error_measurement() -> None:
    spec = run_spec(RATE)
    the_metric = spec.metrics[0]
    measurement = runs.measurement_of(
        the_metric,
        (None, None),
        value=None,
        text="",
        error="prometheus down",
        no_data=False,
        started_at=T0,
        finished_at=T0,
    )
    assert measurement.phase == "Error" and measurement.message == "prometheus down"


# --- judged metrics ----------------------------------------------------------------------


def test_judged_measurement_records_the_verdict_facts() -> None:
    judged = metric("latency", judge=JUDGE, count=1)
    spec = run_spec(judged)
    status = runs.start(spec, AnalysisRunStatus(), T0, {})
    stable = [100.0 + (i % 7) for i in range(40)]
    canary = [160.0 + (i % 7) for i in range(40)]
    measurement = runs.judged_measurement(
        judged, status.metric_results[0], canary, stable, started_at=T0, finished_at=T0
    )
    assert measurement.phase == "Failed"
    assert measurement.metadata["canaryN"] == "40" and measurement.metadata["verdict"] == "Failed"
    same = runs.judged_measurement(
        judged, status.metric_results[0], stable, stable, started_at=T0, finished_at=T0
    )
    assert same.phase == "Successful"


def test_judged_metrics_are_scored_together() -> None:
    light = metric("light", judge={**JUDGE, "weight": 1.0}, count=1)
    heavy = metric("heavy", judge={**JUDGE, "weight": 9.0}, count=1)
    spec = run_spec(light, heavy, passScore=0.8)
    status = runs.conclude(spec, runs.start(spec, AnalysisRunStatus(), T0, {}))
    failed = Measurement(phase="Failed", value="x", message="canary worse", started_at="2024-05-01T12:00:00Z")
    passed = Measurement(phase="Successful", value="y", message="fine", started_at="2024-05-01T12:00:00Z")
    status = runs.conclude(spec, runs.add_measurement(spec, status, light, failed))
    assert status.phase == "Running"  # one judged metric failing alone decides nothing yet
    status = runs.conclude(spec, runs.add_measurement(spec, status, heavy, passed))
    assert status.phase == "Successful", status.message
    assert "judged metrics light, heavy: score 0.9" in (status.message or "")


def test_a_critical_judged_metric_fails_the_run_at_once() -> None:
    critical = metric("errors", judge={**JUDGE, "critical": True}, count=1)
    other = metric("latency", judge={**JUDGE, "weight": 9.0}, count=1)
    spec = run_spec(critical, other)
    status = runs.conclude(spec, runs.start(spec, AnalysisRunStatus(), T0, {}))
    failed = Measurement(phase="Failed", value="x", message="canary worse", started_at="2024-05-01T12:00:00Z")
    status = runs.conclude(spec, runs.add_measurement(spec, status, critical, failed))
    # The other judged metric is still running: the run does not wait for it.
    assert status.phase == "Failed" and "a critical metric failed" in (status.message or "")
    assert [r.phase for r in status.metric_results] == ["Failed", "Running"]


@pytest.mark.parametrize(
    ("weights", "phase"),
    [
        # One of two equal metrics failed: even if the other passes the score is 0.5 < 0.6.
        ((1.0, 1.0), "Failed"),
        # 1 of 10 failed: the other could still bring the score to 0.9; wait for it.
        ((1.0, 9.0), "Running"),
    ],
)
def test_a_score_that_can_no_longer_pass_fails_without_waiting(
    weights: tuple[float, float], phase: str
) -> None:
    first = metric("errors", judge={**JUDGE, "weight": weights[0]}, count=3, interval="1m")
    second = metric("latency", judge={**JUDGE, "weight": weights[1]}, count=3, interval="1m")
    spec = run_spec(first, second)
    status = runs.conclude(spec, runs.start(spec, AnalysisRunStatus(), T0, {}))
    failed = Measurement(phase="Failed", value="x", message="canary worse", started_at="2024-05-01T12:00:00Z")
    status = runs.conclude(spec, runs.add_measurement(spec, status, first, failed))
    assert status.phase == phase, status.message


def test_begin_and_finish_step_are_one_controller_step() -> None:
    judged = metric("errors", judge=JUDGE, count=2, interval="1m")
    spec = run_spec(judged)
    status, due = runs.begin_step(spec, AnalysisRunStatus(), T0, {})
    assert status.phase == "Running" and due == [judged]
    passed = Measurement(phase="Successful", value="y", started_at="2024-05-01T12:00:00Z")
    status = runs.finish_step(spec, status, [(judged, passed)])
    assert status.phase == "Running" and status.metric_results[0].count == 1
    assert runs.begin_step(spec, status, T0 + timedelta(seconds=30), {})[1] == []
    status = runs.finish_step(spec, status, [(judged, passed)])
    assert status.phase == "Successful"
    assert runs.begin_step(spec, status, T0 + timedelta(minutes=5), {}) == (status, [])


def ranged(window: str, step: str) -> Metric:
    provider = {
        "prometheus": {"address": "http://p", "query": "q", "range": {"window": window, "step": step}}
    }
    return metric("judged", judge=JUDGE, provider=provider)


@pytest.mark.parametrize(
    ("window", "step", "elapsed", "span"),
    [
        ("5m", "10s", 5, None),  # no whole step since the run began
        ("5m", "10s", 10, (10, 10)),
        ("5m", "10s", 65, (10, 65)),  # from the run's start: nothing from before the canary
        ("1m", "10s", 125, (70, 125)),  # now - window is later: on the same 10 s grid
        ("1m", "15s", 200, (150, 200)),
    ],
)
def test_judged_samples_start_at_the_run_start_on_a_fixed_grid(
    window: str, step: str, elapsed: int, span: tuple[int, int] | None
) -> None:
    got = runs.judged_window(ranged(window, step), T0, T0 + timedelta(seconds=elapsed))
    if span is None:
        assert got is None
    else:
        assert got == (T0 + timedelta(seconds=span[0]), T0 + timedelta(seconds=span[1]))


def test_judge_data_aligns_counts_and_histograms_by_time() -> None:
    counts = metric(
        "errors",
        judge={"method": "Counts", "query": 'e{h="{{hash}}"}', "totalQuery": 'r{h="{{hash}}"}'},
    )
    assert runs.judge_queries(counts, {"Latest": "c", "Stable": "s"}) == [
        'e{h="c"}',
        'e{h="s"}',
        'r{h="c"}',
        'r{h="s"}',
    ]
    answers = [
        [({"pod": "a"}, [(10.0, 1.0), (20.0, 2.0)]), ({"pod": "b"}, [(20.0, 1.0)])],  # canary events
        [({}, [(20.0, 5.0), (30.0, 6.0)])],  # stable events
        [({}, [(10.0, 100.0), (20.0, 100.0)])],  # canary requests
        [({}, [(10.0, 900.0), (20.0, 900.0), (30.0, 900.0)])],  # stable requests
    ]
    canary, stable = runs.judge_data(counts, answers)
    # t=10: stable had requests but no events (0); t=30: the canary had no requests (left out).
    assert canary == [(1.0, 100.0), (3.0, 100.0)] and stable == [(0.0, 900.0), (5.0, 900.0)]
    distribution = metric("latency", judge={"method": "Distribution", "query": 'b{h="{{hash}}"}'})
    buckets = [
        ({"le": "0.1"}, [(10.0, 3.0), (20.0, 4.0)]),
        ({"le": "+Inf"}, [(10.0, 5.0)]),  # t=20 has no +Inf bucket: left out
        ({"pod": "x"}, [(10.0, 9.0)]),  # no le: ignored
    ]
    canary_h, stable_h = runs.judge_data(distribution, [buckets, buckets])
    assert canary_h == stable_h == [{0.1: 3.0, float("inf"): 5.0}]


def test_a_sequential_judge_reports_its_evidence() -> None:
    counts = metric(
        "errors",
        judge={"method": "Counts", "query": 'e{h="{{hash}}"}', "totalQuery": 'r{h="{{hash}}"}'},
        count=2,
        interval="1m",
    )
    spec = run_spec(counts)
    status = runs.start(spec, AnalysisRunStatus(), T0, {})
    canary = [(30.0, 1000.0)] * 6
    stable = [(5.0, 1000.0)] * 6
    bad = runs.judged_measurement(
        counts, status.metric_results[0], canary, stable, started_at=T0, finished_at=T0
    )
    assert bad.phase == "Failed"
    assert {"eValue", "threshold", "effect", "canaryN", "stableN", "verdict"} <= set(bad.metadata)
    assert float(bad.metadata["eValue"]) >= 100 and float(bad.metadata["effect"]) == pytest.approx(5.0)
    same = runs.judged_measurement(
        counts, status.metric_results[0], stable, stable, started_at=T0, finished_at=T0
    )
    assert same.phase == "Successful" and "no evidence yet" in (same.message or "")


# --- merge patch, pruning, timestamps ------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        ({"phase": "Running"}, {"phase": "Running"}, {}),
        ({"phase": "Running"}, {"phase": "Failed", "message": "m"}, {"phase": "Failed", "message": "m"}),
        ({"phase": "Running", "message": "m"}, {"phase": "Running"}, {"message": None}),
        ({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}, {"a": {"c": 3}}),
        ({"l": [1, 2]}, {"l": [1, 2, 3]}, {"l": [1, 2, 3]}),
        ({}, {"a": {"b": 1}}, {"a": {"b": 1}}),
    ],
)
def test_merge_patch(old: dict[str, Any], new: dict[str, Any], patch: dict[str, Any]) -> None:
    assert runs.merge_patch(old, new) == patch


def run_doc(name: str, phase: str | None, created: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        **({"status": {"phase": phase}} if phase else {}),
    }


def test_prune_keeps_the_newest_per_outcome_and_never_a_running_run() -> None:
    docs = [run_doc(f"ok-{i}", "Successful", f"2024-05-01T12:0{i}:00Z") for i in range(5)]
    docs += [run_doc(f"bad-{i}", "Failed", f"2024-05-01T12:0{i}:00Z") for i in range(2)]
    docs += [run_doc(f"run-{i}", "Running", f"2024-05-01T11:0{i}:00Z") for i in range(5)]
    docs += [run_doc("new", None, "2024-05-01T10:00:00Z")]
    assert runs.prunable_runs(docs, 3) == ["ok-0", "ok-1"]
    assert runs.prunable_runs(docs, 1) == ["bad-0", "ok-0", "ok-1", "ok-2", "ok-3"]
    assert runs.prunable_runs(docs, 0) == sorted([f"ok-{i}" for i in range(5)] + ["bad-0", "bad-1"])
    with pytest.raises(ValueError):
        runs.prunable_runs(docs, -1)


def test_timestamp_is_utc_with_milliseconds() -> None:
    assert runs.timestamp(T0 + timedelta(microseconds=123456)) == "2024-05-01T12:00:00.123Z"


def test_a_metric_with_a_bad_count_is_an_error_not_a_crash() -> None:
    spec = run_spec(metric(count="many", interval="1s"))
    problems = runs.metric_problems(spec, pod_hashes={})
    status = runs.conclude(spec, runs.start(spec, AnalysisRunStatus(), T0, problems))
    assert status.phase == "Error" and "count must be a whole number" in (status.message or "")


def test_a_score_spelled_out_as_the_default_does_not_conflict() -> None:
    # The API server writes the CRD's default into every template it stores.
    merged = runs.merge_templates(
        [
            TemplateSource("a", template(metric("m1"), passScore=0.9)),
            TemplateSource("b", template(metric("m2"), passScore=0.95)),
        ]
    )
    assert merged.pass_score == 0.95


def test_a_counts_judge_total_query_takes_arguments_and_needs_the_hash() -> None:
    judged = metric(
        "errors",
        judge={
            "method": "Counts",
            "query": 'e{h="{{hash}}",ns="{{args.namespace}}"}',
            "totalQuery": 'r{ns="{{args.total-ns}}"}',
        },
    )
    assert runs.used_args(judged) == ["namespace", "total-ns"]
    spec = run_spec(judged, args=[{"name": "namespace", "value": "a"}, {"name": "total-ns", "value": "b"}])
    problems = runs.metric_problems(spec, pod_hashes={"Stable": "s", "Latest": "c"})
    assert "totalQuery must contain {{hash}}" in problems["errors"]


def test_counts_and_limits_from_arguments_are_resolved_when_the_run_is_made() -> None:
    """Argo Rollouts' int-or-string fields: `count: "{{args.looks}}"` and the limits are
    resolved per run from the run's arguments."""
    from tidegate.api.analysis import Argument, Metric

    metric = Metric.model_validate(
        {
            "name": "m",
            "interval": "{{args.every}}",
            "count": "{{args.looks}}",
            "failureLimit": "{{args.failures}}",
            "consecutiveSuccessLimit": "{{args.streak}}",
            "inconclusiveLimit": 2,
            "provider": {"web": {"url": "http://x"}},
        }
    )
    args = [
        Argument(name="every", value="30s"),
        Argument(name="looks", value="5"),
        Argument(name="failures", value="1"),
        Argument(name="streak", value="3"),
    ]
    resolved = runs.resolve_numbers(metric, args)
    assert resolved.consecutive_success_limit == 3
    assert (resolved.interval, resolved.count, resolved.failure_limit, resolved.inconclusive_limit) == (
        "30s",
        5,
        1,
        2,
    )
    with pytest.raises(runs.AnalysisSpecError, match="count"):
        runs.resolve_numbers(metric, args[:1])


# --- nested templates: Argo's getAnalysisTemplatesFromRefs + FilterUniqueTemplates ---------


def _source(
    name: str, *metric_names: str, nested: tuple[str, ...] = (), cluster: bool = False, **fields: Any
) -> TemplateSource:
    spec = AnalysisTemplateSpec.model_validate(
        {
            "metrics": [metric(n).model_dump(by_alias=True, exclude_none=True) for n in metric_names],
            "templates": [
                {"templateName": n.removeprefix("cluster:"), "clusterScope": n.startswith("cluster:")}
                for n in nested
            ],
            **fields,
        }
    )
    return TemplateSource(name=name, spec=spec, cluster_scope=cluster)


def _refs(*names: str) -> list[AnalysisTemplateRef]:
    return [
        AnalysisTemplateRef(template_name=n.removeprefix("cluster:"), cluster_scope=n.startswith("cluster:"))
        for n in names
    ]


def _found(*sources: TemplateSource) -> dict[tuple[bool, str], TemplateSource]:
    return {(s.cluster_scope, s.name): s for s in sources}


@pytest.mark.parametrize(
    ("sources", "refs", "order"),
    [
        # One level: the template, then the ones it names.
        (
            [_source("all", "a", nested=("b", "c")), _source("b", "b"), _source("c", "c")],
            ["all"],
            ["all", "b", "c"],
        ),
        # A template with only templates.
        ([_source("wrap", nested=("b",)), _source("b", "b")], ["wrap"], ["wrap", "b"]),
        # Two levels, depth first.
        (
            [
                _source("top", nested=("mid", "c")),
                _source("mid", "m", nested=("b",)),
                _source("b", "b"),
                _source("c", "c"),
            ],
            ["top"],
            ["top", "mid", "b", "c"],
        ),
        # A diamond: the shared template once (FilterUniqueTemplates).
        (
            [
                _source("x", nested=("l", "r")),
                _source("l", "l", nested=("base",)),
                _source("r", "r", nested=("base",)),
                _source("base", "base"),
            ],
            ["x"],
            ["x", "l", "base", "r"],
        ),
        # A ClusterAnalysisTemplate named from an AnalysisTemplate, and one of the same name.
        (
            [_source("t", "t", nested=("cluster:t",)), _source("t", "ct", cluster=True)],
            ["t"],
            ["AnalysisTemplate t", "ClusterAnalysisTemplate t"],
        ),
    ],
)
def test_nested_templates_are_flattened_depth_first_each_once(
    sources: list[TemplateSource], refs: list[str], order: list[str]
) -> None:
    flat = runs.flatten_templates(_refs(*refs), _found(*sources))
    names = [s.describe() if " " in order[0] else s.name for s in flat]
    assert names == order


def test_nested_templates_merge_metrics_args_dry_run_and_retention() -> None:
    outer = _source(
        "outer",
        "a",
        nested=("inner",),
        args=[{"name": "svc"}],
        dryRun=[{"metricName": "a"}],
        measurementRetention=[{"metricName": "a", "limit": 3}],
    )
    inner = _source(
        "inner",
        "b",
        args=[{"name": "svc", "value": "web"}, {"name": "ns", "value": "shop"}],
        dryRun=[{"metricName": "b"}],
        measurementRetention=[{"metricName": "b", "limit": 5}],
    )
    merged = runs.merge_templates(runs.flatten_templates(_refs("outer"), _found(outer, inner)))
    assert [m.name for m in merged.metrics] == ["a", "b"]
    assert {a.name: a.value for a in merged.args} == {"svc": "web", "ns": "shop"}
    assert [d.metric_name for d in merged.dry_run] == ["a", "b"]
    assert [(r.metric_name, r.limit) for r in merged.measurement_retention] == [("a", 3), ("b", 5)]


@pytest.mark.parametrize(
    ("sources", "refs", "message"),
    [
        (
            [_source("a", "x", nested=("a",))],
            ["a"],
            "nested templates form a loop: AnalysisTemplate a -> AnalysisTemplate a",
        ),
        (
            [
                _source("a", "x", nested=("b",)),
                _source("b", "y", nested=("cluster:c",)),
                _source("c", "z", nested=("a",), cluster=True),
            ],
            ["a"],
            "loop: AnalysisTemplate a -> AnalysisTemplate b -> ClusterAnalysisTemplate c"
            " -> AnalysisTemplate a",
        ),
        ([_source("a", "x", nested=("gone",))], ["a"], "AnalysisTemplate gone not found"),
    ],
)
def test_a_nested_loop_or_a_missing_template_is_a_spec_error(
    sources: list[TemplateSource], refs: list[str], message: str
) -> None:
    with pytest.raises(runs.AnalysisSpecError, match=message):
        runs.flatten_templates(_refs(*refs), _found(*sources))


def test_a_metric_in_two_nested_templates_is_a_spec_error_and_none_at_all_too() -> None:
    with pytest.raises(runs.AnalysisSpecError, match="metric 'a' is defined by both"):
        runs.merge_templates(
            runs.flatten_templates(_refs("o"), _found(_source("o", "a", nested=("i",)), _source("i", "a")))
        )
    with pytest.raises(runs.AnalysisSpecError, match="the templates define no metric"):
        runs.merge_templates(
            runs.flatten_templates(_refs("o"), _found(_source("o", nested=("i",)), _source("i")))
        )

"""The CRDs' own CEL rules, evaluated by core.schema_rules: `tidegate lint` and the planner.

One row per x-kubernetes-validations rule of the generated CRDs: a document that breaks it
and one that does not. A new rule fails `test_every_crd_rule_has_a_row` until it has one.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tidegate.api.rollout import Rollout
from tidegate.cli.lint import Document, Linter
from tidegate.core.schema_rules import check_rules, crd_schema
from tidegate.core.validation import spec_problems

Doc = dict[str, Any]
CANARY = "spec.strategy.canary"
SERVICES = {"stableService": "web-stable", "canaryService": "web-canary"}
ISTIO = {"istio": {"virtualService": {"name": "web"}}}


def rollout(strategy: Doc | None = None, **spec: Any) -> Doc:
    return {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "example/web:1"}]},
            },
            "strategy": strategy if strategy is not None else {"canary": {"steps": [{"setWeight": 10}]}},
            **spec,
        },
    }


def canary(**fields: Any) -> Doc:
    return rollout({"canary": fields})


def step(action: Doc) -> Doc:
    return canary(steps=[action])


def header_route(value: Doc) -> Doc:
    match = [{"headerName": "x-canary", "headerValue": value}]
    return canary(
        **SERVICES,
        trafficRouting={"managedRoutes": [{"name": "hdr"}], **ISTIO},
        steps=[{"setHeaderRoute": {"name": "hdr", "match": match}}],
    )


def mirror(match: Doc) -> Doc:
    return canary(
        **SERVICES,
        trafficRouting={"managedRoutes": [{"name": "mirror"}], **ISTIO},
        steps=[{"setMirrorRoute": {"name": "mirror", "match": [match], "percentage": 50}}],
    )


def template(kind: str, **metric: Any) -> Doc:
    fields = {"provider": {"prometheus": {"address": "http://prometheus:9090", "query": "up"}}, **metric}
    return {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "t"},
        "spec": {"metrics": [{"name": "m", **fields}]},
    }


def prometheus(kind: str, **fields: Any) -> Doc:
    return template(kind, provider={"prometheus": {"address": "http://p:9090", "query": "up", **fields}})


# (message of the rule in the CRD, path lint reports, violating document, valid document)
Row = tuple[str, str, Doc, Doc]


def workload_ref(**ref: Any) -> Doc:
    doc = rollout(workloadRef={"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", **ref})
    del doc["spec"]["template"]
    return doc


def without_selector(doc: Doc) -> Doc:
    del doc["spec"]["selector"]
    return doc


ROLLOUT_ROWS: list[Row] = [
    (
        "selector is required (it may be omitted with workloadRef)",
        "spec.selector",
        without_selector(rollout()),
        without_selector(workload_ref()),
    ),
    (
        "exactly one of template and workloadRef is set",
        "spec",
        rollout(workloadRef={"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}),
        workload_ref(scaleDown="onsuccess"),
    ),
    (
        "give exactly one of virtualService, virtualServices",
        f"{CANARY}.trafficRouting.istio",
        canary(
            **SERVICES,
            trafficRouting={
                "istio": {"virtualService": {"name": "web"}, "virtualServices": [{"name": "web"}]}
            },
        ),
        canary(
            **SERVICES, trafficRouting={"istio": {"virtualServices": [{"name": "web"}, {"name": "edge"}]}}
        ),
    ),
    (
        "virtualServices needs at least one VirtualService",
        f"{CANARY}.trafficRouting.istio.virtualServices",
        canary(**SERVICES, trafficRouting={"istio": {"virtualServices": []}}),
        canary(**SERVICES, trafficRouting={"istio": {"virtualServices": [{"name": "web"}]}}),
    ),
    (
        "setWeight and setCanaryScale.weight must be at most trafficRouting.maxTrafficWeight "
        "(100 when it is unset)",
        f"{CANARY}.steps",
        canary(**SERVICES, trafficRouting=ISTIO, steps=[{"setWeight": 250}]),
        canary(
            **SERVICES,
            trafficRouting={**ISTIO, "maxTrafficWeight": 1000},
            steps=[{"setWeight": 250}, {"setCanaryScale": {"weight": 1000}}],
        ),
    ),
    *[
        (
            f"give exactly one of exact, prefix, regex for the mirror route's {what}",
            f"{CANARY}.steps[0].setMirrorRoute.match[0].{path}",
            mirror({where: {"exact": "GET", "prefix": "G"}}),
            mirror({where: {"exact": "GET"}}),
        )
        for what, where, path in (("method", "method", "method"), ("path", "path", "path"))
    ],
    (
        "give exactly one of exact, prefix, regex for the mirror route's header",
        f"{CANARY}.steps[0].setMirrorRoute.match[0].headers[x-mirror]",
        mirror({"headers": {"x-mirror": {"exact": "1", "regex": "1"}}}),
        mirror({"headers": {"x-mirror": {"regex": "1|2"}}}),
    ),
    (
        "restartAt must be an RFC 3339 time such as 2026-01-31T12:00:00Z",
        "spec.restartAt",
        rollout(restartAt="2024-13-45Tgarbage"),
        rollout(restartAt="2026-01-01T12:00:00Z"),
    ),
    (
        "metadata.name must be at most 52 characters (its ReplicaSets are <name>-<pod-template hash>, "
        "a label value of at most 63)",
        "metadata.name",
        {**rollout(), "metadata": {"name": "w" * 53}},
        {**rollout(), "metadata": {"name": "w" * 52}},
    ),
    (
        "strategy takes exactly one of canary or blueGreen",
        "spec.strategy",
        rollout({"canary": {}, "blueGreen": {"activeService": "web"}}),
        rollout({"blueGreen": {"activeService": "web"}}),
    ),
    (
        "a host-level Istio split needs both stableService and canaryService",
        f"{CANARY}.trafficRouting",
        canary(stableService="web-stable", trafficRouting=ISTIO),
        canary(**SERVICES, trafficRouting=ISTIO),
    ),
    (
        "the Gateway API router needs both stableService and canaryService",
        f"{CANARY}.trafficRouting",
        canary(canaryService="web-canary", trafficRouting={"gatewayAPI": {"httpRoute": "web"}}),
        canary(**SERVICES, trafficRouting={"gatewayAPI": {"httpRoute": "web"}}),
    ),
    (
        "stableService and canaryService must be different Services",
        f"{CANARY}.canaryService",
        canary(stableService="web", canaryService="web"),
        canary(**SERVICES),
    ),
    (
        "a step has exactly one of setWeight, pause, setCanaryScale, setHeaderRoute, "
        "setMirrorRoute, analysis",
        f"{CANARY}.steps[0]",
        step({"setWeight": 10, "pause": {}}),
        step({"pause": {}}),
    ),
    (
        "duration must be a duration such as 30s, 10m, 1h, or a whole number of seconds",
        f"{CANARY}.steps[0].pause.duration",
        step({"pause": {"duration": "10 minutes"}}),
        step({"pause": {"duration": "1h30m"}}),
    ),
    (
        "duration must be at most a year (8760h, 31536000 seconds)",
        f"{CANARY}.steps[0].pause.duration",
        step({"pause": {"duration": "99999999999999999999h"}}),
        step({"pause": {"duration": "8760h"}}),
    ),
    (
        "setCanaryScale takes exactly one of replicas, weight, matchTrafficWeight: true",
        f"{CANARY}.steps[0].setCanaryScale",
        step({"setCanaryScale": {"replicas": 1, "matchTrafficWeight": True}}),
        step({"setCanaryScale": {"replicas": 1, "matchTrafficWeight": False}}),
    ),
    (
        "give exactly one of exact, prefix, regex",
        f"{CANARY}.steps[0].setHeaderRoute.match[0].headerValue",
        header_route({"exact": "yes", "regex": "^y"}),
        header_route({"regex": "^y"}),
    ),
    (
        "a match is headerName with headerValue, or queryParamName with queryParamValue",
        f"{CANARY}.steps[0].setHeaderRoute.match[0]",
        canary(
            **SERVICES,
            trafficRouting={"managedRoutes": [{"name": "hdr"}], "gatewayAPI": {"httpRoute": "web"}},
            steps=[
                {
                    "setHeaderRoute": {
                        "name": "hdr",
                        "match": [{"headerName": "x", "queryParamValue": {"exact": "1"}}],
                    }
                }
            ],
        ),
        canary(
            **SERVICES,
            trafficRouting={"managedRoutes": [{"name": "hdr"}], "gatewayAPI": {"httpRoute": "web"}},
            steps=[
                {
                    "setHeaderRoute": {
                        "name": "hdr",
                        "match": [{"queryParamName": "x", "queryParamValue": {"exact": "1"}}],
                    }
                }
            ],
        ),
    ),
    (
        "give exactly one of exact, prefix, regex for the query parameter",
        f"{CANARY}.steps[0].setHeaderRoute.match[0].queryParamValue",
        canary(
            **SERVICES,
            trafficRouting={"managedRoutes": [{"name": "hdr"}], "gatewayAPI": {"httpRoute": "web"}},
            steps=[
                {"setHeaderRoute": {"name": "hdr", "match": [{"queryParamName": "x", "queryParamValue": {}}]}}
            ],
        ),
        canary(
            **SERVICES,
            trafficRouting={"managedRoutes": [{"name": "hdr"}], "gatewayAPI": {"httpRoute": "web"}},
            steps=[
                {
                    "setHeaderRoute": {
                        "name": "hdr",
                        "match": [{"queryParamName": "x", "queryParamValue": {"regex": "1"}}],
                    }
                }
            ],
        ),
    ),
    (
        "previewService must differ from activeService",
        "spec.strategy.blueGreen.previewService",
        rollout({"blueGreen": {"activeService": "web", "previewService": "web"}}),
        rollout({"blueGreen": {"activeService": "web", "previewService": "web-preview"}}),
    ),
]


def template_rows(kind: str) -> list[Row]:
    at = "spec.metrics[0]"
    duration = "must be a duration such as 30s, 10m, 1h, or a whole number of seconds"
    arg_duration = "must be a duration such as 30s, 10m, 1h, a whole number of seconds or {{args.NAME}}"
    return [
        (
            f"interval {arg_duration}",
            f"{at}.interval",
            template(kind, interval="5 min", count=3),
            template(kind, interval="{{args.every}}", count=3),
        ),
        (
            f"initialDelay {arg_duration}",
            f"{at}.initialDelay",
            template(kind, initialDelay="1m 30s"),
            template(kind, initialDelay="1m30s"),
        ),
        (
            "a template needs metrics or templates",
            "spec.metrics",
            {**template(kind), "spec": {"args": [{"name": "x"}]}},
            {**template(kind), "spec": {"templates": [{"templateName": "success-rate"}]}},
        ),
        (
            f"rangeQuery.step {duration}",
            f"{at}.provider.prometheus.rangeQuery.step",
            prometheus(kind, rangeQuery={"start": "now() - duration('5m')", "step": "a minute"}),
            prometheus(kind, rangeQuery={"start": "now() - duration('5m')", "step": "1m"}),
        ),
        (
            "give body or jsonBody, not both",
            f"{at}.provider.web.jsonBody",
            template(kind, provider={"web": {"url": "http://x", "body": "{}", "jsonBody": {}}}),
            template(kind, provider={"web": {"url": "http://x", "method": "POST", "jsonBody": {"a": 1}}}),
        ),
        (
            "a metric needs a provider",
            f"{at}.provider",
            {**template(kind), "spec": {"metrics": [{"name": "m"}]}},
            template(kind),
        ),
        (
            "a provider takes exactly one of prometheus, web, job",
            f"{at}.provider",
            template(kind, provider={}),
            template(kind, provider={"web": {"url": "http://checks/ok"}}),
        ),
        (
            "interval must be at most a year (8760h, 31536000 seconds)",
            f"{at}.interval",
            template(kind, interval="8761h", count=3),
            template(kind, interval="525600m", count=3),
        ),
        (
            "initialDelay must be at most a year (8760h, 31536000 seconds)",
            f"{at}.initialDelay",
            template(kind, initialDelay=31536001),
            template(kind, initialDelay=31536000),
        ),
        (
            "rangeQuery.step must be at most a year (8760h, 31536000 seconds)",
            f"{at}.provider.prometheus.rangeQuery.step",
            prometheus(kind, rangeQuery={"start": "now() - duration('5m')", "step": "31536001"}),
            prometheus(kind, rangeQuery={"start": "now() - duration('5m')", "step": "31536000"}),
        ),
        ("timeout must be at most a year (8760h, 31536000 seconds)", f"{at}.provider.prometheus.timeout",
         prometheus(kind, timeout="9999999999999s"), prometheus(kind, timeout="30s")),
        ("window must be at most a year (8760h, 31536000 seconds)", f"{at}.provider.prometheus.range.window",
         prometheus(kind, range={"window": "600000m"}), prometheus(kind, range={"window": "24h"})),
        ("step must be at most a year (8760h, 31536000 seconds)", f"{at}.provider.prometheus.range.step",
         prometheus(kind, range={"step": "8760h1s"}), prometheus(kind, range={"step": "15s"})),
        (f"timeout {duration}", f"{at}.provider.prometheus.timeout", prometheus(kind, timeout="-1s"),
         prometheus(kind, timeout="500ms")),
        (f"window {duration}", f"{at}.provider.prometheus.range.window",
         prometheus(kind, range={"window": "1d"}), prometheus(kind, range={"window": "24h"})),
        (f"step {duration}", f"{at}.provider.prometheus.range.step",
         prometheus(kind, range={"step": "15 s"}), prometheus(kind, range={"step": "15s"})),
        ("method Counts needs totalQuery (the requests each event count is out of)", f"{at}.judge.totalQuery",
         template(kind, judge={"method": "Counts", "query": "e{h='{{hash}}'}"}),
         template(kind, judge={"method": "Counts", "query": "e", "totalQuery": "r{h='{{hash}}'}"})),
        ("quantiles apply to method Distribution only", f"{at}.judge.quantiles",
         template(kind, judge={"quantiles": [0.5]}),
         template(kind, judge={"method": "Distribution", "quantiles": [0.5, 0.99]})),
    ]  # fmt: skip


ROWS: dict[str, list[Row]] = {
    "Rollout": ROLLOUT_ROWS,
    "AnalysisTemplate": template_rows("AnalysisTemplate"),
    "ClusterAnalysisTemplate": template_rows("ClusterAnalysisTemplate"),
}
CASES = [pytest.param(kind, *row, id=f"{kind}: {row[0]}") for kind, rows in ROWS.items() for row in rows]


def crd_messages(node: Any) -> list[str]:
    """The message of every rule in a CRD schema."""
    if isinstance(node, dict):
        own = [r["message"] for r in node.get("x-kubernetes-validations", [])]
        return own + [m for value in node.values() for m in crd_messages(value)]
    if isinstance(node, list):
        return [m for value in node for m in crd_messages(value)]
    return []


def lint(doc: Doc) -> list[tuple[str, str, str]]:
    report = Linter().lint_documents([Document("test.yaml", 1, copy.deepcopy(doc))])
    return [(m.severity, m.path, m.text) for m in report.messages]


@pytest.mark.parametrize("kind", list(ROWS))
def test_every_crd_rule_has_a_row(kind: str) -> None:
    messages = crd_messages(crd_schema(kind))
    assert len(messages) == len(set(messages)), "rule messages are unique, so a row names its rule"
    assert sorted(messages) == sorted(row[0] for row in ROWS[kind])


@pytest.mark.parametrize(("kind", "message", "path", "bad", "good"), CASES)
def test_lint_reports_the_crd_rule_with_its_message_and_path(
    kind: str, message: str, path: str, bad: Doc, good: Doc
) -> None:
    assert ("error", path, message) in lint(bad)
    assert [m for m in lint(good) if m[0] == "error"] == []


@pytest.mark.parametrize(
    ("kind", "message", "path", "bad", "good"), [c for c in CASES if c.values[0] == "Rollout"]
)
def test_the_planner_refuses_what_the_crd_refuses(
    kind: str, message: str, path: str, bad: Doc, good: Doc
) -> None:
    # The planner sees the model (as read back from the API server), not the raw document.
    assert f"{path}: {message}" in spec_problems(Rollout.model_validate(bad))
    assert spec_problems(Rollout.model_validate(good)) == []


# --------------------------------------------------------------------------- the evaluator


def schema(rules: list[Doc], **properties: Doc) -> Doc:
    return {
        "type": "object",
        "properties": {
            "spec": {"type": "object", "properties": properties, "x-kubernetes-validations": rules}
        },
    }


def violations(s: Doc, obj: Doc) -> list[str]:
    return [str(v) for v in check_rules(s, obj).violations]


STRING, INT = {"type": "string"}, {"type": "integer"}


def test_message_expression_is_used_and_a_rule_without_message_names_itself() -> None:
    s = schema(
        [
            {"rule": "self.a < 3", "messageExpression": "'a is ' + string(self.a) + ', above 2'"},
            {"rule": "self.a < 2"},
            {"rule": "self.a < 1", "message": "fallback", "messageExpression": "self.nope"},
        ],
        a=INT,
    )
    assert violations(s, {"spec": {"a": 5}}) == [
        "spec: a is 5, above 2",
        "spec: failed rule: self.a < 2",
        "spec: fallback",
    ]


def test_a_rule_that_errors_is_reported_as_the_api_server_words_it() -> None:
    s = schema([{"rule": "self.a == 'x'", "message": "m"}], a=STRING)
    assert violations(s, {"spec": {}}) == ["spec: no such key: a evaluating rule: self.a == 'x'"]


def test_defaults_are_applied_and_nulls_dropped_before_the_rules() -> None:
    s = schema(
        [{"rule": "self.a == 'd' && !has(self.b)", "message": "m"}],
        a={"type": "string", "default": "d"},
        b=STRING,
    )
    assert violations(s, {"spec": {"b": None}}) == []
    assert violations(s, {"spec": {"a": "e"}}) == ["spec: m"]


def test_rules_above_a_wrong_type_are_not_run() -> None:
    s = schema([{"rule": "self.a == 'x'", "message": "m"}], a=STRING)
    assert violations(s, {"spec": {"a": 5}}) == []  # the schema error is reported instead


def test_transition_rules_and_unknown_functions_are_unchecked_not_passed() -> None:
    s = schema(
        [
            {"rule": "self.a == oldSelf.a", "message": "immutable"},
            {"rule": "self.a.lowerAscii() == self.a", "message": "lower case"},
        ],
        a=STRING,
    )
    found = check_rules(s, {"spec": {"a": "X"}})
    assert found.violations == []
    assert [(u.path, u.rule, u.why.split(":")[0]) for u in found.unchecked] == [
        (("spec",), "self.a == oldSelf.a", "a transition rule (oldSelf)"),
        (("spec",), "self.a.lowerAscii() == self.a", "cel-python has no lowerAscii()"),
    ]


def test_rule_programs_are_compiled_once() -> None:
    from tidegate.core import schema_rules

    check_rules(crd_schema("Rollout"), canary(**SERVICES))
    before = schema_rules._compile.cache_info().misses
    check_rules(crd_schema("Rollout"), canary(**SERVICES))
    assert schema_rules._compile.cache_info().misses == before


def test_negative_durations_the_crd_allows_are_still_refused() -> None:
    doc = step({"pause": {"duration": -5}})
    assert lint(doc) == [
        ("error", f"{CANARY}.steps[0].pause.duration", "a duration cannot be negative: -5"),
    ]
    bad_template = template("AnalysisTemplate", interval=-5, count=1)
    assert ("error", "spec.metrics[0].interval", "a duration cannot be negative: -5") in lint(bad_template)


# --------------------------------------------------------------------------- bounds, by value

RESTART_AT = "restartAt must be an RFC 3339 time such as 2026-01-31T12:00:00Z"


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        ("2026-01-31T12:00:00Z", False),
        ("2026-01-31T12:00:00.123456Z", False),
        ("2026-01-31T12:00:00+02:00", False),
        ("2999-01-01T00:00:00Z", False),  # the future is waited for, not refused
        ("2024-13-45Tgarbage", True),
        ("2024-12-45T00:00:00Z", True),
        ("2024-02-30T00:00:00Z", True),  # the form holds, the calendar does not: timestamp()
        ("2026-01-31T12:00:00", True),  # no offset: ambiguous
        ("2026-01-31 12:00:00Z", True),
        ("2026-01-31T24:00:00Z", True),
        ("tomorrow at noon", True),
    ],
)
def test_restart_at_must_be_an_rfc3339_time(value: str, refused: bool) -> None:
    errors = [m for m in lint(rollout(restartAt=value)) if m[0] == "error"]
    if value.startswith("2024-02-30"):
        # The form holds, so timestamp() runs and fails: the API server (and lint) report the
        # rule's evaluation error at its node, quoting the rule (which names restartAt); lint
        # adds the operator's own check at the field.
        assert [(m[1], "evaluating rule" in m[2] and "restartAt" in m[2]) for m in errors] == [
            ("spec", True),
            ("spec.restartAt", False),
        ]
    else:
        assert (("error", "spec.restartAt", RESTART_AT) in errors) is refused
        assert len(errors) == refused
    problems = spec_problems(Rollout.model_validate(rollout(restartAt=value)))
    assert any("restartAt" in p for p in problems) is refused


PAUSE_BOUND = "duration must be at most a year (8760h, 31536000 seconds)"


@pytest.mark.parametrize(
    ("value", "refused"),
    [
        (31536000, False),
        (31536001, True),
        ("31536000", False),
        ("31536001", True),
        ("99999999999999999999", True),  # more digits than int() takes: refused before it
        ("8760h", False),
        ("8760h1s", True),
        ("525600m", False),
        ("525601m", True),
        ("1h30m", False),
        ("1.5h", False),
        ("500ms", False),
        ("99999h", True),
        ("99999999999999999999h", True),  # would overflow Go's time.Duration: refused before it
        ("9999999999999ms", True),
        ("1000000000s", True),
    ],
)
def test_a_duration_is_at_most_a_year(value: int | str, refused: bool) -> None:
    doc = step({"pause": {"duration": value}})
    assert (("error", f"{CANARY}.steps[0].pause.duration", PAUSE_BOUND) in lint(doc)) is refused
    problems = spec_problems(Rollout.model_validate(doc))
    assert (f"{CANARY}.steps[0].pause.duration: {PAUSE_BOUND}" in problems) is refused


INT32_MAX = 2**31 - 1


@pytest.mark.parametrize(
    "field",
    [
        ("spec", "replicas"),
        ("spec", "minReadySeconds"),
        ("spec", "revisionHistoryLimit"),
        ("spec", "progressDeadlineSeconds"),
        (CANARY, "scaleDownDelaySeconds"),
        (CANARY, "abortScaleDownDelaySeconds"),
        (CANARY, "minPodsPerReplicaSet"),
        (CANARY, "scaleDownDelayRevisionLimit"),
    ],
    ids=lambda f: f[1],
)
def test_counts_and_seconds_are_int32_as_in_argo_rollouts(field: tuple[str, str]) -> None:
    where, name = field

    def doc(value: int) -> Doc:
        d = canary(**SERVICES, trafficRouting=ISTIO, steps=[{"setWeight": 10}])
        target = d["spec"] if where == "spec" else d["spec"]["strategy"]["canary"]
        target[name] = value
        return d

    path = f"{where}.{name}"
    assert [m for m in lint(doc(INT32_MAX)) if m[1] == path] == []
    assert [m[0] for m in lint(doc(INT32_MAX + 1)) if m[1] == path] == ["error"]
    assert [m[0] for m in lint(doc(10**12)) if m[1] == path] == ["error"]
    # The CRD says so too, as Argo's CRDs do: format int32 and the int32 bounds.
    node = crd_schema("Rollout")["properties"]["spec"]
    if where != "spec":
        node = node["properties"]["strategy"]["properties"]["canary"]
    prop = node["properties"][name]
    assert (prop["type"], prop["format"], prop["maximum"]) == ("integer", "int32", INT32_MAX)

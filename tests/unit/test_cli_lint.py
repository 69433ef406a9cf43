"""`tidegate lint`: every message of the fixtures under tests/fixtures/lint/, and the exit codes."""

# Tables of whole messages read better unsplit.
# ruff: noqa: E501

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from tidegate.api.analysis import AnalysisTemplateSpec
from tidegate.cli.lint import Linter, Lookup, load_documents
from tidegate.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path("tests/fixtures/lint")


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # messages name files as given on the command line


def lint(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["lint", *args], env=env)


def messages(result: Result) -> list[tuple[str, str, int, str, str, str]]:
    """(severity, file, document, kind/name, path, text) per message, from `-o json`.

    "Not supported yet" refusals of analysis by the operator are left out: they go away
    when the operator supports analysis, and the other checks must not depend on it.
    """
    report = json.loads(result.stdout)
    return [
        (m["severity"], Path(m["file"]).name, m["document"], f"{m['kind']}/{m['name']}", m["path"], m["text"])
        for m in report["messages"]
        if "not supported yet" not in m["text"]
    ]


def test_good_file_has_no_messages() -> None:
    result = lint(str(FIXTURES / "good.yaml"))
    assert result.exit_code == 0, result.output
    assert result.stdout == "1 file, 3 objects checked, 1 skipped: no problems\n"


def test_examples_are_clean() -> None:
    # Each example is applied on its own (two reuse the seed's name api-gateway).
    for example in sorted(Path("examples").glob("*/")):
        result = lint(str(example))
        assert result.exit_code == 0, result.output
        assert "no problems" in result.stdout, result.stdout


def test_warnings_do_not_fail() -> None:
    result = lint(str(FIXTURES / "warnings.yaml"), "-o", "json")
    assert result.exit_code == 0, result.output
    f = "warnings.yaml"
    assert messages(result) == [
        ("warning", f, 1, "Frobnicator/thing", "kind", "unknown kind 'Frobnicator': not checked"),
        (
            "warning", f, 2, "Rollout/api", "spec.strategy.canary.maxSurg",
            "unknown field (did you mean 'maxSurge'?): the API server drops or rejects it",
        ),
        ("warning", f, 3, "AnalysisTemplate/latency", "spec.dryRun[0].metricName", "no metric is named 'p99'"),
        (
            "warning", f, 3, "AnalysisTemplate/latency", "spec.metrics[0].provider.prometheus.query",
            "{{args.job}} is used but spec.args declares no 'job' (declared: none)",
        ),
    ]  # fmt: skip
    summary = json.loads(result.stdout)["summary"]
    assert (summary["errors"], summary["warnings"], summary["objects"]) == (0, 4, 3)


def test_bad_rollouts() -> None:
    result = lint(str(FIXTURES / "bad-rollout.yaml"), "-o", "json")
    assert result.exit_code == 1
    f = "bad-rollout.yaml"
    canary = "spec.strategy.canary"
    assert messages(result) == [
        (
            "error", f, 1, "Rollout/web", "spec.selector.matchLabels.app",
            "'web' does not match the template's labels (spec.template.metadata.labels.app is 'webapp')",
        ),
        (
            "error", f, 1, "Rollout/web", f"{canary}.canaryService",
            "stableService and canaryService must be different Services",
        ),
        (
            "error", f, 1, "Rollout/web", f"{canary}.steps",
            "setWeight and setCanaryScale.weight must be at most trafficRouting.maxTrafficWeight (100 when it is unset)",
        ),
        (
            "error", f, 1, "Rollout/web", f"{canary}.steps[1]",
            "a step has exactly one of setWeight, pause, setCanaryScale, setHeaderRoute, setMirrorRoute, analysis",
        ),
        (
            "error", f, 1, "Rollout/web", f"{canary}.steps[2].setHeaderRoute.name",
            "'hdr' is not listed in trafficRouting.managedRoutes",
        ),
        (
            "error", f, 1, "Rollout/web", f"{canary}.steps[2].setHeaderRoute.match[0].headerValue",
            "give exactly one of exact, prefix, regex",
        ),
        (
            "error", f, 1, "Rollout/web", f"{canary}.steps[3].setCanaryScale",
            "setCanaryScale takes exactly one of replicas, weight, matchTrafficWeight: true",
        ),
        (
            "error", f, 1, "Rollout/web", f"{canary}.steps[4].pause.duration",
            "duration must be a duration such as 30s, 10m, 1h, or a whole number of seconds",
        ),
        (
            "error", f, 2, "Rollout/both", "spec.strategy",
            "strategy takes exactly one of canary or blueGreen",
        ),
        (
            "error", f, 2, "Rollout/both", "spec.strategy.blueGreen.previewService",
            "previewService must differ from activeService",
        ),
        (
            "error", f, 3, "Rollout/shop", "spec.strategy.blueGreen.prePromotionAnalysis.templates[0].templateName",
            "AnalysisTemplate 'ghost' is not in the given files (give its file, or --cluster to look it up)",
        ),
        ("error", f, 4, "Rollout/typed", "spec.replicas", "must be a valid integer (got 'three')"),
        ("error", f, 4, "Rollout/typed", f"{canary}.maxSurge", "must be an integer or a string (got [1])"),
        ("error", f, 4, "Rollout/typed", f"{canary}.steps[1].setWeight", "must be a valid integer (got '10')"),
        ("error", f, 5, "Rollout/nameless-version", "apiVersion", "is missing (write tidegate.io/v1alpha1)"),
        ("error", f, 5, "Rollout/nameless-version", "spec.strategy", "is required"),
        ("error", f, 5, "Rollout/nameless-version", "spec", "exactly one of template and workloadRef is set"),
        ("error", f, 5, "Rollout/nameless-version", "spec.selector",
         "selector is required (it may be omitted with workloadRef)"),
        ("error", f, 6, "None/no-kind", "kind", "is missing"),
    ]  # fmt: skip


def test_bad_templates() -> None:
    result = lint(str(FIXTURES / "bad-template.yaml"), "-o", "json")
    assert result.exit_code == 1
    f, t = "bad-template.yaml", "AnalysisTemplate/broken"
    assert messages(result) == [
        ("error", f, 1, t, "spec.metrics[0].interval",
         "interval must be a duration such as 30s, 10m, 1h, a whole number of seconds or {{args.NAME}}"),
        ("error", f, 1, t, "spec.metrics[0].count", "must be a number or {{args.NAME}} (got 'many')"),
        ("error", f, 1, t, "spec.metrics[0].successCondition",
         "condition 'result[0] >=' does not parse: unexpected end of expression"),
        ("error", f, 1, t, "spec.metrics[0].failureCondition",
         "condition 'reslt[0] < 0.5': unknown name 'reslt'; the measured value is called `result`"),
        ("error", f, 1, t, "spec.metrics[0].provider",
         "a provider takes exactly one of prometheus, web, job"),
        ("error", f, 1, t, "spec.metrics[1].name", "metric name 'rate' is already used by metrics[0]"),
        ("error", f, 1, t, "spec.metrics[2].provider", "a metric needs a provider"),
        ("error", f, 2, "AnalysisTemplate/patch", "spec.metrics[0].provider.web.method",
         "must be 'GET', 'POST' or 'PUT' (got 'PATCH')"),
        ("error", f, 3, "AnalysisTemplate/empty", "spec.metrics", "a template needs metrics or templates"),
    ]  # fmt: skip


def test_analysis_references_and_arguments() -> None:
    result = lint(str(FIXTURES / "analysis.yaml"), "-o", "json")
    f, r = "analysis.yaml", "Rollout/checkout"
    step = "spec.strategy.canary.steps[1].analysis"
    assert messages(result) == [
        ("warning", f, 1, r, step, "this analysis never ends: metric errors measures every 1m00s until stopped (no count)"),
        ("error", f, 1, r, f"{step}.args", "argument 'service' of template 'error-rate' has no value: set it here"),
        ("warning", f, 1, r, f"{step}.args[0].name", "no template of this analysis declares an argument 'srvice'"),
        ("warning", f, 4, "Rollout/late", "spec.strategy.canary.analysis.startingStep",
         "3 is past the steps (the last step is steps[0]): it starts at promotion"),
    ]  # fmt: skip
    assert result.exit_code == 1


def test_text_format_names_file_line_object_path() -> None:
    result = lint(str(FIXTURES / "bad-rollout.yaml"))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert (
        "tests/fixtures/lint/bad-rollout.yaml:28: error: Rollout/web (document 1): "
        "spec.strategy.canary.steps[2].setHeaderRoute.name: 'hdr' is not listed in trafficRouting.managedRoutes"
    ) in lines
    assert "tests/fixtures/lint/bad-rollout.yaml:88: error: document 6: kind: is missing" in lines
    assert lines[-1].startswith("1 file, 6 objects checked: ")
    assert "\x1b[" not in result.stdout  # no colour when not a terminal


def test_yaml_syntax_error() -> None:
    result = lint(str(FIXTURES / "broken.yaml"))
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == (
        "tests/fixtures/lint/broken.yaml:5: error: document 1: YAML: expected ',' or ']', but got '}'"
    )


def test_several_files_a_directory_and_stdin() -> None:
    result = lint(str(FIXTURES / "good.yaml"), "examples/canary", "-o", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["summary"]["files"] == 4
    piped = CliRunner().invoke(cli, ["lint", "-"], input=(FIXTURES / "bad-rollout.yaml").read_text())
    assert piped.exit_code == 1
    assert piped.stdout.startswith("-:9: error: Rollout/web (document 1): spec.selector.matchLabels.app:")


def test_missing_file_is_a_usage_error() -> None:
    result = lint("no/such/file.yaml")
    assert result.exit_code == 2
    assert "no/such/file.yaml: no such file" in result.output


def test_help_has_an_example() -> None:
    result = lint("--help")
    assert result.exit_code == 0
    assert "Example:\n    tidegate lint examples/canary/\n" in result.stdout


# --------------------------------------------------------------------------- templates in the cluster


class FakeCluster:
    def __init__(self, templates: dict[str, AnalysisTemplateSpec | None], unreachable: bool = False) -> None:
        self.templates = templates
        self.unreachable = unreachable
        self.asked: list[tuple[str, str | None, bool]] = []

    def get(self, name: str, namespace: str | None, cluster_scope: bool) -> Lookup:
        self.asked.append((name, namespace, cluster_scope))
        if self.unreachable:
            return "unknown", None, "cluster unreachable: refused"
        if name in self.templates:
            return "found", self.templates[name], ""
        return "missing", None, f"not found in the cluster (namespace {namespace or 'default'})"


def _lint_with(cluster: FakeCluster, text: str) -> list[tuple[str, str, str]]:
    path = FIXTURES / "analysis.yaml"
    docs, _ = load_documents(str(path))
    docs = [d for d in docs if d.name == "checkout"]  # the templates are "in the cluster"
    docs[0].data = yaml.safe_load(text) if text else docs[0].data
    report = Linter(cluster).lint_documents(docs)
    return [(m.severity, m.path, m.text) for m in report.messages if "not supported yet" not in m.text]


def _spec(**metric: Any) -> AnalysisTemplateSpec:
    return AnalysisTemplateSpec.model_validate(
        {
            "args": [{"name": "service"}],
            "metrics": [{"name": "m", "provider": {"web": {"url": "http://x"}}, **metric}],
        }
    )


def test_templates_found_in_the_cluster_are_checked_like_given_ones() -> None:
    cluster = FakeCluster({"error-rate": _spec(interval="1m", count=3), "smoke": _spec()})
    found = _lint_with(cluster, "")
    assert ("error-rate", None, False) in cluster.asked
    assert ("smoke", None, True) in cluster.asked
    step = "spec.strategy.canary.steps[1].analysis"
    assert found == [
        ("error", f"{step}.args", "argument 'service' of template 'error-rate' has no value: set it here"),
        ("error", f"{step}.args", "argument 'service' of template 'smoke' has no value: set it here"),
        ("warning", f"{step}.args[0].name", "no template of this analysis declares an argument 'srvice'"),
    ]


def test_a_template_missing_from_the_cluster_is_an_error() -> None:
    found = _lint_with(FakeCluster({"error-rate": _spec()}), "")
    assert (
        "error",
        "spec.strategy.canary.steps[1].analysis.templates[1].templateName",
        "ClusterAnalysisTemplate 'smoke' is neither in the given files nor in the cluster "
        "(not found in the cluster (namespace default))",
    ) in found


def test_an_unreachable_cluster_is_a_warning() -> None:
    found = _lint_with(FakeCluster({}, unreachable=True), "")
    assert [m for m in found if "templateName" in m[1]] == [
        (
            "warning",
            "spec.strategy.canary.analysis.templates[0].templateName",
            "AnalysisTemplate 'error-rate' is not in the given files, and the cluster could not tell "
            "(cluster unreachable: refused)",
        ),
        (
            "warning",
            "spec.strategy.canary.steps[1].analysis.templates[0].templateName",
            "AnalysisTemplate 'error-rate' is not in the given files, and the cluster could not tell "
            "(cluster unreachable: refused)",
        ),
        (
            "warning",
            "spec.strategy.canary.steps[1].analysis.templates[1].templateName",
            "ClusterAnalysisTemplate 'smoke' is not in the given files, and the cluster could not tell "
            "(cluster unreachable: refused)",
        ),
    ]


def test_cluster_flag_with_an_unreachable_api_server(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
                "users": [{"name": "u", "user": {"token": "t"}}],
            }
        )
    )
    result = lint(str(FIXTURES / "bad-rollout.yaml"), "--cluster", env={"KUBECONFIG": str(kubeconfig)})
    ghost = [line for line in result.stdout.splitlines() if "'ghost'" in line]
    assert len(ghost) == 1
    assert ": warning: Rollout/shop (document 3): " in ghost[0]
    assert "the cluster could not tell (cluster unreachable: " in ghost[0]


def test_gateway_api_routing_problems_are_named_at_their_field(tmp_path: Path) -> None:
    """An Argo Rollout written for the Gateway API plugin: what Tidegate does not route with
    is named at its own path, with its line."""
    doc = yaml.safe_load((ROOT / "examples/gateway-api/rollout.yaml").read_text())
    routing = doc["spec"]["strategy"]["canary"]["trafficRouting"]
    del routing["gatewayAPI"]
    routing["plugins"] = {
        "argoproj-labs/gatewayAPI": {"httpRoute": "api-gateway", "tcpRoutes": [{"name": "t"}]},
        "argoproj-labs/contour": {"httpProxy": "x"},
    }
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = lint(str(path), "-o", "json")
    assert result.exit_code == 1
    routing_path = "spec.strategy.canary.trafficRouting.plugins"
    found = [(m[0], m[4], m[5]) for m in messages(result)]
    assert found == [
        (
            "error",
            f"{routing_path}.argoproj-labs/contour",
            "plugin not supported by Tidegate (routers: istio, gatewayAPI, plugins.argoproj-labs/gatewayAPI)",
        ),
        (
            "error",
            f"{routing_path}.argoproj-labs/gatewayAPI.tcpRoutes",
            "not supported by Tidegate (it routes HTTPRoutes and GRPCRoutes)",
        ),
    ]


def test_a_subscription_to_a_trigger_never_fired_is_a_warning(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "examples/canary/rollout.yaml").read_text().split("\n---")[0])
    assert doc["kind"] == "Rollout"
    doc["metadata"]["annotations"] = {
        "notifications.tidegate.io/subscribe.on-rollout-complete.slack": "deploys",  # a typo
        "notifications.tidegate.io/subscribe.on-rollout-completed.slack": "deploys",
        "notifications.argoproj.io/subscribe.on-scaling-replica-set.slack": "deploys",  # Argo's, not fired here
    }
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = lint(str(path), "-o", "json")
    assert result.exit_code == 0, result.output
    found = [(m[4], m[5].split(" (")[0]) for m in messages(result) if m[4].startswith("metadata.annotations")]
    assert found == [
        (
            "metadata.annotations.notifications.argoproj.io/subscribe.on-scaling-replica-set.slack",
            "trigger 'on-scaling-replica-set' is not one Tidegate fires",
        ),
        (
            "metadata.annotations.notifications.tidegate.io/subscribe.on-rollout-complete.slack",
            "trigger 'on-rollout-complete' is not one Tidegate fires",
        ),
    ], messages(result)

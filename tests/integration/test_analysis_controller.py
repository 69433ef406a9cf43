"""The AnalysisRun controller on the real sandbox, against its real Prometheus and a local
HTTP server: runs applied with kubectl become Successful, Failed, Inconclusive or Error,
terminate ends them, bad expressions are errors at once, judged metrics compare canary
and stable series; and build_analysis_run turns templates plus a Rollout's args into a run
through the API server.

The session operator (`tidegate operator`, which loads `tidegate.handlers.analysis`) runs
the controller: the `kube` fixture's namespaces are watched by it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from tests.integration._prometheus import free_port, serve_exporter
from tests.kube import Kube, OperatorProcess, wait_until
from tidegate.api.rollout import Rollout, RolloutAnalysis
from tidegate.core.analysis_run import AnalysisSpecError
from tidegate.k8s import analysis as k8s_analysis
from tidegate.k8s.client import Clients
from tidegate.sandbox import Sandbox
from tidegate.sandbox.prometheus import address, targets_file, write_targets

pytestmark = pytest.mark.sandbox

TOKEN = "tok-3f9a-do-not-leak"
SECRET_PATH = "path-7c1e-do-not-leak"
FINISHED = ("Successful", "Failed", "Error", "Inconclusive")


# --- scrape targets (merged, never replacing other tests' targets) -------------------------


def _read_targets(sandbox: Sandbox) -> list[dict[str, Any]]:
    try:
        targets: list[dict[str, Any]] = json.loads(targets_file(sandbox).read_text())
    except (OSError, ValueError):
        return []
    return targets


@contextlib.contextmanager
def scrape_target(sandbox: Sandbox, target: str, labels: dict[str, str]) -> Iterator[None]:
    """Add one file-discovered target to the sandbox's Prometheus, keeping the others; removed after."""
    entry = {"targets": [target], "labels": labels}
    write_targets(sandbox, [*_read_targets(sandbox), entry])
    try:
        yield
    finally:
        write_targets(sandbox, [group for group in _read_targets(sandbox) if group != entry])


def prometheus_query(sandbox: Sandbox, promql: str) -> list[Any]:
    import httpx

    response = httpx.get(f"{address(sandbox)}/api/v1/query", params={"query": promql}, timeout=5)
    result: list[Any] = response.json()["data"]["result"]
    return result


# --- a local HTTP server for the web provider ------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, document: Any) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self._json(200, {"ok": 0.99})
        elif path == "/auth":
            if self.headers.get("Authorization") == f"Bearer {TOKEN}":
                self._json(200, {"ok": 1.0})
            else:
                self._json(401, {"error": "unauthorized"})
        else:
            # A careless server that echoes the path (which holds a secret argument).
            self._json(500, {"error": f"nothing at {self.path}"})


@pytest.fixture(scope="module")
def web_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- an exporter scraped by the sandbox's Prometheus -------------------------------------------


@pytest.fixture(scope="module")
def prometheus_url(sandbox: Sandbox) -> Iterator[str]:
    registry = CollectorRegistry()
    ratio = Gauge("tidegate_analysis_test_success_ratio", "success ratio", ["service"], registry=registry)
    ratio.labels(service="checkout").set(0.99)
    ratio.labels(service="payments").set(0.2)
    latency = Gauge("tidegate_analysis_test_latency", "latency", ["hash"], registry=registry)
    latency.labels(hash="stable1").set(100.0)
    latency.labels(hash="canary1").set(180.0)
    latency.labels(hash="canary2").set(100.0)
    with (
        serve_exporter(registry) as exporter,
        scrape_target(sandbox, exporter.target, {"job": "analysis-controller-test"}),
    ):
        wait_until(
            lambda: len(prometheus_query(sandbox, "{__name__=~'tidegate_analysis_test_.*'}")) == 5,
            timeout=60,
            what="the sandbox's Prometheus scraping the test exporter",
        )
        yield address(sandbox)


# --- helpers ------------------------------------------------------------------------------------


def prom_metric(name: str, url: str, query: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "provider": {"prometheus": {"address": url, "query": query}}, **fields}


def analysis_run(name: str, *metrics: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "AnalysisRun",
        "metadata": {"name": name},
        "spec": {"metrics": list(metrics), **spec},
    }


def run_status(kube: Kube, name: str) -> dict[str, Any]:
    return kube.get("analysisruns.tidegate.io", name).get("status") or {}


def wait_run(kube: Kube, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        status = run_status(kube, name)
        if status.get("phase") in FINISHED and status.get("phase") != phase:
            raise AssertionError(f"run {name} ended {status.get('phase')}: {status.get('message')}")
        return status if status.get("phase") == phase else None

    try:
        return wait_until(check, timeout, what=f"analysisrun {name} phase {phase}")
    except AssertionError as error:
        raise AssertionError(f"{error}\nstatus: {json.dumps(run_status(kube, name), indent=1)}") from None


SUCCESS = {"successCondition": "result[0] >= 0.95", "failureCondition": "result[0] < 0.5"}


# --- runs applied with kubectl -------------------------------------------------------------------


def test_a_good_run_succeeds_after_three_measurements(kube: Kube, prometheus_url: str) -> None:
    query = 'tidegate_analysis_test_success_ratio{service="{{args.service}}"}'
    kube.apply(
        analysis_run(
            "good",
            prom_metric("success-rate", prometheus_url, query, interval="1s", count=3, **SUCCESS),
            args=[{"name": "service", "value": "checkout"}],
        )
    )
    status = wait_run(kube, "good", "Successful", timeout=90)
    assert status["startedAt"]
    (result,) = status["metricResults"]
    assert result["phase"] == "Successful"
    assert (result["count"], result["successful"], result["failed"], result["error"]) == (3, 3, 0, 0)
    assert [m["phase"] for m in result["measurements"]] == ["Successful"] * 3
    assert all(m["value"] == "[0.99]" for m in result["measurements"])
    assert status["runSummary"] == {"count": 1, "successful": 1, "failed": 0, "inconclusive": 0, "error": 0}
    assert "dryRunSummary" not in status, "no dry-run metric, no dry-run summary (as Argo's)"
    times = [m["finishedAt"] for m in result["measurements"]]
    assert times == sorted(times)
    assert status["message"] == "all metrics successful: success-rate"
    # kopf posts Events from a queue, a moment after the status write.
    wait_until(
        lambda: any(e["reason"] == "AnalysisRunSuccessful" for e in kube.list("events")),
        30,
        what="an AnalysisRunSuccessful Event",
    )


def test_every_finished_run_is_counted_in_the_outcome_metric(
    kube: Kube, prometheus_url: str, operator: OperatorProcess
) -> None:
    """Each run's own status write stops its daemon; the count of its outcome is never lost."""
    query = 'tidegate_analysis_test_success_ratio{service="checkout"}'
    names = [f"counted-{i}" for i in range(4)]
    for name in names:
        run = analysis_run(name, prom_metric("success-rate", prometheus_url, query, count=1, **SUCCESS))
        run["metadata"]["labels"] = {"rollout.tidegate.io/name": "counted"}
        kube.apply(run)
    for name in names:
        wait_run(kube, name, "Successful", timeout=90)

    def counted() -> float:
        _, text = _get(f"http://127.0.0.1:{operator.metrics_port}/metrics")
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "tidegate_analysis_outcomes_total"
            and s.labels.get("namespace") == kube.namespace
            and s.labels.get("rollout") == "counted"
        )

    def all_counted() -> bool:
        seen = counted()
        if seen != len(names):
            raise AssertionError(f"{seen} outcomes counted")
        return True

    wait_until(all_counted, 30, what=f"{len(names)} outcomes counted")
    assert counted() == len(names), "counted once each, not more"


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status), response.read().decode()


def test_a_failing_run_fails_naming_the_metric_and_the_value(kube: Kube, prometheus_url: str) -> None:
    query = 'tidegate_analysis_test_success_ratio{service="payments"}'
    kube.apply(
        analysis_run(
            "bad", prom_metric("success-rate", prometheus_url, query, interval="1s", count=3, **SUCCESS)
        )
    )
    status = wait_run(kube, "bad", "Failed")
    assert "metric success-rate failed" in status["message"]
    assert "measured [0.2]" in status["message"]
    assert status["metricResults"][0]["failed"] == 1


def test_an_empty_result_is_inconclusive(kube: Kube, prometheus_url: str) -> None:
    query = 'tidegate_analysis_test_success_ratio{service="nobody"}'
    kube.apply(analysis_run("empty", prom_metric("success-rate", prometheus_url, query, **SUCCESS)))
    status = wait_run(kube, "empty", "Inconclusive")
    assert "metric success-rate inconclusive" in status["message"]
    assert "no data (empty result)" in status["message"]


def test_an_unreachable_prometheus_errs_after_the_error_limit(kube: Kube) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    kube.apply(
        analysis_run(
            "down",
            prom_metric(
                "success-rate", nowhere, "vector(1)", interval="1s", consecutiveErrorLimit=2, **SUCCESS
            ),
        )
    )
    status = wait_run(kube, "down", "Error")
    (result,) = status["metricResults"]
    assert result["error"] == result["consecutiveError"] == 3  # consecutiveErrorLimit + 1
    assert result["count"] == 0
    assert "3 errors in a row exceed consecutiveErrorLimit 2" in status["message"]
    assert "cannot connect" in status["message"]


def test_terminate_ends_a_run_that_measures_until_stopped(kube: Kube, web_url: str) -> None:
    metric = {
        "name": "health",
        "interval": "1s",
        "successCondition": "result > 0.9",
        "provider": {"web": {"url": f"{web_url}/health", "jsonPath": "$.ok"}},
    }
    kube.apply(analysis_run("forever", metric))
    wait_until(
        lambda: (run_status(kube, "forever").get("metricResults") or [{}])[0].get("count", 0) >= 2,
        timeout=60,
        what="two measurements",
    )
    assert run_status(kube, "forever")["phase"] == "Running"
    kube.patch("analysisruns.tidegate.io", "forever", {"spec": {"terminate": True}})
    status = wait_run(kube, "forever", "Successful")
    assert status["message"].startswith("terminated: ")
    counted = status["metricResults"][0]["count"]
    # Finished: never measured again (three intervals later the count is the same).
    with pytest.raises(AssertionError):
        wait_until(
            lambda: run_status(kube, "forever")["metricResults"][0]["count"] != counted,
            timeout=3,
            what="another measurement",
        )


def test_a_bad_expression_is_an_error_at_once(kube: Kube, web_url: str) -> None:
    metric = {
        "name": "health",
        "interval": "1s",
        "count": 3,
        "successCondition": "result >>= 0.9",
        "provider": {"web": {"url": f"{web_url}/health", "jsonPath": "$.ok"}},
    }
    kube.apply(analysis_run("typo", metric))
    status = wait_run(kube, "typo", "Error")
    assert status["message"].startswith(
        "metric health: successCondition: condition 'result >>= 0.9' does not parse"
    )
    assert status["metricResults"][0]["count"] == 0
    assert not status["metricResults"][0].get("measurements")


def test_a_template_with_a_bad_expression_gets_a_warning_event(kube: Kube) -> None:
    kube.apply(
        {
            "apiVersion": "tidegate.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "typo"},
            "spec": {
                "metrics": [
                    {
                        "name": "errors",
                        "failureCondition": "result[0] > ",
                        "provider": {"web": {"url": "http://example.invalid/"}},
                    }
                ]
            },
        }
    )

    def warning() -> dict[str, Any] | None:
        for event in kube.list("events"):
            involved = event["involvedObject"]
            if involved.get("kind") == "AnalysisTemplate" and involved.get("name") == "typo":
                return event
        return None

    event = wait_until(warning, timeout=60, what="a Warning Event on the template")
    assert event["type"] == "Warning" and event["reason"] == "InvalidExpression"
    assert event["message"].startswith(
        "metric errors: failureCondition: condition 'result[0] > ' does not parse"
    )


def test_secrets_authenticate_and_never_reach_the_status(kube: Kube, web_url: str) -> None:
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "web-auth"},
            "data": {
                "token": base64.b64encode(TOKEN.encode()).decode(),
                "path": base64.b64encode(SECRET_PATH.encode()).decode(),
            },
        }
    )
    auth = {"bearerToken": {"name": "web-auth", "key": "token"}}
    kube.apply(
        analysis_run(
            "secret",
            {
                "name": "auth",
                "successCondition": "result == 1.0",
                "provider": {"web": {"url": f"{web_url}/auth", "jsonPath": "$.ok", "authentication": auth}},
            },
            {
                "name": "echo",
                "consecutiveErrorLimit": 0,
                "provider": {"web": {"url": f"{web_url}/{{{{args.where}}}}", "authentication": auth}},
            },
            args=[{"name": "where", "valueFrom": {"secretKeyRef": {"name": "web-auth", "key": "path"}}}],
            dryRun=[{"metricName": "echo"}],
        )
    )
    status = wait_run(kube, "secret", "Successful")
    results = {result["name"]: result for result in status["metricResults"]}
    assert results["auth"]["successful"] == 1
    assert results["echo"]["phase"] == "Error"  # the server answered 500, echoing the secret path
    assert "<redacted>" in results["echo"]["measurements"][0]["message"]
    everything = json.dumps(kube.get("analysisruns.tidegate.io", "secret"))
    assert TOKEN not in everything and SECRET_PATH not in everything


def test_a_judged_metric_compares_canary_and_stable_series(kube: Kube, prometheus_url: str) -> None:
    sandbox = kube.sandbox

    def enough_history() -> bool:
        import httpx

        answer = httpx.get(
            f"{prometheus_url}/api/v1/query",
            params={"query": "count_over_time(tidegate_analysis_test_latency[10s])"},
        ).json()["data"]["result"]
        return len(answer) == 3 and all(float(series["value"][1]) >= 8 for series in answer)

    wait_until(enough_history, timeout=60, what=f"10s of latency samples in {address(sandbox)}")

    def judged_run(name: str, canary: str) -> dict[str, Any]:
        metric = {
            "name": "latency",
            # Judged samples start at the run's start: wait for 8 of them.
            "initialDelay": "9s",
            "judge": {"query": 'tidegate_analysis_test_latency{hash="{{hash}}"}', "direction": "Increase"},
            "provider": {
                "prometheus": {
                    "address": prometheus_url,
                    "query": "unused",
                    "range": {"window": "10s", "step": "1s"},
                }
            },
        }
        run = analysis_run(name, metric)
        run["metadata"]["annotations"] = {
            "analysis.tidegate.io/stable-hash": "stable1",
            "analysis.tidegate.io/latest-hash": canary,
        }
        return run

    kube.apply([judged_run("slower", "canary1"), judged_run("same", "canary2")])
    slower = wait_run(kube, "slower", "Failed")
    assert slower["message"].startswith("judged metrics latency: score 0")
    (measurement,) = slower["metricResults"][0]["measurements"]
    assert measurement["phase"] == "Failed"
    assert int(measurement["metadata"]["canaryN"]) >= 5 and int(measurement["metadata"]["stableN"]) >= 5
    assert measurement["metadata"]["verdict"] == "Failed"
    same = wait_run(kube, "same", "Successful")
    assert same["message"].startswith("judged metrics latency: score 1")


# --- building runs from templates through the API server -----------------------------------------


def rollout_doc(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "labels": {"app": "shop-web"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "example/web:1"}]},
            },
            "strategy": {"canary": {"steps": [{"setWeight": 50}]}},
        },
    }


def idle_metric(name: str, query: str) -> dict[str, Any]:
    # initialDelay keeps a controller (if one watches this namespace) from measuring.
    return {
        "name": name,
        "initialDelay": "1h",
        "provider": {"prometheus": {"address": "http://p:9090", "query": query}},
    }


@pytest.fixture
def cluster_template(sandbox: Sandbox) -> Iterator[str]:
    name = f"latency-{uuid.uuid4().hex[:6]}"
    doc = {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "ClusterAnalysisTemplate",
        "metadata": {"name": name},
        "spec": {
            "args": [{"name": "quantile", "value": "0.99"}, {"name": "canary-hash"}],
            "metrics": [idle_metric("latency", 'q{q="{{args.quantile}}",h="{{args.canary-hash}}"}')],
            "passScore": 0.95,
        },
    }
    Kube(sandbox).apply(doc)
    yield name
    sandbox.kubectl("delete", "clusteranalysistemplate.tidegate.io", name, "--wait=false", check=False)


def test_build_analysis_run_from_templates_and_args(bare_kube: Kube, cluster_template: str) -> None:
    kube = bare_kube
    kube.apply(rollout_doc("web"))
    kube.apply(
        {
            "apiVersion": "tidegate.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "rates"},
            "spec": {
                "args": [{"name": "service"}, {"name": "app", "value": "unset"}, {"name": "canary-hash"}],
                "metrics": [idle_metric("success-rate", 'r{s="{{args.service}}",a="{{args.app}}"}')],
                "dryRun": [{"metricName": "success-rate"}],
            },
        }
    )
    rollout = Rollout.from_body(kube.rollout("web"))
    analysis = RolloutAnalysis.model_validate(
        {
            "templates": [
                {"templateName": "rates"},
                {"templateName": cluster_template, "clusterScope": True},
            ],
            "args": [
                {"name": "service", "value": "web-canary"},
                {"name": "app", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
            ],
            "measurementRetention": [{"metricName": "latency", "limit": 5}],
        }
    )
    clients = Clients.load(str(kube.sandbox.kubeconfig))
    hashes = {"Stable": "aaa111", "Latest": "bbb222"}

    async def scenario() -> None:
        body = await k8s_analysis.build_analysis_run(
            clients, rollout, analysis, name="web-bbb222-1", kind="step", pod_hashes=hashes
        )
        meta, spec = body["metadata"], body["spec"]
        assert meta["namespace"] == kube.namespace
        assert meta["labels"] == {
            "rollout.tidegate.io/name": "web",
            "rollouts-pod-template-hash": "bbb222",
            "analysis.tidegate.io/kind": "step",
        }
        (owner,) = meta["ownerReferences"]
        assert owner["uid"] == rollout.metadata.uid and owner["controller"] and owner["blockOwnerDeletion"]
        assert [m["name"] for m in spec["metrics"]] == ["success-rate", "latency"]
        assert {a["name"]: a["value"] for a in spec["args"]} == {
            "service": "web-canary",
            "app": "shop-web",
            "canary-hash": "bbb222",
            "quantile": "0.99",
        }
        assert spec["dryRun"] == [{"metricName": "success-rate"}]
        assert spec["measurementRetention"] == [{"metricName": "latency", "limit": 5}]
        assert spec["passScore"] == 0.95

        created = await k8s_analysis.create_analysis_run(clients, body)
        again = await k8s_analysis.create_analysis_run(clients, body)  # 409: the existing one
        assert again["metadata"]["uid"] == created["metadata"]["uid"]
        listed = await k8s_analysis.list_analysis_runs(clients, kube.namespace, "web")
        assert [run["metadata"]["name"] for run in listed] == ["web-bbb222-1"]
        assert await k8s_analysis.terminate_analysis_run(clients, kube.namespace, "web-bbb222-1")
        assert not await k8s_analysis.terminate_analysis_run(clients, kube.namespace, "nope")

        missing = RolloutAnalysis.model_validate(
            {"templates": [{"templateName": "rates"}, {"templateName": "gone"}]}
        )
        with pytest.raises(AnalysisSpecError, match="AnalysisTemplate 'gone' not found in namespace"):
            await k8s_analysis.build_analysis_run(
                clients, rollout, missing, name="x", kind="step", pod_hashes=hashes
            )
        unset = analysis.model_copy(update={"args": [a for a in analysis.args if a.name != "service"]})
        with pytest.raises(AnalysisSpecError, match="argument 'service' has no value"):
            await k8s_analysis.build_analysis_run(
                clients, rollout, unset, name="x", kind="step", pod_hashes=hashes
            )

    asyncio.run(scenario())
    run = kube.get("analysisruns.tidegate.io", "web-bbb222-1")
    assert run["spec"]["terminate"] is True


def test_prune_keeps_the_newest_finished_runs_per_outcome(bare_kube: Kube) -> None:
    kube = bare_kube
    doc = rollout_doc("web")
    # A selector that does not match the template: the session operator (if it runs)
    # reports InvalidSpec and never completes this rollout, so it never prunes its runs.
    doc["spec"]["template"]["metadata"]["labels"] = {"app": "not-web"}
    kube.apply(doc)
    uid = kube.rollout("web")["metadata"]["uid"]
    owner = {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "Rollout",
        "name": "web",
        "uid": uid,
        "controller": True,
    }
    phases = ["Successful"] * 5 + ["Failed"] * 2 + ["Running"] * 4
    for index, phase in enumerate(phases):
        name = f"web-{index:02d}"
        run = analysis_run(name, idle_metric("m", "vector(1)"))
        run["metadata"].update(labels={"rollout.tidegate.io/name": "web"}, ownerReferences=[owner])
        kube.apply(run)
        kube.kubectl(
            "patch",
            "analysisruns.tidegate.io",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"phase": phase, "message": "set by the test"}}),
        )
    clients = Clients.load(str(kube.sandbox.kubeconfig))
    deleted = asyncio.run(k8s_analysis.prune_analysis_runs(clients, kube.namespace, "web", keep_per_phase=3))
    # Created in order within the same second: the name breaks the tie (newest = highest).
    assert sorted(deleted) == ["web-00", "web-01"]
    left = wait_until(
        lambda: (
            (names := sorted(r["metadata"]["name"] for r in kube.list("analysisruns.tidegate.io")))
            and len(names) == len(phases) - 2
            and names
        ),
        timeout=30,
        what="pruned runs gone",
    )
    assert left == [f"web-{index:02d}" for index in range(2, len(phases))]

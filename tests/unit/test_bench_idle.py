"""The pure parts of bench/idle.py: audit-log parsing, counting by user agent in a window, rendering."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def load_bench() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "idle.py"
    spec = importlib.util.spec_from_file_location("tidegate_bench_idle", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module
    spec.loader.exec_module(module)
    return module


bench = load_bench()

KOPF = "kopf/1.45.2"
OPERATOR = "tidegate-operator/0.1.0"
KCM = "kube-controller-manager/v1.35.4 (linux/amd64) kubernetes/abcdef0/system:serviceaccount:kube-system:gc"


def stamp(seconds: float) -> str:
    """An audit timestamp `seconds` after 2025-01-01T00:00:00Z."""
    whole = int(seconds)
    return f"2025-01-01T00:{whole // 60:02d}:{whole % 60:02d}.{round((seconds - whole) * 1e6):06d}Z"


T0 = bench.parse_time(stamp(0))
STARTED = "ResponseStarted"


def line(
    audit_id: str,
    *,
    verb: str,
    uri: str,
    agent: str,
    received: float,
    stage: str = "ResponseComplete",
    done: float | None = None,
    ref: dict[str, str] | None = None,
) -> str:
    event: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": audit_id,
        "stage": stage,
        "requestURI": uri,
        "verb": verb,
        "user": {"username": "admin", "groups": ["system:masters"]},
        "sourceIPs": ["127.0.0.1"],
        "userAgent": agent,
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": stamp(received),
        "stageTimestamp": stamp(received if done is None else done),
    }
    if ref is not None:
        event["objectRef"] = ref
    return json.dumps(event)


ROLLOUTS = {"resource": "rollouts", "apiGroup": "tidegate.io", "apiVersion": "v1alpha1"}
RS = {"resource": "replicasets", "namespace": "a", "apiGroup": "apps", "apiVersion": "v1"}
WATCH_URI = "/apis/tidegate.io/v1alpha1/rollouts?allowWatchBookmarks=true&timeoutSeconds=300&watch=true"


def audit_lines() -> list[str]:
    """A window of [100, 160): watches opened before it, a reconnect and some polling inside it."""
    get = "/apis/tidegate.io/v1alpha1/namespaces/a/rollouts/r1"
    return [
        # kopf's rollouts watch, opened at 10, still open at the end of the log
        line("w1", verb="watch", uri=WATCH_URI, agent=KOPF, received=10, stage=STARTED, ref=ROLLOUTS),
        # kopf's replicasets watch: opened at 20, times out at 130, reconnected at 130
        line("w2", verb="watch", uri="/apis/apps/v1/replicasets?watch=true", agent=KOPF, received=20,
             stage=STARTED, ref={**RS, "namespace": ""}),
        line("w2", verb="watch", uri="/apis/apps/v1/replicasets?watch=true", agent=KOPF, received=20,
             done=130, ref={**RS, "namespace": ""}),
        line("w3", verb="watch", uri="/apis/apps/v1/replicasets?watch=true&resourceVersion=9", agent=KOPF,
             received=130.2, stage=STARTED, ref={**RS, "namespace": ""}),
        # a watch that ended before the window
        line("w0", verb="watch", uri=WATCH_URI, agent=KOPF, received=1, stage=STARTED, ref=ROLLOUTS),
        line("w0", verb="watch", uri=WATCH_URI, agent=KOPF, received=1, done=5, ref=ROLLOUTS),
        # the operator's own client: one GET before the window, three inside (every 20 s), one after
        line("g0", verb="get", uri=get, agent=OPERATOR, received=90, ref={**ROLLOUTS, "namespace": "a"}),
        line("g1", verb="get", uri=get, agent=OPERATOR, received=110, ref={**ROLLOUTS, "namespace": "a"}),
        line("g2", verb="get", uri=get, agent=OPERATOR, received=130, ref={**ROLLOUTS, "namespace": "a"}),
        line("g3", verb="get", uri=get, agent=OPERATOR, received=150, ref={**ROLLOUTS, "namespace": "a"}),
        line("g4", verb="get", uri=get, agent=OPERATOR, received=160, ref={**ROLLOUTS, "namespace": "a"}),
        line("p1", verb="patch", uri=get + "/status", agent=OPERATOR, received=120,
             ref={**ROLLOUTS, "namespace": "a", "subresource": "status"}),
        # other clients
        line("k1", verb="update", uri="/apis/apps/v1/namespaces/a/replicasets/x/status", agent=KCM,
             received=101, ref={**RS, "subresource": "status"}),
        line("k2", verb="get", uri="/api", agent=KCM, received=102),
        line("u1", verb="patch", uri="/api/v1/nodes/n0/status", agent="kwok/v0.8.0", received=140,
             ref={"resource": "nodes", "apiVersion": "v1", "subresource": "status"}),
        "",
        '{"kind":"Event","auditID":"cut',  # a line cut short by rotation
    ]  # fmt: skip


def requests() -> list[Any]:
    return list(bench.collect_requests(filter(None, map(bench.parse_audit_line, audit_lines()))))


def operator_window() -> Any:
    return bench.count_window(requests(), T0 + 100, T0 + 160, bench.agent_matcher(bench.OPERATOR_AGENTS))


def test_parse_line_names_the_resource_with_group_and_subresource() -> None:
    ev = bench.parse_audit_line(audit_lines()[11])
    assert ev is not None
    assert (ev.verb, ev.resource, ev.user_agent) == ("patch", "rollouts.tidegate.io/status", OPERATOR)
    assert ev.received == pytest.approx(T0 + 120)
    core = bench.parse_audit_line(audit_lines()[14])
    assert core is not None and core.resource == "nodes/status"
    non_resource = bench.parse_audit_line(audit_lines()[13])
    assert non_resource is not None and non_resource.resource == "/api"


def test_parse_skips_blank_and_truncated_lines() -> None:
    assert bench.parse_audit_line("") is None
    assert bench.parse_audit_line('{"kind":"Event","auditID":"cut') is None
    assert bench.parse_audit_line('{"kind":"Event"}') is None


def test_parse_time_keeps_microseconds() -> None:
    assert bench.parse_time("2025-01-01T00:00:01.250000Z") - bench.parse_time(
        "2025-01-01T00:00:00.000000Z"
    ) == pytest.approx(1.25)


def test_stages_of_one_request_merge_into_one() -> None:
    by_id = {r.audit_id: r for r in requests()}
    assert len(by_id) == 13  # 15 complete lines, two of them a second stage
    assert by_id["w2"].completed == pytest.approx(T0 + 130)
    assert by_id["w1"].completed is None  # still open
    assert by_id["g1"].completed == pytest.approx(T0 + 110)


def test_operator_requests_received_in_the_window() -> None:
    win = operator_window()
    # g1, g2, g3, p1 and the watch reconnect w3; g0 is before, g4 at the (excluded) end
    assert win.total == 5
    assert win.non_watch == 4
    assert win.watch_connects == 1
    assert win.per_min == pytest.approx(5.0)
    assert win.non_watch_per_min == pytest.approx(4.0)
    assert win.by_agent == {"tidegate-operator": 4, "kopf": 1}


def test_open_watches_at_the_window_edges() -> None:
    win = operator_window()
    assert win.open_watches_start == 2  # w1 and w2 (w0 ended at 5)
    assert win.open_watches_end == 2  # w1 and w3 (w2 ended at 130)


def test_rows_by_verb_and_resource_with_polling_interval() -> None:
    rows = {(r.verb, r.resource): r for r in operator_window().rows}
    get = rows[("get", "rollouts.tidegate.io")]
    assert (get.count, get.distinct_uris, get.median_interval_s) == (3, 1, 20.0)
    assert get.example_uri == "/apis/tidegate.io/v1alpha1/namespaces/a/rollouts/r1"
    assert rows[("patch", "rollouts.tidegate.io/status")].median_interval_s is None
    assert rows[("watch", "replicasets.apps")].count == 1
    assert next(iter(rows)) == ("get", "rollouts.tidegate.io")  # largest count first


def test_other_clients_do_not_count_for_the_operator_but_for_all() -> None:
    everyone = bench.count_window(requests(), T0 + 100, T0 + 160, lambda _agent: True)
    assert everyone.total == 8
    assert everyone.by_agent == {"tidegate-operator": 4, "kube-controller-manager": 2, "kopf": 1, "kwok": 1}


def test_findings_name_every_non_watch_request() -> None:
    found = bench.findings(operator_window())
    assert len(found) == 2
    assert found[0].startswith("get rollouts.tidegate.io: 3 requests (3.0/min) over 1 URIs, every 20.0s")
    assert "/apis/tidegate.io/v1alpha1/namespaces/a/rollouts/r1" in found[0]
    assert not any(f.startswith("watch") for f in found)


def test_an_idle_operator_has_no_findings() -> None:
    quiet = [line("w1", verb="watch", uri=WATCH_URI, agent=KOPF, received=10, stage=STARTED)]
    reqs = bench.collect_requests(filter(None, map(bench.parse_audit_line, quiet)))
    win = bench.count_window(reqs, T0 + 100, T0 + 160, bench.agent_matcher(bench.OPERATOR_AGENTS))
    assert (win.total, win.open_watches_start, win.open_watches_end, win.rows) == (0, 1, 1, [])
    assert bench.findings(win) == []


def test_agent_name() -> None:
    assert bench.agent_name(KCM) == "kube-controller-manager"
    assert bench.agent_name("kubectl/v1.35.4 (linux/amd64) kubernetes/abc") == "kubectl"
    assert bench.agent_name("") == "(none)"


def test_audit_files_put_rotated_backups_first(tmp_path: Path) -> None:
    for name in ("audit.log", "audit-2025-01-01T00-00-00.000.log", "kube-apiserver.log"):
        (tmp_path / name).write_text("")
    assert [p.name for p in bench.audit_files(tmp_path)] == ["audit-2025-01-01T00-00-00.000.log", "audit.log"]


METRICS = """\
# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="GET",version="v1"} 10
apiserver_request_total{code="200",component="apiserver",dry_run="",group="apps",resource="replicasets",scope="namespace",subresource="status",verb="PUT",version="v1"} 4
apiserver_request_total{code="0",component="apiserver",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="WATCH",version="v1"} 2
apiserver_request_duration_seconds_count{verb="GET"} 99
apiserver_request_total_other{verb="GET"} 1
"""  # noqa: E501


def test_request_totals_by_verb_and_delta() -> None:
    before = bench.request_totals(METRICS)
    assert before == {"GET": 10.0, "PUT": 4.0, "WATCH": 2.0}
    after = bench.request_totals(METRICS.replace("} 10\n", "} 25\n").replace("} 4\n", "} 5\n"))
    assert bench.totals_delta(before, after) == {"GET": 15, "PUT": 1}


def report(win: Any, found: list[str]) -> Any:
    everyone = bench.count_window(requests(), T0 + 100, T0 + 160, lambda _agent: True)
    return bench.Report(
        rollouts=200,
        namespaces=4,
        sandbox_up_s=3.2,
        time_to_healthy_s=81.5,
        idle_window_s=60.0,
        rss_baseline_mib=100.0,
        rss_start_mib=120.25,
        rss_end_mib=120.5,
        rss_peak_mib=140.0,
        cpu_window_s=0.3,
        operator=win,
        all_clients=everyone,
        apiserver_request_total={"GET": 30, "PUT": 6},
        findings=found,
    )


def test_render_table() -> None:
    win = operator_window()
    text = bench.render(report(win, bench.findings(win)))
    assert "rollouts                    200 in 4 namespaces" in text
    assert "time to all Healthy         81.5 s" in text
    assert "operator RSS start/end/peak 120.2 / 120.5 / 140.0 MiB" in text
    assert "operator open watches       2 at start, 2 at end; 1 (re)connected in window" in text
    assert "operator requests/min       5.00 (5 requests: 4 non-watch = 4.00/min" in text
    assert "get      rollouts.tidegate.io" in text
    assert "all clients/min (audit)     8.00" in text
    assert (
        "all clients/min (apiserver_request_total) 36.00 (36 requests completed in window: GET 30, PUT 6)"
        in (text)
    )
    assert "findings: the operator made requests beyond its watches while idle" in text


def test_render_idle() -> None:
    quiet = bench.count_window([], T0 + 100, T0 + 160, bench.agent_matcher(bench.OPERATOR_AGENTS))
    text = bench.render(report(quiet, []))
    assert "operator requests/min       0.00 (0 requests" in text
    assert "verb     resource" not in text
    assert text.endswith(
        "findings: none; no request from the operator beyond its watches "
        "(and the leader's Lease renewal) while idle"
    )


def test_json_has_the_table_figures() -> None:
    win = operator_window()
    data = json.loads(json.dumps(report(win, bench.findings(win)).to_json()))
    assert data["rollouts"] == 200
    assert data["operator"]["per_min"] == pytest.approx(5.0)
    assert data["operator"]["rows"][0]["verb"] == "get"
    assert data["apiserver_request_total"] == {"delta": 36, "per_min": 36.0, "by_verb": {"GET": 30, "PUT": 6}}
    assert len(data["findings"]) == 2


def test_rollout_docs_spread_over_namespaces() -> None:
    docs = bench.rollout_docs(5, ["a", "b"])
    assert [d["metadata"]["namespace"] for d in docs] == ["a", "b", "a", "b", "a"]
    assert len({d["metadata"]["name"] for d in docs}) == 5
    spec = docs[0]["spec"]
    assert spec["replicas"] == 1 and "canary" in spec["strategy"]
    assert "trafficRouting" not in spec["strategy"]["canary"]
    assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]


def test_render_widens_the_resource_column_for_long_names() -> None:
    crd = "customresourcedefinitions.apiextensions.k8s.io"
    quiet = [
        line("c0", verb="watch", uri="/apis/apiextensions.k8s.io/v1/customresourcedefinitions?watch=true",
             agent=KOPF, received=120, stage=STARTED,
             ref={"resource": "customresourcedefinitions", "apiGroup": "apiextensions.k8s.io"}),
    ]  # fmt: skip
    reqs = bench.collect_requests(filter(None, map(bench.parse_audit_line, quiet)))
    win = bench.count_window(reqs, T0 + 100, T0 + 160, bench.agent_matcher(bench.OPERATOR_AGENTS))
    text = bench.render(report(win, bench.findings(win)))
    header = next(t for t in text.splitlines() if t.strip().startswith("verb"))
    row = next(t for t in text.splitlines() if crd in t)
    assert header.index("count") + len("count") == row.index(" 1 ") + 2  # counts right-aligned under "count"
    assert "findings: none" in text  # a watch reconnect is not polling

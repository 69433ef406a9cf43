"""deploy/grafana/tidegate.json asks only for what the operator exports.

Every PromQL expression in the dashboard (panel targets and template variables) is taken
apart: each metric it names must be a series of the operator's own registry (a Telemetry
with every kind of series observed once), and each label it matches or groups by must be
one of that series' labels, or one the scrape adds (job, instance, pod).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tidegate.handlers.operator import WorkQueue
from tidegate.telemetry import Telemetry

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "tidegate.json"
SCRAPE_LABELS = {"job", "instance", "pod"}
KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}


def exported() -> dict[str, set[str]]:
    """Sample name -> label names, from a registry in which every series exists."""
    t = Telemetry()
    t.observe_rollout(
        "shop",
        "web",
        phase="Paused",
        step=2,
        weight=20,
        strategy="canary",
        steps=4,
        replicas={"desired": 4, "current": 5, "updated": 1, "ready": 5, "available": 5},
    )
    t.observe_analysis_run("shop", "web", "step", "web-a-s1-0", "Running", {"rate": "Running"})
    t.count_abort("shop", "web")
    t.count_promotion("shop", "web")
    t.count_analysis_outcome("shop", "web", "rate", "Successful")
    t.count_api_error("patch", "rollouts/status", 500)
    t.count_api_request("get", "rollouts", 200)
    t.count_conflicts("rollouts")
    t.set_leader(True)
    with t.time_reconcile():
        pass
    WorkQueue(on_add=t.queue_added).add(("shop", "web"))
    t.queue_taken(0.1, 0)
    series: dict[str, set[str]] = {}
    for family in t.registry.collect():
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def expressions() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    found = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    found += [v["query"] for v in doc["templating"]["list"] if v.get("type") == "query"]
    return found


def parse(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) an expression uses."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\[[^\]]*\]", "", text)  # range durations
    labels: set[str] = set()
    for body in re.findall(r"\{([^}]*)\}", text):
        labels |= set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", body))
    text = re.sub(r"\{[^}]*\}", "", text)
    for body in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text):
        labels |= {name.strip() for name in body.split(",") if name.strip()}
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", text)
    lv = re.match(r"\s*label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*(\w+)\s*\)\s*$", text)
    if lv:
        return {lv.group(1)}, labels | {lv.group(2)}
    metrics = {
        token
        for token in re.findall(r"[a-zA-Z_:][\w:]*(?!\s*\()", text)
        if token not in KEYWORDS and not re.fullmatch(r"\d.*|e\d*|Inf|NaN", token)
    }
    # re's lookahead lets "histogram_quantil" through from "histogram_quantile(": drop prefixes of calls
    calls = set(re.findall(r"([a-zA-Z_][\w]*)\s*\(", text))
    metrics = {m for m in metrics if not any(c.startswith(m) for c in calls)}
    return metrics, labels


def test_the_dashboard_has_queries() -> None:
    assert len(expressions()) > 10


@pytest.mark.parametrize("expr", expressions())
def test_every_query_names_exported_metrics_and_their_labels(expr: str) -> None:
    series = exported()
    metrics, labels = parse(expr)
    assert metrics, f"no metric found in {expr!r}"
    unknown = metrics - set(series)
    assert not unknown, f"{expr!r} names {sorted(unknown)}, which the operator does not export"
    allowed = set().union(*(series[m] for m in metrics)) | SCRAPE_LABELS
    assert labels <= allowed, f"{expr!r} uses labels {sorted(labels - allowed)} that {sorted(metrics)} lack"


@pytest.mark.parametrize(
    ("expr", "metrics", "labels"),
    [
        ('sum by (le) (rate(tidegate_x_bucket{a="b"}[5m]))', {"tidegate_x_bucket"}, {"le", "a"}),
        ("label_values(tidegate_rollout_info, namespace)", {"tidegate_rollout_info"}, {"namespace"}),
        ('max(tidegate_a{q=~"$v"}) == 1', {"tidegate_a"}, {"q"}),
    ],
)
def test_the_parser(expr: str, metrics: set[str], labels: set[str]) -> None:
    assert parse(expr) == (metrics, labels)


def test_a_misspelt_metric_would_be_caught() -> None:
    metrics, _ = parse("sum(rate(tidegate_rollout_abort_total[5m]))")
    assert metrics - set(exported()) == {"tidegate_rollout_abort_total"}


def _panel_titles() -> list[Any]:
    return [p["title"] for p in json.loads(DASHBOARD.read_text())["panels"]]


def test_panels_have_distinct_titles() -> None:
    titles = _panel_titles()
    assert len(titles) == len(set(titles))

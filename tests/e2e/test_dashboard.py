"""`tidegate dashboard` in a real browser (Debian's headless Chromium, driven by Playwright) on the sandbox.

The dashboard runs as its own process, the CLI command a person types; the page is
loaded once and then must follow the cluster by itself (server-sent events from the
server's watches: no reload anywhere below). Every wait is Playwright's `expect`, which
retries until its deadline and fails with what the page showed. Screenshots go to the
session's log folder; with TIDEGATE_DOCS_SCREENSHOT=1 the rollout page's is also copied to
docs/dashboard.png, the README's picture.
"""

from __future__ import annotations

import copy
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright

from tests.conftest import _log_dir
from tests.e2e.dsl import _load, given
from tests.kube import REPO, Kube
from tidegate.sandbox import Sandbox
from tidegate.sandbox.prometheus import address

pytestmark = pytest.mark.sandbox

HOST = "examples/canary/services.yaml", "examples/canary/virtualservice.yaml"
STEPS = [
    {"setWeight": 20},
    {"pause": {}},
    {"setWeight": 40},
    {"analysis": {"templates": [{"templateName": "quality"}]}},
    {"pause": {}},
    {"setWeight": 60},
    {"pause": {}},
]
WAIT_MS = 60_000


def chromium() -> str:
    """Debian's Chromium (`make chromium` installs it); Playwright downloads no browser of its own."""
    path = os.environ.get("TIDEGATE_CHROMIUM") or shutil.which("chromium")
    assert path, "no chromium on PATH: `make chromium` installs Debian's package"
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


class Dashboard:
    """`tidegate dashboard --port 0 --no-browser -n NS` as a child process; `url` from its first line."""

    def __init__(self, kubeconfig: Path, namespace: str, log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tidegate.cli.main",
                "dashboard",
                "--port",
                "0",
                "--no-browser",
                "-n",
                namespace,
            ],
            stdout=subprocess.PIPE,
            stderr=open(log, "wb"),  # noqa: SIM115 - owned by the child
            env={**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"},
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            first = lines.get(timeout=30)
        except queue.Empty:
            first = ""
        found = re.search(r"http://127\.0\.0\.1:\d+/", first)
        assert found, (
            f"dashboard printed {first!r} (exit {self.proc.poll()}); stderr: {log.read_text()[-2000:]}"
        )
        self.url = found.group(0)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def dashboard(kube: Kube) -> Iterator[Dashboard]:
    d = Dashboard(kube.sandbox.kubeconfig, kube.namespace, _log_dir() / f"dashboard-{kube.namespace}.log")
    try:
        yield d
    finally:
        d.stop()


def canary(kube: Kube, sandbox: Sandbox) -> Any:
    """The example canary with manual pauses around a step analysis; its Services, VirtualService."""
    kube.apply(
        {
            "apiVersion": "tidegate.io/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "quality"},
            "spec": {
                "metrics": [
                    {
                        "name": "success-rate",
                        "interval": "2s",
                        "count": 3,
                        "successCondition": "result[0] >= 0.9",
                        "provider": {
                            "prometheus": {
                                "address": address(sandbox),
                                "query": "vector(0.95 + (time() % 5) / 100)",
                            }
                        },
                    }
                ]
            },
        }
    )
    doc = copy.deepcopy(_load("examples/canary/rollout.yaml", "Rollout"))
    doc["spec"]["strategy"]["canary"]["steps"] = STEPS
    return given(kube).objects(*HOST).rollout(doc)


def screenshot(page: Page, name: str) -> Path:
    path = _log_dir() / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def answer(page: Page, accept: bool) -> list[str]:
    """Answer the next confirmation; the list gets its message."""
    asked: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        asked.append(dialog.message)
        if accept:
            dialog.accept()
        else:
            dialog.dismiss()

    page.once("dialog", on_dialog)
    return asked


def press(page: Page, action: str, words: str) -> None:
    """Press a button, accept its confirmation, wait for the server's answer to read `words` (a regex)."""
    asked = answer(page, accept=True)
    page.locator(f"button[data-action='{action}']").click()
    expect(page.locator("#result")).to_have_text(re.compile(words), timeout=WAIT_MS)
    assert asked, f"{action} asked for no confirmation"


def test_the_dashboard_follows_a_canary_step_by_step_and_its_buttons_promote_and_abort(
    kube: Kube, sandbox: Sandbox, dashboard: Dashboard, browser: Browser
) -> None:
    s = canary(kube, sandbox)
    s.when().applied().then().phase("Healthy")
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.goto(dashboard.url)

    # The overview, then the same page following a new revision without a reload.
    row = page.locator(f'tr[data-rollout="{kube.namespace}/web"]')
    expect(row.locator(".phase")).to_have_text("Healthy", timeout=WAIT_MS)
    expect(row.locator(".strategy")).to_have_text("Canary")
    expect(row.locator(".revision")).to_have_text("1")
    expect(page.locator("#live")).to_have_text("live")
    s.when().image("registry.example/web:2.0")
    expect(row.locator(".phase")).to_have_text("Paused", timeout=WAIT_MS)
    expect(row.locator(".step")).to_have_text("2/7")
    expect(row.locator(".weight")).to_have_text("20%")
    expect(row.locator(".revision")).to_have_text("2")
    screenshot(page, "overview")

    # The rollout's page: the current step marked, the weight charted, revisions with images and pods.
    row.locator(".name a").click()
    expect(page.locator("ol#steps li.current")).to_have_text("2. pause (until promoted)", timeout=WAIT_MS)
    expect(page.locator("ol#steps li.done")).to_have_count(1)
    expect(page.locator("#weight")).to_have_text("20% canary (verified)")
    chart = page.locator("#weight-chart circle")
    expect(chart.first).to_have_attribute("data-weight", "0")  # the Healthy start, all on stable
    expect(chart.last).to_have_attribute("data-weight", "20")
    revisions = page.locator("#revisions tbody tr")
    expect(revisions).to_have_count(2)
    expect(revisions.nth(0).locator(".images")).to_have_text("registry.example/web:2.0")
    expect(revisions.nth(1).locator(".images")).to_have_text("registry.example/web:1.0")
    expect(revisions.nth(0).locator("li.pod")).to_have_count(1, timeout=WAIT_MS)  # ceil(20% of 4)
    expect(revisions.nth(1).locator("li.pod")).to_have_count(4)

    # A confirmation declined writes nothing.
    asked = answer(page, accept=False)
    page.locator("button[data-action='promote']").click()
    assert asked and asked[0].startswith(f"Promote rollout {kube.namespace}/web?"), asked
    expect(page.locator("#result")).to_have_text("")
    assert kube.status("web").get("pauseConditions"), "a declined promote changed the rollout"

    # Promote, accepted: the step analysis runs, then the next pause; the page follows every step.
    asked = answer(page, accept=True)
    page.locator("button[data-action='promote']").click()
    expect(page.locator("#result")).to_have_text(
        re.compile(r"rollout web promoted: step 2/7 -> 3/7"), timeout=WAIT_MS
    )
    assert asked, "promote asked for no confirmation"
    expect(page.locator("ol#steps li.current")).to_have_text("5. pause (until promoted)", timeout=WAIT_MS)
    expect(page.locator("#weight")).to_have_text("40% canary (verified)")
    assert kube.status("web")["currentStepIndex"] == 4
    expect(chart.last).to_have_attribute("data-weight", "40")
    run = page.locator(".analysis-run").first
    expect(run.locator(".run-phase")).to_have_text("Successful", timeout=WAIT_MS)
    metric = run.locator(".metric[data-metric='success-rate']")
    expect(metric.locator(".criterion")).to_have_text("successCondition result[0] >= 0.9")
    expect(metric.locator("circle.measurement.Successful")).to_have_count(3)
    expect(metric.locator("line.threshold[data-threshold='0.9']")).to_have_count(1)
    expect(page.locator("#events tbody tr").first).to_be_visible(timeout=WAIT_MS)
    shot = screenshot(page, "rollout")
    if os.environ.get("TIDEGATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(shot, REPO / "docs" / "dashboard.png")

    # Abort, accepted: all traffic back to stable, Degraded, on the page and in the cluster.
    answer(page, accept=True)
    page.locator("button[data-action='abort']").click()
    expect(page.locator("#result")).to_have_text(
        re.compile(r"rollout web aborted: all traffic goes back to the stable revision"), timeout=WAIT_MS
    )
    expect(page.locator("#phase")).to_have_text("Degraded", timeout=WAIT_MS)
    expect(page.locator("#weight")).to_have_text(re.compile(r"^0% canary"), timeout=WAIT_MS)
    expect(chart.last).to_have_attribute("data-weight", "0")
    assert kube.status("web").get("abort") is True
    # The CLI's refusal comes back as it is: an aborted rollout cannot be promoted, only retried.
    answer(page, accept=True)
    page.locator("button[data-action='promote']").click()
    expect(page.locator("#result")).to_have_text(
        re.compile(r"^Refused: rollout web is aborted: use `tidegate retry web`"), timeout=WAIT_MS
    )
    screenshot(page, "aborted")

    # The other buttons, each the CLI's intent: retry starts the steps again; pause, resume, restart: spec.
    press(page, "retry", r"^rollout web retried: steps start again at 1/7, with a new round of analysis runs")
    expect(page.locator("ol#steps li.current")).to_have_text("2. pause (until promoted)", timeout=WAIT_MS)
    expect(page.locator("#phase")).to_have_text("Paused", timeout=WAIT_MS)
    assert kube.status("web").get("abort") is False
    press(page, "pause", r"^rollout web paused \(spec\.paused: true\)$")
    assert kube.rollout("web")["spec"]["paused"] is True
    press(
        page, "resume", r"^rollout web resumed \(spec\.paused: false\); it waits in a pause step at step 2/7"
    )
    assert kube.rollout("web")["spec"]["paused"] is False
    press(page, "restart", r"^rollout web restart requested \(restartAt .*once the rollout is complete")
    assert kube.rollout("web")["spec"].get("restartAt")
    page.goto(dashboard.url)
    expect(row.locator(".phase")).to_have_text("Paused", timeout=WAIT_MS)
    expect(row.locator(".step")).to_have_text("2/7")
    page.close()


def restricted_kubeconfig(kube: Kube, path: Path) -> str:
    """A ServiceAccount that may read Rollouts, ReplicaSets, AnalysisRuns, Events; not pods; no writes."""
    ns = kube.namespace
    kube.apply(
        [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "viewer"}},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "viewer"},
                "rules": [
                    {
                        "apiGroups": ["tidegate.io"],
                        "resources": ["rollouts", "analysisruns"],
                        "verbs": ["get", "list", "watch"],
                    },
                    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get", "list", "watch"]},
                    {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "viewer"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "viewer"},
                "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": ns}],
            },
        ]
    )
    token = kube.kubectl("create", "token", "viewer", "--duration=1h").stdout.strip()
    admin = yaml.safe_load(kube.sandbox.kubeconfig.read_text())
    cluster = admin["clusters"][0]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "viewer", "user": {"token": token}}],
                "contexts": [
                    {
                        "name": "viewer",
                        "context": {"cluster": cluster["name"], "user": "viewer", "namespace": ns},
                    }
                ],
                "current-context": "viewer",
            }
        )
    )
    return f"system:serviceaccount:{ns}:viewer"


def test_what_rbac_refuses_the_dashboard_says_so(
    kube: Kube, sandbox: Sandbox, browser: Browser, tmp_path: Path
) -> None:
    s = canary(kube, sandbox)
    s.when().applied().then().phase("Healthy")
    s.when().image("registry.example/web:2.0").then().weight(20)
    user = restricted_kubeconfig(kube, tmp_path / "viewer.kubeconfig")
    d = Dashboard(
        tmp_path / "viewer.kubeconfig", kube.namespace, _log_dir() / f"dashboard-viewer-{kube.namespace}.log"
    )
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(d.url)
        row = page.locator(f'tr[data-rollout="{kube.namespace}/web"]')
        expect(row.locator(".phase")).to_have_text("Paused", timeout=WAIT_MS)
        refused = page.locator("#errors li[data-kind='pods']")
        expect(refused).to_have_text(
            re.compile(rf'pods is forbidden: User "{user}" cannot list resource "pods"')
        )
        row.locator(".name a").click()
        expect(page.locator("ol#steps li.current")).to_have_text("2. pause (until promoted)", timeout=WAIT_MS)
        expect(refused).to_be_visible()
        expect(page.locator("#revisions .no-pods").first).to_have_text("not readable (see above)")
        answer(page, accept=True)
        page.locator("button[data-action='abort']").click()
        expect(page.locator("#result")).to_have_text(
            re.compile(
                rf"^Forbidden by RBAC: aborting web: .*forbidden: "
                rf'User "{user}" cannot patch resource "rollouts/status"'
            ),
            timeout=WAIT_MS,
        )
        screenshot(page, "rbac")
        page.close()
    finally:
        d.stop()
    status = kube.status("web")
    assert not status.get("abort") and status.get("pauseConditions"), f"the refused abort changed: {status}"

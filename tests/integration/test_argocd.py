"""deploy/argocd/ and deploy/flux/: health checks and resource actions, run as Argo CD runs them.

The scripts run on gopher-lua (the interpreter Argo CD embeds) through hack/lua's runner,
which reproduces Argo CD's way: an argocd-cm customization without the standard libraries
(base, table and a safe os only), the result encoded by gopher-json, an action's result
turned into a JSON merge patch against the live object and split in two — the status
subresource first, then the rest (Argo CD's `Server.patchResource`). The live tests feed
the scripts real Rollouts in every phase on the sandbox, and apply each action's patches
there to see the operator respond. The Flux example's healthCheckExprs are evaluated on the
same live Rollouts by a CEL interpreter (cel-python; Flux itself is not run here).
"""

from __future__ import annotations

import copy
import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from celpy.adapter import json_to_cel

from tests.e2e.dsl import _load
from tests.kube import REPO, Kube, wait_until
from tidegate.cli import control

ARGOCD = REPO / "deploy" / "argocd"
ROLLOUT = ARGOCD / "rollout"
STALE = "Waiting for rollout spec update to be observed"
NO_STATUS = "Waiting for the Tidegate operator to report the rollout's status"
PAUSED = [{"reason": "CanaryPauseStep"}]
CLI = {
    "abort": control.decide_abort,
    "retry": control.decide_retry,
    "promote": lambda ro: control.decide_promote(ro, full=False),
    "promote-full": lambda ro: control.decide_promote(ro, full=True),
    "pause": control.decide_pause,
    "resume": control.decide_resume,
}
HOST = "examples/canary/services.yaml", "examples/canary/virtualservice.yaml"


@cache
def runner() -> str:
    """The gopher-lua runner, built by hack/lua/build.sh into the cache (a no-op when warm)."""
    out = subprocess.run(
        ["bash", str(REPO / "hack/lua/build.sh")], check=True, capture_output=True, text=True
    ).stdout
    return out.strip().splitlines()[-1]


def lua(mode: str, script: Path, obj: dict[str, Any]) -> Any:
    proc = subprocess.run(
        [runner(), mode, str(script)], input=json.dumps(obj), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, f"{script.relative_to(REPO)} on gopher-lua: {proc.stderr.strip()}"
    return json.loads(proc.stdout)


def health(obj: dict[str, Any]) -> tuple[str, str]:
    hs = lua("health", ROLLOUT / "health.lua", obj)
    return hs.get("status", ""), hs.get("message", "")


def offered(obj: dict[str, Any]) -> set[str]:
    """The actions Argo CD's UI would enable for the object."""
    actions = lua("discovery", ROLLOUT / "actions/discovery.lua", obj)
    return {name for name, a in actions.items() if not a.get("disabled")}


def run_action(kube: Kube, name: str, action: str) -> dict[str, Any]:
    """What Argo CD does for a resource action: run it on the live object, patch the difference."""
    live = kube.rollout(name)
    result = lua("action", ROLLOUT / f"actions/{action}/action.lua", live)
    if result["statusPatch"] is not None:
        kube.kubectl(
            "patch",
            f"rollout.tidegate.io/{name}",
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(result["statusPatch"]),
        )
    if result["patch"] is not None:
        kube.kubectl(
            "patch", f"rollout.tidegate.io/{name}", "--type=merge", "-p", json.dumps(result["patch"])
        )
    return dict(result)


def flux(obj: dict[str, Any]) -> str:
    """Which of deploy/flux's healthCheckExprs hold for the object: inProgress, failed or current."""
    doc = yaml.safe_load((REPO / "deploy/flux/kustomization.yaml").read_text())
    (check,) = doc["spec"]["healthCheckExprs"]
    env = celpy.Environment()
    activation = {key: json_to_cel(value) for key, value in obj.items()}
    held = [
        kind
        for kind in ("inProgress", "failed", "current")
        if bool(env.program(env.compile(check[kind])).evaluate(activation))
    ]
    assert len(held) == 1, f"{held} hold at once for status {obj.get('status')}"
    return held[0]


def _rollout(status: dict[str, Any] | None, generation: int = 2, **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "tidegate.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "shop", "generation": generation},
        "spec": {
            "replicas": 4,
            "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
            **spec,
        },
    }
    if status is not None:
        obj["status"] = status
    return obj


@pytest.mark.parametrize(
    ("status", "generation", "expected"),
    [
        (None, 1, ("Progressing", NO_STATUS)),
        ({"observedGeneration": 1, "phase": "Healthy", "message": ""}, 2, ("Progressing", STALE)),
        ({"observedGeneration": 2, "phase": "Healthy"}, 2, ("Healthy", "")),
        (
            {"observedGeneration": 2, "phase": "Paused", "message": "paused at step 2/2"},
            2,
            ("Suspended", "paused at step 2/2"),
        ),
        (
            {"observedGeneration": 2, "phase": "Progressing", "message": "step 1/2: waiting"},
            2,
            ("Progressing", "step 1/2: waiting"),
        ),
        ({"observedGeneration": 2, "phase": "Degraded", "message": "aborted"}, 2, ("Degraded", "aborted")),
        (
            {"observedGeneration": 2, "phase": "Sideways", "message": "x"},
            2,
            ("Unknown", "unknown phase Sideways: x"),
        ),
    ],
)
def test_health_maps_the_operator_phase_and_message(
    status: dict[str, Any] | None, generation: int, expected: tuple[str, str]
) -> None:
    assert health(_rollout(status, generation)) == expected


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        (None, "Progressing"),
        ("Pending", "Progressing"),
        ("Running", "Progressing"),
        ("Successful", "Healthy"),
        ("Failed", "Degraded"),
        ("Error", "Degraded"),
        ("Inconclusive", "Unknown"),
    ],
)
def test_analysis_run_health(phase: str | None, expected: str) -> None:
    run = {"metadata": {"name": "r", "generation": 1}, "status": {"phase": phase} if phase else None}
    assert lua("health", ARGOCD / "analysisrun/health.lua", run)["status"] == expected


@pytest.mark.parametrize(
    ("status", "spec", "expected"),
    [
        # fully promoted: nothing in progress to promote or abort
        ({"stableRS": "a", "currentPodHash": "a"}, {}, {"pause", "restart"}),
        # mid-canary, paused at a step
        (
            {"stableRS": "a", "currentPodHash": "b", "pauseConditions": PAUSED},
            {},
            {"promote", "promote-full", "abort", "pause", "restart"},
        ),
        # aborted: only retry (and the spec switches)
        ({"stableRS": "a", "currentPodHash": "b", "abort": True}, {}, {"retry", "pause", "restart"}),
        # held by spec.paused: resume instead of pause
        (
            {"stableRS": "a", "currentPodHash": "b"},
            {"paused": True},
            {"promote", "promote-full", "abort", "resume", "restart"},
        ),
    ],
)
def test_discovery_offers_what_the_cli_would_not_refuse(
    status: dict[str, Any], spec: dict[str, Any], expected: set[str]
) -> None:
    assert offered(_rollout(status, **spec)) == expected


@pytest.mark.parametrize(
    ("action", "status", "spec", "status_patch", "spec_patch"),
    [
        ("abort", {"stableRS": "a"}, {}, {"abort": True}, None),
        ("retry", {"abort": True}, {}, {"abort": False}, None),
        ("promote-full", {"phase": "Progressing"}, {}, {"promoteFull": True}, None),
        (
            "promote-full",
            {"pauseConditions": PAUSED},
            {"paused": True},
            {"pauseConditions": [], "promoteFull": True},
            {"paused": False},
        ),
        ("promote", {"currentStepIndex": 1, "pauseConditions": PAUSED}, {}, {"pauseConditions": []}, None),
        ("promote", {"currentStepIndex": 0}, {}, {"skipStep": 0}, None),
        ("promote", {"currentStepIndex": 0, "skipStep": 0}, {}, None, None),
        ("promote", {"currentStepIndex": 2}, {}, None, None),  # past the last step: nothing to skip
        (
            "promote",
            {"currentStepIndex": 1, "pauseConditions": PAUSED},
            {"paused": True},
            {"pauseConditions": []},
            {"paused": False},
        ),
        ("pause", {}, {}, None, {"paused": True}),
        ("resume", {"pauseConditions": PAUSED}, {"paused": True}, None, {"paused": False}),
    ],
)
def test_each_action_writes_the_cli_intent(
    action: str,
    status: dict[str, Any],
    spec: dict[str, Any],
    status_patch: dict[str, Any] | None,
    spec_patch: dict[str, Any] | None,
) -> None:
    result = lua("action", ROLLOUT / f"actions/{action}/action.lua", _rollout(status, **spec))
    got_status = (result["statusPatch"] or {}).get("status")
    got_spec = (result["patch"] or {}).get("spec")
    assert (got_status, got_spec) == (status_patch, spec_patch), result
    # The CLI decides the same write (where it acts; it refuses what the action leaves alone).
    try:
        decision = CLI[action](_rollout(status, **spec))
    except control.Refusal:
        assert (got_status, got_spec) == (None, None)
    else:
        assert (decision.status or None, decision.spec or None) == (got_status, got_spec)


def test_promote_of_a_blue_green_preview_that_is_not_paused_promotes_fully() -> None:
    obj = _rollout({"currentPodHash": "b", "stableRS": "a"})
    obj["spec"]["strategy"] = {"blueGreen": {"activeService": "x"}}
    result = lua("action", ROLLOUT / "actions/promote/action.lua", obj)
    assert result["statusPatch"] == {"status": {"promoteFull": True}}


def test_restart_writes_an_rfc3339_time() -> None:
    result = lua("action", ROLLOUT / "actions/restart/action.lua", _rollout({}))
    restart_at = result["patch"]["spec"]["restartAt"]
    assert result["statusPatch"] is None
    assert len(restart_at) == 20 and restart_at[10] == "T" and restart_at.endswith("Z"), restart_at


def test_the_argocd_cm_patch_is_rendered_from_these_scripts() -> None:
    proc = subprocess.run(
        ["python3", str(REPO / "hack/argocd/render.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


# -- live, on the sandbox -----------------------------------------------------------------


def _canary() -> dict[str, Any]:
    doc = copy.deepcopy(_load("examples/canary/rollout.yaml", "Rollout"))
    canary = doc["spec"]["strategy"]["canary"]
    canary["steps"] = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 40}, {"pause": {}}]
    canary["abortScaleDownDelaySeconds"] = 2
    canary["scaleDownDelaySeconds"] = 2
    return doc


def _at(status: dict[str, Any], index: int, phase: str) -> bool:
    return status.get("currentStepIndex") == index and status.get("phase") == phase


def _observed(rollout: dict[str, Any]) -> bool:
    return bool((rollout.get("status") or {}).get("observedGeneration") == rollout["metadata"]["generation"])


def _health_is(kube: Kube, name: str, status: str, contains: str = "") -> tuple[str, str]:
    def check() -> tuple[str, str] | None:
        hs = health(kube.rollout(name))
        return hs if hs[0] == status and contains in hs[1] else None

    seen: list[tuple[str, str]] = []

    def recorded() -> tuple[str, str] | None:
        try:
            return check()
        finally:
            seen.append(health(kube.rollout(name)))

    try:
        found = wait_until(recorded, 90, what=f"Argo CD health {status} ({contains!r})")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; health.lua said: {seen[-1] if seen else None}") from None
    live = kube.rollout(name)
    if health(live)[0] == status:  # the same object, judged by the Flux example too
        expected = {"Healthy": "current", "Degraded": "failed"}.get(status, "inProgress")
        assert flux(live) == expected, live.get("status")
    return found


@pytest.mark.sandbox
def test_health_and_actions_on_a_live_canary(kube: Kube) -> None:
    for path in HOST:
        kube.apply_file(REPO / path)
    kube.apply(_canary())
    assert _health_is(kube, "web", "Healthy") == ("Healthy", kube.status("web").get("message", ""))
    assert offered(kube.rollout("web")) == {"pause", "restart"}

    # A new image: step 1 sets the weight, step 2 pauses -> Suspended, with the operator's message.
    kube.patch(
        "rollout.tidegate.io",
        "web",
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "web", "image": "registry.example/web:2.0"}]}}
            }
        },
    )
    _, message = _health_is(kube, "web", "Suspended", "step 2/4")
    assert message == kube.status("web")["message"]
    assert offered(kube.rollout("web")) == {"promote", "promote-full", "abort", "pause", "restart"}

    # promote: the operator moves to step 3 (weight 40) and pauses at step 4.
    run_action(kube, "web", "promote")
    wait_until(lambda: _at(kube.status("web"), 3, "Paused"), 60, what="step index 3, Paused")
    assert kube.status("web")["canary"]["weights"]["canary"]["weight"] == 40

    # pause / resume: spec.paused, which the operator reports as a paused rollout and then lets go.
    run_action(kube, "web", "pause")
    assert kube.rollout("web")["spec"]["paused"] is True
    _health_is(kube, "web", "Suspended")
    assert "resume" in offered(kube.rollout("web")) and "pause" not in offered(kube.rollout("web"))
    run_action(kube, "web", "resume")
    assert kube.rollout("web")["spec"]["paused"] is False
    wait_until(lambda: _observed(kube.rollout("web")), 30, what="the resume observed")

    # abort -> Degraded with the operator's message; all traffic back to stable.
    run_action(kube, "web", "abort")
    _, message = _health_is(kube, "web", "Degraded", "abort")
    assert kube.status("web")["canary"]["weights"]["canary"]["weight"] == 0
    assert offered(kube.rollout("web")) == {"retry", "pause", "restart"}

    # retry: the steps start again -> paused at step 2 with weight 20.
    run_action(kube, "web", "retry")
    assert kube.status("web").get("abort") is False
    _health_is(kube, "web", "Suspended", "step 2/4")
    assert kube.status("web")["canary"]["weights"]["canary"]["weight"] == 20

    # promote-full: the new revision becomes stable -> Healthy.
    run_action(kube, "web", "promote-full")
    _health_is(kube, "web", "Healthy")
    st = kube.status("web")
    assert st["stableRS"] == st["currentPodHash"]

    # restart: spec.restartAt, which the operator carries out (status.restartedAt).
    result = run_action(kube, "web", "restart")
    at = result["patch"]["spec"]["restartAt"]
    wait_until(lambda: kube.status("web").get("restartedAt") == at, 90, what=f"status.restartedAt {at}")
    _health_is(kube, "web", "Healthy")


@pytest.mark.sandbox
def test_health_while_canary_pods_cannot_start_is_progressing(kube: Kube) -> None:
    for path in HOST:
        kube.apply_file(REPO / path)
    kube.apply(_canary())
    _health_is(kube, "web", "Healthy")
    # The new pods fit no node: the first step waits for them, the operator says so.
    kube.patch(
        "rollout.tidegate.io",
        "web",
        {
            "spec": {
                "template": {
                    "spec": {
                        "nodeSelector": {"tidegate.io/no-such-node": "x"},
                        "containers": [{"name": "web", "image": "registry.example/web:2.0"}],
                    }
                }
            }
        },
    )
    _, message = _health_is(kube, "web", "Progressing", "step 1/4")
    assert "pods" in message, message

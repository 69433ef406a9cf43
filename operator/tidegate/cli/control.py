"""Steer a Rollout: promote, abort, retry, pause, resume, restart, set image, undo.

Runtime control (promote, abort, retry, and the pause conditions that resume clears)
is written to the Rollout's status subresource, so a GitOps sync of the spec never
undoes it; `pause`/`resume` (spec.paused), `restart` (spec.restartAt), `set image` and
`undo` (spec.template) change the spec, as in Argo Rollouts.

Each command decides in a pure function (`decide_*`: the Rollout in, the patches and
the words out, or a `Refusal`), then writes with the resourceVersion it read as a
precondition; on a conflict (the operator wrote in between) it reads again and decides
again, so a promote never skips two steps.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import click

from tidegate.cli._kube import CliError, Cluster, Target, api_errors, api_message, cluster_options
from tidegate.cli.view import (
    Obj,
    hash_of,
    is_fresh,
    phase_of,
    revision_of,
    step_index,
    steps_of,
    strategy_of,
)
from tidegate.core.hashing import HASH_LABEL, pod_template_hash

ATTEMPTS = 5
FRESH_SECONDS = 10


class Refusal(Exception):
    """The command does not apply to the Rollout as it is; the message says why and what to do."""


@dataclass(frozen=True)
class Decision:
    message: str
    status: Obj = field(default_factory=dict)
    """JSON merge patch of the status subresource."""
    spec: Obj = field(default_factory=dict)
    """JSON merge patch of the spec."""
    json_patch: list[Obj] = field(default_factory=list)
    """RFC 6902 operations on the Rollout (whole-template replacement)."""


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _name(rollout: Obj) -> str:
    return str((rollout.get("metadata") or {}).get("name"))


def _status(rollout: Obj) -> Obj:
    return dict(rollout.get("status") or {})


def _fully_promoted(rollout: Obj) -> bool:
    st = _status(rollout)
    return bool(st.get("stableRS")) and st.get("stableRS") == st.get("currentPodHash")


def _step_words(index: int, n: int) -> str:
    return f"{index + 1}/{n}" if index < n else "promotion"


# ---------------------------------------------------------------------------
# Decisions (pure)


def decide_promote(rollout: Obj, full: bool, now: datetime) -> Decision:
    name, st = _name(rollout), _status(rollout)
    paused_by_spec = bool((rollout.get("spec") or {}).get("paused"))
    conditions = list(st.get("pauseConditions") or [])
    if st.get("abort"):
        raise Refusal(f"rollout {name} is aborted: use `tidegate retry {name}` to start its steps again")
    if _fully_promoted(rollout):
        raise Refusal(
            f"rollout {name} is {phase_of(rollout)} and fully promoted "
            f"(revision {st.get('stableRS')} is stable): nothing to promote"
        )
    status: Obj = {}
    spec: Obj = {}
    done: list[str] = []
    if paused_by_spec:
        spec["paused"] = False
        done.append("unpaused (spec.paused: false)")
    if conditions:
        status["pauseConditions"] = []
    reasons = {c.get("reason") for c in conditions}

    if strategy_of(rollout) == "BlueGreen":
        bg = st.get("blueGreen") or {}
        preview = st.get("currentPodHash")
        if bg.get("promoting") and not (conditions or paused_by_spec):
            raise Refusal(f"rollout {name} is already promoting: {st.get('message') or 'in progress'}")
        if full or not (conditions or paused_by_spec):
            status["promoteFull"] = True
            done.append(f"promoting now: revision {preview} scales to full size, then becomes active")
        elif "BlueGreenPause" in reasons:
            done.append(f"preview {preview} becomes active once it runs at full size")
        elif conditions:
            done.append("pause cleared")
        return Decision(f"rollout {name} promoted: " + "; ".join(done), status=status, spec=spec)

    steps = steps_of(rollout)
    n, index = len(steps), step_index(rollout)
    if full:
        status["promoteFull"] = True
        done.append(f"step {_step_words(index, n)} -> full promotion (remaining steps skipped)")
    elif "CanaryPauseStep" in reasons:
        done.append(f"step {_step_words(index, n)} -> {_step_words(index + 1, n)}")
    elif conditions:
        what = "an inconclusive analysis" if "InconclusiveAnalysisRun" in reasons else "a pause"
        done.append(f"resumed after {what} at step {_step_words(index, n)}")
    elif paused_by_spec:
        pass  # unpausing is the promotion; the step itself carries on
    elif st.get("controllerPause"):
        raise Refusal(
            f"rollout {name}: step {_step_words(index, n)} is already promoted; the operator moves on"
        )
    elif index < n:
        status["currentStepIndex"] = index + 1
        status["stepStartedAt"] = iso(now)
        done.append(f"step {_step_words(index, n)} -> {_step_words(index + 1, n)} (step skipped)")
    else:
        raise Refusal(
            f"rollout {name} is past its last step and promoting already: "
            f"{st.get('message') or phase_of(rollout)}"
        )
    return Decision(f"rollout {name} promoted: " + "; ".join(done), status=status, spec=spec)


def decide_abort(rollout: Obj) -> Decision:
    name, st = _name(rollout), _status(rollout)
    if st.get("abort"):
        since = f" since {st['abortedAt']}" if st.get("abortedAt") else ""
        raise Refusal(f"rollout {name} is already aborted{since}; `tidegate retry {name}` starts it again")
    if _fully_promoted(rollout):
        raise Refusal(
            f"rollout {name} is {phase_of(rollout)} with nothing in progress "
            f"(revision {st.get('stableRS')} is stable): nothing to abort"
        )
    where = (
        "the active Service stays on" if strategy_of(rollout) == "BlueGreen" else "all traffic goes back to"
    )
    return Decision(
        f"rollout {name} aborted: {where} the stable revision {st.get('stableRS')}",
        status={"abort": True},
    )


def decide_retry(rollout: Obj, now: datetime) -> Decision:
    name, st = _name(rollout), _status(rollout)
    if not st.get("abort"):
        raise Refusal(f"rollout {name} is not aborted (phase {phase_of(rollout)}): nothing to retry")
    status: Obj = {
        "abort": False,
        "abortedAt": None,
        # abortedRevision stays: the operator recognises a retry by it (abort false on the
        # aborted revision) and starts a new round of analysis runs.
        "pauseConditions": [],
        "controllerPause": False,
        "promoteFull": False,
        # The progress deadline counts from the retry, not from before the abort.
        "progressAt": iso(now),
    }
    if strategy_of(rollout) == "BlueGreen":
        status["blueGreen"] = {"promoting": False}
        status["stepStartedAt"] = None  # the auto-promotion wait starts over
        what = "the preview starts again"
    else:
        status["currentStepIndex"] = 0
        status["stepStartedAt"] = iso(now)
        n = len(steps_of(rollout))
        what = f"steps start again at 1/{n}" if n else "promotion starts again"
    return Decision(f"rollout {name} retried: {what}", status=status)


def decide_pause(rollout: Obj) -> Decision:
    name = _name(rollout)
    if (rollout.get("spec") or {}).get("paused"):
        return Decision(f"rollout {name} is already paused (spec.paused: true)")
    return Decision(f"rollout {name} paused (spec.paused: true)", spec={"paused": True})


def decide_resume(rollout: Obj) -> Decision:
    name, st = _name(rollout), _status(rollout)
    spec: Obj = {}
    status: Obj = {}
    done: list[str] = []
    if (rollout.get("spec") or {}).get("paused"):
        spec["paused"] = False
        done.append("spec.paused: false")
    conditions = st.get("pauseConditions") or []
    if conditions:
        status["pauseConditions"] = []
        reasons = ", ".join(sorted({str(c.get("reason")) for c in conditions}))
        done.append(f"pause conditions cleared ({reasons})")
    if not done:
        return Decision(f"rollout {name} is not paused: nothing to resume")
    return Decision(f"rollout {name} resumed: " + "; ".join(done), status=status, spec=spec)


def decide_restart(rollout: Obj, now: datetime) -> Decision:
    at = iso(now)
    return Decision(
        f"rollout {_name(rollout)} restarting: pods created before {at} are replaced one at a time",
        spec={"restartAt": at},
    )


def decide_set_image(rollout: Obj, images: dict[str, str]) -> Decision:
    name = _name(rollout)
    pod_spec = ((rollout.get("spec") or {}).get("template") or {}).get("spec") or {}
    found: dict[str, tuple[str, int, str]] = {}
    for kind in ("containers", "initContainers"):
        for i, c in enumerate(pod_spec.get(kind) or []):
            found.setdefault(str(c.get("name")), (kind, i, str(c.get("image"))))
    unknown = sorted(set(images) - set(found))
    if unknown:
        raise Refusal(
            f"rollout {name} has no container {', '.join(unknown)}; "
            f"its containers: {', '.join(found) or 'none'}"
        )
    operations: list[Obj] = []
    done: list[str] = []
    for container, image in images.items():
        kind, i, old = found[container]
        if old == image:
            done.append(f"{container} already runs {image}")
            continue
        operations.append({"op": "replace", "path": f"/spec/template/spec/{kind}/{i}/image", "value": image})
        done.append(f"{container} {old} -> {image}")
    return Decision(f"rollout {name} image: " + "; ".join(done), json_patch=operations)


# Fields the API server fills into a ReplicaSet's pod template when the user left them out.
_POD_DEFAULTS: dict[str, Any] = {
    "restartPolicy": "Always",
    "terminationGracePeriodSeconds": 30,
    "dnsPolicy": "ClusterFirst",
    "securityContext": {},
    "schedulerName": "default-scheduler",
}
_CONTAINER_DEFAULTS: dict[str, Any] = {
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
    "resources": {},
}
_PROBE_DEFAULTS: dict[str, Any] = {
    "timeoutSeconds": 1,
    "periodSeconds": 10,
    "successThreshold": 1,
    "failureThreshold": 3,
}
MAX_DEFAULT_COMBINATIONS = 10


def _default_pull_policy(image: str) -> str:
    name = image.rsplit("/", 1)[-1]
    if "@" in name:
        return "IfNotPresent"
    tag = name.split(":", 1)[1] if ":" in name else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


Path_ = tuple[str | int, ...]


def _defaults_in(template: Obj) -> list[Path_]:
    """Paths of values in `template` that equal what the API server would have defaulted."""
    paths: list[Path_] = []
    spec = template.get("spec") or {}
    paths += [("spec", k) for k, v in _POD_DEFAULTS.items() if spec.get(k) == v]
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind) or []):
            base: Path_ = ("spec", kind, i)
            paths += [(*base, k) for k, v in _CONTAINER_DEFAULTS.items() if c.get(k) == v]
            if c.get("imagePullPolicy") == _default_pull_policy(str(c.get("image") or "")):
                paths.append((*base, "imagePullPolicy"))
            for j, port in enumerate(c.get("ports") or []):
                if port.get("protocol") == "TCP":
                    paths.append((*base, "ports", j, "protocol"))
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                p = c.get(probe)
                if isinstance(p, dict):
                    paths += [(*base, probe, k) for k, v in _PROBE_DEFAULTS.items() if p.get(k) == v]
                    if (p.get("httpGet") or {}).get("scheme") == "HTTP":
                        paths.append((*base, probe, "httpGet", "scheme"))
    return paths


def _without(template: Obj, paths: tuple[Path_, ...]) -> Obj:
    out = copy.deepcopy(template)
    for path in paths:
        node: Any = out
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1], None)
    return out


def original_template(rs: Obj) -> tuple[Obj, bool]:
    """The pod template a ReplicaSet was created from, and whether that is certain.

    The ReplicaSet holds the template plus the hash label plus API-server defaults
    (imagePullPolicy, terminationMessagePath, ...). The template the user wrote is the
    one that hashes to the ReplicaSet's pod-template hash: try the stored template
    without each combination of default values (all of them first) until one does.
    Going back to the stable template with the same hash is what makes undo a fast
    rollback (no steps) rather than a new revision.
    """
    template = copy.deepcopy((rs.get("spec") or {}).get("template") or {})
    meta = template.setdefault("metadata", {})
    meta.pop("creationTimestamp", None)
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != HASH_LABEL}
    meta["labels"] = labels
    if not meta.get("labels"):
        meta.pop("labels")
    want = hash_of(rs)
    paths = _defaults_in(template)
    if len(paths) <= MAX_DEFAULT_COMBINATIONS:
        subsets: Any = itertools.chain.from_iterable(
            itertools.combinations(paths, size) for size in range(len(paths), -1, -1)
        )
    else:
        subsets = [tuple(paths), ()]
    for subset in subsets:
        candidate = _without(template, subset)
        if pod_template_hash(candidate) == want:
            return candidate, True
    return _without(template, tuple(paths)), False


def decide_undo(rollout: Obj, replica_sets: list[Obj], to_revision: int | None) -> Decision:
    name = _name(rollout)
    current_hash = pod_template_hash((rollout.get("spec") or {}).get("template") or {})
    by_revision = {revision_of(rs): rs for rs in replica_sets if revision_of(rs) > 0}
    if not by_revision:
        raise Refusal(f"rollout {name} has no revisions (ReplicaSets) to roll back to")
    current = next((revision_of(rs) for rs in replica_sets if hash_of(rs) == current_hash), None)
    if current is None:
        current = max(by_revision) + 1  # the spec's template has no ReplicaSet yet
    if to_revision is None:
        earlier = [r for r in by_revision if r < current]
        if not earlier:
            raise Refusal(
                f"rollout {name} runs revision {current}, the first one: nothing earlier to undo to"
            )
        to_revision = max(earlier)
    rs = by_revision.get(to_revision)
    if rs is None:
        known = ", ".join(str(r) for r in sorted(by_revision))
        raise Refusal(f"rollout {name} has no revision {to_revision} (revisions kept: {known})")
    if hash_of(rs) == current_hash:
        raise Refusal(f"rollout {name} already runs the template of revision {to_revision}")
    template, exact = original_template(rs)
    message = f"rollout {name} rolled back to revision {to_revision}"
    if not exact:
        message += (
            " (note: its stored template could not be matched to its pod-template hash"
            f" {hash_of(rs)}; the operator will treat it as a new revision)"
        )
    return Decision(message, json_patch=[{"op": "replace", "path": "/spec/template", "value": template}])


# ---------------------------------------------------------------------------
# Carrying out


def read_fresh(cluster: Cluster, name: str, timeout: float = FRESH_SECONDS) -> Obj:
    """The Rollout once its status describes its latest spec; waits (watch) up to `timeout`.

    Runtime control decides from status (step index, stable hash); deciding from a
    status of an older spec would promote the wrong revision.
    """
    rollout = cluster.rollout(name)
    if is_fresh(rollout):
        return rollout
    from kubernetes import watch

    w = watch.Watch()  # type: ignore[no-untyped-call]
    with api_errors(f"watching rollout {name}"):
        for event in w.stream(  # type: ignore[no-untyped-call]
            cluster.custom.list_namespaced_custom_object,
            "tidegate.io",
            "v1alpha1",
            cluster.namespace,
            "rollouts",
            field_selector=f"metadata.name={name}",
            resource_version=(rollout.get("metadata") or {}).get("resourceVersion"),
            timeout_seconds=max(1, int(timeout)),
        ):
            obj = event.get("raw_object") or {}
            if event.get("type") in ("ADDED", "MODIFIED"):
                rollout = obj
                if is_fresh(rollout):
                    w.stop()  # type: ignore[no-untyped-call]
                    return rollout
    st = rollout.get("status") or {}
    raise CliError(
        f"rollout {name}: the operator has not caught up with generation "
        f"{(rollout.get('metadata') or {}).get('generation')} yet (status is of generation "
        f"{st.get('observedGeneration')}); is the operator running? Try again in a moment"
    )


def carry_out(
    cluster: Cluster, name: str, decide: Callable[[Obj], Decision], *, fresh: bool, what: str
) -> Decision:
    """Read, decide, write with the read resourceVersion as precondition; on conflict, again."""
    from kubernetes.client.exceptions import ApiException

    for _attempt in range(ATTEMPTS):
        rollout = read_fresh(cluster, name) if fresh else cluster.rollout(name)
        try:
            decision = decide(rollout)
        except Refusal as exc:
            raise CliError(str(exc)) from exc
        version = (rollout.get("metadata") or {}).get("resourceVersion")
        try:
            with api_errors(f"{what} {name}"):
                try:
                    if decision.status:
                        cluster.patch_status(name, decision.status, version)
                        version = None  # the spec part below does not depend on what was read
                    if decision.json_patch:
                        ops = list(decision.json_patch)
                        if version:
                            ops.append(
                                {"op": "replace", "path": "/metadata/resourceVersion", "value": version}
                            )
                        cluster.json_patch(name, ops)
                    if decision.spec:
                        cluster.patch_spec(name, decision.spec, version)
                except ApiException as exc:
                    if exc.status == 409:
                        raise _Conflict(api_message(exc)) from exc
                    raise
        except _Conflict:
            continue
        return decision
    raise CliError(f"{what} {name}: the rollout kept changing under us ({ATTEMPTS} conflicts); try again")


class _Conflict(Exception):
    pass


def _run(target: Target, name: str, decide: Callable[[Obj], Decision], *, fresh: bool, what: str) -> None:
    cluster = target.connect()
    decision = carry_out(cluster, name, decide, fresh=fresh, what=what)
    click.echo(decision.message)


# ---------------------------------------------------------------------------
# Commands


@click.command("promote")
@click.argument("name")
@click.option("--full", is_flag=True, help="Skip all remaining steps and analysis: go to 100% now.")
@cluster_options()
def promote(name: str, full: bool, target: Target) -> None:
    """Promote a Rollout: end the current pause (or skip the current step), or with
    --full skip every remaining step.

    A paused rollout has its pause conditions cleared (and spec.paused set to false);
    a canary that is not paused skips its current step. Refused when the rollout is
    fully promoted or aborted (use retry). Written to the status subresource, so a
    GitOps sync never reverts it.

    \b
    Example:
      tidegate promote web
      tidegate promote web --full -n shop
    """
    _run(target, name, lambda r: decide_promote(r, full, datetime.now(UTC)), fresh=True, what="promoting")


@click.command("abort")
@click.argument("name")
@cluster_options()
def abort(name: str, target: Target) -> None:
    """Abort a Rollout: all traffic back to the stable version (blue-green: the active
    Service stays), the new pods scaled down after the abort delay; phase Degraded.

    \b
    Example:
      tidegate abort web
      tidegate retry web    # later, to start the steps again
    """
    _run(target, name, decide_abort, fresh=True, what="aborting")


@click.command("retry")
@click.argument("name")
@cluster_options()
def retry(name: str, target: Target) -> None:
    """Retry an aborted Rollout: its steps start again from the first.

    \b
    Example:
      tidegate retry web
    """
    _run(target, name, lambda r: decide_retry(r, datetime.now(UTC)), fresh=True, what="retrying")


@click.command("pause")
@click.argument("name")
@cluster_options()
def pause(name: str, target: Target) -> None:
    """Pause a Rollout (spec.paused: true): it stays at its current step until resumed.

    \b
    Example:
      tidegate pause web
      tidegate resume web
    """
    _run(target, name, decide_pause, fresh=False, what="pausing")


@click.command("resume")
@click.argument("name")
@cluster_options()
def resume(name: str, target: Target) -> None:
    """Resume a Rollout: spec.paused: false, and its pause conditions cleared.

    \b
    Example:
      tidegate resume web
    """
    _run(target, name, decide_resume, fresh=False, what="resuming")


@click.command("restart")
@click.argument("name")
@cluster_options()
def restart(name: str, target: Target) -> None:
    """Restart a Rollout's pods (spec.restartAt: now): pods older than now are
    replaced one at a time, honouring PodDisruptionBudgets.

    \b
    Example:
      tidegate restart web
    """
    _run(target, name, lambda r: decide_restart(r, datetime.now(UTC)), fresh=False, what="restarting")


@click.group("set")
def set_group() -> None:
    """Change a Rollout's spec.

    \b
    Example:
      tidegate set image web app=example/web:2
    """


def _parse_images(pairs: tuple[str, ...]) -> dict[str, str]:
    images: dict[str, str] = {}
    for pair in pairs:
        container, sep, image = pair.partition("=")
        if not sep or not container or not image:
            raise click.BadParameter(f"{pair!r}: write CONTAINER=IMAGE", param_hint="CONTAINER=IMAGE")
        images[container] = image
    return images


@set_group.command("image")
@click.argument("name")
@click.argument("pairs", nargs=-1, required=True, metavar="CONTAINER=IMAGE...")
@cluster_options()
def set_image(name: str, pairs: tuple[str, ...], target: Target) -> None:
    """Set the image of containers (or init containers) of a Rollout's pod template:
    a new revision, rolled out by the Rollout's strategy.

    \b
    Example:
      tidegate set image web app=example/web:2
      tidegate set image web app=example/web:2 sidecar=example/proxy:1.4
    """
    images = _parse_images(pairs)
    _run(target, name, lambda r: decide_set_image(r, images), fresh=False, what="setting the image of")


@click.command("undo")
@click.argument("name")
@click.option(
    "--to-revision", type=int, default=None, help="Revision to go back to (default: the previous one)."
)
@cluster_options()
def undo(name: str, to_revision: int | None, target: Target) -> None:
    """Roll back: the pod template of an earlier revision becomes the spec's template.
    Going back to the stable revision skips the steps (fast rollback).

    \b
    Example:
      tidegate undo web
      tidegate undo web --to-revision 3
    """
    cluster = target.connect()
    sets = cluster.replica_sets(name)
    decision = carry_out(
        cluster, name, lambda r: decide_undo(r, sets, to_revision), fresh=False, what="rolling back"
    )
    click.echo(decision.message)

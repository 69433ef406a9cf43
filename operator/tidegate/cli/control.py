"""Steer a Rollout: promote, abort, retry, pause, resume, restart, set image, undo.

Runtime control (promote, abort, retry) is written to the Rollout's status subresource,
so a GitOps sync of the spec never undoes it; `pause`/`resume` (spec.paused), `restart`
(spec.restartAt), `set image` and `undo` (spec.template) change the spec, as in Argo
Rollouts. The CLI writes only intents, never the operator's bookkeeping (step index,
start times, analysis rounds): `abort: true`, `abort: false` (retry), cleared
`pauseConditions` (end a pause), `skipStep: N` (complete step N), `promoteFull: true`.
Any client writing the same intent (kubectl patch, an Argo CD action, a script) gets
the same result.

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

from tidegate.cli._facts import (
    Obj,
    describe_step,
    hash_of,
    is_complete,
    is_fresh,
    phase_of,
    revision_of,
    step_index,
    steps_of,
    strategy_of,
)
from tidegate.cli._kube import CliError, Cluster, Target, api_errors
from tidegate.cli._options import cluster_options, rollout_names
from tidegate.cli._rest import ApiError
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


def decide_promote(rollout: Obj, full: bool) -> Decision:
    name, st = _name(rollout), _status(rollout)
    paused_by_spec = bool((rollout.get("spec") or {}).get("paused"))
    conditions = list(st.get("pauseConditions") or [])
    if st.get("abort") and full and not _fully_promoted(rollout):
        # As Argo Rollouts: promoteFull lifts the abort and the operator promotes fully.
        return Decision(
            f"rollout {name} promoted: its abort is lifted, revision {st.get('currentPodHash')} "
            "goes to full promotion",
            status={"promoteFull": True},
            spec={"paused": False} if (rollout.get("spec") or {}).get("paused") else {},
        )
    if st.get("abort"):
        raise Refusal(
            f"rollout {name} is aborted: use `tidegate retry {name}` to start its steps again "
            f"(or `tidegate promote --full {name}` to promote it fully)"
        )
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
    elif st.get("controllerPause") or st.get("skipStep") == index:
        raise Refusal(
            f"rollout {name}: step {_step_words(index, n)} is already promoted; the operator moves on"
        )
    elif index < n:
        # The intent names the step; the operator completes it if the rollout is still there.
        status["skipStep"] = index
        what = describe_step(steps[index])
        done.append(f"step {_step_words(index, n)} ({what}) skipped -> {_step_words(index + 1, n)}")
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


def decide_retry(rollout: Obj) -> Decision:
    """Retry is the intent `status.abort: false`, nothing else.

    The operator recognises it (abort lifted on the aborted revision) and does the rest:
    steps from the first (blue-green: the preview again), no pause, a new round of
    analysis runs, the progress deadline counted from now.
    """
    name, st = _name(rollout), _status(rollout)
    if not st.get("abort"):
        raise Refusal(f"rollout {name} is not aborted (phase {phase_of(rollout)}): nothing to retry")
    if strategy_of(rollout) == "BlueGreen":
        what = "the preview starts again"
    else:
        n = len(steps_of(rollout))
        what = f"steps start again at 1/{n}" if n else "promotion starts again"
    if _has_analysis(rollout):
        what += ", with a new round of analysis runs"
    return Decision(f"rollout {name} retried: {what}", status={"abort": False})


def _has_analysis(rollout: Obj) -> bool:
    strategy = (rollout.get("spec") or {}).get("strategy") or {}
    canary = strategy.get("canary") or {}
    bg = strategy.get("blueGreen") or {}
    return bool(
        canary.get("analysis")
        or any("analysis" in step for step in canary.get("steps") or [])
        or bg.get("prePromotionAnalysis")
        or bg.get("postPromotionAnalysis")
    )


def decide_pause(rollout: Obj) -> Decision:
    name = _name(rollout)
    if (rollout.get("spec") or {}).get("paused"):
        return Decision(f"rollout {name} is already paused (spec.paused: true)")
    return Decision(f"rollout {name} paused (spec.paused: true)", spec={"paused": True})


_PAUSE_REASONS = {
    "CanaryPauseStep": "a pause step",
    "InconclusiveAnalysisRun": "an inconclusive analysis",
    "BlueGreenPause": "the blue-green preview pause",
}


def _waits_in(rollout: Obj) -> str | None:
    """Where the rollout waits for a promote, in words; None when it does not."""
    conditions = _status(rollout).get("pauseConditions") or []
    reasons = [str(c.get("reason")) for c in conditions]
    if not reasons:
        return None
    if strategy_of(rollout) == "BlueGreen":
        return " and ".join(_PAUSE_REASONS.get(r, r) for r in reasons)
    steps = steps_of(rollout)
    n, index = len(steps), step_index(rollout)
    where = f"step {_step_words(index, n)}"
    if index < n:
        where += f" ({describe_step(steps[index])})"
    return " and ".join(_PAUSE_REASONS.get(r, r) for r in reasons) + f" at {where}"


def decide_resume(rollout: Obj) -> Decision:
    """Resume is `spec.paused: false`, nothing else (as Argo's `resume`).

    It never clears pause conditions: a pause step (even `duration: 1h`), an inconclusive
    analysis and a blue-green preview end only with `promote`.
    """
    name = _name(rollout)
    waiting = _waits_in(rollout)
    hint = f"; it waits in {waiting}: `tidegate promote {name}` ends a pause" if waiting else ""
    if not (rollout.get("spec") or {}).get("paused"):
        return Decision(f"rollout {name} is not paused (spec.paused is not set): nothing to resume{hint}")
    return Decision(f"rollout {name} resumed (spec.paused: false){hint}", spec={"paused": False})


def decide_restart(rollout: Obj, now: datetime) -> Decision:
    """`spec.restartAt: now`; the words say when it will happen (the operator restarts a complete rollout)."""
    at = iso(now)
    name = _name(rollout)
    if is_complete(rollout):
        when = "pods created before it are replaced one at a time"
    else:
        when = (
            f"pods created before it are replaced one at a time once the rollout is complete "
            f"(it is {phase_of(rollout)}: {_status(rollout).get('message') or '-'})"
        )
    return Decision(
        f"rollout {name} restart requested (restartAt {at}): {when}; follow it with `tidegate status {name}`",
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
    version = str((rollout.get("metadata") or {}).get("resourceVersion") or "")
    with api_errors(f"watching rollout {name}"):
        for event in cluster.watch(cluster.rollout_source(name), version, timeout):
            obj = event.get("object") or {}
            if event.get("type") in ("ADDED", "MODIFIED"):
                rollout = obj
                if is_fresh(rollout):
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
                except ApiError as exc:
                    if exc.status == 409:
                        raise _Conflict(exc.message) from exc
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


@dataclass(frozen=True)
class Intent:
    """One steering command as data: how it decides, whether it waits for a fresh status, its verb."""

    decide: Callable[[Obj], Decision]
    fresh: bool
    what: str


def intents() -> dict[str, Intent]:
    """The steering commands without arguments, by the name a client asks for them.

    The commands below and the dashboard's buttons (`dashboard.py`) both carry these out,
    so a button writes exactly the intent its command writes. `restart` reads the clock
    when it decides.
    """
    return {
        "promote": Intent(lambda r: decide_promote(r, False), fresh=True, what="promoting"),
        "promote-full": Intent(lambda r: decide_promote(r, True), fresh=True, what="promoting"),
        "abort": Intent(decide_abort, fresh=True, what="aborting"),
        "retry": Intent(decide_retry, fresh=True, what="retrying"),
        "pause": Intent(decide_pause, fresh=False, what="pausing"),
        "resume": Intent(decide_resume, fresh=False, what="resuming"),
        "restart": Intent(lambda r: decide_restart(r, datetime.now(UTC)), fresh=False, what="restarting"),
    }


def steer(cluster: Cluster, name: str, action: str) -> Decision:
    """Carry out the intent named `action` on Rollout `name` (CliError: refused or failed)."""
    intent = intents()[action]
    return carry_out(cluster, name, intent.decide, fresh=intent.fresh, what=intent.what)


def _steer(target: Target, name: str, action: str) -> None:
    click.echo(steer(target.connect(), name, action).message)


# ---------------------------------------------------------------------------
# Commands


@click.command("promote")
@click.argument("name", shell_complete=rollout_names)
@click.option("--full", is_flag=True, help="Skip all remaining steps and analysis: go to 100% now.")
@cluster_options()
def promote(name: str, full: bool, target: Target) -> None:
    """Promote a Rollout: end the current pause or skip the current step.

    With --full, skip every remaining step.

    A paused rollout (a pause step, even a timed one; an inconclusive analysis; a
    blue-green preview) has its pause conditions cleared, and spec.paused set to false;
    a canary step that is not paused (an analysis, pods still coming up) is completed
    through status.skipStep. Refused when the rollout is fully promoted or aborted (use
    retry). Written to the status subresource, so a GitOps sync never reverts it.

    \b
    Example:
      tidegate promote web
      tidegate promote web --full -n shop
    """
    _steer(target, name, "promote-full" if full else "promote")


@click.command("abort")
@click.argument("name", shell_complete=rollout_names)
@cluster_options()
def abort(name: str, target: Target) -> None:
    """Abort a Rollout: all traffic back to the stable version.

    Blue-green: the active Service stays. The new pods are scaled down after the
    abort delay; phase Degraded.

    \b
    Example:
      tidegate abort web
      tidegate retry web    # later, to start the steps again
    """
    _steer(target, name, "abort")


@click.command("retry")
@click.argument("name", shell_complete=rollout_names)
@cluster_options()
def retry(name: str, target: Target) -> None:
    """Retry an aborted Rollout: its steps start again from the first.

    Writes status.abort: false; the operator starts the steps again (blue-green: the
    preview), with a new round of analysis.

    \b
    Example:
      tidegate retry web
    """
    _steer(target, name, "retry")


@click.command("pause")
@click.argument("name", shell_complete=rollout_names)
@cluster_options()
def pause(name: str, target: Target) -> None:
    """Pause a Rollout (spec.paused: true) where it is.

    It stays at its current step until `tidegate resume`.

    \b
    Example:
      tidegate pause web
      tidegate resume web
    """
    _steer(target, name, "pause")


@click.command("resume")
@click.argument("name", shell_complete=rollout_names)
@cluster_options()
def resume(name: str, target: Target) -> None:
    """Resume a Rollout paused with `pause` (spec.paused: false).

    Only spec.paused: a pause step, an inconclusive analysis or a blue-green preview
    waits for `tidegate promote`, as with Argo Rollouts' resume.

    \b
    Example:
      tidegate resume web
    """
    _steer(target, name, "resume")


@click.command("restart")
@click.argument("name", shell_complete=rollout_names)
@cluster_options()
def restart(name: str, target: Target) -> None:
    """Restart a Rollout's pods one at a time (spec.restartAt: now).

    Pods created before now are evicted one at a time (PodDisruptionBudgets hold),
    once the rollout is complete: a restart asked for mid-rollout waits for it.
    `get rollout` and `status` show it pending; `tidegate status NAME` waits for it.

    \b
    Example:
      tidegate restart web
    """
    _steer(target, name, "restart")


@click.group("set")
def set_group() -> None:
    """Change a Rollout's spec: `set image`.

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
@click.argument("name", shell_complete=rollout_names)
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
@click.argument("name", shell_complete=rollout_names)
@click.option(
    "--to-revision", type=int, default=None, help="Revision to go back to (default: the previous one)."
)
@cluster_options()
def undo(name: str, to_revision: int | None, target: Target) -> None:
    """Roll back to an earlier revision's pod template.

    The template becomes the spec's; going back to the stable revision skips the
    steps (fast rollback).

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

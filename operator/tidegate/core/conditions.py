"""Conditions and phase: Argo Rollouts' phase rule plus kstatus conditions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Phase = Literal["Healthy", "Progressing", "Paused", "Degraded"]


@dataclass(frozen=True)
class Verdict:
    """The facts the phase rule needs (REFERENCE.md: Phase rule)."""

    invalid_spec: str | None
    aborted: bool
    deadline_exceeded: bool
    paused: bool
    complete: bool
    """The current ReplicaSet is fully available, stable, and (blue-green) active."""
    available: bool
    """At least the minimum of pods are available (stable or current)."""


def phase_of(v: Verdict) -> Phase:
    if v.invalid_spec or v.aborted or v.deadline_exceeded:
        return "Degraded"
    if v.paused:
        return "Paused"
    if not v.complete:
        return "Progressing"
    return "Healthy"


def _condition(
    ctype: str,
    status: bool,
    reason: str,
    message: str,
    previous: dict[str, dict[str, Any]],
    now: str,
    generation: int | None,
) -> dict[str, Any]:
    state = "True" if status else "False"
    old = previous.get(ctype)
    transition = old.get("lastTransitionTime") if old and old.get("status") == state else None
    cond: dict[str, Any] = {
        "type": ctype,
        "status": state,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition or now,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def conditions_for(
    v: Verdict,
    phase: Phase,
    message: str,
    previous: list[dict[str, Any]],
    now: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """The full list of conditions; lastTransitionTime kept where the status did not change.

    Ready (kstatus) is True only when Healthy. Reconciling/Stalled follow kstatus'
    abnormal-true convention so that Flux, `helm --wait` and `kubectl wait` read the
    rollout without knowing its kind: Reconciling while Progressing, Stalled when
    Degraded.
    """
    prev = {c.get("type", ""): c for c in previous}

    def c(ctype: str, status: bool, reason: str, msg: str = "") -> dict[str, Any]:
        return _condition(ctype, status, reason, msg, prev, now, generation)

    out = [
        c("Ready", phase == "Healthy", phase, message),
        c("Healthy", phase == "Healthy", phase, message),
        c("Available", v.available, "AvailableReplicas" if v.available else "NotEnoughAvailable"),
    ]
    if v.deadline_exceeded:
        out.append(c("Progressing", False, "ProgressDeadlineExceeded", message))
    elif v.aborted:
        out.append(c("Progressing", False, "RolloutAborted", message))
    elif v.complete:
        out.append(c("Progressing", True, "NewReplicaSetAvailable", "rollout complete"))
    else:
        out.append(c("Progressing", True, "ReplicaSetUpdated", message))
    out.append(
        c("Paused", v.paused, "RolloutPaused" if v.paused else "RolloutResumed", message if v.paused else "")
    )
    out.append(c("Completed", v.complete, "RolloutCompleted" if v.complete else "RolloutNotCompleted"))
    out.append(
        c(
            "InvalidSpec",
            v.invalid_spec is not None,
            "InvalidSpec" if v.invalid_spec else "Valid",
            v.invalid_spec or "",
        )
    )
    out.append(c("Reconciling", phase == "Progressing", phase, message if phase == "Progressing" else ""))
    out.append(c("Stalled", phase == "Degraded", phase, message if phase == "Degraded" else ""))
    return out


def invalid_spec_status(
    message: str, old: dict[str, Any], now: str, generation: int | None
) -> dict[str, Any]:
    """Status of a Rollout whose spec cannot even be read into the model.

    Nothing is planned for it, so the running version keeps serving; availability is
    carried over from the last status the operator wrote.
    """
    available = any(
        c.get("type") == "Available" and c.get("status") == "True" for c in old.get("conditions") or []
    )
    verdict = Verdict(
        invalid_spec=message,
        aborted=False,
        deadline_exceeded=False,
        paused=False,
        complete=False,
        available=available,
    )
    phase = phase_of(verdict)
    return {
        "phase": phase,
        "message": message,
        "observedGeneration": generation,
        "conditions": conditions_for(verdict, phase, message, old.get("conditions") or [], now, generation),
    }

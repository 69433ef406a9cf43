"""Where analysis runs in a rollout: which AnalysisRuns should exist, and what their phases mean.

Runs are named `<rollout>-<hash>-<tag>-<round>`: one per revision, place (a step, the
background, pre- or post-promotion) and round (a retry starts a new round), so that a
pass can tell whether the run it wants exists, and a new revision never resumes the
old revision's analysis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from tidegate.api.rollout import RolloutAnalysis, RolloutAnalysisRunStatus
from tidegate.core.model import AnalysisRunInfo, CreateAnalysisRun, TerminateAnalysisRun
from tidegate.core.toolkit import add_pause, iso, paused_for

if TYPE_CHECKING:
    from tidegate.core.toolkit import Pass

Outcome = Literal["missing", "running", "successful", "failed", "inconclusive"]
FINISHED = {"Successful", "Failed", "Error", "Inconclusive"}


def run_name(p: Pass, pod_hash: str, tag: str) -> str:
    rollout = p.obs.rollout.metadata.name or "rollout"
    round_ = p.status.analysis_round
    return f"{rollout}-{pod_hash}-{tag}-{round_}"[:253]


def find(p: Pass, name: str) -> AnalysisRunInfo | None:
    return next((r for r in p.obs.analysis_runs if r.name == name), None)


def ensure(
    p: Pass, analysis: RolloutAnalysis, *, kind: str, tag: str, stable_hash: str, latest_hash: str
) -> tuple[Outcome, AnalysisRunInfo | None, str]:
    """Make sure the run exists; returns its outcome, the run, and its name."""
    name = run_name(p, latest_hash, tag)
    p.wanted_runs.add(name)
    run = find(p, name)
    if run is None:
        p.actions.append(CreateAnalysisRun(name, kind, analysis, stable_hash, latest_hash))
        p.event("AnalysisRunCreated", f"started analysis run {name}", action=True)
        return "missing", None, name
    if run.phase == "Successful":
        return "successful", run, name
    if run.phase in ("Failed", "Error"):
        return "failed", run, name
    if run.phase == "Inconclusive":
        return "inconclusive", run, name
    return "running", run, name


def run_status(run: AnalysisRunInfo | None, name: str) -> RolloutAnalysisRunStatus:
    if run is None:
        return RolloutAnalysisRunStatus(name=name, status="Pending")
    return RolloutAnalysisRunStatus(name=run.name, status=run.phase, message=run.message or None)


def terminate_unwanted(p: Pass) -> None:
    """A run nobody waits for any more (new revision, abort, promotion) is stopped."""
    for run in p.obs.analysis_runs:
        if run.phase not in FINISHED and run.name not in p.wanted_runs:
            p.actions.append(TerminateAnalysisRun(run.name))


def fail_message(run: AnalysisRunInfo) -> str:
    return f"analysis run {run.name} {run.phase.lower()}: {run.message or 'no message'}"


def inconclusive_pause(p: Pass, where: str) -> bool:
    """Pause for a person on an Inconclusive run; True once they promoted."""
    st = p.status
    if paused_for(st, "InconclusiveAnalysisRun"):
        p.paused = True
        p.message = f"{where}: analysis inconclusive; paused until promoted (`tidegate promote`)"
        return False
    if st.controller_pause and st.inconclusive_paused:
        st.controller_pause = False
        st.inconclusive_paused = None
        return True
    add_pause(st, "InconclusiveAnalysisRun", iso(p.obs.now))
    st.inconclusive_paused = True
    p.paused = True
    p.message = f"{where}: analysis inconclusive; paused until promoted (`tidegate promote`)"
    p.event("RolloutPaused", p.message)
    return False


def abort_for(p: Pass, run: AnalysisRunInfo | None, name: str) -> None:
    st = p.status
    st.abort = True
    text = fail_message(run) if run is not None else f"analysis run {name} failed"
    st.abort_message = text
    p.message = text
    p.event("AnalysisRunFailed", f"{text}; aborting", warning=True)
    p.wake_in(0.05)

"""`tidegate list TYPE [-A] [-o json|yaml|wide|name]`: every Rollout (or AnalysisRun), one line each.

The same table as `tidegate get TYPE` without a name (Argo Rollouts' `list rollouts`).
"""

from __future__ import annotations

import click

from tidegate.cli._kube import Target
from tidegate.cli._options import cluster_options
from tidegate.cli._output import Resource, ResourceType, output_option


@click.command("list")
@click.argument("resource", metavar="TYPE", type=ResourceType())
@output_option()
@cluster_options(all_namespaces=True)
def command(resource: Resource, output: str | None, target: Target) -> None:
    """List Rollouts or AnalysisRuns (as `get TYPE` without a name).

    Rollouts: NAME, STRATEGY, PHASE, REASON (why that phase: Aborted,
    ProgressDeadlineExceeded, InvalidSpec, PausedBySpec, the pause condition,
    RestartPending; `-` when none), STEP, WEIGHT, READY (ready/desired), UP-TO-DATE,
    AVAILABLE, AGE; `-o wide` adds IMAGES and MESSAGE. AnalysisRuns: NAME, ROLLOUT,
    PHASE, METRICS (finished/all), AGE; `-o wide` adds MEASUREMENTS and MESSAGE.
    NAMESPACE comes first with -A. `-o json|yaml` prints the API objects (a List),
    `-o name` kind.group/name lines.

    \b
    Example:
      tidegate list rollouts
      tidegate list ro -A -o wide
      tidegate list rollouts -o json | jq -r '.items[] | select(.status.phase == "Degraded") | .metadata.name'
      tidegate list analysisruns -n shop
    """
    from tidegate.cli.get import show_list

    show_list(target.connect(), resource, output)

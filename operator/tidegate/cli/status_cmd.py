"""`tidegate status NAME [--timeout 10m]`: wait until a Rollout is done, for CI/CD pipelines.

Exit codes: 0 Healthy (the status describes the latest spec, and no restart is
pending), 1 Degraded or aborted (or the Rollout does not exist), 2 the timeout passed
(with --no-watch: not done yet).
"""

from __future__ import annotations

import queue
import sys
import time

import click

from tidegate.cli._facts import (
    Obj,
    is_fresh,
    live_message,
    phase_of,
    restart_line,
    restart_state,
    step_of,
    strategy_of,
)
from tidegate.cli._kube import CliError, Target, WatchFeed
from tidegate.cli._options import cluster_options, rollout_names
from tidegate.core.durations import DurationError, parse_duration

EXIT_HEALTHY, EXIT_DEGRADED, EXIT_TIMEOUT = 0, 1, 2


def verdict(rollout: Obj) -> int | None:
    """EXIT_HEALTHY or EXIT_DEGRADED once the Rollout is done either way; None while it is not."""
    if not is_fresh(rollout):
        return None  # the operator has not seen the latest spec yet
    phase = phase_of(rollout)
    if phase == "Degraded" or (rollout.get("status") or {}).get("abort"):
        return EXIT_DEGRADED
    if phase == "Healthy" and restart_state(rollout) is None:
        return EXIT_HEALTHY
    return None  # not done, or Healthy with a restart still to carry out


def progress_line(rollout: Obj) -> str:
    status = rollout.get("status") or {}
    step = step_of(rollout) if strategy_of(rollout) == "Canary" else "-"
    where = f" (step {step})" if step != "-" else ""
    if not is_fresh(rollout):
        return f"{phase_of(rollout)}{where}: waiting for the operator to observe the latest spec"
    restart = restart_line(rollout, None)
    also = (
        f"; restart {restart}"
        if restart and not str(status.get("message") or "").startswith("restart")
        else ""
    )
    # The operator's "for 25s more (until T)" is stale a second later: "until T" stays true.
    return f"{phase_of(rollout)}{where}: {live_message(str(status.get('message') or '-'))}{also}"


def final_line(name: str, rollout: Obj, code: int) -> str:
    status = rollout.get("status") or {}
    if code == EXIT_HEALTHY:
        return f"rollout {name} is Healthy: revision {status.get('stableRS')} is stable"
    aborted = " (aborted)" if status.get("abort") else ""
    return f"rollout {name} is {phase_of(rollout)}{aborted}: {status.get('message') or '-'}"


@click.command("status")
@click.argument("name", shell_complete=rollout_names)
@click.option(
    "--timeout",
    default="10m",
    show_default=True,
    help="Give up after this long (30s, 10m, 1h, or seconds); 0: no limit. Exit 2.",
)
@click.option(
    "--watch/--no-watch",
    default=True,
    show_default=True,
    help="Wait for the verdict (watch API); --no-watch reports once.",
)
@cluster_options()
def command(name: str, timeout: str, watch: bool, target: Target) -> None:
    """Wait until a Rollout is Healthy (exit 0), Degraded (1) or timed out (2).

    Exit 0 once it is Healthy with its latest spec and no restart pending, 1 once it
    is Degraded or aborted, 2 when the timeout passes; a line is printed whenever its
    phase, step or message changes. For CI/CD pipelines, after `kubectl apply`,
    `tidegate set image` or `tidegate restart`.

    \b
    Example:
      kubectl apply -f rollout.yaml && tidegate status web --timeout 15m
      tidegate status web --no-watch || echo "not healthy yet"
    """
    try:
        limit = parse_duration(timeout)
    except DurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--timeout") from exc
    cluster = target.connect()
    rollout = cluster.rollout(name)
    last = progress_line(rollout)
    click.echo(last)
    code = verdict(rollout)
    if code is not None or not watch:
        code = EXIT_TIMEOUT if code is None else code
        if code != EXIT_TIMEOUT:
            click.echo(final_line(name, rollout, code))
        sys.exit(code)

    deadline = time.monotonic() + limit if limit > 0 else None
    errors_seen: set[str] = set()
    with WatchFeed(cluster).start(cluster.rollout_source(name)) as feed:
        while True:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                click.echo(f"rollout {name}: timed out after {timeout}; {last}")
                sys.exit(EXIT_TIMEOUT)
            try:
                change = feed.changes.get(timeout=wait)
            except queue.Empty:
                continue  # the deadline check above ends it
            if change.type == "ERROR":
                if change.message not in errors_seen:
                    errors_seen.add(change.message)
                    click.echo(f"watch: {change.message} (retrying)", err=True)
                continue
            if change.type == "DELETED" or (change.type == "SYNC" and not change.objects):
                raise CliError(f'rollout "{name}" was deleted')
            rollout = change.objects[0]
            line = progress_line(rollout)
            if line != last:
                click.echo(line)
                last = line
            code = verdict(rollout)
            if code is not None:
                click.echo(final_line(name, rollout, code))
                sys.exit(code)

"""`tidegate get rollout NAME [--watch]`: the live view of one Rollout."""

from __future__ import annotations

import contextlib
import queue
import time
from datetime import UTC, datetime

import click
from rich.console import Console, Group, RenderableType
from rich.text import Text

from tidegate.cli._kube import Change, Cluster, LiveState, Target, WatchFeed, cluster_options
from tidegate.cli.view import render, render_text

TICK_SECONDS = 1.0


@click.group("get")
def command() -> None:
    """Show Tidegate resources.

    \b
    Example:
      tidegate get rollout web
      tidegate get rollout web --watch -n shop
    """


@command.command("rollout")
@click.argument("name")
@click.option("-w", "--watch", is_flag=True, help="Redraw on every change (watch API) until Ctrl-C.")
@cluster_options()
def rollout(name: str, watch: bool, target: Target) -> None:
    """Show a Rollout: phase, steps (the current one marked ▶), canary weight, pause
    countdown, blue-green selectors, revisions with their ReplicaSets, pods and
    AnalysisRuns.

    \b
    Example:
      tidegate get rollout web
      tidegate get rollout web --watch
      kubectl tidegate get rollout web -n shop --context prod
    """
    cluster = target.connect()
    console = Console()
    if not watch:
        snapshot = cluster.snapshot(name)
        if console.is_terminal:
            console.print(render(snapshot, datetime.now(UTC)))
        else:
            click.echo(render_text(snapshot, datetime.now(UTC), width=console.width), nl=False)
        return
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a watch ends: exit 0
        _watch(cluster, name, console)


def _frame(state: LiveState) -> RenderableType:
    view = render(state.snapshot(), datetime.now(UTC))
    if not state.errors:
        return view
    problems = Text("\n".join(f"watch {k}: {m} (retrying)" for k, m in sorted(state.errors.items())))
    problems.stylize("red")
    return Group(view, problems)


def _drain(changes: queue.Queue[Change], state: LiveState, timeout: float) -> bool:
    """Fold in every change that arrives within `timeout` (then whatever is queued); True if any."""
    try:
        state.apply(changes.get(timeout=timeout))
    except queue.Empty:
        return False
    while True:
        try:
            state.apply(changes.get_nowait())
        except queue.Empty:
            return True


def _initial_lists(feed: WatchFeed, state: LiveState, timeout: float = 5.0) -> None:
    """Fold in the first list of every source, so the first frame is whole."""
    waiting = set(feed.kinds)
    deadline = time.monotonic() + timeout
    while waiting and (left := deadline - time.monotonic()) > 0:
        try:
            change = feed.changes.get(timeout=left)
        except queue.Empty:
            return
        state.apply(change)
        if change.type in ("SYNC", "ERROR"):
            waiting.discard(change.kind)


def _watch(cluster: Cluster, name: str, console: Console) -> None:
    first = cluster.rollout(name)  # fails clearly when it does not exist
    state = LiveState(name, cluster.namespace, rollout=first)
    feed = WatchFeed().start(
        cluster.rollout_source(name),
        cluster.replica_set_source(name),
        cluster.pod_source(first),
        cluster.analysis_run_source(name),
    )
    with feed:
        _initial_lists(feed, state)
        if console.is_terminal:
            from rich.live import Live

            with Live(_frame(state), console=console, auto_refresh=False, redirect_stderr=False) as live:
                while True:
                    # A change redraws at once; otherwise the tick only moves the countdowns.
                    _drain(feed.changes, state, timeout=TICK_SECONDS)
                    live.update(_frame(state), refresh=True)
        else:
            # Not a terminal (a pipe, a log): print a whole frame whenever what it shows changes.
            last = ""
            while True:
                text = _plain(state, console.width)
                if text != last:
                    if last:
                        console.file.write("\n")
                    console.file.write(text)
                    console.file.flush()
                    last = text
                while not _drain(feed.changes, state, timeout=3600):
                    pass


def _plain(state: LiveState, width: int) -> str:
    text = render_text(state.snapshot(), datetime.now(UTC), width=width)
    if state.errors:
        text += "".join(f"watch {k}: {m} (retrying)\n" for k, m in sorted(state.errors.items()))
    return text

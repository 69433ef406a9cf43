"""`tidegate get TYPE [NAME]`: one Rollout in detail (live with --watch), or a table.

TYPE is any of kubectl's names for the kind (`rollout`, `rollouts`, `ro`,
`rollouts.tidegate.io`; `analysisrun`, `analysisruns`, `ar`). Without NAME it lists,
as `kubectl get` does; `-o json|yaml|wide|name` as kubectl prints them.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from tidegate.cli._facts import Obj
from tidegate.cli._kube import Target
from tidegate.cli._options import cluster_options, object_names
from tidegate.cli._output import ROLLOUTS, Resource, ResourceType, output_option, print_objects, print_table

if TYPE_CHECKING:
    from collections.abc import Iterator

    from rich.console import Console, RenderableType

    from tidegate.cli._kube import Change, Cluster, LiveState, WatchFeed

TICK_SECONDS = 1.0


@click.command("get")
@click.argument("resource", metavar="TYPE", type=ResourceType())
@click.argument("name", required=False, shell_complete=object_names)
@click.option(
    "-w",
    "--watch",
    is_flag=True,
    help="Follow every change until Ctrl-C: the live view, or the table's rows.",
)
@output_option()
@cluster_options(all_namespaces=True)
def command(resource: Resource, name: str | None, watch: bool, output: str | None, target: Target) -> None:
    """Show Rollouts or AnalysisRuns: one in detail, or a table.

    `get rollout NAME` shows a Rollout: phase, steps (the current one marked ▶),
    canary weight, pause countdown, blue-green selectors, a pending restart,
    revisions with their ReplicaSets, pods and AnalysisRuns; `--watch` keeps it up
    to date. `get analysisrun NAME` shows every measurement of each metric. Without
    NAME: a table of all of them (`-A`: in every namespace), as `list` prints it;
    with `--watch`, a line more whenever a row changes, as `kubectl get -w`.

    \b
    Example:
      tidegate get rollout web
      tidegate get ro web --watch -n shop
      tidegate get rollouts -A -o wide
      tidegate get rollout web -o yaml
      tidegate get ar -n shop
      kubectl tidegate get rollout web --context prod
    """
    if watch and output in ("json", "yaml", "name"):
        raise click.UsageError(
            "--watch prints the live view (with NAME) or a table: not with -o json|yaml|name"
        )
    if name is not None and target.all_namespaces:
        raise click.UsageError("-A lists across namespaces; with NAME, pick the namespace with -n")
    cluster = target.connect()
    if name is None:
        if watch:
            with _ended_by_ctrl_c():
                watch_list(cluster, resource, wide=output == "wide")
            return
        show_list(cluster, resource, output)
        return
    if watch and output == "wide":
        raise click.UsageError("--watch with NAME is the live view: without -o")
    obj = cluster.rollout(name) if resource is ROLLOUTS else cluster.analysis_run(name)
    if output in ("json", "yaml", "name"):
        print_objects(resource, obj, output)
        return
    if output == "wide":
        print_table(resource, [obj], datetime.now(UTC), wide=True, namespaces=False)
        return
    if resource is not ROLLOUTS:
        from tidegate.cli.view import render_analysis_run

        _print(render_analysis_run(obj, datetime.now(UTC)))
        return
    if not watch:
        from tidegate.cli.view import render

        snapshot = cluster.snapshot(name)
        _print(render(snapshot, datetime.now(UTC)))
        return
    from rich.console import Console

    with _ended_by_ctrl_c():
        _watch(cluster, name, Console())


@contextlib.contextmanager
def _ended_by_ctrl_c() -> Iterator[None]:
    """Ctrl-C is how a watch ends: exit 0, quietly. A second SIGINT while exiting is ignored:
    GNU `timeout -s INT` sends one to the command and one to its process group, and the second,
    landing in the interpreter's exit hooks, printed a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def show_list(cluster: Cluster, resource: Resource, output: str | None) -> None:
    """The objects of a kind as a table (or -o json|yaml|name): what `get TYPE` and `list TYPE` print."""
    items = cluster.rollouts() if resource is ROLLOUTS else cluster.analysis_runs()
    items = sorted(items, key=_sort_key)
    if output in ("json", "yaml", "name"):
        print_objects(resource, items, output)
        return
    if not items:
        where = "any namespace" if cluster.all_namespaces else f'namespace "{cluster.namespace}"'
        click.echo(f"No {resource.plural} found in {where}.", err=True)
        return
    print_table(resource, items, datetime.now(UTC), wide=output == "wide", namespaces=cluster.all_namespaces)


def watch_list(cluster: Cluster, resource: Resource, *, wide: bool) -> None:
    """The table, then a line whenever an object's row changes (kubectl get -w), until Ctrl-C."""
    from tidegate.cli._kube import WatchFeed
    from tidegate.cli._output import TableStream

    source = cluster.rollouts_source() if resource is ROLLOUTS else cluster.analysis_runs_source()
    stream = TableStream(resource, wide=wide, namespaces=cluster.all_namespaces)
    errors: set[str] = set()
    with WatchFeed(cluster).start(source) as feed:
        while True:
            change = feed.changes.get()
            if change.type == "ERROR":
                if change.message not in errors:
                    errors.add(change.message)
                    click.echo(f"watch: {change.message} (retrying)", err=True)
                continue
            objects = sorted(change.objects, key=_sort_key)
            for line in stream.lines(objects, datetime.now(UTC)):
                click.echo(line)


def _sort_key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _print(renderable: RenderableType) -> None:
    """To a terminal: rich, at its width; to a pipe or a file: plain text whole, never wrapped."""
    from rich.console import Console

    from tidegate.cli.view import PIPE_WIDTH, render_text_of

    console = Console()
    if console.is_terminal:
        console.print(renderable)
    else:
        click.echo(render_text_of(renderable, PIPE_WIDTH), nl=False)


def _frame(state: LiveState) -> RenderableType:
    from rich.console import Group
    from rich.text import Text

    from tidegate.cli.view import render

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
    from tidegate.cli._kube import LiveState, WatchFeed

    first = cluster.rollout(name)  # fails clearly when it does not exist
    state = LiveState(name, cluster.namespace, rollout=first)
    feed = WatchFeed(cluster).start(
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
                text = _plain(state)
                if text != last:
                    if last:
                        console.file.write("\n")
                    console.file.write(text)
                    console.file.flush()
                    last = text
                while not _drain(feed.changes, state, timeout=3600):
                    pass


def _plain(state: LiveState) -> str:
    from tidegate.cli.view import PIPE_WIDTH, render_text

    text = render_text(state.snapshot(), datetime.now(UTC), width=PIPE_WIDTH)
    if state.errors:
        text += "".join(f"watch {k}: {m} (retrying)\n" for k, m in sorted(state.errors.items()))
    return text

"""Entry point of `tidegate` / `kubectl tidegate`.

Each sub-command lives in its own module and exposes `command` (a click command or
group); this module only assembles them, importing a module only when its command
runs, so that `tidegate --help` loads click and nothing else (the one-line help of
each command is kept here; `tests/unit/test_cli_main.py` checks it against the
command's own). kubectl's connection flags (`-n`, `-A`, `--context`, `--kubeconfig`,
`--request-timeout`) are accepted before the verb as well as after it.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from tidegate import __version__
from tidegate.cli._options import connection_options

SANDBOX_HELP = (
    "A real local control plane (etcd, kube-apiserver, controller-manager, scheduler, "
    "kwok fake nodes, Prometheus) on 127.0.0.1, no Docker needed."
)
OPERATOR_HELP = "Run the Tidegate operator (kopf) against the current kubeconfig or in-cluster config."
# command name -> (module under tidegate.cli that defines it[:attribute], one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "get": ("get", "Show Rollouts or AnalysisRuns: one in detail, or a table."),
    "list": ("list_cmd", "List Rollouts or AnalysisRuns (as `get TYPE` without a name)."),
    "status": ("status_cmd", "Wait until a Rollout is Healthy (exit 0), Degraded (1) or timed out (2)."),
    "promote": ("control:promote", "Promote a Rollout: end the current pause or skip the current step."),
    "abort": ("control:abort", "Abort a Rollout: all traffic back to the stable version."),
    "retry": ("control:retry", "Retry an aborted Rollout: its steps start again from the first."),
    "pause": ("control:pause", "Pause a Rollout (spec.paused: true) where it is."),
    "resume": ("control:resume", "Resume a Rollout paused with `pause` (spec.paused: false)."),
    "restart": ("control:restart", "Restart a Rollout's pods one at a time (spec.restartAt: now)."),
    "set": ("control:set_group", "Change a Rollout's spec: `set image`."),
    "undo": ("control:undo", "Roll back to an earlier revision's pod template."),
    "dashboard": ("dashboard", "Serve a live web dashboard of the Rollouts on 127.0.0.1, until Ctrl-C."),
    "lint": ("lint", "Check Rollouts and (Cluster)AnalysisTemplates in YAML files, offline."),
    "plan": ("plan", "Simulate a Rollout's strategy offline: the timeline of its steps."),
    "sandbox": ("sandbox_cmd", SANDBOX_HELP),
    "operator": ("operator_cmd", OPERATOR_HELP),
    "demo": ("demo", "Run the demo: a canary promoted step by step, then a bad version aborted by analysis."),
    "completion": ("completion", "Print a shell completion script (bash, zsh or fish)."),
    "release": (
        "release_cmd",
        "Release a Rollout when the operator is gone: traffic to stable, finalizer off.",
    ),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*COMMANDS, *super().list_commands(ctx)])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module_name, _, attr = COMMANDS[cmd_name][0].partition(":")
            module = importlib.import_module(f"tidegate.cli.{module_name}")
            command: click.Command = getattr(module, attr or "command")
            return command
        return super().get_command(ctx, cmd_name)

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[Any]:
        """Verbs from the static helps (no command module imported at each TAB), then the flags."""
        from click.shell_completion import CompletionItem

        helps = {n: h for n, (_m, h) in COMMANDS.items()}
        helps.update({n: c.get_short_help_str() for n, c in self.commands.items()})
        items = [CompletionItem(n, help=h) for n, h in sorted(helps.items()) if n.startswith(incomplete)]
        return items + click.Command.shell_complete(self, ctx, incomplete)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the static one-line helps: `--help` imports no command module."""
        own = {name: cmd.get_short_help_str(limit=200) for name, cmd in self.commands.items()}
        rows = [
            (name, COMMANDS[name][1] if name in COMMANDS else own[name]) for name in self.list_commands(ctx)
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _group(fn: Any) -> Any:
    for option in reversed(connection_options(all_namespaces=True)):
        fn = option(fn)
    return fn


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@_group
def cli(**_connection: Any) -> None:
    """Tidegate: progressive delivery (canary, blue-green) for Kubernetes.

    The connection flags may come before the verb or after it, as with kubectl:
    `tidegate -n shop get rollout web` is `tidegate get rollout web -n shop`.
    Exit codes: 0 done, 1 refused or failed (one `Error:` line), 2 wrong usage;
    `status` adds 1 Degraded and 2 timed out (docs/cli.md).

    \b
    Example:
      tidegate sandbox up && eval "$(tidegate sandbox env)"
      kubectl apply -f examples/canary/
      tidegate get rollout web --watch
    """


@cli.command()
def version() -> None:
    """Print the version.

    \b
    Example:
      tidegate version
    """
    click.echo(f"tidegate {__version__}")


def main(*args: Any) -> None:
    import os
    import sys

    plugin = os.path.basename(sys.argv[0]) == "kubectl-tidegate"
    cli(*args, prog_name="kubectl tidegate" if plugin else "tidegate")


if __name__ == "__main__":
    main()

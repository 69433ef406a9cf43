"""Entry point of `tidegate` / `kubectl tidegate`.

Each sub-command lives in its own module and exposes `command` (a click command or
group); this module only assembles them, importing each lazily so that `tidegate
lint` does not pay for the Kubernetes client.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from tidegate import __version__

# command name -> module under tidegate.cli that defines `command`
_COMMANDS: dict[str, str] = {
    "operator": "operator_cmd",
    "sandbox": "sandbox_cmd",
    "lint": "lint",
    "plan": "plan",
    "demo": "demo",
    "get": "get",
    "list": "list_cmd",
    "status": "status_cmd",
    "promote": "control:promote",
    "abort": "control:abort",
    "retry": "control:retry",
    "pause": "control:pause",
    "resume": "control:resume",
    "restart": "control:restart",
    "set": "control:set_group",
    "undo": "control:undo",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*_COMMANDS, *super().list_commands(ctx)])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _COMMANDS:
            module_name, _, attr = _COMMANDS[cmd_name].partition(":")
            module = importlib.import_module(f"tidegate.cli.{module_name}")
            command: click.Command = getattr(module, attr or "command")
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Tidegate: progressive delivery (canary, blue-green) for Kubernetes.

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
    cli(*args)


if __name__ == "__main__":
    main()

"""`tidegate sandbox up | down | env`: the local control plane."""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path

import click

from tidegate.sandbox import Sandbox, SandboxError
from tidegate.sandbox.assets import MissingAsset


@click.group("sandbox")
def command() -> None:
    """A real local control plane (etcd, kube-apiserver, controller-manager,
    scheduler, kwok fake nodes, Prometheus) on 127.0.0.1, no Docker needed.

    \b
    Example:
      tidegate sandbox up
      eval "$(tidegate sandbox env)"
      kubectl get nodes
      tidegate sandbox down
    """


@command.command()
@click.option("--no-prometheus", is_flag=True, help="Do not start Prometheus.")
def up(no_prometheus: bool) -> None:
    """Start the sandbox (idempotent: fast when it is already up).

    \b
    Example:
      tidegate sandbox up
    """
    sandbox = Sandbox.default()
    try:
        was_up = sandbox.is_up()
        seconds = sandbox.up(prometheus=not no_prometheus, log=lambda m: click.echo(m, err=True))
    except (SandboxError, MissingAsset) as exc:
        click.echo(f"sandbox: {exc}", err=True)
        sys.exit(1)
    if was_up:
        click.echo(f"sandbox: already up ({seconds:.2f}s)", err=True)
    click.echo(f"kubeconfig: {sandbox.kubeconfig}", err=True)
    click.echo(f'run: eval "$({this_command()} sandbox env)"', err=True)


def scripts_dir() -> Path:
    """Where this installation's commands are (`.venv/bin`: tidegate, kubectl-tidegate, ...)."""
    return Path(sysconfig.get_path("scripts"))


def this_command() -> str:
    """How to run this tidegate from the user's shell now: `tidegate` if PATH finds it, else its path."""
    mine = scripts_dir() / "tidegate"
    found = shutil.which("tidegate")
    if found and Path(found).resolve() == mine.resolve():
        return "tidegate"
    invoked = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if invoked is not None and invoked.name == "tidegate" and invoked.exists():
        return str(invoked)  # as typed, e.g. .venv/bin/tidegate
    return str(mine)


@command.command()
def down() -> None:
    """Stop every process the sandbox started and remove its state.

    \b
    Example:
      tidegate sandbox down
    """
    Sandbox.default().down(log=lambda m: click.echo(m, err=True))


@command.command()
def env() -> None:
    """Print shell exports: KUBECONFIG, and on PATH a kubectl of the sandbox's version
    and this installation's commands (tidegate, kubectl-tidegate, kubectl_complete-tidegate).

    \b
    Example:
      eval "$(tidegate sandbox env)"
    """
    sandbox = Sandbox.default()
    if not sandbox.state():
        click.echo("sandbox: not running; start it with `tidegate sandbox up`", err=True)
        sys.exit(1)
    try:
        click.echo(sandbox.env(), nl=False)
        click.echo(f'export PATH="{scripts_dir()}:$PATH"')
    except MissingAsset as exc:
        click.echo(f"sandbox: {exc}", err=True)
        sys.exit(1)

"""docs/cli.md covers every verb and every flag the CLI has (walked from the click tree)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from tidegate.cli.main import cli

DOC = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()


def commands(command: click.Command = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    yield " ".join(path), command
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None
            yield from commands(sub, (*path, name))


ALL = [(path, cmd) for path, cmd in commands() if path]


@pytest.mark.parametrize(("path", "command"), ALL, ids=[p for p, _ in ALL])
def test_every_verb_and_its_flags_are_in_docs_cli_md(path: str, command: click.Command) -> None:
    # `tidegate sandbox up ...` or `sandbox up ...`, in backticks
    assert re.search(r"`(tidegate )?" + re.escape(path) + r"\b", DOC), f"docs/cli.md: no `{path}`"
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "help":
            for flag in [*param.opts, *param.secondary_opts]:
                assert f"{flag}" in DOC, f"docs/cli.md says nothing of `{path} {flag}`"

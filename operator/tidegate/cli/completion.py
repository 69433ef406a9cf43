"""Shell completion: `tidegate completion bash|zsh|fish`, and `kubectl_complete-tidegate`.

Both use click's own completion (`click.shell_completion`): verbs, flags, resource
types, and — from the cluster — Rollout names, AnalysisRun names, namespaces and
kubeconfig contexts.

`kubectl tidegate <TAB>`: kubectl (1.26+) completes a plugin's arguments by running
`kubectl_complete-<plugin> ARGS... WORD` from PATH and reading cobra's protocol back:
one completion per line (`value<TAB>description`), then `:<directive>`
(k8s.io/kubectl `pkg/cmd/plugin/plugin_completion.go`, `getPluginCompletions`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

PROG = "tidegate"
COMPLETE_VAR = "_TIDEGATE_COMPLETE"
SHELLS = ("bash", "zsh", "fish")

# cobra's ShellCompDirective bits (spf13/cobra completions.go)
DIRECTIVE_DEFAULT = 0  # the shell may also complete file names
DIRECTIVE_NO_FILE = 4
DIRECTIVE_FILTER_DIRS = 16


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
def command(shell: str) -> None:
    """Print a shell completion script (bash, zsh or fish).

    Completes verbs, flags, resource types, and from the cluster Rollout and
    AnalysisRun names, namespaces and contexts. For `kubectl tidegate <TAB>`, kubectl
    runs `kubectl_complete-tidegate`, installed beside `kubectl-tidegate`.

    \b
    Example:
      source <(tidegate completion bash)          # in ~/.bashrc
      tidegate completion zsh > "${fpath[1]}/_tidegate"
      tidegate completion fish > ~/.config/fish/completions/tidegate.fish
    """
    from click.shell_completion import get_completion_class

    from tidegate.cli.main import cli

    cls = get_completion_class(shell)
    if cls is None:  # click knows the three shells the Choice allows
        raise click.UsageError(f"no completion for {shell}")
    click.echo(cls(cli, {}, PROG, COMPLETE_VAR).source())


def completions(args: Sequence[str]) -> tuple[list[tuple[str, str]], int]:
    """(value, description) pairs for the last of `args` (the word being typed), and the directive."""
    from click.shell_completion import ShellComplete

    from tidegate.cli.main import cli

    words = list(args) or [""]
    items = ShellComplete(cli, {}, PROG, COMPLETE_VAR).get_completions(words[:-1], words[-1])
    kinds = {item.type for item in items}
    if "file" in kinds:
        directive = DIRECTIVE_DEFAULT
    elif "dir" in kinds:
        directive = DIRECTIVE_FILTER_DIRS
    else:
        directive = DIRECTIVE_NO_FILE
    return [(str(i.value), str(i.help or "")) for i in items if i.type == "plain"], directive


def kubectl_complete() -> None:
    """`kubectl_complete-tidegate ARGS... WORD`: cobra's completion protocol on stdout."""
    pairs, directive = completions(sys.argv[1:])
    for value, help_text in pairs:
        first = help_text.split("\n", 1)[0]
        sys.stdout.write(f"{value}\t{first}\n" if first else f"{value}\n")
    sys.stdout.write(f":{directive}\n")

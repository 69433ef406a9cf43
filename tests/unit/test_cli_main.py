"""The root command: static help that matches the commands, lazy imports, flags before the verb, completion.

Speed itself is measured by bench/cli_startup.py; here, what makes it fast is checked:
which modules `--help` and `list` load.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from tidegate.cli.completion import DIRECTIVE_DEFAULT, DIRECTIVE_NO_FILE, completions
from tidegate.cli.main import COMMANDS, cli

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("kubernetes", "pydantic", "kopf", "rich", "urllib3", "yaml", "tidegate.api", "tidegate.core.model")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_static_one_line_help_is_the_commands_own(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    first_paragraph = " ".join((command.help or "").split("\n\n")[0].split())
    assert COMMANDS[name][1] == first_paragraph


def loaded_modules(*args: str) -> list[str]:
    """The modules a fresh interpreter has loaded after `tidegate ARGS` (its exit code ignored)."""
    code = (
        "import sys\n"
        "from tidegate.cli.main import cli\n"
        "try:\n"
        f"    cli({list(args)!r}, prog_name='tidegate')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('\\n' + '\\n'.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return done.stdout.splitlines()


def heavy(modules: list[str]) -> list[str]:
    return sorted(
        {m.split(".")[0] if not m.startswith("tidegate") else m for m in modules if m.startswith(HEAVY)}
    )


def test_help_loads_click_and_nothing_heavy() -> None:
    modules = loaded_modules("--help")
    assert heavy(modules) == []
    assert not [m for m in modules if m.startswith("tidegate.cli.") and m not in _LIGHT]


_LIGHT = {"tidegate.cli.main", "tidegate.cli._options", "tidegate.cli._kube", "tidegate.cli._facts"}
_LIGHT |= {"tidegate.cli._rest", "tidegate.cli._kubeconfig"}


def test_list_loads_neither_the_kubernetes_client_nor_pydantic_nor_rich(tmp_path: Path) -> None:
    # A kubeconfig whose server refuses connections: `list` goes all the way to its request.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "a",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "a", "context": {"cluster": "c", "user": "u"}}],
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(config))
    modules = loaded_modules("list", "rollouts", "--kubeconfig", str(path))
    assert "urllib3" in modules  # it did connect
    assert heavy(modules) == ["urllib3", "yaml"]


def test_connection_flags_before_the_verb_and_after_it_point_alike(tmp_path: Path) -> None:
    refused = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "a",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "a", "context": {"cluster": "c", "user": "u"}}],
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(refused))
    runner = CliRunner()
    before = runner.invoke(
        cli, ["--kubeconfig", str(path), "-n", "shop", "--request-timeout", "2s", "get", "ro", "web"]
    )
    after = runner.invoke(
        cli, ["get", "ro", "web", "--kubeconfig", str(path), "-n", "shop", "--request-timeout", "2s"]
    )
    assert before.exit_code == after.exit_code == 1
    assert before.output == after.output
    assert "reading rollout web: cannot reach the cluster" in before.output
    missing = runner.invoke(cli, ["--context", "nope", "--kubeconfig", str(path), "list", "rollouts"])
    assert (
        missing.exit_code == 1
        and 'context "nope" not found in the kubeconfig (contexts: a)' in missing.output
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--request-timeout", "soon", "list", "ro"], "--request-timeout"),
        (["-A", "promote", "web"], "-A/--all-namespaces: only get and list read across namespaces"),
        (["get", "deployments"], "unknown resource type 'deployments'"),
        (["get", "ro", "web", "-A"], "-A lists across namespaces; with NAME, pick the namespace with -n"),
        (["get", "ro", "--watch", "-o", "json"], "--watch prints the live view (with NAME) or a table"),
        (["list", "ro", "-o", "table"], "'table' is not one of 'json', 'yaml', 'wide', 'name'"),
    ],
    ids=["bad-timeout", "A-on-a-verb", "unknown-type", "A-with-name", "watch-json", "bad-output"],
)
def test_usage_errors_exit_2_naming_the_flag(args: list[str], words: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert words in result.output


def test_completion_of_verbs_types_and_flags() -> None:
    verbs, directive = completions(["g"])
    assert [v for v, _ in verbs] == ["get"] and directive == DIRECTIVE_NO_FILE
    assert dict(verbs)["get"] == COMMANDS["get"][1]
    types, _ = completions(["get", ""])
    assert [v for v, _ in types] == ["rollouts", "analysisruns"]
    flags, _ = completions(["list", "ro", "--"])
    assert {
        "--output",
        "--namespace",
        "--all-namespaces",
        "--context",
        "--kubeconfig",
        "--request-timeout",
    } <= {v for v, _ in flags}
    outputs, _ = completions(["get", "ro", "-o", ""])
    assert [v for v, _ in outputs] == ["json", "yaml", "wide", "name"]
    _files, file_directive = completions(["lint", ""])
    assert file_directive == DIRECTIVE_DEFAULT  # lint takes files: the shell completes them


def test_kubectl_complete_speaks_cobras_protocol() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from tidegate.cli.completion import kubectl_complete; kubectl_complete()",
            "ge",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert done.stdout == f"get\t{COMMANDS['get'][1]}\n:{DIRECTIVE_NO_FILE}\n"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_call_back_into_tidegate(shell: str) -> None:
    result = CliRunner().invoke(cli, ["completion", shell])
    assert result.exit_code == 0 and "_TIDEGATE_COMPLETE" in result.output


def test_the_kubectl_completion_helper_is_installed_with_the_package() -> None:
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kubectl_complete-tidegate"] == "tidegate.cli.completion:kubectl_complete"
    assert scripts["kubectl-tidegate"] == scripts["tidegate"] == "tidegate.cli.main:main"
    assert json.dumps(scripts)  # plain strings


def test_a_flag_after_the_verb_wins_over_the_same_flag_before_it() -> None:
    from tidegate.cli._kube import Target
    from tidegate.cli._options import cluster_options, connection_options

    @click.group()
    def root(**_: object) -> None:
        pass

    for option in reversed(connection_options(all_namespaces=True)):
        root = option(root)

    @root.command()
    @cluster_options(all_namespaces=True)
    def show(target: Target) -> None:
        t = target
        click.echo(f"{t.namespace} {t.context} {t.kubeconfig} {t.all_namespaces} {t.request_timeout}")

    result = CliRunner().invoke(
        root,
        [
            "-n",
            "a",
            "--context",
            "x",
            "--kubeconfig",
            "k",
            "--request-timeout",
            "2m",
            "show",
            "-n",
            "b",
            "-A",
        ],
    )
    assert result.output == "b x k True 120.0\n", result.output
    assert (
        CliRunner().invoke(root, ["show", "--request-timeout", "0"]).output == "None None None False None\n"
    )


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    ctx = click.Context(group)
    found: list[tuple[str, ...]] = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        found.append((*path, name))
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
    return found


def test_every_command_has_help_with_an_example() -> None:
    """The README's promise: `--help` of every command, subcommands included, shows an example."""
    commands = _commands(cli)
    assert len(commands) >= 20, commands
    runner = CliRunner()
    missing = []
    for path in commands:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        if "Example" not in result.output:
            missing.append(" ".join(path))
    assert missing == [], f"--help without an example: {missing}"

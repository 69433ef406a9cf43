"""kubectl's connection flags (before or after the verb) and completion from the cluster.

`tidegate --help` imports this module, click and the light `_kube`; urllib3 and the
kubeconfig load when a command connects (`Target.connect`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

from tidegate.cli._kube import Target
from tidegate.core.durations import DurationError, parse_duration

# The connection flags, by parameter name; given before the verb they are the defaults.
CONNECTION_PARAMS = ("kubeconfig", "context", "namespace", "all_namespaces", "request_timeout")

F = TypeVar("F", bound=Callable[..., Any])


def parse_request_timeout(value: str | None) -> float | None:
    """kubectl's --request-timeout: `0` (none), a number of seconds, or 1s, 2m, 3h."""
    if value in (None, "", "0"):
        return None
    try:
        seconds = parse_duration(str(value))
    except DurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--request-timeout") from exc
    return seconds or None


def connection_options(*, all_namespaces: bool = True) -> list[Callable[[F], F]]:
    """kubectl's connection flags as click options (for the root group and for every verb)."""
    options: list[Callable[[F], F]] = [
        click.option(
            "--kubeconfig",
            metavar="PATH",
            help="Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).",
            shell_complete=_complete_files,
        ),
        click.option(
            "--context",
            metavar="NAME",
            help="Kubeconfig context (default: the current one).",
            shell_complete=_complete_contexts,
        ),
        click.option(
            "-n",
            "--namespace",
            metavar="NS",
            help="Namespace (default: the context's namespace, else `default`).",
            shell_complete=namespaces,
        ),
        click.option(
            "--request-timeout",
            metavar="DURATION",
            help="Give up on a single request after this long (1s, 2m, 3h; 0: never). Watches stay open.",
        ),
    ]
    if all_namespaces:
        options.append(
            click.option(
                "-A", "--all-namespaces", is_flag=True, default=None, help="List across all namespaces."
            )
        )
    return options


def cluster_options(*, all_namespaces: bool = False) -> Callable[[F], F]:
    """Add kubectl's connection options; the command receives them as `target: Target`."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {k: kwargs.pop(k, None) for k in CONNECTION_PARAMS}
            root = click.get_current_context().find_root().params
            merged = {
                k: given[k] if given[k] not in (None, False) else root.get(k) for k in CONNECTION_PARAMS
            }
            if merged["all_namespaces"] and not all_namespaces:
                raise click.UsageError("-A/--all-namespaces: only get and list read across namespaces")
            target = Target(
                kubeconfig=merged["kubeconfig"],
                context=merged["context"],
                namespace=merged["namespace"],
                all_namespaces=bool(merged["all_namespaces"]),
                request_timeout=parse_request_timeout(merged["request_timeout"]),
            )
            return fn(*args, target=target, **kwargs)

        decorated: Any = wrapper
        for option in reversed(connection_options(all_namespaces=all_namespaces)):
            decorated = option(decorated)
        return cast(F, decorated)

    return decorate


def target_from(ctx: click.Context) -> Target:
    """The Target the flags typed so far point at (for completion: errors give defaults)."""
    params: dict[str, Any] = {}
    node: click.Context | None = ctx
    while node is not None:
        for k in CONNECTION_PARAMS:
            if params.get(k) is None and node.params.get(k) is not None:
                params[k] = node.params[k]
        node = node.parent
    try:
        timeout = parse_request_timeout(params.get("request_timeout")) or 5.0
    except click.BadParameter:
        timeout = 5.0
    return Target(
        kubeconfig=params.get("kubeconfig"),
        context=params.get("context"),
        namespace=params.get("namespace"),
        all_namespaces=bool(params.get("all_namespaces")),
        request_timeout=timeout,
    )


def _complete_files(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    from click.shell_completion import CompletionItem

    return [CompletionItem(incomplete, type="file")]


def _complete_contexts(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    from tidegate.cli._kubeconfig import contexts

    return [c for c in contexts(target_from(ctx).kubeconfig) if c.startswith(incomplete)]


def _names(ctx: click.Context, plural: str, incomplete: str, *, namespaced: bool = True) -> list[str]:
    from tidegate.cli._rest import ApiError, Unreachable, path_for

    try:
        cluster = target_from(ctx).connect()
        if namespaced:
            path = path_for("tidegate.io", "v1alpha1", plural, cluster.namespace)
        else:
            path = path_for("", "v1", plural)
        names = cluster.names(path)
    except (click.ClickException, ApiError, Unreachable, OSError):
        return []
    return [n for n in names if n.startswith(incomplete)]


def rollout_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return _names(ctx, "rollouts", incomplete)


def object_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Names of the objects of the TYPE argument typed before (Rollouts when none)."""
    resource: Any = ctx.params.get("resource")
    return _names(ctx, resource.plural if resource is not None else "rollouts", incomplete)


def namespaces(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return _names(ctx, "namespaces", incomplete, namespaced=False)

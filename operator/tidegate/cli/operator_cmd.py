"""`tidegate operator`: run the operator."""

from __future__ import annotations

import asyncio
import logging

import click


@click.command("operator")
@click.option(
    "-n", "--namespace", "namespaces", multiple=True, help="Watch only these namespaces (repeatable)."
)
@click.option("--log-level", default="info", show_default=True, help="debug, info, warning, error.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option(
    "--metrics-port",
    type=int,
    default=8080,
    show_default=True,
    help="Port of /metrics, /healthz, /readyz; 0 disables.",
)
@click.option("--metrics-host", default="0.0.0.0", show_default=True)
def command(
    namespaces: tuple[str, ...], log_level: str, log_format: str, metrics_port: int, metrics_host: str
) -> None:
    """Run the Tidegate operator (kopf) against the current kubeconfig or in-cluster config.

    \b
    Example:
      tidegate operator --metrics-port 0
      tidegate operator -n team-a -n team-b --log-format json
    """
    import kopf

    import tidegate.handlers.operator  # noqa: F401 - registers the handlers

    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            standalone=True,
        )
    )

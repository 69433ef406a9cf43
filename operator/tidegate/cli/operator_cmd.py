"""`tidegate operator`: run the operator."""

from __future__ import annotations

import asyncio

import click


async def _run(namespaces: tuple[str, ...], metrics_host: str, metrics_port: int) -> None:
    import importlib
    import importlib.util

    import kopf

    if importlib.util.find_spec("tidegate.handlers.analysis") is not None:
        importlib.import_module("tidegate.handlers.analysis")  # registers the AnalysisRun controller
    from tidegate.handlers import operator as handlers
    from tidegate.telemetry import TelemetryServer

    ready = asyncio.Event()
    server = TelemetryServer(handlers.TELEMETRY.registry, host=metrics_host, port=metrics_port)
    if metrics_port:
        await server.start()

    async def mark_ready() -> None:
        await ready.wait()
        server.set_ready(True)

    marker = asyncio.create_task(mark_ready())
    try:
        settings = kopf.OperatorSettings()
        # Namespaced mode: no cluster-wide scans of namespaces (or CRDs), which a
        # namespaced Role does not allow; the CRDs are installed before the operator.
        settings.scanning.disabled = bool(namespaces)
        await kopf.operator(
            settings=settings,
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            standalone=True,
            ready_flag=ready,
        )
    finally:
        marker.cancel()
        if metrics_port:
            await server.stop()


@click.command("operator")
@click.option(
    "-n", "--namespace", "namespaces", multiple=True, help="Watch only these namespaces (repeatable)."
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    envvar="TIDEGATE_LOG_LEVEL",
    help="debug, info, warning, error.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="TIDEGATE_LOG_FORMAT",
)
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
    import logging

    from tidegate.telemetry import setup_logging

    setup_logging(log_level, json=log_format == "json")
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    # kopf logs every successful watch-event handler at INFO: one line per event.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    asyncio.run(_run(namespaces, metrics_host, metrics_port))

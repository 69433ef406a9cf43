"""`tidegate operator`: run the operator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from typing import Any

import click

log = logging.getLogger("tidegate.operator")
WORKER_THREADS = 32


class _Seconds(click.ParamType[float]):
    """A duration as Argo's flags take it ("15s", "1m") or a number of seconds ("15", "1.5")."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        from tidegate.core.durations import DurationError, parse_duration

        if isinstance(value, int | float):
            return float(value)
        try:
            return float(value)
        except ValueError:
            pass
        try:
            return parse_duration(str(value))
        except DurationError as exc:
            self.fail(str(exc), param, ctx)


SECONDS = _Seconds()


def _default_identity() -> str:
    """client-go's recommended identity: the pod's name (hostname), made unique per process."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def _default_lease_namespace() -> str:
    in_cluster = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if os.path.exists(in_cluster):
        with open(in_cluster) as f:
            return f.read().strip()
    return "default"


def api_server_addresses(host_url: str, environ: dict[str, str] | None = None) -> frozenset[tuple[str, int]]:
    """Every (address, port) the API server is known by: the client's host (resolved) and, in a
    pod, the `kubernetes` Service (KUBERNETES_SERVICE_HOST/PORT). Metric requests to them are refused."""
    from urllib.parse import urlsplit

    env = os.environ if environ is None else environ
    known: set[tuple[str, int]] = set()
    parts = urlsplit(host_url)
    targets = []
    if parts.hostname:
        targets.append((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)))
    if env.get("KUBERNETES_SERVICE_HOST"):
        targets.append((env["KUBERNETES_SERVICE_HOST"], int(env.get("KUBERNETES_SERVICE_PORT") or 443)))
    for host, port in targets:
        known.add((host, port))
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            continue
        known.update((str(info[4][0]), port) for info in infos)
    return frozenset(known)


def configure_outbound_policy(clients: Any) -> None:
    """The metric providers' outbound policy: TIDEGATE_OUTBOUND_* and the API server's addresses."""
    from tidegate.metrics import Outbound, configure_outbound, policy_from_env

    servers = api_server_addresses(str(clients.api.configuration.host))
    try:
        policy = policy_from_env(api_servers=servers)
    except ValueError as error:  # a bad entry stops the operator at once, saying which
        raise click.UsageError(f"outbound policy: {error}") from None
    configure_outbound(Outbound(policy))
    log.info(
        "outbound policy: allow %s; deny %s; Secrets to %s; answers up to %d bytes",
        " ".join(e.text for e in policy.allow) or "any address not refused by default",
        " ".join(e.text for e in policy.deny) or "nothing more",
        " ".join(e.text for e in policy.secret_allow) or "no host",
        policy.max_response_bytes,
    )


async def _run(
    namespaces: tuple[str, ...],
    metrics_host: str,
    metrics_port: int,
    election: dict[str, Any] | None,
    notifications_namespace: str | None = None,
    clients: Any = None,
) -> int:
    """Caches first (a standby keeps them warm), then the Lease, then kopf: only the leader writes.

    `clients` (tidegate.k8s.client.Clients) replaces the ones loaded from the kubeconfig; the
    tests pass clients that hold a write at a chosen point.
    """
    import importlib
    import importlib.util
    import signal
    from concurrent.futures import ThreadPoolExecutor

    import kopf

    if importlib.util.find_spec("tidegate.handlers.analysis") is not None:
        importlib.import_module("tidegate.handlers.analysis")  # registers the AnalysisRun controller
    from tidegate.handlers import operator as handlers
    from tidegate.k8s.cache import Cache
    from tidegate.k8s.client import Clients
    from tidegate.k8s.leader import LeaderElector, LeadershipLost
    from tidegate.telemetry import TelemetryServer

    loop = asyncio.get_running_loop()
    # Every API call runs in a worker thread; asyncio's default (cores + 4 = 6 threads
    # here) queued them behind each other. Writes in flight are bounded by the pool.
    api_threads = ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="api")
    loop.set_default_executor(api_threads)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    server = TelemetryServer(handlers.TELEMETRY.registry, host=metrics_host, port=metrics_port)
    if metrics_port:
        await server.start()
    if clients is None:
        clients = Clients.load(on_request=handlers.TELEMETRY.count_api_request)
    configure_outbound_policy(clients)
    cache = Cache(clients, namespaces)
    await cache.start()
    elector = LeaderElector(clients, identity=election["identity"], **election["lease"]) if election else None
    hold: asyncio.Task[None] | None = None
    try:
        await cache.wait_synced(timeout=120)
        handlers.bind(clients, cache, notifications_namespace or _default_lease_namespace())
        # Ready once the caches are synced, leader or standby: a standby is a warm spare
        # that a rolling update and a PodDisruptionBudget can count on.
        server.set_ready(True)
        if elector is not None:
            log.info("waiting to lead: lease %s/%s as %s", elector.namespace, elector.name, elector.identity)
            if not await _first(elector.acquire(), stop.wait()):
                return 0
            handlers.TELEMETRY.set_leader(True)
        settings = kopf.OperatorSettings()
        # Namespaced mode: no cluster-wide scans of namespaces (or CRDs), which a
        # namespaced Role does not allow; the CRDs are installed before the operator.
        settings.scanning.disabled = bool(namespaces)
        ready = asyncio.Event()
        kopf_task = asyncio.create_task(
            kopf.operator(
                settings=settings,
                clusterwide=not namespaces,
                namespaces=list(namespaces),
                standalone=True,
                stop_flag=stop,
                ready_flag=ready,
                # kopf's own default (user@host) asks the passwd database for the user's name,
                # and the image runs as uid 65532, which has no entry: KeyError at start-up.
                identity=elector.identity if elector is not None else _default_identity(),  # type: ignore[arg-type]
            )
        )
        hold = asyncio.create_task(elector.hold()) if elector is not None else None
        # kopf puts its own SIGINT/SIGTERM handlers in place of ours as it starts. Stopped by
        # those, it leaves the task waiting on `stop` pending and waits 5 s for it ("hung")
        # before it returns, and the Lease was released that much later. Once kopf is up, the
        # signals set `stop` again, which kopf stops on at once.
        waits: set[asyncio.Future[Any]] = {kopf_task, *([hold] if hold else [])}
        readied = asyncio.ensure_future(ready.wait())
        await asyncio.wait({readied, *waits}, return_when=asyncio.FIRST_COMPLETED)
        readied.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if hold is not None and hold.done() and not kopf_task.done():
            # Lost the Lease: exit at once, as client-go's OnStoppedLeading (klog.Fatal) does.
            # Another replica may lead within lease - renew deadline (5 s by default), which a
            # graceful stop (passes finishing) could outlast; a pass cut here is harmless, the
            # next leader plans again from the cluster. The Deployment starts this one again.
            log.error("lost the leader Lease (%s); exiting", hold.exception() or "no renewal")
            logging.shutdown()
            os._exit(1)
        await kopf_task
    finally:
        handlers.TELEMETRY.set_leader(False)
        # kopf has stopped, and every pass with it; but a request already in a worker thread (of
        # a pass that outlasted STOP_TIMEOUT and that kopf then cancelled, of a delete handler
        # kopf cut short) still lands when it lands. Wait for them while the Lease is still held
        # and renewed: released first, a standby could act beside that write.
        await _drain(loop, api_threads)
        if hold is not None:
            hold.cancel()
            with contextlib.suppress(asyncio.CancelledError, LeadershipLost):
                await hold
        if elector is not None:
            await elector.release()  # a standby leads at its next retry, not after the lease
        cache.stop()
        if metrics_port:
            await server.stop()
    return 0


async def _drain(loop: asyncio.AbstractEventLoop, threads: Any) -> None:
    """Wait for every call running or queued in `threads` (an executor) to end; calls made
    meanwhile (the Lease's renewals, its release) go to a pool of their own."""
    from concurrent.futures import ThreadPoolExecutor

    loop.set_default_executor(ThreadPoolExecutor(max_workers=4, thread_name_prefix="api-last"))
    await asyncio.to_thread(threads.shutdown, True)


async def _first(wanted: Any, stop: Any) -> bool:
    """Run `wanted` unless `stop` finishes first; True when `wanted` finished."""
    a, b = asyncio.ensure_future(wanted), asyncio.ensure_future(stop)
    done, _ = await asyncio.wait({a, b}, return_when=asyncio.FIRST_COMPLETED)
    for task in (a, b):
        task.cancel()
    return a in done


def _log_level(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from tidegate.telemetry import parse_level

    try:
        parse_level(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    return value


@click.command("operator")
@click.option(
    "-n", "--namespace", "namespaces", multiple=True, help="Watch only these namespaces (repeatable)."
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    envvar="TIDEGATE_LOG_LEVEL",
    callback=_log_level,
    help="debug, info, warning, error (debug also shows other libraries' request lines).",
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
@click.option(
    "--leader-elect",
    type=click.BOOL,
    default=True,
    is_flag=False,
    flag_value=True,
    show_default=True,
    help="Take a coordination.k8s.io Lease before acting (standbys keep their caches warm); "
    "--leader-elect=false for a one-off run.",
)
@click.option("--leader-elect-lease-name", default="tidegate-operator", show_default=True)
@click.option(
    "--leader-elect-namespace",
    default=None,
    help="Namespace of the Lease [default: POD_NAMESPACE, the in-cluster namespace, or default].",
)
@click.option(
    "--leader-elect-identity", default=None, help="[default: POD_NAME or hostname, plus a unique suffix]"
)
# Argo Rollouts' controller names (cmd/rollouts-controller: --leader-election-lease-duration and so on,
# durations such as 15s); the --leader-elect-* spellings are kept for the chart's earlier flags.
@click.option(
    "--leader-election-lease-duration",
    "--leader-elect-lease-duration",
    "leader_elect_lease_duration",
    type=SECONDS,
    default=15.0,
    show_default=True,
)
@click.option(
    "--leader-election-renew-deadline",
    "--leader-elect-renew-deadline",
    "leader_elect_renew_deadline",
    type=SECONDS,
    default=10.0,
    show_default=True,
)
@click.option(
    "--leader-election-retry-period",
    "--leader-elect-retry-period",
    "leader_elect_retry_period",
    type=SECONDS,
    default=2.0,
    show_default=True,
)
@click.option(
    "--notifications-namespace",
    default=None,
    help="Namespace of tidegate-notification-configmap and -secret "
    "[default: POD_NAMESPACE, the in-cluster namespace, or default].",
)
def command(
    namespaces: tuple[str, ...],
    log_level: str,
    log_format: str,
    metrics_port: int,
    metrics_host: str,
    leader_elect: bool,
    leader_elect_lease_name: str,
    leader_elect_namespace: str | None,
    leader_elect_identity: str | None,
    leader_elect_lease_duration: float,
    leader_elect_renew_deadline: float,
    leader_elect_retry_period: float,
    notifications_namespace: str | None,
) -> None:
    """Run the Tidegate operator (kopf) against the current kubeconfig or in-cluster config.

    \b
    Example:
      tidegate operator --metrics-port 0
      tidegate operator -n team-a -n team-b --log-format json
      tidegate operator --leader-elect=false      # a one-off run, no Lease
    """
    from tidegate.telemetry import setup_logging

    # kopf.objects (a line per handled watch event), kubernetes, urllib3 and httpx (a line per
    # request) stay at warning unless the level is debug: telemetry's NOISY_LOGGERS.
    setup_logging(log_level, json=log_format == "json")
    election = None
    if leader_elect:
        election = {
            "identity": leader_elect_identity or _default_identity(),
            "lease": {
                "namespace": leader_elect_namespace or _default_lease_namespace(),
                "name": leader_elect_lease_name,
                "lease_duration": leader_elect_lease_duration,
                "renew_deadline": leader_elect_renew_deadline,
                "retry_period": leader_elect_retry_period,
            },
        }
    raise SystemExit(
        asyncio.run(_run(namespaces, metrics_host, metrics_port, election, notifications_namespace))
    )

"""HTTP endpoints of the operator: `/metrics`, `/healthz` (liveness), `/readyz` (readiness).

An aiohttp server on the operator's own event loop. Liveness answers 200 as long as the
loop serves requests, so a loop blocked by a synchronous call fails the probe and the
kubelet restarts the pod. Readiness turns 200 once the operator has started watching
(`set_ready(True)`, e.g. from a kopf startup handler) and 503 before, or after
`set_ready(False)` at shutdown.
"""

from __future__ import annotations

from types import TracebackType

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

DEFAULT_HOST = "0.0.0.0"  # all interfaces: the kubelet and Prometheus reach the pod IP
DEFAULT_PORT = 8080


class TelemetryServer:
    """Serves a registry's metrics and the health endpoints.

    >>> server = TelemetryServer(telemetry.registry, host="127.0.0.1", port=0)
    >>> await server.start()        # port=0 picks a free port: see server.port
    >>> server.set_ready(True)
    >>> await server.stop()
    """

    def __init__(
        self, registry: CollectorRegistry, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
    ) -> None:
        self._registry = registry
        self._host = host
        self._requested_port = port
        self._ready = False
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def ready(self) -> bool:
        return self._ready

    def set_ready(self, ready: bool = True) -> None:
        """Mark the operator ready (watching) or not; /readyz follows."""
        self._ready = ready

    @property
    def port(self) -> int:
        """The port actually bound (differs from the requested one when that was 0)."""
        if self._port is None:
            raise RuntimeError("the telemetry server is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL of the server, e.g. ``http://127.0.0.1:40123``."""
        host = "127.0.0.1" if self._host in ("0.0.0.0", "") else self._host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the telemetry server is already started")
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        # No access log: probes and scrapes would flood the operator's log.
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._requested_port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        self._port = int(address[1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        self._port = None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> TelemetryServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _metrics(self, request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(self._registry), headers={"Content-Type": content_type})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._ready:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not ready: the operator is not watching yet\n")

"""The metrics and probe endpoints every component serves (``/metrics``, ``/healthz``, ``/readyz``)."""

from __future__ import annotations

import os
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class ListenError(Exception):
    """The address cannot be listened on (in use, not local, not permitted): a setting to
    fix, not a fault to retry."""


def parse_bind(bind: str) -> tuple[str, int]:
    """``":8080"`` -> all interfaces, ``"127.0.0.1:0"`` -> loopback, any free port."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"bind address {bind!r} must look like ':8080' or '127.0.0.1:0'")
    host = host.strip("[]") or "0.0.0.0"  # ":port" means every interface
    return host, int(port)


class HealthServer:
    """An aiohttp server for Prometheus scrapes and kubelet probes."""

    def __init__(
        self,
        *,
        bind: str,
        registry: CollectorRegistry,
        ready: Callable[[], bool] = lambda: True,
        healthy: Callable[[], bool] = lambda: True,
    ) -> None:
        self._host, self._port = parse_bind(bind)
        self._registry = registry
        self._ready = ready
        self._healthy = healthy
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> int:
        """Start serving; returns the bound port (useful with port 0)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ListenError(
                f"cannot listen on {self._host}:{self._port}: {reason.lower()}"
            ) from None
        self._runner = runner
        address = runner.addresses[0]
        self.port = int(address[1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        if self._healthy():
            return web.Response(text="ok")
        return web.Response(status=503, text="unhealthy")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ok")
        return web.Response(status=503, text="not ready")

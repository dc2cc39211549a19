"""`run`: a service mirror with its admin address, until told to stop.

The admin address (plain HTTP) serves `/metrics` (`MirrorMetrics`), `/live`
(200) and `/ready` (200 once the local API has answered, whether this replica
leads or stands by; 503 before).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web
from lightkube import AsyncClient

from isthmus.components.mirror.controller import ServiceMirror
from isthmus.core import mirror as core

log = logging.getLogger("isthmus.mirror")

__all__ = ["AdminServer", "run"]


class AdminServer:
    def __init__(self, mirror: ServiceMirror, address: tuple[str, int]) -> None:
        self._mirror = mirror
        self._address = address
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/live", self._live)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, *self._address, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._address[1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self._mirror.metrics.render(), content_type="text/plain",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def _ready(self, request: web.Request) -> web.Response:
        if self._mirror.started.is_set():
            role = "leader" if self._mirror.is_leader else "standby"
            return web.Response(text=f"ready ({role})\n")
        return web.Response(text="not ready: the local API has not answered yet\n", status=503)

    async def _live(self, request: web.Request) -> web.Response:
        return web.Response(text="live\n")


async def run(local: AsyncClient, link_name: str, *, namespace: str = core.DEFAULT_NAMESPACE,
              admin_address: tuple[str, int] | None = None, stop: asyncio.Event | None = None,
              **options: Any) -> None:
    """Run the service mirror of `link_name` (and its admin server) until `stop` is set or cancelled.

    `options` go to `ServiceMirror` (identity, workers, lease timings, probe, ...).
    """
    mirror = ServiceMirror(local, link_name, namespace, **options)
    admin = AdminServer(mirror, admin_address) if admin_address is not None else None
    if admin is not None:
        await admin.start()
        log.info("service mirror of Link %s/%s: admin on port %d", namespace, link_name, admin.port)
    task = asyncio.create_task(mirror.run(), name=f"service-mirror-{link_name}")
    try:
        if stop is None:
            await task
        else:
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if task.done():
                task.result()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if admin is not None:
            await admin.close()

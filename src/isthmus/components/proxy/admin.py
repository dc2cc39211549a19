"""The proxy's admin listener (4191): metrics, readiness, liveness, tap and shutdown.

- `GET /metrics`: Prometheus text format (linkerd2-proxy's names and labels);
- `GET /ready`: 200 once the proxy holds a certificate (or runs without
  identity), else 503 saying what it waits for — the pod's readiness probe
  and the multicluster gateway probe;
- `GET /live`: 200 while the process serves;
- `GET /tap?...`: a stream of this proxy's request events, one per line, in
  the DESIGN.md tap line format, or JSON with `format=json`; filters
  `namespace`, `resource` (`deploy/web`), `to_namespace`, `to_resource`,
  `authority`, `path` (prefix), `method`; bad filters get a 400 that names them;
- `POST /shutdown`: stops the proxy (a pod's last container asks for it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from isthmus.core.proxy.tap import TapQueryError, parse_tap_query

if TYPE_CHECKING:
    from isthmus.components.proxy.proxy import Proxy

log = logging.getLogger("isthmus.proxy.admin")

TAP_QUEUE = 1000  # lines a tap subscriber may be behind before events are dropped


class AdminServer:
    def __init__(self, proxy: Proxy, address: tuple[str, int]) -> None:
        self.proxy = proxy
        self.address = address
        self._runner: web.AppRunner | None = None
        self._taps: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/live", self._live)
        app.router.add_get("/tap", self._tap)
        app.router.add_post("/shutdown", self._shutdown)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        # SO_REUSEADDR only for a fixed port: with port 0 the kernel may pick a port that a
        # connected socket holds, and listen() then fails.
        site = web.TCPSite(self._runner, *self.address, reuse_address=self.address[1] != 0)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None)
        if sockets:  # the bound port, when 0 was asked for
            self.address = sockets[0].getsockname()[:2]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.proxy.stats.render(),
                            content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def _ready(self, request: web.Request) -> web.Response:
        if self.proxy.ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {self.proxy.not_ready_reason()}\n")

    async def _live(self, request: web.Request) -> web.Response:
        return web.Response(text="live\n")

    async def _shutdown(self, request: web.Request) -> web.Response:
        asyncio.get_running_loop().call_later(0.05, self.proxy.shutdown)
        return web.Response(text="shutdown\n")

    async def _tap(self, request: web.Request) -> web.StreamResponse:
        params = dict(request.query)
        fmt = params.pop("format", "text")
        if fmt not in ("text", "json"):
            return web.Response(status=400, text=f"bad format {fmt!r}: want text or json\n")
        limit = params.pop("max", None)
        try:
            tap_filter = parse_tap_query(params)
            max_events = int(limit) if limit is not None else None
        except (TapQueryError, ValueError) as e:
            return web.Response(status=400, text=f"bad tap query: {e}\n")
        # Lines wait in `pending` and go out together, one write per wake-up of this
        # handler rather than one per line: a busy proxy makes many events per loop turn.
        pending: list[bytes] = []
        wake = asyncio.Event()

        def sink(line: bytes) -> None:
            if len(pending) >= TAP_QUEUE:
                return  # a slow reader loses events rather than slowing the proxy
            pending.append(line)
            if not wake.is_set():
                wake.set()

        response = web.StreamResponse(headers={
            "Content-Type": "application/x-ndjson" if fmt == "json" else "text/plain; charset=utf-8"})
        await response.prepare(request)
        unsubscribe = self.proxy.tap.subscribe(tap_filter, sink, as_json=fmt == "json")
        sent = 0
        try:
            while max_events is None or sent < max_events:
                await wake.wait()
                wake.clear()
                batch = pending[:] if max_events is None else pending[:max_events - sent]
                pending.clear()
                await response.write(b"".join(batch))
                sent += len(batch)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            unsubscribe()
        return response

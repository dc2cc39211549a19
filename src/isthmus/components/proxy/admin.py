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

Served by `adminhttp` (a small HTTP/1.1 server on httptools; it says why not aiohttp).

A multicluster gateway also runs `GatewayProbeServer` (4192, the target of
its Service's `mc-probe` port): the same `/ready` and nothing else, over TLS
1.3 that requires a client certificate from the trust anchors — the remote
service mirrors' probes arrive there with their own workload certificates,
and the admin listener's metrics and tap stay off the gateway's public
address.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING

from isthmus.components.proxy.adminhttp import AdminHTTPServer, Request, Response, Stream
from isthmus.core.proxy.tap import TapQueryError, parse_tap_query

if TYPE_CHECKING:
    from isthmus.components.proxy.proxy import Proxy

log = logging.getLogger("isthmus.proxy.admin")

TAP_QUEUE = 1000  # lines a tap subscriber may be behind before events are dropped


def ready_response(proxy: Proxy) -> Response:
    if proxy.ready:
        return Response(text="ready\n")
    return Response(503, f"not ready: {proxy.not_ready_reason()}\n")


class GatewayProbeServer:
    """`GET /ready` over mTLS for remote service mirrors (module docstring).

    It listens once the proxy holds its first certificate (`start` waits for
    it): before that, a probe finds the port closed, which the mirror reports
    as the gateway not answering.
    """

    def __init__(self, proxy: Proxy, address: tuple[str, int]) -> None:
        self.proxy = proxy
        self.address = address
        self._http = AdminHTTPServer({("GET", "/ready"): self._ready, ("HEAD", "/ready"): self._ready})

    async def start(self, ctx: ssl.SSLContext) -> None:
        self.address = await self._http.start(*self.address, ssl=ctx)
        log.info("gateway probe listener on %s:%d (mTLS)", *self.address)

    async def close(self) -> None:
        await self._http.close()

    async def _ready(self, request: Request, stream: Stream) -> Response:
        return ready_response(self.proxy)


class AdminServer:
    def __init__(self, proxy: Proxy, address: tuple[str, int]) -> None:
        self.proxy = proxy
        self.address = address
        self._http = AdminHTTPServer({
            ("GET", "/metrics"): self._metrics, ("HEAD", "/metrics"): self._metrics,
            ("GET", "/ready"): self._ready, ("HEAD", "/ready"): self._ready,
            ("GET", "/live"): self._live, ("HEAD", "/live"): self._live,
            ("GET", "/tap"): self._tap,
            ("POST", "/shutdown"): self._shutdown,
        })

    async def start(self) -> None:
        self.address = await self._http.start(*self.address)  # the bound port, when 0 was asked for

    async def close(self) -> None:
        await self._http.close()

    async def _metrics(self, request: Request, stream: Stream) -> Response:
        return Response(text=self.proxy.stats.render(), headers={"X-Content-Type-Options": "nosniff"})

    async def _ready(self, request: Request, stream: Stream) -> Response:
        return ready_response(self.proxy)

    async def _live(self, request: Request, stream: Stream) -> Response:
        return Response(text="live\n")

    async def _shutdown(self, request: Request, stream: Stream) -> Response:
        asyncio.get_running_loop().call_later(0.05, self.proxy.shutdown)
        return Response(text="shutdown\n")

    async def _tap(self, request: Request, stream: Stream) -> Response | None:
        params = dict(request.query)
        fmt = params.pop("format", "text")
        if fmt not in ("text", "json"):
            return Response(400, f"bad format {fmt!r}: want text or json\n")
        limit = params.pop("max", None)
        try:
            tap_filter = parse_tap_query(params)
            max_events = int(limit) if limit is not None else None
        except (TapQueryError, ValueError) as e:
            return Response(400, f"bad tap query: {e}\n")
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

        await stream.start({
            "Content-Type": "application/x-ndjson" if fmt == "json" else "text/plain; charset=utf-8"})
        unsubscribe = self.proxy.tap.subscribe(tap_filter, sink, as_json=fmt == "json")
        sent = 0
        try:
            while max_events is None or sent < max_events:
                await wake.wait()
                wake.clear()
                batch = pending[:] if max_events is None else pending[:max_events - sent]
                pending.clear()
                await stream.write(b"".join(batch))
                sent += len(batch)
        finally:  # also when the client goes away (the handler is cancelled) or a write fails
            unsubscribe()
        return None

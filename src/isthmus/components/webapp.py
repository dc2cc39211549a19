"""What the control-plane HTTP services share: JSON answers, JSON refusals, and serving an app.

The identity, destination and injector services are aiohttp applications;
each answers with JSON, turns aiohttp's own refusals (unknown path, wrong
method) into `{"error": ...}` that says what is served instead, and listens
on an address (port 0: any free port) with or without TLS.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import orjson
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def json_errors(served: str) -> Any:
    """A middleware answering aiohttp's refusals as JSON; `served` says what is served here."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            return json_response({"error": f"{e.reason}: {request.method} {request.path} is not "
                                           f"served here; {served} is."}, e.status)

    return middleware


def listen(address: tuple[str, int], backlog: int = 1024) -> socket.socket:
    """A listening TCP socket with SO_REUSEADDR, so a restarted service can take its port back
    while connections of the old one are in TIME_WAIT."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve(app: web.Application, address: tuple[str, int], ctx: ssl.SSLContext | None,
                **runner_options: Any) -> tuple[web.AppRunner, int]:
    """Start `app` on `address`; returns its runner (to clean up) and the bound port.

    `runner_options` go to aiohttp's AppRunner (e.g. `handler_cancellation=True`
    for streams that must learn when their client goes away).
    """
    sock = listen(address)  # first: a port in use fails before the app's startup has run
    runner = web.AppRunner(app, access_log=None, **runner_options)
    try:
        await runner.setup()
        await web.SockSite(runner, sock, ssl_context=ctx).start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    port: int = sock.getsockname()[1]
    return runner, port


class WebService:
    """What the control-plane HTTPS services share: their listeners, URLs and runners.

    A subclass sets `_address`, `_admin_address`, `_runners = []`, `port` and
    `admin_port` in its constructor; `_runner_options` go to aiohttp's AppRunner.
    """

    _address: tuple[str, int]
    _admin_address: tuple[str, int] | None
    _runners: list[web.AppRunner]
    _runner_options: ClassVar[dict[str, Any]] = {}
    port: int
    admin_port: int

    @property
    def url(self) -> str:
        return f"https://{self._address[0]}:{self.port}"

    @property
    def admin_url(self) -> str:
        """The admin base URL; empty when the service has no admin address."""
        return f"http://{self._admin_address[0]}:{self.admin_port}" if self._admin_address else ""

    async def _serve(self, app: web.Application, address: tuple[str, int],
                     ctx: ssl.SSLContext | None) -> int:
        runner, port = await serve(app, address, ctx, **self._runner_options)
        self._runners.append(runner)
        return port

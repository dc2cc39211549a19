"""A small HTTP/1.1 server for the proxy's admin listener.

Why not aiohttp: the admin listener answers five fixed paths, and every meshed
pod runs a proxy, whose idle RSS budget is 40 MiB. aiohttp (its parser, yarl,
multidict, the web framework) alone cost ~12 MiB of it. This server uses what
the data plane already loads — httptools and an `asyncio.Protocol` — and does
only what the admin paths need:

- requests on a connection are answered in order (keep-alive, HTTP/1.0 and
  1.1); request bodies are read and ignored; an unknown path gets 404, a known path with another method 405
  with `Allow`, a malformed request 400 and the connection closed;
- a response is a `Response` (fixed body with Content-Length) or, for
  streams, a handler that calls `Stream.start` then `Stream.write`; streams
  are chunked (HTTP/1.1) or closed at their end (HTTP/1.0);
- a handler is cancelled when its client goes away (a tap stream then ends
  at once, not at its next event; a client that ends its side of the
  connection during a stream counts as gone); writes wait while the client reads slower
  than the handler writes;
- a request head must arrive within `HEAD_TIMEOUT` seconds and be at most
  `MAX_HEAD` bytes; an idle keep-alive connection is closed after
  `IDLE_TIMEOUT` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from ssl import SSLContext
from typing import cast
from urllib.parse import parse_qsl

import httptools

log = logging.getLogger("isthmus.proxy.admin")

HEAD_TIMEOUT = 10.0
IDLE_TIMEOUT = 75.0
MAX_HEAD = 64 * 1024
MAX_QUEUED = 8  # pipelined requests read ahead of the one being answered


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]  # the first value of each name, as `dict(aiohttp's request.query)`
    version: str


@dataclass
class Response:
    status: int = 200
    text: str = ""
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)


class Stream:
    """A streamed response: `start` sends the head, `write` a piece of the body."""

    def __init__(self, conn: _Conn, request: Request) -> None:
        self._conn = conn
        self._chunked = request.version == "1.1"
        self.started = False

    async def start(self, headers: Mapping[str, str]) -> None:
        extra = {"Transfer-Encoding": "chunked"} if self._chunked else {"Connection": "close"}
        self._conn.send(_head(200, {**headers, **extra}))
        self.started = self._conn.streaming = True
        await self._conn.drain()

    async def write(self, data: bytes) -> None:
        if data:
            self._conn.send(b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data)
            await self._conn.drain()

    def _end(self) -> None:
        self._conn.streaming = False
        if self._chunked:
            self._conn.send(b"0\r\n\r\n")
        else:
            self._conn.keep_alive = False


Handler = Callable[[Request, Stream], Awaitable[Response | None]]


def _head(status: int, headers: Mapping[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class AdminHTTPServer:
    """Routes (method, path) → handler; `start` listens, `close` stops listening and closes connections."""

    def __init__(self, routes: Mapping[tuple[str, str], Handler]) -> None:
        self.routes = dict(routes)
        self.conns: set[_Conn] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int, *, ssl: SSLContext | None = None) -> tuple[str, int]:
        """Listen on host:port (TLS with `ssl`); returns the bound address."""
        loop = asyncio.get_running_loop()
        # SO_REUSEADDR only for a fixed port: with port 0 the kernel may pick a port that a
        # connected socket holds, and listen() then fails.
        self._server = await loop.create_server(lambda: _Conn(self), host, port,
                                                reuse_address=port != 0, ssl=ssl,
                                                ssl_handshake_timeout=HEAD_TIMEOUT if ssl else None)
        bound = self._server.sockets[0].getsockname()
        return bound[0], bound[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.conns):
            conn.abort()
        tasks = [c.task for c in self.conns if c.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    def route(self, request: Request) -> tuple[Handler | None, Response | None]:
        handler = self.routes.get((request.method, request.path))
        if handler is not None:
            return handler, None
        allowed = sorted(m for m, p in self.routes if p == request.path)
        if allowed:
            return None, Response(405, "405: Method Not Allowed", headers={"Allow": ",".join(allowed)})
        return None, Response(404, "404: Not Found")


class _Conn(asyncio.Protocol):
    def __init__(self, server: AdminHTTPServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request | None] = deque()  # None: a malformed request
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.keep_alive = True
        self._url = b""
        self._head_bytes = 0
        self._writable: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._eof = False
        self._broken = False
        self.streaming = False
        self._in_head = False

    # ------------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport subclass
        self.server.conns.add(self)
        self.task = asyncio.get_running_loop().create_task(self._serve())
        self._arm(IDLE_TIMEOUT)

    def data_received(self, data: bytes) -> None:
        if self._broken:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._eof = True  # the admin paths take no upgrades: answer, then close
        except httptools.HttpParserError:
            self._bad()
        if len(self.queue) >= MAX_QUEUED:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        self.ready.set()
        # Answer what was asked, then close; but a client that ends its side during a stream
        # has gone away (HTTP clients do not half-close): the stream ends now.
        return not self.streaming

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.conns.discard(self)
        self._disarm()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self._wake_writer()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake_writer()

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        self._url, self._head_bytes, self._in_head = b"", 0, True
        self._arm(HEAD_TIMEOUT)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))

    def on_message_complete(self) -> None:
        self._in_head = False
        self._disarm()
        parsed = httptools.parse_url(self._url)
        query: dict[str, str] = {}
        for k, v in parse_qsl((parsed.query or b"").decode("latin-1"), keep_blank_values=True):
            query.setdefault(k, v)
        self.queue.append(Request(self.parser.get_method().decode("latin-1"),
                                  (parsed.path or b"/").decode("latin-1"), query,
                                  self.parser.get_http_version()))
        if not self.parser.should_keep_alive():
            self._eof = True
        self.ready.set()

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD:
            raise httptools.HttpParserError("request head too large")

    # ------------------------------------------------------------------ serving

    async def _serve(self) -> None:
        try:
            while True:
                while not self.queue:
                    if self._eof or not self.keep_alive:
                        return
                    self.ready.clear()
                    await self.ready.wait()
                request = self.queue.popleft()
                self.transport.resume_reading()
                if request is None:
                    self.keep_alive = False
                    await self._respond(Response(400, "400: Bad Request"), "1.1", head_only=False)
                    return
                await self._answer(request)
                if not self.queue and not self._in_head:
                    self._arm(IDLE_TIMEOUT)
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("admin request failed")
        finally:
            if not self.transport.is_closing():
                self.transport.close()

    async def _answer(self, request: Request) -> None:
        handler, response = self.server.route(request)
        stream = Stream(self, request)
        if handler is not None:
            response = await handler(request, stream)
        if stream.started:
            stream._end()
        elif response is not None:
            await self._respond(response, request.version, head_only=request.method == "HEAD")

    async def _respond(self, response: Response, version: str, *, head_only: bool) -> None:
        body = response.text.encode()
        headers = {"Content-Type": response.content_type, **response.headers,
                   "Content-Length": str(len(body))}
        if not self.keep_alive or (self._eof and not self.queue):
            headers["Connection"] = "close"
        elif version == "1.0":
            headers["Connection"] = "keep-alive"
        self.send(_head(response.status, headers) + (b"" if head_only else body))
        await self.drain()

    def send(self, data: bytes) -> None:
        if self.transport.is_closing():  # uvloop raises on writes to a closing transport
            raise ConnectionResetError("the admin client went away")
        self.transport.write(data)

    async def drain(self) -> None:
        if self._writable is not None:
            await self._writable
        if self.transport.is_closing():
            raise ConnectionResetError("the admin client went away")

    def abort(self) -> None:
        self.transport.abort()

    # ------------------------------------------------------------------ helpers

    def _bad(self) -> None:
        self._broken = True
        self.queue.append(None)
        self.ready.set()

    def _wake_writer(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(seconds, self.transport.close)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

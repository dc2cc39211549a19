"""HTTP/1.1 forwarding: one downstream connection, requests handed to pooled upstream connections.

`ServerConn` is the protocol of an accepted connection (an app talking to
the outbound listener, or a peer proxy talking to the inbound listener). It
parses requests with httptools, asks its `Router` where each one goes, and
streams it to an upstream `ClientConn` taken from that route's pool.
`ClientConn` parses the response (status, framing, keep-alive) and streams
its bytes back unchanged.

Promises:
- requests on one connection are answered in order (pipelined requests
  wait, with the downstream paused, until the one before is answered);
- request heads are re-serialised in origin form without hop-by-hop
  headers; bodies are streamed (content-length bodies as they are, chunked
  bodies re-chunked; trailers are dropped); responses pass through byte
  for byte, including 1xx, `Expect: 100-continue` and upgrades (101, which
  turn both connections into a tunnel, as does CONNECT);
- a request whose body is at most `MAX_RETRY_BODY` and fully read is kept
  until its response is known, so the route's retry policy can send it
  again; larger or streaming bodies are never retried;
- upstream connections go back to their pool after a complete response
  that allows keep-alive; a pooled connection that fails before any
  response byte is replaced once for a request that can be re-sent;
- errors the proxy makes itself are answered with a plain-text body that
  says why and an `l5d-proxy-error` header (as linkerd2-proxy does), and
  counted like any other response;
- flow control both ways: a slow reader pauses the other side's reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

import httptools

from isthmus.components.proxy.errors import ProxyError, error_response
from isthmus.components.proxy.routes import Pool, Route
from isthmus.core.proxy.retry import MAX_RETRY_BODY

log = logging.getLogger("isthmus.proxy.http")

_tasks: set[asyncio.Future[Any]] = set()


def spawn(coro: Any) -> None:
    """Run `coro` in the background, keeping a reference until it ends."""
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)

HOP_BY_HOP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization",
                        b"te", b"trailer", b"upgrade"))
# Lengths of the header names `on_header` looks at besides Host: hop-by-hop ones,
# transfer-encoding and expect.
HOP_LENGTHS = frozenset({*(len(h) for h in HOP_BY_HOP), len(b"transfer-encoding"), len(b"expect")})

class Router(Protocol):
    """Where requests of one listener go (outbound: discovery; inbound: the local app)."""

    def route(self, req: Request, conn: ServerConn) -> Route | Awaitable[Route]:
        """The route for `req`, at once when known, else an awaitable; raises ProxyError.

        Called again for each retry (the balancer may pick another endpoint).
        """

    def tunnel(self, req: Request, conn: ServerConn) -> Awaitable[asyncio.Transport]:
        """Open a raw tunnel for CONNECT `req` (answered 200 once open); raises ProxyError."""


class ConnHooks(Protocol):
    """What a listener counts about its connections (TCP metrics, the proxy's own answers)."""

    tcp: Any  # cells `read` and `written` (a `stats.ConnStats`), counted inline
    def opened(self, conn: ServerConn) -> None: ...
    def closed(self, conn: ServerConn, exc: Exception | None) -> None: ...
    def read(self, conn: ServerConn, n: int) -> None: ...
    def written(self, conn: ServerConn, n: int) -> None: ...
    def proxy_error(self, conn: ServerConn, req: Request | None, status: int) -> None:
        """An answer of the proxy's own for a request no route took (or a malformed one)."""

    def refused(self, reason: str) -> None:
        """A peer this proxy connected to was refused (its TLS identity, its trust anchor)."""


class Request:
    """One request's head, body state and bookkeeping while it is in flight.

    Fields default at class level; `__init__` sets only what every request
    changes (a request is made per request: this keeps that cheap).
    """

    authority: str | None = None  # set by the router: what the request was addressed to
    host: bytes | None = None
    raw_head: bytes | None = None  # the head as received, when it can be sent on unchanged
    hop = False                    # it has hop-by-hop headers (so the head is rebuilt)
    extra = b""                    # header lines this proxy adds to this request
    version = "1.1"
    keep_alive = True
    chunked = False
    upgrade = False
    is_head = False
    is_connect = False
    body_len = 0
    complete = False               # the whole request has been read
    route: Route | None = None
    conn: ClientConn | None = None
    attempt = 0
    t0 = 0.0
    t_rsp = 0.0
    status = 0
    rsp_bytes = 0
    rsp_started = False
    tap: Any = None                # the tap event of this request, when tapped
    rt: Any = None                 # its route's metric cells (`stats.RouteCells`), once routed
    timer: asyncio.TimerHandle | None = None
    method = b""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] | None = []  # a copy to re-send on retry, while small and complete
        self.unsent: list[bytes] = []       # body bytes read before a connection was attached

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def origin_head(self, extra: bytes = b"") -> bytes:
        """The head to send upstream: origin form, no hop-by-hop headers, `extra` header lines added."""
        url = self.url
        raw = self.raw_head
        if self.extra:
            extra += self.extra
        if raw is not None and not self.hop and url[:1] == b"/":
            return raw + extra + b"\r\n" if extra else raw + b"\r\n"
        if url[:1] != b"/" and url != b"*":
            parsed = httptools.parse_url(url)
            url = (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"")
        lines = [b"%s %s HTTP/1.1\r\n" % (self.method, url)]
        for name, value in self.headers:
            if name.lower() not in HOP_BY_HOP:
                lines.append(b"%s: %s\r\n" % (name, value))
        if self.upgrade:
            lines.append(b"connection: upgrade\r\nupgrade: %s\r\n" % (self.header(b"upgrade") or b""))
        lines.append(extra)
        lines.append(b"\r\n")
        return b"".join(lines)

    def retryable(self) -> bool:
        """Whether the request can be sent again: fully read and its body kept."""
        return self.body is not None and self.complete and not self.upgrade


class ServerConn(asyncio.Protocol):
    """An accepted connection speaking HTTP/1.1 (see the module docstring)."""

    def __init__(self, router: Router, hooks: ConnHooks) -> None:
        self.router = router
        self.hooks = hooks
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request] = deque()  # queue[0] is being answered
        self.reading: Request | None = None   # the request whose bytes are being parsed
        self.tunnel: asyncio.Transport | None = None
        self.tunnel_pending = b""
        self.closed = False
        self.paused = False
        self.last_activity = time.monotonic()
        self.head_started = 0.0               # when an unfinished request head began (0: none)
        self.peer = ("", 0)
        self.local = ("", 0)
        self.client_id: str | None = None     # the peer's proven identity (mTLS), if any
        self.seen_request = False
        self.fallback: Callable[[ServerConn, bytes], None] | None = None
        self.tcp = hooks.tcp                  # the listener's connection counters
        self.chunk: bytes | None = None       # the chunk being parsed, when it starts a request

    # ---------------------------------------------------------------- transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1]) if peer else ("", 0)
        local = transport.get_extra_info("sockname")
        self.local = (local[0], local[1]) if local else ("", 0)
        self.hooks.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.tunnel is not None and not self.tunnel.is_closing():
            self.tunnel.close()
        for req in self.queue:
            if req.timer is not None:
                req.timer.cancel()
            conn, req.conn = req.conn, None
            if conn is not None:
                conn.abandon()
        self.queue.clear()
        self.hooks.closed(self, exc)

    def pause_writing(self) -> None:
        conn = self.queue[0].conn if self.queue else None
        if conn is not None and conn.transport is not None:
            conn.transport.pause_reading()

    def resume_writing(self) -> None:
        conn = self.queue[0].conn if self.queue else None
        if conn is not None and conn.transport is not None:
            conn.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        self.tcp.read.value += len(data)
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        # A chunk that starts a request: its head can be sent on as it came (see origin_head).
        self.chunk = data if self.reading is None else None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._upgraded(data[e.args[0]:])
        except httptools.HttpParserError as e:
            if not self.seen_request and self.fallback is not None:
                self.fallback(self, data)  # not HTTP: the listener forwards it as opaque TCP
                return
            self.fail(400, f"malformed HTTP request: {e}")

    def write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            self.tcp.written.value += len(data)
            t.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def fail(self, status: int, message: str) -> None:
        """Answer with an error of the proxy's own and close: this connection cannot go on."""
        req = self.queue[0] if self.queue else self.reading
        if req is not None and req.rsp_started:
            self.close()
            return
        self.write(error_response(status, message, close=True))
        if req is not None and req.route is not None:
            self._finish_route(req, status)
        else:
            self.hooks.proxy_error(self, req, status)
        self.close()

    # ---------------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        self.reading = Request()
        self.head_started = self.last_activity

    def on_url(self, url: bytes) -> None:
        self.reading.url += url  # type: ignore[union-attr]

    def on_header(self, name: bytes, value: bytes) -> None:
        req: Request = self.reading  # type: ignore[assignment]
        req.headers.append((name, value))
        n = len(name)
        if n == 4:
            if name.lower() == b"host":
                req.host = value
        elif n in HOP_LENGTHS:
            lower = name.lower()
            if lower in HOP_BY_HOP:
                req.hop = True
            elif lower == b"transfer-encoding":
                req.chunked = b"chunked" in value.lower()
            elif lower == b"expect" and value.lower() == b"100-continue":
                req.body = None  # the body follows only once a server agrees: nothing to re-send

    def on_headers_complete(self) -> None:
        req: Request = self.reading  # type: ignore[assignment]
        p = self.parser
        self.head_started = 0.0
        self.seen_request = True  # a whole head parsed: this connection speaks HTTP
        method = req.method = p.get_method()
        version = p.get_http_version()
        if version != "1.1":
            req.version = version
        if not p.should_keep_alive():
            req.keep_alive = False
        if p.should_upgrade():
            req.upgrade = True
        if method == b"HEAD":
            req.is_head = True
        elif method == b"CONNECT":
            req.is_connect = True
        chunk = self.chunk
        if chunk is not None:
            self.chunk = None
            end = chunk.find(b"\r\n\r\n")
            if end > 0 and 65 <= chunk[0] <= 90:  # starts with the method, not a stray CRLF
                req.raw_head = chunk[:end + 2]  # the request line and headers, without the blank line
        req.t0 = time.perf_counter()
        self.queue.append(req)
        if len(self.queue) == 1:
            self._dispatch(req)
        else:
            self._pause()  # a pipelined request waits for the one before it

    def on_body(self, body: bytes) -> None:
        req = self.reading
        assert req is not None
        req.body_len += len(body)
        self._body(req, b"%x\r\n%s\r\n" % (len(body), body) if req.chunked else body)

    def on_message_complete(self) -> None:
        req = self.reading
        assert req is not None
        self.reading = None
        if req.chunked:
            self._body(req, b"0\r\n\r\n")
        req.complete = True
        if not req.keep_alive:
            self._pause()

    def _body(self, req: Request, chunk: bytes) -> None:
        if req.body is not None:
            if req.body_len <= MAX_RETRY_BODY:
                req.body.append(chunk)
            else:
                req.body = None
        conn = req.conn
        if conn is not None:
            conn.write(chunk)
        else:
            req.unsent.append(chunk)

    def _pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def _resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    # ---------------------------------------------------------------- request flow

    def _dispatch(self, req: Request) -> None:
        if req.is_connect:
            return  # answered once the parser reports the upgrade (the rest is raw bytes)
        try:
            routed = self.router.route(req, self)
        except ProxyError as e:
            self.respond_error(req, e.status, e.message)
            return
        if isinstance(routed, Route):
            self._send(req, routed)
        else:
            spawn(self._dispatch_later(req, routed))

    async def _dispatch_later(self, req: Request, routed: Awaitable[Route]) -> None:
        try:
            route = await routed
        except ProxyError as e:
            if not self.closed:
                self.respond_error(req, e.status, e.message)
            return
        except Exception as e:
            log.exception("routing %s failed", req.authority)
            if not self.closed:
                self.respond_error(req, 502, f"routing {req.authority} failed: {e}")
            return
        if not self.closed:
            self._send(req, route)

    def _send(self, req: Request, route: Route) -> None:
        req.route = route
        req.attempt += 1
        route.started(req, self)
        if req.attempt == 1 and route.timeout is not None:
            req.timer = asyncio.get_running_loop().call_later(route.timeout, self._timed_out, req)
        conn = route.pool.take()
        if conn is not None:
            self._attach(req, conn, reused=True)
        else:
            spawn(self._connect(req, route, route.pool))

    async def _connect(self, req: Request, route: Route, pool: Pool) -> None:
        try:
            conn = await pool.open()
        except Exception as e:
            if not isinstance(e, ProxyError):
                log.exception("connecting to %s failed", pool.describe())
                e = ProxyError(502, f"could not connect to {pool.describe()}: {e}")
            if e.reason is not None:
                self.hooks.refused(e.reason)
            if self.closed or req.rsp_started or req.route is not route:
                return
            if req.retryable() and route.should_retry(req, None):
                self.retry(req)
            else:
                self.respond_error(req, e.status, e.message)
            return
        if self.closed or req.rsp_started or req.route is not route or req.conn is not None:
            conn.release()
            return
        self._attach(req, conn, reused=False)

    def _attach(self, req: Request, conn: ClientConn, *, reused: bool) -> None:
        assert req.route is not None
        req.conn = conn
        conn.begin(self, req, reused=reused)
        if req.attempt > 1 and req.body is not None:
            body = req.body      # a retry: the whole kept body again
        else:
            body, req.unsent = req.unsent, []
        conn.write(req.route.head(req) + b"".join(body) if body else req.route.head(req))
        if req.upgrade and self.tunnel_pending:
            conn.write(self.tunnel_pending)
            self.tunnel_pending = b""

    def retry(self, req: Request) -> None:
        """Send `req` again (a retry the route allowed): routed afresh, its kept body re-sent."""
        req.conn = None
        if not self.closed:
            self._dispatch(req)

    def response_head(self, req: Request, status: int) -> None:
        if not req.rsp_started:
            req.rsp_started = True
            req.status = status
            req.t_rsp = time.perf_counter()
            if req.tap is not None:
                req.tap.response(status, time.monotonic())

    def response_complete(self, req: Request) -> None:
        if req.timer is not None:
            req.timer.cancel()
        req.conn = None
        self._finish_route(req, req.status)
        if not req.keep_alive or not req.complete:
            self.close()
        elif self.queue:
            self._dispatch(self.queue[0])
        else:
            self._resume()

    def _finish_route(self, req: Request, status: int) -> None:
        req.status = status
        if self.queue and self.queue[0] is req:
            self.queue.popleft()
        if req.route is not None:
            req.route.finished(req, self)

    def respond_error(self, req: Request, status: int, message: str) -> None:
        """Answer `req` with an error of the proxy's own (nothing has been sent for it yet)."""
        if req.timer is not None:
            req.timer.cancel()
        self.response_head(req, status)
        close = not req.complete or not req.keep_alive
        self.write(error_response(status, message, close=close))
        if req.route is None:
            self.hooks.proxy_error(self, req, status)
            if self.queue and self.queue[0] is req:
                self.queue.popleft()
        else:
            self._finish_route(req, status)
        if close:
            self.close()
        elif self.queue:
            self._dispatch(self.queue[0])
        else:
            self._resume()

    def _timed_out(self, req: Request) -> None:
        req.timer = None
        if req.rsp_started or self.closed:
            return
        conn, req.conn = req.conn, None
        if conn is not None:
            conn.abandon()
        timeout = req.route.timeout if req.route is not None else 0
        self.respond_error(req, 504, f"request timed out after {timeout:g}s "
                                     f"(timeout.isthmus.io/request)")

    # ---------------------------------------------------------------- tunnels

    def _upgraded(self, rest: bytes) -> None:
        """The parser stopped at CONNECT or an Upgrade request: what follows is raw bytes."""
        req = self.queue[-1] if self.queue else None
        if req is None:
            self.close()
            return
        self._pause()
        if req.is_connect:
            spawn(self._open_tunnel(req, rest))
        elif req.conn is not None:
            req.conn.write(rest)
        else:
            self.tunnel_pending = rest

    async def _open_tunnel(self, req: Request, rest: bytes) -> None:
        try:
            upstream = await self.router.tunnel(req, self)
        except ProxyError as e:
            req.complete = False  # close after the answer: the client meant to send raw bytes
            self.respond_error(req, e.status, e.message)
            return
        if self.closed:
            upstream.close()
            return
        self.response_head(req, 200)
        self.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.become_tunnel(upstream)
        if rest:
            upstream.write(rest)

    def become_tunnel(self, upstream: asyncio.Transport) -> None:
        """From now on bytes pass both ways untouched (CONNECT, or an upgrade answered 101)."""
        self.tunnel = upstream
        self.queue.clear()
        self._resume()

    def __repr__(self) -> str:
        return f"<ServerConn {self.peer[0]}:{self.peer[1]} queued={len(self.queue)}>"


class ClientConn(asyncio.Protocol):
    """A connection to an upstream (a peer proxy or the local app), one request at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.server: ServerConn | None = None
        self.req: Request | None = None
        self.pending: list[bytes] = []  # response bytes held until the head is complete
        self.head_done = False          # a response head (interim or final) has been parsed
        self.final = False              # ... and it was the final one
        self.done = False               # the final response is complete
        self.retrying = False           # the response is being read to the end and dropped
        self.keep_alive = True
        self.received = False
        self.reused = False
        self.tunnel = False
        self.closed = False
        self.stale = False              # the parser is out of step (after a HEAD response)
        self.peer_id: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.lost(self)
        server, req = self.server, self.req
        self.server = self.req = None
        if server is None or req is None:
            return
        if self.tunnel:
            server.close()
            return
        if self.final and not self.done and not self.retrying:
            if self.pending:
                server.write(b"".join(self.pending))
            # A response without length or chunking ends with its connection.
            req.keep_alive = False
            server.response_complete(req)
            return
        if req.rsp_started:
            server.close()  # the response was cut short; the client must see it fail
            return
        route = req.route
        if route is not None and req.retryable() and not server.closed and (
                self.retrying or (self.reused and not self.received)
                or route.should_retry(req, None)):
            server.retry(req)
            return
        why = f": {exc}" if exc else ""
        server.respond_error(req, 502, f"connection to {self.pool.describe()} closed before a "
                                       f"complete response{why}")

    def pause_writing(self) -> None:
        s = self.server
        if s is not None and s.transport is not None:
            s.transport.pause_reading()

    def resume_writing(self) -> None:
        s = self.server
        if s is not None and s.transport is not None and not s.paused:
            s.transport.resume_reading()

    def begin(self, server: ServerConn, req: Request, *, reused: bool) -> None:
        self.server = server
        self.req = req
        self.reused = reused
        self.received = self.head_done = self.final = self.done = self.retrying = False
        self.pending = []
        if self.stale:
            self.parser = httptools.HttpResponseParser(self)
            self.stale = False

    def write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            self.pool.conn_stats.written.value += len(data)
            t.write(data)

    def release(self) -> None:
        """Back to the pool, or closed when it cannot carry another request."""
        self.server = self.req = None
        t = self.transport
        if self.keep_alive and not self.closed and t is not None and not t.is_closing():
            self.pool.put(self)
        else:
            self.abandon()

    def abandon(self) -> None:
        self.server = self.req = None
        self.keep_alive = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.pool.conn_stats.read.value += len(data)
        server = self.server
        if server is None:
            self.abandon()  # bytes nobody asked for: this connection is out of step
            return
        if self.tunnel:
            server.write(data)
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._forward(data)
            if self.server is not None and self.transport is not None:
                self.tunnel = True
                self.server.become_tunnel(self.transport)
            return
        except httptools.HttpParserError as e:
            req = self.req
            self.abandon()
            if req is not None and not req.rsp_started:
                server.respond_error(req, 502, f"malformed response from {self.pool.describe()}: {e}")
            else:
                server.close()
            return
        if self.retrying:
            if self.done:
                req = self.req
                self.release()
                if req is not None:
                    server.retry(req)
            return
        self._forward(data)
        if self.done:
            req = self.req
            self.release()
            if req is not None:
                server.response_complete(req)

    def _forward(self, data: bytes) -> None:
        server = self.server
        if server is None:
            return
        if not self.head_done:
            self.pending.append(data)
            return
        if self.pending:
            self.pending.append(data)
            data = b"".join(self.pending)
            self.pending = []
        server.write(data)

    # ---------------------------------------------------------------- response callbacks

    def on_headers_complete(self) -> None:
        req, server = self.req, self.server
        if req is None or server is None:
            return
        status = self.parser.get_status_code()
        self.head_done = True
        if status < 200 and status != 101:
            return  # interim (100 Continue): passed on; the final response follows
        self.final = True
        if not self.parser.should_keep_alive():
            self.keep_alive = False
        route = req.route
        if route is not None and route.retries and req.retryable() and route.should_retry(req, status):
            self.retrying = True
        else:
            server.response_head(req, status)
        if req.is_head:
            # The parser cannot know a HEAD response has no body: it is done now, and the
            # parser, which waits for one, is replaced before the next request.
            self.done = True
            self.stale = True

    def on_body(self, body: bytes) -> None:
        req = self.req
        if req is not None:
            req.rsp_bytes += len(body)

    def on_message_complete(self) -> None:
        if self.final:
            self.done = True

    def __repr__(self) -> str:
        return f"<ClientConn {self.pool.describe()} busy={self.req is not None}>"

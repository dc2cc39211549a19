"""The cluster's HTTP/1.1 forward proxy: Services by name or cluster IP, on any port, unprivileged.

Unmeshed pods get this proxy as `HTTP_PROXY`. It takes absolute-form requests
(`GET http://web-svc.emojivoto:80/api/list HTTP/1.1`), origin-form requests
whose Host header names the destination, and `CONNECT host:port` tunnels. The
router it is given (`Router`) turns the authority into an ordered list of
backends or a refusal; this module only speaks HTTP (with h11) and moves bytes.

Promises:

* a refusal is answered with its status and a one-line plain-text body saying
  what was wrong; a backend that cannot be reached gives 502;
* keep-alive on both sides: the client connection serves request after
  request, and backend connections go back to a per-backend idle pool
  (`tcp.BackendPool`) when both sides of an exchange completed cleanly;
* bodies stream both ways (Content-Length, chunked, or close-delimited
  responses) without being buffered whole; the request body is sent while
  the response is read, so early responses and `Expect: 100-continue` work;
* a request without a body that fails on a reused backend connection before
  any response arrived is retried once on a fresh connection;
* hop-by-hop headers are not forwarded (so `Upgrade` is not: tunnel with
  CONNECT instead); for absolute-form requests the Host header is the
  request's authority.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from http import HTTPStatus

import h11

from isthmus.core.servicemap import Backend, Destination, Refusal

from .tcp import CHUNK, BackendConnection, BackendPool, ConnectFailed, connect_first, relay

Router = Callable[[str, str, int | None], Destination | Refusal]
"""(authority, client IP, default port or None when a port is required) → decision."""

Headers = list[tuple[bytes, bytes]]

_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
                         b"proxy-authorization", b"te", b"upgrade"})


class _UpstreamClosed(Exception):
    pass


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await reader.read(CHUNK))


def _bytes(conn: h11.Connection, *events: h11.Event) -> bytes:
    """The wire form of `events`, to be written with one call (one syscall)."""
    return b"".join(conn.send(e) or b"" for e in events)


def _settle(conn: h11.Connection) -> None:
    """Consume what is already buffered of the peer's request (all of a bodyless one)."""
    while conn.their_state is h11.SEND_BODY:
        event = conn.next_event()
        if event is h11.NEED_DATA or event is h11.PAUSED:
            return


def _forwarded(headers: Iterable[tuple[bytes, bytes]], host: bytes | None = None) -> Headers:
    items = list(headers)
    drop = set(_HOP_BY_HOP)
    for name, value in items:
        if name == b"connection":
            drop.update(v.strip().lower() for v in value.split(b","))
    if host is not None:
        drop.add(b"host")
    out = [(n, v) for n, v in items if n not in drop]
    if host is not None:
        out.insert(0, (b"host", host))
    return out


def _has_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def _split_target(req: h11.Request) -> tuple[str, bytes, bool] | Refusal:
    """(authority, origin-form target, whether the request was absolute-form)."""
    target = req.target
    if target.startswith(b"/"):
        for name, value in req.headers:
            if name == b"host":
                return value.decode("latin-1"), target, False
        return Refusal(400, "the request has no Host header and no absolute URL")
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() != b"http":
        if sep and scheme.lower() == b"https":
            return Refusal(400, "use CONNECT for https:// URLs")
        return Refusal(400, f"cannot forward request target {target.decode('latin-1')!r}")
    end = len(rest)
    for stop in (b"/", b"?", b"#"):
        i = rest.find(stop)
        if 0 <= i < end:
            end = i
    path = rest[end:].partition(b"#")[0]
    if not path.startswith(b"/"):
        path = b"/" + path
    return rest[:end].decode("latin-1"), path, True


class _Upstream(BackendConnection):
    """A backend connection with its own h11 client state."""

    __slots__ = ("conn",)

    def __init__(self, backend: Backend, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        super().__init__(backend, reader, writer)
        self.conn = h11.Connection(h11.CLIENT)

    def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            self.writer.write(data)

    def recycle(self) -> bool:
        """Ready the connection for its next exchange, if this one ended cleanly."""
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            return True
        return False


class HttpForwardProxy:
    """HTTP/1.1 forward proxying; `handle` serves one client connection until it ends."""

    def __init__(self, *, route: Router, connect_timeout: float, idle_timeout: float) -> None:
        self._route = route
        self._timeout = connect_timeout
        self.pool: BackendPool[_Upstream] = BackendPool(idle_timeout=idle_timeout)

    def __repr__(self) -> str:
        return f"HttpForwardProxy({self.pool!r})"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client_ip = peer[0] if isinstance(peer, tuple) else ""
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await _next_event(conn, reader)
                if not isinstance(event, h11.Request):
                    return
                if event.method == b"CONNECT":
                    await self._tunnel(conn, reader, writer, event, client_ip)
                    return
                if not await self._exchange(conn, reader, writer, event, client_ip):
                    return
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                await self._refuse(conn, writer, Refusal(exc.error_status_hint, f"bad request: {exc}"))

    async def _refuse(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                      refusal: Refusal, *, head: bool = False) -> bool:
        if conn.their_state is not h11.ERROR:
            _settle(conn)
        body = (refusal.message + "\n").encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8"),
                   (b"content-length", str(len(body)).encode())]
        if conn.their_state is not h11.DONE:
            headers.append((b"connection", b"close"))
        reason = HTTPStatus(refusal.status).phrase.encode()
        response = h11.Response(status_code=refusal.status, headers=headers, reason=reason)
        body_events = () if head else (h11.Data(data=body),)
        writer.write(_bytes(conn, response, *body_events, h11.EndOfMessage()))
        await writer.drain()
        return conn.their_state is h11.DONE

    async def _connect(self, dest: Destination, *, fresh: bool) -> _Upstream:
        if not fresh:
            pooled = self.pool.take(dest.backends[0])
            if pooled is not None:
                return pooled
        reader, writer, backend = await connect_first(dest.backends, timeout=self._timeout)
        return _Upstream(backend, reader, writer)

    async def _exchange(self, conn: h11.Connection, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter, req: h11.Request, client_ip: str) -> bool:
        """Forward one request and its response; whether the client connection may go on."""
        head_only = req.method == b"HEAD"
        target = _split_target(req)
        if isinstance(target, Refusal):
            return await self._refuse(conn, writer, target, head=head_only)
        authority, path, absolute = target
        dest = self._route(authority, client_ip, 80)
        if isinstance(dest, Refusal):
            return await self._refuse(conn, writer, dest, head=head_only)
        has_body = _has_body(req.headers)
        if not has_body:
            _settle(conn)
        upstream_head = h11.Request(method=req.method, target=path, headers=_forwarded(
            req.headers, authority.encode("latin-1") if absolute else None))
        body_task: asyncio.Task[None] | None = None
        for attempt in (0, 1):
            try:
                up = await self._connect(dest, fresh=attempt > 0)
            except ConnectFailed as exc:
                return await self._refuse(conn, writer, _unreachable(dest, exc), head=head_only)
            try:
                if has_body:
                    up.writer.write(_bytes(up.conn, upstream_head))
                    body_task = _start_body_pump(conn, reader, up)
                else:
                    up.writer.write(_bytes(up.conn, upstream_head, h11.EndOfMessage()))
                event = await _next_event(up.conn, up.reader)
                if not isinstance(event, h11.InformationalResponse | h11.Response):
                    raise _UpstreamClosed("it closed the connection without answering")
                break
            except (OSError, h11.ProtocolError, _UpstreamClosed) as exc:
                up.close()
                if body_task is not None:
                    body_task.cancel()
                if up.reused and not has_body and attempt == 0:
                    continue
                return await self._refuse(conn, writer, _failed(up, exc), head=head_only)
        try:
            await self._respond(conn, writer, up, event)
        except (OSError, h11.ProtocolError, _UpstreamClosed) as exc:
            up.close()
            if body_task is not None:
                body_task.cancel()
            if conn.our_state is h11.SEND_RESPONSE:  # only 1xx went out: a 502 still fits
                await self._refuse(conn, writer, _failed(up, exc), head=head_only)
            return False
        except BaseException:
            up.close()
            if body_task is not None:
                body_task.cancel()
            raise
        if body_task is not None:
            if not body_task.done():  # answered before the whole request body arrived
                body_task.cancel()
                up.close()
                return False
            body_task.result()
        if up.recycle():
            self.pool.park(up)
        else:
            up.close()
        return True

    async def _respond(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                       up: _Upstream, event: object) -> None:
        """Relay the response; what is already parsed goes out in one write."""
        out: list[bytes] = []
        chunked = False
        while True:
            if isinstance(event, h11.Data):
                out.append(conn.send(event) or b"")
            elif isinstance(event, h11.Response):
                headers = _forwarded(event.headers)
                chunked = any(n == b"transfer-encoding" for n, _ in headers)
                out.append(conn.send(h11.Response(status_code=event.status_code, headers=headers,
                                                  reason=event.reason)) or b"")
            elif isinstance(event, h11.InformationalResponse):
                if event.status_code != 101:
                    out.append(conn.send(h11.InformationalResponse(
                        status_code=event.status_code, headers=_forwarded(event.headers),
                        reason=event.reason)) or b"")
            elif isinstance(event, h11.EndOfMessage):
                trailers = list(event.headers) if chunked and conn.their_http_version == b"1.1" else []
                out.append(conn.send(h11.EndOfMessage(headers=trailers)) or b"")
                writer.writelines(out)
                await writer.drain()
                return
            else:
                raise _UpstreamClosed("the backend closed the connection mid-response")
            event = up.conn.next_event()
            if event is h11.NEED_DATA:
                writer.writelines(out)
                out.clear()
                await writer.drain()
                event = await _next_event(up.conn, up.reader)

    async def _tunnel(self, conn: h11.Connection, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter, req: h11.Request, client_ip: str) -> None:
        _settle(conn)
        dest = self._route(req.target.decode("latin-1"), client_ip, None)
        if isinstance(dest, Refusal):
            await self._refuse(conn, writer, dest)
            return
        try:
            up_reader, up_writer, _ = await connect_first(dest.backends, timeout=self._timeout)
        except ConnectFailed as exc:
            await self._refuse(conn, writer, _unreachable(dest, exc))
            return
        writer.write(_bytes(conn, h11.Response(status_code=200, headers=[],
                                               reason=b"Connection established")))
        early, _ = conn.trailing_data
        if early:
            up_writer.write(early)
        await relay(reader, writer, up_reader, up_writer)


async def _pump_body(conn: h11.Connection, reader: asyncio.StreamReader, up: _Upstream) -> None:
    while True:
        event = await _next_event(conn, reader)
        if isinstance(event, h11.Data):
            up.send(event)
            await up.writer.drain()
        elif isinstance(event, h11.EndOfMessage):
            up.send(event)
            with contextlib.suppress(ConnectionError):
                await up.writer.drain()
            return
        else:
            raise ConnectionError("the client closed the connection mid-request")


def _start_body_pump(conn: h11.Connection, reader: asyncio.StreamReader,
                     up: _Upstream) -> asyncio.Task[None]:
    """Stream the request body upstream; if that fails, the backend connection is closed
    so that the response side fails too instead of waiting for ever."""
    def done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            up.close()
    task = asyncio.create_task(_pump_body(conn, reader, up))
    task.add_done_callback(done)
    return task


def _failed(up: _Upstream, exc: BaseException) -> Refusal:
    return Refusal(502, f"backend {up.backend} failed: {str(exc) or type(exc).__name__}")


def _unreachable(dest: Destination, exc: ConnectFailed) -> Refusal:
    if dest.service is None:
        return Refusal(502, f"cannot connect to {exc}")
    return Refusal(502, f'no backend of service "{dest.service.service}" accepted a connection'
                        f" ({exc})")

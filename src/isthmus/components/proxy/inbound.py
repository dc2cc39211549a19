"""The inbound listener: mTLS from other proxies (plain from unmeshed clients) to the local app.

Each accepted connection is first peeked at: a TLS ClientHello is answered
with the proxy's certificate, and the client must present one that chains
to the trust anchors (the peer's identity is recorded as `client_id`);
anything else is a plain client. A connection from a proxy then starts with
the transport header (`core.transportheader`) naming the app port, or — in
a gateway only — a service authority, and whether the bytes are HTTP or
opaque. A plain client may send the header too; without one its requests
go to the port in their Host header.

Ports listed as identity-required refuse plain clients: HTTP gets a 403 that
says so, other bytes a closed connection; both are counted.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable
from typing import Any, cast

from isthmus.components.identity.tlsconfig import peer_identity
from isthmus.components.proxy.dial import Pipe, dial
from isthmus.components.proxy.errors import ProxyError
from isthmus.components.proxy.http1 import ClientConn, Request, ServerConn, spawn
from isthmus.components.proxy.outbound import OutboundRouter
from isthmus.components.proxy.routes import Pool, Route
from isthmus.components.proxy.stats import ProxyStats
from isthmus.components.proxy.tap import TapHub, TapPoint
from isthmus.components.proxy.tls import NoIdentity, ProxyTls
from isthmus.core import transportheader as th

log = logging.getLogger("isthmus.proxy.inbound")

HANDSHAKE_TIMEOUT = 10.0


def _host_port(host: bytes | None) -> int | None:
    if host is None:
        return None
    _, sep, port = host.rpartition(b":")
    return int(port) if sep and port.isdigit() and 0 < int(port) < 65536 else None


class InboundRouter:
    """Requests of one inbound connection: to the app's `port`, or the Host header's port."""

    def __init__(self, listener: InboundListener, port: int | None, client_id: str | None,
                 tls: bool) -> None:
        self.listener = listener
        self.port = port
        self.client_id = client_id
        self.tls = tls

    def route(self, req: Request, conn: ServerConn) -> Route:
        if req.authority is None:
            req.authority = req.host.decode("latin-1") if req.host else ""
        port = self.port or _host_port(req.host)
        if port is None:
            raise ProxyError(400, "no target port: a plain client must name the app port in the "
                                  "Host header (host:port) or send a transport header")
        if not self.tls and port in self.listener.require_identity:
            raise ProxyError(403, f"port {port} requires mutual TLS (identity); call it through "
                                  f"a meshed proxy")
        return self.listener.route(port, req.authority, self.client_id, self.tls)

    async def tunnel(self, req: Request, conn: ServerConn) -> asyncio.Transport:
        raise ProxyError(405, "CONNECT is not accepted on the inbound port")


class GatewayRouter:
    """Requests a peer cluster sent through this gateway, all for one service authority.

    Only services of this cluster are targets: a mirrored service (whose
    endpoints are another gateway) would send the request on to another
    cluster, so it is refused, as is a request that already passed this
    gateway (its `Forwarded` header names it). Requests go on with
    `Forwarded: by=<gateway identity>;for=<client identity>` appended.
    """

    def __init__(self, outbound: OutboundRouter, authority: str, own_id: str | None,
                 client_id: str | None) -> None:
        self.outbound = outbound
        self.authority = authority
        self.by = f"by={own_id or 'gateway'}".encode()
        self.forwarded = b"forwarded: %s;for=%s\r\n" % (self.by, (client_id or "unknown").encode())

    def route(self, req: Request, conn: ServerConn) -> Route | Awaitable[Route]:
        req.authority = self.authority
        for name, value in req.headers:
            if len(name) == 9 and name.lower() == b"forwarded" and self.by in value:
                raise ProxyError(508, f"request for {self.authority} already passed this gateway "
                                      f"({value.decode('latin-1')}): refusing a loop")
        req.extra = self.forwarded
        routed = self.outbound.route_to(self.authority)
        if isinstance(routed, Route):
            return self._local_only(routed)
        return self._later(routed)

    async def _later(self, routed: Awaitable[Route]) -> Route:
        return self._local_only(await routed)

    def _local_only(self, route: Route) -> Route:
        if route.endpoint is not None and route.endpoint.authority_override is not None:
            raise ProxyError(508, f"{self.authority} is a mirrored service of another cluster; "
                                  f"a gateway forwards only to services of its own cluster")
        return route

    async def tunnel(self, req: Request, conn: ServerConn) -> asyncio.Transport:
        raise ProxyError(405, "CONNECT is not accepted on the gateway port")


class InboundConn(asyncio.Protocol):
    """The first bytes of an inbound connection, until it is known what it carries."""

    def __init__(self, listener: InboundListener, tls: bool) -> None:
        self.listener = listener
        self.tls = tls
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.client_id: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        if self.tls:
            self.client_id = peer_identity(transport.get_extra_info("ssl_object"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            split = th.split(self.buffer)
        except th.TransportHeaderError as e:
            self.listener.refused(self.tls, "bad_header")
            log.info("inbound connection refused: %s", e)
            self._close()
            return
        if split is None:
            return
        header, rest = split
        self.buffer = b""
        if header is None and self.tls:
            self.listener.refused(self.tls, "no_header")
            self._close()
            return
        self.listener.begin(self, header, rest)

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class InboundListener:
    def __init__(self, *, address: tuple[str, int], forward_host: str, require_identity: frozenset[int],
                 tls: ProxyTls | None, stats: ProxyStats, tap: TapHub,
                 outbound: OutboundRouter | None, gateway: bool, connect_timeout: float,
                 conns: set[ServerConn]) -> None:
        self.address = address
        self.forward_host = forward_host
        self.require_identity = require_identity
        self.tls = tls
        self.stats = stats
        self.tap = tap
        self.outbound = outbound
        self.gateway = gateway
        self.own_id: str | None = None  # this proxy's identity (set by the proxy)
        self.connect_timeout = connect_timeout
        self.conns = conns
        self.pools: dict[int, Pool] = {}
        self.routes: dict[tuple[Any, ...], Route] = {}
        self.sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.address[1] != 0:  # see admin.py: not with port 0
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(self.address)
        sock.listen(1024)
        sock.setblocking(False)
        self.sock = sock
        self.address = sock.getsockname()
        self._task = asyncio.get_running_loop().create_task(self._accept())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for t in list(self._handshakes):
            t.cancel()
        if self.sock is not None:
            self.sock.close()
        for pool in self.pools.values():
            pool.close()

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.sock is not None
        while True:
            try:
                sock, _ = await loop.sock_accept(self.sock)
            except OSError as e:
                log.warning("accept failed: %s", e)
                await asyncio.sleep(0.05)
                continue
            task = loop.create_task(self._handshake(sock))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        first = b""
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                readable: asyncio.Future[None] = loop.create_future()

                def wake() -> None:
                    if not readable.done():
                        readable.set_result(None)

                loop.add_reader(sock.fileno(), wake)
                try:
                    await readable
                finally:
                    loop.remove_reader(sock.fileno())
                first = sock.recv(1, socket.MSG_PEEK)
                if not first:
                    sock.close()
                    return
                tls = first == b"\x16"
                if not tls and self.gateway:
                    self.refused(False, "plain_to_gateway")  # a gateway takes mTLS only
                    sock.close()
                    return
                ctx: ssl.SSLContext | None = None
                if tls:
                    if self.tls is None:
                        self.refused(True, "tls_disabled")
                        sock.close()
                        return
                    ctx = self.tls.server()
                await loop.connect_accepted_socket(lambda: InboundConn(self, tls), sock, ssl=ctx)
        except NoIdentity:
            self.refused(True, "no_identity_yet")
            sock.close()
        except ssl.SSLError as e:
            self.refused(True, "tls_handshake")
            log.info("inbound TLS handshake refused: %s", e.reason or e)
            sock.close()
        except (OSError, TimeoutError) as e:
            if first == b"\x16":
                self.refused(True, "tls_handshake")
            log.debug("inbound connection failed before it started: %s", e)
            sock.close()

    def refused(self, tls: bool, reason: str) -> None:
        self.stats.refused("inbound", reason)

    # ---------------------------------------------------------------- after the header

    def begin(self, first: InboundConn, header: th.TransportHeader | None, rest: bytes) -> None:
        transport = first.transport
        assert transport is not None
        tls = first.tls
        port = header.port if header is not None else None
        if header is not None and header.authority is not None and (
                not self.gateway or self.outbound is None):
            self.refused(tls, "not_a_gateway")
            transport.close()
            return
        if header is not None and header.protocol == "opaque":
            spawn(self._opaque(first, header, rest))
            return
        router: Any
        if header is not None and header.authority is not None and self.outbound is not None:
            router = GatewayRouter(self.outbound, header.authority,
                                   self.own_id, first.client_id)
        else:
            router = InboundRouter(self, port, first.client_id, tls)
        hooks = self.stats.listener_hooks("inbound", tls, first.client_id, self.conns)
        conn = ServerConn(router, hooks)
        conn.client_id = first.client_id
        if header is not None and header.port is not None:
            # Protocol detection: bytes that are not HTTP go on as opaque TCP to the same port.
            target = th.local("opaque", header.port)
            conn.fallback = lambda c, data: self._fall_back(c, first, target, data)
        transport.set_protocol(conn)
        conn.connection_made(transport)
        if rest:
            conn.data_received(rest)

    def _fall_back(self, conn: ServerConn, first: InboundConn, header: th.TransportHeader,
                   data: bytes) -> None:
        conn.hooks.closed(conn, None)  # no longer an HTTP connection (nor swept as one)
        log.debug("inbound bytes are not HTTP; forwarding them as opaque TCP to port %s",
                  header.port)
        spawn(self._opaque(first, header, data))

    async def _opaque(self, first: InboundConn, header: th.TransportHeader, rest: bytes) -> None:
        transport = first.transport
        assert transport is not None
        tls = first.tls
        if header.port is not None and not tls and header.port in self.require_identity:
            self.refused(tls, "identity_required")
            transport.close()
            return
        pipe = Pipe()
        transport.set_protocol(pipe)
        pipe.connection_made(transport)
        if rest:
            pipe.data_received(rest)
        try:
            if header.authority is not None and self.outbound is not None:
                upstream = await self.outbound.open_opaque(header.authority, transport)
            else:
                assert header.port is not None
                upstream, _ = await dial(lambda: Pipe(transport), self.forward_host, header.port,
                                         ssl_ctx=None, peer_id=None, header=b"",
                                         timeout=self.connect_timeout,
                                         label=f"{self.forward_host}:{header.port}")
        except ProxyError as e:
            log.info("opaque inbound connection dropped: %s", e.message)
            transport.close()
            return
        pipe.attach(upstream)

    def route(self, port: int, authority: str, client_id: str | None, tls: bool) -> Route:
        key = (port, authority, client_id)
        route = self.routes.get(key)
        if route is None:
            if len(self.routes) > 10000:
                self.routes.clear()
            route = self.routes[key] = self._new_route(port, authority, client_id, tls)
        return route

    def _new_route(self, port: int, authority: str, client_id: str | None, tls: bool) -> Route:
        pool = self.pools.get(port)
        if pool is None:
            host = self.forward_host
            label = f"{host}:{port}"

            async def connect(pool: Pool) -> ClientConn:
                _, protocol = await dial(lambda: ClientConn(pool), host, port, ssl_ctx=None,
                                         peer_id=None, header=b"", timeout=self.connect_timeout,
                                         label=label)
                pool.opened()
                assert isinstance(protocol, ClientConn)
                return protocol

            pool = self.pools[port] = Pool(label, connect, self.stats.conn(
                "inbound-app", "no_identity", "", {"target_addr": label}))
        tls_label = "true" if tls else "no_identity"
        stats = self.stats.route("inbound", authority, tls_label, client_id or "",
                                 {"target_addr": f"{self.forward_host}:{port}"})
        extra = b"l5d-client-id: %s\r\n" % client_id.encode() if client_id else b""
        return Route(pool, stats, extra_headers=extra,
                     tap=TapPoint(self.tap, "in", None, {}, tls_label))

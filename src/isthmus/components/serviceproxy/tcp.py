"""TCP plumbing of the service proxy: cluster-IP listeners, backend connects, byte relays.

Each TCP Service port gets a listener on each of its cluster IPs (all in
127.0.0.0/8); a connection to it is relayed, byte for byte, to a ready backend.

Privileges: ports below 1024 need root or CAP_NET_BIND_SERVICE (or lowering
`sysctl net.ipv4.ip_unprivileged_port_start`). isthmus never asks for either:
when a listener cannot be opened (privileged port, address already in use,
address not configured) it logs one warning line naming the Service and what to
do, and carries on. The unprivileged fallback is the cluster's HTTP proxy,
which reaches every Service by name or cluster IP on any port.

Promises:

* a listener only ever binds a loopback address it was given; backends are
  connected in the order given, the next one tried when a connect fails;
* a relay passes half-closes on (EOF one way keeps the other way open) and
  closes both sockets when both ways are done or either fails; a relay given a
  one-way delay (emulated WAN latency) keeps the bytes' order and never
  delivers early;
* `Connections` knows every live connection task, so closing cancels them all;
* `BackendPool` hands out only idle connections that the backend has not
  closed, and closes them after their idle timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

from isthmus.core.servicemap import Backend, ListenerKey, ServicePort
from isthmus.core.wan import due_at

log = logging.getLogger("isthmus.serviceproxy")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

CHUNK = 64 * 1024
DELAY_QUEUE = 64  # chunks held at most by one direction of a delayed relay


class ConnectFailed(Exception):
    """No backend accepted a connection; `failures` says why, one per backend tried."""

    def __init__(self, failures: list[str]) -> None:
        super().__init__("; ".join(failures) or "no backend to try")
        self.failures = failures


async def connect_first(backends: Iterable[Backend], *, timeout: float,
                        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Backend]:
    """Connect to the first backend that accepts, in order; raise ConnectFailed otherwise."""
    failures: list[str] = []
    for backend in backends:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(backend.ip, backend.port)
        except TimeoutError:
            failures.append(f"{backend}: no answer within {timeout:g}s")
        except OSError as exc:
            failures.append(f"{backend}: {exc.strerror or exc}")
        else:
            return reader, writer, backend
    raise ConnectFailed(failures)


def abort(writer: asyncio.StreamWriter) -> None:
    """Close a connection now, dropping anything still buffered."""
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                other: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
        if not dst.is_closing() and dst.can_write_eof():
            dst.write_eof()
    except (OSError, RuntimeError):
        abort(dst)
        abort(other)


async def _delayed_pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                        other: asyncio.StreamWriter, due: Callable[[float], float]) -> None:
    """`_pump` through a delay line: bytes read at t are written at `due(t)` (never earlier).

    Reading goes on while earlier bytes wait, so the delay adds latency without
    limiting throughput; at most `DELAY_QUEUE` chunks wait (then reading pauses,
    which is TCP's back-pressure). The end of the stream waits its turn too.
    """
    loop = asyncio.get_running_loop()
    line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(DELAY_QUEUE)

    async def deliver() -> None:
        while True:
            when, data = await line.get()
            wait = when - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if not dst.is_closing() and dst.can_write_eof():
                    dst.write_eof()
                return
            dst.write(data)
            await dst.drain()

    delivering = asyncio.create_task(deliver())
    try:
        while data := await src.read(CHUNK):
            if delivering.done():
                break
            await line.put((due(loop.time()), data))
        if not delivering.done():
            await line.put((due(loop.time()), b""))
        await delivering
    except (OSError, RuntimeError):
        abort(dst)
        abort(other)
    finally:
        if not delivering.done():
            delivering.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, RuntimeError):
                await delivering


async def relay(a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter, *,
                one_way: Callable[[], float] | None = None) -> None:
    """Copy bytes both ways until both directions end, then close both connections.

    With `one_way` (seconds, asked for each chunk, so a changed setting
    applies to open connections too; emulated WAN latency, `isthmus.core.wan`)
    the connection is a delay line: a's bytes reach b no earlier than one way
    after they were read and not before the TCP handshake a real WAN would
    have cost; b's answers reach a one way later.
    """
    try:
        if one_way is None:
            await asyncio.gather(_pump(a_reader, b_writer, a_writer),
                                 _pump(b_reader, a_writer, b_writer))
            return
        opened = asyncio.get_running_loop().time()
        delay = one_way
        await asyncio.gather(
            _delayed_pump(a_reader, b_writer, a_writer, lambda t: due_at(
                t, opened_at=opened, one_way=delay(), towards_server=True)),
            _delayed_pump(b_reader, a_writer, b_writer, lambda t: due_at(
                t, opened_at=opened, one_way=delay(), towards_server=False)))
    finally:
        a_writer.close()
        b_writer.close()


class BackendConnection:
    """An open connection to a backend; `reused` once it has come out of a pool."""

    __slots__ = ("backend", "reader", "reused", "timer", "writer")

    def __init__(self, backend: Backend, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.backend = backend
        self.reader = reader
        self.writer = writer
        self.reused = False
        self.timer: asyncio.TimerHandle | None = None

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        abort(self.writer)


C = TypeVar("C", bound=BackendConnection)


class BackendPool(Generic[C]):
    """Idle keep-alive connections per backend, newest first, closed after `idle_timeout`."""

    def __init__(self, *, idle_timeout: float = 30.0, max_idle_per_backend: int = 16) -> None:
        self._idle: dict[Backend, list[C]] = {}
        self._idle_timeout = idle_timeout
        self._max = max_idle_per_backend

    def __repr__(self) -> str:
        count = sum(len(v) for v in self._idle.values())
        return f"BackendPool({count} idle connections to {len(self._idle)} backends)"

    def take(self, backend: Backend) -> C | None:
        stack = self._idle.get(backend)
        while stack:
            conn = stack.pop()
            if conn.timer is not None:
                conn.timer.cancel()
            if not conn.writer.is_closing() and not conn.reader.at_eof():
                conn.reused = True
                return conn
            conn.close()
        return None

    def park(self, conn: C) -> None:
        """Keep an idle connection for reuse (or close it when the backend has enough)."""
        stack = self._idle.setdefault(conn.backend, [])
        if conn.writer.is_closing() or len(stack) >= self._max:
            conn.close()
            return
        conn.timer = asyncio.get_running_loop().call_later(self._idle_timeout, self._expire, conn)
        stack.append(conn)

    def _expire(self, conn: C) -> None:
        stack = self._idle.get(conn.backend)
        if stack and conn in stack:
            stack.remove(conn)
        conn.close()

    def retain(self, backends: frozenset[Backend]) -> None:
        """Close idle connections to backends not in `backends`."""
        for backend in [b for b in self._idle if b not in backends]:
            for conn in self._idle.pop(backend):
                conn.close()

    def close_all(self) -> None:
        self.retain(frozenset())


class Connections:
    """The live connection tasks of a set of servers, so that closing can end them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def wrap(self, handler: Handler) -> Handler:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
            try:
                await handler(reader, writer)
            except asyncio.CancelledError:
                # Only `close_all` cancels these tasks. Ending normally keeps asyncio's
                # stream callback (3.11) from logging the cancellation as an error.
                pass
            except (OSError, asyncio.IncompleteReadError):
                pass
            except Exception:
                log.exception("service proxy connection failed")
            finally:
                if task is not None:
                    self._tasks.discard(task)
                writer.close()
        return tracked

    async def close_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def bind_warning(service: ServicePort, key: ListenerKey, exc: OSError, fallback: str) -> str:
    """The one line logged when a cluster-IP listener cannot be opened."""
    ip, port = key
    head = f"service {service.service} port {port}: cannot listen on {ip}:{port}"
    tail = f"; pods reach it through the cluster HTTP proxy ({fallback}) instead"
    if exc.errno in (errno.EACCES, errno.EPERM):
        why = (": ports below 1024 need root or CAP_NET_BIND_SERVICE (or run"
               f" `sysctl net.ipv4.ip_unprivileged_port_start={port}`)")
    elif exc.errno == errno.EADDRINUSE:
        why = ": another process is listening there; stop it to serve the cluster IP directly"
    elif exc.errno == errno.EADDRNOTAVAIL:
        why = (f": {ip} is not a local address (on macOS add it with"
               f" `sudo ifconfig lo0 alias {ip}`)")
    else:
        why = f": {exc.strerror or exc}"
    return head + why + tail


class ClusterIPListeners:
    """One TCP server per listener key; failures to bind are logged, not raised."""

    def __init__(self, handler_for: Callable[[ListenerKey], Handler], *,
                 fallback: Callable[[], str]) -> None:
        self._handler_for = handler_for
        self._fallback = fallback
        self._servers: dict[ListenerKey, asyncio.Server] = {}
        self._failed: set[ListenerKey] = set()

    def __repr__(self) -> str:
        return f"ClusterIPListeners({len(self._servers)} open, {len(self._failed)} failed)"

    @property
    def bound(self) -> frozenset[ListenerKey]:
        return frozenset(self._servers)

    @property
    def failed(self) -> frozenset[ListenerKey]:
        return frozenset(self._failed)

    async def open(self, key: ListenerKey, service: ServicePort) -> bool:
        if key in self._servers:
            return True
        ip, port = key
        try:
            server = await asyncio.start_server(self._handler_for(key), ip, port,
                                                reuse_address=True)
        except OSError as exc:
            self._failed.add(key)
            log.warning(bind_warning(service, key, exc, self._fallback()))
            return False
        self._failed.discard(key)
        self._servers[key] = server
        log.debug("service %s listening on %s:%d", service.service, ip, port)
        return True

    def close(self, key: ListenerKey) -> asyncio.Server | None:
        """Stop listening on `key` (at once); returns the server to await `wait_closed` on."""
        self._failed.discard(key)
        server = self._servers.pop(key, None)
        if server is not None:
            server.close()
        return server

    def close_all(self) -> list[asyncio.Server]:
        return [s for s in (self.close(k) for k in list(self._servers)) if s is not None]


async def wait_closed(servers: Iterable[asyncio.Server]) -> None:
    """Await the servers' shutdown (their connections must already be ended)."""
    for server in servers:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)

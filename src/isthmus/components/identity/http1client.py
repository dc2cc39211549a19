"""A small HTTP/1.1 client for the proxy's calls to the identity and destination services.

Why not aiohttp: these clients run in every sidecar proxy, whose idle RSS
budget is 40 MiB, and aiohttp (its parser, yarl, multidict) alone cost ~12
MiB of it. They need little: one request per connection (`Connection:
close`; a new connection presents the newest client certificate), TLS from
the caller's context, a fixed body or none, and the response body read
whole or as it streams. httptools parses the responses, as on the data plane.

Failures are `OSError`s: connection and TLS errors as they come (`ssl.SSLError`
is one), `TimeoutError` when connecting (TCP + TLS) takes longer than
`connect_timeout` or a read waits longer than `read_timeout`, and
`BadResponse` for an answer that is not HTTP or ends early.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from types import TracebackType

import httptools

READ_SIZE = 64 * 1024


class BadResponse(ConnectionError):
    """The server's answer is not well-formed HTTP/1.1, or the connection ended in its middle."""


class Response:
    """A response whose head has arrived; the body is read with `read` or `iter_chunks`.

    Use it as an async context manager (or call `close`) to close the connection.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 read_timeout: float | None) -> None:
        self.status = 0
        self.keep_alive = False  # whether the server leaves the connection open after this response
        self.headers: dict[str, str] = {}
        self._reader, self._writer = reader, writer
        self._read_timeout = read_timeout
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._head_done = self._done = False

    # parser callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        # Asked here: once the message is complete the parser no longer says.
        self.keep_alive = self._parser.should_keep_alive()
        self._head_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._done = True

    async def _feed(self) -> None:
        """Read once from the connection and parse what came."""
        async with asyncio.timeout(self._read_timeout):
            data = await self._reader.read(READ_SIZE)
        if not data:
            if self._head_done and not ("content-length" in self.headers
                                        or "transfer-encoding" in self.headers):
                self._done = True  # a body delimited by the end of the connection
                return
            raise BadResponse("the server closed the connection before the response was complete")
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as e:
            raise BadResponse(f"malformed HTTP response: {e}") from None

    async def _read_head(self) -> None:
        while not self._head_done:
            await self._feed()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body, piece by piece as it arrives, until the response ends."""
        while True:
            if self._body:
                body, self._body = self._body, []
                yield b"".join(body)
            if self._done:
                return
            await self._feed()

    async def read(self) -> bytes:
        """The whole body."""
        return b"".join([chunk async for chunk in self.iter_chunks()])

    def close(self) -> None:
        self._writer.close()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()


def _head(method: str, target: str, host: str, port: int, headers: Mapping[str, str] | None,
          body: bytes | None, *, close: bool) -> bytes:
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    head = {"Host": authority, **({"Connection": "close"} if close else {}), **(headers or {})}
    if body is not None:
        head["Content-Length"] = str(len(body))
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1") + (body or b"")


async def _open(host: str, port: int, ctx: ssl.SSLContext | None, source_ip: str | None
                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port, ssl=ctx, limit=READ_SIZE,
                                         local_addr=(source_ip, 0) if source_ip else None)


async def request(host: str, port: int, ctx: ssl.SSLContext | None, method: str, target: str, *,
                  body: bytes | None = None, headers: Mapping[str, str] | None = None,
                  connect_timeout: float | None = None, read_timeout: float | None = None,
                  source_ip: str | None = None) -> Response:
    """Connect (from `source_ip` when given), send one request and return once the response's head has arrived."""
    async with asyncio.timeout(connect_timeout):
        reader, writer = await _open(host, port, ctx, source_ip)
    try:
        writer.write(_head(method, target, host, port, headers, body, close=True))
        response = Response(reader, writer, read_timeout)
        await response._read_head()
    except BaseException:
        writer.close()
        raise
    return response


class KeptConnection:
    """One connection kept open for a sequence of requests (HTTP/1.1 keep-alive), each read whole.

    For a client that asks the same server again and again (the service
    mirror's gateway probes): after the first, a request costs one round
    trip, with no new TCP or TLS handshake. A connection the server closed
    (or said it would close) is opened anew for the next request.
    """

    def __init__(self, host: str, port: int, ctx: ssl.SSLContext | None, *, source_ip: str | None = None) -> None:
        self.host, self.port, self._ctx, self._source_ip = host, port, ctx, source_ip
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    @property
    def is_open(self) -> bool:
        return self._streams is not None and not self._streams[1].is_closing()

    async def request(self, method: str, target: str, *, headers: Mapping[str, str] | None = None,
                      body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body) of one request; on any failure the connection is closed (and the error raised)."""
        if not self.is_open:
            self.close()
            self._streams = await _open(self.host, self.port, self._ctx, self._source_ip)
        assert self._streams is not None
        reader, writer = self._streams
        try:
            writer.write(_head(method, target, self.host, self.port, headers, body, close=False))
            response = Response(reader, writer, None)
            await response._read_head()
            data = await response.read()
        except BaseException:
            self.close()
            raise
        if not response.keep_alive:
            self.close()
        return response.status, data

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None

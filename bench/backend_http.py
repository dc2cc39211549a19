"""The benchmark backend: a small, fast HTTP/1.1 server with a fixed answer.

`GET /` is answered `200 OK` with a fixed 100-byte text body; any other method
or path gets `404` (empty body). Connections are kept alive unless the client
asks otherwise (HTTP/1.0 without keep-alive, or `Connection: close`), and
pipelined requests are answered in order. One process, one thread: uvloop's
event loop with httptools' (C) request parser, so the backend costs little
next to what it serves. `bench/proxy_pair.py` starts it; alone:

    .venv/bin/python bench/backend_http.py --address 127.0.0.50:8080

It prints one line `listening on HOST:PORT` once it accepts connections, and
exits on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import cast

import httptools
import uvloop

BODY = b"isthmus benchmark backend: the same 100-byte body for every GET /".ljust(99, b".") + b"\n"

OK = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(BODY)) + BODY
OK_CLOSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close"
            b"\r\n\r\n" % len(BODY)) + BODY
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
NOT_FOUND_CLOSE = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Http(asyncio.Protocol):
    __slots__ = ("parser", "path_ok", "transport")

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.path_ok = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop sets TCP_NODELAY on TCP

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(BAD_REQUEST)
            self.transport.close()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.path_ok = url == b"/"

    def on_message_complete(self) -> None:
        transport = self.transport
        assert transport is not None
        keep = self.parser.should_keep_alive()
        found = self.path_ok and self.parser.get_method() == b"GET"
        if keep:
            transport.write(OK if found else NOT_FOUND)
        else:
            transport.write(OK_CLOSE if found else NOT_FOUND_CLOSE)
            transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Http, host, port, backlog=1024, reuse_address=True)
    print(f"listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--address", default="127.0.0.50:8080", help="HOST:PORT to listen on (loopback)")
    args = ap.parse_args()
    host, _, port = args.address.rpartition(":")
    if not host.startswith("127."):
        sys.exit("the benchmark backend listens on loopback addresses (127.0.0.0/8) only")
    uvloop.run(serve(host, int(port)))


if __name__ == "__main__":
    main()

"""The floor of a Python proxy pair: a featureless mTLS byte forwarder (benchmark only).

`bench/proxy_pair.py` runs two of these as its "floor" configuration, to show
on the same machine, in the same run, what the cheapest Python pair costs:
uvloop, `asyncio.Protocol`, TLS 1.3 with the same certificates and checks as
the mesh (client certificate required and verified against the anchor, the
server's name verified), and nothing else — no HTTP parsing, no discovery,
no balancing, no metrics, no tap. Each accepted connection gets one
connection to the next hop, and bytes are relayed both ways as they come,
with flow control (a slow side pauses the other's reads).

    python floor_forwarder.py outbound LISTEN_IP:PORT UPSTREAM_IP:PORT \\
        --cert client.crt --key client.key --anchor anchor.pem --server-name NAME
    python floor_forwarder.py inbound LISTEN_IP:PORT UPSTREAM_IP:PORT \\
        --cert server.crt --key server.key --anchor anchor.pem

outbound: plain in, TLS out; inbound: TLS in (client certificate required),
plain out.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
from typing import cast

import uvloop


class Relay(asyncio.Protocol):
    """One side of a forwarded connection; `peer` is the other side once connected."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Relay | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)
        elif not peer.transport.is_closing():
            peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.transport.is_closing():
            peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


def _addr(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    listen, upstream = _addr(args.listen), _addr(args.upstream)
    server_ctx: ssl.SSLContext | None = None
    client_ctx: ssl.SSLContext | None = None
    if args.role == "inbound":
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        server_ctx.load_cert_chain(args.cert, args.key)
        server_ctx.load_verify_locations(args.anchor)
        server_ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        client_ctx.load_cert_chain(args.cert, args.key)
        client_ctx.load_verify_locations(args.anchor)

    connecting: set[asyncio.Task[None]] = set()

    def accepted() -> Relay:
        down = Relay()

        async def connect() -> None:
            try:
                _, up = await loop.create_connection(
                    Relay, *upstream, ssl=client_ctx,
                    server_hostname=args.server_name if client_ctx is not None else None)
            except OSError:
                if down.transport is not None:
                    down.transport.close()
                return
            up = cast(Relay, up)
            assert up.transport is not None
            up.peer, down.peer = down, up
            if down.early:
                up.transport.write(b"".join(down.early))
                down.early.clear()
            if down.transport is None or down.transport.is_closing():
                up.transport.close()

        task = loop.create_task(connect())
        connecting.add(task)
        task.add_done_callback(connecting.discard)
        return down

    server = await loop.create_server(accepted, *listen, ssl=server_ctx, reuse_address=True, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("role", choices=("outbound", "inbound"))
    ap.add_argument("listen")
    ap.add_argument("upstream")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--anchor", required=True)
    ap.add_argument("--server-name", default=None, help="the name the inbound's certificate must carry")
    args = ap.parse_args()
    if args.role == "outbound" and not args.server_name:
        ap.error("outbound needs --server-name")
    uvloop.run(serve(args))


if __name__ == "__main__":
    main()

"""The line a proxy sends first on every connection to another proxy: what the connection is for.

Without transparent interception the receiving proxy cannot learn the
port the caller meant from the socket, so the caller says it, once per
connection, right after the TLS handshake (the role of linkerd2-proxy's
opaque transport header):

    isthmus/1 http 8080\\n                                   -> HTTP/1.1 for local port 8080
    isthmus/1 opaque 5432\\n                                 -> raw bytes for local port 5432
    isthmus/1 http web-svc.emojivoto.svc.cluster.local:80\\n -> HTTP for a service (gateways only)

Connections between proxies are pooled per (endpoint, header), so the cost
is one short line per connection, not per request.
"""

from __future__ import annotations

from dataclasses import dataclass

MAGIC = b"isthmus/1 "
MAX_LENGTH = 300
PROTOCOLS = ("http", "opaque")


class TransportHeaderError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class TransportHeader:
    protocol: str          # "http" | "opaque"
    port: int | None       # a local port of the receiving pod
    authority: str | None  # or a service authority, for gateways

    def encode(self) -> bytes:
        target = str(self.port) if self.port is not None else self.authority
        return MAGIC + f"{self.protocol} {target}\n".encode("ascii")


def local(protocol: str, port: int) -> TransportHeader:
    return TransportHeader(protocol, port, None)


def remote(protocol: str, authority: str) -> TransportHeader:
    return TransportHeader(protocol, None, authority)


def split(buffer: bytes) -> tuple[TransportHeader | None, bytes] | None:
    """Parse a header at the start of `buffer`.

    Returns None while more bytes are needed, (None, buffer) when the buffer
    does not start with a header (a plain client), or (header, rest).
    Raises TransportHeaderError for a header that is present but malformed.
    """
    n = min(len(buffer), len(MAGIC))
    if buffer[:n] != MAGIC[:n]:
        return None, buffer
    end = buffer.find(b"\n", 0, MAX_LENGTH)
    if end < 0:
        if len(buffer) >= MAX_LENGTH:
            raise TransportHeaderError(f"transport header longer than {MAX_LENGTH} bytes")
        return None
    return parse(buffer[len(MAGIC):end]), buffer[end + 1:]


def parse(body: bytes) -> TransportHeader:
    try:
        protocol, target = body.decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        raise TransportHeaderError(f"malformed transport header {body[:80]!r}: "
                                   "want '<http|opaque> <port|authority>'") from None
    if protocol not in PROTOCOLS:
        raise TransportHeaderError(f"unknown protocol {protocol!r} in transport header "
                                   f"(want one of {', '.join(PROTOCOLS)})")
    if target.isdigit():
        port = int(target)
        if not 0 < port < 65536:
            raise TransportHeaderError(f"port {port} out of range in transport header")
        return TransportHeader(protocol, port, None)
    host, _, port_text = target.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise TransportHeaderError(f"bad authority {target!r} in transport header (want host:port)")
    return TransportHeader(protocol, None, target)

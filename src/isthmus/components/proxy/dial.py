"""Opening connections to upstreams (plain or mTLS, with the transport header) and raw byte pipes.

Every failure becomes a `ProxyError` whose message names the upstream and
what went wrong: refused, timed out, or a TLS peer that did not prove the
expected identity.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import cast

from isthmus.components.identity.tlsconfig import IdentityMismatch
from isthmus.components.proxy.errors import ProxyError

# OpenSSL verify codes for "no path to a trusted root".
UNTRUSTED = frozenset({2, 18, 19, 20, 21})


class Pipe(asyncio.Protocol):
    """Bytes from this connection go to `peer` as they are; either side closing closes both."""

    def __init__(self, peer: asyncio.Transport | None = None,
                 counter: Callable[[int], None] | None = None) -> None:
        self.peer = peer
        self.transport: asyncio.Transport | None = None
        self.counter = counter
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def attach(self, peer: asyncio.Transport) -> None:
        self.peer = peer
        if self.early:
            peer.write(b"".join(self.early))
            self.early.clear()

    def data_received(self, data: bytes) -> None:
        if self.counter is not None:
            self.counter(len(data))
        peer = self.peer
        if peer is None:
            self.early.append(data)
        elif not peer.is_closing():
            peer.write(data)

    def eof_received(self) -> bool | None:
        peer = self.peer
        if peer is not None and not peer.is_closing() and peer.can_write_eof():
            peer.write_eof()
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and not self.peer.is_closing():
            self.peer.close()

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume_reading()


def describe_failure(label: str, exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = getattr(exc, "verify_message", None) or (exc.args[0] if exc.args else str(exc))
        if getattr(exc, "verify_code", None) in UNTRUSTED:
            why = f"its certificate does not chain to this proxy's trust anchors ({why})"
        return f"TLS to {label} refused: {why}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS to {label} failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return f"could not connect to {label}: connection refused"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"could not connect to {label}: timed out"
    return f"could not connect to {label}: {exc}"


def source_ip_for(listen_host: str) -> str | None:
    """The address to connect from: a pod's own loopback IP (embedded runner), else the kernel's choice."""
    return listen_host if listen_host.startswith("127.") and listen_host != "127.0.0.1" else None


async def dial(factory: Callable[[], asyncio.Protocol], host: str, port: int, *,
               ssl_ctx: ssl.SSLContext | None, peer_id: str | None, header: bytes,
               timeout: float, label: str, source_ip: str | None = None,
               ) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """Connect (with TLS when `ssl_ctx`), then send `header`; raises ProxyError(502).

    `source_ip` (the pod's IP) is bound before connecting, so the peer sees
    which pod is calling, as on Kubernetes (and an embedded cluster's service
    proxy knows the caller's cluster; see `components.serviceproxy.wan`).
    """
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            transport, protocol = await loop.create_connection(
                factory, host, port, ssl=ssl_ctx,
                server_hostname=peer_id if ssl_ctx is not None else None,
                local_addr=(source_ip, 0) if source_ip else None)
    except ssl.SSLError as e:
        reason = ("tls_identity_mismatch" if isinstance(e, IdentityMismatch) else
                  "tls_untrusted" if isinstance(e, ssl.SSLCertVerificationError) else "tls_handshake")
        raise ProxyError(502, describe_failure(label, e), reason=reason) from None
    except (OSError, TimeoutError) as e:
        raise ProxyError(502, describe_failure(label, e)) from None
    if header:
        transport.write(header)
    return cast(asyncio.Transport, transport), protocol

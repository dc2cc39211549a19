"""The proxy's TLS: its current certificate, and contexts built from it.

One server context (client certificates required and checked against the
trust anchors) and one client context per peer identity (the peer must
prove exactly the identity discovery promised, checked during the
handshake by `identity.tlsconfig`). When the certificate rotates the
server context loads the new one in place (new connections present it) and
client contexts are rebuilt lazily; open connections keep what they
negotiated.
"""

from __future__ import annotations

import asyncio
import ssl

from isthmus.adapters.x509 import Credentials
from isthmus.components.identity.tlsconfig import (
    IdentityContext,
    client_context,
    server_context,
    use_credentials,
)


class NoIdentity(Exception):
    """The proxy has no certificate yet (or identity is disabled)."""


class ProxyTls:
    def __init__(self, anchors_pem: bytes) -> None:
        self.anchors_pem = anchors_pem
        self.creds: Credentials | None = None
        self._server: IdentityContext | None = None
        self._clients: dict[str, IdentityContext] = {}
        self.first_certificate = asyncio.Event()  # set by the first `update`

    @property
    def ready(self) -> bool:
        return self.creds is not None

    def update(self, creds: Credentials) -> None:
        """Present `creds` on new connections from now on."""
        self.creds = creds
        self.first_certificate.set()
        if self._server is not None:
            use_credentials(self._server, creds)
        self._clients.clear()

    def server(self) -> ssl.SSLContext:
        if self.creds is None:
            raise NoIdentity("no certificate yet")
        if self._server is None:
            self._server = server_context(self.creds, self.anchors_pem, require_client_cert=True)
        return self._server

    def client(self, peer_identity: str) -> ssl.SSLContext:
        ctx = self._clients.get(peer_identity)
        if ctx is None:
            if self.creds is None:
                raise NoIdentity("no certificate yet")
            ctx = client_context(self.creds, self.anchors_pem, expected_identity=peer_identity)
            self._clients[peer_identity] = ctx
        return ctx

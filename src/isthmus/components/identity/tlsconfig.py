"""TLS contexts for workload identities: mutual TLS 1.3 checked against the trust anchors.

Identities (`<sa>.<ns>.serviceaccount.identity.isthmus.<td>`) are names, not
host names, so the standard host-name check is off; instead every context
built by `client_context` checks, as the last step of the handshake, that the
server's certificate names exactly the expected identity as its DNS SAN, and
fails the handshake with `ssl.SSLCertVerificationError` otherwise (in plain
sockets, asyncio and uvloop alike). Promises:

- TLS 1.3 is the minimum version; peers' chains must lead to one of the trust
  anchors (a bundle may hold several roots, as during an anchor rotation), and
  intermediates come from the peer (a leaf's chain is leaf + issuer);
- private keys never touch a file system: they are loaded into OpenSSL from a
  memfd (anonymous memory); only where memfd does not exist (not Linux) a
  private 0600 temporary file is used and removed at once;
- `peer_identity` reads the identity a verified peer proved, or None.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Iterator
from typing import Any

from isthmus.adapters.x509 import Credentials


class IdentityMismatch(ssl.SSLCertVerificationError):
    """The peer's certificate is valid but names another identity than the one expected."""


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The identity (the single DNS SAN) of a verified peer's certificate, or None when there is none."""
    if ssl_object is None:
        return None
    cert: dict[str, Any] | None = ssl_object.getpeercert()
    if not cert:
        return None
    names = [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]
    return names[0] if len(names) == 1 else None


def check_peer(ssl_object: ssl.SSLObject | ssl.SSLSocket, expected_identity: str) -> None:
    """Raise `IdentityMismatch` unless the peer proved `expected_identity`."""
    got = peer_identity(ssl_object)
    if got != expected_identity:
        err = IdentityMismatch(
            f"peer certificate names identity {got or '(none)'}, expected {expected_identity}")
        err.verify_message = str(err)
        raise err


class IdentityContext(ssl.SSLContext):
    """An `ssl.SSLContext` that, on the client side, checks the server's identity after the handshake."""

    expected_identity: str | None = None


class _CheckedObject(ssl.SSLObject):
    """Memory-BIO connections (asyncio, uvloop): the identity check ends `do_handshake`."""

    def do_handshake(self) -> None:
        super().do_handshake()
        _check_after_handshake(self)


class _CheckedSocket(ssl.SSLSocket):
    """Blocking sockets: the identity check ends `do_handshake`."""

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        _check_after_handshake(self)


def _check_after_handshake(conn: ssl.SSLObject | ssl.SSLSocket) -> None:
    ctx = conn.context
    expected = ctx.expected_identity if isinstance(ctx, IdentityContext) else None
    if expected is not None and not conn.server_side:
        check_peer(conn, expected)


@contextlib.contextmanager
def _key_file(data: bytes) -> Iterator[str]:
    """A path OpenSSL can read `data` from, gone when the block ends."""
    if hasattr(os, "memfd_create"):
        # memfd: anonymous memory with a file descriptor; reopened by OpenSSL through /proc.
        fd = os.memfd_create("isthmus-credentials", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    # Fallback: a 0600 file in a 0700 directory of our own, deleted as soon as OpenSSL has read it.
    import tempfile  # here, not at the top: only without memfd (a sidecar proxy's RSS)

    with tempfile.TemporaryDirectory(prefix="isthmus-") as d:
        path = os.path.join(d, "credentials.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        try:
            yield path
        finally:
            os.unlink(path)


def use_credentials(ctx: ssl.SSLContext, creds: Credentials) -> None:
    """Make `ctx` present `creds` (leaf + chain, in-memory key) on new connections.

    Connections already open keep what they presented.
    """
    with _key_file(creds.cert_pem.rstrip(b"\n") + b"\n" + creds.key_pem) as path:
        ctx.load_cert_chain(path)


def _base(protocol: int, anchors_pem: bytes) -> IdentityContext:
    ctx = IdentityContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # RFC 5280 rules, as Python 3.13's defaults
    ctx.load_verify_locations(cadata=anchors_pem.decode("ascii"))
    ctx.sslobject_class = _CheckedObject
    ctx.sslsocket_class = _CheckedSocket
    return ctx


def server_context(creds: Credentials, anchors_pem: bytes, *,
                   require_client_cert: bool) -> IdentityContext:
    """A server context presenting `creds`; client certificates are verified against the anchors.

    With `require_client_cert` a client without a valid certificate is refused
    (mesh traffic); without it a client may present none (the identity service,
    which its clients call before they have a certificate), but one it presents
    must still be valid.
    """
    ctx = _base(ssl.PROTOCOL_TLS_SERVER, anchors_pem)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    use_credentials(ctx, creds)
    return ctx


def client_context(creds: Credentials | None, anchors_pem: bytes, *,
                   expected_identity: str) -> IdentityContext:
    """A client context presenting `creds` (None: no client certificate) accepting only `expected_identity`."""
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT, anchors_pem)
    ctx.check_hostname = False  # identities are not host names; checked by `check_peer` instead
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.expected_identity = expected_identity
    if creds is not None:
        use_credentials(ctx, creds)
    return ctx

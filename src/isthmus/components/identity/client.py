"""The workload side of identity: get a certificate from the identity service and keep it fresh.

An `IdentityClient` holds one private key, made in memory when it is built and
never written anywhere; `run()` asks the identity service for a certificate
at once, then again at 70% of each certificate's life (`core.identity`'s
`renewal_delay`). Promises:

- a failed request (service unreachable, a refusal, a bad answer, an
  unreadable token file) is retried with exponential backoff and jitter
  (`core.identity.retry_delay`, 1 s doubling to 60 s) for as long as `run()`
  runs: refusals are retried too, since a token rotates and a service account
  may be fixed, but they are logged as errors and kept in `last_error`;
- the current certificate keeps serving until a new one arrives;
- a certificate is used only once it chains to the trust anchors, names this
  client's identity and carries this client's public key;
- the service-account token is re-read from `token_path` for every request
  (the kubelet rotates it);
- the service must prove the identity service's own identity (TLS 1.3).

The clock, sleep, randomness and the HTTP poster are injected, so rotation
runs under a fake clock in tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization

from isthmus.adapters.x509 import (
    Credentials,
    X509Error,
    load_certificates,
    make_csr,
    new_private_key,
    private_key_pem,
    verify_chain,
)
from isthmus.components.identity import http1client
from isthmus.components.identity.tlsconfig import client_context
from isthmus.core.identity import (
    MIN_RENEWAL_DELAY,
    parse_workload_identity,
    renewal_delay,
    retry_delay,
    workload_identity,
)

log = logging.getLogger("isthmus.identity.client")

REQUEST_TIMEOUT = 30.0

# (url, request JSON object) -> (HTTP status, response JSON object); raises ServiceUnreachable.
Poster = Callable[[str, dict[str, str]], Awaitable[tuple[int, Any]]]


class IdentityClientError(Exception):
    """One certificate request failed; `transient` when the service could not answer at all."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class ServiceUnreachable(Exception):
    """The identity service gave no answer (connection, TLS or timeout failure)."""


def service_identity(trust_domain: str) -> str:
    """The identity the identity service proves in its TLS certificate (its service account:
    `isthmus-identity` in namespace `isthmus`)."""
    return workload_identity("isthmus-identity", "isthmus", trust_domain)


class IdentityClient:
    """Keeps one workload's certificate current (see the module docstring)."""

    def __init__(self, *, service_url: str, service_ca_pem: bytes, identity: str, token_path: Path,
                 clock: Callable[[], datetime],
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rand: Callable[[], float] = random.random,
                 http: Poster | None = None,
                 on_update: Callable[[Credentials], None] | None = None) -> None:
        parsed = parse_workload_identity(identity)
        if parsed is None:
            raise ValueError(f"{identity!r} is not a workload identity "
                             f"(<serviceaccount>.<namespace>.serviceaccount.identity.isthmus.<domain>)")
        self.identity = identity
        self.service_identity = service_identity(parsed[2])
        self._url = service_url.rstrip("/") + "/v1/certify"
        self._anchors = service_ca_pem
        self._token_path = token_path
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._http = http
        self._ctx: ssl.SSLContext | None = None
        self._ctx_anchors = b""
        self.on_update = on_update
        key = new_private_key()
        self._key_pem = private_key_pem(key)
        self._public_der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self._csr_pem = make_csr(key, identity).decode()
        self._current: Credentials | None = None
        self._validity: tuple[datetime, datetime] | None = None
        self.last_error: str | None = None
        self.failures = 0

    # ------------------------------------------------------------------ state

    @property
    def current(self) -> Credentials | None:
        """The newest certificate (leaf + chain PEM) with the in-memory key, or None before the first."""
        return self._current

    @property
    def expiry(self) -> datetime | None:
        return self._validity[1] if self._validity else None

    @property
    def ready(self) -> bool:
        """True while a certificate is held and has not expired."""
        return self._validity is not None and self._clock() < self._validity[1]

    def set_trust_anchors(self, anchors_pem: bytes) -> None:
        """Use a new trust-anchor bundle (an anchor rotation) for the service and for new certificates."""
        self._anchors = anchors_pem

    async def close(self) -> None:
        """Drop the TLS context for the identity service (`run()` does this when it ends); each
        request has a connection of its own, closed with its answer."""
        self._ctx = None

    def __repr__(self) -> str:
        if self._validity is None:
            state = f"waiting ({self.failures} failures)"
        else:
            state = f"certified until {self._validity[1].isoformat()}"
        return f"<IdentityClient {self.identity} {state}>"

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Request now, renew at 70% of each certificate's life, retry failures with backoff.

        Runs until cancelled.
        """
        try:
            while True:
                try:
                    not_before, not_after = await self.renew()
                except IdentityClientError as e:
                    delay = retry_delay(self.failures, jitter=self._rand())
                    self.failures += 1
                    self.last_error = str(e)
                    (log.warning if e.transient else log.error)(
                        "certificate request for %s failed (%d in a row), retrying in %.1f s: %s",
                        self.identity, self.failures, delay, e)
                else:
                    self.failures = 0
                    self.last_error = None
                    delay = max(renewal_delay(not_before, not_after, self._clock()), MIN_RENEWAL_DELAY)
                await self._sleep(delay)
        finally:
            await self.close()

    async def renew(self) -> tuple[datetime, datetime]:
        """Request one certificate and install it; its (not_before, not_after). Raises IdentityClientError."""
        try:
            token = self._token_path.read_text().strip()
        except OSError as e:
            raise IdentityClientError(f"cannot read the service-account token {self._token_path}: "
                                      f"{e.strerror or e}", transient=False) from None
        request = {"identity": self.identity, "token": token, "csr": self._csr_pem}
        try:
            status, body = await (self._http or self._post)(self._url, request)
        except ServiceUnreachable as e:
            raise IdentityClientError(f"identity service {self._url} unreachable: {e}",
                                      transient=True) from None
        if status != 200:
            error = body.get("error") if isinstance(body, dict) else None
            detail = error if isinstance(error, str) else repr(body)[:200]
            raise IdentityClientError(f"identity service answered {status}: {detail}",
                                      transient=status >= 500 or status == 429)
        creds, validity = self._accept(body)
        self._current, self._validity = creds, validity
        log.info("certificate for %s valid until %s", self.identity, validity[1].isoformat())
        if self.on_update is not None:
            try:
                self.on_update(creds)
            except Exception:
                log.exception("on_update callback failed for %s", self.identity)
        return validity

    def _accept(self, body: Any) -> tuple[Credentials, tuple[datetime, datetime]]:
        if not (isinstance(body, dict) and isinstance(body.get("leaf"), str)
                and isinstance(body.get("chain"), list) and all(isinstance(c, str) for c in body["chain"])):
            raise IdentityClientError(f"identity service answered without leaf and chain: {body!r:.200}",
                                      transient=False)
        leaf_pem = body["leaf"].encode()
        chain = [(c if c.endswith("\n") else c + "\n").encode() for c in body["chain"]]
        chain_pem = b"".join(chain)
        try:
            verify_chain(leaf_pem, intermediates=chain, roots_pem=self._anchors, now=self._clock(),
                         dns_name=self.identity)
            leaf = load_certificates(leaf_pem)[0]
        except (X509Error, IndexError) as e:
            raise IdentityClientError(f"the certificate from the identity service is not usable: {e}",
                                      transient=False) from None
        der = leaf.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        if der != self._public_der:
            raise IdentityClientError("the certificate from the identity service is for another key "
                                      "than this client's", transient=False)
        leaf_text = leaf_pem if leaf_pem.endswith(b"\n") else leaf_pem + b"\n"
        creds = Credentials(cert_pem=leaf_text + chain_pem, key_pem=self._key_pem)
        return creds, (leaf.not_valid_before_utc, leaf.not_valid_after_utc)

    # ------------------------------------------------------------------ default transport

    async def _post(self, url: str, request: dict[str, str]) -> tuple[int, Any]:
        # One connection per request (renewals are hours apart), through the small client
        # of `http1client` rather than aiohttp: this runs in every sidecar proxy (RSS budget).
        if self._ctx is None or self._ctx_anchors != self._anchors:
            self._ctx_anchors = self._anchors
            self._ctx = client_context(None, self._anchors, expected_identity=self.service_identity)
        parsed = urlsplit(url)
        host, port = parsed.hostname or "", parsed.port or 443
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                async with await http1client.request(
                        host, port, self._ctx, "POST", parsed.path, body=json.dumps(request).encode(),
                        headers={"Content-Type": "application/json"}) as resp:
                    raw = await resp.read()
                    status = resp.status
        except (OSError, TimeoutError) as e:
            raise ServiceUnreachable(f"{type(e).__name__}: {e}") from None
        try:
            return status, json.loads(raw)
        except ValueError:  # not JSON, or not UTF-8
            return status, raw.decode(errors="replace")[:200]

"""The identity service: signs workload certificates for callers that prove their service account.

`POST /v1/certify` takes `{"identity", "token", "csr"}`: the workload identity
asked for, a service-account token, and a PEM CSR. The token is checked through
the cluster API's TokenReview (the `token_reviewer` injected; see
`reviews.lightkube_token_reviewer`); a successful review is remembered for
10 s (`review_cache_ttl`, as kube-apiserver remembers the tokens it
authenticates; see `reviews.ReviewCache`), a failed one not at all. The
identity it proves,
`workload_identity(sa, ns, trust_domain)` of `system:serviceaccount:NS:SA`,
must be the identity asked for, and the CSR must name exactly that identity.
The answer is a 24 h leaf (backdated 20 s for clock skew) signed by the issuer:
`{"leaf": PEM, "chain": [issuer PEM, ...], "expiry": RFC 3339}`.

Promises:

- every refusal is `{"error": "<sentence>"}` with 400 (malformed request or
  CSR, CSR names), 401 (the token is not authenticated, with TokenReview's
  reason), 403 (the token proves another identity: both are named) or 503
  (TokenReview could not be asked); cheap checks come first, so a malformed
  request never costs a TokenReview;
- tokens are never logged, and the review cache holds only their SHA-256;
- the service speaks TLS 1.3 with its own leaf,
  `isthmus-identity.isthmus.serviceaccount.identity.isthmus.<td>`, from the
  issuer (chain leaf + issuer), re-issued at 70% of its life and whenever the
  issuer changes (`update_issuer`); callers are authenticated by token, so no
  client certificate is asked for;
- the admin address (plain HTTP) serves `GET /metrics` (Prometheus text) and
  `GET /ready` / `GET /live`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from isthmus.adapters.x509 import (
    Credentials,
    LeafSigner,
    X509Error,
    issue_leaf,
    load_certificates,
    read_csr,
    verify_chain,
)
from isthmus.components.identity.client import service_identity
from isthmus.components.identity.metrics import IdentityMetrics, RefusalReason
from isthmus.components.identity.reviews import (
    REVIEW_CACHE_SIZE,
    REVIEW_CACHE_TTL,
    ReviewCache,
    TokenReviewer,
    TokenReviewUnavailable,
)
from isthmus.components.identity.reviews import (
    TokenReviewResult as TokenReviewResult,  # re-exported
)
from isthmus.components.identity.reviews import (
    lightkube_token_reviewer as lightkube_token_reviewer,  # re-exported
)
from isthmus.components.identity.tlsconfig import server_context, use_credentials
from isthmus.components.webapp import WebService, json_errors, json_response
from isthmus.core.identity import (
    check_csr_names,
    parse_workload_identity,
    renewal_delay,
    workload_identity,
)

log = logging.getLogger("isthmus.identity")

REVIEW_TIMEOUT = 10.0
MAX_BODY = 64 * 1024
_SA_PREFIX = "system:serviceaccount:"


class IdentityServiceError(Exception):
    """The service cannot run with what it was given (for example an issuer outside the trust anchors)."""


class _Refusal(Exception):
    def __init__(self, status: int, reason: RefusalReason, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def _rfc3339(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class IdentityService(WebService):
    """The certificate-signing service of one trust domain (see the module docstring)."""

    def __init__(self, *, issuer: Credentials, trust_anchors_pem: bytes, trust_domain: str,
                 token_reviewer: TokenReviewer, clock: Callable[[], datetime],
                 address: tuple[str, int], admin_address: tuple[str, int] | None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 review_timeout: float = REVIEW_TIMEOUT,
                 review_cache_ttl: float = REVIEW_CACHE_TTL,
                 review_cache_size: int = REVIEW_CACHE_SIZE,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        """`review_cache_ttl` 0 asks the cluster API about every token; `monotonic` times the cache."""
        self.trust_domain = trust_domain
        self.identity = service_identity(trust_domain)
        self.metrics = IdentityMetrics()
        self._review = token_reviewer
        self._reviews = (ReviewCache(clock=monotonic, ttl=review_cache_ttl, max_entries=review_cache_size)
                         if review_cache_ttl > 0 else None)
        self._clock = clock
        self._sleep = sleep
        self._review_timeout = review_timeout
        self._address = address
        self._admin_address = admin_address
        self._issuer = issuer
        self._signer = self._new_signer(issuer)
        self._anchors = trust_anchors_pem
        self._chain_pems = self._split(issuer.cert_pem)
        self._ctx: ssl.SSLContext | None = None
        self._own_expiry: tuple[datetime, datetime] | None = None
        self._runners: list[web.AppRunner] = []
        self._renewer: asyncio.Task[None] | None = None
        self.port = 0
        self.admin_port = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Issue the service's own leaf, listen on both addresses, and keep the leaf fresh."""
        creds = self._own_credentials()
        self._ctx = server_context(creds, self._anchors, require_client_cert=False)
        self._ctx.verify_mode = ssl.CERT_NONE  # callers prove themselves by token, not certificate
        app = web.Application(client_max_size=MAX_BODY, middlewares=[json_errors("POST /v1/certify")])
        app.router.add_post("/v1/certify", self._certify)
        try:
            self.port = await self._serve(app, self._address, self._ctx)
            if self._admin_address is not None:
                admin = web.Application()
                admin.router.add_get("/metrics", self._metrics)
                admin.router.add_get("/ready", self._ok)
                admin.router.add_get("/live", self._ok)
                self.admin_port = await self._serve(admin, self._admin_address, None)
        except BaseException:
            await self.close()
            raise
        self._renewer = asyncio.create_task(self._renew_own(), name="identity-own-leaf")
        log.info("identity service for %s listening on %s", self.trust_domain, self.url)

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()

    def update_issuer(self, issuer: Credentials, trust_anchors_pem: bytes) -> None:
        """Sign with `issuer` from now on (issuer or anchor rotation); the own leaf is re-issued at once."""
        signer = self._new_signer(issuer)
        old = (self._issuer, self._signer, self._anchors, self._chain_pems)
        self._issuer, self._signer, self._anchors = issuer, signer, trust_anchors_pem
        self._chain_pems = self._split(issuer.cert_pem)
        try:
            creds = self._own_credentials()
        except (IdentityServiceError, X509Error):
            self._issuer, self._signer, self._anchors, self._chain_pems = old
            raise
        if self._ctx is not None:
            use_credentials(self._ctx, creds)

    def __repr__(self) -> str:
        state = f"serving {self.url}" if self._runners else "stopped"
        return f"<IdentityService {self.trust_domain} {state} {self.metrics!r}>"

    # ------------------------------------------------------------------ own leaf

    @staticmethod
    def _new_signer(issuer: Credentials) -> LeafSigner:
        try:
            return LeafSigner(issuer)
        except X509Error as e:
            raise IdentityServiceError(f"the issuer cannot sign workload certificates: {e}") from None

    @staticmethod
    def _split(pem: bytes) -> list[str]:
        return [c.public_bytes(serialization.Encoding.PEM).decode() for c in load_certificates(pem)]

    def _own_credentials(self) -> Credentials:
        now = self._clock()
        creds = issue_leaf(self._issuer, self.identity, now=now)
        certs = load_certificates(creds.cert_pem)
        leaf_pem = certs[0].public_bytes(serialization.Encoding.PEM)
        intermediates = "".join(self._chain_pems).encode()
        try:
            verify_chain(leaf_pem, intermediates=[intermediates], roots_pem=self._anchors, now=now,
                         dns_name=self.identity)
        except X509Error as e:
            raise IdentityServiceError(
                f"the issuer certificate does not lead to the trust anchors ({e}); give the service "
                f"an issuer signed by one of them") from None
        self._own_expiry = (certs[0].not_valid_before_utc, certs[0].not_valid_after_utc)
        return Credentials(cert_pem=leaf_pem + intermediates, key_pem=creds.key_pem)

    async def _renew_own(self) -> None:
        while True:
            assert self._own_expiry is not None
            await self._sleep(max(renewal_delay(*self._own_expiry, self._clock()), 1.0))
            try:
                creds = self._own_credentials()
            except (IdentityServiceError, ValueError) as e:
                log.error("could not renew the identity service's own certificate: %s", e)
                await self._sleep(10.0)
                continue
            assert self._ctx is not None
            use_credentials(self._ctx, creds)
            log.info("identity service certificate renewed")

    # ------------------------------------------------------------------ handlers

    async def _ok(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.render(), content_type="text/plain",
                            headers={"X-Content-Type-Options": "nosniff"}, charset="utf-8")

    async def _certify(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise _Refusal(400, "bad_request", f"The request body is larger than {MAX_BODY // 1024} KiB; "
                                                   f"a certificate request is a few KiB.") from None
            answer = await self._decide(raw)
        except _Refusal as r:
            self.metrics.refused.inc(r.reason)
            log.info("refused a certificate (%s): %s", r.reason, r.message)
            return json_response({"error": r.message}, r.status)
        self.metrics.issued.inc()
        self.metrics.sign_latency.observe(time.perf_counter() - started)
        return json_response(answer)

    async def _decide(self, raw: bytes) -> dict[str, Any]:
        identity, token, csr = self._parse(raw)
        try:
            info = read_csr(csr)
        except X509Error as e:
            raise _Refusal(400, "bad_csr", f"The CSR cannot be read: {e}") from None
        if not info.signature_valid:
            raise _Refusal(400, "bad_csr", "The CSR's signature does not verify with its own public key; "
                                           "sign the CSR with the key it carries.")
        reason = check_csr_names(dns_names=list(info.dns_names), other_sans=list(info.other_sans),
                                 common_name=info.common_name, expected=identity)
        if reason is not None:
            raise _Refusal(400, "bad_csr", reason)
        proven = await self._proven_identity(token, identity)
        if proven != identity:
            raise _Refusal(403, "wrong_identity",
                           f"The token proves the identity {proven}, not the requested {identity}; "
                           f"ask for {proven} or use the token of the service account for {identity}.")
        signer, chain = self._signer, self._chain_pems  # one issuer for both, even across update_issuer
        try:
            leaf = signer.sign(info, dns_name=identity, now=self._clock())
        except X509Error as e:
            raise _Refusal(400, "bad_csr", f"The CSR cannot be signed: {e}") from None
        return {"leaf": leaf.cert_pem.decode(), "chain": chain, "expiry": _rfc3339(leaf.not_after)}

    async def _ask(self, token: str) -> TokenReviewResult:
        try:
            async with asyncio.timeout(self._review_timeout):
                return await self._review(token)
        except TokenReviewUnavailable as e:
            raise _Refusal(503, "review_unavailable",
                           f"The token cannot be checked now: {e}; retry later.") from None
        except TimeoutError:
            raise _Refusal(503, "review_unavailable",
                           f"The token cannot be checked now: the cluster API did not answer the "
                           f"TokenReview within {self._review_timeout:g} s; retry later.") from None

    def _parse(self, raw: bytes) -> tuple[str, str, bytes]:
        usage = 'send a JSON object {"identity": NAME, "token": SERVICE-ACCOUNT-TOKEN, "csr": PEM}'
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _Refusal(400, "bad_request", f"The request body is not JSON; {usage}.") from None
        if not isinstance(body, dict):
            raise _Refusal(400, "bad_request", f"The request body is not a JSON object; {usage}.")
        missing = [k for k in ("identity", "token", "csr") if not isinstance(body.get(k), str) or not body[k]]
        if missing:
            raise _Refusal(400, "bad_request",
                           f"The request lacks {', '.join(missing)} (non-empty strings); {usage}.")
        identity: str = body["identity"]
        parsed = parse_workload_identity(identity)
        if parsed is None:
            raise _Refusal(400, "bad_request",
                           f"{identity!r} is not a workload identity; ask for <serviceaccount>."
                           f"<namespace>.serviceaccount.identity.isthmus.{self.trust_domain}.")
        if parsed[2] != self.trust_domain:
            raise _Refusal(400, "bad_request",
                           f"The identity {identity} is in trust domain {parsed[2]}, but this service "
                           f"issues certificates for trust domain {self.trust_domain}.")
        return identity, body["token"], body["csr"].encode()

    async def _proven_identity(self, token: str, requested: str) -> str:
        result = self._reviews.get(token) if self._reviews is not None else None
        if result is not None:
            self.metrics.token_reviews.inc("cache")
        else:
            result = await self._ask(token)
            self.metrics.token_reviews.inc("api")
            if self._reviews is not None:
                self._reviews.put(token, result)  # kept only if the token was authenticated
        if not result.authenticated:
            raise _Refusal(401, "unauthenticated",
                           f"The token is not authenticated: {result.error or 'no reason given'}.")
        user = result.username
        ns, sep, sa = user.removeprefix(_SA_PREFIX).partition(":")
        if not user.startswith(_SA_PREFIX) or not sep:
            raise _Refusal(403, "wrong_identity",
                           f"The token authenticates {user!r}, which is not a service account, so it "
                           f"proves no workload identity; {requested} needs its service account's token.")
        try:
            return workload_identity(sa, ns, self.trust_domain)
        except ValueError as e:
            raise _Refusal(403, "wrong_identity",
                           f"The token's service account {user} has no workload identity ({e}).") from None

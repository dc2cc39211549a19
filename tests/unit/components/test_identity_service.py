"""The identity service with a scripted token reviewer and a fake monotonic clock for its review cache.

The service runs for real on 127.0.0.1 (TLS 1.3, real signing); only the
cluster API's TokenReview is scripted, so each test sees exactly which tokens
reached it, and the review cache's time moves only when the test says.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from isthmus.adapters.x509 import (
    Credentials,
    issue_leaf,
    load_certificates,
    make_csr,
    new_issuer,
    new_private_key,
    new_root,
)
from isthmus.components.identity import (
    IdentityService,
    IdentityServiceError,
    TokenReviewResult,
    TokenReviewUnavailable,
    client_context,
)
from isthmus.core.identity import workload_identity


def now() -> datetime:
    return datetime.now(UTC)


ROOT = new_root(now=now() - timedelta(days=1))
ISSUER = new_issuer(ROOT, now=now() - timedelta(days=1))
WEB = workload_identity("web", "emojivoto")
BOT = workload_identity("vote-bot", "emojivoto")
USERS = {"web-token": "system:serviceaccount:emojivoto:web",
         "bot-token": "system:serviceaccount:emojivoto:vote-bot"}


class Reviewer:
    """The cluster API's TokenReview, scripted: known tokens authenticate, `down` makes it unreachable."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.down = False

    async def __call__(self, token: str) -> TokenReviewResult:
        self.asked.append(token)
        if self.down:
            raise TokenReviewUnavailable("the cluster API could not be reached (scripted)")
        if token in USERS:
            return TokenReviewResult(True, USERS[token])
        return TokenReviewResult(False, error="invalid bearer token")


class Monotonic:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, service: IdentityService, reviewer: Reviewer, clock: Monotonic) -> None:
        self.service, self.reviewer, self.clock = service, reviewer, clock

    async def certify(self, identity: str, token: str) -> tuple[int, dict[str, Any]]:
        body = {"identity": identity, "token": token, "csr": make_csr(new_private_key(), identity).decode()}
        ctx = client_context(None, ROOT.cert_pem, expected_identity=self.service.identity)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s, \
                s.post(self.service.url + "/v1/certify", json=body) as r:
            return r.status, await r.json()

    def reviews(self, source: str) -> float:
        return self.service.metrics.token_reviews.get(source)




@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Any]]:
    services: list[IdentityService] = []

    async def make(**options: Any) -> Harness:
        reviewer, clock = Reviewer(), Monotonic()
        service = IdentityService(issuer=options.pop("issuer", ISSUER), trust_anchors_pem=ROOT.cert_pem,
                                  trust_domain="cluster.local", token_reviewer=reviewer, clock=now,
                                  address=("127.0.0.1", 0), admin_address=None, monotonic=clock, **options)
        await service.start()
        services.append(service)
        return Harness(service, reviewer, clock)

    yield make
    for service in services:
        await service.close()


async def test_a_token_reviewed_successfully_is_not_reviewed_again_for_ten_seconds(
        start: Callable[..., Any]) -> None:
    h: Harness = await start()
    for _ in range(3):
        status, body = await h.certify(WEB, "web-token")
        assert status == 200, body
    assert h.reviewer.asked == ["web-token"]
    assert (h.reviews("api"), h.reviews("cache")) == (1, 2)
    h.clock.now += 9.5
    assert (await h.certify(WEB, "web-token"))[0] == 200
    assert h.reviewer.asked == ["web-token"]
    h.clock.now += 0.5  # ten seconds after the review
    assert (await h.certify(WEB, "web-token"))[0] == 200
    assert h.reviewer.asked == ["web-token", "web-token"]
    assert (h.reviews("api"), h.reviews("cache")) == (2, 3)
    assert 'identity_token_review_total{source="cache"} 3' in h.service.metrics.render().splitlines()


async def test_refused_and_unanswered_reviews_are_asked_again_every_time(start: Callable[..., Any]) -> None:
    h: Harness = await start()
    for _ in range(2):
        status, body = await h.certify(WEB, "stolen-token")
        assert status == 401 and body["error"] == "The token is not authenticated: invalid bearer token."
    assert h.reviewer.asked == ["stolen-token", "stolen-token"]
    h.reviewer.down = True
    status, body = await h.certify(WEB, "web-token")
    assert status == 503 and "could not be reached" in body["error"]
    h.reviewer.down = False
    assert (await h.certify(WEB, "web-token"))[0] == 200
    assert h.reviewer.asked == ["stolen-token", "stolen-token", "web-token", "web-token"]
    assert h.reviews("api") == 3  # answered reviews; the unreachable one is counted as a refusal
    assert h.service.metrics.refused.get("review_unavailable") == 1


async def test_a_cached_review_proves_only_its_own_identity(start: Callable[..., Any]) -> None:
    h: Harness = await start()
    assert (await h.certify(BOT, "bot-token"))[0] == 200
    status, body = await h.certify(WEB, "bot-token")
    assert status == 403 and BOT in body["error"] and WEB in body["error"]
    assert h.reviewer.asked == ["bot-token"]


async def test_with_the_cache_off_every_token_is_reviewed(start: Callable[..., Any]) -> None:
    h: Harness = await start(review_cache_ttl=0)
    for _ in range(3):
        assert (await h.certify(WEB, "web-token"))[0] == 200
    assert h.reviewer.asked == ["web-token"] * 3
    assert (h.reviews("api"), h.reviews("cache")) == (3, 0)


async def test_the_cache_holds_at_most_its_size(start: Callable[..., Any]) -> None:
    h: Harness = await start(review_cache_size=1)
    for token in ("web-token", "bot-token", "web-token"):
        await h.certify(WEB if token == "web-token" else BOT, token)
    assert h.reviewer.asked == ["web-token", "bot-token", "web-token"]


async def test_the_answer_carries_the_leafs_expiry_and_the_issuers_chain(start: Callable[..., Any]) -> None:
    h: Harness = await start()
    status, body = await h.certify(WEB, "web-token")
    assert status == 200
    leaf = load_certificates(body["leaf"].encode())[0]
    assert body["expiry"] == leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(hours=24, seconds=20)
    assert body["chain"] == [ISSUER.cert_pem.decode()]


async def test_an_issuer_that_cannot_sign_is_refused_and_the_old_one_keeps_signing(
        start: Callable[..., Any]) -> None:
    not_a_ca = issue_leaf(ISSUER, WEB, now=now())
    with pytest.raises(IdentityServiceError, match="is not a CA certificate"):
        IdentityService(issuer=not_a_ca, trust_anchors_pem=ROOT.cert_pem, trust_domain="cluster.local",
                        token_reviewer=Reviewer(), clock=now, address=("127.0.0.1", 0), admin_address=None)
    h: Harness = await start()
    with pytest.raises(IdentityServiceError, match="is not a CA certificate"):
        h.service.update_issuer(not_a_ca, ROOT.cert_pem)
    with pytest.raises(IdentityServiceError, match="key does not match"):
        h.service.update_issuer(Credentials(ISSUER.cert_pem, not_a_ca.key_pem), ROOT.cert_pem)
    status, body = await h.certify(WEB, "web-token")
    assert status == 200 and body["chain"] == [ISSUER.cert_pem.decode()]
    assert load_certificates(body["leaf"].encode())[0].issuer == load_certificates(ISSUER.cert_pem)[0].subject

    other = new_issuer(ROOT, now=now())
    h.service.update_issuer(other, ROOT.cert_pem)
    status, body = await h.certify(WEB, "web-token")
    assert status == 200 and body["chain"] == [other.cert_pem.decode()]

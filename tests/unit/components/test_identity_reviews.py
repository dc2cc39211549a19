"""Token reviews: the TokenReview request sent through lightkube's client, and the cache of successes.

The reviewer runs against a real lightkube `AsyncClient` whose HTTP transport
is scripted (httpx's MockTransport), so the request it sends and each kind of
answer are checked without a cluster. The cache runs on a fake clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.models.authentication_v1 import TokenReviewSpec, TokenReviewStatus, UserInfo
from lightkube.resources.authentication_v1 import TokenReview

from isthmus.components.identity.reviews import (
    ReviewCache,
    TokenReviewResult,
    TokenReviewUnavailable,
    lightkube_token_reviewer,
)

WEB_SA = "system:serviceaccount:emojivoto:web"
OK = TokenReviewResult(True, WEB_SA)


# ------------------------------------------------------------------ the reviewer


def kube(handler: Callable[[httpx2.Request], httpx2.Response], server: str = "https://api.test:6443"
         ) -> AsyncClient:
    config = KubeConfig.from_dict({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "test", "user": {"token": "identity-service-credential"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
    })
    return AsyncClient(config=config, trust_env=False, transport=httpx2.MockTransport(handler))


def review_answer(status: dict[str, Any] | None, code: int = 201) -> httpx2.Response:
    body: dict[str, Any] = {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                            "metadata": {"creationTimestamp": None}, "spec": {"token": "x"}}
    if status is not None:
        body["status"] = status
    return httpx2.Response(code, json=body)


async def test_the_review_is_a_tokenreview_posted_with_the_clients_credentials() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return review_answer({"authenticated": True, "user": {"username": WEB_SA, "groups": ["a"]}})

    client = kube(handler, server="https://api.test:6443/clusters/west")
    try:
        result = await lightkube_token_reviewer(client, audiences=["isthmus"])("the-token")
        assert result == TokenReviewResult(True, WEB_SA, "")
        await lightkube_token_reviewer(client)("other-token")
    finally:
        await client.close()
    first, second = seen
    assert first.method == "POST"
    assert str(first.url) == "https://api.test:6443/clusters/west/apis/authentication.k8s.io/v1/tokenreviews"
    assert first.headers["authorization"] == "Bearer identity-service-credential"
    assert first.headers["content-type"] == "application/json"
    assert json.loads(first.content) == {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                         "spec": {"token": "the-token", "audiences": ["isthmus"]}}
    assert json.loads(second.content)["spec"] == {"token": "other-token"}


@pytest.mark.parametrize(("status", "expected"), [
    ({"authenticated": False, "error": "invalid bearer token: bad signature", "user": {}},
     TokenReviewResult(False, "", "invalid bearer token: bad signature")),
    ({"user": {"username": WEB_SA}}, TokenReviewResult(False, WEB_SA, "")),  # authenticated absent: not
    ({"authenticated": "yes", "user": {"username": WEB_SA}}, TokenReviewResult(False, WEB_SA, "")),
    (None, TokenReviewResult(False, "", "the TokenReview came back without a status")),
])
async def test_unauthenticated_answers_are_results_with_the_reason(
        status: dict[str, Any] | None, expected: TokenReviewResult) -> None:
    client = kube(lambda request: review_answer(status))
    try:
        assert await lightkube_token_reviewer(client)("t") == expected
    finally:
        await client.close()


async def test_a_refused_review_is_unavailable_with_the_apis_status() -> None:
    def forbidden(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(403, json={
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
            "message": 'tokenreviews.authentication.k8s.io is forbidden: User "x" cannot create'})

    client = kube(forbidden)
    try:
        with pytest.raises(TokenReviewUnavailable, match=r"refused the TokenReview \(403: tokenreviews\."
                                                         r"authentication.k8s.io is forbidden"):
            await lightkube_token_reviewer(client)("t")
    finally:
        await client.close()

    client = kube(lambda request: httpx2.Response(502, text="bad gateway"))
    try:
        with pytest.raises(TokenReviewUnavailable, match=r"refused the TokenReview \(502: Bad Gateway\)"):
            await lightkube_token_reviewer(client)("t")
    finally:
        await client.close()


async def test_no_answer_or_a_non_json_answer_is_unavailable() -> None:
    def unreachable(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused")

    client = kube(unreachable)
    try:
        with pytest.raises(TokenReviewUnavailable, match=r"could not be reached \(ConnectError: connection refused"):
            await lightkube_token_reviewer(client)("t")
    finally:
        await client.close()

    client = kube(lambda request: httpx2.Response(200, text="<html>proxy login</html>"))
    try:
        with pytest.raises(TokenReviewUnavailable, match="not a JSON object"):
            await lightkube_token_reviewer(client)("t")
    finally:
        await client.close()


class ModelOnlyClient:
    """A Kubernetes client offering only `create` (no HTTP client underneath to borrow)."""

    def __init__(self, answer: TokenReview) -> None:
        self.answer = answer
        self.created: list[Any] = []

    async def create(self, obj: Any) -> TokenReview:
        self.created.append(obj)
        return self.answer


async def test_a_client_without_an_http_pool_is_asked_through_the_model() -> None:
    client = ModelOnlyClient(TokenReview(spec=TokenReviewSpec(token="tok"), status=TokenReviewStatus(
        authenticated=True, user=UserInfo(username=WEB_SA))))
    result = await lightkube_token_reviewer(client, audiences=["isthmus"])("tok")  # type: ignore[arg-type]
    assert result == TokenReviewResult(True, WEB_SA, "")
    [sent] = client.created
    assert isinstance(sent, TokenReview) and sent.spec.token == "tok" and sent.spec.audiences == ["isthmus"]


# ------------------------------------------------------------------ the cache


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_success_is_answered_from_the_cache_until_its_ttl_passes() -> None:
    clock = FakeClock()
    cache = ReviewCache(clock=clock)
    assert cache.ttl == 10.0  # as kube-apiserver's cache of successful token authentications
    assert cache.get("tok") is None
    cache.put("tok", OK)
    assert cache.get("tok") == OK
    clock.now += 9.9
    assert cache.get("tok") == OK
    assert cache.get("another") is None
    clock.now += 0.1  # 10 s after the review: asked again
    assert cache.get("tok") is None
    assert len(cache) == 0


def test_failures_are_not_cached() -> None:
    cache = ReviewCache(clock=FakeClock())
    cache.put("tok", TokenReviewResult(False, error="token has expired"))
    assert cache.get("tok") is None
    assert len(cache) == 0
    cache.put("tok", OK)  # a later success is
    assert cache.get("tok") == OK


def test_the_cache_holds_at_most_max_entries_dropping_the_oldest() -> None:
    clock = FakeClock()
    cache = ReviewCache(clock=clock, max_entries=3)
    for i in range(3):
        cache.put(f"t{i}", TokenReviewResult(True, f"u{i}"))
        clock.now += 1
    cache.put("t3", TokenReviewResult(True, "u3"))
    assert len(cache) == 3
    assert cache.get("t0") is None
    assert [cache.get(f"t{i}") for i in (1, 2, 3)] == [TokenReviewResult(True, f"u{i}") for i in (1, 2, 3)]
    cache.put("t1", TokenReviewResult(True, "u1"))  # reviewed again: now the youngest
    cache.put("t4", TokenReviewResult(True, "u4"))
    assert cache.get("t2") is None
    assert cache.get("t1") is not None and cache.get("t3") is not None and cache.get("t4") is not None


def test_expired_entries_make_room_before_live_ones() -> None:
    clock = FakeClock()
    cache = ReviewCache(clock=clock, ttl=10.0, max_entries=100)
    cache.put("old", OK)
    clock.now += 5
    cache.put("young", OK)
    clock.now += 6  # "old" has expired, "young" has not
    cache.put("new", OK)
    assert len(cache) == 2
    assert cache.get("young") == OK and cache.get("new") == OK


def test_entries_are_keyed_by_the_tokens_sha256_never_the_token() -> None:
    cache = ReviewCache(clock=FakeClock())
    token = "eyJhbGciOiJFUzI1NiJ9.secret-claims.signature"
    cache.put(token, OK)
    assert list(cache._entries) == [hashlib.sha256(token.encode()).digest()]
    assert "secret" not in repr(cache) and "secret" not in repr(cache._entries)


def test_a_cache_needs_a_positive_ttl_and_size() -> None:
    with pytest.raises(ValueError, match="positive"):
        ReviewCache(clock=FakeClock(), ttl=0)
    with pytest.raises(ValueError, match="positive"):
        ReviewCache(clock=FakeClock(), max_entries=0)

"""Checking service-account tokens: the cluster API's TokenReview, and a short memory of its answers.

- `lightkube_token_reviewer(client)` asks the cluster API to review a token
  (`POST /apis/authentication.k8s.io/v1/tokenreviews`) through the lightkube
  client's own connection pool, credentials and TLS settings
  (`adapters.kubehttp.JsonApi`). The review is sent and read as plain JSON
  rather than through lightkube's resource models and httpx's layers, which
  costs the identity service far less CPU per review (see
  docs/benchmarks.md); a client without an HTTP client underneath gets the
  model path (`client.create(TokenReview(...))`).
- `ReviewCache` remembers successful reviews for a few seconds, as the API
  server itself does for the tokens it authenticates (kube-apiserver keeps a
  successful token authentication for 10 s and a failed one not at all), so a
  workload that asks again at once is not reviewed twice. It is keyed by the
  SHA-256 of the token, never the token; it holds a bounded number of
  entries; it caches no failure.

Tokens are never logged, and never kept except in the reviews in flight.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from lightkube import ApiError, AsyncClient
from lightkube.models.authentication_v1 import TokenReviewSpec
from lightkube.resources.authentication_v1 import TokenReview

from isthmus.adapters import kubehttp

REVIEW_CACHE_TTL = 10.0
REVIEW_CACHE_SIZE = 4096
TOKEN_REVIEWS_PATH = "apis/authentication.k8s.io/v1/tokenreviews"  # relative to the API server's base URL


@dataclass(frozen=True)
class TokenReviewResult:
    """What the cluster API said of a token: authenticated as `username`, or not, because of `error`."""

    authenticated: bool
    username: str = ""
    error: str = ""


class TokenReviewUnavailable(Exception):
    """The cluster API could not be asked (unreachable, timed out, or refused the review itself)."""


TokenReviewer = Callable[[str], Awaitable[TokenReviewResult]]


def lightkube_token_reviewer(client: AsyncClient, *,
                             audiences: list[str] | None = None) -> TokenReviewer:
    """A token reviewer that creates an `authentication.k8s.io/v1` TokenReview through `client`.

    `TokenReviewUnavailable` when the API cannot be reached or refuses the
    review (with the API's status code and message); a review that comes back
    is a `TokenReviewResult`, authenticated or not.
    """
    try:
        api = kubehttp.JsonApi(client)
    except TypeError:
        return _model_reviewer(client, audiences)
    spec_extra = {"audiences": audiences} if audiences else {}

    async def review(token: str) -> TokenReviewResult:
        body = orjson.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                             "spec": {"token": token, **spec_extra}})
        try:
            code, reason, content = await api.raw("POST", TOKEN_REVIEWS_PATH, body)
        except Exception as e:  # any transport failure: the API gave no answer
            raise TokenReviewUnavailable(
                f"the cluster API could not be reached ({type(e).__name__}: {e})") from None
        try:
            answer = orjson.loads(content)
        except orjson.JSONDecodeError:
            answer = None
        if code >= 400:
            status = answer if isinstance(answer, dict) else {}
            raise TokenReviewUnavailable(
                f"the cluster API refused the TokenReview ({status.get('code') or code}: "
                f"{status.get('message') or reason})")
        if not isinstance(answer, dict):
            raise TokenReviewUnavailable(
                f"the cluster API answered the TokenReview with something that is not a JSON object "
                f"(HTTP {code})")
        return _result(answer.get("status"))

    return review


def _result(status: Any) -> TokenReviewResult:
    if not isinstance(status, dict):
        return TokenReviewResult(False, error="the TokenReview came back without a status")
    user = status.get("user")
    username = (user.get("username") if isinstance(user, dict) else None) or ""
    return TokenReviewResult(status.get("authenticated") is True, str(username), str(status.get("error") or ""))


def _model_reviewer(client: AsyncClient, audiences: list[str] | None) -> TokenReviewer:
    """The same review through lightkube's TokenReview model."""

    async def review(token: str) -> TokenReviewResult:
        request = TokenReview(spec=TokenReviewSpec(token=token, audiences=audiences))
        try:
            answer = await client.create(request)
        except ApiError as e:
            raise TokenReviewUnavailable(
                f"the cluster API refused the TokenReview ({e.status.code}: {e.status.message})") from None
        except Exception as e:  # any transport failure: the API gave no answer
            raise TokenReviewUnavailable(
                f"the cluster API could not be reached ({type(e).__name__}: {e})") from None
        status = answer.status
        if status is None:
            return TokenReviewResult(False, error="the TokenReview came back without a status")
        username = (status.user.username if status.user else None) or ""
        return TokenReviewResult(bool(status.authenticated), username, status.error or "")

    return review


class ReviewCache:
    """Successful token reviews, remembered for `ttl` seconds of `clock`, at most `max_entries` of them.

    `get` answers a token reviewed successfully less than `ttl` ago, else
    None; `put` remembers a result only if it authenticated the token (a
    refused token is asked about again every time). Entries are keyed by the
    token's SHA-256. When full, the oldest entry makes room: every entry lives
    equally long, so the oldest is the next to expire. `clock` is monotonic
    seconds (`time.monotonic` in the service; tests pass a fake).
    """

    def __init__(self, *, clock: Callable[[], float], ttl: float = REVIEW_CACHE_TTL,
                 max_entries: int = REVIEW_CACHE_SIZE) -> None:
        if ttl <= 0 or max_entries <= 0:
            raise ValueError(f"a review cache needs a positive ttl and size, got {ttl} s and {max_entries}")
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[bytes, tuple[float, TokenReviewResult]] = {}  # oldest first

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<ReviewCache {len(self._entries)}/{self.max_entries} entries, ttl {self.ttl:g} s>"

    def get(self, token: str) -> TokenReviewResult | None:
        key = _key(token)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, token: str, result: TokenReviewResult) -> None:
        if not result.authenticated:
            return
        now = self._clock()
        entries = self._entries
        key = _key(token)
        entries.pop(key, None)  # a refreshed entry moves to the young end
        while entries:
            oldest = next(iter(entries))
            if entries[oldest][0] > now and len(entries) < self.max_entries:
                break
            del entries[oldest]
        entries[key] = (now + self.ttl, result)


def _key(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()

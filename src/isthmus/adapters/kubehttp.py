"""lightkube clients whose HTTP goes through aiohttp: `client(config)`.

lightkube speaks httpx, and httpx's own transport (httpcore on anyio) costs
about 1.5 ms of CPU per request on this project's machines — most of the
service mirror's CPU when it writes thousands of mirrors, and of the
identity service's when it reviews a token per certificate. httpx lets a
client bring its own transport; `AiohttpTransport` is that seam filled with
aiohttp (already the project's HTTP library for its servers), whose
connection pool and parser cost a fraction of it. Everything above the
transport — lightkube's requests and models, httpx's auth flows (bearer
tokens, token files re-read on 401, exec plugins), redirects, content
decoding — stays as it is.

What the transport promises httpx: the request's method, URL, headers and
body are sent as they are (aiohttp adds nothing but what a request needs:
`Host` and `Content-Length` come from httpx); the response body is streamed
undecoded (httpx decodes `Content-Encoding`); timeouts follow the request's
`timeout` extension (`connect`, and `read` per read, `None` for watches);
aiohttp's failures become httpx's (`ConnectError`, `ConnectTimeout`,
`ReadTimeout`, `ReadError`, `RemoteProtocolError`), so callers that handle
httpx errors handle these. TLS uses the context lightkube builds from the
kubeconfig (cluster CA, client certificate).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import weakref
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import httpx2 as httpx
import orjson
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.config.client_adapter import user_auth, verify_cluster
from lightkube.config.kubeconfig import SingleConfig
from lightkube.models.meta_v1 import Status

__all__ = ["AiohttpTransport", "BadAnswer", "JsonApi", "client"]

POOL_SIZE = 64  # connections per API server, as many requests in flight at once


def _error(e: BaseException, request: httpx.Request) -> httpx.TransportError:
    message = str(e) or type(e).__name__
    if isinstance(e, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(e, TimeoutError):  # aiohttp's ServerTimeoutError (a read) is one
        return httpx.ReadTimeout(message, request=request)
    if isinstance(e, aiohttp.ClientConnectorError | aiohttp.ClientSSLError):
        return httpx.ConnectError(message, request=request)
    if isinstance(e, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(message, request=request)
    return httpx.ReadError(message, request=request)


class _Body(httpx.AsyncByteStream):
    """A response body as it arrives; closing it early closes its connection."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as e:
            raise _error(e, self._request) from e

    async def aclose(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # the connection goes back to the pool
        else:
            self._response.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(self, ssl_context: ssl.SSLContext | None, *, pool_size: int = POOL_SIZE) -> None:
        self._ssl = ssl_context
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session (made on first use, in the running loop)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else False,
                                             limit=self._pool_size, enable_cleanup_closed=True)
            # Undecoded bodies (httpx decodes them); no proxy variables (lightkube clients here
            # reach their API directly, as trust_env=False says).
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False, trust_env=False,
                                                  skip_auto_headers=("User-Agent", "Content-Type"))
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout") or {}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeouts.get("connect"),
                                        sock_read=timeouts.get("read"))
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        body = await request.aread()
        try:
            response = await self.session().request(
                request.method, str(request.url), headers=headers, data=body or None, timeout=timeout,
                allow_redirects=False, compress=None)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise _error(e, request) from e
        return httpx.Response(response.status, headers=[(k.decode("latin-1"), v.decode("latin-1"))
                                                       for k, v in response.raw_headers],
                              stream=_Body(response, request), request=request,
                              extensions={"http_version": b"HTTP/1.1"})

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
            await asyncio.sleep(0)  # let the connector close its transports


def client(config: KubeConfig | SingleConfig, *, context: str | None = None, **options: Any) -> AsyncClient:
    """A lightkube `AsyncClient` for `config` (a context of it) over `AiohttpTransport`.

    Proxy variables are ignored (`trust_env=False`), as for every client of the project's own APIs.
    """
    single = config.get(context_name=context) if isinstance(config, KubeConfig) else config
    if single is None:
        raise ValueError(f"the kubeconfig has no context {context or '(current)'}")
    assert single.user is not None, "a kubeconfig context names a user"
    ctx = (verify_cluster(single.cluster, single.user, single.abs_file, trust_env=False)
           if single.cluster.server.startswith("https:") else None)
    transport = AiohttpTransport(ctx)
    made = AsyncClient(config=single, trust_env=False, transport=transport, **options)
    _DIRECT[made] = (transport, single)
    return made


# The clients `client` made, with their transport and config: `JsonApi` sends through the
# transport's aiohttp session directly.
_DIRECT: weakref.WeakKeyDictionary[AsyncClient, tuple[AiohttpTransport, SingleConfig]] = (
    weakref.WeakKeyDictionary())


def _http_client_of(client: AsyncClient) -> httpx.AsyncClient | None:
    """The httpx client under a lightkube client (its base URL, auth, TLS and pool), if it has the expected shape."""
    http = getattr(getattr(client, "_client", None), "_client", None)
    if http is None or not callable(getattr(http, "request", None)) or not hasattr(http, "base_url"):
        return None
    return http


class BadAnswer(ValueError):
    """The API answered with something that is not JSON."""


class JsonApi:
    """Plain JSON requests to the API server of a lightkube client.

    For the hot paths that write thousands of objects (the service mirror) or
    review a token per request (the identity service): lightkube's request
    preparation and model encoding and decoding, and httpx's request, auth and
    response layers, cost more CPU than the request itself, and these callers
    have the JSON already. For a client made by `client`, requests go straight
    to its transport's aiohttp session (same pool, same TLS context), with
    the `Authorization` header its kubeconfig user's httpx auth produces (kept,
    and produced again after a 401: a token file is then read again); for any
    other lightkube client, through its httpx client. Paths are relative to
    the API server (`api/v1/namespaces/ns/services`).

    `raw` answers (status, reason, body); `request` the decoded JSON, raising
    lightkube's `ApiError` (its `status` read from the answer) for an error
    answer and `BadAnswer` for one that is not JSON. Transport failures are
    httpx's errors (`ConnectError`, `ReadTimeout`, ...), as lightkube's own
    calls raise.
    """

    HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}

    def __init__(self, client: AsyncClient, *, timeout: float = 10.0) -> None:
        direct = _DIRECT.get(client)
        http = _http_client_of(client)
        if direct is None and http is None:
            raise TypeError("the lightkube client has no httpx client underneath")
        self._http = http
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._transport: AiohttpTransport | None = None
        if direct is not None:
            self._transport, single = direct
            self._base = single.cluster.server.rstrip("/") + "/"
            self._auth = user_auth(single.user)
            self._auth_headers: dict[str, str] | None = None
        elif http is not None:
            self._base = str(http.base_url).rstrip("/") + "/"

    async def _authorization(self, refused: bool = False) -> dict[str, str]:
        """The headers the user's auth adds (after a 401 with `refused`: produced again)."""
        if self._auth_headers is not None and not refused:
            return self._auth_headers
        headers: dict[str, str] = {}
        if self._auth is not None:
            request = httpx.Request("GET", self._base)
            flow = self._auth.async_auth_flow(request)
            request = await flow.__anext__()
            if refused:  # tell the flow: a token file is read again, an exec plugin run again
                with contextlib.suppress(StopAsyncIteration):
                    request = await flow.asend(httpx.Response(401, request=request))
            await flow.aclose()
            headers = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
        self._auth_headers = headers
        return headers

    async def raw(self, method: str, path: str, body: bytes | None = None) -> tuple[int, str, bytes]:
        if self._transport is None:
            assert self._http is not None
            response = await self._http.request(method, self._base + path, headers=self.HEADERS, content=body)
            return response.status_code, response.reason_phrase, response.content
        url = self._base + path
        refused = False
        while True:
            headers = {**self.HEADERS, **await self._authorization(refused)}
            try:
                async with self._transport.session().request(method, url, headers=headers, data=body,
                                                             timeout=self._timeout, allow_redirects=False) as r:
                    status, reason, content = r.status, r.reason or "", await r.read()
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                raise _error(e, httpx.Request(method, url)) from e
            if status != 401 or refused or self._auth is None:
                return status, reason, content
            refused = True

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        status, reason, content = await self.raw(method, path, orjson.dumps(body) if body is not None else None)
        try:
            answer = orjson.loads(content)
        except orjson.JSONDecodeError:
            answer = None
        if status >= 400:
            raise _api_error(status, reason, answer, content)
        if answer is None:
            raise BadAnswer(f"the API answered {method} {path} with something that is not JSON (HTTP {status})")
        return answer


def _api_error(code: int, reason: str, answer: Any, content: bytes) -> ApiError:
    if isinstance(answer, dict) and answer.get("kind") == "Status":
        return ApiError(status=cast(Status, Status.from_dict(answer)))
    return ApiError(status=Status(code=code, message=f"{reason}: {content[:200].decode('utf-8', 'replace')}"))

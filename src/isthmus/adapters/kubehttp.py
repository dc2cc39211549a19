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
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx2 as httpx
import orjson
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.config.client_adapter import verify_cluster
from lightkube.config.kubeconfig import SingleConfig
from lightkube.models.meta_v1 import Status

__all__ = ["AiohttpTransport", "JsonApi", "client", "http_client_of"]

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

    def _session_now(self) -> aiohttp.ClientSession:
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
            response = await self._session_now().request(
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
    return AsyncClient(config=single, trust_env=False, transport=AiohttpTransport(ctx), **options)


def http_client_of(client: AsyncClient) -> httpx.AsyncClient | None:
    """The httpx client under a lightkube client (its base URL, auth, TLS and pool), if it has the expected shape."""
    http = getattr(getattr(client, "_client", None), "_client", None)
    if http is None or not callable(getattr(http, "request", None)) or not hasattr(http, "base_url"):
        return None
    return http


class JsonApi:
    """Plain JSON requests through a lightkube client's own HTTP client.

    For the hot paths that write thousands of objects (the service mirror) or
    review a token per request (the identity service): lightkube's request
    preparation and model encoding and decoding cost about as much CPU as the
    request itself, and these callers have the JSON already. Paths are relative
    to the API server (`api/v1/namespaces/ns/services`); an error answer raises
    lightkube's `ApiError` (its `status` read from the answer), a transport
    failure httpx's errors, as lightkube's own calls do.
    """

    HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}

    def __init__(self, client: AsyncClient) -> None:
        http = http_client_of(client)
        if http is None:
            raise TypeError("the lightkube client has no httpx client underneath")
        self._http = http
        self._base = http.base_url

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        response = await self._http.request(method, self._base.join(path), headers=self.HEADERS,
                                            content=orjson.dumps(body) if body is not None else None)
        if response.status_code >= 400:
            raise _api_error(response)
        return orjson.loads(response.content)


def _api_error(response: httpx.Response) -> ApiError:
    try:
        answer = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        answer = None
    if isinstance(answer, dict) and answer.get("kind") == "Status":
        return ApiError(request=response.request, response=response)
    return ApiError(request=response.request, status=Status(
        code=response.status_code, message=f"{response.reason_phrase}: {response.text[:200]}"))

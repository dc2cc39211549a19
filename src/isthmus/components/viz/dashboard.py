"""The dashboard server of `isthmus viz dashboard`: the page, the clusters it can show, their viz APIs.

It runs in the user's process, bound to a loopback address only, and serves:

- `/` and `/static/...`: the page (`static/`, shipped with the package; the
  page loads nothing from anywhere else, which its Content-Security-Policy
  enforces);
- `GET /api/clusters`: `{"current": "west", "clusters": [{"name", "local",
  "context", "error"}]}` — this cluster (named after its kubeconfig context)
  and the target cluster of every Link in `isthmus-multicluster`; a linked
  cluster is reached through the kubeconfig context of the same name, and
  `error` says why one cannot be (no such context, say);
- `GET /api/clusters/<name>/<viz API path>?...`: proxied to that cluster's
  viz API (`/api/...` and `/ready`), found at the cluster IP of Service
  `isthmus-viz/isthmus-viz` port 8085 (`api_urls` overrides it per cluster).
  `/api/tap` is streamed as it comes. A name that is neither this cluster
  nor linked is a 404 naming the known clusters; a cluster that cannot be
  reached is a 502/503 saying why and what to do. Every refusal is
  `{"error": "..."}`.

Requests whose Host is not a loopback address or `localhost` are refused
(403), so a web page elsewhere cannot reach the dashboard through DNS
rebinding. Which clusters exist and where their viz APIs are is read
through `KubeReader` (lightkube in `LightkubeReader`; a fake in tests) and
kept for `ttl` seconds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.core.exceptions import ConfigError
from lightkube.resources.core_v1 import Service
from yarl import URL

from isthmus.adapters import kubehttp
from isthmus.components.mirror.informer import Link
from isthmus.components.webapp import json_response
from isthmus.core import mirror as mirror_core

__all__ = [
    "STATIC_DIR",
    "VIZ_NAMESPACE",
    "VIZ_PORT",
    "VIZ_SERVICE",
    "ClusterEntry",
    "ClusterUnavailable",
    "Clusters",
    "DashboardError",
    "KubeReader",
    "LightkubeReader",
    "UnknownCluster",
    "make_app",
]

VIZ_NAMESPACE = "isthmus-viz"
VIZ_SERVICE = "isthmus-viz"
VIZ_PORT = 8085
LINK_NAMESPACE = mirror_core.DEFAULT_NAMESPACE
STATIC_DIR = Path(__file__).parent / "static"
# What the page may load: only its own origin (no CDN, no other host), no inline script.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


class DashboardError(Exception):
    """A cluster cannot be shown; `status` is the HTTP status the dashboard answers with."""

    status = 503


class UnknownCluster(DashboardError):
    status = 404


class ClusterUnavailable(DashboardError):
    status = 503


class KubeReader(Protocol):
    """What the dashboard reads of the kubeconfig and the clusters' APIs."""

    def contexts(self) -> set[str]:
        """The context names of the kubeconfig (read afresh: contexts may be added while serving)."""
        ...

    async def link_targets(self, context: str) -> list[str]:
        """`spec.targetClusterName` of every Link in `isthmus-multicluster` on `context`."""
        ...

    async def cluster_ip(self, context: str, namespace: str, name: str) -> str | None:
        """The cluster IP of a Service on `context`; None when the Service does not exist."""
        ...

    async def close(self) -> None:
        ...


@dataclass(frozen=True)
class ClusterEntry:
    name: str
    local: bool
    context: str | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "local": self.local, "context": self.context, "error": self.error}


def _viz_install_hint(context: str) -> str:
    return f"`isthmus --context={context} viz install | kubectl --context={context} apply -f -`"


class Clusters:
    """This cluster and the clusters it links to, and where each one's viz API is."""

    def __init__(self, reader: KubeReader, context: str, *, api_urls: Mapping[str, str] | None = None,
                 ttl: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.reader = reader
        self.context = context
        self.api_urls = dict(api_urls or {})
        self._ttl, self._clock = ttl, clock
        self._cache: dict[tuple[str, ...], tuple[float, Any]] = {}
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"<Clusters context={self.context!r} overrides={sorted(self.api_urls)}>"

    async def _cached(self, key: tuple[str, ...], fetch: Callable[[], Awaitable[Any]]) -> Any:
        async with self._locks.setdefault(key, asyncio.Lock()):
            hit = self._cache.get(key)
            if hit is not None and hit[0] > self._clock():
                return hit[1]
            value = await fetch()  # failures are not kept: the next request asks again
            self._cache[key] = (self._clock() + self._ttl, value)
            return value

    async def _linked(self) -> list[str]:
        async def fetch() -> list[str]:
            try:
                targets = await self.reader.link_targets(self.context)
            except DashboardError as e:
                raise ClusterUnavailable(f"cannot read the Links of cluster {self.context!r}: {e}") from None
            return sorted({t for t in targets if t and t != self.context})

        return list(await self._cached(("links",), fetch))

    async def entries(self) -> tuple[list[ClusterEntry], str | None]:
        """Every cluster the dashboard knows, this one first; and why the Links could not be read, if so."""
        local = ClusterEntry(self.context, True, self.context)
        try:
            linked = await self._linked()
        except DashboardError as e:
            return [local], str(e)
        contexts = self.reader.contexts()
        out = [local]
        for name in linked:
            if name in self.api_urls or name in contexts:
                out.append(ClusterEntry(name, False, name if name in contexts else None))
            else:
                out.append(ClusterEntry(name, False, None, self._no_context(name)))
        return out, None

    def _no_context(self, name: str) -> str:
        return (f"cluster {name!r} is linked to {self.context!r} but the kubeconfig has no context {name!r}: "
                f"add one to see its viz API here (the context of `isthmus cluster create {name}` is "
                f"written to the kubeconfig)")

    async def api_url(self, name: str) -> str:
        """The base URL of cluster `name`'s viz API; UnknownCluster, ClusterUnavailable otherwise."""
        if name != self.context:
            try:
                linked = await self._linked()
            except DashboardError as e:
                raise ClusterUnavailable(f"cannot tell whether cluster {name!r} is linked: {e}") from None
            if name not in linked:
                known = ", ".join([self.context, *linked])
                raise UnknownCluster(f"cluster {name!r} is neither this cluster nor linked to it; "
                                     f"known clusters: {known}")
        if name in self.api_urls:
            return self.api_urls[name].rstrip("/")
        if name not in self.reader.contexts():
            raise ClusterUnavailable(self._no_context(name))

        async def fetch() -> str:
            ip = await self.reader.cluster_ip(name, VIZ_NAMESPACE, VIZ_SERVICE)
            if ip is None:
                raise ClusterUnavailable(f"cluster {name!r} has no Service {VIZ_NAMESPACE}/{VIZ_SERVICE}: "
                                         f"install viz there: {_viz_install_hint(name)}")
            if not ip or ip == "None":
                raise ClusterUnavailable(f"Service {VIZ_NAMESPACE}/{VIZ_SERVICE} of cluster {name!r} has "
                                         f"no cluster IP")
            host = f"[{ip}]" if ":" in ip else ip
            return f"http://{host}:{VIZ_PORT}"

        return str(await self._cached(("url", name), fetch))


def _transport_failure(e: Exception) -> bool:
    return isinstance(e, OSError | ssl.SSLError) or type(e).__module__.startswith(("httpx", "httpcore"))


class LightkubeReader:
    """`KubeReader` over a kubeconfig file, one lightkube client per context (made when first needed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._config: KubeConfig | None = None
        self._clients: dict[str, AsyncClient] = {}
        self._retired: list[AsyncClient] = []
        self._load()

    def __repr__(self) -> str:
        return f"<LightkubeReader {self.path} clients={sorted(self._clients)}>"

    def _load(self) -> KubeConfig:
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            raise ClusterUnavailable(f"the kubeconfig {self.path} does not exist") from None
        if self._config is None or mtime != self._mtime:
            try:
                config = KubeConfig.from_file(self.path)
            except (ConfigError, OSError, ValueError) as e:
                raise ClusterUnavailable(f"cannot read the kubeconfig {self.path}: {e}") from None
            self._config, self._mtime = config, mtime
            self._retired.extend(self._clients.values())  # contexts may have changed; closed at close()
            self._clients = {}
        return self._config

    @property
    def current_context(self) -> str | None:
        return self._load().current_context

    def contexts(self) -> set[str]:
        try:
            return set(self._load().contexts)
        except DashboardError:
            return set()

    def _client(self, context: str) -> AsyncClient:
        client = self._clients.get(context)
        if client is None:
            config = self._load()
            if context not in config.contexts:
                raise ClusterUnavailable(f"the kubeconfig {self.path} has no context {context!r}")
            try:
                client = kubehttp.client(config, context=context)
            except (ConfigError, OSError, ValueError, AssertionError) as e:
                raise ClusterUnavailable(f"context {context!r} of {self.path} is not usable: {e}") from None
            self._clients[context] = client
        return client

    def _failure(self, context: str, what: str, e: Exception) -> DashboardError:
        if isinstance(e, ApiError):
            return ClusterUnavailable(f"the API of context {context!r} refuses to {what}: "
                                      f"{e.status.message} ({e.status.code})")
        return ClusterUnavailable(f"cannot reach the API of context {context!r} to {what}: "
                                  f"{type(e).__name__}: {e}; is the cluster running?")

    async def link_targets(self, context: str) -> list[str]:
        client = self._client(context)
        try:
            links = [link async for link in client.list(Link, namespace=LINK_NAMESPACE)]
        except ApiError as e:
            if e.status.code == 404:  # the Link CRD is not installed: no links
                return []
            raise self._failure(context, f"list Links in {LINK_NAMESPACE}", e) from None
        except Exception as e:
            if not _transport_failure(e):
                raise
            raise self._failure(context, f"list Links in {LINK_NAMESPACE}", e) from None
        out = []
        for link in links:
            spec = (link.to_dict() if hasattr(link, "to_dict") else dict(link)).get("spec") or {}
            target = spec.get("targetClusterName")
            if isinstance(target, str):
                out.append(target)
        return out

    async def cluster_ip(self, context: str, namespace: str, name: str) -> str | None:
        client = self._client(context)
        what = f"get Service {namespace}/{name}"
        try:
            svc = await client.get(Service, name, namespace=namespace)
        except ApiError as e:
            if e.status.code == 404:
                return None
            raise self._failure(context, what, e) from None
        except Exception as e:
            if not _transport_failure(e):
                raise
            raise self._failure(context, what, e) from None
        return (svc.spec.clusterIP if svc.spec else None) or ""

    async def close(self) -> None:
        for client in [*self._clients.values(), *self._retired]:
            await client.close()
        self._clients, self._retired = {}, []


# --- the web application -------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CLUSTERS: web.AppKey[Clusters] = web.AppKey("clusters", Clusters)
SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)
PROXIED = "/api/... and /ready"
STREAMED = {"api/tap"}


def _loopback_host(host: str) -> bool:
    """Whether a Host header names localhost or a loopback address (with or without a port)."""
    try:
        name = (URL(f"http://{host}").host or "") if host else ""
    except ValueError:
        return False
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse foreign Hosts, answer refusals as JSON, and set the page's security headers."""
    if not _loopback_host(request.host):
        return json_response({"error": f"the dashboard answers only to localhost and loopback addresses, "
                                       f"not to Host {request.host!r}"}, 403)
    try:
        response = await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        response = json_response({"error": f"{e.reason}: {request.method} {request.path} is not served; "
                                           f"the dashboard serves /, /static/..., /api/clusters and "
                                           f"/api/clusters/<cluster>/api/..."}, e.status)
    if not response.prepared:
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
    return response


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def _clusters(request: web.Request) -> web.StreamResponse:
    clusters = request.app[CLUSTERS]
    entries, error = await clusters.entries()
    return json_response({"current": clusters.context, "clusters": [e.to_json() for e in entries],
                          "error": error})


async def _proxy(request: web.Request) -> web.StreamResponse:
    name, path = request.match_info["cluster"], request.match_info["path"]
    if not (path.startswith("api/") or path == "ready"):
        return json_response({"error": f"/{path} is not a viz API path; the dashboard proxies {PROXIED}"}, 404)
    try:
        base = await request.app[CLUSTERS].api_url(name)
    except DashboardError as e:
        return json_response({"error": str(e)}, e.status)
    raw_query = request.rel_url.raw_query_string  # passed on as the browser encoded it
    url = URL(str(URL(base).with_path("/" + path)) + ("?" + raw_query if raw_query else ""), encoded=True)
    stream = path in STREAMED
    timeout = aiohttp.ClientTimeout(total=None if stream else 20, sock_connect=5)
    session = request.app[SESSION]
    try:
        async with session.get(url, timeout=timeout, headers={"Accept": request.headers.get("Accept", "*/*")}) as up:
            if not stream or up.status != 200:
                body = await up.read()
                return web.Response(body=body, status=up.status,
                                    content_type=up.content_type or "application/octet-stream")
            response = web.StreamResponse(status=200, headers={"Cache-Control": "no-store",
                                                               "Content-Security-Policy": CSP,
                                                               "X-Content-Type-Options": "nosniff"})
            response.content_type = up.content_type or "text/plain"
            await response.prepare(request)
            try:
                async for chunk in up.content.iter_any():
                    await response.write(chunk)
            except (TimeoutError, aiohttp.ClientError):
                pass  # the viz API ended the stream: end ours too
            except ConnectionResetError:
                return response  # the browser went away
            await response.write_eof()
            return response
    except TimeoutError:
        return json_response({"error": f"the viz API of cluster {name!r} at {base} did not answer "
                                       f"GET /{path} in time"}, 504)
    except aiohttp.ClientError as e:
        return json_response({"error": f"cannot reach the viz API of cluster {name!r} at {base}: {e}; "
                                       f"is viz installed and running there? ({_viz_install_hint(name)}, "
                                       f"then `isthmus --context={name} check`)"}, 502)


def make_app(clusters: Clusters) -> web.Application:
    """The dashboard's aiohttp application; closes `clusters.reader` and its HTTP session on cleanup.

    Serve it with `handler_cancellation=True` so a tap stream ends when its browser goes away.
    """
    app = web.Application(middlewares=[_guard])
    app[CLUSTERS] = clusters

    async def session_ctx(app: web.Application) -> Any:
        # trust_env=False: a user's HTTP_PROXY must not carry loopback traffic elsewhere
        app[SESSION] = aiohttp.ClientSession(trust_env=False, auto_decompress=True)
        yield
        await app[SESSION].close()
        await clusters.reader.close()

    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/", _index)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    app.router.add_get("/api/clusters", _clusters)
    app.router.add_get("/api/clusters/{cluster}/{path:.*}", _proxy)
    return app

"""The destination service: tells sidecar proxies where an authority's endpoints are, and keeps telling.

`GET /v1/resolve?authority=<authority>` answers 200 with a chunked
`application/x-ndjson` body: one JSON line with the authority's current
snapshot (`isthmus.core.destination`), then one more line each time that
snapshot changes, for as long as the client stays; a blank line every
`keepalive` seconds in between lets both sides notice a dead peer. A
malformed authority gets 400 `{"error": reason}`. Requests that arrive before
the informers have listed wait for them, so no answer is made from a partial
view of the cluster.

Services, Endpoints and Pods of every namespace are watched with
`adapters.kube.Informer`; every event goes into a `DestinationIndex`, the
`DependencyIndex` names the watched authorities it can affect, and only
those are computed again (events arriving within `coalesce` seconds are
taken together); a line is sent only when a snapshot differs from the last
one. Streams for the same authority (in any of its spellings) share one
computation and one encoded line.

Promises:

- TLS 1.3 with the service's own identity (`credentials()`, normally the
  identity client's current certificate); client certificates are optional,
  but one that is presented must chain to the trust anchors. New credentials
  are loaded as soon as `credentials()` returns them (checked every
  `credentials_interval` seconds, or at once through `reload_credentials`);
  connections already open keep theirs;
- the admin address (plain HTTP) serves `/ready` (200 once all three
  informers have listed, 503 before), `/live` and `/metrics` (Prometheus
  text: `destination_resolve_streams`, `destination_resolves_total`,
  `destination_updates_total`, `destination_watched_authorities`);
- `close()` ends every open stream cleanly, then stops the listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
from aiohttp import web
from lightkube import AsyncClient
from lightkube.resources.core_v1 import Endpoints, Pod, Service

from isthmus.adapters.kube import Informer
from isthmus.adapters.x509 import Credentials
from isthmus.components.identity.tlsconfig import server_context, use_credentials
from isthmus.components.webapp import WebService, json_errors, json_response
from isthmus.core.destination import (
    DEFAULT_CLUSTER_DOMAIN,
    RESOLVE_PATH,
    BadAuthority,
    DependencyIndex,
    DestinationIndex,
    Kind,
    Target,
    parse_authority,
)
from isthmus.core.identity import DEFAULT_TRUST_DOMAIN

log = logging.getLogger("isthmus.destination")

NDJSON = "application/x-ndjson"
KEEPALIVE = 15.0
COALESCE = 0.01
CREDENTIALS_INTERVAL = 5.0


class DestinationServiceError(Exception):
    """The service cannot run with what it was given (for example no TLS credentials yet)."""


class DestinationMetrics:
    """What the service counts, rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self.streams = 0
        self.resolves = 0
        self.updates = 0
        self.authorities = 0

    def render(self) -> str:
        rows = [
            ("destination_resolve_streams", "gauge", "Resolve streams open now.", self.streams),
            ("destination_resolves_total", "counter", "Resolve streams opened.", self.resolves),
            ("destination_updates_total", "counter",
             "Snapshot lines sent after the first of each stream.", self.updates),
            ("destination_watched_authorities", "gauge",
             "Distinct authorities with at least one open stream.", self.authorities),
        ]
        lines = []
        for name, kind, help_text, value in rows:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return f"<DestinationMetrics streams={self.streams} resolves={self.resolves} updates={self.updates}>"


@dataclass(eq=False)
class _Watch:
    """One authority's latest snapshot, shared by every stream that asks for it."""

    target: Target
    authority: str
    snapshot: dict[str, Any]
    line: bytes
    version: int = 0
    streams: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def publish(self, snapshot: dict[str, Any]) -> None:
        self.snapshot, self.line = snapshot, orjson.dumps(snapshot) + b"\n"
        self.version += 1
        self.wake()

    def wake(self) -> None:
        event, self.changed = self.changed, asyncio.Event()
        event.set()


class DestinationService(WebService):
    """The destination service of one cluster (see the module docstring)."""

    # Handlers are cancelled when their client goes away: that is how a stream learns of it.
    _runner_options: ClassVar[dict[str, Any]] = {"handler_cancellation": True, "shutdown_timeout": 5.0}

    def __init__(self, kube: AsyncClient, credentials: Callable[[], Credentials | None],
                 trust_anchors_pem: bytes, *, trust_domain: str = DEFAULT_TRUST_DOMAIN,
                 cluster_domain: str = DEFAULT_CLUSTER_DOMAIN, address: tuple[str, int],
                 admin_address: tuple[str, int] | None,
                 keepalive: float = KEEPALIVE, coalesce: float = COALESCE,
                 credentials_interval: float = CREDENTIALS_INTERVAL,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.trust_domain = trust_domain
        self.cluster_domain = cluster_domain
        self.metrics = DestinationMetrics()
        self.index = DestinationIndex(cluster_domain=cluster_domain, trust_domain=trust_domain)
        self._deps = DependencyIndex()
        self._credentials = credentials
        self._anchors = trust_anchors_pem
        self._address = address
        self._admin_address = admin_address
        self._keepalive = keepalive
        self._coalesce = coalesce
        self._credentials_interval = credentials_interval
        self._sleep = sleep
        self.informers = [
            Informer(kube, Service, handler=self._handler("Service")),
            Informer(kube, Endpoints, handler=self._handler("Endpoints")),
            Informer(kube, Pod, handler=self._handler("Pod")),
        ]
        self._watches: dict[str, _Watch] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._closing = False
        self._closed = asyncio.Event()
        self._ctx: ssl.SSLContext | None = None
        self._creds: Credentials | None = None
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.port = 0
        self.admin_port = 0

    # ------------------------------------------------------------------ lifecycle

    @property
    def ready(self) -> bool:
        """True once every informer has listed its objects."""
        return all(i.synced.is_set() for i in self.informers)

    async def start(self) -> None:
        """Start watching, listen on both addresses, and follow credential rotations."""
        creds = self._credentials()
        if creds is None:
            raise DestinationServiceError(
                "the destination service has no TLS credentials yet; start it once its identity "
                "client holds a certificate")
        self._creds = creds
        self._closing = False
        self._closed.clear()
        self._ctx = server_context(creds, self._anchors, require_client_cert=False)
        for informer in self.informers:
            self._tasks.append(asyncio.create_task(informer.run(), name=f"destination-{informer!r}"))
        self._tasks.append(asyncio.create_task(self._flush_loop(), name="destination-flush"))
        self._tasks.append(asyncio.create_task(self._credentials_loop(), name="destination-credentials"))
        app = web.Application(middlewares=[json_errors(f"GET {RESOLVE_PATH}?authority=HOST[:PORT]")])
        app.router.add_get(RESOLVE_PATH, self._resolve)
        try:
            self.port = await self._serve(app, self._address, self._ctx)
            if self._admin_address is not None:
                admin = web.Application()
                admin.router.add_get("/metrics", self._metrics)
                admin.router.add_get("/ready", self._ready)
                admin.router.add_get("/live", self._live)
                self.admin_port = await self._serve(admin, self._admin_address, None)
        except BaseException:
            await self.close()
            raise
        log.info("destination service for %s listening on %s", self.cluster_domain, self.url)

    async def close(self) -> None:
        """End every stream, stop listening and watching."""
        self._closing = True
        self._closed.set()
        for watch in list(self._watches.values()):
            watch.wake()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def reload_credentials(self) -> bool:
        """Load `credentials()` into the TLS context if they changed; whether they did."""
        creds = self._credentials()
        if creds is None or creds == self._creds or self._ctx is None:
            return False
        use_credentials(self._ctx, creds)
        self._creds = creds
        log.info("destination service certificate reloaded")
        return True

    def __repr__(self) -> str:
        state = f"serving {self.url}" if self._runners else "stopped"
        return (f"<DestinationService {self.cluster_domain} {state} ready={self.ready} "
                f"authorities={len(self._watches)} {self.metrics!r}>")

    # ------------------------------------------------------------------ watching

    def _handler(self, kind: Kind) -> Callable[[str, dict[str, Any]], None]:
        def on_event(event: str, obj: dict[str, Any]) -> None:
            changes = self.index.apply(kind, event, obj)
            if changes:
                affected = self._deps.affected(changes)
                if affected:
                    self._dirty |= affected
                    self._wake.set()
        return on_event

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            if self._coalesce > 0:
                await self._sleep(self._coalesce)  # take a burst of events together
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for authority in dirty:
                watch = self._watches.get(authority)
                if watch is None:
                    continue
                try:
                    self._refresh(watch)
                except Exception:  # one bad answer must not stop every other stream's updates
                    log.exception("could not compute the answer for %s", authority)

    def _refresh(self, watch: _Watch) -> None:
        answer = self.index.resolve(watch.target)
        self._deps.track(watch.authority, answer.dependencies)
        if answer.snapshot != watch.snapshot:
            watch.publish(answer.snapshot)

    async def _credentials_loop(self) -> None:
        while True:
            await self._sleep(self._credentials_interval)
            try:
                self.reload_credentials()
            except Exception as e:  # a bad certificate must not stop the service
                log.error("could not load the destination service's new credentials: %s", e)

    async def _synced(self) -> bool:
        """Wait until every informer has listed (True) or the service closes (False)."""
        if self.ready:
            return True
        synced: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*(i.synced.wait() for i in self.informers)))
        closed: asyncio.Future[Any] = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({synced, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            synced.cancel()
            closed.cancel()
            await asyncio.gather(synced, closed, return_exceptions=True)
        return self.ready and not self._closing

    def _subscribe(self, target: Target) -> _Watch:
        authority = self.index.canonical(target)
        watch = self._watches.get(authority)
        if watch is None:
            answer = self.index.resolve(target)
            watch = _Watch(target, authority, answer.snapshot, orjson.dumps(answer.snapshot) + b"\n")
            self._deps.track(authority, answer.dependencies)
            self._watches[authority] = watch
            self.metrics.authorities = len(self._watches)
        watch.streams += 1
        return watch

    def _unsubscribe(self, watch: _Watch) -> None:
        watch.streams -= 1
        if watch.streams == 0 and self._watches.get(watch.authority) is watch:
            del self._watches[watch.authority]
            self._deps.forget(watch.authority)
            self._dirty.discard(watch.authority)
            self.metrics.authorities = len(self._watches)

    # ------------------------------------------------------------------ handlers

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        authority = request.query.get("authority")
        if not authority:
            return json_response({"error": f"the authority query parameter is missing; "
                                   f"GET {RESOLVE_PATH}?authority=HOST[:PORT]"}, 400)
        target = parse_authority(authority, cluster_domain=self.cluster_domain)
        if isinstance(target, BadAuthority):
            return json_response({"error": target.message}, 400)
        if not await self._synced():
            return json_response({"error": "the destination service is shutting down; ask again"}, 503)
        watch = self._subscribe(target)
        self.metrics.resolves += 1
        self.metrics.streams += 1
        try:
            response = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-store"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            await self._stream(watch, response)
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
            return response
        finally:
            self.metrics.streams -= 1
            self._unsubscribe(watch)

    async def _stream(self, watch: _Watch, response: web.StreamResponse) -> None:
        sent = -1
        try:
            while not self._closing:
                if watch.version != sent:
                    if sent >= 0:
                        self.metrics.updates += 1
                    sent = watch.version
                    await response.write(watch.line)
                    continue
                changed = watch.changed
                try:
                    async with asyncio.timeout(self._keepalive):
                        await changed.wait()
                except TimeoutError:
                    await response.write(b"\n")
        except ConnectionError:
            return  # the client went away while a line was being written

    async def _ready(self, request: web.Request) -> web.Response:
        if self.ready:
            return web.Response(text="ok\n")
        waiting = [repr(i) for i in self.informers if not i.synced.is_set()]
        return web.Response(status=503, text=f"not ready: still listing {', '.join(waiting)}\n")

    async def _live(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.render(), content_type="text/plain",
                            headers={"X-Content-Type-Options": "nosniff"}, charset="utf-8")

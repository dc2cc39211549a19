"""The Kubernetes client side of isthmus's controllers: clients, informers and work queues.

Every controller talks to its cluster through lightkube, the same way on the
embedded cluster and on real Kubernetes. An `Informer` lists a resource, then
watches from the list's resourceVersion, keeps a cache of the objects (as
dicts) and calls back on every change; it re-lists after a 410 Gone or a lost
connection, reporting objects that vanished meanwhile as deletions. A
`WorkQueue` holds keys to reconcile, each at most once, with retry delays.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.core.resource import NamespacedResource

from isthmus.adapters import kubehttp

log = logging.getLogger("isthmus.kube")

Key = tuple[str, str]  # (namespace, name)
Handler = Callable[[str, dict[str, Any]], Awaitable[None] | None]


def client_from_certs(server: str, ca: Path, cert: Path, key: Path) -> AsyncClient:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = KubeConfig.from_dict({
        "apiVersion": "v1", "kind": "Config", "current-context": "self",
        "clusters": [{"name": "self", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
        "users": [{"name": "self", "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}],
        "contexts": [{"name": "self", "context": {"cluster": "self", "user": "self"}}],
    })
    return kubehttp.client(config)


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


class Informer:
    def __init__(self, client: AsyncClient, resource: Any, *, handler: Handler | None = None,
                 namespace: str | None = None, retry_delay: float = 1.0) -> None:
        self._client = client
        self._resource = resource
        self._namespace = namespace
        self._handler = handler
        self._retry = retry_delay
        self.cache: dict[Key, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        # lightkube lists a namespaced resource in every namespace with namespace="*".
        namespaced = isinstance(resource, type) and issubclass(resource, NamespacedResource)
        self._scope: dict[str, Any] = {"namespace": namespace or "*"} if namespaced else {}

    async def _emit(self, typ: str, obj: dict[str, Any]) -> None:
        if self._handler is not None:
            result = self._handler(typ, obj)
            if result is not None:
                await result

    async def _relist(self) -> str:
        listing = self._client.list(self._resource, **self._scope)
        fresh: dict[Key, dict[str, Any]] = {}
        async for item in listing:
            d = item.to_dict() if hasattr(item, "to_dict") else dict(item)
            fresh[key_of(d)] = d
        rv = listing.resourceVersion if fresh else await self._current_version()
        for k, old in list(self.cache.items()):
            if k not in fresh:
                del self.cache[k]
                await self._emit("DELETED", old)
        for k, obj in fresh.items():
            before = self.cache.get(k)
            self.cache[k] = obj
            if before is None:
                await self._emit("ADDED", obj)
            elif before.get("metadata", {}).get("resourceVersion") != obj.get("metadata", {}).get("resourceVersion"):
                await self._emit("MODIFIED", obj)
        self.synced.set()
        return rv

    async def _current_version(self) -> str:
        # An empty list still has a version: ask for one item.
        listing = self._client.list(self._resource, chunk_size=1, **self._scope)
        async for _ in listing:
            break
        try:
            return listing.resourceVersion
        except Exception:
            return ""

    async def run(self) -> None:
        while True:
            try:
                rv = await self._relist()
                async for typ, item in self._client.watch(self._resource, resource_version=rv or None,
                                                          **self._scope):
                    d = item.to_dict() if hasattr(item, "to_dict") else dict(item)
                    k = key_of(d)
                    if typ == "DELETED":
                        self.cache.pop(k, None)
                    else:
                        self.cache[k] = d
                    await self._emit(typ, d)
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                if e.status.code != 410:
                    log.warning("watch of %s failed: %s; listing again", self._resource.__name__, e.status.message)
            except Exception as e:
                log.warning("watch of %s interrupted (%s); listing again", self._resource.__name__, e)
            await asyncio.sleep(self._retry)

    def __repr__(self) -> str:
        return f"<Informer {getattr(self._resource, '__name__', self._resource)} objects={len(self.cache)}>"


class WorkQueue:
    """Keys waiting to be reconciled; a key queued twice is reconciled once.

    As client-go's work queue: a key being reconciled is never handed to a second
    worker; if it is added meanwhile, it is queued again once the first is `done`.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Hashable] = asyncio.Queue()
        self._queued: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._again: set[Hashable] = set()
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def add(self, key: Hashable) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._processing:
            self._again.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self._idle.clear()
            self._queue.put_nowait(key)

    def add_after(self, key: Hashable, delay: float) -> None:
        if key in self._queued or key in self._timers:
            return
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> Hashable:
        key = await self._queue.get()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: Hashable) -> None:
        self._processing.discard(key)
        if key in self._again:
            self._again.discard(key)
            self.add(key)
        elif not self._queued and not self._processing:
            self._idle.set()

    async def idle(self) -> None:
        """Wait until no key is queued or being reconciled (keys due later do not count)."""
        await self._idle.wait()

    def __len__(self) -> int:
        return len(self._queued)

    def __repr__(self) -> str:
        return f"<WorkQueue queued={len(self._queued)} delayed={len(self._timers)}>"


async def all_synced(informers: Iterable[Informer]) -> None:
    """Wait until every informer has listed once (as client-go's WaitForCacheSync): a controller
    acting on half a cache would, say, create the pods it has not seen yet."""
    await asyncio.gather(*(inf.synced.wait() for inf in informers))


async def run_worker(name: str, queue: WorkQueue, reconcile: Callable[[Hashable], Awaitable[float | None]],
                     *, workers: int = 1) -> None:
    """Reconcile keys forever with `workers` concurrent loops; a reconcile returns a delay to
    look again, or raises to be retried with back-off."""
    failures: dict[Hashable, int] = {}

    async def loop() -> None:
        while True:
            key = await queue.get()
            try:
                again = await reconcile(key)
                failures.pop(key, None)
                if again is not None:
                    queue.add_after(key, again)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                n = failures[key] = failures.get(key, 0) + 1
                delay = min(0.2 * 2 ** (n - 1), 30.0)
                msg = e.status.message if isinstance(e, ApiError) else repr(e)
                log.warning("%s: reconciling %s failed (%s); retrying in %.1fs", name, key, msg, delay)
                queue.add_after(key, delay)
            finally:
                queue.done(key)

    await asyncio.gather(*(loop() for _ in range(workers)))

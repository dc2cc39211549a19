"""Mirroring one remote cluster: informers, a work queue, and `isthmus.core.mirror.decide` applied.

`ClusterMirror` runs while its replica leads. It watches the remote cluster's
Services and Endpoints (`RemoteCluster`, with the Link's credentials), this
cluster's mirror Services and Endpoints (label
`mirror.isthmus.io/cluster-name=<cluster>`) and Namespaces, and probes the
gateway (`GatewayProber`). Every event queues the remote (namespace, name)
it concerns; a worker takes a key, asks `core.decide` what to write, and
writes it. Nothing is decided until both sides have been listed: then every
remote Service and every local mirror is queued once, which is the garbage
collection of mirrors left from before (a mirror whose remote Service is
gone or no longer exported is deleted), and local objects carrying the
cluster's label that name no remote Service are deleted. A change of
credentials starts a new `RemoteCluster`; until it has listed, the mirrors
stay as they are.

Objects this mirror has just written are remembered until the local watch
shows them (or for `expectation_ttl` seconds), so a reconcile running before
the watch catches up works from what was written rather than from a stale
cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, cast

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Endpoints, Namespace, Service

from isthmus.adapters import kubehttp
from isthmus.adapters.kube import Key, WorkQueue, key_of, run_worker
from isthmus.components.mirror.gateway import GatewayProber, Probe, Resolver, system_resolver
from isthmus.components.mirror.informer import WatchedInformer
from isthmus.components.mirror.metrics import MirrorMetrics
from isthmus.components.mirror.remote import CredentialsError, RemoteCluster, remote_config
from isthmus.core import mirror as core

log = logging.getLogger("isthmus.mirror")

__all__ = ["ClusterMirror"]

_MODELS: dict[str, Any] = {"Service": Service, "Endpoints": Endpoints, "Namespace": Namespace}
_PLURALS = {"Service": "services", "Endpoints": "endpoints", "Namespace": "namespaces"}


@dataclass(slots=True)
class _Written:
    obj: dict[str, Any] | None  # None: deleted
    resource_version: str | None
    at: float


class _Expectations:
    """What this mirror wrote and the local watch has not shown yet (module docstring)."""

    def __init__(self, ttl: float, clock: Callable[[], float]) -> None:
        self._ttl, self._clock = ttl, clock
        self._written: dict[tuple[str, str, str], _Written] = {}

    def view(self, kind: str, ns: str, name: str, cached: dict[str, Any] | None) -> dict[str, Any] | None:
        w = self._written.get((kind, ns, name))
        if w is None:
            return cached
        if self._clock() - w.at > self._ttl:
            del self._written[(kind, ns, name)]
            return cached
        return w.obj

    def wrote(self, kind: str, obj: dict[str, Any]) -> None:
        ns, name = key_of(obj)
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        self._written[(kind, ns, name)] = _Written(obj, rv, self._clock())

    def deleted(self, kind: str, ns: str, name: str) -> None:
        self._written[(kind, ns, name)] = _Written(None, None, self._clock())

    def seen(self, kind: str, typ: str, obj: dict[str, Any]) -> None:
        ns, name = key_of(obj)
        w = self._written.get((kind, ns, name))
        if w is None:
            return
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if (w.obj is None and typ == "DELETED") or (w.obj is not None and typ != "DELETED"
                                                    and rv == w.resource_version):
            del self._written[(kind, ns, name)]

    def __len__(self) -> int:
        return len(self._written)


class ClusterMirror:
    def __init__(self, local: AsyncClient, link: core.LinkSpec, *, metrics: MirrorMetrics,
                 on_status: Callable[[], None] = lambda: None, workers: int = 4,
                 resolver: Resolver = system_resolver, probe: Probe,
                 resolve_period: float = 30.0, check_period: float = 10.0,
                 rng: Callable[[], float] | None = None, clock: Callable[[], float] = time.monotonic,
                 expectation_ttl: float = 5.0) -> None:
        self._local = local
        self.link = link
        self.cluster = link.target_cluster_name
        self.metrics = metrics
        self._on_status = on_status
        self._workers = workers
        self._check_period = check_period
        self.queue = WorkQueue()
        selector = {core.CLUSTER_NAME_LABEL: self.cluster}
        self.local_services = WatchedInformer(local, Service, labels=selector,
                                              handler=lambda t, o: self._on_local("Service", t, o))
        self.local_endpoints = WatchedInformer(local, Endpoints, labels=selector,
                                               handler=lambda t, o: self._on_local("Endpoints", t, o))
        self.namespaces = WatchedInformer(local, Namespace, handler=self._on_namespace)
        prober_args: dict[str, Any] = {"rng": rng} if rng is not None else {}
        self.prober = GatewayProber(link, metrics=metrics, on_change=self._on_gateway, resolver=resolver,
                                    probe=probe, resolve_period=resolve_period, **prober_args)
        self.remote: RemoteCluster | None = None
        # The last remote session that listed, kept while a new one (new credentials) has not: its
        # caches still say what the remote had, so the gateway's liveness keeps reaching the mirrors.
        self._last_known: RemoteCluster | None = None
        self._remote_task: asyncio.Task[None] | None = None
        self._kubeconfig: bytes | None = None
        self.credentials_problem: tuple[str, str] | None = None
        self.statuses: dict[Key, core.ServiceStatus] = {}
        self.status_version = 0  # moves with every change of `statuses`
        self._expect = _Expectations(expectation_ttl, clock)
        self._json: kubehttp.JsonApi | None = None

    # ------------------------------------------------------------------ configuration

    def update_link(self, link: core.LinkSpec) -> None:
        """A changed Link (same target cluster): every service is looked at again."""
        if link == self.link:
            return
        self.link = link
        self.prober.update_link(link)
        self._queue_all()

    async def set_credentials(self, kubeconfig: bytes | None, secret: str) -> None:
        """Watch the remote with this kubeconfig (None: the Secret is missing); same bytes: nothing to do."""
        if kubeconfig == self._kubeconfig and (self.remote is not None or self.credentials_problem):
            return
        self._kubeconfig = kubeconfig
        await self._stop_remote()
        where = f"Secret {self.link.namespace}/{secret}"
        try:
            if kubeconfig is None:
                raise CredentialsError("CredentialsMissing", f"{where} (key kubeconfig) does not exist")
            config = remote_config(kubeconfig, secret=where)
        except CredentialsError as e:
            log.warning("%s: %s", self.cluster, e)
            self.credentials_problem = (e.reason, str(e))
            self.metrics.remote_reachable = 0.0
            self._on_status()
            return
        self.credentials_problem = None
        self.remote = RemoteCluster(kubehttp.client(config), server=config.cluster.server,
                                    on_service=self._on_remote_service, on_endpoints=self._on_remote_endpoints,
                                    on_state=self._remote_state, on_synced=self._remote_synced,
                                    check_period=self._check_period)
        self._remote_task = asyncio.create_task(self.remote.run(), name=f"mirror-remote-{self.cluster}")
        log.info("%s: watching the remote API at %s", self.cluster, config.cluster.server)
        self._on_status()

    async def _stop_remote(self) -> None:
        task, remote = self._remote_task, self.remote
        self._remote_task = self.remote = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if remote is not None:
            if remote.synced:
                self._last_known = remote
            with contextlib.suppress(Exception):
                await remote.close()

    # ------------------------------------------------------------------ events

    def _queue_all(self) -> None:
        if self.remote is not None:
            for key in list(self.remote.services.cache):
                self.queue.add(key)
        for informer in (self.local_services, self.local_endpoints):
            for obj in list(informer.cache.values()):
                owner = core.remote_key_of(obj, self.cluster)
                if owner is not None:
                    self.queue.add(owner)
        for key in list(self.statuses):
            self.queue.add(key)

    def _on_remote_service(self, typ: str, svc: dict[str, Any]) -> None:
        self.queue.add(key_of(svc))

    def _on_remote_endpoints(self, typ: str, ep: dict[str, Any]) -> None:
        key = key_of(ep)
        if key in self.statuses or (self.remote is not None
                                    and core.is_exported(self.link, self.remote.services.cache.get(key))):
            self.queue.add(key)

    def _on_local(self, kind: str, typ: str, obj: dict[str, Any]) -> None:
        self._expect.seen(kind, typ, obj)
        key = core.remote_key_of(obj, self.cluster)
        if key is not None:
            self.queue.add(key)

    def _on_namespace(self, typ: str, ns: dict[str, Any]) -> None:
        name = (ns.get("metadata") or {}).get("name")
        for key in [k for k in self.statuses if k[0] == name]:
            self.queue.add(key)

    def _on_gateway(self, gateway: core.Gateway) -> None:
        for key in list(self.statuses):
            self.queue.add(key)
        self._on_status()

    def _remote_state(self) -> None:
        self.metrics.remote_reachable = 1.0 if self.remote is not None and self.remote.state == "Reachable" else 0.0
        self._on_status()

    async def _remote_synced(self) -> None:
        remote = self.remote
        for informer in (self.local_services, self.local_endpoints, self.namespaces):
            await informer.synced.wait()
        if remote is not self.remote:
            return
        self._last_known = None
        log.info("%s: remote listed (%d services); reconciling every mirror", self.cluster,
                 len(remote.services.cache) if remote else 0)
        for kind, informer in (("Endpoints", self.local_endpoints), ("Service", self.local_services)):
            for action in core.stray_objects(cast(Any, kind), list(informer.cache.values()), self.cluster):
                log.info("%s: %s (a stray mirror object)", self.cluster, action)
                with contextlib.suppress(Exception):
                    await self._apply(action)
        self._queue_all()
        self._on_status()

    # ------------------------------------------------------------------ reconciling

    @property
    def _local_synced(self) -> bool:
        return (self.local_services.synced.is_set() and self.local_endpoints.synced.is_set()
                and self.namespaces.synced.is_set())

    @property
    def synced(self) -> bool:
        return self.remote is not None and self.remote.synced and self._local_synced

    def _local_view(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        informer = self.local_services if kind == "Service" else self.local_endpoints
        return self._expect.view(kind, ns, name, informer.cache.get((ns, name)))

    async def reconcile(self, key: Hashable) -> float | None:
        assert isinstance(key, tuple)
        remote, stale = self.remote, False
        if remote is None or not self.synced:
            # Until the current session has listed, only what the last one knew is used, and only to
            # keep the mirrors' endpoints true to the gateway: nothing is deleted on stale knowledge.
            remote, stale = self._last_known, True
            if remote is None or not self._local_synced:
                return None  # everything is queued again once both sides are listed
        ns, name = key
        mname = core.mirror_name(name, self.cluster)
        decision = core.decide(
            self.link, key, remote_service=remote.services.cache.get(key),
            remote_endpoints=remote.endpoints.cache.get(key),
            local_service=self._local_view("Service", ns, mname),
            local_endpoints=self._local_view("Endpoints", ns, mname),
            namespace_exists=("", ns) in self.namespaces.cache, gateway=self.prober.gateway)
        for action in decision.actions:
            if stale and (action.verb != "update" or action.kind != "Endpoints"):
                continue
            again = await self._apply(action)
            if again is not None:
                return again
        if not stale:
            self._set_status(key, decision.status)
        return None

    def _set_status(self, key: Key, status: core.ServiceStatus | None) -> None:
        old = self.statuses.get(key)
        if old == status:
            return
        if old is not None and old.problem is None:
            self.metrics.mirrored_services -= 1
        if status is None:
            del self.statuses[key]
        else:
            self.statuses[key] = status
            if status.problem is None:
                self.metrics.mirrored_services += 1
        self.status_version += 1
        self._on_status()

    async def _apply(self, action: core.Action) -> float | None:
        """Write one action; a delay to look again when the local cache is behind, None when done."""
        model = _MODELS[action.kind]
        self.metrics.writes[(action.verb, action.kind)] += 1
        log.debug("%s: %s", self.cluster, action)
        try:
            if action.verb == "delete":
                if action.kind == "Namespace":
                    await self._local.delete(model, action.name)
                else:
                    await self._local.delete(model, action.name, namespace=action.namespace)
                self._expect.deleted(action.kind, action.namespace, action.name)
                return None
            written = await self._write(action)
        except ApiError as e:
            code = e.status.code
            if action.verb == "delete" and code == 404:
                self._expect.deleted(action.kind, action.namespace, action.name)
                return None
            if action.kind == "Namespace" and code == 409:
                return None  # created meanwhile
            if code in (404, 409):
                # Created, changed or deleted meanwhile, or the namespace is not in the cache yet:
                # look again once the watch has caught up.
                log.debug("%s: %s: %s; looking again", self.cluster, action, e.status.message)
                return 0.2
            raise
        if action.kind != "Namespace":
            self._expect.wrote(action.kind, written)
        else:
            log.info("%s: created namespace %s", self.cluster, action.name)
        return None

    async def _write(self, action: core.Action) -> dict[str, Any]:
        """Create or replace `action.body` as plain JSON (kubehttp.JsonApi: thousands of mirrors are
        written at once, and lightkube's models would cost as much CPU as the requests); the object
        as written."""
        if self._json is None:
            self._json = kubehttp.JsonApi(self._local)
        plural = _PLURALS[action.kind]
        path = (f"api/v1/{plural}" if action.kind == "Namespace"
                else f"api/v1/namespaces/{action.namespace}/{plural}")
        if action.verb == "create":
            return dict(await self._json.request("POST", path, action.body))
        return dict(await self._json.request("PUT", f"{path}/{action.name}", action.body))

    async def remove_all(self) -> None:
        """Delete every local mirror of this cluster (the Link is gone)."""
        selector: dict[str, Any] = {core.CLUSTER_NAME_LABEL: self.cluster, core.MIRRORED_SERVICE_LABEL: "true"}
        for kind in ("Endpoints", "Service"):
            async for obj in self._local.list(_MODELS[kind], namespace="*", labels=selector):
                meta = obj.metadata
                if meta is None or not meta.name:
                    continue
                await self._apply(core.Action("delete", cast(Any, kind), meta.namespace or "", meta.name))
        self.statuses.clear()
        self.status_version += 1
        self.metrics.mirrored_services = 0
        log.info("%s: the Link is gone; its mirrors are deleted", self.cluster)

    # ------------------------------------------------------------------ running

    def health(self) -> core.LinkHealth:
        problem = self.credentials_problem
        if problem is not None:
            remote, message = problem
        elif self.remote is None:
            remote, message = "Unknown", ""
        else:
            remote, message = self.remote.state, self.remote.message
        return core.LinkHealth(remote=remote, remote_message=message, synced=self.synced,
                               gateway=self.prober.gateway, gateway_message=self.prober.message)

    async def run(self) -> None:
        try:
            await asyncio.gather(
                self.local_services.run(), self.local_endpoints.run(), self.namespaces.run(),
                self.prober.run(),
                run_worker(f"mirror-{self.cluster}", self.queue, self.reconcile, workers=self._workers))
        finally:
            await self._stop_remote()

    def __repr__(self) -> str:
        return (f"<ClusterMirror {self.cluster} {self.remote!r} mirrored={self.metrics.mirrored_services} "
                f"statuses={len(self.statuses)} {self.queue!r} {self.prober!r}>")

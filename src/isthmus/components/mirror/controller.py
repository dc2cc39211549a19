"""The service mirror of one Link: leader election, the Link and its credentials, status.

`ServiceMirror(local, link_name, namespace)` is what `isthmus service-mirror
--link NAME` runs. Replicas elect a leader on the Lease
`service-mirror-<link name>` in the Link's namespace (`LeaderElector`); the
leader watches its Link and the Secrets of the Link's namespace, and runs a
`ClusterMirror` for the Link's target cluster with the kubeconfig of the
credentials Secret (a changed Secret is picked up without relinking). A Link
that cannot be parsed keeps the mirrors as they are and says why in its
status; a deleted Link has its mirrors deleted. The Link's `status` is
rewritten (at most every `status_interval` seconds, and only when something
other than a transition time changed) from `core.link_status`.

The Lease is named after the Link rather than its target cluster so a
replica can take it before it has read the Link; `isthmus multicluster link`
names a Link after its target cluster, which makes both the same.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

from isthmus.components.mirror.cluster import ClusterMirror
from isthmus.components.mirror.gateway import Probe, Resolver, system_resolver
from isthmus.components.mirror.informer import Link, WatchedInformer
from isthmus.components.mirror.lease import LeaderElector, microtime
from isthmus.components.mirror.metrics import MirrorMetrics
from isthmus.core import mirror as core

log = logging.getLogger("isthmus.mirror")

__all__ = ["ServiceMirror"]


def default_identity() -> str:
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def rfc3339(microtime_text: str) -> str:
    return microtime_text.split(".")[0] + "Z"


class ServiceMirror:
    def __init__(self, local: AsyncClient, link_name: str, namespace: str = core.DEFAULT_NAMESPACE, *,
                 identity: str | None = None, leader_election: bool = True, workers: int = 4,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0,
                 status_interval: float = 1.0, resolve_period: float = 30.0, check_period: float = 10.0,
                 probe: Probe, resolver: Resolver = system_resolver,
                 rng: Callable[[], float] = random.random, wall: Callable[[], str] = microtime,
                 metrics: MirrorMetrics | None = None) -> None:
        self._local = local
        self.link_name, self.namespace = link_name, namespace
        self.identity = identity or default_identity()
        self.metrics = metrics or MirrorMetrics()
        self._cluster_args: dict[str, Any] = dict(workers=workers, resolver=resolver, probe=probe,
                                                  resolve_period=resolve_period, check_period=check_period,
                                                  rng=rng)
        self._status_interval = status_interval
        self._wall = wall
        self._leader_election = leader_election
        self.elector = LeaderElector(local, core.lease_name(link_name), namespace, self.identity,
                                     duration=lease_duration, renew_deadline=renew_deadline,
                                     retry_period=retry_period, wall=wall, on_change=self._leader_changed)
        self.cluster: ClusterMirror | None = None
        self._removing: ClusterMirror | None = None  # the mirrors of a deleted Link, still to delete
        self._cluster_task: asyncio.Task[None] | None = None
        self.link_error: str | None = None
        self.started = asyncio.Event()  # the local API has answered once
        self._changed = asyncio.Event()
        self._status_dirty = asyncio.Event()
        self.links: WatchedInformer | None = None
        self.secrets: WatchedInformer | None = None

    def _leader_changed(self, leader: bool) -> None:
        self.metrics.is_leader = 1.0 if leader else 0.0

    @property
    def is_leader(self) -> bool:
        return self.elector.is_leader or not self._leader_election

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Elect, then mirror while leading, until cancelled."""
        if self._leader_election:
            await self.elector.run(self._lead)
        else:
            await self._lead()

    async def _lead(self) -> None:
        self.started.set()  # electing needs the local API: it answered
        self.links = WatchedInformer(self._local, Link, namespace=self.namespace,
                                     fields={"metadata.name": self.link_name}, handler=self._on_config)
        self.secrets = WatchedInformer(self._local, Secret, namespace=self.namespace, handler=self._on_config)
        try:
            await asyncio.gather(self.links.run(), self.secrets.run(), self._supervise(), self._write_status())
        finally:
            if self.cluster is not None:
                await self._stop_cluster()
            self.links = self.secrets = None

    def _on_config(self, typ: str, obj: dict[str, Any]) -> None:
        self._changed.set()

    def _mark_status(self) -> None:
        self._status_dirty.set()

    async def _supervise(self) -> None:
        failures = 0
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self._sync_config()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the local API failing a write: look again after a while
                failures += 1
                delay = min(0.5 * 2 ** (failures - 1), 30.0)
                msg = e.status.message if isinstance(e, ApiError) else repr(e)
                log.warning("taking in the Link failed (%s); again in %.1fs", msg, delay)
                await asyncio.sleep(delay)
                self._changed.set()

    async def _sync_config(self) -> None:
        assert self.links is not None and self.secrets is not None
        if not self.links.synced.is_set() or not self.secrets.synced.is_set():
            return
        obj = self.links.cache.get((self.namespace, self.link_name))
        if obj is None:
            if self.cluster is not None:
                # Stopped first, so no worker re-creates what is being deleted.
                self._removing = await self._stop_cluster()
            if self._removing is not None:
                await self._removing.remove_all()  # raises: tried again (`_supervise`)
                self._removing = None
            missing = f"Link {self.namespace}/{self.link_name} does not exist"
            if self.link_error != missing:
                log.warning("%s; waiting for it", missing)
            self.link_error = missing
            return
        try:
            spec = core.LinkSpec.from_object(obj)
        except core.LinkError as e:
            if self.link_error != str(e):
                log.error("Link %s/%s: %s", self.namespace, self.link_name, e)
            self.link_error = str(e)
            self._mark_status()
            return
        self.link_error = None
        self._removing = None  # the Link is back: its mirrors are kept (and checked) by a new start
        if self.cluster is not None and self.cluster.cluster != spec.target_cluster_name:
            log.info("the Link now targets %s instead of %s", spec.target_cluster_name, self.cluster.cluster)
            await (await self._stop_cluster()).remove_all()
        if self.cluster is None:
            self.metrics.target_cluster = spec.target_cluster_name
            self.cluster = ClusterMirror(self._local, spec, metrics=self.metrics, on_status=self._mark_status,
                                         **self._cluster_args)
            self._cluster_task = asyncio.create_task(self.cluster.run(), name=f"mirror-{spec.target_cluster_name}")
        else:
            self.cluster.update_link(spec)
        secret = self.secrets.cache.get((self.namespace, spec.credentials_secret))
        await self.cluster.set_credentials(_kubeconfig_of(secret), spec.credentials_secret)
        self._mark_status()

    async def _stop_cluster(self) -> ClusterMirror:
        """Stop the cluster mirror (which must exist); returns it."""
        cluster, task = self.cluster, self._cluster_task
        assert cluster is not None
        self._cluster_task, self.cluster = None, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        return cluster

    # ------------------------------------------------------------------ status

    def _status_inputs(self) -> tuple[Any, ...]:
        """What the status is made of; while it stays equal, so does the status (times aside)."""
        if self.cluster is None:
            return (self.link_error, None, None, None)
        return (self.link_error, id(self.cluster), self.cluster.health(), self.cluster.status_version)

    def status(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        now = rfc3339(self._wall())
        if self.cluster is None:
            health = core.LinkHealth(link_error=self.link_error or "the Link has not been read yet")
            return core.link_status(previous, health, [], now)
        health = self.cluster.health()
        if self.link_error is not None:
            health = core.LinkHealth(link_error=self.link_error)
        return core.link_status(previous, health, self.cluster.statuses.values(), now)

    async def _write_status(self) -> None:
        written: tuple[Any, ...] | None = None
        written_uid = None
        while True:
            await self._status_dirty.wait()
            self._status_dirty.clear()
            assert self.links is not None
            started = time.monotonic()
            obj = self.links.cache.get((self.namespace, self.link_name))
            inputs = self._status_inputs()
            if obj is not None and (inputs != written or written_uid != obj["metadata"].get("uid")):
                previous = obj.get("status")
                status = self.status(previous)
                written, written_uid = inputs, obj["metadata"].get("uid")
                # Unchanged conditions keep their times: an unchanged status compares equal.
                if status != previous:
                    try:
                        await self._local.patch(Link.Status, self.link_name,
                                                [{"op": "add", "path": "/status", "value": status}],
                                                namespace=self.namespace, patch_type=PatchType.JSON)
                    except ApiError as e:
                        if e.status.code != 404:
                            log.warning("writing the Link's status failed: %s", e.status.message)
                            written = None
                            self._status_dirty.set()
                    except Exception as e:
                        log.warning("writing the Link's status failed: %s", e)
                        written = None
                        self._status_dirty.set()
            # A large status costs: never spend more than a fifth of the time writing it.
            await asyncio.sleep(max(self._status_interval, 4 * (time.monotonic() - started)))

    def __repr__(self) -> str:
        return (f"<ServiceMirror {self.namespace}/{self.link_name} "
                f"{'leader' if self.is_leader else 'standby'} {self.cluster!r}>")


def _kubeconfig_of(secret: dict[str, Any] | None) -> bytes | None:
    if secret is None:
        return None
    value = (secret.get("data") or {}).get("kubeconfig")
    if not isinstance(value, str):
        return b""  # present but without the key: CredentialsInvalid
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return b""

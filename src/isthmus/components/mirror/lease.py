"""Leader election on a coordination.k8s.io/v1 Lease, so one replica of a service mirror acts.

`LeaderElector.run(lead)` tries to take the Lease every `retry_period`; once
it holds it, it runs `lead()` and renews the Lease every `retry_period`. If
renewing fails for longer than `renew_deadline` (or someone else holds the
Lease), `lead()` is cancelled and the elector goes back to trying. When
`run` is cancelled it steps down, leaving the Lease without a holder so
another replica takes over at once. The decisions (when a Lease is
expired, what to write) are `isthmus.core.mirror`'s, client-go's rules: a
Lease is expired when its record has not changed for its
`leaseDurationSeconds`, measured on this process's monotonic clock, so clock
skew between replicas does not matter. Writes use optimistic concurrency
(`resourceVersion`): of two candidates only one wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

from lightkube import ApiError, AsyncClient
from lightkube.resources.coordination_v1 import Lease

from isthmus.core import mirror as core

log = logging.getLogger("isthmus.mirror.lease")

__all__ = ["LeaderElector", "microtime"]


def microtime() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(self, client: AsyncClient, name: str, namespace: str, identity: str, *,
                 duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], str] = microtime,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 on_change: Callable[[bool], None] = lambda _leader: None) -> None:
        self._client = client
        self.name, self.namespace, self.identity = name, namespace, identity
        self._duration, self._deadline, self._retry = duration, renew_deadline, retry_period
        self._clock, self._wall, self._sleep = clock, wall, sleep
        self._on_change = on_change
        self._observed: core.LeaseObservation | None = None
        self._resource_version: str | None = None
        self.is_leader = False
        self.holder = ""

    async def _try(self) -> bool:
        """One attempt to take or keep the Lease; True when this replica holds it afterwards."""
        try:
            lease = await self._client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as e:
            if e.status.code != 404:
                raise
            lease = None
        record = None
        if lease is not None:
            spec = lease.to_dict().get("spec") or {}
            record = core.LeaseRecord.from_spec(spec)
            self._resource_version = lease.metadata.resourceVersion if lease.metadata else None
        self._observed = core.observe(self._observed, record, self._clock())
        self.holder = record.holder if record is not None else ""
        action = core.lease_action(self._observed, self.identity, self._clock())
        if action == "wait":
            return False
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": core.lease_spec(record, self.identity, self._duration, self._wall())}
        try:
            if action == "create":
                written = await self._client.create(cast(Lease, Lease.from_dict(body)))
            else:
                body["metadata"]["resourceVersion"] = self._resource_version
                written = await self._client.replace(cast(Lease, Lease.from_dict(body)))
        except ApiError as e:
            if e.status.code == 409:  # another replica wrote first
                return False
            raise
        self._resource_version = written.metadata.resourceVersion if written.metadata else None
        self._observed = core.observe(self._observed, core.LeaseRecord.from_spec(body["spec"]), self._clock())
        self.holder = self.identity
        return True

    async def _attempt(self) -> bool:
        try:
            return await self._try()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            msg = e.status.message if isinstance(e, ApiError) else f"{type(e).__name__}: {e}"
            log.warning("lease %s/%s: %s", self.namespace, self.name, msg)
            return False

    def _set_leader(self, leader: bool) -> None:
        if leader != self.is_leader:
            self.is_leader = leader
            log.info("%s %s the lease %s/%s", self.identity, "holds" if leader else "no longer holds",
                     self.namespace, self.name)
            self._on_change(leader)

    async def run(self, lead: Callable[[], Awaitable[None]]) -> None:
        try:
            while True:
                while not await self._attempt():
                    await self._sleep(self._retry)
                self._set_leader(True)
                task = asyncio.ensure_future(lead())
                try:
                    await self._hold(task)
                finally:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                    self._set_leader(False)
                await self._sleep(self._retry)
        finally:
            if self.holder == self.identity:
                await asyncio.shield(self._release())

    async def _hold(self, task: asyncio.Future[None]) -> None:
        renewed = self._clock()
        while True:
            done, _ = await asyncio.wait({task}, timeout=self._retry)
            if done:
                if task.exception() is not None:
                    log.error("the leader's work failed: %r; stepping down", task.exception(),
                              exc_info=task.exception())
                await self._release()
                return
            if await self._attempt():
                renewed = self._clock()
            elif self.holder != self.identity or self._clock() - renewed > self._deadline:
                log.warning("lease %s/%s lost (held by %s)", self.namespace, self.name, self.holder or "nobody")
                return

    async def _release(self) -> None:
        """Leave the Lease without a holder (best effort)."""
        if self._observed is None or self._observed.record is None:
            return
        try:
            lease = await self._client.get(Lease, self.name, namespace=self.namespace)
            record = core.LeaseRecord.from_spec(lease.to_dict().get("spec") or {})
            if record.holder != self.identity:
                return
            body = lease.to_dict()
            body["spec"] = core.released_spec(record, self._wall())
            await self._client.replace(cast(Lease, Lease.from_dict(body)))
            self.holder = ""
        except Exception as e:  # the API may be gone at shutdown
            log.info("lease %s/%s not released: %s", self.namespace, self.name, e)

    def __repr__(self) -> str:
        return (f"<LeaderElector {self.namespace}/{self.name} {self.identity} "
                f"{'leader' if self.is_leader else 'candidate'} holder={self.holder or '-'}>")

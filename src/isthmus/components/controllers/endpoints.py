"""The Endpoints controller: every Service with a selector gets Endpoints listing its Pods.

Watches Services, Pods and Endpoints through the cluster API (lightkube) and
writes what `isthmus.core.endpoints` computes. Services without a selector
are left alone: their Endpoints belong to someone else (the multicluster
service mirror, for one), as in Kubernetes.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import Any, cast

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Endpoints, Pod, Service

from isthmus.adapters.kube import Informer, WorkQueue, all_synced, run_worker
from isthmus.core import endpoints as core

log = logging.getLogger("isthmus.controllers.endpoints")


class EndpointsController:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self.queue = WorkQueue()
        self.services = Informer(client, Service, handler=self._on_service)
        self.pods = Informer(client, Pod, handler=self._on_pod)
        self.endpoints = Informer(client, Endpoints, handler=self._on_endpoints)

    def informers(self) -> list[Informer]:
        return [self.services, self.pods, self.endpoints]

    def _on_service(self, typ: str, svc: dict[str, Any]) -> None:
        self.queue.add((svc["metadata"].get("namespace", ""), svc["metadata"]["name"]))

    def _on_endpoints(self, typ: str, ep: dict[str, Any]) -> None:
        # Only Endpoints of a known Service are this controller's business: Endpoints written
        # before their Service is seen (a selector-less Service's, a mirror's) are left alone,
        # and removed only when their Service is deleted, as Kubernetes does.
        key = (ep["metadata"].get("namespace", ""), ep["metadata"]["name"])
        if key in self.services.cache:
            self.queue.add(key)

    def _on_pod(self, typ: str, pod: dict[str, Any]) -> None:
        ns = pod["metadata"].get("namespace", "")
        labels = pod["metadata"].get("labels") or {}
        for (sns, sname), svc in list(self.services.cache.items()):
            if sns == ns and core.selects((svc.get("spec") or {}).get("selector"), labels):
                self.queue.add((sns, sname))

    async def run(self) -> None:
        await all_synced(self.informers())
        await run_worker("endpoints", self.queue, self.reconcile)

    async def reconcile(self, key: Hashable) -> float | None:
        assert isinstance(key, tuple)
        ns, name = key
        svc = self.services.cache.get((ns, name))
        existing = self.endpoints.cache.get((ns, name))
        if svc is None:
            if existing is not None and not existing.get("metadata", {}).get("labels", {}).get(
                    "mirror.isthmus.io/mirrored-service"):
                try:
                    await self._client.delete(Endpoints, name, namespace=ns)
                except ApiError as e:
                    if e.status.code != 404:
                        raise
            return None
        if not (svc.get("spec") or {}).get("selector"):
            return None
        pods = [p for (pns, _), p in self.pods.cache.items() if pns == ns]
        # Normalised through the client's model so it compares equal to what the watch shows.
        wanted = Endpoints.from_dict(core.endpoints_for(svc, pods)).to_dict()
        wanted.setdefault("subsets", [])
        if existing is None:
            try:
                await self._client.create(cast(Endpoints, Endpoints.from_dict(wanted)))
            except ApiError as e:
                if e.status.code != 409:
                    raise
                return 0.1  # created meanwhile: look again once the watch has it
        elif (existing.get("subsets") or []) != (wanted.get("subsets") or []) or \
                (existing["metadata"].get("labels") or {}) != (wanted["metadata"].get("labels") or {}):
            wanted["metadata"]["resourceVersion"] = existing["metadata"].get("resourceVersion")
            await self._client.replace(cast(Endpoints, Endpoints.from_dict(wanted)))
        return None

    def __repr__(self) -> str:
        return f"<EndpointsController {self.services!r} {self.pods!r} {self.queue!r}>"

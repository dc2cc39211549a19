"""The Deployment controller of the embedded cluster: keeps each Deployment's Pods and status true.

Watches Deployments and Pods through the cluster API (lightkube), and for each
Deployment that changed asks `isthmus.core.deployments.plan` what to do:
create Pods from the current template, delete surplus or outdated ones, write
the status `kubectl rollout status` reads. Pods it just created or deleted are
remembered until the watch shows them ("expectations"), so a stale cache never
makes it create or delete twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable, Hashable
from typing import Any, cast

from lightkube import ApiError, AsyncClient
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType

from isthmus.adapters.kube import Informer, Key, WorkQueue, all_synced, run_worker
from isthmus.core import deployments as core

log = logging.getLogger("isthmus.controllers.deployments")


def _owner_uid(pod: dict[str, Any]) -> str | None:
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "Deployment" and ref.get("controller"):
            return str(ref.get("uid"))
    return None


def _rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class DeploymentController:
    def __init__(self, client: AsyncClient, *, clock: Callable[[], dt.datetime]) -> None:
        self._client = client
        self._clock = clock
        self.queue = WorkQueue()
        self.deployments = Informer(client, Deployment, handler=self._on_deployment)
        self.pods = Informer(client, Pod, handler=self._on_pod)
        self._expect_created: dict[Key, dict[str, dict[str, Any]]] = {}
        self._expect_deleted: dict[Key, set[str]] = {}

    def _on_deployment(self, typ: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.queue.add((meta.get("namespace", ""), meta["name"]))

    def _on_pod(self, typ: str, pod: dict[str, Any]) -> None:
        uid = _owner_uid(pod)
        if uid is None:
            return
        ns = pod["metadata"].get("namespace", "")
        for (dns, dname), d in list(self.deployments.cache.items()):
            if dns == ns and d["metadata"].get("uid") == uid:
                self.queue.add((dns, dname))

    def informers(self) -> list[Informer]:
        return [self.deployments, self.pods]

    async def run(self) -> None:
        await all_synced(self.informers())
        await run_worker("deployments", self.queue, self.reconcile)

    def _owned_pods(self, key: Key, uid: str) -> list[dict[str, Any]]:
        ns = key[0]
        seen = {name: p for (pns, name), p in self.pods.cache.items() if pns == ns and _owner_uid(p) == uid}
        created = self._expect_created.get(key, {})
        for name in [n for n in created if n in seen]:
            del created[name]
        deleted = self._expect_deleted.get(key, set())
        deleted.intersection_update(seen)
        pods = [p for name, p in seen.items() if name not in deleted
                and not p["metadata"].get("deletionTimestamp")]
        pods.extend(created.values())
        return pods

    async def reconcile(self, key: Hashable) -> float | None:
        assert isinstance(key, tuple)
        ns, name = key
        d = self.deployments.cache.get((ns, name))
        if d is None:
            self._expect_created.pop((ns, name), None)
            self._expect_deleted.pop((ns, name), None)
            return None
        uid = d["metadata"]["uid"]
        pods = self._owned_pods((ns, name), uid)
        plan = core.plan(d, pods, now=_rfc3339(self._clock()))
        for _ in range(plan.create):
            pod = core.new_pod(d, plan.template_hash, secrets.token_hex(3)[:5])
            pod["metadata"]["creationTimestamp"] = _rfc3339(self._clock())
            await self._client.create(cast(Pod, Pod.from_dict(pod)))
            self._expect_created.setdefault((ns, name), {})[pod["metadata"]["name"]] = pod
        for pod_name in plan.delete:
            try:
                await self._client.delete(Pod, pod_name, namespace=ns)
            except ApiError as e:
                if e.status.code != 404:
                    raise
            self._expect_deleted.setdefault((ns, name), set()).add(pod_name)
            self._expect_created.get((ns, name), {}).pop(pod_name, None)
        current = d.get("status") or {}
        wanted = {k: (v if v != 0 else None) for k, v in plan.status.items()}
        if any(current.get(k) != (v if v is not None else None) for k, v in wanted.items()):
            try:
                await self._client.patch(Deployment.Status, name, {"status": wanted}, namespace=ns,
                                         patch_type=PatchType.MERGE)
            except ApiError as e:
                if e.status.code != 404:
                    raise
        return None

    def __repr__(self) -> str:
        return f"<DeploymentController {self.deployments!r} {self.pods!r} {self.queue!r}>"

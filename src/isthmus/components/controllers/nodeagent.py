"""The node agent of the embedded cluster: the scheduler and the kubelet of all its nodes in one.

Watches Pods through the cluster API (lightkube). A Pod without a node is
placed on the node that runs the fewest pods (spreading them). A Pod on a node
gets an IP from the cluster's pod range (kept across restarts: a pod that
already has one keeps it), a service-account token bound to it (TokenRequest)
written with the CA and namespace into its directory, and is handed to the
`PodRunner`, which runs its containers as processes; the status the runner
reports is written to `pods/status`. A deleted Pod's processes are stopped.
Unmeshed pods reach Services by name through the cluster's HTTP proxy
(`HTTP_PROXY`); a container's own `HTTP_PROXY` (the sidecar, once meshed) wins.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import Hashable
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.models.authentication_v1 import BoundObjectReference, TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Pod, Secret, ServiceAccount
from lightkube.types import PatchType

from isthmus.adapters.clusterdir import ClusterConfig
from isthmus.adapters.kube import Informer, Key, WorkQueue, run_worker
from isthmus.components.podrunner import PodRunner
from isthmus.core.network import API_PORT, HTTP_PROXY_PORT, Allocator, ClusterNetwork
from isthmus.core.podstatus import stopped_with_node

log = logging.getLogger("isthmus.nodeagent")

TOKEN_SECONDS = 48 * 3600


class NodeAgent:
    def __init__(self, client: AsyncClient, *, config: ClusterConfig, runner: PodRunner, ca_pem: bytes) -> None:
        self._client = client
        self._config = config
        self._net = ClusterNetwork(config.index)
        self._runner = runner
        self._ca_pem = ca_pem
        self.queue = WorkQueue()
        self.pods = Informer(client, Pod, handler=self._on_pod)
        self.configmaps = Informer(client, ConfigMap)
        self.secrets = Informer(client, Secret)
        self._ips = Allocator(*self._net.pod_range)
        self._ip_of: dict[Key, str] = {}
        self._started: dict[Key, str] = {}  # key -> pod uid running
        self._placed: dict[Key, str] = {}  # key -> node chosen, until the pod is gone
        self.nodes = [f"{config.name}-node-{i}" for i in range(1, config.nodes + 1)]

    def informers(self) -> list[Informer]:
        return [self.configmaps, self.secrets, self.pods]

    async def take_over(self, now: dt.datetime) -> int:
        """Say in the store that no pod of this cluster's nodes runs (its processes ended with the
        cluster), before the controllers read it; returns how many pods' statuses changed.

        Without it a restarted cluster would show the last ready pods and available
        Deployments of its previous run until each pod had been started again.
        """
        changed = 0
        async for pod in self._client.list(Pod, namespace="*"):
            if pod.spec is None or pod.spec.nodeName not in self.nodes or pod.metadata is None:
                continue
            status = stopped_with_node(pod.to_dict().get("status") or {}, now=now)
            if status is not None:
                await self.report(pod.metadata.namespace or "", pod.metadata.name or "", status)
                changed += 1
        return changed

    def _on_pod(self, typ: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        ip = (pod.get("status") or {}).get("podIP")
        key = (meta.get("namespace", ""), meta["name"])
        if typ != "DELETED" and ip and key not in self._ip_of:
            self._ips.mark(ip)
            self._ip_of[key] = ip
        self.queue.add(key)

    def namespace_of_ip(self, ip: str) -> str | None:
        for (ns, _), pod_ip in self._ip_of.items():
            if pod_ip == ip:
                return ns
        return None

    async def run(self) -> None:
        await self.pods.synced.wait()
        # Pods start independently of each other: several at once.
        await run_worker("nodeagent", self.queue, self.reconcile, workers=8)

    def _host_ip(self, node: str) -> str:
        try:
            return self._net.node_ip(self.nodes.index(node) + 1)
        except ValueError:
            return self._net.node_ip(1)

    def _pick_node(self, key: Key) -> str:
        """The node with the fewest pods, counting placements the watch has not shown yet."""
        counts = {n: 0 for n in self.nodes}
        for k, p in self.pods.cache.items():
            node = (p.get("spec") or {}).get("nodeName") or self._placed.get(k)
            if node in counts:
                counts[node] += 1
        node = min(self.nodes, key=lambda n: (counts[n], n))
        self._placed[key] = node
        return node

    async def reconcile(self, key: Hashable) -> float | None:
        assert isinstance(key, tuple)
        ns, name = key
        pod = self.pods.cache.get((ns, name))
        running_uid = self._started.get((ns, name))
        if pod is None or pod["metadata"].get("deletionTimestamp") or (
                running_uid and running_uid != pod["metadata"].get("uid")):
            if running_uid:
                await self._runner.stop(ns, name)
                self._started.pop((ns, name), None)
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                self._placed.pop((ns, name), None)
                ip = self._ip_of.pop((ns, name), None)
                if ip:
                    self._ips.release(ip)
                return None
        assert pod is not None
        spec = pod.get("spec") or {}
        node = spec.get("nodeName")
        if not node:
            node = self._pick_node((ns, name))
            await self._client.patch(Pod, name, {"spec": {"nodeName": node}}, namespace=ns,
                                     patch_type=PatchType.MERGE)
            return None  # the watch brings it back with its node
        if (ns, name) in self._started:
            return None
        ip = self._ip_of.get((ns, name)) or self._ips.allocate()
        self._ip_of[(ns, name)] = ip
        files, env = await self._identity(pod)
        self._started[(ns, name)] = pod["metadata"]["uid"]
        await self._runner.run(pod, pod_ip=ip, host_ip=self._host_ip(node), files=files, env=env,
                               lookup=self._lookup)
        return None

    def _lookup(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's data or a Secret's decoded data, for `valueFrom` and `envFrom` (None when missing)."""
        if kind == "ConfigMap":
            cm = self.configmaps.cache.get((namespace, name))
            return None if cm is None else dict(cm.get("data") or {})
        s = self.secrets.cache.get((namespace, name))
        if s is None:
            return None
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in (s.get("data") or {}).items()}

    async def _identity(self, pod: dict[str, Any]) -> tuple[dict[str, bytes], dict[str, str]]:
        """The pod's projected service-account files and the environment every container gets."""
        meta, spec = pod["metadata"], pod.get("spec") or {}
        ns = meta.get("namespace", "")
        sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        files: dict[str, bytes] = {"serviceaccount/ca.crt": self._ca_pem,
                                   "serviceaccount/namespace": ns.encode()}
        try:
            req = await self._client.create(
                ServiceAccount.Token(metadata=ObjectMeta(name=sa, namespace=ns), spec=TokenRequestSpec(
                    audiences=[], expirationSeconds=TOKEN_SECONDS,
                    boundObjectRef=BoundObjectReference(kind="Pod", apiVersion="v1", name=meta["name"],
                                                        uid=meta.get("uid")))),
                sa, namespace=ns)
            token = req.status.token if req.status is not None else None
            if token:
                files["serviceaccount/token"] = token.encode()
        except ApiError as e:
            log.warning("pod %s/%s: no token for service account %s: %s", ns, meta["name"], sa, e.status.message)
        proxy = f"http://{self._net.proxy_ip}:{HTTP_PROXY_PORT}"
        env = {
            "KUBERNETES_SERVICE_HOST": self._net.api_ip, "KUBERNETES_SERVICE_PORT": str(API_PORT),
            "HTTP_PROXY": proxy, "http_proxy": proxy,
            "NO_PROXY": f"localhost,127.0.0.1,{self._net.api_ip}", "no_proxy": f"localhost,127.0.0.1,{self._net.api_ip}",
        }
        return files, env

    async def report(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Called by the runner when a pod's status changes."""
        try:
            await self._client.patch(Pod.Status, name, {"status": status}, namespace=namespace,
                                     patch_type=PatchType.MERGE)
        except ApiError as e:
            if e.status.code != 404:
                log.warning("pod %s/%s: status not written: %s", namespace, name, e.status.message)

    def __repr__(self) -> str:
        return f"<NodeAgent nodes={len(self.nodes)} running={len(self._started)} {self.queue!r}>"

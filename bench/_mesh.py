"""A real isthmus control plane for benchmarks: an embedded cluster's API, identity and destination.

`start_mesh` creates an embedded cluster running its API server alone (a
temporary ISTHMUS_HOME, cluster numbers from 231), then runs the identity
service and the destination service in a thread of their own against that
API, and records what a meshed pod would be: a namespace, service accounts,
a Pod with a proxy container and an IP, a Service and its Endpoints. The
proxies started by a benchmark then get their certificates and their
endpoints exactly as in a cluster: CSR + service-account token checked by
TokenReview, and discovery streams.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from lightkube import AsyncClient, KubeConfig

from isthmus.adapters.x509 import Credentials, issue_leaf, new_issuer, new_root
from isthmus.components.destination import DestinationService
from isthmus.components.identity import IdentityService, lightkube_token_reviewer
from isthmus.core.identity import workload_identity

T = TypeVar("T")
ISTHMUS = str(Path(sys.executable).parent / "isthmus")
CONTROL_IP = "127.0.0.53"


def _now() -> datetime:
    return datetime.now(UTC)


class _Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class Mesh:
    env: dict[str, str]
    anchors_pem: bytes
    identity_addr: str
    destination_addr: str
    tokens: dict[str, Path]
    _stops: list[Any] = field(default_factory=list)

    def proxy_env(self, sa: str, pod_ip: str, *, forward_host: str) -> dict[str, str]:
        """The environment of `isthmus proxy` for a pod of service account `sa` at `pod_ip`."""
        return {
            "POD_IP": pod_ip,
            "ISTHMUS_PROXY_IDENTITY_LOCAL_NAME": workload_identity(sa, "bench"),
            "ISTHMUS_PROXY_IDENTITY_TRUST_ANCHORS": self.anchors_pem.decode(),
            "ISTHMUS_PROXY_IDENTITY_TOKEN_FILE": str(self.tokens[sa]),
            "ISTHMUS_PROXY_IDENTITY_SVC_ADDR": self.identity_addr,
            "ISTHMUS_PROXY_DESTINATION_SVC_ADDR": self.destination_addr,
            "ISTHMUS_PROXY_INBOUND_FORWARD_HOST": forward_host,
            "ISTHMUS_PROXY_POD_NAMESPACE": "bench",
            "ISTHMUS_PROXY_LOG": "warning",
        }

    def stop(self) -> None:
        for stop in reversed(self._stops):
            try:
                stop()
            except Exception as e:  # keep stopping the rest
                print(f"stopping the bench control plane: {e}", file=sys.stderr)
        self._stops.clear()


def _kubectl(env: dict[str, str], *args: str, input: str | None = None) -> str:
    return subprocess.run(["kubectl", "--context=bench", *args], env=env, input=input, text=True,
                          capture_output=True, check=True).stdout


def start_mesh(workdir: Path, *, server_ip: str, service_port: int) -> Mesh:
    """A control plane where Service backend.bench:`service_port` has one meshed endpoint,
    the pod of service account `server` at `server_ip`."""
    home = workdir / "home"
    env = dict(os.environ, ISTHMUS_HOME=str(home), ISTHMUS_API_ONLY="1",
               ISTHMUS_FIRST_CLUSTER_NUMBER="231", KUBECONFIG=str(home / "kubeconfig"))
    subprocess.run([ISTHMUS, "cluster", "create", "bench", "--region", "bench1", "--nodes", "1"],
                   env=env, check=True, capture_output=True)
    stops: list[Any] = [lambda: subprocess.run([ISTHMUS, "cluster", "delete", "bench"], env=env,
                                               capture_output=True)]
    mesh = Mesh(env, b"", "", "", {}, stops)
    try:
        _objects(env, server_ip, service_port)
        for sa in ("client", "server"):
            path = workdir / f"{sa}.token"
            path.write_text(_kubectl(env, "-n", "bench", "create", "token", sa, "--duration=24h").strip())
            path.chmod(0o600)
            mesh.tokens[sa] = path
        loop = _Loop()
        stops.append(loop.stop)
        root = new_root(now=_now())
        issuer = new_issuer(root, now=_now())
        mesh.anchors_pem = root.cert_pem

        async def start() -> tuple[AsyncClient, IdentityService, DestinationService]:
            kube = AsyncClient(config=KubeConfig.from_file(home / "kubeconfig").get(
                context_name="bench"), trust_env=False)
            identity = IdentityService(issuer=issuer, trust_anchors_pem=root.cert_pem,
                                       trust_domain="cluster.local",
                                       token_reviewer=lightkube_token_reviewer(kube), clock=_now,
                                       address=(CONTROL_IP, 0), admin_address=(CONTROL_IP, 0))
            await identity.start()
            leaf = issue_leaf(issuer, workload_identity("isthmus-destination", "isthmus"), now=_now())
            creds = Credentials(cert_pem=leaf.cert_pem + issuer.cert_pem, key_pem=leaf.key_pem)
            destination = DestinationService(kube, lambda: creds, root.cert_pem,
                                             address=(CONTROL_IP, 0), admin_address=None)
            await destination.start()
            return kube, identity, destination

        kube, identity, destination = loop.run(start())

        async def close() -> None:
            await destination.close()
            await identity.close()
            await kube.close()

        stops.append(lambda: loop.run(close()))
        mesh.identity_addr = identity.url.removeprefix("https://")
        mesh.destination_addr = destination.url.removeprefix("https://")
        return mesh
    except BaseException:
        mesh.stop()
        raise


def _objects(env: dict[str, str], server_ip: str, port: int) -> None:
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "client", "namespace": "bench"}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "server", "namespace": "bench"}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "server", "namespace": "bench",
                                                         "labels": {"app": "backend"}},
         "spec": {"serviceAccountName": "server", "containers": [
             {"name": "app", "image": "backend"},
             {"name": "isthmus-proxy", "image": "isthmus/proxy"}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "backend", "namespace": "bench"},
         "spec": {"ports": [{"name": "http", "port": port}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "backend", "namespace": "bench"},
         "subsets": [{"addresses": [{"ip": server_ip, "targetRef": {"kind": "Pod", "name": "server",
                                                                    "namespace": "bench"}}],
                      "ports": [{"name": "http", "port": port}]}]},
    ]
    _kubectl(env, "apply", "-f", "-", input=yaml.safe_dump_all(objects))
    # No node agent runs with the API alone: the pod's IP and readiness are set here.
    status = {"status": {"phase": "Running", "podIP": server_ip, "podIPs": [{"ip": server_ip}],
                         "conditions": [{"type": "Ready", "status": "True"}]}}
    _kubectl(env, "-n", "bench", "patch", "pod", "server", "--subresource=status", "--type=merge",
             "-p", json.dumps(status))

"""In-cluster access to the Kubernetes API for the control plane's pods, on Kubernetes and embedded.

A pod reaches its cluster's API with its service account: the token, the
cluster CA and the namespace are files, and the API's address is in
`KUBERNETES_SERVICE_HOST` / `KUBERNETES_SERVICE_PORT`. Kubernetes projects
the files into `/var/run/secrets/kubernetes.io/serviceaccount/`; the
embedded cluster's runner has no volumes and writes them into
`$ISTHMUS_POD_DIR/serviceaccount/` instead. `in_cluster_config` takes
whichever the pod has (the embedded directory first), so the same command
runs in both.

- `in_cluster_config(env)` / `in_cluster_client(env)`: a lightkube
  `KubeConfig` / `AsyncClient` with the pod's token (re-read from its file
  for every request, as the kubelet rotates it), the cluster CA and the
  pod's namespace as the default one. `InClusterError` says what is missing.
- `pod_namespace(env)`: `POD_NAMESPACE`, else the service account's namespace file.
- `service_address(client, "svc:port", namespace)`: `clusterIP:port` of a
  Service, looked up through the API, so a pod can reach it without cluster
  DNS (the embedded cluster has none); a `host:port` whose host is already an
  IP address comes back unchanged, and `svc.ns:port` names another namespace.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.config.models import Cluster, User
from lightkube.resources.core_v1 import Service

from isthmus.adapters import kubehttp

__all__ = [
    "KUBERNETES_SERVICE_ACCOUNT_DIR",
    "InClusterError",
    "in_cluster_client",
    "in_cluster_config",
    "pod_namespace",
    "service_account_dir",
    "service_address",
]

KUBERNETES_SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class InClusterError(Exception):
    """The pod lacks what in-cluster API access needs; the message says what."""


def service_account_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where the pod's service-account files are: `$ISTHMUS_POD_DIR/serviceaccount` or Kubernetes' path."""
    env = os.environ if env is None else env
    pod_dir = env.get("ISTHMUS_POD_DIR")
    if pod_dir and (Path(pod_dir) / "serviceaccount").is_dir():
        return Path(pod_dir) / "serviceaccount"
    return KUBERNETES_SERVICE_ACCOUNT_DIR


def in_cluster_config(env: Mapping[str, str] | None = None) -> KubeConfig:
    """The pod's own API access (module docstring); `InClusterError` when it has none."""
    env = os.environ if env is None else env
    account = service_account_dir(env)
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise InClusterError("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: "
                             "this command runs inside a pod of the cluster")
    token, ca = account / "token", account / "ca.crt"
    for path, what in ((token, "service-account token"), (ca, "cluster CA")):
        if not path.is_file():
            raise InClusterError(f"the pod's {what} {path} does not exist; does the pod's service "
                                 f"account exist, and is its token mounted?")
    namespace_file = account / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.is_file() else "default"
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    return KubeConfig.from_one(cluster=Cluster(server=server, certificate_auth=str(ca)),
                               user=User(token_file=str(token)), namespace=namespace)


def in_cluster_client(env: Mapping[str, str] | None = None) -> AsyncClient:
    """A lightkube client with `in_cluster_config` (proxy variables ignored: the API is reached directly)."""
    return kubehttp.client(in_cluster_config(env))


def pod_namespace(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    if env.get("POD_NAMESPACE"):
        return env["POD_NAMESPACE"]
    path = service_account_dir(env) / "namespace"
    try:
        return path.read_text().strip() or "default"
    except OSError:
        return "default"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


async def service_address(client: AsyncClient, target: str, namespace: str) -> str:
    """`clusterIP:port` for `svc:port` / `svc.ns:port` (module docstring).

    `InClusterError` when the Service does not exist, has no cluster IP, or
    cannot be read (with the API's reason).
    """
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InClusterError(f"{target!r} is not SERVICE:PORT or IP:PORT")
    if _is_ip(host):
        return target
    name, _, ns = host.partition(".")
    ns = ns.split(".")[0] if ns else namespace
    try:
        svc = await client.get(Service, name, namespace=ns)
    except ApiError as e:
        raise InClusterError(f"cannot read Service {ns}/{name}: {e.status.message}") from None
    except Exception as e:  # transport failures: the API gave no answer
        raise InClusterError(f"cannot read Service {ns}/{name}: {type(e).__name__}: {e}") from None
    ip = svc.spec.clusterIP if svc.spec is not None else None
    if not ip or ip == "None":
        raise InClusterError(f"Service {ns}/{name} has no cluster IP")
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"

"""The checked cluster: one kubeconfig context, read through lightkube.

`Cluster` is what the checks need of a cluster (a protocol, so tests give
a fake one); `KubeCluster` is the real one, for a context of a kubeconfig
file. Objects come back as the API serves them (JSON dicts); a missing
object is None. Every other failure — the kubeconfig, the context, the
network, TLS, an API refusal — is a `ClusterError` whose message names the
context, the server and what went wrong, so a check can print it as its
cause.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any, Protocol

from lightkube import ApiError, Client, KubeConfig
from lightkube.config import client_adapter
from lightkube.core.exceptions import ConfigError
from lightkube.models.authorization_v1 import ResourceAttributes, SelfSubjectAccessReviewSpec
from lightkube.resources.admissionregistration_v1 import MutatingWebhookConfiguration
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.authorization_v1 import SelfSubjectAccessReview
from lightkube.resources.core_v1 import (
    ConfigMap,
    Endpoints,
    Namespace,
    Pod,
    Secret,
    Service,
    ServiceAccount,
)
from lightkube.resources.rbac_authorization_v1 import (
    ClusterRole,
    ClusterRoleBinding,
    Role,
    RoleBinding,
)

from isthmus.adapters import kubeconfig
from isthmus.adapters.clusterdir import isthmus_home

__all__ = ["Cluster", "ClusterError", "KubeCluster", "kubeconfig_path"]

Obj = dict[str, Any]

KINDS: dict[str, Any] = {
    "Namespace": Namespace, "ConfigMap": ConfigMap, "Secret": Secret, "Pod": Pod, "Service": Service,
    "Endpoints": Endpoints, "ServiceAccount": ServiceAccount, "Deployment": Deployment,
    "ClusterRole": ClusterRole, "ClusterRoleBinding": ClusterRoleBinding, "Role": Role,
    "RoleBinding": RoleBinding, "CustomResourceDefinition": CustomResourceDefinition,
    "MutatingWebhookConfiguration": MutatingWebhookConfiguration,
}


class ClusterError(Exception):
    """The cluster could not be asked or refused to answer; the message says which and why, `hint` what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class Cluster(Protocol):
    """What the checks ask of the cluster."""

    context: str
    server: str

    def version(self) -> Obj:
        """The API server's `/version` answer."""

    def get(self, kind: str, name: str, namespace: str = "") -> Obj | None:
        """The object, or None when it does not exist."""

    def list(self, kind: str, namespace: str | None = None, labels: dict[str, str] | None = None) -> list[Obj]:
        """Objects of `kind` in `namespace` (None: every namespace) with `labels`."""

    def can_i(self, verb: str, group: str, resource: str, namespace: str = "") -> tuple[bool, str]:
        """A SelfSubjectAccessReview: (allowed, the authorizer's reason)."""


def kubeconfig_path() -> Path:
    """The kubeconfig isthmus commands read: `$KUBECONFIG` (its first file), else isthmus's own,
    else `~/.kube/config`."""
    path = kubeconfig.default_path(isthmus_home())
    fallback = Path.home() / ".kube" / "config"
    if not os.environ.get("KUBECONFIG") and not path.exists() and fallback.exists():
        return fallback
    return path


def _transport_failure(e: Exception) -> bool:
    return isinstance(e, OSError | ssl.SSLError) or type(e).__module__.startswith(("httpx", "httpcore"))


def _dict(obj: Any) -> Obj:
    return dict(obj.to_dict()) if hasattr(obj, "to_dict") else dict(obj)


class KubeCluster:
    """`Cluster` for one context of a kubeconfig file (None: its current context)."""

    def __init__(self, path: Path, context: str | None) -> None:
        if not path.is_file():
            raise ClusterError(f"the kubeconfig {path} does not exist")
        try:
            config = KubeConfig.from_file(path)
        except (ConfigError, OSError, ValueError) as e:
            raise ClusterError(f"cannot read the kubeconfig {path}: {e}") from None
        name = context or config.current_context
        if not name:
            raise ClusterError(f"no --context given and the kubeconfig {path} has no current context")
        if name not in config.contexts:
            known = ", ".join(sorted(config.contexts)) or "none"
            raise ClusterError(f"context {name!r} is not in the kubeconfig {path} (its contexts: {known})")
        try:
            single = config.get(context_name=name)
            if single is None:
                raise ConfigError(f"context {name!r} not found")
            # lightkube's default timeout is 10 s for every request. /version is not a resource:
            # asked through the HTTP client lightkube builds for a context (same server, CA, user).
            self._client = Client(config=single, trust_env=False)
            self._http = client_adapter.Client(single, client_adapter.ConnectionParams(trust_env=False))
        except (ConfigError, OSError, ValueError, AssertionError) as e:
            raise ClusterError(f"context {name!r} of {path} is not usable: {e}") from None
        self.context, self.server = name, str(single.cluster.server)

    def __repr__(self) -> str:
        return f"<KubeCluster context={self.context!r} server={self.server}>"

    def close(self) -> None:
        self._client.close()
        self._http.close()

    def _unreachable(self, e: Exception) -> ClusterError:
        return ClusterError(f"cannot reach the API of context {self.context!r} at {self.server}: "
                            f"{type(e).__name__}: {e}",
                            f"is the cluster running? `kubectl --context={self.context} get --raw /version` "
                            f"should answer; an embedded cluster: `isthmus cluster list`, "
                            f"`isthmus cluster start NAME`")

    def _refused(self, verb: str, kind: str, where: str, e: ApiError) -> ClusterError:
        hint = ""
        if e.status.code in (401, 403):
            resource = KINDS[kind].__name__.lower() + "s" if kind != "Endpoints" else "endpoints"
            hint = (f"the user of context {self.context!r} may not {verb} {kind}s: use one that may "
                    f"(`kubectl --context={self.context} auth can-i {verb} {resource}`)")
        return ClusterError(f"cannot {verb} {kind} {where}on context {self.context!r}: {e.status.message} "
                            f"({e.status.code})", hint)

    def version(self) -> Obj:
        try:
            response = self._http.get("/version")
        except Exception as e:
            if not _transport_failure(e):
                raise
            raise self._unreachable(e) from None
        if response.status_code != 200:
            raise ClusterError(f"the API of context {self.context!r} at {self.server} answers GET /version "
                               f"with {response.status_code}: {response.text[:200].strip()}")
        try:
            info = response.json()
        except ValueError:
            info = None
        if not isinstance(info, dict):
            raise ClusterError(f"the API of context {self.context!r} at {self.server} answers GET /version "
                               f"with something that is not a version object")
        return info

    def get(self, kind: str, name: str, namespace: str = "") -> Obj | None:
        try:
            obj = (self._client.get(KINDS[kind], name, namespace=namespace) if namespace
                   else self._client.get(KINDS[kind], name))
        except ApiError as e:
            if e.status.code == 404:
                return None
            raise self._refused("get", kind, f"{namespace + '/' if namespace else ''}{name} ", e) from None
        except Exception as e:
            if not _transport_failure(e):
                raise
            raise self._unreachable(e) from None
        return _dict(obj)

    def list(self, kind: str, namespace: str | None = None, labels: dict[str, str] | None = None) -> list[Obj]:
        try:
            items = list(self._client.list(KINDS[kind], namespace=namespace or "*",
                                           labels=labels))  # type: ignore[arg-type]
        except ApiError as e:
            raise self._refused("list", kind, f"in namespace {namespace} " if namespace else "", e) from None
        except Exception as e:
            if not _transport_failure(e):
                raise
            raise self._unreachable(e) from None
        return [_dict(i) for i in items]

    def can_i(self, verb: str, group: str, resource: str, namespace: str = "") -> tuple[bool, str]:
        review = SelfSubjectAccessReview(spec=SelfSubjectAccessReviewSpec(resourceAttributes=ResourceAttributes(
            verb=verb, group=group, resource=resource, namespace=namespace or None)))
        try:
            answer = self._client.create(review)
        except ApiError as e:
            raise ClusterError(f"cannot create a SelfSubjectAccessReview on context {self.context!r}: "
                               f"{e.status.message} ({e.status.code})") from None
        except Exception as e:
            if not _transport_failure(e):
                raise
            raise self._unreachable(e) from None
        status = answer.status
        if status is None:
            return False, "the SelfSubjectAccessReview came back without a status"
        return bool(status.allowed), status.reason or ""

"""The service mirror's own workload certificate, which its gateway probes present.

The mirror's pod has no sidecar: it reaches the remote API itself, and its
gateway probes are mTLS of its own (`MtlsProbe`). For that it is a mesh
client like a proxy: an `IdentityClient` (key in memory only, renewal at 70%
of the certificate's life, retries with backoff) with the pod's
service-account token, asking for the identity
`<service account>.<namespace>.serviceaccount.identity.isthmus.<trust domain>`.

What an injected proxy is told in its environment, the mirror reads from its
cluster's control plane at start (the mirror's Deployment is printed by
`link` against the *other* cluster, so it cannot carry these values): the
trust anchors (ConfigMap `isthmus/isthmus-identity-trust-roots`), the trust
domain (ConfigMap `isthmus/isthmus-config`) and the identity service's
cluster IP (Service `isthmus/isthmus-identity`); the Link's mirror Role
grants `get` on exactly those. While they cannot be read the reason is kept
(`why_not`), every probe fails with it, and reading is retried.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import ConfigMap

from isthmus.adapters.incluster import InClusterError, service_address
from isthmus.adapters.x509 import Credentials
from isthmus.components.identity import IdentityClient
from isthmus.core.identity import workload_identity
from isthmus.resources import manifests

log = logging.getLogger("isthmus.mirror.identity")

__all__ = ["IdentitySettings", "MirrorIdentity", "read_identity_settings"]

RETRY_SECONDS = 5.0


@dataclass(frozen=True)
class IdentitySettings:
    anchors_pem: bytes
    trust_domain: str
    identity_url: str


class SettingsUnavailable(Exception):
    """The control plane's identity settings cannot be read; the message says which and why."""


async def _config_map(client: AsyncClient, name: str, namespace: str) -> dict[str, str]:
    try:
        cm = await client.get(ConfigMap, name, namespace=namespace)
    except ApiError as e:
        raise SettingsUnavailable(f"cannot read ConfigMap {namespace}/{name}: {e.status.message}") from None
    return dict(cm.data or {})


async def read_identity_settings(client: AsyncClient,
                                 namespace: str = manifests.NAMESPACE) -> IdentitySettings:
    """The trust anchors, trust domain and identity service URL of the control plane in `namespace`."""
    roots = await _config_map(client, manifests.TRUST_ROOTS_CONFIGMAP, namespace)
    anchors = roots.get(manifests.TRUST_ROOTS_KEY, "")
    if "BEGIN CERTIFICATE" not in anchors:
        raise SettingsUnavailable(f"ConfigMap {namespace}/{manifests.TRUST_ROOTS_CONFIGMAP} holds no trust "
                                  f"anchors under {manifests.TRUST_ROOTS_KEY!r}")
    config = await _config_map(client, manifests.CONFIG_CONFIGMAP, namespace)
    try:
        address = await service_address(client, f"{manifests.IDENTITY_SERVICE}:{manifests.IDENTITY_PORT}",
                                        namespace)
    except InClusterError as e:
        raise SettingsUnavailable(str(e)) from None
    return IdentitySettings(anchors.encode(), config.get("trustDomain") or "cluster.local", f"https://{address}")


class MirrorIdentity:
    """Reads the settings, then keeps a certificate for `service_account` in `namespace` (module docstring)."""

    def __init__(self, client: AsyncClient, *, service_account: str, namespace: str, token_path: Path,
                 control_plane_namespace: str = manifests.NAMESPACE,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._client = client
        self._account, self._namespace = service_account, namespace
        self._token_path = token_path
        self._control_plane_ns = control_plane_namespace
        self._sleep = sleep
        self.settings: IdentitySettings | None = None
        self.identity_client: IdentityClient | None = None
        self._problem = "this cluster's identity settings have not been read yet"

    @property
    def credentials(self) -> Credentials | None:
        return self.identity_client.current if self.identity_client is not None else None

    @property
    def anchors_pem(self) -> bytes:
        return self.settings.anchors_pem if self.settings is not None else b""

    def why_not(self) -> str:
        if self.identity_client is None:
            return self._problem
        error = self.identity_client.last_error
        return (f"the identity service refused or did not answer: {error}" if error
                else "waiting for the identity service")

    async def run(self) -> None:
        """Read the settings (retrying), then keep the certificate fresh; runs until cancelled."""
        while self.settings is None:
            try:
                self.settings = await read_identity_settings(self._client, self._control_plane_ns)
            except Exception as e:  # a refusal, or the API unreachable: retried alike
                self._problem = (f"{e}; is the control plane installed, and the Link's mirror RBAC applied?"
                                 if isinstance(e, SettingsUnavailable) else f"the cluster API did not answer: {e}")
                log.warning("gateway probes have no certificate: %s (retrying in %.0f s)", self._problem,
                            RETRY_SECONDS)
                await self._sleep(RETRY_SECONDS)
        identity = workload_identity(self._account, self._namespace, self.settings.trust_domain)
        self.identity_client = IdentityClient(service_url=self.settings.identity_url,
                                              service_ca_pem=self.settings.anchors_pem, identity=identity,
                                              token_path=self._token_path, clock=lambda: datetime.now(UTC))
        log.info("gateway probes present identity %s", identity)
        await self.identity_client.run()

"""`isthmus identity`: the identity service as a control-plane pod.

Reads the issuer (from the `isthmus-identity-issuer` Secret), the trust
anchors (from the `isthmus-identity-trust-roots` ConfigMap) and its
addresses from the environment the install manifests give it, checks
TokenReviews with the pod's own service account (in-cluster API access),
and serves until told to stop. A new issuer or anchor is a re-apply of the
install: the pod template's checksum annotation changes and the pods roll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from lightkube import AsyncClient

from isthmus.adapters.incluster import in_cluster_client
from isthmus.adapters.x509 import Credentials
from isthmus.components.controlplane.env import Env
from isthmus.components.identity import IdentityService, lightkube_token_reviewer
from isthmus.resources import manifests as m

log = logging.getLogger("isthmus.controlplane.identity")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class IdentityPodConfig:
    issuer: Credentials
    trust_anchors_pem: bytes
    trust_domain: str
    address: tuple[str, int]
    admin_address: tuple[str, int]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> IdentityPodConfig:
        e = Env(env)
        return cls(
            issuer=Credentials(
                e.certificates(m.ENV_IDENTITY_ISSUER_CRT, "the issuer certificate, PEM"),
                e.private_key(m.ENV_IDENTITY_ISSUER_KEY, "the issuer's private key, PEM")),
            trust_anchors_pem=e.certificates(m.ENV_IDENTITY_TRUST_ANCHORS, "the trust anchors, PEM"),
            trust_domain=e.trust_domain(m.ENV_IDENTITY_TRUST_DOMAIN),
            address=e.address(m.ENV_IDENTITY_LISTEN_ADDR, "where to serve certificate requests"),
            admin_address=e.address(m.ENV_IDENTITY_ADMIN_ADDR, "where to serve /metrics, /ready, /live"),
        )


async def run_identity(config: IdentityPodConfig, stop: asyncio.Event, *,
                       kube: AsyncClient | None = None) -> None:
    """Serve until `stop` is set. `IdentityServiceError` if the issuer cannot serve the anchors."""
    client = kube or in_cluster_client()
    try:
        service = IdentityService(issuer=config.issuer, trust_anchors_pem=config.trust_anchors_pem,
                                  trust_domain=config.trust_domain,
                                  token_reviewer=lightkube_token_reviewer(client), clock=_now,
                                  address=config.address, admin_address=config.admin_address)
        await service.start()
        try:
            await stop.wait()
        finally:
            await service.close()
    finally:
        if kube is None:
            await client.close()

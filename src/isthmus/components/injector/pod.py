"""`isthmus proxy-injector`: the webhook server as a control-plane pod, configured from its environment."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from lightkube import AsyncClient

from isthmus.adapters.incluster import in_cluster_client, pod_namespace
from isthmus.adapters.x509 import Credentials
from isthmus.components.controlplane.env import Env
from isthmus.components.injector.server import (
    InjectorServer,
    InjectorSettings,
    kube_lookups,
    kube_tls_source,
)
from isthmus.resources import manifests as m


@dataclass(frozen=True)
class InjectorPodConfig:
    settings: InjectorSettings
    credentials: Credentials
    namespace: str
    identity_service: str
    destination_service: str
    address: tuple[str, int]
    admin_address: tuple[str, int]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> InjectorPodConfig:
        e = Env(env)
        namespace = pod_namespace(env)
        settings = InjectorSettings(
            image=e.require(m.ENV_INJECTOR_PROXY_IMAGE, "the proxy's image"),
            version=e.require(m.ENV_INJECTOR_PROXY_VERSION, "the proxy's version"),
            trust_anchors_pem=e.certificates(m.ENV_INJECTOR_TRUST_ANCHORS, "the trust anchors, PEM").decode(),
            trust_domain=e.trust_domain(m.ENV_INJECTOR_TRUST_DOMAIN),
            cluster_domain=e.get(m.ENV_INJECTOR_CLUSTER_DOMAIN, "cluster.local"),
            control_plane_namespace=namespace,
            proxy_log_level=e.get(m.ENV_INJECTOR_PROXY_LOG_LEVEL, "info"),
        )
        return cls(
            settings=settings,
            credentials=Credentials(
                e.certificates(m.ENV_INJECTOR_TLS_CRT, "the webhook's serving certificate, PEM"),
                e.private_key(m.ENV_INJECTOR_TLS_KEY, "the webhook's private key, PEM")),
            namespace=namespace,
            identity_service=e.get(m.ENV_INJECTOR_IDENTITY_SVC, f"{m.IDENTITY_SERVICE}:{m.IDENTITY_PORT}"),
            destination_service=e.get(m.ENV_INJECTOR_DESTINATION_SVC,
                                      f"{m.DESTINATION_SERVICE}:{m.DESTINATION_PORT}"),
            address=e.address(m.ENV_INJECTOR_LISTEN_ADDR, "where to serve the webhook"),
            admin_address=e.address(m.ENV_INJECTOR_ADMIN_ADDR, "where to serve /metrics, /ready, /live"),
        )


async def run_injector(config: InjectorPodConfig, stop: asyncio.Event, *,
                       kube: AsyncClient | None = None) -> None:
    """Serve the webhook until `stop` is set, re-reading the TLS Secret for rotations."""
    client = kube or in_cluster_client()
    try:
        namespace_annotations, addresses = kube_lookups(
            client, namespace=config.namespace, identity_service=config.identity_service,
            destination_service=config.destination_service)
        server = InjectorServer(
            config.settings, config.credentials, namespace_annotations=namespace_annotations,
            addresses=addresses, address=config.address, admin_address=config.admin_address,
            tls_source=kube_tls_source(client, namespace=config.namespace, secret=m.INJECTOR_TLS_SECRET))
        await server.start()
        try:
            await stop.wait()
        finally:
            await server.close()
    finally:
        if kube is None:
            await client.close()

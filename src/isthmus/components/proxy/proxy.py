"""The sidecar proxy: its listeners, identity, discovery, admin server and housekeeping.

`Proxy(config)` wires the parts together: an `IdentityClient` keeps the
proxy's certificate (key in memory only) and feeds `ProxyTls`; a
`DestinationClient` answers where authorities live; the outbound listener
(the app's HTTP proxy) routes with `OutboundRouter`; the inbound listener
takes mTLS from other proxies to the local app (or, in a gateway, on to
services of this cluster); the admin server exposes metrics, readiness,
liveness, tap and shutdown. A sweeper closes connections that stay idle or
never finish a request head.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from isthmus.adapters.x509 import Credentials
from isthmus.components.destination import DestinationClient
from isthmus.components.identity import IdentityClient
from isthmus.components.proxy.admin import AdminServer, GatewayProbeServer
from isthmus.components.proxy.config import ProxyConfig
from isthmus.components.proxy.dial import source_ip_for
from isthmus.components.proxy.http1 import ServerConn
from isthmus.components.proxy.inbound import InboundListener
from isthmus.components.proxy.outbound import OutboundRouter
from isthmus.components.proxy.stats import ProxyStats
from isthmus.components.proxy.tap import TapHub
from isthmus.components.proxy.tls import ProxyTls

log = logging.getLogger("isthmus.proxy")

SWEEP_INTERVAL = 1.0


def _now() -> datetime:
    return datetime.now(UTC)


class Proxy:
    def __init__(self, config: ProxyConfig, *, credentials: Credentials | None = None,
                 destination: Any = None) -> None:
        """`credentials` and `destination` replace the identity and destination clients
        (a certificate made elsewhere, or answers of another source)."""
        self.config = config
        self._static_credentials = credentials
        self._static_destination = destination
        self.stats = ProxyStats(cluster_domain=config.cluster_domain)
        self.tap = TapHub(namespace=config.namespace, workload=config.workload, pod=config.pod)
        self.tls: ProxyTls | None = None
        self.identity: IdentityClient | None = None
        self.destination: DestinationClient | None = None
        self.outbound: OutboundRouter | None = None
        self.inbound: InboundListener | None = None
        self.admin: AdminServer | None = None
        self.probe_server: GatewayProbeServer | None = None
        self.conns: set[ServerConn] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self.stopped = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self.tls is None or self.tls.ready

    def not_ready_reason(self) -> str:
        if self.identity is not None and not self.ready:
            why = f" (last error: {self.identity.last_error})" if self.identity.last_error else ""
            return f"waiting for a certificate from the identity service{why}"
        return ""

    async def start(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        if self._static_credentials is not None:
            self.tls = ProxyTls(cfg.trust_anchors_pem)
            self.tls.update(self._static_credentials)
        elif cfg.identity is not None:
            assert cfg.identity_addr is not None and cfg.token_file is not None
            self.tls = ProxyTls(cfg.trust_anchors_pem)
            host, port = cfg.identity_addr
            self.identity = IdentityClient(
                service_url=f"https://{host}:{port}", service_ca_pem=cfg.trust_anchors_pem,
                identity=cfg.identity, token_path=cfg.token_file, clock=_now,
                on_update=self.tls.update)
            self._tasks.append(loop.create_task(self.identity.run()))
        if self._static_destination is not None:
            self.destination = self._static_destination
        elif cfg.destination_addr is not None:
            host, port = cfg.destination_addr
            tls = self.tls
            self.destination = DestinationClient(
                f"https://{host}:{port}", cfg.trust_anchors_pem,
                expected_identity=cfg.destination_name,
                credentials=(lambda: tls.creds) if tls is not None else None)
        self.outbound = OutboundRouter(destination=self.destination, tls=self.tls, stats=self.stats,
                                       tap=self.tap, cluster_domain=cfg.cluster_domain,
                                       connect_timeout=cfg.connect_timeout,
                                       source_ip=source_ip_for(cfg.outbound[0]))
        outbound, hooks = self.outbound, self.stats.listener_hooks("outbound", False, None, self.conns)
        server = await loop.create_server(lambda: ServerConn(outbound, hooks), *cfg.outbound,
                                          reuse_address=cfg.outbound[1] != 0, backlog=1024)
        self._servers.append(server)
        self.inbound = InboundListener(
            address=cfg.inbound, forward_host=cfg.forward_host,
            require_identity=cfg.require_identity_ports, tls=self.tls, stats=self.stats,
            tap=self.tap, outbound=self.outbound if cfg.gateway else None, gateway=cfg.gateway,
            connect_timeout=cfg.connect_timeout, conns=self.conns)
        self.inbound.own_id = cfg.identity
        await self.inbound.start()
        self.admin = AdminServer(self, cfg.admin)
        await self.admin.start()
        self._tasks.append(loop.create_task(self._sweep()))
        if cfg.gateway_probe is not None:
            if self.tls is None:
                log.warning("gateway without identity: no probe listener (remote mirrors probe over mTLS)")
            else:
                self.probe_server = GatewayProbeServer(self, cfg.gateway_probe)
                self._tasks.append(loop.create_task(self._start_probe_server(self.tls, self.probe_server)))
        log.info("proxy up: outbound %s:%d, inbound %s:%d, admin %s:%d, identity %s",
                 *cfg.outbound, *self.inbound.address, *self.admin.address,
                 cfg.identity or "disabled")

    async def _start_probe_server(self, tls: ProxyTls, server: GatewayProbeServer) -> None:
        await tls.first_certificate.wait()
        try:
            await server.start(tls.server())
        except OSError as e:
            log.error("gateway probe listener on %s:%d cannot start: %s", *server.address, e)

    @property
    def outbound_address(self) -> tuple[str, int]:
        sockets = getattr(self._servers[0], "sockets", None) or []
        host, port = sockets[0].getsockname()[:2]
        return host, port

    async def _sweep(self) -> None:
        cfg = self.config
        ticks = 0
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            for conn in list(self.conns):
                if conn.head_started and now - conn.head_started > cfg.header_timeout:
                    conn.fail(408, f"request head not complete within {cfg.header_timeout:g}s")
                elif (not conn.queue and conn.tunnel is None
                      and now - conn.last_activity > cfg.idle_timeout):
                    conn.close()
            ticks += 1
            if ticks % 60 == 0 and self.outbound is not None:
                self.outbound.sweep()

    def shutdown(self) -> None:
        self.stopped.set()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for server in self._servers:
            server.close()
        if self.inbound is not None:
            await self.inbound.close()
        if self.admin is not None:
            await self.admin.close()
        if self.probe_server is not None:
            await self.probe_server.close()
        for conn in list(self.conns):
            conn.close()
        if self.outbound is not None:
            self.outbound.close()
        if self.destination is not None:
            await self.destination.close()
        if self.identity is not None:
            await self.identity.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def run(config: ProxyConfig) -> None:
    """Run a proxy until `/shutdown` or a signal."""
    proxy = Proxy(config)
    await proxy.start()
    try:
        await proxy.stopped.wait()
    finally:
        await proxy.close()

"""The embedded cluster's service proxy: what kube-proxy and cluster DNS do for a real cluster.

`ServiceProxy` keeps one `ServiceMap` (built by `isthmus.core.servicemap` from
the Services and Endpoints it is given through `update`) and serves it two
ways:

* a TCP listener on every cluster IP:port (when `bind_services`), relaying each
  connection to a ready backend, round robin, trying the next backend when a
  connect fails and closing the client connection when none is ready;
* one HTTP/1.1 forward proxy at `http_proxy_address` (given to unmeshed pods as
  `HTTP_PROXY`), which reaches Services by name or cluster IP on any port and
  needs no privileges.

Whoever owns the proxy watches the API and calls `update`; the proxy talks to
no API itself. `update` is synchronous: the new map takes effect at once for
new connections, and listener changes are applied in the background, one by
one (`synced` waits for them). Connections already relayed are not cut when
their backend goes away, as with kube-proxy.

Promises: nothing outside 127.0.0.0/8 is ever bound or connected to; a
listener that cannot be bound is one warning line, not an error (see
`tcp`); `close` stops every listener and ends every connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from isthmus.core.servicemap import (
    DEFAULT_CLUSTER_DOMAIN,
    Destination,
    ListenerKey,
    Refusal,
    RoundRobin,
    ServiceMap,
    ServicePort,
    build_service_map,
    diff_listeners,
    is_loopback_ip,
)

from .http import HttpForwardProxy
from .tcp import (
    ClusterIPListeners,
    ConnectFailed,
    Connections,
    Handler,
    connect_first,
    relay,
    wait_closed,
)

log = logging.getLogger("isthmus.serviceproxy")

PodNamespace = Callable[[str], str | None]
ClientDelay = Callable[[str], float]
"""Client IP → seconds each direction of its connections is held (emulated WAN latency)."""


class ServiceProxyError(Exception):
    """The proxy could not start; the message says what to do."""


class ServiceProxy:
    """kube-proxy and cluster DNS for one embedded cluster (see the module docstring).

    `pod_namespace` maps a client's pod IP to its namespace, for short names
    (`svc`) in the HTTP proxy; unknown clients are in `default`.
    `client_delay` maps a client's IP to a one-way delay for its connections to
    cluster and load-balancer IPs (`components.serviceproxy.wan.RegionDelays`:
    clients in another region's cluster feel the WAN between them).
    """

    def __init__(self, *, http_proxy_address: tuple[str, int],
                 cluster_domain: str = DEFAULT_CLUSTER_DOMAIN, bind_services: bool = True,
                 pod_namespace: PodNamespace | None = None, connect_timeout: float = 5.0,
                 idle_timeout: float = 30.0, client_delay: ClientDelay | None = None) -> None:
        if not is_loopback_ip(http_proxy_address[0]):
            raise ServiceProxyError("the cluster HTTP proxy must listen on a 127.0.0.0/8 address,"
                                    f" not {http_proxy_address[0]!r}")
        self._requested = http_proxy_address
        self._http_address: tuple[str, int] | None = None
        self._domain = cluster_domain
        self._bind_services = bind_services
        self._pod_namespace = pod_namespace
        self._client_delay = client_delay
        self._timeout = connect_timeout
        self._map = ServiceMap(cluster_domain=cluster_domain)
        self._picker = RoundRobin()
        self._http = HttpForwardProxy(route=self._route, connect_timeout=connect_timeout,
                                      idle_timeout=idle_timeout)
        self._connections = Connections()
        self._listeners = ClusterIPListeners(self._tcp_handler, fallback=self._fallback)
        self._applied: Mapping[ListenerKey, ServicePort] = {}
        self._server: asyncio.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._dirty = asyncio.Event()
        self._synced = asyncio.Event()
        self._state = "new"

    def __repr__(self) -> str:
        host, port = self.http_proxy_address
        where = f"{host}:{port}"
        return (f"<ServiceProxy {self._state} http={where} services={len(self._map)}"
                f" listeners={len(self._listeners.bound)}/{len(self._applied)}"
                f" connections={len(self._connections)} {self._http.pool!r}>")

    @property
    def http_proxy_address(self) -> tuple[str, int]:
        """The HTTP proxy's address (the bound port when port 0 was asked for)."""
        return self._http_address or self._requested

    @property
    def service_map(self) -> ServiceMap:
        return self._map

    @property
    def listening(self) -> frozenset[ListenerKey]:
        """The cluster IP:ports with an open listener."""
        return self._listeners.bound

    async def start(self) -> None:
        if self._state != "new":
            raise ServiceProxyError(f"the service proxy is {self._state}; make a new one")
        host, port = self._requested
        try:
            self._server = await asyncio.start_server(
                self._connections.wrap(self._http.handle), host, port, reuse_address=True)
        except OSError as exc:
            raise ServiceProxyError(
                f"cannot listen on {host}:{port} for the cluster HTTP proxy: "
                f"{exc.strerror or exc}; stop whatever uses that address or pick another"
            ) from exc
        sockname = self._server.sockets[0].getsockname()
        self._http_address = (sockname[0], sockname[1])
        self._state = "running"
        self._task = asyncio.create_task(self._reconcile_forever())
        self._dirty.set()
        log.info("service proxy: HTTP proxy on %s:%d", *self._http_address)

    def update(self, services: list[dict[str, Any]], endpoints: list[dict[str, Any]]) -> None:
        """Replace the Services and Endpoints served; listeners follow in the background."""
        self._map = build_service_map(services, endpoints, cluster_domain=self._domain, previous=self._map)
        self._picker.retain((p.service, p.port) for p in self._map.service_ports())
        self._http.pool.retain(self._map.backends())
        self._synced.clear()
        self._dirty.set()

    async def synced(self) -> None:
        """Wait until the listeners match the last `update`."""
        if self._state != "running":
            return
        await self._synced.wait()

    async def close(self) -> None:
        if self._state == "closed":
            return
        self._state = "closed"
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        servers = self._listeners.close_all()
        if self._server is not None:
            self._server.close()
            servers.append(self._server)
        await self._connections.close_all()
        self._http.pool.close_all()
        await wait_closed(servers)
        self._synced.set()

    # ------------------------------------------------------------------ listeners

    async def _reconcile_forever(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            desired = self._map.listeners if self._bind_services else {}
            try:
                await self._apply(desired)
            except Exception:
                log.exception("service proxy: applying listener changes failed")
            self._applied = desired
            if not self._dirty.is_set():
                self._synced.set()

    async def _apply(self, desired: Mapping[ListenerKey, ServicePort]) -> None:
        diff = diff_listeners(self._applied, desired)
        for key in diff.removed:
            self._listeners.close(key)
        for key, service in diff.added:
            await self._listeners.open(key, service)
        for key, service in diff.updated:
            log.debug("service %s on %s:%d: %d ready backends", service.service, *key,
                      len(service.backends))

    def _fallback(self) -> str:
        host, port = self.http_proxy_address
        return f"HTTP_PROXY=http://{host}:{port}"

    def _tcp_handler(self, key: ListenerKey) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            service = self._map.listeners.get(key) if self._bind_services else None
            if service is None or not service.backends:
                return
            order = self._picker.order((service.service, service.port), service.backends)
            try:
                up_reader, up_writer, _ = await connect_first(order, timeout=self._timeout)
            except ConnectFailed as exc:
                log.info("service %s: no backend accepted a connection (%s)", service.service, exc)
                return
            await relay(reader, writer, up_reader, up_writer, one_way=self._delay_for(writer))
        return self._connections.wrap(handle)

    def _delay_for(self, writer: asyncio.StreamWriter) -> Callable[[], float] | None:
        """The client's one-way delay, asked again for every chunk; None when it is not delayed.

        A client delayed when it connected stays on the delay line (a setting
        turned to 0 delivers at once); one that was not is relayed plainly.
        """
        peer = writer.get_extra_info("peername")
        delay = self._client_delay
        if delay is None or not isinstance(peer, tuple) or delay(peer[0]) <= 0:
            return None
        ip = peer[0]
        return lambda: delay(ip)

    # ------------------------------------------------------------------ HTTP routing

    def _route(self, authority: str, client_ip: str, default_port: int | None,
               ) -> Destination | Refusal:
        namespace = (self._pod_namespace(client_ip) if self._pod_namespace else None) or "default"
        decision = self._map.route(authority, namespace=namespace, default_port=default_port,
                                   forbidden=(self.http_proxy_address,))
        if isinstance(decision, Destination) and decision.service is not None:
            service = decision.service
            ordered = self._picker.order((service.service, service.port), decision.backends)
            return Destination(ordered, service)
        return decision

"""Outbound routing: from a request's authority to one endpoint's connection pool.

Per authority the router keeps a `Target`: the destination service's answer
(a live resolution, updated as it changes), a peak-EWMA balancer over its
endpoints, the Service's route policy (timeout, retries, failure accrual)
with a retry budget, and per endpoint a pool and ready-made `Route`.
The hot path for a known authority is: one dict lookup, one balancer pick.

Endpoints with an identity are reached over mTLS on their proxy port
(the transport header names the app port, or for a multicluster gateway
the authority on the far side); endpoints without one are reached plain.
Without a destination service only `IP:port` authorities are routed, as
they are. When the destination service goes away, the last answer keeps
serving (the client library keeps it and reconnects).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable
from typing import Any

from isthmus.components.destination import (
    DestinationClient,
    DestinationError,
    Endpoint,
    EndpointSet,
)
from isthmus.components.proxy.dial import Pipe, dial
from isthmus.components.proxy.errors import ProxyError
from isthmus.components.proxy.http1 import ClientConn, Request, ServerConn
from isthmus.components.proxy.routes import Pool, Route
from isthmus.components.proxy.stats import ProxyStats
from isthmus.components.proxy.tap import TapHub, TapPoint
from isthmus.components.proxy.tls import NoIdentity, ProxyTls
from isthmus.core import transportheader as th
from isthmus.core.proxy.authority import AuthorityError, canonical, parse_authority, request_target
from isthmus.core.proxy.balancer import Balancer
from isthmus.core.proxy.retry import RetryBudget, RoutePolicy, parse_policy

log = logging.getLogger("isthmus.proxy.outbound")

RESOLVE_TIMEOUT = 10.0
IDLE_TARGET = 600.0


class Entry:
    """One endpoint of a target: how to reach it, its pool and its route."""

    __slots__ = ("endpoint", "pool", "route")

    def __init__(self, endpoint: Endpoint, pool: Pool, route: Route) -> None:
        self.endpoint = endpoint
        self.pool = pool
        self.route = route


def endpoint_key(e: Endpoint) -> tuple[Any, ...]:
    return (e.addr, e.port, e.identity, e.proxy_port, e.authority_override)


class Target:
    """An authority's live endpoints, balancer and policy (see the module docstring)."""

    def __init__(self, router: OutboundRouter, authority: str) -> None:
        self.router = router
        self.authority = authority
        try:
            self.resolution = router.destination.resolve(authority) if router.destination else None
        except DestinationError as e:
            raise ProxyError(400, str(e)) from None
        self.version = -1
        self.balancer: Balancer[tuple[Any, ...], Entry] = Balancer(router.rng)
        self.entries: dict[tuple[Any, ...], Entry] = {}
        self.policy: RoutePolicy | None = None
        self.budget = RetryBudget()
        self.snapshot: EndpointSet | None = None
        self.last_used = time.monotonic()

    def refresh(self) -> None:
        res = self.resolution
        assert res is not None
        self.version = res.version
        if res.current is not None:
            self.apply(res.current)

    def apply(self, snap: EndpointSet) -> None:
        self.snapshot = snap
        policy, problems = parse_policy(snap.policy)
        for problem in problems:
            log.warning("%s: %s", self.authority, problem)
        if policy != self.policy:
            self.policy = policy
            self.balancer = Balancer(self.router.rng, failure_accrual=policy.failure_accrual)
        fresh: dict[tuple[Any, ...], Entry] = {}
        for e in snap.endpoints if snap.exists else ():
            key = endpoint_key(e)
            entry = self.entries.get(key)
            if entry is None or entry.route.policy != policy:
                entry = self.router.entry(self, e, snap, policy)
            fresh[key] = entry
        for key, entry in self.entries.items():
            if key not in fresh:
                entry.pool.close()
        self.entries = fresh
        self.balancer.update(fresh, time.monotonic())

    def pick(self) -> Route:
        snap = self.snapshot
        assert snap is not None
        if not snap.exists:
            raise ProxyError(503, f"{self.authority} does not resolve: {snap.reason}")
        if not self.entries:
            raise ProxyError(503, f"{self.authority} has no ready endpoints")
        chosen = self.balancer.pick(time.monotonic())
        if chosen is None:
            raise ProxyError(503, f"every endpoint of {self.authority} is failing; "
                                  f"requests resume after the failure-accrual backoff")
        route = chosen.endpoint.route
        route.ewma = chosen.ewma
        return route

    async def wait(self) -> None:
        assert self.resolution is not None
        try:
            await self.resolution.ready(RESOLVE_TIMEOUT)
        except TimeoutError:
            why = self.resolution.last_error
            raise ProxyError(503, f"no answer from the destination service for {self.authority} "
                                  f"within {RESOLVE_TIMEOUT:g}s" + (f" ({why})" if why else "")) from None
        except DestinationError as e:
            raise ProxyError(503, f"{self.authority}: {e}") from None

    def close(self) -> None:
        for entry in self.entries.values():
            entry.pool.close()
        if self.resolution is not None and self.router.destination is not None:
            self.router.destination.release(self.authority)


class OutboundRouter:
    """Routes requests from the app (or, in a gateway, from other clusters) by their authority."""

    def __init__(self, *, destination: DestinationClient | None, tls: ProxyTls | None,
                 stats: ProxyStats, tap: TapHub, cluster_domain: str = "cluster.local",
                 connect_timeout: float = 3.0, rng: random.Random | None = None,
                 source_ip: str | None = None) -> None:
        self.destination = destination
        self.source_ip = source_ip  # bound before connecting (the pod's IP), None: the kernel's choice
        self.tls = tls
        self.stats = stats
        self.tap = tap
        self.cluster_domain = cluster_domain
        self.connect_timeout = connect_timeout
        self.rng = rng or random.Random()
        self.targets: dict[str, Target] = {}
        self._aliases: dict[bytes, str] = {}  # request authority bytes -> canonical authority

    # ---------------------------------------------------------------- authority

    def authority_of(self, req: Request) -> str:
        raw = req.url if req.url[:1] != b"/" else req.host
        if raw is not None:
            known = self._aliases.get(raw)
            if known is not None:
                return known
        try:
            text, _ = request_target(req.method, req.url, req.host)
            if text is None:
                raise ProxyError(400, "request names no authority: send an absolute URL "
                                      "(use the proxy as HTTP proxy) or a Host header")
            name = canonical(parse_authority(text), self.cluster_domain)
        except AuthorityError as e:
            raise ProxyError(400, f"bad request authority: {e}") from None
        if raw is not None and len(self._aliases) < 10000:
            self._aliases[raw] = name
        return name

    # ---------------------------------------------------------------- Router

    def route(self, req: Request, conn: ServerConn) -> Route | Awaitable[Route]:
        authority = req.authority or self.authority_of(req)
        req.authority = authority
        return self.route_to(authority)

    def route_to(self, authority: str) -> Route | Awaitable[Route]:
        target = self.targets.get(authority)
        if target is None:
            target = self.targets[authority] = self._new_target(authority)
        target.last_used = time.monotonic()
        res = target.resolution
        if res is None:
            return target.pick()
        if res.version != target.version:
            target.refresh()
        if target.snapshot is None:
            return self._route_later(target)
        return target.pick()

    async def _route_later(self, target: Target) -> Route:
        await target.wait()
        target.refresh()
        return target.pick()

    def _new_target(self, authority: str) -> Target:
        if self.destination is None:
            host, _, port = authority.rpartition(":")
            try:
                a = parse_authority(authority)
            except AuthorityError as e:
                raise ProxyError(400, str(e)) from None
            if not a.is_ip:
                raise ProxyError(503, f"{authority} does not resolve: this proxy has no "
                                      f"destination service (ISTHMUS_PROXY_DESTINATION_SVC_ADDR)")
            target = Target(self, authority)
            target.apply(EndpointSet.direct(authority, host, int(port)))
            return target
        return Target(self, authority)

    async def tunnel(self, req: Request, conn: ServerConn) -> asyncio.Transport:
        authority = self.authority_of(req)
        req.authority = authority
        assert conn.transport is not None
        return await self.open_opaque(authority, conn.transport)

    async def open_opaque(self, authority: str, peer: asyncio.Transport) -> asyncio.Transport:
        """A raw connection to an endpoint of `authority` whose bytes go to `peer`."""
        routed = self.route_to(authority)
        route = routed if isinstance(routed, Route) else await routed
        transport, _ = await self._dial(route.endpoint, lambda: Pipe(peer), protocol="opaque")
        return transport

    # ---------------------------------------------------------------- endpoints

    def entry(self, target: Target, e: Endpoint, snap: EndpointSet, policy: RoutePolicy) -> Entry:
        tls = "true" if e.identity and self.tls is not None else "no_identity"
        labels = dict(snap.labels)
        labels.update(e.labels)
        stats = self.stats.route("outbound", target.authority, tls, e.identity or "", labels)
        conn_stats = self.stats.conn("outbound", tls, e.identity or "", labels)
        label = f"{e.addr}:{e.proxy_port or e.port}" + (f" ({e.identity})" if e.identity else "")

        async def connect(pool: Pool) -> ClientConn:
            _, protocol = await self._dial(e, lambda: ClientConn(pool), protocol="http")
            pool.opened()
            assert isinstance(protocol, ClientConn)
            return protocol

        pool = Pool(label, connect, conn_stats, peer_id=e.identity)
        route = Route(pool, stats, policy=policy, budget=target.budget,
                      balancer=target.balancer, endpoint_key=endpoint_key(e),
                      tap=TapPoint(self.tap, "out", e, labels, tls))
        route.endpoint = e
        return Entry(e, pool, route)

    async def _dial(self, e: Endpoint, factory: Any, *, protocol: str) -> tuple[asyncio.Transport, Any]:
        label = f"{e.addr}:{e.proxy_port or e.port}"
        if e.identity and e.proxy_port and self.tls is not None:
            try:
                ctx = self.tls.client(e.identity)
            except NoIdentity:
                raise ProxyError(503, "this proxy has no certificate yet (identity service "
                                      "not reached); try again shortly") from None
            header = (th.remote(protocol, e.authority_override) if e.authority_override
                      else th.local(protocol, e.port)).encode()
            return await dial(factory, e.addr, e.proxy_port, ssl_ctx=ctx, peer_id=e.identity,
                              header=header, timeout=self.connect_timeout,
                              label=f"{label} ({e.identity})", source_ip=self.source_ip)
        return await dial(factory, e.addr, e.port, ssl_ctx=None, peer_id=None, header=b"",
                          timeout=self.connect_timeout, label=label, source_ip=self.source_ip)

    def sweep(self) -> None:
        """Forget targets nobody asked for in a while (their resolutions are released)."""
        now = time.monotonic()
        for name in [n for n, t in self.targets.items() if now - t.last_used > IDLE_TARGET]:
            self.targets.pop(name).close()
            self._aliases = {k: v for k, v in self._aliases.items() if v != name}

    def close(self) -> None:
        for target in self.targets.values():
            target.close()
        self.targets.clear()

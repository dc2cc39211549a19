"""Where one request goes: a pool of connections to one upstream, and what to count and decide there.

A `Pool` keeps idle connections to one upstream — an address, the identity
its TLS certificate must prove (or none), and the transport header sent
first on each connection — and opens new ones through its connector.

A `Route` is what the router hands the HTTP layer for one request attempt:
the pool, the request timeout, the retry policy with its budget, the
balancer's estimator for the chosen endpoint, and the metric cells to count
on. Retries are decided here (`should_retry`), every attempt is counted
(`started`, and `finished` or a retried response), and the endpoint's
latency and failures feed the balancer. The request's route (`route_*`
metrics) is counted once: at its first attempt, and with its final response.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from isthmus.components.proxy.errors import ProxyError
from isthmus.core.proxy.retry import RetryBudget, RoutePolicy, decide_retry

if TYPE_CHECKING:
    from isthmus.components.proxy.http1 import ClientConn, Request, ServerConn
    from isthmus.components.proxy.stats import ConnStats, RouteStats
    from isthmus.components.proxy.tap import TapPoint
    from isthmus.core.proxy.balancer import Balancer, PeakEwma

MAX_IDLE = 256
FAILURE_RTT = 1.0  # seconds a failed request counts for in the balancer's latency estimate


class Pool:
    """Idle connections to one upstream; `open` makes a new one (raises ProxyError)."""

    __slots__ = ("_connect", "closed", "conn_stats", "idle", "label", "open_count", "peer_id")

    def __init__(self, label: str, connect: Callable[[Pool], Awaitable[ClientConn]],
                 conn_stats: ConnStats, peer_id: str | None = None) -> None:
        self.label = label
        self._connect = connect
        self.conn_stats = conn_stats
        self.peer_id = peer_id
        self.idle: list[ClientConn] = []
        self.open_count = 0
        self.closed = False

    def describe(self) -> str:
        return self.label

    def take(self) -> ClientConn | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            t = conn.transport
            if t is not None and not t.is_closing() and not conn.closed:
                return conn
        return None

    async def open(self) -> ClientConn:
        if self.closed:
            raise ProxyError(503, f"{self.label} is no longer an endpoint")
        return await self._connect(self)

    def put(self, conn: ClientConn) -> None:
        if self.closed or len(self.idle) >= MAX_IDLE:
            conn.abandon()
        else:
            self.idle.append(conn)

    def opened(self) -> None:
        self.open_count += 1
        self.conn_stats.opened()

    def lost(self, conn: ClientConn) -> None:
        self.open_count -= 1
        self.conn_stats.closed()
        if conn in self.idle:
            self.idle.remove(conn)

    def read(self, n: int) -> None:
        self.conn_stats.read.value += n

    def written(self, n: int) -> None:
        self.conn_stats.written.value += n

    def close(self) -> None:
        """No new requests; idle connections close now, busy ones after their response."""
        self.closed = True
        for conn in self.idle:
            conn.abandon()
        self.idle.clear()

    def __repr__(self) -> str:
        return f"<Pool {self.label} idle={len(self.idle)} open={self.open_count}>"


class Route:
    """One request attempt's destination and bookkeeping (see the module docstring)."""

    __slots__ = ("accrual", "balancer", "budget", "endpoint", "endpoint_key", "ewma", "extra_headers",
                 "policy", "pool", "retries", "stats", "tap", "timeout")

    def __init__(self, pool: Pool, stats: RouteStats, *, policy: RoutePolicy | None = None,
                 budget: RetryBudget | None = None, ewma: PeakEwma | None = None,
                 balancer: Balancer[Any, Any] | None = None, endpoint_key: Any = None,
                 extra_headers: bytes = b"", tap: TapPoint | None = None) -> None:
        self.pool = pool
        self.stats = stats
        self.policy = policy
        self.timeout = policy.timeout if policy is not None else None
        self.retries = policy is not None and policy.retries and budget is not None
        self.budget = budget
        self.ewma = ewma
        self.balancer = balancer
        self.accrual = balancer is not None and balancer.failure_accrual is not None
        self.endpoint_key = endpoint_key
        self.extra_headers = extra_headers
        self.tap = tap
        self.endpoint: Any = None  # the discovery answer's endpoint, for outbound routes

    def head(self, req: Request) -> bytes:
        return req.origin_head(self.extra_headers)

    def started(self, req: Request, conn: ServerConn) -> None:
        stats = self.stats
        stats.request.value += 1
        if req.attempt == 1:
            rt = req.rt = stats.routes.cells(req.method, req.url)
            rt.request.value += 1
        if self.ewma is not None:
            self.ewma.start()
        if self.retries and req.attempt == 1:
            self.budget.deposit(time.monotonic())  # type: ignore[union-attr]
        tap = self.tap
        if tap is not None and tap.hub.active:
            tap.request(req, conn)

    def should_retry(self, req: Request, status: int | None) -> bool:
        """Whether to send `req` again after this attempt's `status` (None: no response at all).

        When it says yes, this attempt has been counted and fed to the balancer.
        """
        policy = self.policy
        if policy is None or self.budget is None:
            return False
        if not decide_retry(policy, status, req.attempt, req.body_len if req.body is not None
                            else None, self.budget, time.monotonic()):
            return False
        self._record(req, status if status is not None else 502)
        return True

    def finished(self, req: Request, conn: ServerConn) -> None:
        latency_ms = self._record(req, req.status)
        rt = req.rt
        if rt is not None:
            rt.response(req.status, latency_ms)
        tap = self.tap
        if tap is not None and tap.hub.active:
            tap.response(req, conn)

    def _record(self, req: Request, status: int) -> float:
        """Count this attempt's response; returns its latency in ms."""
        now = time.perf_counter()
        failed = status >= 500
        # As linkerd2-proxy: from the request head to the end of the response stream.
        latency_ms = (now - req.t0) * 1000.0
        self.stats.response(status, latency_ms, failed)
        if self.ewma is not None:
            # The balancer weighs the time to the response head. A fast failure must not
            # make an endpoint look cheap: it counts as slow.
            rtt = (req.t_rsp or now) - req.t0
            mono = time.monotonic()
            self.ewma.finish(max(rtt, FAILURE_RTT) if failed else rtt, mono)
            if self.accrual:
                self.balancer.report(self.endpoint_key, not failed, mono)  # type: ignore[union-attr]
        return latency_ms

    def __repr__(self) -> str:
        return f"<Route {self.pool.label}>"

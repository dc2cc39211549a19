"""The proxy's metric cells, looked up once per route or connection, not per request.

`ProxyStats` owns the registry (`core.proxy.metrics`): `route(...)` gives a
`RouteStats` for one (direction, authority, TLS, peer identity, destination
labels) — its request counter and, per status code, its response counter
and latency histogram; `conn(...)` gives `ConnStats` for connections the
proxy opens to one upstream; `listener_hooks(...)` counts accepted
connections. The hot path is attribute access and `+=`.

Per-route metrics (`route_*`): each `RouteStats` holds the `DstRoutes` of its
(direction, destination authority, destination labels); `DstRoutes.cells`
maps a request's method and target to the `RouteCells` of its route name
(`core.proxy.route_names`), through a bounded cache keyed by the raw bytes,
so a request of a known target costs two dict lookups. A route counts each
request once (its first attempt) and its final response, as linkerd2-proxy's
route metrics do; the per-endpoint families count every attempt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from isthmus.core.proxy.authority import AuthorityError, canonical, parse_authority
from isthmus.core.proxy.metrics import (
    CounterFamily,
    HistogramCell,
    HistogramFamily,
    ProxyMetrics,
    ValueCell,
    http_labels,
    proxy_metrics,
    response_labels,
    route_labels,
    tcp_labels,
)
from isthmus.core.proxy.route_names import MAX_ROUTES, RouteNamer

if TYPE_CHECKING:
    from isthmus.components.proxy.http1 import Request, ServerConn

NO_TLS_REASON = {"outbound": "not_provided_by_service_discovery", "inbound": "no_tls_from_remote"}
# Raw (method, target) → route cells remembered per destination before the cache starts over.
ROUTE_CACHE_SIZE = 1024


def _dst(labels: Mapping[str, str]) -> dict[str, str]:
    return {k: labels.get(k, "") for k in ("dst_namespace", "dst_service", "dst_deployment",
                                           "dst_pod", "dst_target_cluster")}


class _Counted:
    """A request counter and, per status code, a response counter and a latency histogram."""

    __slots__ = ("_base", "_latency", "_response_total", "_responses", "request")

    def __init__(self, requests: CounterFamily, responses: CounterFamily,
                 latency: HistogramFamily, base: tuple[str, ...]) -> None:
        self._base = base
        self._response_total = responses
        self._latency = latency
        self.request: ValueCell = requests.cell(base)
        self._responses: dict[int, tuple[ValueCell, HistogramCell]] = {}

    def response(self, status: int, latency_ms: float, failed: bool = False) -> None:
        cells = self._responses.get(status)
        if cells is None:
            labels = response_labels(self._base, status)
            cells = self._responses[status] = (self._response_total.cell(labels),
                                               self._latency.cell(labels[:-1]))
        cells[0].value += 1
        cells[1].observe(latency_ms)


class RouteCells(_Counted):
    """One route name's `route_*` cells (see the module docstring)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<RouteCells {self._base}>"


class DstRoutes:
    """The routes of one (direction, destination, destination labels); see the module docstring."""

    __slots__ = ("_by_name", "_cache", "_cached", "_labels", "_metrics", "_namer")

    def __init__(self, metrics: ProxyMetrics, namer: RouteNamer, labels: Mapping[str, str]) -> None:
        self._metrics = metrics
        self._namer = namer
        self._labels = dict(labels)  # direction, dst and the dst_* labels, as route_labels takes them
        self._by_name: dict[str, RouteCells] = {}
        self._cache: dict[bytes, dict[bytes, RouteCells]] = {}  # method → target → cells
        self._cached = 0

    def __repr__(self) -> str:
        return f"<DstRoutes {self._labels} {len(self._by_name)} routes>"

    def cells(self, method: bytes, target: bytes) -> RouteCells:
        """The cells of the route of a request with `method` and request target `target`."""
        by_target = self._cache.get(method)
        if by_target is not None:
            cells = by_target.get(target)
            if cells is not None:
                return cells
        return self._miss(method, target)

    def _miss(self, method: bytes, target: bytes) -> RouteCells:
        name = self._namer.name(method.decode("latin-1"), target.decode("latin-1"))
        cells = self._by_name.get(name)
        if cells is None:
            m = self._metrics
            cells = self._by_name[name] = RouteCells(
                m.route_request_total, m.route_response_total, m.route_response_latency_ms,
                route_labels(rt_route=name, **self._labels))
        if self._cached >= ROUTE_CACHE_SIZE:  # many distinct targets (ids, queries): start over
            self._cache.clear()
            self._cached = 0
        self._cache.setdefault(method, {})[target] = cells
        self._cached += 1
        return cells


class RouteStats(_Counted):
    """The per-endpoint cells of one route (see the module docstring), and its `DstRoutes`."""

    __slots__ = ("routes",)

    def __init__(self, stats: ProxyStats, base: tuple[str, ...], routes: DstRoutes) -> None:
        m = stats.metrics
        super().__init__(m.request_total, m.response_total, m.response_latency_ms, base)
        self.routes = routes

    def __repr__(self) -> str:
        return f"<RouteStats {self._base}>"


class ConnStats:
    """Connections to (or from) one peer: open/close counts, open gauge, bytes both ways."""

    __slots__ = ("_close", "_gauge", "_open", "read", "written")

    def __init__(self, stats: ProxyStats, labels: tuple[str, ...]) -> None:
        m = stats.metrics
        self._open = m.tcp_open_total.cell(labels)
        self._close = m.tcp_close_total.cell((*labels, ""))
        self._gauge = m.tcp_open_connections.cell(labels)
        self.read = m.tcp_read_bytes_total.cell(labels)
        self.written = m.tcp_write_bytes_total.cell(labels)

    def opened(self) -> None:
        self._open.value += 1
        self._gauge.value += 1

    def closed(self) -> None:
        self._close.value += 1
        self._gauge.value -= 1


class ListenerHooks:
    """`http1.ConnHooks` for one listener, TLS state and client identity."""

    __slots__ = ("conns", "direction", "stats", "tcp", "tls")

    def __init__(self, stats: ProxyStats, direction: str, tls: bool, client_id: str | None,
                 conns: set[ServerConn]) -> None:
        self.stats = stats
        self.direction = direction
        self.tls = "true" if tls else "no_identity"
        self.conns = conns
        reason = "" if tls else NO_TLS_REASON["inbound"] if direction == "inbound" else "loopback"
        self.tcp = stats.conn_cells(tcp_labels(direction=direction, peer="src", tls=self.tls,
                                               no_tls_reason=reason, client_id=client_id or ""))

    def opened(self, conn: ServerConn) -> None:
        self.conns.add(conn)
        self.tcp.opened()

    def closed(self, conn: ServerConn, exc: Exception | None) -> None:
        self.conns.discard(conn)
        self.tcp.closed()

    def read(self, conn: ServerConn, n: int) -> None:
        self.tcp.read.value += n

    def written(self, conn: ServerConn, n: int) -> None:
        self.tcp.written.value += n

    def proxy_error(self, conn: ServerConn, req: Request | None, status: int) -> None:
        authority = (req.authority or (req.host or b"").decode("latin-1")) if req is not None else ""
        route = self.stats.route(self.direction, authority, self.tls, conn.client_id or "", {})
        route.request.value += 1
        route.response(status, 0.0, status >= 500)
        if authority and req is not None and req.method:
            cells = route.routes.cells(req.method, req.url)
            cells.request.value += 1
            cells.response(status, 0.0)

    def refused(self, reason: str) -> None:
        self.stats.refused(self.direction, reason)


class ProxyStats:
    def __init__(self, *, cluster_domain: str = "cluster.local",
                 max_routes: int = MAX_ROUTES) -> None:
        self.metrics = proxy_metrics()
        self.registry = self.metrics.registry
        self.cluster_domain = cluster_domain
        self.max_routes = max_routes
        self._routes: dict[tuple[str, ...], RouteStats] = {}
        self._namers: dict[tuple[str, str], RouteNamer] = {}
        self._dst_routes: dict[tuple[str, ...], DstRoutes] = {}
        self._conns: dict[tuple[str, ...], ConnStats] = {}
        self._hooks: dict[tuple[str, bool, str | None], ListenerHooks] = {}
        self.refused_total = self.registry.counter(
            "refused_connections_total",
            "Connections refused, by reason: inbound tls_handshake (no valid client certificate "
            "from the trust anchors), identity_required, ...; outbound tls_untrusted (a server "
            "certificate from another trust anchor), tls_identity_mismatch (not the identity "
            "discovery promised)",
            ("direction", "reason"))

    def route(self, direction: str, authority: str, tls: str, peer_id: str,
              labels: Mapping[str, str]) -> RouteStats:
        """Cells for requests in `direction` to `authority`; `peer_id` is the server's identity
        (outbound) or the client's (inbound)."""
        reason = "" if tls == "true" else NO_TLS_REASON.get(direction, "")
        base = http_labels(direction=direction, authority=authority, tls=tls, no_tls_reason=reason,
                           client_id=peer_id if direction == "inbound" else "",
                           server_id=peer_id if direction == "outbound" else "", **_dst(labels))
        stats = self._routes.get(base)
        if stats is None:
            stats = self._routes[base] = RouteStats(self, base,
                                                    self.dst_routes(direction, authority, labels))
        return stats

    def dst_routes(self, direction: str, authority: str, labels: Mapping[str, str]) -> DstRoutes:
        """The route cells of requests in `direction` to `authority` (named canonically: `dst`)."""
        try:
            dst = canonical(parse_authority(authority), self.cluster_domain) if authority else ""
        except AuthorityError:
            dst = authority
        values = {"direction": direction, "dst": dst,
                  "dst_namespace": labels.get("dst_namespace", ""),
                  "dst_service": labels.get("dst_service", ""),
                  "dst_target_cluster": labels.get("dst_target_cluster", "")}
        key = tuple(values.values())
        routes = self._dst_routes.get(key)
        if routes is None:
            namer = self._namers.get((direction, dst))
            if namer is None:
                namer = self._namers[direction, dst] = RouteNamer(self.max_routes)
            routes = self._dst_routes[key] = DstRoutes(self.metrics, namer, values)
        return routes

    def conn(self, direction: str, tls: str, peer_id: str, labels: Mapping[str, str]) -> ConnStats:
        """Cells for connections this proxy opens (peer="dst")."""
        reason = "" if tls == "true" else NO_TLS_REASON.get(direction, "")
        return self.conn_cells(tcp_labels(direction=direction, peer="dst", tls=tls,
                                          no_tls_reason=reason,
                                          server_id=peer_id, **_dst(labels)))

    def conn_cells(self, labels: tuple[str, ...]) -> ConnStats:
        stats = self._conns.get(labels)
        if stats is None:
            stats = self._conns[labels] = ConnStats(self, labels)
        return stats

    def listener_hooks(self, direction: str, tls: bool, client_id: str | None,
                       conns: set[ServerConn]) -> ListenerHooks:
        key = (direction, tls, client_id)
        hooks = self._hooks.get(key)
        if hooks is None:
            hooks = self._hooks[key] = ListenerHooks(self, direction, tls, client_id, conns)
        return hooks

    def refused(self, direction: str, reason: str) -> None:
        self.refused_total.cell((direction, reason)).value += 1

    def render(self) -> str:
        return self.registry.render()

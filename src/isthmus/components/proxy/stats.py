"""The proxy's metric cells, looked up once per route or connection, not per request.

`ProxyStats` owns the registry (`core.proxy.metrics`): `route(...)` gives a
`RouteStats` for one (direction, authority, TLS, peer identity, destination
labels) — its request counter and, per status code, its response counter
and latency histogram; `conn(...)` gives `ConnStats` for connections the
proxy opens to one upstream; `listener_hooks(...)` counts accepted
connections. The hot path is attribute access and `+=`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from isthmus.core.proxy.metrics import (
    HistogramCell,
    ValueCell,
    http_labels,
    proxy_metrics,
    response_labels,
    tcp_labels,
)

if TYPE_CHECKING:
    from isthmus.components.proxy.http1 import Request, ServerConn

NO_TLS_REASON = {"outbound": "not_provided_by_service_discovery", "inbound": "no_tls_from_remote"}


def _dst(labels: Mapping[str, str]) -> dict[str, str]:
    return {k: labels.get(k, "") for k in ("dst_namespace", "dst_service", "dst_deployment",
                                           "dst_pod", "dst_target_cluster")}


class RouteStats:
    __slots__ = ("_base", "_metrics", "_responses", "request")

    def __init__(self, stats: ProxyStats, base: tuple[str, ...]) -> None:
        self._metrics = stats.metrics
        self._base = base
        self.request: ValueCell = stats.metrics.request_total.cell(base)
        self._responses: dict[int, tuple[ValueCell, HistogramCell]] = {}

    def response(self, status: int, latency_ms: float, failed: bool) -> None:
        cells = self._responses.get(status)
        if cells is None:
            labels = response_labels(self._base, status)
            cells = self._responses[status] = (self._metrics.response_total.cell(labels),
                                               self._metrics.response_latency_ms.cell(labels[:-1]))
        cells[0].value += 1
        cells[1].observe(latency_ms)


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

    def refused(self, reason: str) -> None:
        self.stats.refused(self.direction, reason)


class ProxyStats:
    def __init__(self) -> None:
        self.metrics = proxy_metrics()
        self.registry = self.metrics.registry
        self._routes: dict[tuple[str, ...], RouteStats] = {}
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
            stats = self._routes[base] = RouteStats(self, base)
        return stats

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

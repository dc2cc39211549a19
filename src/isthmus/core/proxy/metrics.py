"""A small, fast Prometheus registry and the proxy's metric families.

Families are declared once with their HELP text and label names;
``family.cell(label_values)`` returns the cell of one label-value tuple, made
on first use and cached, so counting a request is one dict lookup and
``cell.value += 1`` (or ``cell.observe(ms)`` for a histogram). Each cell
formats its label text once, when it is made; `Registry.render` only joins
strings.

`proxy_metrics` declares the sidecar's families with linkerd2-proxy's names
and labels (`request_total`, `response_total`, `response_latency_ms`,
`tcp_open_total`, `tcp_close_total`, `tcp_open_connections`,
`tcp_read_bytes_total`, `tcp_write_bytes_total`), and linkerd2-proxy's route
families (`route_request_total`, `route_response_total`,
`route_response_latency_ms`, labels `direction`, `dst`, `rt_route` and the
destination's `dst_namespace`, `dst_service`, `dst_target_cluster`; route
names come from `core.proxy.route_names`), so dashboards and queries written
for Linkerd work unchanged.

Promises:

* `render` is the Prometheus text exposition format 0.0.4 and passes
  ``promtool check metrics`` (apart from the lint on the `_ms` unit in
  `response_latency_ms` and `route_response_latency_ms`, names Linkerd's
  queries need);
* label values are escaped (backslash, double quote, newline); an empty label
  value is left out of the sample, which Prometheus treats the same as the
  empty value, so series that differ only in unset labels stay one series;
* histogram buckets are cumulative, ``le`` upper bounds are inclusive and
  ``+Inf`` equals ``_count``;
* families and cells render in the order they were declared and first used.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "HTTP_LABELS",
    "LATENCY_BUCKETS_MS",
    "ROUTE_LABELS",
    "TCP_LABELS",
    "CounterFamily",
    "GaugeFamily",
    "HistogramCell",
    "HistogramFamily",
    "ProxyMetrics",
    "Registry",
    "ValueCell",
    "classify",
    "http_labels",
    "proxy_metrics",
    "response_labels",
    "route_labels",
    "tcp_labels",
]

LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500,
    1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000,
)

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_bisect_left = bisect.bisect_left


def _fmt(value: float) -> str:
    if type(value) is int:
        return str(value)
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_pairs(names: Sequence[str], values: Sequence[str]) -> str:
    """``a="x",b="y"`` for the non-empty values."""
    return ",".join(f'{n}="{_escape_value(v)}"' for n, v in zip(names, values, strict=True)
                    if v)


class ValueCell:
    """One counter or gauge series: add to `value` directly."""

    __slots__ = ("_labels", "value")

    def __init__(self, labels: str) -> None:
        self.value: float = 0
        self._labels = labels

    def __repr__(self) -> str:
        return f"<ValueCell {self._labels} {_fmt(self.value)}>"

    def inc(self, n: float = 1) -> None:
        self.value += n


class HistogramCell:
    """One histogram series: `observe` a value; buckets hold per-bucket counts."""

    __slots__ = ("_bounds", "_labels", "buckets", "count", "sum")

    def __init__(self, labels: str, bounds: tuple[float, ...]) -> None:
        self._labels = labels  # `a="x",b="y"` without braces
        self._bounds = bounds
        self.buckets = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.count = 0
        self.sum: float = 0

    def __repr__(self) -> str:
        return f"<HistogramCell {{{self._labels}}} count={self.count} sum={_fmt(self.sum)}>"

    def observe(self, value: float) -> None:
        self.buckets[_bisect_left(self._bounds, value)] += 1
        self.count += 1
        self.sum += value


class _Family:
    kind = ""
    cells: dict[tuple[str, ...], Any]

    def __init__(self, name: str, help: str, label_names: Sequence[str]) -> None:
        if not _METRIC_NAME.match(name):
            raise ValueError(f"{name!r} is not a metric name")
        seen: set[str] = set()
        for label in label_names:
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise ValueError(f"{label!r} is not a label name (metric {name})")
            if label in seen:
                raise ValueError(f"label {label!r} appears twice (metric {name})")
            seen.add(label)
        self.name = name
        self.help = help
        self.label_names = tuple(label_names)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.label_names} {len(self.cells)} series>"

    def __len__(self) -> int:
        return len(self.cells)

    def _check(self, label_values: tuple[str, ...]) -> None:
        if len(label_values) != len(self.label_names):
            raise ValueError(f"{self.name} takes {len(self.label_names)} label values "
                             f"{self.label_names}, not {len(label_values)}: {label_values}")
        for v in label_values:
            if not isinstance(v, str):
                raise TypeError(f"{self.name}: label values are strings, not {v!r}")

    def render_into(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {_escape_help(self.help)}\n")
        out.append(f"# TYPE {self.name} {self.kind}\n")


class _ValueFamily(_Family):
    def __init__(self, name: str, help: str, label_names: Sequence[str]) -> None:
        super().__init__(name, help, label_names)
        self.cells: dict[tuple[str, ...], ValueCell] = {}

    def cell(self, label_values: tuple[str, ...]) -> ValueCell:
        cell = self.cells.get(label_values)
        if cell is None:
            self._check(label_values)
            pairs = _label_pairs(self.label_names, label_values)
            cell = self.cells[label_values] = ValueCell(f"{{{pairs}}}" if pairs else "")
        return cell

    def remove(self, label_values: tuple[str, ...]) -> None:
        self.cells.pop(label_values, None)

    def render_into(self, out: list[str]) -> None:
        super().render_into(out)
        name = self.name
        for cell in self.cells.values():
            out.append(f"{name}{cell._labels} {_fmt(cell.value)}\n")


class CounterFamily(_ValueFamily):
    kind = "counter"


class GaugeFamily(_ValueFamily):
    kind = "gauge"


class HistogramFamily(_Family):
    kind = "histogram"

    def __init__(self, name: str, help: str, label_names: Sequence[str],
                 buckets: Iterable[float]) -> None:
        super().__init__(name, help, label_names)
        if "le" in self.label_names:
            raise ValueError(f'a histogram cannot have a label named "le" (metric {name})')
        bounds = tuple(buckets)
        if not bounds or list(bounds) != sorted(set(bounds)) or math.inf in bounds:
            raise ValueError(f"{name}: buckets must be finite and strictly increasing")
        self.bounds = bounds
        self._le = (*(f'le="{_fmt(b)}"' for b in bounds), 'le="+Inf"')
        self.cells: dict[tuple[str, ...], HistogramCell] = {}

    def cell(self, label_values: tuple[str, ...]) -> HistogramCell:
        cell = self.cells.get(label_values)
        if cell is None:
            self._check(label_values)
            cell = self.cells[label_values] = HistogramCell(
                _label_pairs(self.label_names, label_values), self.bounds)
        return cell

    def remove(self, label_values: tuple[str, ...]) -> None:
        self.cells.pop(label_values, None)

    def render_into(self, out: list[str]) -> None:
        super().render_into(out)
        name = self.name
        les = self._le
        for cell in self.cells.values():
            labels = cell._labels
            prefix = f"{name}_bucket{{{labels}," if labels else f"{name}_bucket{{"
            running = 0
            for le, n in zip(les, cell.buckets, strict=True):
                running += n
                out.append(f"{prefix}{le}}} {running}\n")
            braces = f"{{{labels}}}" if labels else ""
            out.append(f"{name}_sum{braces} {_fmt(cell.sum)}\n")
            out.append(f"{name}_count{braces} {cell.count}\n")


class Registry:
    """Metric families in declaration order, rendered together."""

    def __init__(self) -> None:
        self.families: dict[str, _Family] = {}

    def __repr__(self) -> str:
        return f"<Registry {len(self.families)} families>"

    def _add(self, family: _Family) -> None:
        for existing in self.families:
            if family.name == existing or family.name in _suffixed(existing) \
                    or existing in _suffixed(family.name):
                raise ValueError(f"metric {family.name} clashes with {existing}")
        self.families[family.name] = family

    def counter(self, name: str, help: str, label_names: Sequence[str] = ()) -> CounterFamily:
        family = CounterFamily(name, help, label_names)
        self._add(family)
        return family

    def gauge(self, name: str, help: str, label_names: Sequence[str] = ()) -> GaugeFamily:
        family = GaugeFamily(name, help, label_names)
        self._add(family)
        return family

    def histogram(self, name: str, help: str, label_names: Sequence[str] = (),
                  buckets: Iterable[float] = LATENCY_BUCKETS_MS) -> HistogramFamily:
        family = HistogramFamily(name, help, label_names, buckets)
        self._add(family)
        return family

    def render(self) -> str:
        out: list[str] = []
        for family in self.families.values():
            family.render_into(out)
        return "".join(out)


def _suffixed(name: str) -> tuple[str, ...]:
    return (f"{name}_bucket", f"{name}_sum", f"{name}_count")


# --- the proxy's families ---------------------------------------------------------

_DST_LABELS = ("dst_namespace", "dst_service", "dst_deployment", "dst_pod", "dst_target_cluster")
_TLS_LABELS = ("tls", "no_tls_reason", "client_id", "server_id")

# direction: "inbound" | "outbound"; tls: "true" (with client_id inbound,
# server_id outbound) or "no_identity" with no_tls_reason; dst_*: the
# destination's metadata from discovery (outbound), dst_target_cluster only
# for mirrored services.
HTTP_LABELS: tuple[str, ...] = ("direction", "authority", *_TLS_LABELS, *_DST_LABELS)
# peer: "src" (the accepted connection) | "dst" (the connection the proxy opened).
TCP_LABELS: tuple[str, ...] = ("direction", "peer", "authority", *_TLS_LABELS, *_DST_LABELS)


def http_labels(*, direction: str, authority: str = "", tls: str = "true",
                no_tls_reason: str = "", client_id: str = "", server_id: str = "",
                dst_namespace: str = "", dst_service: str = "", dst_deployment: str = "",
                dst_pod: str = "", dst_target_cluster: str = "") -> tuple[str, ...]:
    """Label values in `HTTP_LABELS` order; build once per route or endpoint, not per request."""
    return (direction, authority, tls, no_tls_reason, client_id, server_id,
            dst_namespace, dst_service, dst_deployment, dst_pod, dst_target_cluster)


def tcp_labels(*, direction: str, peer: str, authority: str = "", tls: str = "true",
               no_tls_reason: str = "", client_id: str = "", server_id: str = "",
               dst_namespace: str = "", dst_service: str = "", dst_deployment: str = "",
               dst_pod: str = "", dst_target_cluster: str = "") -> tuple[str, ...]:
    """Label values in `TCP_LABELS` order (add the errno for `tcp_close_total`)."""
    return (direction, peer, authority, tls, no_tls_reason, client_id, server_id,
            dst_namespace, dst_service, dst_deployment, dst_pod, dst_target_cluster)


# Route metrics (linkerd2-proxy's `route_*` families): dst is the authority the
# request was addressed to (canonical, as discovery names it), rt_route the route
# name (`core.proxy.route_names`); the dst_* labels come from discovery (outbound).
ROUTE_LABELS: tuple[str, ...] = ("direction", "dst", "rt_route", "dst_namespace", "dst_service",
                                 "dst_target_cluster")


def route_labels(*, direction: str, dst: str, rt_route: str, dst_namespace: str = "",
                 dst_service: str = "", dst_target_cluster: str = "") -> tuple[str, ...]:
    """Label values in `ROUTE_LABELS` order; build once per route name, not per request."""
    return (direction, dst, rt_route, dst_namespace, dst_service, dst_target_cluster)


_STATUS_TEXT = tuple(str(i) for i in range(600))


def classify(status: int | None) -> str:
    """linkerd2-proxy's classification: "failure" for a 5xx or a failed stream."""
    return "failure" if status is None or status >= 500 else "success"


def response_labels(base: tuple[str, ...], status: int | None) -> tuple[str, ...]:
    """`response_total` values: `base` (HTTP labels), status_code, classification.

    `status` None is a stream that failed before a response: status_code is
    empty and the classification "failure". For `response_latency_ms` use
    ``response_labels(base, status)[:-1]``.
    """
    if status is None:
        return (*base, "", "failure")
    text = _STATUS_TEXT[status] if 0 <= status < 600 else str(status)
    return (*base, text, "failure" if status >= 500 else "success")


class ProxyMetrics:
    """The sidecar's families in one registry."""

    __slots__ = ("registry", "request_total", "response_latency_ms", "response_total",
                 "route_request_total", "route_response_latency_ms", "route_response_total",
                 "tcp_close_total", "tcp_open_connections", "tcp_open_total",
                 "tcp_read_bytes_total", "tcp_write_bytes_total")

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.request_total = registry.counter(
            "request_total", "Total count of HTTP requests.", HTTP_LABELS)
        self.response_total = registry.counter(
            "response_total", "Total count of HTTP responses.",
            (*HTTP_LABELS, "status_code", "classification"))
        self.response_latency_ms = registry.histogram(
            "response_latency_ms",
            "Elapsed times between a request's headers being received and its response "
            "stream completing",
            (*HTTP_LABELS, "status_code"))
        self.route_request_total = registry.counter(
            "route_request_total", "Total count of HTTP requests, by route.", ROUTE_LABELS)
        self.route_response_total = registry.counter(
            "route_response_total", "Total count of HTTP responses, by route.",
            (*ROUTE_LABELS, "status_code", "classification"))
        self.route_response_latency_ms = registry.histogram(
            "route_response_latency_ms",
            "Elapsed times between a request's headers being received and its response "
            "stream completing, by route",
            (*ROUTE_LABELS, "status_code"))
        self.tcp_open_total = registry.counter(
            "tcp_open_total", "Total count of opened connections", TCP_LABELS)
        self.tcp_close_total = registry.counter(
            "tcp_close_total", "Total count of closed connections", (*TCP_LABELS, "errno"))
        self.tcp_open_connections = registry.gauge(
            "tcp_open_connections", "Number of currently-open connections", TCP_LABELS)
        self.tcp_read_bytes_total = registry.counter(
            "tcp_read_bytes_total", "Total count of bytes read from peers", TCP_LABELS)
        self.tcp_write_bytes_total = registry.counter(
            "tcp_write_bytes_total", "Total count of bytes written to peers", TCP_LABELS)

    def __repr__(self) -> str:
        return f"<ProxyMetrics {self.registry!r}>"


def proxy_metrics(registry: Registry | None = None) -> ProxyMetrics:
    """Declare the proxy's families (in a new registry unless one is given)."""
    return ProxyMetrics(registry if registry is not None else Registry())

"""stat, edges and routes over samples, the way `linkerd viz` computes them.

Inputs are `Sample`s (counter increases over a window, or gauge values)
with the proxy's labels and the target labels (`namespace`, `pod`,
`deployment`, `serviceaccount`); outputs are rows ready for a table or JSON.
Which series a row reads:

* a deployment, pod or namespace row reads its own pods' **inbound**
  series (what its servers answered), as ``linkerd viz stat`` does;
* a service row reads every client's **outbound** series whose
  ``dst_service`` is that service (so a mirrored service such as
  ``web-svc-east``, which has no pods here, has numbers);
* ``--to KIND/NAME`` reads the row's outbound series whose destination
  labels name the target; ``--from KIND/NAME`` reads the source's outbound
  series whose destination labels name the row.

Success rate is successful responses over all responses (linkerd2-proxy's
classification: a 5xx or a failed stream is a failure); RPS is responses per
second; latency percentiles come from the summed ``response_latency_ms``
buckets by Prometheus' ``histogram_quantile`` interpolation; TCP_CONN is the
open-connections gauge.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from isthmus.core.viz.model import Sample

__all__ = [
    "GAUGE_NAMES",
    "HTTP_NAMES",
    "ROUTE_NAMES",
    "TCP_NAMES",
    "EdgeRow",
    "QueryError",
    "Ref",
    "RouteRow",
    "StatRow",
    "StatTarget",
    "authority_names_service",
    "edges",
    "histogram_quantile",
    "parse_ref",
    "routes",
    "stat",
]

HTTP_NAMES = ("response_total", "response_latency_ms_bucket")
ROUTE_NAMES = ("route_response_total", "route_response_latency_ms_bucket")
TCP_NAMES = ("tcp_open_total",)
GAUGE_NAMES = ("tcp_open_connections",)
QUANTILES = (0.5, 0.95, 0.99)

# kind spellings viz accepts → kind
_KINDS = {
    "deploy": "deployment", "deployment": "deployment", "deployments": "deployment",
    "po": "pod", "pod": "pod", "pods": "pod",
    "svc": "service", "service": "service", "services": "service",
    "ns": "namespace", "namespace": "namespace", "namespaces": "namespace",
}
SHORT = {"deployment": "deploy", "pod": "po", "service": "svc", "namespace": "ns"}
_SRC_LABEL = {"deployment": "deployment", "pod": "pod"}
_DST_LABEL = {"deployment": "dst_deployment", "pod": "dst_pod", "service": "dst_service"}


class QueryError(ValueError):
    """A query viz cannot answer; the message says what is wrong and what would do."""


@dataclass(frozen=True)
class Ref:
    """A resource named on the command line: ``deploy/web`` in a namespace (name may be "")."""

    kind: str
    name: str
    namespace: str

    def __str__(self) -> str:
        return f"{SHORT[self.kind]}/{self.name}" if self.name else SHORT[self.kind]


def parse_ref(text: str, namespace: str, what: str = "resource") -> Ref:
    """``deploy/web`` → Ref; unknown kinds and malformed names are `QueryError`s that say so."""
    if not text or text.strip() != text:
        raise QueryError(f'the {what} "{text}" is empty or has spaces; name one like deploy/web')
    kind_text, slash, name = text.partition("/")
    kind = _KINDS.get(kind_text.lower())
    if kind is None:
        raise QueryError(f'{what} "{text}": unknown resource type "{kind_text}"; use one of '
                         "deploy, pod (po), svc, ns")
    if slash and not name:
        raise QueryError(f'{what} "{text}" has an empty name; write TYPE/NAME like deploy/web')
    if "/" in name:
        raise QueryError(f'{what} "{text}" is not TYPE/NAME (one slash)')
    if name and not _dns_name(name):
        raise QueryError(f'{what} "{text}": "{name}" is not a valid Kubernetes name')
    return Ref(kind, name, name if kind == "namespace" and name else namespace)


def _dns_name(name: str) -> bool:
    if len(name) > 253 or not name[0].isalnum() or not name[-1].isalnum():
        return False
    return all(c.islower() or c.isdigit() or c in "-." for c in name)


# ---------------------------------------------------------------------- percentiles


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' ``histogram_quantile`` over cumulative bucket counts (``le`` → count).

    Linear interpolation inside the bucket the rank falls in; the lowest
    bucket starts at 0; a rank in the ``+Inf`` bucket answers the highest
    finite bound. None when there is nothing counted.
    """
    bounds = sorted(buckets)
    if not bounds or bounds[-1] != math.inf:
        return None
    total = buckets[math.inf]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == math.inf:
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


_LE: dict[str, float | None] = {}


def _le(text: str) -> float | None:
    """A bucket bound, parsed once per distinct text."""
    if text in _LE:
        return _LE[text]
    try:
        value: float | None = float(text)
    except ValueError:
        value = None
    if len(_LE) < 10_000:
        _LE[text] = value
    return value


@dataclass
class _Acc:
    """Sums of one row's series."""

    success: float = 0.0
    total: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)
    tcp: float = 0.0

    def add_response(self, s: Sample) -> None:
        self.total += s.value
        if s.get("classification") == "success":
            self.success += s.value

    def add_bucket(self, s: Sample) -> None:
        le = _le(s.get("le"))
        if le is not None:
            self.buckets[le] = self.buckets.get(le, 0.0) + s.value

    def latency(self) -> dict[str, float] | None:
        if self.buckets.get(math.inf, 0.0) <= 0:
            return None
        out = {}
        for q in QUANTILES:
            value = histogram_quantile(q, self.buckets)
            out[f"p{round(q * 100)}"] = round(value, 3) if value is not None else 0.0
        return out


def _fold(acc: _Acc, s: Sample, response_name: str, bucket_name: str) -> None:
    if s.name == response_name:
        acc.add_response(s)
    elif s.name == bucket_name:
        acc.add_bucket(s)


# ---------------------------------------------------------------------- stat


@dataclass(frozen=True)
class StatTarget:
    """One row to show: an object of the cluster and how many of its pods are meshed."""

    kind: str
    namespace: str
    name: str
    meshed: int = 0
    pods: int = 0


@dataclass
class StatRow:
    target: StatTarget
    success: float | None
    rps: float | None
    latency_ms: dict[str, float] | None
    tcp_conn: int | None

    def to_dict(self) -> dict[str, Any]:
        t = self.target
        return {"namespace": t.namespace, "kind": t.kind, "name": t.name,
                "meshed": f"{t.meshed}/{t.pods}", "success": self.success, "rps": self.rps,
                "latency_ms": self.latency_ms, "tcp_conn": self.tcp_conn}


Matcher = Callable[[Mapping[str, str]], bool]
# What a row reads: its direction and the labels that must equal given values.
Key = tuple[str, tuple[str, ...], tuple[str, ...]]


def _src_fields(kind: str, namespace: str, name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if kind == "namespace":
        return ("namespace",), (name,)
    label = _SRC_LABEL.get(kind)
    if label is None:
        raise QueryError(f"a {kind} cannot be a traffic source; use deploy, pod or ns")
    return ("namespace", label), (namespace, name)


def _dst_fields(kind: str, namespace: str, name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if kind == "namespace":
        return ("dst_namespace",), (name,)
    return ("dst_namespace", _DST_LABEL[kind]), (namespace, name)


def _row_key(t: StatTarget, from_: Ref | None, to: Ref | None) -> Key:
    """(direction, label names, wanted values) of the series one row reads."""
    if from_ is not None:
        src = _src_fields(from_.kind, from_.namespace, from_.name)
        dst = _dst_fields(t.kind, t.namespace, t.name)
        return "outbound", src[0] + dst[0], src[1] + dst[1]
    if to is not None:
        if t.kind == "service":
            raise QueryError("--to cannot be used with svc rows (a service sends nothing); "
                             "stat the deployments that call it instead")
        src = _src_fields(t.kind, t.namespace, t.name)
        dst = _dst_fields(to.kind, to.namespace, to.name)
        return "outbound", src[0] + dst[0], src[1] + dst[1]
    if t.kind == "service":
        return ("outbound", *_dst_fields("service", t.namespace, t.name))
    return ("inbound", *_src_fields(t.kind, t.namespace, t.name))


def stat(targets: Sequence[StatTarget], increases: Iterable[Sample], gauges: Iterable[Sample],
         window: float, *, from_: Ref | None = None, to: Ref | None = None) -> list[StatRow]:
    """One row per target, in the order given; metrics None where no traffic was seen.

    Rows are indexed by the label values they read, so each sample is looked
    up once per distinct (direction, label names), not matched against every row.
    """
    if from_ is not None and to is not None:
        raise QueryError("--from and --to cannot be used together; pick one")
    index: dict[tuple[str, tuple[str, ...]], dict[tuple[str, ...], list[int]]] = {}
    for i, t in enumerate(targets):
        direction, fields, values = _row_key(t, from_, to)
        index.setdefault((direction, fields), {}).setdefault(values, []).append(i)
    groups = list(index.items())
    accs = [_Acc() for _ in targets]
    seen = [False] * len(targets)

    def rows_of(s: Sample, want_peer: bool) -> list[int]:
        direction = s.labels.get("direction")
        found: list[int] = []
        for (want, fields), by_values in groups:
            if direction != want:
                continue
            if want_peer and s.labels.get("peer") != ("src" if want == "inbound" else "dst"):
                continue
            hit = by_values.get(tuple(s.labels.get(f) or "" for f in fields))
            if hit:
                found += hit
        return found

    for s in increases:
        if s.name not in HTTP_NAMES:
            continue
        for i in rows_of(s, False):
            _fold(accs[i], s, "response_total", "response_latency_ms_bucket")
            seen[i] = True
    for s in gauges:
        if s.name != "tcp_open_connections":
            continue
        for i in rows_of(s, True):
            accs[i].tcp += s.value
            seen[i] = True
    rows = []
    for t, acc, was_seen in zip(targets, accs, seen, strict=True):
        if not was_seen:
            rows.append(StatRow(t, None, None, None, None if t.meshed == 0 else 0))
            continue
        success = round(acc.success / acc.total, 4) if acc.total > 0 else None
        rows.append(StatRow(t, success, round(acc.total / window, 3), acc.latency(),
                            int(acc.tcp)))
    return rows


# ---------------------------------------------------------------------- edges


@dataclass
class EdgeRow:
    src: str
    dst: str
    src_namespace: str
    dst_namespace: str
    secured: bool
    client_id: str
    server_id: str
    dst_cluster: str = ""
    no_tls_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "src_namespace": self.src_namespace,
                "dst_namespace": self.dst_namespace, "secured": self.secured,
                "client_id": self.client_id, "server_id": self.server_id,
                "dst_cluster": self.dst_cluster, "no_tls_reason": self.no_tls_reason}


def edges(kind: str, namespace: str | None, increases: Iterable[Sample], gauges: Iterable[Sample],
          identity_of: Callable[[str, str], str]) -> list[EdgeRow]:
    """Who talks to whom among `kind` (deployment or pod), from the sources' outbound series.

    An edge is seen when its outbound series counted responses or opened
    connections in the window, or holds connections open now. The
    destination is the peer's deployment (pod), else the service the
    traffic was addressed to — so traffic leaving through a gateway shows
    the mirrored service with its target cluster. `identity_of(sa, ns)` is
    the client's identity; the server's is what its certificate said.
    `namespace` None: every namespace; else edges with either end in it.
    """
    if kind not in _SRC_LABEL:
        raise QueryError(f"edges are between deployments or pods, not {kind}s; use deploy or po")
    src_label, dst_label = _SRC_LABEL[kind], _DST_LABEL[kind]
    found: dict[tuple[str, str, str, str, str], EdgeRow] = {}
    for s in (*increases, *gauges):
        if s.get("direction") != "outbound" or s.value <= 0:
            continue
        if s.name not in ("response_total", "tcp_open_total", "tcp_open_connections"):
            continue
        if s.name == "tcp_open_connections" and s.get("peer") != "dst":
            continue
        src, src_ns = s.get(src_label), s.get("namespace")
        dst = s.get(dst_label) or s.get("dst_service")
        dst_ns, cluster = s.get("dst_namespace"), s.get("dst_target_cluster")
        if not src or not dst:
            continue
        if namespace is not None and namespace not in (src_ns, dst_ns):
            continue
        key = (src_ns, src, dst_ns, dst, cluster)
        secured = s.get("tls") == "true"
        row = found.get(key)
        if row is None:
            sa = s.get("serviceaccount")
            found[key] = EdgeRow(src, dst, src_ns, dst_ns, secured,
                                 identity_of(sa, src_ns) if sa else "", s.get("server_id"),
                                 cluster, "" if secured else s.get("no_tls_reason"))
        else:
            if not secured:
                row.secured = False
                row.no_tls_reason = row.no_tls_reason or s.get("no_tls_reason")
            row.server_id = row.server_id or s.get("server_id")
    return sorted(found.values(), key=lambda r: (r.src_namespace, r.src, r.dst_namespace, r.dst,
                                                 r.dst_cluster))


# ---------------------------------------------------------------------- routes


@dataclass
class RouteRow:
    route: str
    authority: str
    success: float | None
    rps: float
    latency_ms: dict[str, float] | None

    def to_dict(self) -> dict[str, Any]:
        return {"route": self.route, "authority": self.authority, "success": self.success,
                "rps": self.rps, "latency_ms": self.latency_ms}


def authority_names_service(authority: str, name: str, namespace: str) -> bool:
    """Whether ``web-svc``, ``web-svc.emojivoto``, ``web-svc.emojivoto.svc[.domain]`` (with a port) name the service."""
    host = authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
    parts = host.split(".")
    if parts[0] != name:
        return False
    return len(parts) == 1 or (parts[1] == namespace and (len(parts) == 2 or parts[2] == "svc"))


def routes(increases: Iterable[Sample], match: Matcher, window: float) -> list[RouteRow]:
    """Per-route rows (``rt_route``) of the route series `match` accepts, busiest first."""
    accs: dict[str, _Acc] = {}
    authorities: dict[str, str] = {}
    for s in increases:
        if s.name not in ROUTE_NAMES or not match(s.labels):
            continue
        route = s.get("rt_route") or "[DEFAULT]"
        acc = accs.setdefault(route, _Acc())
        _fold(acc, s, "route_response_total", "route_response_latency_ms_bucket")
        authorities.setdefault(route, s.get("dst"))
    rows = [RouteRow(route, authorities.get(route, ""),
                     round(acc.success / acc.total, 4) if acc.total > 0 else None,
                     round(acc.total / window, 3), acc.latency())
            for route, acc in accs.items()]
    return sorted(rows, key=lambda r: (-r.rps, r.route))

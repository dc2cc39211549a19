"""`viz top`: the busiest paths, from a stream of tap events (``linkerd viz top``).

Feed `Top.add` the JSON tap events (`TapEvent.to_dict` shape) of one or
more proxies; `Top.rows()` is one row per (source, destination, method,
path) — the source and destination named by their pod (else deployment,
service, address) — with the request count, the best, worst and last
response latency (ms, time to response headers) and the success rate (a
response under 500 is a success, as linkerd2-proxy classifies). Only
requests seen from their request event are counted, so joining a stream
midway counts nothing twice. Bounded: at most `max_rows` paths and
`max_open` requests in flight are remembered (the oldest go first).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

__all__ = ["Top", "TopRow"]


@dataclass
class TopRow:
    source: str
    destination: str
    method: str
    path: str
    count: int = 0
    best_ms: float | None = None
    worst_ms: float | None = None
    last_ms: float | None = None
    successes: int = 0

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.count if self.count else None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "destination": self.destination, "method": self.method,
                "path": self.path, "count": self.count, "best_ms": self.best_ms,
                "worst_ms": self.worst_ms, "last_ms": self.last_ms,
                "success": self.success_rate}


def _peer(end: dict[str, Any]) -> str:
    meta = end.get("metadata") or {}
    for key in ("pod", "deployment", "service"):
        if meta.get(key):
            return f"{key if key != 'deployment' else 'deploy'}/{meta[key]}"
    return str(end.get("ip", "?"))


def _ms(duration: Any) -> float | None:
    """A tap duration (``"0.001234s"`` or ``{"seconds", "nanos"}``) in milliseconds."""
    if isinstance(duration, str) and duration.endswith("s"):
        try:
            return float(duration[:-1]) * 1000
        except ValueError:
            return None
    if isinstance(duration, dict):
        return (duration.get("seconds", 0) * 1000) + duration.get("nanos", 0) / 1e6
    return None


class Top:
    def __init__(self, max_rows: int = 1000, max_open: int = 10_000) -> None:
        self._rows: OrderedDict[tuple[str, str, str, str], TopRow] = OrderedDict()
        self._open: OrderedDict[tuple[Any, ...], tuple[str, str, str, str]] = OrderedDict()
        self._max_rows = max_rows
        self._max_open = max_open

    def __repr__(self) -> str:
        return f"<Top rows={len(self._rows)} open={len(self._open)}>"

    def add(self, event: dict[str, Any]) -> None:
        init = event.get("requestInitEvent")
        if init is not None:
            key = (_peer(event.get("source") or {}), _peer(event.get("destination") or {}),
                   str(init.get("method", "")), str(init.get("path", "")).split("?", 1)[0])
            self._open[self._id(event, init)] = key
            while len(self._open) > self._max_open:
                self._open.popitem(last=False)
            return
        rsp = event.get("responseInitEvent")
        if rsp is not None:
            ident = self._id(event, rsp)
            if ident in self._open:
                self._count(self._open.pop(ident), _ms(rsp.get("sinceRequestInit")), rsp.get("httpStatus"))

    @staticmethod
    def _id(event: dict[str, Any], part: dict[str, Any]) -> tuple[Any, ...]:
        ident = part.get("id") or {}
        src = event.get("source") or {}
        return (src.get("ip"), src.get("port"), event.get("proxyDirection"),
                ident.get("base"), ident.get("stream"))

    def _count(self, key: tuple[str, str, str, str], latency: float | None, status: Any) -> None:
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = TopRow(*key)
            while len(self._rows) > self._max_rows:
                self._rows.popitem(last=False)
        row.count += 1
        if isinstance(status, int) and status < 500:
            row.successes += 1
        if latency is not None:
            row.last_ms = round(latency, 3)
            row.best_ms = row.last_ms if row.best_ms is None else min(row.best_ms, row.last_ms)
            row.worst_ms = row.last_ms if row.worst_ms is None else max(row.worst_ms, row.last_ms)

    def rows(self, limit: int | None = None) -> list[TopRow]:
        ordered = sorted(self._rows.values(), key=lambda r: (-r.count, r.source, r.path))
        return ordered[:limit] if limit is not None else ordered

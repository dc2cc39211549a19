"""Tap inside the proxy: requests offered to subscribers, at no cost when nobody taps.

`TapHub` wraps `core.proxy.tap.Tap` with this proxy's own workload labels
(filters like `deploy/vote-bot` match against them). `TapPoint` is kept by
a route; the route calls it only when `hub.active`, so an untapped request
pays one attribute check.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import httptools

from isthmus.core.proxy.tap import Tap, TapEvent, TapFilter, TapMeta

if TYPE_CHECKING:
    from isthmus.components.proxy.http1 import Request, ServerConn

_KIND_LABEL = {"deploy": "deployment", "deployment": "deployment", "sts": "statefulset",
               "statefulset": "statefulset", "ds": "daemonset", "daemonset": "daemonset",
               "po": "pod", "pod": "pod"}


class TapHub:
    def __init__(self, *, namespace: str = "", workload: tuple[str, str] | None = None,
                 pod: str = "") -> None:
        self.tap = Tap()
        labels: dict[str, str] = {}
        if namespace:
            labels["namespace"] = namespace
        if pod:
            labels["pod"] = pod
        if workload is not None:
            labels[_KIND_LABEL.get(workload[0], workload[0])] = workload[1]
        self.own_labels = labels

    @property
    def active(self) -> bool:
        return self.tap.active

    def subscribe(self, tap_filter: TapFilter, sink: Callable[[bytes], None], *,
                  as_json: bool = False) -> Callable[[], None]:
        """Send matching events to `sink` as lines (text or JSON); returns the unsubscribe call."""
        if as_json:
            import orjson  # only while someone taps as JSON (a proxy's RSS budget)

            def deliver(event: TapEvent) -> None:
                sink(orjson.dumps(event.to_dict()) + b"\n")
        else:
            def deliver(event: TapEvent) -> None:
                sink(event.line().encode() + b"\n")

        sub = self.tap.subscribe(tap_filter, deliver)
        return sub.close


class TapPoint:
    """What one route knows for tap: its direction, TLS state and the destination's labels."""

    __slots__ = ("direction", "dst_labels", "endpoint", "hub", "tls")

    def __init__(self, hub: TapHub, direction: str, endpoint: Any, dst_labels: Mapping[str, str],
                 tls: str) -> None:
        self.hub = hub
        self.direction = "outbound" if direction == "out" else "inbound"
        self.endpoint = endpoint
        self.tls = tls
        labels = {k.removeprefix("dst_"): v for k, v in dst_labels.items() if v}
        self.dst_labels = labels

    def request(self, req: Request, conn: ServerConn) -> None:
        if req.tap is not None:
            return  # a retry: one tap stream per request
        outbound = self.direction == "outbound"
        if outbound:
            e = self.endpoint
            dst_ip, dst_port = (e.addr, e.proxy_port or e.port) if e is not None else ("", 0)
            src_labels, dst_labels = self.hub.own_labels, self.dst_labels
        else:
            dst_ip, dst_port = conn.local
            src_labels, dst_labels = {}, self.hub.own_labels
        url = req.url
        if url[:1] != b"/":
            parsed = httptools.parse_url(url)
            url = (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"")
        meta = TapMeta(direction=self.direction, src_ip=conn.peer[0], src_port=conn.peer[1],
                       dst_ip=dst_ip, dst_port=dst_port, tls=self.tls,
                       method=req.method.decode("latin-1"), authority=req.authority or "",
                       path=url.decode("latin-1"), src_labels=src_labels, dst_labels=dst_labels)
        req.tap = self.hub.tap.start(meta, time.monotonic())

    def response(self, req: Request, conn: ServerConn) -> None:
        tapped = req.tap
        if tapped is None:
            return
        now = time.monotonic()
        if tapped.responded is None and req.rsp_started:
            tapped.response(req.status, now)  # an answer of the proxy's own
        tapped.end(req.rsp_bytes, now)
        req.tap = None

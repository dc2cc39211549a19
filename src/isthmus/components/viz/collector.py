"""The metrics collector: finds meshed pods through the API and scrapes their proxies.

A pod is a target while it is Running with a pod IP, carries the label
injection sets (`isthmus.io/control-plane-ns`) and has the `isthmus-proxy`
container (the control plane's own pods have the label, not the proxy): its proxy's admin port
(4191) `/metrics` is read every `interval` seconds. The service-mirror pods
(label `app=isthmus-service-mirror`) are targets too, on 9999, for the
gateway probe metrics. Every scrape goes into that target's
`TargetHistory` with the target labels of docs/viz.md.

A scrape that fails — refused, timed out, an HTTP error, text that is not
the exposition format — is counted (`viz_scrapes_total{result="error"}`)
and logged at debug; the target keeps its history and is tried again next
round. A pod that is gone stops being scraped; its history is kept for the
hour it can still answer for, then dropped.

Scrapes of one round run concurrently (at most `concurrency` at a time)
over one aiohttp session; a round that takes longer than the interval
delays the next instead of piling up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from isthmus.core.viz.exposition import ExpositionError, ExpositionParser
from isthmus.core.viz.history import TargetHistory
from isthmus.core.viz.model import Sample

__all__ = ["MESHED_LABEL", "MIRROR_APP", "Collector", "ScrapeTarget", "target_of"]

log = logging.getLogger("isthmus.viz.collector")

MESHED_LABEL = "isthmus.io/control-plane-ns"
PROXY_CONTAINER = "isthmus-proxy"  # the control plane's own pods carry MESHED_LABEL but no proxy
PROXY_DEPLOYMENT_LABEL = "isthmus.io/proxy-deployment"
MIRROR_APP = "isthmus-service-mirror"
PROXY_ADMIN_PORT = 4191
MIRROR_ADMIN_PORT = 9999
RETENTION = 3600.0 + 120.0

# The families viz reads; everything else in a scrape is skipped while parsing.
SCRAPED_NAMES = (
    "response_total", "response_latency_ms_bucket", "tcp_open_total", "tcp_open_connections",
    "route_response_total", "route_response_latency_ms_bucket",
    "gateway_alive", "gateway_latency", "gateway_probes_total", "gateway_probes",
)


@dataclass
class ScrapeTarget:
    key: tuple[str, str]  # (namespace, pod)
    url: str
    labels: dict[str, str]
    kind: str  # "proxy" | "mirror"
    history: TargetHistory = field(repr=False)
    active: bool = True
    last_error: str = ""


def target_of(pod: Mapping[str, Any]) -> tuple[str, dict[str, str], str] | None:
    """(url, target labels, kind) of a pod worth scraping, else None."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = pod.get("status") or {}
    ip = status.get("podIP")
    if not ip or status.get("phase") != "Running" or meta.get("deletionTimestamp"):
        return None
    containers = (pod.get("spec") or {}).get("containers") or []
    if MESHED_LABEL in labels and any(c.get("name") == PROXY_CONTAINER for c in containers):
        kind, port = "proxy", PROXY_ADMIN_PORT
    elif labels.get("app") == MIRROR_APP:
        kind, port = "mirror", MIRROR_ADMIN_PORT
    else:
        return None
    target = {"namespace": meta.get("namespace") or "", "pod": meta.get("name") or "",
              "serviceaccount": (pod.get("spec") or {}).get("serviceAccountName") or "default"}
    if labels.get(PROXY_DEPLOYMENT_LABEL):
        target["deployment"] = labels[PROXY_DEPLOYMENT_LABEL]
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}/metrics", target, kind


class Collector:
    def __init__(self, *, interval: float = 10.0, timeout: float = 5.0, concurrency: int = 64,
                 clock: Callable[[], float] = time.time) -> None:
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self.targets: dict[tuple[str, str], ScrapeTarget] = {}
        self.scrapes = {"ok": 0, "error": 0}
        self.last_round_seconds = 0.0
        self.rounds = 0
        self.first_scrape: float | None = None  # clock time of the first round
        self._parser = ExpositionParser(SCRAPED_NAMES)
        self._limit = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        active = sum(t.active for t in self.targets.values())
        return f"<Collector targets={active}/{len(self.targets)} rounds={self.rounds}>"

    # --- discovery -------------------------------------------------------------------------

    def on_pod(self, event: str, pod: Mapping[str, Any]) -> None:
        """An informer's callback: add, update or retire the pod's target."""
        meta = pod.get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name") or "")
        found = None if event == "DELETED" else target_of(pod)
        current = self.targets.get(key)
        if found is None:
            if current is not None:
                current.active = False
            return
        url, labels, kind = found
        if current is None or current.labels != labels:
            history = current.history if current is not None and current.url == url else \
                TargetHistory(labels)
            self.targets[key] = ScrapeTarget(key, url, labels, kind, history)
        else:
            current.url, current.active = url, True

    # --- scraping --------------------------------------------------------------------------

    async def _scrape(self, target: ScrapeTarget) -> None:
        assert self._session is not None
        async with self._limit:
            try:
                async with self._session.get(target.url) as response:
                    if response.status != 200:
                        raise ExpositionError(f"HTTP {response.status}")
                    text = await response.text()
                values = self._parser.parse(text)
            except (TimeoutError, aiohttp.ClientError, OSError, ExpositionError, UnicodeDecodeError) as e:
                self.scrapes["error"] += 1
                target.last_error = str(e) or type(e).__name__
                log.debug("scrape of %s failed: %s", target.url, target.last_error)
                return
        target.history.record(self.clock(), values)
        target.last_error = ""
        self.scrapes["ok"] += 1

    async def scrape_round(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=0, force_close=False),
                trust_env=False)
        started = time.monotonic()
        if self.first_scrape is None:
            self.first_scrape = self.clock()
        await asyncio.gather(*(self._scrape(t) for t in list(self.targets.values()) if t.active))
        self.last_round_seconds = time.monotonic() - started
        self.rounds += 1
        now = self.clock()
        for key, t in list(self.targets.items()):
            seen = t.history.last_seen
            if not t.active and (seen is None or now - seen > RETENTION):
                del self.targets[key]

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                started = time.monotonic()
                await self.scrape_round()
                delay = max(0.0, self.interval - (time.monotonic() - started))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- reading ---------------------------------------------------------------------------

    def histories(self) -> Iterable[ScrapeTarget]:
        return self.targets.values()

    def render_metrics(self) -> str:
        active = sum(t.active for t in self.targets.values())
        series = sum(t.history.series_count for t in self.targets.values())
        return (
            "# HELP viz_scrapes_total Scrapes of proxies and mirrors, by result.\n"
            "# TYPE viz_scrapes_total counter\n"
            f'viz_scrapes_total{{result="ok"}} {self.scrapes["ok"]}\n'
            f'viz_scrapes_total{{result="error"}} {self.scrapes["error"]}\n'
            "# HELP viz_scrape_targets Pods being scraped.\n# TYPE viz_scrape_targets gauge\n"
            f"viz_scrape_targets {active}\n"
            "# HELP viz_series Series held in the history.\n# TYPE viz_series gauge\n"
            f"viz_series {series}\n"
            "# HELP viz_scrape_round_seconds Duration of the last scrape round.\n"
            "# TYPE viz_scrape_round_seconds gauge\n"
            f"viz_scrape_round_seconds {self.last_round_seconds:.6f}\n")


class EmbeddedSource:
    """`MetricsSource` over the collector's history.

    While the collector is younger than a window, increases cover only the
    time since its first scrape; they are scaled up to the window (as
    Prometheus' `increase` extrapolates a series to the window's edges), so
    a rate right after viz starts is not understated by the missing time.
    """

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def __repr__(self) -> str:
        return f"<EmbeddedSource {self.collector!r}>"

    async def increases(self, names: Sequence[str], window: float,
                        at: float | None = None) -> list[Sample]:
        end = self.collector.clock() if at is None else at
        wanted = frozenset(names)
        out: list[Sample] = []
        for t in self.collector.histories():
            out += t.history.increases(wanted, end - window, end)
        first = self.collector.first_scrape
        if first is not None and end - window < first < end:
            scale = window / (end - first)
            out = [Sample(s.name, s.labels, s.value * scale) for s in out]
        return out

    async def gauges(self, names: Sequence[str]) -> list[Sample]:
        wanted = frozenset(names)
        out: list[Sample] = []
        for t in self.collector.histories():
            if t.active:
                out += t.history.latest(wanted)
        return out

    async def close(self) -> None:
        return None

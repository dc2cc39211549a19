"""`PrometheusSource`: viz's `MetricsSource` over an existing Prometheus.

For a Prometheus that scrapes with `isthmus viz prometheus-config`'s jobs
(so its series carry the target labels `namespace`, `pod`, `deployment`,
`serviceaccount`, plus its own `job` and `instance`), this answers the two
questions every viz query asks, through the HTTP API's instant queries
(`GET <url>/api/v1/query`):

- `increases(names, window, at)`: one query `increase(<name>[<window>])` per
  name (concurrently; `time=<at>` when given), every raw series with all its
  labels. PromQL drops the metric name from a function's result, so the name
  is the query's.
- `gauges(names)`: one plain instant query `<name>` per name.

**Extrapolation.** Prometheus' `increase` extrapolates: it takes the first
and last samples inside the window and stretches their difference to the
window's edges (by at most 1.1 average scrape intervals each side, and not
below zero for a counter). The embedded collector, once it has a window of
history, does not extrapolate: its increase is the value at the last scrape
at or before the window's end minus the value at the last scrape at or
before its start. Both estimate the
count over the whole window, and for steady traffic they differ by the
traffic of about one scrape interval of each (where the samples fall): over
a window W with scrape intervals i_prom and i_viz, RPS agree within roughly
(i_prom + i_viz) / W relative, and success rates — ratios of series of the
same targets, scraped at the same instants — closer still. Viz uses
Prometheus' answer as it is (no attempt to undo the extrapolation, which
would need every raw sample): it is what the Prometheus' own users see.
Increases are fractional for that reason; a series born inside the window
is extrapolated only down to zero.

Errors — Prometheus unreachable, timing out, refusing a query, or answering
something that is not its API — raise `SourceError` with one line naming
the URL and what to do.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from isthmus.components.viz.source import SourceError
from isthmus.core.viz.model import Sample
from isthmus.resources.prometheus_config import format_duration

__all__ = ["PrometheusSource", "increase_query"]

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def _check_name(name: str) -> str:
    if not _METRIC_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a Prometheus metric name")
    return name


def increase_query(name: str, window: float) -> str:
    """``increase(response_total[60s])``; windows are whole milliseconds."""
    if not (math.isfinite(window) and window > 0):
        raise ValueError(f"window {window!r} must be a positive number of seconds")
    return f"increase({_check_name(name)}[{format_duration(window)}])"


class PrometheusSource:
    def __init__(self, url: str, *, timeout: float = 10.0,
                 session: aiohttp.ClientSession | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise SourceError(f"--prometheus-url {url!r} is not a Prometheus URL: give "
                              "http(s)://HOST:PORT[/PREFIX], e.g. http://127.0.0.1:9090")
        self.url = url.rstrip("/")
        self._timeout = timeout
        self._session = session
        self._own_session = session is None
        self.queries = 0

    def __repr__(self) -> str:
        return f"<PrometheusSource {self.url} queries={self.queries}>"

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # trust_env=False: a pod's HTTP_PROXY points at its sidecar, never at Prometheus.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout), trust_env=False)
        return self._session

    async def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """The instant vector `promql` evaluates to (at `at`, else now), as Prometheus sent it."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        endpoint = f"{self.url}/api/v1/query"
        self.queries += 1
        try:
            async with self._http().get(endpoint, params=params) as response:
                body = await response.read()
                status = response.status
        except TimeoutError:
            raise SourceError(f"Prometheus at {self.url} did not answer within {self._timeout:g}s "
                              f"(query {promql}); check that it is up and not overloaded") from None
        except (aiohttp.ClientError, OSError) as e:
            raise SourceError(f"cannot reach Prometheus at {self.url}: {e or type(e).__name__}; "
                              "check --prometheus-url and that Prometheus is running") from None
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or answer.get("status") not in ("success", "error"):
            raise SourceError(f"{self.url} is not a Prometheus HTTP API: {endpoint} answered "
                              f"HTTP {status} with something else than its JSON; check --prometheus-url")
        if answer["status"] == "error" or status != 200:
            raise SourceError(f"Prometheus at {self.url} refused the query {promql}: "
                              f"{answer.get('errorType', 'error')}: {answer.get('error', f'HTTP {status}')}")
        data = answer.get("data")
        if not isinstance(data, dict) or data.get("resultType") != "vector" \
                or not isinstance(data.get("result"), list):
            raise SourceError(f"Prometheus at {self.url} answered the query {promql} with "
                              f"{data.get('resultType') if isinstance(data, dict) else 'no data'} "
                              "where an instant vector was expected")
        return data["result"]

    def _samples(self, name: str, result: list[dict[str, Any]]) -> list[Sample]:
        out = []
        for item in result:
            try:
                labels = {str(k): str(v) for k, v in item["metric"].items() if k != "__name__"}
                value = float(item["value"][1])
            except (KeyError, IndexError, TypeError, ValueError, AttributeError):
                raise SourceError(f"Prometheus at {self.url} answered a series of {name} "
                                  f"without labels and a value: {item!r:.200}") from None
            if not math.isnan(value):
                out.append(Sample(name, labels, value))
        return out

    async def increases(self, names: Sequence[str], window: float,
                        at: float | None = None) -> list[Sample]:
        queries = [increase_query(name, window) for name in names]
        results = await asyncio.gather(*(self.query(q, at) for q in queries))
        return [s for name, result in zip(names, results, strict=True) for s in self._samples(name, result)]

    async def gauges(self, names: Sequence[str]) -> list[Sample]:
        results = await asyncio.gather(*(self.query(_check_name(name)) for name in names))
        return [s for name, result in zip(names, results, strict=True) for s in self._samples(name, result)]

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

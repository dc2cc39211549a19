"""`PrometheusSource` against an HTTP server answering as Prometheus' query API does.

What it sends (one instant query per name, `increase(name[window])`,
`time=` when asked for a past instant), what it makes of the answers (every
series with all its labels, the name from the query), and each way a
Prometheus can fail it: refused, too slow, not Prometheus, a refused query,
an answer of the wrong type. A real Prometheus answers in
tests/e2e/test_viz_prometheus.py.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from isthmus.components.viz.prometheus import PrometheusSource, increase_query
from isthmus.components.viz.source import MetricsSource, SourceError
from isthmus.core.viz.model import Sample


class FakePrometheus:
    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.answer: Any = None  # (status, body) for every query, else the vectors below
        self.delay = 0.0

    async def query(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(dict(request.query))
        await asyncio.sleep(self.delay)
        if self.answer is not None:
            status, body = self.answer
            if isinstance(body, str):
                return web.Response(status=status, text=body, content_type="text/html")
            return web.json_response(body, status=status)
        q = request.query["query"]
        if q.startswith("increase(response_total["):
            result = [
                {"metric": {"direction": "inbound", "classification": "success", "namespace": "emojivoto",
                            "pod": "web-1", "deployment": "web", "job": "isthmus-proxy",
                            "instance": "127.9.64.3:4191"}, "value": [1700000000.0, "117.93"]},
                {"metric": {"direction": "inbound", "classification": "failure", "namespace": "emojivoto",
                            "pod": "web-1"}, "value": [1700000000.0, "NaN"]},
            ]
        elif q.startswith("increase(response_latency_ms_bucket["):
            result = [{"metric": {"le": "+Inf", "pod": "web-1"}, "value": [1700000000.0, "120"]}]
        elif q == "tcp_open_connections":
            result = [{"metric": {"__name__": "tcp_open_connections", "peer": "src", "pod": "web-1"},
                       "value": [1700000000.0, "3"]}]
        else:
            result = []
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})


@pytest.fixture
async def prometheus() -> AsyncIterator[tuple[FakePrometheus, str]]:
    fake = FakePrometheus()
    app = web.Application()
    app.router.add_get("/prom/api/v1/query", fake.query)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield fake, f"http://127.0.0.1:{port}/prom/"
    await runner.cleanup()


async def test_increases_one_query_per_name_every_series_with_its_labels(
        prometheus: tuple[FakePrometheus, str]) -> None:
    fake, url = prometheus
    source: MetricsSource = PrometheusSource(url)
    try:
        samples = await source.increases(["response_total", "response_latency_ms_bucket"], 60.0,
                                          at=1700000000.25)
    finally:
        await source.close()
    assert sorted((s["query"], s["time"]) for s in fake.seen) == [
        ("increase(response_latency_ms_bucket[60s])", "1700000000.250"),
        ("increase(response_total[60s])", "1700000000.250")]
    assert samples == [
        Sample("response_total", {"direction": "inbound", "classification": "success",
                                   "namespace": "emojivoto", "pod": "web-1", "deployment": "web",
                                   "job": "isthmus-proxy", "instance": "127.9.64.3:4191"}, 117.93),
        # The NaN series (no samples to extrapolate from) is left out.
        Sample("response_latency_ms_bucket", {"le": "+Inf", "pod": "web-1"}, 120.0),
    ]


async def test_gauges_are_plain_instant_queries_now(prometheus: tuple[FakePrometheus, str]) -> None:
    fake, url = prometheus
    source = PrometheusSource(url)
    try:
        samples = await source.gauges(["tcp_open_connections"])
        assert await source.increases([], 60.0) == []
    finally:
        await source.close()
    assert fake.seen == [{"query": "tcp_open_connections"}]  # no time=: now
    assert samples == [Sample("tcp_open_connections", {"peer": "src", "pod": "web-1"}, 3.0)]
    assert repr(source).startswith("<PrometheusSource http://127.0.0.1:")


def test_queries_are_made_only_of_metric_names_and_positive_windows() -> None:
    assert increase_query("route_response_total", 600) == "increase(route_response_total[600s])"
    assert increase_query("response_total", 1.5) == "increase(response_total[1500ms])"
    for bad in ('response_total{pod="x"}', "rate(x[1m])", "", "1abc"):
        with pytest.raises(ValueError, match="is not a Prometheus metric name"):
            increase_query(bad, 60)
    with pytest.raises(ValueError, match="must be a positive number of seconds"):
        increase_query("response_total", 0)


@pytest.mark.parametrize("url", ["127.0.0.1:9090", "ftp://127.0.0.1:9090", "http://", "http://h:1/?q=1"])
def test_a_url_that_is_not_one_is_refused(url: str) -> None:
    with pytest.raises(SourceError, match=r"is not a Prometheus URL: give http\(s\)://HOST:PORT"):
        PrometheusSource(url)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_unreachable_prometheus_is_a_source_error_naming_the_url() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    source = PrometheusSource(url)
    try:
        with pytest.raises(SourceError) as e:
            await source.increases(["response_total"], 60)
    finally:
        await source.close()
    assert str(e.value).startswith(f"cannot reach Prometheus at {url}: ")
    assert str(e.value).endswith("check --prometheus-url and that Prometheus is running")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("answer", "message"), [
    ((200, "<html>Grafana</html>"),
     "{url} is not a Prometheus HTTP API: {url}/api/v1/query answered HTTP 200 with something else "
     "than its JSON; check --prometheus-url"),
    ((404, "404 page not found"), "{url} is not a Prometheus HTTP API: {url}/api/v1/query answered HTTP 404"),
    ((400, {"status": "error", "errorType": "bad_data", "error": "1:10: parse error: unexpected"}),
     "Prometheus at {url} refused the query tcp_open_connections: bad_data: 1:10: parse error: unexpected"),
    ((503, {"status": "error", "errorType": "unavailable", "error": "TSDB not ready"}),
     "Prometheus at {url} refused the query tcp_open_connections: unavailable: TSDB not ready"),
    ((200, {"status": "success", "data": {"resultType": "matrix", "result": []}}),
     "Prometheus at {url} answered the query tcp_open_connections with matrix where an instant "
     "vector was expected"),
    ((200, {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}}),
     "Prometheus at {url} answered a series of tcp_open_connections without labels and a value"),
])
async def test_answers_that_are_not_a_vector_are_source_errors(
        prometheus: tuple[FakePrometheus, str], answer: Any, message: str) -> None:
    fake, url = prometheus
    fake.answer = answer
    source = PrometheusSource(url)
    try:
        with pytest.raises(SourceError) as e:
            await source.gauges(["tcp_open_connections"])
    finally:
        await source.close()
    assert str(e.value).startswith(message.format(url=url.rstrip("/")))


async def test_a_slow_prometheus_times_out_with_a_clear_message(prometheus: tuple[FakePrometheus, str]) -> None:
    fake, url = prometheus
    fake.delay = 2.0
    source = PrometheusSource(url, timeout=0.2)
    try:
        with pytest.raises(SourceError, match=r"did not answer within 0.2s \(query tcp_open_connections\)"):
            await source.gauges(["tcp_open_connections"])
    finally:
        await source.close()

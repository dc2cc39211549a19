"""The collector against real HTTP targets: a proxy's registry, a target answering garbage, one gone."""

from __future__ import annotations

import socket

from aiohttp import web

from isthmus.components.viz.collector import Collector, EmbeddedSource, target_of
from isthmus.core.proxy.metrics import http_labels, proxy_metrics, response_labels


def _pod(name: str, ip: str, *, meshed: bool = True, phase: str = "Running") -> dict:
    labels = {"isthmus.io/proxy-deployment": "web"}
    if meshed:
        labels["isthmus.io/control-plane-ns"] = "isthmus"
    return {"metadata": {"name": name, "namespace": "emojivoto", "labels": labels},
            "spec": {"serviceAccountName": "web",
                     "containers": [{"name": "web"}, {"name": "isthmus-proxy"}]},
            "status": {"podIP": ip, "phase": phase}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _serve(handler) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def test_target_of_keeps_running_meshed_pods_and_mirrors_only():
    url, labels, kind = target_of(_pod("web-1", "127.9.0.5"))
    assert (url, kind) == ("http://127.9.0.5:4191/metrics", "proxy")
    assert labels == {"namespace": "emojivoto", "pod": "web-1", "deployment": "web",
                      "serviceaccount": "web"}
    assert target_of(_pod("web-1", "127.9.0.5", meshed=False)) is None
    assert target_of(_pod("web-1", "127.9.0.5", phase="Pending")) is None
    control_plane = _pod("identity-1", "127.9.0.5")
    control_plane["spec"]["containers"] = [{"name": "identity"}]  # the label, no proxy
    assert target_of(control_plane) is None
    mirror = {"metadata": {"name": "m", "namespace": "isthmus-multicluster",
                           "labels": {"app": "isthmus-service-mirror"}},
              "spec": {}, "status": {"podIP": "127.9.0.6", "phase": "Running"}}
    assert target_of(mirror)[0] == "http://127.9.0.6:9999/metrics"


async def test_scrapes_count_bad_targets_and_keep_history():
    metrics = proxy_metrics()
    base = http_labels(direction="inbound", tls="true")
    cell = metrics.response_total.cell(response_labels(base, 200))

    async def good(request: web.Request) -> web.Response:
        return web.Response(text=metrics.registry.render())

    async def garbage(request: web.Request) -> web.Response:
        return web.Response(text="<html>not metrics</html>")

    good_runner, good_port = await _serve(good)
    bad_runner, bad_port = await _serve(garbage)
    now = [1000.0]
    collector = Collector(interval=10, timeout=2, clock=lambda: now[0])
    try:
        collector.on_pod("ADDED", _pod("web-1", "127.0.0.1"))
        collector.on_pod("ADDED", _pod("web-2", "127.0.0.1"))
        collector.on_pod("ADDED", _pod("web-3", "127.0.0.1"))
        collector.targets["emojivoto", "web-1"].url = f"http://127.0.0.1:{good_port}/metrics"
        collector.targets["emojivoto", "web-2"].url = f"http://127.0.0.1:{bad_port}/metrics"
        collector.targets["emojivoto", "web-3"].url = f"http://127.0.0.1:{_free_port()}/metrics"
        cell.value = 10
        await collector.scrape_round()
        now[0] += 10
        cell.value = 25
        await collector.scrape_round()
        assert collector.scrapes == {"ok": 2, "error": 4}
        assert "does not start with a metric name" in collector.targets["emojivoto", "web-2"].last_error
        source = EmbeddedSource(collector)
        (sample,) = await source.increases(["response_total"], 10)
        assert sample.value == 15
        assert sample.labels["pod"] == "web-1" and sample.labels["classification"] == "success"
        assert 'viz_scrapes_total{result="error"} 4' in collector.render_metrics()

        collector.on_pod("DELETED", _pod("web-1", "127.0.0.1"))
        now[0] += 10
        await collector.scrape_round()
        assert collector.scrapes["ok"] == 2  # a gone pod is not scraped again...
        assert await source.gauges(["response_total"]) == []  # ...nor its gauges shown
        (sample,) = await source.increases(["response_total"], 20)
        assert sample.value == 15  # ...but its history still answers
    finally:
        await collector.close()
        await good_runner.cleanup()
        await bad_runner.cleanup()


async def test_young_collector_scales_increases_to_the_window():
    now = [1000.0]
    collector = Collector(clock=lambda: now[0])
    collector.first_scrape = 990.0
    collector.on_pod("ADDED", _pod("web-1", "127.0.0.1"))
    t = collector.targets["emojivoto", "web-1"]
    t.history.record(990, {("response_total", ()): 0.0})
    t.history.record(1000, {("response_total", ()): 10.0})
    (sample,) = await EmbeddedSource(collector).increases(["response_total"], 60)
    assert sample.value == 60  # 1/s over the 10 s seen, stated for the minute asked

"""The dashboard page in a real browser (Debian's Chromium, headless, driven by Playwright) against
viz APIs played by this process: what a person sees, how it follows clicks, how errors show.

The end-to-end version against real clusters is tests/e2e/test_dashboard_browser.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from isthmus.components.viz.dashboard import Clusters, make_app
from isthmus.components.webapp import json_response, serve
from isthmus.core.proxy.tap import TapEvent, TapMeta

playwright_api = pytest.importorskip("playwright.async_api")
# the page redraws every 3 s; on a busy machine a redraw may take a few polls
playwright_api.expect.set_options(timeout=30_000)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WEST_ID = "{}.emojivoto.serviceaccount.identity.isthmus.cluster.local"


def lat(p50: float, p95: float, p99: float) -> dict[str, float]:
    return {"p50": p50, "p95": p95, "p99": p99}


def deploy(name: str, success: float | None, rps: float, latency: dict[str, float] | None) -> dict[str, Any]:
    return {"namespace": "emojivoto", "kind": "deployment", "name": name, "meshed": "1/1",
            "success": success, "rps": rps, "latency_ms": latency, "tcp_conn": 1}


class FakeVizApi:
    """A viz API answering with fixed rows, as docs/viz.md shapes them."""

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self.broken: dict[str, str] = {}  # path -> error the API answers with (503)
        self.asked: list[str] = []
        app = web.Application()
        for path in ("stat", "timeseries", "edges", "routes", "namespaces", "multicluster"):
            app.router.add_get(f"/api/{path}", self.answer)
        app.router.add_get("/api/tap", self.tap)
        self.app = app

    async def answer(self, request: web.Request) -> web.StreamResponse:
        what = request.path.rsplit("/", 1)[1]
        self.asked.append(f"{what}?{request.query_string}")
        if what in self.broken:
            return json_response({"error": self.broken[what]}, 503)
        return json_response(getattr(self, what)(request.query))

    def namespaces(self, q: Any) -> dict[str, Any]:
        return {"namespaces": [{"name": "emojivoto", "meshed_pods": 4, "pods": 4},
                               {"name": "isthmus", "meshed_pods": 3, "pods": 3}]}

    def stat(self, q: Any) -> dict[str, Any]:
        res = q["resource"]
        if res == "ns":
            return {"window": "1m", "rows": [
                {"namespace": "", "kind": "namespace", "name": "emojivoto", "meshed": "4/4", "success": 0.93,
                 "rps": 6.2, "latency_ms": lat(2, 8, 12), "tcp_conn": 5},
                {"namespace": "", "kind": "namespace", "name": "isthmus", "meshed": "3/3", "success": 1.0,
                 "rps": 0.4, "latency_ms": lat(1, 2, 3), "tcp_conn": 3}]}
        if res == "svc" and q.get("from") == "deploy/vote-bot":
            return {"window": "1m", "rows": [
                {**deploy("web-svc-east", 0.875, 1.9, lat(160, 190, 199)), "kind": "service"},
                {**deploy("emoji-svc", None, 0.0, None), "kind": "service"}]}
        if res == "svc":
            return {"window": "1m", "rows": [
                {**deploy("web-svc-east" if self.cluster == "west" else "web-svc", 0.9, 1.9, lat(3, 9, 14)),
                 "kind": "service"},
                {**deploy("emoji-svc", 1.0, 2.0, lat(1, 2, 3)), "kind": "service"}]}
        if self.cluster == "west":
            return {"window": "1m", "rows": [deploy("vote-bot", 0.9, 1.9, lat(4.2, 11.5, 19.0)),
                                             deploy("web", 0.91, 2.0, lat(2.1, 6.3, 9.8)),
                                             deploy("emoji", 1.0, 2.0, lat(0.6, 1.9, 2.4)),
                                             deploy("voting", 0.82, 0.4, lat(0.7, 2.2, 3.1))]}
        return {"window": "1m", "rows": [deploy("web", 0.9, 1.9, lat(2.5, 7.0, 11.0)),
                                         deploy("emoji", 1.0, 1.9, lat(0.5, 1.5, 2.0))]}

    def timeseries(self, q: Any) -> dict[str, Any]:
        now = time.time()
        return {"points": [{"t": now - (29 - i) * 20, "success": 0.85 + 0.005 * (i % 7),
                            "rps": 1.5 + 0.05 * (i % 9), "p50": 3 + 0.2 * (i % 5), "p95": 9 + (i % 4),
                            "p99": 14 + (i % 6)} for i in range(30)]}

    def edges(self, q: Any) -> dict[str, Any]:
        if self.cluster == "east":
            return {"rows": [{"src": "isthmus-gateway", "dst": "web", "src_namespace": "isthmus-multicluster",
                              "dst_namespace": "emojivoto", "secured": True,
                              "client_id": "isthmus-gateway.isthmus-multicluster.serviceaccount.identity."
                                           "isthmus.cluster.local",
                              "server_id": WEST_ID.format("web"), "dst_cluster": ""}]}
        return {"rows": [self.cross_edge(),
                         {"src": "web", "dst": "emoji", "src_namespace": "emojivoto", "dst_namespace": "emojivoto",
                          "secured": True, "client_id": WEST_ID.format("web"),
                          "server_id": WEST_ID.format("emoji"), "dst_cluster": ""}]}

    @staticmethod
    def cross_edge() -> dict[str, Any]:
        return {"src": "vote-bot", "dst": "web-svc-east", "src_namespace": "emojivoto",
                "dst_namespace": "emojivoto", "secured": True, "client_id": WEST_ID.format("default"),
                "server_id": "isthmus-gateway.isthmus-multicluster.serviceaccount.identity.isthmus.cluster.local",
                "dst_cluster": "east"}

    def routes(self, q: Any) -> dict[str, Any]:
        return {"window": "1m", "rows": [
            {"route": "GET /api/list", "success": 1.0, "rps": 1.0, "latency_ms": lat(2, 5, 8)},
            {"route": "GET /api/vote", "success": 0.8, "rps": 0.9, "latency_ms": lat(3, 9, 15)}]}

    def multicluster(self, q: Any) -> dict[str, Any]:
        if self.cluster == "east":
            return {"cluster": "east", "links": []}
        return {"cluster": "west", "links": [{
            "cluster": "east", "gateway_address": "127.162.128.1", "gateway_port": 4143,
            "gateway_identity": "isthmus-gateway.isthmus-multicluster.serviceaccount.identity.isthmus.cluster.local",
            "alive": True, "latency_ms": 2.1, "probes": {"success": 41, "failure": 0},
            "mirrored_services": [{"namespace": "emojivoto", "name": "web-svc-east", "endpoints": 1, "ready": True}],
            "edges": [self.cross_edge()]}]}

    async def tap(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        meta = TapMeta("outbound", "127.161.0.7", 40100, "127.162.128.1", 4143, "true", "GET",
                       "web-svc-east.emojivoto.svc.cluster.local:80", "/api/list",
                       src_labels={"namespace": "emojivoto", "deployment": "vote-bot", "pod": "vote-bot-7d9f-x2"},
                       dst_labels={"namespace": "emojivoto", "service": "web-svc-east", "target_cluster": "east"})
        stream = 0
        try:
            while True:
                stream += 1
                now = time.time()
                for ev in (TapEvent("req", 0, stream, meta, now),
                           TapEvent("rsp", 0, stream, meta, now, status=200 if stream % 3 else 500,
                                    since_request=0.0042),
                           TapEvent("end", 0, stream, meta, now, since_response=0.0001, response_bytes=512)):
                    import orjson

                    await resp.write(orjson.dumps(ev.to_dict()) + b"\n")
                await asyncio.sleep(0.2)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp


class FakeReader:
    def __init__(self) -> None:
        self.links = {"west": ["east", "north"]}

    def contexts(self) -> set[str]:
        return {"west", "east"}  # no context for north

    async def link_targets(self, context: str) -> list[str]:
        return self.links.get(context, [])

    async def cluster_ip(self, context: str, namespace: str, name: str) -> str | None:
        return None

    async def close(self) -> None:
        pass


@pytest.fixture
async def site() -> AsyncIterator[tuple[str, dict[str, FakeVizApi]]]:
    runners = []
    apis, urls = {}, {}
    for name in ("west", "east"):
        api = FakeVizApi(name)
        runner, port = await serve(api.app, ("127.0.0.1", 0), None, handler_cancellation=True)
        runners.append(runner)
        apis[name], urls[name] = api, f"http://127.0.0.1:{port}"
    runner, port = await serve(make_app(Clusters(FakeReader(), "west", api_urls=urls)), ("127.0.0.1", 0), None,
                               handler_cancellation=True)
    runners.append(runner)
    yield f"http://127.0.0.1:{port}", apis
    for r in reversed(runners):
        await r.cleanup()


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (bash scripts/install-system-deps)")
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pg = await browser.new_page(viewport={"width": 1400, "height": 1500})
            pg.set_default_timeout(30_000)
            yield pg
        finally:
            await browser.close()


async def cell(page: Any, row: str, column: str) -> str:
    return str(await page.get_by_test_id(row).get_by_test_id(column).first.inner_text())


async def test_the_page_shows_both_clusters_and_follows_clicks(site, page, tmp_path: Path) -> None:
    url, apis = site
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    await page.goto(url)
    expect = playwright_api.expect

    # west: deployments of emojivoto, numbers and charts
    vote_bot = page.get_by_test_id("deploy-row-emojivoto-vote-bot")
    await expect(vote_bot.get_by_test_id("success")).to_have_text("90.00%")
    await expect(vote_bot.get_by_test_id("rps")).to_have_text("1.9")
    await expect(vote_bot.get_by_test_id("p99")).to_have_text("19.0 ms")
    await expect(page.get_by_test_id("detail-name")).to_have_text("emojivoto/voting")  # lowest success first
    assert await vote_bot.locator("svg.chart path.line").count() == 2
    await vote_bot.click()
    await expect(page.get_by_test_id("detail-name")).to_have_text("emojivoto/vote-bot")
    await expect(page.get_by_test_id("chart-latency").locator("path.line")).to_have_count(3)
    # what vote-bot saw as a client: only the services it called
    outbound = page.get_by_test_id("outbound")
    await expect(outbound.get_by_test_id("out-row-web-svc-east").get_by_test_id("success")).to_have_text("87.50%")
    await expect(outbound.get_by_test_id("out-row-emoji-svc")).to_have_count(0)
    await expect(page.get_by_test_id("svc-row-emojivoto-web-svc-east").get_by_test_id("p99")).to_have_text("14.0 ms")
    await expect(page.get_by_test_id("ns-row-emojivoto").get_by_test_id("success")).to_have_text("93.00%")

    # the multi-cluster view: east's gateway, the mirrored service, the cross-cluster edge
    east = page.get_by_test_id("link-east")
    await expect(east.get_by_test_id("gateway-status")).to_have_text("gateway alive")
    await expect(east.get_by_test_id("gateway-latency")).to_have_text("2.10 ms")
    await expect(east.get_by_test_id("mirrored-emojivoto-web-svc-east")).to_contain_text("ready")
    edge = east.get_by_test_id("mc-edge-vote-bot-web-svc-east")
    await expect(edge.get_by_test_id("secured")).to_have_text("secured")
    await expect(edge.get_by_test_id("client-id")).to_have_text(WEST_ID.format("default"))
    await expect(page.get_by_test_id("edges").get_by_test_id("edge-web-emoji")).to_have_attribute(
        "data-secured", "true")
    await expect(page.get_by_test_id("route-GET__api_list").get_by_test_id("success")).to_have_text("100.00%")

    # live calls from tap, as they come
    await expect(page.get_by_test_id("call-row").first).to_be_visible()
    first_call = page.get_by_test_id("call-row").first
    await expect(first_call.get_by_test_id("call-tls")).to_have_text("mTLS")
    await expect(first_call.get_by_test_id("call-from")).to_have_text("vote-bot-7d9f-x2")
    await expect(first_call.get_by_test_id("call-to")).to_have_text("web-svc-east @ east")
    await expect(first_call.get_by_test_id("call-to")).to_have_attribute(
        "title", "web-svc-east.emojivoto.svc.cluster.local:80 127.162.128.1:4143")
    await expect(page.get_by_test_id("call-row").locator("[data-testid=call-status]", has_text="500").first
                 ).to_be_visible()

    # it updates without reloading
    before = await page.locator("body").get_attribute("data-refreshes")
    await expect(page.locator("body")).not_to_have_attribute("data-refreshes", before)
    await page.screenshot(path=str(tmp_path / "west.png"), full_page=True)

    # switch to east: its own deployments and edges, and no Links
    await page.get_by_test_id("cluster-east").click()
    await expect(page.get_by_test_id("cluster-east")).to_have_attribute("aria-pressed", "true")
    await expect(page.get_by_test_id("deploy-row-emojivoto-web")).to_be_visible()
    await expect(page.get_by_test_id("deploy-row-emojivoto-vote-bot")).to_have_count(0)
    await expect(page.get_by_test_id("no-links")).to_have_text(
        "cluster east has no Links: it mirrors no other cluster's services")
    await expect(page.get_by_test_id("edge-isthmus-gateway-web").get_by_test_id("secured")).to_have_text("secured")
    assert any(a.startswith("multicluster") for a in apis["east"].asked)

    # nothing was fetched from anywhere but the dashboard
    assert requests and all(r.startswith(url + "/") for r in requests), requests
    assert console_errors == []


async def test_errors_from_the_apis_are_shown_not_swallowed(site, page) -> None:
    url, apis = site
    apis["west"].broken["routes"] = "metrics are not available: Prometheus at http://127.0.0.1:9 refused"
    await page.goto(url)
    expect = playwright_api.expect
    routes_error = page.get_by_test_id("routes-error")
    await expect(routes_error).to_be_visible()
    await expect(routes_error).to_have_text(
        "503: metrics are not available: Prometheus at http://127.0.0.1:9 refused")
    await expect(page.get_by_test_id("error-banner")).to_contain_text("metrics are not available")
    # the rest of the page still works
    await expect(page.get_by_test_id("deploy-row-emojivoto-vote-bot").get_by_test_id("success")).to_have_text(
        "90.00%")

    # the viz API comes back: the error goes away without a reload
    del apis["west"].broken["routes"]
    await expect(routes_error).to_be_hidden()
    await expect(page.get_by_test_id("error-banner")).to_be_hidden()

    # a linked cluster the kubeconfig cannot reach: marked, and choosing it says why
    north = page.get_by_test_id("cluster-north")
    await expect(north).to_have_class("unavailable")
    await north.click()
    await expect(page.get_by_test_id("error-banner")).to_contain_text(
        "cluster 'north' is linked to 'west' but the kubeconfig has no context 'north'")
    await expect(page.get_by_test_id("namespaces-error")).to_contain_text("has no context 'north'")
    await expect(page.get_by_test_id("multicluster-error")).to_be_visible()

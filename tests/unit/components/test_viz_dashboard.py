"""The dashboard server: which clusters it knows, how it reaches their viz APIs, what it refuses.

A tiny aiohttp app in this process plays a cluster's viz API; a fake
`KubeReader` plays the kubeconfig and the clusters' Links and Services.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from isthmus.components.viz.dashboard import (
    CSP,
    STATIC_DIR,
    Clusters,
    ClusterUnavailable,
    UnknownCluster,
    make_app,
)
from isthmus.components.webapp import json_response, serve


class FakeReader:
    def __init__(self, contexts: set[str], links: dict[str, list[str]], ips: dict[str, str | None]) -> None:
        self._contexts = contexts
        self.links = links
        self.ips = ips
        self.link_reads = 0
        self.ip_reads = 0
        self.links_error: Exception | None = None
        self.closed = False

    def contexts(self) -> set[str]:
        return set(self._contexts)

    async def link_targets(self, context: str) -> list[str]:
        self.link_reads += 1
        if self.links_error is not None:
            raise self.links_error
        return list(self.links.get(context, []))

    async def cluster_ip(self, context: str, namespace: str, name: str) -> str | None:
        self.ip_reads += 1
        assert (namespace, name) == ("isthmus-viz", "isthmus-viz")
        return self.ips.get(context)

    async def close(self) -> None:
        self.closed = True


class Upstream:
    """A viz API: records what it was asked; /api/tap streams lines until its client goes away."""

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self.requests: list[str] = []
        self.tap_gone = asyncio.Event()
        self.release_tap = asyncio.Event()
        app = web.Application()
        app.router.add_get("/api/stat", self.stat)
        app.router.add_get("/api/tap", self.tap)
        app.router.add_get("/ready", self.ready)
        self.app = app

    async def stat(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(str(request.rel_url))
        if request.query.get("resource") == "deploy/nope":
            return json_response({"error": "deployment emojivoto/nope does not exist"}, 404)
        return json_response({"cluster": self.cluster, "query": dict(request.query)})

    async def ready(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ready\n")

    async def tap(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(str(request.rel_url))
        resp = web.StreamResponse()
        resp.content_type = "text/plain"
        await resp.prepare(request)
        try:
            await resp.write(b"req id=0:1 proxy=out src=127.1.0.5:40000 dst=127.2.0.9:4143 tls=true "
                             b":method=GET :authority=web-svc-east.emojivoto:80 :path=/api/list\n")
            if request.query.get("end") == "1":
                await self.release_tap.wait()
                await resp.write(b"end id=0:1 duration=900\xc2\xb5s response-length=42B\n")
                return resp
            while True:  # a live stream: a line now and then until the client goes away
                await asyncio.sleep(0.02)
                await resp.write(b"rsp id=0:1 proxy=out :status=200 latency=800\xc2\xb5s\n")
        except (ConnectionResetError, asyncio.CancelledError):
            self.tap_gone.set()
            raise
        finally:
            self.tap_gone.set()


@pytest.fixture
async def upstreams() -> AsyncIterator[dict[str, tuple[Upstream, str]]]:
    out: dict[str, tuple[Upstream, str]] = {}
    runners = []
    for name in ("west", "east"):
        up = Upstream(name)
        runner, port = await serve(up.app, ("127.0.0.1", 0), None, handler_cancellation=True)
        runners.append(runner)
        out[name] = (up, f"http://127.0.0.1:{port}")
    yield out
    for r in runners:
        await r.cleanup()


class Dashboard:
    def __init__(self, clusters: Clusters, url: str, session: aiohttp.ClientSession) -> None:
        self.clusters, self.url, self.session = clusters, url, session

    async def get(self, path: str, **kw: Any) -> tuple[int, Any, aiohttp.ClientResponse]:
        async with self.session.get(self.url + path, **kw) as r:
            body = await r.json(content_type=None) if "json" in r.content_type else await r.text()
            return r.status, body, r


@pytest.fixture
async def dashboard_for() -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []
    session = aiohttp.ClientSession(trust_env=False)

    async def start(clusters: Clusters) -> Dashboard:
        runner, port = await serve(make_app(clusters), ("127.0.0.1", 0), None, handler_cancellation=True)
        runners.append(runner)
        return Dashboard(clusters, f"http://127.0.0.1:{port}", session)

    yield start
    await session.close()
    for r in runners:
        await r.cleanup()


def west_east(upstreams: dict[str, tuple[Upstream, str]], **reader_kw: Any) -> tuple[Clusters, FakeReader]:
    reader = FakeReader(reader_kw.get("contexts", {"west", "east"}),
                        reader_kw.get("links", {"west": ["east"], "east": []}), {})
    urls = {name: url for name, (_, url) in upstreams.items()}
    return Clusters(reader, "west", api_urls=urls), reader


async def test_clusters_lists_this_cluster_and_linked_ones(upstreams, dashboard_for) -> None:
    clusters, _ = west_east(upstreams, contexts={"west", "east"}, links={"west": ["east", "north", "west"]})
    d = await dashboard_for(clusters)
    status, body, r = await d.get("/api/clusters")
    assert status == 200
    assert body["current"] == "west"
    assert body["error"] is None
    assert [c["name"] for c in body["clusters"]] == ["west", "east", "north"]
    west, east, north = body["clusters"]
    assert west == {"name": "west", "local": True, "context": "west", "error": None}
    assert east == {"name": "east", "local": False, "context": "east", "error": None}
    # linked, but the kubeconfig cannot reach it: an entry that says so
    assert north["context"] is None
    assert "linked to 'west' but the kubeconfig has no context 'north'" in north["error"]
    assert r.headers["Cache-Control"] == "no-store"


async def test_requests_are_proxied_to_the_named_clusters_viz_api(upstreams, dashboard_for) -> None:
    clusters, _ = west_east(upstreams)
    d = await dashboard_for(clusters)
    status, body, _ = await d.get("/api/clusters/east/api/stat?resource=deploy&namespace=emojivoto&window=1m")
    assert status == 200
    assert body == {"cluster": "east", "query": {"resource": "deploy", "namespace": "emojivoto", "window": "1m"}}
    status, body, _ = await d.get("/api/clusters/west/api/stat?resource=deploy%2Fweb&to=svc%2Fa%20b")
    assert body["cluster"] == "west"
    assert body["query"] == {"resource": "deploy/web", "to": "svc/a b"}
    assert [u.split("?")[0] for u in upstreams["west"][0].requests] == ["/api/stat"]
    status, body, _ = await d.get("/api/clusters/east/ready")
    assert (status, body) == (200, "ready\n")


async def test_the_viz_apis_refusals_come_through_as_they_are(upstreams, dashboard_for) -> None:
    clusters, _ = west_east(upstreams)
    d = await dashboard_for(clusters)
    status, body, _ = await d.get("/api/clusters/west/api/stat?resource=deploy/nope&namespace=emojivoto")
    assert (status, body) == (404, {"error": "deployment emojivoto/nope does not exist"})


async def test_a_cluster_that_is_not_linked_is_a_404_naming_the_known_clusters(upstreams, dashboard_for) -> None:
    clusters, _ = west_east(upstreams)
    d = await dashboard_for(clusters)
    for path in ("/api/clusters/north/api/stat?resource=deploy", "/api/clusters/north/api/tap?resource=deploy/x"):
        status, body, _ = await d.get(path)
        assert status == 404
        assert body == {"error": "cluster 'north' is neither this cluster nor linked to it; "
                                 "known clusters: west, east"}
    # nothing was asked of any viz API
    assert [up.requests for up, _ in upstreams.values()] == [[], []]


async def test_a_cluster_linked_only_the_other_way_is_not_known(upstreams, dashboard_for) -> None:
    # east links to west, west links to nobody: west's dashboard knows only west
    clusters, _ = west_east(upstreams, links={"west": [], "east": ["west"]})
    d = await dashboard_for(clusters)
    status, body, _ = await d.get("/api/clusters/east/api/stat")
    assert status == 404
    assert body["error"] == "cluster 'east' is neither this cluster nor linked to it; known clusters: west"


async def test_a_linked_cluster_without_a_kubeconfig_context_is_refused_with_the_reason(dashboard_for) -> None:
    reader = FakeReader({"west"}, {"west": ["east"]}, {"west": "127.9.0.1"})
    d = await dashboard_for(Clusters(reader, "west"))
    status, body, _ = await d.get("/api/clusters/east/api/stat")
    assert status == 503
    assert body["error"].startswith("cluster 'east' is linked to 'west' but the kubeconfig has no context 'east'")
    assert reader.ip_reads == 0


async def test_the_viz_api_is_found_at_the_cluster_ip_of_its_service() -> None:
    reader = FakeReader({"west", "east"}, {"west": ["east"]}, {"west": "127.9.0.1", "east": "127.10.0.7"})
    clusters = Clusters(reader, "west")
    assert await clusters.api_url("west") == "http://127.9.0.1:8085"
    assert await clusters.api_url("east") == "http://127.10.0.7:8085"


async def test_a_cluster_without_viz_says_how_to_install_it(dashboard_for) -> None:
    reader = FakeReader({"west", "east"}, {"west": ["east"]}, {"west": "127.9.0.1", "east": None})
    d = await dashboard_for(Clusters(reader, "west"))
    status, body, _ = await d.get("/api/clusters/east/api/namespaces")
    assert status == 503
    assert body["error"] == ("cluster 'east' has no Service isthmus-viz/isthmus-viz: install viz there: "
                             "`isthmus --context=east viz install | kubectl --context=east apply -f -`")


async def test_links_that_cannot_be_read_are_an_error_not_a_crash(upstreams, dashboard_for) -> None:
    clusters, reader = west_east(upstreams)
    reader.links_error = ClusterUnavailable("cannot reach the API of context 'west'")
    d = await dashboard_for(clusters)
    status, body, _ = await d.get("/api/clusters")
    assert status == 200
    assert [c["name"] for c in body["clusters"]] == ["west"]
    assert body["error"] == "cannot read the Links of cluster 'west': cannot reach the API of context 'west'"
    status, body, _ = await d.get("/api/clusters/east/api/stat")
    assert status == 503
    assert "cannot tell whether cluster 'east' is linked" in body["error"]
    # this cluster's own viz API needs no Link
    status, body, _ = await d.get("/api/clusters/west/api/stat")
    assert (status, body["cluster"]) == (200, "west")


async def test_a_viz_api_that_does_not_answer_is_a_502_saying_what_to_do(upstreams, dashboard_for) -> None:
    clusters, _ = west_east(upstreams)
    clusters.api_urls["east"] = "http://127.0.0.1:1"
    d = await dashboard_for(clusters)
    status, body, _ = await d.get("/api/clusters/east/api/stat")
    assert status == 502
    assert body["error"].startswith("cannot reach the viz API of cluster 'east' at http://127.0.0.1:1: ")
    assert "`isthmus --context=east viz install | kubectl --context=east apply -f -`" in body["error"]
    status, body, _ = await d.get("/api/clusters/east/api/tap?resource=deploy/web")
    assert status == 502


async def test_only_viz_api_paths_are_proxied(upstreams, dashboard_for) -> None:
    clusters, _ = west_east(upstreams)
    d = await dashboard_for(clusters)
    for path in ("/api/clusters/west/metrics", "/api/clusters/west/../../etc", "/api/clusters/west/"):
        status, body, _ = await d.get(path)
        assert status == 404, path
        assert "error" in body
    status, body, _ = await d.get("/nothing/here")
    assert status == 404
    assert body["error"].startswith("Not Found: GET /nothing/here is not served")
    assert [up.requests for up, _ in upstreams.values()] == [[], []]


async def test_tap_is_streamed_as_it_comes_and_ends_when_the_browser_goes_away(upstreams, dashboard_for) -> None:
    clusters, _ = west_east(upstreams)
    d = await dashboard_for(clusters)
    up = upstreams["east"][0]
    async with d.session.get(d.url + "/api/clusters/east/api/tap?resource=deploy/vote-bot&namespace=emojivoto") as r:
        assert r.status == 200
        assert r.content_type == "text/plain"
        first = await r.content.readline()  # arrives while the stream is still open
        assert first.startswith(b"req id=0:1 proxy=out ")
        assert b"tls=true" in first
        second = await r.content.readline()
        assert second.startswith(b"rsp id=0:1 ")
    # the browser went away: the dashboard lets go of the viz API's stream too
    await asyncio.wait_for(up.tap_gone.wait(), timeout=10)


async def test_a_tap_stream_that_ends_upstream_ends_for_the_browser(upstreams, dashboard_for) -> None:
    clusters, _ = west_east(upstreams)
    d = await dashboard_for(clusters)
    up = upstreams["west"][0]
    async with d.session.get(d.url + "/api/clusters/west/api/tap?resource=deploy/web&end=1") as r:
        first = await r.content.readline()
        assert first.startswith(b"req ")
        up.release_tap.set()
        rest = await r.content.read()
    assert rest == "end id=0:1 duration=900µs response-length=42B\n".encode()


async def test_the_page_and_its_assets_come_from_here_only(upstreams, dashboard_for) -> None:
    clusters, _ = west_east(upstreams)
    d = await dashboard_for(clusters)
    status, html, r = await d.get("/")
    assert status == 200 and r.content_type == "text/html"
    assert r.headers["Content-Security-Policy"] == CSP
    assert "default-src 'self'" in CSP and "connect-src 'self'" in CSP
    for asset in re.findall(r'(?:src|href)="([^"]+)"', html):
        if asset.startswith("data:"):
            continue
        assert asset.startswith("/static/"), asset
        status, _, _ = await d.get(asset)
        assert status == 200, asset
    # no asset names another host (the SVG namespace is a name, not a fetch)
    for f in STATIC_DIR.iterdir():
        urls = set(re.findall(r"https?://[^\s\"'`)]+", f.read_text()))
        assert urls <= {"http://www.w3.org/2000/svg"}, (f.name, urls)


async def test_requests_for_another_host_are_refused(upstreams, dashboard_for) -> None:
    clusters, _ = west_east(upstreams)
    d = await dashboard_for(clusters)
    for host in ("evil.example", "10.0.0.1:50750", "localhost.evil.example"):
        status, body, _ = await d.get("/api/clusters", headers={"Host": host})
        assert status == 403, host
        assert "answers only to localhost and loopback addresses" in body["error"]
    for host in ("localhost:50750", "127.0.0.1", "127.3.4.5:80", "[::1]:50750"):
        status, _, _ = await d.get("/api/clusters", headers={"Host": host})
        assert status == 200, host


async def test_links_and_addresses_are_read_again_after_the_ttl() -> None:
    now = [1000.0]
    reader = FakeReader({"west", "east"}, {"west": ["east"]}, {"west": "127.9.0.1", "east": "127.10.0.7"})
    clusters = Clusters(reader, "west", ttl=5.0, clock=lambda: now[0])
    for _ in range(3):
        await clusters.api_url("east")
        await clusters.entries()
    assert (reader.link_reads, reader.ip_reads) == (1, 1)
    reader.links["west"] = []
    now[0] += 6
    with pytest.raises(UnknownCluster, match=r"known clusters: west$"):
        await clusters.api_url("east")
    assert reader.link_reads == 2


async def test_a_failed_read_is_not_kept() -> None:
    reader = FakeReader({"west"}, {"west": []}, {"west": None})
    clusters = Clusters(reader, "west")
    with pytest.raises(ClusterUnavailable, match="has no Service isthmus-viz/isthmus-viz"):
        await clusters.api_url("west")
    reader.ips["west"] = "127.9.0.1"
    assert await clusters.api_url("west") == "http://127.9.0.1:8085"

"""lightkube over `AiohttpTransport`: requests, errors, watches and failures as httpx would give them.

A small aiohttp server plays a Kubernetes API on a loopback address (plain
HTTP: TLS is the context lightkube builds, exercised by every e2e test that
reaches an embedded cluster); the client is a real lightkube `AsyncClient`.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from aiohttp import web
from lightkube import ApiError, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap

from isthmus.adapters import kubehttp

pytestmark = pytest.mark.asyncio

HOST = "127.251.7.1"


def config(port: int) -> KubeConfig:
    return KubeConfig.from_dict({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": f"http://{HOST}:{port}"}}],
        "users": [{"name": "t", "user": {"token": "s3cret"}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t", "namespace": "default"}}]})


def cm(name: str, rv: str = "1") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": rv}, "data": {"k": "v"}}


def json_response(obj: dict[str, Any], status: int = 200) -> web.Response:
    # The API server's Content-Type exactly (lightkube reads Status errors only from it).
    return web.Response(body=json.dumps(obj).encode(), status=status, headers={"Content-Type": "application/json"})


class Api:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.watch_closed = asyncio.Event()
        self.stall = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append((request.method, request.path_qs, dict(request.headers), body))
        path = request.path
        if path.startswith("/guarded/") and request.headers.get("Authorization") != "Bearer new":
            return json_response({"kind": "Status", "apiVersion": "v1", "code": 401, "message": "Unauthorized"},
                                 status=401)
        if path.endswith("/teapot"):
            return web.Response(status=418, text="short and stout")
        if path.endswith("/configmaps/missing"):
            return json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                                  "reason": "NotFound", "message": 'configmaps "missing" not found'}, status=404)
        if path.endswith("/configmaps/slow"):
            await self.stall.wait()
        if path.endswith("/configmaps/zipped"):
            return web.Response(body=gzip.compress(json.dumps(cm("zipped")).encode()),
                                headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        if request.method == "POST":
            obj = json.loads(body)
            obj["metadata"]["resourceVersion"] = "7"
            return json_response(obj, status=201)
        if request.query.get("watch") == "true":
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            try:
                for i in range(3):
                    await resp.write(json.dumps({"type": "ADDED", "object": cm(f"w{i}", str(i + 1))}).encode() + b"\n")
                while request.transport is not None and not request.transport.is_closing():
                    await asyncio.sleep(0.05)  # a watch stays open until its client goes
            finally:
                self.watch_closed.set()
        return json_response(cm(path.rsplit("/", 1)[1]))


@pytest.fixture
async def api() -> AsyncIterator[tuple[Api, int]]:
    state = Api()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield state, port
    finally:
        state.stall.set()
        await runner.cleanup()


async def test_requests_go_out_as_lightkube_builds_them_and_answers_come_back(api: tuple[Api, int]) -> None:
    state, port = api
    client = kubehttp.client(config(port))
    try:
        got = await client.get(ConfigMap, "web")
        assert got.metadata is not None and got.metadata.name == "web" and got.data == {"k": "v"}
        made = await client.create(ConfigMap(metadata=ObjectMeta(name="new"), data={"a": "b"}))
        assert made.metadata is not None and made.metadata.resourceVersion == "7"
        zipped = await client.get(ConfigMap, "zipped")  # httpx decodes the body, not the transport
        assert zipped.metadata is not None and zipped.metadata.name == "zipped"
    finally:
        await client.close()
    (method, path, headers, _), (post, post_path, post_headers, body) = state.seen[:2]
    assert (method, path) == ("GET", "/api/v1/namespaces/default/configmaps/web")
    assert headers["Authorization"] == "Bearer s3cret"  # httpx's auth flow, kept
    assert (post, post_path) == ("POST", "/api/v1/namespaces/default/configmaps")
    assert post_headers["Content-Type"] == "application/json"
    assert json.loads(body)["data"] == {"a": "b"}


async def test_api_errors_stay_lightkube_errors(api: tuple[Api, int]) -> None:
    _, port = api
    client = kubehttp.client(config(port))
    try:
        with pytest.raises(ApiError) as e:
            await client.get(ConfigMap, "missing")
        assert e.value.status.code == 404 and e.value.status.message == 'configmaps "missing" not found'
    finally:
        await client.close()


async def test_a_watch_streams_and_ends_its_connection_when_left(api: tuple[Api, int]) -> None:
    state, port = api
    client = kubehttp.client(config(port))
    names = []
    try:
        async for typ, obj in client.watch(ConfigMap, resource_version="0"):
            names.append((typ, obj.metadata.name if obj.metadata else None))
            if len(names) == 3:
                break
        await asyncio.wait_for(state.watch_closed.wait(), 5)  # the server saw the client go
    finally:
        await client.close()
    assert names == [("ADDED", "w0"), ("ADDED", "w1"), ("ADDED", "w2")]


async def test_failures_are_httpx_errors() -> None:
    client = kubehttp.client(config(1))  # nothing listens on port 1
    try:
        with pytest.raises(httpx.ConnectError):
            await client.get(ConfigMap, "web")
    finally:
        await client.close()


async def test_a_read_that_takes_longer_than_the_timeout_is_a_read_timeout(api: tuple[Api, int]) -> None:
    _, port = api
    client = kubehttp.client(config(port), timeout=httpx.Timeout(0.3))
    try:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(ConfigMap, "slow")
    finally:
        await client.close()


async def test_json_api_writes_plain_json_and_raises_lightkube_errors(api: tuple[Api, int]) -> None:
    state, port = api
    client = kubehttp.client(config(port))
    try:
        json_api = kubehttp.JsonApi(client)
        made = await json_api.request("POST", "api/v1/namespaces/default/configmaps", cm("plain"))
        assert made["metadata"]["resourceVersion"] == "7" and made["data"] == {"k": "v"}
        with pytest.raises(ApiError) as e:
            await json_api.request("GET", "api/v1/namespaces/default/configmaps/missing")
        assert e.value.status.code == 404 and e.value.status.message == 'configmaps "missing" not found'
        with pytest.raises(ApiError) as e:  # an error that is not a Status object still says what came
            await json_api.request("GET", "nothing-here/teapot")
        assert e.value.status.code == 418 and "short and stout" in (e.value.status.message or "")
    finally:
        await client.close()
    method, path, headers, body = state.seen[0]
    assert (method, path) == ("POST", "/api/v1/namespaces/default/configmaps")
    assert headers["Authorization"] == "Bearer s3cret" and headers["Content-Type"] == "application/json"
    assert json.loads(body)["metadata"]["name"] == "plain"


async def test_json_api_reads_a_token_file_again_after_a_401(api: tuple[Api, int], tmp_path: Path) -> None:
    state, port = api
    token = tmp_path / "token"
    token.write_text("old")
    kc = KubeConfig.from_dict({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": f"http://{HOST}:{port}"}}],
        "users": [{"name": "t", "user": {"tokenFile": str(token)}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}]})
    client = kubehttp.client(kc)
    try:
        json_api = kubehttp.JsonApi(client)
        with pytest.raises(ApiError) as e:  # the old token, read again after the 401: still old
            await json_api.request("GET", "guarded/configmaps/a")
        assert e.value.status.code == 401
        token.write_text("new")  # the kubelet rotated it
        got = await json_api.request("GET", "guarded/configmaps/b")
        assert got["metadata"]["name"] == "b"
        await json_api.request("GET", "guarded/configmaps/c")
    finally:
        await client.close()
    sent = [(path, headers.get("Authorization")) for _, path, headers, _ in state.seen]
    assert sent == [("/guarded/configmaps/a", "Bearer old"), ("/guarded/configmaps/a", "Bearer old"),
                    ("/guarded/configmaps/b", "Bearer old"), ("/guarded/configmaps/b", "Bearer new"),
                    ("/guarded/configmaps/c", "Bearer new")]


async def test_json_api_works_through_any_lightkube_client(api: tuple[Api, int]) -> None:
    _, port = api
    from lightkube import AsyncClient

    client = AsyncClient(config=config(port).get(), trust_env=False)  # httpx's own transport
    try:
        json_api = kubehttp.JsonApi(client)
        assert (await json_api.request("GET", "api/v1/namespaces/default/configmaps/x"))["metadata"]["name"] == "x"
        with pytest.raises(ApiError) as e:
            await json_api.request("GET", "api/v1/namespaces/default/configmaps/missing")
        assert e.value.status.code == 404
    finally:
        await client.close()

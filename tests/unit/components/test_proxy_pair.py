"""Two proxies in one event loop with real sockets and real mTLS, in front of a real HTTP app.

client --> client proxy (outbound) ==mTLS==> server proxy (inbound) --> app

Certificates come from a test trust anchor; discovery answers come from a
small in-memory source with the destination client's interface (the real
destination service is exercised in tests/e2e/test_proxy.py).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from isthmus.components.destination import Endpoint, EndpointSet, ServiceRef
from isthmus.components.proxy import Proxy, ProxyConfig
from isthmus.core.identity import workload_identity
from tests.support.backend_app import make_app
from tests.support.pki import OTHER_ISSUER, ROOT, creds

pytestmark = pytest.mark.asyncio

LOCAL = "127.0.0.1"
CLIENT_ID = workload_identity("client", "ns")
SERVER_ID = workload_identity("server", "ns")
AUTHORITY = "server.ns.svc.cluster.local:8080"



class StaticResolution:
    def __init__(self, answer: EndpointSet) -> None:
        self.current = answer
        self.version = 1
        self.last_error: str | None = None

    async def ready(self, timeout: float | None = None) -> EndpointSet:
        return self.current

    def _push(self, answer: EndpointSet) -> None:
        self.current = answer
        self.version += 1


@dataclass
class StaticDestination:
    """Answers of the destination client's shape, set by the test."""

    resolutions: dict[str, StaticResolution] = field(default_factory=dict)

    def set(self, authority: str, endpoints: list[Endpoint], policy: Mapping[str, str] | None = None,
            labels: Mapping[str, str] | None = None) -> None:
        """A new answer for `authority`, pushed to whoever follows it."""
        self.resolve(authority)._push(EndpointSet(
            authority, True, None, ServiceRef("ns", authority.split(".")[0]),
            MappingProxyType(dict(labels or {"dst_namespace": "ns", "dst_service": "server"})),
            MappingProxyType(dict(policy or {})), False, tuple(endpoints)))

    def resolve(self, authority: str) -> StaticResolution:
        if authority not in self.resolutions:
            self.resolutions[authority] = StaticResolution(EndpointSet.missing(
                authority, f"service {authority.split('.')[1]}/{authority.split('.')[0]} not found"))
        return self.resolutions[authority]

    def release(self, authority: str) -> None:
        pass

    async def close(self) -> None:
        pass


def config(identity: str | None, **overrides: Any) -> ProxyConfig:
    base: dict[str, Any] = dict(inbound=(LOCAL, 0), outbound=(LOCAL, 0), admin=(LOCAL, 0),
                                forward_host=LOCAL, identity=identity,
                                trust_anchors_pem=ROOT.cert_pem, namespace="ns",
                                workload=("deploy", identity.split(".")[0]) if identity else None)
    base.update(overrides)
    return ProxyConfig(**base)


@dataclass
class Pair:
    app_port: int
    client: Proxy
    server: Proxy
    destination: StaticDestination
    session: aiohttp.ClientSession

    @property
    def proxy_url(self) -> str:
        host, port = self.client.outbound_address
        return f"http://{host}:{port}"

    @property
    def inbound(self) -> tuple[str, int]:
        assert self.server.inbound is not None
        return self.server.inbound.address

    def endpoint(self, *, identity: str | None = SERVER_ID, port: int | None = None,
                 proxy_port: int | None = None) -> Endpoint:
        return Endpoint(LOCAL, port or self.app_port, identity,
                        proxy_port or self.inbound[1] if identity else None, "http", None,
                        MappingProxyType({"dst_pod": "server-1", "dst_deployment": "server"}))

    async def get(self, path: str, authority: str = "server.ns:8080", **kw: Any) -> tuple[int, bytes, Any]:
        async with self.session.request(kw.pop("method", "GET"), f"http://{authority}{path}",
                                        proxy=self.proxy_url, **kw) as r:
            return r.status, await r.read(), r.headers

    def metrics(self, proxy: Proxy) -> str:
        return proxy.stats.render()


async def start_app(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOCAL, 0, reuse_address=False)  # no SO_REUSEADDR with port 0
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    runner, app_port = await start_app(make_app())
    server = Proxy(config(SERVER_ID, require_identity_ports=frozenset({9999})),
                   credentials=creds(SERVER_ID))
    await server.start()
    destination = StaticDestination()
    client = Proxy(config(CLIENT_ID), credentials=creds(CLIENT_ID), destination=destination)
    await client.start()
    session = aiohttp.ClientSession()
    p = Pair(app_port, client, server, destination, session)
    destination.set(AUTHORITY, [p.endpoint()])
    yield p
    await session.close()
    await client.close()
    await server.close()
    await runner.cleanup()


def sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def series(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of `name`: its labels and value."""
    found = []
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if m and m.group(1) == name:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            found.append((labels, float(m.group(3))))
    return found


async def test_request_crosses_mtls_with_identities_on_both_sides(pair: Pair) -> None:
    status, body, _ = await pair.get("/headers")
    assert status == 200
    headers = __import__("json").loads(body)
    assert headers["l5d-client-id"] == CLIENT_ID
    out = pair.metrics(pair.client)
    assert sample(out, "request_total", direction="outbound", tls="true", server_id=SERVER_ID,
                  authority=AUTHORITY, dst_service="server", dst_pod="server-1") == 1
    assert sample(out, "response_total", direction="outbound", status_code="200",
                  classification="success") == 1
    inbound = pair.metrics(pair.server)
    assert sample(inbound, "request_total", direction="inbound", tls="true", client_id=CLIENT_ID) == 1
    assert sample(inbound, "response_latency_ms_count", direction="inbound", status_code="200") == 1


async def test_connections_between_proxies_are_pooled(pair: Pair) -> None:
    for _ in range(10):
        # a new client connection each time
        async with aiohttp.ClientSession() as fresh, fresh.get(
                "http://server.ns:8080/", proxy=pair.proxy_url) as r:
            assert r.status == 200
    out = pair.metrics(pair.client)
    assert sample(out, "tcp_open_total", direction="outbound", peer="dst", server_id=SERVER_ID) == 1
    assert sample(out, "tcp_open_total", direction="outbound", peer="src") == 10


async def test_origin_form_with_host_header_and_curl(pair: Pair) -> None:
    host, port = pair.client.outbound_address
    curl = await asyncio.to_thread(subprocess.run, [
        "curl", "-sS", "-m", "10", "-H", "Host: server.ns:8080", f"http://{host}:{port}/"],
        capture_output=True, text=True)
    assert curl.returncode == 0, curl.stderr
    assert curl.stdout == "hello from backend\n"
    curl = await asyncio.to_thread(subprocess.run, [
        "curl", "-sS", "-m", "10", "-x", pair.proxy_url, "http://server.ns.svc.cluster.local:8080/"],
        capture_output=True, text=True)
    assert curl.stdout == "hello from backend\n"


async def test_unknown_authority_is_a_503_that_says_why(pair: Pair) -> None:
    status, body, headers = await pair.get("/", authority="nothere.ns:8080")
    assert status == 503
    assert b"nothere.ns.svc.cluster.local:8080 does not resolve: service ns/nothere not found" in body
    assert "does not resolve" in headers["l5d-proxy-error"]
    assert sample(pair.metrics(pair.client), "response_total", status_code="503",
                  classification="failure") == 1


async def test_malformed_request_is_a_400_and_counted(pair: Pair) -> None:
    host, port = pair.client.outbound_address
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET / HTTP/1.1\r\nHost: server.ns:8080\r\nContent-Length: x\r\n\r\n")
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400 Bad Request")
    assert b"malformed HTTP request" in answer
    assert sample(pair.metrics(pair.client), "response_total", status_code="400") == 1


async def test_server_with_unexpected_identity_is_refused(pair: Pair) -> None:
    pair.destination.set(AUTHORITY, [pair.endpoint(identity=workload_identity("other", "ns"))])
    status, body, _ = await pair.get("/")
    assert status == 502
    assert b"TLS to" in body and b"refused" in body
    assert (b"peer certificate names identity " + SERVER_ID.encode() + b", expected "
            + workload_identity("other", "ns").encode()) in body
    assert sample(pair.metrics(pair.client), "refused_connections_total", direction="outbound",
                  reason="tls_identity_mismatch") == 1


async def test_server_from_another_trust_anchor_is_refused() -> None:
    runner, app_port = await start_app(make_app())
    server = Proxy(config(SERVER_ID), credentials=creds(SERVER_ID, OTHER_ISSUER))
    await server.start()
    destination = StaticDestination()
    client = Proxy(config(CLIENT_ID), credentials=creds(CLIENT_ID), destination=destination)
    await client.start()
    try:
        assert server.inbound is not None
        destination.set(AUTHORITY, [Endpoint(LOCAL, app_port, SERVER_ID, server.inbound.address[1],
                                             "http", None, MappingProxyType({}))])
        host, port = client.outbound_address
        async with aiohttp.ClientSession() as s, s.get("http://server.ns:8080/",
                                                        proxy=f"http://{host}:{port}") as r:
            assert r.status == 502
            assert "does not chain to this proxy's trust anchors" in await r.text()
        assert sample(client.stats.render(), "refused_connections_total", direction="outbound",
                      reason="tls_untrusted") == 1
        # ... and the server refused the client, whose certificate it cannot verify either.
        await asyncio.sleep(0.05)
        assert sample(server.stats.render(), "refused_connections_total",
                      reason="tls_handshake") >= 1
    finally:
        await client.close()
        await server.close()
        await runner.cleanup()


async def test_inbound_refuses_tls_clients_without_a_certificate(pair: Pair) -> None:
    ctx = ssl.create_default_context(cadata=ROOT.cert_pem.decode())
    ctx.check_hostname = False
    host, port = pair.inbound
    with pytest.raises((ssl.SSLError, ConnectionResetError, asyncio.IncompleteReadError)):
        reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
        writer.write(b"isthmus/1 http 8080\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readexactly(1)
    await asyncio.sleep(0.05)
    assert sample(pair.metrics(pair.server), "refused_connections_total",
                  reason="tls_handshake") >= 1


async def test_plain_client_is_refused_on_identity_required_port(pair: Pair) -> None:
    host, port = pair.inbound
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET / HTTP/1.1\r\nHost: server:9999\r\n\r\n")
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 403")
    assert b"port 9999 requires mutual TLS" in answer


async def test_plain_client_reaches_the_app_by_host_port(pair: Pair) -> None:
    host, port = pair.inbound
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET / HTTP/1.1\r\nHost: server:%d\r\nConnection: close\r\n\r\n" % pair.app_port)
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert sample(pair.metrics(pair.server), "request_total", direction="inbound",
                  tls="no_identity") == 1


async def test_bodies_chunked_expect_continue_head_and_large(pair: Pair) -> None:
    data = bytes(range(256)) * 2048  # 512 KiB

    async def gen() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 65536):
            yield data[i:i + 65536]

    status, body, _ = await pair.get("/echo", method="POST", data=gen())  # chunked
    assert status == 200 and body == data
    status, body, _ = await pair.get("/echo", method="POST", data=data, expect100=True)
    assert status == 200 and body == data
    status, body, _ = await pair.get("/big?kib=2048")
    assert status == 200 and len(body) == 2048 * 1024
    status, body, _ = await pair.get("/", method="HEAD")
    assert status == 200 and body == b""
    status, body, _ = await pair.get("/")  # the connection after a HEAD is still in step
    assert status == 200 and body == b"hello from backend\n"


async def test_pipelined_requests_are_answered_in_order(pair: Pair) -> None:
    host, port = pair.client.outbound_address
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /status/201 HTTP/1.1\r\nHost: server.ns:8080\r\n\r\n"
                 b"GET /status/202 HTTP/1.1\r\nHost: server.ns:8080\r\nConnection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    assert answer.index(b"HTTP/1.1 201") < answer.index(b"HTTP/1.1 202")


async def test_retries_from_policy_and_none_without(pair: Pair) -> None:
    status, _, _ = await pair.get("/flaky/one")
    assert status == 503  # no policy: the failure is passed on
    pair.destination.set(AUTHORITY, [pair.endpoint()], policy={"retry.isthmus.io/http": "5xx"})
    status, body, _ = await pair.get("/flaky/two")
    assert status == 200 and body == b"backend serves two\n"
    big = b"x" * (64 * 1024 + 1)  # over the retry body limit: never retried
    status, _, _ = await pair.get("/flaky/three", method="GET", data=big)
    assert status == 503


async def test_timeout_from_policy_is_a_504(pair: Pair) -> None:
    pair.destination.set(AUTHORITY, [pair.endpoint()], policy={"timeout.isthmus.io/request": "200ms"})
    status, body, _ = await pair.get("/slow?ms=2000")
    assert status == 504
    assert b"timed out after 0.2s" in body
    status, _, _ = await pair.get("/slow?ms=10")
    assert status == 200


async def test_failure_accrual_ejects_a_failing_endpoint(pair: Pair) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="broken\n")

    bad_app = web.Application()
    bad_app.router.add_get("/{tail:.*}", broken)
    runner, bad_port = await start_app(bad_app)
    try:
        policy = {"balancer.isthmus.io/failure-accrual": "consecutive",
                  "balancer.isthmus.io/failure-accrual-consecutive-max-failures": "3",
                  "balancer.isthmus.io/failure-accrual-consecutive-min-penalty": "60s"}
        pair.destination.set(AUTHORITY, [pair.endpoint(identity=None, port=bad_port)], policy=policy)
        answers = [await pair.get("/") for _ in range(5)]
        # Ejected after three failures in a row; with no endpoint left, requests fail fast.
        assert [a[0] for a in answers] == [500, 500, 500, 503, 503]
        assert b"every endpoint of " + AUTHORITY.encode() + b" is failing" in answers[-1][1]
        # A healthy endpoint joins: requests go there while the failing one stays ejected.
        pair.destination.set(AUTHORITY, [pair.endpoint(identity=None, port=bad_port),
                                         pair.endpoint(identity=None)], policy=policy)
        assert [(await pair.get("/"))[0] for _ in range(20)] == [200] * 20
    finally:
        await runner.cleanup()


async def test_dead_endpoint_is_retried_elsewhere_and_reported(pair: Pair) -> None:
    dead = socket_port()
    pair.destination.set(AUTHORITY, [pair.endpoint(identity=None),
                                     pair.endpoint(identity=None, port=dead)],
                         policy={"retry.isthmus.io/http": "5xx", "retry.isthmus.io/limit": "2"})
    for _ in range(10):
        status, _, _ = await pair.get("/")
        assert status == 200
    pair.destination.set(AUTHORITY, [pair.endpoint(identity=None, port=dead)])
    status, body, _ = await pair.get("/")
    assert status == 502
    assert b"connection refused" in body


def socket_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return int(s.getsockname()[1])


async def test_connect_tunnels_opaque_tcp_over_mtls(pair: Pair) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data.upper())
        writer.close()

    server = await asyncio.start_server(echo, LOCAL, 0, reuse_address=False)
    port = server.sockets[0].getsockname()[1]
    pair.destination.set("db.ns.svc.cluster.local:5432", [pair.endpoint(port=port)])
    try:
        host, oport = pair.client.outbound_address
        reader, writer = await asyncio.open_connection(host, oport)
        writer.write(b"CONNECT db.ns:5432 HTTP/1.1\r\nHost: db.ns:5432\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        writer.write(b"not http at all\n")
        assert await reader.readexactly(16) == b"NOT HTTP AT ALL\n"
        writer.close()
    finally:
        server.close()
    # A tunnel is opaque TCP: no route of its own.
    assert series(pair.metrics(pair.client), "route_request_total") == []


async def test_upgrade_is_passed_through(pair: Pair) -> None:
    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            await sock.send_str(msg.data.upper())
        return sock

    app = web.Application()
    app.router.add_get("/ws", ws)
    runner, port = await start_app(app)
    try:
        pair.destination.set("ws.ns.svc.cluster.local:80", [pair.endpoint(port=port)])
        host, oport = pair.client.outbound_address
        async with pair.session.ws_connect(f"http://{host}:{oport}/ws",
                                           headers={"Host": "ws.ns:80"}) as sock:
            await sock.send_str("hello")
            msg = await sock.receive(timeout=5)
            assert msg.data == "HELLO"
    finally:
        await runner.cleanup()


async def test_slow_client_head_times_out() -> None:
    client = Proxy(config(None, header_timeout=0.3), destination=StaticDestination())
    await client.start()
    try:
        host, port = client.outbound_address
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408")
        assert b"request head not complete within 0.3s" in answer
    finally:
        await client.close()


async def test_idle_connection_is_closed() -> None:
    client = Proxy(config(None, idle_timeout=0.3), destination=StaticDestination())
    await client.start()
    try:
        host, port = client.outbound_address
        reader, _ = await asyncio.open_connection(host, port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        await client.close()


async def test_admin_ready_live_metrics_and_tap(pair: Pair) -> None:
    assert pair.client.admin is not None
    host, port = pair.client.admin.address
    admin = f"http://{host}:{port}"
    async with pair.session.get(f"{admin}/ready") as r:
        assert r.status == 200
    async with pair.session.get(f"{admin}/live") as r:
        assert r.status == 200
    async with pair.session.get(f"{admin}/tap?resource=bogus/x") as r:
        assert r.status == 400
        assert "bogus" in await r.text()
    assert not pair.client.tap.active

    async def tap() -> list[str]:
        async with pair.session.get(f"{admin}/tap?max=3&namespace=ns&resource=deploy/client") as r:
            return (await r.text()).splitlines()

    task = asyncio.ensure_future(tap())
    while not pair.client.tap.active:
        await asyncio.sleep(0.01)
    await pair.get("/status/201?x=1")
    lines = await asyncio.wait_for(task, 5)
    assert [line.split(" ")[0] for line in lines] == ["req", "rsp", "end"]
    assert "proxy=out" in lines[0] and "tls=true" in lines[0]
    assert f":authority={AUTHORITY}" in lines[0] and ":path=/status/201?x=1" in lines[0]
    assert ":status=201" in lines[1]
    assert "response-length=" in lines[2]
    await asyncio.sleep(0.05)
    assert not pair.client.tap.active  # the subscription ends with the stream


async def test_tap_streams_every_event_of_concurrent_requests(pair: Pair) -> None:
    assert pair.client.admin is not None
    host, port = pair.client.admin.address
    n = 40

    async def tap() -> list[str]:
        async with pair.session.get(f"http://{host}:{port}/tap?max={3 * n}&namespace=ns"
                                    f"&resource=deploy/client") as r:
            return (await r.text()).splitlines()

    task = asyncio.ensure_future(tap())
    while not pair.client.tap.active:
        await asyncio.sleep(0.01)
    statuses = await asyncio.gather(*(pair.get(f"/status/{200 + i % 5}") for i in range(n)))
    assert [s for s, _, _ in statuses] == [200 + i % 5 for i in range(n)]
    lines = await asyncio.wait_for(task, 10)
    assert len(lines) == 3 * n
    kinds: dict[str, list[str]] = {}
    for line in lines:
        kind, ident = line.split(" ")[:2]
        kinds.setdefault(ident, []).append(kind)
    assert len(kinds) == n
    assert all(k == ["req", "rsp", "end"] for k in kinds.values())
    await asyncio.sleep(0.05)
    assert not pair.client.tap.active


async def test_proxy_without_destination_forwards_ip_authorities_only(pair: Pair) -> None:
    proxy = Proxy(config(None))
    await proxy.start()
    try:
        host, port = proxy.outbound_address
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://{LOCAL}:{pair.app_port}/", proxy=f"http://{host}:{port}") as r:
                assert r.status == 200
            async with s.get("http://server.ns:8080/", proxy=f"http://{host}:{port}") as r:
                assert r.status == 503
                assert "no destination service" in await r.text()
    finally:
        await proxy.close()




async def test_inbound_falls_back_to_opaque_when_bytes_are_not_http(pair: Pair) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data[::-1])
        writer.close()

    server = await asyncio.start_server(echo, LOCAL, 0, reuse_address=False)
    port = server.sockets[0].getsockname()[1]
    try:
        ctx = ssl.create_default_context(cadata=ROOT.cert_pem.decode())
        ctx.check_hostname = False
        client_creds = creds(CLIENT_ID)
        path = __import__("pathlib").Path(__import__("tempfile").mkdtemp()) / "client.pem"
        path.write_bytes(client_creds.cert_pem + client_creds.key_pem)
        ctx.load_cert_chain(path)
        path.unlink()
        host, inbound_port = pair.inbound
        reader, writer = await asyncio.open_connection(host, inbound_port, ssl=ctx)
        writer.write(b"isthmus/1 http %d\n\x00\x01binary protocol" % port)
        assert await reader.readexactly(17) == b"locotorp yranib\x01\x00"
        writer.close()
    finally:
        server.close()
    assert series(pair.metrics(pair.server), "route_request_total") == []


GATEWAY_ID = workload_identity("isthmus-gateway", "isthmus-multicluster")
MIRROR = "server-east.ns.svc.cluster.local:8080"


@pytest.fixture
async def gateway(pair: Pair) -> AsyncIterator[Proxy]:
    """A gateway in front of the pair's server: the client reaches `server-east` through it."""
    local = StaticDestination()
    gw = Proxy(config(GATEWAY_ID, gateway=True), credentials=creds(GATEWAY_ID), destination=local)
    await gw.start()
    local.set(AUTHORITY, [pair.endpoint()])
    assert gw.inbound is not None
    pair.destination.set(MIRROR, [Endpoint(LOCAL, gw.inbound.address[1], GATEWAY_ID,
                                           gw.inbound.address[1], "http", AUTHORITY,
                                           MappingProxyType({}))],
                         labels={"dst_namespace": "ns", "dst_service": "server-east",
                                 "dst_target_cluster": "east"})
    yield gw
    await gw.close()


async def test_gateway_forwards_to_its_own_cluster_with_forwarded_header(pair: Pair,
                                                                         gateway: Proxy) -> None:
    status, body, _ = await pair.get("/headers", authority="server-east.ns:8080")
    assert status == 200, body
    headers = __import__("json").loads(body)
    assert headers["forwarded"] == f"by={GATEWAY_ID};for={CLIENT_ID}"
    assert headers["l5d-client-id"] == GATEWAY_ID  # the server's proxy saw the gateway's identity
    out = pair.metrics(pair.client)
    assert sample(out, "request_total", direction="outbound", server_id=GATEWAY_ID,
                  dst_target_cluster="east", authority=MIRROR) == 1
    assert sample(gateway.stats.render(), "response_total", direction="outbound",
                  authority=AUTHORITY, status_code="200") == 1


async def test_gateway_refuses_plain_tcp_and_counts_it(pair: Pair, gateway: Proxy) -> None:
    assert gateway.inbound is not None
    reader, writer = await asyncio.open_connection(*gateway.inbound.address)
    writer.write(b"GET / HTTP/1.1\r\nHost: server.ns:8080\r\n\r\n")
    try:
        answer = await reader.read()
    except ConnectionResetError:  # closed with the request unread
        answer = b""
    assert answer == b""
    writer.close()
    await asyncio.sleep(0.05)
    assert sample(gateway.stats.render(), "refused_connections_total",
                  reason="plain_to_gateway") == 1


async def test_gateway_refuses_a_client_certificate_from_another_anchor_and_counts_it(
        pair: Pair, gateway: Proxy, tmp_path: Any) -> None:
    assert gateway.inbound is not None
    stranger = creds(CLIENT_ID, OTHER_ISSUER)  # a valid workload certificate, of another trust anchor
    (tmp_path / "stranger.pem").write_bytes(stranger.cert_pem + stranger.key_pem)
    ctx = ssl.create_default_context(cadata=ROOT.cert_pem.decode())
    ctx.check_hostname = False
    ctx.load_cert_chain(tmp_path / "stranger.pem")
    with pytest.raises((ssl.SSLError, ConnectionResetError, asyncio.IncompleteReadError)):
        reader, writer = await asyncio.open_connection(*gateway.inbound.address, ssl=ctx)
        writer.write(b"isthmus/1 http server.ns.svc.cluster.local:8080\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readexactly(1)
    await asyncio.sleep(0.05)
    assert sample(gateway.stats.render(), "refused_connections_total", reason="tls_handshake") == 1
    assert series(gateway.stats.render(), "request_total") == []  # nothing went on


async def test_gateway_answers_unknown_services_and_loops_clearly(pair: Pair, gateway: Proxy) -> None:
    assert gateway.inbound is not None
    pair.destination.set("nothere-east.ns.svc.cluster.local:80", [Endpoint(
        LOCAL, gateway.inbound.address[1], GATEWAY_ID, gateway.inbound.address[1], "http",
        "nothere.ns.svc.cluster.local:80", MappingProxyType({}))])
    status, body, _ = await pair.get("/", authority="nothere-east.ns:80")
    assert status == 503
    assert b"nothere.ns.svc.cluster.local:80 does not resolve" in body
    # The gateway's own cluster has server-west mirrored: going there would leave the cluster again.
    local = gateway.destination
    local.set("server-west.ns.svc.cluster.local:8080", [Endpoint(
        "127.0.0.99", 4143, workload_identity("isthmus-gateway", "isthmus-multicluster"), 4143,
        "http", AUTHORITY, MappingProxyType({}))])
    pair.destination.set("loop-east.ns.svc.cluster.local:8080", [Endpoint(
        LOCAL, gateway.inbound.address[1], GATEWAY_ID, gateway.inbound.address[1], "http",
        "server-west.ns.svc.cluster.local:8080", MappingProxyType({}))])
    status, body, _ = await pair.get("/", authority="loop-east.ns:8080")
    assert status == 508
    assert b"is a mirrored service of another cluster" in body


# ---------------------------------------------------------------- route metrics

OUT_ROUTE = {"direction": "outbound", "dst": AUTHORITY, "dst_namespace": "ns",
             "dst_service": "server"}
IN_ROUTE = {"direction": "inbound", "dst": AUTHORITY}


async def test_routes_are_counted_on_both_sides_with_ids_replaced(pair: Pair) -> None:
    for path in ("/status/201?x=1", "/status/202", "/headers", "/headers?a=b",
                 "/status/123e4567-e89b-12d3-a456-426614174000", "/status/503"):
        await pair.get(path)
    out, inbound = pair.metrics(pair.client), pair.metrics(pair.server)
    for text, labels in ((out, OUT_ROUTE), (inbound, IN_ROUTE)):
        assert sorted(series(text, "route_request_total"), key=str) == sorted([
            ({**labels, "rt_route": "GET /status/{id}"}, 4.0),
            ({**labels, "rt_route": "GET /headers"}, 2.0)], key=str)
        status = {"rt_route": "GET /status/{id}"}
        assert sample(text, "route_response_total", **status, status_code="201",
                      classification="success") == 1
        assert sample(text, "route_response_total", **status, status_code="503",
                      classification="failure") == 1
        assert sample(text, "route_response_total", **status) == 4
        assert sample(text, "route_response_latency_ms_count", **status) == 4
        assert sample(text, "route_response_latency_ms_bucket", **status, status_code="201",
                      le="+Inf") == 1
        for name in ("route_response_total", "route_response_latency_ms_count"):
            for found, _ in series(text, name):
                assert {k: v for k, v in found.items()
                        if k not in ("rt_route", "status_code", "classification")} == labels


async def test_a_retried_request_counts_once_on_its_route(pair: Pair) -> None:
    pair.destination.set(AUTHORITY, [pair.endpoint()], policy={"retry.isthmus.io/http": "5xx"})
    status, _, _ = await pair.get("/flaky/route")
    assert status == 200
    out = pair.metrics(pair.client)
    assert sample(out, "request_total", direction="outbound") == 2  # both attempts
    assert sample(out, "route_request_total", rt_route="GET /flaky/route") == 1
    assert sample(out, "route_response_total", rt_route="GET /flaky/route") == 1
    assert sample(out, "route_response_total", rt_route="GET /flaky/route",
                  status_code="200") == 1


async def test_proxy_errors_are_counted_on_the_route(pair: Pair) -> None:
    status, _, _ = await pair.get("/api/1", authority="nothere.ns:8080")
    assert status == 503
    assert series(pair.metrics(pair.client), "route_response_total") == [
        ({"direction": "outbound", "dst": "nothere.ns.svc.cluster.local:8080",
          "rt_route": "GET /api/{id}", "status_code": "503", "classification": "failure"}, 1.0)]


async def test_routes_past_the_limit_are_counted_as_other(pair: Pair) -> None:
    for i in range(105):
        status, _, _ = await pair.get(f"/page-{i}")
        assert status == 404
    for proxy, labels in ((pair.client, OUT_ROUTE), (pair.server, IN_ROUTE)):
        found = {s[0]["rt_route"]: s[1] for s in series(pair.metrics(proxy), "route_request_total")}
        assert len(found) == 101
        assert found.pop("[OTHER]") == 5
        assert found == {f"GET /page-{i}": 1 for i in range(100)}
        assert sample(pair.metrics(proxy), "route_response_total", **labels, rt_route="[OTHER]",
                      status_code="404") == 5
    # Routes named before the limit keep their names.
    await pair.get("/page-7?again=1")
    assert sample(pair.metrics(pair.client), "route_request_total", rt_route="GET /page-7") == 2


async def test_gateway_counts_routes_for_its_own_cluster(pair: Pair, gateway: Proxy) -> None:
    status, _, _ = await pair.get("/status/200", authority="server-east.ns:8080")
    assert status == 200
    assert sample(pair.metrics(pair.client), "route_request_total", direction="outbound",
                  dst=MIRROR, rt_route="GET /status/{id}", dst_service="server-east",
                  dst_target_cluster="east") == 1
    assert sample(gateway.stats.render(), "route_request_total", direction="outbound",
                  dst=AUTHORITY, rt_route="GET /status/{id}", dst_service="server") == 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
async def test_metrics_with_routes_pass_promtool(pair: Pair) -> None:
    for path in ("/", "/status/404", "/status/500?x=1", "/headers", "/x%22y/1"):
        await pair.get(path)
    for proxy in (pair.client, pair.server):
        text = pair.metrics(proxy)
        assert series(text, "route_request_total")
        check = await asyncio.to_thread(subprocess.run, ["promtool", "check", "metrics"],
                                        input=text, capture_output=True, text=True, timeout=60)
        problems = [line for line in (check.stdout + check.stderr).splitlines()
                    if line.strip() and "abbreviated units" not in line]
        assert check.returncode in (0, 3), check.stdout + check.stderr
        assert problems == []

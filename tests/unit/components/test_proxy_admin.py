"""The proxy's admin listener and the small HTTP client of the identity and destination clients,
with real sockets, real TLS 1.3 and the real curl: paths, methods, keep-alive, HTTP/1.0, bad
requests, tap streams that end when their client goes away, and the client's failures."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from isthmus.adapters.x509 import Credentials, issue_leaf, new_issuer, new_root
from isthmus.components.identity import IdentityClient, http1client
from isthmus.components.identity.client import service_identity
from isthmus.components.identity.tlsconfig import server_context
from isthmus.components.proxy.admin import AdminServer
from isthmus.components.proxy.stats import ProxyStats
from isthmus.components.proxy.tap import TapHub
from isthmus.core.identity import workload_identity

LOCAL = "127.0.0.1"
CURL = shutil.which("curl") or "/usr/bin/curl"


class FakeProxy:
    """What the admin server reads of a proxy: stats, tap, readiness and shutdown."""

    def __init__(self) -> None:
        self.stats = ProxyStats()
        self.tap = TapHub(namespace="ns", workload=("deploy", "web"))
        self.ready = True
        self.shutdowns = 0

    def not_ready_reason(self) -> str:
        return "waiting for a certificate from the identity service"

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.fixture
async def admin() -> AsyncIterator[tuple[AdminServer, FakeProxy]]:
    proxy = FakeProxy()
    server = AdminServer(proxy, (LOCAL, 0))  # type: ignore[arg-type]
    await server.start()
    yield server, proxy
    await server.close()


async def exchange(addr: tuple[str, int], raw: bytes) -> bytes:
    """Send `raw`, read until the server closes the connection."""
    reader, writer = await asyncio.open_connection(*addr)
    writer.write(raw)
    data = await asyncio.wait_for(reader.read(-1), 10)
    writer.close()
    return data


async def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, [CURL, "-sS", "--max-time", "10", *args],
                                   capture_output=True, text=True)


async def test_paths_answer_with_curl(admin: tuple[AdminServer, FakeProxy]) -> None:
    server, proxy = admin
    base = f"http://{server.address[0]}:{server.address[1]}"
    r = await curl("-i", f"{base}/metrics")
    assert r.returncode == 0 and r.stdout.startswith("HTTP/1.1 200 OK")
    assert "Content-Type: text/plain; charset=utf-8" in r.stdout
    assert "X-Content-Type-Options: nosniff" in r.stdout
    assert (await curl(f"{base}/live")).stdout == "live\n"
    assert (await curl(f"{base}/ready")).stdout == "ready\n"
    proxy.ready = False
    r = await curl("-w", "%{http_code}", f"{base}/ready")
    assert r.stdout == "not ready: waiting for a certificate from the identity service\n503"
    r = await curl("-I", f"{base}/live")
    assert r.stdout.startswith("HTTP/1.1 200") and "Content-Length: 5" in r.stdout
    r = await curl("-i", "-X", "POST", f"{base}/live")
    assert r.stdout.startswith("HTTP/1.1 405") and "Allow: GET,HEAD" in r.stdout
    assert (await curl("-w", "%{http_code}", f"{base}/nope")).stdout.endswith("404")
    assert proxy.shutdowns == 0
    r = await curl("-X", "POST", "--data", "x" * 10_000, f"{base}/shutdown")
    assert r.stdout == "shutdown\n"
    await asyncio.sleep(0.1)
    assert proxy.shutdowns == 1


async def test_pipelined_requests_are_answered_in_order(admin: tuple[AdminServer, FakeProxy]) -> None:
    server, _ = admin
    data = await exchange(server.address, b"GET /live HTTP/1.1\r\nHost: a\r\n\r\n"
                          b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\n"
                          b"GET /live HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert data.count(b"HTTP/1.1 200 OK") == 3
    assert data.index(b"live\n") < data.index(b"ready\n") < data.rindex(b"live\n")
    assert data.endswith(b"Connection: close\r\n\r\nlive\n")


async def test_a_malformed_request_gets_400_and_the_server_keeps_serving(
        admin: tuple[AdminServer, FakeProxy]) -> None:
    server, proxy = admin
    data = await exchange(server.address, b"GET /live HTTP/1.1\r\nBad Header\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400 Bad Request") and b"Connection: close" in data
    data = await exchange(server.address, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400")
    assert await exchange(server.address, b"GET /live HTTP/1.0\r\n\r\n") == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n"
        b"Connection: close\r\n\r\nlive\n")
    assert proxy.shutdowns == 0 and not proxy.tap.active


async def test_bad_tap_queries_are_refused(admin: tuple[AdminServer, FakeProxy]) -> None:
    server, proxy = admin
    base = f"http://{server.address[0]}:{server.address[1]}"
    r = await curl("-w", " %{http_code}", f"{base}/tap?resource=bogus/x")
    assert r.stdout.startswith("bad tap query:") and "bogus" in r.stdout and r.stdout.endswith(" 400")
    r = await curl("-w", " %{http_code}", f"{base}/tap?format=xml")
    assert r.stdout == "bad format 'xml': want text or json\n 400"
    assert not proxy.tap.active


async def test_a_tap_ends_when_its_client_goes_away(admin: tuple[AdminServer, FakeProxy]) -> None:
    server, proxy = admin
    reader, writer = await asyncio.open_connection(*server.address)
    writer.write(b"GET /tap?namespace=ns&resource=deploy/web HTTP/1.1\r\nHost: a\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert b"Transfer-Encoding: chunked" in head
    while not proxy.tap.active:
        await asyncio.sleep(0.01)
    writer.close()  # no event was ever sent: the subscription still ends now
    for _ in range(500):
        if not proxy.tap.active:
            break
        await asyncio.sleep(0.01)
    assert not proxy.tap.active


async def test_a_tap_over_http10_streams_until_max_then_closes(admin: tuple[AdminServer, FakeProxy]) -> None:
    server, proxy = admin
    from isthmus.core.proxy.tap import TapMeta

    async def feed() -> None:
        while not proxy.tap.active:
            await asyncio.sleep(0.01)
        meta = TapMeta(direction="inbound", src_ip="127.0.0.9", src_port=1, dst_ip=LOCAL, dst_port=2,
                       tls="true", method="GET", authority="web.ns:80", path="/x", src_labels={},
                       dst_labels=proxy.tap.own_labels)
        tapped = proxy.tap.tap.start(meta, 1.0)
        tapped.response(200, 1.1)
        tapped.end(3, 1.2)

    feeder = asyncio.ensure_future(feed())
    data = await exchange(server.address, b"GET /tap?max=3&format=json&namespace=ns&resource=deploy/web HTTP/1.0\r\n\r\n")
    await feeder
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Content-Type: application/x-ndjson" in head and b"Transfer-Encoding" not in head
    assert [line[:1] for line in body.splitlines()] == [b"{"] * 3
    assert not proxy.tap.active


# --------------------------------------------------------------------------- the small client

NOW = datetime.now(UTC)
ROOT = new_root(now=NOW - timedelta(hours=1))
ISSUER = new_issuer(ROOT, now=NOW - timedelta(hours=1))
WEB_ID = workload_identity("web", "emojivoto")


def leaf(identity: str) -> Credentials:
    creds = issue_leaf(ISSUER, identity, now=NOW)
    return Credentials(creds.cert_pem + ISSUER.cert_pem, creds.key_pem)


async def raw_server(answer: bytes) -> tuple[asyncio.AbstractServer, int]:
    """A server that reads a request head, writes `answer` and then stays silent."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await reader.read()
        writer.close()

    server = await asyncio.start_server(handle, LOCAL, 0)
    return server, server.sockets[0].getsockname()[1]


async def test_the_client_reports_silence_garbage_and_early_ends() -> None:
    server, port = await raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    try:
        resp = await http1client.request(LOCAL, port, None, "GET", "/", read_timeout=0.2)
        assert resp.status == 200
        with pytest.raises(TimeoutError):
            await resp.read()
        resp.close()
    finally:
        server.close()
    server, port = await raw_server(b"SSH-2.0-OpenSSH\r\n\r\n")
    try:
        with pytest.raises(http1client.BadResponse, match="malformed HTTP response"):
            await http1client.request(LOCAL, port, None, "GET", "/", read_timeout=5)
    finally:
        server.close()
    with pytest.raises(ConnectionRefusedError):
        await http1client.request(LOCAL, 1, None, "GET", "/", connect_timeout=5)


async def test_identity_client_posts_over_tls_to_the_service_it_expects(tmp_path: Path) -> None:
    sid = service_identity("cluster.local")
    seen: list[dict[str, str]] = []

    async def certify(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.json_response({"error": "scripted refusal"}, status=403)

    app = web.Application()
    app.router.add_post("/v1/certify", certify)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOCAL, 0, ssl_context=server_context(leaf(sid), ROOT.cert_pem,
                                                                      require_client_cert=False))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    token = tmp_path / "token"
    token.write_text("tok\n")
    try:
        client = IdentityClient(service_url=f"https://{LOCAL}:{port}", service_ca_pem=ROOT.cert_pem,
                                identity=WEB_ID, token_path=token, clock=lambda: datetime.now(UTC))
        status, body = await client._post(f"https://{LOCAL}:{port}/v1/certify", {"token": "tok"})
        assert (status, body, seen) == (403, {"error": "scripted refusal"}, [{"token": "tok"}])
        other = IdentityClient(service_url=f"https://{LOCAL}:{port}", service_ca_pem=new_root(now=NOW).cert_pem,
                               identity=WEB_ID, token_path=token, clock=lambda: datetime.now(UTC))
        with pytest.raises(Exception, match="certificate verify failed"):
            await other._post(f"https://{LOCAL}:{port}/v1/certify", {"token": "tok"})
        assert len(seen) == 1
    finally:
        await runner.cleanup()


def test_on_uvloop_paths_and_tap_ends_work() -> None:
    """The proxy runs on uvloop (its transports are no asyncio.Transport subclasses)."""
    import uvloop

    async def scenario() -> None:
        proxy = FakeProxy()
        server = AdminServer(proxy, (LOCAL, 0))  # type: ignore[arg-type]
        await server.start()
        try:
            data = await exchange(server.address, b"GET /ready HTTP/1.1\r\nHost: a\r\n"
                                  b"Connection: close\r\n\r\n")
            assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"ready\n")
            reader, writer = await asyncio.open_connection(*server.address)
            writer.write(b"GET /tap?namespace=ns&resource=deploy/web HTTP/1.1\r\nHost: a\r\n\r\n")
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert proxy.tap.active
            writer.close()
            for _ in range(500):
                if not proxy.tap.active:
                    break
                await asyncio.sleep(0.01)
            assert not proxy.tap.active
        finally:
            await server.close()

    uvloop.run(scenario())

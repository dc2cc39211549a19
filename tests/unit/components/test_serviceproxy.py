"""Service proxy over real loopback sockets: cluster-IP listeners and the cluster HTTP proxy.

Everything binds 127.251.0.0/16 with high ports, so nothing here collides with
a running cluster or with other tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import h11
import pytest
from aiohttp import web

from isthmus.components.serviceproxy import ServiceProxy, ServiceProxyError
from isthmus.components.serviceproxy.tcp import bind_warning
from isthmus.core.servicemap import ServiceKey, ServicePort

A, B, DEAD = "127.251.64.1", "127.251.64.2", "127.251.64.9"
BACKEND_PORT = 18081
CLUSTER_IP, SVC_PORT = "127.251.128.1", 18080
EMPTY_IP = "127.251.128.2"
PROXY_IP = "127.251.0.1"
POD_IP = "127.251.64.50"  # a client "pod" in namespace emojivoto
PODS = {POD_IP: "emojivoto"}
TIMEOUT = 5.0

IP_KEY = web.AppKey("ip", str)


def service(name: str, cluster_ip: str, port: int = SVC_PORT, ns: str = "emojivoto") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": cluster_ip,
                     "ports": [{"name": "http", "port": port, "targetPort": BACKEND_PORT}]}}


def endpoints(name: str, *ips: str, ns: str = "emojivoto") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns},
            "subsets": [{"addresses": [{"ip": ip} for ip in ips],
                         "ports": [{"name": "http", "port": BACKEND_PORT}]}]}


WEB = service("web-svc", CLUSTER_IP)
EMPTY = service("empty-svc", EMPTY_IP)


# --------------------------------------------------------------------------- backends


async def who(request: web.Request) -> web.Response:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    port = peer[1] if peer else 0
    return web.Response(text=f"{request.app[IP_KEY]} {port} {request.host} {request.path_qs}")


async def echo(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    async for chunk in request.content.iter_any():
        await response.write(chunk.upper())
    await response.write_eof()
    return response


@pytest.fixture
async def backends() -> AsyncIterator[None]:
    runners = []
    for ip in (A, B):
        app = web.Application()
        app[IP_KEY] = ip
        app.router.add_get("/who", who)
        app.router.add_post("/echo", echo)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, ip, BACKEND_PORT, reuse_address=True).start()
        runners.append(runner)
    yield
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def proxy(backends: None) -> AsyncIterator[ServiceProxy]:
    p = ServiceProxy(http_proxy_address=(PROXY_IP, 0), pod_namespace=PODS.get)
    p.update([WEB, EMPTY], [endpoints("web-svc", A, B)])
    await p.start()
    await p.synced()
    yield p
    await p.close()


# --------------------------------------------------------------------------- a small h11 client


@dataclass
class Reply:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, host: str, port: int, *, local_ip: str | None = None) -> Client:
        local = (local_ip, 0) if local_ip else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=local), TIMEOUT)
        return cls(reader, writer)

    async def _event(self) -> Any:
        while (event := self.conn.next_event()) is h11.NEED_DATA:
            self.conn.receive_data(await asyncio.wait_for(self.reader.read(65536), TIMEOUT))
        return event

    async def request(self, method: str, target: str, *, host: str = "x",
                      headers: Iterable[tuple[str, str]] = (), body: Iterable[bytes] = (),
                      ) -> Reply:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        out = self.conn.send(h11.Request(method=method, target=target,
                                         headers=[("host", host), *headers])) or b""
        for chunk in body:
            out += self.conn.send(h11.Data(data=chunk)) or b""
        out += self.conn.send(h11.EndOfMessage()) or b""
        self.writer.write(out)
        response = await self._event()
        assert isinstance(response, h11.Response)
        data = b""
        while not isinstance(event := await self._event(), h11.EndOfMessage):
            data += event.data
        return Reply(response.status_code, dict(response.headers), data)

    def close(self) -> None:
        self.writer.close()


async def get(address: tuple[str, int], target: str, **kw: Any) -> Reply:
    client = await Client.open(*address, local_ip=kw.pop("local_ip", None))
    try:
        return await client.request("GET", target, **kw)
    finally:
        client.close()


def backend_of(reply: Reply) -> str:
    assert reply.status == 200, reply
    return reply.text.split()[0]


async def refused(ip: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(ip, port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


# --------------------------------------------------------------------------- cluster-IP listeners


async def test_cluster_ip_listener_balances_over_both_backends(proxy: ServiceProxy) -> None:
    assert proxy.listening == {(CLUSTER_IP, SVC_PORT), (EMPTY_IP, SVC_PORT)}
    seen = [backend_of(await get((CLUSTER_IP, SVC_PORT), "/who")) for _ in range(4)]
    assert seen == [A, B, A, B]


async def test_backend_removed_by_update_is_no_longer_chosen(proxy: ServiceProxy) -> None:
    proxy.update([WEB, EMPTY], [endpoints("web-svc", B)])
    await proxy.synced()
    seen = {backend_of(await get((CLUSTER_IP, SVC_PORT), "/who")) for _ in range(4)}
    via_http = {backend_of(await get(proxy.http_proxy_address,
                                     f"http://web-svc.emojivoto:{SVC_PORT}/who")) for _ in range(3)}
    assert seen == via_http == {B}


async def test_dead_backend_is_skipped(proxy: ServiceProxy) -> None:
    proxy.update([WEB], [endpoints("web-svc", A, DEAD)])
    await proxy.synced()
    assert [backend_of(await get((CLUSTER_IP, SVC_PORT), "/who")) for _ in range(3)] == [A] * 3


async def test_no_ready_backends_closes_the_client(proxy: ServiceProxy) -> None:
    reader, writer = await asyncio.open_connection(EMPTY_IP, SVC_PORT)
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    writer.close()


async def test_listeners_follow_updates(proxy: ServiceProxy) -> None:
    extra = service("extra", "127.251.128.3", 18082)
    proxy.update([WEB, extra], [endpoints("web-svc", A), endpoints("extra", B)])
    await proxy.synced()
    assert proxy.listening == {(CLUSTER_IP, SVC_PORT), ("127.251.128.3", 18082)}
    assert backend_of(await get(("127.251.128.3", 18082), "/who")) == B
    assert await refused(EMPTY_IP, SVC_PORT)
    proxy.update([WEB], [endpoints("web-svc", A)])
    await proxy.synced()
    assert await refused("127.251.128.3", 18082)


async def test_taken_address_is_one_warning_and_http_still_works(
        proxy: ServiceProxy, caplog: pytest.LogCaptureFixture) -> None:
    squatter = socket.socket()
    squatter.bind(("127.251.128.4", SVC_PORT))
    squatter.listen()
    try:
        with caplog.at_level(logging.WARNING, logger="isthmus.serviceproxy"):
            proxy.update([WEB, service("taken", "127.251.128.4")],
                         [endpoints("web-svc", A), endpoints("taken", B)])
            await proxy.synced()
            proxy.update([WEB, service("taken", "127.251.128.4")],
                         [endpoints("web-svc", B), endpoints("taken", B)])
            await proxy.synced()
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1, lines
        assert "service emojivoto/taken port 18080: cannot listen on 127.251.128.4:18080" in lines[0]
        assert "HTTP_PROXY=http://127.251.0.1:" in lines[0]
        assert proxy.listening == {(CLUSTER_IP, SVC_PORT)}
        reply = await get(proxy.http_proxy_address, f"http://taken.emojivoto:{SVC_PORT}/who")
        assert backend_of(reply) == B
    finally:
        squatter.close()


def test_privileged_port_warning_says_what_to_do() -> None:
    port = ServicePort(ServiceKey("emojivoto", "web-svc"), "http", 80, (CLUSTER_IP,), ())
    line = bind_warning(port, (CLUSTER_IP, 80), OSError(errno.EACCES, "Permission denied"),
                        "HTTP_PROXY=http://127.251.0.1:4140")
    assert line == ("service emojivoto/web-svc port 80: cannot listen on 127.251.128.1:80: ports"
                    " below 1024 need root or CAP_NET_BIND_SERVICE (or run `sysctl"
                    " net.ipv4.ip_unprivileged_port_start=80`); pods reach it through the cluster"
                    " HTTP proxy (HTTP_PROXY=http://127.251.0.1:4140) instead")


async def test_bind_services_false_opens_no_listeners(backends: None) -> None:
    p = ServiceProxy(http_proxy_address=(PROXY_IP, 0), bind_services=False)
    await p.start()
    try:
        p.update([WEB], [endpoints("web-svc", A)])
        await p.synced()
        assert p.listening == frozenset()
        assert await refused(CLUSTER_IP, SVC_PORT)
        reply = await get(p.http_proxy_address, f"http://{CLUSTER_IP}:{SVC_PORT}/who")
        assert backend_of(reply) == A
    finally:
        await p.close()


# --------------------------------------------------------------------------- the HTTP proxy


@pytest.mark.parametrize("authority", [
    f"web-svc.emojivoto:{SVC_PORT}",
    f"web-svc.emojivoto.svc.cluster.local:{SVC_PORT}",
    f"{CLUSTER_IP}:{SVC_PORT}",
])
async def test_http_proxy_resolves_names_and_cluster_ip(proxy: ServiceProxy, authority: str) -> None:
    reply = await get(proxy.http_proxy_address, f"http://{authority}/who?x=1", host="ignored")
    _, _, host, path = reply.text.split()
    assert reply.status == 200
    assert (host, path) == (authority, "/who?x=1")  # Host is the request's authority


async def test_short_names_use_the_pod_namespace(proxy: ServiceProxy) -> None:
    short = f"http://web-svc:{SVC_PORT}/who"
    assert (await get(proxy.http_proxy_address, short, local_ip=POD_IP)).status == 200
    reply = await get(proxy.http_proxy_address, short)  # unknown client: namespace default
    assert (reply.status, reply.text) == (503, 'no service "web-svc" in namespace "default"\n')


async def test_origin_form_uses_the_host_header(proxy: ServiceProxy) -> None:
    reply = await get(proxy.http_proxy_address, "/who", host=f"web-svc.emojivoto:{SVC_PORT}")
    assert reply.status == 200


async def test_keep_alive_on_both_sides(proxy: ServiceProxy) -> None:
    proxy.update([WEB], [endpoints("web-svc", A)])
    client = await Client.open(*proxy.http_proxy_address)
    try:
        replies = [await client.request("GET", f"http://web-svc.emojivoto:{SVC_PORT}/who")
                   for _ in range(3)]
    finally:
        client.close()
    upstream_ports = {r.text.split()[1] for r in replies}
    assert [r.status for r in replies] == [200] * 3
    assert len(upstream_ports) == 1  # one backend connection, reused
    assert "1 idle connections" in repr(proxy)


async def test_stale_pooled_connection_is_retried_on_a_fresh_one(proxy: ServiceProxy) -> None:
    """A backend that closes a kept-alive connection as the next request arrives."""
    async def one_answer_per_connection(reader: asyncio.StreamReader,
                                        writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")  # the next request: hang up, no answer
        writer.close()

    flaky = await asyncio.start_server(one_answer_per_connection, "127.251.64.3", BACKEND_PORT)
    try:
        proxy.update([WEB], [endpoints("web-svc", "127.251.64.3")])
        client = await Client.open(*proxy.http_proxy_address)
        replies = [await client.request("GET", f"http://web-svc.emojivoto:{SVC_PORT}/")
                   for _ in range(3)]
        client.close()
        assert [(r.status, r.body) for r in replies] == [(200, b"ok")] * 3
    finally:
        flaky.close()


async def test_http10_client(proxy: ServiceProxy) -> None:
    reader, writer = await asyncio.open_connection(*proxy.http_proxy_address)
    writer.write(f"GET http://web-svc.emojivoto:{SVC_PORT}/who HTTP/1.0\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), TIMEOUT)  # then the proxy closes
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.split(b"\r\n\r\n", 1)[1].split()[0].decode() in (A, B)


async def test_chunked_bodies_stream_both_ways(proxy: ServiceProxy) -> None:
    client = await Client.open(*proxy.http_proxy_address)
    try:
        chunks = [b"hello ", b"chunked ", b"world"] * 50
        reply = await client.request("POST", f"http://web-svc.emojivoto:{SVC_PORT}/echo",
                                     headers=[("transfer-encoding", "chunked")], body=chunks)
        assert reply.status == 200
        assert reply.headers[b"transfer-encoding"] == b"chunked"
        assert reply.body == b"".join(chunks).upper()
        sized = await client.request("POST", f"http://web-svc.emojivoto:{SVC_PORT}/echo",
                                     headers=[("content-length", "5")], body=[b"abcde"])
        assert sized.body == b"ABCDE"
    finally:
        client.close()


async def test_connect_tunnel(proxy: ServiceProxy) -> None:
    reader, writer = await asyncio.open_connection(*proxy.http_proxy_address)
    try:
        writer.write(f"CONNECT web-svc.emojivoto:{SVC_PORT} HTTP/1.1\r\n"
                     f"host: web-svc.emojivoto:{SVC_PORT}\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 200 ")
        tunnel = Client(reader, writer)
        reply = await tunnel.request("GET", "/who", host="inside")
        assert backend_of(reply) in (A, B)
        assert reply.text.split()[2] == "inside"
    finally:
        writer.close()


async def test_unknown_service_and_no_endpoints_are_503(proxy: ServiceProxy) -> None:
    client = await Client.open(*proxy.http_proxy_address)
    try:
        unknown = await client.request("GET", "http://nope.emojivoto/")
        assert (unknown.status, unknown.text) == (503, 'no service "nope" in namespace "emojivoto"\n')
        empty = await client.request("GET", f"http://empty-svc.emojivoto:{SVC_PORT}/")
        assert (empty.status, empty.text) == (
            503, 'service "emojivoto/empty-svc" has no ready endpoints\n')
        ok = await client.request("GET", f"http://web-svc.emojivoto:{SVC_PORT}/who")
        assert ok.status == 200  # refusals keep the connection alive
    finally:
        client.close()


async def test_outside_loopback_is_refused(proxy: ServiceProxy) -> None:
    for target in ("http://10.1.2.3/", "http://www.example.com:8080/", "http://[::1]:80/"):
        reply = await get(proxy.http_proxy_address, target)
        assert reply.status == 403, target
        assert "only cluster services and 127.0.0.0/8 addresses" in reply.text
    reader, writer = await asyncio.open_connection(*proxy.http_proxy_address)
    writer.write(b"CONNECT 10.1.2.3:443 HTTP/1.1\r\nhost: 10.1.2.3:443\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), TIMEOUT)).startswith(b"HTTP/1.1 403 ")
    writer.close()


async def test_plain_loopback_address_is_forwarded_directly(proxy: ServiceProxy) -> None:
    reply = await get(proxy.http_proxy_address, f"http://{B}:{BACKEND_PORT}/who")
    assert backend_of(reply) == B
    down = await get(proxy.http_proxy_address, f"http://{DEAD}:{BACKEND_PORT}/who")
    assert down.status == 502 and f"cannot connect to {DEAD}:{BACKEND_PORT}" in down.text
    host, port = proxy.http_proxy_address
    loop = await get(proxy.http_proxy_address, f"http://{host}:{port}/")
    assert loop.status == 403 and "this proxy" in loop.text


async def test_bad_requests_get_400(proxy: ServiceProxy) -> None:
    assert (await get(proxy.http_proxy_address, "https://web-svc.emojivoto/")).status == 400
    reader, writer = await asyncio.open_connection(*proxy.http_proxy_address)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), TIMEOUT)).startswith(b"HTTP/1.1 400 ")
    writer.close()


# --------------------------------------------------------------------------- lifecycle


async def test_close_leaves_no_listeners(backends: None) -> None:
    p = ServiceProxy(http_proxy_address=(PROXY_IP, 0))
    p.update([WEB], [endpoints("web-svc", A)])
    await p.start()
    await p.synced()
    address = p.http_proxy_address
    idle = await Client.open(*address)  # an open client connection does not hold close() up
    assert backend_of(await idle.request("GET", f"http://web-svc.emojivoto:{SVC_PORT}/who")) == A
    assert "running" in repr(p)
    await asyncio.wait_for(p.close(), TIMEOUT)
    assert await refused(CLUSTER_IP, SVC_PORT)
    assert await refused(*address)
    assert "closed" in repr(p) and "listeners=0/" in repr(p)
    idle.close()
    with pytest.raises(ServiceProxyError):
        await p.start()


def test_http_proxy_listens_on_loopback_only() -> None:
    with pytest.raises(ServiceProxyError, match=r"must listen on a 127\.0\.0\.0/8 address"):
        ServiceProxy(http_proxy_address=("0.0.0.0", 4140))


async def test_http_address_in_use_is_a_clear_error(proxy: ServiceProxy) -> None:
    other = ServiceProxy(http_proxy_address=proxy.http_proxy_address)
    with pytest.raises(ServiceProxyError, match=r"cannot listen on 127\.251\.0\.1:\d+ for the cluster"):
        await other.start()

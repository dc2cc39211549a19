"""The destination client against a small scripted destination service (aiohttp, real TLS 1.3 on
127.0.0.1): shared resolutions, pushed updates, keeping the last answer while reconnecting with
backoff, identity checks, client certificates and idle expiry.

The scripted service sends what each test tells it on each stream. The client's sleep is a
`FakeSleep`: every backoff or idle wait is handed to the test, which checks its length and then
lets it end, so no test waits for real time to pass.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import uvloop
from aiohttp import web

from isthmus.adapters.x509 import Credentials, issue_leaf, new_issuer, new_root
from isthmus.components.destination import (
    DestinationClient,
    DestinationError,
    Endpoint,
    EndpointSet,
    ServiceRef,
    destination_identity,
)
from isthmus.components.identity.tlsconfig import peer_identity, server_context
from isthmus.core.identity import retry_delay, workload_identity

NOW = datetime.now(UTC)
ROOT = new_root(now=NOW - timedelta(hours=1))
ISSUER = new_issuer(ROOT, now=NOW - timedelta(hours=1))
DEST_ID = destination_identity()
PROXY_ID = workload_identity("vote-bot", "emojivoto")
WEB = "web-svc.emojivoto.svc.cluster.local:80"
JITTER = 0.5
BASE, CAP = 0.5, 10.0


def leaf(identity: str) -> Credentials:
    creds = issue_leaf(ISSUER, identity, now=NOW)
    return Credentials(creds.cert_pem + ISSUER.cert_pem, creds.key_pem)


DEST_CREDS = leaf(DEST_ID)


def snapshot(*ips: str, authority: str = WEB, **extra: Any) -> dict[str, Any]:
    return {"authority": authority, "exists": True, "service": {"namespace": "emojivoto", "name": "web-svc"},
            "labels": {"dst_namespace": "emojivoto", "dst_service": "web-svc"},
            "policy": {"timeout.isthmus.io/request": "2s"}, "opaque": False,
            "endpoints": [{"addr": ip, "port": 8080, "identity": workload_identity("web", "emojivoto"),
                           "proxyPort": 4143, "protocolHint": "http", "authorityOverride": None,
                           "labels": {"dst_pod": f"web-{ip}"}} for ip in ips],
            **extra}


@dataclass
class Stream:
    """One open resolve stream on the scripted service; the test writes lines to it or ends it."""

    authority: str
    peer: str | None
    lines: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    gone: asyncio.Event = field(default_factory=asyncio.Event)

    def send(self, obj: Any) -> None:
        self.lines.put_nowait(obj if isinstance(obj, bytes) else orjson.dumps(obj) + b"\n")

    def end(self) -> None:
        self.lines.put_nowait(None)


class FakeDestination:
    """A destination service whose answers the test scripts (`first` is sent on every new stream)."""

    def __init__(self) -> None:
        self.first: dict[str, Any] = {WEB: snapshot("127.1.64.5")}
        self.status = 200
        self.opened: asyncio.Queue[Stream] = asyncio.Queue()
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/v1/resolve", self._resolve)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        sock = socket.create_server(("127.0.0.1", port))
        self.port = sock.getsockname()[1]
        ctx = server_context(DEST_CREDS, ROOT.cert_pem, require_client_cert=False)
        await web.SockSite(self._runner, sock, ssl_context=ctx).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def next_stream(self) -> Stream:
        return await asyncio.wait_for(self.opened.get(), 10)

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        if self.status != 200:
            return web.json_response({"error": f"scripted refusal {self.status}"}, status=self.status)
        transport = request.transport
        assert transport is not None
        stream = Stream(request.query["authority"], peer_identity(transport.get_extra_info("ssl_object")))
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        self.opened.put_nowait(stream)
        try:
            if stream.authority in self.first:
                await response.write(orjson.dumps(self.first[stream.authority]) + b"\n")
            while (line := await stream.lines.get()) is not None:
                await response.write(line)
        finally:
            stream.gone.set()
        return response


class FakeSleep:
    """Hands every sleep of the client to the test."""

    def __init__(self) -> None:
        self._sleeps: asyncio.Queue[tuple[float, asyncio.Future[None]]] = asyncio.Queue()

    async def __call__(self, delay: float) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._sleeps.put((delay, done))
        await done

    async def next(self) -> tuple[float, asyncio.Future[None]]:
        """The next sleep's delay and the future that ends it."""
        return await asyncio.wait_for(self._sleeps.get(), 10)

    def pending(self) -> bool:
        return not self._sleeps.empty()


@pytest.fixture
async def dest() -> AsyncIterator[FakeDestination]:
    server = FakeDestination()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
async def client(dest: FakeDestination, sleep: FakeSleep) -> AsyncIterator[DestinationClient]:
    c = DestinationClient(dest.url, ROOT.cert_pem, expected_identity=DEST_ID, sleep=sleep,
                          rand=lambda: JITTER, reconnect_base=BASE, reconnect_cap=CAP, idle_timeout=30)
    yield c
    await c.close()


# --------------------------------------------------------------------------- answers


async def test_first_answer_is_parsed_into_an_endpoint_set(client: DestinationClient,
                                                           dest: FakeDestination) -> None:
    res = client.resolve("web-svc.emojivoto")
    before = res.current
    answer = await res.ready(timeout=10)
    assert before is None and res.current is answer and res.version == 1 and res.connected
    assert answer.exists and answer.reason is None and answer.authority == WEB
    assert answer.service == ServiceRef("emojivoto", "web-svc")
    assert dict(answer.labels) == {"dst_namespace": "emojivoto", "dst_service": "web-svc"}
    assert dict(answer.policy) == {"timeout.isthmus.io/request": "2s"}
    assert answer.endpoints == (Endpoint("127.1.64.5", 8080, workload_identity("web", "emojivoto"), 4143,
                                         "http", None, {"dst_pod": "web-127.1.64.5"}),)
    assert len({answer.endpoints[0], answer.endpoints[0]}) == 1  # endpoints are hashable
    stream = await dest.next_stream()
    assert stream.authority == WEB and stream.peer is None  # no client certificate given


async def test_every_spelling_shares_one_stream(client: DestinationClient, dest: FakeDestination) -> None:
    spellings = ["web-svc.emojivoto", "web-svc.emojivoto:80", "web-svc.emojivoto.svc",
                 "WEB-SVC.emojivoto.svc.cluster.local:80"]
    resolutions = {id(client.resolve(a)) for a in spellings}
    assert len(resolutions) == 1
    await client.resolve("web-svc.emojivoto").ready(timeout=10)
    await dest.next_stream()
    assert dest.opened.empty() and len(client.resolutions()) == 1


async def test_malformed_authorities_are_refused_at_once(client: DestinationClient) -> None:
    with pytest.raises(DestinationError, match="not a port number"):
        client.resolve("web-svc.emojivoto:http")
    assert client.resolutions() == []


async def test_updates_are_pushed_and_counted(client: DestinationClient, dest: FakeDestination) -> None:
    res = client.resolve("web-svc.emojivoto")
    seen: list[EndpointSet] = []
    stop = res.on_update(seen.append)
    await res.ready(timeout=10)
    stream = await dest.next_stream()
    stream.send(b"\n")  # keepalive
    stream.send(snapshot("127.1.64.5"))  # same answer again: nothing changes
    stream.send(snapshot("127.1.64.5", "127.1.64.6"))
    answer = await res.wait_changed(1, timeout=10)
    assert [e.addr for e in answer.endpoints] == ["127.1.64.5", "127.1.64.6"]
    assert res.version == 2 and [len(s.endpoints) for s in seen] == [1, 2]
    stop()
    stream.send({"authority": WEB, "exists": False, "reason": "service emojivoto/web-svc not found"})
    gone = await res.wait_changed(2, timeout=10)
    assert not gone.exists and gone.reason == "service emojivoto/web-svc not found" and gone.endpoints == ()
    assert len(seen) == 2  # the callback was removed


async def test_a_failing_callback_does_not_stop_updates(client: DestinationClient,
                                                        dest: FakeDestination) -> None:
    res = client.resolve("web-svc.emojivoto")

    def broken(answer: EndpointSet) -> None:
        raise RuntimeError("boom")

    res.on_update(broken)
    await res.ready(timeout=10)
    (await dest.next_stream()).send(snapshot())
    assert (await res.wait_changed(1, timeout=10)).endpoints == ()


# --------------------------------------------------------------------------- breaks and reconnects


async def test_a_broken_stream_keeps_the_last_answer_and_reconnects(
        client: DestinationClient, dest: FakeDestination, sleep: FakeSleep) -> None:
    res = client.resolve("web-svc.emojivoto")
    first = await res.ready(timeout=10)
    stream = await dest.next_stream()
    stream.end()
    delay, done = await sleep.next()
    assert delay == retry_delay(0, base=BASE, cap=CAP, jitter=JITTER)  # it had answered: no failure
    assert res.current is first and not res.connected and res.failures == 0
    assert "ended the stream" in (res.last_error or "")
    dest.first[WEB] = snapshot("127.1.64.7")
    done.set_result(None)
    answer = await res.wait_changed(1, timeout=10)
    assert [e.addr for e in answer.endpoints] == ["127.1.64.7"] and res.connected


async def test_reconnects_back_off_while_the_service_is_down_then_resume(
        client: DestinationClient, dest: FakeDestination, sleep: FakeSleep) -> None:
    res = client.resolve("web-svc.emojivoto")
    first = await res.ready(timeout=10)
    await dest.next_stream()
    port = dest.port
    await dest.stop()
    delays = []
    for _ in range(6):
        delay, done = await sleep.next()
        delays.append(delay)
        assert res.current is first  # the last answer keeps serving
        done.set_result(None)
    assert delays == [retry_delay(n, base=BASE, cap=CAP, jitter=JITTER) for n in range(6)]
    assert delays[-1] <= CAP and res.failures >= 5 and "unreachable" in (res.last_error or "")
    delay, done = await sleep.next()
    dest.first[WEB] = snapshot("127.1.64.8")
    await dest.start(port)
    done.set_result(None)
    answer = await res.wait_changed(1, timeout=10)
    assert [e.addr for e in answer.endpoints] == ["127.1.64.8"]
    assert res.failures == 6  # counted until the stream ended; reset when it next breaks


async def test_a_malformed_line_breaks_the_stream_but_not_the_answer(
        client: DestinationClient, dest: FakeDestination, sleep: FakeSleep) -> None:
    res = client.resolve("web-svc.emojivoto")
    first = await res.ready(timeout=10)
    stream = await dest.next_stream()
    stream.send(b'{"authority": 5}\n')
    _, done = await sleep.next()
    assert res.current is first and "malformed snapshot" in (res.last_error or "")
    await asyncio.wait_for(stream.gone.wait(), 10)  # the client hung up
    done.set_result(None)
    await dest.next_stream()


async def test_refusals_answer_that_the_authority_does_not_exist(
        client: DestinationClient, dest: FakeDestination, sleep: FakeSleep) -> None:
    dest.status = 400
    res = client.resolve("web-svc.emojivoto")
    answer = await res.ready(timeout=10)
    assert not answer.exists and answer.reason == "scripted refusal 400"
    delay, _ = await sleep.next()
    assert delay == retry_delay(1, base=BASE, cap=CAP, jitter=JITTER)


# --------------------------------------------------------------------------- TLS


async def test_a_service_with_another_identity_is_refused(dest: FakeDestination, sleep: FakeSleep) -> None:
    other = workload_identity("impostor", "isthmus")
    client = DestinationClient(dest.url, ROOT.cert_pem, expected_identity=other, sleep=sleep,
                               rand=lambda: JITTER)
    try:
        res = client.resolve("web-svc.emojivoto")
        await sleep.next()
        assert res.current is None and res.failures == 1
        assert other in (res.last_error or "") and DEST_ID in (res.last_error or "")
        assert dest.opened.empty()
    finally:
        await client.close()


async def test_a_service_outside_the_trust_anchors_is_refused(dest: FakeDestination, sleep: FakeSleep) -> None:
    stranger = new_root(now=NOW - timedelta(hours=1))
    client = DestinationClient(dest.url, stranger.cert_pem, expected_identity=DEST_ID, sleep=sleep,
                               rand=lambda: JITTER)
    try:
        res = client.resolve("web-svc.emojivoto")
        await sleep.next()
        assert res.current is None and "certificate verify failed" in (res.last_error or "")
    finally:
        await client.close()


async def test_new_trust_anchors_apply_to_the_next_connections(dest: FakeDestination,
                                                                sleep: FakeSleep) -> None:
    stranger = new_root(now=NOW - timedelta(hours=1))
    client = DestinationClient(dest.url, stranger.cert_pem, expected_identity=DEST_ID, sleep=sleep,
                               rand=lambda: JITTER)
    try:
        res = client.resolve("web-svc.emojivoto")
        _, done = await sleep.next()
        assert res.current is None
        client.set_trust_anchors(stranger.cert_pem + ROOT.cert_pem)  # retries at once
        first = await res.ready(timeout=10)
        assert done.cancelled()
        stream = await dest.next_stream()
        client.set_trust_anchors(ROOT.cert_pem)  # open streams reopen at once with the new anchors
        await asyncio.wait_for(stream.gone.wait(), 10)
        assert res.current is first
        await dest.next_stream()
        assert not sleep.pending()
    finally:
        await client.close()


async def test_the_client_presents_its_current_certificate(dest: FakeDestination, sleep: FakeSleep) -> None:
    creds = [leaf(PROXY_ID)]
    client = DestinationClient(dest.url, ROOT.cert_pem, expected_identity=DEST_ID, sleep=sleep,
                               rand=lambda: JITTER, credentials=lambda: creds[-1])
    try:
        res = client.resolve("web-svc.emojivoto")
        await res.ready(timeout=10)
        stream = await dest.next_stream()
        assert stream.peer == PROXY_ID
        rotated = workload_identity("vote-bot-v2", "emojivoto")
        creds.append(leaf(rotated))
        stream.end()
        _, done = await sleep.next()
        done.set_result(None)
        assert (await dest.next_stream()).peer == rotated
    finally:
        await client.close()


# --------------------------------------------------------------------------- lifetime


async def test_released_resolutions_expire_after_the_idle_timeout(
        client: DestinationClient, dest: FakeDestination, sleep: FakeSleep) -> None:
    a = client.resolve("web-svc.emojivoto")
    b = client.resolve(WEB)
    await a.ready(timeout=10)
    stream = await dest.next_stream()
    a.release()
    assert not sleep.pending()  # b still holds it
    client.release(WEB)
    delay, done = await sleep.next()
    assert delay == 30
    done.set_result(None)
    await asyncio.wait_for(stream.gone.wait(), 10)
    assert a.closed and client.resolutions() == []
    with pytest.raises(DestinationError, match="closed"):
        await a.ready(timeout=10)
    fresh = client.resolve("web-svc.emojivoto")
    assert fresh is not b
    await fresh.ready(timeout=10)


async def test_resolving_again_before_expiry_keeps_the_resolution(
        client: DestinationClient, dest: FakeDestination, sleep: FakeSleep) -> None:
    async with client.resolve("web-svc.emojivoto") as res:
        await res.ready(timeout=10)
    stream = await dest.next_stream()
    delay, done = await sleep.next()
    assert delay == 30
    again = client.resolve("web-svc.emojivoto")
    assert again is res and not res.closed
    await asyncio.sleep(0)  # the cancelled expiry finishes
    assert done.cancelled() and not stream.gone.is_set()


async def test_close_ends_streams_and_wakes_waiters(dest: FakeDestination, sleep: FakeSleep) -> None:
    client = DestinationClient(dest.url, ROOT.cert_pem, expected_identity=DEST_ID, sleep=sleep)
    dest.first = {}  # the service answers nothing yet
    res = client.resolve("web-svc.emojivoto")
    waiter = asyncio.create_task(res.ready())
    stream = await dest.next_stream()
    await client.close()
    with pytest.raises(DestinationError, match="closed"):
        await waiter
    await asyncio.wait_for(stream.gone.wait(), 10)
    with pytest.raises(DestinationError, match="closed"):
        client.resolve("web-svc.emojivoto")


def test_direct_answers_have_one_plain_endpoint() -> None:
    answer = EndpointSet.direct("127.1.64.5:8080", "127.1.64.5", 8080)
    assert answer.exists and answer.service is None
    [e] = answer.endpoints
    assert (e.addr, e.port, e.identity, e.proxy_port) == ("127.1.64.5", 8080, None, None)


def test_missing_answers_carry_their_reason() -> None:
    answer = EndpointSet.from_json({"authority": "x.y.svc.cluster.local:80", "exists": False,
                                    "reason": "service y/x not found"})
    assert answer == EndpointSet.missing("x.y.svc.cluster.local:80", "service y/x not found")
    with pytest.raises(ValueError, match="not an object of strings"):
        EndpointSet.from_json(snapshot(labels={"a": 1}))


def test_on_uvloop_answers_reconnects_and_identity_checks_work() -> None:
    """The proxy runs on uvloop: the same client, end to end, on a uvloop loop."""

    async def scenario() -> None:
        dest, sleep = FakeDestination(), FakeSleep()
        await dest.start()
        client = DestinationClient(dest.url, ROOT.cert_pem, expected_identity=DEST_ID, sleep=sleep,
                                   rand=lambda: JITTER)
        wrong = DestinationClient(dest.url, ROOT.cert_pem, expected_identity=PROXY_ID, sleep=sleep,
                                  rand=lambda: JITTER)
        try:
            res = client.resolve("web-svc.emojivoto")
            first = await res.ready(timeout=10)
            stream = await dest.next_stream()
            stream.send(snapshot("127.1.64.5", "127.1.64.6"))
            assert len((await res.wait_changed(1, timeout=10)).endpoints) == 2
            stream.end()
            _, done = await sleep.next()
            assert res.current is not first and len(res.current.endpoints) == 2  # kept
            done.set_result(None)
            await dest.next_stream()
            refused = wrong.resolve("web-svc.emojivoto")
            await sleep.next()
            assert refused.current is None and PROXY_ID in (refused.last_error or "")
        finally:
            await wrong.close()
            await client.close()
            await dest.stop()

    uvloop.run(scenario())

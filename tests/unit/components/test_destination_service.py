"""The destination service against a scripted Kubernetes API: readiness, pushes only on change,
shared answers, keepalives, metrics, TLS (optional but verified client certificates, credential
rotation) and clean shutdown. Real aiohttp and TLS 1.3 on 127.0.0.1; the cluster is a fake
lightkube client whose list and watch the test drives.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from cryptography import x509
from lightkube.resources.core_v1 import Endpoints, Pod, Service

from isthmus.adapters.x509 import Credentials, issue_leaf, new_issuer, new_root
from isthmus.components.destination import (
    DestinationClient,
    DestinationService,
    destination_identity,
)
from isthmus.components.identity.tlsconfig import client_context
from isthmus.core.identity import workload_identity

NOW = datetime.now(UTC)
ROOT = new_root(now=NOW - timedelta(hours=1))
ISSUER = new_issuer(ROOT, now=NOW - timedelta(hours=1))
DEST_ID = destination_identity()
NS = "emojivoto"
WEB = "web-svc.emojivoto.svc.cluster.local:80"


def leaf(identity: str, issuer: Credentials = ISSUER) -> Credentials:
    creds = issue_leaf(issuer, identity, now=NOW)
    return Credentials(creds.cert_pem + issuer.cert_pem, creds.key_pem)


def svc(name: str = "web-svc") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS, "resourceVersion": "1"},
            "spec": {"clusterIP": "127.1.128.5", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def pod(name: str, ip: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS, "labels": {"app": "web"}},
            "spec": {"serviceAccountName": "web",
                     "containers": [{"name": "web"}, {"name": "isthmus-proxy"}]},
            "status": {"phase": "Running", "podIP": ip, **status}}


def eps(*pods: tuple[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "web-svc", "namespace": NS},
            "subsets": [{"addresses": [{"ip": ip, "targetRef": {"kind": "Pod", "namespace": NS, "name": n}}
                                       for n, ip in pods],
                         "ports": [{"name": "http", "port": 8080}]}] if pods else []}


class _Listing:
    def __init__(self, items: list[dict[str, Any]], gate: asyncio.Event) -> None:
        self._items, self._gate = items, gate
        self.resourceVersion = "1"

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        await self._gate.wait()
        for item in self._items:
            yield item


class FakeKube:
    """Lists and watches of Services, Endpoints and Pods, as lightkube's AsyncClient offers them."""

    def __init__(self, *, listed: bool = True) -> None:
        self.objects: dict[Any, list[dict[str, Any]]] = {Service: [], Endpoints: [], Pod: []}
        self.watchers: dict[Any, list[asyncio.Queue[tuple[str, dict[str, Any]]]]] = \
            {Service: [], Endpoints: [], Pod: []}
        self.gate = asyncio.Event()
        if listed:
            self.gate.set()

    def list(self, resource: Any, **_: Any) -> _Listing:
        return _Listing(list(self.objects[resource]), self.gate)

    async def watch(self, resource: Any, **_: Any) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.watchers[resource].append(queue)
        while True:
            yield await queue.get()

    def emit(self, resource: Any, event: str, obj: dict[str, Any]) -> None:
        for queue in self.watchers[resource]:
            queue.put_nowait((event, obj))


def web_kube(**kw: Any) -> FakeKube:
    kube = FakeKube(**kw)
    kube.objects[Service] = [svc()]
    kube.objects[Pod] = [pod("web-a", "127.1.64.5")]
    kube.objects[Endpoints] = [eps(("web-a", "127.1.64.5"))]
    return kube


async def started(kube: FakeKube, creds: list[Credentials] | None = None, **kw: Any) -> DestinationService:
    held = creds if creds is not None else [leaf(DEST_ID)]
    service = DestinationService(kube, lambda: held[-1], ROOT.cert_pem,
                                 address=("127.0.0.1", 0), admin_address=("127.0.0.1", 0),
                                 coalesce=0, **kw)
    await service.start()
    return service


@pytest.fixture
async def kube() -> FakeKube:
    return web_kube()


@pytest.fixture
async def service(kube: FakeKube) -> AsyncIterator[DestinationService]:
    s = await started(kube)
    yield s
    await s.close()


@pytest.fixture
async def client(service: DestinationService) -> AsyncIterator[DestinationClient]:
    c = DestinationClient(service.url, ROOT.cert_pem, expected_identity=DEST_ID)
    yield c
    await c.close()


def session(creds: Credentials | None = None, anchors: bytes = ROOT.cert_pem) -> aiohttp.ClientSession:
    ctx = client_context(creds, anchors, expected_identity=DEST_ID)
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, force_close=True))


async def lines(response: aiohttp.ClientResponse, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        out.append(await asyncio.wait_for(response.content.readline(), 10))
    return out


async def admin(service: DestinationService, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(service.admin_url + path) as r:
        return r.status, await r.text()


# --------------------------------------------------------------------------- tests


async def test_answers_wait_until_every_informer_has_listed() -> None:
    kube = web_kube(listed=False)
    service = await started(kube)
    client = DestinationClient(service.url, ROOT.cert_pem, expected_identity=DEST_ID)
    try:
        status, text = await admin(service, "/ready")
        assert status == 503 and "still listing" in text
        assert await admin(service, "/live") == (200, "ok\n")
        res = client.resolve("web-svc.emojivoto")
        await asyncio.sleep(0.05)  # let the request reach the service and wait there
        assert res.current is None
        kube.gate.set()
        answer = await res.ready(timeout=10)
        assert [e.addr for e in answer.endpoints] == ["127.1.64.5"]  # never "not found" first
        assert res.version == 1
        assert await admin(service, "/ready") == (200, "ok\n")
    finally:
        await client.close()
        await service.close()


async def test_only_changed_answers_are_pushed(kube: FakeKube, service: DestinationService,
                                               client: DestinationClient) -> None:
    res = client.resolve("web-svc.emojivoto")
    await res.ready(timeout=10)
    kube.emit(Pod, "MODIFIED", pod("web-a", "127.1.64.5", conditions=[{"type": "Ready", "status": "True"}]))
    kube.emit(Pod, "ADDED", pod("other", "127.1.64.9"))  # not behind web-svc
    kube.emit(Pod, "ADDED", pod("web-b", "127.1.64.6"))
    kube.emit(Endpoints, "MODIFIED", eps(("web-a", "127.1.64.5"), ("web-b", "127.1.64.6")))
    answer = await res.wait_changed(1, timeout=10)
    assert [e.addr for e in answer.endpoints] == ["127.1.64.5", "127.1.64.6"]
    assert all(e.identity == workload_identity("web", NS) for e in answer.endpoints)
    kube.emit(Service, "DELETED", svc())
    gone = await res.wait_changed(2, timeout=10)
    assert gone.reason == "service emojivoto/web-svc not found"
    assert res.version == 3 and service.metrics.updates == 2


async def test_streams_of_one_authority_share_one_answer(service: DestinationService) -> None:
    async with session() as s:
        a = await s.get(service.url + "/v1/resolve", params={"authority": "web-svc.emojivoto"})
        b = await s.get(service.url + "/v1/resolve", params={"authority": "127.1.128.5:80"})
        c = await s.get(service.url + "/v1/resolve", params={"authority": WEB})
        [la], [lb], [lc] = await lines(a, 1), await lines(b, 1), await lines(c, 1)
        assert la == lc and orjson.loads(la)["authority"] == WEB
        assert orjson.loads(lb)["authority"] == "127.1.128.5:80"
        assert a.headers["Content-Type"] == "application/x-ndjson"
        assert service.metrics.streams == 3 and service.metrics.authorities == 2
        _, text = await admin(service, "/metrics")
        assert "# TYPE destination_resolve_streams gauge\ndestination_resolve_streams 3\n" in text
        assert "destination_resolves_total 3\n" in text
        assert "destination_watched_authorities 2\n" in text
        for r in (a, b, c):
            r.close()
    for _ in range(100):  # the service notices the clients are gone
        if service.metrics.streams == 0:
            break
        await asyncio.sleep(0.01)
    assert service.metrics.streams == 0 and service.metrics.authorities == 0


async def test_silent_streams_carry_blank_keepalive_lines(kube: FakeKube) -> None:
    service = await started(kube, keepalive=0.05)
    try:
        async with session() as s, s.get(service.url + "/v1/resolve", params={"authority": WEB}) as r:
            first, keepalive = await lines(r, 2)
            assert orjson.loads(first)["exists"] is True and keepalive == b"\n"
    finally:
        await service.close()


async def test_close_ends_open_streams_cleanly(kube: FakeKube) -> None:
    service = await started(kube)
    async with session() as s, s.get(service.url + "/v1/resolve", params={"authority": WEB}) as r:
        await lines(r, 1)
        await service.close()
        assert await asyncio.wait_for(r.content.read(), 10) == b""  # end of the chunked body
    assert service.metrics.streams == 0


async def test_client_certificates_are_optional_but_verified(service: DestinationService) -> None:
    proxy = leaf(workload_identity("vote-bot", NS))
    async with session(proxy) as s, s.get(service.url + "/v1/resolve", params={"authority": WEB}) as r:
        assert r.status == 200
    stranger_root = new_root(now=NOW - timedelta(hours=1))
    stranger = leaf(workload_identity("vote-bot", NS), new_issuer(stranger_root, now=NOW - timedelta(hours=1)))
    with pytest.raises(aiohttp.ClientError):
        async with session(stranger) as s, s.get(service.url + "/v1/resolve", params={"authority": WEB}) as r:
            await r.read()


async def test_rotated_credentials_serve_new_connections(kube: FakeKube) -> None:
    class Sleeps:
        def __init__(self) -> None:
            self.asked: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()

        async def __call__(self, delay: float) -> None:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.asked.put_nowait(done)
            await done

    creds = [leaf(DEST_ID)]
    sleeps = Sleeps()
    service = await started(kube, creds, sleep=sleeps, credentials_interval=5)

    async def served_serial() -> int:
        ctx = client_context(None, ROOT.cert_pem, expected_identity=DEST_ID)
        _, writer = await asyncio.open_connection("127.0.0.1", service.port, ssl=ctx)
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.close()
        return x509.load_der_x509_certificate(der).serial_number

    def serial(c: Credentials) -> int:
        return x509.load_pem_x509_certificate(c.cert_pem).serial_number

    try:
        async with session() as s, s.get(service.url + "/v1/resolve", params={"authority": WEB}) as r:
            await lines(r, 1)
            assert await served_serial() == serial(creds[0])
            creds.append(leaf(DEST_ID))
            tick = await asyncio.wait_for(sleeps.asked.get(), 10)
            tick.set_result(None)  # the credentials check runs
            await asyncio.wait_for(sleeps.asked.get(), 10)  # and waits for the next one
            assert await served_serial() == serial(creds[1])
            assert not service.reload_credentials()  # nothing new since
            kube.emit(Service, "DELETED", svc())
            [gone] = await lines(r, 1)  # the stream opened before the rotation keeps going
            assert orjson.loads(gone)["exists"] is False
    finally:
        await service.close()


async def test_unknown_paths_and_bad_authorities_get_json_errors(service: DestinationService) -> None:
    async with session() as s:
        async with s.get(service.url + "/v2/other") as r:
            assert r.status == 404 and "GET /v1/resolve?authority=" in (await r.json())["error"]
        async with s.get(service.url + "/v1/resolve", params={"authority": "[::1"}) as r:
            assert r.status == 400 and "malformed IPv6" in (await r.json())["error"]


async def test_starting_without_credentials_says_what_to_do() -> None:
    from isthmus.components.destination import DestinationServiceError

    service = DestinationService(FakeKube(), lambda: None, ROOT.cert_pem,
                                 address=("127.0.0.1", 0), admin_address=None)
    with pytest.raises(DestinationServiceError, match="no TLS credentials yet"):
        await service.start()
    assert service.admin_url == ""


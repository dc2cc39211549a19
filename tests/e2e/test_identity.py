"""The identity service end to end: real TLS on 127.0.0.1, tokens checked by a real embedded cluster.

The service runs in-process; its token reviewer is `lightkube_token_reviewer`
against the `west` cluster, and workloads present real service-account tokens
from `kubectl create token`. Workloads are `IdentityClient`s; their
certificates are then used for real TLS 1.3 mutual handshakes between them.
Every server, client and connection is closed when its test ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from lightkube import AsyncClient, KubeConfig

from isthmus.adapters.x509 import (
    Credentials,
    X509Error,
    issue_leaf,
    load_certificates,
    new_issuer,
    new_private_key,
    new_root,
    verify_chain,
)
from isthmus.components.identity import (
    IdentityClient,
    IdentityService,
    client_context,
    lightkube_token_reviewer,
    peer_identity,
    server_context,
)
from isthmus.core.identity import workload_identity

from .conftest import Cluster

pytestmark = pytest.mark.asyncio

LOCAL = "127.0.0.1"


def now() -> datetime:
    return datetime.now(UTC)


# Made two days ago, so that leaves can be issued in the past (the expired-leaf test).
ROOT = new_root(now=now() - timedelta(days=2))
ISSUER = new_issuer(ROOT, now=now() - timedelta(days=2))


@pytest.fixture
async def kube(west: Cluster) -> AsyncIterator[AsyncClient]:
    client = AsyncClient(config=KubeConfig.from_file(west.kubeconfig).get(context_name="west"),
                         trust_env=False)
    yield client
    await client.close()


async def start_service(reviewer: Any, issuer: Credentials = ISSUER,
                        anchors: bytes = ROOT.cert_pem) -> IdentityService:
    service = IdentityService(issuer=issuer, trust_anchors_pem=anchors, trust_domain="cluster.local",
                              token_reviewer=reviewer, clock=now, address=(LOCAL, 0),
                              admin_address=(LOCAL, 0))
    await service.start()
    return service


@pytest.fixture
async def service(kube: AsyncClient) -> AsyncIterator[IdentityService]:
    svc = await start_service(lightkube_token_reviewer(kube))
    yield svc
    await svc.close()


@dataclass
class Workloads:
    """Makes service accounts, tokens and identity clients in one namespace; closes the clients."""

    west: Cluster
    ns: str
    service: IdentityService
    tmp: Path
    clients: list[IdentityClient]

    def token(self, sa: str) -> str:
        if sa != "default" and self.west.kubectl("-n", self.ns, "get", "serviceaccount", sa,
                                                 check=False).returncode != 0:
            self.west.kubectl("-n", self.ns, "create", "serviceaccount", sa)
        return self.west.kubectl("-n", self.ns, "create", "token", sa).stdout.strip()

    def identity(self, sa: str) -> str:
        return workload_identity(sa, self.ns)

    async def client(self, sa: str, *, anchors: bytes = ROOT.cert_pem) -> IdentityClient:
        """A client for `sa` holding its first certificate."""
        path = self.tmp / f"{sa}.token"
        path.write_text(self.token(sa))
        client = IdentityClient(service_url=self.service.url, service_ca_pem=anchors,
                                identity=self.identity(sa), token_path=path, clock=now)
        self.clients.append(client)
        await client.renew()
        assert client.ready
        return client


@pytest.fixture
async def workloads(west: Cluster, ns: str, service: IdentityService,
                    tmp_path: Path) -> AsyncIterator[Workloads]:
    w = Workloads(west, ns, service, tmp_path, [])
    yield w
    for c in w.clients:
        await c.close()


async def certify(service: IdentityService, body: dict[str, str],
                  anchors: bytes = ROOT.cert_pem) -> tuple[int, dict[str, Any]]:
    ctx = client_context(None, anchors, expected_identity=service.identity)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s, \
            s.post(service.url + "/v1/certify", json=body) as r:
        assert r.content_type == "application/json"
        return r.status, await r.json()


def csr(*, sans: list[x509.GeneralName], cn: str | None = None) -> str:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    req = (x509.CertificateSigningRequestBuilder().subject_name(subject)
           .add_extension(x509.SubjectAlternativeName(sans), critical=False)
           .sign(new_private_key(), hashes.SHA256()))
    return req.public_bytes(serialization.Encoding.PEM).decode()


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.text()


# ------------------------------------------------------------------ mutual TLS between workloads


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: list[str | None]) -> None:
    seen.append(peer_identity(writer.get_extra_info("ssl_object")))
    try:
        while data := await reader.read(1024):
            writer.write(data[::-1])
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def mtls_server(creds: Credentials, anchors: bytes) -> AsyncIterator[tuple[int, list[str | None]]]:
    """An echo server on 127.0.0.1 requiring client certificates; yields its port and the identities it saw."""
    seen: list[str | None] = []
    server = await asyncio.start_server(lambda r, w: _echo(r, w, seen), LOCAL, 0,
                                        ssl=server_context(creds, anchors, require_client_cert=True))
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        await server.wait_closed()


async def exchange(port: int, creds: Credentials | None, anchors: bytes, expected: str) -> str | None:
    """Connect with a fresh TLS 1.3 handshake, round-trip a message; the identity the server proved."""
    ctx = client_context(creds, anchors, expected_identity=expected)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(LOCAL, port, ssl=ctx), 5)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object.version() == "TLSv1.3"
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"gnip"
        return peer_identity(ssl_object)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


async def refused(attempt: Awaitable[Any]) -> str:
    """The error with which a handshake (or the first read after it, in TLS 1.3) fails."""
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)) as e:
        await attempt
    return str(e.value)


async def test_a_workload_gets_a_certificate_that_openssl_verifies(
        workloads: Workloads, tmp_path: Path) -> None:
    web = await workloads.client("web")
    assert web.current is not None
    leaf, issuer = load_certificates(web.current.cert_pem)
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == [f"web.{workloads.ns}.serviceaccount.identity.isthmus.cluster.local"]
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime == timedelta(hours=24, seconds=20)
    assert issuer == load_certificates(ISSUER.cert_pem)[0]
    (tmp_path / "leaf.pem").write_bytes(web.current.cert_pem.split(b"-----END CERTIFICATE-----")[0]
                                        + b"-----END CERTIFICATE-----\n")
    (tmp_path / "issuer.pem").write_bytes(ISSUER.cert_pem)
    (tmp_path / "bundle.pem").write_bytes(new_root(now=now()).cert_pem + ROOT.cert_pem)
    out = subprocess.run(["openssl", "verify", "-x509_strict", "-purpose", "sslclient", "-CAfile",
                          str(tmp_path / "bundle.pem"), "-untrusted", str(tmp_path / "issuer.pem"),
                          str(tmp_path / "leaf.pem")], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip().endswith(": OK"), out.stderr

    status, body = await certify(workloads.service, {"identity": workloads.identity("web"),
                                                     "token": workloads.token("web"),
                                                     "csr": csr(sans=[x509.DNSName(workloads.identity("web"))])})
    assert status == 200 and set(body) == {"leaf", "chain", "expiry"}
    assert body["chain"] == [ISSUER.cert_pem.decode()]
    assert body["expiry"] == load_certificates(body["leaf"].encode())[0].not_valid_after_utc.strftime(
        "%Y-%m-%dT%H:%M:%SZ")


async def test_two_workloads_complete_a_mutual_tls13_handshake(workloads: Workloads) -> None:
    web, bot = await workloads.client("web"), await workloads.client("vote-bot")
    assert web.current and bot.current
    async with mtls_server(web.current, ROOT.cert_pem) as (port, seen):
        assert await exchange(port, bot.current, ROOT.cert_pem, expected=web.identity) == web.identity
        assert seen == [bot.identity]
        # The client checks the server's identity: another expected name fails the handshake.
        message = await refused(exchange(port, bot.current, ROOT.cert_pem, expected=bot.identity))
        assert f"names identity {web.identity}, expected {bot.identity}" in message
        # The server requires a client certificate.
        await refused(exchange(port, None, ROOT.cert_pem, expected=web.identity))
        assert set(seen) == {bot.identity}  # the certificate-less client never got through


async def test_refusals_say_why(workloads: Workloads) -> None:
    web = workloads.identity("web")
    web_token, bot_token = workloads.token("web"), workloads.token("vote-bot")
    good_csr = csr(sans=[x509.DNSName(web)])
    svc = workloads.service

    status, body = await certify(svc, {"identity": web, "token": bot_token, "csr": good_csr})
    assert status == 403, body
    assert workloads.identity("vote-bot") in body["error"] and web in body["error"]

    status, body = await certify(svc, {"identity": web, "token": "garbage", "csr": good_csr})
    assert status == 401 and body["error"].startswith("The token is not authenticated: invalid bearer token")

    claims = jwt.decode(web_token, options={"verify_signature": False})
    forged = jwt.encode(claims, new_private_key(), algorithm="ES256")
    status, body = await certify(svc, {"identity": web, "token": forged, "csr": good_csr})
    assert status == 401 and "Signature verification failed" in body["error"], body

    status, body = await certify(svc, {"identity": web, "token": web_token,
                                       "csr": csr(sans=[x509.DNSName(web), x509.DNSName("evil.example")])})
    assert status == 400 and "2 DNS subject alternative names" in body["error"]
    status, body = await certify(svc, {"identity": web, "token": web_token,
                                       "csr": csr(sans=[x509.DNSName(web),
                                                        x509.IPAddress(ipaddress.ip_address(LOCAL))])})
    assert status == 400 and "IP:127.0.0.1" in body["error"]

    status, body = await certify(svc, {"identity": web, "token": web_token,
                                       "csr": csr(sans=[x509.DNSName(workloads.identity("vote-bot"))])})
    assert status == 400 and f"but the requester's identity is {web}" in body["error"]

    status, body = await certify(svc, {"identity": web, "token": web_token,
                                       "csr": csr(sans=[x509.DNSName(web)], cn="someone-else")})
    assert status == 400 and "common name is someone-else" in body["error"]

    status, body = await certify(svc, {"identity": web, "token": web_token})
    assert status == 400 and "lacks csr" in body["error"]
    status, body = await certify(svc, {"identity": "web", "token": web_token, "csr": good_csr})
    assert status == 400 and "is not a workload identity" in body["error"]
    status, body = await certify(svc, {"identity": web, "token": web_token, "csr": "x" * 100_000})
    assert status == 400 and "larger than 64 KiB" in body["error"]
    ctx = client_context(None, ROOT.cert_pem, expected_identity=svc.identity)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s, \
            s.get(svc.url + "/v1/certify") as r:
        assert r.status == 405 and "POST /v1/certify" in (await r.json())["error"]


async def test_a_token_is_reviewed_by_the_cluster_once_then_answered_from_the_cache(
        workloads: Workloads) -> None:
    svc = workloads.service
    web = workloads.identity("web")
    token = workloads.token("web")
    for _ in range(2):
        status, body = await certify(svc, {"identity": web, "token": token, "csr": csr(sans=[x509.DNSName(web)])})
        assert status == 200, body
    for _ in range(2):  # refusals are asked about every time
        status, body = await certify(svc, {"identity": web, "token": "garbage",
                                           "csr": csr(sans=[x509.DNSName(web)])})
        assert status == 401
    status, text = await get(svc.admin_url + "/metrics")
    assert status == 200
    lines = set(text.splitlines())
    assert 'identity_token_review_total{source="api"} 3' in lines
    assert 'identity_token_review_total{source="cache"} 1' in lines


async def test_the_reviewer_asks_for_the_audiences_it_is_given(
        workloads: Workloads, kube: AsyncClient) -> None:
    review = lightkube_token_reviewer(kube, audiences=["isthmus-identity"])
    default_token = workloads.token("web")
    result = await review(default_token)
    assert not result.authenticated
    assert "do not match isthmus-identity" in result.error
    bound = workloads.west.kubectl("-n", workloads.ns, "create", "token", "web",
                                   "--audience", "isthmus-identity").stdout.strip()
    result = await review(bound)
    assert result.authenticated and result.username == f"system:serviceaccount:{workloads.ns}:web"
    assert (await lightkube_token_reviewer(kube)(bound)).authenticated is False  # not for the API server


async def test_token_review_unreachable_is_503(west: Cluster) -> None:
    with contextlib.closing(socket.socket()) as s:
        s.bind((LOCAL, 0))
        dead_port = s.getsockname()[1]  # nothing listens there once the socket is closed
    kubeconfig = yaml.safe_load(west.kubeconfig.read_text())
    for entry in kubeconfig["clusters"]:
        entry["cluster"]["server"] = f"https://{LOCAL}:{dead_port}"
    dead = AsyncClient(config=KubeConfig.from_dict(kubeconfig).get(context_name="west"), trust_env=False)
    svc = await start_service(lightkube_token_reviewer(dead))
    try:
        ident = workload_identity("web", "default")
        status, body = await certify(svc, {"identity": ident, "token": "t", "csr": csr(sans=[x509.DNSName(ident)])})
        assert status == 503 and body["error"].startswith("The token cannot be checked now: the cluster API "
                                                          "could not be reached")
    finally:
        await svc.close()
        await dead.close()


async def test_leaves_from_another_trust_anchor_or_expired_are_refused(workloads: Workloads) -> None:
    web, bot = await workloads.client("web"), await workloads.client("vote-bot")
    assert web.current and bot.current
    other_issuer = new_issuer(new_root(now=now()), now=now())
    foreign = issue_leaf(other_issuer, bot.identity, now=now())
    foreign_creds = Credentials(foreign.cert_pem + other_issuer.cert_pem, foreign.key_pem)
    async with mtls_server(web.current, ROOT.cert_pem) as (port, _):
        await refused(exchange(port, foreign_creds, ROOT.cert_pem, expected=web.identity))
    async with mtls_server(foreign_creds, ROOT.cert_pem) as (port, _):
        message = await refused(exchange(port, bot.current, ROOT.cert_pem, expected=bot.identity))
        assert "certificate verify failed" in message

    expiry = web.expiry
    assert expiry is not None
    verify_chain(web.current.cert_pem, intermediates=[], roots_pem=ROOT.cert_pem,
                 now=expiry - timedelta(seconds=1), dns_name=web.identity)
    with pytest.raises(X509Error, match="expired at"):
        verify_chain(web.current.cert_pem, intermediates=[], roots_pem=ROOT.cert_pem,
                     now=expiry + timedelta(seconds=1), dns_name=web.identity)
    old = issue_leaf(ISSUER, bot.identity, now=now() - timedelta(hours=25))  # expired an hour ago
    async with mtls_server(web.current, ROOT.cert_pem) as (port, _):
        await refused(exchange(port, Credentials(old.cert_pem + ISSUER.cert_pem, old.key_pem), ROOT.cert_pem,
                               expected=web.identity))


async def test_metrics_count_issued_and_refused(workloads: Workloads) -> None:
    svc = workloads.service
    assert await get(svc.admin_url + "/ready") == (200, "ok\n")
    await workloads.client("web")
    await workloads.client("vote-bot")
    web = workloads.identity("web")
    await certify(svc, {"identity": web, "token": "garbage", "csr": csr(sans=[x509.DNSName(web)])})
    await certify(svc, {"identity": web, "token": workloads.token("vote-bot"), "csr": csr(sans=[x509.DNSName(web)])})
    await certify(svc, {"identity": web, "token": "x", "csr": csr(sans=[x509.DNSName("other")])})
    status, text = await get(svc.admin_url + "/metrics")
    assert status == 200
    lines = set(text.splitlines())
    assert "identity_cert_issued_total 2" in lines
    assert 'identity_cert_refused_total{reason="unauthenticated"} 1' in lines
    assert 'identity_cert_refused_total{reason="wrong_identity"} 1' in lines
    assert 'identity_cert_refused_total{reason="bad_csr"} 1' in lines
    assert 'identity_cert_refused_total{reason="review_unavailable"} 0' in lines
    assert "identity_cert_sign_latency_seconds_count 2" in lines
    assert 'identity_cert_sign_latency_seconds_bucket{le="+Inf"} 2' in lines


async def test_trust_anchor_rotation_with_overlap(workloads: Workloads) -> None:
    """Bundle [old] → [old, new] → [new], with the issuer moved to the new root in the overlap.

    At each step the two workloads complete fresh mutual handshakes both ways,
    and one connection opened at the start keeps working throughout.
    """
    old_bundle = ROOT.cert_pem
    new_root_creds = new_root(now=now())
    both = old_bundle + new_root_creds.cert_pem
    new_bundle = new_root_creds.cert_pem
    web, bot = await workloads.client("web"), await workloads.client("vote-bot")

    async def both_ways(bundle_web: bytes, bundle_bot: bytes) -> None:
        assert web.current and bot.current
        async with mtls_server(web.current, bundle_web) as (port, seen):
            assert await exchange(port, bot.current, bundle_bot, web.identity) == web.identity
            assert seen == [bot.identity]
        async with mtls_server(bot.current, bundle_bot) as (port, seen):
            assert await exchange(port, web.current, bundle_web, bot.identity) == bot.identity
            assert seen == [web.identity]

    # Step 1: everyone trusts [old]; a long-lived connection bot → web is opened.
    await both_ways(old_bundle, old_bundle)
    assert web.current and bot.current
    step1_bot = bot.current
    async with mtls_server(web.current, old_bundle) as (port, _):
        ctx = client_context(bot.current, old_bundle, expected_identity=web.identity)
        reader, writer = await asyncio.open_connection(LOCAL, port, ssl=ctx)

        async def still_open() -> None:
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"gnip"

        try:
            await still_open()
            # Step 2: the bundle [old, new] reaches every workload; certificates unchanged.
            web.set_trust_anchors(both)
            bot.set_trust_anchors(both)
            await both_ways(both, both)
            # The issuer moves to the new root; web renews (new chain), bot still has the old chain.
            workloads.service.update_issuer(new_issuer(new_root_creds, now=now()), both)
            await web.renew()
            assert web.current is not None
            assert load_certificates(web.current.cert_pem)[1].issuer == load_certificates(
                new_bundle)[0].subject
            await both_ways(both, both)
            await still_open()
            # Step 3: bot renews too; then the old root leaves every bundle.
            await bot.renew()
            web.set_trust_anchors(new_bundle)
            bot.set_trust_anchors(new_bundle)
            await both_ways(new_bundle, new_bundle)
            await web.renew()  # the service's own certificate chains to the new root as well
            await still_open()
            # A workload still on the old chain is now refused.
            async with mtls_server(web.current, new_bundle) as (port2, _):
                await refused(exchange(port2, step1_bot, new_bundle, web.identity))
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


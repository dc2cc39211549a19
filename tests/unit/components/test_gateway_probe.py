"""Gateway probes over mTLS: a gateway proxy's probe listener and the service mirror's `MtlsProbe`.

Real sockets and TLS 1.3 in one event loop: a `Proxy` in gateway mode with a
certificate for the gateway identity, and probes presenting a mirror's
certificate from the same (or another) trust anchor; the real `curl` and
`openssl s_client` check what a client without a certificate gets.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from isthmus.adapters.x509 import Credentials
from isthmus.components.identity.tlsconfig import IdentityMismatch
from isthmus.components.mirror.gateway import (
    GatewayProber,
    MtlsProbe,
    ProbeFailed,
    StaticCredentials,
)
from isthmus.components.mirror.metrics import MirrorMetrics
from isthmus.components.proxy import Proxy, ProxyConfig
from isthmus.core import mirror as core
from isthmus.core.identity import workload_identity
from tests.support.pki import ISSUER, OTHER_ISSUER, OTHER_ROOT, ROOT, creds

pytestmark = pytest.mark.asyncio

LOCAL = "127.0.0.1"
GATEWAY_ID = workload_identity("isthmus-gateway", "isthmus-multicluster")
MIRROR_ID = workload_identity("isthmus-service-mirror-east", "isthmus-multicluster")



def gateway_config() -> ProxyConfig:
    return ProxyConfig(inbound=(LOCAL, 0), outbound=(LOCAL, 0), admin=(LOCAL, 0), forward_host=LOCAL,
                       identity=GATEWAY_ID, trust_anchors_pem=ROOT.cert_pem, gateway=True,
                       gateway_probe=(LOCAL, 0), namespace="isthmus-multicluster")


@pytest.fixture
async def gateway() -> AsyncIterator[Proxy]:
    proxy = Proxy(gateway_config(), credentials=creds(GATEWAY_ID), destination=None)
    await proxy.start()
    server = proxy.probe_server
    assert server is not None
    for _ in range(200):
        if server.address[1] != 0:
            break
        await asyncio.sleep(0.01)
    try:
        yield proxy
    finally:
        await proxy.close()


def probe_port(proxy: Proxy) -> int:
    assert proxy.probe_server is not None
    return proxy.probe_server.address[1]


def mirror_probe(issuer: Credentials = ISSUER, anchors: bytes = ROOT.cert_pem) -> MtlsProbe:
    return MtlsProbe(StaticCredentials(creds(MIRROR_ID, issuer), anchors))


async def test_a_probe_with_the_mirror_certificate_gets_ready(gateway: Proxy) -> None:
    await mirror_probe()(LOCAL, probe_port(gateway), "/ready", 2.0, GATEWAY_ID)


async def test_the_probe_listener_serves_ready_only(gateway: Proxy) -> None:
    with pytest.raises(ProbeFailed, match="answered 404"):
        await mirror_probe()(LOCAL, probe_port(gateway), "/metrics", 2.0, GATEWAY_ID)
    with pytest.raises(ProbeFailed, match="answered 404"):
        await mirror_probe()(LOCAL, probe_port(gateway), "/tap", 2.0, GATEWAY_ID)


async def test_a_gateway_with_another_identity_is_refused_by_the_probe(gateway: Proxy) -> None:
    with pytest.raises(IdentityMismatch, match=re.escape("expected isthmus-gateway.other.")):
        await mirror_probe()(LOCAL, probe_port(gateway), "/ready", 2.0,
                             workload_identity("isthmus-gateway", "other"))


async def test_a_gateway_from_another_trust_anchor_is_refused_by_the_probe(gateway: Proxy) -> None:
    probe = MtlsProbe(StaticCredentials(creds(MIRROR_ID, OTHER_ISSUER), OTHER_ROOT.cert_pem))
    with pytest.raises(ssl.SSLCertVerificationError):
        await probe(LOCAL, probe_port(gateway), "/ready", 2.0, GATEWAY_ID)


async def test_a_mirror_certificate_from_another_anchor_is_refused_by_the_gateway(gateway: Proxy) -> None:
    # The mirror trusts the gateway (both anchors) but the gateway does not trust the mirror.
    probe = MtlsProbe(StaticCredentials(creds(MIRROR_ID, OTHER_ISSUER), ROOT.cert_pem + OTHER_ROOT.cert_pem))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await probe(LOCAL, probe_port(gateway), "/ready", 2.0, GATEWAY_ID)


async def test_a_mirror_without_a_certificate_says_why(gateway: Proxy) -> None:
    class Waiting:
        credentials = None
        anchors_pem = ROOT.cert_pem

        def why_not(self) -> str:
            return "waiting for the identity service"

    with pytest.raises(ProbeFailed, match="no certificate to probe with: waiting for the identity service"):
        await MtlsProbe(Waiting())(LOCAL, probe_port(gateway), "/ready", 2.0, GATEWAY_ID)


async def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(subprocess.run, list(args), capture_output=True, text=True, timeout=20)


async def test_clients_without_a_certificate_are_refused_and_curl_with_one_gets_ready(
        gateway: Proxy, tmp_path: Path) -> None:
    port = probe_port(gateway)
    plain = await _run("curl", "-sS", "--noproxy", "*", "-m", "5", f"http://{LOCAL}:{port}/ready")
    assert plain.returncode != 0 and "ready" not in plain.stdout
    # TLS without a client certificate (-k: curl cannot check an identity that is not a host name).
    anonymous = await _run("curl", "-sS", "--noproxy", "*", "-m", "5", "-k", "--tlsv1.3",
                           f"https://{LOCAL}:{port}/ready")
    assert anonymous.returncode != 0 and "ready" not in anonymous.stdout, anonymous.stdout
    mirror = creds(MIRROR_ID)
    (tmp_path / "mirror.crt").write_bytes(mirror.cert_pem)
    (tmp_path / "mirror.key").write_bytes(mirror.key_pem)
    (tmp_path / "mirror.key").chmod(0o600)
    ok = await _run("curl", "-sS", "--noproxy", "*", "-m", "5", "-k", "--tlsv1.3",
                    "--cert", str(tmp_path / "mirror.crt"), "--key", str(tmp_path / "mirror.key"),
                    f"https://{LOCAL}:{port}/ready")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "ready\n"


async def test_the_prober_explains_a_refused_gateway_and_recovers(gateway: Proxy) -> None:
    port = probe_port(gateway)

    def link(identity: str) -> core.LinkSpec:
        return core.LinkSpec.from_object({
            "metadata": {"name": "east", "namespace": "isthmus-multicluster"},
            "spec": {"targetClusterName": "east", "gatewayAddress": LOCAL, "gatewayIdentity": identity,
                     "probeSpec": {"port": port, "period": "1s", "timeout": "2s", "failureThreshold": 1}}})

    changes: list[Any] = []
    prober = GatewayProber(link(workload_identity("impostor", "isthmus-multicluster")),
                           metrics=MirrorMetrics("east"), on_change=changes.append, probe=mirror_probe())
    assert not await prober.probe_once()
    assert not prober.state.alive
    assert "the gateway's certificate was refused" in prober.message
    assert "isthmus-gateway.isthmus-multicluster" in prober.message  # the name the gateway has
    prober.update_link(link(GATEWAY_ID))
    assert await prober.probe_once()
    assert prober.state.alive


async def test_probes_keep_one_connection_and_open_a_new_one_when_it_goes_or_the_certificate_changes(
        gateway: Proxy) -> None:
    assert gateway.probe_server is not None
    server = gateway.probe_server._http
    port = probe_port(gateway)
    source = StaticCredentials(creds(MIRROR_ID), ROOT.cert_pem)
    probe = MtlsProbe(source)
    try:
        for _ in range(3):
            await probe(LOCAL, port, "/ready", 2.0, GATEWAY_ID)
        assert len(server.conns) == 1  # one connection for the three probes
        first = next(iter(server.conns))
        first.abort()  # the gateway drops it (an idle timeout, a restart)
        await asyncio.sleep(0.05)
        await probe(LOCAL, port, "/ready", 2.0, GATEWAY_ID)  # tried again on a new connection
        assert len(server.conns) == 1 and first not in server.conns
        second = next(iter(server.conns))
        rotated = StaticCredentials(creds(MIRROR_ID), ROOT.cert_pem)  # a renewed certificate
        probe._source = rotated
        await probe(LOCAL, port, "/ready", 2.0, GATEWAY_ID)
        await asyncio.sleep(0.05)
        assert second not in server.conns and len(server.conns) == 1
    finally:
        probe.close()

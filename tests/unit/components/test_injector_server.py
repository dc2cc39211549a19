"""The proxy injector's webhook server over real TLS, with the cluster lookups replaced by fakes."""

from __future__ import annotations

import base64
import ssl
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
import jsonpatch
import orjson
import pytest

from isthmus.adapters.x509 import Credentials, issue_leaf, new_root
from isthmus.components.injector import InjectorServer, InjectorSettings, LookupFailed

NOW = datetime.now(UTC)
DNS = "isthmus-proxy-injector.isthmus.svc"
CA = new_root(now=NOW, common_name="webhook-ca")
LEAF = issue_leaf(CA, DNS, now=NOW)
ANCHORS = new_root(now=NOW).cert_pem.decode()
SETTINGS = InjectorSettings(image="ghcr.io/isthmus-mesh/isthmus:0.1.0", version="0.1.0",
                            trust_anchors_pem=ANCHORS)


class Cluster:
    """What the injector would read from the API: namespaces' annotations and two Service addresses."""

    def __init__(self) -> None:
        self.namespaces: dict[str, dict[str, str]] = {"meshed": {"isthmus.io/inject": "enabled"}, "plain": {}}
        self.asked: list[str] = []

    async def namespace_annotations(self, name: str) -> Mapping[str, str]:
        self.asked.append(name)
        if name not in self.namespaces:
            raise LookupFailed(f"cannot read namespace {name}: namespaces \"{name}\" not found")
        return self.namespaces[name]

    async def addresses(self) -> tuple[str, str]:
        return "127.9.128.5:8080", "127.9.128.6:8086"


class TlsSecret:
    def __init__(self) -> None:
        self.creds: Credentials | None = None

    async def read(self) -> Credentials | None:
        return self.creds


@pytest.fixture
async def server() -> AsyncIterator[tuple[InjectorServer, Cluster, TlsSecret]]:
    cluster, secret = Cluster(), TlsSecret()
    srv = InjectorServer(SETTINGS, Credentials(LEAF.cert_pem, LEAF.key_pem),
                         namespace_annotations=cluster.namespace_annotations, addresses=cluster.addresses,
                         address=("127.0.0.1", 0), admin_address=("127.0.0.1", 0), tls_source=secret.read)
    await srv.start()
    try:
        yield srv, cluster, secret
    finally:
        await srv.close()


def client_ctx(ca_pem: bytes) -> ssl.SSLContext:
    """What the API server does with the webhook's caBundle: verify the chain and the service's DNS name."""
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    return ctx


async def post(srv: InjectorServer, body: bytes, ca_pem: bytes = CA.cert_pem) -> tuple[int, Any]:
    connector = aiohttp.TCPConnector(ssl=client_ctx(ca_pem))
    async with aiohttp.ClientSession(connector=connector) as session, session.post(
            f"https://127.0.0.1:{srv.port}/?timeout=10s", data=body, server_hostname=DNS,
            headers={"Content-Type": "application/json"}) as resp:
        return resp.status, orjson.loads(await resp.read())


def review(namespace: str, obj: dict[str, Any] | None = None, **request: Any) -> bytes:
    pod = obj if obj is not None else {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": namespace, "labels": {"app": "web"}},
        "spec": {"serviceAccountName": "web", "containers": [{"name": "web", "image": "w", "command": ["w"]}]},
    }
    req = {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "kind": {"group": "", "version": "v1", "kind": "Pod"},
           "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE",
           "namespace": namespace, "object": pod, **request}
    return orjson.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req})


async def test_a_pod_in_an_annotated_namespace_gets_the_proxy(server: Any) -> None:
    srv, cluster, _ = server
    status, body = await post(srv, review("meshed"))
    assert status == 200
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    response = body["response"]
    assert response["uid"] == "705ab4f5-6393-11e8-b7cc-42010a800002"
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    ops = orjson.loads(base64.b64decode(response["patch"]))
    pod = orjson.loads(review("meshed"))["request"]["object"]
    meshed = jsonpatch.apply_patch(pod, ops)
    proxy = meshed["spec"]["containers"][1]
    env = {e["name"]: e.get("value") for e in proxy["env"]}
    assert proxy["name"] == "isthmus-proxy"
    assert env["ISTHMUS_PROXY_IDENTITY_SVC_ADDR"] == "127.9.128.5:8080"
    assert env["ISTHMUS_PROXY_DESTINATION_SVC_ADDR"] == "127.9.128.6:8086"
    assert env["ISTHMUS_PROXY_IDENTITY_TRUST_ANCHORS"] == ANCHORS
    assert env["ISTHMUS_PROXY_IDENTITY_LOCAL_NAME"] == "web.meshed.serviceaccount.identity.isthmus.cluster.local"
    assert cluster.asked == ["meshed"]
    assert srv.metrics.reviews == {"injected": 1, "skipped": 0, "failed": 0}


async def test_other_pods_and_other_requests_are_allowed_unchanged(server: Any) -> None:
    srv, _, _ = server
    for body in (review("plain"),
                 review("meshed", operation="UPDATE"),
                 review("meshed", obj={"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}},
                        kind={"group": "", "version": "v1", "kind": "Service"})):
        status, answer = await post(srv, body)
        assert status == 200
        assert answer["response"] == {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": True}
    assert srv.metrics.reviews["skipped"] == 1 and srv.metrics.reviews["injected"] == 0


async def test_a_failed_lookup_admits_the_pod_with_a_warning(server: Any) -> None:
    srv, _, _ = server
    status, answer = await post(srv, review("gone"))
    assert status == 200
    assert answer["response"]["allowed"] is True
    assert "patch" not in answer["response"]
    assert answer["response"]["warnings"] == [
        'isthmus: pod not injected with the proxy: cannot read namespace gone: namespaces "gone" not found']
    assert srv.metrics.reviews["failed"] == 1


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "the request body is not JSON"),
    (b'{"kind": "Pod"}', "the request body is not an AdmissionReview"),
    (b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "u"}}',
     "AdmissionReview 'admission.k8s.io/v1beta1' is not served; this webhook speaks admission.k8s.io/v1"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}',
     "the AdmissionReview has no request with a uid"),
])
async def test_bad_bodies_get_400_saying_why(server: Any, body: bytes, message: str) -> None:
    srv, cluster, _ = server
    status, answer = await post(srv, body)
    assert status == 400
    assert answer["error"].startswith(message)
    assert cluster.asked == []
    assert srv.metrics.reviews == {"injected": 0, "skipped": 0, "failed": 0}


async def test_a_new_certificate_in_the_secret_is_used_for_new_connections(server: Any) -> None:
    srv, _, secret = server
    assert await srv.reload() is False  # nothing new yet
    new_ca = new_root(now=NOW, common_name="webhook-ca-2")
    new_leaf = issue_leaf(new_ca, DNS, now=NOW)
    secret.creds = Credentials(new_leaf.cert_pem, new_leaf.key_pem)
    assert await srv.reload() is True
    assert await srv.reload() is False
    status, _ = await post(srv, review("plain"), ca_pem=new_ca.cert_pem)
    assert status == 200
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await post(srv, review("plain"), ca_pem=CA.cert_pem)


async def test_admin_metrics_and_health(server: Any) -> None:
    srv, _, _ = server
    await post(srv, review("meshed"))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{srv.admin_url}/metrics") as resp:
            text = await resp.text()
        async with session.get(f"{srv.admin_url}/ready") as resp:
            assert resp.status == 200
    assert 'injector_admission_reviews_total{result="injected"} 1' in text
    assert "# TYPE injector_admission_reviews_total counter" in text

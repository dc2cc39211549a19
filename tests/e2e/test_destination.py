"""The destination service end to end: a real embedded cluster changed with the real kubectl, the
service in-process watching it through lightkube, and `DestinationClient`s over real TLS 1.3.

Pods count as meshed when they have a container named `isthmus-proxy` (here a sleeping Python
process), as the injector will make them. Answers are awaited as they are pushed
(`wait_changed`), never polled. Every service, client and namespace is closed or deleted when its
test ends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from lightkube import AsyncClient, KubeConfig

from isthmus.adapters.x509 import Credentials, issue_leaf, new_issuer, new_root
from isthmus.components.destination import (
    DestinationClient,
    DestinationService,
    EndpointSet,
    Resolution,
    destination_identity,
)
from isthmus.core.identity import workload_identity

from .conftest import Cluster

pytestmark = pytest.mark.asyncio

LOCAL = "127.0.0.1"
NOW = datetime.now(UTC)
ROOT = new_root(now=NOW - timedelta(hours=1))
ISSUER = new_issuer(ROOT, now=NOW - timedelta(hours=1))
DEST_ID = destination_identity("cluster.local")
SLEEPER = ["python", "-c", "import time; time.sleep(1e6)"]
GATEWAY_ID = "isthmus-gateway.isthmus-multicluster.serviceaccount.identity.isthmus.cluster.local"


def leaf(identity: str) -> Credentials:
    creds = issue_leaf(ISSUER, identity, now=datetime.now(UTC))
    return Credentials(creds.cert_pem + ISSUER.cert_pem, creds.key_pem)


DEST_CREDS = leaf(DEST_ID)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def kube(west: Cluster) -> AsyncIterator[AsyncClient]:
    client = AsyncClient(config=KubeConfig.from_file(west.kubeconfig).get(context_name="west"),
                         trust_env=False)
    yield client
    await client.close()


async def start_service(kube: AsyncClient, port: int = 0) -> DestinationService:
    service = DestinationService(kube, lambda: DEST_CREDS, ROOT.cert_pem, address=(LOCAL, port),
                                 admin_address=(LOCAL, 0))
    await service.start()
    return service


@pytest.fixture
async def service(kube: AsyncClient) -> AsyncIterator[DestinationService]:
    svc = await start_service(kube)
    yield svc
    await svc.close()


@pytest.fixture
async def client(service: DestinationService) -> AsyncIterator[DestinationClient]:
    c = DestinationClient(service.url, ROOT.cert_pem, expected_identity=DEST_ID,
                          credentials=lambda: leaf(workload_identity("vote-bot", "emojivoto")))
    yield c
    await c.close()


async def kubectl(c: Cluster, *args: str, input: str | None = None) -> str:
    """Real kubectl, run off the event loop so the in-process service keeps watching meanwhile."""
    proc = await asyncio.to_thread(c.kubectl, *args, input=input)
    return proc.stdout


def app_manifest(ns: str, app: str, *, meshed: bool, replicas: int = 2, port: int = 8080,
                 service_port: int = 80, annotations: dict[str, str] | None = None) -> str:
    containers: list[dict[str, Any]] = [{"name": app, "image": "sleeper", "command": SLEEPER,
                                         "ports": [{"name": "http", "containerPort": port}]}]
    if meshed:
        containers.append({"name": "isthmus-proxy", "image": "isthmus", "command": SLEEPER})
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": app, "namespace": ns},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
                 "template": {"metadata": {"labels": {"app": app}},
                              "spec": {"serviceAccountName": app, "containers": containers,
                                       "terminationGracePeriodSeconds": 1}}}}
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": f"{app}-svc", "namespace": ns, "annotations": annotations or {}},
           "spec": {"selector": {"app": app},
                    "ports": [{"name": "http", "port": service_port, "targetPort": "http"}]}}
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": app, "namespace": ns}}
    return as_list(account, deployment, svc)


def as_list(*objects: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})


async def until(res: Resolution, check: Callable[[EndpointSet], bool], what: str,
                timeout: float = 60) -> EndpointSet:
    """The first pushed answer that passes `check` (waiting for pushes, not polling)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                current = res.current
                if current is not None and check(current):
                    return current
                await res.wait_changed(res.version)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}; last answer: {res.current!r}") from None


def ready_count(n: int) -> Callable[[EndpointSet], bool]:
    return lambda a: a.exists and len(a.endpoints) == n


async def admin(service: DestinationService, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(service.admin_url + path) as r:
        return r.status, await r.text()


# --------------------------------------------------------------------------- tests


async def test_every_authority_form_resolves_and_only_meshed_pods_have_identities(
        west: Cluster, ns: str, service: DestinationService, client: DestinationClient) -> None:
    await kubectl(west, "apply", "-f", "-", input=app_manifest(ns, "web", meshed=True))
    await kubectl(west, "apply", "-f", "-", input=app_manifest(ns, "plain", meshed=False, replicas=1))
    web = await until(client.resolve(f"web-svc.{ns}"), ready_count(2), "two web endpoints")
    plain = await until(client.resolve(f"plain-svc.{ns}"), ready_count(1), "one plain endpoint")

    pods = {p["status"]["podIP"]: p for p in
            json.loads(await kubectl(west, "-n", ns, "get", "pods", "-l", "app=web", "-o", "json"))["items"]}
    assert web.authority == f"web-svc.{ns}.svc.cluster.local:80"
    assert web.service is not None and (web.service.namespace, web.service.name) == (ns, "web-svc")
    assert dict(web.labels) == {"dst_namespace": ns, "dst_service": "web-svc"}
    assert sorted(e.addr for e in web.endpoints) == sorted(pods)
    for e in web.endpoints:
        assert (e.port, e.identity, e.proxy_port, e.protocol_hint) == \
            (8080, workload_identity("web", ns), 4143, "http")
        assert dict(e.labels) == {"dst_namespace": ns, "dst_pod": pods[e.addr]["metadata"]["name"],
                                  "dst_deployment": "web"}
    [p] = plain.endpoints
    assert (p.identity, p.proxy_port, p.protocol_hint) == (None, None, None)

    cluster_ip = json.loads(await kubectl(west, "-n", ns, "get", "svc", "web-svc", "-o", "json"))[
        "spec"]["clusterIP"]
    for form in (f"web-svc.{ns}:80", f"web-svc.{ns}.svc", f"web-svc.{ns}.svc.cluster.local",
                 f"web-svc.{ns}.svc.cluster.local:80"):
        assert client.resolve(form) is client.resolve(f"web-svc.{ns}")  # one shared stream
    by_ip = await client.resolve(f"{cluster_ip}:80").ready(timeout=30)
    assert by_ip.authority == f"{cluster_ip}:80" and by_ip.endpoints == web.endpoints
    pod_ip = web.endpoints[0].addr
    by_pod = await client.resolve(f"{pod_ip}:8080").ready(timeout=30)
    assert by_pod.service is None and by_pod.endpoints[0].identity == workload_identity("web", ns)
    missing = await client.resolve(f"web-svc2.{ns}").ready(timeout=30)
    assert not missing.exists and missing.reason == f"service {ns}/web-svc2 not found"
    no_port = await client.resolve(f"web-svc.{ns}:81").ready(timeout=30)
    assert not no_port.exists and "has no port 81" in (no_port.reason or "")

    assert await admin(service, "/ready") == (200, "ok\n")
    status, metrics = await admin(service, "/metrics")
    assert status == 200
    assert "destination_resolve_streams 6\n" in metrics  # web, plain, cluster IP, pod IP, web-svc2, :81
    assert "destination_resolves_total 6\n" in metrics


async def test_scaling_and_deletion_are_pushed_on_the_open_stream(
        west: Cluster, ns: str, service: DestinationService, client: DestinationClient) -> None:
    await kubectl(west, "apply", "-f", "-", input=app_manifest(ns, "web", meshed=True, replicas=1))
    res = client.resolve(f"web-svc.{ns}:80")
    await until(res, ready_count(1), "one endpoint")
    await kubectl(west, "-n", ns, "scale", "deployment", "web", "--replicas=3")
    await until(res, ready_count(3), "three endpoints after scaling up")
    await kubectl(west, "-n", ns, "scale", "deployment", "web", "--replicas=1")
    await until(res, ready_count(1), "one endpoint after scaling down")
    await kubectl(west, "-n", ns, "delete", "service", "web-svc")
    gone = await until(res, lambda a: not a.exists, "the deletion")
    assert gone.reason == f"service {ns}/web-svc not found"
    _, metrics = await admin(service, "/metrics")
    updates = int(next(line.split()[1] for line in metrics.splitlines()
                       if line.startswith("destination_updates_total ")))
    assert updates >= 3


async def test_policy_and_opaque_annotations_reach_the_client(
        west: Cluster, ns: str, service: DestinationService, client: DestinationClient) -> None:
    annotations = {"timeout.isthmus.io/request": "2s", "config.isthmus.io/opaque-ports": "3306,80"}
    await kubectl(west, "apply", "-f", "-",
                  input=app_manifest(ns, "db", meshed=True, replicas=1, annotations=annotations))
    answer = await until(client.resolve(f"db-svc.{ns}"), ready_count(1), "one db endpoint")
    assert dict(answer.policy) == {"timeout.isthmus.io/request": "2s"} and answer.opaque


async def test_mirrored_services_resolve_to_the_gateway(
        west: Cluster, ns: str, service: DestinationService, client: DestinationClient) -> None:
    gateway_ip = f"127.{west.dir.load().index}.192.1"
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "web-svc-east", "namespace": ns,
                      "labels": {"mirror.isthmus.io/mirrored-service": "true",
                                 "mirror.isthmus.io/cluster-name": "east"},
                      "annotations": {"mirror.isthmus.io/remote-svc-fq-name":
                                      "web-svc.emojivoto.svc.cluster.local"}},
         "spec": {"ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "v1", "kind": "Endpoints",
         "metadata": {"name": "web-svc-east", "namespace": ns,
                      "labels": {"mirror.isthmus.io/mirrored-service": "true",
                                 "mirror.isthmus.io/cluster-name": "east"},
                      "annotations": {"mirror.isthmus.io/remote-gateway-identity": GATEWAY_ID,
                                      "mirror.isthmus.io/remote-svc-fq-name":
                                      "web-svc.emojivoto.svc.cluster.local"}},
         "subsets": [{"addresses": [{"ip": gateway_ip}], "ports": [{"name": "http", "port": 4143}]}]},
    ]
    await kubectl(west, "apply", "-f", "-", input=as_list(*objects))
    answer = await until(client.resolve(f"web-svc-east.{ns}.svc.cluster.local:80"), ready_count(1),
                         "the gateway endpoint")
    assert answer.labels["dst_target_cluster"] == "east"
    [e] = answer.endpoints
    assert (e.addr, e.port, e.identity, e.proxy_port, e.protocol_hint, e.authority_override) == \
        (gateway_ip, 4143, GATEWAY_ID, 4143, "http", "web-svc.emojivoto.svc.cluster.local:80")
    assert dict(e.labels) == {"dst_target_cluster": "east"}


async def test_a_client_expecting_another_identity_is_refused(
        service: DestinationService) -> None:
    failed = asyncio.Event()

    async def sleep(delay: float) -> None:
        failed.set()
        await asyncio.sleep(delay)

    impostor_check = workload_identity("isthmus-identity", "isthmus")
    client = DestinationClient(service.url, ROOT.cert_pem, expected_identity=impostor_check, sleep=sleep)
    try:
        res = client.resolve("kubernetes.default")
        await asyncio.wait_for(failed.wait(), 30)
        assert res.current is None
        assert f"names identity {DEST_ID}, expected {impostor_check}" in (res.last_error or "")
    finally:
        await client.close()
    _, metrics = await admin(service, "/metrics")
    assert "destination_resolves_total 0\n" in metrics


async def test_malformed_authorities_get_400(service: DestinationService) -> None:
    from isthmus.components.identity import client_context

    ctx = client_context(None, ROOT.cert_pem, expected_identity=DEST_ID)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        async with s.get(service.url + "/v1/resolve", params={"authority": "web-svc.ns:http"}) as r:
            assert r.status == 400
            assert "not a port number" in (await r.json())["error"]
        async with s.get(service.url + "/v1/resolve") as r:
            assert r.status == 400 and "authority" in (await r.json())["error"]
        async with s.get(service.url + "/v1/resolve", params={"authority": "kubernetes.default:443"}) as r:
            assert r.status == 200 and r.content_type == "application/x-ndjson"
            first = json.loads(await r.content.readline())
            assert first["exists"] is True and first["service"] == {"namespace": "default",
                                                                    "name": "kubernetes"}


async def test_the_client_keeps_its_answer_and_reconnects_after_a_service_restart(
        west: Cluster, ns: str, kube: AsyncClient) -> None:
    await kubectl(west, "apply", "-f", "-", input=app_manifest(ns, "web", meshed=True, replicas=1))
    service = await start_service(kube)
    port = service.port
    broken = asyncio.Event()

    async def sleep(delay: float) -> None:
        broken.set()
        await asyncio.sleep(delay)

    client = DestinationClient(service.url, ROOT.cert_pem, expected_identity=DEST_ID, sleep=sleep,
                               reconnect_base=0.2, reconnect_cap=1.0)
    try:
        res = client.resolve(f"web-svc.{ns}")
        before = await until(res, ready_count(1), "one endpoint")
        await service.close()
        await asyncio.wait_for(broken.wait(), 30)
        assert res.current is before and not res.connected
        await kubectl(west, "-n", ns, "scale", "deployment", "web", "--replicas=2")
        assert res.current is before  # nobody to tell it yet
        service = await start_service(kube, port)
        after = await until(res, ready_count(2), "the restarted service's answer")
        assert res.connected and after.endpoints[0].identity == workload_identity("web", ns)
    finally:
        await client.close()
        await service.close()

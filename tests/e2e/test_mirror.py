"""The multicluster service mirror end to end: two embedded clusters, the real kubectl, a Link.

West mirrors east. The Link CRD is applied to west with kubectl; east gets a
ServiceAccount whose ClusterRole may only get, list and watch Services and
Endpoints, and a token of it goes into west's credentials Secret as a
kubeconfig. The gateway is a small HTTPS server on one of east's loopback
addresses answering `/ready` over mTLS as the test chooses (certificates of a
trust anchor made by the test: the gateway's for the gateway identity, the
mirror's for its probes); its address is the Link's host name
`gateway.east.test`, resolved by a resolver the test controls (so the gateway
can move). The service mirror runs in this process, in an event
loop of its own thread, against west's API through lightkube.

The tests share the clusters (starting them is the expensive part) but not
their state: each works on Services of its own, and an autouse fixture
gives every test what it may count on, whatever ran before — the Link,
good credentials, one running mirror, a gateway answering at the Link's
host name — so they pass alone, in any order, or together.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from lightkube import AsyncClient, KubeConfig

from isthmus.adapters import kubeconfig as kubeconfigs
from isthmus.components import cluster as clusters
from isthmus.components.identity.tlsconfig import server_context
from isthmus.components.mirror import AdminServer, MtlsProbe, ServiceMirror, StaticCredentials
from isthmus.components.mirror.gateway import system_resolver
from isthmus.components.proxy.adminhttp import AdminHTTPServer, Request, Response, Stream
from isthmus.resources.multicluster import link_crd
from tests.support.background import BackgroundLoop
from tests.support.pki import ROOT, creds

from .conftest import FIRST_CLUSTER, Cluster

pytestmark = pytest.mark.e2e

T = TypeVar("T")
# Cluster numbers of this module's pair: the first free ones from here (conftest's start at FIRST_CLUSTER).
FIRST_CLUSTER_NUMBER = str(int(FIRST_CLUSTER) + 20)
MC_NS = "isthmus-multicluster"
GATEWAY_HOST = "gateway.east.test"
GATEWAY_IDENTITY = "isthmus-gateway.isthmus-multicluster.serviceaccount.identity.isthmus.cluster.local"
PROBE_PORT = 4191
REMOTE_SA = "isthmus-service-mirror-remote-access-west"
# The mirror's gateway probes present a certificate of the test's trust anchor.
MIRROR_PROBE = MtlsProbe(StaticCredentials(
    creds("isthmus-service-mirror-east.isthmus-multicluster.serviceaccount.identity.isthmus.cluster.local"),
    ROOT.cert_pem))
EXPORTED = "mirror.isthmus.io/exported"


class PairCluster(Cluster):
    def env(self) -> dict[str, str]:
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), ISTHMUS_HOME=str(self.home))
        env["ISTHMUS_FIRST_CLUSTER_NUMBER"] = FIRST_CLUSTER_NUMBER
        return env


def start_cluster(home: Path, name: str, region: str) -> PairCluster:
    c = PairCluster(name, home, home / "kubeconfig")
    c.isthmus("cluster", "create", name, "--region", region, "--nodes", "1")
    return c




class FakeGateway:
    """`GET /ready` on ADDRESS:4191 over mTLS, answering `status` (200 until told otherwise).

    The server is the gateway proxy's own probe listener server (`AdminHTTPServer` with a
    server context that requires a client certificate from the test's trust anchor),
    presenting a certificate for the gateway identity.
    """

    def __init__(self, address: str, background: BackgroundLoop) -> None:
        self.address = address
        self.status = 200
        self.background = background

        async def ready(request: Request, stream: Stream) -> Response:
            return Response(self.status, "ready\n" if self.status == 200 else "not ready\n")

        self.server = AdminHTTPServer({("GET", "/ready"): ready})
        ctx = server_context(creds(GATEWAY_IDENTITY), ROOT.cert_pem, require_client_cert=True)
        background.run(self.server.start(address, PROBE_PORT, ssl=ctx))

    def stop(self) -> None:
        self.background.run(self.server.close())


@dataclass
class Running:
    mirror: ServiceMirror
    admin: AdminServer
    task: asyncio.Task[None]


@dataclass
class Env:
    west: PairCluster
    east: PairCluster
    background: BackgroundLoop
    client: AsyncClient
    names: dict[str, str]  # what the gateway's host name resolves to
    gateways: dict[str, FakeGateway] = field(default_factory=dict)
    running: list[Running] = field(default_factory=list)

    # ------------------------------------------------------------------ the mirror

    async def _resolve(self, host: str) -> list[str]:
        if host in self.names:
            return [self.names[host]]
        return await system_resolver(host)

    def start_mirror(self, identity: str) -> Running:
        async def start() -> Running:
            mirror = ServiceMirror(self.client, "east", MC_NS, identity=identity, probe=MIRROR_PROBE, lease_duration=3,
                                   renew_deadline=2, retry_period=0.3, status_interval=0.2, resolve_period=1.0,
                                   check_period=1.0, resolver=self._resolve)
            admin = AdminServer(mirror, ("127.0.0.1", 0))
            await admin.start()
            return Running(mirror, admin, asyncio.create_task(mirror.run()))
        r = self.background.run(start())
        self.running.append(r)
        return r

    def stop_mirror(self, r: Running) -> None:
        async def stop() -> None:
            r.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await r.task
            await r.admin.close()
        self.background.run(stop())
        self.running.remove(r)

    @property
    def leader(self) -> Running:
        return next(r for r in self.running if r.mirror.elector.is_leader)

    def metrics(self, r: Running | None = None) -> str:
        r = r or self.leader
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{r.admin.port}/metrics", timeout=10) as resp:
            return str(resp.read().decode())

    # ------------------------------------------------------------------ the clusters

    @property
    def gateway(self) -> str:
        """The address the gateway's host name resolves to now."""
        return self.names[GATEWAY_HOST]

    def gateway_ip(self, i: int) -> str:
        return f"127.{self.east.dir.load().index}.255.{200 + i}"

    def endpoint_ip(self, i: int) -> str:
        return f"127.{self.east.dir.load().index}.64.{200 + i}"

    def get(self, c: Cluster, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        proc = c.kubectl("-n", ns, "get", kind, name, "-o", "json", "--ignore-not-found", check=False)
        if proc.returncode != 0 or not proc.stdout.strip():
            return None
        return dict(json.loads(proc.stdout))

    def link(self) -> dict[str, Any]:
        got = self.get(self.west, "link", MC_NS, "east")
        assert got is not None
        return got

    def link_condition(self, type_: str) -> dict[str, Any] | None:
        for c in (self.link().get("status") or {}).get("conditions") or ():
            if c["type"] == type_:
                return dict(c)
        return None

    def apply(self, c: Cluster, *objects: dict[str, Any]) -> None:
        c.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))

    def remote_service(self, ns: str, name: str, *, exported: bool = True, ready: int = 1,
                       labels: dict[str, str] | None = None) -> None:
        """A Service in east without a selector, and Endpoints with `ready` ready addresses."""
        all_labels = {"app": name, **(labels or {})}
        if exported:
            all_labels[EXPORTED] = "true"
        self.apply(self.east, {"apiVersion": "v1", "kind": "Service",
                               "metadata": {"name": name, "namespace": ns, "labels": all_labels},
                               "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
        endpoints = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns},
                     "subsets": [{"addresses": [{"ip": self.endpoint_ip(i)} for i in range(ready)],
                                  "ports": [{"name": "http", "port": 8080}]}] if ready else []}
        # East's Endpoints controller deletes Endpoints it sees before their Service reaches its
        # cache: write them until they stay.
        present = 0
        while present < 2:
            if self.get(self.east, "endpoints", ns, name) is None:
                self.apply(self.east, endpoints)
                present = 0
            else:
                present += 1
            time.sleep(0.2)

    def credentials(self, token: str, server: str | None = None) -> None:
        config = kubeconfigs.load(self.west.kubeconfig)
        entry = next(c["cluster"] for c in config["clusters"] if c["name"] == "east")
        kc = kubeconfigs.token_kubeconfig(name="east", server=server or entry["server"],
                                          ca_pem=base64.b64decode(entry["certificate-authority-data"]),
                                          token=token, user=REMOTE_SA)
        self.apply(self.west, {"apiVersion": "v1", "kind": "Secret", "type": "mirror.isthmus.io/remote-kubeconfig",
                               "metadata": {"name": "cluster-credentials-east", "namespace": MC_NS},
                               "stringData": {"kubeconfig": yaml.safe_dump(kc)}})

    def token(self, sa: str = REMOTE_SA) -> str:
        return self.east.kubectl("-n", MC_NS, "create", "token", sa, "--duration=2h").stdout.strip()


def wait_for(what: str, probe: Callable[[], T], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except AssertionError as e:
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
        time.sleep(0.2)


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return None


REMOTE_RBAC = [
    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": REMOTE_SA, "namespace": MC_NS}},
    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody", "namespace": MC_NS}},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": "isthmus-service-mirror-remote-access"},
     "rules": [{"apiGroups": [""], "resources": ["services", "endpoints"], "verbs": ["get", "list", "watch"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": REMOTE_SA},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                 "name": "isthmus-service-mirror-remote-access"},
     "subjects": [{"kind": "ServiceAccount", "name": REMOTE_SA, "namespace": MC_NS}]},
]


LINK = {
    "apiVersion": "multicluster.isthmus.io/v1alpha1", "kind": "Link",
    "metadata": {"name": "east", "namespace": MC_NS},
    "spec": {"targetClusterName": "east", "targetClusterDomain": "cluster.local",
             "clusterCredentialsSecret": "cluster-credentials-east",
             "gatewayAddress": GATEWAY_HOST, "gatewayPort": 4143, "gatewayIdentity": GATEWAY_IDENTITY,
             "probeSpec": {"path": "/ready", "port": PROBE_PORT, "period": "300ms", "timeout": "1s",
                           "failureThreshold": 3}}}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    home = tmp_path_factory.mktemp("mirror")
    started: list[PairCluster] = []
    background: BackgroundLoop | None = None
    e: Env | None = None
    try:
        west = start_cluster(home, "west", "sfo3")
        started.append(west)
        east = start_cluster(home, "east", "syd1")
        started.append(east)
        west.kubectl("apply", "-f", "-", input=json.dumps(link_crd()))
        for c in (west, east):
            c.kubectl("create", "namespace", MC_NS)
            c.kubectl("create", "namespace", "emojivoto")
        background = BackgroundLoop()

        async def client() -> AsyncClient:
            return AsyncClient(config=KubeConfig.from_file(west.kubeconfig).get(context_name="west"),
                               trust_env=False)
        e = Env(west, east, background, background.run(client()), names={})
        e.apply(east, *REMOTE_RBAC)
        e.credentials(e.token())
        e.names[GATEWAY_HOST] = e.gateway_ip(1)
        e.gateways["1"] = FakeGateway(e.gateway_ip(1), background)
        e.apply(west, LINK)
        e.start_mirror("mirror-a")
        yield e
    finally:
        if e is not None:
            for r in list(e.running):
                e.stop_mirror(r)
            e.background.run(e.client.close())
            for g in e.gateways.values():
                g.stop()
        if background is not None:
            background.stop()
        for c in started:
            if c.dir.exists():
                clusters.stop(c.dir)


def mirror_of(e: Env, ns: str, name: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    svc, ep = e.get(e.west, "service", ns, f"{name}-east"), e.get(e.west, "endpoints", ns, f"{name}-east")
    return (svc, ep) if svc is not None and ep is not None else None


def ready_ips(ep: dict[str, Any] | None) -> list[str]:
    return [a["ip"] for s in (ep or {}).get("subsets") or () for a in s.get("addresses") or ()]


def not_ready_ips(ep: dict[str, Any] | None) -> list[str]:
    return [a["ip"] for s in (ep or {}).get("subsets") or () for a in s.get("notReadyAddresses") or ()]


def service_entry(e: Env, ns: str, name: str) -> dict[str, Any] | None:
    for s in (e.link().get("status") or {}).get("mirroredServices") or ():
        if (s["namespace"], s["name"]) == (ns, name):
            return dict(s)
    return None


def entry_condition(entry: dict[str, Any] | None, type_: str) -> tuple[str, str] | None:
    for c in (entry or {}).get("conditions") or ():
        if c["type"] == type_:
            return c["status"], c["reason"]
    return None


@pytest.fixture(autouse=True)
def settled(env: Env) -> Env:
    """What every test may count on, whatever ran before it (see the module docstring)."""
    e = env
    if e.get(e.west, "link", MC_NS, "east") is None:
        e.apply(e.west, LINK)
    if not e.running:
        e.start_mirror(f"mirror-{len(e.gateways)}-{time.monotonic_ns()}")
    for g in e.gateways.values():
        g.status = 200
    wait_for("a leading mirror", lambda: any(r.mirror.elector.is_leader for r in e.running))
    return e


# --------------------------------------------------------------------------- mirroring


def test_an_exported_service_is_mirrored_with_the_gateway_as_its_endpoint(env: Env) -> None:
    e = env
    e.east.kubectl("-n", "emojivoto", "create", "deployment", "web", "--image=isthmus/sleep", "--replicas=1",
                   "--", "sleep", "3600")
    e.apply(e.east, {"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": "web-svc", "namespace": "emojivoto",
                                  "labels": {"app": "web", "team": "front", "mirror.isthmus.io/other": "x"}},
                     "spec": {"selector": {"app": "web"},
                              "ports": [{"name": "http", "port": 80, "targetPort": 8080},
                                        {"name": "admin", "port": 9990, "targetPort": 9990}]}})
    wait_for("web's pod ready in east", lambda: ready_ips(e.get(e.east, "endpoints", "emojivoto", "web-svc")))
    assert mirror_of(e, "emojivoto", "web-svc") is None  # not exported yet

    e.east.kubectl("-n", "emojivoto", "label", "service", "web-svc", f"{EXPORTED}=true")
    svc, ep = wait_for("the mirror with a ready endpoint", lambda: (m := mirror_of(e, "emojivoto", "web-svc"))
                       and ready_ips(m[1]) and m)
    remote = e.get(e.east, "service", "emojivoto", "web-svc")
    assert remote is not None
    labels = {"app": "web", "team": "front", "mirror.isthmus.io/mirrored-service": "true",
              "mirror.isthmus.io/cluster-name": "east"}
    assert svc["metadata"]["labels"] == labels
    assert svc["metadata"]["annotations"] == {
        "mirror.isthmus.io/remote-svc-fq-name": "web-svc.emojivoto.svc.cluster.local",
        "mirror.isthmus.io/remote-resource-version": remote["metadata"]["resourceVersion"]}
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["clusterIP"]
    assert "selector" not in svc["spec"]
    assert [(p["name"], p["port"], p["protocol"]) for p in svc["spec"]["ports"]] == [
        ("http", 80, "TCP"), ("admin", 9990, "TCP")]
    assert ep["metadata"]["labels"] == labels
    assert ep["metadata"]["annotations"] == {
        "mirror.isthmus.io/remote-gateway-identity": GATEWAY_IDENTITY,
        "mirror.isthmus.io/remote-svc-fq-name": "web-svc.emojivoto.svc.cluster.local"}
    assert ep["subsets"] == [{"addresses": [{"ip": e.gateway}],
                              "ports": [{"name": "http", "port": 4143, "protocol": "TCP"},
                                        {"name": "admin", "port": 4143, "protocol": "TCP"}]}]
    # kubectl shows the mirror as it shows any Service.
    table = e.west.kubectl("-n", "emojivoto", "get", "endpoints", "web-svc-east").stdout
    assert f"{e.gateway}:4143" in table

    wait_for("the Link's status", lambda: service_entry(e, "emojivoto", "web-svc"))
    ready = wait_for("the Link ready", lambda: (c := e.link_condition("Ready")) and c["status"] == "True" and c)
    assert ready["reason"] == "Mirroring"
    entry = service_entry(e, "emojivoto", "web-svc")
    assert entry is not None and entry["mirroredName"] == "web-svc-east"
    assert entry_condition(entry, "Mirrored") == ("True", "Mirrored")
    assert entry_condition(entry, "EndpointsReady") == ("True", "GatewayAlive")
    assert (e.link_condition("RemoteReachable") or {}).get("status") == "True"
    assert "True" in e.west.kubectl("-n", MC_NS, "get", "links").stdout  # the Ready column


def test_a_remote_service_without_ready_endpoints_empties_the_mirror(env: Env) -> None:
    e = env
    e.east.kubectl("-n", "emojivoto", "create", "deployment", "scaled", "--image=isthmus/sleep", "--replicas=1",
                   "--", "sleep", "3600")
    e.east.kubectl("-n", "emojivoto", "expose", "deployment", "scaled", "--port=80", "--target-port=8080",
                   f"--labels={EXPORTED}=true,app=scaled")
    wait_for("the mirror with the gateway ready", lambda: ready_ips(
        e.get(e.west, "endpoints", "emojivoto", "scaled-east")) == [e.gateway])
    e.east.kubectl("-n", "emojivoto", "scale", "deployment", "scaled", "--replicas=0")
    wait_for("the mirror's endpoints emptied",
             lambda: (m := mirror_of(e, "emojivoto", "scaled")) and m[1].get("subsets") in (None, []))
    wait_for("the service's status", lambda: entry_condition(service_entry(e, "emojivoto", "scaled"),
                                                             "EndpointsReady") == ("False", "NoRemoteEndpoints"))
    e.east.kubectl("-n", "emojivoto", "scale", "deployment", "scaled", "--replicas=1")
    wait_for("the gateway back in the mirror's endpoints",
             lambda: ready_ips(e.get(e.west, "endpoints", "emojivoto", "scaled-east")) == [e.gateway])


def test_a_failing_gateway_moves_the_endpoints_to_not_ready_and_back(env: Env) -> None:
    e = env
    e.remote_service("emojivoto", "probed-svc")
    wait_for("probed-svc mirrored", lambda: ready_ips(e.get(e.west, "endpoints", "emojivoto", "probed-svc-east")))
    wait_for("the gateway alive", lambda: metric(e.metrics(), "gateway_alive", target_cluster="east") == 1)
    gateway = next(g for g in e.gateways.values() if g.address == e.gateway)
    gateway.status = 503
    wait_for("the gateway's address not ready",
             lambda: not_ready_ips(e.get(e.west, "endpoints", "emojivoto", "probed-svc-east")) == [e.gateway])
    assert ready_ips(e.get(e.west, "endpoints", "emojivoto", "probed-svc-east")) == []
    text = e.metrics()
    assert metric(text, "gateway_alive", target_cluster="east") == 0
    assert (metric(text, "gateway_probes", target_cluster="east", probe_successful="false") or 0) >= 3
    alive = wait_for("GatewayAlive False on the Link",
                     lambda: (c := e.link_condition("GatewayAlive")) and c["status"] == "False" and c)
    assert alive["reason"] == "ProbeFailed" and "503" in alive["message"]

    gateway.status = 200
    wait_for("the gateway's address ready again",
             lambda: ready_ips(e.get(e.west, "endpoints", "emojivoto", "probed-svc-east")) == [e.gateway])
    text = e.metrics()
    assert metric(text, "gateway_alive", target_cluster="east") == 1
    assert (metric(text, "gateway_probes", target_cluster="east", probe_successful="true") or 0) >= 1
    assert metric(text, "gateway_latency", target_cluster="east") is not None
    wait_for("GatewayAlive True on the Link", lambda: (e.link_condition("GatewayAlive") or {}).get("status") == "True")


def test_a_gateway_that_moves_is_found_at_its_new_address(env: Env) -> None:
    e = env
    e.remote_service("emojivoto", "moved-svc")
    for there, here in (("1", "2"), ("2", "1")):  # and back, as the other tests know it
        wait_for("moved-svc behind the gateway", lambda there=there: ready_ips(  # type: ignore[misc]
            e.get(e.west, "endpoints", "emojivoto", "moved-svc-east")) == [e.gateway_ip(int(there))])
        e.gateways[here] = FakeGateway(e.gateway_ip(int(here)), e.background)
        e.names[GATEWAY_HOST] = e.gateway_ip(int(here))
        e.gateways.pop(there).stop()
        wait_for("the new gateway address in the mirror's endpoints", lambda here=here: ready_ips(  # type: ignore[misc]
            e.get(e.west, "endpoints", "emojivoto", "moved-svc-east")) == [e.gateway_ip(int(here))])
        assert not_ready_ips(e.get(e.west, "endpoints", "emojivoto", "moved-svc-east")) == []


def test_an_unexported_service_loses_its_mirror(env: Env) -> None:
    e = env
    e.remote_service("emojivoto", "unexported-svc")
    wait_for("unexported-svc mirrored", lambda: mirror_of(e, "emojivoto", "unexported-svc"))
    e.east.kubectl("-n", "emojivoto", "label", "service", "unexported-svc", f"{EXPORTED}-")
    wait_for("the mirror deleted", lambda: e.get(e.west, "service", "emojivoto", "unexported-svc-east") is None
             and e.get(e.west, "endpoints", "emojivoto", "unexported-svc-east") is None)
    wait_for("the Link's status without it", lambda: service_entry(e, "emojivoto", "unexported-svc") is None)


# --------------------------------------------------------------------------- restarts and replicas


def test_orphans_are_deleted_when_a_mirror_starts_and_live_mirrors_are_kept(env: Env) -> None:
    e = env
    e.remote_service("emojivoto", "keep-svc")
    e.remote_service("emojivoto", "gone-svc")
    kept = wait_for("keep-svc mirrored", lambda: mirror_of(e, "emojivoto", "keep-svc"))
    wait_for("gone-svc mirrored", lambda: mirror_of(e, "emojivoto", "gone-svc"))
    uids = (kept[0]["metadata"]["uid"], kept[1]["metadata"]["uid"])
    e.stop_mirror(e.leader)

    labels = {"mirror.isthmus.io/mirrored-service": "true", "mirror.isthmus.io/cluster-name": "east"}
    ghost = {"name": "ghost-east", "namespace": "emojivoto", "labels": labels,
             "annotations": {"mirror.isthmus.io/remote-svc-fq-name": "ghost.emojivoto.svc.cluster.local"}}
    stray = {"name": "stray", "namespace": "emojivoto", "labels": labels}
    local_only = {"name": "local-east", "namespace": "emojivoto", "labels": {"app": "local"}}
    e.apply(e.west,
            {"apiVersion": "v1", "kind": "Service", "metadata": ghost, "spec": {"ports": [{"port": 80}]}},
            {"apiVersion": "v1", "kind": "Endpoints", "metadata": ghost, "subsets": []},
            {"apiVersion": "v1", "kind": "Service", "metadata": stray, "spec": {"ports": [{"port": 80}]}},
            {"apiVersion": "v1", "kind": "Service", "metadata": local_only, "spec": {"ports": [{"port": 80}]}})
    # Unexported while no mirror ran: its mirror is an orphan too.
    e.east.kubectl("-n", "emojivoto", "label", "service", "gone-svc", f"{EXPORTED}-")
    # Deleted and created again meanwhile: the mirror stays the same object.
    e.east.kubectl("-n", "emojivoto", "delete", "service", "keep-svc")
    e.remote_service("emojivoto", "keep-svc")

    e.start_mirror("mirror-b")
    wait_for("the orphans deleted", lambda: all(
        e.get(e.west, kind, "emojivoto", name) is None
        for kind, name in (("service", "ghost-east"), ("endpoints", "ghost-east"), ("service", "stray"),
                           ("service", "gone-svc-east"), ("endpoints", "gone-svc-east"))))
    assert e.get(e.west, "service", "emojivoto", "local-east") is not None  # not a mirror: not touched
    kept = wait_for("keep-svc still mirrored", lambda: mirror_of(e, "emojivoto", "keep-svc"))
    assert kept is not None
    # Re-created in east with the same spec: the mirror was updated, not re-created.
    assert (kept[0]["metadata"]["uid"], kept[1]["metadata"]["uid"]) == uids
    e.west.kubectl("-n", "emojivoto", "delete", "service", "local-east")


def test_one_replica_leads_and_another_takes_over_when_it_stops(env: Env) -> None:
    e = env
    first = e.leader
    standby = e.start_mirror("mirror-c")
    lease = e.get(e.west, "lease", MC_NS, "service-mirror-east")
    assert lease is not None and lease["spec"]["holderIdentity"] == first.mirror.identity
    assert not standby.mirror.elector.is_leader
    assert metric(e.metrics(standby), "service_mirror_is_leader", target_cluster="") == 0

    e.remote_service("emojivoto", "led-svc")
    wait_for("led-svc mirrored by the leader", lambda: mirror_of(e, "emojivoto", "led-svc"))
    assert standby.mirror.cluster is None  # the standby does no work

    e.stop_mirror(first)
    wait_for("the standby holds the lease", lambda: standby.mirror.elector.is_leader)
    lease = e.get(e.west, "lease", MC_NS, "service-mirror-east")
    assert lease is not None and lease["spec"]["holderIdentity"] == "mirror-c"
    assert lease["spec"]["leaseTransitions"] >= 1
    e.east.kubectl("-n", "emojivoto", "label", "service", "led-svc", f"{EXPORTED}-")
    wait_for("led-svc's mirror deleted by the new leader",
             lambda: e.get(e.west, "service", "emojivoto", "led-svc-east") is None)


# --------------------------------------------------------------------------- credentials and outages


def test_refused_credentials_show_on_the_link_delete_nothing_and_recover(env: Env) -> None:
    e = env
    e.remote_service("emojivoto", "cred-svc")
    kept = wait_for("cred-svc mirrored", lambda: mirror_of(e, "emojivoto", "cred-svc"))
    uid = kept[0]["metadata"]["uid"]

    e.credentials("not-a-token")
    remote = wait_for("RemoteReachable Unauthorized",
                      lambda: (c := e.link_condition("RemoteReachable")) and c["reason"] == "Unauthorized" and c)
    assert remote["status"] == "False" and "401" in remote["message"]
    assert (e.link_condition("Ready") or {}).get("reason") == "RemoteNotReachable"
    e.remote_service("emojivoto", "late-svc")  # exported while the mirror cannot see

    e.credentials(e.token("nobody"))  # a valid token without the ClusterRole
    remote = wait_for("RemoteReachable Forbidden",
                      lambda: (c := e.link_condition("RemoteReachable")) and c["reason"] == "Forbidden" and c)
    assert "403" in remote["message"]

    port = e.west.dir.load().index  # an address where nothing listens
    e.credentials(e.token(), server=f"https://127.{port}.0.1:1")
    wait_for("RemoteReachable Unreachable",
             lambda: (e.link_condition("RemoteReachable") or {}).get("reason") == "Unreachable")

    e.apply(e.west, {"apiVersion": "v1", "kind": "Secret", "type": "mirror.isthmus.io/remote-kubeconfig",
                     "metadata": {"name": "cluster-credentials-east", "namespace": MC_NS},
                     "stringData": {"kubeconfig": "this is not a kubeconfig"}})
    wait_for("RemoteReachable CredentialsInvalid",
             lambda: (e.link_condition("RemoteReachable") or {}).get("reason") == "CredentialsInvalid")
    kept = mirror_of(e, "emojivoto", "cred-svc")
    assert kept is not None and kept[0]["metadata"]["uid"] == uid  # nothing was deleted
    assert ready_ips(kept[1]) == [e.gateway]
    assert mirror_of(e, "emojivoto", "late-svc") is None

    e.credentials(e.token())
    wait_for("RemoteReachable True", lambda: (e.link_condition("RemoteReachable") or {}).get("status") == "True")
    wait_for("late-svc mirrored", lambda: mirror_of(e, "emojivoto", "late-svc"))
    kept = mirror_of(e, "emojivoto", "cred-svc")
    assert kept is not None and kept[0]["metadata"]["uid"] == uid


def test_a_remote_api_that_goes_away_keeps_the_mirrors_and_is_followed_again_when_back(env: Env) -> None:
    e = env
    e.remote_service("emojivoto", "outage-svc")
    e.remote_service("emojivoto", "later-svc")
    before = wait_for("outage-svc mirrored", lambda: mirror_of(e, "emojivoto", "outage-svc"))
    wait_for("later-svc mirrored", lambda: mirror_of(e, "emojivoto", "later-svc"))
    clusters.stop(e.east.dir)
    remote = wait_for("RemoteReachable Unreachable",
                      lambda: (c := e.link_condition("RemoteReachable")) and c["reason"] == "Unreachable" and c)
    assert remote["status"] == "False"
    after = mirror_of(e, "emojivoto", "outage-svc")
    assert after is not None and after[0]["metadata"]["uid"] == before[0]["metadata"]["uid"]

    e.east.isthmus("cluster", "start", "east")
    wait_for("RemoteReachable True", lambda: (e.link_condition("RemoteReachable") or {}).get("status") == "True",
             timeout=60)
    e.east.kubectl("-n", "emojivoto", "label", "service", "later-svc", f"{EXPORTED}-")
    wait_for("later-svc's mirror deleted", lambda: e.get(e.west, "service", "emojivoto", "later-svc-east") is None)


# --------------------------------------------------------------------------- namespaces and the Link


def test_a_missing_namespace_is_reported_then_created_when_the_link_asks(env: Env) -> None:
    e = env
    e.east.kubectl("create", "namespace", "only-east")
    e.remote_service("only-east", "lonely-svc")
    missing = wait_for("MissingNamespace on the Link",
                       lambda: (c := e.link_condition("MissingNamespace")) and c["status"] == "True" and c)
    assert "only-east" in missing["message"]
    entry = service_entry(e, "only-east", "lonely-svc")
    assert entry_condition(entry, "Mirrored") == ("False", "MissingNamespace")
    assert (e.link_condition("Ready") or {}).get("reason") == "ServicesNotMirrored"
    assert e.get(e.west, "namespace", "default", "only-east") is None

    e.west.kubectl("-n", MC_NS, "patch", "link", "east", "--type=merge",
                   "-p", '{"spec": {"createMissingNamespaces": true}}')
    wait_for("lonely-svc mirrored in a new namespace", lambda: mirror_of(e, "only-east", "lonely-svc"))
    wait_for("MissingNamespace False", lambda: (e.link_condition("MissingNamespace") or {}).get("status") == "False")
    wait_for("the Link ready", lambda: (e.link_condition("Ready") or {}).get("status") == "True")
    e.west.kubectl("-n", MC_NS, "patch", "link", "east", "--type=merge",
                   "-p", '{"spec": {"createMissingNamespaces": false}}')


def test_deleting_the_link_deletes_its_mirrors(env: Env) -> None:
    e = env
    e.remote_service("emojivoto", "last-svc")
    wait_for("last-svc mirrored", lambda: mirror_of(e, "emojivoto", "last-svc"))
    e.west.kubectl("-n", MC_NS, "delete", "link", "east")

    def gone() -> bool:
        left = e.west.kubectl("get", "services,endpoints", "-A", "-l", "mirror.isthmus.io/cluster-name=east",
                              "-o", "name").stdout.split()
        assert left == [], left
        return True
    wait_for("every mirror deleted", gone)

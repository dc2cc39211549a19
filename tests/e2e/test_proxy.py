"""Meshed pods end to end: real pods with `isthmus proxy` sidecars on the embedded cluster.

The identity and destination services run in this test process against the
`west` cluster's API (lightkube, real TokenReviews, real watches); the pods
are real processes started by the cluster's runner, each with an app
container (tests/support/backend_app.py) and an `isthmus proxy` container
configured the way the injector configures it. Clients are the real `curl`
(through the client pod's outbound port, as its HTTP proxy) and raw sockets;
metrics are checked with the real `promtool`.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from lightkube import AsyncClient, KubeConfig

from isthmus.adapters.x509 import Credentials, issue_leaf, new_issuer, new_root
from isthmus.components.destination import DestinationService
from isthmus.components.identity import IdentityService, lightkube_token_reviewer
from isthmus.core.identity import workload_identity
from tests.support.background import BackgroundLoop

from .conftest import Cluster

T = TypeVar("T")
BACKEND = Path(__file__).resolve().parents[1] / "support" / "backend_app.py"
ISTHMUS = str(Path(sys.executable).parent / "isthmus")
LOCAL = "127.0.0.1"


def _now() -> datetime:
    return datetime.now(UTC)


ROOT = new_root(now=_now() - timedelta(hours=1))
ISSUER = new_issuer(ROOT, now=_now() - timedelta(hours=1))


@dataclass
class ControlPlane:
    identity: IdentityService
    destination: DestinationService
    kube: AsyncClient
    background: BackgroundLoop

    def stop_destination(self) -> None:
        self.background.run(self.destination.close())

    def start_destination(self, port: int = 0) -> None:
        """A new destination service (on `port`, e.g. the old one's)."""
        async def start() -> DestinationService:
            leaf = issue_leaf(ISSUER, workload_identity("isthmus-destination", "isthmus"), now=_now())
            creds = Credentials(cert_pem=leaf.cert_pem + ISSUER.cert_pem, key_pem=leaf.key_pem)
            service = DestinationService(self.kube, lambda: creds, ROOT.cert_pem,
                                         address=(LOCAL, port), admin_address=(LOCAL, 0))
            await service.start()
            return service
        self.destination = self.background.run(start())

    @property
    def identity_addr(self) -> str:
        return self.identity.url.removeprefix("https://")

    @property
    def destination_addr(self) -> str:
        return self.destination.url.removeprefix("https://")




@pytest.fixture
def control_plane(west: Cluster) -> Iterator[ControlPlane]:
    background = BackgroundLoop()

    async def start() -> tuple[AsyncClient, ControlPlane]:
        kube = AsyncClient(config=KubeConfig.from_file(west.kubeconfig).get(context_name="west"),
                           trust_env=False)
        identity = IdentityService(issuer=ISSUER, trust_anchors_pem=ROOT.cert_pem,
                                   trust_domain="cluster.local",
                                   token_reviewer=lightkube_token_reviewer(kube),
                                   clock=_now, address=(LOCAL, 0), admin_address=(LOCAL, 0))
        await identity.start()
        return kube, ControlPlane(identity, None, kube, background)  # type: ignore[arg-type]

    async def stop(kube: AsyncClient, cp: ControlPlane) -> None:
        if cp.destination is not None:
            await cp.destination.close()
        await cp.identity.close()
        await kube.close()

    kube, cp = background.run(start())
    cp.start_destination()
    try:
        yield cp
    finally:
        background.run(stop(kube, cp))
        background.stop()


def meshed_deployment(name: str, ns: str, cp: ControlPlane, *, app: list[str],
                      replicas: int = 1, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A Deployment whose pods run `app` beside an `isthmus proxy` sidecar, as the injector makes them."""
    env = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "ISTHMUS_PROXY_IDENTITY_LOCAL_NAME", "value": workload_identity(name, ns)},
        {"name": "ISTHMUS_PROXY_IDENTITY_TRUST_ANCHORS", "value": ROOT.cert_pem.decode()},
        {"name": "ISTHMUS_PROXY_IDENTITY_SVC_ADDR", "value": cp.identity_addr},
        {"name": "ISTHMUS_PROXY_DESTINATION_SVC_ADDR", "value": cp.destination_addr},
        {"name": "ISTHMUS_PROXY_POD_NAMESPACE", "value": ns},
        {"name": "ISTHMUS_PROXY_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "ISTHMUS_PROXY_WORKLOAD", "value": f"deploy/{name}"},
    ]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations or {}},
                "spec": {
                    "serviceAccountName": name,
                    "containers": [
                        {"name": "app", "image": "backend", "command": app,
                         "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                                 {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                         "ports": [{"name": "http", "containerPort": 8080}]},
                        {"name": "isthmus-proxy", "image": "isthmus/proxy", "command": [ISTHMUS, "proxy"],
                         "env": env,
                         "ports": [{"name": "isthmus-proxy", "containerPort": 4143},
                                   {"name": "isthmus-admin", "containerPort": 4191}],
                         "readinessProbe": {"httpGet": {"path": "/ready", "port": 4191},
                                            "periodSeconds": 1}},
                    ],
                },
            },
        },
    }


def service(name: str, ns: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 8080,
                                                            "targetPort": "http"}]}}


@dataclass
class Mesh:
    west: Cluster
    ns: str
    cp: ControlPlane

    def apply(self, *objects: dict[str, Any]) -> None:
        self.west.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))

    def deploy(self, name: str, *, replicas: int = 1, annotations: dict[str, str] | None = None,
               app: list[str] | None = None) -> None:
        self.west.kubectl("-n", self.ns, "create", "serviceaccount", name)
        self.apply(meshed_deployment(name, self.ns, self.cp, replicas=replicas,
                                     app=app or [sys.executable, str(BACKEND), "8080"]),
                   service(name, self.ns, annotations))

    def wait(self, *names: str) -> None:
        for name in names:
            self.west.kubectl("-n", self.ns, "rollout", "status", f"deploy/{name}", "--timeout=60s",
                              timeout=90)

    def pods(self, name: str) -> list[dict[str, Any]]:
        items = self.west.kjson("-n", self.ns, "get", "pods", "-l", f"app={name}")["items"]
        return [p for p in items if p.get("status", {}).get("podIP")]

    def ip(self, name: str) -> str:
        return str(self.pods(name)[0]["status"]["podIP"])

    def curl(self, via: str, url: str, *args: str) -> subprocess.CompletedProcess[str]:
        proxy = f"http://{self.ip(via)}:4140"
        return subprocess.run(["curl", "-sS", "-m", "20", "-x", proxy, *args, url],
                              capture_output=True, text=True, timeout=30)

    def logs(self, name: str) -> str:
        """The proxy logs of `name`'s pods, for failure messages."""
        return self.west.kubectl("-n", self.ns, "logs", f"deploy/{name}", "-c", "isthmus-proxy",
                                 "--tail=30", check=False).stdout

    def admin(self, name: str, path: str) -> str:
        out = subprocess.run(["curl", "-sS", "-m", "10", "--noproxy", "*",
                              f"http://{self.ip(name)}:4191{path}"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout


@pytest.fixture
def mesh(west: Cluster, ns: str, control_plane: ControlPlane) -> Iterator[Mesh]:
    yield Mesh(west, ns, control_plane)


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        m = re.match(r"^([a-z_]+)(\{(.*)\})? (\S+)$", line)
        assert m, line
        if m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
    return total


def test_meshed_request_crosses_mtls_and_is_counted_on_both_sides(mesh: Mesh) -> None:
    mesh.deploy("server")
    mesh.deploy("client")
    mesh.wait("server", "client")
    ns = mesh.ns
    for _ in range(5):
        out = mesh.curl("client", f"http://server.{ns}:8080/")
        assert out.returncode == 0, out.stderr + mesh.logs("client") + mesh.logs("server")
        assert out.stdout.startswith("hello from server-"), out.stdout
    client_metrics = mesh.admin("client", "/metrics")
    server_metrics = mesh.admin("server", "/metrics")
    client_id = workload_identity("client", ns)
    server_id = workload_identity("server", ns)
    assert metric(client_metrics, "request_total", direction="outbound", tls="true",
                  server_id=server_id, dst_service="server", dst_namespace=ns) == 5
    assert metric(client_metrics, "response_total", direction="outbound", status_code="200",
                  classification="success", dst_service="server") == 5
    assert metric(server_metrics, "request_total", direction="inbound", tls="true",
                  client_id=client_id) == 5
    # Five curl processes, five client connections; one pooled mTLS connection between the proxies.
    assert metric(client_metrics, "tcp_open_total", direction="outbound", server_id=server_id) == 1


def test_metrics_pass_promtool(mesh: Mesh, tmp_path: Path) -> None:
    mesh.deploy("server")
    mesh.deploy("client")
    mesh.wait("server", "client")
    assert mesh.curl("client", f"http://server.{mesh.ns}:8080/status/503").returncode == 0
    for name in ("client", "server"):
        path = tmp_path / f"{name}.prom"
        path.write_text(mesh.admin(name, "/metrics"))
        check = subprocess.run(["promtool", "check", "metrics"], stdin=path.open(),
                               capture_output=True, text=True)
        problems = [line for line in (check.stdout + check.stderr).splitlines()
                    if line.strip() and "abbreviated units" not in line]
        assert check.returncode in (0, 3), check.stderr
        assert problems == [], problems


def test_unknown_authority_gets_503_that_says_so(mesh: Mesh) -> None:
    mesh.deploy("client")
    mesh.wait("client")
    out = mesh.curl("client", f"http://nothere.{mesh.ns}:8080/", "-i")
    assert out.stdout.startswith("HTTP/1.1 503"), out.stdout
    assert f"nothere.{mesh.ns}.svc.cluster.local:8080 does not resolve" in out.stdout
    assert "not found" in out.stdout


def test_malformed_request_gets_400_and_is_counted(mesh: Mesh) -> None:
    mesh.deploy("client")
    mesh.wait("client")
    with socket.create_connection((mesh.ip("client"), 4140), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert b"malformed HTTP request" in answer
    assert metric(mesh.admin("client", "/metrics"), "response_total", direction="outbound",
                  status_code="400") == 1


def test_bodies_chunked_expect_continue_and_large_responses(mesh: Mesh, tmp_path: Path) -> None:
    mesh.deploy("server")
    mesh.deploy("client")
    mesh.wait("server", "client")
    url = f"http://server.{mesh.ns}:8080"
    payload = tmp_path / "payload"
    payload.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    chunked = mesh.curl("client", f"{url}/echo", "-H", "Transfer-Encoding: chunked",
                        "--data-binary", f"@{payload}", "-o", str(tmp_path / "chunked"))
    assert chunked.returncode == 0, chunked.stderr
    assert (tmp_path / "chunked").read_bytes() == payload.read_bytes()
    expect = mesh.curl("client", f"{url}/echo", "-H", "Expect: 100-continue",
                       "--data-binary", f"@{payload}", "-o", str(tmp_path / "expect"))
    assert expect.returncode == 0, expect.stderr
    assert (tmp_path / "expect").read_bytes() == payload.read_bytes()
    big = mesh.curl("client", f"{url}/big?kib=4096", "-o", str(tmp_path / "big"))
    assert big.returncode == 0, big.stderr
    assert (tmp_path / "big").stat().st_size == 4096 * 1024


def test_retries_from_service_annotations(mesh: Mesh) -> None:
    mesh.deploy("server", annotations={"retry.isthmus.io/http": "5xx"})
    mesh.deploy("client")
    mesh.wait("server", "client")
    out = mesh.curl("client", f"http://server.{mesh.ns}:8080/flaky/a", "-i")
    assert out.stdout.startswith("HTTP/1.1 200"), out.stdout
    assert "serves a" in out.stdout


def test_tap_streams_the_clients_requests(mesh: Mesh) -> None:
    mesh.deploy("server")
    mesh.deploy("client")
    mesh.wait("server", "client")
    tap = subprocess.Popen(["curl", "-sN", "--noproxy", "*", "-m", "20",
                            f"http://{mesh.ip('client')}:4191/tap?max=3&namespace={mesh.ns}&resource=deploy/client"],
                           stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            mesh.curl("client", f"http://server.{mesh.ns}:8080/")
            time.sleep(0.3)
            if tap.poll() is not None:
                break
        lines = (tap.stdout.read() if tap.stdout else "").splitlines()
    finally:
        tap.kill()
        tap.wait()
    assert [line.split(" ")[0] for line in lines] == ["req", "rsp", "end"], lines
    assert "proxy=out" in lines[0] and "tls=true" in lines[0]
    assert f":authority=server.{mesh.ns}.svc.cluster.local:8080" in lines[0] or \
        f":authority=server.{mesh.ns}:8080" in lines[0]
    assert ":path=/" in lines[0] and ":method=GET" in lines[0]
    assert ":status=200" in lines[1] and "latency=" in lines[1]
    assert "response-length=" in lines[2]
    json.dumps(lines)


def test_last_answer_serves_while_destination_is_away_then_updates_resume(mesh: Mesh) -> None:
    mesh.deploy("server")
    mesh.deploy("client")
    mesh.wait("server", "client")
    url = f"http://server.{mesh.ns}:8080/"
    assert mesh.curl("client", url).returncode == 0
    port = int(mesh.cp.destination_addr.rsplit(":", 1)[1])
    mesh.cp.stop_destination()
    for _ in range(3):  # the proxy keeps its last answer
        out = mesh.curl("client", url)
        assert out.stdout.startswith("hello from server-"), out.stdout + out.stderr
    mesh.cp.start_destination(port)
    mesh.west.kubectl("-n", mesh.ns, "scale", "deploy/server", "--replicas=2")
    mesh.wait("server")
    deadline = time.monotonic() + 30
    seen: set[str] = set()
    while len(seen) < 2 and time.monotonic() < deadline:  # the reconnected stream brings the new pod
        out = mesh.curl("client", url)
        if out.returncode == 0:
            seen.add(out.stdout.strip())
    assert len(seen) == 2, (seen, mesh.logs("client"))

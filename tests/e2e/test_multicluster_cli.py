"""`isthmus multicluster install|link|unlink` end to end on one embedded cluster, with the real kubectl.

As in the walkthrough, on one cluster ("east", one node): the control plane
(`isthmus install --crds`, `isthmus install`), then `isthmus --context=east
multicluster install | kubectl apply -f -`. The gateway comes up as a pod
whose only container is the proxy in gateway mode: it gets its identity,
refuses plain and certificate-less connections on 4143, and routes an mTLS
client's request to the service authority in its transport header. The
gateway Service gets a load-balancer address. Then `multicluster link`
output is applied to the same cluster (a loopback link: the CLI's output,
not mirroring, is under test): its kubeconfig's token may read Services and
Endpoints and nothing else, and `multicluster unlink | kubectl delete -f -`
removes the Link, the mirror, its credentials and RBAC and the mirrored
services, and nothing else.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import socket
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from isthmus.adapters.x509 import Credentials, issue_leaf
from isthmus.components import cluster as clusters
from isthmus.components.identity.tlsconfig import client_context
from tests.support.waiting import wait_until

from .conftest import KUBECTL, Cluster

pytestmark = pytest.mark.e2e

T = TypeVar("T")
NAME = "east"
GATEWAY_ID = "isthmus-gateway.isthmus-multicluster.serviceaccount.identity.isthmus.cluster.local"
MC = "isthmus-multicluster"



def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


@pytest.fixture(scope="module")
def east(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One embedded cluster with the control plane and the multicluster extension applied."""
    home = tmp_path_factory.mktemp("multicluster")
    c = Cluster(NAME, home, home / "kubeconfig", {"ISTHMUS_RESTART_BACKOFF": "1"})
    c.isthmus("cluster", "create", NAME, "--region", "syd1", "--nodes", "1")
    try:
        c.isthmus("certs", "create", "root", str(home / "root.crt"), str(home / "root.key"))
        c.isthmus("certs", "create", "issuer", str(home / "issuer.crt"), str(home / "issuer.key"),
                  "--ca", str(home / "root.crt"), "--ca-key", str(home / "root.key"))
        c.kubectl("apply", "-f", "-", input=c.isthmus("install", "--crds").stdout)
        c.kubectl("apply", "-f", "-", input=c.isthmus(
            "install", "--identity-trust-anchors-file", str(home / "root.crt"),
            "--identity-issuer-certificate-file", str(home / "issuer.crt"),
            "--identity-issuer-key-file", str(home / "issuer.key")).stdout)
        c.kubectl("-n", "isthmus", "wait", "--for=condition=Available", "deploy", "--all", "--timeout=120s",
                  timeout=150)
        out = c.isthmus(f"--context={NAME}", "multicluster", "install")
        assert out.stderr == ""
        c.kubectl("apply", "-f", "-", input=out.stdout)
        c.kubectl("-n", MC, "wait", "--for=condition=Available", "deploy/isthmus-gateway", "--timeout=90s",
                  timeout=120)
        yield c
    finally:
        if c.dir.exists():
            clusters.stop(c.dir)


def gateway_pod(c: Cluster) -> dict[str, Any]:
    pods = c.kjson("-n", MC, "get", "pods", "-l", "app=isthmus-gateway")["items"]
    assert len(pods) == 1, pods
    return dict(pods[0])


def ingress_ip(c: Cluster) -> str:
    def found() -> str | None:
        svc = c.kjson("-n", MC, "get", "svc", "isthmus-gateway")
        ingress = svc.get("status", {}).get("loadBalancer", {}).get("ingress") or []
        return ingress[0].get("ip") if ingress else None

    return wait_until("the gateway Service's load-balancer address", found)


def http_get(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def refused_count(pod_ip: str, reason: str) -> float:
    _, text = http_get(f"http://{pod_ip}:4191/metrics")
    for line in text.splitlines():
        if line.startswith("refused_connections_total{") and f'reason="{reason}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _or_none(call: Callable[[], bytes], good: Callable[[bytes], bool] = bool) -> bytes | None:
    """`call()`'s answer when it is good; None when it is not or the connection failed."""
    try:
        answer = call()
    except OSError:
        return None
    return answer if good(answer) else None


def through_gateway(pod_ip: str, creds: Credentials | None, anchors: bytes, authority: str, path: str) -> bytes:
    """One HTTP/1.1 request over mTLS to the gateway for `authority`; the raw response."""
    ctx = client_context(creds, anchors, expected_identity=GATEWAY_ID)
    host = authority.rsplit(":", 1)[0]
    with socket.create_connection((pod_ip, 4143), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=GATEWAY_ID) as conn:
        conn.sendall(f"isthmus/1 http {authority}\n".encode()
                     + f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return data


def test_the_gateway_is_a_proxy_pod_that_takes_mtls_only_and_routes_by_authority(east: Cluster) -> None:
    c = east
    pod = gateway_pod(c)
    (container,) = pod["spec"]["containers"]
    assert container["name"] == "isthmus-proxy"
    assert all(s["ready"] for s in pod["status"]["containerStatuses"])
    ip = pod["status"]["podIP"]
    assert http_get(f"http://{ip}:4191/ready") == (200, "ready\n")  # it holds its certificate

    svc = c.kjson("-n", MC, "get", "svc", "isthmus-gateway")
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["metadata"]["annotations"]["mirror.isthmus.io/gateway-identity"] == GATEWAY_ID
    probe_port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "mc-probe")
    anchors = (c.home / "root.crt").read_bytes()
    issuer = Credentials((c.home / "issuer.crt").read_bytes(), (c.home / "issuer.key").read_bytes())
    leaf = issue_leaf(issuer, "vote-bot.emojivoto.serviceaccount.identity.isthmus.cluster.local",
                      now=datetime.now(UTC))
    client = Credentials(leaf.cert_pem + issuer.cert_pem, leaf.key_pem)

    # The probe port answers /ready over mTLS, and only over mTLS.
    def probe(creds: Credentials | None) -> bytes:
        ctx = client_context(creds, anchors, expected_identity=GATEWAY_ID)
        with socket.create_connection((svc["spec"]["clusterIP"], probe_port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname=GATEWAY_ID) as conn:
            conn.sendall(b"GET /ready HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
        return data

    # the cluster's service proxy learns the endpoint shortly
    answer = wait_until("the gateway's probe port over mTLS", lambda: _or_none(lambda: probe(client)), timeout=20)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nready\n"), answer
    with pytest.raises(OSError):
        http_get(f"http://{svc['spec']['clusterIP']}:{probe_port}/ready")
    try:
        anonymous = probe(None)
    except OSError:  # TLS without a client certificate: refused with a TLS alert or a reset
        anonymous = b""
    assert anonymous == b""
    lb = ipaddress.ip_address(ingress_ip(c))
    net = ipaddress.ip_address(ip)
    assert lb.packed[:2] == net.packed[:2] and lb.packed[2] >= 192  # the cluster's 127.k.192-255 range

    # No TLS: refused. TLS without a client certificate: refused.
    before = refused_count(ip, "plain_to_gateway"), refused_count(ip, "tls_handshake")
    with socket.create_connection((ip, 4143), timeout=10) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: web-svc\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):  # closed, or reset with our request unread
            assert plain.recv(100) == b""
    try:
        answer = through_gateway(ip, None, anchors, "isthmus-gateway.isthmus-multicluster.svc.cluster.local:4191",
                                 "/ready")
    except OSError:  # the refusal may come as a TLS alert or a reset connection
        answer = b""
    assert answer == b""
    wait_until("both refusals in the gateway's metrics", lambda: (
        refused_count(ip, "plain_to_gateway") > before[0] and refused_count(ip, "tls_handshake") > before[1]))

    # A workload certificate from the shared trust anchor: the gateway resolves the authority in its
    # own cluster and forwards (here to its own admin port, through a Service made for it).
    c.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "gw-admin", "namespace": MC},
        "spec": {"selector": {"app": "isthmus-gateway"}, "ports": [{"port": 4191, "targetPort": 4191}]}}))
    answer = wait_until("the gateway forwarding to gw-admin", lambda: _or_none(lambda: through_gateway(
        ip, client, anchors, "gw-admin.isthmus-multicluster.svc.cluster.local:4191", "/ready"),
        lambda a: a.startswith(b"HTTP/1.1 200 ")), timeout=20)
    assert answer.endswith(b"\r\n\r\nready\n"), answer
    answer = through_gateway(ip, client, anchors, "nothere.default.svc.cluster.local:80", "/")
    assert answer.startswith(b"HTTP/1.1 503 "), answer
    assert b"service default/nothere not found" in answer

    # Printing and applying the install again changes nothing.
    again = c.kubectl("apply", "-f", "-", input=c.isthmus(f"--context={NAME}", "multicluster", "install").stdout)
    assert all(line.endswith(" unchanged") for line in again.stdout.splitlines()), again.stdout
    assert gateway_pod(c)["metadata"]["uid"] == pod["metadata"]["uid"]


def link_output(c: Cluster) -> list[dict[str, Any]]:
    out = c.isthmus(f"--context={NAME}", "multicluster", "link", "--cluster-name", NAME)
    assert out.stderr.startswith(f"note: the token in Secret cluster-credentials-{NAME} (from TokenRequest")
    return docs(out.stdout)


def can_i(kubeconfig: Path, *args: str) -> str:
    proc = subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), "auth", "can-i", *args],
                          capture_output=True, text=True, timeout=60)
    return proc.stdout.strip()


def exists(c: Cluster, kind: str, name: str, namespace: str | None = None) -> bool:
    args = (["-n", namespace] if namespace else []) + ["get", kind, name, "--ignore-not-found", "-o", "name"]
    return bool(c.kubectl(*args).stdout.strip())


def test_link_applies_and_its_credentials_read_services_but_nothing_else_and_unlink_removes_it(
        east: Cluster, tmp_path: Path) -> None:
    c = east
    objects = link_output(c)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert kinds[:2] == [("Secret", f"cluster-credentials-{NAME}"), ("Link", NAME)]
    applied = c.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects)).stdout
    assert len(applied.splitlines()) == len(objects), applied

    link = c.kjson("-n", MC, "get", "link", NAME)
    assert link["spec"]["gatewayAddress"] == ingress_ip(c)
    assert link["spec"]["gatewayIdentity"] == GATEWAY_ID
    assert link["spec"]["gatewayPort"] == 4143
    assert link["spec"]["probeSpec"]["port"] == 4191 and link["spec"]["probeSpec"]["period"] == "3s"
    assert link["spec"]["selector"] == {"matchLabels": {"mirror.isthmus.io/exported": "true"}}

    # The printed kubeconfig reaches the cluster's API as the remote-access service account.
    secret = next(o for o in objects if o["kind"] == "Secret")
    kubeconfig = tmp_path / "remote.kubeconfig"
    kubeconfig.write_bytes(base64.b64decode(secret["data"]["kubeconfig"]))
    assert can_i(kubeconfig, "list", "services", "--all-namespaces") == "yes"
    assert can_i(kubeconfig, "watch", "endpoints", "--all-namespaces") == "yes"
    assert can_i(kubeconfig, "get", "services/isthmus-gateway", "-n", MC) == "yes"
    assert can_i(kubeconfig, "get", "secrets", "-n", MC) == "no"
    assert can_i(kubeconfig, "list", "secrets", "--all-namespaces") == "no"
    assert can_i(kubeconfig, "create", "services", "-n", "default") == "no"
    assert can_i(kubeconfig, "list", "pods", "--all-namespaces") == "no"
    listed = subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), "-n", MC, "get", "svc", "isthmus-gateway",
                             "-o", "name"], capture_output=True, text=True, timeout=60)
    assert listed.stdout.strip() == "service/isthmus-gateway", listed.stderr
    refused = subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), "-n", "isthmus", "get", "secrets"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "Forbidden" in refused.stderr

    # Stand-ins for what a mirror made (the mirror itself stopped, so it neither adds nor removes any),
    # next to a Service that is nobody's mirror.
    c.kubectl("-n", MC, "scale", f"deploy/isthmus-service-mirror-{NAME}", "--replicas=0")
    wait_until("the service mirror's pods to go", lambda: not c.kjson(
        "-n", MC, "get", "pods", "-l", f"multicluster.isthmus.io/link={NAME}")["items"])
    c.kubectl("create", "namespace", "shop")
    labels = {"mirror.isthmus.io/mirrored-service": "true", "mirror.isthmus.io/cluster-name": NAME}
    c.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"web-{NAME}", "namespace": "shop",
                                                             "labels": labels},
         "spec": {"ports": [{"name": "http", "port": 8080}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": f"web-{NAME}", "namespace": "shop",
                                                               "labels": labels},
         "subsets": [{"addresses": [{"ip": ingress_ip(c)}], "ports": [{"name": "http", "port": 4143}]}]},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
         "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 8080}]}},
    ]))

    out = c.isthmus(f"--context={NAME}", "multicluster", "unlink", "--cluster-name", NAME)
    assert out.stderr == ""
    deleted = c.kubectl("delete", "-f", "-", input=out.stdout).stdout
    assert len(deleted.splitlines()) == len(objects) + 2, deleted
    for o in objects:
        assert not exists(c, o["kind"].lower(), o["metadata"]["name"], o["metadata"].get("namespace")), o["kind"]
    assert not exists(c, "service", f"web-{NAME}", "shop")
    assert not exists(c, "endpoints", f"web-{NAME}", "shop")
    assert exists(c, "service", "web", "shop")
    assert exists(c, "deploy", "isthmus-gateway", MC)  # the extension itself stays

    # Nothing left to unlink: refused, and kubectl is given nothing.
    again = c.isthmus(f"--context={NAME}", "multicluster", "unlink", "--cluster-name", NAME, check=False)
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr == (f"error: context '{NAME}' has no link to cluster '{NAME}': no Link {MC}/{NAME}, no "
                            f"service mirror and no mirrored services\n")


def test_link_refuses_a_cluster_without_the_multicluster_extension_and_prints_nothing(east: Cluster) -> None:
    c = east
    c.kubectl("-n", MC, "delete", "svc", "isthmus-gateway")
    try:
        out = c.isthmus(f"--context={NAME}", "multicluster", "link", "--cluster-name", NAME, check=False)
        assert out.returncode == 1 and out.stdout == ""
        assert out.stderr == (
            f"error: context '{NAME}' has no multicluster gateway (no Service {MC}/isthmus-gateway): install it "
            f"there first with `isthmus --context={NAME} multicluster install | kubectl --context={NAME} "
            f"apply -f -`\n")
    finally:
        c.kubectl("apply", "-f", "-", input=c.isthmus(f"--context={NAME}", "multicluster", "install").stdout)

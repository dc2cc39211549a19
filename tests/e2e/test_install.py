"""`isthmus install` end to end: the control plane as pods of an embedded cluster, and injection.

As in the Linkerd walkthrough: `isthmus install --crds | kubectl apply -f -`,
then `isthmus install --identity-... | kubectl apply -f -` with the real
kubectl; the identity, destination and proxy-injector pods run the
`isthmus` command from the cluster's PATH. The API server calls the
injector's webhook (AdmissionReview v1 over HTTPS) for every new pod; pods
of an annotated namespace (emojivoto) or template (`isthmus inject`) come up
with the proxy, get certificates from the identity pod and talk mTLS,
which their proxies' metrics show.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from isthmus.adapters.clusterdir import ClusterDir
from isthmus.components import cluster as clusters
from isthmus.core.network import HTTP_PROXY_PORT, ClusterNetwork
from tests.support.waiting import wait_until

from .conftest import OLD_KUBECTL, Cluster, _start

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EMOJIVOTO = ROOT / "deploy" / "emojivoto.yml"
BACKEND = ROOT / "tests" / "support" / "backend_app.py"
ISTHMUS = str(Path(sys.executable).parent / "isthmus")
T = TypeVar("T")



def isthmus(*args: str, cwd: Path | None = None, stdin: str | None = None) -> str:
    out = subprocess.run([ISTHMUS, *args], capture_output=True, text=True, cwd=cwd, input=stdin, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


class Installed:
    def __init__(self, cluster: Cluster, certs: Path) -> None:
        self.c = cluster
        self.certs = certs
        self.files = ["--identity-trust-anchors-file", str(certs / "root.crt"),
                      "--identity-issuer-certificate-file", str(certs / "issuer.crt"),
                      "--identity-issuer-key-file", str(certs / "issuer.key")]

    def apply_install(self, kubectl: str | None = None) -> str:
        """`isthmus install --crds | kubectl apply -f -` then the control plane; kubectl's output."""
        kw = {"binary": kubectl} if kubectl else {}
        out = self.c.kubectl("apply", "-f", "-", input=isthmus("install", "--crds"), **kw).stdout
        return out + self.c.kubectl("apply", "-f", "-", input=isthmus("install", *self.files), **kw).stdout

    def wait_available(self) -> None:
        self.c.kubectl("-n", "isthmus", "wait", "--for=condition=Available", "deploy", "--all",
                       "--timeout=90s", timeout=120)

    def pods(self, ns: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["-n", ns, "get", "pods"] + (["-l", selector] if selector else [])
        return list(self.c.kjson(*args)["items"])

    def proxy_logs(self, ns: str) -> str:
        return self.c.kubectl("-n", ns, "logs", "-l", "isthmus.io/workload-ns", "-c", "isthmus-proxy",
                              "--tail=20", check=False).stdout

    def apply_yaml(self, *objects: dict[str, Any]) -> None:
        self.c.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    home = tmp_path_factory.mktemp("install")
    c = _start(home, "mesh", "sfo3", extra_env={"ISTHMUS_RESTART_BACKOFF": "1"})
    try:
        certs = home / "certs"
        isthmus("certs", "create", "root", str(certs / "root.crt"), str(certs / "root.key"))
        isthmus("certs", "create", "issuer", str(certs / "issuer.crt"), str(certs / "issuer.key"),
                "--ca", str(certs / "root.crt"), "--ca-key", str(certs / "root.key"))
        inst = Installed(c, certs)
        inst.apply_install()
        inst.wait_available()
        yield inst
    finally:
        if c.dir.exists():
            clusters.stop(c.dir)


def ready(pod: dict[str, Any]) -> bool:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return bool(statuses) and all(s.get("ready") for s in statuses)


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
    return total


def admin(ip: str, path: str) -> str:
    out = subprocess.run(["curl", "-sS", "-m", "10", "--noproxy", "*", f"http://{ip}:4191{path}"],
                         capture_output=True, text=True, timeout=20)
    return out.stdout


def test_control_plane_runs_as_pods_and_reapplying_is_harmless(installed: Installed) -> None:
    c = installed.c
    pods = installed.pods("isthmus")
    assert sorted(p["spec"]["containers"][0]["command"][1] for p in pods) == [
        "destination", "identity", "proxy-injector"]
    assert all(ready(p) for p in pods), [p["status"] for p in pods]
    assert all(len(p["spec"]["containers"]) == 1 for p in pods)  # the control plane is not injected
    before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods}

    # Re-running install with the same files and applying it again (with an older kubectl this time).
    out = installed.apply_install(kubectl=OLD_KUBECTL)
    changed = [line for line in out.splitlines() if not line.endswith(" unchanged")]
    assert changed == [
        "secret/isthmus-proxy-injector-k8s-tls configured",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/isthmus-proxy-injector-webhook-config "
        "configured"], out
    installed.wait_available()
    after = {p["metadata"]["name"]: p["metadata"]["uid"] for p in installed.pods("isthmus")}
    assert after == before  # nothing restarted
    assert all(s["restartCount"] == 0 for p in installed.pods("isthmus")
               for s in p["status"]["containerStatuses"])

    # The injector moves to the new serving certificate: the webhook's new caBundle verifies it.
    hook = c.kjson("get", "mutatingwebhookconfiguration", "isthmus-proxy-injector-webhook-config")
    ca = base64.b64decode(hook["webhooks"][0]["clientConfig"]["caBundle"]).decode()
    injector_ip = installed.pods("isthmus", "isthmus.io/control-plane-component=proxy-injector")[0][
        "status"]["podIP"]

    def verifies() -> bool:
        ctx = ssl.create_default_context(cadata=ca)
        try:
            with socket.create_connection((injector_ip, 8443), timeout=5) as raw, \
                    ctx.wrap_socket(raw, server_hostname="isthmus-proxy-injector.isthmus.svc"):
                return True
        except ssl.SSLError:
            return False

    wait_until("the injector to serve the re-applied certificate", verifies, timeout=30)


def test_emojivoto_in_an_injected_namespace_is_meshed(installed: Installed) -> None:
    c = installed.c
    c.kubectl("create", "namespace", "emojivoto")
    c.kubectl("annotate", "namespace", "emojivoto", "isthmus.io/inject=enabled")
    c.kubectl("apply", "-f", str(EMOJIVOTO))
    c.kubectl("-n", "emojivoto", "wait", "--for=condition=Available", "deploy", "--all", "--timeout=90s",
              timeout=120)
    pods = wait_until("4 emojivoto pods, all Ready",
                      lambda: (lambda ps: ps if len(ps) == 4 and all(map(ready, ps)) else None)(
                          installed.pods("emojivoto")))
    for pod in pods:
        names = [ct["name"] for ct in pod["spec"]["containers"]]
        assert len(names) == 2 and names[1] == "isthmus-proxy", names
        assert pod["metadata"]["annotations"]["isthmus.io/proxy-version"]
        assert pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == names[0]
    ip = {p["metadata"]["labels"]["app"]: p["status"]["podIP"] for p in pods}

    def meshed_traffic() -> bool:
        bot, web = admin(ip["vote-bot"], "/metrics"), admin(ip["web"], "/metrics")
        return (metric(bot, "request_total", direction="outbound", tls="true", dst_service="web-svc",
                       server_id="web.emojivoto.serviceaccount.identity.isthmus.cluster.local") > 0
                and metric(web, "request_total", direction="inbound", tls="true",
                           client_id="vote-bot.emojivoto.serviceaccount.identity.isthmus.cluster.local") > 0
                and metric(web, "request_total", direction="outbound", tls="true", dst_service="voting-svc") > 0)

    wait_until("mTLS requests between the workloads in their proxies' metrics", meshed_traffic)

    net = ClusterNetwork(ClusterDir(c.home, c.name).load().index)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler(
        {"http": f"http://{net.proxy_ip}:{HTTP_PROXY_PORT}"}))

    def votes() -> int:
        with opener.open("http://web-svc.emojivoto/api/leaderboard", timeout=10) as r:
            return sum(int(e["votes"]) for e in json.loads(r.read()))

    first = wait_until("votes on the leaderboard", votes)
    wait_until("the leaderboard to keep growing", lambda: votes() > first)
    # `kubectl logs` without -c still shows the app's logs, not the proxy's.
    assert "proxy up:" in c.kubectl("-n", "emojivoto", "logs", "deploy/web", "-c", "isthmus-proxy").stdout
    assert "proxy up:" not in c.kubectl("-n", "emojivoto", "logs", "deploy/web").stdout


def backend(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                     {"name": "app", "image": "backend", "command": ["python3", str(BACKEND), "8080"],
                      "ports": [{"name": "http", "containerPort": 8080}]}]}}},
    }


def test_isthmus_inject_meshes_a_plain_namespace(installed: Installed) -> None:
    c = installed.c
    ns = f"t-{uuid.uuid4().hex[:8]}"
    c.kubectl("create", "namespace", ns)
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "server"},
               "spec": {"selector": {"app": "server"}, "ports": [{"name": "http", "port": 8080,
                                                                  "targetPort": "http"}]}}
    manifests = yaml.safe_dump_all([backend("server"), service, backend("client")])
    injected = isthmus("inject", stdin=manifests)
    c.kubectl("-n", ns, "apply", "-f", "-", input=injected)
    for name in ("server", "client"):
        c.kubectl("-n", ns, "rollout", "status", f"deploy/{name}", "--timeout=90s", timeout=120)
    pods = {p["metadata"]["labels"]["app"]: p for p in installed.pods(ns)}
    assert all(len(p["spec"]["containers"]) == 2 for p in pods.values())
    client_ip = pods["client"]["status"]["podIP"]
    out = subprocess.run(["curl", "-sS", "-m", "20", "-x", f"http://{client_ip}:4140",
                          f"http://server.{ns}:8080/"], capture_output=True, text=True, timeout=30)
    assert out.stdout.startswith("hello from server-"), out.stderr + installed.proxy_logs(ns)
    assert metric(admin(client_ip, "/metrics"), "request_total", direction="outbound", tls="true",
                  server_id=f"default.{ns}.serviceaccount.identity.isthmus.cluster.local") == 1
    c.kubectl("delete", "namespace", ns, "--wait=false")


def test_disabled_pods_and_an_unreachable_webhook_get_no_proxy(installed: Installed) -> None:
    c = installed.c
    ns = f"t-{uuid.uuid4().hex[:8]}"
    c.kubectl("create", "namespace", ns)
    c.kubectl("annotate", "namespace", ns, "isthmus.io/inject=enabled")

    def pod(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
                "spec": {"containers": [{"name": "app", "image": "x", "command": ["sleep", "300"]}]}}

    def containers(name: str) -> list[str]:
        return [ct["name"] for ct in c.kjson("-n", ns, "get", "pod", name)["spec"]["containers"]]

    installed.apply_yaml(pod("meshed"), pod("opted-out", {"isthmus.io/inject": "disabled"}))
    assert containers("meshed") == ["app", "isthmus-proxy"]
    assert containers("opted-out") == ["app"]

    # No injector: failurePolicy Ignore admits the pod as it came.
    c.kubectl("-n", "isthmus", "scale", "deploy/isthmus-proxy-injector", "--replicas=0")
    try:
        wait_until("the injector's endpoints to empty",
                   lambda: not (c.kjson("-n", "isthmus", "get", "endpoints", "isthmus-proxy-injector")
                                .get("subsets")))
        installed.apply_yaml(pod("while-away"))
        assert containers("while-away") == ["app"]
    finally:
        c.kubectl("-n", "isthmus", "scale", "deploy/isthmus-proxy-injector", "--replicas=1")
        installed.wait_available()
    installed.apply_yaml(pod("back"))
    assert containers("back") == ["app", "isthmus-proxy"]
    c.kubectl("delete", "namespace", ns, "--wait=false")


def test_generated_credentials_ha_and_uninstall(fresh_cluster: Cluster) -> None:
    c = fresh_cluster
    out = subprocess.run([ISTHMUS, "install", "--ha"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "need a shared trust anchor" in out.stderr
    c.kubectl("apply", "-f", "-", input=isthmus("install", "--crds"))
    c.kubectl("apply", "-f", "-", input=out.stdout)
    for name in ("isthmus-identity", "isthmus-destination", "isthmus-proxy-injector"):
        c.kubectl("-n", "isthmus", "rollout", "status", f"deploy/{name}", "--timeout=120s", timeout=150)
    deployments = c.kjson("-n", "isthmus", "get", "deploy")["items"]
    assert sorted((d["metadata"]["name"], d["status"]["readyReplicas"]) for d in deployments) == [
        ("isthmus-destination", 3), ("isthmus-identity", 3), ("isthmus-proxy-injector", 3)]
    gone = c.kubectl("delete", "-f", "-", input=isthmus("uninstall")).stdout
    assert 'namespace "isthmus" deleted' in gone
    assert "isthmus" not in c.kubectl("get", "namespaces").stdout
    leftovers = c.kubectl("get", "mutatingwebhookconfigurations,clusterroles,clusterrolebindings,crd",
                          "-o", "name").stdout
    assert "isthmus" not in leftovers, leftovers

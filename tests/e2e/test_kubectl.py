"""The real kubectl against an embedded cluster: every verb the walkthrough and the issue name.

Each test asserts on what kubectl prints and on what the cluster's store holds.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from pathlib import Path

import yaml

from isthmus.adapters import kubeconfig
from isthmus.components.cluster import api_url

from .conftest import KUBECTL, OLD_KUBECTL, Cluster, stored_object

DEPLOY = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: buoyantio/emojivoto-web:v11
        env:
        - {name: WEB_PORT, value: "8080"}
        ports:
        - {containerPort: 8080, name: http}
---
apiVersion: v1
kind: Service
metadata:
  name: web-svc
  labels: {app: web}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
"""


def test_nodes_carry_region_and_zone(west: Cluster) -> None:
    nodes = west.kjson("get", "nodes")["items"]
    assert [n["metadata"]["name"] for n in nodes] == ["west-node-1", "west-node-2", "west-node-3"]
    assert {n["metadata"]["labels"]["topology.kubernetes.io/region"] for n in nodes} == {"sfo3"}
    assert [n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in nodes] == ["sfo3-a", "sfo3-b", "sfo3-c"]
    out = west.kubectl("get", "nodes", "-L", "topology.kubernetes.io/region").stdout
    assert out.splitlines()[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "REGION"]
    assert "Ready" in out.splitlines()[1]


def test_create_namespace_is_stored_with_its_default_service_account(west: Cluster) -> None:
    out = west.kubectl("create", "namespace", "emojivoto-ns-test").stdout
    assert out.strip() == "namespace/emojivoto-ns-test created"
    ns = stored_object(west, "namespaces//emojivoto-ns-test")
    assert ns is not None and ns["status"]["phase"] == "Active"
    assert stored_object(west, "serviceaccounts/emojivoto-ns-test/default") is not None
    west.kubectl("delete", "namespace", "emojivoto-ns-test")
    assert stored_object(west, "namespaces//emojivoto-ns-test") is None
    assert stored_object(west, "serviceaccounts/emojivoto-ns-test/default") is None


def test_apply_then_reapply_a_changed_manifest(west: Cluster, ns: str) -> None:
    out = west.kubectl("-n", ns, "apply", "-f", "-", input=DEPLOY).stdout
    assert out.split("\n")[:2] == ["deployment.apps/web created", "service/web-svc created"]
    stored = stored_object(west, f"apps/deployments/{ns}/web")
    assert stored is not None and stored["metadata"]["generation"] == 1
    assert "kubectl.kubernetes.io/last-applied-configuration" in stored["metadata"]["annotations"]
    changed = DEPLOY.replace('value: "8080"', 'value: "9090"').replace("replicas: 1", "replicas: 2")
    out = west.kubectl("-n", ns, "apply", "-f", "-", input=changed).stdout
    assert out.split("\n")[:2] == ["deployment.apps/web configured", "service/web-svc unchanged"]
    stored = stored_object(west, f"apps/deployments/{ns}/web")
    assert stored is not None
    assert stored["spec"]["replicas"] == 2 and stored["metadata"]["generation"] == 2
    assert stored["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "WEB_PORT", "value": "9090"}]
    svc = stored_object(west, f"services/{ns}/web-svc")
    assert svc is not None and svc["spec"]["clusterIP"].startswith("127.")
    assert svc["status"]["loadBalancer"]["ingress"][0]["ip"].startswith("127.")


def test_get_output_formats(west: Cluster, ns: str) -> None:
    west.kubectl("-n", ns, "apply", "-f", "-", input=DEPLOY)
    svc = stored_object(west, f"services/{ns}/web-svc")
    assert svc is not None
    cluster_ip = svc["spec"]["clusterIP"]
    lb_ip = svc["status"]["loadBalancer"]["ingress"][0]["ip"]
    as_yaml = yaml.safe_load(west.kubectl("-n", ns, "get", "svc", "web-svc", "-o", "yaml").stdout)
    assert as_yaml["spec"]["clusterIP"] == cluster_ip and as_yaml["kind"] == "Service"
    as_json = west.kjson("-n", ns, "get", "svc", "web-svc")
    assert as_json["metadata"]["uid"] == svc["metadata"]["uid"]
    jp = west.kubectl("-n", ns, "get", "svc", "web-svc", "-o", "jsonpath={.spec.clusterIP}").stdout
    assert jp == cluster_ip
    cc = west.kubectl("-n", ns, "get", "svc", "web-svc", "-o",
                      "custom-columns=GATEWAY_IP:.status.loadBalancer.ingress[*].ip").stdout
    assert cc.split() == ["GATEWAY_IP", lb_ip]
    wide = west.kubectl("-n", ns, "get", "svc", "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"]
    assert wide[1].split()[:5] == ["web-svc", "LoadBalancer", cluster_ip, lb_ip, "80/TCP"]
    assert wide[1].split()[-1] == "app=web"
    west.kubectl("-n", ns, "create", "configmap", "other", "--from-literal=a=b")
    west.kubectl("-n", ns, "label", "configmap", "other", "tier=x")
    listed = west.kubectl("-n", ns, "get", "cm", "-l", "tier=x", "-o", "name").stdout.split()
    assert listed == ["configmap/other"]
    assert west.kubectl("-n", ns, "get", "cm", "-l", "tier in (y,z)", "-o", "name").stdout.strip() == ""
    deploys = west.kubectl("-n", ns, "get", "deploy", "-o", "wide").stdout.splitlines()
    assert deploys[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES",
                                  "SELECTOR"]


def test_get_watch_streams_changes(west: Cluster, ns: str) -> None:
    proc = subprocess.Popen([KUBECTL, "--context=west", "-n", ns, "get", "configmaps", "-w",
                             "--output-watch-events", "--no-headers"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=west.env())
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(" ".join(line.split()[:3]))

    threading.Thread(target=read, daemon=True).start()
    try:
        time.sleep(1.0)
        west.kubectl("-n", ns, "create", "configmap", "watched", "--from-literal=x=1")
        west.kubectl("-n", ns, "patch", "configmap", "watched", "--type=merge", "-p", '{"data":{"x":"2","y":"3"}}')
        west.kubectl("-n", ns, "delete", "configmap", "watched")
        seen = [lines.get(timeout=20) for _ in range(3)]
    finally:
        proc.terminate()
        proc.wait(10)
    assert seen == ["ADDED watched 1", "MODIFIED watched 2", "DELETED watched 2"]


def test_label_annotate_patch_scale_set_env_delete(west: Cluster, ns: str) -> None:
    west.kubectl("-n", ns, "apply", "-f", "-", input=DEPLOY)
    key = f"apps/deployments/{ns}/web"
    west.kubectl("-n", ns, "label", "deploy", "web", "tier=frontend")
    west.kubectl("-n", ns, "annotate", "deploy", "web", "owner=team-a")
    d = stored_object(west, key)
    assert d is not None
    assert d["metadata"]["labels"] == {"app": "web", "tier": "frontend"}
    assert d["metadata"]["annotations"]["owner"] == "team-a"
    west.kubectl("-n", ns, "label", "deploy", "web", "tier-")
    d = stored_object(west, key)
    assert d is not None and "tier" not in d["metadata"]["labels"]

    west.kubectl("-n", ns, "patch", "deploy", "web", "-p",
                 '{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"EXTRA","value":"1"}]}]}}}}')
    d = stored_object(west, key)
    assert d is not None
    assert d["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "EXTRA", "value": "1"}, {"name": "WEB_PORT", "value": "8080"}]
    west.kubectl("-n", ns, "patch", "deploy", "web", "--type=merge", "-p", '{"spec":{"paused":true}}')
    west.kubectl("-n", ns, "patch", "deploy", "web", "--type=json",
                 "-p", '[{"op":"replace","path":"/spec/revisionHistoryLimit","value":3}]')
    d = stored_object(west, key)
    assert d is not None and d["spec"]["paused"] is True and d["spec"]["revisionHistoryLimit"] == 3

    out = west.kubectl("-n", ns, "scale", "deploy", "web", "--replicas=4").stdout
    assert out.strip() == "deployment.apps/web scaled"
    d = stored_object(west, key)
    assert d is not None and d["spec"]["replicas"] == 4

    gen = d["metadata"]["generation"]
    west.kubectl("-n", ns, "set", "env", "deployment/web", "WEB_HOST=127.1.128.9:80")
    d = stored_object(west, key)
    assert d is not None and d["metadata"]["generation"] == gen + 1
    env = {e["name"]: e["value"] for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env == {"EXTRA": "1", "WEB_PORT": "8080", "WEB_HOST": "127.1.128.9:80"}

    out = west.kubectl("-n", ns, "delete", "deploy", "web").stdout
    assert out.strip() == 'deployment.apps "web" deleted'
    assert stored_object(west, key) is None


def test_auth_can_i_for_admin_and_a_service_account(west: Cluster, ns: str, tmp_path: Path) -> None:
    assert west.kubectl("auth", "can-i", "create", "deployments", "-n", ns).stdout.strip() == "yes"
    west.kubectl("-n", ns, "create", "serviceaccount", "reader")
    token = west.kubectl("-n", ns, "create", "token", "reader").stdout.strip()
    # A kubeconfig that holds only the service account's token (no client certificate).
    cdir = west.dir
    sa_config = tmp_path / "reader.kubeconfig"
    sa_config.write_text(yaml.safe_dump(kubeconfig.token_kubeconfig(
        name="west", server=api_url(cdir.load()), ca_pem=(cdir.pki_dir / "ca.crt").read_bytes(),
        token=token, user="reader")))

    def as_sa(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([KUBECTL, f"--kubeconfig={sa_config}", *args], text=True, capture_output=True,
                              timeout=60)

    no = as_sa("auth", "can-i", "list", "services", "-n", ns)
    assert no.stdout.strip() == "no" and no.returncode == 1
    west.kubectl("-n", ns, "create", "role", "svc-reader", "--verb=get,list,watch", "--resource=services")
    west.kubectl("-n", ns, "create", "rolebinding", "reader", "--role=svc-reader", f"--serviceaccount={ns}:reader")
    assert as_sa("auth", "can-i", "list", "services", "-n", ns).stdout.strip() == "yes"
    assert as_sa("auth", "can-i", "delete", "services", "-n", ns).stdout.strip() == "no"
    assert as_sa("auth", "can-i", "list", "services", "-n", "default").stdout.strip() == "no"
    # And the grant is real: the token lists services, and is refused secrets.
    assert as_sa("-n", ns, "get", "services", "-o", "name").returncode == 0
    refused = as_sa("-n", ns, "get", "secrets")
    assert refused.returncode == 1
    assert f'User "system:serviceaccount:{ns}:reader" cannot list resource "secrets"' in refused.stderr


def test_older_kubectl_works_too(west: Cluster, ns: str) -> None:
    assert Path(OLD_KUBECTL).exists(), f"{OLD_KUBECTL} is part of this machine's kit"
    out = west.kubectl("-n", ns, "apply", "-f", "-", input=DEPLOY, binary=OLD_KUBECTL).stdout
    assert "deployment.apps/web created" in out
    got = json.loads(west.kubectl("-n", ns, "get", "deploy", "web", "-o", "json", binary=OLD_KUBECTL).stdout)
    assert got["spec"]["template"]["spec"]["containers"][0]["name"] == "web"
    west.kubectl("-n", ns, "scale", "deploy", "web", "--replicas=2", binary=OLD_KUBECTL)
    d = stored_object(west, f"apps/deployments/{ns}/web")
    assert d is not None and d["spec"]["replicas"] == 2
    west.kubectl("-n", ns, "delete", "svc", "web-svc", binary=OLD_KUBECTL)
    assert stored_object(west, f"services/{ns}/web-svc") is None


def test_custom_resources_are_served_once_their_crd_is_stored(west: Cluster, ns: str) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.test.isthmus.io"},
        "spec": {"group": "test.isthmus.io", "scope": "Namespaced",
                 "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "shortNames": ["gd"]},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "subresources": {"status": {}},
                               "additionalPrinterColumns": [{"name": "Port", "type": "integer",
                                                             "jsonPath": ".spec.port"}],
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                   "spec": {"type": "object", "required": ["port"], "properties": {
                                       "port": {"type": "integer", "minimum": 1, "maximum": 65535}}},
                                   "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]}}
    west.kubectl("apply", "-f", "-", input=json.dumps(crd))
    west.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(
        {"apiVersion": "test.isthmus.io/v1", "kind": "Gadget", "metadata": {"name": "g1"}, "spec": {"port": 4143}}))
    table = west.kubectl("-n", ns, "get", "gd").stdout.splitlines()
    assert table[0].split() == ["NAME", "PORT"] and table[1].split() == ["g1", "4143"]
    stored = stored_object(west, f"test.isthmus.io/gadgets/{ns}/g1")
    assert stored is not None and stored["spec"] == {"port": 4143}
    west.kubectl("-n", ns, "patch", "gadget", "g1", "--type=merge", "-p", '{"spec":{"port":80}}')
    stored = stored_object(west, f"test.isthmus.io/gadgets/{ns}/g1")
    assert stored is not None and stored["spec"] == {"port": 80}


def test_endpoints_written_before_their_selectorless_service_are_kept(west: Cluster, ns: str) -> None:
    """Endpoints of a Service without selector (hand-written, or a multicluster mirror's) belong to
    whoever wrote them: the endpoints controller neither deletes them while their Service is not
    there yet nor after it appears; it removes them only when the Service is deleted."""
    west.kubectl("-n", ns, "apply", "-f", "-", input=(
        "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: external\nsubsets:\n"
        "- addresses: [{ip: 127.200.64.250}]\n  ports: [{name: http, port: 8080}]\n"))
    time.sleep(1)  # give the controller the chance it used to take
    west.kubectl("-n", ns, "apply", "-f", "-", input=(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: external\nspec:\n"
        "  ports: [{name: http, port: 80}]\n"))
    time.sleep(1)
    ep = west.kjson("-n", ns, "get", "endpoints", "external")
    assert ep["subsets"][0]["addresses"][0]["ip"] == "127.200.64.250"
    west.kubectl("-n", ns, "delete", "service", "external")
    deadline = time.monotonic() + 20
    while west.kubectl("-n", ns, "get", "endpoints", "external", check=False).returncode == 0:
        assert time.monotonic() < deadline, "the Endpoints outlived their Service"
        time.sleep(0.2)

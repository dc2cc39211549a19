"""Bad input gets a clear Kubernetes Status and changes nothing in the store.

Raw requests go through the real curl with the admin's certificate (or with
none, or a forged token); the rest through the real kubectl.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from isthmus.adapters.clusterdir import ClusterDir
from isthmus.components.cluster import api_url

from .conftest import Cluster, store_state


def curl(c: Cluster, method: str, path: str, body: bytes | None = None, *, content_type: str = "application/json",
         auth: str = "admin", token: str = "") -> tuple[int, dict[str, Any]]:
    pki = ClusterDir(c.home, c.name).pki_dir
    url = api_url(ClusterDir(c.home, c.name).load()) + path
    cmd = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method, "--cacert", str(pki / "ca.crt"),
           "-H", f"Content-Type: {content_type}"]
    if auth == "admin":
        cmd += ["--cert", str(pki / "admin.crt"), "--key", str(pki / "admin.key")]
    elif auth == "token":
        cmd += ["-H", f"Authorization: Bearer {token}"]
    with tempfile.NamedTemporaryFile() as f:
        if body is not None:
            f.write(body)
            f.flush()
            cmd += ["--data-binary", f"@{f.name}"]
        proc = subprocess.run([*cmd, url], capture_output=True, timeout=30)
    text, _, code = proc.stdout.decode().rpartition("\n")
    return int(code), json.loads(text) if text.strip() else {}


def unchanged(c: Cluster, before: tuple[int, dict[str, int]]) -> None:
    assert store_state(c) == before, "the store changed"


def test_malformed_json_is_400(west: Cluster, ns: str) -> None:
    before = store_state(west)
    code, status = curl(west, "POST", f"/api/v1/namespaces/{ns}/configmaps", b'{"apiVersion": "v1", "kind": ')
    assert code == 400 and status["kind"] == "Status" and status["reason"] == "BadRequest"
    assert "not valid JSON" in status["message"]
    unchanged(west, before)


def test_malformed_yaml_is_refused(west: Cluster, ns: str) -> None:
    before = store_state(west)
    code, status = curl(west, "POST", f"/api/v1/namespaces/{ns}/configmaps", b"kind: ConfigMap\n  bad: [unclosed",
                        content_type="application/yaml")
    assert code == 400 and "not valid YAML" in status["message"]
    proc = west.kubectl("-n", ns, "apply", "-f", "-", input="apiVersion: v1\nkind: ConfigMap\n metadata: [", check=False)
    assert proc.returncode != 0 and "yaml" in proc.stderr.lower()
    unchanged(west, before)


def test_unknown_kind_or_api_version(west: Cluster, ns: str) -> None:
    before = store_state(west)
    proc = west.kubectl("-n", ns, "apply", "-f", "-", check=False,
                        input="apiVersion: nowhere.io/v1\nkind: Widget\nmetadata: {name: w}\n")
    assert proc.returncode != 0
    assert 'no matches for kind "Widget" in version "nowhere.io/v1"' in proc.stderr
    code, status = curl(west, "POST", f"/apis/nowhere.io/v1/namespaces/{ns}/widgets", b'{"kind":"Widget"}')
    assert code == 404 and status["message"] == "the server could not find the requested resource"
    code, status = curl(west, "POST", f"/api/v1/namespaces/{ns}/configmaps",
                        b'{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}')
    assert code == 400 and "does not match the expected kind" in status["message"]
    unchanged(west, before)


def test_invalid_names_are_422(west: Cluster, ns: str) -> None:
    before = store_state(west)
    proc = west.kubectl("create", "namespace", "Bad_Name", check=False)
    assert proc.returncode != 0
    assert 'Namespace "Bad_Name" is invalid' in proc.stderr and "RFC 1123 label" in proc.stderr
    code, status = curl(west, "POST", f"/api/v1/namespaces/{ns}/configmaps",
                        b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"-x-"}}')
    assert code == 422 and status["reason"] == "Invalid" and "RFC 1123 subdomain" in status["message"]
    unchanged(west, before)


def test_body_over_3_mib_is_413(west: Cluster, ns: str) -> None:
    before = store_state(west)
    big = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
                      "data": {"x": "a" * (3 * 1024 * 1024 + 10)}}).encode()
    code, status = curl(west, "POST", f"/api/v1/namespaces/{ns}/configmaps", big)
    assert code == 413 and status["message"] == "Request entity too large: limit is 3145728"
    unchanged(west, before)


def test_missing_or_forged_credentials_are_401(west: Cluster, ns: str) -> None:
    before = store_state(west)
    body = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"anon"}}'
    code, status = curl(west, "POST", f"/api/v1/namespaces/{ns}/configmaps", body, auth="none")
    assert code == 401 and status["message"] == "Unauthorized"
    code, _ = curl(west, "GET", "/api/v1/namespaces", auth="none")
    assert code == 401
    # A token signed by some other key, claiming to be the namespace's default service account.
    forged = jwt.encode({"iss": "https://isthmus.west.cluster.local", "sub": f"system:serviceaccount:{ns}:default",
                         "aud": ["https://kubernetes.default.svc"], "exp": 4102444800,
                         "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": "default"}}},
                        ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
    code, status = curl(west, "POST", f"/api/v1/namespaces/{ns}/configmaps", body, auth="token", token=forged)
    assert code == 401 and status["reason"] == "Unauthorized"
    code, _ = curl(west, "GET", "/api", auth="token", token="not-a-jwt")
    assert code == 401
    unchanged(west, before)


def test_stale_resource_version_is_409(west: Cluster, ns: str) -> None:
    west.kubectl("-n", ns, "create", "configmap", "cm", "--from-literal=a=1")
    old = west.kjson("-n", ns, "get", "configmap", "cm")
    west.kubectl("-n", ns, "patch", "configmap", "cm", "--type=merge", "-p", '{"data":{"a":"2"}}')
    before = store_state(west)
    old["data"] = {"a": "3"}
    proc = west.kubectl("-n", ns, "replace", "-f", "-", input=json.dumps(old), check=False)
    assert proc.returncode != 0
    assert 'Operation cannot be fulfilled on configmaps "cm": the object has been modified' in proc.stderr
    unchanged(west, before)


def test_patch_that_does_not_apply_is_refused(west: Cluster, ns: str) -> None:
    west.kubectl("-n", ns, "create", "configmap", "cm", "--from-literal=a=1")
    before = store_state(west)
    proc = west.kubectl("-n", ns, "patch", "configmap", "cm", "--type=json",
                        "-p", '[{"op":"replace","path":"/data/missing/deeper","value":"x"}]', check=False)
    assert proc.returncode != 0 and "the patch could not be applied" in proc.stderr
    proc = west.kubectl("-n", ns, "patch", "configmap", "cm", "--type=json",
                        "-p", '[{"op":"test","path":"/data/a","value":"nope"}]', check=False)
    assert proc.returncode != 0 and "the patch could not be applied" in proc.stderr
    code, status = curl(west, "PATCH", f"/api/v1/namespaces/{ns}/configmaps/cm", b'{"data": [1',
                        content_type="application/merge-patch+json")
    assert code == 400 and "not valid JSON" in status["message"]
    unchanged(west, before)


@pytest.fixture
def link_crd(west: Cluster) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "probes.test.isthmus.io"},
        "spec": {"group": "test.isthmus.io", "scope": "Namespaced",
                 "names": {"plural": "probes", "singular": "probe", "kind": "Probe"},
                 "versions": [{"name": "v1alpha1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "properties": {"spec": {"type": "object", "required": ["gatewayPort"],
                                                               "properties": {
                         "gatewayPort": {"type": "integer"},
                         "period": {"type": "string", "pattern": "^[0-9]+s$"}}}}}}}]}}
    west.kubectl("apply", "-f", "-", input=json.dumps(crd))


def test_custom_object_violating_its_schema_is_422(west: Cluster, ns: str, link_crd: None) -> None:
    before = store_state(west)
    bad = {"apiVersion": "test.isthmus.io/v1alpha1", "kind": "Probe", "metadata": {"name": "p"},
           "spec": {"gatewayPort": "4143", "period": "3 seconds"}}
    proc = west.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(bad), check=False)
    assert proc.returncode != 0
    assert 'The Probe "p" is invalid' in proc.stderr
    assert '* spec.gatewayPort: Invalid value: "string"' in proc.stderr
    assert "* spec.period: Invalid value: \"3 seconds\"" in proc.stderr
    missing = {**bad, "spec": {"period": "3s"}}
    proc = west.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(missing), check=False)
    assert proc.returncode != 0 and "gatewayPort" in proc.stderr
    unchanged(west, before)

"""Mutating admission webhooks on the embedded cluster, driven with the real kubectl.

The test runs a small HTTPS webhook server of its own (in a thread, on
127.0.0.57) with a certificate for `hook.<namespace>.svc` from a CA it makes.
The cluster reaches it the way it would reach a webhook pod: a Service without
selector and hand-written Endpoints pointing at the server, named in a
MutatingWebhookConfiguration applied with kubectl. Each configuration selects
only this module's namespaces (by label), so the other tests sharing the
cluster never meet it, and is deleted when its test ends. What is stored is
read straight from the cluster's SQLite file.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from isthmus.adapters.pki import KeyPair, issue, new_ca

from .conftest import Cluster, store_state, stored_object

HOOK_IP = "127.0.0.57"
NOW = dt.datetime.now(dt.UTC)
CA = new_ca("admission-test-ca", now=NOW)
OTHER_CA = new_ca("not-the-webhooks-ca", now=NOW)
ENV = {"name": "ADMITTED_BY", "value": "test-webhook"}


class Webhook:
    """An HTTPS admission webhook in a thread: `/mutate` labels pods and adds an env var, `/deny` refuses."""

    def __init__(self, cert: KeyPair, tmp: Path) -> None:
        self.reviews: list[dict[str, Any]] = []
        (tmp / "hook.crt").write_bytes(cert.cert_pem)
        (tmp / "hook.key").write_bytes(cert.key_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tmp / "hook.crt", tmp / "hook.key")
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.reviews.append({"path": self.path, **review})
                body = json.dumps(hook.answer(self.path.split("?")[0], review)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # refused handshakes (a caBundle that does not match) are expected

        self.server = Server((HOOK_IP, 0), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def answer(path: str, review: dict[str, Any]) -> dict[str, Any]:
        req = review["request"]
        response: dict[str, Any] = {"uid": req["uid"], "allowed": True}
        if path == "/deny":
            response = {"uid": req["uid"], "allowed": False, "status": {
                "code": 403, "reason": "Forbidden", "message": "pods need the label owner to be set"}}
        elif path == "/mutate":
            container = req["object"]["spec"]["containers"][0]
            ops = [{"op": "add", "path": "/metadata/labels/admitted", "value": "true"}]
            if "labels" not in req["object"]["metadata"]:
                ops = [{"op": "add", "path": "/metadata/labels", "value": {"admitted": "true"}}]
            if "env" in container:
                ops.append({"op": "add", "path": "/spec/containers/0/env/-", "value": ENV})
            else:
                ops.append({"op": "add", "path": "/spec/containers/0/env", "value": [ENV]})
            response |= {"patchType": "JSONPatch", "patch": base64.b64encode(json.dumps(ops).encode()).decode(),
                         "warnings": ["the test webhook added ADMITTED_BY"]}
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}

    def seen(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.reviews if (r["request"]["object"]["metadata"].get("name") or "").startswith(name)]


@pytest.fixture(scope="module")
def hook_ns(west: Cluster) -> Iterator[str]:
    """The namespace of the webhook's Service and Endpoints."""
    name = f"hooks-{uuid.uuid4().hex[:6]}"
    west.kubectl("create", "namespace", name)
    yield name
    west.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def webhook(west: Cluster, hook_ns: str) -> Iterator[Webhook]:
    with tempfile.TemporaryDirectory() as tmp:
        server = Webhook(issue(CA, "hook", dns=(f"hook.{hook_ns}.svc",), server=True, now=NOW), Path(tmp))
        server.thread.start()
        with socket.socket() as s:  # a port nothing listens on, for the unreachable webhook
            s.bind((HOOK_IP, 0))
            closed_port = s.getsockname()[1]
        west.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": hook_ns},
             "spec": {"ports": [{"name": "https", "port": 443, "targetPort": "webhook"}]}}
            for name in ("hook", "gone")] + [
            {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": hook_ns},
             "subsets": [{"addresses": [{"ip": HOOK_IP}], "ports": [{"name": "https", "port": port}]}]}
            for name, port in (("hook", server.port), ("gone", closed_port))]}))
        yield server
        server.server.shutdown()
        server.server.server_close()
        server.thread.join(timeout=10)


@pytest.fixture
def label() -> str:
    """A label value only this test's namespaces carry: its webhooks select nothing else."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def namespaces(west: Cluster, label: str) -> Iterator[Callable[[bool], str]]:
    made: list[str] = []

    def make(selected: bool = True) -> str:
        name = f"adm-{uuid.uuid4().hex[:8]}"
        labels = {"admission-test": label} if selected else {}
        west.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "Namespace",
                                                           "metadata": {"name": name, "labels": labels}}))
        made.append(name)
        return name

    yield make
    for name in made:
        west.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def configure(west: Cluster, hook_ns: str, label: str) -> Iterator[Callable[..., str]]:
    """Apply a webhook configuration selecting this test's namespaces; deleted (with kubectl) at the end."""
    names: set[tuple[str, str]] = set()

    def apply(path: str = "/mutate", *, service: str = "hook", ca: bytes = CA.cert_pem,
              kind: str = "MutatingWebhookConfiguration", **over: Any) -> str:
        name = f"adm-{label}"
        hook: dict[str, Any] = {
            "name": f"{path.strip('/')}.admission-test.isthmus.io",
            "admissionReviewVersions": ["v1"], "sideEffects": "None", "timeoutSeconds": 5,
            "clientConfig": {"service": {"namespace": hook_ns, "name": service, "path": path},
                             "caBundle": base64.b64encode(ca).decode()},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {"admission-test": label}},
            "objectSelector": {"matchExpressions": [{"key": "admission", "operator": "NotIn",
                                                     "values": ["skip"]}]},
            **over,
        }
        west.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
            "metadata": {"name": name}, "webhooks": [hook]}))
        names.add((kind.lower(), name))
        return name

    yield apply
    for kind, name in names:
        west.kubectl("delete", kind, name)
        assert stored_object(west, f"admissionregistration.k8s.io/{kind}s//{name}") is None


def pod(name: str, labels: dict[str, str] | None = None) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {"app": name}},
                       "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "300"],
                                                "env": [{"name": "GREETING", "value": "hi"}]}]}})


def stored_pod(c: Cluster, ns: str, name: str) -> dict[str, Any] | None:
    return stored_object(c, f"pods/{ns}/{name}")


# --------------------------------------------------------------------------- the webhook's patch


def test_a_pod_in_a_selected_namespace_is_stored_as_the_webhook_patched_it(
        west: Cluster, webhook: Webhook, namespaces: Callable[[bool], str], configure: Callable[..., str]) -> None:
    ns = namespaces(True)
    config = configure()
    stored_config = west.kjson("get", "mutatingwebhookconfiguration", config)
    assert stored_config["webhooks"][0]["failurePolicy"] == "Fail"  # Kubernetes' defaults are filled in
    assert stored_config["webhooks"][0]["clientConfig"]["service"]["port"] == 443
    assert config in west.kubectl("get", "mutatingwebhookconfigurations").stdout

    proc = west.kubectl("-n", ns, "apply", "-f", "-", input=pod("web"))
    assert "pod/web created" in proc.stdout
    assert "Warning: the test webhook added ADMITTED_BY" in proc.stderr
    stored = stored_pod(west, ns, "web")
    assert stored is not None
    assert stored["metadata"]["labels"] == {"app": "web", "admitted": "true"}
    assert stored["spec"]["containers"][0]["env"] == [{"name": "GREETING", "value": "hi"}, ENV]
    assert west.kjson("-n", ns, "get", "pod", "web")["metadata"]["labels"]["admitted"] == "true"

    [review] = webhook.seen("web")
    req = review["request"]
    assert review["path"] == "/mutate?timeout=5s"
    assert (req["operation"], req["namespace"], req["name"]) == ("CREATE", ns, "web")
    assert req["kind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert req["resource"] == {"group": "", "version": "v1", "resource": "pods"}
    assert req["userInfo"]["username"] == "admin" and "system:masters" in req["userInfo"]["groups"]
    assert req["options"]["kind"] == "CreateOptions" and req["dryRun"] is False
    assert "kubectl.kubernetes.io/last-applied-configuration" in req["object"]["metadata"]["annotations"]


def test_a_server_dry_run_shows_the_patch_and_stores_nothing(
        west: Cluster, webhook: Webhook, namespaces: Callable[[bool], str], configure: Callable[..., str]) -> None:
    ns = namespaces(True)
    configure()
    before = store_state(west)
    out = json.loads(west.kubectl("-n", ns, "create", "--dry-run=server", "-o", "json", "-f", "-",
                                  input=pod("dry")).stdout)
    assert out["metadata"]["labels"]["admitted"] == "true"
    assert webhook.seen("dry")[0]["request"]["dryRun"] is True
    assert store_state(west) == before


def test_objects_outside_the_selectors_are_untouched(
        west: Cluster, webhook: Webhook, namespaces: Callable[[bool], str], configure: Callable[..., str]) -> None:
    selected, other = namespaces(True), namespaces(False)
    configure()
    west.kubectl("-n", other, "apply", "-f", "-", input=pod("elsewhere"))
    west.kubectl("-n", selected, "apply", "-f", "-", input=pod("opted-out", {"app": "x", "admission": "skip"}))
    west.kubectl("-n", selected, "create", "configmap", "settings", "--from-literal=a=b")
    assert stored_pod(west, other, "elsewhere")["metadata"]["labels"] == {"app": "elsewhere"}  # type: ignore[index]
    opted_out = stored_pod(west, selected, "opted-out")
    assert opted_out is not None and "admitted" not in opted_out["metadata"]["labels"]
    assert opted_out["spec"]["containers"][0]["env"] == [{"name": "GREETING", "value": "hi"}]
    assert stored_object(west, f"configmaps/{selected}/settings")["data"] == {"a": "b"}  # type: ignore[index]
    assert webhook.seen("elsewhere") == [] and webhook.seen("opted-out") == []


def test_a_deployments_pods_pass_through_the_webhook(
        west: Cluster, webhook: Webhook, namespaces: Callable[[bool], str], configure: Callable[..., str]) -> None:
    ns = namespaces(True)
    configure()
    west.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "sleeper"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "sleeper"}},
                 "template": {"metadata": {"labels": {"app": "sleeper"}},
                              "spec": {"containers": [{"name": "main", "image": "busybox",
                                                       "command": ["sleep", "300"]}]}}}}))
    deadline = time.monotonic() + 60
    pods: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(pods) < 2:
        pods = west.kjson("-n", ns, "get", "pods", "-l", "app=sleeper")["items"]
        time.sleep(0.2)
    assert len(pods) == 2, pods
    for p in pods:
        stored = stored_pod(west, ns, p["metadata"]["name"])
        assert stored is not None
        assert stored["metadata"]["labels"]["admitted"] == "true"
        assert stored["spec"]["containers"][0]["env"] == [ENV]
    users = {r["request"]["userInfo"]["username"] for r in webhook.seen("sleeper-")}
    assert users == {"system:isthmus-controllers"}  # created by the deployment controller through the API
    template = stored_object(west, f"apps/deployments/{ns}/sleeper")["spec"]["template"]  # type: ignore[index]
    assert "admitted" not in template["metadata"]["labels"]  # the rules name pods only


# --------------------------------------------------------------------------- refusals


def test_a_denial_shows_the_webhooks_message_and_stores_nothing(
        west: Cluster, webhook: Webhook, namespaces: Callable[[bool], str], configure: Callable[..., str]) -> None:
    ns = namespaces(True)
    configure("/deny")
    before = store_state(west)
    proc = west.kubectl("-n", ns, "apply", "-f", "-", input=pod("refused"), check=False)
    assert proc.returncode != 0
    assert 'admission webhook "deny.admission-test.isthmus.io" denied the request: pods need the label owner to ' \
           "be set" in proc.stderr
    assert "Error from server (Forbidden)" in proc.stderr
    assert store_state(west) == before
    assert stored_pod(west, ns, "refused") is None


def test_a_validating_webhook_refuses_after_the_mutating_ones(
        west: Cluster, webhook: Webhook, namespaces: Callable[[bool], str], configure: Callable[..., str]) -> None:
    ns = namespaces(True)
    configure()
    config = configure("/deny", kind="ValidatingWebhookConfiguration")
    assert config in west.kubectl("get", "validatingwebhookconfigurations").stdout
    before = store_state(west)
    proc = west.kubectl("-n", ns, "apply", "-f", "-", input=pod("checked"), check=False)
    assert proc.returncode != 0
    assert 'admission webhook "deny.admission-test.isthmus.io" denied the request: pods need the label owner to ' \
           "be set" in proc.stderr
    assert store_state(west) == before
    mutated, validated = webhook.seen("checked")
    assert mutated["path"].startswith("/mutate") and validated["path"].startswith("/deny")
    final = validated["request"]["object"]
    assert final["metadata"]["labels"]["admitted"] == "true" and final["metadata"]["uid"]


def test_an_unreachable_webhook_refuses_under_fail_and_is_skipped_under_ignore(
        west: Cluster, webhook: Webhook, hook_ns: str, namespaces: Callable[[bool], str],
        configure: Callable[..., str]) -> None:
    ns = namespaces(True)
    configure(service="gone")
    before = store_state(west)
    proc = west.kubectl("-n", ns, "apply", "-f", "-", input=pod("lonely"), check=False)
    assert proc.returncode != 0
    assert "Error from server (InternalError)" in proc.stderr
    assert 'Internal error occurred: failed calling webhook "mutate.admission-test.isthmus.io": failed to call ' \
           f'webhook: Post "https://gone.{hook_ns}.svc:443/mutate?timeout=5s": dial tcp {HOOK_IP}:' in proc.stderr
    assert "connect: connection refused" in proc.stderr
    assert store_state(west) == before

    configure(service="gone", failurePolicy="Ignore")
    west.kubectl("-n", ns, "apply", "-f", "-", input=pod("lonely"))
    stored = stored_pod(west, ns, "lonely")
    assert stored is not None and stored["metadata"]["labels"] == {"app": "lonely"}


def test_a_ca_bundle_that_does_not_match_the_webhooks_certificate_fails_closed(
        west: Cluster, webhook: Webhook, namespaces: Callable[[bool], str], configure: Callable[..., str]) -> None:
    ns = namespaces(True)
    configure(ca=OTHER_CA.cert_pem)
    before = store_state(west)
    proc = west.kubectl("-n", ns, "apply", "-f", "-", input=pod("untrusted"), check=False)
    assert proc.returncode != 0
    assert 'failed calling webhook "mutate.admission-test.isthmus.io"' in proc.stderr
    assert "tls: failed to verify certificate: x509: certificate signed by unknown authority" in proc.stderr
    assert store_state(west) == before
    assert webhook.seen("untrusted") == []


def test_an_invalid_configuration_is_refused_and_not_stored(
        west: Cluster, webhook: Webhook, label: str) -> None:
    before = store_state(west)
    proc = west.kubectl("apply", "-f", "-", check=False, input=json.dumps({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": f"bad-{label}"},
        "webhooks": [{"name": "bad", "admissionReviewVersions": ["v1"], "sideEffects": "Some",
                      "clientConfig": {"url": "http://127.0.0.1:1/"}}]}))
    assert proc.returncode != 0
    assert f'The MutatingWebhookConfiguration "bad-{label}" is invalid' in proc.stderr
    assert 'webhooks[0].name: Invalid value: "bad": should be a domain with at least three segments' in proc.stderr
    assert 'webhooks[0].sideEffects: Unsupported value: "Some"' in proc.stderr
    assert "webhooks[0].clientConfig.url: Invalid value: \"http://127.0.0.1:1/\": 'https' is the only allowed " \
           "URL scheme" in proc.stderr
    assert store_state(west) == before

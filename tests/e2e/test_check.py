"""`isthmus check` end to end: green on a healthy mesh, and each check sees what breaks it.

One embedded cluster (one node) for the module: `isthmus check --pre` runs
on it before anything is installed, then the walkthrough's install (CRDs,
control plane with given trust anchor and issuer, real kubectl) and a
meshed Deployment in an annotated namespace. Every test starts from a
green `isthmus check --proxy` (waiting for pods a previous test restarted),
breaks one thing with kubectl — stops identity, installs an issuer of
another anchor or one expiring soon, deletes a CRD, stops the injector,
gives the webhook another CA, starts a pod whose proxy cannot get a
certificate, trusts other anchors — sees the check that must fail fail
with its cause and the exit status, and puts things back.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from isthmus.components import cluster as clusters
from tests.support.waiting import wait_until

from .conftest import Cluster

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BACKEND = ROOT / "tests" / "support" / "backend_app.py"
NS = "mesh"
CROSS, TICK, WARN = "\u00d7", "\u221a", "\u203c"
T = TypeVar("T")



class Mesh:
    def __init__(self, cluster: Cluster, certs: Path) -> None:
        self.c = cluster
        self.certs = certs
        self.pre_before_install: subprocess.CompletedProcess[str] | None = None

    def check(self, *args: str, wait: str = "0s", kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        c = self.c if kubeconfig is None else Cluster(self.c.name, self.c.home, kubeconfig, self.c.extra_env)
        return c.isthmus(f"--context={self.c.name}", "check", "--wait", wait, *args, check=False, timeout=180)

    def check_json(self, *args: str) -> dict[str, Any]:
        return dict(json.loads(self.check("-o", "json", *args).stdout))

    def cert(self, name: str, *args: str) -> Path:
        self.c.isthmus("certs", "create", *args, str(self.certs / f"{name}.crt"), str(self.certs / f"{name}.key"),
                       "--force")
        return self.certs / name

    def issuer_from(self, root: str, name: str, lifetime: str = "8760h") -> Path:
        return self.cert(name, "issuer", "--ca", str(self.certs / f"{root}.crt"),
                         "--ca-key", str(self.certs / f"{root}.key"), "--not-after", lifetime)

    def snapshot(self, *args: str) -> dict[str, Any]:
        """An object as kubectl gets it, without what `kubectl replace` must not be given back."""
        obj = dict(self.c.kjson("get", *args))
        for k in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"):
            obj["metadata"].pop(k, None)
        return obj

    def restore(self, obj: dict[str, Any]) -> None:
        self.c.kubectl("replace", "-f", "-", input=json.dumps(obj))

    def set_issuer(self, issuer: Path) -> None:
        secret = self.snapshot("-n", "isthmus", "secret", "isthmus-identity-issuer")
        secret["data"] = {"crt.pem": base64.b64encode(issuer.with_suffix(".crt").read_bytes()).decode(),
                          "key.pem": base64.b64encode(issuer.with_suffix(".key").read_bytes()).decode()}
        self.restore(secret)

    def scale(self, deployment: str, replicas: int) -> None:
        self.c.kubectl("-n", "isthmus", "scale", f"deploy/{deployment}", f"--replicas={replicas}")

    def pods(self, ns: str, selector: str) -> list[dict[str, Any]]:
        return list(self.c.kjson("-n", ns, "get", "pods", "-l", selector)["items"])


def _create(home: Path, name: str) -> Cluster:
    c = Cluster(name, home, home / "kubeconfig", {"ISTHMUS_RESTART_BACKOFF": "1"})
    c.isthmus("cluster", "create", name, "--region", "sfo3", "--nodes", "1")
    return c


def _workload() -> list[dict[str, Any]]:
    namespace = {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": NS, "annotations": {"isthmus.io/inject": "enabled"}}}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app", "namespace": NS},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "app"}},
                 "template": {"metadata": {"labels": {"app": "app"}}, "spec": {"containers": [
                     {"name": "app", "image": "backend", "command": ["python3", str(BACKEND), "8080"],
                      "ports": [{"name": "http", "containerPort": 8080}]}]}}}}
    return [namespace, deployment]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    home = tmp_path_factory.mktemp("check")
    c = _create(home, "checked")
    try:
        m = Mesh(c, home / "certs")
        m.pre_before_install = m.check("--pre")
        m.cert("root", "root")
        m.issuer_from("root", "issuer")
        files = ["--identity-trust-anchors-file", str(m.certs / "root.crt"),
                 "--identity-issuer-certificate-file", str(m.certs / "issuer.crt"),
                 "--identity-issuer-key-file", str(m.certs / "issuer.key")]
        c.kubectl("apply", "-f", "-", input=c.isthmus("install", "--crds").stdout)
        c.kubectl("apply", "-f", "-", input=c.isthmus("install", *files).stdout)
        c.kubectl("-n", "isthmus", "wait", "--for=condition=Available", "deploy", "--all", "--timeout=120s",
                  timeout=150)
        c.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(_workload()))
        c.kubectl("-n", NS, "rollout", "status", "deploy/app", "--timeout=120s", timeout=150)
        yield m
    finally:
        if c.dir.exists():
            clusters.stop(c.dir)


@pytest.fixture(autouse=True)
def green(mesh: Mesh) -> None:
    """Every test starts from a healthy mesh: what a previous test put back has settled."""
    out = mesh.check("--proxy", "-n", NS, wait="120s")
    assert out.returncode == 0, out.stdout + out.stderr


def lines(out: subprocess.CompletedProcess[str]) -> list[str]:
    return out.stdout.splitlines()


def failed(out: subprocess.CompletedProcess[str]) -> list[str]:
    """The descriptions of the checks that failed."""
    return [line[2:] for line in lines(out) if line.startswith(f"{CROSS} ")]


def cause_of(out: subprocess.CompletedProcess[str], description: str) -> str:
    """The indented lines after a check's line: its cause and hint."""
    text = lines(out)
    i = next(i for i, line in enumerate(text) if line[2:] == description)
    following = []
    for line in text[i + 1:]:
        if not line.startswith("    "):
            break
        following.append(line.strip())
    return "\n".join(following)


# ------------------------------------------------------------------ green


def test_pre_is_green_before_install_and_says_the_namespace_exists_after(mesh: Mesh) -> None:
    before = mesh.pre_before_install
    assert before is not None and before.returncode == 0, before and before.stdout
    assert before.stdout.splitlines()[-1] == f"Status check results are {TICK}"
    checks = [line for line in before.stdout.splitlines() if line[:2] in (f"{TICK} ", f"{CROSS} ", f"{WARN} ")]
    assert len(checks) == 13 and all(line.startswith(TICK) for line in checks)
    assert "pre-kubernetes-setup" in before.stdout

    after = mesh.check("--pre")
    assert after.returncode == 1
    assert failed(after) == ["control plane namespace does not already exist"]
    assert cause_of(after, "control plane namespace does not already exist").startswith(
        'the "isthmus" namespace already exists\nsee: isthmus is installed already')


def test_the_installed_mesh_and_its_proxies_are_green(mesh: Mesh) -> None:
    out = mesh.check("--proxy", "-n", NS)
    assert out.returncode == 0, out.stdout
    assert CROSS not in out.stdout and WARN not in out.stdout
    assert lines(out)[-1] == f"Status check results are {TICK}"
    report = mesh.check_json("--proxy")
    assert report["success"] is True
    assert [c["categoryName"] for c in report["categories"]] == [
        "kubernetes-api", "kubernetes-version", "isthmus-existence", "isthmus-config", "isthmus-identity",
        "isthmus-webhooks", "control-plane-version", "isthmus-data-plane"]
    results = [(c["description"], c["result"]) for cat in report["categories"] for c in cat["checks"]]
    assert len(results) == 26 and all(r == "success" for _, r in results), results
    assert ("data plane proxies certificate match CA", "success") in results


def test_pre_for_a_user_who_may_not_install(mesh: Mesh, tmp_path: Path) -> None:
    c = mesh.c
    c.kubectl("-n", "default", "create", "serviceaccount", "onlooker")
    token = c.kubectl("-n", "default", "create", "token", "onlooker").stdout.strip()
    admin = yaml.safe_load(c.kubeconfig.read_text())
    cluster = next(e["cluster"] for e in admin["clusters"] if e["name"] == c.name)
    kc = tmp_path / "onlooker"
    kc.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": c.name,
        "clusters": [{"name": c.name, "cluster": cluster}],
        "users": [{"name": "onlooker", "user": {"token": token}}],
        "contexts": [{"name": c.name, "context": {"cluster": c.name, "user": "onlooker"}}]}))
    out = mesh.check("--pre", kubeconfig=kc)
    assert out.returncode == 1
    assert "can create non-namespaced resources" in failed(out)
    assert "can create Deployments" in failed(out)
    assert cause_of(out, "can create non-namespaced resources").splitlines()[:2] == [
        "cannot create namespaces", "cannot create clusterroles.rbac.authorization.k8s.io"]
    assert f"{TICK} can query the Kubernetes API" in lines(out)
    c.kubectl("-n", "default", "delete", "serviceaccount", "onlooker")


# ------------------------------------------------------------------ the control plane


def test_identity_stopped(mesh: Mesh) -> None:
    mesh.scale("isthmus-identity", 0)
    try:
        wait_until("the identity pod to go", lambda: not mesh.pods(
            "isthmus", "isthmus.io/control-plane-component=identity"))
        out = mesh.check()
        assert out.returncode == 1
        assert failed(out) == ["control plane pods are ready"]
        assert cause_of(out, "control plane pods are ready").splitlines()[0] == (
            "no pods of Deployment isthmus-identity: it is scaled to 0 replicas")
        assert lines(out)[-1] == f"Status check results are {CROSS}"
        report = mesh.check_json()
        assert report["success"] is False
        existence = next(c for c in report["categories"] if c["categoryName"] == "isthmus-existence")
        assert existence["checks"][1]["result"] == "error"
        assert "isthmus-identity" in existence["checks"][1]["error"] and existence["checks"][1]["hint"]
    finally:
        mesh.scale("isthmus-identity", 1)


def test_a_deleted_crd(mesh: Mesh) -> None:
    mesh.c.kubectl("delete", "crd", "httproutes.policy.isthmus.io")
    try:
        out = mesh.check()
        assert out.returncode == 1
        assert failed(out) == ["control plane CustomResourceDefinitions exist"]
        assert cause_of(out, "control plane CustomResourceDefinitions exist") == (
            "missing CustomResourceDefinitions: httproutes.policy.isthmus.io\n"
            "see: install the CRDs: `isthmus install --crds | kubectl apply -f -`")
    finally:
        mesh.c.kubectl("apply", "-f", "-", input=mesh.c.isthmus("install", "--crds").stdout)


# ------------------------------------------------------------------ identity


def test_an_issuer_signed_by_another_anchor(mesh: Mesh) -> None:
    mesh.cert("other-root", "root")
    mismatched = mesh.issuer_from("other-root", "other-issuer")
    original = mesh.snapshot("-n", "isthmus", "secret", "isthmus-identity-issuer")
    mesh.set_issuer(mismatched)
    try:
        out = mesh.check()
        assert out.returncode == 1
        assert failed(out) == ["issuer cert is issued by the trust anchor"]
        assert "is not signed by the trust anchor" in cause_of(out, "issuer cert is issued by the trust anchor")
    finally:
        mesh.restore(original)


def test_an_issuer_expiring_within_60_days_warns(mesh: Mesh) -> None:
    soon = mesh.issuer_from("root", "short-issuer", lifetime="720h")
    original = mesh.snapshot("-n", "isthmus", "secret", "isthmus-identity-issuer")
    mesh.set_issuer(soon)
    try:
        out = mesh.check()
        assert out.returncode == 0  # a warning, as linkerd's
        assert failed(out) == []
        assert f"{WARN} issuer cert is valid for at least 60 days" in lines(out)
        assert re.match(r"issuer certificate CN=identity\.isthmus\.cluster\.local will expire on \S+Z, in less "
                        r"than 60 days\nsee: make a new issuer", cause_of(out, "issuer cert is valid for at least 60 days"))
        assert lines(out)[-1] == f"Status check results are {TICK}"
        report = mesh.check_json()
        assert report["success"] is True
        identity = next(c for c in report["categories"] if c["categoryName"] == "isthmus-identity")
        assert [c["result"] for c in identity["checks"]].count("warning") == 1
    finally:
        mesh.restore(original)


# ------------------------------------------------------------------ the injector


def test_injector_stopped(mesh: Mesh) -> None:
    mesh.scale("isthmus-proxy-injector", 0)
    try:
        wait_until("the injector's endpoints to empty", lambda: not mesh.c.kjson(
            "-n", "isthmus", "get", "endpoints", "isthmus-proxy-injector").get("subsets"))
        out = mesh.check()
        assert out.returncode == 1
        assert failed(out) == ["control plane pods are ready", "proxy-injector webhook is reachable"]
        assert cause_of(out, "proxy-injector webhook is reachable").startswith(
            "the Service isthmus/isthmus-proxy-injector has no ready endpoints")
    finally:
        mesh.scale("isthmus-proxy-injector", 1)


def test_a_webhook_ca_bundle_that_does_not_verify_the_injector(mesh: Mesh) -> None:
    other = mesh.cert("webhook-other", "root")
    name = "isthmus-proxy-injector-webhook-config"
    original = mesh.snapshot("mutatingwebhookconfiguration", name)
    patch = [{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle",
              "value": base64.b64encode(other.with_suffix(".crt").read_bytes()).decode()}]
    mesh.c.kubectl("patch", "mutatingwebhookconfiguration", name, "--type=json", "-p", json.dumps(patch))
    try:
        out = mesh.check()
        assert out.returncode == 1
        assert failed(out) == ["proxy-injector webhook has valid cert", "proxy-injector webhook is reachable"]
        assert "does not verify with the webhook's caBundle for isthmus-proxy-injector.isthmus.svc" in cause_of(
            out, "proxy-injector webhook is reachable")
    finally:
        mesh.restore(original)


# ------------------------------------------------------------------ the data plane


def test_a_proxy_that_cannot_get_a_certificate(mesh: Mesh) -> None:
    """A pod whose proxy is pointed at an identity service that is not there never becomes ready."""
    app = mesh.pods(NS, "app=app")[0]
    proxy = next(ct for ct in app["spec"]["containers"] if ct["name"] == "isthmus-proxy")
    for var in proxy["env"]:
        if var["name"] == "ISTHMUS_PROXY_IDENTITY_SVC_ADDR":
            var["value"] = "127.0.0.1:9"
    name = f"stuck-{uuid.uuid4().hex[:6]}"
    annotations = {"isthmus.io/proxy-version": app["metadata"]["annotations"]["isthmus.io/proxy-version"]}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "annotations": annotations},
           "spec": {"containers": [c for c in app["spec"]["containers"] if c["name"] != "isthmus-proxy"] + [proxy]}}
    mesh.c.kubectl("apply", "-f", "-", input=json.dumps(pod))
    try:
        out = wait_until("the check to hear the stuck proxy's /ready", lambda: (
            lambda o: o if "answers /ready with 503" in o.stdout else None)(mesh.check("--proxy", "-n", NS)))
        assert out.returncode == 1
        assert failed(out) == ["data plane proxies are ready"]
        cause = cause_of(out, "data plane proxies are ready")
        assert cause.startswith(f"{NS}/{name}: its proxy answers /ready with 503: not ready: waiting for a "
                                f"certificate from the identity service"), cause
        assert "127.0.0.1:9" in cause
        # Without --proxy the data plane is not looked at.
        assert mesh.check().returncode == 0
    finally:
        mesh.c.kubectl("-n", NS, "delete", "pod", name)


def test_proxies_whose_certificates_do_not_chain_to_the_trust_anchors(mesh: Mesh) -> None:
    """Trusting other anchors (a rotation gone wrong) leaves every proxy with a certificate of the old chain."""
    other = mesh.cert("rotated-root", "root")
    original = mesh.snapshot("-n", "isthmus", "configmap", "isthmus-identity-trust-roots")
    changed = json.loads(json.dumps(original))
    changed["data"]["ca-bundle.crt"] = other.with_suffix(".crt").read_text()
    mesh.restore(changed)
    try:
        out = mesh.check("--proxy", "-n", NS)
        assert out.returncode == 1
        assert failed(out) == ["issuer cert is issued by the trust anchor", "data plane proxies certificate match CA"]
        app = mesh.pods(NS, "app=app")[0]["metadata"]["name"]
        cause = cause_of(out, "data plane proxies certificate match CA")
        assert cause.startswith(f"{NS}/{app}: its certificate (for default.{NS}.serviceaccount.identity.isthmus."
                                f"cluster.local, valid until "), cause
        assert "does not verify against the trust anchors" in cause
    finally:
        mesh.restore(original)

"""The checks of `isthmus check` against a fake cluster holding what `isthmus install` makes.

The fake cluster serves the real install's objects (`manifests.control_plane`
with real certificates, and the CRDs), Ready pods for each Deployment and the
injector's Endpoints; the fake probes answer as proxies and the injector do,
verifying presented certificates with the anchors and identity the check
passes. Each test breaks one thing and looks for the check that says so.
The real cluster, sockets and TLS are tests/e2e/test_check.py's.
"""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from isthmus import __version__
from isthmus.adapters import x509
from isthmus.adapters.x509 import Credentials, X509Error
from isthmus.cli.install import webhook_credentials
from isthmus.components.checks import catalog
from isthmus.components.checks.cluster import ClusterError
from isthmus.components.checks.probes import Presented, ProbeError
from isthmus.components.checks.runner import run
from isthmus.core.checks import CheckResult, Status
from isthmus.resources import manifests
from isthmus.resources.manifests import InstallValues

NOW = datetime.now(UTC)
ROOT = x509.new_root(now=NOW)
ISSUER = x509.new_issuer(ROOT, now=NOW)
OTHER_ROOT = x509.new_root(now=NOW)
WEBHOOK_CA, WEBHOOK_LEAF = webhook_credentials(now=NOW)
INJECTOR_IP, WEB_IP = "127.1.64.3", "127.1.64.20"
WEB_ID = "web.emojivoto.serviceaccount.identity.isthmus.cluster.local"
Obj = dict[str, Any]


def install_objects(issuer: Credentials = ISSUER) -> list[Obj]:
    values = InstallValues(
        trust_anchors_pem=ROOT.cert_pem.decode(), issuer_cert_pem=issuer.cert_pem.decode(),
        issuer_key_pem=issuer.key_pem.decode(), webhook_ca_pem=WEBHOOK_CA.cert_pem.decode(),
        webhook_cert_pem=WEBHOOK_LEAF.cert_pem.decode(), webhook_key_pem=WEBHOOK_LEAF.key_pem.decode(),
        image="isthmus:test", version=__version__)
    return [*manifests.crds(), *manifests.control_plane(values)]


def pod(name: str, namespace: str, ip: str, labels: dict[str, str], containers: list[str], *,
        ready: bool = True, sa: str = "default", annotations: dict[str, str] | None = None) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels,
                         "annotations": annotations or {}},
            "spec": {"serviceAccountName": sa, "containers": [{"name": c} for c in containers]},
            "status": {"phase": "Running", "podIP": ip, "containerStatuses": [
                {"name": c, "ready": ready, "restartCount": 0, "state": {"running": {}}} for c in containers]}}


class FakeCluster:
    context, server = "fake", "https://127.1.0.1:6443"

    def __init__(self, objects: list[Obj]) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.denied: set[tuple[str, str, str]] = set()  # (verb, resource, namespace)
        for o in objects:
            self.put(o)

    def put(self, obj: Obj) -> None:
        meta = obj["metadata"]
        self.objects[(obj["kind"], meta.get("namespace", ""), meta["name"])] = obj

    def find(self, kind: str, name: str, namespace: str = "") -> Obj:
        return self.objects[(kind, namespace, name)]

    def delete(self, kind: str, name: str, namespace: str = "") -> None:
        del self.objects[(kind, namespace, name)]

    def version(self) -> Obj:
        return {"major": "1", "minor": "32", "gitVersion": "v1.32.0"}

    def get(self, kind: str, name: str, namespace: str = "") -> Obj | None:
        found = self.objects.get((kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list(self, kind: str, namespace: str | None = None, labels: dict[str, str] | None = None) -> list[Obj]:
        return [copy.deepcopy(o) for (k, ns, _), o in self.objects.items()
                if k == kind and (namespace is None or ns == namespace)]

    def can_i(self, verb: str, group: str, resource: str, namespace: str = "") -> tuple[bool, str]:
        if (verb, resource, namespace) in self.denied:
            return False, "RBAC: no rule allows it"
        return True, ""


class FakeProbes:
    """Answers as healthy proxies and an injector do; presented certificates are verified for real."""

    def __init__(self) -> None:
        self.ready: dict[str, tuple[int, str]] = {}
        self.leaves: dict[str, tuple[Credentials, bytes]] = {}  # IP -> the leaf and its issuer
        self.webhook_error: str | None = None
        self.reviews: list[dict[str, Any]] = []

    def admin_ready(self, ip: str, port: int) -> tuple[int, str]:
        assert port == 4191
        if ip not in self.ready:
            raise ProbeError(f"GET http://{ip}:{port}/ready: Connection refused")
        return self.ready[ip]

    def presented_certificate(self, ip: str, port: int, *, anchors_pem: bytes, identity: str) -> Presented:
        assert port == 4143
        leaf, issuer = self.leaves[ip]
        der = x509.load_certificates(leaf.cert_pem)[0].public_bytes(Encoding.DER)
        try:  # as the handshake: the proxy presents its leaf and issuer
            x509.verify_chain(leaf.cert_pem, intermediates=issuer, roots_pem=anchors_pem, now=NOW,
                              dns_name=identity)
        except X509Error as e:
            return Presented(der, str(e))
        return Presented(der)

    def webhook_review(self, ip: str, port: int, *, ca_pem: bytes, server_name: str, path: str,
                       namespace: str) -> dict[str, Any]:
        self.reviews.append({"ip": ip, "port": port, "server_name": server_name, "path": path})
        if self.webhook_error:
            raise ProbeError(self.webhook_error)
        if ca_pem != WEBHOOK_CA.cert_pem:
            raise ProbeError(f"https://{ip}:{port}{path}: its certificate does not verify with the caBundle")
        return {"uid": "u", "allowed": True}


class World:
    """A cluster with isthmus installed, a meshed `web` pod, and probes that answer for them."""

    def __init__(self) -> None:
        self.cluster = FakeCluster(install_objects())
        self.probes = FakeProbes()
        label = manifests.COMPONENT_LABEL
        for i, component in enumerate(("identity", "destination", "proxy-injector"), 1):
            self.cluster.put(pod(f"isthmus-{component}-1", "isthmus", f"127.1.64.{i}",
                                 {label: component}, [component]))
        self.cluster.put({"apiVersion": "v1", "kind": "Endpoints", "metadata": {
            "name": "isthmus-proxy-injector", "namespace": "isthmus"},
            "subsets": [{"addresses": [{"ip": INJECTOR_IP}], "ports": [{"name": "https", "port": 8443}]}]})
        self.cluster.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "emojivoto"}})
        self.cluster.put(pod("web-1", "emojivoto", WEB_IP, {"app": "web"}, ["web", "isthmus-proxy"], sa="web",
                             annotations={"isthmus.io/proxy-version": __version__}))
        self.probes.ready[WEB_IP] = (200, "ready\n")
        self.probes.leaves[WEB_IP] = (x509.issue_leaf(ISSUER, WEB_ID, now=NOW), ISSUER.cert_pem)
        self.connect_error: str | None = None

    def connect(self, path: Path, context: str | None) -> FakeCluster:
        if self.connect_error:
            raise ClusterError(self.connect_error)
        return self.cluster

    def run(self, *, pre: bool = False, proxy: bool = False, namespace: str | None = None,
            now: datetime = NOW) -> list[CheckResult]:
        env = catalog.CheckEnv(kubeconfig=Path("/nonexistent"), context="fake", now=lambda: now,
                               data_plane_namespace=namespace, connect=self.connect, probes=self.probes)
        categories = catalog.pre_install() if pre else catalog.installed(proxy=proxy, namespace=namespace)
        return list(run(categories, env, wait=0, clock=lambda: 0.0, sleep=lambda s: None))


def not_green(results: list[CheckResult]) -> list[tuple[str, Status, str]]:
    return [(r.description, r.status, r.cause) for r in results if r.status is not Status.SUCCESS]


@pytest.fixture
def world() -> World:
    return World()


def test_an_installed_mesh_is_green_in_linkerds_categories(world: World) -> None:
    results = world.run(proxy=True, namespace="emojivoto")
    assert not_green(results) == []
    categories = list(dict.fromkeys(r.category for r in results))
    assert categories == ["kubernetes-api", "kubernetes-version", "isthmus-existence", "isthmus-config",
                          "isthmus-identity", "isthmus-webhooks", "control-plane-version",
                          "isthmus-data-plane"]
    assert len(results) == 27
    assert world.probes.reviews == [{"ip": INJECTOR_IP, "port": 8443, "path": "/",
                                     "server_name": "isthmus-proxy-injector.isthmus.svc"}]


def test_without_proxy_there_are_no_data_plane_checks(world: World) -> None:
    results = world.run()
    assert not_green(results) == []
    assert "isthmus-data-plane" not in {r.category for r in results}


def test_pre_on_a_cluster_without_isthmus_and_after_install(world: World) -> None:
    installed = world.run(pre=True)
    assert not_green(installed) == [("control plane namespace does not already exist", Status.ERROR,
                                     'the "isthmus" namespace already exists')]
    assert [r.category for r in installed][-1] == "pre-kubernetes-setup"
    bare = World()
    bare.cluster = FakeCluster([])
    assert not_green(bare.run(pre=True)) == []


def test_pre_says_what_the_user_may_not_create(world: World) -> None:
    world.cluster = FakeCluster([])
    world.cluster.denied = {("create", "clusterroles", ""), ("create", "secrets", "isthmus")}
    assert not_green(world.run(pre=True)) == [
        ("can create non-namespaced resources", Status.ERROR,
         "cannot create clusterroles.rbac.authorization.k8s.io: RBAC: no rule allows it"),
        ("can create Secrets", Status.ERROR, "cannot create secrets in namespace 'isthmus': RBAC: no rule allows it")]


def test_no_cluster_stops_after_the_first_check(world: World) -> None:
    world.connect_error = "context 'nope' is not in the kubeconfig"
    results = world.run()
    assert [(r.description, r.status, r.cause) for r in results] == [
        ("can initialize the client", Status.ERROR, "context 'nope' is not in the kubeconfig")]
    assert "--context" in results[0].hint


def test_an_unreachable_api_stops_after_the_second_check(world: World) -> None:
    def down() -> Obj:
        raise ClusterError("cannot reach the API of context 'fake' at https://127.1.0.1:6443: ConnectError")
    world.cluster.version = down  # type: ignore[method-assign]
    results = world.run()
    assert [(r.description, r.status) for r in results] == [
        ("can initialize the client", Status.SUCCESS), ("can query the Kubernetes API", Status.ERROR)]
    assert "isthmus cluster start" in results[1].hint


def test_no_install_stops_at_the_config_map(world: World) -> None:
    world.cluster.delete("ConfigMap", "isthmus-config", "isthmus")
    results = world.run()
    assert results[-1].description == "'isthmus-config' config map exists"
    assert results[-1].status is Status.ERROR and "isthmus install" in results[-1].hint


def test_a_control_plane_deployment_scaled_to_zero(world: World) -> None:
    world.cluster.delete("Pod", "isthmus-identity-1", "isthmus")
    world.cluster.find("Deployment", "isthmus-identity", "isthmus")["spec"]["replicas"] = 0
    assert not_green(world.run()) == [("control plane pods are ready", Status.ERROR,
                                       "no pods of Deployment isthmus-identity: it is scaled to 0 replicas")]


def test_a_missing_crd_and_cluster_role(world: World) -> None:
    world.cluster.delete("CustomResourceDefinition", "servers.policy.isthmus.io")
    world.cluster.delete("ClusterRole", "isthmus-destination")
    assert not_green(world.run()) == [
        ("control plane ClusterRoles exist", Status.ERROR, "missing ClusterRoles: isthmus-destination"),
        ("control plane CustomResourceDefinitions exist", Status.ERROR,
         "missing CustomResourceDefinitions: servers.policy.isthmus.io")]


def set_issuer(world: World, issuer: Credentials) -> None:
    secret = world.cluster.find("Secret", "isthmus-identity-issuer", "isthmus")
    secret["data"] = {"crt.pem": base64.b64encode(issuer.cert_pem).decode(),
                      "key.pem": base64.b64encode(issuer.key_pem).decode()}


def test_an_issuer_signed_by_another_anchor(world: World) -> None:
    set_issuer(world, x509.new_issuer(OTHER_ROOT, now=NOW))
    problems = not_green(world.run())
    assert [(d, s) for d, s, _ in problems] == [("issuer cert is issued by the trust anchor", Status.ERROR)]
    assert "is not signed by the trust anchor" in problems[0][2]


def test_an_issuer_expiring_within_60_days_warns_and_passes(world: World) -> None:
    set_issuer(world, x509.new_issuer(ROOT, now=NOW, not_after=timedelta(days=30)))
    results = world.run()
    problems = not_green(results)
    assert [(d, s) for d, s, _ in problems] == [("issuer cert is valid for at least 60 days", Status.WARNING)]
    assert "will expire on" in problems[0][2]


def test_an_expired_issuer(world: World) -> None:
    set_issuer(world, x509.new_issuer(ROOT, now=NOW, not_after=timedelta(days=1)))
    problems = not_green(world.run(now=NOW + timedelta(days=2)))
    assert [(d, s) for d, s, _ in problems] == [
        ("issuer cert is within its validity period", Status.ERROR),
        ("issuer cert is issued by the trust anchor", Status.ERROR)]


def test_an_issuer_key_that_does_not_match_is_fatal(world: World) -> None:
    set_issuer(world, Credentials(ISSUER.cert_pem, x509.new_issuer(ROOT, now=NOW).key_pem))
    results = world.run()
    assert results[-1].description == "certificate config is valid"
    assert "the issuer key does not match the issuer certificate" in results[-1].cause


def test_a_webhook_without_ready_endpoints(world: World) -> None:
    world.cluster.find("Endpoints", "isthmus-proxy-injector", "isthmus")["subsets"] = []
    assert not_green(world.run()) == [(
        "proxy-injector webhook is reachable", Status.ERROR,
        "the Service isthmus/isthmus-proxy-injector has no ready endpoints: no isthmus-proxy-injector pod "
        "is ready to answer the API server")]


def test_a_webhook_whose_ca_bundle_does_not_match_the_injectors_certificate(world: World) -> None:
    other_ca, _ = webhook_credentials(now=NOW)
    config = world.cluster.find("MutatingWebhookConfiguration", "isthmus-proxy-injector-webhook-config")
    config["webhooks"][0]["clientConfig"]["caBundle"] = base64.b64encode(other_ca.cert_pem).decode()
    assert [(d, s) for d, s, _ in not_green(world.run())] == [
        ("proxy-injector webhook has valid cert", Status.ERROR),
        ("proxy-injector webhook is reachable", Status.ERROR)]


def test_a_webhook_that_does_not_answer(world: World) -> None:
    world.probes.webhook_error = "cannot connect to 127.1.64.3:8443: Connection refused"
    assert not_green(world.run()) == [("proxy-injector webhook is reachable", Status.ERROR,
                                       "cannot connect to 127.1.64.3:8443: Connection refused")]


def test_a_control_plane_of_another_version_warns(world: World) -> None:
    world.cluster.find("ConfigMap", "isthmus-config", "isthmus")["data"]["version"] = "0.0.1"
    assert not_green(world.run()) == [("control plane and cli versions match", Status.WARNING,
                                       f"control plane running 0.0.1 but cli running {__version__}")]


def test_a_proxy_that_is_not_ready(world: World) -> None:
    world.probes.ready[WEB_IP] = (503, "not ready: waiting for a certificate from the identity service\n")
    web = world.cluster.find("Pod", "web-1", "emojivoto")
    web["status"]["containerStatuses"][1]["ready"] = False
    assert not_green(world.run(proxy=True, namespace="emojivoto")) == [(
        "data plane proxies are ready", Status.ERROR,
        "emojivoto/web-1: its proxy answers /ready with 503: not ready: waiting for a certificate from "
        "the identity service")]


def test_a_proxy_whose_certificate_does_not_chain_to_the_anchors(world: World) -> None:
    other_issuer = x509.new_issuer(OTHER_ROOT, now=NOW)
    world.probes.leaves[WEB_IP] = (x509.issue_leaf(other_issuer, WEB_ID, now=NOW), other_issuer.cert_pem)
    problems = not_green(world.run(proxy=True, namespace="emojivoto"))
    assert [(d, s) for d, s, _ in problems] == [("data plane proxies certificate match CA", Status.ERROR)]
    assert problems[0][2].startswith(f"emojivoto/web-1: its certificate (for {WEB_ID}, valid until")


def test_a_proxy_presenting_another_identity(world: World) -> None:
    other = "vote-bot.emojivoto.serviceaccount.identity.isthmus.cluster.local"
    world.probes.leaves[WEB_IP] = (x509.issue_leaf(ISSUER, other, now=NOW), ISSUER.cert_pem)
    problems = not_green(world.run(proxy=True, namespace="emojivoto"))
    assert [(d, s) for d, s, _ in problems] == [("data plane proxies certificate match CA", Status.ERROR)]
    assert f"is not valid for {WEB_ID}" in problems[0][2]


def test_data_plane_of_an_empty_or_missing_namespace(world: World) -> None:
    world.cluster.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "empty"}})
    assert not_green(world.run(proxy=True, namespace="empty")) == [
        ("data plane proxies are ready", Status.ERROR, 'no "isthmus-proxy" containers found in the "empty" namespace')]
    results = world.run(proxy=True, namespace="nope")
    assert (results[-1].description, results[-1].cause) == ("data plane namespace exists",
                                                            'the "nope" namespace does not exist')


def test_data_plane_versions_warn_for_proxies_of_another_version(world: World) -> None:
    world.cluster.find("Pod", "web-1", "emojivoto")["metadata"]["annotations"]["isthmus.io/proxy-version"] = "0.0.1"
    assert not_green(world.run(proxy=True)) == [("data plane and cli versions match", Status.WARNING,
                                                 f"emojivoto/web-1 running 0.0.1 but cli running {__version__}")]

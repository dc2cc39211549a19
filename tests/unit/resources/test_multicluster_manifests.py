"""The multicluster manifests: valid Kubernetes, a gateway its proxy can run as, RBAC that grants
exactly what it says, a Link the service mirror accepts, and unlink references in a deletable order."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from isthmus.adapters.x509 import new_root
from isthmus.components.proxy.config import ProxyConfig
from isthmus.core import mirror as core
from isthmus.core import podstatus
from isthmus.core.inject import InjectConfig, decide
from isthmus.core.rbac import Attributes, User, authorize
from isthmus.core.selectors import SelectorError, selector_from_label_selector_object
from isthmus.resources import manifests
from isthmus.resources import multicluster_manifests as mc
from isthmus.resources.crdschema import validate_custom
from isthmus.resources.multicluster import link_crd

from .test_manifests import kubectl_versions

ROOT = new_root(now=datetime.now(UTC))
PROXY = InjectConfig(image="ghcr.io/isthmus-mesh/isthmus:0.1.0", version="0.1.0",
                     trust_anchors_pem=ROOT.cert_pem.decode(), identity_addr="127.9.128.3:8080",
                     destination_addr="127.9.128.4:8086", trust_domain="east.example")
GATEWAY = mc.GatewayValues(proxy=PROXY)
CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
LINK = mc.LinkValues(cluster_name="east", api_server="https://127.9.0.1:6443", token="t0ken",
                     ca_pem=CA_PEM, gateway_addresses=("127.9.192.1",),
                     gateway_identity=mc.gateway_identity("east.example"), image="img:1",
                     cluster_domain="east.local", gateway_port=4143, probe_period="3s",
                     service_account=mc.remote_access_name("default"))
POD_IP = "127.9.64.9"


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def link_object(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "Link")


def test_every_built_in_object_validates_for_every_kubectl_version() -> None:
    objects = [*mc.install(GATEWAY), *mc.allow("west"), *mc.link(LINK)]
    built_in = [o for o in objects if o["kind"] != "Link"]
    assert {o["kind"] for o in built_in} >= {"Namespace", "CustomResourceDefinition", "ServiceAccount",
                                             "Deployment", "Service", "ClusterRole", "ClusterRoleBinding",
                                             "Role", "RoleBinding", "Secret"}
    for version in kubectl_versions():
        for obj in built_in:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{obj['kind']} {obj['metadata']['name']} is not valid for Kubernetes "
                            f"{version}: {e.message} at {list(e.absolute_path)}")


def test_the_link_validates_against_the_link_crd_and_the_mirror_reads_it_back() -> None:
    link = link_object(mc.link(LINK))
    schema = link_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    result = validate_custom(schema, link)
    assert result.errors == [] and result.unknown_fields == []
    spec = core.LinkSpec.from_object(link)
    assert spec.name == spec.target_cluster_name == "east"
    assert spec.namespace == "isthmus-multicluster"
    assert spec.target_cluster_domain == "east.local"
    assert spec.credentials_secret == "cluster-credentials-east"
    assert spec.gateway_addresses == ("127.9.192.1",) and spec.gateway_port == 4143
    assert spec.gateway_identity == "isthmus-gateway.isthmus-multicluster.serviceaccount.identity.isthmus.east.example"
    assert spec.probe == core.ProbeSpec(path="/ready", port=4191, period=3.0, timeout=3.0, failure_threshold=3)
    assert spec.selector.matches({"mirror.isthmus.io/exported": "true"})
    assert not spec.selector.matches({"app": "web"})


def test_the_install_is_the_namespace_crd_gateway_and_default_remote_access_in_apply_order() -> None:
    objects = mc.install(GATEWAY)
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Namespace", "isthmus-multicluster"),
        ("CustomResourceDefinition", "links.multicluster.isthmus.io"),
        ("ServiceAccount", "isthmus-gateway"),
        ("Deployment", "isthmus-gateway"),
        ("Service", "isthmus-gateway"),
        ("ServiceAccount", "isthmus-service-mirror-remote-access-default"),
        ("ClusterRole", "isthmus-service-mirror-remote-access-default"),
        ("ClusterRoleBinding", "isthmus-service-mirror-remote-access-default"),
        ("Secret", "isthmus-service-mirror-remote-access-default-token"),
    ]
    assert objects[1] == link_crd()
    assert mc.install(GATEWAY) == objects  # the same values give the same objects
    namespace = objects[0]["metadata"]
    assert namespace["annotations"] == {"isthmus.io/inject": "disabled"}


def test_the_gateway_service_is_a_load_balancer_annotated_for_remote_mirrors() -> None:
    svc = named(mc.install(mc.GatewayValues(proxy=PROXY, port=14143, probe_port=14191, probe_period_seconds=5)),
                "Service", "isthmus-gateway")
    assert svc["metadata"]["namespace"] == "isthmus-multicluster"
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"] == [
        {"name": "mc-gateway", "port": 14143, "targetPort": 4143, "protocol": "TCP"},
        # The probe goes to the gateway's mTLS probe listener, not to its admin port.
        {"name": "mc-probe", "port": 14191, "targetPort": 4192, "protocol": "TCP"},
    ]
    assert svc["metadata"]["annotations"] == {
        "mirror.isthmus.io/gateway-identity":
            "isthmus-gateway.isthmus-multicluster.serviceaccount.identity.isthmus.east.example",
        "mirror.isthmus.io/probe-path": "/ready",
        "mirror.isthmus.io/probe-period": "5s",
    }
    assert svc["metadata"]["labels"]["mirror.isthmus.io/multicluster-gateway"] == "true"
    deployment = named(mc.install(GATEWAY), "Deployment", "isthmus-gateway")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())


def gateway_pod() -> dict[str, Any]:
    template = named(mc.install(GATEWAY), "Deployment", "isthmus-gateway")["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {**template["metadata"], "name": "isthmus-gateway-abc", "namespace": "isthmus-multicluster"},
            "spec": template["spec"]}


def test_the_gateway_pod_is_only_a_proxy_in_gateway_mode_as_the_injector_would_configure_it(tmp_path: Path) -> None:
    pod = gateway_pod()
    (container,) = pod["spec"]["containers"]
    assert container["name"] == "isthmus-proxy" and container["command"] == ["isthmus", "proxy"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 4191}
    assert pod["spec"]["serviceAccountName"] == "isthmus-gateway"
    assert not decide(pod, {"isthmus.io/inject": "enabled"}).inject  # the injector leaves it alone
    env = podstatus.resolve_env(pod, container, pod_ip=POD_IP, host_ip="127.9.0.11", lookup=lambda *_: None,
                                service_env={"ISTHMUS_POD_DIR": str(tmp_path)})
    config = ProxyConfig.from_env(env)
    assert config.gateway
    assert config.identity == "isthmus-gateway.isthmus-multicluster.serviceaccount.identity.isthmus.east.example"
    assert config.inbound == (POD_IP, 4143) and config.admin == (POD_IP, 4191)
    assert config.gateway_probe == (POD_IP, 4192)
    assert {"name": "mc-probe", "containerPort": 4192, "protocol": "TCP"} in container["ports"]
    assert config.identity_addr == ("127.9.128.3", 8080)
    assert config.destination_addr == ("127.9.128.4", 8086)
    assert config.destination_name == "isthmus-destination.isthmus.serviceaccount.identity.isthmus.east.example"
    assert config.trust_anchors_pem == ROOT.cert_pem
    assert config.workload == ("deploy", "isthmus-gateway")
    assert config.namespace == "isthmus-multicluster" and config.pod == "isthmus-gateway-abc"


def rbac_allows(objects: list[dict[str, Any]], account: str, attrs: Attributes) -> bool:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)
    allowed, _ = authorize(
        User(f"system:serviceaccount:isthmus-multicluster:{account}", ("system:serviceaccounts",)), attrs,
        roles={(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind.get("Role", [])},
        cluster_roles={r["metadata"]["name"]: r for r in by_kind.get("ClusterRole", [])},
        role_bindings=by_kind.get("RoleBinding", []),
        cluster_role_bindings=by_kind.get("ClusterRoleBinding", []))
    return allowed


@pytest.mark.parametrize(("attrs", "allowed"), [
    (Attributes("list", resource="services"), True),
    (Attributes("watch", resource="endpoints"), True),
    (Attributes("get", resource="services", namespace="isthmus-multicluster", name="isthmus-gateway"), True),
    (Attributes("get", resource="secrets", namespace="isthmus-multicluster", name="cluster-credentials-x"), False),
    (Attributes("list", resource="secrets"), False),
    (Attributes("list", resource="pods"), False),
    (Attributes("get", resource="configmaps", namespace="isthmus", name="isthmus-config"), False),
    (Attributes("create", resource="services", namespace="default"), False),
    (Attributes("delete", resource="endpoints", namespace="default", name="web"), False),
    (Attributes("list", group="multicluster.isthmus.io", resource="links"), False),
])
def test_remote_access_reads_services_and_endpoints_and_nothing_more(attrs: Attributes, allowed: bool) -> None:
    objects = mc.allow("west")
    assert rbac_allows(objects, "isthmus-service-mirror-remote-access-west", attrs) is allowed
    assert rbac_allows(objects, "isthmus-service-mirror-remote-access-east", attrs) is False


def test_remote_access_has_a_service_account_token_secret_for_kubernetes_to_fill() -> None:
    secret = named(mc.allow("west"), "Secret", "isthmus-service-mirror-remote-access-west-token")
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["annotations"] == {
        "kubernetes.io/service-account.name": "isthmus-service-mirror-remote-access-west"}
    assert "data" not in secret


def test_the_credentials_secret_holds_a_kubeconfig_for_the_target_api_with_the_token() -> None:
    secret = named(mc.link(LINK), "Secret", "cluster-credentials-east")
    assert secret["type"] == "mirror.isthmus.io/remote-kubeconfig"
    config = yaml.safe_load(base64.b64decode(secret["data"]["kubeconfig"]))
    assert config["current-context"] == "east"
    (cluster,) = config["clusters"]
    assert cluster["cluster"] == {"server": "https://127.9.0.1:6443",
                                  "certificate-authority-data": base64.b64encode(CA_PEM).decode()}
    (user,) = config["users"]
    assert user == {"name": "isthmus-service-mirror-remote-access-default", "user": {"token": "t0ken"}}
    assert config["contexts"] == [{"name": "east", "context": {
        "cluster": "east", "user": "isthmus-service-mirror-remote-access-default"}}]
    assert "t0ken" not in repr(LINK)


def test_without_a_ca_the_kubeconfig_trusts_the_systems_roots() -> None:
    config = mc.credentials_kubeconfig(mc.LinkValues(
        cluster_name="east", api_server="https://api.east.example:6443", token="t", gateway_addresses=("gw",),
        gateway_identity="i", image="img"))
    assert config["clusters"][0]["cluster"] == {"server": "https://api.east.example:6443"}


def test_the_service_mirror_runs_for_its_link_with_a_probe_on_its_admin_port() -> None:
    deployment = named(mc.link(LINK), "Deployment", "isthmus-service-mirror-east")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["isthmus", "service-mirror", "--link", "east",
                                    "--namespace", "isthmus-multicluster"]
    assert container["image"] == "img:1"
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "admin"}
    assert container["ports"] == [{"name": "admin", "containerPort": 9999, "protocol": "TCP"}]
    assert pod["spec"]["serviceAccountName"] == "isthmus-service-mirror-east"
    assert pod["metadata"]["annotations"] == {"isthmus.io/inject": "disabled"}
    # what its identity client asks for: <service account>.<namespace>
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env["POD_SERVICE_ACCOUNT"] == "spec.serviceAccountName"
    assert env["POD_NAMESPACE"] == "metadata.namespace"


@pytest.mark.parametrize(("attrs", "allowed"), [
    (Attributes("create", resource="services", namespace="emojivoto"), True),
    (Attributes("update", resource="endpoints", namespace="emojivoto", name="web-svc-east"), True),
    (Attributes("delete", resource="services", namespace="emojivoto", name="web-svc-east"), True),
    (Attributes("watch", resource="services"), True),
    (Attributes("create", resource="namespaces"), True),
    (Attributes("create", resource="events", namespace="emojivoto"), True),
    (Attributes("watch", resource="secrets", namespace="isthmus-multicluster"), True),
    (Attributes("get", group="multicluster.isthmus.io", resource="links", namespace="isthmus-multicluster",
                name="east"), True),
    (Attributes("patch", group="multicluster.isthmus.io", resource="links", subresource="status",
                namespace="isthmus-multicluster", name="east"), True),
    (Attributes("update", group="coordination.k8s.io", resource="leases", namespace="isthmus-multicluster",
                name="service-mirror-east"), True),
    # its own identity client's settings, from the control plane's namespace
    (Attributes("get", resource="configmaps", namespace="isthmus", name="isthmus-identity-trust-roots"), True),
    (Attributes("get", resource="configmaps", namespace="isthmus", name="isthmus-config"), True),
    (Attributes("get", resource="services", namespace="isthmus", name="isthmus-identity"), True),
    (Attributes("get", resource="configmaps", namespace="isthmus", name="other"), False),
    (Attributes("list", resource="configmaps", namespace="isthmus"), False),
    (Attributes("get", resource="secrets", namespace="isthmus", name="isthmus-identity-issuer"), False),
    (Attributes("update", group="multicluster.isthmus.io", resource="links", namespace="isthmus-multicluster",
                name="east"), False),
    (Attributes("delete", resource="namespaces", name="emojivoto"), False),
    (Attributes("create", resource="pods", namespace="emojivoto"), False),
    (Attributes("update", group="coordination.k8s.io", resource="leases", namespace="kube-system",
                name="x"), False),
])
def test_the_service_mirror_may_do_what_mirroring_needs_and_not_more(attrs: Attributes, allowed: bool) -> None:
    assert rbac_allows(mc.link(LINK), "isthmus-service-mirror-east", attrs) is allowed


def test_unlink_references_what_link_made_mirror_first_and_the_mirrors_endpoints_before_services() -> None:
    mirrored = [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-svc-east", "namespace": "emojivoto",
                                                             "uid": "u1", "labels": {"a": "b"}}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web-svc-east", "namespace": "emojivoto"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api-east", "namespace": "apps"}},
    ]
    listing = mc.unlink_objects("east", None, mirrored)
    assert listing["kind"] == "List" and listing["apiVersion"] == "v1"
    refs = [(i["kind"], i["metadata"].get("namespace"), i["metadata"]["name"]) for i in listing["items"]]
    made = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in mc.link(LINK)}
    assert set(refs[:len(made)]) == made
    assert refs[0] == ("Deployment", "isthmus-multicluster", "isthmus-service-mirror-east")
    assert refs[1] == ("Link", "isthmus-multicluster", "east")
    assert refs[len(made):] == [("Endpoints", "emojivoto", "web-svc-east"), ("Service", "apps", "api-east"),
                                ("Service", "emojivoto", "web-svc-east")]
    assert all(set(i) == {"apiVersion", "kind", "metadata"} for i in listing["items"])
    assert all(set(i["metadata"]) <= {"name", "namespace"} for i in listing["items"])


def test_unlink_leaves_out_what_the_cluster_no_longer_has() -> None:
    existing = [{"kind": "Link", "metadata": {"name": "east", "namespace": "isthmus-multicluster"}}]
    listing = mc.unlink_objects("east", existing, [])
    assert [(i["kind"], i["metadata"]["name"]) for i in listing["items"]] == [("Link", "east")]


def test_every_object_comes_back_the_same_from_the_printed_yaml() -> None:
    objects = [*mc.install(GATEWAY), *mc.link(LINK), mc.unlink_objects("east")]
    assert list(yaml.safe_load_all(manifests.dump(objects))) == objects


@pytest.mark.parametrize(("text", "expected", "matches", "misses"), [
    ("mirror.isthmus.io/exported=true", {"matchLabels": {"mirror.isthmus.io/exported": "true"}},
     {"mirror.isthmus.io/exported": "true"}, {"mirror.isthmus.io/exported": "false"}),
    ("app==web,tier in (a, b),!legacy",
     {"matchLabels": {"app": "web"}, "matchExpressions": [
         {"key": "legacy", "operator": "DoesNotExist"}, {"key": "tier", "operator": "In", "values": ["a", "b"]}]},
     {"app": "web", "tier": "b"}, {"app": "web", "tier": "b", "legacy": "1"}),
    ("env!=dev,team", {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]},
                                            {"key": "team", "operator": "Exists"}]},
     {"team": "x"}, {"team": "x", "env": "dev"}),
    ("a=1,a=2", {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "a", "operator": "In", "values": ["2"]}]},
     None, {"a": "1"}),
])
def test_selectors_become_label_selector_objects_that_select_the_same(
        text: str, expected: dict[str, Any], matches: dict[str, str] | None, misses: dict[str, str]) -> None:
    obj = mc.selector_object(text)
    assert obj == expected
    selector = selector_from_label_selector_object(obj)
    if matches is not None:
        assert selector.matches(matches)
    assert not selector.matches(misses)


@pytest.mark.parametrize(("text", "message"), [
    ("", "the selector is empty (it would mirror every Service); give one such as mirror.isthmus.io/exported=true"),
    ("  ", "the selector is empty (it would mirror every Service); give one such as mirror.isthmus.io/exported=true"),
    ("replicas>2", "replicas>2: a Link's selector cannot compare numbers (> and <); a LabelSelector "
                   "holds =, ==, !=, in, notin, exists and !"),
])
def test_selectors_a_link_cannot_hold_are_refused(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as e:
        mc.selector_object(text)
    assert str(e.value) == message


def test_a_malformed_selector_is_refused_with_the_parsers_reason() -> None:
    with pytest.raises(SelectorError) as e:
        mc.selector_object("app in (web")
    assert str(e.value) == 'unable to parse requirement: "app in (web": found end of selector, expected \',\' or \')\''

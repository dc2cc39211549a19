"""The control plane's manifests: valid Kubernetes for every kubectl here, stable, and complete."""

from __future__ import annotations

import base64
import glob
import json
import shutil
import subprocess
from datetime import UTC, datetime
from functools import cache
from typing import Any

import kubernetes_validate
import pytest
import yaml

from isthmus.adapters.x509 import issue_leaf, new_issuer, new_root
from isthmus.core.inject import INJECT_ANNOTATION
from isthmus.resources import manifests as m
from isthmus.resources.manifests import InstallValues

NOW = datetime.now(UTC)
ROOT = new_root(now=NOW)
ISSUER = new_issuer(ROOT, now=NOW)
WEBHOOK_CA = new_root(now=NOW, common_name="webhook-ca")
WEBHOOK = issue_leaf(WEBHOOK_CA, m.injector_dns_name(), now=NOW)


def values(**changes: Any) -> InstallValues:
    base: dict[str, Any] = dict(
        trust_anchors_pem=ROOT.cert_pem.decode(), issuer_cert_pem=ISSUER.cert_pem.decode(),
        issuer_key_pem=ISSUER.key_pem.decode(), webhook_ca_pem=WEBHOOK_CA.cert_pem.decode(),
        webhook_cert_pem=WEBHOOK.cert_pem.decode(), webhook_key_pem=WEBHOOK.key_pem.decode(),
        image="ghcr.io/isthmus-mesh/isthmus:0.1.0", version="0.1.0")
    base.update(changes)
    return InstallValues(**base)


@cache
def kubectl_versions() -> list[str]:
    """major.minor of every kubectl binary on this machine (the Kubernetes versions they speak to)."""
    binaries = [b for b in [shutil.which("kubectl") or "/usr/bin/kubectl",
                            *sorted(glob.glob("/usr/lib/google-cloud-sdk/bin/kubectl.1.*"))]
                if shutil.which(b)]
    found: set[str] = set()
    for binary in binaries:
        out = subprocess.run([binary, "version", "--client", "-o", "json"], capture_output=True,
                             text=True, timeout=30)
        if out.returncode == 0:
            client = json.loads(out.stdout)["clientVersion"]
            found.add(f"{client['major']}.{client['minor'].rstrip('+')}")
    return sorted(found, key=lambda v: tuple(int(p) for p in v.split(".")))


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def test_the_machine_has_kubectl_binaries_of_several_versions() -> None:
    assert len(kubectl_versions()) >= 2, kubectl_versions()


@pytest.mark.parametrize("ha", [False, True])
def test_every_object_validates_for_every_kubectl_version(ha: bool) -> None:
    objects = [*m.crds(), *m.control_plane(values(ha=ha))]
    for version in kubectl_versions():
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{obj['kind']} {obj['metadata']['name']} is not valid for Kubernetes "
                            f"{version}: {e.message} at {list(e.absolute_path)}")


def test_uninstall_references_validate_as_objects_kubectl_delete_reads() -> None:
    for obj in m.uninstall_objects():
        assert set(obj) == {"apiVersion", "kind", "metadata"}
        assert set(obj["metadata"]) <= {"name", "namespace"}


def test_names_and_ports_of_the_design() -> None:
    objects = m.control_plane(values())
    assert by_kind(objects, "Namespace")[0]["metadata"]["name"] == "isthmus"
    assert by_kind(objects, "Namespace")[0]["metadata"]["labels"]["isthmus.io/is-control-plane"] == "true"
    assert {o["metadata"]["name"] for o in by_kind(objects, "ServiceAccount")} == {
        "isthmus-identity", "isthmus-destination", "isthmus-proxy-injector"}
    ports = {o["metadata"]["name"]: o["spec"]["ports"][0] for o in by_kind(objects, "Service")}
    assert ports["isthmus-identity"]["port"] == 8080
    assert ports["isthmus-dst"]["port"] == 8086
    assert (ports["isthmus-proxy-injector"]["port"], ports["isthmus-proxy-injector"]["targetPort"]) == (443, 8443)
    for obj in objects:
        if obj["kind"] not in ("Namespace",):
            assert obj["metadata"]["labels"]["isthmus.io/control-plane-ns"] == "isthmus", obj["metadata"]
    assert all("namespace" not in o["metadata"] or o["metadata"]["namespace"] == "isthmus" for o in objects)


def test_issuer_and_anchors_are_where_identity_reads_them() -> None:
    objects = m.control_plane(values())
    secret = named(objects, "Secret", "isthmus-identity-issuer")
    assert base64.b64decode(secret["data"]["crt.pem"]) == ISSUER.cert_pem
    assert base64.b64decode(secret["data"]["key.pem"]) == ISSUER.key_pem
    roots = named(objects, "ConfigMap", "isthmus-identity-trust-roots")
    assert roots["data"]["ca-bundle.crt"] == ROOT.cert_pem.decode()
    tls = named(objects, "Secret", "isthmus-proxy-injector-k8s-tls")
    assert tls["type"] == "kubernetes.io/tls"
    assert base64.b64decode(tls["data"]["tls.crt"]) == WEBHOOK.cert_pem
    config = named(objects, "ConfigMap", "isthmus-config")["data"]
    assert config["trustDomain"] == "cluster.local" and config["image"].endswith(":0.1.0")


def test_only_identity_may_read_the_issuer_secret() -> None:
    objects = m.control_plane(values())
    readers = []
    for role in by_kind(objects, "Role") + by_kind(objects, "ClusterRole"):
        for rule in role["rules"]:
            if "secrets" in rule["resources"] and (
                    "resourceNames" not in rule or "isthmus-identity-issuer" in rule["resourceNames"]):
                readers.append((role["kind"], role["metadata"]["name"]))
    assert readers == [("Role", "isthmus-identity")]
    binding = named(objects, "RoleBinding", "isthmus-identity")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "isthmus-identity", "namespace": "isthmus"}]


def test_webhook_configuration() -> None:
    hook = named(m.control_plane(values()), "MutatingWebhookConfiguration",
                 "isthmus-proxy-injector-webhook-config")["webhooks"][0]
    assert hook["clientConfig"]["service"] == {"name": "isthmus-proxy-injector", "namespace": "isthmus",
                                               "path": "/", "port": 443}
    assert base64.b64decode(hook["clientConfig"]["caBundle"]) == WEBHOOK_CA.cert_pem
    assert hook["rules"] == [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                              "resources": ["pods"], "scope": "Namespaced"}]
    assert {"key": "isthmus.io/is-control-plane", "operator": "DoesNotExist"} in \
        hook["namespaceSelector"]["matchExpressions"]
    assert (hook["failurePolicy"], hook["sideEffects"], hook["admissionReviewVersions"]) == (
        "Ignore", "None", ["v1"])


def test_containers_run_the_isthmus_command_and_are_never_injected() -> None:
    deployments = by_kind(m.control_plane(values()), "Deployment")
    commands = {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["command"]
                for d in deployments}
    assert commands == {"isthmus-identity": ["isthmus", "identity"],
                        "isthmus-destination": ["isthmus", "destination"],
                        "isthmus-proxy-injector": ["isthmus", "proxy-injector"]}
    for d in deployments:
        template = d["spec"]["template"]
        assert template["metadata"]["annotations"][INJECT_ANNOTATION] == "disabled"
        assert d["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        assert template["spec"]["containers"][0]["image"] == "ghcr.io/isthmus-mesh/isthmus:0.1.0"


def test_ha_runs_three_replicas_spread_over_nodes() -> None:
    for d in by_kind(m.control_plane(values(ha=True)), "Deployment"):
        assert d["spec"]["replicas"] == 3
        assert "podAntiAffinity" in d["spec"]["template"]["spec"]["affinity"]
    for d in by_kind(m.control_plane(values()), "Deployment"):
        assert d["spec"]["replicas"] == 1
        assert "affinity" not in d["spec"]["template"]["spec"]


def test_same_values_same_output_and_new_anchors_roll_the_pods() -> None:
    assert m.dump(m.control_plane(values())) == m.dump(m.control_plane(values()))
    assert m.dump(m.crds()) == m.dump(m.crds())
    other_root = new_root(now=NOW)
    before = {d["metadata"]["name"]: d["spec"]["template"] for d in
              by_kind(m.control_plane(values()), "Deployment")}
    after = {d["metadata"]["name"]: d["spec"]["template"] for d in
             by_kind(m.control_plane(values(trust_anchors_pem=other_root.cert_pem.decode())), "Deployment")}
    assert all(before[k] != after[k] for k in before)
    # A new webhook certificate (every install run) changes no pod template: the injector re-reads it.
    new_cert = {d["metadata"]["name"]: d["spec"]["template"] for d in
                by_kind(m.control_plane(values(webhook_cert_pem="other")), "Deployment")}
    assert new_cert == before


def test_dump_is_a_yaml_stream_without_aliases_and_with_pem_blocks() -> None:
    text = m.dump(m.control_plane(values()))
    assert "&id" not in text and "*id" not in text
    assert "ca-bundle.crt: |\n    -----BEGIN CERTIFICATE-----" in text
    assert list(yaml.safe_load_all(text)) == m.control_plane(values())


def test_uninstall_lists_everything_in_a_deletable_order() -> None:
    refs = m.uninstall_objects()
    made = [*m.control_plane(values()), *m.crds()]
    key = lambda o: (o["kind"], o["metadata"]["name"], o["metadata"].get("namespace"))  # noqa: E731
    assert sorted(map(key, refs)) == sorted(map(key, made))
    kinds = [r["kind"] for r in refs]
    assert kinds[0] == "MutatingWebhookConfiguration"
    namespace_at = kinds.index("Namespace")
    assert all("namespace" in r["metadata"] for r in refs[1:namespace_at] if r["kind"] not in (
        "ClusterRole", "ClusterRoleBinding"))
    assert all(r["kind"] == "CustomResourceDefinition" for r in refs[namespace_at + 1:])


def test_crds_are_the_policy_kinds() -> None:
    names = [c["metadata"]["name"] for c in m.crds()]
    assert names == ["servers.policy.isthmus.io", "httproutes.policy.isthmus.io"]
    assert all("links.multicluster" not in n for n in names)


def test_values_repr_hides_keys() -> None:
    assert "PRIVATE" not in repr(values()) and "redacted" in repr(values())

"""The install manifests and the control-plane commands agree: each pod's environment, resolved as the
embedded runner (or a kubelet) resolves it from the manifests' own ConfigMaps and Secrets, is one its
command can run with; and a broken environment is refused with the variable named."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from isthmus.adapters.incluster import (
    InClusterError,
    in_cluster_config,
    pod_namespace,
    service_account_dir,
)
from isthmus.adapters.x509 import issue_leaf, new_issuer, new_root
from isthmus.components.controlplane import (
    ControlPlaneConfigError,
    DestinationPodConfig,
    IdentityPodConfig,
)
from isthmus.components.injector import InjectorPodConfig
from isthmus.core import podstatus
from isthmus.resources import manifests as m

NOW = datetime.now(UTC)
ROOT = new_root(now=NOW)
ISSUER = new_issuer(ROOT, now=NOW)
CA = new_root(now=NOW, common_name="webhook-ca")
LEAF = issue_leaf(CA, m.injector_dns_name(), now=NOW)
VALUES = m.InstallValues(
    trust_anchors_pem=ROOT.cert_pem.decode(), issuer_cert_pem=ISSUER.cert_pem.decode(),
    issuer_key_pem=ISSUER.key_pem.decode(), webhook_ca_pem=CA.cert_pem.decode(),
    webhook_cert_pem=LEAF.cert_pem.decode(), webhook_key_pem=LEAF.key_pem.decode(),
    image="img", version="0.1.0", trust_domain="west.example")
OBJECTS = m.control_plane(VALUES)
POD_IP = "127.9.64.7"


def lookup(kind: str, namespace: str, name: str) -> dict[str, str] | None:
    for obj in OBJECTS:
        meta = obj["metadata"]
        if obj["kind"] == kind and meta["name"] == name and meta.get("namespace") == namespace:
            if kind == "Secret":
                return {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}
            return dict(obj["data"])
    return None


def pod_env(deployment: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    dep = next(o for o in OBJECTS if o["kind"] == "Deployment" and o["metadata"]["name"] == deployment)
    template = dep["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {**template["metadata"], "name": f"{deployment}-abc", "namespace": "isthmus"},
           "spec": template["spec"]}
    container = template["spec"]["containers"][0]
    env = podstatus.resolve_env(pod, container, pod_ip=POD_IP, host_ip="127.9.0.11", lookup=lookup,
                                service_env={"ISTHMUS_POD_DIR": str(tmp_path), **extra})
    assert podstatus.expand_command(container, env)[0] == "isthmus"
    return env


def test_identity_pod_environment(tmp_path: Path) -> None:
    config = IdentityPodConfig.from_env(pod_env("isthmus-identity", tmp_path))
    assert config.issuer.cert_pem == ISSUER.cert_pem and config.issuer.key_pem == ISSUER.key_pem
    assert config.trust_anchors_pem == ROOT.cert_pem
    assert config.trust_domain == "west.example"
    assert config.address == (POD_IP, 8080) and config.admin_address == (POD_IP, 9990)


def test_destination_pod_environment(tmp_path: Path) -> None:
    config = DestinationPodConfig.from_env(pod_env("isthmus-destination", tmp_path))
    assert config.identity == "isthmus-destination.isthmus.serviceaccount.identity.isthmus.west.example"
    assert config.identity_service == "isthmus-identity:8080"
    assert config.namespace == "isthmus"
    assert config.address == (POD_IP, 8086) and config.admin_address == (POD_IP, 9996)


def test_injector_pod_environment(tmp_path: Path) -> None:
    config = InjectorPodConfig.from_env(pod_env("isthmus-proxy-injector", tmp_path))
    assert config.credentials.cert_pem == LEAF.cert_pem
    assert config.settings.trust_anchors_pem == ROOT.cert_pem.decode()
    assert config.settings.trust_domain == "west.example"
    assert (config.settings.image, config.settings.version) == ("img", "0.1.0")
    assert (config.identity_service, config.destination_service) == ("isthmus-identity:8080", "isthmus-dst:8086")
    assert config.address == (POD_IP, 8443) and config.admin_address == (POD_IP, 9995)


@pytest.mark.parametrize(("change", "message"), [
    ({"ISTHMUS_IDENTITY_ISSUER_KEY": ""}, "ISTHMUS_IDENTITY_ISSUER_KEY is not set (the issuer's private key, PEM)"),
    ({"ISTHMUS_IDENTITY_TRUST_ANCHORS": "garbage"},
     "ISTHMUS_IDENTITY_TRUST_ANCHORS holds no PEM certificate (the trust anchors, PEM)"),
    ({"ISTHMUS_IDENTITY_LISTEN_ADDR": "nowhere"}, "ISTHMUS_IDENTITY_LISTEN_ADDR='nowhere' is not HOST:PORT"),
    ({"ISTHMUS_IDENTITY_TRUST_DOMAIN": "Not_A_Domain"},
     "ISTHMUS_IDENTITY_TRUST_DOMAIN='Not_A_Domain' is not a trust domain"),
])
def test_a_broken_environment_is_refused_naming_the_variable(tmp_path: Path, change: dict[str, str],
                                                            message: str) -> None:
    env = {**pod_env("isthmus-identity", tmp_path), **change}
    with pytest.raises(ControlPlaneConfigError) as e:
        IdentityPodConfig.from_env(env)
    assert str(e.value).startswith(message)


def make_account(pod_dir: Path, *, token: bool = True) -> Path:
    account = pod_dir / "serviceaccount"
    account.mkdir(parents=True)
    (account / "ca.crt").write_bytes(ROOT.cert_pem)
    (account / "namespace").write_text("isthmus")
    if token:
        (account / "token").write_text("t0ken\n")
    return account


def test_in_cluster_config_from_the_embedded_pod_directory(tmp_path: Path) -> None:
    account = make_account(tmp_path)
    env = {"ISTHMUS_POD_DIR": str(tmp_path), "KUBERNETES_SERVICE_HOST": "127.9.0.1",
           "KUBERNETES_SERVICE_PORT": "6443"}
    assert service_account_dir(env) == account
    config = in_cluster_config(env).get()
    assert config.cluster.server == "https://127.9.0.1:6443"
    assert config.cluster.certificate_auth == str(account / "ca.crt")
    assert config.user is not None and config.user.token_file == str(account / "token")
    assert config.namespace == "isthmus"
    assert pod_namespace(env) == "isthmus"
    assert pod_namespace({**env, "POD_NAMESPACE": "other"}) == "other"


def test_in_cluster_config_says_what_is_missing(tmp_path: Path) -> None:
    make_account(tmp_path, token=False)
    env: dict[str, Any] = {"ISTHMUS_POD_DIR": str(tmp_path)}
    with pytest.raises(InClusterError, match="KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set"):
        in_cluster_config(env)
    env.update(KUBERNETES_SERVICE_HOST="127.9.0.1", KUBERNETES_SERVICE_PORT="6443")
    with pytest.raises(InClusterError) as e:
        in_cluster_config(env)
    assert str(e.value).startswith(f"the pod's service-account token {tmp_path / 'serviceaccount' / 'token'} "
                                   f"does not exist")


async def test_service_address_passes_ips_through_and_refuses_malformed_targets() -> None:
    from isthmus.adapters.incluster import service_address

    no_api: Any = None  # an IP:PORT needs no lookup
    assert await service_address(no_api, "127.9.128.5:8080", "isthmus") == "127.9.128.5:8080"
    for bad in ("isthmus-identity", "isthmus-identity:http", ":8080"):
        with pytest.raises(InClusterError) as e:
            await service_address(no_api, bad, "isthmus")
        assert str(e.value) == f"{bad!r} is not SERVICE:PORT or IP:PORT"

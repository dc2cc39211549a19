"""The Link CRD (isthmus.resources.multicluster): valid for Kubernetes, and it keeps what the mirror writes."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from isthmus.core import mirror as core
from isthmus.resources.crdschema import validate_custom
from isthmus.resources.multicluster import link_crd

SCHEMA = link_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def link(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "multicluster.isthmus.io/v1alpha1", "kind": "Link",
            "metadata": {"name": "east", "namespace": "isthmus-multicluster"},
            "spec": {"targetClusterName": "east", "gatewayAddress": "127.9.192.1",
                     "gatewayIdentity": "gw.identity", **spec}}


@pytest.mark.parametrize("version", ["1.27", "1.33"])
def test_the_crd_is_a_valid_kubernetes_object(version: str) -> None:
    kubernetes_validate.validate(link_crd(), version, strict=True)


def test_the_crd_names_the_link_of_the_design() -> None:
    crd = link_crd()
    assert crd["metadata"]["name"] == "links.multicluster.isthmus.io"
    assert crd["spec"]["scope"] == "Namespaced"
    version = crd["spec"]["versions"][0]
    assert (version["name"], crd["spec"]["names"]["kind"]) == ("v1alpha1", "Link")
    assert version["subresources"] == {"status": {}}
    assert set(version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]) == {
        "targetClusterName", "targetClusterDomain", "clusterCredentialsSecret", "gatewayAddress", "gatewayPort",
        "gatewayIdentity", "probeSpec", "selector", "createMissingNamespaces"}


def test_a_full_link_and_the_status_the_mirror_writes_are_kept_whole() -> None:
    obj = link(targetClusterDomain="cluster.local", clusterCredentialsSecret="cluster-credentials-east",
               gatewayPort=4143, probeSpec={"path": "/ready", "port": 4191, "period": "3s", "timeout": "500ms",
                                            "failureThreshold": 3},
               selector={"matchLabels": {"mirror.isthmus.io/exported": "true"},
                         "matchExpressions": [{"key": "tier", "operator": "Exists"}]},
               createMissingNamespaces=True)
    services = [core.ServiceStatus("emojivoto", "web-svc", "web-svc-east", (
        core.Condition("Mirrored", "True", "Mirrored", "m"), core.Condition("EndpointsReady", "False", "x", "y")))]
    health = core.LinkHealth(remote="Reachable", synced=True, gateway=core.Gateway(("127.9.192.1",)))
    obj["status"] = core.link_status(None, health, services, "2024-05-01T10:00:00Z")
    result = validate_custom(SCHEMA, obj)
    assert result.errors == []
    assert result.unknown_fields == []
    assert core.LinkSpec.from_object(obj).create_missing_namespaces


@pytest.mark.parametrize(("spec", "field"), [
    ({"gatewayPort": "4143"}, "spec.gatewayPort"),
    ({"targetClusterName": "East"}, "spec.targetClusterName"),
    ({"probeSpec": {"period": "3 seconds"}}, "spec.probeSpec.period"),
    ({"probeSpec": {"failureThreshold": 0}}, "spec.probeSpec.failureThreshold"),
])
def test_the_schema_refuses_malformed_links(spec: dict[str, Any], field: str) -> None:
    errors = validate_custom(SCHEMA, link(**spec)).errors
    assert any(field in str(e) for e in errors), errors

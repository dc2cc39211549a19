"""OpenAPI v3 index and documents: what kubectl reads before apply and explain."""

from __future__ import annotations

import re
from typing import Any

import pytest

from isthmus.resources.openapi import (
    OpenAPICache,
    custom_definition_name,
    document_hash,
    group_version_path,
    openapi_v3_document,
    openapi_v3_index,
)
from isthmus.resources.registry import BUILTIN, Registry, ResourceType, UnknownResource

LINK_CRD: dict[str, Any] = {
    "metadata": {"name": "links.mesh.isthmus.dev"},
    "spec": {
        "group": "mesh.isthmus.dev",
        "scope": "Namespaced",
        "names": {"plural": "links", "singular": "link", "kind": "Link"},
        "versions": [{
            "name": "v1alpha1", "served": True, "storage": True, "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {"peer": {"type": "string"}}}}}},
        }],
    },
}


def _refs(node: Any, out: set[str]) -> set[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                out.add(v)
            else:
                _refs(v, out)
    elif isinstance(node, list):
        for x in node:
            _refs(x, out)
    return out


def test_index_lists_every_group_version() -> None:
    reg = Registry()
    reg.set_crd(LINK_CRD)
    index = openapi_v3_index(reg)
    expected = {group_version_path(g, v) for g, vs in reg.group_versions().items() for v in vs}
    assert set(index["paths"]) == expected
    assert {"api/v1", "apis/apps/v1", "apis/mesh.isthmus.dev/v1alpha1", "apis/coordination.k8s.io/v1",
            "apis/rbac.authorization.k8s.io/v1", "apis/apiextensions.k8s.io/v1",
            "apis/authentication.k8s.io/v1", "apis/authorization.k8s.io/v1",
            "apis/admissionregistration.k8s.io/v1"} == expected
    url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
    assert re.fullmatch(r"/openapi/v3/apis/apps/v1\?hash=[0-9A-F]{128}", url)
    assert url.endswith(document_hash(openapi_v3_document(reg, "apps", "v1")))


def test_document_declares_field_validation_and_gvk() -> None:
    doc = openapi_v3_document(Registry(), "apps", "v1")
    assert doc["openapi"] == "3.0.0"
    item = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]
    patch = item["patch"]
    names = {p["name"] for p in patch["parameters"] if p["in"] == "query"}
    assert {"fieldValidation", "dryRun", "fieldManager"} <= names
    assert patch["x-kubernetes-group-version-kind"] == {"group": "apps", "kind": "Deployment", "version": "v1"}
    assert patch["x-kubernetes-action"] == "patch"
    assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]
    for url, methods in (("/apis/apps/v1/namespaces/{namespace}/deployments", ("post",)),
                         ("/apis/apps/v1/namespaces/{namespace}/deployments/{name}", ("put", "patch")),
                         ("/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status", ("put", "patch"))):
        for method in methods:
            op = doc["paths"][url][method]
            assert "fieldValidation" in {p["name"] for p in op["parameters"]}, (url, method)
    collection = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]
    assert collection["post"]["x-kubernetes-action"] == "post"
    assert collection["get"]["x-kubernetes-action"] == "list"
    scale = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"]
    assert scale["x-kubernetes-group-version-kind"] == {"group": "autoscaling", "kind": "Scale", "version": "v1"}


def test_components_are_openapi3_and_closed_over_refs() -> None:
    doc = openapi_v3_document(Registry(), "apps", "v1")
    schemas = doc["components"]["schemas"]
    dep = schemas["io.k8s.api.apps.v1.Deployment"]
    assert dep["x-kubernetes-group-version-kind"] == [{"group": "apps", "kind": "Deployment", "version": "v1"}]
    assert dep["type"] == "object"
    assert dep["properties"]["apiVersion"] == {"description": dep["properties"]["apiVersion"]["description"],
                                               "type": "string"}
    assert dep["properties"]["spec"]["allOf"] == [{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"}]
    containers = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    assert containers["type"] == "array"
    assert containers["items"] == {"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}
    assert schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"] == "int-or-string"
    assert "io.k8s.api.apps.v1.DeploymentList" in schemas
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in schemas
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.Status" in schemas
    refs = _refs(doc, set())
    assert all(r.startswith("#/components/schemas/") for r in refs)
    assert {r.removeprefix("#/components/schemas/") for r in refs} <= set(schemas)
    text = repr(doc)
    assert "'null'" not in text and "#/$defs/" not in text and "'additionalProperties': False" not in text


def test_custom_resource_document() -> None:
    reg = Registry()
    reg.set_crd(LINK_CRD)
    doc = openapi_v3_document(reg, "mesh.isthmus.dev", "v1alpha1")
    name = custom_definition_name(reg.lookup("mesh.isthmus.dev", "v1alpha1", "links"))
    assert name == "dev.isthmus.mesh.v1alpha1.Link"
    schema = doc["components"]["schemas"][name]
    assert schema["x-kubernetes-group-version-kind"] == [
        {"group": "mesh.isthmus.dev", "kind": "Link", "version": "v1alpha1"}]
    assert schema["properties"]["spec"] == {"type": "object", "properties": {"peer": {"type": "string"}}}
    assert schema["properties"]["metadata"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]
    assert name + "List" in doc["components"]["schemas"]
    patch = doc["paths"]["/apis/mesh.isthmus.dev/v1alpha1/namespaces/{namespace}/links/{name}"]["patch"]
    assert "fieldValidation" in {p["name"] for p in patch["parameters"]}
    assert "application/strategic-merge-patch+json" not in patch["requestBody"]["content"]
    assert "application/merge-patch+json" in patch["requestBody"]["content"]
    refs = {r.removeprefix("#/components/schemas/") for r in _refs(doc, set())}
    assert refs <= set(doc["components"]["schemas"])


def test_core_document_and_unknown_group_version() -> None:
    pods_with_log = ResourceType("", "v1", "pods", "Pod", True, subresources=("status", "log"),
                                 definition="io.k8s.api.core.v1.Pod")
    reg = Registry([pods_with_log, *(t for t in BUILTIN if t.plural != "pods")])
    doc = openapi_v3_document(reg, "", "v1")
    log = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/log"]["get"]
    assert log["responses"]["200"]["content"] == {"text/plain": {"schema": {"type": "string"}}}
    assert "/api/v1/pods" in doc["paths"]  # list across namespaces
    assert "/api/v1/namespaces/{name}" in doc["paths"]
    token = doc["paths"]["/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"]["post"]
    assert token["x-kubernetes-group-version-kind"]["kind"] == "TokenRequest"
    with pytest.raises(UnknownResource):
        openapi_v3_document(Registry(), "apps", "v2")


def test_cache_reuses_and_invalidates() -> None:
    reg = Registry()
    cache = OpenAPICache(reg)
    doc = cache.document("apps", "v1")
    assert cache.document("apps", "v1") is doc
    assert "apis/mesh.isthmus.dev/v1alpha1" not in cache.index()["paths"]
    reg.set_crd(LINK_CRD)
    assert "apis/mesh.isthmus.dev/v1alpha1" not in cache.index()["paths"]  # stale until invalidated
    cache.invalidate()
    index = cache.index()
    assert "apis/mesh.isthmus.dev/v1alpha1" in index["paths"]
    assert cache.document("apps", "v1") is not doc
    h = cache.hash("mesh.isthmus.dev", "v1alpha1")
    assert index["paths"]["apis/mesh.isthmus.dev/v1alpha1"]["serverRelativeURL"].endswith("hash=" + h)
    assert h == document_hash(cache.document("mesh.isthmus.dev", "v1alpha1"))
    assert cache.document_bytes("apps", "v1").startswith(b'{"components":')

"""Built-in schemas: validation messages, unknown fields, pruning and patch metadata."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from isthmus.resources.registry import BUILTIN, ResourceType, from_crd
from isthmus.resources.schemas import (
    SchemaPatchMeta,
    ValidationResult,
    patch_meta_for,
    prune_unknown,
    validate_builtin,
)

TYPES = {t.kind: t for t in BUILTIN}
DEPLOYMENT = TYPES["Deployment"]
SERVICE = TYPES["Service"]


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "web",
                        "image": "nginx:1.27",
                        "ports": [{"containerPort": 8080, "name": "http"}],
                        "env": [{"name": "A", "value": "1"},
                                {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                        "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                    }],
                },
            },
        },
    }


def service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    }


def test_good_deployment_and_service_validate_clean() -> None:
    assert validate_builtin(DEPLOYMENT, deployment()) == ValidationResult()
    assert validate_builtin(SERVICE, service()) == ValidationResult()


def test_nulls_and_server_fields_are_accepted() -> None:
    d = deployment()
    d["metadata"]["creationTimestamp"] = None
    d["metadata"]["managedFields"] = [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1",
                                       "fieldsV1": {"f:spec": {"f:replicas": {}}}, "time": "2025-01-01T00:00:00Z"}]
    d["status"] = {"replicas": 3, "conditions": [{"type": "Available", "status": "True",
                                                  "lastTransitionTime": "2025-01-01T00:00:00Z"}]}
    assert validate_builtin(DEPLOYMENT, d).errors == []


def test_bad_deployment_reports_paths_and_rules() -> None:
    d = deployment()
    d["spec"]["replicas"] = "three"
    container = d["spec"]["template"]["spec"]["containers"][0]
    container["imagee"] = "typo"
    container["imagePullPolicy"] = "Sometimes"
    container["resources"]["limits"]["cpu"] = "lots"
    d["spec"]["foo"] = {"bar": 1}
    del d["spec"]["selector"]
    d["apiVersion"] = "apps/v2"
    res = validate_builtin(DEPLOYMENT, d)
    assert not res.ok
    assert res.errors == [
        'apiVersion: Unsupported value: "apps/v2": supported values: "apps/v1"',
        'spec.replicas: Invalid value: "three": must be of type integer',
        "spec.template.spec.containers[0].resources.limits[cpu]: Invalid value: \"lots\": quantities must "
        "match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        'spec.template.spec.containers[0].imagePullPolicy: Unsupported value: "Sometimes": '
        'supported values: "Always", "IfNotPresent", "Never"',
        "spec.selector: Required value",
    ]
    assert res.unknown_fields == ["spec.template.spec.containers[0].imagee", "spec.foo"]
    assert res.unknown_field_messages() == [
        'unknown field "spec.template.spec.containers[0].imagee"', 'unknown field "spec.foo"']


def test_unknown_fields_alone_are_not_errors() -> None:
    d = deployment()
    d["metadata"]["labelz"] = {"x": "y"}
    res = validate_builtin(DEPLOYMENT, d)
    assert res.ok
    assert res.unknown_fields == ["metadata.labelz"]


@pytest.mark.parametrize(("mutate", "error"), [
    (lambda s: s["spec"]["ports"][0].__setitem__("port", "eighty"),
     'spec.ports[0].port: Invalid value: "eighty": must be of type integer'),
    (lambda s: s["spec"].__setitem__("type", "Internal"),
     'spec.type: Unsupported value: "Internal": supported values: '
     '"ClusterIP", "ExternalName", "LoadBalancer", "NodePort"'),
    (lambda s: s["spec"]["ports"][0].__setitem__("targetPort", True),
     "spec.ports[0].targetPort: Invalid value: true: must be of type integer or string"),
    (lambda s: s["spec"]["ports"][0].__setitem__("port", 2**40),
     "spec.ports[0].port: Invalid value: 1099511627776: must fit in int32"),
    (lambda s: s["spec"]["ports"][0].pop("port"), "spec.ports[0].port: Required value"),
    (lambda s: s["spec"]["selector"].__setitem__("app", 7),
     "spec.selector[app]: Invalid value: 7: must be of type string"),
    (lambda s: s.__setitem__("kind", "Pod"), 'kind: Unsupported value: "Pod": supported values: "Service"'),
    (lambda s: s["metadata"].__setitem__("creationTimestamp", "yesterday"),
     'metadata.creationTimestamp: Invalid value: "yesterday": must be an RFC 3339 date-time '
     "(like 2006-01-02T15:04:05Z)"),
])
def test_service_errors(mutate: Any, error: str) -> None:
    s = service()
    mutate(s)
    assert validate_builtin(SERVICE, s).errors == [error]


def test_secret_data_must_be_base64() -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
              "data": {"ok": "aGVsbG8=", "bad": "not base64!"}}
    assert validate_builtin(TYPES["Secret"], secret).errors == [
        'data[bad]: Invalid value: "not base64!": illegal base64 data']


def test_prune_unknown_drops_only_unknown_fields_and_copies() -> None:
    d = deployment()
    d["spec"]["foo"] = 1
    d["spec"]["template"]["spec"]["containers"][0]["imagee"] = "x"
    before = copy.deepcopy(d)
    pruned = prune_unknown(DEPLOYMENT, d)
    assert d == before  # input untouched
    assert pruned == deployment()
    pruned["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "C"})
    assert d == before  # no shared containers


def test_custom_resources_are_refused() -> None:
    crd = {"metadata": {"name": "links.mesh.isthmus.dev"},
           "spec": {"group": "mesh.isthmus.dev", "names": {"plural": "links", "kind": "Link"},
                    "versions": [{"name": "v1alpha1", "served": True}]}}
    link: ResourceType = from_crd(crd)[0]
    with pytest.raises(ValueError):
        validate_builtin(link, {})
    with pytest.raises(ValueError):
        prune_unknown(link, {})
    assert patch_meta_for(link) is None


def walk(meta: SchemaPatchMeta | None, *names: str) -> SchemaPatchMeta:
    """Follow fields ("[]" for list items / map values), asserting each step exists."""
    for name in names:
        assert meta is not None
        meta = meta.items() if name == "[]" else meta.field(name)
    assert meta is not None
    return meta


def test_patch_meta_of_deployment_containers_and_env() -> None:
    pod_spec = walk(patch_meta_for(DEPLOYMENT), "spec", "template", "spec")
    containers = walk(pod_spec, "containers")
    assert (containers.merge_key, containers.strategy) == ("name", "merge")
    container = walk(containers, "[]")
    env = walk(container, "env")
    assert (env.merge_key, env.strategy) == ("name", "merge")
    env_var = walk(env, "[]")
    assert env_var.merge_key is None and env_var.strategy == ""
    assert container.field("image") is not None and container.field("imagee") is None
    volumes = walk(pod_spec, "volumes")
    assert (volumes.merge_key, volumes.strategy) == ("name", "merge,retainKeys")
    strategy = walk(patch_meta_for(DEPLOYMENT), "spec", "strategy")
    assert strategy.strategy == "retainKeys" and strategy.merge_key is None
    # Cached per definition: the same walk returns the same objects.
    assert walk(patch_meta_for(DEPLOYMENT), "spec", "template", "spec") is pod_spec


def test_patch_meta_of_service_ports_and_label_maps() -> None:
    ports = walk(patch_meta_for(SERVICE), "spec", "ports")
    assert (ports.merge_key, ports.strategy) == ("port", "merge")
    labels = walk(patch_meta_for(SERVICE), "metadata", "labels")
    assert labels.merge_key is None and labels.strategy == ""
    assert walk(labels, "[]").field("x") is None
    assert walk(patch_meta_for(SERVICE), "metadata", "ownerReferences").merge_key == "uid"


def _average_seconds(rt: ResourceType, obj: dict[str, Any], n: int = 2000) -> float:
    for _ in range(100):
        validate_builtin(rt, obj)
    start = time.perf_counter()
    for _ in range(n):
        validate_builtin(rt, obj)
    return (time.perf_counter() - start) / n


def test_validation_is_fast() -> None:
    # Well under a millisecond each; generous bound for slow CI machines.
    assert _average_seconds(DEPLOYMENT, deployment()) < 0.0005
    assert _average_seconds(SERVICE, service()) < 0.0005

"""Injection decisions and the JSON patch that adds the sidecar proxy (pure)."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from isthmus.core.inject import (
    AnnotateError,
    InjectConfig,
    annotate,
    decide,
    inject,
    patch,
    workload_of,
)

ANCHORS = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
CONFIG = InjectConfig(image="ghcr.io/isthmus-mesh/isthmus:0.1.0", version="0.1.0", trust_anchors_pem=ANCHORS,
                      identity_addr="127.9.128.5:8080", destination_addr="127.9.128.6:8086")


def pod(**meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1a2b3c4d-x7k2p", "namespace": "emojivoto", "labels": {"app": "web"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                          "uid": "u1", "controller": True}], **meta},
        "spec": {
            "serviceAccountName": "web",
            "containers": [{"name": "web", "image": "web:1", "command": ["web"],
                            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                                    {"name": "WEB_PORT", "value": "8080"}]}],
        },
    }


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# ------------------------------------------------------------------ decide


@pytest.mark.parametrize(("pod_value", "ns_value", "inject_it", "reason"), [
    ("enabled", None, True, "the pod is annotated isthmus.io/inject: enabled"),
    (None, "enabled", True, "its namespace is annotated isthmus.io/inject: enabled"),
    ("disabled", "enabled", False, "the pod is annotated isthmus.io/inject: disabled"),
    ("enabled", "disabled", True, "the pod is annotated isthmus.io/inject: enabled"),
    (None, None, False, "neither the pod nor its namespace is annotated isthmus.io/inject: enabled"),
    (None, "disabled", False, "neither the pod nor its namespace"),
    ("yes", "enabled", False, "the pod's isthmus.io/inject annotation is 'yes'; use enabled or disabled"),
])
def test_decide_from_pod_and_namespace_annotations(pod_value: str | None, ns_value: str | None,
                                                   inject_it: bool, reason: str) -> None:
    p = pod(annotations={"isthmus.io/inject": pod_value} if pod_value else {})
    decision = decide(p, {"isthmus.io/inject": ns_value} if ns_value else {})
    assert decision.inject is inject_it
    assert decision.reason.startswith(reason)


def test_never_twice_and_never_in_the_host_network() -> None:
    injected = inject(pod(annotations={"isthmus.io/inject": "enabled"}), "emojivoto", CONFIG)
    assert decide(injected, {}).reason == "the pod already has an isthmus-proxy container"
    host = pod(annotations={"isthmus.io/inject": "enabled"})
    host["spec"]["hostNetwork"] = True
    assert decide(host, {}).inject is False
    assert "host's network" in decide(host, {}).reason


# ------------------------------------------------------------------ workload names


@pytest.mark.parametrize(("meta", "expected"), [
    ({}, ("deploy", "web")),
    ({"ownerReferences": [{"kind": "ReplicaSet", "name": "web-5d4f8c9b7", "controller": True}],
      "labels": {"pod-template-hash": "5d4f8c9b7"}}, ("deploy", "web")),
    ({"ownerReferences": [{"kind": "ReplicaSet", "name": "batch", "controller": True}]}, ("rs", "batch")),
    ({"ownerReferences": [{"kind": "StatefulSet", "name": "db", "controller": True}]}, ("sts", "db")),
    ({"ownerReferences": [{"kind": "DaemonSet", "name": "agent", "controller": True}]}, ("ds", "agent")),
    ({"ownerReferences": [], "generateName": "web-5d4f8c9b7-", "labels": {"pod-template-hash": "5d4f8c9b7"}},
     ("deploy", "web")),
    ({"ownerReferences": []}, None),
])
def test_workload_of(meta: dict[str, Any], expected: tuple[str, str] | None) -> None:
    assert workload_of(pod(**meta)) == expected


# ------------------------------------------------------------------ the patch


def test_patch_applies_with_an_independent_json_patch_library_and_matches_inject() -> None:
    p = pod(annotations={"isthmus.io/inject": "enabled"})
    ops = patch(p, "emojivoto", CONFIG)
    assert jsonpatch.apply_patch(p, ops) == inject(p, "emojivoto", CONFIG)


def test_proxy_container_has_the_proxy_environment() -> None:
    result = inject(pod(), "emojivoto", CONFIG)
    app, proxy = result["spec"]["containers"]
    assert app["name"] == "web" and proxy["name"] == "isthmus-proxy"
    assert proxy["command"] == ["isthmus", "proxy"]
    assert proxy["image"] == "ghcr.io/isthmus-mesh/isthmus:0.1.0"
    env = env_of(proxy)
    assert proxy["env"][0]["name"] == "POD_IP"  # declared before anything uses it
    assert env["ISTHMUS_PROXY_IDENTITY_LOCAL_NAME"] == \
        "web.emojivoto.serviceaccount.identity.isthmus.cluster.local"
    assert env["ISTHMUS_PROXY_IDENTITY_TRUST_ANCHORS"] == ANCHORS
    assert env["ISTHMUS_PROXY_IDENTITY_SVC_ADDR"] == "127.9.128.5:8080"
    assert env["ISTHMUS_PROXY_DESTINATION_SVC_ADDR"] == "127.9.128.6:8086"
    assert env["ISTHMUS_PROXY_DESTINATION_SVC_NAME"] == \
        "isthmus-destination.isthmus.serviceaccount.identity.isthmus.cluster.local"
    assert env["ISTHMUS_PROXY_POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["ISTHMUS_PROXY_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["ISTHMUS_PROXY_WORKLOAD"] == "deploy/web"
    assert {(p["name"], p["containerPort"]) for p in proxy["ports"]} == {
        ("isthmus-proxy", 4143), ("isthmus-admin", 4191)}
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 4191}
    assert proxy["livenessProbe"]["httpGet"] == {"path": "/live", "port": 4191}


def test_identity_uses_the_default_service_account_and_the_trust_domain() -> None:
    p = pod()
    del p["spec"]["serviceAccountName"]
    config = InjectConfig(**{**CONFIG.__dict__, "trust_domain": "west.example"})
    env = env_of(inject(p, "shop", config)["spec"]["containers"][1])
    assert env["ISTHMUS_PROXY_IDENTITY_LOCAL_NAME"] == "default.shop.serviceaccount.identity.isthmus.west.example"


def test_app_containers_send_through_the_sidecar() -> None:
    p = pod()
    p["spec"]["containers"].append({"name": "side", "image": "x", "command": ["x"]})  # no env at all
    result = inject(p, "emojivoto", CONFIG)
    web, side, _proxy = result["spec"]["containers"]
    for container in (web, side):
        names = [e["name"] for e in container["env"]]
        env = env_of(container)
        assert env["HTTP_PROXY"] == env["http_proxy"] == "http://$(POD_IP):4140"
        assert env["NO_PROXY"] == "localhost,127.0.0.1,$(POD_IP),$(KUBERNETES_SERVICE_HOST)"
        assert names.index("POD_IP") < names.index("HTTP_PROXY")  # $(POD_IP) expands
        assert names.count("POD_IP") == 1
    assert env_of(web)["WEB_PORT"] == "8080"


def test_a_container_with_its_own_proxy_keeps_it() -> None:
    p = pod()
    p["spec"]["containers"][0]["env"].append({"name": "HTTP_PROXY", "value": "http://egress:3128"})
    web = inject(p, "emojivoto", CONFIG)["spec"]["containers"][0]
    assert env_of(web)["HTTP_PROXY"] == "http://egress:3128"
    assert "http_proxy" not in env_of(web)


def test_annotations_and_labels() -> None:
    result = inject(pod(annotations={"isthmus.io/inject": "enabled"}), "emojivoto", CONFIG)
    meta = result["metadata"]
    assert meta["annotations"] == {"isthmus.io/inject": "enabled", "isthmus.io/proxy-version": "0.1.0",
                                   "kubectl.kubernetes.io/default-container": "web"}
    assert meta["labels"] == {"app": "web", "isthmus.io/control-plane-ns": "isthmus",
                              "isthmus.io/workload-ns": "emojivoto", "isthmus.io/proxy-deployment": "web",
                              "isthmus.io/proxy-serviceaccount": "web"}
    # A pod without annotations or labels gets the maps; a set default container is kept.
    bare = pod(annotations={"kubectl.kubernetes.io/default-container": "other"})
    del bare["metadata"]["labels"]
    result = inject(bare, "emojivoto", CONFIG)
    assert result["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "other"
    assert result["metadata"]["labels"]["isthmus.io/workload-ns"] == "emojivoto"


def test_inputs_are_not_modified_and_output_is_stable() -> None:
    p = pod()
    before = copy.deepcopy(p)
    assert patch(p, "emojivoto", CONFIG) == patch(p, "emojivoto", CONFIG)
    inject(p, "emojivoto", CONFIG)
    assert p == before


# ------------------------------------------------------------------ annotate (isthmus inject)


def test_annotate_marks_pod_templates_pods_and_namespaces() -> None:
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
              "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {}}}}
    out = annotate(deploy)
    assert out.doc["spec"]["template"]["metadata"]["annotations"] == {"isthmus.io/inject": "enabled"}
    assert out.report == ['deployment "web" injected']
    assert "annotations" not in deploy["spec"]["template"]["metadata"]  # input untouched
    cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {}}}}}}
    assert annotate(cron).doc["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"] == {
        "isthmus.io/inject": "enabled"}
    ns = annotate({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "emojivoto"}})
    assert ns.doc["metadata"]["annotations"] == {"isthmus.io/inject": "enabled"}
    disabled = annotate({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "p", "annotations": {"isthmus.io/inject": "disabled", "a": "b"}}})
    assert disabled.doc["metadata"]["annotations"] == {"isthmus.io/inject": "enabled", "a": "b"}


def test_annotate_leaves_other_kinds_and_walks_lists() -> None:
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-svc"}, "spec": {"ports": []}}
    out = annotate(svc)
    assert out.doc == svc and out.report == ['service "web-svc" skipped']
    lst = {"apiVersion": "v1", "kind": "List", "items": [
        svc, {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
              "spec": {"template": {"spec": {}}}}]}
    out = annotate(lst)
    assert out.doc["items"][0] == svc
    assert out.doc["items"][1]["spec"]["template"]["metadata"]["annotations"]["isthmus.io/inject"] == "enabled"
    assert out.report == ['service "web-svc" skipped', 'statefulset "db" injected']
    assert annotate(None).doc is None


@pytest.mark.parametrize(("doc", "message"), [
    (["a"], "document 3 is not a Kubernetes object (a mapping with apiVersion and kind), but a list"),
    ({"kind": "Deployment"}, "document 3 is not a Kubernetes object: it needs apiVersion and kind"),
    ({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {}},
     "document 3 (Deployment web) has no spec.template, so it has no pod template to annotate"),
    ({"apiVersion": "v1", "kind": "Pod", "metadata": {"annotations": "x"}},
     "document 3 (Pod).metadata.annotations is not a mapping"),
    ({"apiVersion": "v1", "kind": "List", "items": [1]}, "document 3.items[0] is not a Kubernetes object"),
])
def test_annotate_refuses_what_is_not_a_manifest(doc: Any, message: str) -> None:
    with pytest.raises(AnnotateError) as e:
        annotate(doc, where="document 3")
    assert str(e.value).startswith(message)

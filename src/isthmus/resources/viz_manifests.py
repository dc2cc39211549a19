"""What `isthmus viz install` prints: namespace `isthmus-viz`, RBAC, the viz pod and its Service.

The `isthmus-viz` Deployment runs `isthmus viz-api`: the metrics collector
(or, with a Prometheus URL, no collector) and the viz API on port 8085,
configured by its environment (`ENV_*`). The pod is not meshed (annotation
`isthmus.io/inject: disabled`): it reads proxies' admin ports and the API,
and clients reach it by its Service. Its ClusterRole reads pods, services,
endpoints, namespaces, deployments and Links — nothing else, and never writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from isthmus.core.inject import INJECT_ANNOTATION, RUN_AS_USER
from isthmus.core.mirror import LINK_GROUP, LINK_PLURAL

__all__ = ["NAMESPACE", "SERVICE", "VIZ_PORT", "VizValues", "viz"]

NAMESPACE = "isthmus-viz"
SERVICE = "isthmus-viz"
VIZ_PORT = 8085
EXTENSION_LABEL = "isthmus.io/extension"
COMPONENT_LABEL = "isthmus.io/viz-component"

ENV_LISTEN_ADDR = "ISTHMUS_VIZ_LISTEN_ADDR"
ENV_CLUSTER_NAME = "ISTHMUS_VIZ_CLUSTER_NAME"
ENV_TRUST_DOMAIN = "ISTHMUS_VIZ_TRUST_DOMAIN"
ENV_PROMETHEUS_URL = "ISTHMUS_VIZ_PROMETHEUS_URL"
ENV_SCRAPE_INTERVAL = "ISTHMUS_VIZ_SCRAPE_INTERVAL"


@dataclass(frozen=True)
class VizValues:
    image: str
    cluster_name: str
    trust_domain: str = "cluster.local"
    prometheus_url: str = ""
    scrape_interval: float = 10.0


def _meta(name: str, *, namespaced: bool = True, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespaced:
        meta["namespace"] = NAMESPACE
    meta["labels"] = {EXTENSION_LABEL: "viz"}
    meta.update(extra)
    return meta


def viz(values: VizValues) -> list[dict[str, Any]]:
    selector = {COMPONENT_LABEL: "api"}
    env = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": ENV_LISTEN_ADDR, "value": f"$(POD_IP):{VIZ_PORT}"},
        {"name": ENV_CLUSTER_NAME, "value": values.cluster_name},
        {"name": ENV_TRUST_DOMAIN, "value": values.trust_domain},
        {"name": ENV_SCRAPE_INTERVAL, "value": f"{values.scrape_interval:g}"},
    ]
    if values.prometheus_url:
        env.append({"name": ENV_PROMETHEUS_URL, "value": values.prometheus_url})
    container = {
        "name": "viz-api",
        "image": values.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["isthmus", "viz-api"],
        "env": env,
        "ports": [{"name": "http", "containerPort": VIZ_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 2,
                           "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/live", "port": "http"},
                          "initialDelaySeconds": 10, "periodSeconds": 10},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "runAsUser": RUN_AS_USER,
                            "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"}},
    }
    subject = [{"kind": "ServiceAccount", "name": SERVICE, "namespace": NAMESPACE}]
    read = ["get", "list", "watch"]
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": NAMESPACE, "labels": {EXTENSION_LABEL: "viz"},
                      "annotations": {INJECT_ANNOTATION: "disabled"}}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(SERVICE)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": _meta(SERVICE, namespaced=False),
         "rules": [{"apiGroups": [""], "resources": ["pods", "services", "endpoints", "namespaces"],
                    "verbs": read},
                   {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": read},
                   {"apiGroups": [LINK_GROUP], "resources": [LINK_PLURAL], "verbs": read}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": _meta(SERVICE, namespaced=False),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": SERVICE},
         "subjects": subject},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": _meta(SERVICE),
         "spec": {"replicas": 1, "selector": {"matchLabels": selector},
                  "template": {"metadata": {"labels": selector,
                                            "annotations": {INJECT_ANNOTATION: "disabled"}},
                               "spec": {"serviceAccountName": SERVICE,
                                        "containers": [container]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": _meta(SERVICE),
         "spec": {"type": "ClusterIP", "selector": selector,
                  "ports": [{"name": "http", "port": VIZ_PORT, "targetPort": VIZ_PORT,
                             "protocol": "TCP"}]}},
    ]

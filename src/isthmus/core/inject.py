"""Sidecar injection without I/O: whether a pod is meshed, and the JSON patch that meshes it.

The proxy injector (`isthmus.components.injector`) answers the API server's
AdmissionReviews with what this module decides; `isthmus inject` uses
`annotate` to mark manifests for injection. Nothing here reads the clock,
the network or the cluster: the caller passes the pod, its namespace's
annotations and an `InjectConfig` (image, trust anchors, the identity and
destination addresses it looked up).

- `decide(pod, namespace_annotations)`: inject when the pod or its namespace
  says `isthmus.io/inject: enabled`; the pod's own `disabled` wins over its
  namespace; a pod that already has an `isthmus-proxy` container, or runs in
  the host's network, is never injected. The reason is a sentence either way.
- `patch(pod, namespace, config)`: RFC 6902 operations that add the
  `isthmus-proxy` container (the `isthmus proxy` command and its
  `ISTHMUS_PROXY_*` environment: identity name, trust anchors, identity and
  destination addresses, pod namespace/name/workload, ports 4143 and 4191,
  readiness `/ready` and liveness `/live` on 4191), the proxy-version
  annotation and workload labels, and give every app container `POD_IP` (if
  missing) and `HTTP_PROXY`/`http_proxy` pointing at the sidecar's outbound
  port, with `NO_PROXY`/`no_proxy` for the pod's own IP and the API server. A
  container that declares its own `HTTP_PROXY` keeps it. The proxy is
  appended after the app containers, and `kubectl.kubernetes.io/default-container`
  names the first app container (unless already set), so `kubectl logs`
  and `kubectl exec` keep going to the app.
- `inject(pod, namespace, config)`: the pod with that patch applied (a copy).
- `annotate(doc)`: a manifest with `isthmus.io/inject: enabled` on its pod
  template (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob,
  ReplicationController), on the Pod or on the Namespace, and on every item
  of a List; other kinds come back unchanged. `AnnotateError` names the
  document when it is not a Kubernetes object.

Promises: no argument is modified; the same input gives the same output.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from isthmus.core.identity import DEFAULT_TRUST_DOMAIN, workload_identity
from isthmus.core.patch import json_patch

__all__ = [
    "ADMIN_PORT",
    "DEFAULT_CONTAINER_ANNOTATION",
    "GATEWAY_PROBE_PORT",
    "INBOUND_PORT",
    "INJECT_ANNOTATION",
    "OUTBOUND_PORT",
    "PROXY_CONTAINER",
    "PROXY_VERSION_ANNOTATION",
    "AnnotateError",
    "Annotated",
    "Decision",
    "InjectConfig",
    "annotate",
    "decide",
    "inject",
    "patch",
    "proxy_container",
    "workload_of",
]

INJECT_ANNOTATION = "isthmus.io/inject"
PROXY_VERSION_ANNOTATION = "isthmus.io/proxy-version"
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
CONTROL_PLANE_NS_LABEL = "isthmus.io/control-plane-ns"
PROXY_DEPLOYMENT_LABEL = "isthmus.io/proxy-deployment"
# The pod's service account, for Prometheus' relabelling (its pod discovery does not show it);
# set when the name fits a label value (63 characters).
PROXY_SERVICEACCOUNT_LABEL = "isthmus.io/proxy-serviceaccount"
WORKLOAD_NS_LABEL = "isthmus.io/workload-ns"
PROXY_CONTAINER = "isthmus-proxy"
INBOUND_PORT = 4143
OUTBOUND_PORT = 4140
ADMIN_PORT = 4191
GATEWAY_PROBE_PORT = 4192  # a multicluster gateway's mTLS probe listener (its Service's mc-probe port targets it)
ENABLED = "enabled"
RUN_AS_USER = 2103  # the image's user (Dockerfile)
DISABLED = "disabled"

# Workload kinds whose pods come from `spec.template`, and the short names tap and `kubectl` use.
_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}
_SHORT_KIND = {"Deployment": "deploy", "StatefulSet": "sts", "DaemonSet": "ds", "ReplicaSet": "rs",
               "Job": "job", "CronJob": "cronjob", "ReplicationController": "rc"}
_TEMPLATE_HASH_LABEL = "pod-template-hash"


@dataclass(frozen=True)
class InjectConfig:
    """What every injected proxy gets: the install's values and the control plane's addresses.

    `identity_addr` and `destination_addr` are `host:port` the proxies can
    reach without DNS (the injector puts the Services' cluster IPs there).
    """

    image: str
    version: str
    trust_anchors_pem: str
    identity_addr: str
    destination_addr: str
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    cluster_domain: str = "cluster.local"
    control_plane_namespace: str = "isthmus"
    log_level: str = "info"
    command: tuple[str, ...] = ("isthmus", "proxy")

    def __repr__(self) -> str:
        return (f"InjectConfig(image={self.image!r}, identity={self.identity_addr}, "
                f"destination={self.destination_addr}, trust_domain={self.trust_domain!r})")


@dataclass(frozen=True)
class Decision:
    """Whether to inject a pod, and the reason in a sentence (logged by the injector)."""

    inject: bool
    reason: str


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _str_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


def _containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    spec = pod.get("spec")
    containers = spec.get("containers") if isinstance(spec, Mapping) else None
    return [c for c in containers if isinstance(c, Mapping)] if isinstance(containers, list) else []


def decide(pod: Mapping[str, Any], namespace_annotations: Mapping[str, str] | None = None) -> Decision:
    """Whether to add the proxy to `pod`, and why (see the module docstring)."""
    if any(c.get("name") == PROXY_CONTAINER for c in _containers(pod)):
        return Decision(False, f"the pod already has an {PROXY_CONTAINER} container")
    pod_value = _str_map(_meta(pod).get("annotations")).get(INJECT_ANNOTATION)
    ns_value = _str_map(namespace_annotations).get(INJECT_ANNOTATION)
    if pod_value == DISABLED:
        return Decision(False, f"the pod is annotated {INJECT_ANNOTATION}: {DISABLED}")
    if pod_value is not None and pod_value != ENABLED:
        return Decision(False, f"the pod's {INJECT_ANNOTATION} annotation is {pod_value!r}; "
                               f"use {ENABLED} or {DISABLED}")
    spec = pod.get("spec")
    if isinstance(spec, Mapping) and spec.get("hostNetwork"):
        return Decision(False, "the pod uses the host's network, which its proxy cannot share")
    if not _containers(pod):
        return Decision(False, "the pod has no containers")
    if pod_value == ENABLED:
        return Decision(True, f"the pod is annotated {INJECT_ANNOTATION}: {ENABLED}")
    if ns_value == ENABLED:
        return Decision(True, f"its namespace is annotated {INJECT_ANNOTATION}: {ENABLED}")
    return Decision(False, f"neither the pod nor its namespace is annotated {INJECT_ANNOTATION}: {ENABLED}")


def workload_of(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """The workload that made `pod`, as (`deploy`, `web`), or None when it cannot be told.

    From the controlling ownerReference: a Deployment directly (the embedded
    cluster), or a ReplicaSet whose name ends in the pod's `pod-template-hash`
    (Kubernetes' Deployments), or any other owner kind; failing that, a
    `generateName` ending in `-<pod-template-hash>-`.
    """
    meta = _meta(pod)
    labels = _str_map(meta.get("labels"))
    template_hash = labels.get(_TEMPLATE_HASH_LABEL)
    owners = [o for o in meta.get("ownerReferences") or [] if isinstance(o, Mapping)]
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    if owner is not None and owner.get("kind") and owner.get("name"):
        kind, name = str(owner["kind"]), str(owner["name"])
        if kind == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
            return "deploy", name[: -len(template_hash) - 1]
        return _SHORT_KIND.get(kind, kind.lower()), name
    generate = str(meta.get("generateName") or "")
    if template_hash and generate.endswith(f"-{template_hash}-"):
        return "deploy", generate[: -len(template_hash) - 2]
    return None


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def proxy_container(pod: Mapping[str, Any], namespace: str, config: InjectConfig) -> dict[str, Any]:
    """The `isthmus-proxy` container for `pod` in `namespace`."""
    spec: Mapping[str, Any] = pod["spec"] if isinstance(pod.get("spec"), Mapping) else {}
    account = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
    p = "ISTHMUS_PROXY_"
    env: list[dict[str, Any]] = [
        _field_env("POD_IP", "status.podIP"),
        {"name": p + "LOG", "value": config.log_level},
        {"name": p + "IDENTITY_LOCAL_NAME",
         "value": workload_identity(account, namespace, config.trust_domain)},
        {"name": p + "IDENTITY_TRUST_ANCHORS", "value": config.trust_anchors_pem},
        {"name": p + "IDENTITY_SVC_ADDR", "value": config.identity_addr},
        {"name": p + "DESTINATION_SVC_ADDR", "value": config.destination_addr},
        {"name": p + "DESTINATION_SVC_NAME",
         "value": workload_identity("isthmus-destination", config.control_plane_namespace,
                                    config.trust_domain)},
        {"name": p + "CLUSTER_DOMAIN", "value": config.cluster_domain},
        _field_env(p + "POD_NAMESPACE", "metadata.namespace"),
        _field_env(p + "POD_NAME", "metadata.name"),
    ]
    workload = workload_of(pod)
    if workload is not None:
        env.append({"name": p + "WORKLOAD", "value": f"{workload[0]}/{workload[1]}"})
    return {
        "name": PROXY_CONTAINER,
        "image": config.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(config.command),
        "env": env,
        "ports": [{"name": "isthmus-proxy", "containerPort": INBOUND_PORT, "protocol": "TCP"},
                  {"name": "isthmus-admin", "containerPort": ADMIN_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": ADMIN_PORT},
                           "periodSeconds": 2, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/live", "port": ADMIN_PORT},
                          "initialDelaySeconds": 10, "periodSeconds": 10},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "runAsUser": RUN_AS_USER},
    }


def _escape(key: str) -> str:
    """A JSON pointer token (RFC 6901): `~` and `/` escaped."""
    return key.replace("~", "~0").replace("/", "~1")


def _app_env_ops(index: int, container: Mapping[str, Any]) -> list[dict[str, Any]]:
    env = [e for e in container.get("env") or [] if isinstance(e, Mapping)]
    names = {str(e.get("name")) for e in env}
    if names & {"HTTP_PROXY", "http_proxy"}:
        return []  # the container chose its own proxy
    outbound = f"http://$(POD_IP):{OUTBOUND_PORT}"
    no_proxy = "localhost,127.0.0.1,$(POD_IP),$(KUBERNETES_SERVICE_HOST)"
    added: list[dict[str, Any]] = []
    if "POD_IP" not in names:
        added.append(_field_env("POD_IP", "status.podIP"))
    added += [{"name": "HTTP_PROXY", "value": outbound}, {"name": "http_proxy", "value": outbound}]
    if not names & {"NO_PROXY", "no_proxy"}:
        added += [{"name": "NO_PROXY", "value": no_proxy}, {"name": "no_proxy", "value": no_proxy}]
    path = f"/spec/containers/{index}/env"
    if container.get("env") is None:
        return [{"op": "add", "path": path, "value": added}]
    return [{"op": "add", "path": f"{path}/-", "value": var} for var in added]


def _map_ops(pod: Mapping[str, Any], field: str, wanted: Mapping[str, str]) -> list[dict[str, Any]]:
    current = _meta(pod).get(field)
    missing = {k: v for k, v in wanted.items() if not isinstance(current, Mapping) or k not in current}
    if not missing:
        return []
    if not isinstance(current, Mapping):
        return [{"op": "add", "path": f"/metadata/{field}", "value": dict(missing)}]
    return [{"op": "add", "path": f"/metadata/{field}/{_escape(k)}", "value": v} for k, v in missing.items()]


def patch(pod: Mapping[str, Any], namespace: str, config: InjectConfig) -> list[dict[str, Any]]:
    """RFC 6902 operations that mesh `pod` (call only when `decide` says so)."""
    ops: list[dict[str, Any]] = []
    if not isinstance(pod.get("metadata"), Mapping):
        ops.append({"op": "add", "path": "/metadata", "value": {}})
    containers = _containers(pod)
    annotations = {PROXY_VERSION_ANNOTATION: config.version}
    if containers and containers[0].get("name"):
        annotations[DEFAULT_CONTAINER_ANNOTATION] = str(containers[0]["name"])
    ops += _map_ops(pod, "annotations", annotations)
    labels = {CONTROL_PLANE_NS_LABEL: config.control_plane_namespace, WORKLOAD_NS_LABEL: namespace}
    workload = workload_of(pod)
    if workload is not None and workload[0] == "deploy":
        labels[PROXY_DEPLOYMENT_LABEL] = workload[1]
    spec: Mapping[str, Any] = pod["spec"] if isinstance(pod.get("spec"), Mapping) else {}
    account = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
    if len(account) <= 63:
        labels[PROXY_SERVICEACCOUNT_LABEL] = account
    ops += _map_ops(pod, "labels", labels)
    for index, container in enumerate(containers):
        ops += _app_env_ops(index, container)
    ops.append({"op": "add", "path": "/spec/containers/-", "value": proxy_container(pod, namespace, config)})
    return ops


def inject(pod: Mapping[str, Any], namespace: str, config: InjectConfig) -> dict[str, Any]:
    """`pod` with the proxy added (a new dict; `pod` is left as it was)."""
    result: dict[str, Any] = json_patch(copy.deepcopy(dict(pod)), patch(pod, namespace, config))
    return result


# ------------------------------------------------------------------ `isthmus inject`


class AnnotateError(ValueError):
    """A manifest document `annotate` cannot take; the message says which and why."""


@dataclass(frozen=True)
class Annotated:
    """`annotate`'s answer: the document, and one line per object saying what was done to it."""

    doc: Any
    report: list[str]


def _set_annotation(meta_owner: dict[str, Any], where: str) -> None:
    meta = meta_owner.get("metadata")
    if meta is None:
        meta = meta_owner["metadata"] = {}
    if not isinstance(meta, dict):
        raise AnnotateError(f"{where}.metadata is not a mapping")
    annotations = meta.get("annotations")
    if annotations is None:
        annotations = meta["annotations"] = {}
    if not isinstance(annotations, dict):
        raise AnnotateError(f"{where}.metadata.annotations is not a mapping")
    annotations[INJECT_ANNOTATION] = ENABLED


def _mapping_at(obj: dict[str, Any], path: list[str], what: str) -> dict[str, Any]:
    node: Any = obj
    for i, key in enumerate(path):
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise AnnotateError(f"{what} has no {'.'.join(path[: i + 1])}, so it has no pod template "
                                f"to annotate")
    return node


def _describe(obj: Mapping[str, Any]) -> str:
    name = _meta(obj).get("name") or _meta(obj).get("generateName") or "(no name)"
    return f'{str(obj.get("kind")).lower()} "{name}"'


def _annotate_object(obj: dict[str, Any], where: str, report: list[str]) -> None:
    kind = obj.get("kind")
    if not isinstance(kind, str) or not kind or not isinstance(obj.get("apiVersion"), str):
        raise AnnotateError(f"{where} is not a Kubernetes object: it needs apiVersion and kind")
    name = _meta(obj).get("name")
    what = f"{where} ({kind} {name})" if name else f"{where} ({kind})"
    if kind == "List":
        items = obj.get("items")
        if not isinstance(items, list):
            raise AnnotateError(f"{what} has no items list")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise AnnotateError(f"{where}.items[{i}] is not a Kubernetes object (not a mapping)")
            _annotate_object(item, f"{where}.items[{i}]", report)
        return
    if kind in ("Pod", "Namespace"):
        _set_annotation(obj, what)
    elif kind in _TEMPLATE_KINDS:
        _set_annotation(_mapping_at(obj, ["spec", "template"], what), what)
    elif kind == "CronJob":
        _set_annotation(_mapping_at(obj, ["spec", "jobTemplate", "spec", "template"], what), what)
    else:
        report.append(f"{_describe(obj)} skipped")
        return
    report.append(f"{_describe(obj)} injected")


def annotate(doc: Any, *, where: str = "document 1") -> Annotated:
    """A copy of manifest `doc` marked for injection (see the module docstring).

    `where` names the document in error messages (`document 2`). A `None`
    document (an empty YAML document) comes back as it is.
    """
    if doc is None:
        return Annotated(None, [])
    if not isinstance(doc, dict):
        raise AnnotateError(f"{where} is not a Kubernetes object (a mapping with apiVersion and kind), "
                            f"but a {type(doc).__name__}")
    result = copy.deepcopy(doc)
    report: list[str] = []
    _annotate_object(result, where, report)
    return Annotated(result, report)

"""The multicluster extension as Kubernetes manifests: what `isthmus multicluster ...` prints.

Plain dicts, built from values the CLI has read from a cluster; dumped with
`isthmus.resources.manifests.dump`. All names are fixed or derived from a
cluster name, so printing the same values again gives the same objects.

- `install(values)`: for every cluster that takes part, in apply order: the
  `isthmus-multicluster` namespace, the Link CRD, the gateway (ServiceAccount
  `isthmus-gateway`, a Deployment whose pod's only container is the proxy in
  gateway mode, and the LoadBalancer Service `isthmus-gateway` with ports
  `mc-gateway` and `mc-probe`, annotated with the gateway's identity and
  probe), and `allow("default")`.
- `allow(cluster)`: what a remote service mirror needs to read this cluster:
  ServiceAccount `isthmus-service-mirror-remote-access-<cluster>`, a
  ClusterRole allowing get/list/watch of Services and Endpoints and nothing
  else, its binding, and a `kubernetes.io/service-account-token` Secret
  (Kubernetes fills it with a token that does not expire).
- `link(values)`: for the *other* cluster: the credentials Secret
  `cluster-credentials-<cluster>` (a kubeconfig with a bearer token), the
  Link, and the service mirror of that Link (ServiceAccount, RBAC,
  Deployment running `isthmus service-mirror --link <cluster>`).
- `unlink_objects(cluster, mirrored)`: references to what `link` made and to
  the mirrored Services and Endpoints given, as one `List` in an order
  `kubectl delete -f -` follows: the mirror first (so it does not re-create
  anything), the Link and its Secret, RBAC, then the mirrors' Endpoints and
  Services.
- `selector_object(text)`: a label selector string (`--selector`) as a
  Kubernetes LabelSelector object.

Pure: no I/O.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from isthmus.core import mirror as core
from isthmus.core.identity import workload_identity
from isthmus.core.inject import (
    CONTROL_PLANE_NS_LABEL,
    DEFAULT_CONTAINER_ANNOTATION,
    GATEWAY_PROBE_PORT,
    INBOUND_PORT,
    INJECT_ANNOTATION,
    PROXY_VERSION_ANNOTATION,
    RUN_AS_USER,
    InjectConfig,
    proxy_container,
)
from isthmus.core.selectors import Operator, SelectorError, parse_label_selector
from isthmus.resources.manifests import CONFIG_CONFIGMAP, IDENTITY_SERVICE, TRUST_ROOTS_CONFIGMAP
from isthmus.resources.manifests import NAMESPACE as CONTROL_PLANE_NAMESPACE
from isthmus.resources.multicluster import link_crd

__all__ = [
    "DEFAULT_REMOTE_ACCESS",
    "GATEWAY_IDENTITY_ANNOTATION",
    "GATEWAY_LABEL",
    "GATEWAY_NAME",
    "GATEWAY_PORT_NAME",
    "NAMESPACE",
    "PROBE_PATH_ANNOTATION",
    "PROBE_PERIOD_ANNOTATION",
    "PROBE_PORT_NAME",
    "GatewayValues",
    "LinkValues",
    "allow",
    "credentials_kubeconfig",
    "gateway_identity",
    "install",
    "link",
    "mirror_name",
    "remote_access_name",
    "selector_object",
    "unlink_objects",
]

NAMESPACE = core.DEFAULT_NAMESPACE  # isthmus-multicluster
GATEWAY_NAME = "isthmus-gateway"
GATEWAY_PORT_NAME, PROBE_PORT_NAME = "mc-gateway", "mc-probe"
GATEWAY_IDENTITY_ANNOTATION = "mirror.isthmus.io/gateway-identity"
PROBE_PATH_ANNOTATION = "mirror.isthmus.io/probe-path"
PROBE_PERIOD_ANNOTATION = "mirror.isthmus.io/probe-period"
GATEWAY_LABEL = "mirror.isthmus.io/multicluster-gateway"
EXTENSION_LABEL = "isthmus.io/extension"
EXTENSION = "multicluster"
LINK_LABEL = "multicluster.isthmus.io/link"  # on the objects `link` makes, naming the target cluster
SERVICE_ACCOUNT_NAME_ANNOTATION = "kubernetes.io/service-account.name"
CREDENTIALS_SECRET_TYPE = "mirror.isthmus.io/remote-kubeconfig"
CREDENTIALS_KEY = "kubeconfig"
DEFAULT_REMOTE_ACCESS = "default"
DEFAULT_PROBE_TIMEOUT = "3s"
MIRROR_CONTAINER = "service-mirror"
MIRROR_ADMIN_PORT = 9999  # `isthmus service-mirror` serves /metrics, /ready, /live on $POD_IP:9999

_RBAC = "rbac.authorization.k8s.io"


@dataclass(frozen=True)
class GatewayValues:
    """What `install` needs: the proxy's settings as the injector would give them, and the gateway's ports.

    `proxy.identity_addr` and `proxy.destination_addr` are addresses the
    gateway reaches without DNS (the identity and destination Services'
    cluster IPs, as the injector writes them).
    """

    proxy: InjectConfig
    port: int = core.DEFAULT_GATEWAY_PORT  # the Service's mc-gateway port
    probe_port: int = core.DEFAULT_PROBE_PORT  # the Service's mc-probe port
    probe_path: str = core.DEFAULT_PROBE_PATH
    probe_period_seconds: int = int(core.DEFAULT_PROBE_PERIOD)

    @property
    def identity(self) -> str:
        return gateway_identity(self.proxy.trust_domain)


@dataclass(frozen=True)
class LinkValues:
    """What `link` needs, read from the target cluster (or given on the command line)."""

    cluster_name: str
    api_server: str
    token: str
    gateway_addresses: tuple[str, ...]
    gateway_identity: str
    image: str
    ca_pem: bytes | None = None  # the target API's CA; None: the system's roots
    cluster_domain: str = "cluster.local"
    gateway_port: int = core.DEFAULT_GATEWAY_PORT
    probe_path: str = core.DEFAULT_PROBE_PATH
    probe_port: int = core.DEFAULT_PROBE_PORT
    probe_period: str = "3s"
    selector: Mapping[str, Any] = field(default_factory=lambda: dict(core.DEFAULT_SELECTOR))
    service_account: str = ""  # the remote-access account the token belongs to (the kubeconfig's user)

    def __repr__(self) -> str:
        return (f"LinkValues(cluster_name={self.cluster_name!r}, api_server={self.api_server!r}, "
                f"gateway={','.join(self.gateway_addresses)}:{self.gateway_port}, token=<redacted>)")


def gateway_identity(trust_domain: str) -> str:
    return workload_identity(GATEWAY_NAME, NAMESPACE, trust_domain)


def remote_access_name(cluster: str) -> str:
    return f"isthmus-service-mirror-remote-access-{cluster}"


def mirror_name(cluster: str) -> str:
    """The service mirror's Deployment and ServiceAccount for the Link to `cluster`."""
    return f"isthmus-service-mirror-{cluster}"


def _local_access_name(cluster: str) -> str:
    return f"isthmus-service-mirror-access-local-resources-{cluster}"


def _identity_settings_name(cluster: str) -> str:
    return f"isthmus-service-mirror-identity-settings-{cluster}"


def _read_creds_name(cluster: str) -> str:
    return f"isthmus-service-mirror-read-remote-creds-{cluster}"


# ------------------------------------------------------------------ small builders


def _b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _meta(name: str, *, namespaced: bool = True, labels: Mapping[str, str] | None = None,
          **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespaced:
        meta["namespace"] = NAMESPACE
    meta["labels"] = {EXTENSION_LABEL: EXTENSION, **(labels or {})}
    meta.update(extra)
    return meta


def _rule(group: str, resources: list[str], verbs: list[str],
          names: list[str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"apiGroups": [group], "resources": resources, "verbs": verbs}
    if names:
        rule["resourceNames"] = names
    return rule


def _role_pair(kind: str, name: str, sa: str, rules: list[dict[str, Any]],
               labels: Mapping[str, str] | None = None, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """A (Cluster)Role and the (Cluster)RoleBinding giving it to service account `sa` of NAMESPACE
    (a Role and its binding live in `namespace`)."""
    namespaced = kind == "Role"
    meta = _meta(name, namespaced=namespaced, labels=labels)
    if namespaced:
        meta["namespace"] = namespace
    return [
        {"apiVersion": f"{_RBAC}/v1", "kind": kind, "metadata": meta, "rules": rules},
        {"apiVersion": f"{_RBAC}/v1", "kind": f"{kind}Binding", "metadata": dict(meta),
         "roleRef": {"apiGroup": _RBAC, "kind": kind, "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]},
    ]


def _security_context() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}


# ------------------------------------------------------------------ install and allow


def _namespace() -> dict[str, Any]:
    # Not meshed by the injector: the gateway carries its own proxy, and the service mirror
    # reaches remote APIs directly and makes its gateway probes' mTLS itself.
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": {EXTENSION_LABEL: EXTENSION},
                         "annotations": {INJECT_ANNOTATION: "disabled"}}}


def _gateway_container(values: GatewayValues) -> dict[str, Any]:
    """The injector's proxy container for the gateway's pod, switched to gateway mode."""
    pod = {"spec": {"serviceAccountName": GATEWAY_NAME}}
    container = proxy_container(pod, NAMESPACE, values.proxy)
    container["env"] += [{"name": "ISTHMUS_PROXY_WORKLOAD", "value": f"deploy/{GATEWAY_NAME}"},
                         {"name": "ISTHMUS_PROXY_GATEWAY", "value": "1"}]
    container["ports"].append({"name": PROBE_PORT_NAME, "containerPort": GATEWAY_PROBE_PORT, "protocol": "TCP"})
    container["securityContext"] = _security_context()
    return container


def _gateway(values: GatewayValues) -> list[dict[str, Any]]:
    selector = {"app": GATEWAY_NAME}
    labels = {**selector, GATEWAY_LABEL: "true"}
    template_labels = {**selector, CONTROL_PLANE_NS_LABEL: values.proxy.control_plane_namespace,
                       "isthmus.io/workload-ns": NAMESPACE, "isthmus.io/proxy-deployment": GATEWAY_NAME,
                       "isthmus.io/proxy-serviceaccount": GATEWAY_NAME}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(GATEWAY_NAME, labels=labels),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": template_labels,
                             "annotations": {PROXY_VERSION_ANNOTATION: values.proxy.version,
                                             DEFAULT_CONTAINER_ANNOTATION: "isthmus-proxy"}},
                "spec": {"serviceAccountName": GATEWAY_NAME, "containers": [_gateway_container(values)]},
            },
        },
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(GATEWAY_NAME, labels=labels, annotations={
            GATEWAY_IDENTITY_ANNOTATION: values.identity,
            PROBE_PATH_ANNOTATION: values.probe_path,
            PROBE_PERIOD_ANNOTATION: f"{values.probe_period_seconds}s",
        }),
        "spec": {
            "type": "LoadBalancer",
            "selector": selector,
            "ports": [
                {"name": GATEWAY_PORT_NAME, "port": values.port, "targetPort": INBOUND_PORT, "protocol": "TCP"},
                {"name": PROBE_PORT_NAME, "port": values.probe_port, "targetPort": GATEWAY_PROBE_PORT,
                 "protocol": "TCP"},
            ],
        },
    }
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(GATEWAY_NAME, labels=selector)}
    return [account, deployment, service]


def allow(cluster: str = DEFAULT_REMOTE_ACCESS) -> list[dict[str, Any]]:
    """Read access to this cluster's Services and Endpoints for a remote service mirror (module docstring)."""
    name = remote_access_name(cluster)
    rules = [_rule("", ["services", "endpoints"], ["get", "list", "watch"])]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name)},
        *_role_pair("ClusterRole", name, name, rules),
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
         "metadata": _meta(f"{name}-token", annotations={SERVICE_ACCOUNT_NAME_ANNOTATION: name})},
    ]


def install(values: GatewayValues) -> list[dict[str, Any]]:
    """Everything `isthmus multicluster install` prints, in apply order (module docstring)."""
    crd = link_crd()
    return [_namespace(), crd, *_gateway(values), *allow(DEFAULT_REMOTE_ACCESS)]


# ------------------------------------------------------------------ link


def credentials_kubeconfig(values: LinkValues) -> dict[str, Any]:
    """The kubeconfig of the credentials Secret: the target API, its CA, the remote-access token."""
    cluster: dict[str, Any] = {"server": values.api_server}
    if values.ca_pem:
        cluster["certificate-authority-data"] = _b64(values.ca_pem)
    user = values.service_account or remote_access_name(DEFAULT_REMOTE_ACCESS)
    name = values.cluster_name
    return {"apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": name, "cluster": cluster}],
            "users": [{"name": user, "user": {"token": values.token}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": user}}],
            "current-context": name}


def _link_object(values: LinkValues) -> dict[str, Any]:
    c = values.cluster_name
    return {
        "apiVersion": f"{core.LINK_GROUP}/{core.LINK_VERSION}", "kind": core.LINK_KIND,
        "metadata": _meta(c, labels={LINK_LABEL: c}),
        "spec": {
            "targetClusterName": c,
            "targetClusterDomain": values.cluster_domain,
            "clusterCredentialsSecret": core.credentials_secret_name(c),
            "gatewayAddress": ",".join(values.gateway_addresses),
            "gatewayPort": values.gateway_port,
            "gatewayIdentity": values.gateway_identity,
            "probeSpec": {"path": values.probe_path, "port": values.probe_port, "period": values.probe_period,
                          "timeout": DEFAULT_PROBE_TIMEOUT, "failureThreshold": core.DEFAULT_FAILURE_THRESHOLD},
            "selector": dict(values.selector),
        },
    }


def _mirror(values: LinkValues) -> list[dict[str, Any]]:
    c = values.cluster_name
    name = mirror_name(c)
    labels = {LINK_LABEL: c}
    selector = {"app": "isthmus-service-mirror", LINK_LABEL: c}
    local_rules = [
        _rule("", ["services", "endpoints"], ["get", "list", "watch", "create", "update", "patch", "delete"]),
        _rule("", ["namespaces"], ["get", "list", "watch", "create"]),
        _rule("", ["events"], ["create", "patch"]),
    ]
    namespaced_rules = [
        # The mirror watches the Secrets of its namespace (it picks up new credentials without a
        # restart); a list or watch cannot be limited by resourceNames.
        _rule("", ["secrets"], ["get", "list", "watch"]),
        _rule(core.LINK_GROUP, [core.LINK_PLURAL], ["get", "list", "watch"]),
        _rule(core.LINK_GROUP, [f"{core.LINK_PLURAL}/status"], ["get", "update", "patch"]),
        _rule("coordination.k8s.io", ["leases"], ["get", "list", "watch", "create", "update", "patch"]),
    ]
    # What the mirror's own identity client needs to know (components/mirror/identity.py), in the
    # control plane's namespace.
    identity_rules = [
        _rule("", ["configmaps"], ["get"], [TRUST_ROOTS_CONFIGMAP, CONFIG_CONFIGMAP]),
        _rule("", ["services"], ["get"], [IDENTITY_SERVICE]),
    ]
    container = {
        "name": MIRROR_CONTAINER,
        "image": values.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["isthmus", "service-mirror", "--link", c, "--namespace", NAMESPACE],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "POD_SERVICE_ACCOUNT",
                 "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}}],
        "ports": [{"name": "admin", "containerPort": MIRROR_ADMIN_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "admin"}, "periodSeconds": 2,
                           "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/live", "port": "admin"}, "initialDelaySeconds": 10,
                          "periodSeconds": 10},
        "securityContext": _security_context(),
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(name, labels=selector),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector, "annotations": {INJECT_ANNOTATION: "disabled"}},
                "spec": {"serviceAccountName": name, "containers": [container]},
            },
        },
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name, labels=labels)},
        *_role_pair("ClusterRole", _local_access_name(c), name, local_rules, labels),
        *_role_pair("Role", _read_creds_name(c), name, namespaced_rules, labels),
        *_role_pair("Role", _identity_settings_name(c), name, identity_rules, labels,
                    namespace=CONTROL_PLANE_NAMESPACE),
        deployment,
    ]


def link(values: LinkValues) -> list[dict[str, Any]]:
    """What `isthmus multicluster link` prints, in apply order (module docstring)."""
    c = values.cluster_name
    secret = {
        "apiVersion": "v1", "kind": "Secret", "type": CREDENTIALS_SECRET_TYPE,
        "metadata": _meta(core.credentials_secret_name(c), labels={LINK_LABEL: c}),
        "data": {CREDENTIALS_KEY: _b64(yaml.safe_dump(credentials_kubeconfig(values), sort_keys=False))},
    }
    return [secret, _link_object(values), *_mirror(values)]


# ------------------------------------------------------------------ unlink


def _reference(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    ref_meta = {k: meta[k] for k in ("name", "namespace") if meta.get(k)}
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": ref_meta}


def link_references(cluster: str) -> list[dict[str, Any]]:
    """References to everything `link` makes for `cluster`, in the order to delete them."""
    placeholder = LinkValues(cluster_name=cluster, api_server="", token="", gateway_addresses=(),
                             gateway_identity="", image="")
    objects = link(placeholder)
    order = ["Deployment", core.LINK_KIND, "Secret", "RoleBinding", "Role", "ClusterRoleBinding", "ClusterRole",
             "ServiceAccount"]
    return [_reference(o) for o in sorted(objects, key=lambda o: order.index(o["kind"]))]


def unlink_objects(cluster: str, existing: Iterable[Mapping[str, Any]] | None = None,
                   mirrored: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """A `List` of references for `kubectl delete -f -` (module docstring).

    `existing`: the objects of `link_references(cluster)` that the cluster
    has (by kind, namespace and name); None keeps them all. `mirrored`: the
    mirrored Services and Endpoints found there (Endpoints are deleted first).
    """
    refs = link_references(cluster)
    if existing is not None:
        have = {_identity(o) for o in existing}
        refs = [r for r in refs if _identity(r) in have]
    endpoints = [_reference(o) for o in mirrored if o.get("kind") == "Endpoints"]
    services = [_reference(o) for o in mirrored if o.get("kind") == "Service"]
    return {"apiVersion": "v1", "kind": "List", "metadata": {},
            "items": [*refs, *sorted(endpoints, key=_ns_name), *sorted(services, key=_ns_name)]}


def _ns_name(ref: Mapping[str, Any]) -> tuple[str, str]:
    return str(ref["metadata"].get("namespace", "")), str(ref["metadata"]["name"])


def _identity(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return str(obj.get("kind")), str(meta.get("namespace") or ""), str(meta.get("name") or "")


# ------------------------------------------------------------------ selectors

_EXPRESSION_OPERATORS = {Operator.IN: "In", Operator.NOT_IN: "NotIn", Operator.NOT_EQUALS: "NotIn",
                         Operator.EXISTS: "Exists", Operator.DOES_NOT_EXIST: "DoesNotExist"}


def selector_object(text: str) -> dict[str, Any]:
    """`text` (`app=web,tier in (a,b),!legacy`) as a LabelSelector object; `SelectorError` with the reason.

    Equalities become `matchLabels`, the rest `matchExpressions`. An empty
    selector (which would mirror every Service) and the `gt`/`lt` operators
    (which a LabelSelector object cannot hold) are refused.
    """
    if not text.strip():
        raise SelectorError("the selector is empty (it would mirror every Service); give one such as "
                            f"{core.EXPORTED_LABEL}=true")
    parsed = parse_label_selector(text)
    match_labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    for req in parsed.requirements:
        if req.operator in (Operator.EQUALS, Operator.DOUBLE_EQUALS) and req.key not in match_labels:
            match_labels[req.key] = req.values[0]
        elif req.operator in (Operator.EQUALS, Operator.DOUBLE_EQUALS):  # a=1,a=2: matches nothing
            expressions.append({"key": req.key, "operator": "In", "values": list(req.values)})
        elif req.operator in _EXPRESSION_OPERATORS:
            expr: dict[str, Any] = {"key": req.key, "operator": _EXPRESSION_OPERATORS[req.operator]}
            if req.values:
                expr["values"] = list(req.values)
            expressions.append(expr)
        else:
            raise SelectorError(f"{req}: a Link's selector cannot compare numbers (> and <); a "
                                f"LabelSelector holds =, ==, !=, in, notin, exists and !")
    out: dict[str, Any] = {}
    if match_labels:
        out["matchLabels"] = match_labels
    if expressions:
        out["matchExpressions"] = expressions
    return out

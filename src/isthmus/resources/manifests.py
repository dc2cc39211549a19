"""The control plane as Kubernetes manifests: what `isthmus install` and `isthmus uninstall` print.

Built as plain dicts (no templates) from `InstallValues`, dumped with PyYAML.
Every name is fixed, so printing the same values again gives the same
objects and `kubectl apply` of them again changes nothing; only the PEM
material the caller passes (a generated anchor and issuer, the injector's
webhook CA and serving certificate) differs between runs.

- `crds()`: the CustomResourceDefinitions of the core mesh (`install --crds`).
- `control_plane(values)`: in apply order, the `isthmus` namespace (labelled
  as the control plane, so the injector's webhook skips it), service
  accounts, RBAC, the issuer Secret (readable through the API by the
  identity service account only), the trust-anchor ConfigMap, the
  `isthmus-config` ConfigMap recording the install's values, the injector's
  TLS Secret, the Services and Deployments of identity, destination and the
  proxy injector, and last the MutatingWebhookConfiguration (so the webhook
  is registered after what serves it).
- `uninstall_objects()`: references (apiVersion, kind, name, namespace) to
  everything `control_plane` and `crds` make, in an order `kubectl delete -f -`
  can follow: the webhook first (pods stop being sent to an injector that is
  going away), namespaced objects, cluster-scoped ones, the namespace, CRDs.
- `dump(objects)`: a multi-document YAML stream.

The containers run the `isthmus` command of the image (`isthmus identity`,
`isthmus destination`, `isthmus proxy-injector`) and take their settings
from the environment variables named here (`ENV_*`); the embedded cluster's
runner runs the same command lines. Pod templates carry the SHA-256 of the
trust anchors (and of the issuer, for identity), so re-applying with new
ones rolls the pods and re-applying the same ones does not.

Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from isthmus.core.identity import DEFAULT_TRUST_DOMAIN
from isthmus.core.inject import CONTROL_PLANE_NS_LABEL, INJECT_ANNOTATION, RUN_AS_USER

__all__ = [
    "NAMESPACE",
    "InstallValues",
    "control_plane",
    "crds",
    "dump",
    "uninstall_objects",
]

NAMESPACE = "isthmus"
IMAGE_REPOSITORY = "ghcr.io/isthmus-mesh/isthmus"

IDENTITY_SA = "isthmus-identity"
DESTINATION_SA = "isthmus-destination"
INJECTOR_SA = "isthmus-proxy-injector"

IDENTITY_SERVICE, IDENTITY_PORT, IDENTITY_ADMIN_PORT = "isthmus-identity", 8080, 9990
DESTINATION_SERVICE, DESTINATION_PORT, DESTINATION_ADMIN_PORT = "isthmus-dst", 8086, 9996
INJECTOR_SERVICE, INJECTOR_PORT, INJECTOR_TARGET_PORT, INJECTOR_ADMIN_PORT = (
    "isthmus-proxy-injector", 443, 8443, 9995)

ISSUER_SECRET, ISSUER_CRT_KEY, ISSUER_KEY_KEY = "isthmus-identity-issuer", "crt.pem", "key.pem"
TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY = "isthmus-identity-trust-roots", "ca-bundle.crt"
CONFIG_CONFIGMAP = "isthmus-config"
INJECTOR_TLS_SECRET = "isthmus-proxy-injector-k8s-tls"
WEBHOOK_CONFIGURATION = "isthmus-proxy-injector-webhook-config"
WEBHOOK_NAME = "isthmus-proxy-injector.isthmus.io"
WEBHOOK_PATH = "/"

COMPONENT_LABEL = "isthmus.io/control-plane-component"
IS_CONTROL_PLANE_LABEL = "isthmus.io/is-control-plane"
ANCHORS_CHECKSUM_ANNOTATION = "isthmus.io/trust-anchors-sha256"
ISSUER_CHECKSUM_ANNOTATION = "isthmus.io/issuer-sha256"

# The control-plane commands' environment (read by isthmus.components.controlplane).
ENV_LOG = "ISTHMUS_LOG"
ENV_IDENTITY_ISSUER_CRT = "ISTHMUS_IDENTITY_ISSUER_CRT"
ENV_IDENTITY_ISSUER_KEY = "ISTHMUS_IDENTITY_ISSUER_KEY"
ENV_IDENTITY_TRUST_ANCHORS = "ISTHMUS_IDENTITY_TRUST_ANCHORS"
ENV_IDENTITY_TRUST_DOMAIN = "ISTHMUS_IDENTITY_TRUST_DOMAIN"
ENV_IDENTITY_LISTEN_ADDR = "ISTHMUS_IDENTITY_LISTEN_ADDR"
ENV_IDENTITY_ADMIN_ADDR = "ISTHMUS_IDENTITY_ADMIN_ADDR"
ENV_DESTINATION_TRUST_ANCHORS = "ISTHMUS_DESTINATION_TRUST_ANCHORS"
ENV_DESTINATION_TRUST_DOMAIN = "ISTHMUS_DESTINATION_TRUST_DOMAIN"
ENV_DESTINATION_CLUSTER_DOMAIN = "ISTHMUS_DESTINATION_CLUSTER_DOMAIN"
ENV_DESTINATION_IDENTITY_SVC = "ISTHMUS_DESTINATION_IDENTITY_SVC"
ENV_DESTINATION_SERVICE_ACCOUNT = "ISTHMUS_DESTINATION_SERVICE_ACCOUNT"
ENV_DESTINATION_LISTEN_ADDR = "ISTHMUS_DESTINATION_LISTEN_ADDR"
ENV_DESTINATION_ADMIN_ADDR = "ISTHMUS_DESTINATION_ADMIN_ADDR"
ENV_INJECTOR_TLS_CRT = "ISTHMUS_INJECTOR_TLS_CRT"
ENV_INJECTOR_TLS_KEY = "ISTHMUS_INJECTOR_TLS_KEY"
ENV_INJECTOR_TRUST_ANCHORS = "ISTHMUS_INJECTOR_TRUST_ANCHORS"
ENV_INJECTOR_TRUST_DOMAIN = "ISTHMUS_INJECTOR_TRUST_DOMAIN"
ENV_INJECTOR_CLUSTER_DOMAIN = "ISTHMUS_INJECTOR_CLUSTER_DOMAIN"
ENV_INJECTOR_PROXY_IMAGE = "ISTHMUS_INJECTOR_PROXY_IMAGE"
ENV_INJECTOR_PROXY_VERSION = "ISTHMUS_INJECTOR_PROXY_VERSION"
ENV_INJECTOR_PROXY_LOG_LEVEL = "ISTHMUS_INJECTOR_PROXY_LOG_LEVEL"
ENV_INJECTOR_IDENTITY_SVC = "ISTHMUS_INJECTOR_IDENTITY_SVC"
ENV_INJECTOR_DESTINATION_SVC = "ISTHMUS_INJECTOR_DESTINATION_SVC"
ENV_INJECTOR_LISTEN_ADDR = "ISTHMUS_INJECTOR_LISTEN_ADDR"
ENV_INJECTOR_ADMIN_ADDR = "ISTHMUS_INJECTOR_ADMIN_ADDR"

HA_REPLICAS = 3


@dataclass(frozen=True)
class InstallValues:
    """Everything `control_plane` needs; PEM texts, already checked by the caller."""

    trust_anchors_pem: str
    issuer_cert_pem: str
    issuer_key_pem: str
    webhook_ca_pem: str
    webhook_cert_pem: str
    webhook_key_pem: str
    image: str
    version: str
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    cluster_domain: str = "cluster.local"
    ha: bool = False
    proxy_log_level: str = "info"

    def __repr__(self) -> str:
        return (f"InstallValues(image={self.image!r}, trust_domain={self.trust_domain!r}, "
                f"ha={self.ha}, keys=<redacted>)")


def default_image(version: str) -> str:
    return f"{IMAGE_REPOSITORY}:{version}"


def injector_dns_name(namespace: str = NAMESPACE) -> str:
    """The name the API server uses for the injector's webhook (and its serving certificate's)."""
    return f"{INJECTOR_SERVICE}.{namespace}.svc"


# ------------------------------------------------------------------ small builders


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _sha256(*texts: str) -> str:
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()


def _labels(component: str | None = None) -> dict[str, str]:
    labels = {CONTROL_PLANE_NS_LABEL: NAMESPACE}
    if component is not None:
        labels[COMPONENT_LABEL] = component
    return labels


def _meta(name: str, *, namespaced: bool = True, component: str | None = None,
          **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespaced:
        meta["namespace"] = NAMESPACE
    meta["labels"] = _labels(component)
    meta.update(extra)
    return meta


def _field(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _secret_ref(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _config_ref(name: str, configmap: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"configMapKeyRef": {"name": configmap, "key": key}}}


def _value(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def _pod_env() -> list[dict[str, Any]]:
    return [_field("POD_IP", "status.podIP"), _field("POD_NAMESPACE", "metadata.namespace")]


def _container(name: str, values: InstallValues, command: list[str], env: list[dict[str, Any]],
               port: int, admin_port: int) -> dict[str, Any]:
    probe = {"httpGet": {"path": "/ready", "port": "admin"}, "periodSeconds": 2, "failureThreshold": 3}
    return {
        "name": name,
        "image": values.image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": env,
        "ports": [{"name": "https", "containerPort": port, "protocol": "TCP"},
                  {"name": "admin", "containerPort": admin_port, "protocol": "TCP"}],
        "readinessProbe": probe,
        "livenessProbe": {"httpGet": {"path": "/live", "port": "admin"},
                          "initialDelaySeconds": 10, "periodSeconds": 10},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "runAsUser": RUN_AS_USER,
                            "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"}},
    }


def _deployment(component: str, sa: str, values: InstallValues, container: dict[str, Any],
                checksums: dict[str, str]) -> dict[str, Any]:
    name = f"isthmus-{component}"
    selector = _labels(component)
    spec: dict[str, Any] = {"serviceAccountName": sa, "containers": [container]}
    if values.ha:
        spec["affinity"] = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100,
            "podAffinityTerm": {"labelSelector": {"matchLabels": selector},
                                "topologyKey": "kubernetes.io/hostname"}}]}}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(name, component=component),
        "spec": {
            "replicas": HA_REPLICAS if values.ha else 1,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1 if values.ha else 0}},
            "template": {
                "metadata": {"labels": selector,
                             "annotations": {INJECT_ANNOTATION: "disabled", **checksums}},
                "spec": spec,
            },
        },
    }


def _service(name: str, component: str, port: int, target: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(name, component=component),
        "spec": {"type": "ClusterIP", "selector": _labels(component),
                 "ports": [{"name": "https", "port": port, "targetPort": target, "protocol": "TCP"}]},
    }


def _rules(*rules: tuple[str, list[str], list[str], list[str] | None]) -> list[dict[str, Any]]:
    out = []
    for group, resources, verbs, names in rules:
        rule: dict[str, Any] = {"apiGroups": [group], "resources": resources, "verbs": verbs}
        if names:
            rule["resourceNames"] = names
        out.append(rule)
    return out


def _rbac(sa: str, *, cluster: list[dict[str, Any]] | None,
          namespaced: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    subject = [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    if cluster:
        objects += [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": _meta(sa, namespaced=False), "rules": cluster},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": _meta(sa, namespaced=False),
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": sa},
             "subjects": subject},
        ]
    if namespaced:
        objects += [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": _meta(sa), "rules": namespaced},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": _meta(sa),
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
             "subjects": subject},
        ]
    return objects


# ------------------------------------------------------------------ the control plane


def _identity(values: InstallValues, anchors_sum: str) -> list[dict[str, Any]]:
    env = [
        *_pod_env(),
        _value(ENV_LOG, "info"),
        _secret_ref(ENV_IDENTITY_ISSUER_CRT, ISSUER_SECRET, ISSUER_CRT_KEY),
        _secret_ref(ENV_IDENTITY_ISSUER_KEY, ISSUER_SECRET, ISSUER_KEY_KEY),
        _config_ref(ENV_IDENTITY_TRUST_ANCHORS, TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY),
        _value(ENV_IDENTITY_TRUST_DOMAIN, values.trust_domain),
        _value(ENV_IDENTITY_LISTEN_ADDR, f"$(POD_IP):{IDENTITY_PORT}"),
        _value(ENV_IDENTITY_ADMIN_ADDR, f"$(POD_IP):{IDENTITY_ADMIN_PORT}"),
    ]
    container = _container("identity", values, ["isthmus", "identity"], env, IDENTITY_PORT,
                           IDENTITY_ADMIN_PORT)
    checksums = {ANCHORS_CHECKSUM_ANNOTATION: anchors_sum,
                 ISSUER_CHECKSUM_ANNOTATION: _sha256(values.issuer_cert_pem, values.issuer_key_pem)}
    return [_service(IDENTITY_SERVICE, "identity", IDENTITY_PORT, IDENTITY_PORT),
            _deployment("identity", IDENTITY_SA, values, container, checksums)]


def _destination(values: InstallValues, anchors_sum: str) -> list[dict[str, Any]]:
    env = [
        *_pod_env(),
        _field(ENV_DESTINATION_SERVICE_ACCOUNT, "spec.serviceAccountName"),
        _value(ENV_LOG, "info"),
        _config_ref(ENV_DESTINATION_TRUST_ANCHORS, TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY),
        _value(ENV_DESTINATION_TRUST_DOMAIN, values.trust_domain),
        _value(ENV_DESTINATION_CLUSTER_DOMAIN, values.cluster_domain),
        _value(ENV_DESTINATION_IDENTITY_SVC, f"{IDENTITY_SERVICE}:{IDENTITY_PORT}"),
        _value(ENV_DESTINATION_LISTEN_ADDR, f"$(POD_IP):{DESTINATION_PORT}"),
        _value(ENV_DESTINATION_ADMIN_ADDR, f"$(POD_IP):{DESTINATION_ADMIN_PORT}"),
    ]
    container = _container("destination", values, ["isthmus", "destination"], env, DESTINATION_PORT,
                           DESTINATION_ADMIN_PORT)
    return [_service(DESTINATION_SERVICE, "destination", DESTINATION_PORT, DESTINATION_PORT),
            _deployment("destination", DESTINATION_SA, values, container,
                        {ANCHORS_CHECKSUM_ANNOTATION: anchors_sum})]


def _injector(values: InstallValues, anchors_sum: str) -> list[dict[str, Any]]:
    env = [
        *_pod_env(),
        _value(ENV_LOG, "info"),
        _secret_ref(ENV_INJECTOR_TLS_CRT, INJECTOR_TLS_SECRET, "tls.crt"),
        _secret_ref(ENV_INJECTOR_TLS_KEY, INJECTOR_TLS_SECRET, "tls.key"),
        _config_ref(ENV_INJECTOR_TRUST_ANCHORS, TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY),
        _value(ENV_INJECTOR_TRUST_DOMAIN, values.trust_domain),
        _value(ENV_INJECTOR_CLUSTER_DOMAIN, values.cluster_domain),
        _value(ENV_INJECTOR_PROXY_IMAGE, values.image),
        _value(ENV_INJECTOR_PROXY_VERSION, values.version),
        _value(ENV_INJECTOR_PROXY_LOG_LEVEL, values.proxy_log_level),
        _value(ENV_INJECTOR_IDENTITY_SVC, f"{IDENTITY_SERVICE}:{IDENTITY_PORT}"),
        _value(ENV_INJECTOR_DESTINATION_SVC, f"{DESTINATION_SERVICE}:{DESTINATION_PORT}"),
        _value(ENV_INJECTOR_LISTEN_ADDR, f"$(POD_IP):{INJECTOR_TARGET_PORT}"),
        _value(ENV_INJECTOR_ADMIN_ADDR, f"$(POD_IP):{INJECTOR_ADMIN_PORT}"),
    ]
    container = _container("proxy-injector", values, ["isthmus", "proxy-injector"], env,
                           INJECTOR_TARGET_PORT, INJECTOR_ADMIN_PORT)
    # No checksum of the TLS Secret: it is new on every install run, and the injector re-reads
    # it through the API instead of restarting.
    return [_service(INJECTOR_SERVICE, "proxy-injector", INJECTOR_PORT, INJECTOR_TARGET_PORT),
            _deployment("proxy-injector", INJECTOR_SA, values, container,
                        {ANCHORS_CHECKSUM_ANNOTATION: anchors_sum})]


def _webhook(values: InstallValues) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": _meta(WEBHOOK_CONFIGURATION, namespaced=False, component="proxy-injector"),
        "webhooks": [{
            "name": WEBHOOK_NAME,
            "clientConfig": {
                "service": {"name": INJECTOR_SERVICE, "namespace": NAMESPACE, "path": WEBHOOK_PATH,
                            "port": INJECTOR_PORT},
                "caBundle": _b64(values.webhook_ca_pem),
            },
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchExpressions": [
                {"key": IS_CONTROL_PLANE_LABEL, "operator": "DoesNotExist"},
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]},
            ]},
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
            "reinvocationPolicy": "Never",
        }],
    }


def _config_values(values: InstallValues) -> dict[str, str]:
    return {
        "trustDomain": values.trust_domain,
        "clusterDomain": values.cluster_domain,
        "image": values.image,
        "version": values.version,
        "highAvailability": "true" if values.ha else "false",
        "proxyLogLevel": values.proxy_log_level,
        "identityService": f"{IDENTITY_SERVICE}.{NAMESPACE}.svc.{values.cluster_domain}:{IDENTITY_PORT}",
        "destinationService":
            f"{DESTINATION_SERVICE}.{NAMESPACE}.svc.{values.cluster_domain}:{DESTINATION_PORT}",
        "proxyInboundPort": "4143",
        "proxyOutboundPort": "4140",
        "proxyAdminPort": "4191",
    }


def control_plane(values: InstallValues) -> list[dict[str, Any]]:
    """Every object of the control plane, in the order to apply them (module docstring)."""
    anchors_sum = _sha256(values.trust_anchors_pem)
    namespace = {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NAMESPACE,
                     "labels": {IS_CONTROL_PLANE_LABEL: "true", **_labels()},
                     "annotations": {INJECT_ANNOTATION: "disabled"}},
    }
    accounts = [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(sa, component=c)}
                for sa, c in ((IDENTITY_SA, "identity"), (DESTINATION_SA, "destination"),
                              (INJECTOR_SA, "proxy-injector"))]
    rbac = [
        *_rbac(IDENTITY_SA,
               cluster=_rules(("authentication.k8s.io", ["tokenreviews"], ["create"], None)),
               namespaced=_rules(("", ["secrets"], ["get"], [ISSUER_SECRET]))),
        *_rbac(DESTINATION_SA,
               cluster=_rules(("", ["services", "endpoints", "pods"], ["get", "list", "watch"], None)),
               namespaced=None),
        *_rbac(INJECTOR_SA,
               cluster=_rules(("", ["namespaces"], ["get"], None)),
               namespaced=_rules(("", ["services"], ["get"], [IDENTITY_SERVICE, DESTINATION_SERVICE]),
                                 ("", ["secrets"], ["get"], [INJECTOR_TLS_SECRET]))),
    ]
    data_objects = [
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": _meta(ISSUER_SECRET, component="identity"),
         "data": {ISSUER_CRT_KEY: _b64(values.issuer_cert_pem), ISSUER_KEY_KEY: _b64(values.issuer_key_pem)}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": _meta(TRUST_ROOTS_CONFIGMAP, component="identity"),
         "data": {TRUST_ROOTS_KEY: values.trust_anchors_pem}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(CONFIG_CONFIGMAP),
         "data": _config_values(values)},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
         "metadata": _meta(INJECTOR_TLS_SECRET, component="proxy-injector"),
         "data": {"tls.crt": _b64(values.webhook_cert_pem), "tls.key": _b64(values.webhook_key_pem)}},
    ]
    return [namespace, *accounts, *rbac, *data_objects,
            *_identity(values, anchors_sum), *_destination(values, anchors_sum),
            *_injector(values, anchors_sum), _webhook(values)]


# ------------------------------------------------------------------ CRDs


def _crd(plural: str, kind: str, group: str, version: str, schema: dict[str, Any],
         short: list[str], columns: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}", "labels": _labels()},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind,
                      "listKind": f"{kind}List", "shortNames": short},
            "versions": [{"name": version, "served": True, "storage": True,
                          "schema": {"openAPIV3Schema": schema},
                          "additionalPrinterColumns": columns}],
        },
    }


def _object_schema(spec: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "required": ["spec"],
            "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                           "metadata": {"type": "object"},
                           "spec": {"type": "object", "required": required, "properties": spec}}}


_STR = {"type": "string"}
_LABEL_SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": _STR},
        "matchExpressions": {"type": "array", "items": {
            "type": "object", "required": ["key", "operator"],
            "properties": {"key": _STR,
                           "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                           "values": {"type": "array", "items": _STR}}}},
    },
}


def crds() -> list[dict[str, Any]]:
    """The core mesh's CustomResourceDefinitions, in `policy.isthmus.io`.

    `Server` names a port of a set of pods and the protocol spoken there;
    `HTTPRoute` (shaped like the Gateway API's) routes and times requests to
    a Service. They are the kinds the mesh's policy and routes grow into; the
    data plane reads per-Service annotations today (`timeout.isthmus.io/...`).
    """
    server = _object_schema({
        "podSelector": _LABEL_SELECTOR,
        "port": {"x-kubernetes-int-or-string": True},
        "proxyProtocol": {"type": "string", "default": "unknown",
                          "enum": ["unknown", "HTTP/1", "HTTP/2", "gRPC", "opaque", "TLS"]},
    }, ["podSelector", "port"])
    route_match = {"type": "object", "properties": {
        "path": {"type": "object", "properties": {
            "type": {"type": "string", "enum": ["Exact", "PathPrefix", "RegularExpression"]},
            "value": _STR}},
        "method": _STR,
        "headers": {"type": "array", "items": {"type": "object", "required": ["name", "value"],
                                               "properties": {"type": _STR, "name": _STR, "value": _STR}}},
    }}
    backend = {"type": "object", "required": ["name"], "properties": {
        "group": _STR, "kind": _STR, "name": _STR, "namespace": _STR,
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "weight": {"type": "integer", "minimum": 0}}}
    route = _object_schema({
        "parentRefs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
            "group": _STR, "kind": _STR, "name": _STR, "namespace": _STR, "sectionName": _STR,
            "port": {"type": "integer", "minimum": 1, "maximum": 65535}}}},
        "hostnames": {"type": "array", "items": _STR},
        "rules": {"type": "array", "items": {"type": "object", "properties": {
            "matches": {"type": "array", "items": route_match},
            "backendRefs": {"type": "array", "items": backend},
            "timeouts": {"type": "object", "properties": {"request": _STR, "backendRequest": _STR}},
            "retry": {"type": "object", "properties": {
                "codes": {"type": "array", "items": {"type": "integer"}},
                "attempts": {"type": "integer", "minimum": 0},
                "backoff": _STR}},
        }}},
    }, ["parentRefs"])
    return [
        _crd("servers", "Server", "policy.isthmus.io", "v1beta1", server, ["srv"], [
            {"name": "Port", "type": "string", "jsonPath": ".spec.port"},
            {"name": "Protocol", "type": "string", "jsonPath": ".spec.proxyProtocol"},
        ]),
        _crd("httproutes", "HTTPRoute", "policy.isthmus.io", "v1beta1", route, [], [
            {"name": "Hostnames", "type": "string", "jsonPath": ".spec.hostnames"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ]),
    ]


# ------------------------------------------------------------------ uninstall and output

_PLACEHOLDER = InstallValues(trust_anchors_pem="", issuer_cert_pem="", issuer_key_pem="",
                             webhook_ca_pem="", webhook_cert_pem="", webhook_key_pem="",
                             image="", version="")


def _reference(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: obj["metadata"][k] for k in ("name", "namespace") if k in obj["metadata"]}
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": meta}


def uninstall_objects() -> list[dict[str, Any]]:
    """References to every object `install` makes, in the order to delete them (module docstring)."""
    objects = control_plane(_PLACEHOLDER)
    webhook = [o for o in objects if o["kind"] == "MutatingWebhookConfiguration"]
    namespaced = [o for o in objects if "namespace" in o["metadata"]]
    cluster = [o for o in objects if "namespace" not in o["metadata"]
               and o["kind"] not in ("Namespace", "MutatingWebhookConfiguration")]
    namespace = [o for o in objects if o["kind"] == "Namespace"]
    return [_reference(o) for o in (*webhook, *namespaced, *cluster, *namespace, *crds())]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PEM) as literal blocks, so the output reads like a hand-written manifest;
    no `&id001` anchors for objects used twice (a selector and its template's labels)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(objects: Iterable[dict[str, Any]]) -> str:
    """A YAML stream of `objects`, each starting with `---`, keys in the order given."""
    return "".join("---\n" + yaml.dump(o, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
                   for o in objects)

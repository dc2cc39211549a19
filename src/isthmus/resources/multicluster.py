"""The multicluster CustomResourceDefinition: `links.multicluster.isthmus.io`.

`link_crd()` returns the CRD as a dict, ready for `kubectl apply` (as YAML or
JSON) or for an install manifest. A Link, namespaced in
`isthmus-multicluster`, tells one service mirror which remote cluster to
mirror and how to reach its gateway:

- `targetClusterName` (the suffix of mirrored names), `targetClusterDomain`
  (default `cluster.local`), `clusterCredentialsSecret` (default
  `cluster-credentials-<targetClusterName>`, a Secret whose key `kubeconfig`
  reaches the remote API);
- `gatewayAddress` (comma-separated IP addresses or host names),
  `gatewayPort` (default 4143), `gatewayIdentity`;
- `probeSpec`: `path` (`/ready`), `port` (4191), `period` (`3s`), `timeout`
  (`3s`), `failureThreshold` (3);
- `selector`: a LabelSelector of the remote Services to mirror (default
  `matchLabels: {mirror.isthmus.io/exported: "true"}`);
- `createMissingNamespaces` (default false).

Defaults are declared in the schema (Kubernetes applies them) and applied
again by `isthmus.core.mirror.LinkSpec` (the embedded API server does not).
`status` is a subresource written by the service mirror: `conditions`
(Ready, RemoteReachable, GatewayAlive, MissingNamespace), `mirroredServices`
(per service: namespace, name, mirroredName, conditions Mirrored and
EndpointsReady) and counts.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from isthmus.core import mirror as core

__all__ = ["link_crd"]

_STR: dict[str, Any] = {"type": "string"}
_PORT: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 65535}
_DURATION: dict[str, Any] = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"}

_LABEL_SELECTOR: dict[str, Any] = {
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

_CONDITIONS: dict[str, Any] = {"type": "array", "items": {
    "type": "object", "required": ["type", "status"],
    "properties": {"type": _STR, "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                   "reason": _STR, "message": _STR,
                   "lastTransitionTime": {"type": "string", "format": "date-time"}}}}


def _spec_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["targetClusterName", "gatewayAddress", "gatewayIdentity"],
        "properties": {
            "targetClusterName": {"type": "string", "minLength": 1, "maxLength": 63,
                                  "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
            "targetClusterDomain": {"type": "string", "default": "cluster.local"},
            "clusterCredentialsSecret": _STR,
            "gatewayAddress": {"type": "string", "minLength": 1,
                               "description": "comma-separated IP addresses or host names of the remote gateway"},
            "gatewayPort": {**_PORT, "default": core.DEFAULT_GATEWAY_PORT},
            "gatewayIdentity": {"type": "string", "minLength": 1},
            "probeSpec": {"type": "object", "properties": {
                "path": {"type": "string", "default": core.DEFAULT_PROBE_PATH},
                "port": {**_PORT, "default": core.DEFAULT_PROBE_PORT},
                "period": {**_DURATION, "default": "3s"},
                "timeout": {**_DURATION, "default": "3s"},
                "failureThreshold": {"type": "integer", "minimum": 1,
                                     "default": core.DEFAULT_FAILURE_THRESHOLD},
            }},
            "selector": {**_LABEL_SELECTOR, "default": core.DEFAULT_SELECTOR},
            "createMissingNamespaces": {"type": "boolean", "default": False},
        },
    }


def _status_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {
        "conditions": _CONDITIONS,
        "mirroredServices": {"type": "array", "items": {"type": "object", "properties": {
            "namespace": _STR, "name": _STR, "mirroredName": _STR, "conditions": _CONDITIONS}}},
        "mirroredServiceCount": {"type": "integer"},
        "notMirroredServiceCount": {"type": "integer"},
    }}


def link_crd() -> dict[str, Any]:
    """The `links.multicluster.isthmus.io` CRD (module docstring)."""
    schema = {"type": "object", "required": ["spec"], "properties": {
        "apiVersion": _STR, "kind": _STR, "metadata": {"type": "object"},
        "spec": _spec_schema(), "status": _status_schema()}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{core.LINK_PLURAL}.{core.LINK_GROUP}",
                     "labels": {"isthmus.io/extension": "multicluster"}},
        "spec": {
            "group": core.LINK_GROUP,
            "scope": "Namespaced",
            "names": {"plural": core.LINK_PLURAL, "singular": "link", "kind": core.LINK_KIND,
                      "listKind": f"{core.LINK_KIND}List"},
            "versions": [{
                "name": core.LINK_VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Cluster", "type": "string", "jsonPath": ".spec.targetClusterName"},
                    {"name": "Gateway", "type": "string", "jsonPath": ".spec.gatewayAddress"},
                    {"name": "Ready", "type": "string",
                     "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                    {"name": "Mirrored", "type": "integer", "jsonPath": ".status.mirroredServiceCount"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
            }],
        },
    }

"""What a Kubernetes API request asks for, read from its method, path and query.

`parse_request` mirrors k8s.io/apiserver's RequestInfoFactory: a resource
request names group, version, namespace, resource, name and subresource, and its
verb is derived from the HTTP method (GET on a collection is `list`, or `watch`
with `?watch=true`). Everything else (discovery, /version, /openapi) is a
non-resource request. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestInfo:
    is_resource: bool
    path: str
    verb: str  # get list watch create update patch delete deletecollection, or the HTTP verb for non-resource
    group: str = ""
    version: str = ""
    namespace: str = ""
    resource: str = ""
    name: str = ""
    subresource: str = ""


_TRUE = {"true", "1"}


def parse_request(method: str, path: str, query: Mapping[str, str]) -> RequestInfo:
    method = method.upper()
    parts = [p for p in path.split("/") if p]
    non_resource = RequestInfo(False, path, method.lower())
    if not parts or parts[0] not in ("api", "apis"):
        return non_resource
    if parts[0] == "api":
        if len(parts) < 3:  # /api, /api/v1
            return non_resource
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) < 4:  # /apis, /apis/g, /apis/g/v
            return non_resource
        group, version, rest = parts[1], parts[2], parts[3:]

    watch_prefix = False
    if rest and rest[0] == "watch":  # deprecated /watch/ paths
        watch_prefix, rest = True, rest[1:]

    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        # /namespaces/NS/RESOURCE/... ; /namespaces/NAME and /namespaces/NAME/status
        # (a namespace's own subresources) are handled below.
        if len(rest) == 3 and rest[2] in ("status", "finalize"):
            pass
        else:
            namespace, rest = rest[1], rest[2:]
    if not rest:
        return non_resource

    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if len(rest) > 3:
        return non_resource

    if method == "GET":
        if watch_prefix or query.get("watch", "").lower() in _TRUE:
            verb = "watch"
        else:
            verb = "get" if name else "list"
    elif method == "POST":
        verb = "create"
    elif method == "PUT":
        verb = "update"
    elif method == "PATCH":
        verb = "patch"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = method.lower()
    return RequestInfo(True, path, verb, group, version, namespace, resource, name, subresource)

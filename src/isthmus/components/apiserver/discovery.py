"""Discovery documents: what kubectl reads to learn which resources this server has.

Both forms are served: the per-group documents (`/api`, `/api/v1`, `/apis`,
`/apis/G`, `/apis/G/V`) and the aggregated form (`apidiscovery.k8s.io/v2`) that
current kubectl asks for first, so one request tells it everything.
"""

from __future__ import annotations

from typing import Any

from isthmus.resources.registry import Registry, ResourceType

AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"

_SUB_VERBS = {"status": ["get", "patch", "update"], "scale": ["get", "patch", "update"],
              "token": ["create"], "log": ["get"]}
_SUB_KIND = {"scale": ("autoscaling", "v1", "Scale"), "token": ("authentication.k8s.io", "v1", "TokenRequest")}


def wants_aggregated(accept: str) -> bool:
    first = accept.split(",")[0] if accept else ""
    return "as=APIGroupDiscoveryList" in first and "v=v2" in first and "v=v2beta1" not in first


def _sub_kind(rt: ResourceType, sub: str) -> tuple[str, str, str]:
    return _SUB_KIND.get(sub, (rt.group, rt.version, rt.kind))


def resource_list(registry: Registry, group: str, version: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for rt in registry.in_group_version(group, version):
        entry: dict[str, Any] = {"name": rt.plural, "singularName": rt.name_singular,
                                 "namespaced": rt.namespaced, "kind": rt.kind, "verbs": list(rt.verbs)}
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        resources.append(entry)
        for sub in rt.subresources:
            g, v, k = _sub_kind(rt, sub)
            sub_entry: dict[str, Any] = {"name": f"{rt.plural}/{sub}", "singularName": "",
                                         "namespaced": rt.namespaced, "kind": k, "verbs": _SUB_VERBS[sub]}
            if g != rt.group or v != rt.version:
                sub_entry["group"], sub_entry["version"] = g, v
            resources.append(sub_entry)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def api_versions(server_address: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": vs, "preferredVersion": vs[0]}


def api_group_list(registry: Registry) -> dict[str, Any]:
    groups = [_group(g, vs) for g, vs in registry.group_versions().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: Registry, name: str) -> dict[str, Any] | None:
    vs = registry.group_versions().get(name)
    if not name or not vs:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, vs)}


def _aggregated_resource(rt: ResourceType) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resource": rt.plural,
        "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "scope": "Namespaced" if rt.namespaced else "Cluster",
        "singularResource": rt.name_singular,
        "verbs": list(rt.verbs),
    }
    if rt.short_names:
        out["shortNames"] = list(rt.short_names)
    if rt.categories:
        out["categories"] = list(rt.categories)
    if rt.subresources:
        subs = []
        for sub in rt.subresources:
            g, v, k = _sub_kind(rt, sub)
            subs.append({"subresource": sub, "responseKind": {"group": g, "version": v, "kind": k},
                         "verbs": _SUB_VERBS[sub]})
        out["subresources"] = subs
    return out


def aggregated(registry: Registry, *, core: bool) -> dict[str, Any]:
    items = []
    for g, versions in registry.group_versions().items():
        if (g == "") != core:
            continue
        items.append({
            "metadata": {"name": g, "creationTimestamp": None},
            "versions": [{"version": v, "freshness": "Current",
                          "resources": [_aggregated_resource(rt) for rt in registry.in_group_version(g, v)]}
                         for v in versions],
        })
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {}, "items": items}

"""Per-kind behaviour of the API server: defaults, allocation and validation on create and update.

Mirrors what Kubernetes' registry strategies do for the kinds isthmus serves:
Services get a cluster IP (and LoadBalancers an ingress IP), Deployments get
their defaults and a generation that moves with the spec, Secrets fold
`stringData` into `data`, Namespaces are Active, CRDs are Established. Names
are checked with the rule each kind uses.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from isthmus.core import admission, names
from isthmus.core.network import Allocator, ClusterNetwork, RangeExhausted
from isthmus.resources.registry import ResourceType

from .errors import ApiError, invalid

Causes = list[tuple[str, str]]


@dataclass
class Allocators:
    services: Allocator
    load_balancers: Allocator

    @classmethod
    def for_network(cls, net: ClusterNetwork) -> Allocators:
        return cls(Allocator(*net.service_range), Allocator(*net.lb_range))


def name_rule(rt: ResourceType) -> Callable[[str], list[str]]:
    if rt.group == "" and rt.plural in ("namespaces",):
        return names.validate_dns1123_label
    if rt.group == "" and rt.plural == "services":
        return names.validate_dns1035_label
    return names.validate_dns1123_subdomain


def validate_metadata(rt: ResourceType, obj: dict[str, Any]) -> Causes:
    causes: Causes = []
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    if not name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    else:
        for msg in name_rule(rt)(name):
            causes.append(("metadata.name", f'Invalid value: "{name}": {msg}'))
    for key, value in (meta.get("labels") or {}).items():
        for msg in names.validate_label_key(key):
            causes.append(("metadata.labels", f'Invalid value: "{key}": {msg}'))
        if not isinstance(value, str):
            causes.append(("metadata.labels", f'Invalid value: {value!r}: label values must be strings'))
            continue
        for msg in names.validate_label_value(value):
            causes.append(("metadata.labels", f'Invalid value: "{value}": {msg}'))
    for key, value in (meta.get("annotations") or {}).items():
        if not isinstance(value, str):
            causes.append(("metadata.annotations", f'Invalid value: {key}: annotation values must be strings'))
    return causes


def _spec_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    strip = ("metadata", "status")
    return {k: v for k, v in old.items() if k not in strip} != {k: v for k, v in new.items() if k not in strip}


def _services_on_create(obj: dict[str, Any], alloc: Allocators) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for p in spec.get("ports") or []:
        p.setdefault("protocol", "TCP")
        if "targetPort" not in p and "port" in p:
            p["targetPort"] = p["port"]
    try:
        if spec.get("clusterIP") in (None, ""):
            if spec["type"] != "ExternalName":
                spec["clusterIP"] = alloc.services.allocate()
        elif spec["clusterIP"] != "None":
            if not alloc.services.contains(spec["clusterIP"]):
                raise invalid("Service", "", obj["metadata"]["name"], [(
                    "spec.clusterIPs", f'Invalid value: "{spec["clusterIP"]}": provided IP is not in the '
                    f"valid range; the service range is {alloc.services}")])
            alloc.services.mark(spec["clusterIP"])
        if spec.get("clusterIP") and spec["clusterIP"] != "None":
            spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        if spec["type"] == "LoadBalancer":
            spec.setdefault("externalTrafficPolicy", "Cluster")
            spec.setdefault("allocateLoadBalancerNodePorts", False)
            obj["status"] = {"loadBalancer": {"ingress": [{"ip": alloc.load_balancers.allocate(),
                                                            "ipMode": "VIP"}]}}
        else:
            obj["status"] = {"loadBalancer": {}}
    except RangeExhausted as e:
        raise ApiError(500, "InternalError", f"cannot allocate an address for the service: {e}") from None


def _services_on_update(old: dict[str, Any], new: dict[str, Any], alloc: Allocators) -> Causes:
    ospec, nspec = old.get("spec") or {}, new.setdefault("spec", {})
    if nspec.get("clusterIP") in (None, ""):
        for k in ("clusterIP", "clusterIPs"):
            if k in ospec:
                nspec[k] = ospec[k]
    elif nspec.get("clusterIP") != ospec.get("clusterIP"):
        return [("spec.clusterIPs[0]", "Invalid value: field is immutable")]
    for p in nspec.get("ports") or []:
        p.setdefault("protocol", "TCP")
        if "targetPort" not in p and "port" in p:
            p["targetPort"] = p["port"]
    for k in ("type", "sessionAffinity", "ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy"):
        if k in ospec:
            nspec.setdefault(k, ospec[k])
    was_lb = ospec.get("type") == "LoadBalancer"
    is_lb = nspec.get("type") == "LoadBalancer"
    old_ingress = ((old.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if is_lb and not was_lb:
        new["status"] = {"loadBalancer": {"ingress": [{"ip": alloc.load_balancers.allocate(), "ipMode": "VIP"}]}}
    elif was_lb and not is_lb:
        for ing in old_ingress:
            alloc.load_balancers.release(ing.get("ip", ""))
        new["status"] = {"loadBalancer": {}}
    return []


def release_service(obj: dict[str, Any], alloc: Allocators) -> None:
    spec = obj.get("spec") or {}
    alloc.services.release(spec.get("clusterIP") or "")
    for ing in ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
        alloc.load_balancers.release(ing.get("ip", ""))


def mark_service(obj: dict[str, Any], alloc: Allocators) -> None:
    alloc.services.mark((obj.get("spec") or {}).get("clusterIP") or "")
    for ing in ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
        alloc.load_balancers.mark(ing.get("ip", ""))


def _deployment_defaults(obj: dict[str, Any]) -> Causes:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy.setdefault("type", "RollingUpdate")
        ru = strategy.setdefault("rollingUpdate", {})
        ru.setdefault("maxUnavailable", "25%")
        ru.setdefault("maxSurge", "25%")
    causes: Causes = []
    selector = spec.get("selector")
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not selector:
        causes.append(("spec.selector", "Required value"))
    else:
        match = selector.get("matchLabels") or {}
        if any(labels.get(k) != v for k, v in match.items()):
            causes.append(("spec.template.metadata.labels",
                           f"Invalid value: {labels}: `selector` does not match template `labels`"))
    if isinstance(spec.get("replicas"), int) and spec["replicas"] < 0:
        causes.append(("spec.replicas", f"Invalid value: {spec['replicas']}: must be greater than or equal to 0"))
    tspec = (spec.get("template") or {}).get("spec") or {}
    if not tspec.get("containers"):
        causes.append(("spec.template.spec.containers", "Required value"))
    _pod_spec_defaults(tspec)
    return causes


def _pod_spec_defaults(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    for c in spec.get("containers") or []:
        c.setdefault("imagePullPolicy", "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        for p in c.get("ports") or []:
            p.setdefault("protocol", "TCP")


def _secret_defaults(obj: dict[str, Any]) -> Causes:
    obj.setdefault("type", "Opaque")
    causes: Causes = []
    string_data = obj.pop("stringData", None) or {}
    data = obj.setdefault("data", {}) if (string_data or "data" in obj) else {}
    for k, v in string_data.items():
        data[k] = base64.b64encode(str(v).encode()).decode()
    for k, v in (obj.get("data") or {}).items():
        try:
            base64.b64decode(v, validate=True)
        except (binascii.Error, TypeError, ValueError):
            causes.append((f"data[{k}]", "Invalid value: must be base64 encoded"))
    return causes


def _crd_on_write(obj: dict[str, Any]) -> Causes:
    spec = obj.get("spec") or {}
    names_ = spec.get("names") or {}
    causes: Causes = []
    group, plural = spec.get("group", ""), names_.get("plural", "")
    if obj.get("metadata", {}).get("name") != f"{plural}.{group}":
        causes.append(("metadata.name", f'Invalid value: "{obj.get("metadata", {}).get("name")}": must be '
                       f"spec.names.plural+\".\"+spec.group"))
    if not names_.get("kind"):
        causes.append(("spec.names.kind", "Required value"))
    versions = spec.get("versions") or []
    if not versions:
        causes.append(("spec.versions", "Required value: must have exactly one version marked as storage version"))
    elif sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(("spec.versions", "Invalid value: must have exactly one version marked as storage version"))
    names_.setdefault("singular", names_.get("kind", "").lower())
    names_.setdefault("listKind", names_.get("kind", "") + "List")
    obj["status"] = {
        "acceptedNames": dict(names_),
        "storedVersions": [v["name"] for v in versions if v.get("storage")],
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found"},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted"},
        ],
    }
    return causes


def _webhook_configuration_on_write(rt: ResourceType, obj: dict[str, Any]) -> Causes:
    mutating = rt.plural == "mutatingwebhookconfigurations"
    admission.defaults(obj, mutating=mutating)
    return admission.validate_configuration(obj, mutating=mutating)


def on_create(rt: ResourceType, obj: dict[str, Any], alloc: Allocators) -> Causes:
    """Default and validate a new object in place; returns field causes for a 422."""
    causes = validate_metadata(rt, obj)
    if causes:
        return causes
    if rt.group == "":
        if rt.plural == "services":
            _services_on_create(obj, alloc)
        elif rt.plural == "namespaces":
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
        elif rt.plural == "secrets":
            causes += _secret_defaults(obj)
        elif rt.plural == "pods":
            _pod_spec_defaults(obj.setdefault("spec", {}))
            obj.setdefault("status", {"phase": "Pending", "qosClass": "BestEffort"})
    elif rt.group == "apps" and rt.plural == "deployments":
        causes += _deployment_defaults(obj)
        obj["status"] = {}
    elif rt.group == "apiextensions.k8s.io":
        causes += _crd_on_write(obj)
    elif rt.group == admission.GROUP:
        causes += _webhook_configuration_on_write(rt, obj)
    return causes


def on_update(rt: ResourceType, old: dict[str, Any], new: dict[str, Any], alloc: Allocators) -> Causes:
    causes = validate_metadata(rt, new)
    if causes:
        return causes
    if rt.group == "":
        if rt.plural == "services":
            causes += _services_on_update(old, new, alloc)
        elif rt.plural == "namespaces":
            new.setdefault("spec", old.get("spec"))
        elif rt.plural == "secrets":
            causes += _secret_defaults(new)
        elif rt.plural == "pods":
            _pod_spec_defaults(new.setdefault("spec", {}))
    elif rt.group == "apps" and rt.plural == "deployments":
        causes += _deployment_defaults(new)
    elif rt.group == "apiextensions.k8s.io":
        causes += _crd_on_write(new)
    elif rt.group == admission.GROUP:
        causes += _webhook_configuration_on_write(rt, new)
    if "generation" in (old.get("metadata") or {}):
        gen = old["metadata"]["generation"]
        new["metadata"]["generation"] = gen + 1 if _spec_changed(old, new) else gen
    return causes


def has_generation(rt: ResourceType) -> bool:
    return (rt.group, rt.plural) in {("apps", "deployments"), ("apiextensions.k8s.io", "customresourcedefinitions")} \
        or rt.is_custom


def name_error(rt: ResourceType, name: str) -> ApiError | None:
    msgs = name_rule(rt)(name)
    if msgs:
        return invalid(rt.kind, rt.group, name, [("metadata.name", f'Invalid value: "{name}": {m}') for m in msgs])
    return None

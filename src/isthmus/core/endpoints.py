"""The Endpoints of a Service, computed from its selector and the Pods, as Kubernetes' endpoints controller does.

Pods that match the selector and have an IP appear under `addresses` when Ready
and under `notReadyAddresses` otherwise; pods being deleted or finished are
left out. Each service port is resolved against each pod: a numeric
`targetPort` as is, a named one through the pod's container ports (a pod that
lacks the name is left out of that port's subset). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from isthmus.core.deployments import pod_ready


def _target_port(service_port: Mapping[str, Any], pod: Mapping[str, Any]) -> int | None:
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target and (p.get("protocol") or "TCP") == (service_port.get("protocol") or "TCP"):
                return int(p["containerPort"])
    return None


def _address(pod: Mapping[str, Any]) -> dict[str, Any]:
    meta = pod.get("metadata") or {}
    out: dict[str, Any] = {"ip": (pod.get("status") or {}).get("podIP"),
                           "targetRef": {"kind": "Pod", "namespace": meta.get("namespace"),
                                         "name": meta.get("name"), "uid": meta.get("uid")}}
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        out["nodeName"] = node
    return out


def selects(selector: Mapping[str, str] | None, labels: Mapping[str, str] | None) -> bool:
    if not selector:
        return False
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def subsets(service: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The `subsets` of the service's Endpoints (grouped by resolved port set, sorted for stability)."""
    spec = service.get("spec") or {}
    selector = spec.get("selector")
    ports = spec.get("ports") or []
    groups: dict[tuple[tuple[str, int, str], ...], dict[str, list[dict[str, Any]]]] = {}
    for pod in sorted(pods, key=lambda p: ((p.get("status") or {}).get("podIP") or "", (p.get("metadata") or {}).get("name", ""))):
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        if not selects(selector, meta.get("labels")) or meta.get("deletionTimestamp"):
            continue
        if not status.get("podIP") or status.get("phase") in ("Succeeded", "Failed"):
            continue
        resolved = []
        for sp in ports:
            tp = _target_port(sp, pod)
            if tp is not None:
                resolved.append((sp.get("name", ""), tp, sp.get("protocol") or "TCP"))
        if not resolved:
            continue
        group = groups.setdefault(tuple(resolved), {"addresses": [], "notReadyAddresses": []})
        group["addresses" if pod_ready(pod) else "notReadyAddresses"].append(_address(pod))
    out = []
    for port_set, group in groups.items():
        subset: dict[str, Any] = {k: v for k, v in group.items() if v}
        subset["ports"] = [{**({"name": n} if n else {}), "port": p, "protocol": proto} for n, p, proto in port_set]
        out.append(subset)
    return out


def endpoints_for(service: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    meta = service.get("metadata") or {}
    labels = dict(meta.get("labels") or {})
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"),
                         **({"labels": labels} if labels else {})},
            "subsets": subsets(service, pods)}

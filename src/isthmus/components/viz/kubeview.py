"""What viz asks the cluster's API: the objects a query names, their pods, Links, mirrors.

Every lookup lists through lightkube when asked (viz answers a person or a
dashboard polling every few seconds; the lists are small), so answers are
never staler than the API. A resource that does not exist is `NotFound`
with a message naming it; the API server refusing is `ApiError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Endpoints, Namespace, Pod, Service

from isthmus.core import mirror as mcore
from isthmus.core.selectors import (
    SelectorError,
    selector_from_label_selector_object,
    selector_from_set,
)
from isthmus.core.viz.query import SHORT, Ref, StatTarget

__all__ = ["KubeView", "NotFound"]

MESHED_LABEL = "isthmus.io/control-plane-ns"
CLUSTER_NAME_LABEL = "mirror.isthmus.io/cluster-name"
MC_NAMESPACE = "isthmus-multicluster"
Link = create_namespaced_resource(mcore.LINK_GROUP, mcore.LINK_VERSION, mcore.LINK_KIND,
                                  mcore.LINK_PLURAL)
_RESOURCES: dict[str, Any] = {"deployment": Deployment, "pod": Pod, "service": Service,
                              "namespace": Namespace}


class NotFound(LookupError):
    """The named resource does not exist; the message says which."""


def _d(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _name(obj: Mapping[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("name") or ""


def _namespace(obj: Mapping[str, Any]) -> str:
    return (obj.get("metadata") or {}).get("namespace") or ""


def _live(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


class KubeView:
    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    def __repr__(self) -> str:
        return "<KubeView>"

    async def _list(self, resource: Any, namespace: str | None = None,
                    labels: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        scope: dict[str, Any] = {}
        if resource is not Namespace:
            scope["namespace"] = namespace or "*"
        if labels:
            scope["labels"] = dict(labels)
        return [_d(o) async for o in self.client.list(resource, **scope)]

    async def _get(self, ref: Ref) -> dict[str, Any]:
        resource = _RESOURCES[ref.kind]
        try:
            if ref.kind == "namespace":
                return _d(await self.client.get(resource, name=ref.name))
            return _d(await self.client.get(resource, name=ref.name, namespace=ref.namespace))
        except ApiError as e:
            if e.status.code == 404:
                where = "" if ref.kind == "namespace" else f" in namespace {ref.namespace}"
                raise NotFound(f"{ref.kind} {ref.name} not found{where}; list them with "
                               f"kubectl get {SHORT[ref.kind]}"
                               f"{'' if ref.kind == 'namespace' else ' -n ' + ref.namespace}") from None
            raise

    async def require(self, ref: Ref) -> None:
        """`NotFound` unless the named resource exists (a kind alone always does)."""
        if ref.name:
            await self._get(ref)

    async def objects(self, ref: Ref) -> list[dict[str, Any]]:
        if ref.name:
            return [await self._get(ref)]
        if ref.kind == "namespace":
            return await self._list(Namespace)
        return await self._list(_RESOURCES[ref.kind], ref.namespace)

    async def pods(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return [p for p in await self._list(Pod, namespace) if _live(p)]

    @staticmethod
    def selected_pods(obj: Mapping[str, Any], kind: str,
                      pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The pods an object stands for: a deployment's and a service's by selector."""
        spec = obj.get("spec") or {}
        if kind == "pod":
            return [obj]
        if kind == "namespace":
            return [p for p in pods if _namespace(p) == _name(obj)]
        try:
            if kind == "deployment":
                selector = selector_from_label_selector_object(spec.get("selector"))
            else:  # service: no selector selects nothing
                if not spec.get("selector"):
                    return []
                selector = selector_from_set(spec.get("selector"))
        except SelectorError:
            return []
        ns = _namespace(obj)
        return [p for p in pods if _namespace(p) == ns and selector.matches(_labels(p))]

    async def stat_targets(self, ref: Ref) -> list[StatTarget]:
        objects = await self.objects(ref)
        pods = await self.pods(None if ref.kind == "namespace" else ref.namespace)
        out = []
        for obj in objects:
            selected = self.selected_pods(obj, ref.kind, pods)
            meshed = sum(MESHED_LABEL in _labels(p) for p in selected)
            ns = _name(obj) if ref.kind == "namespace" else _namespace(obj)
            out.append(StatTarget(ref.kind, ns, _name(obj), meshed, len(selected)))
        return sorted(out, key=lambda t: (t.namespace, t.name))

    async def tap_pods(self, ref: Ref) -> list[dict[str, Any]]:
        """The meshed, running pods whose proxies can be tapped for `ref` (NotFound if none exists)."""
        objects = await self.objects(ref)
        if ref.name and not objects:
            raise NotFound(f"{ref} not found in namespace {ref.namespace}")
        pods = await self.pods(None if ref.kind == "namespace" else ref.namespace)
        chosen: dict[tuple[str, str], dict[str, Any]] = {}
        for obj in objects:
            for p in self.selected_pods(obj, ref.kind, pods):
                status = p.get("status") or {}
                if MESHED_LABEL in _labels(p) and status.get("podIP") and \
                        status.get("phase") == "Running":
                    chosen[_namespace(p), _name(p)] = dict(p)
        return list(chosen.values())

    async def service(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._get(Ref("service", name, namespace))

    async def namespaces(self) -> list[dict[str, Any]]:
        pods = await self.pods()
        out = []
        for ns in sorted(_name(n) for n in await self._list(Namespace)):
            mine = [p for p in pods if _namespace(p) == ns]
            out.append({"name": ns, "pods": len(mine),
                        "meshed_pods": sum(MESHED_LABEL in _labels(p) for p in mine)})
        return out

    async def links(self) -> list[dict[str, Any]]:
        try:
            return await self._list(Link, MC_NAMESPACE)
        except ApiError as e:
            if e.status.code == 404:  # the Link CRD is not installed: no links
                return []
            raise

    async def mirrored_services(self, cluster: str) -> list[dict[str, Any]]:
        services = await self._list(Service, None, {mcore.MIRRORED_SERVICE_LABEL: "true",
                                                    CLUSTER_NAME_LABEL: cluster})
        endpoints = {(_namespace(e), _name(e)): e
                     for e in await self._list(Endpoints, None,
                                               {mcore.MIRRORED_SERVICE_LABEL: "true"})}
        out = []
        for svc in sorted(services, key=lambda s: (_namespace(s), _name(s))):
            ep = endpoints.get((_namespace(svc), _name(svc))) or {}
            ready = sum(len(s.get("addresses") or []) for s in ep.get("subsets") or [])
            not_ready = sum(len(s.get("notReadyAddresses") or []) for s in ep.get("subsets") or [])
            out.append({"namespace": _namespace(svc), "name": _name(svc), "endpoints": ready,
                        "not_ready_endpoints": not_ready, "ready": ready > 0,
                        "remote": ((svc.get("metadata") or {}).get("annotations") or {})
                        .get("mirror.isthmus.io/remote-svc-fq-name", "")})
        return out

"""The kinds of resource the embedded API server serves, and how they map to URLs.

A `ResourceType` is everything the server needs to route a request and describe
the resource in discovery: group, version, plural, kind, scope, verbs and
subresources. Built-in types are listed here; custom resources become
`ResourceType`s when their CustomResourceDefinition is stored
(`from_crd`). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    singular: str = ""
    subresources: tuple[str, ...] = ()  # "status", "scale", "token", "log"
    verbs: tuple[str, ...] = ALL_VERBS
    categories: tuple[str, ...] = ()
    # The schema definition name (Kubernetes OpenAPI) of a built-in kind, or
    # None for custom resources, whose schema comes from their CRD.
    definition: str | None = None
    # Custom resources: the CRD's per-version openAPIV3Schema and printer columns.
    crd_schema: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    printer_columns: tuple[Mapping[str, Any], ...] = field(default=(), compare=False, hash=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def is_custom(self) -> bool:
        return self.definition is None

    @property
    def name_singular(self) -> str:
        return self.singular or self.kind.lower()

    @property
    def key(self) -> str:
        """Storage prefix of this resource: the same for every version of a group."""
        return f"{self.group}/{self.plural}" if self.group else self.plural


def _core(plural: str, kind: str, namespaced: bool, short: tuple[str, ...] = (), **kw: Any) -> ResourceType:
    return ResourceType("", "v1", plural, kind, namespaced, short, definition=f"io.k8s.api.core.v1.{kind}", **kw)


BUILTIN: tuple[ResourceType, ...] = (
    _core("namespaces", "Namespace", False, ("ns",), subresources=("status",),
          verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    _core("nodes", "Node", False, ("no",), subresources=("status",)),
    _core("services", "Service", True, ("svc",), subresources=("status",), categories=("all",),
          verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    _core("endpoints", "Endpoints", True, ("ep",)),
    _core("pods", "Pod", True, ("po",), subresources=("status", "log"), categories=("all",)),
    _core("secrets", "Secret", True),
    _core("configmaps", "ConfigMap", True, ("cm",)),
    _core("serviceaccounts", "ServiceAccount", True, ("sa",), subresources=("token",)),
    _core("events", "Event", True, ("ev",)),
    ResourceType("apps", "v1", "deployments", "Deployment", True, ("deploy",),
                 subresources=("status", "scale"), categories=("all",),
                 definition="io.k8s.api.apps.v1.Deployment"),
    ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                 "CustomResourceDefinition", False, ("crd", "crds"), subresources=("status",),
                 definition="io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition"),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True,
                 definition="io.k8s.api.coordination.v1.Lease"),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role", True,
                 definition="io.k8s.api.rbac.v1.Role"),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True,
                 definition="io.k8s.api.rbac.v1.RoleBinding"),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False,
                 definition="io.k8s.api.rbac.v1.ClusterRole"),
    ResourceType("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False,
                 definition="io.k8s.api.rbac.v1.ClusterRoleBinding"),
    ResourceType("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations",
                 "MutatingWebhookConfiguration", False, categories=("api-extensions",),
                 definition="io.k8s.api.admissionregistration.v1.MutatingWebhookConfiguration"),
    ResourceType("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations",
                 "ValidatingWebhookConfiguration", False, categories=("api-extensions",),
                 definition="io.k8s.api.admissionregistration.v1.ValidatingWebhookConfiguration"),
)

# Resources that are only ever created (reviews): served, never stored.
REVIEWS: tuple[ResourceType, ...] = (
    ResourceType("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", False,
                 verbs=("create",), definition="io.k8s.api.authentication.v1.TokenReview"),
    ResourceType("authorization.k8s.io", "v1", "selfsubjectaccessreviews",
                 "SelfSubjectAccessReview", False, verbs=("create",),
                 definition="io.k8s.api.authorization.v1.SelfSubjectAccessReview"),
    ResourceType("authorization.k8s.io", "v1", "subjectaccessreviews",
                 "SubjectAccessReview", False, verbs=("create",),
                 definition="io.k8s.api.authorization.v1.SubjectAccessReview"),
)


class UnknownResource(LookupError):
    pass


def from_crd(crd: Mapping[str, Any]) -> list[ResourceType]:
    """The served versions of a stored CustomResourceDefinition."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out: list[ResourceType] = []
    for v in spec.get("versions") or []:
        if not v.get("served", True):
            continue
        subs = tuple(k for k in (v.get("subresources") or {}) if k in ("status", "scale"))
        out.append(ResourceType(
            group=spec.get("group", ""),
            version=v["name"],
            plural=names.get("plural", ""),
            kind=names.get("kind", ""),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()),
            singular=names.get("singular", ""),
            subresources=subs,
            categories=tuple(names.get("categories") or ()),
            crd_schema=(v.get("schema") or {}).get("openAPIV3Schema"),
            printer_columns=tuple(v.get("additionalPrinterColumns") or ()),
        ))
    return out


class Registry:
    """The resource types served right now: the built-ins plus stored CRDs."""

    def __init__(self, builtin: Iterable[ResourceType] = BUILTIN + REVIEWS) -> None:
        self._builtin = tuple(builtin)
        self._custom: dict[str, list[ResourceType]] = {}  # CRD name -> types
        self._index: dict[tuple[str, str, str], ResourceType] = {}
        self._reindex()

    def _reindex(self) -> None:
        self._index = {(t.group, t.version, t.plural): t for t in self.all()}

    def all(self) -> list[ResourceType]:
        out = list(self._builtin)
        for types in self._custom.values():
            out.extend(types)
        return out

    def set_crd(self, crd: Mapping[str, Any]) -> None:
        self._custom[crd["metadata"]["name"]] = from_crd(crd)
        self._reindex()

    def remove_crd(self, name: str) -> None:
        self._custom.pop(name, None)
        self._reindex()

    def lookup(self, group: str, version: str, plural: str) -> ResourceType:
        try:
            return self._index[(group, version, plural)]
        except KeyError:
            raise UnknownResource(f"{plural}.{group}/{version}" if group else f"{plural}/{version}") from None

    def find(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._index.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        for t in self.all():
            if t.api_version == api_version and t.kind == kind:
                return t
        return None

    def group_versions(self) -> dict[str, list[str]]:
        """group -> versions, in the order they were registered (core group is "")."""
        out: dict[str, list[str]] = {}
        for t in self.all():
            vs = out.setdefault(t.group, [])
            if t.version not in vs:
                vs.append(t.version)
        return out

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [t for t in self.all() if t.group == group and t.version == version]

    def __repr__(self) -> str:
        return f"<Registry builtin={len(self._builtin)} crds={len(self._custom)}>"

"""RBAC decisions: does a user may do a verb on a resource, given the cluster's roles.

The rules follow Kubernetes' RBAC authorizer (k8s.io/kubernetes/plugin/pkg/auth/
authorizer/rbac): RoleBindings grant their role's rules inside the binding's
namespace, ClusterRoleBindings grant everywhere; `*` matches any verb, group,
resource or name; `resource/subresource` must be named as such; members of
`system:masters` may do everything. Pure: callers pass the roles and bindings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def is_admin(self) -> bool:
        return "system:masters" in self.groups


@dataclass(frozen=True)
class Attributes:
    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    non_resource_path: str = ""  # set for non-resource requests instead of resource

    @property
    def is_resource(self) -> bool:
        return not self.non_resource_path


def _subject_matches(subject: Mapping[str, Any], user: User, binding_ns: str) -> bool:
    kind = subject.get("kind")
    name = subject.get("name", "")
    if kind == "User":
        return bool(name == user.name)
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_ns
        return user.name == f"system:serviceaccount:{ns}:{name}"
    return False


def _matches(values: Iterable[str] | None, wanted: str) -> bool:
    vals = list(values or ())
    return "*" in vals or wanted in vals


def rule_allows(rule: Mapping[str, Any], attrs: Attributes) -> bool:
    if not _matches(rule.get("verbs"), attrs.verb):
        return False
    if not attrs.is_resource:
        urls = rule.get("nonResourceURLs") or []
        return any(u == attrs.non_resource_path or u == "*" or
                   (u.endswith("*") and attrs.non_resource_path.startswith(u[:-1])) for u in urls)
    if not _matches(rule.get("apiGroups"), attrs.group):
        return False
    combined = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    resources = list(rule.get("resources") or ())
    if not ("*" in resources or combined in resources or
            (attrs.subresource and f"*/{attrs.subresource}" in resources)):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


def authorize(user: User, attrs: Attributes, *, roles: Mapping[tuple[str, str], Mapping[str, Any]],
              cluster_roles: Mapping[str, Mapping[str, Any]],
              role_bindings: Iterable[Mapping[str, Any]],
              cluster_role_bindings: Iterable[Mapping[str, Any]]) -> tuple[bool, str]:
    """Decide; returns (allowed, reason). `roles` is keyed by (namespace, name)."""
    if user.is_admin:
        return True, "member of system:masters"

    def rules_of(ref: Mapping[str, Any], ns: str) -> list[Mapping[str, Any]]:
        if ref.get("kind") == "ClusterRole":
            role = cluster_roles.get(ref.get("name", ""))
        else:
            role = roles.get((ns, ref.get("name", "")))
        return list((role or {}).get("rules") or [])

    for b in cluster_role_bindings:
        if any(_subject_matches(s, user, "") for s in b.get("subjects") or []):
            for rule in rules_of(b.get("roleRef") or {}, ""):
                if rule_allows(rule, attrs):
                    return True, f'allowed by ClusterRoleBinding "{b["metadata"]["name"]}"'
    if attrs.namespace:
        for b in role_bindings:
            ns = b["metadata"].get("namespace", "")
            if ns != attrs.namespace:
                continue
            if any(_subject_matches(s, user, ns) for s in b.get("subjects") or []):
                for rule in rules_of(b.get("roleRef") or {}, ns):
                    if rule_allows(rule, attrs):
                        return True, f'allowed by RoleBinding "{b["metadata"]["name"]}/{ns}"'
    return False, ""


def describe_forbidden(user: User, attrs: Attributes) -> str:
    """Kubernetes' wording for a refusal."""
    if not attrs.is_resource:
        return f'User "{user.name}" cannot {attrs.verb} path "{attrs.non_resource_path}"'
    what = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
    group = attrs.group or '""'
    where = (f' in the namespace "{attrs.namespace}"' if attrs.namespace else " at the cluster scope")
    named = f' "{attrs.name}"' if attrs.name else ""
    return f'{what}{named} is forbidden: User "{user.name}" cannot {attrs.verb} resource "{what}" in API group {group}{where}'

"""Who is calling and what they may do.

Authentication: a client certificate signed by the cluster CA (CN is the user,
O the groups; the admin's is `O=system:masters`), or a bearer token that is a
service-account JWT signed by this cluster. Anything else is anonymous and gets
401. Authorization: `system:masters` may do everything; every authenticated
user may read discovery, version, OpenAPI and health paths and review its own
access (Kubernetes' `system:discovery`, `system:basic-user`); the rest is what
the stored RBAC objects grant (decided by `isthmus.core.rbac`).
"""

from __future__ import annotations

from typing import Any

from isthmus.adapters.store import Event, Store
from isthmus.core.rbac import Attributes, User, authorize

from .tokens import TokenInvalid, TokenIssuer

_PUBLIC_PATHS = ("/api", "/apis", "/version", "/openapi", "/healthz", "/livez", "/readyz")
_SELF_REVIEWS = {("authorization.k8s.io", "selfsubjectaccessreviews"),
                 ("authorization.k8s.io", "selfsubjectrulesreviews"),
                 ("authentication.k8s.io", "selfsubjectreviews")}


class AuthenticationFailed(Exception):
    pass


def user_from_peercert(peercert: dict[str, Any] | None) -> User | None:
    """The user named by a verified client certificate (as `ssl` reports it), if any."""
    if not peercert:
        return None
    cn = ""
    orgs: list[str] = []
    for rdn in peercert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                cn = v
            elif k == "organizationName":
                orgs.append(v)
    if not cn:
        return None
    return User(name=cn, groups=(*orgs, "system:authenticated"))


class Authenticator:
    def __init__(self, tokens: TokenIssuer) -> None:
        self._tokens = tokens

    def authenticate(self, peercert: dict[str, Any] | None, authorization: str | None) -> User:
        # As in Kubernetes, a verified client certificate wins over a bearer token.
        cert_user = user_from_peercert(peercert)
        if cert_user is not None:
            return cert_user
        if not authorization:
            raise AuthenticationFailed("no client certificate or bearer token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed("unsupported Authorization header; send a bearer token")
        try:
            user, _aud = self._tokens.verify(token.strip())
        except TokenInvalid as e:
            raise AuthenticationFailed(str(e)) from None
        return user


class Authorizer:
    """RBAC over the objects in the store.

    The roles and bindings are parsed once and kept until one of them changes
    (the store tells), so a service account's request costs no JSON parsing.
    """

    _RESOURCES = ("roles", "clusterroles", "rolebindings", "clusterrolebindings")

    def __init__(self, store: Store) -> None:
        self._store = store
        self._rbac: dict[str, list[dict[str, Any]]] | None = None
        prefixes = {f"rbac.authorization.k8s.io/{r}" for r in self._RESOURCES}

        def on_change(event: Event) -> None:
            if event.resource in prefixes:
                self._rbac = None

        store.subscribe(on_change)

    def _objects(self) -> dict[str, list[dict[str, Any]]]:
        if self._rbac is None:
            self._rbac = {r: [rec.obj() for rec in self._store.list(f"rbac.authorization.k8s.io/{r}")]
                          for r in self._RESOURCES}
        return self._rbac

    def allowed(self, user: User, attrs: Attributes) -> tuple[bool, str]:
        if user.is_admin:
            return True, "member of system:masters"
        if not attrs.is_resource and attrs.verb == "get" and any(
                attrs.non_resource_path == p or attrs.non_resource_path.startswith(p + "/")
                for p in _PUBLIC_PATHS):
            return True, "discovery is open to authenticated users"
        if attrs.is_resource and attrs.verb == "create" and (attrs.group, attrs.resource) in _SELF_REVIEWS:
            return True, "users may review their own access"
        rbac = self._objects()
        roles = {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in rbac["roles"]}
        cluster_roles = {o["metadata"]["name"]: o for o in rbac["clusterroles"]}
        role_bindings = [o for o in rbac["rolebindings"]
                         if attrs.namespace and o["metadata"].get("namespace") == attrs.namespace]
        return authorize(user, attrs, roles=roles, cluster_roles=cluster_roles,
                         role_bindings=role_bindings, cluster_role_bindings=rbac["clusterrolebindings"])

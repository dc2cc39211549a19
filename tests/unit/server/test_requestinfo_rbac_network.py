"""Pure pieces the API server decides with: request parsing, RBAC, the address plan."""

from __future__ import annotations

import pytest

from isthmus.core.network import Allocator, ClusterNetwork, RangeExhausted
from isthmus.core.rbac import Attributes, User, authorize, describe_forbidden, rule_allows
from isthmus.core.requestinfo import parse_request


@pytest.mark.parametrize(("method", "path", "query", "want"), [
    ("GET", "/api/v1/namespaces/ns/pods", {}, ("list", "", "v1", "ns", "pods", "", "")),
    ("GET", "/api/v1/namespaces/ns/pods", {"watch": "true"}, ("watch", "", "v1", "ns", "pods", "", "")),
    ("GET", "/api/v1/pods", {}, ("list", "", "v1", "", "pods", "", "")),
    ("GET", "/api/v1/namespaces/ns", {}, ("get", "", "v1", "", "namespaces", "ns", "")),
    ("PUT", "/api/v1/namespaces/ns/status", {}, ("update", "", "v1", "", "namespaces", "ns", "status")),
    ("PATCH", "/apis/apps/v1/namespaces/e/deployments/web/scale", {},
     ("patch", "apps", "v1", "e", "deployments", "web", "scale")),
    ("DELETE", "/apis/apps/v1/namespaces/e/deployments", {}, ("deletecollection", "apps", "v1", "e", "deployments", "", "")),
    ("POST", "/api/v1/namespaces/e/serviceaccounts/default/token", {},
     ("create", "", "v1", "e", "serviceaccounts", "default", "token")),
    ("GET", "/apis/apps/v1/watch/namespaces/e/deployments", {}, ("watch", "apps", "v1", "e", "deployments", "", "")),
])
def test_resource_requests(method: str, path: str, query: dict[str, str], want: tuple[str, ...]) -> None:
    info = parse_request(method, path, query)
    assert info.is_resource
    assert (info.verb, info.group, info.version, info.namespace, info.resource, info.name, info.subresource) == want


@pytest.mark.parametrize("path", ["/api", "/api/", "/apis", "/apis/apps", "/apis/apps/v1", "/version", "/openapi/v3"])
def test_non_resource_requests(path: str) -> None:
    assert not parse_request("GET", path, {}).is_resource


SA = User("system:serviceaccount:mc:mirror", ("system:serviceaccounts", "system:serviceaccounts:mc"))


def _authz(attrs: Attributes, user: User = SA) -> bool:
    roles = {("east", "reader"): {"rules": [{"apiGroups": [""], "resources": ["services", "endpoints"],
                                             "verbs": ["get", "list", "watch"]}]}}
    cluster_roles = {"cm-one": {"rules": [{"apiGroups": [""], "resources": ["configmaps"],
                                           "resourceNames": ["one"], "verbs": ["get"]}]},
                     "scaler": {"rules": [{"apiGroups": ["apps"], "resources": ["deployments/scale"],
                                           "verbs": ["*"]}]}}
    rbs = [{"metadata": {"name": "rb", "namespace": "east"}, "roleRef": {"kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "mirror", "namespace": "mc"}]}]
    crbs = [{"metadata": {"name": "crb"}, "roleRef": {"kind": "ClusterRole", "name": "cm-one"},
             "subjects": [{"kind": "Group", "name": "system:serviceaccounts:mc"}]},
            {"metadata": {"name": "other"}, "roleRef": {"kind": "ClusterRole", "name": "scaler"},
             "subjects": [{"kind": "User", "name": "someone-else"}]}]
    return authorize(user, attrs, roles=roles, cluster_roles=cluster_roles, role_bindings=rbs,
                     cluster_role_bindings=crbs)[0]


def test_rbac_role_binding_is_namespaced() -> None:
    assert _authz(Attributes("list", "", "services", namespace="east"))
    assert _authz(Attributes("watch", "", "endpoints", namespace="east"))
    assert not _authz(Attributes("list", "", "services", namespace="west"))
    assert not _authz(Attributes("delete", "", "services", namespace="east"))
    assert not _authz(Attributes("list", "", "secrets", namespace="east"))


def test_rbac_cluster_binding_by_group_and_resource_names() -> None:
    assert _authz(Attributes("get", "", "configmaps", namespace="any", name="one"))
    assert not _authz(Attributes("get", "", "configmaps", namespace="any", name="two"))
    assert not _authz(Attributes("patch", "apps", "deployments", "scale", namespace="x"))
    assert _authz(Attributes("patch", "apps", "deployments", "scale", namespace="x"), User("someone-else"))
    assert not _authz(Attributes("patch", "apps", "deployments", namespace="x"), User("someone-else"))


def test_masters_may_do_everything_and_refusals_use_kubernetes_wording() -> None:
    assert _authz(Attributes("delete", "x", "y", namespace="z"), User("admin", ("system:masters",)))
    msg = describe_forbidden(SA, Attributes("list", "", "secrets", namespace="east"))
    assert msg == ('secrets is forbidden: User "system:serviceaccount:mc:mirror" cannot list resource "secrets" '
                   'in API group "" in the namespace "east"')


def test_rule_wildcards_and_non_resource_urls() -> None:
    assert rule_allows({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                       Attributes("get", "apps", "deployments", "status"))
    assert rule_allows({"nonResourceURLs": ["/healthz/*"], "verbs": ["get"]},
                       Attributes("get", non_resource_path="/healthz/ping"))
    assert not rule_allows({"nonResourceURLs": ["/healthz"], "verbs": ["get"]},
                           Attributes("get", non_resource_path="/metrics"))


def test_network_plan_and_allocator() -> None:
    net = ClusterNetwork(7)
    assert net.api_ip == "127.7.0.1" and net.node_ip(2) == "127.7.0.12"
    assert net.service_range == ("127.7.128.1", "127.7.191.254")
    with pytest.raises(ValueError, match="between 1 and 254"):
        ClusterNetwork(0)
    a = Allocator("127.7.128.254", "127.7.129.2", in_use=["127.7.129.1"])
    assert a.allocate() == "127.7.128.254"
    assert a.allocate() == "127.7.129.2"  # .255 and .0 skipped, .1 in use
    with pytest.raises(RangeExhausted):
        a.allocate()
    a.release("127.7.128.254")
    assert a.allocate() == "127.7.128.254"
    assert not a.contains("127.8.128.1")

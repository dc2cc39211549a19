"""The service mirror's decisions (isthmus.core.mirror), without a cluster."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from isthmus.core import mirror as m
from isthmus.core.destination import EndpointsInfo

GW = m.Gateway(("127.9.192.1",), alive=True)


def link_obj(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"targetClusterName": "east", "gatewayAddress": "127.9.192.1",
                            "gatewayIdentity": "isthmus-gateway.isthmus-multicluster.serviceaccount.identity."
                                               "isthmus.cluster.local"}
    base.update(spec)
    return {"apiVersion": "multicluster.isthmus.io/v1alpha1", "kind": "Link",
            "metadata": {"name": "east", "namespace": "isthmus-multicluster"}, "spec": base}


LINK = m.LinkSpec.from_object(link_obj(gatewayPort=4143))


def remote_svc(name: str = "web-svc", ns: str = "emojivoto", *, labels: dict[str, str] | None = None,
               ports: list[dict[str, Any]] | None = None, rv: str = "41",
               annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": rv,
                         "labels": {"app": "web", m.EXPORTED_LABEL: "true"} if labels is None else labels,
                         "annotations": annotations or {}},
            "spec": {"type": "ClusterIP", "clusterIP": "127.9.128.7", "selector": {"app": "web"},
                     "ports": ports or [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}


def remote_ep(name: str = "web-svc", ns: str = "emojivoto", ready: int = 2, not_ready: int = 0) -> dict[str, Any]:
    subset: dict[str, Any] = {"ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}
    if ready:
        subset["addresses"] = [{"ip": f"127.9.64.{i + 1}"} for i in range(ready)]
    if not_ready:
        subset["notReadyAddresses"] = [{"ip": f"127.9.65.{i + 1}"} for i in range(not_ready)]
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns},
            "subsets": [subset] if ready or not_ready else []}


def decide(svc: dict[str, Any] | None = None, ep: dict[str, Any] | None = None, *,
           local_svc: dict[str, Any] | None = None, local_ep: dict[str, Any] | None = None,
           link: m.LinkSpec = LINK, ns_exists: bool = True, gateway: m.Gateway = GW,
           key: tuple[str, str] = ("emojivoto", "web-svc")) -> m.Decision:
    return m.decide(link, key, remote_service=svc, remote_endpoints=ep, local_service=local_svc,
                    local_endpoints=local_ep, namespace_exists=ns_exists, gateway=gateway)


def as_stored(action: m.Action, rv: str = "7") -> dict[str, Any]:
    """What the API server stores for a create: defaults filled in, as Kubernetes does."""
    obj = copy.deepcopy(dict(action.body or {}))
    obj["metadata"]["resourceVersion"] = rv
    obj["metadata"]["uid"] = "u-1"
    if obj["kind"] == "Service":
        obj["spec"]["clusterIP"] = "127.1.128.9"
        for p in obj["spec"]["ports"]:
            p.setdefault("targetPort", p["port"])
    return obj


def converge(svc: dict[str, Any], ep: dict[str, Any] | None, **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply a first decision's creates as the API would, and return the stored objects."""
    d = decide(svc, ep, **kw)
    by_kind = {a.kind: a for a in d.actions}
    return as_stored(by_kind["Service"]), as_stored(by_kind["Endpoints"])


# --------------------------------------------------------------------------- Link


def test_a_minimal_link_gets_its_defaults() -> None:
    link = m.LinkSpec.from_object(link_obj())
    assert link.name == "east" and link.namespace == "isthmus-multicluster"
    assert link.target_cluster_name == "east"
    assert link.target_cluster_domain == "cluster.local"
    assert link.credentials_secret == "cluster-credentials-east"
    assert link.gateway_addresses == ("127.9.192.1",)
    assert link.gateway_port == 4143
    assert link.probe == m.ProbeSpec(path="/ready", port=4191, period=3.0, timeout=3.0, failure_threshold=3)
    assert link.selector.matches({m.EXPORTED_LABEL: "true"})
    assert not link.selector.matches({m.EXPORTED_LABEL: "false"})
    assert not link.selector.matches({})
    assert link.create_missing_namespaces is False


def test_a_full_link_is_read_as_written() -> None:
    link = m.LinkSpec.from_object(link_obj(
        targetClusterDomain="east.example", clusterCredentialsSecret="creds",
        gatewayAddress=" 127.9.192.1, gw.east.example ,", gatewayPort="4144",
        probeSpec={"path": "/healthz", "port": "4192", "period": "1m30s", "timeout": "500ms",
                   "failureThreshold": 5},
        selector={"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]},
        createMissingNamespaces=True))
    assert link.target_cluster_domain == "east.example"
    assert link.credentials_secret == "creds"
    assert link.gateway_addresses == ("127.9.192.1", "gw.east.example")
    assert link.gateway_port == 4144
    assert link.probe == m.ProbeSpec("/healthz", 4192, 90.0, 0.5, 5)
    assert link.selector.matches({"tier": "front"}) and not link.selector.matches({m.EXPORTED_LABEL: "true"})
    assert link.create_missing_namespaces is True


def test_a_broken_link_names_every_problem() -> None:
    with pytest.raises(m.LinkError) as e:
        m.LinkSpec.from_object({"metadata": {"name": "x"}, "spec": {
            "targetClusterName": "East_1", "gatewayPort": 70000,
            "probeSpec": {"period": "soon", "failureThreshold": 0, "path": "ready"},
            "selector": {"matchLabels": {"a": 1}}, "createMissingNamespaces": "yes"}})
    text = str(e.value)
    for part in ("spec.targetClusterName 'East_1'", "spec.gatewayAddress is required",
                 "spec.gatewayIdentity is required", "spec.gatewayPort must be a port number",
                 "spec.probeSpec.period", "spec.probeSpec.failureThreshold", "spec.probeSpec.path",
                 "spec.selector", "spec.createMissingNamespaces"):
        assert part in text


def test_a_gateway_address_must_be_an_ip_or_a_host_name() -> None:
    with pytest.raises(m.LinkError, match="neither an IP address nor a host name"):
        m.LinkSpec.from_object(link_obj(gatewayAddress="127.9.192.1,not a host"))


@pytest.mark.parametrize(("text", "seconds"), [
    ("3s", 3.0), ("500ms", 0.5), ("1m30s", 90.0), ("1h", 3600.0), ("1.5s", 1.5), ("10us", 1e-5), ("0", 0.0),
])
def test_durations_are_read_as_go_writes_them(text: str, seconds: float) -> None:
    assert m.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "3", "s", "3 s", "-3s", "3sec", "1m30"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        m.parse_duration(text)


# --------------------------------------------------------------------------- creating mirrors


def test_an_exported_service_gets_a_mirror_service_and_endpoints() -> None:
    d = decide(remote_svc(labels={"app": "web", "tier": "front", m.EXPORTED_LABEL: "true",
                                  "mirror.isthmus.io/other": "x"}), remote_ep())
    assert [str(a) for a in d.actions] == ["create Service emojivoto/web-svc-east",
                                           "create Endpoints emojivoto/web-svc-east"]
    svc, ep = (a.body for a in d.actions)
    assert svc is not None and ep is not None
    labels = {"app": "web", "tier": "front", m.MIRRORED_SERVICE_LABEL: "true", m.CLUSTER_NAME_LABEL: "east"}
    assert svc["metadata"] == {
        "name": "web-svc-east", "namespace": "emojivoto", "labels": labels,
        "annotations": {m.REMOTE_FQ_NAME_ANNOTATION: "web-svc.emojivoto.svc.cluster.local",
                        m.REMOTE_RESOURCE_VERSION_ANNOTATION: "41"}}
    assert svc["spec"] == {"type": "ClusterIP", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    assert ep["metadata"] == {
        "name": "web-svc-east", "namespace": "emojivoto", "labels": labels,
        "annotations": {m.GATEWAY_IDENTITY_ANNOTATION: LINK.gateway_identity,
                        m.REMOTE_FQ_NAME_ANNOTATION: "web-svc.emojivoto.svc.cluster.local"}}
    assert ep["subsets"] == [{"addresses": [{"ip": "127.9.192.1"}],
                              "ports": [{"name": "http", "port": 4143, "protocol": "TCP"}]}]
    assert d.status is not None
    assert d.status.mirror == "web-svc-east"
    assert [(c.type, c.status, c.reason) for c in d.status.conditions] == [
        ("Mirrored", "True", "Mirrored"), ("EndpointsReady", "True", "GatewayAlive")]


def test_the_destination_service_reads_the_mirror_endpoints_as_gateway_endpoints() -> None:
    d = decide(remote_svc(), remote_ep())
    info = EndpointsInfo.from_object(dict(d.actions[1].body or {}))
    assert info is not None
    assert info.gateway_identity == LINK.gateway_identity
    assert info.remote_fq_name == "web-svc.emojivoto.svc.cluster.local"


def test_every_port_is_copied_and_served_on_the_gateway_port_under_its_name() -> None:
    ports = [{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"},
             {"name": "grpc", "port": 8081, "targetPort": 9000},
             {"name": "dns", "port": 53, "protocol": "UDP"}]
    d = decide(remote_svc(ports=ports), remote_ep())
    svc, ep = (a.body for a in d.actions)
    assert svc is not None and ep is not None
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "protocol": "TCP"},
                                    {"name": "grpc", "port": 8081, "protocol": "TCP"},
                                    {"name": "dns", "port": 53, "protocol": "UDP"}]
    assert ep["subsets"][0]["ports"] == [{"name": "http", "port": 4143, "protocol": "TCP"},
                                         {"name": "grpc", "port": 4143, "protocol": "TCP"},
                                         {"name": "dns", "port": 4143, "protocol": "UDP"}]


def test_an_unnamed_single_port_stays_unnamed() -> None:
    d = decide(remote_svc(ports=[{"port": 80}]), remote_ep())
    svc, ep = (a.body for a in d.actions)
    assert svc is not None and ep is not None
    assert svc["spec"]["ports"] == [{"port": 80, "protocol": "TCP"}]
    assert ep["subsets"][0]["ports"] == [{"port": 4143, "protocol": "TCP"}]


def test_the_opaque_ports_annotation_is_copied_and_other_annotations_are_not() -> None:
    d = decide(remote_svc(annotations={"config.isthmus.io/opaque-ports": "3306", "team": "a",
                                       "timeout.isthmus.io/request": "1s"}), remote_ep())
    svc = d.actions[0].body
    assert svc is not None
    assert svc["metadata"]["annotations"]["config.isthmus.io/opaque-ports"] == "3306"
    assert "team" not in svc["metadata"]["annotations"]
    assert "timeout.isthmus.io/request" not in svc["metadata"]["annotations"]


def test_gateway_addresses_are_all_listed_in_order() -> None:
    d = decide(remote_svc(), remote_ep(), gateway=m.Gateway(("127.9.192.2", "127.9.192.10", "127.9.192.2")))
    ep = d.actions[1].body
    assert ep is not None
    assert ep["subsets"][0]["addresses"] == [{"ip": "127.9.192.2"}, {"ip": "127.9.192.10"}]


def test_the_cluster_domain_makes_the_remote_name() -> None:
    link = m.LinkSpec.from_object(link_obj(targetClusterDomain="east.local"))
    d = decide(remote_svc(), remote_ep(), link=link)
    assert d.actions[0].body is not None
    assert d.actions[0].body["metadata"]["annotations"][m.REMOTE_FQ_NAME_ANNOTATION] == \
        "web-svc.emojivoto.svc.east.local"


def test_a_custom_selector_decides_what_is_exported() -> None:
    link = m.LinkSpec.from_object(link_obj(selector={"matchLabels": {"mirror": "yes"}}))
    assert decide(remote_svc(labels={"mirror": "yes"}), remote_ep(), link=link).actions
    assert not decide(remote_svc(), remote_ep(), link=link).actions


def test_a_remote_mirror_is_never_mirrored_again() -> None:
    labels = {m.EXPORTED_LABEL: "true", m.MIRRORED_SERVICE_LABEL: "true", m.CLUSTER_NAME_LABEL: "west"}
    d = decide(remote_svc(labels=labels), remote_ep())
    assert d == m.Decision((), None)


def test_an_unexported_service_without_a_mirror_needs_nothing() -> None:
    assert decide(remote_svc(labels={"app": "web"}), remote_ep()) == m.Decision((), None)
    assert decide(None, None) == m.Decision((), None)


# --------------------------------------------------------------------------- keeping mirrors right


def test_a_mirror_as_the_api_stored_it_needs_nothing_more() -> None:
    svc, ep = remote_svc(), remote_ep()
    local_svc, local_ep = converge(svc, ep)
    d = decide(svc, ep, local_svc=local_svc, local_ep=local_ep)
    assert d.actions == ()
    assert d.status is not None and d.status.problem is None


def test_no_ready_remote_endpoints_empty_the_mirror_endpoints() -> None:
    svc = remote_svc()
    local_svc, local_ep = converge(svc, remote_ep())
    d = decide(svc, remote_ep(ready=0, not_ready=2), local_svc=local_svc, local_ep=local_ep)
    assert [str(a) for a in d.actions] == ["update Endpoints emojivoto/web-svc-east"]
    body = d.actions[0].body
    assert body is not None
    assert body["subsets"] == []
    assert body["metadata"]["resourceVersion"] == "7"
    assert d.status is not None
    assert d.status.condition("EndpointsReady") == m.Condition(
        "EndpointsReady", "False", "NoRemoteEndpoints", "the service has no ready endpoints in east")
    assert d.status.problem is None  # still mirrored
    assert decide(svc, None).actions[1].body["subsets"] == []  # type: ignore[index]


def test_ready_endpoints_coming_back_fill_the_mirror_again() -> None:
    svc = remote_svc()
    local_svc, local_ep = converge(svc, None)
    d = decide(svc, remote_ep(ready=1), local_svc=local_svc, local_ep=local_ep)
    assert [str(a) for a in d.actions] == ["update Endpoints emojivoto/web-svc-east"]
    assert d.actions[0].body is not None
    assert d.actions[0].body["subsets"][0]["addresses"] == [{"ip": "127.9.192.1"}]


def test_a_gateway_that_is_not_alive_moves_the_addresses_to_not_ready() -> None:
    svc, ep = remote_svc(), remote_ep()
    local_svc, local_ep = converge(svc, ep)
    d = decide(svc, ep, local_svc=local_svc, local_ep=local_ep, gateway=m.Gateway(GW.addresses, alive=False))
    body = d.actions[0].body
    assert body is not None
    assert body["subsets"] == [{"notReadyAddresses": [{"ip": "127.9.192.1"}],
                                "ports": [{"name": "http", "port": 4143, "protocol": "TCP"}]}]
    assert d.status is not None
    cond = d.status.condition("EndpointsReady")
    assert cond is not None and (cond.status, cond.reason) == ("False", "GatewayNotAlive")
    # ... and back once it is alive again.
    back = decide(svc, ep, local_svc=local_svc, local_ep=body, gateway=GW)
    assert back.actions[0].body is not None
    assert back.actions[0].body["subsets"][0]["addresses"] == [{"ip": "127.9.192.1"}]


def test_a_gateway_without_addresses_leaves_the_mirror_without_endpoints() -> None:
    d = decide(remote_svc(), remote_ep(), gateway=m.Gateway((), alive=True))
    assert d.actions[1].body is not None and d.actions[1].body["subsets"] == []
    assert d.status is not None
    cond = d.status.condition("EndpointsReady")
    assert cond is not None and cond.reason == "GatewayUnresolved"


def test_a_changed_gateway_address_replaces_the_endpoints_addresses() -> None:
    svc, ep = remote_svc(), remote_ep()
    local_svc, local_ep = converge(svc, ep)
    d = decide(svc, ep, local_svc=local_svc, local_ep=local_ep, gateway=m.Gateway(("127.9.192.5",)))
    assert [str(a) for a in d.actions] == ["update Endpoints emojivoto/web-svc-east"]
    assert d.actions[0].body is not None
    assert d.actions[0].body["subsets"][0]["addresses"] == [{"ip": "127.9.192.5"}]


def test_a_changed_remote_service_updates_the_mirror_and_keeps_what_the_api_gave_it() -> None:
    svc, ep = remote_svc(), remote_ep()
    local_svc, local_ep = converge(svc, ep)
    local_svc["metadata"]["annotations"]["note"] = "put here by someone in this cluster"
    changed = remote_svc(rv="42", labels={"app": "web2", m.EXPORTED_LABEL: "true"},
                         ports=[{"name": "http", "port": 80}, {"name": "admin", "port": 9990}])
    d = decide(changed, ep, local_svc=local_svc, local_ep=local_ep)
    assert [str(a) for a in d.actions] == ["update Service emojivoto/web-svc-east",
                                           "update Endpoints emojivoto/web-svc-east"]
    svc_body, ep_body = (a.body for a in d.actions)
    assert svc_body is not None and ep_body is not None
    assert svc_body["metadata"]["resourceVersion"] == "7"
    assert svc_body["spec"]["clusterIP"] == "127.1.128.9"
    assert svc_body["spec"]["ports"] == [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80},
                                         {"name": "admin", "port": 9990, "protocol": "TCP"}]
    assert svc_body["metadata"]["labels"]["app"] == "web2"
    assert svc_body["metadata"]["annotations"][m.REMOTE_RESOURCE_VERSION_ANNOTATION] == "42"
    assert svc_body["metadata"]["annotations"]["note"] == "put here by someone in this cluster"
    assert [p["name"] for p in ep_body["subsets"][0]["ports"]] == ["http", "admin"]


def test_an_annotation_the_remote_dropped_is_dropped_from_the_mirror() -> None:
    svc = remote_svc(annotations={"config.isthmus.io/opaque-ports": "3306"})
    local_svc, local_ep = converge(svc, remote_ep())
    d = decide(remote_svc(rv="42"), remote_ep(), local_svc=local_svc, local_ep=local_ep)
    assert d.actions[0].body is not None
    assert "config.isthmus.io/opaque-ports" not in d.actions[0].body["metadata"]["annotations"]


def test_mirror_endpoints_removed_by_someone_are_created_again() -> None:
    svc, ep = remote_svc(), remote_ep()
    local_svc, _ = converge(svc, ep)
    d = decide(svc, ep, local_svc=local_svc, local_ep=None)
    assert [str(a) for a in d.actions] == ["create Endpoints emojivoto/web-svc-east"]


# --------------------------------------------------------------------------- deleting mirrors


def test_an_unexported_service_loses_its_mirror() -> None:
    local_svc, local_ep = converge(remote_svc(), remote_ep())
    d = decide(remote_svc(labels={"app": "web"}), remote_ep(), local_svc=local_svc, local_ep=local_ep)
    assert [str(a) for a in d.actions] == ["delete Endpoints emojivoto/web-svc-east",
                                           "delete Service emojivoto/web-svc-east"]
    assert d.status is None


def test_a_deleted_remote_service_loses_its_mirror() -> None:
    local_svc, local_ep = converge(remote_svc(), remote_ep())
    d = decide(None, None, local_svc=local_svc, local_ep=local_ep)
    assert [a.verb for a in d.actions] == ["delete", "delete"]


def test_a_local_service_that_is_not_this_clusters_mirror_is_never_touched() -> None:
    mine = {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web-svc-east", "namespace": "emojivoto", "labels": {"app": "local"}},
            "spec": {"ports": [{"port": 80}]}}
    assert decide(None, None, local_svc=mine).actions == ()
    d = decide(remote_svc(), remote_ep(), local_svc=mine)
    assert d.actions == ()
    assert d.status is not None and d.status.problem == "Conflict"
    other_cluster = copy.deepcopy(mine)
    other_cluster["metadata"]["labels"] = {m.MIRRORED_SERVICE_LABEL: "true", m.CLUSTER_NAME_LABEL: "south"}
    assert decide(None, None, local_svc=other_cluster).actions == ()


# --------------------------------------------------------------------------- namespaces and names


def test_a_missing_namespace_is_reported_and_nothing_is_written() -> None:
    d = decide(remote_svc(), remote_ep(), ns_exists=False)
    assert d.actions == ()
    assert d.status is not None and d.status.problem == "MissingNamespace"
    cond = d.status.condition("Mirrored")
    assert cond is not None and "createMissingNamespaces" in cond.message


def test_a_missing_namespace_is_created_first_when_the_link_asks_for_it() -> None:
    link = m.LinkSpec.from_object(link_obj(createMissingNamespaces=True))
    d = decide(remote_svc(), remote_ep(), ns_exists=False, link=link)
    assert [str(a) for a in d.actions] == ["create Namespace emojivoto", "create Service emojivoto/web-svc-east",
                                           "create Endpoints emojivoto/web-svc-east"]
    assert d.actions[0].body == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "emojivoto"}}
    assert d.status is not None and d.status.problem is None


def test_a_mirror_name_too_long_for_a_service_is_reported() -> None:
    name = "s" * 60
    d = decide(remote_svc(name=name), remote_ep(name=name), key=("emojivoto", name))
    assert d.actions == ()
    assert d.status is not None and d.status.problem == "InvalidName"


def test_a_mirror_names_its_remote_service() -> None:
    local_svc, local_ep = converge(remote_svc(name="web-east"), remote_ep(name="web-east"),
                                   key=("emojivoto", "web-east"))
    assert m.remote_key_of(local_svc, "east") == ("emojivoto", "web-east")
    assert m.remote_key_of(local_ep, "east") == ("emojivoto", "web-east")
    # Without the annotation the name still tells.
    del local_svc["metadata"]["annotations"][m.REMOTE_FQ_NAME_ANNOTATION]
    assert m.remote_key_of(local_svc, "east") == ("emojivoto", "web-east")


def test_stray_objects_are_labelled_mirrors_that_name_no_remote_service() -> None:
    labels = {m.MIRRORED_SERVICE_LABEL: "true", m.CLUSTER_NAME_LABEL: "east"}
    stray = {"metadata": {"name": "odd", "namespace": "a", "labels": labels}}
    fine = {"metadata": {"name": "web-east", "namespace": "a", "labels": labels}}
    others = {"metadata": {"name": "odd", "namespace": "b", "labels": {m.CLUSTER_NAME_LABEL: "east"}}}
    assert [str(a) for a in m.stray_objects("Service", [stray, fine, others], "east")] == ["delete Service a/odd"]


# --------------------------------------------------------------------------- the Link's status


def statuses() -> list[m.ServiceStatus]:
    ok = decide(remote_svc(name="b"), remote_ep(name="b"), key=("emojivoto", "b")).status
    missing = decide(remote_svc(name="a", ns="nope"), remote_ep(name="a", ns="nope"),
                     key=("nope", "a"), ns_exists=False).status
    assert ok is not None and missing is not None
    return [ok, missing]


HEALTHY = m.LinkHealth(remote="Reachable", synced=True, gateway=GW)


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_a_healthy_link_is_ready() -> None:
    ok = statuses()[0]
    status = m.link_status(None, HEALTHY, [ok], "2024-05-01T10:00:00Z")
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("Ready", "True", "Mirroring"), ("RemoteReachable", "True", "Reachable"),
        ("GatewayAlive", "True", "Alive"), ("MissingNamespace", "False", "NamespacesPresent")]
    assert all(c["lastTransitionTime"] == "2024-05-01T10:00:00Z" for c in status["conditions"])
    assert status["mirroredServices"] == [{
        "namespace": "emojivoto", "name": "b", "mirroredName": "b-east",
        "conditions": [{"type": "Mirrored", "status": "True", "reason": "Mirrored",
                        "message": "emojivoto/b-east mirrors b.emojivoto.svc.cluster.local",
                        "lastTransitionTime": "2024-05-01T10:00:00Z"},
                       {"type": "EndpointsReady", "status": "True", "reason": "GatewayAlive",
                        "message": "2 ready remote endpoint(s) behind gateway 127.9.192.1",
                        "lastTransitionTime": "2024-05-01T10:00:00Z"}]}]
    assert status["mirroredServiceCount"] == 1 and status["notMirroredServiceCount"] == 0


def test_missing_namespaces_show_on_the_link_and_their_services_come_first() -> None:
    status = m.link_status(None, HEALTHY, statuses(), "2024-05-01T10:00:00Z")
    missing = condition(status, "MissingNamespace")
    assert (missing["status"], missing["reason"]) == ("True", "MissingNamespace")
    assert "nope" in missing["message"]
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ServicesNotMirrored")
    assert "nope/a (MissingNamespace)" in ready["message"]
    assert [s["name"] for s in status["mirroredServices"]] == ["a", "b"]
    assert status["mirroredServiceCount"] == 1 and status["notMirroredServiceCount"] == 1


@pytest.mark.parametrize("reason", ["Unauthorized", "Forbidden", "Unreachable", "CredentialsMissing"])
def test_a_remote_that_cannot_be_watched_shows_why(reason: str) -> None:
    health = m.LinkHealth(remote=reason, remote_message="why", synced=True, gateway=GW)
    status = m.link_status(None, health, statuses()[:1], "2024-05-01T10:00:00Z")
    remote = condition(status, "RemoteReachable")
    assert (remote["status"], remote["reason"], remote["message"]) == ("False", reason, "why")
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RemoteNotReachable")
    assert "kept" in ready["message"]
    assert len(status["mirroredServices"]) == 1  # what is mirrored is still listed


def test_a_gateway_that_is_not_alive_makes_the_link_not_ready() -> None:
    health = m.LinkHealth(remote="Reachable", synced=True, gateway=m.Gateway(GW.addresses, alive=False),
                          gateway_message="3 consecutive failed probe(s)")
    status = m.link_status(None, health, [], "2024-05-01T10:00:00Z")
    assert condition(status, "GatewayAlive")["reason"] == "ProbeFailed"
    assert condition(status, "GatewayAlive")["message"] == "3 consecutive failed probe(s)"
    assert condition(status, "Ready")["reason"] == "GatewayNotAlive"


def test_an_invalid_link_says_so_and_nothing_else() -> None:
    status = m.link_status(None, m.LinkHealth(link_error="spec.gatewayAddress is required"), [], "t")
    assert status["conditions"] == [{"type": "Ready", "status": "False", "reason": "InvalidLink",
                                     "message": "spec.gatewayAddress is required", "lastTransitionTime": "t"}]


def test_transition_times_move_only_when_a_status_changes() -> None:
    first = m.link_status(None, HEALTHY, statuses()[:1], "T1")
    same = m.link_status(first, HEALTHY, statuses()[:1], "T2")
    assert {c["lastTransitionTime"] for c in same["conditions"]} == {"T1"}
    assert same == first  # nothing to write
    down = m.LinkHealth(remote="Unreachable", remote_message="x", synced=True, gateway=GW)
    later = m.link_status(same, down, statuses()[:1], "T3")
    assert condition(later, "RemoteReachable")["lastTransitionTime"] == "T3"
    assert condition(later, "GatewayAlive")["lastTransitionTime"] == "T1"
    assert later["mirroredServices"][0]["conditions"][0]["lastTransitionTime"] == "T1"
    assert later != same


def test_the_service_list_is_capped_and_counted() -> None:
    many = [m.ServiceStatus("ns", f"s{i:03}", f"s{i:03}-east", (m.Condition("Mirrored", "True", "Mirrored"),))
            for i in range(30)]
    status = m.link_status(None, HEALTHY, many, "t", max_services=10)
    assert len(status["mirroredServices"]) == 10
    assert status["mirroredServiceCount"] == 30


# --------------------------------------------------------------------------- gateway probes


def test_the_gateway_is_alive_until_failure_threshold_consecutive_failures() -> None:
    state = m.ProbeState()
    assert state.alive
    for expected_alive in (True, True, False, False):
        state = state.after(False, 3)
        assert state.alive is expected_alive
    assert state.consecutive_failures == 4
    state = state.after(True, 3)
    assert state == m.ProbeState(alive=True, consecutive_failures=0)


def test_a_success_between_failures_starts_the_count_again() -> None:
    state = m.ProbeState()
    for ok in (False, False, True, False, False):
        state = state.after(ok, 3)
    assert state.alive and state.consecutive_failures == 2


def test_a_threshold_of_one_fails_at_once() -> None:
    assert not m.ProbeState().after(False, 1).alive


def test_probe_periods_are_jittered_by_ten_percent() -> None:
    assert m.jittered(3.0, 0.0) == pytest.approx(2.7)
    assert m.jittered(3.0, 0.5) == pytest.approx(3.0)
    assert m.jittered(3.0, 0.999999) == pytest.approx(3.3, abs=1e-5)


# --------------------------------------------------------------------------- leader election


def record(holder: str, renew: str = "R1", transitions: int = 0) -> m.LeaseRecord:
    return m.LeaseRecord(holder=holder, duration=15.0, acquire_time="A", renew_time=renew, transitions=transitions)


def test_a_missing_lease_is_created() -> None:
    assert m.lease_action(m.observe(None, None, 100.0), "me", 100.0) == "create"


def test_a_lease_held_by_another_is_waited_for_until_its_record_stops_changing() -> None:
    obs = m.observe(None, record("other"), 100.0)
    assert m.lease_action(obs, "me", 114.0) == "wait"
    # The holder renewed: the clock starts again from when that was seen.
    obs = m.observe(obs, record("other", renew="R2"), 110.0)
    assert m.lease_action(obs, "me", 120.0) == "wait"
    # Unchanged since 110 for its 15 s: expired.
    obs = m.observe(obs, record("other", renew="R2"), 125.0)
    assert obs.seen_at == 110.0
    assert m.lease_action(obs, "me", 125.0) == "acquire"


def test_a_lease_without_holder_is_taken_at_once_and_ones_own_is_renewed() -> None:
    assert m.lease_action(m.observe(None, record(""), 100.0), "me", 100.0) == "acquire"
    assert m.lease_action(m.observe(None, record("me"), 100.0), "me", 100.0) == "renew"


def test_taking_over_counts_a_transition_and_renewing_keeps_the_acquire_time() -> None:
    taken = m.lease_spec(record("other", transitions=2), "me", 15.0, "NOW")
    assert taken == {"holderIdentity": "me", "leaseDurationSeconds": 15, "acquireTime": "NOW",
                     "renewTime": "NOW", "leaseTransitions": 3}
    renewed = m.lease_spec(m.LeaseRecord.from_spec(taken), "me", 15.0, "LATER")
    assert renewed["acquireTime"] == "NOW" and renewed["renewTime"] == "LATER"
    assert renewed["leaseTransitions"] == 3
    assert m.lease_spec(None, "me", 15.0, "NOW")["leaseTransitions"] == 0
    released = m.released_spec(m.LeaseRecord.from_spec(renewed), "END")
    assert released["holderIdentity"] == "" and released["leaseTransitions"] == 3

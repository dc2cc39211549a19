"""Destination answers from plain Kubernetes objects: authorities, endpoints, identities, ports,
policy, opaque ports, multicluster gateways, and which answers a change can affect."""

from __future__ import annotations

import json
from typing import Any

import pytest

from isthmus.core.destination import (
    AddressTarget,
    BadAuthority,
    DependencyIndex,
    DestinationIndex,
    OtherName,
    ServiceTarget,
    deployment_name,
    parse_authority,
    parse_port_ranges,
)

NS = "emojivoto"
WEB_IDENTITY = "web.emojivoto.serviceaccount.identity.isthmus.cluster.local"


# --------------------------------------------------------------------------- fixtures


def service(name: str, *, ns: str = NS, ip: str = "127.1.128.5", ports: list[dict[str, Any]] | None = None,
            labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
            **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {},
                         "annotations": annotations or {}},
            "spec": {"clusterIP": ip, "clusterIPs": [ip],
                     "ports": ports if ports is not None else [{"name": "http", "port": 80, "targetPort": 8080}],
                     **spec}}


def pod(name: str, ip: str, *, ns: str = NS, meshed: bool = True, sa: str | None = "web",
        owner: tuple[str, str] | None = ("ReplicaSet", "web-5d8f7c9b6"), template_hash: str = "5d8f7c9b6",
        annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None,
        ports: list[dict[str, Any]] | None = None, phase: str = "Running") -> dict[str, Any]:
    containers: list[dict[str, Any]] = [{"name": "web", "command": ["web"], "ports": ports or []}]
    if meshed:
        containers.append({"name": "isthmus-proxy", "command": ["python", "-c", "pass"]})
    meta: dict[str, Any] = {"name": name, "namespace": ns, "annotations": annotations or {},
                            "labels": {"app": "web", "pod-template-hash": template_hash, **(labels or {})}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1],
                                    "uid": "u1", "controller": True}]
    spec: dict[str, Any] = {"containers": containers}
    if sa is not None:
        spec["serviceAccountName"] = sa
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
            "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]}}


def address(ip: str, pod_name: str | None, ns: str = NS) -> dict[str, Any]:
    out: dict[str, Any] = {"ip": ip}
    if pod_name:
        out["targetRef"] = {"kind": "Pod", "namespace": ns, "name": pod_name}
    return out


def endpoints(name: str, *subsets: dict[str, Any], ns: str = NS,
              annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
            "subsets": list(subsets)}


def subset(ready: list[tuple[str, str | None]], ports: list[dict[str, Any]] | None = None,
           not_ready: list[tuple[str, str | None]] | None = None) -> dict[str, Any]:
    return {"addresses": [address(ip, p) for ip, p in ready],
            "notReadyAddresses": [address(ip, p) for ip, p in not_ready or []],
            "ports": ports if ports is not None else [{"name": "http", "port": 8080}]}


def index_of(*objects: dict[str, Any], cluster_domain: str = "cluster.local",
             trust_domain: str = "cluster.local") -> DestinationIndex:
    index = DestinationIndex(cluster_domain=cluster_domain, trust_domain=trust_domain)
    for obj in objects:
        index.apply(obj["kind"], "ADDED", obj)
    return index


def answer(index: DestinationIndex, authority: str) -> dict[str, Any]:
    found = index.resolve_authority(authority)
    assert not isinstance(found, BadAuthority), found
    return found.snapshot


WEB = service("web-svc")
WEB_POD_A = pod("web-5d8f7c9b6-aaaaa", "127.1.64.5")
WEB_POD_B = pod("web-5d8f7c9b6-bbbbb", "127.1.64.4")
WEB_EP = endpoints("web-svc", subset([("127.1.64.5", "web-5d8f7c9b6-aaaaa"),
                                      ("127.1.64.4", "web-5d8f7c9b6-bbbbb")]))


def web_endpoint(ip: str, pod_name: str) -> dict[str, Any]:
    return {"addr": ip, "port": 8080, "identity": WEB_IDENTITY, "proxyPort": 4143,
            "protocolHint": "http", "authorityOverride": None,
            "labels": {"dst_namespace": NS, "dst_pod": pod_name, "dst_deployment": "web"}}


@pytest.fixture
def web() -> DestinationIndex:
    return index_of(WEB, WEB_POD_A, WEB_POD_B, WEB_EP)


# --------------------------------------------------------------------------- authorities


@pytest.mark.parametrize("authority, target", [
    ("web-svc.emojivoto", ServiceTarget(NS, "web-svc", 80)),
    ("web-svc.emojivoto:8080", ServiceTarget(NS, "web-svc", 8080)),
    ("web-svc.emojivoto.svc", ServiceTarget(NS, "web-svc", 80)),
    ("web-svc.emojivoto.svc:80", ServiceTarget(NS, "web-svc", 80)),
    ("web-svc.emojivoto.svc.cluster.local", ServiceTarget(NS, "web-svc", 80)),
    ("web-svc.emojivoto.svc.cluster.local:9090", ServiceTarget(NS, "web-svc", 9090)),
    ("Web-Svc.EmojiVoto.svc.cluster.local.:80", ServiceTarget(NS, "web-svc", 80)),
    ("127.1.128.5", AddressTarget("127.1.128.5", 80)),
    ("127.1.64.5:8080", AddressTarget("127.1.64.5", 8080)),
    ("[::1]:8080", AddressTarget("::1", 8080)),
    ("web-svc", OtherName("web-svc", 80)),
    ("example.org.uk:443", OtherName("example.org.uk", 443)),
    ("web-svc.emojivoto.svc.other.domain", OtherName("web-svc.emojivoto.svc.other.domain", 80)),
])
def test_authority_forms(authority: str, target: object) -> None:
    assert parse_authority(authority) == target


def test_cluster_domain_is_configurable() -> None:
    assert parse_authority("web.ns.svc.corp.example:81", cluster_domain="corp.example") == \
        ServiceTarget("ns", "web", 81)
    assert isinstance(parse_authority("web.ns.svc.cluster.local", cluster_domain="corp.example"), OtherName)
    index = index_of(service("web", ns="ns"), cluster_domain="corp.example")
    assert answer(index, "web.ns")["authority"] == "web.ns.svc.corp.example:80"


@pytest.mark.parametrize("authority, why", [
    ("", "empty"),
    ("web-svc.emojivoto:", "port after ':' is empty"),
    ("web-svc.emojivoto:http", "not a port number"),
    ("web-svc.emojivoto:0", "not a port number"),
    ("web-svc.emojivoto:65536", "not a port number"),
    ("user@web-svc.emojivoto", "user information"),
    ("web-svc.emojivoto/path", "path"),
    ("web svc.emojivoto", "spaces"),
    ("web-svc..emojivoto", "not an RFC 1123 label"),
    ("web_svc.emojivoto", "not an RFC 1123 label"),
    ("::1:80", "must be in brackets"),
    ("[127.0.0.1]:80", "not an IPv6 address"),
    ("[::1", "malformed IPv6"),
])
def test_malformed_authorities_say_why(authority: str, why: str) -> None:
    found = parse_authority(authority)
    assert isinstance(found, BadAuthority)
    assert why in found.message


# --------------------------------------------------------------------------- services


def test_every_name_form_gives_the_same_canonical_snapshot(web: DestinationIndex) -> None:
    expected = {
        "authority": "web-svc.emojivoto.svc.cluster.local:80", "exists": True,
        "service": {"namespace": NS, "name": "web-svc"},
        "labels": {"dst_namespace": NS, "dst_service": "web-svc"},
        "policy": {}, "opaque": False,
        # sorted by address
        "endpoints": [web_endpoint("127.1.64.4", "web-5d8f7c9b6-bbbbb"),
                      web_endpoint("127.1.64.5", "web-5d8f7c9b6-aaaaa")],
    }
    for form in ("web-svc.emojivoto", "web-svc.emojivoto:80", "web-svc.emojivoto.svc",
                 "web-svc.emojivoto.svc.cluster.local", "web-svc.emojivoto.svc.cluster.local:80"):
        assert answer(web, form) == expected
    assert json.loads(json.dumps(expected)) == expected  # JSON-ready


def test_missing_service_and_port_have_clear_reasons(web: DestinationIndex) -> None:
    assert answer(web, "web-svc2.emojivoto") == {
        "authority": "web-svc2.emojivoto.svc.cluster.local:80", "exists": False,
        "reason": "service emojivoto/web-svc2 not found"}
    gone = answer(web, "web-svc.emojivoto:81")
    assert gone["exists"] is False
    assert gone["reason"] == "service emojivoto/web-svc has no port 81 (its TCP ports: 80)"


def test_names_outside_the_cluster_do_not_exist(web: DestinationIndex) -> None:
    short = answer(web, "web-svc")
    assert short["exists"] is False and "web-svc.<namespace>" in short["reason"]
    foreign = answer(web, "www.example.co.uk:443")
    assert foreign == {"authority": "www.example.co.uk:443", "exists": False,
                       "reason": foreign["reason"]}
    assert "not a service or pod address" in foreign["reason"]


def test_external_name_services_are_not_resolved() -> None:
    index = index_of(service("ext", type="ExternalName", externalName="db.example.com", ip="None"))
    found = answer(index, "ext.emojivoto")
    assert found["exists"] is False and "db.example.com" in found["reason"]


def test_service_without_endpoints_exists_with_none(web: DestinationIndex) -> None:
    index = index_of(service("lonely"))
    found = answer(index, "lonely.emojivoto")
    assert found["exists"] is True and found["endpoints"] == []


def test_only_ready_addresses_are_endpoints() -> None:
    late = pod("web-5d8f7c9b6-ccccc", "127.1.64.9")
    ep = endpoints("web-svc", subset([("127.1.64.5", "web-5d8f7c9b6-aaaaa")],
                                     not_ready=[("127.1.64.9", "web-5d8f7c9b6-ccccc")]))
    found = answer(index_of(WEB, WEB_POD_A, late, ep), "web-svc.emojivoto")
    assert [e["addr"] for e in found["endpoints"]] == ["127.1.64.5"]


def test_identity_only_for_meshed_pods_from_their_service_account() -> None:
    plain = pod("plain-1", "127.1.64.7", meshed=False, owner=None, labels={"app": "plain"})
    default_sa = pod("web-5d8f7c9b6-ddddd", "127.1.64.8", sa=None)
    ep = endpoints("web-svc", subset([("127.1.64.7", "plain-1"), ("127.1.64.8", "web-5d8f7c9b6-ddddd")]))
    found = answer(index_of(WEB, plain, default_sa, ep), "web-svc.emojivoto")["endpoints"]
    assert found == [
        {"addr": "127.1.64.7", "port": 8080, "identity": None, "proxyPort": None, "protocolHint": None,
         "authorityOverride": None,
         "labels": {"dst_namespace": NS, "dst_pod": "plain-1", "dst_deployment": "plain"}},
        {"addr": "127.1.64.8", "port": 8080,
         "identity": "default.emojivoto.serviceaccount.identity.isthmus.cluster.local",
         "proxyPort": 4143, "protocolHint": "http", "authorityOverride": None,
         "labels": {"dst_namespace": NS, "dst_pod": "web-5d8f7c9b6-ddddd", "dst_deployment": "web"}},
    ]


def test_trust_domain_is_configurable() -> None:
    index = index_of(WEB, WEB_POD_A, WEB_EP, trust_domain="west.example")
    [e] = answer(index, "web-svc.emojivoto")["endpoints"]
    assert e["identity"] == "web.emojivoto.serviceaccount.identity.isthmus.west.example"


def test_an_address_whose_pod_is_not_known_yet_is_left_out_until_it_is() -> None:
    index = index_of(WEB, WEB_EP, WEB_POD_A)  # pod b not seen yet
    assert [e["addr"] for e in answer(index, "web-svc.emojivoto")["endpoints"]] == ["127.1.64.5"]
    index.apply("Pod", "ADDED", WEB_POD_B)
    assert [e["addr"] for e in answer(index, "web-svc.emojivoto")["endpoints"]] == \
        ["127.1.64.4", "127.1.64.5"]


def test_addresses_without_target_ref_are_matched_to_pods_by_ip() -> None:
    ep = endpoints("web-svc", subset([("127.1.64.5", None), ("127.1.64.99", None)]))
    found = answer(index_of(WEB, WEB_POD_A, ep), "web-svc.emojivoto")["endpoints"]
    assert found[0] == web_endpoint("127.1.64.5", "web-5d8f7c9b6-aaaaa")
    assert found[1] == {"addr": "127.1.64.99", "port": 8080, "identity": None, "proxyPort": None,
                        "protocolHint": None, "authorityOverride": None, "labels": {}}


def test_duplicate_addresses_are_listed_once() -> None:
    ep = endpoints("web-svc", subset([("127.1.64.5", "web-5d8f7c9b6-aaaaa")]),
                   subset([("127.1.64.5", "web-5d8f7c9b6-aaaaa")]))
    assert len(answer(index_of(WEB, WEB_POD_A, ep), "web-svc.emojivoto")["endpoints"]) == 1


# --------------------------------------------------------------------------- ports


def test_ports_map_by_name_through_the_endpoints_object() -> None:
    svc = service("multi", ports=[{"name": "http", "port": 80, "targetPort": "web"},
                                  {"name": "admin", "port": 9990, "targetPort": 9991},
                                  {"name": "dns", "port": 53, "protocol": "UDP"}])
    ep = endpoints("multi", subset([("127.1.64.5", "web-5d8f7c9b6-aaaaa")],
                                   ports=[{"name": "admin", "port": 9991}, {"name": "http", "port": 8081}]))
    index = index_of(svc, WEB_POD_A, ep)
    assert [e["port"] for e in answer(index, "multi.emojivoto")["endpoints"]] == [8081]
    assert [e["port"] for e in answer(index, "multi.emojivoto:9990")["endpoints"]] == [9991]
    udp = answer(index, "multi.emojivoto:53")
    assert udp["exists"] is False and "(its TCP ports: 80, 9990)" in udp["reason"]


def test_an_unnamed_port_takes_the_subsets_only_port() -> None:
    svc = service("db", ports=[{"port": 5432, "targetPort": 15432}])
    ep = endpoints("db", subset([("127.1.64.5", "web-5d8f7c9b6-aaaaa")], ports=[{"port": 15432}]))
    assert [e["port"] for e in answer(index_of(svc, WEB_POD_A, ep), "db.emojivoto:5432")["endpoints"]] \
        == [15432]


def test_subsets_without_the_ports_name_are_skipped() -> None:
    svc = service("multi", ports=[{"name": "http", "port": 80}, {"name": "grpc", "port": 90}])
    ep = endpoints("multi",
                   subset([("127.1.64.5", "web-5d8f7c9b6-aaaaa")], ports=[{"name": "http", "port": 8080},
                                                                          {"name": "grpc", "port": 9090}]),
                   subset([("127.1.64.4", "web-5d8f7c9b6-bbbbb")], ports=[{"name": "http", "port": 8080}]))
    index = index_of(svc, WEB_POD_A, WEB_POD_B, ep)
    assert [e["addr"] for e in answer(index, "multi.emojivoto:90")["endpoints"]] == ["127.1.64.5"]
    assert len(answer(index, "multi.emojivoto:80")["endpoints"]) == 2


# --------------------------------------------------------------------------- addresses


def test_a_cluster_ip_resolves_to_its_service(web: DestinationIndex) -> None:
    by_ip = answer(web, "127.1.128.5:80")
    by_name = answer(web, "web-svc.emojivoto")
    assert by_ip["authority"] == "127.1.128.5:80"
    assert {**by_ip, "authority": by_name["authority"]} == by_name
    wrong_port = answer(web, "127.1.128.5:81")
    assert wrong_port["exists"] is False and "web-svc has no port 81" in wrong_port["reason"]


def test_a_pod_ip_resolves_to_that_pod(web: DestinationIndex) -> None:
    assert answer(web, "127.1.64.5:8080") == {
        "authority": "127.1.64.5:8080", "exists": True, "service": None,
        "labels": {"dst_namespace": NS}, "policy": {}, "opaque": False,
        "endpoints": [web_endpoint("127.1.64.5", "web-5d8f7c9b6-aaaaa")]}


def test_an_unknown_ip_is_not_a_service_or_pod_address(web: DestinationIndex) -> None:
    assert answer(web, "127.1.64.200:8080") == {
        "authority": "127.1.64.200:8080", "exists": False,
        "reason": "127.1.64.200 is not a service or pod address"}


def test_finished_pods_no_longer_own_their_ip() -> None:
    done = pod("job-1", "127.1.64.30", phase="Succeeded")
    assert answer(index_of(done), "127.1.64.30:80")["exists"] is False


# --------------------------------------------------------------------------- labels, policy, opaque


@pytest.mark.parametrize("meta, expected", [
    ({"ownerReferences": [{"kind": "ReplicaSet", "name": "web-5d8f7c9b6"}],
      "labels": {"pod-template-hash": "5d8f7c9b6", "app": "other"}}, "web"),
    ({"ownerReferences": [{"kind": "ReplicaSet", "name": "vote-bot-7f9d"}]}, "vote-bot"),
    ({"ownerReferences": [{"kind": "Deployment", "name": "web"}]}, "web"),
    ({"ownerReferences": [{"kind": "StatefulSet", "name": "db"}], "labels": {"app": "db-app"}}, "db-app"),
    ({"labels": {"app": "standalone"}}, "standalone"),
    ({}, None),
])
def test_deployment_name(meta: dict[str, Any], expected: str | None) -> None:
    assert deployment_name(meta) == expected


def test_mirrored_services_are_labelled_with_their_cluster_and_policy_is_passed_raw() -> None:
    svc = service("web-svc", labels={"mirror.isthmus.io/cluster-name": "east"},
                  annotations={"timeout.isthmus.io/request": "2s", "retry.isthmus.io/limit": "3",
                               "balancer.isthmus.io/failure-accrual": "consecutive:5",
                               "kubectl.kubernetes.io/last-applied-configuration": "{}",
                               "config.isthmus.io/opaque-ports": "3306"})
    found = answer(index_of(svc), "web-svc.emojivoto")
    assert found["labels"] == {"dst_namespace": NS, "dst_service": "web-svc", "dst_target_cluster": "east"}
    assert found["policy"] == {"timeout.isthmus.io/request": "2s", "retry.isthmus.io/limit": "3",
                               "balancer.isthmus.io/failure-accrual": "consecutive:5"}


@pytest.mark.parametrize("value, port, opaque", [
    ("3306,5432", 5432, True),
    ("3306, 5432", 3306, True),
    ("4000-4100", 4050, True),
    ("4000-4100", 4101, False),
    ("3306", 80, False),
    ("bogus,,80", 80, True),
])
def test_opaque_ports_on_the_service(value: str, port: int, opaque: bool) -> None:
    svc = service("db", ports=[{"name": "p", "port": port}],
                  annotations={"config.isthmus.io/opaque-ports": value})
    assert answer(index_of(svc), f"db.emojivoto:{port}")["opaque"] is opaque


def test_opaque_ports_on_the_pods_behind_a_service_and_on_a_pod_address() -> None:
    svc = service("db", ports=[{"name": "sql", "port": 3306, "targetPort": 13306}])
    db = pod("db-0", "127.1.64.20", annotations={"config.isthmus.io/opaque-ports": "13306"})
    ep = endpoints("db", subset([("127.1.64.20", "db-0")], ports=[{"name": "sql", "port": 13306}]))
    index = index_of(svc, db, ep)
    assert answer(index, "db.emojivoto:3306")["opaque"] is True
    assert answer(index, "127.1.64.20:13306")["opaque"] is True
    assert answer(index, "127.1.64.20:8080")["opaque"] is False


def test_pods_may_name_container_ports_as_opaque() -> None:
    db = pod("db-0", "127.1.64.20", ports=[{"name": "mysql", "containerPort": 3306}],
             annotations={"config.isthmus.io/opaque-ports": "mysql"})
    assert answer(index_of(db), "127.1.64.20:3306")["opaque"] is True


def test_parse_port_ranges_skips_what_it_cannot_read() -> None:
    assert parse_port_ranges("25,3306-3307, x, 70000, 5-1, 0,587") == ((25, 25), (587, 587), (3306, 3307))
    assert parse_port_ranges(None) == ()


# --------------------------------------------------------------------------- multicluster


def test_mirrored_endpoints_point_at_the_gateway() -> None:
    svc = service("web-svc-east", ip="127.1.128.9",
                  labels={"mirror.isthmus.io/mirrored-service": "true",
                          "mirror.isthmus.io/cluster-name": "east"},
                  ports=[{"name": "http", "port": 80, "targetPort": 8080}])
    gateway_id = "isthmus-gateway.isthmus-multicluster.serviceaccount.identity.isthmus.cluster.local"
    ep = endpoints("web-svc-east", subset([("127.2.192.1", None)], ports=[{"name": "http", "port": 4143}]),
                   annotations={"mirror.isthmus.io/remote-gateway-identity": gateway_id,
                                "mirror.isthmus.io/remote-svc-fq-name": "web-svc.emojivoto.svc.cluster.local"})
    found = answer(index_of(svc, ep), "web-svc-east.emojivoto:80")
    assert found["labels"]["dst_target_cluster"] == "east"
    assert found["endpoints"] == [{
        "addr": "127.2.192.1", "port": 4143, "identity": gateway_id, "proxyPort": 4143,
        "protocolHint": "http", "authorityOverride": "web-svc.emojivoto.svc.cluster.local:80",
        "labels": {"dst_target_cluster": "east"}}]


def test_one_gateway_annotation_alone_is_not_a_gateway() -> None:
    ep = endpoints("web-svc", subset([("127.2.192.1", None)]),
                   annotations={"mirror.isthmus.io/remote-gateway-identity": "gw.ns.serviceaccount..."})
    [e] = answer(index_of(WEB, ep), "web-svc.emojivoto")["endpoints"]
    assert e["identity"] is None and e["authorityOverride"] is None


# --------------------------------------------------------------------------- changes


def watched(index: DestinationIndex, *authorities: str) -> DependencyIndex:
    deps = DependencyIndex()
    for a in authorities:
        found = index.resolve_authority(a)
        assert not isinstance(found, BadAuthority)
        deps.track(a, found.dependencies)
    return deps


ALL = ("web-svc.emojivoto", "127.1.128.5:80", "127.1.64.5:8080", "voting-svc.emojivoto",
       "127.1.64.77:8080", "127.1.128.77:80")


def test_an_endpoints_change_affects_its_service_by_name_and_ip(web: DestinationIndex) -> None:
    deps = watched(web, *ALL)
    scaled = endpoints("web-svc", subset([("127.1.64.5", "web-5d8f7c9b6-aaaaa")]))
    assert deps.affected(web.apply("Endpoints", "MODIFIED", scaled)) == {"web-svc.emojivoto", "127.1.128.5:80"}


def test_a_pod_change_affects_its_services_and_its_address(web: DestinationIndex) -> None:
    deps = watched(web, *ALL)
    unmeshed = pod("web-5d8f7c9b6-aaaaa", "127.1.64.5", meshed=False)
    assert deps.affected(web.apply("Pod", "MODIFIED", unmeshed)) == \
        {"web-svc.emojivoto", "127.1.128.5:80", "127.1.64.5:8080"}
    assert answer(web, "127.1.64.5:8080")["endpoints"][0]["identity"] is None


def test_changes_nothing_reads_affect_nothing(web: DestinationIndex) -> None:
    deps = watched(web, *ALL)
    same = pod("web-5d8f7c9b6-aaaaa", "127.1.64.5")
    same["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    same["metadata"]["resourceVersion"] = "99"
    assert web.apply("Pod", "MODIFIED", same) == frozenset()
    other = pod("emoji-1", "127.1.64.50", owner=None)
    assert deps.affected(web.apply("Pod", "ADDED", other)) == set()


def test_new_objects_affect_the_authorities_that_did_not_exist(web: DestinationIndex) -> None:
    deps = watched(web, *ALL)
    assert deps.affected(web.apply("Service", "ADDED", service("voting-svc", ip="127.1.128.77"))) == \
        {"voting-svc.emojivoto", "127.1.128.77:80"}
    assert deps.affected(web.apply("Pod", "ADDED", pod("web-x", "127.1.64.77"))) == {"127.1.64.77:8080"}
    assert answer(web, "127.1.64.77:8080")["exists"] is True


def test_deletions_affect_what_they_answered(web: DestinationIndex) -> None:
    deps = watched(web, *ALL)
    assert deps.affected(web.apply("Service", "DELETED", WEB)) == {"web-svc.emojivoto", "127.1.128.5:80"}
    assert answer(web, "web-svc.emojivoto")["reason"] == "service emojivoto/web-svc not found"
    assert answer(web, "127.1.128.5:80")["reason"] == "127.1.128.5 is not a service or pod address"
    deps = watched(web, *ALL)  # as the server does after computing the answers again
    assert deps.affected(web.apply("Pod", "DELETED", WEB_POD_A)) == {"127.1.64.5:8080"}
    assert answer(web, "127.1.64.5:8080")["exists"] is False


def test_forgotten_authorities_are_never_affected(web: DestinationIndex) -> None:
    deps = watched(web, "web-svc.emojivoto", "127.1.128.5:80")
    deps.forget("web-svc.emojivoto")
    assert "web-svc.emojivoto" not in deps
    assert deps.affected(web.apply("Endpoints", "DELETED", WEB_EP)) == {"127.1.128.5:80"}
    assert list(deps) == ["127.1.128.5:80"]


def test_malformed_objects_are_skipped() -> None:
    index = DestinationIndex()
    assert index.apply("Pod", "ADDED", {"metadata": {}}) == frozenset()
    index.apply("Service", "ADDED", {"metadata": {"name": "x", "namespace": "y"}, "spec": "nope"})
    index.apply("Endpoints", "ADDED", {"metadata": {"name": "x", "namespace": "y"},
                                       "subsets": [None, {"addresses": [{"ip": "not-an-ip"}], "ports": [{"port": "x"}]}]})
    index.apply("Pod", "ADDED", {"metadata": {"name": "p", "namespace": "y"}, "spec": None, "status": None})
    assert answer(index, "x.y")["exists"] is False
    with pytest.raises(ValueError, match="unknown kind"):
        index.apply("Secret", "ADDED", {"metadata": {"name": "s", "namespace": "y"}})

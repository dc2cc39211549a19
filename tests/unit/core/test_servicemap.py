"""Service map: listeners, port matching, name resolution, routing, diffs and round robin."""

from __future__ import annotations

from typing import Any

import pytest

from isthmus.core.servicemap import (
    Backend,
    BadAuthority,
    Destination,
    NotAService,
    Refusal,
    RoundRobin,
    Routed,
    ServiceKey,
    ServiceMap,
    UnknownPort,
    UnknownService,
    build_service_map,
    diff_listeners,
    is_loopback_ip,
    split_authority,
)


def service(name: str, ns: str, cluster_ip: str, ports: list[dict[str, Any]],
            **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": cluster_ip, "ports": ports, **spec}}


def endpoints(name: str, ns: str, *subsets: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": name, "namespace": ns}, "subsets": list(subsets)}


def subset(ips: list[str], ports: list[dict[str, Any]],
           not_ready: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"addresses": [{"ip": ip} for ip in ips],
            "notReadyAddresses": [{"ip": ip} for ip in not_ready], "ports": ports}


WEB = service("web-svc", "emojivoto", "127.1.128.5",
              [{"name": "http", "port": 80, "targetPort": 8080},
               {"name": "admin", "port": 9990, "targetPort": "admin-http"}])
WEB_EP = endpoints("web-svc", "emojivoto",
                   subset(["127.1.64.3", "127.1.64.2"],
                          [{"name": "http", "port": 8080}, {"name": "admin", "port": 9991}],
                          not_ready=("127.1.64.9",)))
PLAIN = service("plain", "default", "127.1.128.6", [{"port": 5432}])
PLAIN_EP = endpoints("plain", "default", subset(["127.1.64.7"], [{"port": 15432}]))


@pytest.fixture
def smap() -> ServiceMap:
    return build_service_map([WEB, PLAIN], [WEB_EP, PLAIN_EP])


# --------------------------------------------------------------------------- listeners


def test_listeners_match_endpoint_ports_by_name_and_keep_only_ready(smap: ServiceMap) -> None:
    http = smap.listeners[("127.1.128.5", 80)]
    assert http.service == ServiceKey("emojivoto", "web-svc")
    assert http.name == "http"
    assert http.backends == (Backend("127.1.64.2", 8080), Backend("127.1.64.3", 8080))
    admin = smap.listeners[("127.1.128.5", 9990)]
    assert [b.port for b in admin.backends] == [9991, 9991]
    assert set(smap.listeners) == {("127.1.128.5", 80), ("127.1.128.5", 9990),
                                   ("127.1.128.6", 5432)}


def test_load_balancer_is_served_on_its_ingress_ip_too() -> None:
    gw = service("isthmus-gateway", "isthmus-multicluster", "127.1.128.9",
                 [{"name": "mc-gateway", "port": 4143}], type="LoadBalancer")
    gw["status"] = {"loadBalancer": {"ingress": [{"ip": "127.1.192.1"}, {"hostname": "x"}]}}
    ep = endpoints("isthmus-gateway", "isthmus-multicluster",
                   subset(["127.1.64.4"], [{"name": "mc-gateway", "port": 4143}]))
    m = build_service_map([gw], [ep])
    assert set(m.listeners) == {("127.1.128.9", 4143), ("127.1.192.1", 4143)}
    assert m.listeners[("127.1.192.1", 4143)].backends == (Backend("127.1.64.4", 4143),)


def test_unnamed_service_port_uses_the_single_endpoint_port(smap: ServiceMap) -> None:
    assert smap.listeners[("127.1.128.6", 5432)].backends == (Backend("127.1.64.7", 15432),)


def test_named_port_missing_from_endpoints_has_no_backends() -> None:
    ep = endpoints("web-svc", "emojivoto", subset(["127.1.64.2"], [{"name": "other", "port": 1}]))
    m = build_service_map([WEB], [ep])
    assert m.listeners[("127.1.128.5", 80)].backends == ()


def test_subsets_with_different_ports_merge_and_dedupe() -> None:
    ep = endpoints("plain", "default",
                   subset(["127.1.64.7", "127.1.64.8"], [{"port": 15432}]),
                   subset(["127.1.64.8"], [{"port": 25432}]),
                   subset(["127.1.64.7"], [{"port": 15432}]))
    m = build_service_map([PLAIN], [ep])
    assert m.listeners[("127.1.128.6", 5432)].backends == (
        Backend("127.1.64.7", 15432), Backend("127.1.64.8", 15432), Backend("127.1.64.8", 25432))


def test_udp_headless_non_loopback_and_malformed_are_skipped() -> None:
    dns = service("dns", "kube-system", "127.1.128.10",
                  [{"name": "dns", "port": 53, "protocol": "UDP"},
                   {"name": "dns-tcp", "port": 53, "protocol": "TCP"}])
    headless = service("db", "default", "None", [{"port": 5432}])
    real = service("real", "default", "10.96.0.10", [{"port": 80}])
    junk: list[Any] = [{"metadata": {}}, {"metadata": {"name": "x"}, "spec": None}, "nope",
                       service("bad-port", "default", "127.1.128.11", [{"port": "80"}, {"port": True}])]
    ep = endpoints("db", "default", subset(["127.1.64.4", "10.0.0.4"], [{"port": 5432}]))
    m = build_service_map([dns, headless, real, *junk], [ep, "junk"])
    assert set(m.listeners) == {("127.1.128.10", 53)}
    assert m.listeners[("127.1.128.10", 53)].name == "dns-tcp"
    # headless and non-loopback Services still resolve by name
    found = m.resolve("db.default:5432")
    assert isinstance(found, Routed)
    assert found.target.backends == (Backend("127.1.64.4", 5432),)  # 10.0.0.4 left out
    assert isinstance(m.resolve("real.default"), Routed)
    assert isinstance(m.resolve("bad-port.default"), UnknownPort)


def test_namespace_defaults_and_cluster_ips_list() -> None:
    svc = {"metadata": {"name": "two"},
           "spec": {"clusterIP": "127.1.128.7", "clusterIPs": ["127.1.128.7", "fd00::7"],
                    "ports": [{"port": 80}]}}
    m = build_service_map([svc], [])
    assert set(m.listeners) == {("127.1.128.7", 80)}
    assert m.listeners[("127.1.128.7", 80)].service == ServiceKey("default", "two")


# --------------------------------------------------------------------------- resolution


@pytest.mark.parametrize("authority", [
    "web-svc.emojivoto", "web-svc.emojivoto:80", "web-svc.emojivoto.svc",
    "web-svc.emojivoto.svc:80", "web-svc.emojivoto.svc.cluster.local",
    "web-svc.emojivoto.svc.cluster.local:80", "WEB-SVC.Emojivoto.svc.cluster.local.:80",
    "127.1.128.5:80", "127.1.128.5",
])
def test_resolve_forms(smap: ServiceMap, authority: str) -> None:
    found = smap.resolve(authority, namespace="elsewhere")
    assert isinstance(found, Routed)
    assert (found.target.service, found.target.port) == (ServiceKey("emojivoto", "web-svc"), 80)


def test_short_name_uses_client_namespace(smap: ServiceMap) -> None:
    found = smap.resolve("web-svc:9990", namespace="emojivoto")
    assert isinstance(found, Routed) and found.target.name == "admin"
    assert smap.resolve("web-svc", namespace="default") == UnknownService("web-svc", "default")
    assert smap.resolve("web-svc", namespace="default").message == (
        'no service "web-svc" in namespace "default"')


def test_custom_cluster_domain() -> None:
    m = build_service_map([WEB], [WEB_EP], cluster_domain="east.example")
    assert isinstance(m.resolve("web-svc.emojivoto.svc.east.example"), Routed)
    assert isinstance(m.resolve("web-svc.emojivoto.svc.cluster.local"), NotAService)


def test_unknown_port_and_not_a_service(smap: ServiceMap) -> None:
    assert smap.resolve("web-svc.emojivoto:81") == UnknownPort(
        ServiceKey("emojivoto", "web-svc"), 81, (80, 9990))
    assert smap.resolve("127.1.128.5:81") == UnknownPort(
        ServiceKey("emojivoto", "web-svc"), 81, (80, 9990))
    assert "has no TCP port 81" in UnknownPort(ServiceKey("a", "b"), 81, ()).message
    assert smap.resolve("127.1.64.2:8080") == NotAService("127.1.64.2", 8080)
    assert smap.resolve("www.example.com") == NotAService("www.example.com", 80)
    assert smap.resolve("[::1]:80") == NotAService("::1", 80)


@pytest.mark.parametrize(("authority", "default", "expected"), [
    ("a:80", 80, ("a", 80)),
    ("a", 8080, ("a", 8080)),
    ("a:", 80, ("a", 80)),
    ("[::1]:443", None, ("::1", 443)),
    ("127.0.0.1:65535", None, ("127.0.0.1", 65535)),
])
def test_split_authority(authority: str, default: int | None, expected: tuple[str, int]) -> None:
    assert split_authority(authority, default) == expected


@pytest.mark.parametrize(("authority", "default"), [
    ("", 80), ("a", None), ("a:0", 80), ("a:65536", 80), ("a:http", 80), (":80", 80),
    ("::1", 80), ("[::1", 80), ("[::1]x", 80), ("user@a:80", 80),
])
def test_split_authority_rejects(authority: str, default: int | None) -> None:
    assert isinstance(split_authority(authority, default), BadAuthority)


def test_external_name_resolves_to_its_target() -> None:
    local = {"metadata": {"name": "local", "namespace": "default"},
             "spec": {"type": "ExternalName", "externalName": "127.1.64.50"}}
    remote = {"metadata": {"name": "remote", "namespace": "default"},
              "spec": {"type": "ExternalName", "externalName": "api.example.com."}}
    m = build_service_map([local, remote], [])
    assert m.resolve("local:8080") == NotAService("127.1.64.50", 8080)
    assert m.route("local:8080") == Destination((Backend("127.1.64.50", 8080),), None)
    refused = m.route("remote")
    assert isinstance(refused, Refusal) and refused.status == 403
    assert not m.listeners


# --------------------------------------------------------------------------- routing


def test_route_decisions(smap: ServiceMap) -> None:
    dest = smap.route("web-svc.emojivoto:80")
    assert isinstance(dest, Destination) and dest.service is not None
    assert dest.backends == dest.service.backends
    assert smap.route("nope.emojivoto") == Refusal(503, 'no service "nope" in namespace "emojivoto"')
    assert smap.route("127.1.64.9:99") == Destination((Backend("127.1.64.9", 99),), None)
    assert smap.route("bad:port") == Refusal(400, 'bad authority "bad:port": "port" is not a port number')
    # like cluster DNS, a two-label name is `svc.ns` first
    assert smap.route("example.com") == Refusal(503, 'no service "example" in namespace "com"')
    for outside in ("10.0.0.1:80", "www.example.com", "[::1]:80", "8.8.8.8:53"):
        refusal = smap.route(outside)
        assert isinstance(refusal, Refusal) and refusal.status == 403
        assert "127.0.0.0/8" in refusal.message
    loop = smap.route("127.1.0.1:4140", forbidden=(("127.1.0.1", 4140),))
    assert isinstance(loop, Refusal) and loop.status == 403 and "this proxy" in loop.message


def test_route_answers_are_remembered(smap: ServiceMap) -> None:
    first = smap.route("web-svc", namespace="emojivoto")
    assert smap.route("web-svc", namespace="emojivoto") is first
    assert isinstance(smap.route("web-svc", namespace="default"), Refusal)


def test_route_without_ready_endpoints() -> None:
    m = build_service_map([WEB], [])
    assert m.route("web-svc.emojivoto") == Refusal(
        503, 'service "emojivoto/web-svc" has no ready endpoints')


def test_is_loopback_ip() -> None:
    assert is_loopback_ip("127.0.0.1") and is_loopback_ip("127.255.3.4")
    assert not is_loopback_ip("128.0.0.1") and not is_loopback_ip("::1")
    assert not is_loopback_ip("localhost")


# --------------------------------------------------------------------------- diffs


def test_diff_listeners() -> None:
    before = build_service_map([WEB, PLAIN], [WEB_EP, PLAIN_EP]).listeners
    fewer = endpoints("web-svc", "emojivoto",
                      subset(["127.1.64.2"], [{"name": "http", "port": 8080},
                                              {"name": "admin", "port": 9991}]))
    other = service("other", "default", "127.1.128.8", [{"port": 80}])
    after = build_service_map([WEB, other], [fewer]).listeners
    diff = diff_listeners(before, after)
    assert [k for k, _ in diff.added] == [("127.1.128.8", 80)]
    assert diff.removed == (("127.1.128.6", 5432),)
    assert [k for k, _ in diff.updated] == [("127.1.128.5", 80), ("127.1.128.5", 9990)]
    assert diff.updated[0][1].backends == (Backend("127.1.64.2", 8080),)
    assert diff
    assert not diff_listeners(after, build_service_map([WEB, other], [fewer]).listeners)


def test_diff_from_and_to_nothing(smap: ServiceMap) -> None:
    up = diff_listeners({}, smap.listeners)
    assert len(up.added) == 3 and not up.removed and not up.updated
    down = diff_listeners(smap.listeners, {})
    assert len(down.removed) == 3 and not down.added


# --------------------------------------------------------------------------- round robin


def test_round_robin_cycles_and_survives_changes() -> None:
    a, b, c = Backend("127.1.64.1", 80), Backend("127.1.64.2", 80), Backend("127.1.64.3", 80)
    rr = RoundRobin()
    picks = [rr.order("k", (a, b, c))[0] for _ in range(4)]
    assert picks == [a, b, c, a]
    assert rr.order("k", (a, b, c)) == (b, c, a)  # the rest of the order is for retries
    assert rr.order("k", (a, c)) == (c, a)  # b removed: never offered
    assert rr.order("k", (a, b, c)) == (a, b, c)  # wraps around
    assert rr.order("other", (a, b)) == (a, b)  # keys are independent
    assert rr.order("k", ()) == ()


def test_round_robin_retain_forgets_keys() -> None:
    a, b = Backend("127.1.64.1", 80), Backend("127.1.64.2", 80)
    rr = RoundRobin()
    rr.order("gone", (a, b))
    rr.order("kept", (a, b))
    rr.retain(["kept"])
    assert rr.order("gone", (a, b))[0] == a
    assert rr.order("kept", (a, b))[0] == b
    assert "2 keys" in repr(rr)


def test_repr(smap: ServiceMap) -> None:
    assert repr(smap) == "ServiceMap(2 services, 3 listeners, domain cluster.local)"
    assert str(smap.listeners[("127.1.128.5", 80)]) == "emojivoto/web-svc:http"
    assert str(Backend("127.1.64.2", 8080)) == "127.1.64.2:8080"


def test_a_rebuild_reuses_the_entries_of_objects_it_has_seen_and_parses_new_ones() -> None:
    first = build_service_map([WEB, PLAIN], [WEB_EP, PLAIN_EP])
    again = build_service_map([WEB, PLAIN], [WEB_EP, PLAIN_EP], previous=first)
    assert again.listeners == first.listeners
    assert all(again.listeners[k] is first.listeners[k] for k in first.listeners)  # not parsed again
    # New objects (an informer replaces an object when it changes) are read again, even with
    # the same names: new backends for plain, a new port for web, a Service gone.
    plain_ep = endpoints("plain", "default", subset(["127.1.64.8"], [{"port": 15432}]))
    web = service("web-svc", "emojivoto", "127.1.128.5", [{"name": "http", "port": 81, "targetPort": 8080}])
    changed = build_service_map([web, PLAIN], [WEB_EP, plain_ep], previous=again)
    assert changed.listeners[("127.1.128.6", 5432)].backends == (Backend("127.1.64.8", 15432),)
    assert set(changed.listeners) == {("127.1.128.5", 81), ("127.1.128.6", 5432)}
    assert changed.listeners[("127.1.128.5", 81)].backends == (Backend("127.1.64.2", 8080),
                                                             Backend("127.1.64.3", 8080))
    # Endpoints that appear or go away for an unchanged Service are seen too.
    gone = build_service_map([web, PLAIN], [WEB_EP], previous=changed)
    assert gone.listeners[("127.1.128.6", 5432)].backends == ()
    back = build_service_map([web, PLAIN], [WEB_EP, plain_ep], previous=gone)
    assert back.listeners[("127.1.128.6", 5432)].backends == (Backend("127.1.64.8", 15432),)
    only_plain = build_service_map([PLAIN], [plain_ep], previous=back)
    assert set(only_plain.listeners) == {("127.1.128.6", 5432)}
    # Another cluster domain parses everything again.
    other = build_service_map([PLAIN], [plain_ep], previous=only_plain, cluster_domain="east.local")
    assert other.listeners[("127.1.128.6", 5432)] is not only_plain.listeners[("127.1.128.6", 5432)]


def test_service_keys_order_by_namespace_then_name_and_print_as_ns_slash_name() -> None:
    keys = [ServiceKey("b", "a"), ServiceKey("a", "z"), ServiceKey("a", "b")]
    assert sorted(keys) == [ServiceKey("a", "b"), ServiceKey("a", "z"), ServiceKey("b", "a")]
    assert str(ServiceKey("emojivoto", "web-svc")) == "emojivoto/web-svc"

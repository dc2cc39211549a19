import math

import pytest

from isthmus.core.viz.model import Sample, parse_window
from isthmus.core.viz.query import (
    QueryError,
    Ref,
    StatTarget,
    authority_names_service,
    edges,
    histogram_quantile,
    parse_ref,
    routes,
    stat,
)

BOT = {"namespace": "emojivoto", "pod": "vote-bot-1", "deployment": "vote-bot",
       "serviceaccount": "default"}
WEB = {"namespace": "emojivoto", "pod": "web-1", "deployment": "web", "serviceaccount": "web"}
TO_WEB = {"direction": "outbound", "tls": "true", "server_id": "web.emojivoto.id",
          "dst_namespace": "emojivoto", "dst_service": "web-svc", "dst_deployment": "web",
          "dst_pod": "web-1"}
TO_EAST = {"direction": "outbound", "tls": "true", "server_id": "gateway.id",
           "dst_namespace": "emojivoto", "dst_service": "web-svc-east", "dst_target_cluster": "east"}


def resp(target, labels, ok, failed=0.0, **extra):
    base = {**target, **labels, **extra}
    out = [Sample("response_total", {**base, "classification": "success", "status_code": "200"}, ok)]
    if failed:
        out.append(Sample("response_total", {**base, "classification": "failure",
                                             "status_code": "500"}, failed))
    return out


def buckets(target, labels, counts):
    cumulative = 0.0
    out = []
    for le, n in counts:
        cumulative += n
        out.append(Sample("response_latency_ms_bucket", {**target, **labels, "le": le}, cumulative))
    return out


def test_histogram_quantile_interpolates_like_prometheus():
    b = {10.0: 50.0, 20.0: 100.0, math.inf: 100.0}
    assert histogram_quantile(0.5, b) == 10.0
    assert histogram_quantile(0.75, b) == 15.0
    assert histogram_quantile(0.25, b) == 5.0
    assert histogram_quantile(0.99, {10.0: 0.0, math.inf: 10.0}) == 10.0  # in +Inf: highest bound
    assert histogram_quantile(0.5, {math.inf: 0.0}) is None
    assert histogram_quantile(0.5, {10.0: 1.0}) is None  # no +Inf bucket: not a histogram


def test_stat_deploy_reads_inbound_and_counts_failures():
    inbound = {"direction": "inbound", "tls": "true"}
    samples = [*resp(WEB, inbound, 90, 10), *buckets(WEB, inbound, [("10", 50), ("20", 50), ("+Inf", 0)]),
               *resp(BOT, TO_WEB, 1000)]  # outbound of another deployment: not web's
    gauges = [Sample("tcp_open_connections", {**WEB, "direction": "inbound", "peer": "src"}, 2)]
    targets = [StatTarget("deployment", "emojivoto", "web", 1, 1),
               StatTarget("deployment", "emojivoto", "voting", 0, 1)]
    web, voting = stat(targets, samples, gauges, 10)
    assert (web.success, web.rps, web.tcp_conn) == (0.9, 10.0, 2)
    assert web.latency_ms == {"p50": 10.0, "p95": 19.0, "p99": 19.8}
    assert web.to_dict()["meshed"] == "1/1"
    assert voting.to_dict() == {"namespace": "emojivoto", "kind": "deployment", "name": "voting",
                                "meshed": "0/1", "success": None, "rps": None, "latency_ms": None,
                                "tcp_conn": None}


def test_stat_svc_reads_clients_outbound_including_a_mirrored_service():
    samples = [*resp(BOT, TO_WEB, 10), *resp(BOT, TO_EAST, 6, 4)]
    rows = stat([StatTarget("service", "emojivoto", "web-svc-east")], samples, [], 1)
    assert (rows[0].success, rows[0].rps) == (0.6, 10.0)


def test_stat_to_and_from_select_the_callers_outbound():
    samples = [*resp(BOT, TO_WEB, 10), *resp(BOT, TO_EAST, 6, 4)]
    bot = StatTarget("deployment", "emojivoto", "vote-bot", 1, 1)
    (row,) = stat([bot], samples, [], 1, to=Ref("service", "web-svc-east", "emojivoto"))
    assert (row.success, row.rps) == (0.6, 10.0)
    (row,) = stat([StatTarget("deployment", "emojivoto", "web", 1, 1)], samples, [], 1,
                  from_=Ref("deployment", "vote-bot", "emojivoto"))
    assert (row.success, row.rps) == (1.0, 10.0)
    with pytest.raises(QueryError, match="cannot be used together"):
        stat([bot], samples, [], 1, to=Ref("deployment", "web", "emojivoto"),
             from_=Ref("deployment", "web", "emojivoto"))


def test_edges_include_the_gateway_edge_with_identities():
    samples = [*resp(BOT, TO_WEB, 10), *resp(BOT, TO_EAST, 3),
               Sample("response_total", {**WEB, "direction": "inbound", "tls": "true"}, 10)]
    rows = edges("deployment", "emojivoto", samples, [],
                 lambda sa, ns: f"{sa}.{ns}.serviceaccount.identity.isthmus.cluster.local")
    assert [r.to_dict() for r in rows] == [
        {"src": "vote-bot", "dst": "web", "src_namespace": "emojivoto", "dst_namespace": "emojivoto",
         "secured": True, "client_id": "default.emojivoto.serviceaccount.identity.isthmus.cluster.local",
         "server_id": "web.emojivoto.id", "dst_cluster": "", "no_tls_reason": ""},
        {"src": "vote-bot", "dst": "web-svc-east", "src_namespace": "emojivoto",
         "dst_namespace": "emojivoto", "secured": True,
         "client_id": "default.emojivoto.serviceaccount.identity.isthmus.cluster.local",
         "server_id": "gateway.id", "dst_cluster": "east", "no_tls_reason": ""}]
    unsecured = [Sample("tcp_open_connections", {**BOT, **TO_WEB, "peer": "dst", "tls": "no_identity",
                                                 "no_tls_reason": "not_provided_by_remote"}, 1)]
    (row,) = edges("deployment", None, [], unsecured, lambda sa, ns: sa)
    assert (row.secured, row.no_tls_reason) == (False, "not_provided_by_remote")
    with pytest.raises(QueryError, match="deploy or po"):
        edges("service", None, [], [], lambda sa, ns: sa)


def test_routes_group_by_route_busiest_first():
    rt = {"direction": "inbound", "dst": "web-svc.emojivoto:80"}
    samples = [Sample("route_response_total", {**WEB, **rt, "rt_route": "GET /api/list",
                                               "classification": "success"}, 30),
               Sample("route_response_total", {**WEB, **rt, "rt_route": "GET /api/vote",
                                               "classification": "failure"}, 1),
               Sample("route_response_total", {**WEB, **rt, "rt_route": "GET /api/vote",
                                               "classification": "success"}, 9)]
    rows = routes(samples, lambda labels: authority_names_service(labels["dst"], "web-svc",
                                                                 "emojivoto"), 10)
    assert [(r.route, r.rps, r.success) for r in rows] == [("GET /api/list", 3.0, 1.0),
                                                          ("GET /api/vote", 1.0, 0.9)]


def test_authority_names_service():
    assert authority_names_service("web-svc.emojivoto.svc.cluster.local:80", "web-svc", "emojivoto")
    assert authority_names_service("web-svc:80", "web-svc", "emojivoto")
    assert not authority_names_service("web-svc.other:80", "web-svc", "emojivoto")
    assert not authority_names_service("web-svc-east.emojivoto:80", "web-svc", "emojivoto")


@pytest.mark.parametrize("text, message", [
    ("deployments/web/x", "not TYPE/NAME"),
    ("widget/web", 'unknown resource type "widget"'),
    ("deploy/", "empty name"),
    ("deploy/Web_1", "not a valid Kubernetes name"),
    ("", "empty"),
])
def test_parse_ref_refuses_bad_resources(text, message):
    with pytest.raises(QueryError, match=message):
        parse_ref(text, "default")


def test_parse_ref_and_window():
    assert parse_ref("deploy/web", "emojivoto") == Ref("deployment", "web", "emojivoto")
    assert parse_ref("ns/emojivoto", "default") == Ref("namespace", "emojivoto", "emojivoto")
    assert str(parse_ref("svc", "x")) == "svc"
    assert parse_window("1m") == 60 and parse_window("90s") == 90
    with pytest.raises(ValueError, match="longer than the hour"):
        parse_window("2h")
    with pytest.raises(ValueError, match="bad time window"):
        parse_window("soon")

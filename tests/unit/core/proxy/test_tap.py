"""Tap queries, filter matching, event lines and dicts, and the subscriber hub."""

from __future__ import annotations

from typing import Any

import pytest

from isthmus.core.proxy.tap import (
    Tap,
    TapEvent,
    TapFilter,
    TapMeta,
    TapQueryError,
    matches,
    parse_tap_query,
)

VOTE_BOT = {"namespace": "emojivoto", "deployment": "vote-bot", "pod": "vote-bot-7d9f-x2",
            "serviceaccount": "default"}
WEB = {"namespace": "emojivoto", "deployment": "web", "pod": "web-5c4d-k8", "service": "web-svc"}
EMOJI = {"namespace": "emojivoto", "deployment": "emoji", "pod": "emoji-1", "service": "emoji-svc"}


def outbound(dst: dict[str, str] = WEB, **kw: Any) -> TapMeta:
    fields: dict[str, Any] = {
        "direction": "outbound", "src_ip": "127.1.64.3", "src_port": 51234,
        "dst_ip": "127.1.64.5", "dst_port": 4143, "tls": "true", "method": "GET",
        "authority": "web-svc.emojivoto:80", "path": "/api/list",
        "src_labels": VOTE_BOT, "dst_labels": dst}
    fields.update(kw)
    return TapMeta(**fields)


def inbound(src: dict[str, str] | None = None, own: dict[str, str] = VOTE_BOT,
            **kw: Any) -> TapMeta:
    fields: dict[str, Any] = {
        "direction": "inbound", "src_ip": "127.1.64.9", "src_port": 40000,
        "dst_ip": "127.1.64.3", "dst_port": 8080, "tls": "not_provided_by_remote",
        "method": "POST", "authority": "vote-bot.emojivoto:8080", "path": "/vote",
        "src_labels": src or {}, "dst_labels": own}
    fields.update(kw)
    return TapMeta(**fields)


# --- queries ------------------------------------------------------------------


def test_deployment_query() -> None:
    assert parse_tap_query({"resource": "deploy/vote-bot", "namespace": "emojivoto"}) == \
        TapFilter(namespace="emojivoto", resource=("deployment", "vote-bot"))


def test_namespace_defaults_to_default() -> None:
    assert parse_tap_query({"resource": "po/web-1"}).namespace == "default"


def test_kind_spellings() -> None:
    for spelling in ("deploy", "deployment", "deployments", "Deployments"):
        assert parse_tap_query({"resource": f"{spelling}/web"}).resource == ("deployment", "web")
    assert parse_tap_query({"resource": "sts"}).resource == ("statefulset", "")


def test_namespace_resource_names_the_namespace() -> None:
    f = parse_tap_query({"resource": "ns/emojivoto", "namespace": "other"})
    assert (f.namespace, f.resource) == ("emojivoto", ("namespace", "emojivoto"))


def test_full_query() -> None:
    f = parse_tap_query({"resource": "deploy/vote-bot", "namespace": "emojivoto",
                         "to": "svc/web-svc", "to_namespace": "east", "authority": "web:80",
                         "path": "/api", "method": "GET"})
    assert f == TapFilter(namespace="emojivoto", resource=("deployment", "vote-bot"),
                          to_namespace="east", to_resource=("service", "web-svc"),
                          authority="web:80", path="/api", method="GET")


def test_to_namespace_defaults_to_the_namespace() -> None:
    f = parse_tap_query({"resource": "deploy/vote-bot", "namespace": "emojivoto", "to": "deploy"})
    assert (f.to_namespace, f.to_resource) == ("emojivoto", ("deployment", ""))


def test_to_namespace_alone_taps_requests_to_that_namespace() -> None:
    f = parse_tap_query({"resource": "deploy/vote-bot", "to_namespace": "books"})
    assert (f.to_namespace, f.to_resource) == ("books", ("namespace", "books"))


def test_empty_values_are_absent() -> None:
    assert parse_tap_query({"resource": "deploy", "to": "", "path": "", "method": "",
                            "authority": ""}) == \
        TapFilter(namespace="default", resource=("deployment", ""))


@pytest.mark.parametrize(("params", "message"), [
    ({}, 'a resource to tap is required, like "deploy/web" or "ns/emojivoto"'),
    ({"resource": "widgets/x"}, 'resource "widgets/x": unknown resource type "widgets"; valid '
     "types: cronjobs (cj), daemonsets (ds), deployments (deploy), jobs, namespaces (ns), pods "
     "(po), replicasets (rs), replicationcontrollers (rc), statefulsets (sts), services (svc)"),
    ({"resource": "svc/web-svc"}, 'resource "svc/web-svc": services are only supported as a '
     '"to" resource'),
    ({"resource": "deploy/a/b"}, 'resource "deploy/a/b" is not TYPE/NAME'),
    ({"resource": "deploy/"}, 'resource "deploy/" has an empty name'),
    ({"resource": "deploy/Web"}, 'resource "deploy/Web": "Web" is not a valid deployment name: '
     "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
     "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
     "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
    ({"resource": "deploy/web", "namespace": "a.b"}, 'namespace "a.b" is not a valid namespace '
     "name: must not contain dots"),
    ({"resource": "deploy/web", "namespace": "A"}, 'namespace "A" is not a valid namespace '
     "name: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
     "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
     "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
    ({"resource": "deploy/web", "to": "gadget/x"}, 'to resource "gadget/x": unknown resource '
     'type "gadget"; valid types: cronjobs (cj), daemonsets (ds), deployments (deploy), jobs, '
     "namespaces (ns), pods (po), replicasets (rs), replicationcontrollers (rc), statefulsets "
     "(sts), services (svc)"),
    ({"resource": "deploy/web", "path": "api"}, 'path "api" must start with "/"'),
    ({"resource": "deploy/web", "method": "GE T"}, 'method "GE T" is not an HTTP method'),
    ({"resource": "deploy/web", "pth": "/", "mthd": "GET"}, "unknown tap parameter 'mthd', "
     "'pth'; known: resource, namespace, to, to_namespace, authority, path, method"),
])
def test_bad_queries(params: dict[str, str], message: str) -> None:
    with pytest.raises(TapQueryError) as e:
        parse_tap_query(params)
    assert str(e.value) == message


# --- matching -----------------------------------------------------------------

TAP_VOTE_BOT = TapFilter(namespace="emojivoto", resource=("deployment", "vote-bot"))


def test_a_tap_on_a_deployment_sees_its_outbound_and_inbound_traffic() -> None:
    assert matches(TAP_VOTE_BOT, outbound())
    assert matches(TAP_VOTE_BOT, inbound())


def test_other_workloads_traffic_is_not_seen() -> None:
    web_proxy_out = outbound(src_labels=WEB, dst_labels=EMOJI)
    web_proxy_in = inbound(src=VOTE_BOT, own=WEB)  # vote-bot calling web, seen by web's proxy
    assert not matches(TAP_VOTE_BOT, web_proxy_out)
    assert not matches(TAP_VOTE_BOT, web_proxy_in)


def test_namespace_must_match() -> None:
    f = TapFilter(namespace="other", resource=("deployment", "vote-bot"))
    assert not matches(f, outbound())


def test_kind_without_name_matches_every_resource_of_the_kind() -> None:
    every_deploy = TapFilter(namespace="emojivoto", resource=("deployment", ""))
    assert matches(every_deploy, outbound())
    assert not matches(TapFilter(namespace="emojivoto", resource=("statefulset", "")), outbound())


def test_namespace_tap() -> None:
    f = TapFilter(namespace="emojivoto", resource=("namespace", "emojivoto"))
    assert matches(f, outbound()) and matches(f, inbound())
    assert not matches(TapFilter(namespace="books", resource=("namespace", "books")), outbound())


def test_pod_tap() -> None:
    assert matches(TapFilter(namespace="emojivoto", resource=("pod", "vote-bot-7d9f-x2")),
                   outbound())
    assert not matches(TapFilter(namespace="emojivoto", resource=("pod", "web-5c4d-k8")),
                       outbound())


def test_to_resource_matches_the_destination() -> None:
    to_web = TapFilter(namespace="emojivoto", resource=("deployment", "vote-bot"),
                       to_namespace="emojivoto", to_resource=("service", "web-svc"))
    assert matches(to_web, outbound(dst=WEB))
    assert not matches(to_web, outbound(dst=EMOJI))
    # inbound requests go to vote-bot itself, which is not web-svc
    assert not matches(to_web, inbound())


def test_to_resource_on_inbound_matches_the_proxys_own_workload() -> None:
    to_self = TapFilter(namespace="emojivoto", resource=("deployment", "vote-bot"),
                        to_namespace="emojivoto", to_resource=("deployment", "vote-bot"))
    assert matches(to_self, inbound())
    assert not matches(to_self, outbound())


def test_to_namespace_must_match() -> None:
    elsewhere = TapFilter(namespace="emojivoto", resource=("deployment", "vote-bot"),
                          to_namespace="east", to_resource=("service", "web-svc"))
    assert not matches(elsewhere, outbound())


def test_destination_without_labels_fails_a_to_filter() -> None:
    to_web = TapFilter(namespace="emojivoto", resource=("deployment", "vote-bot"),
                       to_namespace="emojivoto", to_resource=("deployment", ""))
    assert not matches(to_web, outbound(dst={}))


@pytest.mark.parametrize(("field", "value", "seen"), [
    ("authority", "web-svc.emojivoto:80", True),
    ("authority", "web-svc.emojivoto", False),
    ("path", "/api", True),
    ("path", "/api/list", True),
    ("path", "/api/list/x", False),
    ("path", "/", True),
    ("method", "GET", True),
    ("method", "get", False),
])
def test_request_fields(field: str, value: str, seen: bool) -> None:
    f = TapFilter(namespace="emojivoto", resource=("deployment", "vote-bot"), **{field: value})
    assert matches(f, outbound()) is seen


# --- events -------------------------------------------------------------------


def test_outbound_lines() -> None:
    meta = outbound()
    assert TapEvent("req", 0, 1, meta, 100.0).line() == (
        "req id=0:1 proxy=out src=127.1.64.3:51234 dst=127.1.64.5:4143 tls=true :method=GET "
        ":authority=web-svc.emojivoto:80 :path=/api/list")
    assert TapEvent("rsp", 0, 1, meta, 100.0, status=200, since_request=0.001234).line() == (
        "rsp id=0:1 proxy=out src=127.1.64.3:51234 dst=127.1.64.5:4143 tls=true :status=200 "
        "latency=1234µs")
    assert TapEvent("end", 0, 1, meta, 100.0, since_request=0.00129, since_response=0.000056,
                    response_bytes=1234).line() == (
        "end id=0:1 proxy=out src=127.1.64.3:51234 dst=127.1.64.5:4143 tls=true duration=56µs "
        "response-length=1234B")


def test_inbound_lines_align_like_linkerds() -> None:
    meta = inbound()
    assert TapEvent("req", 3, 0, meta, 0.0).line() == (
        "req id=3:0 proxy=in  src=127.1.64.9:40000 dst=127.1.64.3:8080 "
        "tls=not_provided_by_remote :method=POST :authority=vote-bot.emojivoto:8080 :path=/vote")


def test_ipv6_addresses_are_bracketed() -> None:
    meta = outbound(src_ip="::1", dst_ip="fe80::2")
    assert " src=[::1]:51234 dst=[fe80::2]:4143 " in TapEvent("req", 0, 0, meta, 0.0).line()


def test_outbound_dicts() -> None:
    meta = outbound()
    req = TapEvent("req", 0, 1, meta, 100.0).to_dict()
    assert req == {
        "source": {"ip": "127.1.64.3", "port": 51234, "metadata": VOTE_BOT},
        "destination": {"ip": "127.1.64.5", "port": 4143, "metadata": {**WEB, "tls": "true"}},
        "routeMeta": None,
        "proxyDirection": "OUTBOUND",
        "timestamp": 100.0,
        "requestInitEvent": {"id": {"base": 0, "stream": 1}, "method": "GET", "scheme": "HTTP",
                             "authority": "web-svc.emojivoto:80", "path": "/api/list",
                             "headers": []},
    }
    rsp = TapEvent("rsp", 0, 1, meta, 101.5, status=503, since_request=1.5).to_dict()
    assert rsp["responseInitEvent"] == {"id": {"base": 0, "stream": 1},
                                        "sinceRequestInit": {"seconds": 1, "nanos": 500000000},
                                        "httpStatus": 503, "headers": []}
    end = TapEvent("end", 0, 1, meta, 102.0, since_request=2.0, since_response=0.5,
                   response_bytes=7).to_dict()
    assert end["responseEndEvent"] == {"id": {"base": 0, "stream": 1},
                                       "sinceRequestInit": {"seconds": 2, "nanos": 0},
                                       "sinceResponseInit": {"seconds": 0, "nanos": 500000000},
                                       "responseBytes": 7, "trailers": []}
    assert VOTE_BOT.get("tls") is None  # the labels given were not changed


def test_inbound_dict_puts_tls_on_the_source() -> None:
    d = TapEvent("req", 0, 0, inbound(src={"namespace": "x"}), 0.0).to_dict()
    assert d["proxyDirection"] == "INBOUND"
    assert d["source"]["metadata"] == {"namespace": "x", "tls": "not_provided_by_remote"}
    assert d["destination"]["metadata"] == VOTE_BOT


# --- hub ----------------------------------------------------------------------


def test_the_hub_is_inactive_until_someone_subscribes() -> None:
    hub = Tap()
    assert not hub.active
    sub = hub.subscribe(TAP_VOTE_BOT, lambda event: None)
    assert hub.active
    sub.close()
    assert not hub.active and sub.closed
    assert repr(hub) == "<Tap 0 subscribers>"


def test_a_matched_request_gives_req_rsp_end() -> None:
    hub = Tap()
    got: list[TapEvent] = []
    hub.subscribe(TAP_VOTE_BOT, got.append)
    request = hub.start(outbound(), 10.0)
    assert request is not None
    request.response(200, 10.002)
    request.end(1234, 10.0025)
    assert [e.line() for e in got] == [
        "req id=0:0 proxy=out src=127.1.64.3:51234 dst=127.1.64.5:4143 tls=true :method=GET "
        ":authority=web-svc.emojivoto:80 :path=/api/list",
        "rsp id=0:0 proxy=out src=127.1.64.3:51234 dst=127.1.64.5:4143 tls=true :status=200 "
        "latency=2000µs",
        "end id=0:0 proxy=out src=127.1.64.3:51234 dst=127.1.64.5:4143 tls=true duration=500µs "
        "response-length=1234B",
    ]
    assert [e.at for e in got] == [10.0, 10.002, 10.0025]


def test_unmatched_requests_start_nothing() -> None:
    hub = Tap()
    got: list[TapEvent] = []
    hub.subscribe(TapFilter(namespace="emojivoto", resource=("deployment", "web")), got.append)
    assert hub.start(outbound(), 0.0) is None
    assert got == []


def test_streams_count_per_subscriber() -> None:
    hub = Tap()
    first: list[TapEvent] = []
    second: list[TapEvent] = []
    hub.subscribe(TAP_VOTE_BOT, first.append)
    hub.subscribe(TapFilter(namespace="emojivoto", resource=("deployment", "vote-bot"),
                            method="POST"), second.append)
    hub.start(outbound(), 0.0)
    hub.start(inbound(), 0.0)
    assert [(e.base, e.stream, e.meta.method) for e in first] == [(0, 0, "GET"), (0, 1, "POST")]
    assert [(e.base, e.stream, e.meta.method) for e in second] == [(1, 0, "POST")]


def test_an_end_without_response_times_from_the_request() -> None:
    hub = Tap()
    got: list[TapEvent] = []
    hub.subscribe(TAP_VOTE_BOT, got.append)
    request = hub.start(outbound(), 5.0)
    assert request is not None
    request.end(0, 5.25)
    assert got[-1].line().endswith(" duration=250000µs response-length=0B")


def test_closed_subscribers_get_nothing_more() -> None:
    hub = Tap()
    got: list[TapEvent] = []
    sub = hub.subscribe(TAP_VOTE_BOT, got.append)
    request = hub.start(outbound(), 0.0)
    assert request is not None
    hub.unsubscribe(sub)
    request.response(200, 0.1)
    assert [e.kind for e in got] == ["req"]


def test_a_sink_that_raises_is_unsubscribed() -> None:
    hub = Tap()
    calls = []

    def broken(event: TapEvent) -> None:
        calls.append(event.kind)
        raise RuntimeError("queue gone")

    healthy: list[TapEvent] = []
    hub.subscribe(TAP_VOTE_BOT, broken)
    hub.subscribe(TAP_VOTE_BOT, healthy.append)
    request = hub.start(outbound(), 0.0)
    assert request is not None
    request.response(200, 0.1)
    assert calls == ["req"]
    assert [e.kind for e in healthy] == ["req", "rsp"]
    assert len(hub) == 1

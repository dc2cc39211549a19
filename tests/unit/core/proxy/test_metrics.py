"""Prometheus registry rendering, the proxy's families, and promtool's verdict."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

import pytest

from isthmus.core.proxy.metrics import (
    HTTP_LABELS,
    LATENCY_BUCKETS_MS,
    ROUTE_LABELS,
    TCP_LABELS,
    Registry,
    classify,
    http_labels,
    proxy_metrics,
    response_labels,
    route_labels,
    tcp_labels,
)


def small_registry() -> Registry:
    registry = Registry()
    requests = registry.counter("request_total", "Total count of HTTP requests.",
                                ("direction", "authority"))
    requests.cell(("outbound", "web:80")).value += 3
    requests.cell(("inbound", 'we"ird\\auth\nority')).value += 1
    requests.cell(("outbound", "")).value += 2
    open_now = registry.gauge("tcp_open_connections", "Number of\\currently-open\nconnections")
    open_now.cell(()).value += 2
    open_now.cell(()).value -= 1
    latency = registry.histogram("response_latency_ms", "Latency.", ("status_code",),
                                 buckets=(1, 5, 2.5e3))
    cell = latency.cell(("200",))
    for ms in (0.5, 1, 3, 7.25):
        cell.observe(ms)
    latency.cell(("",)).observe(6000)
    return registry


def test_render_exact_text() -> None:
    assert small_registry().render() == (
        "# HELP request_total Total count of HTTP requests.\n"
        "# TYPE request_total counter\n"
        'request_total{direction="outbound",authority="web:80"} 3\n'
        'request_total{direction="inbound",authority="we\\"ird\\\\auth\\nority"} 1\n'
        'request_total{direction="outbound"} 2\n'
        "# HELP tcp_open_connections Number of\\\\currently-open\\nconnections\n"
        "# TYPE tcp_open_connections gauge\n"
        "tcp_open_connections 1\n"
        "# HELP response_latency_ms Latency.\n"
        "# TYPE response_latency_ms histogram\n"
        'response_latency_ms_bucket{status_code="200",le="1"} 2\n'
        'response_latency_ms_bucket{status_code="200",le="5"} 3\n'
        'response_latency_ms_bucket{status_code="200",le="2500"} 4\n'
        'response_latency_ms_bucket{status_code="200",le="+Inf"} 4\n'
        'response_latency_ms_sum{status_code="200"} 11.75\n'
        'response_latency_ms_count{status_code="200"} 4\n'
        'response_latency_ms_bucket{le="1"} 0\n'
        'response_latency_ms_bucket{le="5"} 0\n'
        'response_latency_ms_bucket{le="2500"} 0\n'
        'response_latency_ms_bucket{le="+Inf"} 1\n'
        "response_latency_ms_sum 6000\n"
        "response_latency_ms_count 1\n"
    )


def test_empty_families_render_only_help_and_type() -> None:
    registry = Registry()
    registry.counter("x_total", "X.")
    assert registry.render() == "# HELP x_total X.\n# TYPE x_total counter\n"


def test_cells_are_cached() -> None:
    registry = Registry()
    family = registry.counter("x_total", "X.", ("a",))
    assert family.cell(("1",)) is family.cell(("1",))
    assert family.cell(("1",)) is not family.cell(("2",))
    assert len(family) == 2
    family.remove(("1",))
    assert len(family) == 1


@pytest.mark.parametrize(("value", "text"), [
    (1.0, "1"), (0.25, "0.25"), (1e20, "1e+20"), (float("inf"), "+Inf"),
    (float("-inf"), "-Inf"), (float("nan"), "NaN"), (-3, "-3"),
])
def test_value_formatting(value: float, text: str) -> None:
    registry = Registry()
    registry.gauge("g", "G.").cell(()).value = value
    assert registry.render().splitlines()[-1] == f"g {text}"


def test_wrong_label_values_are_refused() -> None:
    family = Registry().counter("x_total", "X.", ("a", "b"))
    with pytest.raises(ValueError, match=r"x_total takes 2 label values \('a', 'b'\), not 1"):
        family.cell(("1",))
    with pytest.raises(TypeError, match="x_total: label values are strings, not 200"):
        family.cell(("1", 200))  # type: ignore[arg-type]


@pytest.mark.parametrize(("declare", "message"), [
    (lambda r: r.counter("9lives", "X."), "'9lives' is not a metric name"),
    (lambda r: r.counter("x", "X.", ("a-b",)), "'a-b' is not a label name (metric x)"),
    (lambda r: r.counter("x", "X.", ("__name",)), "'__name' is not a label name (metric x)"),
    (lambda r: r.counter("x", "X.", ("a", "a")), "label 'a' appears twice (metric x)"),
    (lambda r: r.histogram("h", "H.", ("le",)), 'a histogram cannot have a label named "le" '
                                                "(metric h)"),
    (lambda r: r.histogram("h", "H.", buckets=(5, 1)),
     "h: buckets must be finite and strictly increasing"),
    (lambda r: r.histogram("h", "H.", buckets=()),
     "h: buckets must be finite and strictly increasing"),
])
def test_bad_declarations(declare: Callable[[Registry], object], message: str) -> None:
    with pytest.raises(ValueError) as e:
        declare(Registry())
    assert str(e.value) == message


def test_names_may_not_clash() -> None:
    registry = Registry()
    registry.histogram("latency", "L.")
    with pytest.raises(ValueError, match="metric latency_count clashes with latency"):
        registry.counter("latency_count", "C.")
    with pytest.raises(ValueError, match="metric latency clashes with latency"):
        registry.gauge("latency", "G.")


def test_histogram_bounds_are_inclusive() -> None:
    cell = Registry().histogram("h", "H.", buckets=(1, 2)).cell(())
    for v in (1, 1.0000001, 2, 2.5):
        cell.observe(v)
    assert cell.buckets == [1, 2, 1]
    assert cell.count == 4


def test_latency_buckets_are_linkerds() -> None:
    assert LATENCY_BUCKETS_MS == (1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500,
                                  1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000,
                                  50000)


def test_proxy_families_and_labels() -> None:
    m = proxy_metrics()
    shapes = {name: (f.kind, f.label_names) for name, f in m.registry.families.items()}
    assert shapes == {
        "request_total": ("counter", HTTP_LABELS),
        "response_total": ("counter", (*HTTP_LABELS, "status_code", "classification")),
        "response_latency_ms": ("histogram", (*HTTP_LABELS, "status_code")),
        "route_request_total": ("counter", ROUTE_LABELS),
        "route_response_total": ("counter", (*ROUTE_LABELS, "status_code", "classification")),
        "route_response_latency_ms": ("histogram", (*ROUTE_LABELS, "status_code")),
        "tcp_open_total": ("counter", TCP_LABELS),
        "tcp_close_total": ("counter", (*TCP_LABELS, "errno")),
        "tcp_open_connections": ("gauge", TCP_LABELS),
        "tcp_read_bytes_total": ("counter", TCP_LABELS),
        "tcp_write_bytes_total": ("counter", TCP_LABELS),
    }
    assert HTTP_LABELS == ("direction", "authority", "tls", "no_tls_reason", "client_id",
                           "server_id", "dst_namespace", "dst_service", "dst_deployment",
                           "dst_pod", "dst_target_cluster")
    assert TCP_LABELS[:2] == ("direction", "peer")
    assert TCP_LABELS[2:] == HTTP_LABELS[1:]
    assert ROUTE_LABELS == ("direction", "dst", "rt_route", "dst_namespace", "dst_service",
                            "dst_target_cluster")
    assert m.response_latency_ms.bounds == LATENCY_BUCKETS_MS
    assert m.route_response_latency_ms.bounds == LATENCY_BUCKETS_MS


def test_label_helpers_follow_the_declared_order() -> None:
    base = http_labels(direction="outbound", authority="web-svc.emojivoto.svc.cluster.local:80",
                       server_id="web.emojivoto", dst_namespace="emojivoto",
                       dst_service="web-svc", dst_target_cluster="east")
    assert dict(zip(HTTP_LABELS, base, strict=True)) == {
        "direction": "outbound", "authority": "web-svc.emojivoto.svc.cluster.local:80",
        "tls": "true", "no_tls_reason": "", "client_id": "", "server_id": "web.emojivoto",
        "dst_namespace": "emojivoto", "dst_service": "web-svc", "dst_deployment": "",
        "dst_pod": "", "dst_target_cluster": "east"}
    tcp = tcp_labels(direction="inbound", peer="src", tls="no_identity",
                     no_tls_reason="not_provided_by_remote")
    assert dict(zip(TCP_LABELS, tcp, strict=True))["no_tls_reason"] == "not_provided_by_remote"
    route = route_labels(direction="outbound", dst="web-svc.emojivoto.svc.cluster.local:80",
                         rt_route="GET /api/vote/{id}", dst_service="web-svc-east",
                         dst_target_cluster="east")
    assert dict(zip(ROUTE_LABELS, route, strict=True)) == {
        "direction": "outbound", "dst": "web-svc.emojivoto.svc.cluster.local:80",
        "rt_route": "GET /api/vote/{id}", "dst_namespace": "", "dst_service": "web-svc-east",
        "dst_target_cluster": "east"}


@pytest.mark.parametrize(("status", "expected"), [
    (200, "success"), (302, "success"), (404, "success"), (499, "success"), (500, "failure"),
    (503, "failure"), (None, "failure"),
])
def test_classification(status: int | None, expected: str) -> None:
    assert classify(status) == expected
    assert response_labels(("x",), status) == ("x", "" if status is None else str(status),
                                               expected)


def test_response_labels_of_odd_statuses() -> None:
    assert response_labels((), 999) == ("999", "failure")


def full_proxy_registry() -> str:
    m = proxy_metrics()
    out = http_labels(direction="outbound", authority="web-svc.emojivoto.svc.cluster.local:80",
                      server_id="default.emojivoto.serviceaccount.identity.isthmus.cluster.local",
                      dst_namespace="emojivoto", dst_service="web-svc-east",
                      dst_target_cluster="east")
    inbound = http_labels(direction="inbound", authority="web-svc.emojivoto:80", tls="no_identity",
                          no_tls_reason="not_provided_by_remote")
    for base in (out, inbound):
        m.request_total.cell(base).value += 2
        m.response_total.cell(response_labels(base, 200)).value += 1
        m.response_total.cell(response_labels(base, None)).value += 1
        m.response_latency_ms.cell(response_labels(base, 200)[:-1]).observe(12.5)
    tcp = tcp_labels(direction="outbound", peer="dst",
                     authority="web-svc.emojivoto.svc.cluster.local:80",
                     server_id="default.emojivoto.serviceaccount.identity.isthmus.cluster.local")
    m.tcp_open_total.cell(tcp).value += 1
    m.tcp_close_total.cell((*tcp, "ECONNRESET")).value += 1
    m.tcp_open_connections.cell(tcp).value += 0
    m.tcp_read_bytes_total.cell(tcp).value += 1234
    m.tcp_write_bytes_total.cell(tcp).value += 56
    for rt in (route_labels(direction="outbound", dst="web-svc.emojivoto.svc.cluster.local:80",
                            rt_route="GET /api/vote/{id}", dst_namespace="emojivoto",
                            dst_service="web-svc-east", dst_target_cluster="east"),
               route_labels(direction="inbound", dst="web-svc.emojivoto.svc.cluster.local:80",
                            rt_route="[OTHER]")):
        m.route_request_total.cell(rt).value += 2
        m.route_response_total.cell(response_labels(rt, 200)).value += 1
        m.route_response_total.cell(response_labels(rt, None)).value += 1
        m.route_response_latency_ms.cell(response_labels(rt, 200)[:-1]).observe(3.5)
    return m.registry.render()


def test_every_proxy_family_has_samples_in_the_promtool_input() -> None:
    text = full_proxy_registry()
    for name in proxy_metrics().registry.families:
        suffix = "_count" if name.endswith("response_latency_ms") else ""
        assert any(line.startswith(f"{name}{suffix}{{") for line in text.splitlines()), name


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_proxy_metrics() -> None:
    result = subprocess.run(["promtool", "check", "metrics"], input=full_proxy_registry(),
                            capture_output=True, text=True, timeout=60, check=False)
    output = (result.stdout + result.stderr).strip()
    if result.returncode == 0:
        assert output == ""
        return
    # 3 is promtool's exit code for lint problems (1 would be a parse error).
    assert result.returncode == 3, output
    assert sorted(output.splitlines()) == [
        "response_latency_ms metric names should not contain abbreviated units",
        "route_response_latency_ms metric names should not contain abbreviated units"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_rejects_what_it_should() -> None:
    # The check above could pass vacuously if promtool ignored its input: show it does not.
    result = subprocess.run(["promtool", "check", "metrics"], input="request_total{ 1\n",
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1

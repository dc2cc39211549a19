import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from isthmus.core.proxy.metrics import http_labels, proxy_metrics, response_labels, tcp_labels
from isthmus.core.viz.exposition import ExpositionError, ExpositionParser


def _proxy_text() -> str:
    m = proxy_metrics()
    base = http_labels(direction="outbound", authority='we"ird\\host:80', server_id="web.emojivoto",
                       dst_namespace="emojivoto", dst_service="web-svc")
    m.request_total.cell(base).value += 3
    m.response_total.cell(response_labels(base, 200)).value += 2
    m.response_total.cell(response_labels(base, None)).value += 1
    m.response_latency_ms.cell(response_labels(base, 200)[:-1]).observe(12.5)
    m.tcp_open_connections.cell(tcp_labels(direction="inbound", peer="src")).value = 2
    return m.registry.render()


def _reference(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def test_agrees_with_prometheus_client_on_a_proxy_scrape():
    text = _proxy_text()
    ours = ExpositionParser().parse(text)
    assert ours == _reference(text)
    assert any(dict(labels).get("authority") == 'we"ird\\host:80' for _, labels in ours)


def test_second_parse_reuses_series_objects_and_sees_new_values():
    parser = ExpositionParser()
    first = parser.parse("a_total{x=\"1\"} 1\n")
    second = parser.parse("a_total{x=\"1\"} 5\n")
    (k1,), (k2,) = first, second
    assert k1 is k2 and second[k2] == 5


def test_keeps_only_wanted_names_and_reads_specials_and_timestamps():
    text = ("# HELP a help\n# TYPE a counter\na 1 1700000000000\nb{le=\"+Inf\"} +Inf\n"
            "c NaN\nd{x=\"a b\",y=\"}\"} -Inf\n\n")
    out = ExpositionParser(names={"a", "b", "d"}).parse(text)
    assert out[("a", ())] == 1
    assert out[("b", (("le", "+Inf"),))] == math.inf
    assert out[("d", (("x", "a b"), ("y", "}")))] == -math.inf
    assert ("c", ()) not in out


@pytest.mark.parametrize("text, message", [
    ("<html><body>hello</body></html>\n", "line 1"),
    ("ok 1\nrequest_total{a=1} 2\n", "line 2: bad label"),
    ("x notanumber\n", "is not a number"),
])
def test_garbage_is_an_error_naming_the_line(text, message):
    with pytest.raises(ExpositionError, match=message):
        ExpositionParser().parse(text)

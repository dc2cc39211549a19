import math

from isthmus.core.viz.history import TargetHistory

TARGET = {"namespace": "emojivoto", "pod": "web-1", "deployment": "web", "serviceaccount": "web"}
REQ = ("response_total", (("direction", "inbound"),))
OTHER = ("tcp_open_total", (("direction", "inbound"),))


def _values(h):
    return {(s.name, s.value) for s in h.increases(None, 1000 - 60, 1000)}


def test_increase_over_a_window_and_target_labels_on_every_sample():
    h = TargetHistory(TARGET)
    for i in range(10):  # t = 910 ... 1000, one scrape every 10 s, +5 a scrape
        h.record(910 + i * 10, {REQ: 5.0 * i})
    samples = h.increases({"response_total"}, 940, 1000)
    assert [(s.name, s.value) for s in samples] == [("response_total", 30.0)]
    assert samples[0].labels == {**TARGET, "direction": "inbound"}


def test_counter_reset_counts_the_later_value_and_new_series_count_from_zero():
    h = TargetHistory(TARGET)
    h.record(930, {REQ: 100.0})
    h.record(1000, {REQ: 7.0, OTHER: 4.0})
    assert _values(h) == {("response_total", 7.0), ("tcp_open_total", 4.0)}


def test_series_missing_from_the_last_scrape_is_not_reported():
    h = TargetHistory(TARGET)
    h.record(930, {REQ: 1.0, OTHER: 1.0})
    h.record(1000, {REQ: 2.0})
    assert _values(h) == {("response_total", 1.0)}


def test_window_older_than_history_reads_from_the_first_row():
    h = TargetHistory(TARGET)
    h.record(990, {REQ: 10.0})
    h.record(1000, {REQ: 12.0})
    assert _values(h) == {("response_total", 2.0)}
    assert TargetHistory(TARGET).increases(None, 0, 1) == []


def test_bounded_rings_and_coarse_ring_for_long_windows():
    h = TargetHistory(TARGET, fine=61, coarse=61, coarse_step=60)
    for i in range(400):  # 4000 s of 10 s scrapes, +1 each
        h.record(i * 10.0, {REQ: float(i)})
    assert h.fine_span() == 600
    end = 3990.0
    (ten,) = h.increases(None, end - 600, end)
    assert ten.value == 60
    (hour,) = h.increases(None, end - 3600, end)
    assert 354 <= hour.value <= 360  # coarse rows are a minute apart
    assert h.series_count == 1


def test_latest_is_the_gauge_values_of_the_last_scrape():
    h = TargetHistory(TARGET)
    h.record(1, {("tcp_open_connections", ()): 3.0, REQ: math.nan})
    assert [(s.name, s.value) for s in h.latest(None)] == [("tcp_open_connections", 3.0)]

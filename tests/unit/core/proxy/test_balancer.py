"""Peak-EWMA estimates and the power-of-two-choices balancer with failure accrual."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from isthmus.core.proxy.accrual import AccrualConfig
from isthmus.core.proxy.balancer import Balancer, PeakEwma

# --- PeakEwma -------------------------------------------------------------------


def test_starts_at_the_default_rtt() -> None:
    e = PeakEwma(now=5.0)
    assert e.rtt == 0.030
    assert e.cost(5.0) == pytest.approx(0.030)


def test_a_slower_response_becomes_the_estimate_at_once() -> None:
    e = PeakEwma(now=0.0)
    e.start()
    e.finish(0.5, now=0.0)
    assert e.rtt == 0.5


def test_a_faster_response_pulls_the_estimate_down_by_elapsed_time() -> None:
    e = PeakEwma(now=0.0, default_rtt=1.0, decay=10.0)
    e.finish(0.0, now=10.0)  # one decay period: weight exp(-1) on the old estimate
    assert e.rtt == pytest.approx(math.exp(-1))
    e.finish(0.1, now=10.0)  # no time elapsed: the old estimate keeps its full weight
    assert e.rtt == pytest.approx(math.exp(-1))


def test_cost_counts_pending_requests() -> None:
    e = PeakEwma(now=0.0, default_rtt=0.1)
    e.start()
    e.start()
    assert e.cost(0.0) == pytest.approx(0.3)
    e.finish(0.1, now=0.0)
    assert e.pending == 1
    assert e.cost(0.0) == pytest.approx(0.2)


def test_an_idle_estimate_decays_toward_zero() -> None:
    e = PeakEwma(now=0.0, default_rtt=1.0, decay=10.0)
    assert e.cost(20.0) == pytest.approx(math.exp(-2))
    assert e.cost(20.0) == pytest.approx(math.exp(-2))  # decaying twice to the same time is once


def test_pending_never_goes_negative() -> None:
    e = PeakEwma(now=0.0)
    e.finish(0.01, now=1.0)
    assert e.pending == 0


def test_clock_going_backwards_changes_nothing() -> None:
    e = PeakEwma(now=10.0, default_rtt=1.0)
    assert e.cost(5.0) == 1.0
    e.finish(0.5, now=5.0)
    assert e.rtt == 1.0 and e.updated == 10.0


def test_decay_must_be_positive() -> None:
    with pytest.raises(ValueError, match="decay must be a positive number of seconds, not 0"):
        PeakEwma(now=0.0, decay=0)


# --- Balancer -----------------------------------------------------------------


def balancer(keys: str = "abc", seed: int = 1, accrual: AccrualConfig | None = None,
             ) -> Balancer[str, str]:
    b: Balancer[str, str] = Balancer(random.Random(seed), failure_accrual=accrual)
    b.update({k: f"endpoint-{k}" for k in keys}, now=0.0)
    return b


def picked(b: Balancer[str, str], now: float) -> str:
    pick = b.pick(now)
    assert pick is not None
    return pick.key


def set_rtt(b: Balancer[str, str], key: str, rtt: float) -> None:
    entry = b.get(key)
    assert entry is not None
    entry.ewma.rtt = rtt


def test_no_endpoints_no_pick() -> None:
    b = balancer("")
    assert b.pick(0.0) is None
    assert len(b) == 0 and b.available(0.0) == 0


def test_a_single_endpoint_is_always_picked() -> None:
    b = balancer("a")
    pick = b.pick(0.0)
    assert pick is not None
    assert (pick.key, pick.endpoint) == ("a", "endpoint-a")


def test_two_endpoints_the_cheaper_always_wins() -> None:
    b = balancer("ab")
    set_rtt(b, "a", 0.5)
    set_rtt(b, "b", 0.01)
    assert {picked(b, 0.0) for _ in range(50)} == {"b"}


def test_p2c_prefers_cheaper_endpoints_statistically() -> None:
    b = balancer("abc", seed=42)
    set_rtt(b, "a", 0.010)
    set_rtt(b, "b", 0.020)
    set_rtt(b, "c", 0.500)
    counts = Counter(picked(b, 0.0) for _ in range(3000))
    # Each of the three pairs is drawn a third of the time; the cheaper of a pair wins:
    # a wins {a,b} and {a,c}, b wins {b,c}, c never wins.
    assert counts["c"] == 0
    assert counts["a"] / 3000 == pytest.approx(2 / 3, abs=0.03)
    assert counts["b"] / 3000 == pytest.approx(1 / 3, abs=0.03)


def test_pending_requests_push_load_away() -> None:
    b = balancer("ab")
    pick = b.get("a")
    assert pick is not None
    for _ in range(3):
        pick.ewma.start()
    assert {picked(b, 0.0) for _ in range(20)} == {"b"}


def test_picks_spread_over_equal_endpoints() -> None:
    b = balancer("abcd", seed=3)
    counts = Counter(picked(b, 0.0) for _ in range(4000))
    # equal costs: the first drawn wins, and draws are uniform
    for key in "abcd":
        assert counts[key] / 4000 == pytest.approx(0.25, abs=0.03)


def test_update_keeps_state_of_keys_that_stay() -> None:
    b = balancer("ab")
    kept = b.get("a")
    assert kept is not None
    kept.ewma.rtt = 0.25
    kept.ewma.start()
    b.update({"a": "moved-a", "c": "endpoint-c"}, now=3.0)
    assert len(b) == 2 and "b" not in b
    a, c = b.get("a"), b.get("c")
    assert a is kept and a.endpoint == "moved-a"
    assert a.ewma.rtt == 0.25 and a.ewma.pending == 1
    assert c is not None and c.ewma.rtt == 0.030 and c.ewma.updated == 3.0


def test_update_keeps_breaker_state() -> None:
    b = balancer("ab", accrual=AccrualConfig(max_failures=1, jitter=0))
    b.report("a", False, 0.0)
    b.update({"a": "x", "b": "y"}, now=0.1)
    assert b.available(0.1) == 1
    assert {picked(b, 0.1) for _ in range(20)} == {"b"}
    b.update({"b": "y"}, now=0.2)  # the ejected one goes away
    assert repr(b) == "<Balancer 1 endpoints, 0 ejected or probing>"


def test_ejected_endpoints_are_skipped() -> None:
    b = balancer("abc", accrual=AccrualConfig(max_failures=2, jitter=0))
    set_rtt(b, "a", 0.001)  # the cheapest, until it fails
    b.report("a", False, 0.0)
    b.report("a", False, 0.0)
    assert b.available(0.5) == 2
    assert {picked(b, 0.5) for _ in range(100)} == {"b", "c"}


def test_all_ejected_gives_none() -> None:
    b = balancer("ab", accrual=AccrualConfig(max_failures=1, jitter=0))
    b.report("a", False, 0.0)
    b.report("b", False, 0.0)
    assert b.available(0.5) == 0
    assert b.pick(0.5) is None


def test_half_open_endpoint_takes_one_probe_then_closes_on_success() -> None:
    b = balancer("a", accrual=AccrualConfig(max_failures=1, jitter=0))
    b.report("a", False, 0.0)
    assert b.pick(0.9) is None
    probe = b.pick(1.0)
    assert probe is not None and probe.key == "a"
    assert b.pick(1.0) is None  # the probe is out
    b.report("a", True, 1.2)
    assert b.pick(1.2) is not None and b.pick(1.2) is not None
    assert repr(b) == "<Balancer 1 endpoints, 0 ejected or probing>"


def test_failed_probe_ejects_for_the_next_penalty() -> None:
    b = balancer("a", accrual=AccrualConfig(max_failures=1, jitter=0))
    b.report("a", False, 0.0)
    assert b.pick(1.0) is not None
    b.report("a", False, 1.0)
    assert b.pick(2.9) is None
    assert b.pick(3.0) is not None


def test_cancelled_probe_lets_another_request_probe() -> None:
    b = balancer("a", accrual=AccrualConfig(max_failures=1, jitter=0))
    b.report("a", False, 0.0)
    assert b.pick(1.0) is not None
    b.cancel("a")
    assert b.pick(1.0) is not None


def test_reports_without_accrual_or_for_unknown_keys_change_nothing() -> None:
    plain = balancer("a")
    for _ in range(20):
        plain.report("a", False, 0.0)
    assert plain.pick(0.0) is not None
    guarded = balancer("a", accrual=AccrualConfig(max_failures=1))
    guarded.report("gone", False, 0.0)
    guarded.cancel("gone")
    assert guarded.available(0.0) == 1


def test_pick_returns_the_endpoints_own_entry() -> None:
    b = balancer("abc", accrual=AccrualConfig())
    entries = {b.get(k) for k in "abc"}
    assert all(b.pick(0.0) in entries for _ in range(30))

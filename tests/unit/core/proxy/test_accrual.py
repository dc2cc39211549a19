"""Consecutive-failures failure accrual: ejection, backoff with jitter, half-open probes."""

from __future__ import annotations

import random

import pytest

from isthmus.core.proxy.accrual import AccrualConfig, ConsecutiveFailures


class FixedRandom(random.Random):
    """A Random whose random() always returns the same value."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def breaker(value: float = 0.0, **config: float) -> ConsecutiveFailures:
    return ConsecutiveFailures(AccrualConfig(**config), FixedRandom(value))


def fail(b: ConsecutiveFailures, times: int, now: float = 0.0) -> None:
    for _ in range(times):
        b.record(False, now)


def test_defaults_are_linkerds() -> None:
    assert AccrualConfig() == AccrualConfig(max_failures=7, min_penalty=1.0, max_penalty=60.0,
                                            jitter=0.5)


@pytest.mark.parametrize(("config", "message"), [
    ({"max_failures": 0}, "max_failures must be at least 1, not 0"),
    ({"min_penalty": 0}, "min_penalty must be a positive number of seconds, not 0"),
    ({"min_penalty": 5, "max_penalty": 2}, "max_penalty (2) must be at least min_penalty (5)"),
    ({"jitter": -0.1}, "jitter must be a non-negative ratio, not -0.1"),
    ({"jitter": float("nan")}, "jitter must be a non-negative ratio, not nan"),
])
def test_config_rejects_nonsense(config: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError) as e:
        AccrualConfig(**config)
    assert str(e.value) == message


def test_ejects_after_max_consecutive_failures() -> None:
    b = breaker(jitter=0)
    fail(b, 6)
    assert b.available(0.0) and b.status(0.0) == "closed"
    fail(b, 1)
    assert not b.available(0.0)
    assert b.status(0.5) == "ejected"
    assert b.until == 1.0


def test_a_success_resets_the_count() -> None:
    b = breaker(jitter=0)
    fail(b, 6)
    b.record(True, 0.0)
    fail(b, 6)
    assert b.closed
    fail(b, 1)
    assert not b.closed


def test_half_open_lets_exactly_one_probe_through() -> None:
    b = breaker(jitter=0, max_failures=1)
    fail(b, 1, now=10.0)
    assert not b.available(10.999)
    assert b.available(11.0) and b.status(11.0) == "half-open"
    b.dispatch(11.0)
    assert not b.available(11.0)
    assert not b.available(30.0)


def test_successful_probe_closes_and_forgets_the_backoff() -> None:
    b = breaker(jitter=0, max_failures=1)
    fail(b, 1, now=0.0)
    b.dispatch(1.0)
    b.record(False, 1.0)  # second ejection: 2 s
    assert b.until == 3.0
    b.dispatch(3.0)
    b.record(True, 3.1)
    assert b.closed and b.available(3.1)
    fail(b, 1, now=4.0)
    assert b.until == 5.0  # back to the minimum penalty


def test_failed_probe_ejects_again_for_longer() -> None:
    b = breaker(jitter=0, max_failures=2)
    fail(b, 2, now=0.0)
    untils = [b.until]
    for _ in range(8):
        now = b.until
        b.dispatch(now)
        b.record(False, now)
        untils.append(b.until - now)
    assert untils == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_results_while_ejected_without_a_probe_are_ignored() -> None:
    b = breaker(jitter=0, max_failures=1)
    fail(b, 1, now=0.0)
    b.record(True, 0.5)  # an answer to a request sent before the ejection
    assert not b.closed
    b.record(True, 2.0)  # penalty over, but no probe was dispatched
    assert not b.closed and b.available(2.0)


def test_dispatch_while_closed_or_ejected_does_not_probe() -> None:
    b = breaker(jitter=0, max_failures=1)
    b.dispatch(0.0)
    assert not b.probing
    fail(b, 1, now=0.0)
    b.dispatch(0.5)
    assert not b.probing and b.available(1.0)


def test_cancelled_probe_frees_the_slot() -> None:
    b = breaker(jitter=0, max_failures=1)
    fail(b, 1, now=0.0)
    b.dispatch(1.0)
    assert not b.available(1.0)
    b.cancel()
    assert b.available(1.0)


def test_jitter_lengthens_the_penalty_by_at_most_its_ratio() -> None:
    b = breaker(0.5, jitter=0.5, max_failures=1)
    fail(b, 1, now=0.0)
    assert b.until == pytest.approx(1.25)


def test_jitter_never_passes_the_maximum_penalty() -> None:
    b = breaker(0.999, jitter=1.0, max_failures=1, min_penalty=40, max_penalty=60)
    fail(b, 1, now=0.0)
    assert b.until == 60.0


def test_penalties_with_seeded_jitter_stay_within_bounds() -> None:
    b = ConsecutiveFailures(AccrualConfig(max_failures=1), random.Random(7))
    fail(b, 1, now=0.0)
    for ejection in range(1, 10):
        now = b.until
        b.dispatch(now)
        b.record(False, now)
        base = min(60.0, 2.0 ** ejection)
        assert base - 1e-9 <= b.until - now <= min(60.0, base * 1.5) + 1e-9


def test_repr_says_the_state() -> None:
    b = breaker(jitter=0, max_failures=1)
    assert repr(b) == "<ConsecutiveFailures closed, 0 failures in a row>"
    fail(b, 1, now=0.0)
    b.dispatch(1.0)
    assert repr(b) == "<ConsecutiveFailures ejected until 1.000 (ejection 1), probe out>"

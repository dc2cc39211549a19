"""Route policy annotations, durations, the retry budget and the retry decision."""

from __future__ import annotations

import pytest

from isthmus.core.proxy.accrual import AccrualConfig
from isthmus.core.proxy.retry import (
    DEFAULT_POLICY,
    MAX_RETRY_BODY,
    RetryBudget,
    RoutePolicy,
    decide_retry,
    parse_duration,
    parse_policy,
    parse_status_list,
)

FIVE_XX = frozenset(range(500, 600))

# --- durations ----------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("2s", 2.0), ("1m30s", 90.0), ("1h", 3600.0), ("1.5s", 1.5),
    (".5s", 0.5), ("1.s", 1.0), ("300us", 0.0003), ("300µs", 0.0003), ("300μs", 0.0003),
    ("10ns", 1e-8), ("1h2m3s4ms", 3723.004), ("0", 0.0), ("0s", 0.0), ("-2s", -2.0),
    ("+2s", 2.0),
])
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "1d", "s", ".s", "1 s", "1s ", "s1", "1m30", "--1s",
                                  "1e3s", "\u0661s", "-"])
def test_not_durations(text: str) -> None:
    assert parse_duration(text) is None


# --- statuses -----------------------------------------------------------------


@pytest.mark.parametrize(("text", "statuses"), [
    ("5xx", FIVE_XX),
    ("5XX", FIVE_XX),
    ("gateway-error", {502, 503, 504}),
    ("503", {503}),
    ("500-504", {500, 501, 502, 503, 504}),
    ("429, 5xx", FIVE_XX | {429}),
    (" 502 - 503 ,408", {408, 502, 503}),
    ("100-100,599", {100, 599}),
])
def test_status_lists(text: str, statuses: set[int]) -> None:
    assert parse_status_list(text) == (frozenset(statuses), [])


def test_status_list_keeps_the_good_elements_of_a_bad_list() -> None:
    statuses, problems = parse_status_list("503,abc,600,504-500,5a-504,99-200,,")
    assert statuses == {503}
    assert problems == [
        '"abc" is not a status code, a range like "500-504", "5xx" or "gateway-error"',
        '"600": status codes are between 100 and 599',
        '"504-500": the range ends before it starts',
        '"5a-504" is not a status range like "500-504"',
        '"99-200": status codes are between 100 and 599',
        '"503,abc,600,504-500,5a-504,99-200,," has an empty element',
        '"503,abc,600,504-500,5a-504,99-200,," has an empty element',
    ]


# --- annotations --------------------------------------------------------------


def test_no_annotations_is_the_default_policy() -> None:
    assert parse_policy({}) == (DEFAULT_POLICY, [])
    expected = RoutePolicy(timeout=None, retry_statuses=frozenset(), retry_limit=0,
                           failure_accrual=None)
    assert expected == DEFAULT_POLICY
    assert not DEFAULT_POLICY.retries


def test_unrelated_annotations_are_ignored() -> None:
    assert parse_policy({"kubectl.kubernetes.io/last-applied-configuration": "{}",
                         "mirror.isthmus.io/remote-svc-fq-name": "x"}) == (DEFAULT_POLICY, [])


@pytest.mark.parametrize(("value", "timeout"), [
    ("500ms", 0.5), ("2s", 2.0), ("1m30s", 90.0), (" 3s ", 3.0), ("0s", None), ("0", None),
])
def test_request_timeout(value: str, timeout: float | None) -> None:
    policy, problems = parse_policy({"timeout.isthmus.io/request": value})
    assert problems == []
    assert policy.timeout == timeout


@pytest.mark.parametrize(("value", "problem"), [
    ("soon", 'timeout.isthmus.io/request: "soon" is not a duration (like "500ms", "2s" or '
             '"1m30s"); no request timeout'),
    ("30", 'timeout.isthmus.io/request: "30" is not a duration (like "500ms", "2s" or '
           '"1m30s"); no request timeout'),
    ("-1s", 'timeout.isthmus.io/request: "-1s" is negative; no request timeout'),
])
def test_bad_request_timeout(value: str, problem: str) -> None:
    policy, problems = parse_policy({"timeout.isthmus.io/request": value})
    assert policy.timeout is None
    assert problems == [problem]


def test_retry_statuses_turn_retries_on_with_a_limit_of_one() -> None:
    policy, problems = parse_policy({"retry.isthmus.io/http": "gateway-error"})
    assert problems == []
    assert policy.retry_statuses == {502, 503, 504}
    assert policy.retry_limit == 1 and policy.retries


def test_retry_limit() -> None:
    policy, problems = parse_policy({"retry.isthmus.io/http": "5xx",
                                     "retry.isthmus.io/limit": "3"})
    assert problems == []
    assert (policy.retry_statuses, policy.retry_limit) == (FIVE_XX, 3)


def test_retry_limit_zero_turns_retries_off() -> None:
    policy, _ = parse_policy({"retry.isthmus.io/http": "5xx", "retry.isthmus.io/limit": "0"})
    assert not policy.retries


def test_retry_limit_alone_retries_only_failures_before_a_response() -> None:
    policy, problems = parse_policy({"retry.isthmus.io/limit": "2"})
    assert problems == []
    assert (policy.retry_statuses, policy.retry_limit) == (frozenset(), 2)


@pytest.mark.parametrize("value", ["-1", "two", "1.5", "", "²"])
def test_bad_retry_limit(value: str) -> None:
    policy, problems = parse_policy({"retry.isthmus.io/http": "503",
                                     "retry.isthmus.io/limit": value})
    assert policy.retry_limit == 1
    assert problems == [f'retry.isthmus.io/limit: "{value}" is not a non-negative integer; '
                        "1 retry per request"]


def test_bad_retry_statuses_are_reported_per_element() -> None:
    policy, problems = parse_policy({"retry.isthmus.io/http": "5xx,teapot"})
    assert policy.retry_statuses == FIVE_XX
    assert problems == ['retry.isthmus.io/http: "teapot" is not a status code, a range like '
                        '"500-504", "5xx" or "gateway-error"; that element is ignored']


def test_failure_accrual_defaults() -> None:
    policy, problems = parse_policy({"balancer.isthmus.io/failure-accrual": "consecutive"})
    assert problems == []
    assert policy.failure_accrual == AccrualConfig()


def test_failure_accrual_settings() -> None:
    prefix = "balancer.isthmus.io/failure-accrual-consecutive-"
    policy, problems = parse_policy({
        "balancer.isthmus.io/failure-accrual": "consecutive",
        prefix + "max-failures": "3",
        prefix + "min-penalty": "500ms",
        prefix + "max-penalty": "2m",
        prefix + "jitter-ratio": "0.25",
    })
    assert problems == []
    assert policy.failure_accrual == AccrualConfig(max_failures=3, min_penalty=0.5,
                                                   max_penalty=120.0, jitter=0.25)


@pytest.mark.parametrize(("setting", "value", "problem"), [
    ("max-failures", "0", '"0" is not a positive integer; 7 failures'),
    ("max-failures", "many", '"many" is not a positive integer; 7 failures'),
    ("min-penalty", "1", '"1" is not a positive duration (like "500ms", "2s" or "1m30s"); 1s'),
    ("min-penalty", "0s", '"0s" is not a positive duration (like "500ms", "2s" or "1m30s"); 1s'),
    ("max-penalty", "-1m", '"-1m" is not a positive duration (like "500ms", "2s" or "1m30s"); '
                           "60s"),
    ("jitter-ratio", "-0.5", '"-0.5" is not a non-negative number; 0.5'),
    ("jitter-ratio", "nan", '"nan" is not a non-negative number; 0.5'),
    ("jitter-ratio", "half", '"half" is not a non-negative number; 0.5'),
])
def test_bad_failure_accrual_settings_fall_back_to_their_default(setting: str, value: str,
                                                                  problem: str) -> None:
    key = f"balancer.isthmus.io/failure-accrual-consecutive-{setting}"
    policy, problems = parse_policy({"balancer.isthmus.io/failure-accrual": "consecutive",
                                     key: value})
    assert policy.failure_accrual == AccrualConfig()
    assert problems == [f"{key}: {problem}"]


def test_min_penalty_longer_than_max_penalty_falls_back_to_both_defaults() -> None:
    prefix = "balancer.isthmus.io/failure-accrual-consecutive-"
    policy, problems = parse_policy({"balancer.isthmus.io/failure-accrual": "consecutive",
                                     prefix + "min-penalty": "2m",
                                     prefix + "max-failures": "2"})
    assert policy.failure_accrual == AccrualConfig(max_failures=2)
    assert problems == [f"{prefix}min-penalty (120s) is longer than {prefix}max-penalty (60s); "
                        "penalties 1s to 60s"]


def test_unknown_failure_accrual_policy() -> None:
    policy, problems = parse_policy({"balancer.isthmus.io/failure-accrual": "random"})
    assert policy.failure_accrual is None
    assert problems == ['balancer.isthmus.io/failure-accrual: "random" is not a failure '
                        'accrual policy (the only one is "consecutive"); no failure accrual']


def test_accrual_settings_without_the_policy_are_reported() -> None:
    key = "balancer.isthmus.io/failure-accrual-consecutive-max-failures"
    policy, problems = parse_policy({key: "3"})
    assert policy.failure_accrual is None
    assert problems == [f"{key}: has no effect without balancer.isthmus.io/failure-accrual: "
                        "consecutive"]


def test_misspelt_annotations_are_reported() -> None:
    policy, problems = parse_policy({"retry.isthmus.io/limt": "3",
                                     "timeout.isthmus.io/response": "1s"})
    assert policy == DEFAULT_POLICY
    assert problems == ["retry.isthmus.io/limt: not an annotation isthmus knows; ignored",
                        "timeout.isthmus.io/response: not an annotation isthmus knows; ignored"]


# --- budget -------------------------------------------------------------------


def test_without_deposits_or_reserve_nothing_may_be_retried() -> None:
    budget = RetryBudget(min_per_second=0)
    assert not budget.withdraw(0.0)


def test_retries_are_a_fifth_of_requests() -> None:
    budget = RetryBudget(min_per_second=0)
    for _ in range(10):
        budget.deposit(0.0)
    assert [budget.withdraw(0.1) for _ in range(3)] == [True, True, False]


def test_deposits_refill_an_exhausted_budget() -> None:
    budget = RetryBudget(min_per_second=0)
    for _ in range(5):
        budget.deposit(1.0)
    assert budget.withdraw(1.0)
    assert not budget.withdraw(1.5)
    for _ in range(5):
        budget.deposit(2.0)
    assert budget.withdraw(2.0)
    assert not budget.withdraw(2.0)


def test_deposits_expire_after_the_ttl() -> None:
    budget = RetryBudget(min_per_second=0)
    for _ in range(10):
        budget.deposit(0.0)
    assert budget.balance(9.5) == pytest.approx(2.0)
    assert budget.balance(10.5) == 0.0
    assert not budget.withdraw(10.5)


def test_withdrawals_expire_too() -> None:
    budget = RetryBudget(min_per_second=0)
    for _ in range(5):
        budget.deposit(0.0)
    for _ in range(5):
        budget.deposit(5.0)
    assert budget.withdraw(5.0)
    assert budget.withdraw(5.0)
    assert not budget.withdraw(5.0)
    # At 10.5 the deposits of t=0 are gone and so is nothing else: 5 deposits - 2 withdrawals.
    assert budget.balance(10.5) == pytest.approx(-1.0)
    # At 15.5 everything of t=5 is gone as well.
    assert budget.balance(15.5) == 0.0


def test_the_reserve_allows_min_per_second_retries_over_the_ttl() -> None:
    budget = RetryBudget()  # 10 retries a second, over 10 seconds
    allowed = sum(budget.withdraw(0.0) for _ in range(150))
    assert allowed == 100
    assert not budget.withdraw(9.9)
    assert budget.withdraw(10.0)  # the first withdrawals have expired


def test_a_clock_going_backwards_does_not_rotate() -> None:
    budget = RetryBudget(min_per_second=0)
    for _ in range(5):
        budget.deposit(3.0)
    budget.deposit(1.0)
    assert budget.balance(3.0) == pytest.approx(1.2)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"ttl": 0}, "ttl must be a positive number of seconds, not 0"),
    ({"min_per_second": -1}, "min_per_second must be non-negative, not -1"),
    ({"ratio": 2000}, "ratio must be between 0 and 1000, not 2000"),
])
def test_budget_rejects_nonsense(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError) as e:
        RetryBudget(**kwargs)
    assert str(e.value) == message


def test_ratio_zero_retries_only_from_the_reserve() -> None:
    budget = RetryBudget(min_per_second=0.1, ratio=0)  # one retry per 10 s window
    for _ in range(100):
        budget.deposit(0.0)
    assert [budget.withdraw(0.0) for _ in range(2)] == [True, False]


# --- decision -----------------------------------------------------------------

RETRY_5XX = RoutePolicy(retry_statuses=FIVE_XX, retry_limit=2)


def rich_budget() -> RetryBudget:
    budget = RetryBudget(min_per_second=0)
    for _ in range(100):
        budget.deposit(0.0)
    return budget


def test_a_retryable_status_is_retried() -> None:
    budget = rich_budget()
    assert decide_retry(RETRY_5XX, 503, 1, 0, budget, 0.0)
    assert budget.balance(0.0) == pytest.approx(19.0)


def test_other_statuses_are_not_retried_and_cost_nothing() -> None:
    budget = rich_budget()
    assert not decide_retry(RETRY_5XX, 404, 1, 0, budget, 0.0)
    assert not decide_retry(RETRY_5XX, 200, 1, 0, budget, 0.0)
    assert budget.balance(0.0) == pytest.approx(20.0)


def test_failure_before_a_response_is_retried_when_retries_are_on() -> None:
    assert decide_retry(RETRY_5XX, None, 1, 0, rich_budget(), 0.0)
    assert decide_retry(RoutePolicy(retry_limit=1), None, 1, 0, rich_budget(), 0.0)
    assert not decide_retry(DEFAULT_POLICY, None, 1, 0, rich_budget(), 0.0)


def test_attempts_beyond_the_limit_are_not_retried() -> None:
    budget = rich_budget()
    assert decide_retry(RETRY_5XX, 503, 2, 0, budget, 0.0)
    assert not decide_retry(RETRY_5XX, 503, 3, 0, budget, 0.0)


def test_bodies_must_be_buffered_and_at_most_64_kib() -> None:
    assert MAX_RETRY_BODY == 65536
    assert decide_retry(RETRY_5XX, 503, 1, MAX_RETRY_BODY, rich_budget(), 0.0)
    assert not decide_retry(RETRY_5XX, 503, 1, MAX_RETRY_BODY + 1, rich_budget(), 0.0)
    assert not decide_retry(RETRY_5XX, 503, 1, None, rich_budget(), 0.0)


def test_an_exhausted_budget_stops_retries() -> None:
    budget = RetryBudget(min_per_second=0)
    for _ in range(5):
        budget.deposit(0.0)
    assert decide_retry(RETRY_5XX, 503, 1, 0, budget, 0.0)
    assert not decide_retry(RETRY_5XX, 503, 1, 0, budget, 0.0)

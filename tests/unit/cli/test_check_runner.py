"""Running checks: order, retries within the wait (on a fake clock), fatal stops, raised problems."""

from __future__ import annotations

from isthmus.components.checks.cluster import ClusterError
from isthmus.components.checks.probes import ProbeError
from isthmus.components.checks.runner import Problem, run
from isthmus.core.checks import Category, Check, CheckResult, Outcome, Status, fail, ok


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def settles_after(failures: int) -> tuple[Check[None], list[int]]:
    calls = [0]

    def check(env: None) -> Outcome:
        calls[0] += 1
        return fail(f"attempt {calls[0]} not yet") if calls[0] <= failures else ok()
    return Check("pods are ready", check, "wait", retry=True), calls


def results(categories: list[Category[None]], wait: float, clock: FakeClock,
            retries: list[str] | None = None) -> list[CheckResult]:
    return list(run(categories, None, wait=wait, clock=clock, sleep=clock.sleep,
                    on_retry=lambda check, outcome: retries.append(outcome.cause) if retries is not None else None))


def test_a_retried_check_succeeds_once_its_state_settles_within_the_wait() -> None:
    clock, retries = FakeClock(), []
    check, calls = settles_after(3)
    out = results([Category("c", (check,))], 300, clock, retries)
    assert [r.status for r in out] == [Status.SUCCESS]
    assert calls[0] == 4
    assert retries == ["attempt 1 not yet", "attempt 2 not yet", "attempt 3 not yet"]
    assert clock.sleeps == [1.0, 1.0, 1.0]


def test_a_retried_check_reports_its_last_failure_when_the_wait_runs_out() -> None:
    clock = FakeClock()
    check, calls = settles_after(1000)
    out = results([Category("c", (check,))], 5, clock)
    assert out == [CheckResult("c", "pods are ready", Status.ERROR, "attempt 6 not yet", "wait")]
    assert calls[0] == 6 and clock.now == 5


def test_no_wait_means_one_attempt_and_checks_without_retry_are_never_repeated() -> None:
    clock = FakeClock()
    check, calls = settles_after(1)
    assert results([Category("c", (check,))], 0, clock)[0].status is Status.ERROR
    assert calls[0] == 1
    plain_calls = [0]

    def plain(env: None) -> Outcome:
        plain_calls[0] += 1
        return fail("no")
    assert results([Category("c", (Check("x", plain, "h"),))], 300, clock)[0].cause == "no"
    assert plain_calls[0] == 1


def test_a_fatal_error_ends_the_run_but_a_fatal_success_or_plain_error_does_not() -> None:
    clock = FakeClock()
    categories = [
        Category("first", (Check("fine", lambda e: ok(), "h", fatal=True),
                           Check("broken", lambda e: fail("bad"), "h"),
                           Check("stops", lambda e: fail("worse"), "h", fatal=True))),
        Category("second", (Check("never", lambda e: ok(), "h"),)),
    ]
    out = results(categories, 0, clock)
    assert [(r.category, r.description, r.status) for r in out] == [
        ("first", "fine", Status.SUCCESS), ("first", "broken", Status.ERROR), ("first", "stops", Status.ERROR)]


def test_raised_problems_become_errors_with_their_cause_and_hint() -> None:
    def problem(env: None) -> Outcome:
        raise Problem("the Secret does not exist", "apply it")

    def unreachable(env: None) -> Outcome:
        raise ClusterError("cannot reach the API")

    def probe(env: None) -> Outcome:
        raise ProbeError("connection refused")

    out = results([Category("c", (Check("a", problem, "h"), Check("b", unreachable, "h"),
                                  Check("c", probe, "h")))], 0, FakeClock())
    assert [(r.status, r.cause, r.hint) for r in out] == [
        (Status.ERROR, "the Secret does not exist", "apply it"),
        (Status.ERROR, "cannot reach the API", "h"),
        (Status.ERROR, "connection refused", "h")]

"""Running categories of checks: in order, retrying what may settle, stopping after a fatal error.

`run` yields one `CheckResult` per check as soon as it is decided, so the
CLI prints as it goes. A check flagged `retry` that fails is tried again
every `interval` seconds while the run's deadline (`wait` seconds after the
start) allows, and `on_retry` hears of each failed attempt (the CLI shows
it on a terminal); what it yields is its last outcome. A `fatal` check that
fails ends the run: what follows depends on it. A check reports a problem
by returning `fail(...)` or by raising `Problem`, `ClusterError` or
`ProbeError`, whose messages become the cause (and the first two's hints,
when they have one, the hint). The clock and sleep are
passed in, so tests run a five-minute wait in no time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from isthmus.components.checks.cluster import ClusterError
from isthmus.components.checks.probes import ProbeError
from isthmus.core.checks import Category, Check, CheckResult, Outcome, Status, fail, result_of

__all__ = ["RETRY_INTERVAL", "Problem", "run"]

RETRY_INTERVAL = 1.0

E = TypeVar("E")


class Problem(Exception):
    """A check's finding raised from deep in a fetch: the message is the cause, `hint` replaces the check's."""

    def __init__(self, cause: str, hint: str = "") -> None:
        super().__init__(cause)
        self.hint = hint


def attempt(check: Check[E], env: E) -> Outcome:
    """One run of `check`, its raised problems turned into errors."""
    try:
        return check.run(env)
    except (Problem, ClusterError) as e:
        return fail(str(e), e.hint)
    except ProbeError as e:
        return fail(str(e))


def run(categories: Sequence[Category[E]], env: E, *, wait: float, clock: Callable[[], float],
        sleep: Callable[[float], None], interval: float = RETRY_INTERVAL,
        on_retry: Callable[[Check[E], Outcome], None] | None = None) -> Iterator[CheckResult]:
    deadline = clock() + wait
    for category in categories:
        for check in category.checks:
            outcome = attempt(check, env)
            while outcome.status is Status.ERROR and check.retry and clock() + interval <= deadline:
                if on_retry is not None:
                    on_retry(check, outcome)
                sleep(interval)
                outcome = attempt(check, env)
            result = result_of(category.name, check, outcome)
            yield result
            if result.status is Status.ERROR and check.fatal:
                return

"""Route policy from Service annotations, the retry budget and the retry decision.

`parse_policy` reads a Service's annotations once per change and returns the
`RoutePolicy` the proxy applies to every request to that Service, with a list
of readable problems. A bad value never raises: it is reported, and that one
setting keeps its default.

| annotation | value |
| --- | --- |
| `timeout.isthmus.io/request` | duration ("500ms", "2s", "1m30s"); "0s" means no timeout |
| `retry.isthmus.io/http` | comma list of "5xx", "gateway-error" (502-504), "503", "500-504" |
| `retry.isthmus.io/limit` | retries per request, a non-negative integer (default 1) |
| `balancer.isthmus.io/failure-accrual` | "consecutive" |
| `balancer.isthmus.io/failure-accrual-consecutive-max-failures` | positive integer (7) |
| `balancer.isthmus.io/failure-accrual-consecutive-min-penalty` | duration (1s) |
| `balancer.isthmus.io/failure-accrual-consecutive-max-penalty` | duration (1m) |
| `balancer.isthmus.io/failure-accrual-consecutive-jitter-ratio` | non-negative number (0.5) |

Retries are on when `retry.isthmus.io/http` or `retry.isthmus.io/limit` is
present. A request that failed before any response (connection refused or
reset) is then retryable whatever the status list says; a response is
retryable when its status is in the list.

`RetryBudget` is linkerd2-proxy's (after Finagle): every original request
deposits, every retry withdraws; retries may be at most `ratio` of the
requests of the last `ttl` seconds plus a floor of `min_per_second`.

Promises: pure (no clock reads, `now` is passed in); `decide_retry` is a few
comparisons and one budget withdrawal, and withdraws only when everything
else allows the retry.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from isthmus.core.proxy.accrual import AccrualConfig

__all__ = [
    "ANNOTATION_ACCRUAL",
    "ANNOTATION_ACCRUAL_JITTER",
    "ANNOTATION_ACCRUAL_MAX_FAILURES",
    "ANNOTATION_ACCRUAL_MAX_PENALTY",
    "ANNOTATION_ACCRUAL_MIN_PENALTY",
    "ANNOTATION_RETRY_HTTP",
    "ANNOTATION_RETRY_LIMIT",
    "ANNOTATION_TIMEOUT",
    "DEFAULT_POLICY",
    "MAX_RETRY_BODY",
    "RetryBudget",
    "RoutePolicy",
    "decide_retry",
    "parse_duration",
    "parse_policy",
    "parse_status_list",
]

MAX_RETRY_BODY = 64 * 1024

ANNOTATION_TIMEOUT = "timeout.isthmus.io/request"
ANNOTATION_RETRY_HTTP = "retry.isthmus.io/http"
ANNOTATION_RETRY_LIMIT = "retry.isthmus.io/limit"
ANNOTATION_ACCRUAL = "balancer.isthmus.io/failure-accrual"
_ACCRUAL_PREFIX = "balancer.isthmus.io/failure-accrual-consecutive-"
ANNOTATION_ACCRUAL_MAX_FAILURES = _ACCRUAL_PREFIX + "max-failures"
ANNOTATION_ACCRUAL_MIN_PENALTY = _ACCRUAL_PREFIX + "min-penalty"
ANNOTATION_ACCRUAL_MAX_PENALTY = _ACCRUAL_PREFIX + "max-penalty"
ANNOTATION_ACCRUAL_JITTER = _ACCRUAL_PREFIX + "jitter-ratio"

_KNOWN = frozenset({
    ANNOTATION_TIMEOUT, ANNOTATION_RETRY_HTTP, ANNOTATION_RETRY_LIMIT, ANNOTATION_ACCRUAL,
    ANNOTATION_ACCRUAL_MAX_FAILURES, ANNOTATION_ACCRUAL_MIN_PENALTY,
    ANNOTATION_ACCRUAL_MAX_PENALTY, ANNOTATION_ACCRUAL_JITTER,
})
_PREFIXES = ("timeout.isthmus.io/", "retry.isthmus.io/", "balancer.isthmus.io/")


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """What the proxy applies to every request to one Service."""

    timeout: float | None = None  # seconds for the whole request and response
    retry_statuses: frozenset[int] = frozenset()
    retry_limit: int = 0  # retries per original request
    failure_accrual: AccrualConfig | None = None

    @property
    def retries(self) -> bool:
        return self.retry_limit > 0


DEFAULT_POLICY = RoutePolicy()

# --- durations ----------------------------------------------------------------

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
          "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float | None:
    """Seconds of a Go/Kubernetes duration ("500ms", "1m30s", "-2s", "0"), else None."""
    s = text
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        return None
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION.match(s, pos)
        if m is None or m.group(1) in ("", "."):
            return None
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


# --- statuses -----------------------------------------------------------------

def parse_status_list(text: str) -> tuple[frozenset[int], list[str]]:
    """Statuses named by a `retry.isthmus.io/http` value, and what was wrong with it."""
    statuses: set[int] = set()
    problems: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        lower = item.lower()
        if lower == "5xx":
            statuses.update(range(500, 600))
        elif lower == "gateway-error":
            statuses.update((502, 503, 504))
        elif not item:
            problems.append(f'"{text}" has an empty element')
        elif "-" in item:
            first, _, last = item.partition("-")
            first, last = first.strip(), last.strip()
            if not (first.isdigit() and last.isdigit()):
                problems.append(f'"{item}" is not a status range like "500-504"')
            elif not (100 <= int(first) <= 599 and 100 <= int(last) <= 599):
                problems.append(f'"{item}": status codes are between 100 and 599')
            elif int(first) > int(last):
                problems.append(f'"{item}": the range ends before it starts')
            else:
                statuses.update(range(int(first), int(last) + 1))
        elif item.isdigit():
            if 100 <= int(item) <= 599:
                statuses.add(int(item))
            else:
                problems.append(f'"{item}": status codes are between 100 and 599')
        else:
            problems.append(f'"{item}" is not a status code, a range like "500-504", '
                            '"5xx" or "gateway-error"')
    return frozenset(statuses), problems


# --- annotations --------------------------------------------------------------

def parse_policy(annotations: Mapping[str, str]) -> tuple[RoutePolicy, list[str]]:
    """The route policy of a Service's annotations, and readable problems."""
    problems: list[str] = []
    for key in sorted(annotations):
        if key.startswith(_PREFIXES) and key not in _KNOWN:
            problems.append(f"{key}: not an annotation isthmus knows; ignored")

    timeout: float | None = None
    if ANNOTATION_TIMEOUT in annotations:
        value = annotations[ANNOTATION_TIMEOUT]
        seconds = parse_duration(value.strip())
        if seconds is None:
            problems.append(f'{ANNOTATION_TIMEOUT}: "{value}" is not a duration '
                            '(like "500ms", "2s" or "1m30s"); no request timeout')
        elif seconds < 0:
            problems.append(f'{ANNOTATION_TIMEOUT}: "{value}" is negative; no request timeout')
        elif seconds > 0:
            timeout = seconds

    statuses: frozenset[int] = frozenset()
    retry_on = ANNOTATION_RETRY_HTTP in annotations or ANNOTATION_RETRY_LIMIT in annotations
    if ANNOTATION_RETRY_HTTP in annotations:
        value = annotations[ANNOTATION_RETRY_HTTP]
        statuses, bad = parse_status_list(value)
        problems.extend(f"{ANNOTATION_RETRY_HTTP}: {why}; that element is ignored"
                        for why in bad)

    limit = 1 if retry_on else 0
    if ANNOTATION_RETRY_LIMIT in annotations:
        value = annotations[ANNOTATION_RETRY_LIMIT]
        text = value.strip()
        if text.isdigit() and text.isascii():
            limit = int(text)
        else:
            problems.append(f'{ANNOTATION_RETRY_LIMIT}: "{value}" is not a non-negative '
                            "integer; 1 retry per request")

    accrual = _parse_accrual(annotations, problems)
    return RoutePolicy(timeout=timeout, retry_statuses=statuses, retry_limit=limit,
                       failure_accrual=accrual), problems


def _parse_accrual(annotations: Mapping[str, str], problems: list[str]) -> AccrualConfig | None:
    settings = [k for k in (ANNOTATION_ACCRUAL_MAX_FAILURES, ANNOTATION_ACCRUAL_MIN_PENALTY,
                            ANNOTATION_ACCRUAL_MAX_PENALTY, ANNOTATION_ACCRUAL_JITTER)
                if k in annotations]
    kind = annotations.get(ANNOTATION_ACCRUAL)
    if kind is None:
        for key in settings:
            problems.append(f"{key}: has no effect without {ANNOTATION_ACCRUAL}: consecutive")
        return None
    if kind.strip() != "consecutive":
        problems.append(f'{ANNOTATION_ACCRUAL}: "{kind}" is not a failure accrual policy '
                        '(the only one is "consecutive"); no failure accrual')
        return None

    defaults = AccrualConfig()
    max_failures = defaults.max_failures
    if ANNOTATION_ACCRUAL_MAX_FAILURES in annotations:
        value = annotations[ANNOTATION_ACCRUAL_MAX_FAILURES]
        text = value.strip()
        if text.isdigit() and text.isascii() and int(text) >= 1:
            max_failures = int(text)
        else:
            problems.append(f'{ANNOTATION_ACCRUAL_MAX_FAILURES}: "{value}" is not a positive '
                            f"integer; {defaults.max_failures} failures")

    penalties = []
    for key, default in ((ANNOTATION_ACCRUAL_MIN_PENALTY, defaults.min_penalty),
                         (ANNOTATION_ACCRUAL_MAX_PENALTY, defaults.max_penalty)):
        seconds = default
        if key in annotations:
            value = annotations[key]
            parsed = parse_duration(value.strip())
            if parsed is None or parsed <= 0:
                problems.append(f'{key}: "{value}" is not a positive duration '
                                f'(like "500ms", "2s" or "1m30s"); {_fmt_seconds(default)}')
            else:
                seconds = parsed
        penalties.append(seconds)
    min_penalty, max_penalty = penalties
    if min_penalty > max_penalty:
        problems.append(f"{ANNOTATION_ACCRUAL_MIN_PENALTY} ({_fmt_seconds(min_penalty)}) is "
                        f"longer than {ANNOTATION_ACCRUAL_MAX_PENALTY} "
                        f"({_fmt_seconds(max_penalty)}); penalties "
                        f"{_fmt_seconds(defaults.min_penalty)} to "
                        f"{_fmt_seconds(defaults.max_penalty)}")
        min_penalty, max_penalty = defaults.min_penalty, defaults.max_penalty

    jitter = defaults.jitter
    if ANNOTATION_ACCRUAL_JITTER in annotations:
        value = annotations[ANNOTATION_ACCRUAL_JITTER]
        try:
            parsed_jitter = float(value.strip())
        except ValueError:
            parsed_jitter = -1.0
        if math.isfinite(parsed_jitter) and parsed_jitter >= 0:
            jitter = parsed_jitter
        else:
            problems.append(f'{ANNOTATION_ACCRUAL_JITTER}: "{value}" is not a non-negative '
                            f"number; {defaults.jitter}")

    return AccrualConfig(max_failures=max_failures, min_penalty=min_penalty,
                         max_penalty=max_penalty, jitter=jitter)


# --- budget -------------------------------------------------------------------

_SLOTS = 10
_SCALE = 1000


class RetryBudget:
    """Retries allowed: `ratio` of recent requests plus `min_per_second`, over `ttl` seconds.

    Deposits and withdrawals are kept in ten slots of ``ttl / 10`` seconds and
    forgotten when their slot falls out of the window.
    """

    __slots__ = ("_deposit", "_gen", "_reserve", "_slots", "_width", "_withdraw",
                 "min_per_second", "ratio", "ttl")

    def __init__(self, ttl: float = 10.0, min_per_second: float = 10.0,
                 ratio: float = 0.2) -> None:
        if not (math.isfinite(ttl) and ttl > 0):
            raise ValueError(f"ttl must be a positive number of seconds, not {ttl}")
        if not (math.isfinite(min_per_second) and min_per_second >= 0):
            raise ValueError(f"min_per_second must be non-negative, not {min_per_second}")
        if not (math.isfinite(ratio) and 0 <= ratio <= 1000):
            raise ValueError(f"ratio must be between 0 and 1000, not {ratio}")
        self.ttl = ttl
        self.min_per_second = min_per_second
        self.ratio = ratio
        if ratio == 0:
            self._deposit, self._withdraw = 0, _SCALE  # retries only from the reserve
        else:
            self._deposit, self._withdraw = _SCALE, max(1, round(_SCALE / ratio))
        self._reserve = int(min_per_second * ttl * self._withdraw)
        self._width = ttl / _SLOTS
        self._slots = [0] * _SLOTS
        self._gen: int | None = None

    def __repr__(self) -> str:
        return (f"<RetryBudget ttl={self.ttl:g}s min={self.min_per_second:g}/s "
                f"ratio={self.ratio:g} balance={self.balance():g}>")

    def _rotate(self, now: float) -> int:
        gen = int(now // self._width)
        last = self._gen
        if last is None:
            self._gen = gen
        elif gen > last:
            slots = self._slots
            if gen - last >= _SLOTS:
                for i in range(_SLOTS):
                    slots[i] = 0
            else:
                for g in range(last + 1, gen + 1):
                    slots[g % _SLOTS] = 0
            self._gen = gen
        else:
            gen = last  # the clock did not move forward
        return gen % _SLOTS

    def deposit(self, now: float) -> None:
        """An original request was sent."""
        self._slots[self._rotate(now)] += self._deposit

    def withdraw(self, now: float) -> bool:
        """Whether one retry may be sent now; if so it is counted."""
        i = self._rotate(now)
        if sum(self._slots) + self._reserve < self._withdraw:
            return False
        self._slots[i] -= self._withdraw
        return True

    def balance(self, now: float | None = None) -> float:
        """Retries that could be withdrawn now (fractional)."""
        if now is not None:
            self._rotate(now)
        return (sum(self._slots) + self._reserve) / self._withdraw


def decide_retry(policy: RoutePolicy, status: int | None, attempt: int, body_len: int | None,
                 budget: RetryBudget, now: float) -> bool:
    """Whether to send the request again.

    `status` is the response status, None when the request failed before any
    response. `attempt` is the attempt that just ended, 1 for the original
    request. `body_len` is the buffered request body's length, None when the
    body was streamed (never retried).
    """
    if attempt > policy.retry_limit:
        return False
    if status is not None and status not in policy.retry_statuses:
        return False
    if body_len is None or body_len > MAX_RETRY_BODY:
        return False
    return budget.withdraw(now)

"""Failure accrual for one endpoint: the consecutive-failures policy.

An endpoint that answers `max_failures` requests in a row with a failure is
ejected from its balancer for a penalty. Penalties back off exponentially from
`min_penalty` to `max_penalty` seconds, each lengthened by a random fraction
(at most `jitter`) of itself but never past `max_penalty`. When a penalty ends
the endpoint is half-open: exactly one request (the probe) may go to it. A
successful probe closes the breaker and forgets the past ejections; a failed
probe ejects the endpoint again for the next, longer penalty.

Promises:

* pure: the caller passes `now` (seconds, any monotonic clock) and a
  `random.Random`; nothing here reads a clock;
* results reported while the endpoint is ejected and no probe is out (answers
  to requests sent before the ejection) are ignored;
* the probe slot is freed by `record` or by `cancel` (the probe request ended
  without a verdict, for example the client went away), so an endpoint is never
  stuck half-open with nobody probing.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["AccrualConfig", "ConsecutiveFailures"]

_CLOSED = 0
_OPEN = 1


@dataclass(frozen=True, slots=True)
class AccrualConfig:
    """Settings of the consecutive-failures policy; defaults are linkerd2-proxy's."""

    max_failures: int = 7
    min_penalty: float = 1.0
    max_penalty: float = 60.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_failures < 1:
            raise ValueError(f"max_failures must be at least 1, not {self.max_failures}")
        if not (math.isfinite(self.min_penalty) and self.min_penalty > 0):
            raise ValueError(f"min_penalty must be a positive number of seconds, "
                             f"not {self.min_penalty}")
        if not (math.isfinite(self.max_penalty) and self.max_penalty >= self.min_penalty):
            raise ValueError(f"max_penalty ({self.max_penalty}) must be at least "
                             f"min_penalty ({self.min_penalty})")
        if not (math.isfinite(self.jitter) and self.jitter >= 0):
            raise ValueError(f"jitter must be a non-negative ratio, not {self.jitter}")


class ConsecutiveFailures:
    """The breaker of one endpoint. States: closed, ejected (penalty running), half-open."""

    __slots__ = ("_rng", "config", "ejections", "failures", "probing", "state", "until")

    def __init__(self, config: AccrualConfig, rng: random.Random) -> None:
        self.config = config
        self._rng = rng
        self.state = _CLOSED
        self.failures = 0  # consecutive failures while closed
        self.ejections = 0  # ejections since the breaker last closed
        self.until = 0.0  # end of the current penalty
        self.probing = False  # the half-open probe is out

    def __repr__(self) -> str:
        if self.state == _CLOSED:
            return f"<ConsecutiveFailures closed, {self.failures} failures in a row>"
        probe = ", probe out" if self.probing else ""
        return (f"<ConsecutiveFailures ejected until {self.until:.3f} "
                f"(ejection {self.ejections}){probe}>")

    @property
    def closed(self) -> bool:
        return self.state == _CLOSED

    def status(self, now: float) -> str:
        """"closed", "ejected" (penalty running) or "half-open" (penalty over)."""
        if self.state == _CLOSED:
            return "closed"
        return "ejected" if now < self.until else "half-open"

    def available(self, now: float) -> bool:
        """Whether a request may be sent to the endpoint now."""
        if self.state == _CLOSED:
            return True
        return now >= self.until and not self.probing

    def dispatch(self, now: float) -> None:
        """A request is being sent: when half-open, it is the probe."""
        if self.state != _CLOSED and now >= self.until:
            self.probing = True

    def cancel(self) -> None:
        """The probe ended without a verdict: the next request may probe."""
        self.probing = False

    def record(self, success: bool, now: float) -> None:
        """The outcome of one request to the endpoint."""
        if self.state == _CLOSED:
            if success:
                self.failures = 0
            else:
                self.failures += 1
                if self.failures >= self.config.max_failures:
                    self._eject(now)
            return
        if not self.probing:
            return  # an answer to a request sent before the ejection
        if success:
            self.state = _CLOSED
            self.failures = 0
            self.ejections = 0
            self.probing = False
        else:
            self._eject(now)

    def penalty(self, ejections: int) -> float:
        """The penalty before jitter of ejection number `ejections` + 1."""
        config = self.config
        if ejections >= 63:
            return config.max_penalty
        return min(config.max_penalty, config.min_penalty * (1 << ejections))

    def _eject(self, now: float) -> None:
        config = self.config
        base = self.penalty(self.ejections)
        if config.jitter:
            base += min(config.max_penalty - base, base * config.jitter * self._rng.random())
        self.state = _OPEN
        self.until = now + base
        self.ejections += 1
        self.failures = 0
        self.probing = False

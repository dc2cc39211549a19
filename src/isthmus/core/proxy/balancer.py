"""Peak-EWMA load estimates and power-of-two-choices endpoint selection.

`PeakEwma` keeps one endpoint's latency estimate the way linkerd2-proxy (tower's
`PeakEwma`) does: a response slower than the estimate replaces it at once (the
peak), a faster one pulls it down with weight ``1 - exp(-elapsed / decay)``, and
while no response arrives the estimate decays toward zero, so an idle endpoint
is tried again. Its cost is the estimate times (pending requests + 1).

`Balancer` holds the endpoints of one destination and picks one per request:
two distinct available endpoints at random, the cheaper one wins (ties go to
the first drawn). With failure accrual configured, endpoints ejected by their
breaker are skipped and a half-open endpoint takes exactly one probe.

Promises:

* pure: `now` (seconds on the caller's monotonic clock) and a `random.Random`
  come in; nothing here reads a clock or does I/O;
* `pick` allocates nothing while every breaker is closed: the object it
  returns is the endpoint's own entry, made once by `update`;
* `update` keeps the estimate and breaker of every key that stays, drops the
  keys that went away and starts new keys fresh;
* outcomes go through `Balancer.report` (and `Balancer.cancel` for a request
  that ended without a verdict), which keeps the count of open breakers that
  lets `pick` stay on its fast path.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Mapping
from typing import Generic, TypeVar

from isthmus.core.proxy.accrual import AccrualConfig, ConsecutiveFailures

__all__ = ["DEFAULT_DECAY", "DEFAULT_RTT", "Balancer", "PeakEwma", "Pick"]

DEFAULT_RTT = 0.030
DEFAULT_DECAY = 10.0

K = TypeVar("K", bound=Hashable)
E = TypeVar("E")

_exp = math.exp


class PeakEwma:
    """One endpoint's peak-sensitive latency estimate (seconds) and pending count."""

    __slots__ = ("decay", "pending", "rtt", "updated")

    def __init__(self, now: float, default_rtt: float = DEFAULT_RTT,
                 decay: float = DEFAULT_DECAY) -> None:
        if decay <= 0:
            raise ValueError(f"decay must be a positive number of seconds, not {decay}")
        self.rtt = default_rtt
        self.pending = 0
        self.updated = now
        self.decay = decay

    def __repr__(self) -> str:
        return f"<PeakEwma rtt={self.rtt * 1000:.3f}ms pending={self.pending}>"

    def start(self) -> None:
        """One more request is pending."""
        self.pending += 1

    def finish(self, rtt: float, now: float) -> None:
        """A pending request ended after `rtt` seconds."""
        if self.pending > 0:
            self.pending -= 1
        if rtt > self.rtt:
            self.rtt = rtt
        else:
            elapsed = now - self.updated
            if elapsed > 0:
                decay = _exp(-elapsed / self.decay)
                self.rtt = self.rtt * decay + rtt * (1.0 - decay)
        if now > self.updated:
            self.updated = now

    def cost(self, now: float) -> float:
        """The estimate decayed toward zero up to `now`, times (pending + 1)."""
        elapsed = now - self.updated
        if elapsed > 0:
            self.rtt *= _exp(-elapsed / self.decay)
            self.updated = now
        return self.rtt * (self.pending + 1)


class Pick(Generic[K, E]):
    """One endpoint of a balancer: what `Balancer.pick` returns.

    The caller calls ``pick.ewma.start()`` when it sends the request and
    ``pick.ewma.finish(rtt, now)`` when the response ends, and reports the
    outcome with ``balancer.report(pick.key, success, now)``.
    """

    __slots__ = ("accrual", "endpoint", "ewma", "key")

    def __init__(self, key: K, endpoint: E, ewma: PeakEwma,
                 accrual: ConsecutiveFailures | None) -> None:
        self.key = key
        self.endpoint = endpoint
        self.ewma = ewma
        self.accrual = accrual

    def __repr__(self) -> str:
        return f"<Pick {self.key!r} {self.ewma!r} {self.accrual!r}>"


class Balancer(Generic[K, E]):
    """Power-of-two-choices over peak-EWMA costs, with optional failure accrual."""

    __slots__ = ("_by_key", "_decay", "_default_rtt", "_entries", "_open", "_random", "_rng",
                 "failure_accrual")

    def __init__(self, rng: random.Random, *, failure_accrual: AccrualConfig | None = None,
                 default_rtt: float = DEFAULT_RTT, decay: float = DEFAULT_DECAY) -> None:
        self._rng = rng
        self._random = rng.random
        self.failure_accrual = failure_accrual
        self._default_rtt = default_rtt
        self._decay = decay
        self._by_key: dict[K, Pick[K, E]] = {}
        self._entries: list[Pick[K, E]] = []
        self._open = 0  # breakers that are not closed

    def __repr__(self) -> str:
        return f"<Balancer {len(self._entries)} endpoints, {self._open} ejected or probing>"

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def get(self, key: K) -> Pick[K, E] | None:
        return self._by_key.get(key)

    def update(self, endpoints: Mapping[K, E], now: float) -> None:
        """Replace the endpoint set; state of keys that stay is kept."""
        old = self._by_key
        by_key: dict[K, Pick[K, E]] = {}
        config = self.failure_accrual
        for key, endpoint in endpoints.items():
            entry = old.get(key)
            if entry is None:
                accrual = ConsecutiveFailures(config, self._rng) if config is not None else None
                entry = Pick(key, endpoint,
                             PeakEwma(now, self._default_rtt, self._decay), accrual)
            else:
                entry.endpoint = endpoint
            by_key[key] = entry
        self._by_key = by_key
        self._entries = list(by_key.values())
        self._open = sum(1 for e in self._entries
                         if e.accrual is not None and not e.accrual.closed)

    def available(self, now: float) -> int:
        """How many endpoints a request could be sent to now."""
        if not self._open:
            return len(self._entries)
        return sum(1 for e in self._entries if e.accrual is None or e.accrual.available(now))

    def pick(self, now: float) -> Pick[K, E] | None:
        """The endpoint for the next request, or None when none is available."""
        entries = self._entries
        if self._open:
            entries = [e for e in entries if e.accrual is None or e.accrual.available(now)]
        n = len(entries)
        if n == 0:
            return None
        if n == 1:
            chosen = entries[0]
        else:
            rnd = self._random
            i = int(rnd() * n)
            j = int(rnd() * (n - 1))
            if j >= i:
                j += 1
            a = entries[i]
            b = entries[j]
            chosen = a if a.ewma.cost(now) <= b.ewma.cost(now) else b
        if self._open and chosen.accrual is not None:
            chosen.accrual.dispatch(now)
        return chosen

    def report(self, key: K, success: bool, now: float) -> None:
        """The outcome of a request to `key` (failure: 5xx or no response)."""
        entry = self._by_key.get(key)
        if entry is None or entry.accrual is None:
            return
        accrual = entry.accrual
        was_closed = accrual.closed
        accrual.record(success, now)
        if was_closed != accrual.closed:
            self._open += 1 if was_closed else -1

    def cancel(self, key: K) -> None:
        """A request to `key` ended without a verdict: if it was a probe, free the slot."""
        entry = self._by_key.get(key)
        if entry is not None and entry.accrual is not None:
            entry.accrual.cancel()

"""The identity service's metrics, rendered in the Prometheus text format (version 0.0.4).

A tiny counter and histogram, enough for the service's four series:

- `identity_cert_issued_total` — certificates signed;
- `identity_cert_refused_total{reason}` — refusals, by one of the fixed
  `REFUSAL_REASONS` (every label value is always exported, from 0, so a
  dashboard never sees a series appear out of nowhere);
- `identity_cert_sign_latency_seconds` — histogram of the time from a request's
  arrival to its signed certificate (validation, TokenReview, signing);
- `identity_token_review_total{source}` — tokens checked, by where the answer
  came from: `api` (a TokenReview the cluster API answered) or `cache` (a
  successful review of the same token a few seconds before).

Updates are plain attribute arithmetic on the event loop's thread, so they
cost nanoseconds on the signing path; rendering happens only on scrape.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

RefusalReason = Literal["bad_request", "bad_csr", "unauthenticated", "wrong_identity",
                        "review_unavailable"]
REFUSAL_REASONS: tuple[RefusalReason, ...] = ("bad_request", "bad_csr", "unauthenticated",
                                              "wrong_identity", "review_unavailable")

ReviewSource = Literal["api", "cache"]
REVIEW_SOURCES: tuple[ReviewSource, ...] = ("api", "cache")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _num(v: float) -> str:
    if v == math.inf:
        return "+Inf"
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    text = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + text + "}" if text else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Counter:
    """A monotonically increasing count, optionally split by the values of one label."""

    def __init__(self, name: str, help: str, *, label: str | None = None,
                 values: Iterable[str] = ()) -> None:
        self.name, self.help, self.label = name, help, label
        self._counts: dict[str, float] = {v: 0.0 for v in values} if label else {"": 0.0}

    def inc(self, value: str = "", amount: float = 1.0) -> None:
        if (value != "") != (self.label is not None):
            raise ValueError(f"{self.name}: label value {value!r} does not fit label {self.label!r}")
        self._counts[value] = self._counts.get(value, 0.0) + amount

    def get(self, value: str = "") -> float:
        return self._counts.get(value, 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for value, count in self._counts.items():
            labels = _labels([(self.label, value)] if self.label else [])
            lines.append(f"{self.name}{labels} {_num(count)}")
        return lines


class Histogram:
    """Observations counted into cumulative `le` buckets, with their sum and count."""

    def __init__(self, name: str, help: str, buckets: Iterable[float] = LATENCY_BUCKETS) -> None:
        self.name, self.help = name, help
        self.bounds = (*sorted(buckets), math.inf)
        self._buckets = [0] * len(self.bounds)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self._buckets[i] += 1
                break
        self.sum += value
        self.count += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, n in zip(self.bounds, self._buckets, strict=True):
            running += n
            lines.append(f'{self.name}_bucket{{le="{_num(bound)}"}} {running}')
        lines.append(f"{self.name}_sum {_num(self.sum)}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


class IdentityMetrics:
    """Everything the identity service counts."""

    def __init__(self) -> None:
        self.issued = Counter("identity_cert_issued_total", "Certificates signed.")
        self.refused = Counter("identity_cert_refused_total", "Certificate requests refused, by reason.",
                               label="reason", values=REFUSAL_REASONS)
        self.sign_latency = Histogram(
            "identity_cert_sign_latency_seconds",
            "Seconds from a certificate request's arrival to its signed certificate.")
        self.token_reviews = Counter("identity_token_review_total",
                                     "Tokens checked, by where the answer came from (cluster API or cache).",
                                     label="source", values=REVIEW_SOURCES)

    def render(self) -> str:
        lines = [*self.issued.render(), *self.refused.render(), *self.sign_latency.render(),
                 *self.token_reviews.render()]
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        refused = sum(self.refused.get(r) for r in REFUSAL_REASONS)
        return f"<IdentityMetrics issued={self.issued.get():.0f} refused={refused:.0f}>"

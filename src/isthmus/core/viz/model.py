"""The sample every viz query works on, whatever the metrics came from.

A `Sample` is one raw series: its metric name (histogram buckets as
``<name>_bucket`` with an ``le`` label), its labels — the proxy's own plus the
target labels the collector (or Prometheus' relabelling) adds: ``namespace``,
``pod``, ``deployment``, ``serviceaccount`` — and a value: the counter's
increase over a window, or a gauge's current value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["TARGET_LABELS", "WINDOWS", "Sample", "parse_window"]

# Labels added to every scraped series, in the order viz shows them.
TARGET_LABELS: tuple[str, ...] = ("namespace", "pod", "deployment", "serviceaccount")

# The windows viz answers for, in seconds.
WINDOWS: dict[str, float] = {"10s": 10.0, "1m": 60.0, "10m": 600.0, "1h": 3600.0, "60m": 3600.0}


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float

    def get(self, label: str) -> str:
        return self.labels.get(label, "")


def parse_window(text: str) -> float:
    """``"1m"`` → 60.0; accepts the keys of `WINDOWS` and ``<n>s``/``<n>m``/``<n>h`` up to an hour."""
    if text in WINDOWS:
        return WINDOWS[text]
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    number, unit = text[:-1], text[-1:]
    if unit in units and number.isdigit() and int(number) > 0:
        seconds = int(number) * units[unit]
        if seconds <= 3600:
            return seconds
        raise ValueError(f"time window {text!r} is longer than the hour viz keeps; use at most 1h")
    raise ValueError(f"bad time window {text!r}: use a number with s, m or h, like 10s, 1m or 10m")

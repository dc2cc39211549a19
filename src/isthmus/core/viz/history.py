"""Bounded history of one scrape target's series, and increases over windows.

A `TargetHistory` keeps two rings of rows (a row: the time and every
series' value): the *fine* ring holds the last `fine` scrapes (61 at 10 s:
ten minutes), the *coarse* ring one row per `coarse_step` seconds (61 at
60 s: an hour). Series are columns, numbered as they first appear; a row is
an ``array('d')`` — 8 bytes a value — so 200 targets, 300 series and 122 rows
is ~60 MB at most. A value missing from a row (the series did not exist yet,
or was not in that scrape) is NaN.

`increases(names, start, end)` is each series' counter increase between the
row at or before `start` (the oldest row when there is none that old: like
Prometheus, viz cannot see before its first sample) and the row at or
before `end`; when the counter went down (the proxy restarted) the increase
is the later value. A series absent at the start counts from zero (it was
born in the window). Windows longer than the fine ring's span read the
coarse ring.

Pure: times are passed in.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Collection, Iterator, Mapping

from isthmus.core.viz.exposition import Series
from isthmus.core.viz.model import Sample

__all__ = ["Labels", "TargetHistory"]

_NAN = math.nan


class Labels(Mapping[str, str]):
    """A series' labels over its target's, without copying either.

    Every column of every target would otherwise hold its own merged dict —
    most of the collector's memory; the series' own dict is shared by every
    target that has the same series (`_interned`).
    """

    __slots__ = ("own", "target")

    def __init__(self, target: Mapping[str, str], own: Mapping[str, str]) -> None:
        self.target = target
        self.own = own

    def __getitem__(self, key: str) -> str:
        try:
            return self.own[key]
        except KeyError:
            return self.target[key]

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        value = self.own.get(key)
        if value is None:
            return self.target.get(key, default)
        return value

    def __iter__(self) -> Iterator[str]:
        yield from self.own
        yield from (k for k in self.target if k not in self.own)

    def __len__(self) -> int:
        return len(self.own) + sum(1 for k in self.target if k not in self.own)

    def __repr__(self) -> str:
        return repr(dict(self))


_interned: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
INTERN_LIMIT = 500_000  # distinct label sets shared; past it each column gets its own


def _own_labels(pairs: tuple[tuple[str, str], ...]) -> dict[str, str]:
    found = _interned.get(pairs)
    if found is None:
        found = dict(pairs)
        if len(_interned) < INTERN_LIMIT:
            _interned[pairs] = found
    return found


class TargetHistory:
    __slots__ = ("_coarse", "_coarse_step", "_columns", "_fine", "_labels", "_names",
                 "last_seen", "target_labels")

    def __init__(self, target_labels: Mapping[str, str], *, fine: int = 61, coarse: int = 61,
                 coarse_step: float = 60.0) -> None:
        self.target_labels = dict(target_labels)
        self._columns: dict[Series, int] = {}
        self._names: list[str] = []
        self._labels: list[Labels] = []
        self._fine: deque[tuple[float, array[float]]] = deque(maxlen=fine)
        self._coarse: deque[tuple[float, array[float]]] = deque(maxlen=coarse)
        self._coarse_step = coarse_step
        self.last_seen: float | None = None

    def __repr__(self) -> str:
        return (f"<TargetHistory {self.target_labels.get('namespace')}/"
                f"{self.target_labels.get('pod')} series={len(self._columns)} "
                f"rows={len(self._fine)}+{len(self._coarse)}>")

    @property
    def series_count(self) -> int:
        return len(self._columns)

    def fine_span(self) -> float:
        """Seconds the fine ring covers (0 until it has two rows)."""
        if len(self._fine) < 2:
            return 0.0
        return self._fine[-1][0] - self._fine[0][0]

    def record(self, now: float, values: Mapping[Series, float]) -> None:
        columns = self._columns
        for series in values:
            if series not in columns:
                columns[series] = len(columns)
                self._names.append(series[0])
                self._labels.append(Labels(self.target_labels, _own_labels(series[1])))
        row = array("d", [_NAN]) * len(columns)
        for series, value in values.items():
            row[columns[series]] = value
        self._fine.append((now, row))
        if not self._coarse or now - self._coarse[-1][0] >= self._coarse_step * 0.95:
            self._coarse.append((now, row))
        self.last_seen = now

    def _ring(self, window: float) -> deque[tuple[float, array[float]]]:
        if len(self._fine) == self._fine.maxlen and window > self.fine_span() + 1e-6:
            return self._coarse
        return self._fine

    @staticmethod
    def _at(ring: deque[tuple[float, array[float]]], t: float) -> tuple[float, array[float]] | None:
        found = None
        for row in reversed(ring):
            if row[0] <= t:
                found = row
                break
        return found

    def increases(self, names: Collection[str] | None, start: float, end: float) -> list[Sample]:
        ring = self._ring(end - start)
        if not ring:
            return []
        last = self._at(ring, end)
        if last is None:
            return []
        first = self._at(ring, start) or ring[0]
        if first[0] >= last[0]:
            return []
        old, new = first[1], last[1]
        out: list[Sample] = []
        for i, name in enumerate(self._names):
            if names is not None and name not in names:
                continue
            if i >= len(new):
                break
            value = new[i]
            if value != value:  # NaN: not in the later scrape
                continue
            before = old[i] if i < len(old) else _NAN
            if before != before:
                before = 0.0
            out.append(Sample(name, self._labels[i], value - before if value >= before else value))
        return out

    def latest(self, names: Collection[str] | None) -> list[Sample]:
        if not self._fine:
            return []
        row = self._fine[-1][1]
        return [Sample(name, self._labels[i], row[i])
                for i, name in enumerate(self._names)
                if (names is None or name in names) and i < len(row) and row[i] == row[i]]

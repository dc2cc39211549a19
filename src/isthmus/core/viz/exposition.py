"""Reading a scrape: the Prometheus text exposition format into (series key, value) pairs.

`ExpositionParser.parse(text)` returns ``{series: value}`` for the sample
lines whose metric name is wanted; a `Series` is ``(name, labels)`` with the
labels as a sorted tuple of pairs, made once per distinct sample text and
reused on every later scrape (a proxy prints the same series every time, so
a scrape costs a dict lookup and a float() per line).

Why not `prometheus_client.parser`: it reads character by character and
costs ~130 µs per sample here; the collector reads 200 proxies times a few
hundred samples every 10 s, which would be most of a core. This reader
handles what the format allows in sample lines (escaped label values,
timestamps, NaN/±Inf, comments) and is checked against prometheus_client's
parser in the unit tests.

`ExpositionError` says what is wrong with text that is not the format (a
target that answers HTML, say), with the line number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection

__all__ = ["ExpositionError", "ExpositionParser", "Series"]

Series = tuple[str, tuple[tuple[str, str], ...]]

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|\Z)')
_UNESCAPE = re.compile(r"\\(.)")
# a sample line: the series text (name and labels), the value, an optional timestamp
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^\n]*\})?)[ \t]+(\S+)(?:[ \t]+-?\d+)?[ \t]*$",
                     re.M)
_CONTENT = re.compile(r"^[ \t]*[^#\s]", re.M)  # lines that are neither blank nor comments
_SPECIAL = {"+Inf": math.inf, "Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}
CACHE_LIMIT = 100_000  # distinct series texts remembered per parser
_PAIRS: dict[tuple[str, str], tuple[str, str]] = {}  # one tuple per distinct label pair, shared
PAIRS_LIMIT = 200_000


class ExpositionError(ValueError):
    """Text that is not the Prometheus text format; the message names the line."""


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return _UNESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def _series(text: str, lineno: int) -> Series:
    m = _NAME.match(text)
    if m is None:
        raise ExpositionError(f"line {lineno}: {text[:60]!r} does not start with a metric name")
    name = m.group(0)
    rest = text[m.end():].strip()
    if not rest:
        return name, ()
    if not (rest.startswith("{") and rest.endswith("}")):
        raise ExpositionError(f"line {lineno}: cannot read the labels of {text[:60]!r}")
    body = rest[1:-1]
    labels: list[tuple[str, str]] = []
    pos = 0
    while pos < len(body):
        lm = _LABEL.match(body, pos)
        if lm is None:
            if body[pos:].strip() in ("", ","):
                break
            raise ExpositionError(f"line {lineno}: bad label at {body[pos:pos + 40]!r}")
        pair = (lm.group(1), _unescape(lm.group(2)))
        shared = _PAIRS.get(pair)
        if shared is None:
            shared = pair
            if len(_PAIRS) < PAIRS_LIMIT:
                _PAIRS[pair] = pair
        labels.append(shared)
        pos = lm.end()
    return name, tuple(sorted(labels))


def _value(text: str, lineno: int) -> float:
    try:
        return float(text)
    except ValueError:
        special = _SPECIAL.get(text)
        if special is None:
            raise ExpositionError(f"line {lineno}: {text[:40]!r} is not a number") from None
        return special


class ExpositionParser:
    """Parses scrapes, remembering the series of the sample texts it has seen."""

    def __init__(self, names: Collection[str] | None = None) -> None:
        self._names = frozenset(names) if names is not None else None
        self._cache: dict[str, Series | None] = {}

    def parse(self, text: str) -> dict[Series, float]:
        """``{series: value}`` of the wanted samples; `ExpositionError` for text not in the format.

        The fast path splits every sample line with one regular expression (in
        C); when that does not account for every non-comment line, the text
        is read line by line, which names the first bad line.
        """
        pairs = _SAMPLE.findall(text)
        if len(pairs) != len(_CONTENT.findall(text)):
            return self._parse_lines(text)
        out: dict[Series, float] = {}
        cache = self._cache
        for head, value in pairs:
            if head in cache:
                series = cache[head]
            else:
                try:
                    series = self._learn(head, 0)
                except ExpositionError:
                    return self._parse_lines(text)  # to name the line
            if series is not None:
                try:
                    out[series] = float(value)
                except ValueError:
                    out[series] = _value(value, 0)
        return out

    def _learn(self, head: str, lineno: int) -> Series | None:
        series: Series | None = _series(head, lineno)
        if self._names is not None and series is not None and series[0] not in self._names:
            series = None
        if len(self._cache) < CACHE_LIMIT:
            self._cache[head] = series
        return series

    def _parse_lines(self, text: str) -> dict[Series, float]:
        out: dict[Series, float] = {}
        cache = self._cache
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line or line[0] == "#":
                continue
            # the value (and an optional timestamp) follow the last '}' or the name
            close = line.rfind("}")
            head, sep, tail = line.partition(" ") if close < 0 else (
                line[:close + 1], " ", line[close + 1:])
            fields = tail.split()
            if not sep or not fields or len(fields) > 2:
                if not line.strip():
                    continue
                raise ExpositionError(f"line {lineno}: {line[:60]!r} is not a sample line")
            series = cache[head] if head in cache else self._learn(head, lineno)
            if series is not None:
                out[series] = _value(fields[0], lineno)
        return out

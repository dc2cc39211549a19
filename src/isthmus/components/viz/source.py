"""Where viz reads metrics from: the embedded collector's history, or a Prometheus.

Both answer the same two questions (`MetricsSource`), so every query above
them (`isthmus.core.viz`) is the same code whatever the source.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from isthmus.core.viz.model import Sample

__all__ = ["MetricsSource", "SourceError"]


class SourceError(Exception):
    """The source cannot answer (Prometheus down, say); the message says why."""


class MetricsSource(Protocol):
    async def increases(self, names: Sequence[str], window: float,
                        at: float | None = None) -> list[Sample]:
        """Each raw series' counter increase over the `window` seconds ending at `at` (now)."""
        ...

    async def gauges(self, names: Sequence[str]) -> list[Sample]:
        """Each raw series' current value."""
        ...

    async def close(self) -> None:
        ...

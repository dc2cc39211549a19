"""Noticing a stalled event loop: a warning with where the loop was when it stopped running.

One process runs the embedded cluster's API server, controllers and service
proxy on one event loop; if something blocks that loop (a slow disk under a
store write, a long computation), every client of the cluster waits and
connections through the service proxy time out. `StallWatch` makes that
visible: a heartbeat task notes each time the loop runs, and a thread of its
own logs a warning when the heartbeat is more than `threshold` seconds old,
with the loop thread's stack at that moment, and again when the loop runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
import traceback

log = logging.getLogger("isthmus.stalls")


class StallWatch:
    BEAT = 0.25

    def __init__(self, name: str, *, threshold: float = 2.0) -> None:
        self._name = name
        self._threshold = threshold
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._loop_thread = 0
        self.stalls = 0

    async def __aenter__(self) -> StallWatch:
        self._loop_thread = threading.get_ident()
        self._last = time.monotonic()
        self._task = asyncio.create_task(self._beat(), name=f"{self._name}-heartbeat")
        self._thread = threading.Thread(target=self._watch, name=f"{self._name}-stallwatch", daemon=True)
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._thread is not None:
            self._thread.join(timeout=2)

    async def _beat(self) -> None:
        while True:
            self._last = time.monotonic()
            await asyncio.sleep(self.BEAT)

    def _watch(self) -> None:
        stalled_since: float | None = None
        while not self._stop.wait(self.BEAT):
            last = self._last
            lag = time.monotonic() - last
            if stalled_since is None and lag > self._threshold:
                stalled_since = last
                self.stalls += 1
                frame = sys._current_frames().get(self._loop_thread)
                where = "".join(traceback.format_stack(frame)) if frame is not None else "(not known)\n"
                log.warning("%s: the event loop has not run for %.1fs; it is in:\n%s", self._name, lag,
                            where.rstrip())
            elif stalled_since is not None and last > stalled_since:
                log.warning("%s: the event loop runs again after %.1fs", self._name, last - stalled_since)
                stalled_since = None

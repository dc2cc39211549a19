"""A stalled event loop is reported with where it was, and again when it runs."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from isthmus.adapters.stalls import StallWatch

pytestmark = pytest.mark.asyncio


def _block_the_loop(seconds: float) -> None:
    time.sleep(seconds)


async def test_a_blocked_loop_is_reported_with_its_stack(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "isthmus.stalls")
    async with StallWatch("cluster t", threshold=0.3) as watch:
        await asyncio.sleep(0.3)
        assert watch.stalls == 0 and caplog.text == ""  # a loop that runs is not reported
        _block_the_loop(1.2)
        await asyncio.sleep(0.6)
    assert watch.stalls == 1
    stalled, resumed = [r.getMessage() for r in caplog.records]
    assert stalled.startswith("cluster t: the event loop has not run for ")
    assert "in _block_the_loop" in stalled and "time.sleep(seconds)" in stalled
    assert resumed.startswith("cluster t: the event loop runs again after ")

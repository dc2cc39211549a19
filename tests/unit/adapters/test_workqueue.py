"""The controllers' work queue: dedupe, no key in two workers at once, requeue after done."""

from __future__ import annotations

import asyncio

import pytest

from isthmus.adapters.kube import WorkQueue, run_worker

pytestmark = pytest.mark.asyncio


async def test_a_key_queued_twice_is_taken_once() -> None:
    q = WorkQueue()
    q.add("a")
    q.add("a")
    q.add("b")
    assert [await q.get(), await q.get()] == ["a", "b"]
    assert len(q) == 0


async def test_a_key_added_while_processing_waits_for_done() -> None:
    q = WorkQueue()
    q.add("a")
    assert await q.get() == "a"
    q.add("a")  # changed again while a worker has it
    assert len(q) == 0
    q.done("a")
    assert await asyncio.wait_for(q.get(), 1) == "a"


async def test_workers_never_reconcile_the_same_key_concurrently() -> None:
    q = WorkQueue()
    running: set[str] = set()
    overlaps: list[str] = []
    seen: list[str] = []

    async def reconcile(key: object) -> float | None:
        assert isinstance(key, str)
        if key in running:
            overlaps.append(key)
        running.add(key)
        seen.append(key)
        await asyncio.sleep(0.01)
        if len(seen) < 4:
            q.add(key)  # keeps changing while being reconciled
        running.discard(key)
        return None

    task = asyncio.create_task(run_worker("test", q, reconcile, workers=4))
    q.add("x")
    q.add("y")
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert overlaps == []
    assert seen.count("x") >= 2 and "y" in seen


async def test_idle_waits_for_every_key_queued_and_being_reconciled() -> None:
    q = WorkQueue()
    await asyncio.wait_for(q.idle(), 1)  # a new queue is idle
    q.add("a")
    q.add("b")
    waiter = asyncio.create_task(q.idle())
    assert await q.get() == "a"
    q.done("a")
    await asyncio.sleep(0)
    assert not waiter.done()  # "b" still queued
    assert await q.get() == "b"
    q.add("b")  # changed while being reconciled: queued again once done
    q.done("b")
    await asyncio.sleep(0)
    assert not waiter.done()
    assert await q.get() == "b"
    q.add_after("c", 60)  # due later: does not count
    q.done("b")
    await asyncio.wait_for(waiter, 1)

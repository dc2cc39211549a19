"""The embedded cluster answers /readyz ok only once its controllers have caught up."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest

from isthmus.adapters.kube import WorkQueue
from isthmus.components import clusterprocess

pytestmark = pytest.mark.asyncio


@dataclass
class FakeInformer:
    synced: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class FakeController:
    queue: WorkQueue = field(default_factory=WorkQueue)
    parts: list[FakeInformer] = field(default_factory=lambda: [FakeInformer(), FakeInformer()])

    def informers(self) -> list[FakeInformer]:
        return self.parts


@dataclass
class Ctx:
    not_ready: str | None = "the controllers are starting"


async def test_ready_once_every_informer_listed_and_every_queue_went_through() -> None:
    ctx, a, b = Ctx(), FakeController(), FakeController()
    gate = asyncio.create_task(clusterprocess._ready_once_caught_up(ctx, [a, b]))  # type: ignore[arg-type]
    for inf in a.parts + b.parts[:1]:
        inf.synced.set()
    a.queue.add(("emojivoto", "web"))
    await asyncio.sleep(0.05)
    assert ctx.not_ready == "the controllers are starting"  # one informer of b has not listed
    b.parts[1].synced.set()
    await asyncio.sleep(0.05)
    assert ctx.not_ready is not None  # a's key not reconciled yet
    key = await a.queue.get()
    a.queue.done(key)
    await asyncio.wait_for(gate, 1)
    assert ctx.not_ready is None


async def test_a_controller_that_cannot_catch_up_is_waited_for_no_longer(
        caplog: pytest.LogCaptureFixture) -> None:
    ctx, stuck = Ctx(), FakeController()
    caplog.set_level(logging.WARNING, "isthmus.cluster")
    await clusterprocess._ready_once_caught_up(ctx, [stuck], limit=0.1)  # type: ignore[arg-type]
    assert ctx.not_ready is None
    assert "the controllers did not catch up within 0.1s; the API answers ready anyway" in caplog.text

"""Watches: fan-out of store changes to API clients, with Kubernetes' watch semantics.

Each open watch has a queue filled by the store's change listener. A watch
starting at a resourceVersion first replays the retained changes after it (410
Gone if that version was compacted away); one starting without a version first
gets every current object as ADDED. Selectors are applied the Kubernetes way:
an object that stops matching arrives as DELETED, one that starts matching as
ADDED. Queues are drained in batches so that one write to the socket carries
many events under load. A client that falls `max_backlog` events behind is
disconnected and must re-list, as with the real API server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from isthmus.adapters.store import Compacted, Event, Store, split_key
from isthmus.core.selectors import FieldSelector, LabelSelector
from isthmus.resources.registry import ResourceType

from .errors import gone
from .objects import matches


@dataclass
class WatchSpec:
    rt: ResourceType
    namespace: str | None
    labels: LabelSelector | None = None
    fields: FieldSelector | None = None

    @property
    def filtered(self) -> bool:
        return (self.labels is not None and not self.labels.empty) or self.fields is not None


@dataclass(frozen=True, slots=True)
class Pending:
    """An event as queued for watchers, with its plain JSON line made once for all of them."""

    event: Event
    namespace: str
    line: bytes


@dataclass(eq=False)
class Watch:
    spec: WatchSpec
    pending: list[Pending] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    overflowed: bool = False

    def take(self) -> list[Pending]:
        self.wakeup.clear()
        batch, self.pending = self.pending, []
        return batch

    def __repr__(self) -> str:
        return f"<Watch {self.spec.rt.plural} ns={self.spec.namespace!r} backlog={len(self.pending)}>"


class WatchHub:
    def __init__(self, store: Store, *, max_backlog: int = 50_000) -> None:
        self._store = store
        self._by_resource: dict[str, set[Watch]] = {}
        self._max_backlog = max_backlog
        self._unsubscribe = store.subscribe(self._on_event)

    def open(self, spec: WatchSpec, resource_version: str | None) -> tuple[Watch, list[Event]]:
        """Register a watch; returns it with the events to send first (replayed or synthetic)."""
        w = Watch(spec)
        initial: list[Event] = []
        if resource_version in (None, "", "0"):
            for rec in self._store.list(spec.rt.key, spec.namespace if spec.rt.namespaced else None):
                initial.append(Event("ADDED", rec.key, rec.rev, rec.value, None))
        else:
            try:
                rv = int(resource_version)
            except ValueError:
                raise gone(f'invalid resource version "{resource_version}"') from None
            try:
                initial = self._store.changes_since(rv, spec.rt.key)
            except Compacted as e:
                raise gone(f"too old resource version: {e.requested} ({e.oldest})") from None
        self._by_resource.setdefault(spec.rt.key, set()).add(w)
        return w, initial

    def close(self, w: Watch) -> None:
        self._by_resource.get(w.spec.rt.key, set()).discard(w)

    def close_all(self) -> None:
        for watches in self._by_resource.values():
            for w in watches:
                w.closed = True
                w.wakeup.set()
        self._by_resource.clear()

    def _on_event(self, event: Event) -> None:
        watches = self._by_resource.get(event.resource)
        if not watches:
            return
        item = Pending(event, split_key(event.key)[1], json_line(event.type, event.value))
        for w in watches:
            if len(w.pending) >= self._max_backlog:
                w.overflowed = w.closed = True
            else:
                w.pending.append(item)
            w.wakeup.set()

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_resource.values())

    def __repr__(self) -> str:
        return f"<WatchHub watches={len(self)}>"


def _matches(spec: WatchSpec, value: bytes) -> tuple[bool, dict[str, Any]]:
    obj: dict[str, Any] = orjson.loads(value)
    return matches(spec.rt, obj, spec.labels, spec.fields), obj


def translate(spec: WatchSpec, event: Event) -> tuple[str, bytes] | None:
    """The (type, object JSON) a watcher with `spec` should see for `event`, or None."""
    if spec.namespace and spec.rt.namespaced and split_key(event.key)[1] != spec.namespace:
        return None
    if not spec.filtered:
        return event.type, event.value
    now, _ = _matches(spec, event.value)
    if event.type == "ADDED":
        return ("ADDED", event.value) if now else None
    if event.type == "DELETED":
        return ("DELETED", event.value) if now else None
    before = _matches(spec, event.prev)[0] if event.prev is not None else False
    if now and before:
        return "MODIFIED", event.value
    if now:
        return "ADDED", event.value
    if before:
        return "DELETED", event.value
    return None


def json_line(typ: str, value: bytes) -> bytes:
    return b'{"type":"' + typ.encode() + b'","object":' + value + b"}\n"


def bookmark_line(rt: ResourceType, rev: int, *, initial_events_end: bool = False) -> bytes:
    meta: dict[str, Any] = {"resourceVersion": str(rev)}
    if initial_events_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return json_line("BOOKMARK", orjson.dumps({"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}))


Encoder = Callable[[str, bytes], bytes]

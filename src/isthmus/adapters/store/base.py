"""The store interface the API server is written against.

A store keeps objects (JSON bytes) under keys `resource/namespace/name`
(namespace empty for cluster-scoped objects) and stamps every write with the next
value of one global revision counter; that revision is the object's
`metadata.resourceVersion`. It keeps a window of recent changes so watches can
resume from a recent revision, and tells subscribers about each change after it
is durable. The SQLite store is the default backend; another (etcd) can be added
by implementing this class without touching the API server.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson


class StoreError(Exception):
    pass


class NotFound(StoreError):
    pass


class AlreadyExists(StoreError):
    pass


class Conflict(StoreError):
    """The object changed since the revision the caller read."""


class Compacted(StoreError):
    """The requested revision is older than the retained window of changes."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"revision {requested} is older than the oldest retained revision {oldest}")
        self.requested = requested
        self.oldest = oldest


def make_key(resource: str, namespace: str, name: str) -> str:
    return f"{resource}/{namespace}/{name}"


def split_key(key: str) -> tuple[str, str, str]:
    resource, namespace, name = key.rsplit("/", 2)
    return resource, namespace, name


@dataclass(frozen=True, slots=True)
class Record:
    key: str
    rev: int
    value: bytes  # JSON, with metadata.resourceVersion == str(rev)

    def obj(self) -> dict[str, Any]:
        out: dict[str, Any] = orjson.loads(self.value)
        return out


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # "ADDED" | "MODIFIED" | "DELETED"
    key: str
    rev: int
    value: bytes  # the object after the change (for DELETED: as it was, stamped with rev)
    prev: bytes | None  # the object before the change (None for ADDED)

    @property
    def resource(self) -> str:
        return self.key.rsplit("/", 2)[0]


Listener = Callable[[Event], None]


def stamp(obj: dict[str, Any], rev: int) -> bytes:
    """Serialize `obj` with its resourceVersion set to `rev` (the caller's dict is not changed)."""
    meta = dict(obj.get("metadata") or {})
    meta["resourceVersion"] = str(rev)
    return orjson.dumps({**obj, "metadata": meta})


class Store(abc.ABC):
    """Durable, revisioned key-value store of API objects."""

    @property
    @abc.abstractmethod
    def revision(self) -> int:
        """The revision of the newest write (0 for an empty store)."""

    @property
    @abc.abstractmethod
    def oldest_revision(self) -> int:
        """The oldest revision a watch can still resume after."""

    @abc.abstractmethod
    def get(self, key: str) -> Record | None: ...

    @abc.abstractmethod
    def list(self, resource: str, namespace: str | None = None) -> builtins.list[Record]:
        """Objects of one resource (in one namespace, if given), sorted by key."""

    @abc.abstractmethod
    def create(self, key: str, obj: dict[str, Any]) -> Record: ...

    @abc.abstractmethod
    def update(self, key: str, obj: dict[str, Any], expected_rev: int | None = None) -> Record: ...

    @abc.abstractmethod
    def delete(self, key: str, expected_rev: int | None = None) -> Record:
        """Remove the object; the returned record is the object as deleted, at the new revision."""

    @abc.abstractmethod
    def changes_since(self, rev: int, resource: str | None = None) -> builtins.list[Event]:
        """Changes after `rev`, oldest first; raises Compacted if `rev` is too old."""

    @abc.abstractmethod
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with each change once it is durable; returns an unsubscribe function."""

    @abc.abstractmethod
    def close(self) -> None: ...

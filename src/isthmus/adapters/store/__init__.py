"""Stores of API objects: the interface and its SQLite backend."""

from isthmus.adapters.store.base import (
    AlreadyExists,
    Compacted,
    Conflict,
    Event,
    NotFound,
    Record,
    Store,
    StoreError,
    make_key,
    split_key,
)
from isthmus.adapters.store.sqlite import SQLiteStore

__all__ = [
    "AlreadyExists", "Compacted", "Conflict", "Event", "NotFound", "Record", "SQLiteStore",
    "Store", "StoreError", "make_key", "split_key",
]

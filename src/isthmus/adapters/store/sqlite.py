"""The default store: one SQLite file per cluster, in WAL mode.

Every write is one transaction that updates the object table and appends to the
change log; it is committed before the caller (and any watcher) hears of it.
WAL with `synchronous=NORMAL` makes a committed transaction survive the death of
the process (`kill -9`); `durability="full"` also fsyncs each commit, which is
what survives a power cut. Current objects are also kept in memory (as JSON
bytes) so reads never touch the disk; the change log keeps the newest
`history` revisions, in the file and in memory, for watches to resume from —
across restarts too.
"""

from __future__ import annotations

import builtins
import sqlite3
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from isthmus.adapters.store.base import (
    AlreadyExists,
    Compacted,
    Conflict,
    Event,
    Listener,
    NotFound,
    Record,
    Store,
    stamp,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (key TEXT PRIMARY KEY, rev INTEGER NOT NULL, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS changes (rev INTEGER PRIMARY KEY, key TEXT NOT NULL, type TEXT NOT NULL,
                                    value BLOB NOT NULL, prev BLOB);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class SQLiteStore(Store):
    def __init__(self, path: str | Path, *, history: int = 10_000, durability: str = "normal") -> None:
        self._path = Path(path)
        self._history = history
        self._db = sqlite3.connect(str(self._path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durability == 'full' else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        self._listeners: list[Listener] = []
        # resource -> key -> Record
        self._objects: dict[str, dict[str, Record]] = {}
        for key, rev, value in self._db.execute("SELECT key, rev, value FROM objects"):
            self._objects.setdefault(key.rsplit("/", 2)[0], {})[key] = Record(key, rev, bytes(value))
        self._log: deque[Event] = deque()
        rows = self._db.execute(
            "SELECT rev, key, type, value, prev FROM changes ORDER BY rev DESC LIMIT ?", (history,)
        ).fetchall()
        for rev, key, typ, value, prev in reversed(rows):
            self._log.append(Event(typ, key, rev, bytes(value), bytes(prev) if prev is not None else None))
        row = self._db.execute("SELECT value FROM meta WHERE name='compacted'").fetchone()
        self._compacted = int(row[0]) if row else 0
        self._rev = max(self._log[-1].rev if self._log else 0, self._compacted,
                        max((r.rev for objs in self._objects.values() for r in objs.values()), default=0))
        if self._log:
            self._compacted = max(self._compacted, self._log[0].rev - 1)
        self._writes_since_compaction = 0

    # -- reads ---------------------------------------------------------------

    @property
    def revision(self) -> int:
        return self._rev

    @property
    def oldest_revision(self) -> int:
        return self._compacted

    def get(self, key: str) -> Record | None:
        return self._objects.get(key.rsplit("/", 2)[0], {}).get(key)

    def list(self, resource: str, namespace: str | None = None) -> builtins.list[Record]:
        objs = self._objects.get(resource, {})
        if namespace is None:
            return [objs[k] for k in sorted(objs)]
        prefix = f"{resource}/{namespace}/"
        return [objs[k] for k in sorted(objs) if k.startswith(prefix)]

    def changes_since(self, rev: int, resource: str | None = None) -> builtins.list[Event]:
        if rev < self._compacted:
            raise Compacted(rev, self._compacted)
        revs = [e.rev for e in self._log]
        start = bisect_right(revs, rev)
        out = [self._log[i] for i in range(start, len(self._log))]
        if resource is not None:
            out = [e for e in out if e.resource == resource]
        return out

    # -- writes --------------------------------------------------------------

    def create(self, key: str, obj: dict[str, Any]) -> Record:
        if self.get(key) is not None:
            raise AlreadyExists(key)
        return self._write("ADDED", key, obj, None)

    def update(self, key: str, obj: dict[str, Any], expected_rev: int | None = None) -> Record:
        cur = self.get(key)
        if cur is None:
            raise NotFound(key)
        if expected_rev is not None and expected_rev != cur.rev:
            raise Conflict(key)
        return self._write("MODIFIED", key, obj, cur)

    def delete(self, key: str, expected_rev: int | None = None) -> Record:
        cur = self.get(key)
        if cur is None:
            raise NotFound(key)
        if expected_rev is not None and expected_rev != cur.rev:
            raise Conflict(key)
        return self._write("DELETED", key, orjson.loads(cur.value), cur)

    def _write(self, typ: str, key: str, obj: dict[str, Any], prev: Record | None) -> Record:
        rev = self._rev + 1
        value = stamp(obj, rev)
        prev_value = prev.value if prev is not None else None
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if typ == "DELETED":
                db.execute("DELETE FROM objects WHERE key=?", (key,))
            else:
                db.execute("INSERT OR REPLACE INTO objects (key, rev, value) VALUES (?,?,?)", (key, rev, value))
            db.execute("INSERT INTO changes (rev, key, type, value, prev) VALUES (?,?,?,?,?)",
                       (rev, key, typ, value, prev_value))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._rev = rev
        record = Record(key, rev, value)
        bucket = self._objects.setdefault(key.rsplit("/", 2)[0], {})
        if typ == "DELETED":
            bucket.pop(key, None)
        else:
            bucket[key] = record
        event = Event(typ, key, rev, value, prev_value)
        self._log.append(event)
        if len(self._log) > self._history:
            self._compacted = self._log.popleft().rev
        self._writes_since_compaction += 1
        if self._writes_since_compaction >= 1000:
            self._compact()
        for listener in list(self._listeners):
            listener(event)
        return record

    def _compact(self) -> None:
        self._writes_since_compaction = 0
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("DELETE FROM changes WHERE rev <= ?", (self._compacted,))
        self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('compacted', ?)", (self._compacted,))
        self._db.execute("COMMIT")

    # -- notification and lifecycle -----------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def close(self) -> None:
        self._db.close()

    def __repr__(self) -> str:
        n = sum(len(v) for v in self._objects.values())
        return f"<SQLiteStore {self._path} objects={n} revision={self._rev} oldest={self._compacted}>"

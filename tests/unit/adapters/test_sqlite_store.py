"""The SQLite store: revisions, optimistic concurrency, change history, durability across reopen."""

from __future__ import annotations

from pathlib import Path

import pytest

from isthmus.adapters.store import (
    AlreadyExists,
    Compacted,
    Conflict,
    NotFound,
    SQLiteStore,
    make_key,
)


def svc(name: str, **extra: object) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "ns"}, **extra}


def test_writes_move_one_global_revision(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "s.db")
    a = s.create(make_key("services", "ns", "a"), svc("a"))
    b = s.create(make_key("configmaps", "ns", "b"), {"metadata": {"name": "b"}})
    assert (a.rev, b.rev, s.revision) == (1, 2, 2)
    assert a.obj()["metadata"]["resourceVersion"] == "1"
    u = s.update(a.key, svc("a", spec={"x": 1}), expected_rev=1)
    assert u.rev == 3 and u.obj()["spec"] == {"x": 1}


def test_conflicts_and_missing(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "s.db")
    k = make_key("services", "ns", "a")
    s.create(k, svc("a"))
    with pytest.raises(AlreadyExists):
        s.create(k, svc("a"))
    s.update(k, svc("a", spec={"v": 2}))
    with pytest.raises(Conflict):
        s.update(k, svc("a", spec={"v": 3}), expected_rev=1)
    assert s.get(k).obj()["spec"] == {"v": 2}  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        s.update(make_key("services", "ns", "zz"), svc("zz"))
    with pytest.raises(Conflict):
        s.delete(k, expected_rev=1)
    d = s.delete(k)
    assert d.rev == 3 and s.get(k) is None


def test_list_is_sorted_and_scoped(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "s.db")
    for ns, name in [("b", "x"), ("a", "y"), ("a", "x")]:
        s.create(make_key("services", ns, name), svc(name))
    s.create(make_key("pods", "a", "p"), {"metadata": {"name": "p"}})
    assert [r.key for r in s.list("services")] == ["services/a/x", "services/a/y", "services/b/x"]
    assert [r.key for r in s.list("services", "a")] == ["services/a/x", "services/a/y"]
    assert [r.key for r in s.list("pods")] == ["pods/a/p"]


def test_changes_since_and_compaction(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "s.db", history=3)
    keys = [make_key("services", "ns", f"s{i}") for i in range(5)]
    for i, k in enumerate(keys):
        s.create(k, svc(f"s{i}"))
    assert [e.rev for e in s.changes_since(2)] == [3, 4, 5]
    assert s.changes_since(5) == []
    with pytest.raises(Compacted) as exc:
        s.changes_since(1)
    assert exc.value.oldest == 2


def test_listener_sees_committed_changes_with_previous_value(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "s.db")
    seen = []
    unsubscribe = s.subscribe(seen.append)
    k = make_key("services", "ns", "a")
    s.create(k, svc("a"))
    s.update(k, svc("a", spec={"v": 1}))
    s.delete(k)
    unsubscribe()
    s.create(make_key("services", "ns", "b"), svc("b"))
    assert [(e.type, e.rev) for e in seen] == [("ADDED", 1), ("MODIFIED", 2), ("DELETED", 3)]
    assert seen[1].prev is not None and b'"resourceVersion":"1"' in seen[1].prev


def test_reopen_keeps_objects_revision_and_history(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "s.db")
    k = make_key("services", "ns", "a")
    s.create(k, svc("a"))
    s.update(k, svc("a", spec={"v": 1}))
    s.create(make_key("services", "ns", "b"), svc("b"))
    s.delete(make_key("services", "ns", "b"))
    s.close()
    s2 = SQLiteStore(tmp_path / "s.db")
    assert s2.revision == 4
    assert s2.get(k).obj()["spec"] == {"v": 1}  # type: ignore[union-attr]
    assert [e.type for e in s2.changes_since(1)] == ["MODIFIED", "ADDED", "DELETED"]
    assert s2.create(make_key("services", "ns", "c"), svc("c")).rev == 5

"""Fixtures that run real embedded clusters (real processes, real TLS) and the real kubectl.

Every cluster a test starts lives under a temporary ISTHMUS_HOME and uses cluster
numbers from 200 up, so it never touches a user's own clusters; every process
is stopped when the fixture ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from isthmus.adapters.clusterdir import ClusterDir
from isthmus.components import cluster as clusters

KUBECTL = os.environ.get("ISTHMUS_TEST_KUBECTL", "/usr/bin/kubectl")
# Test clusters take numbers from here up (127.<k>.x.x); two runs at once on one machine
# must start far apart (ISTHMUS_TEST_FIRST_CLUSTER=120 for the second, say).
# Under pytest-xdist each worker starts 80 lower (gw0: 200, gw1: 120).
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
FIRST_CLUSTER = str(int(os.environ.get("ISTHMUS_TEST_FIRST_CLUSTER", "200")) - 80 * _WORKER)
OLD_KUBECTL = "/usr/lib/google-cloud-sdk/bin/kubectl.1.29"


@dataclass
class Cluster:
    name: str
    home: Path
    kubeconfig: Path
    extra_env: dict[str, str] | None = None

    @property
    def dir(self) -> ClusterDir:
        return ClusterDir(self.home, self.name)

    def env(self) -> dict[str, str]:
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig), ISTHMUS_HOME=str(self.home),
                    ISTHMUS_FIRST_CLUSTER_NUMBER=FIRST_CLUSTER, **(self.extra_env or {}))

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                binary: str = KUBECTL, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([binary, f"--context={self.name}", *args], input=input, text=True,
                              capture_output=True, env=self.env(), timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def kjson(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def isthmus(self, *args: str, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(Path(sys.executable).parent / "isthmus"), *args], text=True,
                              capture_output=True, env=self.env(), timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"isthmus {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc


def _start(home: Path, name: str, region: str, extra_env: dict[str, str] | None = None) -> Cluster:
    c = Cluster(name, home, home / "kubeconfig", extra_env)
    os.environ.setdefault("ISTHMUS_FIRST_CLUSTER_NUMBER", FIRST_CLUSTER)
    c.isthmus("cluster", "create", name, "--region", region, "--nodes", "3")
    return c


def _stop(c: Cluster) -> None:
    if c.dir.exists():
        clusters.stop(c.dir)


@pytest.fixture(scope="session")
def west(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster shared by the tests that only need a working API (each uses its own namespace)."""
    c = _start(tmp_path_factory.mktemp("home"), "west", "sfo3")
    yield c
    _stop(c)


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster of this test's own, for tests that restart, kill or count on an untouched store."""
    c = _start(tmp_path / "home", "solo", "ams3")
    yield c
    _stop(c)


@pytest.fixture
def ns(west: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    west.kubectl("create", "namespace", name)
    yield name
    west.kubectl("delete", "namespace", name, "--wait=false", check=False)


def store_state(c: Cluster) -> tuple[int, dict[str, int]]:
    """The newest revision and every object's revision, read straight from the cluster's SQLite file."""
    import sqlite3

    db = sqlite3.connect(f"file:{c.dir.db}?mode=ro", uri=True)
    try:
        objects = dict(db.execute("SELECT key, rev FROM objects").fetchall())
        newest = db.execute("SELECT max(rev) FROM changes").fetchone()[0] or 0
    finally:
        db.close()
    return newest, objects


def stored_object(c: Cluster, key: str) -> dict[str, Any] | None:
    import sqlite3

    db = sqlite3.connect(f"file:{c.dir.db}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM objects WHERE key=?", (key,)).fetchone()
    finally:
        db.close()
    return json.loads(row[0]) if row else None
from .walkthrough import pytest_collection_modifyitems, walkthrough  # noqa: E402,F401  (the README tutorial + isthmus demo, shared)

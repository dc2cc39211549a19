"""The on-disk layout of embedded clusters under `$ISTHMUS_HOME` (default `~/.isthmus`).

    $ISTHMUS_HOME/
      kubeconfig                    (unless $KUBECONFIG is set)
      clusters/NAME/
        cluster.json                name, region, nodes, cluster number
        store.db                    the SQLite store (WAL: store.db-wal, store.db-shm)
        pki/                        CA, API serving and admin certificates, token key (0600 keys)
        apiserver.log, apiserver.pid
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


def isthmus_home() -> Path:
    return Path(os.environ.get("ISTHMUS_HOME") or Path.home() / ".isthmus")


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    region: str
    nodes: int
    index: int  # the cluster number k: it owns 127.k.0.0/16


@dataclass(frozen=True)
class ClusterDir:
    home: Path
    name: str

    @property
    def path(self) -> Path:
        return self.home / "clusters" / self.name

    @property
    def config_file(self) -> Path:
        return self.path / "cluster.json"

    @property
    def db(self) -> Path:
        return self.path / "store.db"

    @property
    def pki_dir(self) -> Path:
        return self.path / "pki"

    @property
    def log_file(self) -> Path:
        return self.path / "apiserver.log"

    @property
    def pid_file(self) -> Path:
        return self.path / "apiserver.pid"

    def exists(self) -> bool:
        return self.config_file.exists()

    def load(self) -> ClusterConfig:
        return ClusterConfig(**json.loads(self.config_file.read_text()))

    def save(self, config: ClusterConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.config_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(config), indent=2) + "\n")
        tmp.replace(self.config_file)

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None


def all_clusters(home: Path) -> list[ClusterDir]:
    root = home / "clusters"
    if not root.is_dir():
        return []
    return [ClusterDir(home, p.name) for p in sorted(root.iterdir()) if (p / "cluster.json").exists()]

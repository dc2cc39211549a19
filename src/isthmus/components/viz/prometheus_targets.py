"""Keeps a Prometheus file-discovery targets file equal to the cluster's pods.

For a Prometheus built without Kubernetes discovery (Debian's `prometheus`
package leaves it out), `isthmus viz prometheus-config --targets-file PATH`
makes both jobs read PATH, and `TargetsWriter` (`isthmus viz
prometheus-targets PATH`) keeps PATH holding every pod container port,
labelled as Prometheus' Kubernetes pod discovery labels it
(`isthmus.resources.prometheus_config.file_sd_groups`). The jobs' own
relabelling then picks the proxies and service mirrors, exactly as with
Kubernetes discovery.

The writer lists and watches Pods of every namespace (it needs get, list and
watch on pods), and rewrites the file at most every `min_interval` seconds
while pods change: to a temporary file in the same directory, then renamed
over PATH, so Prometheus (which watches the directory) never reads half a
file. An unchanged set of targets is not written again.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Pod

from isthmus.adapters.kube import Informer
from isthmus.resources.prometheus_config import file_sd_groups

__all__ = ["TargetsWriter", "write_atomically"]


def write_atomically(path: Path, text: str) -> None:
    """`text` into `path` through a temporary file renamed over it (readers see old or new, never half)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class TargetsWriter:
    def __init__(self, client: AsyncClient, path: Path, *, min_interval: float = 0.5) -> None:
        self._client = client
        self.path = path
        self._min_interval = min_interval
        self._changed = asyncio.Event()
        self._informer = Informer(client, Pod, handler=self._on_change)
        self._last = ""
        self.writes = 0
        self.targets = 0

    def _on_change(self, _typ: str, _obj: dict[str, Any]) -> None:
        self._changed.set()

    def text(self) -> str:
        pods = sorted(self._informer.cache.values(),
                      key=lambda p: ((p.get("metadata") or {}).get("namespace", ""),
                                     (p.get("metadata") or {}).get("name", "")))
        groups = file_sd_groups(pods)
        self.targets = len(groups)
        return json.dumps(groups, indent=1, sort_keys=True) + "\n"

    def write(self) -> bool:
        """Write the current targets if they differ from what was written last; whether it wrote."""
        text = self.text()
        if text == self._last:
            return False
        write_atomically(self.path, text)
        self._last = text
        self.writes += 1
        return True

    async def synced(self, timeout: float) -> None:
        """Wait until the pods are listed (raises TimeoutError)."""
        await asyncio.wait_for(self._informer.synced.wait(), timeout)

    async def run(self, *, once: bool = False, list_timeout: float = 30.0) -> None:
        """List the pods and write; then (unless `once`) follow their changes until cancelled."""
        informer = asyncio.create_task(self._informer.run(), name="prometheus-targets-informer")
        try:
            await self.synced(list_timeout)
            self._changed.clear()
            self.write()
            while not once:
                await self._changed.wait()
                await asyncio.sleep(self._min_interval)  # one write for a burst of changes
                self._changed.clear()
                self.write()
        finally:
            informer.cancel()
            await asyncio.gather(informer, return_exceptions=True)

    def __repr__(self) -> str:
        return (f"<TargetsWriter {self.path} pods={len(self._informer.cache)} targets={self.targets} "
                f"writes={self.writes}>")

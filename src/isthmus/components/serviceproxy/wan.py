"""Where a client connects from, and how far away that is: the service proxy's WAN delays.

`RegionDelays(home, region)` is the service proxy's `client_delay` in a cluster
process: a client address 127.k.x.x belongs to embedded cluster k
(`isthmus.core.wan.cluster_number_of`); the clusters under the same
`$ISTHMUS_HOME` say which region k is in; `$ISTHMUS_HOME/wan.json` (written by
`isthmus demo --wan-latency`; absent means `auto`) says how far apart regions
are. A client of this cluster's own region, of an unknown cluster, or on
127.0.x.x (the host itself: a user's curl) gets no delay.

Clients must connect from their own address for this to see them: the sidecar
proxy and the service mirror's gateway probe bind their pod IP before
connecting, as a pod's packets carry its IP on Kubernetes.

What it reads is cached and read again at most every `refresh` seconds, so a
cluster created later, or a changed wan.json, takes effect without a restart.
A wan.json that cannot be read is logged once and treated as `auto`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from isthmus.adapters.clusterdir import all_clusters
from isthmus.core.wan import AUTO, WanSetting, WanSettingError, cluster_number_of, parse_file

log = logging.getLogger("isthmus.serviceproxy.wan")

WAN_FILE = "wan.json"


def wan_file(home: Path) -> Path:
    return home / WAN_FILE


def read_setting(home: Path) -> WanSetting:
    """The setting in `$ISTHMUS_HOME/wan.json`, `auto` when there is none; raises WanSettingError."""
    try:
        text = wan_file(home).read_text()
    except FileNotFoundError:
        return AUTO
    except OSError as e:
        raise WanSettingError(f"cannot read {wan_file(home)}: {e.strerror or e}") from None
    return parse_file(text)


def write_setting(home: Path, setting: WanSetting) -> None:
    home.mkdir(parents=True, exist_ok=True)
    tmp = wan_file(home).with_suffix(".tmp")
    tmp.write_text(setting.to_json())
    tmp.replace(wan_file(home))


class RegionDelays:
    """Client IP → one-way delay (seconds) for a cluster in `region` (see the module docstring)."""

    def __init__(self, home: Path, region: str, *, refresh: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._home = home
        self._region = region
        self._refresh = refresh
        self._clock = clock
        self._read_at: float | None = None
        self._regions: dict[int, str] = {}
        self._setting = AUTO
        self._complained = False

    def __repr__(self) -> str:
        return (f"<RegionDelays {self._region} {self._setting.describe()}"
                f" clusters={len(self._regions)}>")

    def __call__(self, client_ip: str) -> float:
        k = cluster_number_of(client_ip)
        if k is None:
            return 0.0
        self._maybe_read()
        region = self._regions.get(k)
        if region is None:
            return 0.0
        return self._setting.one_way_s(region, self._region)

    def _maybe_read(self) -> None:
        now = self._clock()
        if self._read_at is not None and now - self._read_at < self._refresh:
            return
        self._read_at = now
        regions: dict[int, str] = {}
        for cdir in all_clusters(self._home):
            try:
                config = cdir.load()
            except (OSError, ValueError, TypeError):
                continue
            regions[config.index] = config.region
        self._regions = regions
        try:
            self._setting = read_setting(self._home)
            self._complained = False
        except WanSettingError as e:
            if not self._complained:
                log.warning("emulated WAN latency: %s; using auto", e)
                self._complained = True
            self._setting = AUTO

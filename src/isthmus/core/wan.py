"""Emulated WAN latency between regions: which delay a connection between two clusters gets.

Embedded clusters all live on one machine's loopback, so two "regions" are
microseconds apart. To make them feel as far apart as their names say, the
service proxy of the serving cluster holds every byte of a connection that
comes from a cluster in another region for half a round trip each way (see
`isthmus.components.serviceproxy`). This module decides how long, and knows
nothing of sockets or clocks:

* `rtt_ms(a, b)` — the round trip between regions `a` and `b` under a
  `WanSetting`: 0 within a region; otherwise the setting's fixed value, or
  (the default, `auto`) the built-in table of typical round trips between
  cloud regions, keyed by metro (`sfo3` → `sfo`): regions of one metro
  (`nyc1`, `nyc3`) are `SAME_METRO_RTT_MS` apart, pairs the table does not
  know `UNKNOWN_PAIR_RTT_MS`.
* `cluster_number_of(ip)` — which embedded cluster an address belongs to
  (cluster k owns 127.k.0.0/16; see `isthmus.core.network`), so the serving
  side can tell where a client connects from.
* `parse_setting` / `WanSetting.to_json` — the `--wan-latency` value and the
  `$ISTHMUS_HOME/wan.json` file that carries it to the cluster processes.

The table's numbers are typical public measurements, rounded; they are a
feel, not a promise.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

SAME_METRO_RTT_MS = 2.0
UNKNOWN_PAIR_RTT_MS = 100.0
MAX_RTT_MS = 10_000.0

# Round trips (ms) between metros, each pair once.
_TABLE: dict[tuple[str, str], float] = {
    ("sfo", "syd"): 150, ("sfo", "nyc"): 70, ("sfo", "tor"): 75, ("sfo", "lon"): 140,
    ("sfo", "ams"): 145, ("sfo", "fra"): 150, ("sfo", "sgp"): 175, ("sfo", "blr"): 230,
    ("nyc", "tor"): 15, ("nyc", "lon"): 75, ("nyc", "ams"): 80, ("nyc", "fra"): 85,
    ("nyc", "sgp"): 230, ("nyc", "syd"): 200, ("nyc", "blr"): 200,
    ("tor", "lon"): 85, ("tor", "ams"): 90, ("tor", "fra"): 95, ("tor", "syd"): 210,
    ("tor", "sgp"): 230, ("tor", "blr"): 210,
    ("lon", "ams"): 10, ("lon", "fra"): 15, ("ams", "fra"): 8,
    ("lon", "sgp"): 165, ("ams", "sgp"): 160, ("fra", "sgp"): 155,
    ("lon", "blr"): 135, ("ams", "blr"): 130, ("fra", "blr"): 125,
    ("lon", "syd"): 270, ("ams", "syd"): 270, ("fra", "syd"): 265,
    ("sgp", "syd"): 90, ("sgp", "blr"): 35, ("syd", "blr"): 150,
}
REGION_RTT_MS: dict[frozenset[str], float] = {frozenset(k): v for k, v in _TABLE.items()}

_METRO = re.compile(r"^([a-z]+)\d*$")


class WanSettingError(ValueError):
    """A `--wan-latency` value or wan.json that cannot be used; the message says what to write."""


def metro(region: str) -> str:
    """`sfo3` → `sfo`; a region not shaped like letters-then-digits is its own metro."""
    m = _METRO.match(region.strip().lower())
    return m.group(1) if m else region.strip().lower()


@dataclass(frozen=True)
class WanSetting:
    """`auto` (fixed_ms None: the region table) or one round trip for every cross-region pair."""

    fixed_ms: float | None = None

    @property
    def enabled(self) -> bool:
        return self.fixed_ms is None or self.fixed_ms > 0

    def rtt_ms(self, a: str, b: str) -> float:
        """The round trip between regions `a` and `b` (0 within one region, or when disabled)."""
        if a == b or not self.enabled:
            return 0.0
        if self.fixed_ms is not None:
            return self.fixed_ms
        ma, mb = metro(a), metro(b)
        if ma == mb:
            return SAME_METRO_RTT_MS
        return REGION_RTT_MS.get(frozenset((ma, mb)), UNKNOWN_PAIR_RTT_MS)

    def one_way_s(self, a: str, b: str) -> float:
        """Half the round trip, in seconds: what each direction of a connection is held."""
        return self.rtt_ms(a, b) / 2000.0

    def describe(self) -> str:
        if self.fixed_ms is None:
            return "auto (typical round trips between the regions, e.g. sfo3-syd1 150 ms)"
        if self.fixed_ms == 0:
            return "off"
        return f"{self.fixed_ms:g} ms round trip between any two regions"

    def to_json(self) -> str:
        return json.dumps({"wan_latency": "auto" if self.fixed_ms is None else self.fixed_ms}) + "\n"


AUTO = WanSetting()
OFF = WanSetting(0.0)


def parse_setting(value: str) -> WanSetting:
    """`auto`, `off`, or a round trip in ms (`150`, `150ms`; `0` is off)."""
    text = value.strip().lower()
    if text in ("auto", "default", ""):
        return AUTO
    if text in ("off", "none", "no"):
        return OFF
    number = text[:-2].strip() if text.endswith("ms") else text
    try:
        ms = float(number)
    except ValueError:
        raise WanSettingError(f"--wan-latency {value!r} is not a round trip in milliseconds; "
                              "use e.g. 150, 0 (off) or auto") from None
    if not 0 <= ms <= MAX_RTT_MS or ms != ms:
        raise WanSettingError(f"--wan-latency {value!r} is out of range; use 0 (off) to "
                              f"{MAX_RTT_MS:g} ms, or auto")
    return WanSetting(ms)


def parse_file(text: str) -> WanSetting:
    """The contents of `$ISTHMUS_HOME/wan.json` (`{"wan_latency": "auto" | <ms>}`)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise WanSettingError(f"wan.json is not JSON ({e}); write "
                              '{"wan_latency": "auto"} or {"wan_latency": 150}') from None
    value = data.get("wan_latency") if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise WanSettingError('wan.json needs "wan_latency": "auto", "off" or a round trip in ms')
    return parse_setting(str(value))


def cluster_number_of(ip: str) -> int | None:
    """The embedded cluster k that owns `ip` (127.k.0.0/16), or None (127.0.x.x, not loopback, bad)."""
    parts = ip.split(".")
    if len(parts) != 4 or parts[0] != "127":
        return None
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        return None
    if any(not 0 <= n <= 255 for n in numbers):
        return None
    k = numbers[1]
    return k if 1 <= k <= 254 else None


def due_at(sent_at: float, *, opened_at: float, one_way: float, towards_server: bool) -> float:
    """When bytes read at `sent_at` are delivered on a connection held `one_way` each direction.

    Loopback completes a client's connect at once, where a WAN costs the TCP
    handshake first: the client's bytes cannot reach the server before
    `opened_at + 3 * one_way` (SYN there, SYN-ACK back, data there). Answers
    take one way. Delivery times only grow, so order is kept.
    """
    if towards_server:
        return max(sent_at + one_way, opened_at + 3 * one_way)
    return sent_at + one_way

"""The loopback address plan of an embedded cluster.

Cluster number k (1..254) owns 127.k.0.0/16:

| what                         | addresses                          |
| ---------------------------- | ---------------------------------- |
| API server                   | 127.k.0.1 (port 6443)              |
| service proxy (HTTP proxy)   | 127.k.0.2 (port 3128)              |
| node i (1-based) host IP     | 127.k.0.(10+i)                     |
| pod IPs                      | 127.k.64.1 - 127.k.127.254         |
| service cluster IPs          | 127.k.128.1 - 127.k.191.254        |
| LoadBalancer ingress IPs     | 127.k.192.1 - 127.k.255.254        |

Only the loopback range is ever used. `Allocator` hands out the lowest free
address of a range; it is pure, the caller records what is in use.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

API_PORT = 6443
HTTP_PROXY_PORT = 3128


@dataclass(frozen=True)
class ClusterNetwork:
    index: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= 254:
            raise ValueError(f"cluster number must be between 1 and 254, not {self.index}")

    @property
    def api_ip(self) -> str:
        return f"127.{self.index}.0.1"

    @property
    def proxy_ip(self) -> str:
        return f"127.{self.index}.0.2"

    def node_ip(self, i: int) -> str:
        return f"127.{self.index}.0.{10 + i}"

    @property
    def pod_range(self) -> tuple[str, str]:
        return f"127.{self.index}.64.1", f"127.{self.index}.127.254"

    @property
    def service_range(self) -> tuple[str, str]:
        return f"127.{self.index}.128.1", f"127.{self.index}.191.254"

    @property
    def lb_range(self) -> tuple[str, str]:
        return f"127.{self.index}.192.1", f"127.{self.index}.255.254"


class RangeExhausted(Exception):
    pass


class Allocator:
    """Lowest-free allocation of IPv4 addresses in [first, last], skipping .0 and .255."""

    def __init__(self, first: str, last: str, in_use: Iterable[str] = ()) -> None:
        self._first = int(ipaddress.IPv4Address(first))
        self._last = int(ipaddress.IPv4Address(last))
        self._used: set[int] = set()
        self._next = self._first
        for ip in in_use:
            self.mark(ip)

    def __repr__(self) -> str:
        return (f"{ipaddress.IPv4Address(self._first)}-{ipaddress.IPv4Address(self._last)}"
                f" ({len(self._used)} in use)")

    def contains(self, ip: str) -> bool:
        try:
            n = int(ipaddress.IPv4Address(ip))
        except ValueError:
            return False
        return self._first <= n <= self._last

    def mark(self, ip: str) -> None:
        if self.contains(ip):
            self._used.add(int(ipaddress.IPv4Address(ip)))

    def release(self, ip: str) -> None:
        if self.contains(ip):
            n = int(ipaddress.IPv4Address(ip))
            self._used.discard(n)
            self._next = min(self._next, n)

    def allocate(self) -> str:
        n = self._next
        while n <= self._last:
            if n not in self._used and n & 0xFF not in (0, 255):
                self._used.add(n)
                self._next = n + 1
                return str(ipaddress.IPv4Address(n))
            n += 1
        raise RangeExhausted(f"no free address left in {ipaddress.IPv4Address(self._first)}-"
                             f"{ipaddress.IPv4Address(self._last)}")

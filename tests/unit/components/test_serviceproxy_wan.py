"""Emulated WAN latency in the service proxy: who is delayed, by how much, and nothing is lost.

Real loopback sockets in 127.252.0.0/16 (high ports); "clusters" 60 and 61 are
only names in a temporary ISTHMUS_HOME. Delays are checked as lower bounds
(bytes are never delivered early), never as upper ones.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from isthmus.adapters.clusterdir import ClusterConfig, ClusterDir
from isthmus.components.serviceproxy import ServiceProxy
from isthmus.components.serviceproxy.wan import RegionDelays, read_setting, write_setting
from isthmus.core.wan import OFF, WanSetting, WanSettingError

BACKEND = "127.252.64.1"
BACKEND_PORT = 18091
LB_IP, SVC_PORT = "127.252.192.1", 18090
CLIENT = "127.252.64.50"
ONE_WAY = 0.05


async def upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An echo backend that upper-cases what it reads, and half-closes after the client does."""
    while data := await reader.read(65536):
        writer.write(data.upper())
        await writer.drain()
    writer.close()


@pytest.fixture
async def delayed() -> AsyncIterator[tuple[ServiceProxy, list[str]]]:
    server = await asyncio.start_server(upper, BACKEND, BACKEND_PORT, reuse_address=True)
    asked: list[str] = []

    def delay(ip: str) -> float:
        asked.append(ip)
        return ONE_WAY if ip == CLIENT else 0.0

    p = ServiceProxy(http_proxy_address=("127.252.0.2", 0), client_delay=delay)
    svc = {"metadata": {"name": "gw", "namespace": "mc"},
           "spec": {"type": "LoadBalancer", "clusterIP": "127.252.128.1",
                    "ports": [{"name": "gw", "port": SVC_PORT}]},
           "status": {"loadBalancer": {"ingress": [{"ip": LB_IP}]}}}
    eps = {"metadata": {"name": "gw", "namespace": "mc"},
           "subsets": [{"addresses": [{"ip": BACKEND}], "ports": [{"name": "gw", "port": BACKEND_PORT}]}]}
    p.update([svc], [eps])
    await p.start()
    await p.synced()
    yield p, asked
    await p.close()
    server.close()
    await server.wait_closed()


async def exchange(local_ip: str, chunks: list[bytes]) -> tuple[bytes, float, float]:
    """Send `chunks` to the load-balancer IP from `local_ip`; (answer, first-byte time, total time)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    reader, writer = await asyncio.open_connection(LB_IP, SVC_PORT, local_addr=(local_ip, 0))
    for chunk in chunks:
        writer.write(chunk)
    await writer.drain()
    first = await asyncio.wait_for(reader.read(1), 10)
    first_at = loop.time() - start
    writer.write_eof()
    rest = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return first + rest, first_at, loop.time() - start


async def test_a_far_client_waits_a_handshake_and_a_round_trip_and_gets_every_byte(
        delayed: tuple[ServiceProxy, list[str]]) -> None:
    _, asked = delayed
    chunks = [f"chunk {i} ".encode() * 500 for i in range(50)]
    answer, first_at, _ = await exchange(CLIENT, chunks)
    assert answer == b"".join(chunks).upper()  # every byte, in order
    # A handshake (2 one-ways) before the request goes (1), and the answer's way back (1).
    assert first_at >= 4 * ONE_WAY * 0.95
    assert CLIENT in asked


async def test_the_client_address_decides_the_delay(delayed: tuple[ServiceProxy, list[str]]) -> None:
    _, asked = delayed
    answer, _, _ = await exchange("127.252.64.51", [b"near"])
    assert answer == b"NEAR"
    assert asked == ["127.252.64.51"]


def make_home(tmp_path: Path, clusters: dict[str, tuple[int, str]]) -> Path:
    home = tmp_path / "home"
    for name, (index, region) in clusters.items():
        ClusterDir(home, name).save(ClusterConfig(name=name, region=region, nodes=1, index=index))
    return home


def test_region_delays_follow_the_clusters_regions_and_the_setting(tmp_path: Path) -> None:
    home = make_home(tmp_path, {"west": (60, "sfo3"), "east": (61, "syd1")})
    now = [0.0]
    delays = RegionDelays(home, "syd1", refresh=2.0, clock=lambda: now[0])
    assert delays("127.60.64.10") == pytest.approx(0.075)  # a west pod: sfo3-syd1 is 150 ms
    assert delays("127.61.64.3") == 0.0  # east's own pod
    assert delays("127.0.0.1") == 0.0  # the host itself
    assert delays("127.62.64.1") == 0.0  # no such cluster here
    write_setting(home, WanSetting(40))
    assert delays("127.60.64.10") == pytest.approx(0.075)  # read again only after `refresh`
    now[0] = 2.5
    assert delays("127.60.64.10") == pytest.approx(0.020)
    make_home(tmp_path, {"north": (62, "fra1")})
    write_setting(home, OFF)
    now[0] = 5.0
    assert delays("127.62.64.1") == 0.0 and delays("127.60.64.10") == 0.0
    write_setting(home, WanSetting(None))
    now[0] = 7.5
    assert delays("127.62.64.1") == pytest.approx(0.1325)  # fra-syd 265 ms


def test_a_bad_wan_file_is_one_warning_and_auto(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    home = make_home(tmp_path, {"west": (60, "sfo3")})
    (home / "wan.json").write_text(json.dumps({"wan_latency": "soon"}))
    with pytest.raises(WanSettingError, match="not a round trip"):
        read_setting(home)
    now = [0.0]
    delays = RegionDelays(home, "syd1", clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="isthmus.serviceproxy.wan"):
        assert delays("127.60.64.10") == pytest.approx(0.075)
        now[0] = 10.0
        assert delays("127.60.64.10") == pytest.approx(0.075)
    assert [r.getMessage() for r in caplog.records] == [
        "emulated WAN latency: --wan-latency 'soon' is not a round trip in milliseconds; "
        "use e.g. 150, 0 (off) or auto; using auto"]


async def test_an_open_connection_follows_a_changed_setting(delayed: tuple[ServiceProxy, list[str]]) -> None:
    """The delay is asked for each chunk, so `--wan-latency` reaches pooled connections too."""
    _, asked = delayed
    reader, writer = await asyncio.open_connection(LB_IP, SVC_PORT, local_addr=(CLIENT, 0))
    counts = []
    for word in (b"one", b"two"):
        writer.write(word)
        assert await asyncio.wait_for(reader.readexactly(3), 10) == word.upper()
        counts.append(asked.count(CLIENT))
    writer.close()
    assert counts[0] >= 3 and counts[1] >= counts[0] + 2  # at accept, then each chunk each way

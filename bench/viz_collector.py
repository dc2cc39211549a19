"""Benchmark: the viz collector scraping 200 proxies every 10 s — its CPU and memory.

The 200 targets are one separate process (so its CPU is not counted)
serving, on 200 loopback addresses (127.77.0.1-200, port 4191), what a
meshed emojivoto web pod's proxy serves: the proxy's own registry
(`proxy_metrics`) with the series such a proxy has (inbound from three
clients, outbound to two services with 200 and 500 answers, route metrics
for four routes), counters moving on every scrape — about 430 sample lines,
360 of which viz keeps.

The collector runs in this process exactly as in the viz pod (aiohttp
session, the exposition reader, `TargetHistory`), with its clock advanced 10 s
per round so that 366 rounds fill the fine ring (10 min) and the coarse ring
(1 h): the memory then is what the collector holds at steady state. Rounds
run back to back; CPU per round over the 10 s interval is the share of one
core the collector needs. Also timed: answering `stat` over all 200 pods
for 1 min and 1 h windows (the viz API's heaviest read).

    .venv/bin/python bench/viz_collector.py [--targets 200] [--rounds 366] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

TARGETS_SCRIPT = textwrap.dedent('''
    import asyncio, sys
    from aiohttp import web
    from isthmus.core.proxy.metrics import (http_labels, proxy_metrics, response_labels,
                                            route_labels, tcp_labels)

    n = int(sys.argv[1])
    registries = []
    for i in range(n):
        m = proxy_metrics()
        cells = []
        for client in ("vote-bot", "web-a", "web-b"):
            base = http_labels(direction="inbound", tls="true",
                               client_id=f"{client}.emojivoto.serviceaccount.identity.isthmus.cluster.local")
            cells.append(m.response_total.cell(response_labels(base, 200)))
            cells.append(m.request_total.cell(base))
            m.response_latency_ms.cell(response_labels(base, 200)[:-1]).observe(12)
        for svc in ("emoji-svc", "voting-svc"):
            base = http_labels(direction="outbound", authority=f"{svc}.emojivoto:8080",
                               server_id=f"{svc}.emojivoto.serviceaccount.identity.isthmus.cluster.local",
                               dst_namespace="emojivoto", dst_service=svc, dst_deployment=svc[:-4],
                               dst_pod=f"{svc[:-4]}-{i}")
            for status in (200, 500):
                cells.append(m.response_total.cell(response_labels(base, status)))
                m.response_latency_ms.cell(response_labels(base, status)[:-1]).observe(3)
        for direction, peer in (("inbound", "src"), ("outbound", "dst")):
            m.tcp_open_connections.cell(tcp_labels(direction=direction, peer=peer)).value = 2
            cells.append(m.tcp_open_total.cell(tcp_labels(direction=direction, peer=peer)))
        for route in ("GET /api/list", "GET /api/vote", "GET /api/leaderboard", "GET /"):
            base = route_labels(direction="inbound", dst="web-svc.emojivoto:80", rt_route=route)
            m.route_response_latency_ms.cell(response_labels(base, 200)[:-1]).observe(20)
            cells.append(m.route_response_total.cell(response_labels(base, 200)))
            cells.append(m.route_request_total.cell(base))
        registries.append((m.registry, cells))

    async def main():
        runners = []
        for i, (registry, cells) in enumerate(registries):
            async def metrics(request, registry=registry, cells=cells):
                for c in cells:
                    c.value += 7
                return web.Response(text=registry.render())
            app = web.Application()
            app.router.add_get("/metrics", metrics)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, f"127.77.{(i + 1) // 250}.{(i + 1) % 250 + 1}", 4191).start()
            runners.append(runner)
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
''')


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run(targets: int, rounds: int) -> dict[str, object]:
    from isthmus.components.viz.collector import Collector, EmbeddedSource
    from isthmus.core.viz.query import GAUGE_NAMES, HTTP_NAMES, StatTarget, stat

    now = [time.time()]
    collector = Collector(interval=10, timeout=5, clock=lambda: now[0])
    for i in range(targets):
        ip = f"127.77.{(i + 1) // 250}.{(i + 1) % 250 + 1}"
        collector.on_pod("ADDED", {
            "metadata": {"name": f"web-{i}", "namespace": "emojivoto",
                         "labels": {"isthmus.io/control-plane-ns": "isthmus",
                                    "isthmus.io/proxy-deployment": f"web-{i % 20}"}},
            "spec": {"serviceAccountName": "web", "containers": [{"name": "isthmus-proxy"}]},
            "status": {"podIP": ip, "phase": "Running"}})
    gc.collect()
    rss_before = _rss_mib()
    per_round: list[float] = []
    wall: list[float] = []
    for _ in range(rounds):
        cpu0, t0 = _cpu(), time.perf_counter()
        await collector.scrape_round()
        per_round.append(_cpu() - cpu0)
        wall.append(time.perf_counter() - t0)
        now[0] += 10
    gc.collect()
    rss_after = _rss_mib()
    source = EmbeddedSource(collector)
    rows = [StatTarget("deployment", "emojivoto", f"web-{i}", 10, 10) for i in range(20)]
    query: dict[str, float] = {}
    for label, window in (("1m", 60.0), ("1h", 3600.0)):
        t0 = time.perf_counter()
        stat(rows, await source.increases(HTTP_NAMES, window), await source.gauges(GAUGE_NAMES),
             window)
        query[label] = time.perf_counter() - t0
    await collector.close()
    per_round.sort()
    steady = per_round[len(per_round) // 10:]  # the first rounds open connections
    mean_cpu = sum(steady) / len(steady)
    return {
        "targets": targets, "rounds": rounds,
        "scrapes": collector.scrapes,
        "series": sum(t.history.series_count for t in collector.targets.values()),
        "cpu_per_round_s": round(mean_cpu, 4),
        "cpu_share_at_10s": round(mean_cpu / 10, 4),
        "round_wall_p50_s": round(sorted(wall)[len(wall) // 2], 4),
        "rss_before_mib": round(rss_before, 1), "rss_after_mib": round(rss_after, 1),
        "history_mib": round(rss_after - rss_before, 1),
        "stat_query_s": {k: round(v, 4) for k, v in query.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=366)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    server = subprocess.Popen([sys.executable, "-c", TARGETS_SCRIPT, str(args.targets)],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise SystemExit("the target server did not start")
        import uvloop

        result = uvloop.run(run(args.targets, args.rounds))
    finally:
        server.terminate()
        server.wait(10)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Benchmark: write throughput and watch delivery delay of the embedded API server.

Starts a fresh embedded cluster (in a temporary ISTHMUS_HOME), opens W watches
on Services across all namespaces, creates N Services with C concurrent
writers, and reports:
  - writes/s (N / time from the first request to the last acknowledgement),
  - delivery delay at the watchers, p50/p99/max (time from sending the create
    to the watcher reading the event, so it includes the write itself),
  - the API server's peak RSS.
Writers and watchers run in two separate processes beside the server, all on
this machine over loopback TLS.

    .venv/bin/python bench/watch_fanout.py [--services 5000] [--watchers 100] [--writers 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import uvloop
from _stats import cpu_seconds, memory_kb, pct

ROOT = Path(__file__).resolve().parent.parent
ISTHMUS = str(Path(sys.executable).parent / "isthmus")


def ssl_ctx(pki: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return ctx


def watchers_main(api: str, pki: str, n_watchers: int, n_services: int, ready: mp.Event,  # type: ignore[valid-type]
                  results: mp.Queue) -> None:  # type: ignore[type-arg]
    async def run() -> None:
        ctx = ssl_ctx(Path(pki))
        conn = aiohttp.TCPConnector(ssl=ctx, limit=0)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=None)) as s:
            arrivals: list[dict[str, float]] = [{} for _ in range(n_watchers)]
            started = 0

            async def watch(i: int) -> None:
                nonlocal started
                url = f"{api}/api/v1/services?watch=true&resourceVersion={rv}"
                async with s.get(url) as r:
                    started += 1
                    if started == n_watchers:
                        ready.set()  # type: ignore[attr-defined]
                    seen = arrivals[i]
                    buf = b""
                    async for chunk in r.content.iter_any():
                        now = time.time()
                        buf += chunk
                        *lines, buf = buf.split(b"\n")
                        for line in lines:
                            # The name is all we need: find it without a full JSON parse.
                            j = line.find(b'"name":"bench-')
                            if j >= 0:
                                name = line[j + 8:line.index(b'"', j + 8)].decode()
                                seen[name] = now
                        if len(seen) >= n_services:
                            return

            async with s.get(f"{api}/api/v1/services?limit=1") as r:
                rv = (await r.json())["metadata"]["resourceVersion"]
            await asyncio.gather(*(watch(i) for i in range(n_watchers)))
            results.put(arrivals)

    uvloop.run(run())


async def write_all(api: str, pki: Path, n: int, concurrency: int) -> tuple[dict[str, float], float, float]:
    ctx = ssl_ctx(pki)
    sent: dict[str, float] = {}
    conn = aiohttp.TCPConnector(ssl=ctx, limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as s:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                name = f"bench-{i:05d}"
                body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "bench",
                        "labels": {"app": "bench"}},
                        "spec": {"selector": {"app": "bench"}, "ports": [{"port": 80, "targetPort": 8080}]}}
                sent[name] = time.time()
                async with s.post(f"{api}/api/v1/namespaces/bench/services", json=body) as r:
                    if r.status != 201:
                        raise RuntimeError(f"create {name}: {r.status} {await r.text()}")
                    await r.read()

        t0 = time.time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        t1 = time.time()
    return sent, t0, t1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=5000)
    ap.add_argument("--watchers", type=int, default=100)
    ap.add_argument("--writers", type=int, default=32)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--api-only", action="store_true",
                    help="run the API server alone (no controllers, pods or service proxy)")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="isthmus-bench-"))
    env = dict(os.environ, ISTHMUS_HOME=str(home), KUBECONFIG=str(home / "kubeconfig"),
               ISTHMUS_FIRST_CLUSTER_NUMBER="230", **({"ISTHMUS_API_ONLY": "1"} if args.api_only else {}))
    subprocess.run([ISTHMUS, "cluster", "create", "bench", "--region", "bench1", "--nodes", "1"], env=env,
                   check=True, capture_output=True)
    cdir = home / "clusters" / "bench"
    pid = int((cdir / "apiserver.pid").read_text())
    index = json.loads((cdir / "cluster.json").read_text())["index"]
    api = f"https://127.{index}.0.1:6443"
    try:
        subprocess.run(["kubectl", "--context=bench", "create", "namespace", "bench"], env=env, check=True,
                       capture_output=True)
        rss_before = memory_kb(pid)[0]
        profiler = None
        if os.environ.get("ISTHMUS_BENCH_PROFILE"):  # where the server's time goes (py-spy, speedscope format)
            profiler = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
                                         "--format", "speedscope", "-o", os.environ["ISTHMUS_BENCH_PROFILE"]],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ready = mp.Event()
        results: mp.Queue = mp.Queue()  # type: ignore[type-arg]
        wp = mp.Process(target=watchers_main, args=(api, str(cdir / "pki"), args.watchers, args.services,
                                                    ready, results))
        wp.start()
        if not ready.wait(60):
            raise SystemExit("watchers did not start")
        time.sleep(0.5)
        cpu0 = cpu_seconds(pid)
        sent, t0, t1 = uvloop.run(write_all(api, cdir / "pki", args.services, args.writers))
        cpu1 = cpu_seconds(pid)
        arrivals = results.get(timeout=300)
        wp.join(30)
        if profiler is not None:
            profiler.send_signal(2)
            profiler.wait(30)
        rss_after, rss_peak = memory_kb(pid)
        delays = [(seen[name] - sent[name]) * 1000 for seen in arrivals for name in seen if name in sent]
        missing = args.services * args.watchers - len(delays)
        result = {
            "cluster": "API server alone" if args.api_only else "whole cluster (controllers, service proxy)",
            "services": args.services, "watchers": args.watchers, "writers": args.writers,
            "writes_per_s": round(args.services / (t1 - t0), 1),
            "delivery_ms_p50": round(pct(delays, 50), 1), "delivery_ms_p99": round(pct(delays, 99), 1),
            "delivery_ms_max": round(max(delays), 1), "events_delivered": len(delays), "events_missing": missing,
            "server_rss_mb_before": round(rss_before / 1024, 1), "server_rss_mb_after": round(rss_after / 1024, 1),
            "server_rss_mb_peak": round(rss_peak / 1024, 1),
            "server_cpu_share": round((cpu1 - cpu0) / (t1 - t0), 2),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        }
        if args.json:
            print(json.dumps(result))
        else:
            for k, v in result.items():
                print(f"{k:24} {v}")
        print(f"median delay {statistics.median(delays):.1f} ms", file=sys.stderr)
    finally:
        subprocess.run([ISTHMUS, "cluster", "delete", "bench"], env=env, capture_output=True)


if __name__ == "__main__":
    main()

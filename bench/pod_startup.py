"""Benchmark: how fast the embedded cluster turns a Deployment into Ready pods.

Starts a fresh embedded cluster (temporary ISTHMUS_HOME), then for 1, 10 and
50 replicas of a small Python HTTP server (readiness probe on it) applies the
Deployment with the real kubectl and watches the pods through the API:
  - time from `kubectl apply` to all pods Ready,
  - per pod: time from the pod's first appearance in the watch to Ready (p50/p90/max),
  - the cluster process's CPU seconds and peak RSS (API server, controllers and
    pod runner together; the pods' own processes are not counted).

    .venv/bin/python bench/pod_startup.py [--replicas 1,10,50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from _stats import cpu_seconds, memory_kb, pct

ISTHMUS = str(Path(sys.executable).parent / "isthmus")

SERVER = ("import http.server,os;"
          "h=type('H',(http.server.BaseHTTPRequestHandler,),{'do_GET':lambda s:(s.send_response(200),s.end_headers()),"
          "'log_message':lambda *a:None});"
          "http.server.HTTPServer((os.environ['POD_IP'],8080),h).serve_forever()")


def deployment(name: str, replicas: int) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{
                         "name": "srv", "image": "python", "command": ["python3", "-c", SERVER],
                         "ports": [{"containerPort": 8080, "name": "http"}],
                         "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}}]}}}}


async def run_round(api: str, ctx: ssl.SSLContext, env: dict[str, str], ns: str, replicas: int) -> dict:
    subprocess.run(["kubectl", "--context=bench", "create", "namespace", ns], env=env, check=True,
                   capture_output=True)
    seen: dict[str, float] = {}
    ready: dict[str, float] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx),
                                     timeout=aiohttp.ClientTimeout(total=None)) as s:
        async def watch() -> None:
            async with s.get(f"{api}/api/v1/namespaces/{ns}/pods?watch=true") as r:
                async for line in r.content:
                    ev = json.loads(line)
                    pod = ev["object"]
                    name = pod["metadata"]["name"]
                    now = time.monotonic()
                    seen.setdefault(name, now)
                    conds = (pod.get("status") or {}).get("conditions") or []
                    if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                        ready.setdefault(name, now)
                    if len(ready) >= replicas:
                        return

        task = asyncio.create_task(watch())
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            "kubectl", "--context=bench", "-n", ns, "apply", "-f", "-", env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL)
        await proc.communicate(json.dumps(deployment("srv", replicas)).encode())
        await asyncio.wait_for(task, 120)
        t1 = time.monotonic()
    starts = [ready[n] - seen[n] for n in ready]
    subprocess.run(["kubectl", "--context=bench", "delete", "namespace", ns], env=env, check=True,
                   capture_output=True)
    return {"replicas": replicas, "all_ready_s": round(t1 - t0, 2),
            "pod_start_p50_s": round(pct(starts, 50), 2), "pod_start_p90_s": round(pct(starts, 90), 2),
            "pod_start_max_s": round(max(starts), 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", default="1,10,50")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="isthmus-bench-"))
    env = dict(os.environ, ISTHMUS_HOME=str(home), KUBECONFIG=str(home / "kubeconfig"),
               ISTHMUS_FIRST_CLUSTER_NUMBER="231")
    subprocess.run([ISTHMUS, "cluster", "create", "bench", "--region", "bench1", "--nodes", "3"], env=env,
                   check=True, capture_output=True)
    cdir = home / "clusters" / "bench"
    pid = int((cdir / "apiserver.pid").read_text())
    index = json.loads((cdir / "cluster.json").read_text())["index"]
    api = f"https://127.{index}.0.1:6443"
    ctx = ssl.create_default_context(cafile=str(cdir / "pki" / "ca.crt"))
    ctx.load_cert_chain(str(cdir / "pki" / "admin.crt"), str(cdir / "pki" / "admin.key"))
    try:
        for n in [int(x) for x in args.replicas.split(",")]:
            cpu0 = cpu_seconds(pid)
            result = asyncio.run(run_round(api, ctx, env, f"bench-{n}", n))
            result["cluster_cpu_s"] = round(cpu_seconds(pid) - cpu0, 2)
            result["cluster_peak_rss_mb"] = round(memory_kb(pid)[1] / 1024, 1)
            print(json.dumps(result))
            time.sleep(2)
        print(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                                     f"Python {platform.python_version()}"}))
    finally:
        subprocess.run([ISTHMUS, "cluster", "delete", "bench"], env=env, capture_output=True)


if __name__ == "__main__":
    main()

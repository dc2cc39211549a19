"""Benchmark: how fast the service mirror follows exports, one at a time and 5,000 at once.

Starts two embedded clusters, west and east (a temporary ISTHMUS_HOME, one
node each), applies the Link CRD and a Link to west (credentials: east's
admin kubeconfig context; the gateway: a small HTTPS server on one of east's
loopback addresses answering /ready 200 over mTLS, the mirror presenting a
certificate of the same test trust anchor), and runs the service mirror as its
own process (`isthmus service-mirror` when the CLI has it, else the same
command function through typer). A watch on west's mirror Endpoints
(label mirror.isthmus.io/cluster-name=east) times when each mirror gets a
ready address.

1. Latency: N services (no selector, one ready endpoint each) exist in east,
   not exported. One at a time, the label mirror.isthmus.io/exported=true is
   added with an API patch; the time from sending the patch to the mirror's
   Endpoints with a ready address arriving on the watch, p50/p99/max.
2. Exported at once: M more services are created in east, then all exported
   (32 concurrent patches) while the mirror runs; the seconds from the first
   patch to the last mirror ready (bounded by how fast east takes the
   patches, also reported), and the mirror process's RSS and CPU seconds.
3. Restart: the mirror is stopped and started again with every mirror in
   place; the seconds until the Link's status says Ready with every service
   mirrored, and how many mirror objects it rewrote (none are expected).
4. Cold start: west's mirrors are deleted (their namespaces re-created) and
   the mirror started with all N + M services exported; the seconds until
   the last mirror is ready, its CPU seconds and RSS.

    .venv/bin/python bench/mirror_latency.py [--latency 100] [--scale 5000] [--workers 4] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import os
import platform
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
import yaml
from _stats import cpu_seconds, memory_kb, pct

ROOT = Path(__file__).resolve().parent.parent
ISTHMUS = str(Path(sys.executable).parent / "isthmus")
sys.path.insert(0, str(ROOT / "src"))

from isthmus.adapters.x509 import Credentials, issue_leaf, new_issuer, new_root  # noqa: E402
from isthmus.components.identity.tlsconfig import server_context  # noqa: E402
from isthmus.resources.multicluster import link_crd  # noqa: E402

MC_NS = "isthmus-multicluster"
EXPORTED = "mirror.isthmus.io/exported"


def ssl_ctx(pki: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return ctx


GATEWAY_ID = "isthmus-gateway.isthmus-multicluster.serviceaccount.identity.isthmus.cluster.local"
MIRROR_ID = "isthmus-service-mirror-east.isthmus-multicluster.serviceaccount.identity.isthmus.cluster.local"


def probe_pki(home: Path) -> ssl.SSLContext:
    """A trust anchor, the mirror's probe certificate (files for its flags) and the gateway's TLS context."""
    now = datetime.now(UTC) - timedelta(minutes=5)
    root = new_root(now=now)
    issuer = new_issuer(root, now=now)
    mirror = issue_leaf(issuer, MIRROR_ID, now=now)
    gateway = issue_leaf(issuer, GATEWAY_ID, now=now)
    (home / "probe.crt").write_bytes(mirror.cert_pem + issuer.cert_pem)
    (home / "probe.key").write_bytes(mirror.key_pem)
    (home / "probe.key").chmod(0o600)
    (home / "anchors.pem").write_bytes(root.cert_pem)
    return server_context(Credentials(gateway.cert_pem + issuer.cert_pem, gateway.key_pem), root.cert_pem,
                          require_client_cert=True)


class Gateway:
    """`/ready` 200 over mTLS on ADDRESS:4191, as a gateway's probe listener answers."""

    def __init__(self, address: str, ctx: ssl.SSLContext) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((address, 4191), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.s, self.base = session, base

    async def call(self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = (200, 201),
                   content_type: str = "application/json") -> Any:
        async with self.s.request(method, self.base + path, data=json.dumps(body) if body is not None else None,
                                  headers={"Content-Type": content_type}) as r:
            if r.status not in ok:
                raise RuntimeError(f"{method} {path}: {r.status} {await r.text()}")
            return await r.json()


def service(ns: str, name: str, exported: bool = False) -> dict[str, Any]:
    labels = {"app": name, **({EXPORTED: "true"} if exported else {})}
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def endpoints(ns: str, name: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns},
            "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "http", "port": 8080}]}]}


async def pooled(n: int, concurrency: int, job: Any) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            await job(queue.get_nowait())
    await asyncio.gather(*(worker() for _ in range(concurrency)))


class ReadyWatch:
    """West's mirror Endpoints, as they arrive: when each first had a ready address."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.s, self.base = session, base
        self.ready_at: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Event] = {}
        self.opened = asyncio.Event()

    def wait(self, name: str) -> asyncio.Event:
        return self.waiters.setdefault(name, asyncio.Event())

    async def run(self) -> None:
        selector = "mirror.isthmus.io%2Fcluster-name%3Deast"
        async with self.s.get(f"{self.base}/api/v1/endpoints?labelSelector={selector}&limit=1") as r:
            rv = (await r.json())["metadata"]["resourceVersion"]
        url = f"{self.base}/api/v1/endpoints?watch=true&labelSelector={selector}&resourceVersion={rv}"
        async with self.s.get(url, timeout=aiohttp.ClientTimeout(total=None)) as r:
            self.opened.set()
            buf = b""
            async for chunk in r.content.iter_any():
                now = time.monotonic()
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    obj = ev.get("object") or {}
                    name = (obj.get("metadata") or {}).get("name")
                    if ev.get("type") == "DELETED" or not name:
                        continue
                    if any(s.get("addresses") for s in obj.get("subsets") or ()) and name not in self.ready_at:
                        self.ready_at[name] = now
                        self.wait(name).set()


class MirrorProcess:
    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.command, self.env, self.log = command, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        self.proc = subprocess.Popen(self.command, env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"))  # noqa: SIM115
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def mirror_command(env: dict[str, str], workers: int, home: Path) -> list[str]:
    args = ["--link", "east", "--context", "west", "--admin-addr", "127.0.0.1:0", "--workers", str(workers),
            "--log-level", "info", "--identity-cert", str(home / "probe.crt"), "--identity-key",
            str(home / "probe.key"), "--trust-anchors", str(home / "anchors.pem")]
    probe = subprocess.run([ISTHMUS, "service-mirror", "--help"], env=env, capture_output=True)
    if probe.returncode == 0:
        return [ISTHMUS, "service-mirror", *args]
    code = "import typer; from isthmus.cli.mirror import service_mirror_cmd as c; typer.run(c)"
    return [sys.executable, "-c", code, *args]


async def wait_all(watch: ReadyWatch, watch_task: asyncio.Task[None], names: list[str], what: str) -> float:
    """Wait until every name was seen ready on the watch; the (monotonic) time the last one was."""
    deadline = time.monotonic() + 900
    while (left := [n for n in names if n not in watch.ready_at]):
        if time.monotonic() > deadline or watch_task.done():
            raise SystemExit(f"{what}: {len(left)} mirrors not seen ready (watch ended: {watch_task.done()})")
        print(f"{what}: {len(names) - len(left)}/{len(names)} mirrored", file=sys.stderr)
        await asyncio.sleep(1)
    return max(watch.ready_at[n] for n in names)


async def measure(args: argparse.Namespace, west_api: str, east_api: str, west_pki: Path, east_pki: Path,
                  east_index: int, mirror: MirrorProcess, mirror_pid: int, servers: dict[str, int]) -> dict[str, Any]:
    west_conn = aiohttp.TCPConnector(ssl=ssl_ctx(west_pki), limit=0)
    east_conn = aiohttp.TCPConnector(ssl=ssl_ctx(east_pki), limit=64)
    async with aiohttp.ClientSession(connector=west_conn) as ws, aiohttp.ClientSession(connector=east_conn) as es:
        east = Api(es, east_api)
        watch = ReadyWatch(ws, west_api)
        watch_task = asyncio.create_task(watch.run())
        await watch.opened.wait()
        for ns in ("lat", "scale"):
            await east.call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                           "metadata": {"name": ns}})
            await Api(ws, west_api).call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                                       "metadata": {"name": ns}})
        ip = f"127.{east_index}.64.250"

        async def create(ns: str, name: str) -> None:
            await east.call("POST", f"/api/v1/namespaces/{ns}/services", service(ns, name))
            await east.call("POST", f"/api/v1/namespaces/{ns}/endpoints", endpoints(ns, name, ip))

        async def settle(ns: str, names: list[str]) -> None:
            """East's Endpoints controller deletes Endpoints it sees before their Service reaches its
            cache: write the missing ones again until all stay."""
            stable = 0
            while stable < 2:
                listed = await east.call("GET", f"/api/v1/namespaces/{ns}/endpoints")
                missing = set(names) - {i["metadata"]["name"] for i in listed["items"]}
                stable = stable + 1 if not missing else 0
                await asyncio.gather(*(east.call("POST", f"/api/v1/namespaces/{ns}/endpoints",
                                                 endpoints(ns, n, ip), ok=(201, 409)) for n in missing))
                await asyncio.sleep(1)

        async def export(ns: str, name: str) -> None:
            await east.call("PATCH", f"/api/v1/namespaces/{ns}/services/{name}",
                            {"metadata": {"labels": {EXPORTED: "true"}}},
                            content_type="application/merge-patch+json")

        # 1. one export at a time
        await pooled(args.latency, 16, lambda i: create("lat", f"lat-{i:04d}"))
        await settle("lat", [f"lat-{i:04d}" for i in range(args.latency)])
        latencies = []
        for i in range(args.latency):
            name = f"lat-{i:04d}"
            ready = watch.wait(f"{name}-east")
            t0 = time.monotonic()
            await export("lat", name)
            try:
                await asyncio.wait_for(ready.wait(), 60)
            except TimeoutError:
                west = Api(ws, west_api)
                got = await west.call("GET", f"/api/v1/namespaces/lat/endpoints/{name}-east", ok=(200, 404))
                raise SystemExit(f"{name}-east not seen ready on the watch (watch ended: {watch_task.done()}); "
                                 f"west has: {json.dumps(got)}") from None
            latencies.append((watch.ready_at[f"{name}-east"] - t0) * 1000)

        # 2. many exports at once
        t_create = time.monotonic()
        await pooled(args.scale, 32, lambda i: create("scale", f"s-{i:05d}"))
        create_s = time.monotonic() - t_create
        await settle("scale", [f"s-{i:05d}" for i in range(args.scale)])
        await asyncio.sleep(3)  # let the mirror take in the new (unexported) services
        rss0 = memory_kb(mirror_pid)[0]
        cpu0 = cpu_seconds(mirror_pid)
        api0 = {n: cpu_seconds(p) for n, p in servers.items()}
        t0 = time.monotonic()
        export_done = 0.0

        async def export_all() -> None:
            nonlocal export_done
            await pooled(args.scale, 32, lambda i: export("scale", f"s-{i:05d}"))
            export_done = time.monotonic() - t0
        exporting = asyncio.create_task(export_all())
        names = [f"s-{i:05d}-east" for i in range(args.scale)]
        last = await wait_all(watch, watch_task, names, "exported at once")
        await exporting
        cpu1 = cpu_seconds(mirror_pid)
        rss1, peak = memory_kb(mirror_pid)
        result: dict[str, Any] = {
            "latency_services": args.latency,
            "latency_ms_p50": round(pct(latencies, 50), 1), "latency_ms_p99": round(pct(latencies, 99), 1),
            "latency_ms_max": round(max(latencies), 1),
            "scale_services": args.scale,
            "scale_create_s": round(create_s, 1),
            "scale_export_patches_s": round(export_done, 1),
            "scale_all_mirrored_s": round(last - t0, 1),
            "mirror_cpu_s_during_scale": round(cpu1 - cpu0, 1),
            "west_api_cpu_s_during_scale": round(cpu_seconds(servers["west"]) - api0["west"], 1),
            "east_api_cpu_s_during_scale": round(cpu_seconds(servers["east"]) - api0["east"], 1),
            "mirror_rss_mb_before_scale": round(rss0 / 1024, 1), "mirror_rss_mb_after": round(rss1 / 1024, 1),
            "mirror_rss_mb_peak": round(peak / 1024, 1),
        }

        # 3. a restart with every mirror in place: how long until it is in sync, and what it rewrites
        west = Api(ws, west_api)
        total = args.latency + args.scale

        async def versions() -> dict[str, str]:
            out = {}
            for kind in ("services", "endpoints"):
                listed = await west.call("GET", f"/api/v1/{kind}?labelSelector=mirror.isthmus.io%2Fcluster-name%3Deast")
                out.update({f"{kind}/{i['metadata']['namespace']}/{i['metadata']['name']}":
                            i["metadata"]["resourceVersion"] for i in listed["items"]})
            return out

        mirror.stop()
        link_path = f"/apis/multicluster.isthmus.io/v1alpha1/namespaces/{MC_NS}/links/east"
        await west.call("PATCH", f"{link_path}/status", [{"op": "add", "path": "/status", "value": {}}],
                        content_type="application/json-patch+json")
        before = await versions()
        t0 = time.monotonic()
        pid = mirror.start()
        while True:
            status = (await west.call("GET", link_path)).get("status") or {}
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or ())
            if ready and status.get("mirroredServiceCount") == total:
                break
            await asyncio.sleep(0.2)
        result["restart_in_sync_s"] = round(time.monotonic() - t0, 1)
        await asyncio.sleep(2)
        after = await versions()
        result["restart_objects_rewritten"] = sum(1 for k, v in after.items() if before.get(k) != v)
        result["restart_rss_mb"] = round(memory_kb(pid)[0] / 1024, 1)

        # 4. a cold start: the mirror starts with every remote service exported and no mirror yet
        mirror.stop()
        for ns in ("lat", "scale"):
            await west.call("DELETE", f"/api/v1/namespaces/{ns}")
            while (await west.call("GET", f"/api/v1/namespaces/{ns}", ok=(200, 404))).get("kind") == "Namespace":
                await asyncio.sleep(0.2)
            await west.call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                           "metadata": {"name": ns}})
        watch.ready_at.clear()
        watch.waiters.clear()
        t0 = time.monotonic()
        pid = mirror.start()
        cpu0 = cpu_seconds(pid)
        api0 = {n: cpu_seconds(p) for n, p in servers.items()}
        names = [f"s-{i:05d}-east" for i in range(args.scale)] + [f"lat-{i:04d}-east" for i in range(args.latency)]
        last = await wait_all(watch, watch_task, names, "cold start")
        rss1, peak = memory_kb(pid)
        result.update({
            "cold_start_services": len(names),
            "cold_start_all_mirrored_s": round(last - t0, 1),
            "cold_start_mirror_cpu_s": round(cpu_seconds(pid) - cpu0, 1),
            "cold_start_west_api_cpu_s": round(cpu_seconds(servers["west"]) - api0["west"], 1),
            "cold_start_east_api_cpu_s": round(cpu_seconds(servers["east"]) - api0["east"], 1),
            "cold_start_rss_mb": round(rss1 / 1024, 1), "cold_start_rss_mb_peak": round(peak / 1024, 1),
        })
        watch_task.cancel()
        return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=int, default=100, help="services exported one at a time")
    ap.add_argument("--scale", type=int, default=5000, help="services exported at once")
    ap.add_argument("--workers", type=int, default=4, help="the mirror's --workers")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="isthmus-bench-mirror-"))
    env = dict(os.environ, ISTHMUS_HOME=str(home), KUBECONFIG=str(home / "kubeconfig"),
               ISTHMUS_FIRST_CLUSTER_NUMBER="240")
    created: list[str] = []
    mirror: MirrorProcess | None = None
    gateway: Gateway | None = None

    def kubectl(*a: str, input: str | None = None) -> str:
        return subprocess.run(["kubectl", *a], env=env, check=True, capture_output=True, text=True,
                              input=input).stdout

    try:
        for name, region in (("west", "sfo3"), ("east", "syd1")):
            subprocess.run([ISTHMUS, "cluster", "create", name, "--region", region, "--nodes", "1"], env=env,
                           check=True, capture_output=True)
            created.append(name)
        info = {n: json.loads((home / "clusters" / n / "cluster.json").read_text()) for n in created}
        east_index = info["east"]["index"]
        gateway = Gateway(f"127.{east_index}.255.250", probe_pki(home))
        kubectl("--context=west", "apply", "-f", "-", input=json.dumps(link_crd()))
        kubectl("--context=west", "create", "namespace", MC_NS)
        config = yaml.safe_load((home / "kubeconfig").read_text())
        east_config = {"apiVersion": "v1", "kind": "Config", "current-context": "east",
                       "clusters": [c for c in config["clusters"] if c["name"] == "east"],
                       "users": [u for u in config["users"] if u["name"] == "east"],
                       "contexts": [c for c in config["contexts"] if c["name"] == "east"]}
        kubectl("--context=west", "apply", "-f", "-", input=yaml.safe_dump_all([
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cluster-credentials-east", "namespace": MC_NS},
             "stringData": {"kubeconfig": yaml.safe_dump(east_config)}},
            {"apiVersion": "multicluster.isthmus.io/v1alpha1", "kind": "Link",
             "metadata": {"name": "east", "namespace": MC_NS},
             "spec": {"targetClusterName": "east", "gatewayAddress": f"127.{east_index}.255.250",
                      "gatewayIdentity": GATEWAY_ID}}]))
        mirror = MirrorProcess(mirror_command(env, args.workers, home), env, home / "mirror.log")
        mirror_pid = mirror.start()
        deadline = time.monotonic() + 60
        while "Reachable" not in kubectl("--context=west", "-n", MC_NS, "get", "link", "east", "-o",
                                         "jsonpath={.status.conditions}"):
            if time.monotonic() > deadline or (mirror.proc is not None and mirror.proc.poll() is not None):
                raise SystemExit(f"the mirror did not start; see {home / 'mirror.log'}")
            time.sleep(0.2)
        result = uvloop.run(measure(
            args, f"https://127.{info['west']['index']}.0.1:6443", f"https://127.{east_index}.0.1:6443",
            home / "clusters" / "west" / "pki", home / "clusters" / "east" / "pki", east_index, mirror, mirror_pid,
            {n: int((home / "clusters" / n / "apiserver.pid").read_text()) for n in created}))
        result["workers"] = args.workers
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.machine())
        result["machine"] = (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                             f"load average {os.getloadavg()[0]:.1f} at the end")
        if args.json:
            print(json.dumps(result))
        else:
            for k, v in result.items():
                print(f"{k:28} {v}")
    finally:
        if mirror is not None:
            mirror.stop()
        if gateway is not None:
            gateway.stop()
        for name in created:
            subprocess.run([ISTHMUS, "cluster", "delete", name], env=env, capture_output=True)


if __name__ == "__main__":
    main()

"""Benchmark: certificates per second from the identity service, and the cost of a mesh handshake.

Starts a fresh embedded cluster (temporary ISTHMUS_HOME) for its TokenReview
API, runs the identity service in this process (uvloop), and from a second
process runs C concurrent clients, each over one TLS 1.3 keep-alive
connection, posting CSRs back to back for D seconds with real service-account
tokens. Two rounds:
  - "cached": the service's token reviewer remembers each token's review for
    60 s (a bench-only wrapper: the service itself asks on every request), so
    the round measures the service's own work;
  - "uncached": every request makes a real TokenReview against the cluster's
    API server (lightkube, over TLS).
Each round reports certificates/s, client round-trip latency p50/p99, and the
service-side latency p50/p99 (request arrival to signed certificate, what the
`identity_cert_sign_latency_seconds` histogram records).
Then: the cost of one `sign_leaf` alone, and a TLS 1.3 mutual handshake
between two workload identities (Python ssl, both ends in this process, full
handshakes one after another on 127.0.0.1): handshakes/s and µs each.

    .venv/bin/python bench/identity_sign.py [--clients 16] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from _stats import pct
from lightkube import AsyncClient, KubeConfig

from isthmus.adapters.x509 import (
    Credentials,
    issue_leaf,
    make_csr,
    new_issuer,
    new_private_key,
    new_root,
    sign_leaf,
)
from isthmus.components.identity import (
    IdentityService,
    TokenReviewResult,
    client_context,
    lightkube_token_reviewer,
    server_context,
)
from isthmus.core.identity import workload_identity

ISTHMUS = str(Path(sys.executable).parent / "isthmus")
LOCAL = "127.0.0.1"
NAMESPACE = "bench"


def now() -> datetime:
    return datetime.now(UTC)


def caching(review: Callable[[str], Awaitable[TokenReviewResult]], ttl: float = 60.0
            ) -> Callable[[str], Awaitable[TokenReviewResult]]:
    """A token reviewer that remembers positive reviews for `ttl` seconds (for this benchmark only)."""
    cache: dict[str, tuple[float, TokenReviewResult]] = {}

    async def cached(token: str) -> TokenReviewResult:
        hit = cache.get(token)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        result = await review(token)
        if result.authenticated:
            cache[token] = (time.monotonic() + ttl, result)
        return result

    return cached


# ------------------------------------------------------------------ the load (second process)


def load_main(url: str, anchors: bytes, service_identity: str, requests: list[dict[str, str]],
              seconds: float, results: Any) -> None:
    async def run() -> dict[str, Any]:
        ctx = client_context(None, anchors, expected_identity=service_identity)
        latencies: list[float] = []
        errors: dict[int, int] = {}

        async def client(body: bytes) -> None:
            conn = aiohttp.TCPConnector(ssl=ctx, limit=1)
            async with aiohttp.ClientSession(connector=conn) as s:
                async with s.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    await r.read()  # warm: the TLS handshake happens here, outside the measurement
                await start.wait()
                while time.monotonic() < deadline:
                    t0 = time.perf_counter()
                    async with s.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                        await r.read()
                        if r.status == 200:
                            latencies.append(time.perf_counter() - t0)
                        else:
                            errors[r.status] = errors.get(r.status, 0) + 1

        start = asyncio.Event()
        deadline = float("inf")
        tasks = [asyncio.create_task(client(json.dumps(req).encode())) for req in requests]
        await asyncio.sleep(1.0)
        t_start, started = time.monotonic(), time.time()
        deadline = t_start + seconds
        start.set()
        await asyncio.gather(*tasks)
        return {"elapsed": time.monotonic() - t_start, "started": started, "latencies": latencies,
                "errors": errors}

    results.put(uvloop.run(run()))


async def round_(service: IdentityService, anchors: bytes, requests: list[dict[str, str]],
                 seconds: float, label: str) -> dict[str, Any]:
    server_side: list[tuple[float, float]] = []  # (wall time, seconds)
    observe = service.metrics.sign_latency.observe

    def record(value: float) -> None:
        server_side.append((time.time(), value))
        observe(value)

    service.metrics.sign_latency.observe = record
    cpu0 = time.process_time()
    results: Any = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(
        target=load_main, args=(service.url + "/v1/certify", anchors, service.identity, requests,
                                seconds, results))
    proc.start()
    out = await asyncio.get_running_loop().run_in_executor(None, results.get)
    await asyncio.get_running_loop().run_in_executor(None, proc.join)
    service.metrics.sign_latency.observe = observe
    lat = out["latencies"]
    measured = [v for t, v in server_side if t >= out["started"]]  # not the warm-up requests
    return {"round": label, "clients": len(requests), "seconds": round(out["elapsed"], 2),
            "certs": len(lat), "certs_per_s": round(len(lat) / out["elapsed"], 1),
            "client_roundtrip_ms_p50": round(pct(lat, 50) * 1e3, 2),
            "client_roundtrip_ms_p99": round(pct(lat, 99) * 1e3, 2),
            "service_ms_p50": round(pct(measured, 50) * 1e3, 3),
            "service_ms_p99": round(pct(measured, 99) * 1e3, 3),
            "service_process_cpu_s": round(time.process_time() - cpu0, 2),
            "errors": out["errors"]}


# ------------------------------------------------------------------ handshakes


def handshakes(a: Credentials, b: Credentials, anchors: bytes, *, a_id: str, seconds: float
               ) -> dict[str, Any]:
    """Full TLS 1.3 mutual handshakes, b (client) → a (server), one after another on loopback."""
    server_ctx = server_context(a, anchors, require_client_cert=True)
    client_ctx = client_context(b, anchors, expected_identity=a_id)
    listener = socket.create_server((LOCAL, 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            conn, _ = listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"k")  # the client reads this only after the server accepted its certificate
                    tls.recv(1)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    n = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        with socket.create_connection((LOCAL, port)) as raw:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle/delayed-ACK stalls
            with client_ctx.wrap_socket(raw) as tls:
                assert tls.version() == "TLSv1.3" and tls.recv(1) == b"k"
        n += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    stop.set()
    with socket.create_connection((LOCAL, port)):
        pass
    thread.join(5)
    listener.close()
    return {"handshakes": n, "handshakes_per_s": round(n / wall, 1),
            "us_per_handshake_wall": round(wall / n * 1e6, 1),
            "us_cpu_per_handshake_both_ends": round(cpu / n * 1e6, 1)}


def handshake_cpu(a: Credentials, b: Credentials, anchors: bytes, *, a_id: str, n: int = 300) -> float:
    """CPU µs of one full mutual handshake, both ends, over memory BIOs (no sockets, no threads)."""
    server_ctx = server_context(a, anchors, require_client_cert=True)
    client_ctx = client_context(b, anchors, expected_identity=a_id)
    cpu0 = time.process_time()
    for _ in range(n):
        c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
        client = client_ctx.wrap_bio(c_in, c_out)
        server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
        pending = [client, server]
        while pending:
            for end in list(pending):
                try:
                    end.do_handshake()
                    pending.remove(end)
                except ssl.SSLWantReadError:
                    pass
            s_in.write(c_out.read())
            c_in.write(s_out.read())
    return (time.process_time() - cpu0) / n * 1e6


def sign_cost(issuer: Credentials, n: int = 500) -> float:
    csr = make_csr(new_private_key(), workload_identity("web", NAMESPACE))
    t0 = time.perf_counter()
    for _ in range(n):
        sign_leaf(issuer, csr, dns_name=workload_identity("web", NAMESPACE), now=now())
    return (time.perf_counter() - t0) / n * 1e6


# ------------------------------------------------------------------ main


async def bench(kubeconfig: Path, env: dict[str, str], clients: int, seconds: float) -> list[dict[str, Any]]:
    def kubectl(*args: str) -> str:
        return subprocess.run(["kubectl", "--context=bench", *args], env=env, check=True,
                              capture_output=True, text=True).stdout

    kubectl("create", "namespace", NAMESPACE)
    requests = []
    for i in range(clients):
        sa = f"w{i}"
        kubectl("-n", NAMESPACE, "create", "serviceaccount", sa)
        ident = workload_identity(sa, NAMESPACE)
        requests.append({"identity": ident, "token": kubectl("-n", NAMESPACE, "create", "token", sa).strip(),
                         "csr": make_csr(new_private_key(), ident).decode()})
    root = new_root(now=now())
    issuer = new_issuer(root, now=now())
    kube = AsyncClient(config=KubeConfig.from_file(kubeconfig).get(context_name="bench"), trust_env=False)
    out: list[dict[str, Any]] = []
    try:
        for label, reviewer in (("cached token reviews (bench-only cache, 60 s)",
                                 caching(lightkube_token_reviewer(kube))),
                                ("uncached: one real TokenReview per request", lightkube_token_reviewer(kube))):
            service = IdentityService(issuer=issuer, trust_anchors_pem=root.cert_pem,
                                      trust_domain="cluster.local", token_reviewer=reviewer, clock=now,
                                      address=(LOCAL, 0), admin_address=None)
            await service.start()
            try:
                out.append(await round_(service, root.cert_pem, requests, seconds, label))
            finally:
                await service.close()
    finally:
        await kube.close()
    out.append({"sign_leaf_us": round(sign_cost(issuer), 1)})
    a_id, b_id = workload_identity("web", NAMESPACE), workload_identity("vote-bot", NAMESPACE)
    a, b = issue_leaf(issuer, a_id, now=now()), issue_leaf(issuer, b_id, now=now())
    chain = issuer.cert_pem
    a_creds, b_creds = Credentials(a.cert_pem + chain, a.key_pem), Credentials(b.cert_pem + chain, b.key_pem)
    out.append({"mtls_handshake": "TLS 1.3, ECDSA P-256 leaves + issuer, both ends Python ssl in this process",
                **handshakes(a_creds, b_creds, root.cert_pem, a_id=a_id, seconds=seconds),
                "us_cpu_per_handshake_both_ends_memory_bio": round(
                    handshake_cpu(a_creds, b_creds, root.cert_pem, a_id=a_id), 1)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="isthmus-bench-"))
    env = dict(os.environ, ISTHMUS_HOME=str(home), KUBECONFIG=str(home / "kubeconfig"),
               ISTHMUS_FIRST_CLUSTER_NUMBER="232")
    subprocess.run([ISTHMUS, "cluster", "create", "bench", "--region", "bench1", "--nodes", "1"], env=env,
                   check=True, capture_output=True)
    try:
        for result in uvloop.run(bench(home / "kubeconfig", env, args.clients, args.seconds)):
            print(json.dumps(result))
        print(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                                     f"Python {platform.python_version()}"}))
    finally:
        subprocess.run([ISTHMUS, "cluster", "delete", "bench"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark: certificates per second from the identity service, and the cost of a mesh handshake.

Starts a fresh embedded cluster (temporary ISTHMUS_HOME) for its TokenReview
API, runs the identity service in this process (uvloop) exactly as it ships
(its token reviewer is `lightkube_token_reviewer`, its review cache the
default 10 s), and from a second process runs C concurrent clients, each over
one TLS 1.3 keep-alive connection, posting CSRs back to back for D seconds
with real service-account tokens (TokenRequest). Two rounds:
  - "one token per client": each client presents the same token every time,
    as a workload does, so the service reviews each token once and answers
    the rest from its review cache: the round measures the service's own work;
  - "a new token for every CSR": no token is presented twice, so every CSR
    costs a real TokenReview against the cluster's API server (lightkube's
    HTTP client, over TLS). A client that runs out of tokens stops (counted
    in `clients_out_of_tokens`) rather than reuse one.
Each round reports certificates/s, client round-trip latency p50/p99, the
service-side latency p50/p99 (request arrival to signed certificate, what the
`identity_cert_sign_latency_seconds` histogram records), the CPU seconds of
the three processes (service, load, API server), and where the token checks
were answered (`identity_token_review_total`: api or cache).
Then: the cost of signing alone (`sign_leaf` from PEM, against `read_csr` +
`LeafSigner.sign` as the service does it), and a TLS 1.3 mutual handshake
between two workload identities (Python ssl, both ends in this process, full
handshakes one after another on 127.0.0.1): handshakes/s and µs each.

    .venv/bin/python bench/identity_sign.py [--clients 16] [--seconds 5]

With ISTHMUS_BENCH_PROFILE=DIR, py-spy records the service process and the
API server during each round into DIR (collapsed stacks, `<round>-service.txt`
and `<round>-apiserver.txt`).
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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from _stats import cpu_seconds, pct
from lightkube import AsyncClient, KubeConfig
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccount

from isthmus.adapters import kubehttp
from isthmus.adapters.x509 import (
    Credentials,
    LeafSigner,
    issue_leaf,
    make_csr,
    new_issuer,
    new_private_key,
    new_root,
    read_csr,
    sign_leaf,
)
from isthmus.components.identity import (
    IdentityService,
    client_context,
    lightkube_token_reviewer,
    server_context,
)
from isthmus.core.identity import workload_identity

ISTHMUS = str(Path(sys.executable).parent / "isthmus")
LOCAL = "127.0.0.1"
NAMESPACE = "bench"
MAX_RATE = 1000  # certificates/s the "new token for every CSR" round is given tokens for


def now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------ the load (second process)


def load_main(url: str, anchors: bytes, service_identity: str, bodies: list[list[bytes]], reuse: bool,
              seconds: float, results: Any) -> None:
    """C clients (one per list in `bodies`); each posts its bodies in turn, cycling through them if `reuse`."""
    async def run() -> dict[str, Any]:
        ctx = client_context(None, anchors, expected_identity=service_identity)
        latencies: list[float] = []
        errors: dict[int, int] = {}
        out_of_tokens = 0

        async def client(mine: list[bytes]) -> None:
            nonlocal out_of_tokens
            conn = aiohttp.TCPConnector(ssl=ctx, limit=1)
            async with aiohttp.ClientSession(connector=conn) as s:
                async with s.post(url, data=mine[0], headers={"Content-Type": "application/json"}) as r:
                    await r.read()  # warm: the TLS handshake happens here, outside the measurement
                await start.wait()
                i = 1
                while time.monotonic() < deadline:
                    if i >= len(mine) and not reuse:
                        out_of_tokens += 1
                        return
                    body = mine[i % len(mine)]
                    i += 1
                    t0 = time.perf_counter()
                    async with s.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                        await r.read()
                        if r.status == 200:
                            latencies.append(time.perf_counter() - t0)
                        else:
                            errors[r.status] = errors.get(r.status, 0) + 1

        start = asyncio.Event()
        deadline = float("inf")
        tasks = [asyncio.create_task(client(mine)) for mine in bodies]
        await asyncio.sleep(1.0)
        t_start, started = time.monotonic(), time.time()
        deadline = t_start + seconds
        cpu0 = time.process_time()
        start.set()
        await asyncio.gather(*tasks)
        return {"elapsed": time.monotonic() - t_start, "started": started, "latencies": latencies,
                "errors": errors, "out_of_tokens": out_of_tokens, "cpu": time.process_time() - cpu0}

    results.put(uvloop.run(run()))


def profiler(pid: int, path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
                             "--rate", "100", "--format", "raw", "-o", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def round_(service: IdentityService, anchors: bytes, bodies: list[list[bytes]], reuse: bool,
                 seconds: float, label: str, api_pid: int, profile: Path | None) -> dict[str, Any]:
    server_side: list[tuple[float, float]] = []  # (wall time, seconds)
    observe = service.metrics.sign_latency.observe

    def record(value: float) -> None:
        server_side.append((time.time(), value))
        observe(value)

    service.metrics.sign_latency.observe = record
    results: Any = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(
        target=load_main, args=(service.url + "/v1/certify", anchors, service.identity, bodies, reuse,
                                seconds, results))
    proc.start()
    loop = asyncio.get_running_loop()
    profilers = []
    if profile is not None:
        name = "reused-token" if reuse else "new-token"
        profilers = [profiler(os.getpid(), profile / f"{name}-service.txt"),
                     profiler(api_pid, profile / f"{name}-apiserver.txt")]
    samples: list[tuple[float, float, float, float, float]] = []

    async def sample() -> None:  # CPU and review counters every 20 ms, to cut out the measured window
        while True:
            samples.append((time.time(), time.process_time(), cpu_seconds(api_pid),
                            service.metrics.token_reviews.get("api"), service.metrics.token_reviews.get("cache")))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    out = await loop.run_in_executor(None, results.get)
    sampler.cancel()
    await asyncio.gather(sampler, return_exceptions=True)
    first = min(samples, key=lambda x: abs(x[0] - out["started"]))
    last = min(samples, key=lambda x: abs(x[0] - out["started"] - out["elapsed"]))
    for p in profilers:
        p.send_signal(2)
        await loop.run_in_executor(None, p.wait)
    await loop.run_in_executor(None, proc.join)
    service.metrics.sign_latency.observe = observe
    lat = out["latencies"]
    measured = [v for t, v in server_side if t >= out["started"]]  # not the warm-up requests
    return {"round": label, "clients": len(bodies), "seconds": round(out["elapsed"], 2),
            "certs": len(lat), "certs_per_s": round(len(lat) / out["elapsed"], 1),
            "client_roundtrip_ms_p50": round(pct(lat, 50) * 1e3, 2),
            "client_roundtrip_ms_p99": round(pct(lat, 99) * 1e3, 2),
            "service_ms_p50": round(pct(measured, 50) * 1e3, 3),
            "service_ms_p99": round(pct(measured, 99) * 1e3, 3),
            "cpu_s": {"service": round(last[1] - first[1], 2), "load": round(out["cpu"], 2),
                      "api_server": round(last[2] - first[2], 2)},
            "token_reviews": {"api": int(last[3] - first[3]), "cache": int(last[4] - first[4])},
            "errors": out["errors"], "clients_out_of_tokens": out["out_of_tokens"]}


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


def sign_cost(issuer: Credentials, n: int = 500) -> dict[str, float]:
    """µs per leaf: `sign_leaf` from PEM, and the service's way (`read_csr`, then `LeafSigner.sign`)."""
    ident = workload_identity("web", NAMESPACE)
    csr = make_csr(new_private_key(), ident)
    signer = LeafSigner(issuer)

    def each(f: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        return round((time.perf_counter() - t0) / n * 1e6, 1)

    return {"sign_leaf_us": each(lambda: sign_leaf(issuer, csr, dns_name=ident, now=now())),
            "read_csr_us": each(lambda: read_csr(csr)),
            "read_csr_and_signer_sign_us": each(lambda: signer.sign(read_csr(csr), dns_name=ident, now=now()))}


async def new_tokens(kube: AsyncClient, sa: str, n: int) -> list[str]:
    """`n` fresh tokens for service account `sa` (TokenRequest, one hour each)."""
    tokens = []
    for _ in range(n):
        answer = await kube.create(ServiceAccount.Token(metadata=ObjectMeta(name=sa, namespace=NAMESPACE),
                                                        spec=TokenRequestSpec(audiences=[], expirationSeconds=3600)),
                                   sa, namespace=NAMESPACE)
        assert answer.status is not None
        tokens.append(answer.status.token)
    return tokens


# ------------------------------------------------------------------ main


async def bench(kubeconfig: Path, env: dict[str, str], api_pid: int, clients: int, seconds: float,
                profile: Path | None) -> list[dict[str, Any]]:
    def kubectl(*args: str) -> str:
        return subprocess.run(["kubectl", "--context=bench", *args], env=env, check=True,
                              capture_output=True, text=True).stdout

    kubectl("create", "namespace", NAMESPACE)
    sas = [f"w{i}" for i in range(clients)]
    for sa in sas:
        kubectl("-n", NAMESPACE, "create", "serviceaccount", sa)
    config = KubeConfig.from_file(kubeconfig)
    # The service's API client as shipped (lightkube over aiohttp), and over httpx's own
    # transport (the previous one), for the side-by-side round.
    kube = kubehttp.client(config, context="bench")
    kube_httpx = AsyncClient(config=config.get(context_name="bench"), trust_env=False)
    per_client = int(MAX_RATE * (seconds + 0.5) / clients) + 2
    tokens = await asyncio.gather(*(new_tokens(kube, sa, 2 * per_client + 1) for sa in sas))
    csrs = {sa: make_csr(new_private_key(), workload_identity(sa, NAMESPACE)).decode() for sa in sas}

    def body(sa: str, token: str) -> bytes:
        return json.dumps({"identity": workload_identity(sa, NAMESPACE), "token": token,
                           "csr": csrs[sa]}).encode()

    root = new_root(now=now())
    issuer = new_issuer(root, now=now())
    out: list[dict[str, Any]] = []
    try:
        for label, reuse, client, bodies in (
                ("one token per client (the service's review cache answers after the first)", True, kube,
                 [[body(sa, mine[0])] for sa, mine in zip(sas, tokens, strict=True)]),
                ("a new token for every CSR (a real TokenReview each), the review through httpx and httpcore (before)", False,
                 kube_httpx,
                 [[body(sa, t) for t in mine[1:per_client + 1]] for sa, mine in zip(sas, tokens, strict=True)]),
                ("a new token for every CSR (a real TokenReview each), the review straight through aiohttp (as shipped)", False,
                 kube,
                 [[body(sa, t) for t in mine[per_client + 1:]] for sa, mine in zip(sas, tokens, strict=True)])):
            service = IdentityService(issuer=issuer, trust_anchors_pem=root.cert_pem,
                                      trust_domain="cluster.local", token_reviewer=lightkube_token_reviewer(client),
                                      clock=now, address=(LOCAL, 0), admin_address=None)
            await service.start()
            try:
                out.append(await round_(service, root.cert_pem, bodies, reuse, seconds, label, api_pid, profile))
            finally:
                await service.close()
    finally:
        await kube.close()
        await kube_httpx.close()
    out.append(sign_cost(issuer))
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
    api_pid = int((home / "clusters" / "bench" / "apiserver.pid").read_text())
    profile = Path(os.environ["ISTHMUS_BENCH_PROFILE"]) if os.environ.get("ISTHMUS_BENCH_PROFILE") else None
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
    try:
        for result in uvloop.run(bench(home / "kubeconfig", env, api_pid, args.clients, args.seconds, profile)):
            print(json.dumps(result))
        print(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                                     f"Python {platform.python_version()}"}))
    finally:
        subprocess.run([ISTHMUS, "cluster", "delete", "bench"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

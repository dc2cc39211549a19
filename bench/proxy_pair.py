"""Benchmark: the data plane, a request through a pair of proxies with mTLS between them.

Three configurations (four with `floor`), measured one after another in one run, with the same
backend, the same load generator and the same CPU pinning:

  direct   wrk → backend
  isthmus  wrk → isthmus outbound proxy ══mTLS══► isthmus inbound proxy → backend
  haproxy  wrk → HAProxy "outbound" ══mTLS══► HAProxy "inbound" → backend
  floor    wrk → featureless Python forwarder ══mTLS══► the same → backend (on request:
           `--only ...,floor`; bench/floor_forwarder.py: uvloop, asyncio.Protocol, bytes
           relayed connection to connection, no HTTP, metrics or discovery)

The backend is `bench/backend_http.py` (uvloop + httptools, `GET /` → 200 with a
100-byte body, keep-alive). The load is Debian's `wrk` (4.1) with the scripts in
`bench/wrk/`. Certificates come from the mesh's own library
(`isthmus.adapters.x509`): a trust anchor, an issuer, and one leaf each for
`client.bench.serviceaccount.identity.isthmus.cluster.local` (the outbound side)
and `server.bench.serviceaccount.identity.isthmus.cluster.local` (the inbound
side). Between the proxies: TLS 1.3 only, the inbound requires and verifies the
client certificate, the outbound verifies the server's against the anchor and
its name.

HAProxy (2.6, Debian) runs as two processes, `nbthread 1` each, keep-alive on
both sides and `http-reuse always` towards the next hop.

Per configuration:
  1. closed loop: `wrk -t1 -c<connections> -d<duration>s` → requests/s (and latency);
  2. fixed rate: `wrk -t1 -c10 -d<duration>s` paced by `bench/wrk/fixed_rate.lua` to
     <rate>/s → latency p50/p99/p99.9 (µs, wrk's histogram) and the rate reached;
  3. CPU per request of each proxy process: utime+stime from /proc/<pid>/stat
     before and after each measured run, divided by the requests completed;
  4. RSS of each proxy process (VmRSS): idle (1 s after one request went through)
     and the highest value sampled every 0.2 s during the closed-loop run.
Before the measured runs a 2 s closed-loop warm-up opens the connections and
fills the proxies' pools.

Pinning (2-core machine): both proxies on CPU 0; wrk, the backend and this
script on CPU 1 (`taskset`).

    .venv/bin/python bench/proxy_pair.py [--only direct,haproxy] [--duration 10]
        [--connections 32] [--rate 1000] [--rounds 1] [--json results.json]

`--rounds N` runs the configurations N times, interleaved, and the table shows
medians (this machine is shared: the table also shows how much of each CPU
other processes took).

Addresses (loopback only, checked to be free before use): backend
127.0.0.50:8080, outbound 127.0.0.51:4140, inbound 127.0.0.52:4143. Requests
carry `Host: backend.bench.svc.cluster.local:8080`. Every process the script
starts is stopped when it ends, also on Ctrl-C, SIGTERM or an error (and the
kernel stops them if the script itself is killed: PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httptools
import uvloop
from _mesh import ISTHMUS, start_mesh
from _stats import cpu_seconds, memory_kb
from rich.console import Console
from rich.table import Table

from isthmus.adapters.x509 import Credentials, issue_leaf, new_issuer, new_root
from isthmus.core.identity import workload_identity

HERE = Path(__file__).resolve().parent
WRK_REPORT = HERE / "wrk" / "report.lua"
WRK_FIXED_RATE = HERE / "wrk" / "fixed_rate.lua"
BACKEND_SCRIPT = HERE / "backend_http.py"
FLOOR_SCRIPT = HERE / "floor_forwarder.py"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
WRK = shutil.which("wrk") or "/usr/bin/wrk"

Addr = tuple[str, int]
BACKEND: Addr = ("127.0.0.50", 8080)
OUTBOUND: Addr = ("127.0.0.51", 4140)
INBOUND: Addr = ("127.0.0.52", 4143)
AUTHORITY = "backend.bench.svc.cluster.local:8080"  # the Host header of every request
CLIENT_ID = workload_identity("client", "bench")  # the outbound proxy's identity
SERVER_ID = workload_identity("server", "bench")  # the inbound proxy's identity

CONFIGS = ("direct", "isthmus", "haproxy", "floor")
DEFAULT_CONFIGS = ("direct", "isthmus", "haproxy")
WARMUP_S = 2.0
RSS_SAMPLE_S = 0.2


# ------------------------------------------------------------------ processes


class Processes:
    """Every process the benchmark starts; `stop_all` ends those still running."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def spawn(self, name: str, argv: list[str], *, cpu: int, log: Path,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `argv` pinned to `cpu` (taskset execs, so the pid is the program's own).

        Output goes to `log`. The child gets SIGTERM if this script dies.
        """
        out = log.open("wb")
        try:
            proc = subprocess.Popen(["taskset", "-c", str(cpu), *argv], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, env=env,
                                    preexec_fn=_die_with_parent)
        finally:
            out.close()
        self.procs.append((name, proc, log))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for _, proc, _ in reversed(self.procs):
            self.stop(proc)

    def check_alive(self, proc: subprocess.Popen[bytes]) -> None:
        """RuntimeError with the end of its log if `proc` has exited."""
        if proc.poll() is not None:
            for name, p, log in self.procs:
                if p is proc:
                    tail = log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{name} exited with status {proc.returncode}; its output:\n{tail}")
            raise RuntimeError(f"process {proc.pid} exited with status {proc.returncode}")


PROCS = Processes()


def _die_with_parent() -> None:
    """In the child before exec: have the kernel send SIGTERM when this script dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def check_free(addr: Addr) -> None:
    """SystemExit unless nothing listens on `addr` (a loopback address)."""
    if not addr[0].startswith("127."):
        raise SystemExit(f"{addr[0]} is not a loopback address; the benchmark uses 127.0.0.0/8 only")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no conflict
    try:
        s.bind(addr)
    except OSError as e:
        raise SystemExit(f"{addr[0]}:{addr[1]} is in use ({e.strerror}); stop what listens there") from e
    finally:
        s.close()


def wait_listening(addr: Addr, procs: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            PROCS.check_alive(p)
        try:
            socket.create_connection(addr, timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {addr[0]}:{addr[1]} after {timeout:.0f} s") from None
            time.sleep(0.05)


def wait_ready(admin: Addr, procs: list[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    """Wait until a proxy's admin `/ready` answers 200 (it holds a certificate)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for p in procs:
            PROCS.check_alive(p)
        conn = http.client.HTTPConnection(*admin, timeout=2)
        try:
            conn.request("GET", "/ready")
            r = conn.getresponse()
            last = f"status {r.status}: {r.read()[:200]!r}"
            if r.status == 200:
                return
        except (OSError, http.client.HTTPException) as e:
            last = repr(e)
        finally:
            conn.close()
        time.sleep(0.1)
    raise RuntimeError(f"{admin[0]}:{admin[1]}/ready did not answer 200 in {timeout:.0f} s ({last})")


def wait_ok(addr: Addr, procs: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    """Wait until `GET /` through `addr` answers 200 with the backend's body."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for p in procs:
            PROCS.check_alive(p)
        conn = http.client.HTTPConnection(*addr, timeout=2)
        try:
            conn.request("GET", "/", headers={"Host": AUTHORITY})
            r = conn.getresponse()
            body = r.read()
            if r.status == 200 and body.startswith(b"isthmus benchmark backend"):
                return
            last = f"status {r.status}, body {body[:80]!r}"
        except (OSError, http.client.HTTPException) as e:
            last = repr(e)
        finally:
            conn.close()
        time.sleep(0.1)
    raise RuntimeError(f"GET / through {addr[0]}:{addr[1]} did not succeed in {timeout:.0f} s ({last})")


# ------------------------------------------------------------------ certificates


@dataclass(frozen=True)
class Certs:
    """The benchmark's mesh certificates, in memory and as files in the work directory.

    `client` is the outbound side, `server` the inbound side; their `cert_pem`
    is the leaf followed by the issuer (the chain a workload presents). Files:
    `*_chain` leaf + issuer, `*_key` the key (0600), `*_bundle` chain + key in
    one file (what HAProxy's `crt` takes); `anchor` the trust anchor alone.
    """

    anchor_pem: bytes
    client: Credentials
    server: Credentials
    client_identity: str
    server_identity: str
    anchor: Path
    client_chain: Path
    client_key: Path
    client_bundle: Path
    server_chain: Path
    server_key: Path
    server_bundle: Path


def make_certs(workdir: Path) -> Certs:
    now = datetime.now(UTC)
    root = new_root(now=now)
    issuer = new_issuer(root, now=now)
    files: dict[str, Path] = {}

    def write(name: str, data: bytes, mode: int = 0o644) -> Path:
        path = workdir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        files[name] = path
        return path

    write("anchor.pem", root.cert_pem)
    creds = {}
    for side, ident in (("client", CLIENT_ID), ("server", SERVER_ID)):
        leaf = issue_leaf(issuer, ident, now=now)
        chain = leaf.cert_pem + issuer.cert_pem
        creds[side] = Credentials(chain, leaf.key_pem)
        write(f"{side}.crt", chain)
        write(f"{side}.key", leaf.key_pem, 0o600)
        write(f"{side}.pem", chain + leaf.key_pem, 0o600)
    return Certs(anchor_pem=root.cert_pem, client=creds["client"], server=creds["server"],
                 client_identity=CLIENT_ID, server_identity=SERVER_ID, anchor=files["anchor.pem"],
                 client_chain=files["client.crt"], client_key=files["client.key"],
                 client_bundle=files["client.pem"], server_chain=files["server.crt"],
                 server_key=files["server.key"], server_bundle=files["server.pem"])


# ------------------------------------------------------------------ the proxy pairs

PairStart = Callable[[Path, Certs, Addr, int], tuple[Addr, list[int], Callable[[], None]]]


def start_isthmus_pair(workdir: Path, certs: Certs, backend_addr: Addr, cpu: int
                       ) -> tuple[Addr, list[int], Callable[[], None]]:
    """`isthmus proxy` as outbound and inbound proxy pinned to `cpu`, with a real control plane.

    The proxies get their certificates from an identity service (CSR + a
    service-account token checked by TokenReview) and the inbound's address
    and identity from a destination service, both running against an embedded
    cluster's API (bench/_mesh.py) — as in a cluster. `certs` (made for
    HAProxy) is not used: the mesh makes its own anchor and issuer, with the
    same key type (ECDSA P-256).
    """
    check_free(OUTBOUND)
    check_free(INBOUND)
    mesh = start_mesh(workdir / "mesh", server_ip=INBOUND[0], service_port=backend_addr[1])
    procs = []
    try:
        for role, ip, sa in (("inbound", INBOUND[0], "server"), ("outbound", OUTBOUND[0], "client")):
            env = dict(os.environ, **mesh.proxy_env(sa, ip, forward_host=backend_addr[0]))
            proc = PROCS.spawn(f"isthmus {role}", [ISTHMUS, "proxy"], cpu=cpu,
                               log=workdir / f"isthmus-{role}.log", env=env)
            procs.append(proc)
        for ip in (INBOUND[0], OUTBOUND[0]):
            wait_ready((ip, 4191), procs)
    except BaseException:
        for p in procs:
            PROCS.stop(p)
        mesh.stop()
        raise
    inbound, outbound = procs

    def stop() -> None:
        for p in (outbound, inbound):
            PROCS.stop(p)
        mesh.stop()

    return OUTBOUND, [outbound.pid, inbound.pid], stop


HAPROXY_STATS: dict[int, Path] = {}  # pid → its stats socket (a Unix socket in the work directory)


def haproxy_config(role: str, certs: Certs, listen: Addr, upstream: Addr, stats: Path) -> str:
    tls13 = "ssl-min-ver TLSv1.3"
    head = f"""global
    nbthread 1
    maxconn 4096
    stats socket {stats} mode 600 level user

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
"""
    if role == "outbound":
        return head + f"""
frontend outbound
    bind {listen[0]}:{listen[1]}
    default_backend inbound_proxy

backend inbound_proxy
    http-reuse always
    server inbound {upstream[0]}:{upstream[1]} ssl {tls13} crt {certs.client_bundle} ca-file {certs.anchor} verify required verifyhost {certs.server_identity} sni str({certs.server_identity})
"""
    return head + f"""
frontend inbound
    bind {listen[0]}:{listen[1]} ssl {tls13} crt {certs.server_bundle} ca-file {certs.anchor} verify required
    default_backend app

backend app
    http-reuse always
    server app {upstream[0]}:{upstream[1]}
"""


def start_haproxy_pair(workdir: Path, certs: Certs, backend_addr: Addr, cpu: int
                       ) -> tuple[Addr, list[int], Callable[[], None]]:
    """HAProxy as outbound and inbound proxy (two processes, one thread each) pinned to `cpu`."""
    check_free(OUTBOUND)
    check_free(INBOUND)
    procs = []
    for role, listen, upstream in (("inbound", INBOUND, backend_addr), ("outbound", OUTBOUND, INBOUND)):
        cfg = workdir / f"haproxy-{role}.cfg"
        stats = workdir / f"haproxy-{role}.sock"
        cfg.write_text(haproxy_config(role, certs, listen, upstream, stats))
        subprocess.run([HAPROXY, "-c", "-q", "-f", str(cfg)], check=True)
        proc = PROCS.spawn(f"haproxy {role}", [HAPROXY, "-db", "-f", str(cfg)], cpu=cpu,
                           log=workdir / f"haproxy-{role}.log")
        procs.append(proc)
        wait_listening(listen, procs)
        HAPROXY_STATS[proc.pid] = stats
    inbound, outbound = procs

    def stop() -> None:
        for p in (outbound, inbound):
            PROCS.stop(p)

    return OUTBOUND, [outbound.pid, inbound.pid], stop


def start_floor_pair(workdir: Path, certs: Certs, backend_addr: Addr, cpu: int
                     ) -> tuple[Addr, list[int], Callable[[], None]]:
    """Two featureless Python mTLS byte forwarders (bench/floor_forwarder.py) pinned to `cpu`:
    what the cheapest Python pair costs here, with HAProxy's certificates and checks."""
    check_free(OUTBOUND)
    check_free(INBOUND)
    procs = []
    for role, listen, upstream, cert, key in (
            ("inbound", INBOUND, backend_addr, certs.server_chain, certs.server_key),
            ("outbound", OUTBOUND, INBOUND, certs.client_chain, certs.client_key)):
        argv = [sys.executable, str(FLOOR_SCRIPT), role, f"{listen[0]}:{listen[1]}",
                f"{upstream[0]}:{upstream[1]}", "--cert", str(cert), "--key", str(key),
                "--anchor", str(certs.anchor)]
        if role == "outbound":
            argv += ["--server-name", certs.server_identity]
        procs.append(PROCS.spawn(f"floor {role}", argv, cpu=cpu, log=workdir / f"floor-{role}.log"))
        wait_listening(listen, procs)
    inbound, outbound = procs

    def stop() -> None:
        for p in (outbound, inbound):
            PROCS.stop(p)

    return OUTBOUND, [outbound.pid, inbound.pid], stop


PAIRS: dict[str, PairStart] = {"isthmus": start_isthmus_pair, "haproxy": start_haproxy_pair,
                               "floor": start_floor_pair}


def haproxy_upstream_counters(pid: int) -> dict[str, int] | None:
    """The server line's `connect` (new connections) and `reuse` counters of a HAProxy of this script."""
    path = HAPROXY_STATS.get(pid)
    if path is None:
        return None
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(b"show stat -1 4 -1\n")  # server lines only
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    row = dict(zip(header, lines[1].split(","), strict=False))
    return {"connect": int(row["connect"] or 0), "reuse": int(row["reuse"] or 0)}


# ------------------------------------------------------------------ measuring


def rss_kb(pid: int) -> int:
    return memory_kb(pid)[0]


@contextlib.contextmanager
def sampling_rss(pids: list[int]) -> Iterator[dict[int, int]]:
    """Yields {pid: highest VmRSS KiB seen}, sampled every RSS_SAMPLE_S while the block runs."""
    peak = {pid: rss_kb(pid) for pid in pids}
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(RSS_SAMPLE_S):
            for pid in pids:
                with contextlib.suppress(OSError, ValueError):
                    peak[pid] = max(peak[pid], rss_kb(pid))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
        for pid in pids:
            with contextlib.suppress(OSError, ValueError):
                peak[pid] = max(peak[pid], rss_kb(pid))


def wrk(url: str, *, connections: int, duration: float, script: Path, cpu: int,
        script_args: list[str] | None = None) -> dict[str, Any]:
    """Run wrk (one thread) pinned to `cpu`; its WRK_JSON report plus the command and raw output."""
    argv = ["taskset", "-c", str(cpu), WRK, "-t1", f"-c{connections}", f"-d{duration:g}s",
            "--timeout", "5s", "-H", f"Host: {AUTHORITY}", "-s", str(script), url]
    if script_args:
        argv += ["--", *script_args]
    # subprocess.run kills wrk if this script is interrupted while waiting
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60,
                          preexec_fn=_die_with_parent)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no report:\n{done.stdout}\n{done.stderr}")
    report = json.loads(line.removeprefix("WRK_JSON "))
    report["requests_per_s"] = report["requests"] / (report["duration_us"] / 1e6)
    report["command"] = shlex.join(argv[3:])
    report["output"] = done.stdout
    return report


def cpu_busy_ticks() -> dict[int, int]:
    """{cpu: busy clock ticks} from /proc/stat (user, nice, system, irq, softirq, steal)."""
    busy = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            v = [int(x) for x in fields]
            busy[int(name[3:])] = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
    return busy


def measured_run(pids: list[int], **wrk_args: Any) -> dict[str, Any]:
    """One wrk run with each proxy process's CPU time and peak RSS over it, and each CPU's busy share."""
    counters0 = {pid: haproxy_upstream_counters(pid) for pid in pids}
    cpu0 = {pid: cpu_seconds(pid) for pid in pids}
    busy0 = cpu_busy_ticks()
    t0 = time.monotonic()
    with sampling_rss(pids) as peak:
        report = wrk(**wrk_args)
    wall = time.monotonic() - t0
    busy1 = cpu_busy_ticks()
    tck = os.sysconf("SC_CLK_TCK")
    # everything that ran on each CPU (this benchmark's processes, other processes, interrupts)
    report["cpu_busy_cores"] = {str(cpu): round((busy1[cpu] - busy0[cpu]) / tck / wall, 3) for cpu in busy1}
    n = max(report["requests"], 1)
    used = {pid: cpu_seconds(pid) - cpu0[pid] for pid in pids}
    report["proxies"] = [{"pid": pid, "cpu_s": round(used[pid], 3),
                          "cpu_us_per_request": round(used[pid] / n * 1e6, 1),
                          "cpu_share_of_a_core": round(used[pid] / wall, 3),
                          "rss_peak_kb": peak[pid]} for pid in pids]
    for proxy in report["proxies"]:
        before, after = counters0[proxy["pid"]], haproxy_upstream_counters(proxy["pid"])
        if before is not None and after is not None:  # HAProxy: were upstream connections reused?
            proxy["upstream_new_connections"] = after["connect"] - before["connect"]
            proxy["upstream_reused_connections"] = after["reuse"] - before["reuse"]
    return report


def run_config(name: str, url: str, pids: list[int], args: argparse.Namespace) -> dict[str, Any]:
    time.sleep(1.0)
    result: dict[str, Any] = {"url": url,
                              "proxies": [{"role": role, "pid": pid, "rss_idle_kb": rss_kb(pid)}
                                          for role, pid in zip(roles(pids), pids, strict=True)]}
    log(f"[{name}] warm-up {WARMUP_S:g} s")
    wrk(url, connections=args.connections, duration=min(WARMUP_S, args.duration), script=WRK_REPORT,
        cpu=args.load_cpu)
    time.sleep(0.5)
    log(f"[{name}] closed loop: {args.connections} connections, {args.duration:g} s")
    result["closed"] = measured_run(pids, url=url, connections=args.connections, duration=args.duration,
                                    script=WRK_REPORT, cpu=args.load_cpu)
    time.sleep(0.5)
    log(f"[{name}] fixed rate: {args.rate:g}/s over {args.rate_connections} connections, {args.duration:g} s")
    result["fixed"] = measured_run(pids, url=url, connections=args.rate_connections, duration=args.duration,
                                   script=WRK_FIXED_RATE, cpu=args.load_cpu, script_args=[f"{args.rate:g}"])
    for proxy, closed, fixed in zip(result["proxies"], result["closed"]["proxies"],
                                    result["fixed"]["proxies"], strict=True):
        proxy["rss_load_kb"] = closed["rss_peak_kb"]
        proxy["cpu_us_per_request_closed"] = closed["cpu_us_per_request"]
        proxy["cpu_us_per_request_fixed"] = fixed["cpu_us_per_request"]
    return result


def roles(pids: list[int]) -> list[str]:
    return ["outbound", "inbound"] if len(pids) == 2 else [f"proxy {i}" for i in range(len(pids))]


# ------------------------------------------------------------------ report


def machine() -> dict[str, Any]:
    def first_line(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except OSError as e:
            return f"unavailable ({e})"
        return (done.stdout or done.stderr).strip().splitlines()[0]

    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    haproxy_vv = subprocess.run([HAPROXY, "-vv"], capture_output=True, text=True).stdout
    haproxy_ssl = re.search(r"Running on OpenSSL version : (.*)", haproxy_vv)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "kernel": platform.release(),
        "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
        "haproxy": first_line([HAPROXY, "-v"]),
        "haproxy_openssl": haproxy_ssl.group(1).strip() if haproxy_ssl else "?",
        "wrk": first_line([WRK, "-v"]),
        "python": platform.python_version(),
        "uvloop": uvloop.__version__,
        "httptools": httptools.__version__,
        "python_openssl": ssl.OPENSSL_VERSION,
    }


def table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> Table:
    cols = [c for c in CONFIGS if c in results]
    both = all(results.get(c, {}).get("status") == "ok" for c in ("isthmus", "haproxy"))
    rounds = f", median of {args.rounds} rounds" if args.rounds > 1 else ""
    t = Table(title=f"proxy pair: closed loop -c{args.connections}, fixed rate {args.rate:g}/s "
                    f"(-c{args.rate_connections}), {args.duration:g} s each{rounds}")
    t.add_column("")
    for c in cols:
        status = results.get(c, {}).get("status")
        t.add_column(c if status in ("ok", None) else f"{c} ({status})", justify="right")
    if both:
        t.add_column("isthmus / haproxy", justify="right")

    def proxy(r: dict[str, Any], i: int, key: str) -> float | None:
        ps = r.get("proxies", [])
        return ps[i][key] if i < len(ps) else None

    rows: list[tuple[str, Callable[[dict[str, Any]], float | None], str]] = [
        (f"closed loop req/s (-c{args.connections})", lambda r: r["closed"]["requests_per_s"], "{:,.0f}"),
        ("closed loop latency p50 µs", lambda r: r["closed"]["latency_us"]["p50"], "{:,.0f}"),
        ("closed loop latency p99 µs", lambda r: r["closed"]["latency_us"]["p99"], "{:,.0f}"),
        (f"fixed rate: achieved req/s (target {args.rate:g})", lambda r: r["fixed"]["requests_per_s"],
         "{:,.1f}"),
        ("fixed rate: latency p50 µs", lambda r: r["fixed"]["latency_us"]["p50"], "{:,.0f}"),
        ("fixed rate: latency p99 µs", lambda r: r["fixed"]["latency_us"]["p99"], "{:,.0f}"),
        ("fixed rate: latency p99.9 µs", lambda r: r["fixed"]["latency_us"]["p99.9"], "{:,.0f}"),
        ("CPU µs/request outbound (closed loop)", lambda r: proxy(r, 0, "cpu_us_per_request_closed"),
         "{:,.1f}"),
        ("CPU µs/request inbound (closed loop)", lambda r: proxy(r, 1, "cpu_us_per_request_closed"),
         "{:,.1f}"),
        ("CPU µs/request outbound (fixed rate)", lambda r: proxy(r, 0, "cpu_us_per_request_fixed"),
         "{:,.1f}"),
        ("CPU µs/request inbound (fixed rate)", lambda r: proxy(r, 1, "cpu_us_per_request_fixed"),
         "{:,.1f}"),
        (f"closed loop: CPU {args.proxy_cpu} used by the proxies (cores)",
         lambda r: sum(p["cpu_share_of_a_core"] for p in r["closed"]["proxies"]) if r["closed"]["proxies"]
         else None, "{:.2f}"),
        (f"closed loop: CPU {args.proxy_cpu} used by anything else (cores)", lambda r: max(
            0.0, r["closed"]["cpu_busy_cores"][str(args.proxy_cpu)]
            - sum(p["cpu_share_of_a_core"] for p in r["closed"]["proxies"])), "{:.2f}"),
        (f"closed loop: CPU {args.load_cpu} busy (cores)",
         lambda r: r["closed"]["cpu_busy_cores"][str(args.load_cpu)], "{:.2f}"),
        ("RSS outbound idle MiB", lambda r: _mib(proxy(r, 0, "rss_idle_kb")), "{:.1f}"),
        ("RSS inbound idle MiB", lambda r: _mib(proxy(r, 1, "rss_idle_kb")), "{:.1f}"),
        ("RSS outbound under load MiB", lambda r: _mib(proxy(r, 0, "rss_load_kb")), "{:.1f}"),
        ("RSS inbound under load MiB", lambda r: _mib(proxy(r, 1, "rss_load_kb")), "{:.1f}"),
        ("upstream connections opened in the runs", _new_upstream, "{:,.0f}"),
        ("errors (socket + non-2xx, both runs)",
         lambda r: sum(sum(r[k]["errors"].values()) for k in ("closed", "fixed")), "{:,.0f}"),
    ]
    if args.rounds > 1:
        rows.insert(1, ("closed loop req/s, lowest .. highest round", lambda r: r["closed"]["requests_per_s"],
                        "range"))
    for label, get, fmt in rows:
        cells, values = [label], {}
        for c in cols:
            r = results.get(c)
            if r is None:
                cells.append("")
            elif r["status"] != "ok":
                cells.append(r["status"])
            else:
                vs = [get(rr) for rr in r["rounds"]]
                if fmt == "range":
                    cells.append(f"{min(vs):,.0f} .. {max(vs):,.0f}")
                    continue
                v = None if None in vs else statistics.median(vs)
                values[c] = v
                cells.append("—" if v is None else fmt.format(v))
        if both:
            a, b = values.get("isthmus"), values.get("haproxy")
            meaningful = "anything else" not in label and "busy" not in label  # the machine, not the proxy
            cells.append(f"{a / b:.2f}" if meaningful and a is not None and b else "")
        t.add_row(*cells)
    return t


def _new_upstream(r: dict[str, Any]) -> float | None:
    """Connections the proxies opened to their next hop during the measured runs (HAProxy's counters)."""
    counts = [p.get("upstream_new_connections") for k in ("closed", "fixed") for p in r[k]["proxies"]]
    return None if not counts or None in counts else sum(c for c in counts if c is not None)


def _mib(kb: float | None) -> float | None:
    return None if kb is None else kb / 1024


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(DEFAULT_CONFIGS),
                    help=f"comma-separated configurations to run, of {','.join(CONFIGS)} "
                         f"(default: {','.join(DEFAULT_CONFIGS)}; floor is the featureless Python pair)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of each measured wrk run")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections of the closed-loop run")
    ap.add_argument("--rate", type=float, default=1000.0, help="requests/s of the fixed-rate run")
    ap.add_argument("--rate-connections", type=int, default=10, help="wrk connections of the fixed-rate run")
    ap.add_argument("--proxy-cpu", type=int, default=0, help="CPU for both proxies")
    ap.add_argument("--load-cpu", type=int, default=1, help="CPU for wrk, the backend and this script")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the configurations this many times, interleaved; the table shows medians")
    ap.add_argument("--json", type=Path, help="write the raw results to this file")
    args = ap.parse_args()
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    if not only or set(only) - set(CONFIGS):
        ap.error(f"--only takes a comma-separated list of {', '.join(CONFIGS)}")
    allowed = os.sched_getaffinity(0)
    if {args.proxy_cpu, args.load_cpu} - allowed:
        ap.error(f"CPUs {args.proxy_cpu} and {args.load_cpu} must be among this machine's {sorted(allowed)}")
    for tool in (WRK, "taskset") + ((HAPROXY,) if "haproxy" in only else ()):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (scripts/install-system-deps installs it)")

    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    os.sched_setaffinity(0, {args.load_cpu})  # this script stays off the proxies' CPU

    info = machine()
    workdir = Path(tempfile.mkdtemp(prefix="isthmus-bench-proxy-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        certs = make_certs(workdir)
        check_free(BACKEND)
        backend = PROCS.spawn("backend", [sys.executable, str(BACKEND_SCRIPT), "--address",
                                          f"{BACKEND[0]}:{BACKEND[1]}"], cpu=args.load_cpu,
                              log=workdir / "backend.log")
        wait_listening(BACKEND, [backend])
        for round_ in range(1, args.rounds + 1):
            for name in CONFIGS:
                if name not in only or results.get(name, {}).get("status") == "pending":
                    continue
                entry = results.setdefault(name, {"config": name, "status": "ok", "rounds": []})
                tag = f"{name}, round {round_}/{args.rounds}"
                if name == "direct":
                    wait_ok(BACKEND, [backend])
                    entry["rounds"].append(run_config(tag, f"http://{BACKEND[0]}:{BACKEND[1]}/", [], args))
                    continue
                log(f"[{tag}] starting the proxy pair on CPU {args.proxy_cpu}")
                try:
                    outbound, pids, stop = PAIRS[name](workdir, certs, BACKEND, args.proxy_cpu)
                except NotImplementedError as e:
                    log(f"[{name}] skipped: {e}")
                    results[name] = {"config": name, "status": "pending", "note": str(e), "rounds": []}
                    continue
                try:
                    wait_ok(outbound, [p for _, p, _ in PROCS.procs if p.pid in pids])
                    entry["rounds"].append(run_config(tag, f"http://{outbound[0]}:{outbound[1]}/", pids,
                                                      args))
                finally:
                    stop()
                PROCS.check_alive(backend)
    finally:
        PROCS.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)

    Console(width=max(Console().width, 120)).print(table(results, args))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "command": shlex.join(sys.argv),
                                         "pinning": {"proxies": args.proxy_cpu, "wrk_and_backend": args.load_cpu},
                                         "backend": "bench/backend_http.py (uvloop + httptools)",
                                         "addresses": {"backend": BACKEND, "outbound": OUTBOUND,
                                                       "inbound": INBOUND},
                                         "results": results}, indent=2) + "\n")
        log(f"raw results written to {args.json}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted (every process the benchmark started has been stopped)")
        sys.exit(130)

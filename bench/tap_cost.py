"""Benchmark: what one active tap subscriber costs on the proxy's request path.

The isthmus pair of bench/proxy_pair.py (a real identity and destination
service, mTLS between the proxies, the same backend, pinning and wrk):

  wrk → isthmus outbound proxy ══mTLS══► isthmus inbound proxy → backend

One pair, one run, closed-loop wrk rounds alternating between

  untapped  nobody taps;
  tapped    one subscriber on the outbound proxy's admin `/tap` (by default;
            `--tap-proxy inbound|both`) with `resource=ns/bench`, which
            matches every request, reading its stream as fast as it comes
            (a thread of this script, on the load CPU, counting lines).

Rounds go in ABBA order (untapped, tapped, tapped, untapped, ...) so a drift
in the machine's load falls on both alike; the table shows medians over the
rounds of each kind: requests/s, latency p50/p99 (wrk's histogram), CPU µs per
request of each proxy (utime+stime from /proc over the run ÷ requests), and
the events the subscriber read per request (3 = req, rsp, end for every
request: nothing dropped; the admin server drops events for a subscriber more
than 1,000 lines behind).

    .venv/bin/python bench/tap_cost.py [--rounds 4] [--duration 10] [--connections 32]
        [--tap-proxy outbound|inbound|both] [--format text|json] [--json out.json]
        [--profile DIR]

`--profile DIR`: after the measured rounds, one more untapped and one more
tapped run with py-spy sampling the outbound proxy (raw collapsed stacks in
DIR, and a summary of where the samples fall). Profiled runs are not in the
table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import proxy_pair as pp
from rich.console import Console
from rich.table import Table

ADMIN_PORT = 4191
TAP_QUERY = "/tap?namespace=bench&resource=ns/bench"
PY_SPY = str(Path(sys.executable).parent / "py-spy")


class TapReader:
    """One tap subscriber: an HTTP/1.0 GET of a proxy's admin /tap, its lines counted."""

    def __init__(self, admin: pp.Addr, fmt: str) -> None:
        self.admin = admin
        query = TAP_QUERY + ("&format=json" if fmt == "json" else "")
        self.sock = socket.create_connection(admin, timeout=10)
        self.sock.sendall(f"GET {query} HTTP/1.0\r\nHost: {admin[0]}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"tap on {admin[0]}:{admin[1]} closed before answering")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 200 " not in status + b" ":
            raise RuntimeError(f"tap on {admin[0]}:{admin[1]}: {status.decode(errors='replace')}")
        self.lines = head.split(b"\r\n\r\n", 1)[1].count(b"\n")
        self.bytes = 0
        self.sample = b""
        self._stop = False
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                chunk = self.sock.recv(262144)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            if not self.sample:
                self.sample = chunk[:400]
            self.lines += chunk.count(b"\n")
            self.bytes += len(chunk)

    def close(self) -> None:
        self._stop = True
        self.thread.join(5)
        self.sock.close()


def request_through(addr: pp.Addr, n: int) -> None:
    """`n` requests through the pair, one connection each (to push tap streams along)."""
    import http.client
    for _ in range(n):
        conn = http.client.HTTPConnection(*addr, timeout=5)
        try:
            conn.request("GET", "/", headers={"Host": pp.AUTHORITY})
            conn.getresponse().read()
        finally:
            conn.close()


def subscribe(admins: list[pp.Addr], outbound: pp.Addr, fmt: str) -> list[TapReader]:
    """Subscribers on `admins`, each shown to receive events before measuring starts."""
    readers = [TapReader(a, fmt) for a in admins]
    deadline = time.monotonic() + 10
    while any(r.lines < 3 for r in readers):
        if time.monotonic() > deadline:
            raise RuntimeError("the tap subscriber received no events within 10 s")
        request_through(outbound, 1)
        time.sleep(0.05)
    return readers


def unsubscribe(readers: list[TapReader], outbound: pp.Addr) -> None:
    """Close the subscribers; the proxy notices when its next write fails, so push a few events."""
    for r in readers:
        r.close()
    request_through(outbound, 20)
    time.sleep(0.3)


def tap_admins(which: str) -> list[pp.Addr]:
    out, inb = (pp.OUTBOUND[0], ADMIN_PORT), (pp.INBOUND[0], ADMIN_PORT)
    return {"outbound": [out], "inbound": [inb], "both": [out, inb]}[which]


def one_run(kind: str, url: str, pids: list[int], args: argparse.Namespace,
            outbound: pp.Addr) -> dict[str, Any]:
    readers = subscribe(tap_admins(args.tap_proxy), outbound, args.format) if kind == "tapped" else []
    before = [r.lines for r in readers]
    try:
        report = pp.measured_run(pids, url=url, connections=args.connections,
                                 duration=args.duration, script=pp.WRK_REPORT, cpu=args.load_cpu)
        time.sleep(0.3)  # the last events of the run reach the reader
        report["tap_lines"] = [r.lines - b for r, b in zip(readers, before, strict=True)]
        report["tap_bytes"] = [r.bytes for r in readers]
        report["tap_sample"] = [r.sample.decode(errors="replace") for r in readers]
    finally:
        if readers:
            unsubscribe(readers, outbound)
    report.pop("output", None)
    return report


def profile_run(kind: str, url: str, pids: list[int], args: argparse.Namespace,
                outbound: pp.Addr, out: Path) -> dict[str, Any]:
    """One run with py-spy on the outbound proxy (pid 0 of `pids`); raw collapsed stacks to `out`."""
    spy = subprocess.Popen([PY_SPY, "record", "--pid", str(pids[0]), "--rate", "250", "--nonblocking",
                            "--format", "raw", "-o", str(out), "--duration", f"{args.duration + 2:g}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)
        if spy.poll() is not None:
            raise RuntimeError(f"py-spy failed: {spy.stderr.read().decode(errors='replace') if spy.stderr else ''}")
        report = one_run(kind, url, pids, args, outbound)
    finally:
        try:
            spy.wait(args.duration + 30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
    report["profile"] = classify_profile(out)
    return report


# Where a sample of the outbound proxy falls, by the frames on its stack (first match wins).
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("tap: events matched, built, formatted, queued", ("proxy/tap.py",)),
    ("tap: admin stream writes (handler, aiohttp, transport)", ("admin.py",)),
    ("route and endpoint metrics", ("proxy/stats.py", "proxy/metrics.py", "route_names.py")),
    ("HTTP forwarding (http1, routes, outbound)", ("proxy/http1.py", "proxy/routes.py",
                                                    "proxy/outbound.py", "proxy/inbound.py")),
]


def classify_profile(path: Path) -> dict[str, Any]:
    """Shares of the samples in `path` (py-spy raw: `frame;frame;... count` lines)."""
    counts: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return {"samples": 0}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n_text = line.rpartition(" ")
        if not n_text.isdigit():
            continue
        n = int(n_text)
        total += n
        if "(idle)" in stack or stack.endswith("select (selectors.py)") or "run_forever" in stack.rsplit(";", 1)[-1]:
            counts["idle (waiting in the event loop)"] += n
            continue
        for name, needles in CATEGORIES:
            if any(needle in stack for needle in needles):
                counts[name] += n
                break
        else:
            counts["other (event loop, TLS, sockets, metrics render ...)"] += n
    return {"samples": total, "shares": {k: round(v / total, 3) for k, v in counts.most_common()}}


def table(rows: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> Table:
    n = len(rows["untapped"])
    t = Table(title=f"one tap subscriber ({args.tap_proxy}, {args.format}): closed loop "
                    f"-c{args.connections}, {args.duration:g} s per run, median of {n} runs each")
    for col in ("", "untapped", "tapped", "tapped / untapped"):
        t.add_column(col, justify="right" if col else "left")

    def med(kind: str, get: Any) -> float:
        return statistics.median(get(r) for r in rows[kind])

    specs: list[tuple[str, Any, str]] = [
        ("requests/s", lambda r: r["requests_per_s"], "{:,.0f}"),
        ("latency p50 µs", lambda r: r["latency_us"]["p50"], "{:,.0f}"),
        ("latency p99 µs", lambda r: r["latency_us"]["p99"], "{:,.0f}"),
        ("CPU µs/request outbound", lambda r: r["proxies"][0]["cpu_us_per_request"], "{:,.1f}"),
        ("CPU µs/request inbound", lambda r: r["proxies"][1]["cpu_us_per_request"], "{:,.1f}"),
        (f"CPU {args.proxy_cpu} used by the proxies (cores)",
         lambda r: sum(p["cpu_share_of_a_core"] for p in r["proxies"]), "{:.2f}"),
        (f"CPU {args.load_cpu} busy (cores)", lambda r: r["cpu_busy_cores"][str(args.load_cpu)], "{:.2f}"),
        ("errors (socket + non-2xx)", lambda r: sum(r["errors"].values()), "{:,.0f}"),
    ]
    for label, get, fmt in specs:
        a, b = med("untapped", get), med("tapped", get)
        ratio = f"{b / a:.2f}" if a and "errors" not in label and "busy" not in label else ""
        t.add_row(label, fmt.format(a), fmt.format(b), ratio)
    t.add_row("requests/s, lowest .. highest run",
              *(f"{min(r['requests_per_s'] for r in rows[k]):,.0f} .. "
                f"{max(r['requests_per_s'] for r in rows[k]):,.0f}" for k in ("untapped", "tapped")), "")
    t.add_row("tap lines read per request (3 = none dropped)", "—",
              f"{med('tapped', lambda r: sum(r['tap_lines']) / max(r['requests'], 1) / len(r['tap_lines'])):.2f}",
              "")
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4, help="runs of each kind (untapped, tapped), ABBA order")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of each wrk run")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections")
    ap.add_argument("--tap-proxy", choices=("outbound", "inbound", "both"), default="outbound",
                    help="which proxy's admin /tap the subscriber reads (both: one subscriber each)")
    ap.add_argument("--format", choices=("text", "json"), default="text", help="the tap stream's format")
    ap.add_argument("--proxy-cpu", type=int, default=0, help="CPU for both proxies")
    ap.add_argument("--load-cpu", type=int, default=1, help="CPU for wrk, the backend and this script")
    ap.add_argument("--profile", type=Path, help="also profile the outbound proxy with py-spy into this directory")
    ap.add_argument("--json", type=Path, help="write the raw results to this file")
    args = ap.parse_args()
    if args.rounds < 1 or args.duration <= 0 or args.connections < 1:
        ap.error("--rounds, --duration and --connections must be positive")
    allowed = os.sched_getaffinity(0)
    if {args.proxy_cpu, args.load_cpu} - allowed:
        ap.error(f"CPUs {args.proxy_cpu} and {args.load_cpu} must be among this machine's {sorted(allowed)}")
    for tool in (pp.WRK, "taskset") + ((PY_SPY,) if args.profile else ()):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed")

    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.sched_setaffinity(0, {args.load_cpu})

    info = pp.machine()
    workdir = Path(tempfile.mkdtemp(prefix="isthmus-bench-tap-"))
    rows: dict[str, list[dict[str, Any]]] = {"untapped": [], "tapped": []}
    profiles: dict[str, Any] = {}
    try:
        certs = pp.make_certs(workdir)
        pp.check_free(pp.BACKEND)
        backend = pp.PROCS.spawn("backend", [sys.executable, str(pp.BACKEND_SCRIPT), "--address",
                                             f"{pp.BACKEND[0]}:{pp.BACKEND[1]}"], cpu=args.load_cpu,
                                 log=workdir / "backend.log")
        pp.wait_listening(pp.BACKEND, [backend])
        pp.log(f"starting the isthmus pair on CPU {args.proxy_cpu}")
        outbound, pids, stop = pp.start_isthmus_pair(workdir, certs, pp.BACKEND, args.proxy_cpu)
        try:
            pp.wait_ok(outbound, [p for _, p, _ in pp.PROCS.procs if p.pid in pids])
            url = f"http://{outbound[0]}:{outbound[1]}/"
            pp.log(f"warm-up {pp.WARMUP_S:g} s")
            pp.wrk(url, connections=args.connections, duration=pp.WARMUP_S, script=pp.WRK_REPORT,
                   cpu=args.load_cpu)
            order = []
            for i in range(args.rounds):
                order += ["untapped", "tapped"] if i % 2 == 0 else ["tapped", "untapped"]
            for i, kind in enumerate(order, 1):
                time.sleep(0.5)
                pp.log(f"[{i}/{len(order)}] {kind}: closed loop -c{args.connections}, {args.duration:g} s")
                report = one_run(kind, url, pids, args, outbound)
                rows[kind].append(report)
                pp.log(f"    {report['requests_per_s']:,.0f} req/s, p50 {report['latency_us']['p50']:,} µs"
                       + (f", tap lines {report['tap_lines']}" if kind == "tapped" else ""))
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
                for kind in ("untapped", "tapped"):
                    pp.log(f"[profile] {kind}, py-spy on the outbound proxy")
                    report = profile_run(kind, url, pids, args, outbound,
                                         args.profile / f"outbound-{kind}.txt")
                    profiles[kind] = {"requests_per_s": report["requests_per_s"],
                                      "cpu_us_per_request_outbound": report["proxies"][0]["cpu_us_per_request"],
                                      **report["profile"]}
            pp.PROCS.check_alive(backend)
        finally:
            stop()
    finally:
        pp.PROCS.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)

    Console(width=max(Console().width, 110)).print(table(rows, args))
    for kind, prof in profiles.items():
        print(f"py-spy, outbound proxy, {kind} ({prof['samples']} samples, "
              f"{prof['requests_per_s']:,.0f} req/s, {prof['cpu_us_per_request_outbound']} µs/request):")
        for name, share in prof.get("shares", {}).items():
            print(f"  {share:6.1%}  {name}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "command": shlex.join(sys.argv),
                                         "pinning": {"proxies": args.proxy_cpu,
                                                     "wrk_and_backend": args.load_cpu},
                                         "rows": rows, "profiles": profiles}, indent=2) + "\n")
        pp.log(f"raw results written to {args.json}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pp.log("interrupted (every process the benchmark started has been stopped)")
        sys.exit(130)

"""Benchmark: the idle RSS of `isthmus proxy`, and what each import adds to it.

Starts the same control plane and proxy pair as `bench/proxy_pair.py` (an
embedded cluster's API, the identity and destination services, an inbound and
an outbound `isthmus proxy` with the injector's environment, the backend of
`bench/backend_http.py`), sends one request through the pair, waits 1 s and
reads each proxy's VmRSS. Then, in a fresh interpreter per source tree, it
imports the proxy's modules one after another and prints the RSS each adds.

`--src LABEL=DIR` (repeatable) runs the proxies from another source tree (put
first on PYTHONPATH), so trees compare in one run on one machine, e.g. the
tree before a change (`git archive HEAD src | tar -x -C /tmp/before`):

    .venv/bin/python bench/proxy_rss.py --src before=/tmp/before/src --src after=src --rounds 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _mesh import ISTHMUS, Mesh, start_mesh
from proxy_pair import (
    AUTHORITY,
    BACKEND,
    BACKEND_SCRIPT,
    INBOUND,
    OUTBOUND,
    PROCS,
    check_free,
    rss_kb,
    wait_listening,
    wait_ok,
    wait_ready,
)

# In the order the proxy loads them (`cli.entry` → `cli.proxy` → `components.proxy`).
IMPORTS = ["ssl", "asyncio", "uvloop", "httptools", "cryptography.hazmat.bindings._rust",
           "cryptography.x509", "isthmus.adapters.x509", "isthmus.components.identity.tlsconfig",
           "isthmus.components.identity.client", "isthmus.components.destination.client",
           "isthmus.components.proxy.http1", "isthmus.components.proxy.admin",
           "isthmus.components.proxy.proxy", "isthmus.cli.proxy"]

_PROBE = """
import importlib, sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS'):
            return int(line.split()[1])
print('interpreter', rss())
for name in sys.argv[1:]:
    importlib.import_module(name)
    print(name, rss())
print('loaded:', *(f'{m}={m in sys.modules}' for m in ('aiohttp', 'orjson', 'tempfile', 'cryptography')))
"""


def env_for(src: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src.resolve()), *filter(None, [env.get("PYTHONPATH")])])
    return env


def import_costs(src: Path | None) -> list[tuple[str, float, float]]:
    """(module, MiB it added, MiB total) for each of IMPORTS, in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", _PROBE, *IMPORTS], env=env_for(src), check=True,
                         capture_output=True, text=True).stdout.splitlines()
    rows, last = [], 0
    for line in out:
        name, _, value = line.rpartition(" ")
        if not value.isdigit():
            rows.append((line, 0.0, 0.0))
            continue
        kb = int(value)
        rows.append((name, (kb - last) / 1024 if last else 0.0, kb / 1024))
        last = kb
    return rows


def idle_rss(workdir: Path, mesh: Mesh, src: Path | None) -> dict[str, float]:
    procs = {}
    for role, ip, sa in (("inbound", INBOUND[0], "server"), ("outbound", OUTBOUND[0], "client")):
        env = dict(env_for(src), **mesh.proxy_env(sa, ip, forward_host=BACKEND[0]))
        procs[role] = PROCS.spawn(f"isthmus {role}", [ISTHMUS, "proxy"], cpu=0,
                                  log=workdir / f"isthmus-{role}.log", env=env)
    try:
        for ip in (INBOUND[0], OUTBOUND[0]):
            wait_ready((ip, 4191), list(procs.values()))
        wait_ok(OUTBOUND, list(procs.values()))
        time.sleep(1.0)
        return {role: rss_kb(p.pid) / 1024 for role, p in procs.items()}
    finally:
        for p in procs.values():
            PROCS.stop(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", action="append", default=[], metavar="LABEL=DIR",
                    help="a source tree to run the proxies from (default: the installed one)")
    ap.add_argument("--rounds", type=int, default=1, help="pairs started per tree, interleaved (medians)")
    args = ap.parse_args()
    trees: list[tuple[str, Path | None]] = []
    for spec in args.src:
        label, sep, path = spec.partition("=")
        if not sep or not Path(path, "isthmus").is_dir():
            ap.error(f"--src {spec!r}: want LABEL=DIR with DIR holding the isthmus package")
        trees.append((label, Path(path)))
    trees = trees or [("installed", None)]
    print(f"request Host: {AUTHORITY}")
    for label, src in trees:
        print(f"\nimports, {label} (MiB added / total):")
        for name, added, total in import_costs(src):
            print(f"  {name:48s} {added:+6.1f} {total:7.1f}" if total else f"  {name}")
    workdir = Path(tempfile.mkdtemp(prefix="isthmus-bench-rss-"))
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _ in trees}
    try:
        for addr in (BACKEND, OUTBOUND, INBOUND):
            check_free(addr)
        backend = PROCS.spawn("backend", [sys.executable, str(BACKEND_SCRIPT), "--address",
                                          f"{BACKEND[0]}:{BACKEND[1]}"], cpu=1, log=workdir / "backend.log")
        wait_listening(BACKEND, [backend])
        mesh = start_mesh(workdir / "mesh", server_ip=INBOUND[0], service_port=BACKEND[1])
        try:
            for _ in range(args.rounds):
                for label, src in trees:
                    results[label].append(idle_rss(workdir, mesh, src))
        finally:
            mesh.stop()
    finally:
        PROCS.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nidle RSS (VmRSS 1 s after one request), median of {args.rounds}:")
    for label, rounds in results.items():
        out = statistics.median(r["outbound"] for r in rounds)
        inb = statistics.median(r["inbound"] for r in rounds)
        print(f"  {label:12s} outbound {out:5.1f} MiB   inbound {inb:5.1f} MiB")


if __name__ == "__main__":
    main()

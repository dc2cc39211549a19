"""Benchmark: what the multicluster gateway adds to a request, west → east.

Two embedded clusters set up as in the walkthrough (one trust anchor, an
issuer each, the control plane and `multicluster install` on both, emojivoto
meshed on both, `multicluster link --cluster-name east` applied to west,
`web-svc` exported from east). The load comes from wrk on the machine, sent
to the outbound port (4140) of west's vote-bot sidecar — the proxy every
request of west's vote-bot goes through — with `GET /healthz` (answered by
east's web container itself, no further hop), alternating between Host
headers, so the paths share the same client proxy and the same east pod
and sidecar in one run:

  gateway  wrk → west vote-bot proxy ══mTLS══► east gateway ══mTLS══► east web proxy → web
           (Host: web-svc-east.emojivoto.svc.cluster.local:80, the mirror)
  gw-pod   the same, to the gateway pod's own IP instead of its load-balancer address
           (Host: web-gwpod.emojivoto.svc.cluster.local:80: a mirror-like Endpoints made by hand)
  direct   wrk → west vote-bot proxy ══mTLS══════════════════════════► east web proxy → web
           (Host: web-direct.emojivoto.svc.cluster.local:80)

On an embedded cluster a load-balancer address is served by the cluster's
service proxy (a userland TCP forwarder), which also emulates the WAN between
regions (`isthmus demo --wan-latency`; sfo3 to syd1 is a 150 ms round trip
by default). This benchmark turns the emulation off (`--wan-latency off`,
written to `$ISTHMUS_HOME/wan.json` before the clusters start), so
`gateway` minus `gw-pod` is the forwarder's cost and `gw-pod` minus `direct`
the gateway's own; `--wan-latency auto` shows the emulated distance instead.

`web-direct` is a Service made in west for this benchmark only: its Endpoints
are east's web pod IP, with a targetRef to a Pod object in west that records
that pod's service account and proxy container (its own containers only
sleep), so west's destination service answers with the web pod's identity
and its proxy port, as for a meshed pod of west. Only loopback addresses.

Per path and round: closed loop (`wrk -t1 -c<connections> -d<duration>s`) and
a fixed rate (`bench/wrk/fixed_rate.lua`, `-c10`, <rate>/s); the rounds
alternate the paths, and the median of the rounds is reported.

    .venv/bin/python bench/gateway_latency.py [--duration 10] [--rounds 3] [--rate 200] [--wan-latency off]
                                              [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "bench"
ISTHMUS = str(Path(sys.executable).parent / "isthmus")
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
EMOJIVOTO = ROOT / "deploy" / "emojivoto.yml"
FIRST_CLUSTER = os.environ.get("ISTHMUS_BENCH_FIRST_CLUSTER", "241")
MC = "isthmus-multicluster"
PATHS = {"gateway": "web-svc-east.emojivoto.svc.cluster.local:80",
         "gw-pod": "web-gwpod.emojivoto.svc.cluster.local:80",
         "direct": "web-direct.emojivoto.svc.cluster.local:80"}
GATEWAY_ID = "isthmus-gateway.isthmus-multicluster.serviceaccount.identity.isthmus.cluster.local"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Setup:
    def __init__(self, home: Path, wan_latency: str) -> None:
        self.home = home
        (home / "wan.json").write_text(json.dumps({"wan_latency": wan_latency}) + "\n")
        self.env = dict(os.environ, ISTHMUS_HOME=str(home), KUBECONFIG=str(home / "kubeconfig"),
                        ISTHMUS_FIRST_CLUSTER_NUMBER=FIRST_CLUSTER)
        self.started: list[str] = []

    def isthmus(self, *args: str) -> str:
        done = subprocess.run([ISTHMUS, *args], capture_output=True, text=True, env=self.env, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"isthmus {shlex.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def kc(self, ctx: str, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run([KUBECTL, f"--context={ctx}", *args], input=stdin, capture_output=True, text=True,
                              env=self.env, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"kubectl --context={ctx} {shlex.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def up(self) -> str:
        """Both clusters as in the walkthrough; the address of west's client proxy's outbound port."""
        for name, region in (("west", "sfo3"), ("east", "syd1")):
            log(f"cluster {name}")
            self.isthmus("cluster", "create", name, "--region", region, "--nodes", "1")
            self.started.append(name)
        root, root_key = self.home / "root.crt", self.home / "root.key"
        self.isthmus("certs", "create", "root", str(root), str(root_key))
        for c in ("west", "east"):
            crt, key = self.home / f"issuer-{c}.crt", self.home / f"issuer-{c}.key"
            self.isthmus("certs", "create", "issuer", str(crt), str(key), "--ca", str(root), "--ca-key", str(root_key))
            self.kc(c, "apply", "-f", "-", stdin=self.isthmus("install", "--crds"))
            self.kc(c, "apply", "-f", "-", stdin=self.isthmus(
                f"--context={c}", "install", "--identity-trust-anchors-file", str(root),
                "--identity-issuer-certificate-file", str(crt), "--identity-issuer-key-file", str(key)))
        for c in ("west", "east"):
            log(f"control plane, gateway and emojivoto on {c}")
            self.kc(c, "-n", "isthmus", "wait", "--for=condition=Available", "deploy", "--all", "--timeout=180s")
            self.kc(c, "apply", "-f", "-", stdin=self.isthmus(f"--context={c}", "multicluster", "install"))
            self.kc(c, "apply", "-f", "-", stdin=self.isthmus("inject", str(EMOJIVOTO)))
        self.kc("east", "-n", "emojivoto", "scale", "deploy/vote-bot", "--replicas=0")
        self.kc("west", "-n", "emojivoto", "set", "env", "deploy/vote-bot", "VOTE_RATE=0.2")  # a quiet client
        for c in ("west", "east"):
            self.kc(c, "-n", MC, "rollout", "status", "deploy/isthmus-gateway", "--timeout=180s")
            self.kc(c, "-n", "emojivoto", "rollout", "status", "deploy/web", "--timeout=180s")
        self.kc("west", "-n", "emojivoto", "rollout", "status", "deploy/vote-bot", "--timeout=180s")
        deadline = time.monotonic() + 60
        while not json.loads(self.kc("east", "-n", MC, "get", "svc", "isthmus-gateway", "-o", "json")
                             ).get("status", {}).get("loadBalancer", {}).get("ingress"):
            if time.monotonic() > deadline:
                raise RuntimeError("east's gateway got no load-balancer address")
            time.sleep(1)
        log("link west → east, export web-svc")
        self.kc("west", "apply", "-f", "-", stdin=self.isthmus("--context=east", "multicluster", "link",
                                                                 "--cluster-name", "east"))
        self.kc("east", "-n", "emojivoto", "label", "svc", "web-svc", "mirror.isthmus.io/exported=true")
        web_ip = self.pod_ip("east", "web")
        gateway_pod_ip = self.pod_ip("east", "isthmus-gateway", namespace=MC)
        shadow = [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-gwpod", "namespace": "emojivoto"},
             "spec": {"ports": [{"name": "http", "port": 80}]}},
            {"apiVersion": "v1", "kind": "Endpoints", "metadata": {
                "name": "web-gwpod", "namespace": "emojivoto",
                "annotations": {"mirror.isthmus.io/remote-gateway-identity": GATEWAY_ID,
                                "mirror.isthmus.io/remote-svc-fq-name": "web-svc.emojivoto.svc.cluster.local"}},
             "subsets": [{"addresses": [{"ip": gateway_pod_ip}], "ports": [{"name": "http", "port": 4143}]}]},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-in-east", "namespace": "emojivoto"},
             "spec": {"serviceAccountName": "web", "containers": [
                 {"name": n, "image": "isthmus/sleep", "command": ["sleep", "86400"]}
                 for n in ("web", "isthmus-proxy")]}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-direct", "namespace": "emojivoto"},
             "spec": {"ports": [{"name": "http", "port": 80}]}},
            {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web-direct", "namespace": "emojivoto"},
             "subsets": [{"addresses": [{"ip": web_ip, "targetRef": {"kind": "Pod", "name": "web-in-east",
                                                                      "namespace": "emojivoto"}}],
                          "ports": [{"name": "http", "port": 8080}]}]},
        ]
        self.kc("west", "apply", "-f", "-", stdin=yaml.safe_dump_all(shadow))
        client = f"{self.pod_ip('west', 'vote-bot')}:4140"
        for name, authority in PATHS.items():
            deadline = time.monotonic() + 90
            while True:
                try:
                    request = urllib.request.Request(f"http://{client}/healthz", headers={"Host": authority})
                    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                    with opener.open(request, timeout=5) as r:
                        if r.status == 200:
                            break
                except OSError as e:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the {name} path does not answer: {e}") from None
                time.sleep(1)
            log(f"{name} path answers")
        return client

    def pod_ip(self, ctx: str, app: str, namespace: str = "emojivoto") -> str:
        deadline = time.monotonic() + 120
        while True:
            for p in json.loads(self.kc(ctx, "-n", namespace, "get", "pods", "-l", f"app={app}", "-o", "json"))[
                    "items"]:
                statuses = p.get("status", {}).get("containerStatuses") or []
                if not p["metadata"].get("deletionTimestamp") and statuses and all(s.get("ready") for s in statuses):
                    return str(p["status"]["podIP"])
            if time.monotonic() > deadline:
                raise RuntimeError(f"no ready {app} pod in {ctx}")
            time.sleep(1)

    def down(self) -> None:
        for name in reversed(self.started):
            subprocess.run([ISTHMUS, "cluster", "delete", name], capture_output=True, env=self.env, timeout=120)


def wrk(client: str, authority: str, *, connections: int, duration: float, rate: int | None) -> dict[str, Any]:
    script = HERE / "wrk" / ("fixed_rate.lua" if rate else "report.lua")
    argv = [WRK, "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "5s", "-H", f"Host: {authority}",
            "-s", str(script), f"http://{client}/healthz"]
    if rate:
        argv += ["--", str(rate)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed: {done.stderr.strip() or done.stdout.strip()}")
    report: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    report["requests_per_s"] = report["requests"] / (report["duration_us"] / 1e6)
    report["command"] = shlex.join(argv)
    return report


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?")
    version = subprocess.run([WRK, "-v"], capture_output=True, text=True)
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "nproc": os.cpu_count(), "cpu_model": model,
            "kernel": platform.release(), "python": platform.python_version(),
            "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
            "wrk": (version.stdout or version.stderr).strip().splitlines()[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (gateway, gw-pod, direct)")
    ap.add_argument("--connections", type=int, default=8, help="closed-loop connections")
    ap.add_argument("--rate", type=int, default=200, help="requests/s of the fixed-rate runs")
    ap.add_argument("--wan-latency", default="off", help="the clusters' emulated WAN: off, auto or a round trip in ms")
    ap.add_argument("--json", type=Path, help="write every run's numbers here")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="isthmus-gwbench-"))
    setup = Setup(home, args.wan_latency)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {p: {"closed": [], "fixed": []} for p in PATHS}
    info = machine()
    try:
        client = setup.up()
        for authority in PATHS.values():  # warm-up: connections, discovery, TLS sessions
            wrk(client, authority, connections=args.connections, duration=2, rate=None)
        for r in range(args.rounds):
            for name, authority in PATHS.items():
                closed = wrk(client, authority, connections=args.connections, duration=args.duration, rate=None)
                fixed = wrk(client, authority, connections=10, duration=args.duration, rate=args.rate)
                runs[name]["closed"].append(closed)
                runs[name]["fixed"].append(fixed)
                log(f"round {r + 1} {name}: {closed['requests_per_s']:.0f} req/s closed loop, p50 "
                    f"{closed['latency_us']['p50']} µs; at {args.rate}/s p50 {fixed['latency_us']['p50']} µs "
                    f"p99 {fixed['latency_us']['p99']} µs")
    finally:
        setup.down()
        shutil.rmtree(home, ignore_errors=True)

    def med(name: str, kind: str, key: str) -> float:
        values = [(r["latency_us"][key] if key.startswith("p") else r[key]) for r in runs[name][kind]]
        return float(statistics.median(values))

    print(f"machine: {info['cpu_model']}, {info['nproc']} CPUs, kernel {info['kernel']}, Python {info['python']}, "
          f"{info['wrk']}, load average before {' '.join(info['loadavg_before'])}")
    print(f"median of {args.rounds} rounds, {args.duration:g} s each; latency in µs (wrk, from request written "
          f"to response read)")
    print(f"{'path':<9}{'req/s':>8}{'p50':>8}{'p99':>8}   {'@' + str(args.rate) + '/s p50':>12}{'p90':>8}"
          f"{'p99':>8}{'p99.9':>8}")
    for name in PATHS:
        print(f"{name:<9}{med(name, 'closed', 'requests_per_s'):>8.0f}{med(name, 'closed', 'p50'):>8.0f}"
              f"{med(name, 'closed', 'p99'):>8.0f}   {med(name, 'fixed', 'p50'):>12.0f}{med(name, 'fixed', 'p90'):>8.0f}"
              f"{med(name, 'fixed', 'p99'):>8.0f}{med(name, 'fixed', 'p99.9'):>8.0f}")
    print(f"at p50 ({args.rate}/s): the gateway adds {med('gw-pod', 'fixed', 'p50') - med('direct', 'fixed', 'p50'):.0f} "
          f"µs, reaching it at its load-balancer address {med('gateway', 'fixed', 'p50') - med('gw-pod', 'fixed', 'p50'):.0f} "
          f"µs more (emulated WAN: {args.wan_latency})")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "args": vars(args) | {"json": str(args.json)},
                                         "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

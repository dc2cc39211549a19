"""Viz over a real Prometheus (Debian's `prometheus`), against an embedded cluster running
meshed emojivoto.

Debian builds Prometheus without Kubernetes discovery, so the test uses
`isthmus viz prometheus-config --targets-file` (file discovery) with the
targets file kept by `isthmus viz prometheus-targets` (run as a user runs
it), which labels every pod container port as Prometheus' own pod discovery
does; the relabelling —
which pods are kept and the target labels — is the same configuration as
with Kubernetes discovery, and runs here in the real Prometheus.

1. Prometheus scrapes exactly the meshed pods' proxies (port 4191), and every
   series carries `namespace`, `pod`, `deployment` and `serviceaccount`; a new
   meshed pod becomes a target without a restart.
2. stat (deployments and services), routes and edges computed by
   `isthmus.core.viz.query` from `PrometheusSource` and from the embedded
   collector's `EmbeddedSource`, at the same instant over the same 30 s
   window, agree: RPS and latency p50 within 15 % (+ 0.05/s, + 1 ms), success
   rates within 0.05. The RPS gap to expect is at most about
   (i_prom + i_viz) / W = (1 s + 1 s) / 30 s = 7 %: Prometheus' `increase`
   extrapolates the samples inside the window to its edges, the collector
   takes the values at the last scrapes before the window's start and end,
   and the two scrape at different instants; twice that leaves room for
   scheduling jitter on a loaded machine. Success rates differ by the
   requests at the window's edges that one source counts and the other does
   not: voting answers ~60 requests in 30 s, so one failed doughnut vote at
   an edge moves its rate by 0.017; 0.05 allows two, and more. (Measured
   over four runs: RPS within 2 %, success within 0.015, p50 within 6 %.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.resources.core_v1 import Pod

from isthmus.adapters.kube import Informer
from isthmus.components import cluster as clusters
from isthmus.components.viz.collector import Collector, EmbeddedSource
from isthmus.components.viz.prometheus import PrometheusSource
from isthmus.core.viz import query
from isthmus.core.viz.query import StatTarget

from .conftest import Cluster, _start
from .test_install import EMOJIVOTO, Installed, isthmus, ready, wait_until

pytestmark = pytest.mark.e2e

ISTHMUS = str(Path(sys.executable).parent / "isthmus")
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
PROM_INTERVAL = 1.0
VIZ_INTERVAL = 1.0
WINDOW = 30.0  # seconds; 1m is the CLI's default, 30 s keeps the test shorter at the same precision
DEPLOYMENTS = ("web", "emoji", "voting", "vote-bot")
SERVICES = ("web-svc", "emoji-svc", "voting-svc")
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class Background:
    """An asyncio loop in a thread: the targets writer, the collector and both sources live in it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tasks: list[concurrent.futures.Future[Any]] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.tasks.append(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        time.sleep(0.2)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Prometheus:
    def __init__(self, config: Path, data: Path, log: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        self.log = log
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={data}",
             f"--web.listen-address={self.url.removeprefix('http://')}", "--log.level=info"],
            stdout=subprocess.DEVNULL, stderr=log.open("w"), env=env, start_new_session=True)

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=10) as r:
            return json.loads(r.read())

    def ready(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(f"{self.url}/-/ready", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def targets(self, job: str) -> list[dict[str, Any]]:
        active = self.get("/api/v1/targets", state="active")["data"]["activeTargets"]
        return [t for t in active if t["labels"].get("job") == job]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Setup:
    def __init__(self, installed: Installed, prometheus: Prometheus, bg: Background,
                 collector: Collector, targets: Path) -> None:
        self.installed = installed
        self.c: Cluster = installed.c
        self.prometheus = prometheus
        self.bg = bg
        self.collector = collector
        self.targets = targets
        self.started = time.time()


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as a user stops `prometheus-targets`; SIGKILL if it does not go."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def lightkube_client(c: Cluster) -> AsyncClient:
    config = KubeConfig.from_file(c.kubeconfig).get(context_name=c.name)
    return AsyncClient(config=config, trust_env=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    home = tmp_path_factory.mktemp("vizprom")
    c = _start(home, "prom", "fra1", extra_env={"ISTHMUS_RESTART_BACKOFF": "1"})
    bg: Background | None = None
    prometheus: Prometheus | None = None
    writer: subprocess.Popen[bytes] | None = None
    try:
        certs = home / "certs"
        isthmus("certs", "create", "root", str(certs / "root.crt"), str(certs / "root.key"))
        isthmus("certs", "create", "issuer", str(certs / "issuer.crt"), str(certs / "issuer.key"),
                "--ca", str(certs / "root.crt"), "--ca-key", str(certs / "root.key"))
        inst = Installed(c, certs)
        inst.apply_install()
        inst.wait_available()
        c.kubectl("create", "namespace", "emojivoto")
        c.kubectl("annotate", "namespace", "emojivoto", "isthmus.io/inject=enabled")
        c.kubectl("apply", "-f", str(EMOJIVOTO))
        wait_until("4 emojivoto pods, all Ready",
                   lambda: (lambda ps: len(ps) == 4 and all(map(ready, ps)))(inst.pods("emojivoto")),
                   timeout=120)

        # The targets file, kept by `isthmus viz prometheus-targets`; the collector in this process,
        # as `isthmus viz-api` runs it.
        targets = home / "targets.json"
        writer = subprocess.Popen([ISTHMUS, "--context", c.name, "viz", "prometheus-targets", str(targets)],
                                  stdout=subprocess.DEVNULL, stderr=(home / "targets.log").open("w"),
                                  env=c.env(), start_new_session=True)
        bg = Background()
        client = lightkube_client(c)
        collector = Collector(interval=VIZ_INTERVAL)
        informer = Informer(client, Pod, handler=collector.on_pod)
        bg.spawn(informer.run())
        stop = asyncio.Event()
        bg.spawn(collector.run(stop))
        wait_until("the targets file", targets.exists)

        config = home / "prometheus.yml"
        config.write_text(c.isthmus("--context", c.name, "viz", "prometheus-config", "--targets-file",
                                    str(targets), "--scrape-interval", f"{PROM_INTERVAL:g}s").stdout)
        check = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, text=True,
                               timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        prometheus = Prometheus(config, home / "tsdb", home / "prometheus.log")
        wait_until("Prometheus to be ready", prometheus.ready)
        yield Setup(inst, prometheus, bg, collector, targets)
        bg.run(_stop(stop, client))
    finally:
        if prometheus is not None:
            prometheus.stop()
        if writer is not None:
            stop_process(writer)
        if bg is not None:
            bg.stop()
        if c.dir.exists():
            clusters.stop(c.dir)


async def _stop(stop: asyncio.Event, client: AsyncClient) -> None:
    stop.set()
    await asyncio.sleep(0.1)
    await client.close()


def test_prometheus_scrapes_the_meshed_proxies_with_the_target_labels(setup: Setup) -> None:
    prom = setup.prometheus
    pods = {p["metadata"]["name"]: p for p in setup.installed.pods("emojivoto")}

    def all_up() -> list[dict[str, Any]]:
        found = prom.targets("isthmus-proxy")
        return found if len(found) == 4 and all(t["health"] == "up" for t in found) else []

    found = wait_until("the 4 emojivoto proxies up in Prometheus", all_up, timeout=60)
    # Only the proxies' admin ports: not the control plane (labelled, but without a proxy), not
    # the apps' ports, not the proxies' inbound port.
    assert sorted(t["labels"]["instance"] for t in found) == sorted(
        f"{p['status']['podIP']}:4191" for p in pods.values())
    for t in found:
        pod = pods[t["labels"]["pod"]]
        app = pod["metadata"]["labels"]["app"]
        assert t["scrapeUrl"] == f"http://{pod['status']['podIP']}:4191/metrics"
        assert t["labels"] == {"job": "isthmus-proxy", "instance": t["labels"]["instance"],
                               "namespace": "emojivoto", "pod": pod["metadata"]["name"],
                               "deployment": app, "serviceaccount": pod["spec"]["serviceAccountName"]}
    assert prom.targets("isthmus-service-mirror") == []  # no Link here

    # The proxies' own series come with those labels.
    def series() -> list[dict[str, Any]]:
        result = prom.get("/api/v1/query", query='response_total{direction="inbound"}')["data"]["result"]
        return result if {r["metric"].get("deployment") for r in result} >= {"web", "emoji", "voting"} \
            else []

    inbound = wait_until("inbound responses of web, emoji and voting", series)
    for r in inbound:
        m = r["metric"]
        assert m["namespace"] == "emojivoto" and m["pod"] in pods
        assert m["serviceaccount"] == m["deployment"]  # emojivoto runs each as its own account


def stat_rows(source: Any, bg: Background, at: float) -> list[dict[str, Any]]:
    targets = [StatTarget("deployment", "emojivoto", d, 1, 1) for d in DEPLOYMENTS] + [
        StatTarget("service", "emojivoto", s, 0, 0) for s in SERVICES]
    increases = bg.run(source.increases([*query.HTTP_NAMES, *query.TCP_NAMES], WINDOW, at))
    gauges = bg.run(source.gauges(query.GAUGE_NAMES))
    return [r.to_dict() for r in query.stat(targets, increases, gauges, WINDOW)]


def route_rows(source: Any, bg: Background, at: float) -> list[dict[str, Any]]:
    increases = bg.run(source.increases(query.ROUTE_NAMES, WINDOW, at))
    inbound_web = lambda labels: (labels.get("direction") == "inbound"  # noqa: E731
                                  and labels.get("deployment") == "web")
    return [r.to_dict() for r in query.routes(increases, inbound_web, WINDOW)]


def edge_rows(source: Any, bg: Background, at: float) -> list[dict[str, Any]]:
    increases = bg.run(source.increases(["response_total", "tcp_open_total"], WINDOW, at))
    gauges = bg.run(source.gauges(query.GAUGE_NAMES))
    identity = lambda sa, ns: f"{sa}.{ns}.serviceaccount.identity.isthmus.cluster.local"  # noqa: E731
    return [r.to_dict() for r in query.edges("deployment", "emojivoto", increases, gauges, identity)]


def close(a: float | None, b: float | None, rel: float, abs_: float) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= abs_ + rel * max(abs(a), abs(b))


def test_viz_answers_alike_from_prometheus_and_from_the_embedded_collector(setup: Setup) -> None:
    bg, prom = setup.bg, setup.prometheus
    # Both need a full window behind the instant compared (plus a scrape of each either side).
    wait_until("a window of history in both", lambda: time.time() > setup.started + WINDOW + 10,
               timeout=WINDOW + 60)
    source = PrometheusSource(prom.url)
    embedded = EmbeddedSource(setup.collector)
    try:
        at = time.time() - 2 * VIZ_INTERVAL
        from_prom, from_viz = stat_rows(source, bg, at), stat_rows(embedded, bg, at)
        routes_prom, routes_viz = route_rows(source, bg, at), route_rows(embedded, bg, at)
        edges_prom, edges_viz = edge_rows(source, bg, at), edge_rows(embedded, bg, at)
    finally:
        bg.run(source.close())
    report = json.dumps({"prometheus": from_prom, "embedded": from_viz}, indent=1)

    by_name = {(r["kind"], r["name"]): r for r in from_viz}
    for p in from_prom:  # shown with -s: prometheus vs embedded
        v = by_name[(p["kind"], p["name"])]
        print(f"{p['kind']}/{p['name']}: rps {p['rps']} / {v['rps']}, success {p['success']} / "
              f"{v['success']}, p50 {(p['latency_ms'] or {}).get('p50')} / {(v['latency_ms'] or {}).get('p50')}")
    for p in from_prom:
        v = by_name[(p["kind"], p["name"])]
        if p["kind"] == "deployment" and p["name"] == "vote-bot":
            assert p["rps"] is None and v["rps"] is None, report  # it serves nothing
            continue
        assert v["rps"] and v["rps"] > 0.5, report
        assert close(p["rps"], v["rps"], 0.15, 0.05), report
        assert close(p["success"], v["success"], 0.0, 0.05), report
        assert p["latency_ms"] is not None and v["latency_ms"] is not None, report
        assert close(p["latency_ms"]["p50"], v["latency_ms"]["p50"], 0.15, 1.0), report
    # (Whether a doughnut vote failed inside this 30 s window is chance; test_viz.py waits for one.
    # Here both sources must agree on the rate either way, which the loop above checks.)

    route_report = json.dumps({"prometheus": routes_prom, "embedded": routes_viz}, indent=1)
    prom_routes = {r["route"]: r for r in routes_prom}
    busy = [r for r in routes_viz if r["rps"] >= 0.5]
    assert {r["route"] for r in busy} >= {"GET /api/list", "GET /api/vote"}, route_report
    for v in busy:
        p = prom_routes[v["route"]]
        assert close(p["rps"], v["rps"], 0.15, 0.05), route_report
        assert close(p["success"], v["success"], 0.0, 0.05), route_report

    # Edges: the same pairs, secured, with the same identities (the client's from `serviceaccount`).
    assert edges_prom == edges_viz, json.dumps({"prometheus": edges_prom, "embedded": edges_viz}, indent=1)
    pairs = {(e["src"], e["dst"]) for e in edges_prom}
    assert pairs >= {("vote-bot", "web"), ("web", "emoji"), ("web", "voting")}, edges_prom
    assert all(e["secured"] and e["client_id"] and e["server_id"] for e in edges_prom), edges_prom


def test_a_new_meshed_pod_becomes_a_target_without_restarting_prometheus(setup: Setup) -> None:
    c, prom = setup.c, setup.prometheus
    c.kubectl("-n", "emojivoto", "scale", "deploy/emoji", "--replicas=2")
    try:
        def five_up() -> bool:
            found = prom.targets("isthmus-proxy")
            return len(found) == 5 and all(t["health"] == "up" for t in found)

        wait_until("the second emoji pod's proxy up in Prometheus", five_up, timeout=90)
        emoji = [t["labels"] for t in prom.targets("isthmus-proxy") if t["labels"]["deployment"] == "emoji"]
        assert len({t["pod"] for t in emoji}) == 2
    finally:
        c.kubectl("-n", "emojivoto", "scale", "deploy/emoji", "--replicas=1")

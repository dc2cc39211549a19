"""Everything one embedded cluster runs, in one process: API server, controllers, pod runner, service proxy.

Start order: the API server (so the rest can talk to it), then the pod runner,
the service proxy and the controllers, each of which reaches the API through
lightkube with the cluster's controller certificate. On SIGTERM every pod's
process group is ended before the API server stops; the runner's children
also die with this process if it is killed (PR_SET_PDEATHSIG), so no orphan
outlives its cluster. `cluster start` brings the desired state back: the pods
in the store are run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from lightkube.resources.core_v1 import Endpoints, Service

from isthmus.adapters.clusterdir import ClusterDir
from isthmus.adapters.kube import Informer, all_synced, client_from_certs
from isthmus.adapters.pki import ClusterPKI, KeyPair, issue, write_private, write_public
from isthmus.adapters.stalls import StallWatch
from isthmus.components.apiserver import server as apiserver
from isthmus.components.apiserver.context import ApiContext
from isthmus.components.controllers.deployments import DeploymentController
from isthmus.components.controllers.endpoints import EndpointsController
from isthmus.components.controllers.nodeagent import NodeAgent
from isthmus.components.podrunner import PodRunner
from isthmus.components.serviceproxy import ServiceProxy
from isthmus.components.serviceproxy.wan import RegionDelays
from isthmus.core.network import API_PORT, HTTP_PROXY_PORT, ClusterNetwork

log = logging.getLogger("isthmus.cluster")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def controller_credentials(pki: ClusterPKI) -> tuple[Path, Path]:
    """The controllers' own client certificate (made once, on first start)."""
    cert, key = pki.dir / "controllers.crt", pki.dir / "controllers.key"
    if not cert.exists() or not key.exists():
        ca = KeyPair(pki.ca_cert.read_bytes(), pki.ca_key.read_bytes())
        pair = issue(ca, "system:isthmus-controllers", orgs=("system:masters",), now=utcnow(), client=True)
        write_public(cert, pair.cert_pem)
        write_private(key, pair.key_pem)
    return cert, key


class ProxyFeed:
    """Keeps the service proxy's view of Services and Endpoints current."""

    MIN_SYNC = 0.5
    SYNC_SHARE = 0.1

    def __init__(self, client: Any, proxy: ServiceProxy) -> None:
        self._proxy = proxy
        self._dirty = asyncio.Event()
        self.services = Informer(client, Service, handler=self._changed)
        self.endpoints = Informer(client, Endpoints, handler=self._changed)

    def informers(self) -> list[Informer]:
        return [self.services, self.endpoints]

    def _changed(self, typ: str, obj: dict[str, Any]) -> None:
        self._dirty.set()

    async def run(self) -> None:
        # Like kube-proxy's minimum sync period: during a burst of changes the map is
        # rebuilt at most every `MIN_SYNC` seconds, and never more often than leaves the
        # rebuilds `SYNC_SHARE` of the time (a rebuild walks every Service, so with thousands
        # of them it would otherwise starve the API server sharing this process); a lone
        # change applies at once.
        loop = asyncio.get_running_loop()
        last, gap = 0.0, self.MIN_SYNC
        while True:
            await self._dirty.wait()
            wait = last + gap - loop.time()
            await asyncio.sleep(max(wait, 0.02))
            self._dirty.clear()
            last = loop.time()
            self._proxy.update(list(self.services.cache.values()), list(self.endpoints.cache.values()))
            gap = max(self.MIN_SYNC, (loop.time() - last) / self.SYNC_SHARE)


async def _ready_once_caught_up(ctx: ApiContext, controllers: list[Any], *, limit: float = 20.0) -> None:
    """/readyz says ok once the controllers have read the store and gone through it once, so
    that `cluster start` returns on Deployments and Endpoints that tell the truth (a client
    waiting for `condition=Available` right after would otherwise read the last run's).
    A controller that cannot catch up in `limit` seconds is logged and waited for no longer."""
    async def caught_up() -> None:
        await all_synced(inf for c in controllers for inf in c.informers())
        await asyncio.gather(*(c.queue.idle() for c in controllers))
    try:
        await asyncio.wait_for(caught_up(), limit)
    except TimeoutError:
        log.warning("the controllers did not catch up within %gs; the API answers ready anyway", limit)
    ctx.not_ready = None


async def _until_signalled(cdir: ClusterDir) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    cdir.pid_file.write_text(f"{os.getpid()}\n")
    await stop.wait()


async def _serve_api_only(cdir: ClusterDir, *, history: int, bookmark_interval: float) -> None:
    running = await apiserver.start(cdir, history=history, bookmark_interval=bookmark_interval)
    try:
        await _until_signalled(cdir)
    finally:
        await running.close()


async def serve(cdir: ClusterDir, *, history: int = 10_000, bookmark_interval: float = 10.0,
                backoff_base: float = 10.0, api_only: bool = False) -> None:
    """Run the cluster until SIGTERM; `api_only` runs the API server alone (for measuring it)."""
    if api_only:
        await _serve_api_only(cdir, history=history, bookmark_interval=bookmark_interval)
        return
    config = cdir.load()
    net = ClusterNetwork(config.index)
    pki = ClusterPKI(cdir.pki_dir)
    agent_ref: list[NodeAgent] = []

    async def on_status(ns: str, name: str, status: dict[str, Any]) -> None:
        if agent_ref:
            await agent_ref[0].report(ns, name, status)

    runner = PodRunner(state_dir=cdir.path, on_status=on_status, clock=utcnow, backoff_base=backoff_base,
                       extra_path=[str(Path(sys.executable).parent)])
    running = await apiserver.start(cdir, history=history, bookmark_interval=bookmark_interval,
                                    pod_logs=runner.logs, not_ready="the controllers are starting")
    cert, key = controller_credentials(pki)
    client = client_from_certs(f"https://{net.api_ip}:{API_PORT}", pki.ca_cert, cert, key)
    agent = NodeAgent(client, config=config, runner=runner, ca_pem=pki.ca_cert.read_bytes())
    agent_ref.append(agent)
    stale = await agent.take_over(utcnow())
    if stale:
        log.info("cluster %s: %d pods shown not ready until they run again", config.name, stale)
    proxy = ServiceProxy(http_proxy_address=(net.proxy_ip, HTTP_PROXY_PORT), pod_namespace=agent.namespace_of_ip,
                         client_delay=RegionDelays(cdir.home, config.region))
    await proxy.start()
    deployments = DeploymentController(client, clock=utcnow)
    endpoints = EndpointsController(client)
    feed = ProxyFeed(client, proxy)
    parts: list[Any] = [agent, deployments, endpoints, feed]
    tasks = [asyncio.create_task(inf.run(), name=repr(inf)) for p in parts for inf in p.informers()]
    tasks += [asyncio.create_task(p.run(), name=type(p).__name__) for p in parts]
    tasks.append(asyncio.create_task(_ready_once_caught_up(running.ctx, [deployments, endpoints])))

    log.info("cluster %s: controllers, node agent (%d nodes) and service proxy running", config.name,
             config.nodes)
    try:
        async with StallWatch(f"cluster {config.name}"):
            await _until_signalled(cdir)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await runner.close()
        await proxy.close()
        await client.close()
        await running.close()
        log.info("cluster %s stopped", config.name)

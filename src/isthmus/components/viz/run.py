"""`isthmus viz-api`: the viz pod's process — collector (or Prometheus) plus the viz API.

Configured by the environment the `isthmus viz install` manifests set
(`isthmus.resources.viz_manifests.ENV_*`): the listen address, the cluster's
name and trust domain, the scrape interval, and optionally a Prometheus URL,
in which case nothing is scraped here and every query goes to Prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Pod

from isthmus.adapters.incluster import in_cluster_client
from isthmus.adapters.kube import Informer
from isthmus.components.controlplane.env import ControlPlaneConfigError
from isthmus.components.viz.api import VizApi, VizApiConfig
from isthmus.components.viz.collector import Collector, EmbeddedSource
from isthmus.components.viz.source import MetricsSource
from isthmus.components.webapp import serve
from isthmus.resources import viz_manifests as vm

__all__ = ["VizConfigError", "VizPodConfig", "run_viz_api"]

log = logging.getLogger("isthmus.viz")


class VizConfigError(ControlPlaneConfigError):
    """The viz pod's environment is not usable; the message names the variable."""


@dataclass(frozen=True)
class VizPodConfig:
    address: tuple[str, int]
    cluster_name: str
    trust_domain: str
    scrape_interval: float
    prometheus_url: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> VizPodConfig:
        env = os.environ if env is None else env
        listen = env.get(vm.ENV_LISTEN_ADDR) or f"127.0.0.1:{vm.VIZ_PORT}"
        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise VizConfigError(f"{vm.ENV_LISTEN_ADDR}={listen!r} is not HOST:PORT")
        try:
            interval = float(env.get(vm.ENV_SCRAPE_INTERVAL) or "10")
        except ValueError:
            raise VizConfigError(f"{vm.ENV_SCRAPE_INTERVAL} must be a number of seconds") from None
        if not 0.1 <= interval <= 300:
            raise VizConfigError(f"{vm.ENV_SCRAPE_INTERVAL}={interval:g} is not between 0.1 and 300 s")
        return cls((host, int(port)), env.get(vm.ENV_CLUSTER_NAME) or "local",
                   env.get(vm.ENV_TRUST_DOMAIN) or "cluster.local", interval,
                   env.get(vm.ENV_PROMETHEUS_URL) or "")


async def run_viz_api(config: VizPodConfig, stop: asyncio.Event,
                      client: AsyncClient | None = None,
                      env: Mapping[str, str] | None = None) -> None:
    client = client if client is not None else in_cluster_client(env)
    tasks: list[asyncio.Task[None]] = []
    collector: Collector | None = None
    source: MetricsSource
    if config.prometheus_url:
        from isthmus.components.viz.prometheus import PrometheusSource

        source = PrometheusSource(config.prometheus_url)
    else:
        collector = Collector(interval=config.scrape_interval)
        source = EmbeddedSource(collector)
        pods = Informer(client, Pod, handler=collector.on_pod)
        tasks += [asyncio.create_task(pods.run()), asyncio.create_task(collector.run(stop))]
    api = VizApi(client, source, VizApiConfig(config.cluster_name, config.trust_domain), collector)
    runner, port = await serve(api.app(), config.address, None)
    log.info("viz API of cluster %s on %s:%d (%s)", config.cluster_name, config.address[0], port,
             f"Prometheus {config.prometheus_url}" if config.prometheus_url
             else f"scraping every {config.scrape_interval:g}s")
    try:
        await stop.wait()
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await runner.cleanup()
        await source.close()

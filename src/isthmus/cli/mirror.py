"""`isthmus service-mirror --link NAME`: the multicluster service mirror of one Link.

What the multicluster install's service-mirror Deployment runs, one per
Link. Inside a pod it reaches its cluster's API with the pod's service
account (`adapters.incluster`); elsewhere with `--kubeconfig` / `--context`
(default: `$KUBECONFIG`, else the isthmus kubeconfig). Runs until SIGTERM or
SIGINT; a configuration it cannot run with is one line `error: ...` on
stderr and exit status 1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["service_mirror_cmd"]


def _fail(message: object) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(1)


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def service_mirror_cmd(
        ctx: typer.Context,
        link: Annotated[str, typer.Option("--link", help="the Link whose target cluster is mirrored")],
        namespace: Annotated[str, typer.Option(
            "--namespace", help="the Link's namespace (its credentials Secret and Lease are there)")
        ] = "isthmus-multicluster",
        kubeconfig: Annotated[Path | None, typer.Option(
            "--kubeconfig", help="kubeconfig of this cluster (default: in-cluster, else $KUBECONFIG or "
                                 "the isthmus kubeconfig)")] = None,
        context: Annotated[str | None, typer.Option("--context", help="kubeconfig context of this cluster")
                           ] = None,
        admin_addr: Annotated[str | None, typer.Option(
            "--admin-addr", help="where to serve /metrics, /ready, /live (default $POD_IP:9999, "
                                 "else 127.0.0.1:9999)")] = None,
        workers: Annotated[int, typer.Option("--workers", help="services reconciled at once")] = 4,
        log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error")] = "info",
) -> None:
    """Mirror the exported Services of a Link's target cluster into this cluster."""
    import uvloop
    from lightkube import AsyncClient, KubeConfig
    from lightkube.config.kubeconfig import SingleConfig

    from isthmus.adapters import kubeconfig as kubeconfigs
    from isthmus.adapters.clusterdir import isthmus_home
    from isthmus.adapters.incluster import InClusterError, in_cluster_config
    from isthmus.components.mirror import run
    from isthmus.components.mirror.gateway import HttpProbe
    from isthmus.components.proxy.dial import source_ip_for

    level = logging.getLevelName(log_level.upper())
    logging.basicConfig(level=level if isinstance(level, int) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        admin = _address(admin_addr or f"{os.environ.get('POD_IP') or '127.0.0.1'}:9999")
    except ValueError as e:
        _fail(f"--admin-addr: {e}")
        return
    context = context or ((ctx.obj or {}).get("context") if ctx is not None else None)
    config: KubeConfig | SingleConfig | None
    try:
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config = in_cluster_config()
        else:
            path = kubeconfig or kubeconfigs.default_path(isthmus_home())
            if not path.is_file():
                _fail(f"kubeconfig {path} does not exist (give --kubeconfig, or run inside a pod)")
            config = KubeConfig.from_file(path).get(context_name=context)
            if config is None:
                _fail(f"kubeconfig {path} has no context {context or '(current)'}")
    except InClusterError as e:
        _fail(e)
        return
    except Exception as e:
        _fail(f"cannot use the kubeconfig: {e}")
        return

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        client = AsyncClient(config=config, trust_env=False)
        try:
            probe = HttpProbe(source_ip=source_ip_for(os.environ.get("POD_IP") or ""))
            await run(client, link, namespace=namespace, admin_address=admin, stop=stop, workers=workers,
                      probe=probe)
        finally:
            await client.close()

    try:
        uvloop.run(main())
    except OSError as e:
        _fail(f"service mirror could not start: {e}")

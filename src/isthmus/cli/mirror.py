"""`isthmus service-mirror --link NAME`: the multicluster service mirror of one Link.

What the multicluster install's service-mirror Deployment runs, one per
Link. Inside a pod it reaches its cluster's API with the pod's service
account (`adapters.incluster`); elsewhere with `--kubeconfig` / `--context`
(default: `$KUBECONFIG`, else the isthmus kubeconfig). Runs until SIGTERM or
SIGINT; a configuration it cannot run with is one line `error: ...` on
stderr and exit status 1.

Gateway probes are mTLS (`components.mirror.gateway`). Inside a pod the
mirror gets its own workload certificate from the identity service
(`components.mirror.identity`, with the pod's service-account token);
outside one, `--identity-cert`, `--identity-key` and `--trust-anchors` give
a certificate made elsewhere.
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
        identity_cert: Annotated[Path | None, typer.Option(
            "--identity-cert", help="outside a pod: the workload certificate (PEM, with its chain) the "
                                    "gateway probes present")] = None,
        identity_key: Annotated[Path | None, typer.Option(
            "--identity-key", help="outside a pod: its private key (PEM)")] = None,
        trust_anchors: Annotated[Path | None, typer.Option(
            "--trust-anchors", help="outside a pod: the trust anchors (PEM) gateways must chain to")] = None,
) -> None:
    """Mirror the exported Services of a Link's target cluster into this cluster."""
    import uvloop
    from lightkube import KubeConfig
    from lightkube.config.kubeconfig import SingleConfig

    from isthmus.adapters import kubeconfig as kubeconfigs
    from isthmus.adapters import kubehttp
    from isthmus.adapters.clusterdir import isthmus_home
    from isthmus.adapters.incluster import (
        InClusterError,
        in_cluster_config,
        pod_namespace,
        service_account_dir,
    )
    from isthmus.adapters.x509 import Credentials, X509Error, load_certificates, load_credentials
    from isthmus.components.mirror import run
    from isthmus.components.mirror.gateway import MtlsProbe, ProbeCredentials, StaticCredentials
    from isthmus.components.mirror.identity import MirrorIdentity
    from isthmus.components.proxy.dial import source_ip_for
    from isthmus.resources.multicluster_manifests import mirror_name

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

    given = [o for o, v in (("--identity-cert", identity_cert), ("--identity-key", identity_key),
                            ("--trust-anchors", trust_anchors)) if v is not None]
    static: StaticCredentials | None = None
    if given:
        if identity_cert is None or identity_key is None or trust_anchors is None:
            _fail("--identity-cert, --identity-key and --trust-anchors go together (only "
                  f"{', '.join(given)} given)")
            return
        try:
            cert, key, anchors = identity_cert.read_bytes(), identity_key.read_bytes(), trust_anchors.read_bytes()
            load_credentials(cert, key, what="the identity")
            load_certificates(anchors, what="--trust-anchors")
        except (OSError, X509Error) as e:
            _fail(e)
            return
        static = StaticCredentials(Credentials(cert, key), anchors)
    elif not os.environ.get("KUBERNETES_SERVICE_HOST"):
        _fail("gateway probes are mTLS and need a workload certificate: outside a pod give "
              "--identity-cert, --identity-key and --trust-anchors")
        return

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        assert config is not None  # every path without one has failed above
        client = kubehttp.client(config)
        identity: MirrorIdentity | None = None
        source: ProbeCredentials
        if static is not None:
            source = static
        else:
            source = identity = MirrorIdentity(
                client, service_account=os.environ.get("POD_SERVICE_ACCOUNT") or mirror_name(link),
                namespace=pod_namespace(), token_path=service_account_dir() / "token")
        identity_task = loop.create_task(identity.run()) if identity is not None else None
        probe = MtlsProbe(source, source_ip=source_ip_for(os.environ.get("POD_IP") or ""))
        try:
            await run(client, link, namespace=namespace, admin_address=admin, stop=stop, workers=workers,
                      probe=probe)
        finally:
            probe.close()
            if identity_task is not None:
                identity_task.cancel()
                await asyncio.gather(identity_task, return_exceptions=True)
            await client.close()

    try:
        uvloop.run(main())
    except OSError as e:
        _fail(f"service mirror could not start: {e}")

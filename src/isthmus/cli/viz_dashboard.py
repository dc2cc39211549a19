"""``isthmus viz dashboard``: the web dashboard of a cluster and of the clusters it links to.

    isthmus --context=west viz dashboard                 # http://127.0.0.1:50750/ until Ctrl-C
    isthmus viz dashboard --context west --port 0 --show-url-only   # any free port; prints the URL only

It serves on a loopback address only (``--address``, default 127.0.0.1) and
reads each cluster's viz API at the cluster IP of Service
``isthmus-viz/isthmus-viz`` (embedded clusters route cluster IPs on
loopback), or at ``--api-url CLUSTER=URL`` (after ``kubectl port-forward``
on real Kubernetes, say). It prints the URL (and with ``--show-url-only``
nothing else) and serves until interrupted (Ctrl-C, SIGTERM). Refusals — a
non-loopback address, a port in use, a missing kubeconfig or context — are
one line ``error: ...`` on stderr, exit status 1. The server is
``isthmus.components.viz.dashboard``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import signal
from typing import Annotated

import typer
from aiohttp import web
from rich.console import Console
from rich.text import Text

from isthmus.components.checks.cluster import kubeconfig_path
from isthmus.components.viz.dashboard import Clusters, DashboardError, LightkubeReader, make_app
from isthmus.components.webapp import listen

__all__ = ["dashboard_cmd"]


def _fail(message: str) -> None:
    Console(stderr=True, highlight=False, soft_wrap=True).print(Text(f"error: {message}"))
    raise typer.Exit(1)


def _api_urls(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, url = pair.partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            _fail(f"--api-url {pair!r} is not CLUSTER=URL (e.g. --api-url east=http://127.0.0.1:8085)")
        out[name] = url
    return out


async def _serve(clusters: Clusters, address: str, port: int, show_url_only: bool) -> None:
    try:
        sock = listen((address, port))  # before anything starts, so a refusal leaves nothing behind
    except OSError as e:
        await clusters.reader.close()
        if e.errno == errno.EADDRINUSE:
            raise DashboardError(f"port {port} on {address} is in use: stop what uses it or pass "
                                 f"another --port (0 picks a free one)") from None
        raise DashboardError(f"cannot listen on {address}:{port}: {e.strerror or e}") from None
    # handler_cancellation: a tap stream ends when its browser goes away
    runner = web.AppRunner(make_app(clusters), access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    url = f"http://{address}:{sock.getsockname()[1]}/"
    if show_url_only:
        print(url, flush=True)
    else:
        print(f"isthmus viz dashboard of cluster {clusters.context!r} and the clusters it links to: {url}",
              flush=True)
        print("serving until interrupted (Ctrl-C)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def dashboard_cmd(
        ctx: typer.Context,
        context: Annotated[str | None, typer.Option(
            "--context", help="kubeconfig context of the cluster to show (default: the root --context, "
                              "else the kubeconfig's current context)")] = None,
        port: Annotated[int, typer.Option("--port", help="port to serve on (0: any free port)")] = 50750,
        address: Annotated[str, typer.Option(
            "--address", help="loopback address to serve on")] = "127.0.0.1",
        show_url_only: Annotated[bool, typer.Option(
            "--show-url-only", help="print only the dashboard's URL (for scripts), then serve")] = False,
        api_url: Annotated[list[str] | None, typer.Option(
            "--api-url", help="CLUSTER=URL: reach that cluster's viz API at URL instead of its Service "
                              "(repeatable)")] = None,
) -> None:
    """Serve the web dashboard on localhost: this cluster and every linked cluster, live."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        ip = None
    if ip is None or not ip.is_loopback:
        _fail(f"--address {address} is not a loopback address: the dashboard serves on 127.0.0.0/8 "
              f"(or ::1) only")
    if not 0 <= port <= 65535:
        _fail(f"--port {port} is not a port number (0-65535)")
    urls = _api_urls(api_url or [])
    root = ctx.find_root().obj if isinstance(ctx.find_root().obj, dict) else {}
    try:
        reader = LightkubeReader(kubeconfig_path())
        name = context or root.get("context") or reader.current_context
    except DashboardError as e:
        _fail(str(e))
        return
    if not name:
        _fail(f"no --context given and the kubeconfig {reader.path} has no current context")
        return
    if name not in reader.contexts() and name not in urls:
        known = ", ".join(sorted(reader.contexts())) or "none"
        _fail(f"context {name!r} is not in the kubeconfig {reader.path} (its contexts: {known})")
    clusters = Clusters(reader, name, api_urls=urls)
    try:
        asyncio.run(_serve(clusters, address, port, show_url_only))
    except DashboardError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        pass

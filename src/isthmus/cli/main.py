"""The `isthmus` command: `isthmus [--context NAME] [-n NAMESPACE] <group> <verb>`.

Groups so far: `cluster` (embedded clusters), `certs`, `install`/`uninstall`/
`inject`, `proxy` and the control-plane commands, and `demo-cluster` (the
README's main job at this stage). Expected failures print one clear line to stderr and
exit 1; no stack traces.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from isthmus.adapters import kubeconfig
from isthmus.adapters.clusterdir import ClusterDir, all_clusters, isthmus_home
from isthmus.cli.certs import certs_app
from isthmus.cli.check import check_cmd
from isthmus.cli.controlplane import (
    HELP_PANEL,
    destination_cmd,
    identity_cmd,
    proxy_injector_cmd,
    viz_api_cmd,
)
from isthmus.cli.demo import demo_app
from isthmus.cli.install import inject_cmd, install_cmd, uninstall_cmd
from isthmus.cli.mirror import service_mirror_cmd
from isthmus.cli.multicluster import multicluster_app
from isthmus.cli.viz import viz_app
from isthmus.components import cluster as clusters
from isthmus.components.cluster import ClusterError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="isthmus: a multi-cluster, multi-region service mesh.")
cluster_app = typer.Typer(no_args_is_help=True, help="Embedded clusters: local Kubernetes-compatible API servers.")
app.add_typer(cluster_app, name="cluster")
app.add_typer(certs_app, name="certs")
app.command("install")(install_cmd)
app.command("uninstall")(uninstall_cmd)
app.command("inject")(inject_cmd)
app.command("check")(check_cmd)
app.command("identity", rich_help_panel=HELP_PANEL)(identity_cmd)
app.command("destination", rich_help_panel=HELP_PANEL)(destination_cmd)
app.command("proxy-injector", rich_help_panel=HELP_PANEL)(proxy_injector_cmd)
app.command("service-mirror", rich_help_panel=HELP_PANEL)(service_mirror_cmd)
app.add_typer(multicluster_app, name="multicluster")
app.add_typer(viz_app, name="viz")
app.command("viz-api", rich_help_panel=HELP_PANEL)(viz_api_cmd)

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


@app.callback()
def root(ctx: typer.Context,
         context: str = typer.Option(None, "--context", help="kubeconfig context to use"),
         namespace: str = typer.Option(None, "-n", "--namespace", help="namespace to use")) -> None:
    ctx.obj = {"context": context, "namespace": namespace}


def _home() -> Path:
    return isthmus_home()


def _kubeconfig() -> Path:
    return kubeconfig.default_path(_home())


def _progress(msg: str) -> None:
    err.print(f"[dim]•[/dim] {msg}" if err.is_terminal else f"- {msg}", highlight=False)


def _fail(e: Exception) -> None:
    err.print(f"error: {e}", style="red" if err.is_terminal else None, highlight=False)
    raise typer.Exit(1)


@cluster_app.command("create")
def cluster_create(name: str = typer.Argument(..., help="cluster name, e.g. west"),
                   region: str = typer.Option(..., "--region", help="region label, e.g. sfo3"),
                   nodes: int = typer.Option(3, "--nodes", help="number of Node objects"),
                   number: int = typer.Option(None, "--number", hidden=True,
                                              help="cluster number k (owns 127.k.0.0/16)")) -> None:
    """Create and start an embedded cluster, and write its kubeconfig context."""
    kc = _kubeconfig()
    try:
        st = clusters.create(_home(), name, region, nodes, kubeconfig_path=kc, index=number, progress=_progress)
    except ClusterError as e:
        _fail(e)
        return
    out.print(f'cluster "{name}" is running: region {region}, {nodes} nodes, API {st.api}', highlight=False)
    out.print(f'kubeconfig context "{name}" written to {kc}; to use it:', highlight=False)
    out.print(f"  export KUBECONFIG={kc}", highlight=False, soft_wrap=True)
    out.print(f"  kubectl --context={name} get nodes", highlight=False)


@cluster_app.command("list")
def cluster_list() -> None:
    """Show the embedded clusters: name, region, nodes, API address, state."""
    rows = [clusters.status(c) for c in all_clusters(_home())]
    if not rows:
        err.print("no clusters yet; create one with `isthmus cluster create west --region sfo3`")
        return
    table = Table(box=None, pad_edge=False)
    for col in ("NAME", "REGION", "NODES", "API", "STATE"):
        table.add_column(col)
    for st in rows:
        table.add_row(st.config.name, st.config.region, str(st.config.nodes), st.api, st.state)
    Console(width=200).print(table)


@cluster_app.command("start")
def cluster_start(name: str) -> None:
    """Start a stopped cluster (its state is kept on disk)."""
    try:
        clusters.start(ClusterDir(_home(), name), kubeconfig_path=_kubeconfig(), progress=_progress)
    except ClusterError as e:
        _fail(e)


@cluster_app.command("stop")
def cluster_stop(name: str) -> None:
    """Stop every process of a cluster; its state stays on disk."""
    try:
        stopped = clusters.stop(ClusterDir(_home(), name), progress=_progress)
    except ClusterError as e:
        _fail(e)
        return
    out.print(f'cluster "{name}" ' + ("stopped" if stopped else "was not running"), highlight=False)


@cluster_app.command("delete")
def cluster_delete(name: str) -> None:
    """Stop a cluster, delete its state and remove its kubeconfig context."""
    try:
        clusters.delete(ClusterDir(_home(), name), kubeconfig_path=_kubeconfig(), progress=_progress)
    except ClusterError as e:
        _fail(e)
        return
    out.print(f'cluster "{name}" deleted', highlight=False)


@cluster_app.command("serve", hidden=True)
def cluster_serve(name: str) -> None:
    """Run a cluster in the foreground: API server, controllers, pods (what `create` and `start` start)."""
    from isthmus.components import clusterprocess

    cdir = ClusterDir(_home(), name)
    if not cdir.exists():
        _fail(ClusterError(f'there is no cluster "{name}"'))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
        pass
    # Tuning knobs for tests and benchmarks; the defaults suit users.
    history = int(os.environ.get("ISTHMUS_STORE_HISTORY", "10000"))
    bookmarks = float(os.environ.get("ISTHMUS_BOOKMARK_INTERVAL", "10"))
    backoff = float(os.environ.get("ISTHMUS_RESTART_BACKOFF", "10"))
    api_only = os.environ.get("ISTHMUS_API_ONLY") == "1"  # the API server alone, for benchmarks
    asyncio.run(clusterprocess.serve(cdir, history=history, bookmark_interval=bookmarks, backoff_base=backoff,
                                     api_only=api_only))


@app.command("proxy")
def proxy_cmd() -> None:
    """Run the sidecar proxy (the injected container), configured from ISTHMUS_PROXY_* variables."""
    from isthmus.cli.proxy import run

    run()


app.add_typer(demo_app, name="demo")  # `isthmus demo [--detach|--serve] [--wan-latency MS]`, `demo down`


@app.command("demo-cluster")
def demo_cluster(name: str = typer.Option("west", help="cluster name"),
                 region: str = typer.Option("sfo3", help="region")) -> None:
    """Create (or reuse) one embedded cluster, install the mesh, and run emojivoto meshed on it."""
    from isthmus.cli import demo
    from isthmus.cli.demo_shell import DemoError

    try:
        demo.run(name, region, out, _progress)
    except DemoError as e:
        _fail(e)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)

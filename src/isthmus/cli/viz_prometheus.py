"""``isthmus viz prometheus-config`` and ``isthmus viz prometheus-targets``: viz over your own Prometheus.

    isthmus viz prometheus-config > prometheus.yml              # Prometheus in the cluster
    isthmus viz prometheus-config --kubeconfig-file ~/west.kubeconfig   # outside it
    isthmus viz prometheus-config --scrape-configs-only         # the list for an existing prometheus.yml
    isthmus viz prometheus-config --targets-file /var/lib/isthmus/targets.json   # no Kubernetes discovery
    isthmus --context west viz prometheus-targets /var/lib/isthmus/targets.json  # keeps that file true

The configuration is `isthmus.resources.prometheus_config`'s; the targets
writer `isthmus.components.viz.prometheus_targets`'s. Prometheus' Kubernetes
discovery uses the *current* context of the kubeconfig it is given, so with
``--context`` the file must have that context as its current one (the error
says how to make such a file). Refusals are one line on stderr, exit 1,
nothing on stdout.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.core.exceptions import ConfigError
from lightkube.resources.core_v1 import Pod
from rich.console import Console
from rich.text import Text

from isthmus.adapters import kubehttp
from isthmus.components.checks.cluster import kubeconfig_path
from isthmus.components.viz.prometheus_targets import TargetsWriter
from isthmus.core.proxy.retry import parse_duration
from isthmus.resources.prometheus_config import PrometheusConfigError, PrometheusOptions, render

__all__ = ["prometheus_config_cmd", "prometheus_targets_cmd"]

err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str) -> None:
    err.print(Text(f"error: {message}"))
    raise typer.Exit(1)


def _root(ctx: typer.Context) -> dict[str, str | None]:
    return ctx.obj if isinstance(ctx.obj, dict) else {}


def _check_kubeconfig(path: Path, context: str | None) -> None:
    """Refuse a kubeconfig Prometheus could not discover the cluster of `--context` with."""
    if not path.exists():
        err.print(Text(f"note: {path} does not exist here; Prometheus must find it at that path"))
        return
    try:
        config = KubeConfig.from_file(path)
    except (ConfigError, OSError, ValueError) as e:
        _fail(f"cannot read the kubeconfig {path}: {e}")
        return
    current = config.current_context
    if context is not None and context != current:
        _fail(f"Prometheus uses the current context of {path}, which is {current!r}, not {context!r}: "
              f"make a file for {context!r} with `kubectl config view --minify --flatten "
              f"--context={context} > {context}.kubeconfig` and give that")
    if not current:
        _fail(f"the kubeconfig {path} has no current context, which Prometheus' discovery needs: "
              f"set one with `kubectl --kubeconfig {path} config use-context NAME`")


def prometheus_config_cmd(
        ctx: typer.Context,
        kubeconfig_file: Annotated[Path | None, typer.Option(
            "--kubeconfig-file", show_default=False,
            help="kubeconfig Prometheus discovers pods with (its current context), for a Prometheus "
                 "outside the cluster [default: Prometheus' in-cluster service account]")] = None,
        targets_file: Annotated[Path | None, typer.Option(
            "--targets-file", show_default=False,
            help="use file discovery from this file instead of Kubernetes discovery (for a Prometheus "
                 "built without it, like Debian's); `isthmus viz prometheus-targets FILE` writes it")] = None,
        scrape_interval: Annotated[str, typer.Option(
            "--scrape-interval", help="how often each proxy is scraped, e.g. 10s, 2s, 1m")] = "10s",
        scrape_configs_only: Annotated[bool, typer.Option(
            "--scrape-configs-only",
            help="print only the scrape_configs list, to paste into an existing prometheus.yml")] = False,
) -> None:
    """Print a Prometheus configuration that scrapes every meshed pod's proxy as viz does."""
    seconds = parse_duration(scrape_interval)
    if seconds is None:
        _fail(f"--scrape-interval {scrape_interval!r} is not a duration (like 10s, 2s or 1m)")
        return
    if kubeconfig_file is not None and targets_file is not None:
        _fail("give --kubeconfig-file (Kubernetes discovery) or --targets-file (file discovery), not both")
    if kubeconfig_file is not None:
        kubeconfig_file = kubeconfig_file.expanduser().resolve()
        _check_kubeconfig(kubeconfig_file, _root(ctx).get("context"))
    if targets_file is not None:
        targets_file = targets_file.expanduser().resolve()
    try:
        options = PrometheusOptions(
            scrape_interval=seconds, whole=not scrape_configs_only,
            kubeconfig_file=str(kubeconfig_file) if kubeconfig_file is not None else None,
            targets_file=str(targets_file) if targets_file is not None else None)
    except PrometheusConfigError as e:
        _fail(str(e).replace("scrape interval", "--scrape-interval", 1))
        return
    typer.echo(render(options), nl=False)


def _client(context: str | None) -> tuple[AsyncClient, str]:
    path = kubeconfig_path()
    try:
        config = KubeConfig.from_file(path)
        name = context or config.current_context
        if not name or name not in config.contexts:
            known = ", ".join(sorted(config.contexts)) or "none"
            _fail(f"context {name!r} is not in the kubeconfig {path} (its contexts: {known})"
                  if name else f"no --context given and the kubeconfig {path} has no current context")
        return kubehttp.client(config, context=name), str(name)
    except (ConfigError, OSError, ValueError) as e:
        _fail(f"cannot use the kubeconfig {path}: {e}")
        raise AssertionError("unreachable") from None


async def _probe(client: AsyncClient, context: str) -> None:
    """One list of pods first, so an unreachable API or a refusal is one line, not retries."""
    try:
        async for _ in client.list(Pod, namespace="*", chunk_size=1):
            break
    except ApiError as e:
        _fail(f"cannot list the pods of context {context!r}: {e.status.message} ({e.status.code}); "
              f"the writer needs get, list and watch on pods (`kubectl --context={context} auth can-i "
              "watch pods -A`)")
    except Exception as e:  # httpx transport errors, TLS, a bad address
        _fail(f"cannot reach the API of context {context!r}: {e or type(e).__name__}; "
              f"`kubectl --context={context} get pods -A` should answer")


def prometheus_targets_cmd(
        ctx: typer.Context,
        path: Annotated[Path, typer.Argument(help="the targets file (`--targets-file` of prometheus-config)")],
        once: Annotated[bool, typer.Option("--once", help="write the file once and exit")] = False,
) -> None:
    """Keep a Prometheus file-discovery targets file equal to the cluster's pods (Ctrl-C stops)."""
    path = path.expanduser().resolve()
    if not path.parent.is_dir():
        _fail(f"cannot write {path}: the directory {path.parent} does not exist")
    if path.is_dir():
        _fail(f"cannot write {path}: it is a directory; give a file name such as {path}/targets.json")
    client, context = _client(_root(ctx).get("context"))
    writer = TargetsWriter(client, path)

    async def main() -> None:
        try:
            await _probe(client, context)
            await writer.run(once=once)
        finally:
            await client.close()

    try:
        if not once:
            err.print(Text(f"writing the pods of context {context!r} to {path} as they change (Ctrl-C stops)"))
        asyncio.run(main())
    except TimeoutError:
        _fail(f"could not list the pods of context {context!r} within 30s: the API is unreachable or "
              f"refuses; `kubectl --context={context} get pods -A` should answer")
    except OSError as e:
        _fail(f"cannot write {path}: {e.strerror or e}")
    except KeyboardInterrupt:
        return
    if once:
        err.print(Text(f"wrote {writer.targets} targets to {path}"))

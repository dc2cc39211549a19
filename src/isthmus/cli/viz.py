"""`isthmus viz ...`: install, stat, top, edges, routes, tap, dashboard, prometheus-config.

The query verbs read the cluster's viz API (docs/viz.md): at the cluster IP
of Service `isthmus-viz/isthmus-viz` port 8085 (the embedded cluster routes
cluster IPs on loopback), or at `--api-url` (on real Kubernetes, after
`kubectl -n isthmus-viz port-forward svc/isthmus-viz 8085`). Tables use the
columns of `linkerd viz`; `-o json` prints the API's rows. A refused query
prints the API's reason on one line and exits 1.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Annotated, Any

import typer

from isthmus import __version__
from isthmus.cli.viz_dashboard import dashboard_cmd
from isthmus.cli.viz_prometheus import prometheus_config_cmd, prometheus_targets_cmd

__all__ = ["viz_api_cmd", "viz_app"]

viz_app = typer.Typer(no_args_is_help=True,
                      help="Viz: metrics, stat/top/edges/routes/tap and the dashboard.")
viz_app.command("dashboard")(dashboard_cmd)
viz_app.command("prometheus-config")(prometheus_config_cmd)
viz_app.command("prometheus-targets")(prometheus_targets_cmd)

Output = Annotated[str, typer.Option("-o", "--output", help="table or json")]
ApiUrl = Annotated[str | None, typer.Option(
    "--api-url", help="the viz API's URL (default: the isthmus-viz Service of the cluster)")]
Window = Annotated[str, typer.Option("-t", "--time-window", help="window of the metrics: 10s, 1m, 10m, 1h")]


class VizCliError(Exception):
    pass


def _fail(message: object) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(1)


def _root(ctx: typer.Context) -> dict[str, Any]:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, dict) else {}


def _context_name(ctx: typer.Context) -> str | None:
    context: str | None = _root(ctx).get("context")
    return context


def _namespace(ctx: typer.Context, default: str = "default") -> str:
    return _root(ctx).get("namespace") or default


def _api_base(ctx: typer.Context, api_url: str | None) -> str:
    if api_url:
        return api_url.rstrip("/")
    from lightkube import ApiError, Client, ConfigError, KubeConfig
    from lightkube.resources.core_v1 import Service

    from isthmus.cli.multicluster import kubeconfig_path
    from isthmus.resources import viz_manifests as vm

    path = kubeconfig_path()
    context = _context_name(ctx)
    try:
        config = KubeConfig.from_file(path).get(context_name=context)
        svc = Client(config=config, trust_env=False).get(Service, vm.SERVICE, namespace=vm.NAMESPACE)
    except ConfigError as e:
        raise VizCliError(f"the kubeconfig {path} cannot be used"
                          f"{f' for context {context!r}' if context else ''}: {e}") from None
    except ApiError as e:
        if e.status.code == 404:
            raise VizCliError("viz is not installed in this cluster (no Service "
                              f"{vm.NAMESPACE}/{vm.SERVICE}); install it with "
                              "`isthmus viz install | kubectl apply -f -`") from None
        raise VizCliError(f"the cluster's API refused: {e.status.message}") from None
    except OSError as e:
        raise VizCliError(f"cannot reach the cluster's API: {e}") from None
    ip = svc.spec.clusterIP if svc.spec else None
    if not ip or ip == "None":
        raise VizCliError(f"Service {vm.NAMESPACE}/{vm.SERVICE} has no cluster IP")
    return f"http://{ip}:{vm.VIZ_PORT}"


def _open(base: str, path: str, params: dict[str, str], timeout: float | None = 30) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode({k: v for k, v in params.items() if v})}"
    try:
        return urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as e:
        body = e.read().decode(errors="replace")
        try:
            message = json.loads(body).get("error") or body
        except (ValueError, AttributeError):
            message = body.strip() or e.reason
        raise VizCliError(message) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise VizCliError(f"cannot reach the viz API at {base}: {reason}; is the isthmus-viz pod "
                          "running? (kubectl -n isthmus-viz get pods)") from None


def _get(ctx: typer.Context, api_url: str | None, path: str, params: dict[str, str]) -> Any:
    base = _api_base(ctx, api_url)
    with _open(base, path, params) as response:
        return json.loads(response.read())


def _check_output(output: str, allowed: Sequence[str] = ("table", "json")) -> None:
    if output not in allowed:
        raise VizCliError(f"-o {output!r} is not an output format; use {' or '.join(allowed)}")


# ---------------------------------------------------------------------------- formatting


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _rps(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}rps"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}ms" if value >= 10 else f"{value:.1f}ms" if value >= 1 else f"{value:.2f}ms"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded like kubectl's (three spaces between columns)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in (headers, *rows)]
    return "\n".join(lines) + "\n"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _resource_arg(resource: str, name: str | None) -> str:
    if name:
        if "/" in resource:
            raise VizCliError(f'give either TYPE/NAME or TYPE NAME, not "{resource} {name}"')
        return f"{resource}/{name}"
    return resource


# ---------------------------------------------------------------------------- commands


def _run(fn: Any) -> None:
    try:
        fn()
    except VizCliError as e:
        _fail(e)


@viz_app.command("install")
def install_cmd(
        ctx: typer.Context,
        cluster_name: Annotated[str | None, typer.Option(
            "--cluster-name", help="this cluster's name in viz (default: the context's name)")] = None,
        prometheus_url: Annotated[str | None, typer.Option(
            "--prometheus-url", help="read metrics from this Prometheus instead of scraping")] = None,
        scrape_interval: Annotated[float, typer.Option(
            "--scrape-interval", help="seconds between scrapes of the proxies")] = 10.0,
        image: Annotated[str | None, typer.Option("--image", help="image of the viz pod")] = None,
        trust_domain: Annotated[str, typer.Option("--identity-trust-domain")] = "cluster.local",
) -> None:
    """Print the viz extension's manifests (namespace isthmus-viz) for kubectl apply."""
    from isthmus.core.names import validate_dns1123_label
    from isthmus.resources import manifests
    from isthmus.resources.viz_manifests import VizValues, viz

    def go() -> None:
        name = cluster_name or _context_name(ctx) or _current_context()
        problems = validate_dns1123_label(name)
        if problems:
            raise VizCliError(f"cluster name {name!r} is not valid ({'; '.join(problems)}); "
                              "give --cluster-name")
        if not 0.1 <= scrape_interval <= 300:
            raise VizCliError(f"--scrape-interval {scrape_interval:g} is not between 0.1 and 300 s")
        if prometheus_url is not None:
            parsed = urllib.parse.urlsplit(prometheus_url)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise VizCliError(f"--prometheus-url {prometheus_url!r} is not an http(s) URL")
        values = VizValues(image or manifests.default_image(__version__), name, trust_domain,
                           prometheus_url or "", scrape_interval)
        print(manifests.dump(viz(values)), end="")

    _run(go)


def _current_context() -> str:
    import yaml

    from isthmus.cli.multicluster import kubeconfig_path

    path = kubeconfig_path()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise VizCliError(f"cannot read the kubeconfig {path}: {e}; give --cluster-name") from None
    name = data.get("current-context")
    if not name:
        raise VizCliError(f"no --context given and the kubeconfig {path} has no current context")
    return str(name)


@viz_app.command("stat")
def stat_cmd(
        ctx: typer.Context,
        resource: Annotated[str, typer.Argument(help="deploy, pod, svc or ns, optionally TYPE/NAME")],
        name: Annotated[str | None, typer.Argument(help="a name (same as TYPE/NAME)")] = None,
        from_: Annotated[str | None, typer.Option("--from", help="only traffic from this resource")] = None,
        from_namespace: Annotated[str | None, typer.Option("--from-namespace")] = None,
        to: Annotated[str | None, typer.Option("--to", help="only traffic to this resource")] = None,
        to_namespace: Annotated[str | None, typer.Option("--to-namespace")] = None,
        window: Window = "1m",
        output: Output = "table",
        api_url: ApiUrl = None,
) -> None:
    """Success rate, requests per second, latency and connections per resource."""

    def go() -> None:
        _check_output(output)
        data = _get(ctx, api_url, "/api/stat", {
            "resource": _resource_arg(resource, name), "namespace": _namespace(ctx),
            "from": from_ or "", "from_namespace": from_namespace or "", "to": to or "",
            "to_namespace": to_namespace or "", "window": window})
        if output == "json":
            _print_json(data["rows"])
            return
        rows = []
        for r in data["rows"]:
            lat = r.get("latency_ms") or {}
            rows.append([r["name"], r["meshed"], _pct(r["success"]), _rps(r["rps"]),
                         _ms(lat.get("p50")), _ms(lat.get("p95")), _ms(lat.get("p99")),
                         "-" if r["tcp_conn"] is None else str(r["tcp_conn"])])
        if not rows:
            print(f"No resources found in namespace {_namespace(ctx)}.", file=sys.stderr)
            return
        print(table(["NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95",
                     "LATENCY_P99", "TCP_CONN"], rows), end="")

    _run(go)


@viz_app.command("edges")
def edges_cmd(
        ctx: typer.Context,
        resource: Annotated[str, typer.Argument(help="deploy or po")] = "deploy",
        window: Window = "1m",
        output: Output = "table",
        api_url: ApiUrl = None,
) -> None:
    """Who talks to whom, whether it is mTLS, and the identities on each end."""

    def go() -> None:
        _check_output(output)
        data = _get(ctx, api_url, "/api/edges", {"resource": resource,
                                                 "namespace": _namespace(ctx), "window": window})
        if output == "json":
            _print_json(data["rows"])
            return
        rows = [[r["src"], r["dst"] + (f" (cluster {r['dst_cluster']})" if r["dst_cluster"] else ""),
                 r["src_namespace"], r["dst_namespace"],
                 "√" if r["secured"] else f"× {r.get('no_tls_reason') or ''}".rstrip(),  # noqa: RUF001
                 r["client_id"] or "-", r["server_id"] or "-"] for r in data["rows"]]
        if not rows:
            print(f"No edges found in namespace {_namespace(ctx)} "
                  f"(no traffic in the last {window}).", file=sys.stderr)
            return
        print(table(["SRC", "DST", "SRC_NS", "DST_NS", "SECURED", "CLIENT_ID", "SERVER_ID"],
                    rows), end="")

    _run(go)


@viz_app.command("routes")
def routes_cmd(
        ctx: typer.Context,
        resource: Annotated[str, typer.Argument(help="svc/NAME or deploy/NAME")],
        window: Window = "1m",
        output: Output = "table",
        api_url: ApiUrl = None,
) -> None:
    """Per-route success rate, requests per second and latency of a service."""

    def go() -> None:
        _check_output(output)
        data = _get(ctx, api_url, "/api/routes", {"resource": resource,
                                                  "namespace": _namespace(ctx), "window": window})
        if output == "json":
            _print_json(data["rows"])
            return
        rows = []
        for r in data["rows"]:
            lat = r.get("latency_ms") or {}
            rows.append([r["route"], r["authority"] or "-", _pct(r["success"]), _rps(r["rps"]),
                         _ms(lat.get("p50")), _ms(lat.get("p95")), _ms(lat.get("p99"))])
        if not rows:
            print(f"No route traffic for {resource} in the last {window}.", file=sys.stderr)
            return
        print(table(["ROUTE", "AUTHORITY", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95",
                     "LATENCY_P99"], rows), end="")

    _run(go)


def _tap_lines(ctx: typer.Context, api_url: str | None, params: dict[str, str],
               max_events: int | None) -> Iterator[bytes]:
    base = _api_base(ctx, api_url)
    query = dict(params)
    if max_events is not None:
        query["max"] = str(max_events)
    response = _open(base, "/api/tap", query, timeout=None)
    with response:
        yield from response


def _tap_params(ctx: typer.Context, resource: str, to: str | None, to_namespace: str | None,
                path: str | None, method: str | None, authority: str | None,
                fmt: str) -> dict[str, str]:
    return {"resource": resource, "namespace": _namespace(ctx), "to": to or "",
            "to_namespace": to_namespace or "", "path": path or "", "method": method or "",
            "authority": authority or "", "format": fmt}


TapTo = Annotated[str | None, typer.Option("--to", help="only requests to this resource")]
TapToNs = Annotated[str | None, typer.Option("--to-namespace")]
TapPath = Annotated[str | None, typer.Option("--path", help="only paths starting with this")]
TapMethod = Annotated[str | None, typer.Option("--method", help="only this HTTP method")]
TapAuthority = Annotated[str | None, typer.Option("--authority", help="only this authority")]


@viz_app.command("tap")
def tap_cmd(
        ctx: typer.Context,
        resource: Annotated[str, typer.Argument(help="the workload to watch: deploy/NAME, po/NAME, ns/NAME")],
        to: TapTo = None,
        to_namespace: TapToNs = None,
        path: TapPath = None,
        method: TapMethod = None,
        authority: TapAuthority = None,
        max_events: Annotated[int | None, typer.Option(
            "--max", help="stop after this many events (default: until interrupted)")] = None,
        output: Annotated[str, typer.Option("-o", "--output", help="text or json")] = "text",
        api_url: ApiUrl = None,
) -> None:
    """Stream the requests a workload's proxies see (req/rsp/end lines, tls=true for mTLS)."""

    def go() -> None:
        _check_output(output, ("text", "json"))
        if max_events is not None and max_events < 1:
            raise VizCliError("--max must be at least 1")
        params = _tap_params(ctx, resource, to, to_namespace, path, method, authority, output)
        for line in _tap_lines(ctx, api_url, params, max_events):
            text = line.decode(errors="replace")
            if text.startswith("#") or text.startswith('{"error"'):
                print(text.rstrip("\n").lstrip("# "), file=sys.stderr, flush=True)
                continue
            sys.stdout.write(text)
            sys.stdout.flush()

    with contextlib.suppress(KeyboardInterrupt):
        _run(go)


@viz_app.command("top")
def top_cmd(
        ctx: typer.Context,
        resource: Annotated[str, typer.Argument(help="the workload to watch: deploy/NAME, po/NAME, ns/NAME")],
        to: TapTo = None,
        to_namespace: TapToNs = None,
        path: TapPath = None,
        method: TapMethod = None,
        duration: Annotated[float | None, typer.Option(
            "--duration", help="watch this many seconds, print the table and exit "
                               "(default: a live table until interrupted)")] = None,
        output: Output = "table",
        api_url: ApiUrl = None,
) -> None:
    """A live table of the busiest paths of a workload (from tap)."""
    import threading

    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from isthmus.core.viz.top import Top

    def go() -> None:
        _check_output(output)
        if duration is not None and duration <= 0:
            raise VizCliError("--duration must be more than 0 seconds")
        if duration is None and output == "json":
            raise VizCliError("-o json needs --duration (a live table is only a table)")
        top = Top()
        lock = threading.Lock()
        errors: list[str] = []
        params = _tap_params(ctx, resource, to, to_namespace, path, method, None, "json")
        lines = _tap_lines(ctx, api_url, params, None)  # a refusal is raised here, before the table

        def reader() -> None:
            try:
                for line in lines:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if "error" in event:
                        errors.append(str(event["error"]))
                        continue
                    with lock:
                        top.add(event)
            except (VizCliError, OSError) as e:
                errors.append(str(e))

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()

        def render() -> Table:
            t = Table("SOURCE", "DESTINATION", "METHOD", "PATH", "COUNT", "BEST", "WORST",
                      "LAST", "SUCCESS RATE", box=None)
            with lock:
                for r in top.rows(30):
                    t.add_row(r.source, r.destination, r.method, r.path, str(r.count),
                              _ms(r.best_ms), _ms(r.worst_ms), _ms(r.last_ms),
                              _pct(r.success_rate))
            return t

        if duration is not None:
            time.sleep(duration)
            with lock:
                rows = top.rows()
            for e in errors:
                print(e, file=sys.stderr)
            if output == "json":
                _print_json([r.to_dict() for r in rows])
            else:
                print(table(["SOURCE", "DESTINATION", "METHOD", "PATH", "COUNT", "BEST", "WORST",
                             "LAST", "SUCCESS_RATE"],
                            [[r.source, r.destination, r.method, r.path, str(r.count),
                              _ms(r.best_ms), _ms(r.worst_ms), _ms(r.last_ms),
                              _pct(r.success_rate)] for r in rows]), end="")
            return
        with Live(render(), console=Console(), refresh_per_second=2) as live:
            try:
                while thread.is_alive():
                    time.sleep(0.5)
                    live.update(render())
            except KeyboardInterrupt:
                pass
        for e in errors:
            print(e, file=sys.stderr)

    _run(go)


def viz_api_cmd() -> None:
    """Run the viz API and metrics collector (configured from ISTHMUS_VIZ_* variables)."""
    import asyncio
    import logging
    import os
    import signal

    import uvloop

    from isthmus.adapters.incluster import InClusterError
    from isthmus.components.controlplane import log_level
    from isthmus.components.viz.run import VizConfigError, VizPodConfig, run_viz_api

    logging.basicConfig(level=log_level(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, log_level()))
    try:
        config = VizPodConfig.from_env(os.environ)
    except VizConfigError as e:
        _fail(f"viz-api: {e}")
        return

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_viz_api(config, stop)

    try:
        uvloop.run(main())
    except InClusterError as e:
        _fail(f"viz-api: {e}")
    except OSError as e:
        _fail(f"viz-api could not start: {e}")

"""`isthmus viz ...`: install, stat, top, edges, routes, tap, dashboard, prometheus-config.

The query verbs read the cluster's viz API (docs/viz.md): at the cluster IP
of Service `isthmus-viz/isthmus-viz` port 8085 (the embedded cluster routes
cluster IPs on loopback), or at `--api-url` (on real Kubernetes, after
`kubectl -n isthmus-viz port-forward svc/isthmus-viz 8085`). Tables use the
columns of `linkerd viz`; `-o json` prints the API's rows. A refused query
prints the API's reason on one line and exits 1.
"""

from __future__ import annotations

import sys
import urllib.parse
from typing import Annotated, Any

import typer

from isthmus import __version__
from isthmus.cli.viz_client import (
    ApiUrl,
    Output,
    VizCliError,
    Window,
    check_output,
    context_name,
    get_json,
    ms,
    namespace_of,
    pct,
    print_json,
    resource_arg,
    rps,
    run,
    table,
)
from isthmus.cli.viz_dashboard import dashboard_cmd
from isthmus.cli.viz_live import tap_cmd, top_cmd
from isthmus.cli.viz_prometheus import prometheus_config_cmd, prometheus_targets_cmd

__all__ = ["viz_app"]

viz_app = typer.Typer(no_args_is_help=True,
                      help="Viz: metrics, stat/top/edges/routes/tap and the dashboard.")
viz_app.command("dashboard")(dashboard_cmd)
viz_app.command("prometheus-config")(prometheus_config_cmd)
viz_app.command("prometheus-targets")(prometheus_targets_cmd)
viz_app.command("tap")(tap_cmd)
viz_app.command("top")(top_cmd)


def _traffic_cells(row: dict[str, Any]) -> list[str]:
    """SUCCESS RPS LATENCY_P50 LATENCY_P95 LATENCY_P99 of a stat or routes row."""
    latency = row.get("latency_ms") or {}
    return [pct(row["success"]), rps(row["rps"]),
            *(ms(latency.get(q)) for q in ("p50", "p95", "p99"))]


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
        name = cluster_name or context_name(ctx) or _current_context()
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

    run(go)


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
        check_output(output)
        data = get_json(ctx, api_url, "/api/stat", {
            "resource": resource_arg(resource, name), "namespace": namespace_of(ctx),
            "from": from_ or "", "from_namespace": from_namespace or "", "to": to or "",
            "to_namespace": to_namespace or "", "window": window})
        if output == "json":
            print_json(data["rows"])
            return
        rows = []
        for r in data["rows"]:
            rows.append([r["name"], r["meshed"], *_traffic_cells(r),
                         "-" if r["tcp_conn"] is None else str(r["tcp_conn"])])
        if not rows:
            print(f"No resources found in namespace {namespace_of(ctx)}.", file=sys.stderr)
            return
        print(table(["NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95",
                     "LATENCY_P99", "TCP_CONN"], rows), end="")

    run(go)


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
        check_output(output)
        data = get_json(ctx, api_url, "/api/edges", {"resource": resource,
                                                 "namespace": namespace_of(ctx), "window": window})
        if output == "json":
            print_json(data["rows"])
            return
        rows = [[r["src"], r["dst"] + (f" (cluster {r['dst_cluster']})" if r["dst_cluster"] else ""),
                 r["src_namespace"], r["dst_namespace"],
                 "√" if r["secured"] else f"× {r.get('no_tls_reason') or ''}".rstrip(),  # noqa: RUF001
                 r["client_id"] or "-", r["server_id"] or "-"] for r in data["rows"]]
        if not rows:
            print(f"No edges found in namespace {namespace_of(ctx)} "
                  f"(no traffic in the last {window}).", file=sys.stderr)
            return
        print(table(["SRC", "DST", "SRC_NS", "DST_NS", "SECURED", "CLIENT_ID", "SERVER_ID"],
                    rows), end="")

    run(go)


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
        check_output(output)
        data = get_json(ctx, api_url, "/api/routes", {"resource": resource,
                                                  "namespace": namespace_of(ctx), "window": window})
        if output == "json":
            print_json(data["rows"])
            return
        rows = []
        for r in data["rows"]:
            rows.append([r["route"], r["authority"] or "-", *_traffic_cells(r)])
        if not rows:
            print(f"No route traffic for {resource} in the last {window}.", file=sys.stderr)
            return
        print(table(["ROUTE", "AUTHORITY", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95",
                     "LATENCY_P99"], rows), end="")

    run(go)

"""What the `isthmus viz` verbs share: reaching the viz API, its refusals, and table formatting.

The viz API is found at the cluster IP of Service `isthmus-viz/isthmus-viz`
port 8085 (the embedded cluster routes cluster IPs on loopback), or at
`--api-url`. A refusal from the API is a `VizCliError` carrying the API's
reason, which the commands print on one line before exiting 1.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Annotated, Any

import typer

Output = Annotated[str, typer.Option("-o", "--output", help="table or json")]
ApiUrl = Annotated[str | None, typer.Option(
    "--api-url", help="the viz API's URL (default: the isthmus-viz Service of the cluster)")]
Window = Annotated[str, typer.Option("-t", "--time-window", help="window of the metrics: 10s, 1m, 10m, 1h")]


class VizCliError(Exception):
    pass


def fail(message: object) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(1)


def root_obj(ctx: typer.Context) -> dict[str, Any]:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, dict) else {}


def context_name(ctx: typer.Context) -> str | None:
    context: str | None = root_obj(ctx).get("context")
    return context


def namespace_of(ctx: typer.Context, default: str = "default") -> str:
    return root_obj(ctx).get("namespace") or default


def api_base(ctx: typer.Context, api_url: str | None) -> str:
    if api_url:
        return api_url.rstrip("/")
    from lightkube import ApiError, Client, ConfigError, KubeConfig
    from lightkube.resources.core_v1 import Service

    from isthmus.cli.multicluster import kubeconfig_path
    from isthmus.resources import viz_manifests as vm

    path = kubeconfig_path()
    context = context_name(ctx)
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


def open_api(base: str, path: str, params: dict[str, str], timeout: float | None = 30) -> Any:
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


def get_json(ctx: typer.Context, api_url: str | None, path: str, params: dict[str, str]) -> Any:
    base = api_base(ctx, api_url)
    with open_api(base, path, params) as response:
        return json.loads(response.read())


def check_output(output: str, allowed: Sequence[str] = ("table", "json")) -> None:
    if output not in allowed:
        raise VizCliError(f"-o {output!r} is not an output format; use {' or '.join(allowed)}")


# ---------------------------------------------------------------------------- formatting


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def rps(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}rps"


def ms(value: float | None) -> str:
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


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def resource_arg(resource: str, name: str | None) -> str:
    if name:
        if "/" in resource:
            raise VizCliError(f'give either TYPE/NAME or TYPE NAME, not "{resource} {name}"')
        return f"{resource}/{name}"
    return resource


# ---------------------------------------------------------------------------- commands


def run(fn: Any) -> None:
    try:
        fn()
    except VizCliError as e:
        fail(e)

"""`isthmus viz tap` and `isthmus viz top`: the live verbs, over the viz API's tap stream."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from typing import Annotated

import typer

from isthmus.cli.viz_client import (
    ApiUrl,
    Output,
    VizCliError,
    api_base,
    check_output,
    ms,
    namespace_of,
    open_api,
    pct,
    print_json,
    run,
    table,
)

__all__ = ["tap_cmd", "top_cmd"]


def _tap_lines(ctx: typer.Context, api_url: str | None, params: dict[str, str],
               max_events: int | None) -> Iterator[bytes]:
    base = api_base(ctx, api_url)
    query = dict(params)
    if max_events is not None:
        query["max"] = str(max_events)
    response = open_api(base, "/api/tap", query, timeout=None)
    with response:
        yield from response


def _tap_params(ctx: typer.Context, resource: str, to: str | None, to_namespace: str | None,
                path: str | None, method: str | None, authority: str | None,
                fmt: str) -> dict[str, str]:
    return {"resource": resource, "namespace": namespace_of(ctx), "to": to or "",
            "to_namespace": to_namespace or "", "path": path or "", "method": method or "",
            "authority": authority or "", "format": fmt}


TapTo = Annotated[str | None, typer.Option("--to", help="only requests to this resource")]
TapToNs = Annotated[str | None, typer.Option("--to-namespace")]
TapPath = Annotated[str | None, typer.Option("--path", help="only paths starting with this")]
TapMethod = Annotated[str | None, typer.Option("--method", help="only this HTTP method")]
TapAuthority = Annotated[str | None, typer.Option("--authority", help="only this authority")]


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
        check_output(output, ("text", "json"))
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
        run(go)


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
        check_output(output)
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
                              ms(r.best_ms), ms(r.worst_ms), ms(r.last_ms),
                              pct(r.success_rate))
            return t

        if duration is not None:
            time.sleep(duration)
            with lock:
                rows = top.rows()
            for e in errors:
                print(e, file=sys.stderr)
            if output == "json":
                print_json([r.to_dict() for r in rows])
            else:
                print(table(["SOURCE", "DESTINATION", "METHOD", "PATH", "COUNT", "BEST", "WORST",
                             "LAST", "SUCCESS_RATE"],
                            [[r.source, r.destination, r.method, r.path, str(r.count),
                              ms(r.best_ms), ms(r.worst_ms), ms(r.last_ms),
                              pct(r.success_rate)] for r in rows]), end="")
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

    run(go)

"""``isthmus check``: is the mesh healthy on the cluster of ``--context``? (As ``linkerd check``.)

    isthmus --context=west check --pre          # before install: can it be installed here?
    isthmus --context=west check                # the control plane
    isthmus --context=west check --proxy -n emojivoto   # and the meshed pods' proxies
    isthmus check -o json                       # for scripts

Prints one group of lines per category, each check a tick (``√
description``), a double exclamation mark (``‼``, a warning: works now,
will not for long) or a cross (U+00D7), the latter two followed by the
cause and a ``see:`` line saying what to do; then ``Status check results
are`` and a tick (warnings pass) or a cross. Colours on a terminal, plain text otherwise. Exit status 1 when a
check failed. Checks of states that settle (pods starting, a webhook
coming up) are retried for ``--wait`` (default 5 minutes, as linkerd), so
``isthmus check`` right after ``kubectl apply`` waits for the control plane;
``--wait 0`` reports at once. ``-o json`` prints ``{"success", "categories":
[{"categoryName", "checks": [{"description", "result", "error", "hint"}]}]}``
and ``-o short`` only what is not green. The checks are in
``isthmus.components.checks.catalog``.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.status import Status as Spinner
from rich.text import Text

from isthmus.components.checks import catalog
from isthmus.components.checks.cluster import kubeconfig_path
from isthmus.components.checks.runner import run
from isthmus.core.checks import Check, CheckResult, Outcome, Status, report, succeeded
from isthmus.core.proxy.retry import parse_duration

__all__ = ["check_cmd"]

OUTPUTS = ("table", "json", "short")
TICK, CROSS = "\u221a", "\u00d7"  # as linkerd check prints them
SYMBOL = {Status.SUCCESS: TICK, Status.WARNING: "\u203c", Status.ERROR: CROSS}
STYLE = {Status.SUCCESS: "green", Status.WARNING: "yellow", Status.ERROR: "red"}


def _fail(message: str) -> None:
    Console(stderr=True, highlight=False, soft_wrap=True).print(Text(f"error: {message}"))
    raise typer.Exit(1)


class TableOutput:
    """Lines as `linkerd check` prints them, one result at a time; `short` keeps only what is not green."""

    def __init__(self, console: Console, *, short: bool = False) -> None:
        self.console = console
        self.short = short
        self._category: str | None = None
        self._spinner: Spinner | None = None

    def waiting(self, check: Check[Any], outcome: Outcome) -> None:
        if not self.console.is_terminal:
            return
        first = outcome.cause.splitlines()[0] if outcome.cause else ""
        text = f"{check.description}: waiting for check to complete ({first})"
        if self._spinner is None:
            self._spinner = self.console.status(text)
            self._spinner.start()
        else:
            self._spinner.update(text)

    def result(self, r: CheckResult) -> None:
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None
        if self.short and r.status is Status.SUCCESS:
            return
        if r.category != self._category:
            if self._category is not None:
                self.console.print()
            self._category = r.category
            self.console.print(Text(r.category))
            self.console.print(Text("-" * len(r.category)))
        line = Text()
        line.append(SYMBOL[r.status], style=STYLE[r.status])
        line.append(f" {r.description}")
        self.console.print(line)
        if r.status is not Status.SUCCESS:
            for cause_line in (r.cause or "no cause given").splitlines():
                self.console.print(Text(f"    {cause_line}"))
            if r.hint:
                self.console.print(Text(f"    see: {r.hint}"))

    def finish(self, results: list[CheckResult]) -> None:
        if self._category is not None:
            self.console.print()
        ok = succeeded(results)
        line = Text("Status check results are ")
        line.append(TICK if ok else CROSS, style="green" if ok else "red")
        self.console.print(line)


def check_cmd(
        ctx: typer.Context,
        pre: Annotated[bool, typer.Option(
            "--pre", help="only check whether isthmus can be installed on the cluster")] = False,
        proxy: Annotated[bool, typer.Option(
            "--proxy", help="also check the data plane: every meshed pod's proxy")] = False,
        namespace: Annotated[str | None, typer.Option(
            "-n", "--namespace", show_default=False,
            help="with --proxy: only the meshed pods of this namespace [default: every namespace]")] = None,
        output: Annotated[str, typer.Option("-o", "--output", help="table, json or short")] = "table",
        wait: Annotated[str, typer.Option(
            "--wait", help="how long to retry checks of states that settle (pods starting), e.g. 5m, 30s, 0")
        ] = "5m0s",
) -> None:
    """Check the mesh on the cluster: a line per check, the cause and a hint for each failure (exit 1)."""
    if output not in OUTPUTS:
        _fail(f"-o/--output must be one of {', '.join(OUTPUTS)}, not {output!r}")
    seconds = parse_duration(wait)
    if seconds is None or seconds < 0:
        _fail(f"--wait {wait!r} is not a duration (like 5m, 30s, 1m30s or 0)")
        return
    if pre and proxy:
        _fail("--pre checks a cluster before install and --proxy the data plane after it: give one")
    root = ctx.obj if isinstance(ctx.obj, dict) else {}
    data_ns = namespace or root.get("namespace")
    env = catalog.CheckEnv(kubeconfig=kubeconfig_path(), context=root.get("context"),
                           now=lambda: datetime.now(UTC), data_plane_namespace=data_ns if proxy else None)
    categories = catalog.pre_install() if pre else catalog.installed(proxy=proxy, namespace=data_ns)
    run_and_print(categories, env, output, seconds)


def run_and_print(categories: Any, env: Any, output: str, seconds: float) -> None:
    """Run the checks, print them as `output` (table, short or json), exit 1 unless all pass;
    `env.cluster` is closed at the end (`isthmus check` and `isthmus multicluster check`)."""
    console = Console(highlight=False, soft_wrap=True)
    table = TableOutput(console, short=output == "short") if output != "json" else None
    results: list[CheckResult] = []
    try:
        for result in run(categories, env, wait=seconds, clock=time.monotonic, sleep=time.sleep,
                          on_retry=table.waiting if table is not None else None):
            results.append(result)
            if table is not None:
                table.result(result)
    finally:
        close = getattr(env.cluster, "close", None)
        if close is not None:
            close()
    if table is not None:
        table.finish(results)
    else:
        print(json.dumps(report(results), indent=2))
    if not succeeded(results):
        raise typer.Exit(1)

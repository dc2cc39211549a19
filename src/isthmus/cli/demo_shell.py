"""What `isthmus demo` shows and runs: steps with their times, and the commands of each step.

- `Reporter`: a spinner and one line per step (with its time) on a terminal,
  plain lines otherwise; the commands each step runs are shown as a user
  would type them, their output indented;
- `Shell`: runs the real `isthmus` and `kubectl` with the demo's environment,
  showing each command that changes something, and asks the clusters quiet
  questions (`probe`, `has`) for the steps that reuse what exists;
- `DemoError`: what a step could not do, said in one sentence.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

__all__ = ["CLUSTERS", "DemoError", "Reporter", "Shell", "Step", "demo_dir", "wait_for"]

CLUSTERS = (("west", "sfo3"), ("east", "syd1"))


def demo_dir(home: Path) -> Path:
    """Where the demo keeps its certificates, dashboards' pids and logs."""
    return home / "demo"


class DemoError(Exception):
    pass


def _plain_time(seconds: float) -> str:
    return f"{seconds:.1f} s"


@dataclass
class Step:
    title: str
    commands: list[str] = field(default_factory=list)
    reused: bool = False
    note: str = ""


class Reporter:
    """Steps with their times: a spinner and one line per step on a terminal, plain lines otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.rich = console.is_terminal
        self.started = time.monotonic()

    def line(self, text: str, style: str | None = None) -> None:
        self.console.print(text, style=style if self.rich else None, highlight=False, markup=False,
                           soft_wrap=True)

    def heading(self, text: str) -> None:
        if self.rich:
            self.console.rule(text)
        else:
            self.console.print(f"\n== {text}", highlight=False, markup=False)

    def command(self, shown: str) -> None:
        self.line(f"  $ {shown}", "dim")

    def output(self, text: str) -> None:
        if text.strip():
            for row in text.rstrip().splitlines():
                self.line(f"    {row}")

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[Step]:
        step = Step(title)
        start = time.monotonic()
        if not self.rich:
            self.console.print(f"-> {title}", highlight=False, markup=False)
        status = self.console.status(escape(title)) if self.rich else contextlib.nullcontext()
        try:
            with status:
                yield step
        except BaseException:
            if self.rich:
                self.console.print(f"[red]✗[/red] {escape(title)}", highlight=False)
            else:
                self.console.print(f"   failed: {title}", highlight=False, markup=False)
            raise
        took = time.monotonic() - start
        what = "already there" if step.reused else "done"
        if step.note:
            what += f"; {step.note}"
        if self.rich:
            mark = "[cyan]=[/cyan]" if step.reused else "[green]✓[/green]"
            self.console.print(f"{mark} {escape(title)}  [dim]{what}, {_plain_time(took)}[/dim]",
                               highlight=False)
        else:
            self.console.print(f"   {what} ({_plain_time(took)})", highlight=False, markup=False)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Shell:
    """Runs the demo's commands (the real `isthmus` and `kubectl`), showing each one that changes something."""

    def __init__(self, report: Reporter, env: dict[str, str]) -> None:
        self.report = report
        self.env = env
        self.isthmus = str(Path(sys.executable).parent / "isthmus")
        self.kubectl = shutil.which("kubectl", path=env.get("PATH")) or "/usr/bin/kubectl"

    def run(self, argv: list[str], *, shown: str, stdin: str | None = None, show: bool = True,
            check: bool = True, timeout: float = 240) -> str:
        if show:
            self.report.command(shown)
        try:
            proc = subprocess.run(argv, input=stdin, text=True, env=self.env, timeout=timeout,
                                  capture_output=True)
        except subprocess.TimeoutExpired:
            raise DemoError(f"`{shown}` did not finish within {timeout:.0f} s") from None
        if proc.returncode != 0 and check:
            raise DemoError(f"`{shown}` failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def cli(self, *args: str, **kw: object) -> str:
        return self.run([self.isthmus, *args], shown="isthmus " + shlex.join(args), **kw)  # type: ignore[arg-type]

    def kc(self, context: str, *args: str, **kw: object) -> str:
        return self.run([self.kubectl, f"--context={context}", *args],
                        shown=f"kubectl --context={context} " + shlex.join(args), **kw)  # type: ignore[arg-type]

    def pipe(self, context: str, *args: str) -> str:
        """`isthmus ARGS | kubectl --context=C apply -f -`, shown as the one line a user types."""
        shown = f"isthmus {shlex.join(args)} | kubectl --context={context} apply -f -"
        self.report.command(shown)
        manifests = self.cli(*args, show=False)
        return self.kc(context, "apply", "-f", "-", stdin=manifests, show=False)

    def probe(self, context: str, *args: str) -> str | None:
        """A quiet `kubectl get`: its output, or None when it failed (not found)."""
        proc = subprocess.run([self.kubectl, f"--context={context}", *args], text=True, env=self.env,
                              capture_output=True, timeout=60)
        return proc.stdout if proc.returncode == 0 else None

    def has(self, context: str, *args: str) -> bool:
        out = self.probe(context, *args)
        return bool(out and out.strip())


def wait_for(what: str, check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise DemoError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.5)

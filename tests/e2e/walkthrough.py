"""The README's two-region tutorial, run as written, then `isthmus demo --detach` on top of it.

`walkthrough` (session scope) reads the tutorial's commands out of README.md
— every fenced `sh` block right after a `<!-- walkthrough -->` comment, in
order — and runs each one with bash (`set -o pipefail`) in a fresh temporary
ISTHMUS_HOME, with `.venv/bin` first on PATH and a working directory that
holds a link to the repository's `deploy/`. So the README cannot drift from
the code: a command that fails, or prints nothing where the README promises
output, fails every test that uses the fixture.

Marker variants:

* `<!-- walkthrough: stream -->` — the command runs until interrupted (tap):
  the fixture keeps its first `STREAM_LINES` lines (or what came within
  `STREAM_WAIT` seconds), then stops it;
* `<!-- walkthrough: serve -->` — a server (a dashboard): the fixture waits
  until the URL it prints answers, keeps the URL, then stops it (so that
  `isthmus demo` can start its own on the same ports).

Placeholders are filled the way the README tells the reader to:
`<cluster IP>` is what the command before it printed; the dashboards'
ports become free ones (`substitute`).

Then `isthmus demo --detach` runs on the same home; it must find everything
in place (the test checks that it re-made nothing) and leaves two dashboards
running. The fixture's object gives `.home`, `.kubeconfig`, `.env()`,
`.outputs` (command as written in the README → its stdout), `.kubectl(ctx,
*args)`, `.isthmus(*args)`, `.demo` (the demo's output), `.dashboards`
(cluster → URL).

Other modules' tests use the same fixture, so tests must not change its
clusters. Teardown runs `isthmus demo down` (once: `down()` may have run it
already) — the one test that checks what `down` leaves behind calls
`down()` itself and is moved to the end of the session by
`pytest_collection_modifyitems` below (`run_last`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import FIRST_CLUSTER, KUBECTL

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
STREAM_LINES = 6
STREAM_WAIT = 90.0
COMMAND_TIMEOUT = 300.0

_BLOCK = re.compile(r"<!-- walkthrough(?::\s*(\w+))? -->\s*\n```sh\n(.*?)```", re.S)


@dataclass(frozen=True)
class Command:
    text: str  # as written in the README (continuations joined by the shell, not by us)
    kind: str  # "run", "stream" or "serve"


def tutorial_commands(readme: str) -> list[Command]:
    """The tutorial's commands in order: one per line, `\\` continuations and for-loops kept whole."""
    commands: list[Command] = []
    for kind, body in _BLOCK.findall(readme):
        current: list[str] = []
        depth = 0
        for line in body.splitlines():
            if not line.strip() and not current:
                continue
            current.append(line)
            words = line.split()
            if words and words[0] in ("for", "while", "if"):
                depth += 1
            if words and words[0] in ("done", "fi"):
                depth -= 1
            if line.rstrip().endswith("\\") or line.rstrip().endswith("|") or depth > 0:
                continue
            commands.append(Command("\n".join(current), kind or "run"))
            current = []
        if current:
            raise ValueError(f"README tutorial: unfinished command {' '.join(current)!r}")
    return commands


def free_port_pair(step: int = 10) -> int:
    """A port p such that p and p + step are both free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + step > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + step))
            except OSError:
                continue
        return int(port)
    raise RuntimeError("no free port pair")


def answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=3) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _stop(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass
class Walkthrough:
    home: Path
    workdir: Path
    kubeconfig: Path
    dashboard_port: int
    outputs: dict[str, str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    demo: str = ""
    dashboards: dict[str, str] = field(default_factory=dict)
    down_result: subprocess.CompletedProcess[str] | None = None

    def env(self) -> dict[str, str]:
        return dict(os.environ, ISTHMUS_HOME=str(self.home), KUBECONFIG=str(self.kubeconfig),
                    ISTHMUS_FIRST_CLUSTER_NUMBER=FIRST_CLUSTER,
                    PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")

    def kubectl(self, context: str, *args: str, check: bool = True, timeout: float = 60,
                ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([KUBECTL, f"--context={context}", *args], text=True, capture_output=True,
                              env=self.env(), timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl --context={context} {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stderr}")
        return proc

    def isthmus(self, *args: str, check: bool = True, timeout: float = 120,
                ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(BIN / "isthmus"), *args], text=True, capture_output=True, env=self.env(),
                              timeout=timeout, cwd=self.workdir)
        if check and proc.returncode != 0:
            raise AssertionError(f"isthmus {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def output_of(self, fragment: str) -> str:
        """The stdout of the one tutorial command that contains `fragment`."""
        found = [c for c in self.order if fragment in c]
        assert len(found) == 1, f"{len(found)} tutorial commands contain {fragment!r}: {found}"
        return self.outputs[found[0]]

    # ------------------------------------------------------------------ running the tutorial

    def _bash(self, text: str, *, stdout: int | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(["bash", "-o", "pipefail", "-c", text], text=True, env=self.env(),
                                cwd=self.workdir, stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)

    def run(self, command: Command, text: str) -> str:
        if command.kind == "run":
            proc = self._bash(text)
            try:
                out, err = proc.communicate(timeout=COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                _stop(proc)
                raise AssertionError(f"README tutorial command timed out:\n{text}") from None
            if proc.returncode != 0:
                raise AssertionError(f"README tutorial command failed ({proc.returncode}):\n{text}\n"
                                     f"stdout:\n{out}\nstderr:\n{err}")
            return out
        return self._stream(text, serve=command.kind == "serve")

    def _stream(self, text: str, *, serve: bool) -> str:
        proc = self._bash(text)
        lines: list[str] = []
        deadline = time.monotonic() + STREAM_WAIT
        try:
            assert proc.stdout is not None
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stdout, selectors.EVENT_READ)
                while time.monotonic() < deadline and len(lines) < (1 if serve else STREAM_LINES):
                    if not sel.select(timeout=1.0):
                        continue
                    line = proc.stdout.readline()
                    if not line:
                        break
                    lines.append(line.rstrip("\n"))
            if serve:
                urls = re.findall(r"http://127\.0\.0\.1:\d+/\S*", "\n".join(lines))
                assert urls, f"README tutorial server printed no URL:\n{text}\n{lines}"
                deadline = time.monotonic() + 60
                while not answers(urls[0]):
                    assert proc.poll() is None, f"README tutorial server exited:\n{text}"
                    assert time.monotonic() < deadline, f"{urls[0]} did not answer:\n{text}"
                    time.sleep(0.5)
        finally:
            _stop(proc)
        return "\n".join(lines) + "\n"

    def down(self) -> subprocess.CompletedProcess[str]:
        """`isthmus demo down`, once."""
        if self.down_result is None:
            self.down_result = self.isthmus("demo", "down", check=False, timeout=180)
        return self.down_result


def substitute(text: str, previous: str, dashboard_port: int) -> str:
    """Fill the README's placeholders the way it tells the reader to.

    The dashboards' ports (the walkthrough's 50750 and 50760) become free
    ones, so that two test runs (or a user's demo) can share a machine.
    """
    text = text.replace("--port 50750", f"--port {dashboard_port}")
    text = text.replace("--port 50760", f"--port {dashboard_port + 10}")
    return text.replace("<cluster IP>", previous.strip())


@pytest.fixture(scope="session")
def walkthrough(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walkthrough]:
    base = tmp_path_factory.mktemp("walkthrough")
    home, workdir = base / "home", base / "work"
    workdir.mkdir()
    (workdir / "deploy").symlink_to(ROOT / "deploy")
    w = Walkthrough(home=home, workdir=workdir, kubeconfig=home / "kubeconfig",
                    dashboard_port=free_port_pair())
    try:
        previous = ""
        for command in tutorial_commands(README.read_text()):
            out = w.run(command, substitute(command.text, previous, w.dashboard_port))
            w.outputs[command.text] = out
            w.order.append(command.text)
            previous = out
        demo = w.isthmus("demo", "--detach", "--dashboard-port", str(w.dashboard_port), timeout=600)
        w.demo = demo.stdout
        w.dashboards = dict(re.findall(r"(\w+)'s dashboard: (http://\S+)", demo.stdout))
        if os.environ.get("ISTHMUS_WALKTHROUGH_DUMP"):  # to refresh the README's "you should see"
            Path(os.environ["ISTHMUS_WALKTHROUGH_DUMP"]).write_text(json.dumps(
                {"outputs": w.outputs, "demo": w.demo}, indent=1))
        yield w
    finally:
        w.down()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `run_last` (the one that runs `demo down`) go after every other test."""
    items.sort(key=lambda item: bool(getattr(getattr(item, "function", None), "run_last", False)))

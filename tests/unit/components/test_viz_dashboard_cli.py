"""`isthmus viz dashboard`: what it refuses before serving, and a real process serving.

The serving process reads a kubeconfig whose API server does not answer, so
what the dashboard says about an unreachable cluster is checked too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from isthmus.cli.viz_dashboard import dashboard_cmd

# The command as a one-command app, with the root's context object as `isthmus` sets it.
APP = """
import sys, typer
from isthmus.cli.viz_dashboard import dashboard_cmd
app = typer.Typer()
@app.callback()
def root(ctx: typer.Context, context: str = typer.Option(None, "--context")) -> None:
    ctx.obj = {"context": context, "namespace": None}
app.command("dashboard")(dashboard_cmd)
app()
"""


def app() -> typer.Typer:
    a = typer.Typer()

    @a.callback()
    def root(ctx: typer.Context, context: str = typer.Option(None, "--context")) -> None:
        ctx.obj = {"context": context, "namespace": None}

    a.command("dashboard")(dashboard_cmd)
    return a


def write_kubeconfig(path: Path, contexts: list[str], server: str = "https://127.0.0.1:1") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": contexts[0] if contexts else "",
        "clusters": [{"name": c, "cluster": {"server": server, "insecure-skip-tls-verify": True}} for c in contexts],
        "users": [{"name": c, "user": {"token": "t"}} for c in contexts],
        "contexts": [{"name": c, "context": {"cluster": c, "user": c}} for c in contexts],
    }))
    return path


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    kc = write_kubeconfig(tmp_path / "kubeconfig", ["west", "east"])
    monkeypatch.setenv("KUBECONFIG", str(kc))
    monkeypatch.setenv("ISTHMUS_HOME", str(tmp_path / "home"))
    return dict(os.environ)


def run(*args: str) -> Any:
    return CliRunner().invoke(app(), list(args))


@pytest.mark.parametrize(("args", "message"), [
    (["--address", "0.0.0.0"], "error: --address 0.0.0.0 is not a loopback address: the dashboard serves on "
                               "127.0.0.0/8 (or ::1) only"),
    (["--address", "192.168.1.10"], "error: --address 192.168.1.10 is not a loopback address"),
    (["--address", "localhost.example"], "error: --address localhost.example is not a loopback address"),
    (["--port", "70000"], "error: --port 70000 is not a port number (0-65535)"),
    (["--api-url", "east"], "error: --api-url 'east' is not CLUSTER=URL (e.g. --api-url east=http://127.0.0.1:8085)"),
    (["--api-url", "east=127.0.0.1:8085"], "error: --api-url 'east=127.0.0.1:8085' is not CLUSTER=URL"),
    (["--context", "north"], "error: context 'north' is not in the kubeconfig"),
])
def test_bad_options_are_refused_in_one_line(env: dict[str, str], args: list[str], message: str) -> None:
    result = run("dashboard", *args)
    assert result.exit_code == 1
    assert result.output.startswith(message), result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_root_context_is_used_and_checked(env: dict[str, str]) -> None:
    result = run("--context", "south", "dashboard")
    assert result.exit_code == 1
    assert result.output.strip() == (f"error: context 'south' is not in the kubeconfig {env['KUBECONFIG']} "
                                     f"(its contexts: east, west)")


def test_a_missing_kubeconfig_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nope"))
    result = run("dashboard")
    assert result.exit_code == 1
    assert result.output.strip() == f"error: the kubeconfig {tmp_path / 'nope'} does not exist"


class Served:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc, self.url = proc, url

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", APP, *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture
def served(env: dict[str, str]) -> Iterator[Served]:
    proc = start(env, "--context", "west", "dashboard", "--port", "0", "--show-url-only")
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/"), (url, proc.stderr and proc.stderr.read())
        yield Served(proc, url)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_it_serves_until_terminated_and_says_why_a_cluster_cannot_be_reached(served: Served) -> None:
    status, body = served.get("/api/clusters")
    assert status == 200
    assert body["current"] == "west"
    assert [c["name"] for c in body["clusters"]] == ["west"]
    assert body["error"].startswith("cannot read the Links of cluster 'west': cannot reach the API of context "
                                    "'west' to list Links in isthmus-multicluster: ")
    assert body["error"].endswith("is the cluster running?")
    status, body = served.get("/api/clusters/west/api/stat?resource=deploy")
    assert status == 503
    assert body["error"].startswith("cannot reach the API of context 'west' to get Service isthmus-viz/isthmus-viz")
    status, body = served.get("/api/clusters/east/api/stat?resource=deploy")
    assert status == 503
    assert body["error"].startswith("cannot tell whether cluster 'east' is linked: ")
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(30) == 0
    assert served.proc.stderr is not None
    assert "Traceback" not in served.proc.stderr.read()


def test_a_port_in_use_is_refused_in_one_line(env: dict[str, str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = start(env, "dashboard", "--port", str(port))
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert out == ""
    assert err.strip() == (f"error: port {port} on 127.0.0.1 is in use: stop what uses it or pass another --port "
                           f"(0 picks a free one)")


def test_without_show_url_only_it_says_what_it_serves(env: dict[str, str]) -> None:
    proc = start(env, "dashboard", "--port", "0", "--address", "127.0.0.3")
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("isthmus viz dashboard of cluster 'west' and the clusters it links to: "
                                "http://127.0.0.3:")
        assert proc.stdout.readline().strip() == "serving until interrupted (Ctrl-C)"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0

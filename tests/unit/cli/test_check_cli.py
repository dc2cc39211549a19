"""`isthmus check` as a user runs it, without a cluster: output lines, JSON shape, exit codes, options.

The real command runs in a subprocess against kubeconfigs that name no
cluster or one that does not answer; the printing is checked line by line,
plain and on a terminal. Checks against a running cluster are
tests/e2e/test_check.py's.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml
from rich.console import Console

from isthmus.cli.check import TableOutput
from isthmus.core.checks import CheckResult, Status

ISTHMUS = str(Path(sys.executable).parent / "isthmus")


def isthmus(*args: str, kubeconfig: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), ISTHMUS_HOME=str(home))
    return subprocess.run([ISTHMUS, *args], capture_output=True, text=True, env=env, timeout=60)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def kubeconfig_for(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "gone", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "gone", "user": {"token": "t"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "gone"}}]}))
    return path


def test_no_kubeconfig_fails_the_first_check_with_a_hint(tmp_path: Path) -> None:
    out = isthmus("check", kubeconfig=tmp_path / "missing", home=tmp_path)
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        "kubernetes-api",
        "--------------",
        "\u00d7 can initialize the client",
        f"    the kubeconfig {tmp_path / 'missing'} does not exist",
        "    see: give a context of `kubectl config get-contexts` with --context, or point KUBECONFIG at "
        "the cluster's kubeconfig",
        "",
        "Status check results are \u00d7",
    ]
    assert "\x1b[" not in out.stdout  # plain when not on a terminal


def test_an_unknown_context_is_named_with_the_known_ones(tmp_path: Path) -> None:
    kc = kubeconfig_for(tmp_path / "kc", f"https://127.0.0.1:{closed_port()}")
    out = isthmus("--context", "west", "check", kubeconfig=kc, home=tmp_path)
    assert out.returncode == 1
    assert f"context 'west' is not in the kubeconfig {kc} (its contexts: gone)" in out.stdout


def test_an_api_that_does_not_answer(tmp_path: Path) -> None:
    port = closed_port()
    kc = kubeconfig_for(tmp_path / "kc", f"https://127.0.0.1:{port}")
    out = isthmus("check", "--pre", kubeconfig=kc, home=tmp_path)
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[:4] == ["kubernetes-api", "--------------", "\u221a can initialize the client",
                         "\u00d7 can query the Kubernetes API"]
    assert lines[4].startswith(f"    cannot reach the API of context 'gone' at https://127.0.0.1:{port}: ")
    assert lines[5].startswith("    see: is the cluster running? `kubectl --context=gone get --raw /version`")
    assert lines[-1] == "Status check results are \u00d7"

    report = json.loads(isthmus("check", "-o", "json", kubeconfig=kc, home=tmp_path).stdout)
    assert report["success"] is False
    assert [c["categoryName"] for c in report["categories"]] == ["kubernetes-api"]
    checks = report["categories"][0]["checks"]
    assert [sorted(c) for c in checks] == [["description", "error", "hint", "result"]] * 2
    assert [(c["description"], c["result"]) for c in checks] == [
        ("can initialize the client", "success"), ("can query the Kubernetes API", "error")]
    assert checks[1]["error"].startswith("cannot reach the API") and checks[1]["hint"]


def test_options_that_are_refused(tmp_path: Path) -> None:
    kc = tmp_path / "kc"
    for args, message in ((["-o", "yaml"], "-o/--output must be one of table, json, short, not 'yaml'"),
                          (["--wait", "soon"], "--wait 'soon' is not a duration"),
                          (["--pre", "--proxy"], "give one")):
        out = isthmus("check", *args, kubeconfig=kc, home=tmp_path)
        assert (out.returncode, out.stdout) == (1, "")
        assert out.stderr.startswith("error: ") and message in out.stderr


RESULTS = [
    CheckResult("kubernetes-api", "can query the Kubernetes API", Status.SUCCESS),
    CheckResult("isthmus-identity", "issuer cert is valid for at least 60 days", Status.WARNING,
                "issuer certificate CN=x will expire soon", "renew it"),
    CheckResult("isthmus-identity", "issuer cert is issued by the trust anchor", Status.SUCCESS),
    CheckResult("isthmus-data-plane", "data plane proxies are ready", Status.ERROR,
                "ns/a: not ready\nns/b: not ready", "look at the pods"),
]


def render(short: bool = False, terminal: bool = False) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=terminal, color_system="standard" if terminal else None,
                      highlight=False, soft_wrap=True)
    table = TableOutput(console, short=short)
    for r in RESULTS:
        table.result(r)
    table.finish(RESULTS)
    return buffer.getvalue()


def test_table_lines_as_linkerd_check_prints_them() -> None:
    assert render().splitlines() == [
        "kubernetes-api",
        "--------------",
        "\u221a can query the Kubernetes API",
        "",
        "isthmus-identity",
        "----------------",
        "\u203c issuer cert is valid for at least 60 days",
        "    issuer certificate CN=x will expire soon",
        "    see: renew it",
        "\u221a issuer cert is issued by the trust anchor",
        "",
        "isthmus-data-plane",
        "------------------",
        "\u00d7 data plane proxies are ready",
        "    ns/a: not ready",
        "    ns/b: not ready",
        "    see: look at the pods",
        "",
        "Status check results are \u00d7",
    ]


def test_short_output_keeps_only_what_is_not_green() -> None:
    lines = render(short=True).splitlines()
    assert "\u221a can query the Kubernetes API" not in lines
    assert "kubernetes-api" not in lines
    assert lines[0] == "isthmus-identity" and lines[-1] == "Status check results are \u00d7"


def test_colours_on_a_terminal() -> None:
    text = render(terminal=True)
    assert "\x1b[32m\u221a\x1b[0m can query the Kubernetes API" in text  # green tick
    assert "\x1b[33m\u203c\x1b[0m" in text and "\x1b[31m\u00d7\x1b[0m" in text  # yellow, red

"""`isthmus viz` as a user runs it, without a cluster: refusals, the API's reasons, table formatting.

The real command runs in a subprocess. Where a viz API is needed, a small
HTTP server in the test answers with fixed JSON in the viz API's shapes
(docs/viz.md) — the real API against real clusters is tests/e2e/test_viz.py's.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

ISTHMUS = str(Path(sys.executable).parent / "isthmus")

STAT = {"window": "1m", "rows": [
    {"namespace": "emojivoto", "kind": "deployment", "name": "web", "meshed": "1/1",
     "success": 0.9876, "rps": 2.345, "latency_ms": {"p50": 4.5, "p95": 12.0, "p99": 0.5},
     "tcp_conn": 2},
    {"namespace": "emojivoto", "kind": "deployment", "name": "plain", "meshed": "0/1",
     "success": None, "rps": None, "latency_ms": None, "tcp_conn": None}]}


class FakeViz(BaseHTTPRequestHandler):
    asked: list[tuple[str, dict[str, list[str]]]] = []

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        FakeViz.asked.append((url.path, query))
        if query.get("resource") == ["deploy/nope"]:
            self._json(404, {"error": "deployment nope not found in namespace emojivoto; list them "
                                      "with kubectl get deploy -n emojivoto"})
        elif url.path == "/api/stat":
            self._json(200, STAT)
        else:
            self._json(400, {"error": f"not here: {url.path}"})

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeViz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeViz.asked.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def isthmus(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ISTHMUS_HOME=str(home), KUBECONFIG=str(home / "kubeconfig"))
    return subprocess.run([ISTHMUS, *args], capture_output=True, text=True, env=env, timeout=60)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_stat_prints_linkerd_columns_and_dashes_for_unmeshed(api: str, tmp_path: Path) -> None:
    out = isthmus("-n", "emojivoto", "viz", "stat", "deploy", "--api-url", api, home=tmp_path)
    assert out.returncode == 0, out.stderr
    header, web, plain = out.stdout.splitlines()
    assert header.split() == ["NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95",
                              "LATENCY_P99", "TCP_CONN"]
    assert web.split() == ["web", "1/1", "98.76%", "2.3rps", "4.5ms", "12ms", "0.50ms", "2"]
    assert plain.split() == ["plain", "0/1", "-", "-", "-", "-", "-", "-"]
    (path, query), = FakeViz.asked
    assert path == "/api/stat"
    assert query == {"resource": ["deploy"], "namespace": ["emojivoto"], "window": ["1m"]}
    as_json = isthmus("viz", "stat", "deploy", "web", "-o", "json", "--api-url", api, home=tmp_path)
    assert json.loads(as_json.stdout) == STAT["rows"]
    assert FakeViz.asked[-1][1]["resource"] == ["deploy/web"]


def test_the_apis_reason_is_the_error_line(api: str, tmp_path: Path) -> None:
    out = isthmus("-n", "emojivoto", "viz", "stat", "deploy/nope", "--api-url", api, home=tmp_path)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == ("error: deployment nope not found in namespace emojivoto; list them with "
                          "kubectl get deploy -n emojivoto\n")


@pytest.mark.parametrize("args, message", [
    (("install", "--cluster-name", "West_1"), "cluster name 'West_1' is not valid"),
    (("install", "--cluster-name", "west", "--scrape-interval", "0"), "is not between 0.1 and 300 s"),
    (("install", "--cluster-name", "west", "--prometheus-url", "ftp://p"), "is not an http(s) URL"),
    (("stat", "deploy", "-o", "yaml", "--api-url", "http://127.0.0.1:9"), "-o 'yaml' is not an output"),
    (("stat", "deploy/web", "web", "--api-url", "http://127.0.0.1:9"), "give either TYPE/NAME or TYPE NAME"),
    (("top", "deploy/web", "-o", "json", "--api-url", "http://127.0.0.1:9"), "-o json needs --duration"),
    (("tap", "deploy/web", "--max", "0", "--api-url", "http://127.0.0.1:9"), "--max must be at least 1"),
])
def test_bad_options_are_refused_and_print_nothing(tmp_path: Path, args: tuple[str, ...],
                                                   message: str) -> None:
    out = isthmus("viz", *args, home=tmp_path)
    assert out.returncode == 1 and out.stdout == ""
    assert message in out.stderr and out.stderr.startswith("error: ")
    assert "Traceback" not in out.stderr


def test_an_api_that_does_not_answer_is_named(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    out = isthmus("viz", "edges", "deploy", "--api-url", url, home=tmp_path)
    assert out.returncode == 1
    assert f"cannot reach the viz API at {url}" in out.stderr
    assert "kubectl -n isthmus-viz get pods" in out.stderr


def test_without_a_kubeconfig_the_cli_says_so(tmp_path: Path) -> None:
    out = isthmus("--context", "west", "viz", "stat", "deploy", home=tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "kubeconfig" in out.stderr

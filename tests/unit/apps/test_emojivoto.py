"""The emojivoto demo services, run as real processes on 127.0.0.1 and driven over HTTP.

Each test starts the services it needs with `python -m isthmus.apps.emojivoto`, wired
to each other directly by `*_HOST` and `*_PORT`, and stops every process it started.
A small recording HTTP proxy stands in for a sidecar where a test needs one.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

LOOPBACK = "127.0.0.1"
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now and no earlier call returned."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def clean_env() -> dict[str, str]:
    """The test's environment without any proxy settings, with the pod IP on loopback."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
    env["POD_IP"] = LOOPBACK
    env["PYTHONUNBUFFERED"] = "1"
    return env


def request(
    port: int, path: str, method: str = "GET", timeout: float = 5.0
) -> tuple[int, bytes, str]:
    """One direct HTTP call to 127.0.0.1: status, body and content type."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("Content-Type", "")
    finally:
        conn.close()


def get_json(port: int, path: str, method: str = "GET") -> tuple[int, Any]:
    """One direct HTTP call whose answer is JSON: status and decoded body."""
    status, body, content_type = request(port, path, method)
    assert content_type.startswith("application/json"), (status, content_type, body)
    return status, json.loads(body)


def vote_path(prefix: str, shortcode: str) -> str:
    return f"{prefix}?choice={quote(shortcode, safe='')}"


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until `check()` holds, polling; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Service:
    """One running service process and where its stdout goes."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@dataclass
class Launcher:
    """Starts service processes and, at the end of the test, stops every one of them."""

    workdir: Path
    started: list[Service] = field(default_factory=list)

    def start(self, name: str, env: dict[str, str] | None = None, port: int = 0) -> Service:
        port_var = {"emoji": "EMOJI_PORT", "voting": "VOTING_PORT", "web": "WEB_PORT"}.get(name)
        full_env = clean_env()
        if port_var is not None:
            port = port or free_port()
            full_env[port_var] = str(port)
        full_env.update(env or {})
        log_path = self.workdir / f"{name}-{len(self.started)}.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "isthmus.apps.emojivoto", name],
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        service = Service(name, proc, port, log_path)
        self.started.append(service)
        return service

    def wait_healthy(self, *services: Service, timeout: float = 10.0) -> None:
        for service in services:

            def healthy(service: Service = service) -> bool:
                if service.proc.poll() is not None:
                    pytest.fail(f"{service.name} exited early:\n{service.log()}")
                try:
                    return request(service.port, "/healthz", timeout=1.0)[0] == 200
                except (OSError, http.client.HTTPException):
                    return False

            eventually(healthy, timeout, f"{service.name} to become healthy")

    def stop_all(self) -> None:
        for service in self.started:
            if service.proc.poll() is None:
                service.proc.kill()
            service.proc.wait(timeout=10)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    launched = Launcher(tmp_path)
    try:
        yield launched
    finally:
        launched.stop_all()


@dataclass
class Stack:
    emoji: Service
    voting: Service
    web: Service


def start_stack(
    launcher: Launcher, web_env: dict[str, str] | None = None, web_port: int = 0
) -> Stack:
    """emoji, voting and web, with web calling the other two directly (unless overridden)."""
    emoji = launcher.start("emoji")
    voting = launcher.start("voting")
    env = {
        "EMOJISVC_HOST": f"{LOOPBACK}:{emoji.port}",
        "VOTINGSVC_HOST": f"{LOOPBACK}:{voting.port}",
    }
    env.update(web_env or {})
    web = launcher.start("web", env, port=web_port)
    launcher.wait_healthy(emoji, voting, web)
    return Stack(emoji, voting, web)


def total_votes(web_port: int) -> int:
    status, board = get_json(web_port, "/api/leaderboard")
    assert status == 200
    return sum(row["votes"] for row in board)


class RecordingProxy(ThreadingHTTPServer):
    """A forward HTTP proxy on 127.0.0.1 that records each request line it receives.

    `routes` maps the `host:port` of an absolute-form target to a local port.
    """

    daemon_threads = True

    def __init__(self, routes: dict[str, int]) -> None:
        super().__init__((LOOPBACK, 0), _ProxyHandler)
        self.routes = routes
        self.seen: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server_address[1]}"

    def requests(self) -> list[tuple[str, str, str]]:
        with self.lock:
            return list(self.seen)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RecordingProxy

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.seen.append((self.command, self.path, self.headers.get("Host", "")))
        target = urlsplit(self.path)
        if target.scheme != "http" or not target.hostname:
            self._reply(400, b"not an absolute-form request\n")
            return
        port = self.server.routes.get(f"{target.hostname}:{target.port or 80}")
        if port is None:
            self._reply(502, b"no route\n")
            return
        path = target.path + (f"?{target.query}" if target.query else "")
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
        try:
            conn.request(self.command, path or "/", body=body, headers={"Host": target.netloc})
            response = conn.getresponse()
            data = response.read()
            content_type = response.getheader("Content-Type", "application/octet-stream")
            self._reply(response.status, data, content_type)
        except OSError:
            self._reply(502, b"upstream unreachable\n")
        finally:
            conn.close()


@pytest.fixture
def recording_proxy() -> Iterator[Callable[[dict[str, int]], RecordingProxy]]:
    """Start recording proxies on demand; every one is shut down at the end of the test."""
    proxies: list[tuple[RecordingProxy, threading.Thread]] = []

    def start(routes: dict[str, int]) -> RecordingProxy:
        proxy = RecordingProxy(routes)
        thread = threading.Thread(
            target=proxy.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        proxies.append((proxy, thread))
        return proxy

    try:
        yield start
    finally:
        for proxy, thread in proxies:
            proxy.shutdown()
            proxy.server_close()
            thread.join(timeout=5)


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections (via the backlog) but never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((LOOPBACK, 0))
        sock.listen(16)
        yield sock.getsockname()[1]
    finally:
        sock.close()


# --- the services one by one ---------------------------------------------------------------


def test_emoji_lists_and_finds(launcher: Launcher) -> None:
    emoji = launcher.start("emoji")
    launcher.wait_healthy(emoji)

    status, listed = get_json(emoji.port, "/list")
    assert status == 200
    assert 15 <= len(listed) <= 30
    assert {"shortcode": ":doughnut:", "unicode": "\N{DOUGHNUT}"} in listed
    assert all(set(item) == {"shortcode", "unicode"} for item in listed)
    assert len({item["shortcode"] for item in listed}) == len(listed)

    assert get_json(emoji.port, "/find?shortcode=%3Adoughnut%3A") == (
        200,
        {"shortcode": ":doughnut:", "unicode": "\N{DOUGHNUT}"},
    )
    assert get_json(emoji.port, "/find?shortcode=:pizza:")[1]["unicode"] == "\N{SLICE OF PIZZA}"
    assert get_json(emoji.port, "/find?shortcode=:no_such_emoji:")[0] == 404
    assert get_json(emoji.port, "/find")[0] == 400
    assert request(emoji.port, "/healthz")[0] == 200


def test_voting_counts_sorts_and_fails_doughnut(launcher: Launcher) -> None:
    voting = launcher.start("voting")
    launcher.wait_healthy(voting)

    assert get_json(voting.port, "/results") == (200, [])
    for choice in (":pizza:", ":taco:", ":taco:", ":ghost:", ":taco:", ":pizza:"):
        status, body = get_json(voting.port, vote_path("/vote", choice), "POST")
        assert status == 200, body
    status, body = get_json(voting.port, vote_path("/vote", ":doughnut:"), "POST")
    assert status == 500
    assert "error" in body
    assert get_json(voting.port, "/vote", "POST")[0] == 400
    assert request(voting.port, "/vote?choice=:pizza:")[0] == 405  # votes are POSTs

    assert get_json(voting.port, "/results") == (
        200,
        [
            {"shortcode": ":taco:", "votes": 3},
            {"shortcode": ":pizza:", "votes": 2},
            {"shortcode": ":ghost:", "votes": 1},
        ],
    )
    assert request(voting.port, "/healthz")[0] == 200


def test_web_api_and_page(launcher: Launcher) -> None:
    stack = start_stack(launcher)
    web = stack.web.port

    status, listed = get_json(web, "/api/list")
    assert status == 200
    assert listed == get_json(stack.emoji.port, "/list")[1]

    for choice in (":rocket:", ":rocket:", ":ghost:"):
        status, body = get_json(web, vote_path("/api/vote", choice))
        assert status == 200, body
    assert get_json(web, vote_path("/api/vote", ":doughnut:"))[0] == 500
    assert get_json(web, vote_path("/api/vote", ":no_such_emoji:"))[0] == 404
    assert get_json(web, "/api/vote")[0] == 400

    assert get_json(web, "/api/leaderboard") == (
        200,
        [
            {"shortcode": ":rocket:", "unicode": "\N{ROCKET}", "votes": 2},
            {"shortcode": ":ghost:", "unicode": "\N{GHOST}", "votes": 1},
        ],
    )
    # The doughnut and the unknown emoji reached voting not at all or as a failure.
    assert get_json(stack.voting.port, "/results")[1] == [
        {"shortcode": ":rocket:", "votes": 2},
        {"shortcode": ":ghost:", "votes": 1},
    ]

    status, page, content_type = request(web, "/")
    text = page.decode()
    assert status == 200
    assert content_type.startswith("text/html")
    assert "\N{DOUGHNUT}" in text
    assert 'href="/api/vote?choice=%3Adoughnut%3A"' in text
    assert "Leaderboard" in text
    assert "\N{ROCKET}" in text
    assert request(web, "/healthz")[0] == 200
    assert re.search(r"path=/api/vote\?choice=\S*doughnut\S* status=500", stack.web.log())


def test_web_reports_unreachable_and_slow_backends(
    launcher: Launcher, silent_listener: int
) -> None:
    web = launcher.start(
        "web",
        {
            "EMOJISVC_HOST": f"{LOOPBACK}:{silent_listener}",
            "VOTINGSVC_HOST": f"{LOOPBACK}:{free_port()}",
            "HTTP_CLIENT_TIMEOUT": "0.3",
        },
    )
    launcher.wait_healthy(web)
    started = time.monotonic()
    assert get_json(web.port, "/api/list")[0] == 504
    assert time.monotonic() - started < 3
    assert get_json(web.port, "/api/vote?choice=:pizza:")[0] == 504
    assert request(web.port, "/")[0] == 504
    assert "upstream_error upstream=emoji error=timeout" in web.log()


# --- vote-bot ------------------------------------------------------------------------------


def test_vote_bot_votes_show_up_in_leaderboard(launcher: Launcher) -> None:
    stack = start_stack(launcher)
    bot = launcher.start(
        "vote-bot", {"WEB_HOST": f"{LOOPBACK}:{stack.web.port}", "VOTE_RATE": "20"}
    )
    eventually(lambda: total_votes(stack.web.port) >= 5, 5.0, "the bot's votes")
    assert bot.proc.poll() is None
    assert "vote choice=:" in bot.log()
    assert "status=200" in bot.log()


def test_vote_bot_survives_a_missing_web(launcher: Launcher) -> None:
    web_port = free_port()
    bot = launcher.start("vote-bot", {"WEB_HOST": f"{LOOPBACK}:{web_port}", "VOTE_RATE": "20"})
    eventually(lambda: "error" in bot.log(), 5.0, "the bot to log a failed round")
    time.sleep(0.3)
    assert bot.proc.poll() is None
    assert bot.log().count("WARNING") <= 2  # it pauses after a failed round

    stack = start_stack(launcher, web_port=web_port)
    eventually(lambda: total_votes(stack.web.port) >= 1, 5.0, "votes once web is up")
    assert bot.proc.poll() is None


def test_vote_bot_goes_through_http_proxy(
    launcher: Launcher, recording_proxy: Callable[[dict[str, int]], RecordingProxy]
) -> None:
    stack = start_stack(launcher)
    proxy = recording_proxy({"web-svc.emojivoto:80": stack.web.port})
    # WEB_HOST left at its default, web-svc.emojivoto:80, which only the proxy can reach.
    bot = launcher.start("vote-bot", {"HTTP_PROXY": proxy.url, "VOTE_RATE": "20"})
    eventually(lambda: total_votes(stack.web.port) >= 2, 5.0, "votes through the proxy")

    seen = proxy.requests()
    targets = [target for _, target, _ in seen]
    assert all(method == "GET" for method, _, _ in seen)
    assert all(host.startswith("web-svc.emojivoto") for _, _, host in seen)
    assert any(
        t in ("http://web-svc.emojivoto/api/list", "http://web-svc.emojivoto:80/api/list")
        for t in targets
    )
    assert any(
        t.startswith("http://web-svc.emojivoto") and "/api/vote?choice=" in t for t in targets
    )
    assert "web=web-svc.emojivoto:80" in bot.log()


def test_vote_bot_respects_no_proxy(
    launcher: Launcher, recording_proxy: Callable[[dict[str, int]], RecordingProxy]
) -> None:
    stack = start_stack(launcher)
    proxy = recording_proxy({})
    launcher.start(
        "vote-bot",
        {
            "WEB_HOST": f"{LOOPBACK}:{stack.web.port}",
            "HTTP_PROXY": proxy.url,
            "NO_PROXY": f"localhost,{LOOPBACK}",
            "VOTE_RATE": "20",
        },
    )
    eventually(lambda: total_votes(stack.web.port) >= 2, 5.0, "votes bypassing the proxy")
    assert proxy.requests() == []


def test_web_calls_backends_through_http_proxy(
    launcher: Launcher, recording_proxy: Callable[[dict[str, int]], RecordingProxy]
) -> None:
    emoji = launcher.start("emoji")
    voting = launcher.start("voting")
    proxy = recording_proxy(
        {"emoji-svc.emojivoto:8080": emoji.port, "voting-svc.emojivoto:8080": voting.port}
    )
    # EMOJISVC_HOST and VOTINGSVC_HOST left at their defaults, reachable only by the proxy;
    # the lower-case spelling of the variable works as well as HTTP_PROXY.
    web = launcher.start("web", {"http_proxy": proxy.url})
    launcher.wait_healthy(emoji, voting, web)

    assert get_json(web.port, vote_path("/api/vote", ":sushi:"))[0] == 200
    assert get_json(web.port, vote_path("/api/vote", ":doughnut:"))[0] == 500
    assert get_json(web.port, "/api/leaderboard")[1] == [
        {"shortcode": ":sushi:", "unicode": "\N{SUSHI}", "votes": 1}
    ]
    seen = [(method, target) for method, target, _ in proxy.requests()]
    assert ("GET", "http://emoji-svc.emojivoto:8080/find?shortcode=:sushi:") in seen
    assert ("POST", "http://voting-svc.emojivoto:8080/vote?choice=:sushi:") in seen
    assert ("POST", "http://voting-svc.emojivoto:8080/vote?choice=:doughnut:") in seen
    assert ("GET", "http://voting-svc.emojivoto:8080/results") in seen


# --- process behaviour ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["emoji", "voting", "web", "vote-bot"])
def test_sigterm_exits_zero_quickly(launcher: Launcher, silent_listener: int, name: str) -> None:
    hung = f"{LOOPBACK}:{silent_listener}"
    service = launcher.start(name, {"WEB_HOST": hung, "EMOJISVC_HOST": hung})
    if name == "vote-bot":
        # Let the bot get a request in flight to the listener that never answers.
        eventually(lambda: "starting" in service.log(), 5.0, "the bot to start")
        time.sleep(0.3)
    else:
        launcher.wait_healthy(service)
        if name == "web":
            # A request stuck on the silent backend while the stop arrives.
            threading.Thread(
                target=lambda: _ignore_errors(lambda: request(service.port, "/api/list")),
                daemon=True,
            ).start()
            time.sleep(0.3)
    started = time.monotonic()
    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(timeout=2) == 0
    assert time.monotonic() - started < 2
    assert "stopped" in service.log()


def _ignore_errors(call: Callable[[], object]) -> None:
    with contextlib.suppress(OSError):
        call()


@pytest.mark.parametrize(
    ("name", "env"),
    [
        ("emoji", {"EMOJI_PORT": "not-a-port"}),
        ("voting", {"VOTING_PORT": "70000"}),
        ("web", {"VOTINGSVC_HOST": "http://voting/"}),
        ("vote-bot", {"VOTE_RATE": "0"}),
    ],
)
def test_bad_configuration_exits_2(launcher: Launcher, name: str, env: dict[str, str]) -> None:
    service = launcher.start(name, env)
    assert service.proc.wait(timeout=10) == 2
    assert "bad configuration" in service.log()
    assert next(iter(env)) in service.log()


def test_unknown_service_is_refused(launcher: Launcher) -> None:
    service = launcher.start("nonesuch")
    assert service.proc.wait(timeout=10) == 2
    assert "invalid choice" in service.log()

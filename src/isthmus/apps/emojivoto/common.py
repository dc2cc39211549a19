"""Plumbing shared by the emojivoto services.

Configuration from the environment, one-line logging to stdout, the outgoing
HTTP client (which honours `HTTP_PROXY`/`NO_PROXY` so a sidecar or the cluster's
service proxy can carry every call, and times every call out), and running a
service until SIGTERM or SIGINT asks it to stop.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from yarl import URL

from isthmus.apps.emojivoto import VERSION

DEFAULT_PORT = 8080
DEFAULT_POD_IP = "127.0.0.1"
DEFAULT_CLIENT_TIMEOUT = 3.0
SHUTDOWN_GRACE_SECONDS = 0.25
"""How long a stopping server waits for requests in flight (aiohttp waits this twice:
first for handlers to finish, then for them to be cancelled)."""


class ConfigError(Exception):
    """An environment variable holds a value the service cannot use."""


def env_str(name: str, default: str) -> str:
    """The variable's value with surrounding blanks removed, or `default` when unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or default


def env_port(name: str, default: int = DEFAULT_PORT) -> int:
    """A TCP port number (1-65535) from the environment."""
    raw = env_str(name, str(default))
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a port number, got {raw!r}") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"{name} must be between 1 and 65535, got {port}")
    return port


def env_positive_float(name: str, default: float) -> float:
    """A positive, finite number from the environment."""
    raw = env_str(name, repr(default))
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not 0 < value < float("inf"):
        raise ConfigError(f"{name} must be a positive number, got {raw!r}")
    return value


def env_authority(name: str, default: str) -> str:
    """A `host:port` (or bare host) to call over plain HTTP, as the service env vars give it."""
    raw = env_str(name, default)
    if "://" in raw or "/" in raw or "@" in raw or any(ch.isspace() for ch in raw):
        raise ConfigError(f"{name} must be host or host:port, got {raw!r}")
    try:
        url = URL(f"http://{raw}/")
    except ValueError:
        raise ConfigError(f"{name} must be host or host:port, got {raw!r}") from None
    if not url.host:
        raise ConfigError(f"{name} must be host or host:port, got {raw!r}")
    return raw


def pod_ip() -> str:
    """The address the service binds: `POD_IP`, which the cluster sets for every pod."""
    return env_str("POD_IP", DEFAULT_POD_IP)


def client_timeout_seconds() -> float:
    """The total time any outgoing call may take (`HTTP_CLIENT_TIMEOUT`, default 3 s)."""
    return env_positive_float("HTTP_CLIENT_TIMEOUT", DEFAULT_CLIENT_TIMEOUT)


def setup_logging(service: str) -> logging.Logger:
    """Send every log record to stdout, one line each, and return the service's logger."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    return logging.getLogger(f"emojivoto.{service}")


def proxy_summary() -> str:
    """Which HTTP proxy outgoing calls use, for the startup log line (credentials removed)."""
    raw = os.environ.get("http_proxy") or os.environ.get("HTTP_PROXY") or ""
    if not raw.strip():
        return "none"
    try:
        url = URL(raw.strip())
    except ValueError:
        return "unparseable"
    if not url.host:
        return "unparseable"
    no_proxy = (os.environ.get("no_proxy") or os.environ.get("NO_PROXY") or "").strip()
    return f"{url.with_user(None)} no_proxy={no_proxy or '-'}"


def new_client_session(service: str, timeout: float) -> aiohttp.ClientSession:
    """An HTTP/1.1 client that takes its proxy from the environment and times out every call.

    `trust_env=True` makes aiohttp route each plain-HTTP request through `HTTP_PROXY`
    (or `http_proxy`) in absolute form, except for hosts that `NO_PROXY` lists.
    `POD_IP`, when the cluster sets it, is also the source address of every
    outgoing connection, as a pod's packets carry its IP: a sidecar's tap then
    shows the caller's pod, and the cluster tells the caller's cluster by it.
    """
    source = os.environ.get("POD_IP", "").strip()
    connector = aiohttp.TCPConnector(local_addr=(source, 0)) if source else None
    return aiohttp.ClientSession(
        trust_env=True,
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 2.0)),
        headers={"User-Agent": f"emojivoto-{service}/{VERSION}"},
    )


_dumps = functools.partial(json.dumps, ensure_ascii=False)


def json_response(data: object, status: int = 200) -> web.Response:
    """A JSON response that keeps emoji readable (UTF-8 rather than `\\u` escapes)."""
    return web.json_response(data, status=status, dumps=_dumps)


def describe_error(exc: BaseException) -> str:
    """A short, single-line description of a failed outgoing call."""
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class UpstreamError(Exception):
    """An outgoing call failed before a usable reply came back."""

    def __init__(self, upstream: str, detail: str, *, timed_out: bool = False) -> None:
        super().__init__(f"{upstream}: {detail}")
        self.upstream = upstream
        self.detail = detail
        self.timed_out = timed_out


async def call_json(
    session: aiohttp.ClientSession,
    method: str,
    upstream: str,
    url: URL,
    params: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """Make one outgoing call; its status and its body decoded as JSON (None if not JSON).

    Raises `UpstreamError` when no reply arrives (refused, reset, timed out).
    """
    try:
        async with session.request(method, url, params=params) as response:
            status = response.status
            body = await response.read()
    except TimeoutError:
        raise UpstreamError(upstream, "timeout", timed_out=True) from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(upstream, describe_error(exc)) from None
    try:
        data: Any = json.loads(body) if body else None
    except ValueError:
        data = None
    return status, data


def service_url(authority: str, path: str) -> URL:
    """`http://<authority><path>`, for calling another service by its `host:port`."""
    return URL(f"http://{authority}").with_path(path)


class AccessLogger(AbstractAccessLogger):
    """One line per request served, leaving out the probes' `/healthz` calls."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if request.path == "/healthz":
            return
        self.logger.info(
            "request method=%s path=%s status=%d duration_ms=%.1f",
            request.method,
            request.path_qs,
            response.status,
            time * 1000.0,
        )


async def healthz(_request: web.Request) -> web.Response:
    """The readiness and liveness endpoint every server offers."""
    return web.Response(text="ok\n")


async def serve(
    app: web.Application, host: str, port: int, log: logging.Logger, stop: asyncio.Event
) -> None:
    """Serve `app` on `host:port` until `stop` is set, then close quickly."""
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(
        app,
        access_log=log,
        access_log_class=AccessLogger,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        log.info("listening address=%s:%d", host, port)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()


def run(service: str, main: Callable[[logging.Logger, asyncio.Event], Awaitable[Any]]) -> int:
    """Run `main` until it returns or SIGTERM/SIGINT sets its stop event; the exit status.

    0 after a clean stop, 2 when the configuration is unusable, 1 when the service
    cannot start (for example, its address is taken).
    """
    log = setup_logging(service)

    async def supervise() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await main(log, stop)

    try:
        asyncio.run(supervise())
    except ConfigError as exc:
        log.error("bad configuration: %s", exc)
        return 2
    except OSError as exc:
        log.error("cannot start: %s", describe_error(exc))
        return 1
    log.info("stopped")
    return 0

"""The `web` service: the page people vote on and the JSON API behind it.

`GET /` renders the emoji grid (each emoji a link that votes for it) and the
leaderboard. `GET /api/list` relays the catalogue from `emoji`; `GET /api/vote?choice=`
checks the shortcode with `emoji` and records the vote with `voting` (a 500 from
`voting` comes back as a 500); `GET /api/leaderboard` joins `voting`'s results with
the emoji characters. Listens on `$POD_IP:$WEB_PORT` (default 8080) and calls
`$EMOJISVC_HOST` and `$VOTINGSVC_HOST` (through `HTTP_PROXY` when one is set).
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from isthmus.apps.emojivoto import VERSION
from isthmus.apps.emojivoto.common import (
    UpstreamError,
    call_json,
    client_timeout_seconds,
    env_authority,
    env_port,
    json_response,
    new_client_session,
    pod_ip,
    proxy_summary,
    run,
    serve,
    service_url,
)

SERVICE = "web"
DEFAULT_EMOJI_HOST = "emoji-svc.emojivoto:8080"
DEFAULT_VOTING_HOST = "voting-svc.emojivoto:8080"


@dataclass(frozen=True)
class Settings:
    """Where the backends are and how long a call to them may take."""

    emoji_host: str
    voting_host: str
    timeout: float


SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
CLIENT: web.AppKey[aiohttp.ClientSession] = web.AppKey("client", aiohttp.ClientSession)
LOG: web.AppKey[logging.Logger] = web.AppKey("log", logging.Logger)


def _emoji_list(data: Any) -> list[dict[str, str]]:
    """The catalogue from an `emoji` reply, checked for shape."""
    if not isinstance(data, list):
        raise UpstreamError("emoji", "reply to /list is not a list")
    emoji: list[dict[str, str]] = []
    for item in data:
        if not (
            isinstance(item, dict)
            and isinstance(item.get("shortcode"), str)
            and isinstance(item.get("unicode"), str)
        ):
            raise UpstreamError("emoji", "reply to /list has a malformed entry")
        emoji.append({"shortcode": item["shortcode"], "unicode": item["unicode"]})
    return emoji


def _results(data: Any) -> list[tuple[str, int]]:
    """The standings from a `voting` reply, checked for shape."""
    if not isinstance(data, list):
        raise UpstreamError("voting", "reply to /results is not a list")
    standings: list[tuple[str, int]] = []
    for item in data:
        if not (
            isinstance(item, dict)
            and isinstance(item.get("shortcode"), str)
            and isinstance(item.get("votes"), int)
        ):
            raise UpstreamError("voting", "reply to /results has a malformed entry")
        standings.append((item["shortcode"], item["votes"]))
    return standings


async def fetch_emoji(app: web.Application) -> list[dict[str, str]]:
    """The catalogue, asked of `emoji`."""
    url = service_url(app[SETTINGS].emoji_host, "/list")
    status, data = await call_json(app[CLIENT], "GET", "emoji", url)
    if status != 200:
        raise UpstreamError("emoji", f"/list answered {status}")
    return _emoji_list(data)


async def fetch_leaderboard(app: web.Application) -> list[dict[str, object]]:
    """`voting`'s standings, each joined with its character from `emoji` ("" if unknown)."""
    url = service_url(app[SETTINGS].voting_host, "/results")
    (status, data), emoji = await asyncio.gather(
        call_json(app[CLIENT], "GET", "voting", url), fetch_emoji(app)
    )
    if status != 200:
        raise UpstreamError("voting", f"/results answered {status}")
    chars = {item["shortcode"]: item["unicode"] for item in emoji}
    return [
        {"shortcode": shortcode, "unicode": chars.get(shortcode, ""), "votes": votes}
        for shortcode, votes in _results(data)
    ]


def upstream_failure(app: web.Application, exc: UpstreamError) -> web.Response:
    """Log a failed backend call and answer 504 (timed out) or 502 (anything else)."""
    app[LOG].warning("upstream_error upstream=%s error=%s", exc.upstream, exc.detail)
    status = 504 if exc.timed_out else 502
    return json_response({"error": f"{exc.upstream} unavailable: {exc.detail}"}, status=status)


async def api_list(request: web.Request) -> web.Response:
    """`GET /api/list`: the catalogue."""
    try:
        return json_response(await fetch_emoji(request.app))
    except UpstreamError as exc:
        return upstream_failure(request.app, exc)


async def api_leaderboard(request: web.Request) -> web.Response:
    """`GET /api/leaderboard`: `[{"shortcode", "unicode", "votes"}]`, most votes first."""
    try:
        return json_response(await fetch_leaderboard(request.app))
    except UpstreamError as exc:
        return upstream_failure(request.app, exc)


async def api_vote(request: web.Request) -> web.Response:
    """`GET /api/vote?choice=:x:`: vote for a known emoji."""
    app = request.app
    choice = request.query.get("choice", "")
    if not choice:
        return json_response({"error": "missing choice"}, status=400)
    settings, client = app[SETTINGS], app[CLIENT]
    try:
        find_url = service_url(settings.emoji_host, "/find")
        status, found = await call_json(client, "GET", "emoji", find_url, {"shortcode": choice})
        if status == 404:
            return json_response({"error": "unknown emoji", "shortcode": choice}, status=404)
        if status != 200 or not isinstance(found, dict):
            raise UpstreamError("emoji", f"/find answered {status}")
        vote_url = service_url(settings.voting_host, "/vote")
        status, _ = await call_json(client, "POST", "voting", vote_url, {"choice": choice})
    except UpstreamError as exc:
        return upstream_failure(app, exc)
    if status == 500:
        return json_response({"error": "voting failed", "shortcode": choice}, status=500)
    if not 200 <= status < 300:
        return upstream_failure(app, UpstreamError("voting", f"/vote answered {status}"))
    return json_response({"shortcode": choice, "unicode": found.get("unicode", ""), "ok": True})


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>emojivoto</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, 4em); gap: .5em; }}
.grid a {{ font-size: 2.5em; text-decoration: none; text-align: center; }}
td {{ padding: .2em 1em; }}
</style>
</head>
<body>
<h1>emojivoto</h1>
<p>Vote for your favourite emoji.</p>
<div class="grid">
{grid}
</div>
<h2>Leaderboard</h2>
{leaderboard}
<p><small>web {version}</small></p>
</body>
</html>
"""


def render_page(emoji: list[dict[str, str]], leaderboard: list[dict[str, object]] | None) -> str:
    """The page: a voting link per emoji, then the standings (or a note if unavailable)."""
    grid = "\n".join(
        f'<a href="/api/vote?choice={quote(item["shortcode"], safe="")}" '
        f'title="{html.escape(item["shortcode"])}">{html.escape(item["unicode"])}</a>'
        for item in emoji
    )
    if leaderboard is None:
        board = "<p>The leaderboard is unavailable right now.</p>"
    elif not leaderboard:
        board = "<p>No votes yet.</p>"
    else:
        rows = "\n".join(
            f"<tr><td>{html.escape(str(row['unicode']))}</td>"
            f"<td>{html.escape(str(row['shortcode']))}</td><td>{row['votes']}</td></tr>"
            for row in leaderboard
        )
        board = f"<table>\n{rows}\n</table>"
    return PAGE.format(grid=grid, leaderboard=board, version=html.escape(VERSION))


async def index(request: web.Request) -> web.Response:
    """`GET /`: the page (502 if the catalogue cannot be had)."""
    app = request.app
    try:
        emoji = await fetch_emoji(app)
    except UpstreamError as exc:
        app[LOG].warning("upstream_error upstream=%s error=%s", exc.upstream, exc.detail)
        return web.Response(
            status=504 if exc.timed_out else 502,
            text="<!doctype html><p>The emoji service is unavailable.</p>\n",
            content_type="text/html",
        )
    leaderboard: list[dict[str, object]] | None
    try:
        leaderboard = await fetch_leaderboard(app)
    except UpstreamError as exc:
        app[LOG].warning("upstream_error upstream=%s error=%s", exc.upstream, exc.detail)
        leaderboard = None
    return web.Response(text=render_page(emoji, leaderboard), content_type="text/html")


async def _client_context(app: web.Application) -> AsyncIterator[None]:
    """Open the outgoing client with the app and close it with the app."""
    app[CLIENT] = new_client_session(SERVICE, app[SETTINGS].timeout)
    yield
    await app[CLIENT].close()


def build_app(settings: Settings, log: logging.Logger) -> web.Application:
    """The web service's routes (serving adds `/healthz`)."""
    app = web.Application()
    app[SETTINGS] = settings
    app[LOG] = log
    app.cleanup_ctx.append(_client_context)
    app.router.add_get("/", index)
    app.router.add_get("/api/list", api_list)
    app.router.add_get("/api/vote", api_vote)
    app.router.add_get("/api/leaderboard", api_leaderboard)
    return app


def settings_from_env() -> Settings:
    """The backends from `EMOJISVC_HOST`, `VOTINGSVC_HOST` and `HTTP_CLIENT_TIMEOUT`."""
    return Settings(
        emoji_host=env_authority("EMOJISVC_HOST", DEFAULT_EMOJI_HOST),
        voting_host=env_authority("VOTINGSVC_HOST", DEFAULT_VOTING_HOST),
        timeout=client_timeout_seconds(),
    )


async def _main(log: logging.Logger, stop: asyncio.Event) -> None:
    settings = settings_from_env()
    host, port = pod_ip(), env_port("WEB_PORT")
    log.info(
        "starting emoji=%s voting=%s proxy=%s timeout_s=%g",
        settings.emoji_host,
        settings.voting_host,
        proxy_summary(),
        settings.timeout,
    )
    await serve(build_app(settings, log), host, port, log, stop)


def main() -> int:
    """Run the web service until SIGTERM; the exit status."""
    return run(SERVICE, _main)

"""The `vote-bot` service: votes through `web` forever, to give the mesh live traffic.

Each round asks `http://$WEB_HOST/api/list` for the catalogue, picks an emoji at
random (so `:doughnut:`, whose votes fail, now and then) and votes for it with
`GET http://$WEB_HOST/api/vote?choice=...`, at `$VOTE_RATE` votes per second. It
logs one line per vote and never gives up: a failed round is logged and followed
by a short pause. Calls go through `HTTP_PROXY` when one is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass

import aiohttp

from isthmus.apps.emojivoto.common import (
    UpstreamError,
    call_json,
    client_timeout_seconds,
    env_authority,
    env_positive_float,
    new_client_session,
    proxy_summary,
    run,
    service_url,
)

SERVICE = "vote-bot"
DEFAULT_WEB_HOST = "web-svc.emojivoto:80"
DEFAULT_VOTE_RATE = 2.0
ERROR_PAUSE_SECONDS = 1.0
"""How long the bot waits after a round that got no usable answer."""


@dataclass(frozen=True)
class Settings:
    """Where `web` is, how often to vote and how long a call may take."""

    web_host: str
    rate: float
    timeout: float


def settings_from_env() -> Settings:
    """The bot's settings from `WEB_HOST`, `VOTE_RATE` and `HTTP_CLIENT_TIMEOUT`."""
    return Settings(
        web_host=env_authority("WEB_HOST", DEFAULT_WEB_HOST),
        rate=env_positive_float("VOTE_RATE", DEFAULT_VOTE_RATE),
        timeout=client_timeout_seconds(),
    )


async def vote_once(
    session: aiohttp.ClientSession, settings: Settings, log: logging.Logger, rng: random.Random
) -> bool:
    """One round: list, pick, vote, log. False when the round got no usable answer."""
    try:
        status, data = await call_json(
            session, "GET", "web", service_url(settings.web_host, "/api/list")
        )
        shortcodes = [
            item["shortcode"]
            for item in (data if isinstance(data, list) else [])
            if isinstance(item, dict) and isinstance(item.get("shortcode"), str)
        ]
        if status != 200 or not shortcodes:
            log.warning("list_failed status=%d", status)
            return False
        choice = rng.choice(shortcodes)
        started = time.monotonic()
        status, _ = await call_json(
            session, "GET", "web", service_url(settings.web_host, "/api/vote"), {"choice": choice}
        )
    except UpstreamError as exc:
        log.warning("error error=%s", exc.detail)
        return False
    elapsed_ms = (time.monotonic() - started) * 1000.0
    log.info("vote choice=%s status=%d duration_ms=%.1f", choice, status, elapsed_ms)
    return True


async def vote_forever(settings: Settings, log: logging.Logger) -> None:
    """Vote at `settings.rate` per second until cancelled."""
    rng = random.Random()
    interval = 1.0 / settings.rate
    loop = asyncio.get_running_loop()
    async with new_client_session(SERVICE, settings.timeout) as session:
        next_at = loop.time()
        while True:
            try:
                ok = await vote_once(session, settings, log, rng)
            except Exception as exc:  # keep voting whatever goes wrong
                log.error("unexpected_error error=%s: %s", type(exc).__name__, exc)
                ok = False
            now = loop.time()
            # Keep the rate steady but never burst to make up for a slow round; after a
            # failed round, pause.
            next_at = max(next_at + interval, now) if ok else now + ERROR_PAUSE_SECONDS
            await asyncio.sleep(next_at - now)


async def _main(log: logging.Logger, stop: asyncio.Event) -> None:
    settings = settings_from_env()
    log.info(
        "starting web=%s rate_per_s=%g proxy=%s timeout_s=%g",
        settings.web_host,
        settings.rate,
        proxy_summary(),
        settings.timeout,
    )
    voting = asyncio.create_task(vote_forever(settings, log))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({voting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    log.info("stopping")
    for task in (voting, stopping):
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await voting


def main() -> int:
    """Run the vote bot until SIGTERM; the exit status."""
    return run(SERVICE, _main)

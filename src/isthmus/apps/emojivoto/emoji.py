"""The `emoji` service: the catalogue of emoji that can be voted for.

`GET /list` returns every emoji as `{"shortcode", "unicode"}`; `GET /find?shortcode=`
returns one or 404. Listens on `$POD_IP:$EMOJI_PORT` (default 8080).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TypedDict

from aiohttp import web

from isthmus.apps.emojivoto.common import env_port, json_response, pod_ip, run, serve

SERVICE = "emoji"


class Emoji(TypedDict):
    """One entry of the catalogue."""

    shortcode: str
    unicode: str


CATALOGUE: tuple[Emoji, ...] = tuple(
    Emoji(shortcode=shortcode, unicode=char)
    for shortcode, char in (
        (":doughnut:", "\N{DOUGHNUT}"),
        (":pizza:", "\N{SLICE OF PIZZA}"),
        (":taco:", "\N{TACO}"),
        (":sushi:", "\N{SUSHI}"),
        (":avocado:", "\N{AVOCADO}"),
        (":rocket:", "\N{ROCKET}"),
        (":ghost:", "\N{GHOST}"),
        (":robot:", "\N{ROBOT FACE}"),
        (":unicorn:", "\N{UNICORN FACE}"),
        (":octopus:", "\N{OCTOPUS}"),
        (":cactus:", "\N{CACTUS}"),
        (":sunflower:", "\N{SUNFLOWER}"),
        (":rainbow:", "\N{RAINBOW}"),
        (":zap:", "\N{HIGH VOLTAGE SIGN}"),
        (":fire:", "\N{FIRE}"),
        (":tada:", "\N{PARTY POPPER}"),
        (":joy:", "\N{FACE WITH TEARS OF JOY}"),
        (":sunglasses:", "\N{SMILING FACE WITH SUNGLASSES}"),
        (":thinking:", "\N{THINKING FACE}"),
        (":nerd_face:", "\N{NERD FACE}"),
        (":penguin:", "\N{PENGUIN}"),
    )
)
"""Every emoji the demo offers, in display order."""

BY_SHORTCODE: dict[str, Emoji] = {emoji["shortcode"]: emoji for emoji in CATALOGUE}


async def list_emoji(_request: web.Request) -> web.Response:
    """`GET /list`: the whole catalogue."""
    return json_response(list(CATALOGUE))


async def find_emoji(request: web.Request) -> web.Response:
    """`GET /find?shortcode=:x:`: one emoji, 404 when unknown, 400 without a shortcode."""
    shortcode = request.query.get("shortcode", "")
    if not shortcode:
        return json_response({"error": "missing shortcode"}, status=400)
    emoji = BY_SHORTCODE.get(shortcode)
    if emoji is None:
        return json_response({"error": "unknown emoji", "shortcode": shortcode}, status=404)
    return json_response(emoji)


def build_app() -> web.Application:
    """The emoji service's routes (serving adds `/healthz`)."""
    app = web.Application()
    app.router.add_get("/list", list_emoji)
    app.router.add_get("/find", find_emoji)
    return app


async def _main(log: logging.Logger, stop: asyncio.Event) -> None:
    host, port = pod_ip(), env_port("EMOJI_PORT")
    log.info("starting emoji=%d", len(CATALOGUE))
    await serve(build_app(), host, port, log, stop)


def main() -> int:
    """Run the emoji service until SIGTERM; the exit status."""
    return run(SERVICE, _main)

"""The `voting` service: counts votes in memory and reports the standings.

`POST /vote?choice=:x:` counts one vote; a vote for `:doughnut:` always fails with
HTTP 500, on purpose, so that the mesh's stats show a success rate under 100%.
`GET /results` returns `[{"shortcode", "votes"}]`, most votes first. Listens on
`$POD_IP:$VOTING_PORT` (default 8080).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from aiohttp import web

from isthmus.apps.emojivoto.common import env_port, json_response, pod_ip, run, serve

SERVICE = "voting"
FAILING_CHOICE = ":doughnut:"
"""The one shortcode whose votes the service refuses with a 500."""
MAX_CHOICE_LENGTH = 64

TALLY: web.AppKey[Counter[str]] = web.AppKey("tally", Counter)


async def vote(request: web.Request) -> web.Response:
    """`POST /vote?choice=:x:`: count one vote for `choice`."""
    choice = request.query.get("choice", "")
    if not choice or len(choice) > MAX_CHOICE_LENGTH:
        return json_response({"error": "choice must be a shortcode such as :pizza:"}, status=400)
    if choice == FAILING_CHOICE:
        return json_response({"error": f"votes for {FAILING_CHOICE} always fail"}, status=500)
    tally = request.app[TALLY]
    tally[choice] += 1
    return json_response({"shortcode": choice, "votes": tally[choice]})


def standings(tally: Counter[str]) -> list[dict[str, object]]:
    """The results, most votes first and shortcodes alphabetical among equals."""
    ordered = sorted(tally.items(), key=lambda item: (-item[1], item[0]))
    return [{"shortcode": shortcode, "votes": votes} for shortcode, votes in ordered]


async def results(request: web.Request) -> web.Response:
    """`GET /results`: every shortcode voted for, with its count."""
    return json_response(standings(request.app[TALLY]))


def build_app() -> web.Application:
    """The voting service's routes and its (empty) tally (serving adds `/healthz`)."""
    app = web.Application()
    app[TALLY] = Counter()
    app.router.add_post("/vote", vote)
    app.router.add_get("/results", results)
    return app


async def _main(log: logging.Logger, stop: asyncio.Event) -> None:
    host, port = pod_ip(), env_port("VOTING_PORT")
    log.info("starting failing_choice=%s", FAILING_CHOICE)
    await serve(build_app(), host, port, log, stop)


def main() -> int:
    """Run the voting service until SIGTERM; the exit status."""
    return run(SERVICE, _main)

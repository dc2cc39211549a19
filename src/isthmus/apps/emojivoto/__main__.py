"""`python -m isthmus.apps.emojivoto web|emoji|voting|vote-bot` runs one emojivoto service."""

from __future__ import annotations

import argparse
import sys

from isthmus.apps.emojivoto import SERVICES


def main(argv: list[str] | None = None) -> int:
    """Run the service the command line names until SIGTERM; the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m isthmus.apps.emojivoto",
        description="Run one service of the emojivoto demo (configured from the environment).",
    )
    parser.add_argument("service", choices=SERVICES)
    service = parser.parse_args(argv).service
    if service == "emoji":
        from isthmus.apps.emojivoto import emoji

        return emoji.main()
    if service == "voting":
        from isthmus.apps.emojivoto import voting

        return voting.main()
    if service == "web":
        from isthmus.apps.emojivoto import web

        return web.main()
    from isthmus.apps.emojivoto import vote_bot

    return vote_bot.main()


if __name__ == "__main__":
    sys.exit(main())

"""The `isthmus` executable.

`isthmus proxy` — the sidecar in every meshed pod — starts without loading
the rest of the CLI (typer, rich, the cluster's components), so that each
proxy stays small; every other command goes to `isthmus.cli.main`.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["proxy"]:
        from isthmus.cli.proxy import run

        run()
        return
    from isthmus.cli.main import main as full

    full()

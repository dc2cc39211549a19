"""emojivoto: the four-service demo application that isthmus meshes in its walkthrough.

`emoji` serves the emoji catalogue, `voting` counts votes, `web` serves the page and
JSON API that joins the two, and `vote-bot` votes through `web` forever. Each runs on
its own with `python -m isthmus.apps.emojivoto <service>`; see `deploy/emojivoto.yml`.
These modules are workloads, not mesh code: they import nothing from isthmus outside
`isthmus.apps`.
"""

SERVICES: tuple[str, ...] = ("web", "emoji", "voting", "vote-bot")
"""The service names `python -m isthmus.apps.emojivoto` accepts."""

VERSION = "v11"
"""The version the manifests label the demo with and the services report."""

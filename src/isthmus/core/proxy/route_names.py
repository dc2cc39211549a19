"""Route names for per-route metrics, derived from requests (isthmus has no ServiceProfiles).

linkerd2-proxy labels its route metrics with the name of a ServiceProfile
route (`rt_route`). isthmus derives the name from the request itself:
``"<METHOD> <path>"``, with the query string (and any fragment) removed and
every path segment that looks like an id replaced by ``{id}``, so
``GET /api/vote/1234?choice=x`` and ``GET /api/vote/987`` are one route,
``GET /api/vote/{id}``. A segment is an id when it is all ASCII digits, a
UUID (8-4-4-4-12 hex digits), or a hex string of 8 characters or more.

`RouteNamer` bounds the cardinality: it admits at most `MAX_ROUTES` distinct
names (per direction and destination, one namer each); requests of any
other route are counted as `OTHER_ROUTE`. Admitted names stay admitted.

Promises:

* pure: strings in, strings out, no I/O;
* a name is never empty: an empty path is ``/``; an absolute-form target
  (``http://host:port/path``) is named by its path; ``*`` stays ``*``;
* at most `limit` distinct names come out of one `RouteNamer`, besides
  `OTHER_ROUTE`.
"""

from __future__ import annotations

import re

__all__ = [
    "ID_SEGMENT",
    "MAX_ROUTES",
    "OTHER_ROUTE",
    "RouteNamer",
    "is_id_segment",
    "route_name",
    "route_path",
]

MAX_ROUTES = 100
OTHER_ROUTE = "[OTHER]"
ID_SEGMENT = "{id}"

_ID = re.compile(r"[0-9]+|[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|[0-9a-fA-F]{8,}",
                 re.ASCII)
_fullmatch = _ID.fullmatch


def is_id_segment(segment: str) -> bool:
    """Whether a path segment looks like an id: digits, a UUID, or 8+ hex characters."""
    return _fullmatch(segment) is not None


def route_path(target: str) -> str:
    """The path part of a request target, without query or fragment, ids replaced by ``{id}``."""
    end = len(target)
    for sep in ("?", "#"):
        i = target.find(sep)
        if 0 <= i < end:
            end = i
    path = target[:end]
    if path[:1] != "/":
        if path == "*":
            return path
        scheme = path.find("://")
        if scheme < 0:
            return "/"  # an authority form (CONNECT) or something unparseable: no path
        slash = path.find("/", scheme + 3)
        path = path[slash:] if slash >= 0 else "/"
    if path == "/":
        return path
    segments = path.split("/")
    changed = False
    for i, segment in enumerate(segments):
        if segment and _fullmatch(segment) is not None:
            segments[i] = ID_SEGMENT
            changed = True
    return "/".join(segments) if changed else path


def route_name(method: str, target: str) -> str:
    """``"<METHOD> <path>"`` (see `route_path`)."""
    return f"{method} {route_path(target)}"


class RouteNamer:
    """The route names of one (direction, destination): at most `limit`, then `OTHER_ROUTE`."""

    __slots__ = ("limit", "names")

    def __init__(self, limit: int = MAX_ROUTES) -> None:
        if limit < 0:
            raise ValueError(f"a route limit cannot be negative: {limit}")
        self.limit = limit
        self.names: set[str] = set()

    def __repr__(self) -> str:
        return f"<RouteNamer {len(self.names)}/{self.limit} routes>"

    def __len__(self) -> int:
        return len(self.names)

    def name(self, method: str, target: str) -> str:
        """The `rt_route` label of a request: its route name, or `OTHER_ROUTE` once the limit is reached."""
        name = route_name(method, target)
        names = self.names
        if name in names:
            return name
        if len(names) < self.limit:
            names.add(name)
            return name
        return OTHER_ROUTE

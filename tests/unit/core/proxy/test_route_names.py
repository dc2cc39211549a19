"""Route names derived from requests, and the bound on how many one destination gets."""

from __future__ import annotations

import pytest

from isthmus.core.proxy.route_names import (
    ID_SEGMENT,
    MAX_ROUTES,
    OTHER_ROUTE,
    RouteNamer,
    is_id_segment,
    route_name,
    route_path,
)


@pytest.mark.parametrize("segment", [
    "0", "1234", "00000000000000000000001",
    "123e4567-e89b-12d3-a456-426614174000", "123E4567-E89B-12D3-A456-426614174000",
    "deadbeef", "DEADBEEF", "0123456789abcdef", "5f3a9c2e1b7d",
])
def test_ids(segment: str) -> None:
    assert is_id_segment(segment)


@pytest.mark.parametrize("segment", [
    "", "api", "v1", "list", "facade", "abcdef1", "deadbeefx", "12ab-34",
    "123e4567-e89b-12d3-a456-42661417400",   # one hex digit short of a UUID
    "123e4567e89b-12d3-a456-426614174000-",  # hex and dashes, not a UUID
    "١٢٣",                                    # Arabic-Indic digits: not ASCII
    "12.5", "-1",
])
def test_not_ids(segment: str) -> None:
    assert not is_id_segment(segment)


@pytest.mark.parametrize(("target", "path"), [
    ("/", "/"),
    ("/api/list", "/api/list"),
    ("/api/list?limit=10", "/api/list"),
    ("/api/list?", "/api/list"),
    ("/api/list#top", "/api/list"),
    ("/api/vote/1234", f"/api/vote/{ID_SEGMENT}"),
    ("/api/vote/1234/", f"/api/vote/{ID_SEGMENT}/"),
    ("/users/42/orders/123e4567-e89b-12d3-a456-426614174000?full=1",
     f"/users/{ID_SEGMENT}/orders/{ID_SEGMENT}"),
    ("/blob/5f3a9c2e1b7d/raw", f"/blob/{ID_SEGMENT}/raw"),
    ("/v1/facade", "/v1/facade"),
    ("//double//slash", "//double//slash"),
    ("?only=query", "/"),
    ("", "/"),
    ("http://web-svc.emojivoto:80/api/vote/7?x=1", f"/api/vote/{ID_SEGMENT}"),
    ("http://web-svc.emojivoto:80", "/"),
    ("http://web-svc.emojivoto:80?x=1", "/"),
    ("*", "*"),
    ("web-svc.emojivoto:443", "/"),  # authority form (CONNECT): no path
])
def test_route_path(target: str, path: str) -> None:
    assert route_path(target) == path


def test_route_name_is_method_and_path() -> None:
    assert route_name("GET", "/api/vote/1234?choice=x") == "GET /api/vote/{id}"
    assert route_name("POST", "/api/vote") == "POST /api/vote"
    assert route_name("OPTIONS", "*") == "OPTIONS *"


def test_ids_of_one_shape_are_one_route() -> None:
    namer = RouteNamer()
    names = {namer.name("GET", f"/api/vote/{i}?n={i}") for i in range(500)}
    names |= {namer.name("GET", f"/api/vote/{i:032x}") for i in range(500)}
    assert names == {"GET /api/vote/{id}"}
    assert len(namer) == 1


def test_routes_beyond_the_limit_are_other() -> None:
    namer = RouteNamer()
    assert namer.limit == MAX_ROUTES == 100
    first = [namer.name("GET", f"/page-{i}") for i in range(MAX_ROUTES)]
    assert first == [f"GET /page-{i}" for i in range(MAX_ROUTES)]
    assert namer.name("GET", "/page-100") == OTHER_ROUTE == "[OTHER]"
    assert namer.name("POST", "/page-0") == OTHER_ROUTE  # another method is another route
    # Routes admitted before the limit keep their names.
    assert namer.name("GET", "/page-0?again=1") == "GET /page-0"
    assert len(namer) == MAX_ROUTES


def test_a_zero_limit_names_everything_other_and_a_negative_one_is_refused() -> None:
    assert RouteNamer(0).name("GET", "/") == OTHER_ROUTE
    with pytest.raises(ValueError, match="a route limit cannot be negative: -1"):
        RouteNamer(-1)

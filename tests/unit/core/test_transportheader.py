"""The transport header a proxy sends first on connections to other proxies."""

import pytest

from isthmus.core import transportheader as th


def test_round_trip_local_and_remote() -> None:
    for header in (th.local("http", 8080), th.local("opaque", 5432),
                   th.remote("http", "web-svc.emojivoto.svc.cluster.local:80")):
        parsed, rest = th.split(header.encode() + b"GET / HTTP/1.1\r\n")  # type: ignore[misc]
        assert parsed == header
        assert rest == b"GET / HTTP/1.1\r\n"


def test_partial_header_waits_for_more() -> None:
    assert th.split(b"isthmus/1 ht") is None
    assert th.split(b"isth") is None


def test_plain_client_has_no_header() -> None:
    assert th.split(b"GET / HTTP/1.1\r\n") == (None, b"GET / HTTP/1.1\r\n")
    assert th.split(b"i") is None  # could still become the magic
    assert th.split(b"ix") == (None, b"ix")


@pytest.mark.parametrize(("raw", "message"), [
    (b"isthmus/1 grpc 80\n", "unknown protocol 'grpc'"),
    (b"isthmus/1 http 0\n", "port 0 out of range"),
    (b"isthmus/1 http 70000\n", "port 70000 out of range"),
    (b"isthmus/1 http web-svc\n", "bad authority 'web-svc'"),
    (b"isthmus/1 http\n", "malformed transport header"),
    (b"isthmus/1 " + b"a" * 400, "longer than"),
])
def test_malformed_headers_say_why(raw: bytes, message: str) -> None:
    with pytest.raises(th.TransportHeaderError, match=message):
        th.split(raw)

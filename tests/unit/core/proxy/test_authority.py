"""Authorities (host[:port], Service names), canonical forms and request targets."""

from __future__ import annotations

import pytest

from isthmus.core.proxy.authority import (
    Authority,
    AuthorityError,
    TargetError,
    canonical,
    parse_authority,
    request_target,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("web-svc.emojivoto:80", Authority("web-svc.emojivoto", 80, "web-svc", "emojivoto")),
    ("web-svc.emojivoto", Authority("web-svc.emojivoto", 80, "web-svc", "emojivoto")),
    ("web-svc.emojivoto.svc:8080",
     Authority("web-svc.emojivoto.svc", 8080, "web-svc", "emojivoto")),
    ("web-svc.emojivoto.svc.cluster.local:80",
     Authority("web-svc.emojivoto.svc.cluster.local", 80, "web-svc", "emojivoto",
               "cluster.local")),
    ("Web-Svc.EmojiVoto.svc.Cluster.Local.:80",
     Authority("web-svc.emojivoto.svc.cluster.local", 80, "web-svc", "emojivoto",
               "cluster.local")),
    ("web-svc.emojivoto:", Authority("web-svc.emojivoto", 80, "web-svc", "emojivoto")),
    ("127.1.64.3:4143", Authority("127.1.64.3", 4143, is_ip=True)),
    ("127.1.64.3", Authority("127.1.64.3", 80, is_ip=True)),
    ("[::1]:8080", Authority("::1", 8080, is_ip=True)),
    ("[0:0::1]", Authority("::1", 80, is_ip=True)),
    ("localhost:3000", Authority("localhost", 3000)),
    ("a.b.c:80", Authority("a.b.c", 80)),
    ("1.2:80", Authority("1.2", 80)),
    ("999.1.1.1:80", Authority("999.1.1.1", 80)),
    ("my_host.ns:80", Authority("my_host.ns", 80)),
    ("1web.ns:80", Authority("1web.ns", 80)),
    ("host%41.example~x:80", Authority("host%41.example~x", 80)),
    ("a!$&'()*+,;=b:80", Authority("a!$&'()*+,;=b", 80)),
    ("web:065535", Authority("web", 65535)),
])
def test_authorities(text: str, expected: Authority) -> None:
    assert parse_authority(text) == expected


def test_default_port() -> None:
    assert parse_authority("web-svc.emojivoto", 8080).port == 8080
    assert parse_authority("[::1]", default_port=443).port == 443


@pytest.mark.parametrize(("text", "message"), [
    ("", 'bad authority "": it is empty; expected host[:port], like "web-svc.emojivoto:80"'),
    (":80", 'bad authority ":80": the host is empty; expected host[:port], like '
            '"web-svc.emojivoto:80"'),
    ("web:http", 'bad authority "web:http": "http" is not a port number (1-65535)'),
    ("web:-1", 'bad authority "web:-1": "-1" is not a port number (1-65535)'),
    ("web:٨٠", 'bad authority "web:٨٠": "٨٠" is not a port number (1-65535)'),
    ("web:0", 'bad authority "web:0": port 0 is out of range (1-65535)'),
    ("web:65536", 'bad authority "web:65536": port 65536 is out of range (1-65535)'),
    ("we b:80", "bad authority \"we b:80\": the host has a character that is not allowed: ' '"),
    ("web/x:80", "bad authority \"web/x:80\": the host has a character that is not allowed: "
                 "'/'"),
    ("user@web:80", "bad authority \"user@web:80\": the host has a character that is not "
                    "allowed: '@'"),
    ("wéb:80", "bad authority \"wéb:80\": the host has a character that is not allowed: 'é'"),
    ("web%4:80", 'bad authority "web%4:80": a "%" in the host is not followed by two hex '
                 "digits"),
    ("::1:80", 'bad authority "::1:80": an IPv6 address must be in brackets, like "[::1]:80"'),
    ("[::1", 'bad authority "[::1": the IPv6 address has no closing "]"'),
    ("[::1]80", 'bad authority "[::1]80": "80" after the IPv6 address is not ":port"'),
    ("[web]:80", 'bad authority "[web]:80": "web" is not an IPv6 address'),
    ("[::1]:x", 'bad authority "[::1]:x": "x" is not a port number (1-65535)'),
])
def test_bad_authorities(text: str, message: str) -> None:
    with pytest.raises(AuthorityError) as e:
        parse_authority(text)
    assert str(e.value) == message
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize(("text", "expected"), [
    ("web-svc.emojivoto:80", "web-svc.emojivoto.svc.cluster.local:80"),
    ("web-svc.emojivoto", "web-svc.emojivoto.svc.cluster.local:80"),
    ("web-svc.emojivoto.svc:8080", "web-svc.emojivoto.svc.cluster.local:8080"),
    ("web-svc.emojivoto.svc.cluster.local:80", "web-svc.emojivoto.svc.cluster.local:80"),
    ("web-svc.emojivoto.svc.east.example:80", "web-svc.emojivoto.svc.east.example:80"),
    ("127.1.64.3", "127.1.64.3:80"),
    ("[::1]:9", "[::1]:9"),
    ("localhost", "localhost:80"),
])
def test_canonical(text: str, expected: str) -> None:
    assert canonical(parse_authority(text)) == expected


def test_canonical_completes_short_names_with_the_given_domain() -> None:
    assert canonical(parse_authority("web-svc.emojivoto"), "west.local") == \
        "web-svc.emojivoto.svc.west.local:80"


@pytest.mark.parametrize(("method", "url", "host", "expected"), [
    (b"GET", b"/api/list?x=1", b"web-svc.emojivoto:80", ("web-svc.emojivoto:80", b"/api/list?x=1")),
    (b"GET", b"/", None, (None, b"/")),
    (b"GET", b"/", b"", (None, b"/")),
    (b"GET", b"http://web-svc.emojivoto:80/api/list?x=1", None,
     ("web-svc.emojivoto:80", b"/api/list?x=1")),
    (b"GET", b"http://web-svc.emojivoto/api", b"other:80", ("web-svc.emojivoto", b"/api")),
    (b"GET", b"http://web-svc.emojivoto", None, ("web-svc.emojivoto", b"/")),
    (b"GET", b"http://web-svc.emojivoto?q=1", None, ("web-svc.emojivoto", b"/?q=1")),
    (b"GET", b"HTTP://web-svc.emojivoto:8080/", None, ("web-svc.emojivoto:8080", b"/")),
    (b"GET", b"http://[::1]:8080/x", None, ("[::1]:8080", b"/x")),
    (b"CONNECT", b"web-svc.emojivoto:443", b"web-svc.emojivoto:443",
     ("web-svc.emojivoto:443", b"")),
    (b"OPTIONS", b"*", b"web-svc.emojivoto", ("web-svc.emojivoto", b"*")),
])
def test_request_targets(method: bytes, url: bytes, host: bytes | None,
                         expected: tuple[str | None, bytes]) -> None:
    assert request_target(method, url, host) == expected


@pytest.mark.parametrize(("method", "url", "message"), [
    (b"GET", b"https://web-svc.emojivoto/", "'https://web-svc.emojivoto/': the proxy forwards "
     "plain HTTP only; send http:// URLs (the mesh encrypts between proxies) or use CONNECT"),
    (b"GET", b"ftp://files/x", "'ftp://files/x': the proxy forwards http:// URLs only"),
    (b"GET", b"http://user:pw@web/", "'http://user:pw@web/': user information in the URL is "
     "not allowed"),
    (b"GET", b"http:///x", "'http:///x': the URL has no host"),
    (b"GET", b"index.html", "'index.html' is not a request target (a path like /index.html or "
     "a URL like http://web-svc.emojivoto/)"),
    (b"CONNECT", b"/x", "a CONNECT target must be host:port, not '/x'"),
    (b"CONNECT", b"", "a CONNECT target must be host:port, not ''"),
])
def test_bad_request_targets(method: bytes, url: bytes, message: str) -> None:
    with pytest.raises(TargetError) as e:
        request_target(method, url, b"web")
    assert str(e.value) == message


def test_origin_form_keeps_the_url_object() -> None:
    url = b"/api/list"
    assert request_target(b"GET", url, b"web")[1] is url

"""What a request is addressed to: its authority and its request target.

`parse_authority` reads ``host[:port]`` (a DNS name, an IPv4 address or a
bracketed IPv6 address) and recognises the names of Kubernetes Services:
``svc.ns``, ``svc.ns.svc`` and ``svc.ns.svc.<cluster domain>``. `canonical`
writes the form the proxy resolves and labels metrics with
(``svc.ns.svc.cluster.local:80``). `request_target` splits an HTTP/1.1 request
line's target into the authority it names and the origin-form target to send
upstream.

Promises:

* every authority RFC 3986 allows for HTTP is accepted (names may use
  unreserved characters, sub-delims and %-escapes; the port may be empty,
  meaning the default); everything else raises `AuthorityError` saying what is
  wrong;
* names are case-insensitive and returned in lower case, without a trailing dot;
* a name is a Service's only when its service part is a DNS-1035 label and its
  namespace part a DNS-1123 label; other names and IP addresses have no
  service;
* `parse_authority` caches its answers (the same Host header comes back on
  every request); `request_target` copies only the slices it returns.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

__all__ = [
    "Authority",
    "AuthorityError",
    "TargetError",
    "canonical",
    "parse_authority",
    "request_target",
]


class AuthorityError(ValueError):
    """An authority that cannot be parsed; the message says what is wrong."""


class TargetError(ValueError):
    """A request target the proxy cannot forward; the message says why."""


@dataclass(frozen=True, slots=True)
class Authority:
    host: str  # lower case; an IPv6 address without brackets
    port: int
    service: str | None = None
    namespace: str | None = None
    cluster_domain: str | None = None  # when the name spells it out
    is_ip: bool = False

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


_BAD_HOST_CHAR = re.compile(r"[^a-z0-9\-._~!$&'()*+,;=%]")
_BAD_ESCAPE = re.compile(r"%(?![0-9a-f]{2})")
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_EXAMPLE = 'expected host[:port], like "web-svc.emojivoto:80"'


def _error(text: str, reason: str) -> AuthorityError:
    return AuthorityError(f'bad authority "{text}": {reason}')


def _port(text: str, port_text: str, default_port: int) -> int:
    if not port_text:
        return default_port
    if not (port_text.isascii() and port_text.isdigit()):
        raise _error(text, f'"{port_text}" is not a port number (1-65535)')
    port = int(port_text)
    if not 0 < port < 65536:
        raise _error(text, f"port {port} is out of range (1-65535)")
    return port


@functools.lru_cache(maxsize=4096)
def parse_authority(text: str, default_port: int = 80) -> Authority:
    """The authority `text` (``host[:port]``); `default_port` when the port is left out."""
    if not text:
        raise _error(text, f"it is empty; {_EXAMPLE}")
    if text[0] == "[":
        end = text.find("]")
        if end < 0:
            raise _error(text, 'the IPv6 address has no closing "]"')
        rest = text[end + 1:]
        if rest and rest[0] != ":":
            raise _error(text, f'"{rest}" after the IPv6 address is not ":port"')
        try:
            ip = ipaddress.IPv6Address(text[1:end])
        except ValueError:
            raise _error(text, f'"{text[1:end]}" is not an IPv6 address') from None
        return Authority(str(ip), _port(text, rest[1:], default_port), is_ip=True)

    host, colon, port_text = text.rpartition(":")
    if not colon:
        host, port_text = text, ""
    elif ":" in host:
        raise _error(text, 'an IPv6 address must be in brackets, like "[::1]:80"')
    port = _port(text, port_text, default_port)
    host = host.lower()
    if host.endswith(".") and len(host) > 1:
        host = host[:-1]
    if not host:
        raise _error(text, f"the host is empty; {_EXAMPLE}")
    bad = _BAD_HOST_CHAR.search(host)
    if bad is not None:
        raise _error(text, f"the host has a character that is not allowed: {bad.group()!r}")
    if "%" in host and _BAD_ESCAPE.search(host):
        raise _error(text, 'a "%" in the host is not followed by two hex digits')
    if host[0].isdigit() and host[-1].isdigit():
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            pass  # a name made of digits and dots, like "1.2"
        else:
            return Authority(host, port, is_ip=True)

    labels = host.split(".")
    n = len(labels)
    if (n == 2 or (n >= 3 and labels[2] == "svc")) and _DNS1035.match(labels[0]) \
            and _DNS1123.match(labels[1]):
        domain = ".".join(labels[3:]) or None
        return Authority(host, port, service=labels[0], namespace=labels[1],
                         cluster_domain=domain)
    return Authority(host, port)


def canonical(a: Authority, cluster_domain: str = "cluster.local") -> str:
    """``svc.ns.svc.<domain>:port`` for a Service, else ``host:port`` (IPv6 in brackets).

    The domain is the one the name spelled out, else `cluster_domain`.
    """
    if a.service is not None:
        return f"{a.service}.{a.namespace}.svc.{a.cluster_domain or cluster_domain}:{a.port}"
    return str(a)


def request_target(method: bytes, url: bytes, host: bytes | None) -> tuple[str | None, bytes]:
    """(authority text, target to send upstream) of an HTTP/1.1 request.

    * origin-form ``/path?q`` and asterisk-form ``*``: the Host header, and `url`;
    * absolute-form ``http://host[:port]/path?q``: the URL's authority (which
      overrides Host, RFC 9112 3.2.2), and the origin-form ``/path?q``;
    * authority-form ``host:port`` of CONNECT: `url`, and ``b""``.

    The authority is None when the request names none (no or empty Host).
    Raises `TargetError` for ``https://`` and other schemes (the proxy forwards
    plain HTTP only), user information in the URL, and targets of no form.
    """
    if url[:1] == b"/" and method != b"CONNECT":
        return (host.decode("latin-1") if host else None), url
    if method == b"CONNECT":
        if not url or url[:1] == b"/" or b"/" in url or b"@" in url:
            raise TargetError(f"a CONNECT target must be host:port, not {_show(url)}")
        return url.decode("latin-1"), b""
    if url == b"*":
        return (host.decode("latin-1") if host else None), url
    scheme_end = url.find(b"://")
    if scheme_end <= 0:
        raise TargetError(f"{_show(url)} is not a request target (a path like /index.html "
                          "or a URL like http://web-svc.emojivoto/)")
    scheme = url[:scheme_end].lower()
    if scheme != b"http":
        if scheme == b"https":
            raise TargetError(f"{_show(url)}: the proxy forwards plain HTTP only; send "
                              "http:// URLs (the mesh encrypts between proxies) or use CONNECT")
        raise TargetError(f"{_show(url)}: the proxy forwards http:// URLs only")
    start = scheme_end + 3
    end = len(url)
    for stop in (b"/", b"?"):
        i = url.find(stop, start)
        if 0 <= i < end:
            end = i
    authority = url[start:end]
    if b"@" in authority:
        raise TargetError(f"{_show(url)}: user information in the URL is not allowed")
    if not authority:
        raise TargetError(f"{_show(url)}: the URL has no host")
    if end == len(url):
        return authority.decode("latin-1"), b"/"
    if url[end] == 47:  # "/"
        return authority.decode("latin-1"), url[end:]
    return authority.decode("latin-1"), b"/" + url[end:]


def _show(url: bytes) -> str:
    text = url[:200].decode("latin-1")
    return repr(text + ("..." if len(url) > 200 else ""))

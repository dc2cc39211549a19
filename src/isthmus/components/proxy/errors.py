"""Answers the proxy gives itself: a status, and a message that says what went wrong."""

from __future__ import annotations

REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 408: "Request Timeout",
           413: "Payload Too Large", 421: "Misdirected Request", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class ProxyError(Exception):
    """A request the proxy answers itself, with `status` and a message that says why."""

    def __init__(self, status: int, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason  # for refusals that are counted (a peer's TLS refused, ...)


def error_response(status: int, message: str, *, close: bool = False) -> bytes:
    """A complete HTTP/1.1 response with `message` as a plain-text body.

    The message is repeated in the `l5d-proxy-error` header, as linkerd2-proxy
    does, so clients that only log headers still see why.
    """
    body = message.encode() + b"\n"
    header = message.encode("ascii", "replace").replace(b"\r", b" ").replace(b"\n", b" ")
    return (b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"l5d-proxy-error: %s\r\n%s\r\n%s" % (
                status, REASONS.get(status, "Error").encode(), len(body), header,
                b"connection: close\r\n" if close else b"", body))

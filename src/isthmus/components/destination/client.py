"""The proxy's side of destination: resolutions that follow the destination service's answers.

`DestinationClient.resolve(authority)` returns the `Resolution` of that
authority, shared by every caller that asks for it in any spelling
(``web-svc.emojivoto``, ``web-svc.emojivoto.svc.cluster.local:80``, ...): one
stream (`GET /v1/resolve`) per authority, however many callers. A resolution
holds the latest answer as an `EndpointSet` (`current`), counts its changes
(`version`, `wait_changed`) and calls its `on_update` callbacks with each new
one. Promises:

- the service must prove `expected_identity` (TLS 1.3, checked in the
  handshake); the client presents `credentials()` when it has them, and picks
  up new ones for the next connection;
- when a stream breaks or cannot be opened, the last answer stays `current`
  and the stream is opened again after an exponential backoff with jitter
  (`reconnect_base` doubling to `reconnect_cap`, half to full step); the
  first answer on the new stream replaces it; an answer equal to the current
  one changes nothing (no new version, no callback);
- a stream silent for `read_timeout` seconds (the service sends a blank line
  every 15 s) counts as broken;
- callers `release` what they resolved; a resolution nobody holds is closed
  after `idle_timeout` seconds unless resolved again meanwhile;
- `set_trust_anchors` (an anchor rotation) reopens every stream at once with
  the new anchors, keeping the answers meanwhile;
- sleep and randomness are injected, so backoff runs in no time in tests.

Call it from the event loop it runs on (`resolve` starts tasks there).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any
from urllib.parse import urlencode, urlsplit

from isthmus.adapters.x509 import Credentials
from isthmus.components.identity import http1client
from isthmus.components.identity.tlsconfig import client_context, use_credentials
from isthmus.core.destination import (
    DEFAULT_CLUSTER_DOMAIN,
    RESOLVE_PATH,
    BadAuthority,
    parse_authority,
)
from isthmus.core.identity import DEFAULT_TRUST_DOMAIN, retry_delay, workload_identity

log = logging.getLogger("isthmus.destination.client")

IDLE_TIMEOUT = 60.0
READ_TIMEOUT = 45.0
CONNECT_TIMEOUT = 10.0
RECONNECT_BASE = 0.5
RECONNECT_CAP = 10.0
MAX_LINE = 16 * 1024 * 1024


def destination_identity(trust_domain: str = DEFAULT_TRUST_DOMAIN) -> str:
    """The identity the destination service proves (service account `isthmus-destination` in
    namespace `isthmus`)."""
    return workload_identity("isthmus-destination", "isthmus", trust_domain)


class DestinationError(Exception):
    """A request the client cannot make: a malformed authority, or the client or resolution is closed."""


class DestinationUnavailable(Exception):
    """A stream could not be opened or broke: connection, TLS, timeout or a malformed answer."""


class _Refused(Exception):
    """The service answered with an error status (its `{"error": ...}` text is the message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- answers


def _labels(value: Any, what: str) -> Mapping[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in value.items()):
        raise ValueError(f"{what} is not an object of strings")
    return MappingProxyType(dict(value))


def _optional(value: Any, kind: type, what: str) -> Any:
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise ValueError(f"{what} is not a {kind.__name__} or null")
    return value


@dataclass(frozen=True, slots=True)
class ServiceRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One address to send requests to.

    `identity` is the identity the peer must prove (None: plain TCP, the
    endpoint is not meshed); `proxy_port` the port of its proxy (or gateway)
    to connect to; `authority_override` the authority to use beyond a
    gateway.
    """

    addr: str
    port: int
    identity: str | None
    proxy_port: int | None
    protocol_hint: str | None
    authority_override: str | None
    labels: Mapping[str, str]

    def __hash__(self) -> int:
        return hash((self.addr, self.port, self.identity, self.proxy_port, self.protocol_hint,
                     self.authority_override, tuple(sorted(self.labels.items()))))

    @classmethod
    def from_json(cls, value: Any) -> Endpoint:
        if not isinstance(value, dict):
            raise ValueError("an endpoint is not an object")
        addr, port = value.get("addr"), value.get("port")
        if not isinstance(addr, str) or not isinstance(port, int) or isinstance(port, bool):
            raise ValueError("an endpoint lacks addr (string) or port (number)")
        return cls(addr=addr, port=port,
                   identity=_optional(value.get("identity"), str, "identity"),
                   proxy_port=_optional(value.get("proxyPort"), int, "proxyPort"),
                   protocol_hint=_optional(value.get("protocolHint"), str, "protocolHint"),
                   authority_override=_optional(value.get("authorityOverride"), str, "authorityOverride"),
                   labels=_labels(value.get("labels", {}), "endpoint labels"))


@dataclass(frozen=True, slots=True)
class EndpointSet:
    """One answer of the destination service for an authority.

    `exists` False means the authority names nothing (`reason` says why) and
    every other field is empty. `policy` holds the Service's policy
    annotations as raw strings (``timeout.isthmus.io/...`` and the like).
    """

    authority: str
    exists: bool
    reason: str | None
    service: ServiceRef | None
    labels: Mapping[str, str]
    policy: Mapping[str, str]
    opaque: bool
    endpoints: tuple[Endpoint, ...]

    @classmethod
    def missing(cls, authority: str, reason: str) -> EndpointSet:
        empty: Mapping[str, str] = MappingProxyType({})
        return cls(authority, False, reason, None, empty, empty, False, ())

    @classmethod
    def direct(cls, authority: str, addr: str, port: int) -> EndpointSet:
        """An answer made without the destination service: one plain (unmeshed) address."""
        empty: Mapping[str, str] = MappingProxyType({})
        endpoint = Endpoint(addr, port, None, None, None, None, empty)
        return cls(authority, True, None, None, empty, empty, False, (endpoint,))

    @classmethod
    def from_json(cls, value: Any) -> EndpointSet:
        """Parse one snapshot; `ValueError` names what is wrong with it."""
        if not isinstance(value, dict) or not isinstance(value.get("authority"), str) \
                or not isinstance(value.get("exists"), bool):
            raise ValueError("a snapshot is an object with authority (string) and exists (boolean)")
        if not value["exists"]:
            reason = value.get("reason")
            return cls.missing(value["authority"], reason if isinstance(reason, str) else "not found")
        service = value.get("service")
        ref = None
        if service is not None:
            if not isinstance(service, dict) or not isinstance(service.get("namespace"), str) \
                    or not isinstance(service.get("name"), str):
                raise ValueError("service is not an object with namespace and name")
            ref = ServiceRef(service["namespace"], service["name"])
        endpoints = value.get("endpoints", [])
        if not isinstance(endpoints, list):
            raise ValueError("endpoints is not a list")
        return cls(authority=value["authority"], exists=True, reason=None, service=ref,
                   labels=_labels(value.get("labels", {}), "labels"),
                   policy=_labels(value.get("policy", {}), "policy"),
                   opaque=value.get("opaque") is True,
                   endpoints=tuple(Endpoint.from_json(e) for e in endpoints))


# --------------------------------------------------------------------------- resolutions

UpdateCallback = Callable[["EndpointSet"], None]


class Resolution:
    """The followed answer for one authority (see the module docstring)."""

    def __init__(self, client: DestinationClient, authority: str) -> None:
        self.authority = authority
        self.version = 0
        self.failures = 0
        self.last_error: str | None = None
        self.connected = False
        self._client = client
        self._current: EndpointSet | None = None
        self._changed = asyncio.Event()
        self._callbacks: list[UpdateCallback] = []
        self._refs = 0
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._expiry: asyncio.Task[None] | None = None

    @property
    def current(self) -> EndpointSet | None:
        """The latest answer, or None before the first."""
        return self._current

    @property
    def closed(self) -> bool:
        return self._closed

    async def ready(self, timeout: float | None = None) -> EndpointSet:
        """The current answer, waiting for the first one; `TimeoutError` after `timeout` seconds."""
        return await self.wait_changed(0, timeout=timeout)

    async def wait_changed(self, after: int, *, timeout: float | None = None) -> EndpointSet:
        """The answer once `version` is past `after` (at once if it already is).

        `DestinationError` once the resolution is closed (released and expired, or the client closed).
        """
        async with asyncio.timeout(timeout):
            while True:
                if self._closed:
                    raise DestinationError(f"the resolution of {self.authority} is closed")
                if self.version > after and self._current is not None:
                    return self._current
                await self._changed.wait()

    def on_update(self, callback: UpdateCallback) -> Callable[[], None]:
        """Call `callback(answer)` with every new answer from now on; returns a function that stops it."""
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)
        return remove

    def release(self) -> None:
        """This caller no longer needs the resolution (one `release` per `resolve`)."""
        self._client._release(self)

    async def __aenter__(self) -> Resolution:
        return self

    async def __aexit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.release()

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        elif self._current is None:
            state = f"waiting ({self.failures} failures)"
        else:
            shown = (f"{len(self._current.endpoints)} endpoints" if self._current.exists
                     else "does not exist")
            state = f"v{self.version} {shown}{'' if self.connected else ', reconnecting'}"
        return f"<Resolution {self.authority} {state} refs={self._refs}>"

    # ------------------------------------------------------------------ internals

    def _notify(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def _accept(self, answer: EndpointSet) -> None:
        if answer == self._current:
            return
        self._current = answer
        self.version += 1
        self._notify()
        for callback in list(self._callbacks):
            try:
                callback(answer)
            except Exception:
                log.exception("an update callback for %s failed", self.authority)

    def _acquire(self) -> None:
        self._refs += 1
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def _start(self, after: asyncio.Task[None] | None = None) -> None:
        self._task = asyncio.create_task(self._run(after), name=f"destination-resolve {self.authority}")

    def _restart(self) -> asyncio.Task[None] | None:
        """Drop the stream and open a new one at once; the old stream's task."""
        old = self._task
        if old is None or self._closed:
            return None
        old.cancel()
        self._start(after=old)
        return old

    async def _close(self) -> None:
        self._closed = True
        self._notify()
        for task in (self._task, self._expiry):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._expiry = None

    async def _run(self, after: asyncio.Task[None] | None = None) -> None:
        if after is not None:
            await asyncio.gather(after, return_exceptions=True)
        client = self._client
        while True:
            answered = False

            def take(answer: EndpointSet) -> None:
                nonlocal answered
                answered = self.connected = True
                self._accept(answer)

            try:
                await client._follow(self.authority, take)
                error = "the destination service ended the stream"
            except _Refused as e:
                error = f"the destination service answered {e.status}: {e}"
                if self._current is None and 400 <= e.status < 500:
                    self._accept(EndpointSet.missing(self.authority, str(e)))
            except DestinationUnavailable as e:
                error = str(e)
            self.connected = False
            self.failures = 0 if answered else self.failures + 1
            self.last_error = error
            delay = retry_delay(self.failures, base=client.reconnect_base, cap=client.reconnect_cap,
                                jitter=client.rand())
            (log.info if answered else log.warning)(
                "resolution of %s: %s; reconnecting in %.2f s (%d failures in a row)",
                self.authority, error, delay, self.failures)
            await client.sleep(delay)


# --------------------------------------------------------------------------- the client


class DestinationClient:
    """Resolutions of authorities through one destination service (see the module docstring)."""

    def __init__(self, url: str, trust_anchors_pem: bytes, *, expected_identity: str,
                 credentials: Callable[[], Credentials | None] | None = None,
                 cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
                 idle_timeout: float = IDLE_TIMEOUT, read_timeout: float = READ_TIMEOUT,
                 connect_timeout: float = CONNECT_TIMEOUT,
                 reconnect_base: float = RECONNECT_BASE, reconnect_cap: float = RECONNECT_CAP,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rand: Callable[[], float] = random.random) -> None:
        self.url = url.rstrip("/")
        self.expected_identity = expected_identity
        self.cluster_domain = cluster_domain
        self.idle_timeout = idle_timeout
        self.reconnect_base = reconnect_base
        self.reconnect_cap = reconnect_cap
        self.sleep = sleep
        self.rand = rand
        self._anchors = trust_anchors_pem
        self._credentials = credentials
        parsed = urlsplit(self.url)
        self._host, self._port = parsed.hostname or "", parsed.port or 443
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._resolutions: dict[str, Resolution] = {}
        self._ctx: ssl.SSLContext | None = None
        self._ctx_creds: Credentials | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<DestinationClient {self.url} resolutions={len(self._resolutions)}>"

    def _key(self, authority: str) -> str:
        target = parse_authority(authority, cluster_domain=self.cluster_domain)
        if isinstance(target, BadAuthority):
            raise DestinationError(target.message)
        return target.canonical(self.cluster_domain)

    def resolve(self, authority: str) -> Resolution:
        """The resolution of `authority`, started if nobody follows it yet; call `release` when done.

        `DestinationError` if the authority is malformed or the client is closed.
        """
        if self._closed:
            raise DestinationError("the destination client is closed")
        key = self._key(authority)
        resolution = self._resolutions.get(key)
        if resolution is None:
            resolution = self._resolutions[key] = Resolution(self, key)
            resolution._start()
        resolution._acquire()
        return resolution

    def release(self, authority: str) -> None:
        """Give back one `resolve(authority)`."""
        resolution = self._resolutions.get(self._key(authority))
        if resolution is not None:
            self._release(resolution)

    def _release(self, resolution: Resolution) -> None:
        if resolution._refs <= 0 or resolution.closed:
            return
        resolution._refs -= 1
        if resolution._refs == 0 and resolution._expiry is None:
            resolution._expiry = asyncio.create_task(self._expire(resolution),
                                                     name=f"destination-expire {resolution.authority}")

    async def _expire(self, resolution: Resolution) -> None:
        await self.sleep(self.idle_timeout)
        if resolution._refs == 0:
            if self._resolutions.get(resolution.authority) is resolution:
                del self._resolutions[resolution.authority]
            resolution._expiry = None
            await resolution._close()
            log.debug("resolution of %s closed after %.0f s unused", resolution.authority,
                      self.idle_timeout)

    def set_trust_anchors(self, anchors_pem: bytes) -> None:
        """Trust `anchors_pem` from now on (an anchor rotation): open streams are reopened at once
        with the new anchors, keeping their answers meanwhile."""
        self._anchors = anchors_pem
        self._ctx = None
        for resolution in self._resolutions.values():
            resolution._restart()  # the new stream starts once the old one has stopped

    def resolutions(self) -> list[Resolution]:
        """The resolutions open now."""
        return list(self._resolutions.values())

    async def close(self) -> None:
        """Close every resolution and the connections."""
        self._closed = True
        resolutions, self._resolutions = list(self._resolutions.values()), {}
        for resolution in resolutions:
            await resolution._close()

    # ------------------------------------------------------------------ the wire

    def _context(self) -> ssl.SSLContext:
        creds = self._credentials() if self._credentials is not None else None
        if self._ctx is None:
            self._ctx = client_context(creds, self._anchors, expected_identity=self.expected_identity)
            self._ctx_creds = creds
        elif creds is not None and creds != self._ctx_creds:
            use_credentials(self._ctx, creds)  # new connections present the new certificate
            self._ctx_creds = creds
        return self._ctx

    async def _follow(self, authority: str, take: Callable[[EndpointSet], None]) -> None:
        """Open a stream for `authority` and hand every answer to `take` until it ends.

        One connection per stream, never reused: a new stream presents the newest
        certificate. (`http1client`, not aiohttp: this runs in every sidecar proxy.)
        Raises `DestinationUnavailable` when it cannot be opened or breaks, `_Refused`
        for an error status.
        """
        target = f"{RESOLVE_PATH}?{urlencode({'authority': authority})}"
        try:
            resp = await http1client.request(self._host, self._port, self._context(), "GET", target,
                                             connect_timeout=self._connect_timeout,
                                             read_timeout=self._read_timeout)
            async with resp:
                if resp.status != 200:
                    raise _Refused(resp.status, _error_text(await resp.read()))
                pending = bytearray()
                async for chunk in resp.iter_chunks():
                    pending += chunk
                    start = 0
                    while (end := pending.find(b"\n", start)) >= 0:
                        line = bytes(pending[start:end]).strip()
                        start = end + 1
                        if line:
                            take(_parse_line(line))
                    del pending[:start]
                    if len(pending) > MAX_LINE:
                        raise DestinationUnavailable(
                            f"the destination service sent a line longer than {MAX_LINE} bytes")
        except (OSError, TimeoutError) as e:
            raise DestinationUnavailable(f"destination service {self.url} unreachable or stream broken: "
                                         f"{type(e).__name__}: {e}") from None


def _error_text(raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:  # not JSON, or not UTF-8
        return raw.decode(errors="replace")[:200]
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else repr(body)[:200]


def _parse_line(line: bytes) -> EndpointSet:
    try:
        return EndpointSet.from_json(json.loads(line))
    except ValueError as e:  # not JSON (nor UTF-8), or not a snapshot
        raise DestinationUnavailable(f"the destination service sent a malformed snapshot ({e}): "
                                     f"{line[:200]!r}") from None

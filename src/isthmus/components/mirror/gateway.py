"""The remote gateway as the service mirror sees it: its resolved addresses and whether it is alive.

`GatewayProber` resolves the Link's `gatewayAddress` (IP addresses, or host
names looked up with the system resolver) and probes the gateway every
`probeSpec.period` ± 10%, trying the addresses in order until one answers
200 within `probeSpec.timeout`. `isthmus.core.mirror.ProbeState` decides
liveness (alive at start, not alive after `failureThreshold` consecutive
failures, alive again at the first success). Addresses are resolved again
every `resolve_period` and after every failed probe, so a gateway whose
address changed is found again. Each change of addresses or liveness is
reported to `on_change` with the new `Gateway`.

A probe (`MtlsProbe`) is `GET <probeSpec.path>` to `<address>:<probeSpec.port>`
over TLS 1.3 with mutual authentication: the mirror presents its own
workload certificate (`MirrorIdentity`) and accepts only a gateway whose
certificate chains to this cluster's trust anchors and names the Link's
`gatewayIdentity`. A gateway that is up but has another anchor or another
identity is therefore not alive, and says why.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from isthmus.adapters.x509 import Credentials
from isthmus.components.identity import http1client
from isthmus.components.identity.tlsconfig import IdentityMismatch, client_context
from isthmus.components.mirror.metrics import MirrorMetrics
from isthmus.core import mirror as core

log = logging.getLogger("isthmus.mirror.gateway")

__all__ = ["GatewayProber", "MtlsProbe", "Probe", "ProbeCredentials", "ProbeFailed", "Resolver",
           "StaticCredentials", "resolve_addresses", "system_resolver"]

Resolver = Callable[[str], Awaitable[list[str]]]
# (address, port, path, timeout, gateway identity) -> None on a 200 answer; raises (any exception) otherwise.
Probe = Callable[[str, int, str, float, str], Awaitable[None]]


async def system_resolver(host: str) -> list[str]:
    """The IP addresses of `host` (itself when it is one)."""
    try:
        return [ipaddress.ip_address(host).compressed]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve_addresses(hosts: Iterable[str], resolver: Resolver) -> tuple[tuple[str, ...], list[str]]:
    """Every address of every host (in order, without repeats), and a note for each host that failed."""
    found: dict[str, None] = {}
    failures = []
    for host in hosts:
        try:
            for ip in await resolver(host):
                found[ip] = None
        except (OSError, ValueError) as e:
            failures.append(f"{host}: {e}")
    return tuple(found), failures


class ProbeCredentials(Protocol):
    """Where a probe's client certificate comes from (`MirrorIdentity`, or `StaticCredentials`)."""

    @property
    def credentials(self) -> Credentials | None: ...

    @property
    def anchors_pem(self) -> bytes: ...

    def why_not(self) -> str:
        """Why there is no certificate (said in the probe's failure)."""
        ...


@dataclass(frozen=True)
class StaticCredentials:
    """A certificate made elsewhere (tests, tools)."""

    credentials: Credentials | None
    anchors_pem: bytes

    def why_not(self) -> str:
        return "no certificate was given"


class ProbeFailed(Exception):
    """The gateway did not answer the probe with 200; the message says what happened."""


class MtlsProbe:
    """`GET path` over mTLS on a kept connection (module docstring).

    `source_ip` (the pod's IP) is bound before connecting, as a pod's packets
    carry its IP (an embedded cluster's service proxy tells the caller's
    cluster, and region, from it). The connection to the gateway that last
    answered is kept (HTTP/1.1 keep-alive), as a proxy pools its connection to
    a peer: a probe then costs one round trip, and `gateway_latency` is that
    round trip rather than TCP and TLS handshakes across the WAN. A kept
    connection that fails is tried once more anew (the gateway may have closed
    an idle one); a certificate rotation or another gateway identity opens new
    connections.
    """

    def __init__(self, source: ProbeCredentials, *, source_ip: str | None = None) -> None:
        self._source = source
        self._source_ip = source_ip
        self._creds: Credentials | None = None  # the certificate `_contexts` present
        self._contexts: dict[str, ssl.SSLContext] = {}  # by gateway identity
        self._conns: dict[tuple[str, int, str], http1client.KeptConnection] = {}

    def _context(self, creds: Credentials, identity: str) -> ssl.SSLContext:
        if creds is not self._creds:
            self.close()
            self._creds, self._contexts = creds, {}
        ctx = self._contexts.get(identity)
        if ctx is None:
            ctx = client_context(creds, self._source.anchors_pem, expected_identity=identity)
            self._contexts[identity] = ctx
        return ctx

    async def __call__(self, address: str, port: int, path: str, timeout: float, identity: str) -> None:
        creds = self._source.credentials
        if creds is None:
            raise ProbeFailed(f"this mirror has no certificate to probe with: {self._source.why_not()}")
        ctx = self._context(creds, identity)
        key = (address, port, identity)
        conn = self._conns.get(key)
        if conn is None:
            conn = self._conns[key] = http1client.KeptConnection(address, port, ctx, source_ip=self._source_ip)
        async with asyncio.timeout(timeout):
            kept = conn.is_open
            try:
                status, _ = await conn.request("GET", path)
            except OSError:
                if not kept:
                    raise
                status, _ = await conn.request("GET", path)  # the kept one had gone stale: a new one
        if status != 200:
            raise ProbeFailed(f"answered {status}")
        for other in [k for k in self._conns if k != key]:  # only the gateway that answers is kept
            self._conns.pop(other).close()

    def close(self) -> None:
        """Close the kept connections."""
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


class GatewayProber:
    def __init__(self, link: core.LinkSpec, *, metrics: MirrorMetrics,
                 on_change: Callable[[core.Gateway], None] = lambda _gw: None,
                 resolver: Resolver = system_resolver, probe: Probe,
                 resolve_period: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: Callable[[], float] = random.random) -> None:
        self._link = link
        self._metrics = metrics
        self._on_change = on_change
        self._resolver = resolver
        self._probe = probe
        self._resolve_period = resolve_period
        self._clock, self._sleep, self._rng = clock, sleep, rng
        self.state = core.ProbeState()
        self.addresses: tuple[str, ...] = ()
        self.message = "the gateway has not failed a probe"  # said of its state when it last changed
        self.last_error = ""
        self._resolved_at: float | None = None
        self._resolving = asyncio.Lock()

    @property
    def gateway(self) -> core.Gateway:
        return core.Gateway(self.addresses, self.state.alive)

    def update_link(self, link: core.LinkSpec) -> None:
        """Take a changed Link: new addresses are resolved before the next probe."""
        if link.gateway_addresses != self._link.gateway_addresses:
            self._resolved_at = None
        self._link = link

    async def resolve(self) -> None:
        async with self._resolving:
            before = self.gateway
            addresses, failures = await resolve_addresses(self._link.gateway_addresses, self._resolver)
            self._resolved_at = self._clock()
            for f in failures:
                log.warning("gateway of %s: cannot resolve %s", self._link.target_cluster_name, f)
            if not addresses and self.addresses:
                # Keep the last known addresses while the names do not resolve at all.
                return
            self.addresses = addresses
            if self.gateway != before:
                log.info("gateway of %s is at %s", self._link.target_cluster_name, ",".join(addresses) or "-")
                self._on_change(self.gateway)

    async def probe_once(self) -> bool:
        """One probe of the gateway; updates the state, the metrics, and tells `on_change` of a change."""
        spec = self._link.probe
        if self._resolved_at is None or self._clock() - self._resolved_at >= self._resolve_period:
            await self.resolve()
        before = self.gateway
        ok, latency, errors = False, None, []
        for address in self.addresses:
            started = self._clock()
            try:
                await self._probe(address, spec.port, spec.path, spec.timeout, self._link.gateway_identity)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                errors.append(f"{address}:{spec.port}{spec.path}: {_describe(e)}")
                continue
            ok, latency = True, (self._clock() - started) * 1000.0
            break
        if not self.addresses:
            errors.append("no address to probe")
        self.state = self.state.after(ok, spec.failure_threshold)
        self._metrics.probe(ok, latency)
        self._metrics.gateway_alive = 1.0 if self.state.alive else 0.0
        if not ok:
            self.last_error = "; ".join(errors)
            if before.alive:
                log.info("gateway probe of %s failed (%d in a row, threshold %d): %s", self._link.target_cluster_name,
                         self.state.consecutive_failures, spec.failure_threshold, self.last_error)
            await self.resolve()
        if self.state.alive != before.alive:  # address changes were told by `resolve`
            if self.state.alive:
                self.message = f"gateway {','.join(self.addresses)} answers its probes"
                log.info("gateway of %s is alive", self._link.target_cluster_name)
            else:
                self.message = self._not_alive_message()
                log.warning("gateway of %s is not alive: %s", self._link.target_cluster_name, self.last_error)
            self._on_change(self.gateway)
        elif not ok and not self.state.alive:
            # Still not alive: say why now (a gateway that answered 503 may since refuse connections).
            message = self._not_alive_message()
            if message != self.message:
                self.message = message
                self._on_change(self.gateway)
        return ok

    def _not_alive_message(self) -> str:
        spec = self._link.probe
        return (f"gateway {','.join(self.addresses) or '-'} failed {spec.failure_threshold} probes in a "
                f"row; the last: {self.last_error}")

    async def run(self) -> None:
        await self.resolve()
        while True:
            await self._sleep(core.jittered(self._link.probe.period, self._rng()))
            await self.probe_once()

    def __repr__(self) -> str:
        return (f"<GatewayProber {self._link.target_cluster_name} {','.join(self.addresses) or '-'} "
                f"alive={self.state.alive} failures={self.state.consecutive_failures}>")


def _describe(e: BaseException) -> str:
    if isinstance(e, asyncio.TimeoutError):
        return "timed out"
    if isinstance(e, IdentityMismatch):
        return f"the gateway's certificate was refused: {e}"
    if isinstance(e, ssl.SSLCertVerificationError):
        return (f"the gateway's certificate was refused: {e.verify_message} (does it share this cluster's "
                f"trust anchor?)")
    if isinstance(e, ssl.SSLError):
        return f"TLS with the gateway failed: {e.reason or e}"
    return str(e) or type(e).__name__

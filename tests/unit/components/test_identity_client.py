"""The identity client's rotation under a fake clock, a fake sleep and a scripted identity service.

The fake service signs real certificates (adapters.x509) at the fake clock's
time, so the client's own checks (chain to the anchors, identity, key) run for
real; only the network and time are scripted. Each `sleep` the client asks for
is handed to the test, which checks the delay and then lets time pass.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from isthmus.adapters.x509 import (
    Credentials,
    load_certificates,
    make_csr,
    new_issuer,
    new_private_key,
    new_root,
    read_csr,
    sign_leaf,
    verify_chain,
)
from isthmus.components.identity.client import IdentityClient, ServiceUnreachable
from isthmus.core.identity import retry_delay, workload_identity

T0 = datetime(2030, 1, 1, tzinfo=UTC)
WEB = workload_identity("web", "emojivoto")
LIFETIME = timedelta(hours=24, seconds=20)  # 24 h leaves backdated 20 s
JITTER = 0.5
ROOT = new_root(now=T0 - timedelta(days=1))
ISSUER = new_issuer(ROOT, now=T0 - timedelta(days=1))


class FakeTime:
    """A clock that moves only when the test lets a sleep end."""

    def __init__(self) -> None:
        self.now = T0
        self._sleeps: asyncio.Queue[tuple[float, asyncio.Future[None]]] = asyncio.Queue()
        self._pending: asyncio.Future[None] | None = None

    def clock(self) -> datetime:
        return self.now

    async def sleep(self, delay: float) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._sleeps.put((delay, done))
        await done

    async def next_sleep(self) -> float:
        """The delay of the client's next sleep (the sleep itself has not ended yet)."""
        delay, self._pending = await asyncio.wait_for(self._sleeps.get(), 5)
        return delay

    def elapse(self, seconds: float) -> None:
        """Let the pending sleep end after `seconds` of fake time."""
        assert self._pending is not None
        self.now += timedelta(seconds=seconds)
        self._pending.set_result(None)
        self._pending = None


@dataclass
class FakeService:
    """The identity service's answers, scripted: 'ok', 'down', or an error status."""

    time: FakeTime
    mode: str = "ok"
    issuer: Credentials = ISSUER
    tokens: list[str] = field(default_factory=list)
    gate: asyncio.Event | None = None

    async def post(self, url: str, request: dict[str, str]) -> tuple[int, Any]:
        assert url == "https://identity.test:8080/v1/certify"
        self.tokens.append(request["token"])
        if self.gate is not None:
            await self.gate.wait()
        if self.mode == "down":
            raise ServiceUnreachable("ConnectionRefusedError: connection refused")
        if self.mode != "ok":
            return int(self.mode), {"error": f"scripted refusal {self.mode}"}
        info = read_csr(request["csr"].encode())
        assert info.dns_names == [request["identity"]]
        leaf = sign_leaf(self.issuer, request["csr"].encode(), dns_name=request["identity"],
                         now=self.time.now)
        return 200, {"leaf": leaf.decode(), "chain": [self.issuer.cert_pem.decode()], "expiry": "-"}


@dataclass
class Harness:
    time: FakeTime
    service: FakeService
    client: IdentityClient
    token: Path
    updates: list[Credentials]
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the client (after the test has scripted the service)."""
        self.task = asyncio.create_task(self.client.run())


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    time = FakeTime()
    service = FakeService(time)
    token = tmp_path / "token"
    token.write_text("token-1\n")
    updates: list[Credentials] = []
    client = IdentityClient(service_url="https://identity.test:8080", service_ca_pem=ROOT.cert_pem,
                            identity=WEB, token_path=token, clock=time.clock, sleep=time.sleep,
                            rand=lambda: JITTER, http=service.post, on_update=updates.append)
    harness = Harness(time, service, client, token, updates)
    yield harness
    if harness.task is not None:
        harness.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await harness.task


def leaf_of(creds: Credentials | None) -> Any:
    assert creds is not None
    return load_certificates(creds.cert_pem)[0]


async def test_not_ready_until_the_first_certificate_which_is_requested_at_start(tmp_path: Path) -> None:
    time = FakeTime()
    service = FakeService(time, gate=asyncio.Event())
    token = tmp_path / "token"
    token.write_text("t")
    client = IdentityClient(service_url="https://identity.test:8080", service_ca_pem=ROOT.cert_pem,
                            identity=WEB, token_path=token, clock=time.clock, sleep=time.sleep,
                            rand=lambda: JITTER, http=service.post)
    assert not client.ready and client.current is None
    task = asyncio.create_task(client.run())
    for _ in range(20):
        await asyncio.sleep(0)
    assert service.tokens == ["t"]  # asked at once, no sleep first
    assert not client.ready and client.current is None
    assert service.gate is not None
    service.gate.set()
    await time.next_sleep()
    assert client.ready
    leaf = leaf_of(client.current)
    assert leaf.not_valid_before_utc == T0 - timedelta(seconds=20)
    assert leaf.not_valid_after_utc == T0 + timedelta(hours=24)
    assert client.expiry == T0 + timedelta(hours=24)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_renews_at_70_percent_of_the_lifetime(h: Harness) -> None:
    h.start()
    delay = await h.time.next_sleep()
    expected = LIFETIME.total_seconds() * 0.7 - 20  # measured from not_before, 20 s in the past
    assert delay == pytest.approx(expected)
    first = h.client.current
    assert first is not None and len(h.updates) == 1
    h.time.elapse(delay)
    second_delay = await h.time.next_sleep()
    assert second_delay == pytest.approx(expected)
    assert len(h.updates) == 2 and h.updates[1] is h.client.current
    assert leaf_of(h.client.current).not_valid_after_utc == T0 + timedelta(seconds=delay, hours=24)
    assert h.client.current is not None and h.client.current.key_pem == first.key_pem  # one key


async def test_the_certificate_carries_its_chain_and_the_in_memory_key(h: Harness, tmp_path: Path) -> None:
    h.start()
    await h.time.next_sleep()
    creds = h.client.current
    assert creds is not None
    certs = load_certificates(creds.cert_pem)
    assert len(certs) == 2 and certs[1] == load_certificates(ISSUER.cert_pem)[0]
    verify_chain(creds.cert_pem, intermediates=[], roots_pem=ROOT.cert_pem, now=h.time.now, dns_name=WEB)
    assert b"PRIVATE KEY" in creds.key_pem
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token"]  # nothing else written


async def test_retries_with_backoff_and_jitter_while_the_service_is_unreachable(h: Harness) -> None:
    h.service.mode = "down"
    h.start()
    delays = []
    for _ in range(9):
        delays.append(await h.time.next_sleep())
        h.time.elapse(delays[-1])
    assert delays == [retry_delay(i, jitter=JITTER) for i in range(9)]
    assert delays[:4] == [0.75, 1.5, 3.0, 6.0] and delays[-1] == 45.0  # capped at 60 s, half jittered
    assert not h.client.ready and h.client.current is None
    assert h.client.last_error is not None and "unreachable" in h.client.last_error
    h.service.mode = "ok"
    delay = await h.time.next_sleep()
    assert h.client.ready and h.client.last_error is None and h.client.failures == 0
    assert delay == pytest.approx(LIFETIME.total_seconds() * 0.7 - 20, abs=1)  # whole seconds in X.509


async def test_current_certificate_keeps_serving_while_renewal_fails(h: Harness) -> None:
    h.start()
    h.time.elapse(await h.time.next_sleep())  # first certificate, then its renewal is due
    first = h.client.current
    await h.time.next_sleep()  # renewed once
    second = h.client.current
    assert second is not None and second is not first
    h.service.mode = "503"
    h.time.elapse(LIFETIME.total_seconds() * 0.7 - 20)
    for i in range(5):
        assert await h.time.next_sleep() == retry_delay(i, jitter=JITTER)
        assert h.client.current is second and h.client.ready
        h.time.elapse(retry_delay(i, jitter=JITTER))
    assert "503" in (h.client.last_error or "")
    h.service.mode = "ok"
    await h.time.next_sleep()
    assert h.client.current is not second and h.client.ready
    assert h.updates == [first, second, h.client.current]


async def test_refusals_are_retried_and_reported(h: Harness) -> None:
    h.service.mode = "403"
    h.start()
    assert await h.time.next_sleep() == retry_delay(0, jitter=JITTER)
    assert h.client.last_error == "identity service answered 403: scripted refusal 403"
    h.service.mode = "ok"
    h.time.elapse(1)
    await h.time.next_sleep()
    assert h.client.ready


async def test_token_is_read_again_for_every_request(h: Harness) -> None:
    h.start()
    h.time.elapse(await h.time.next_sleep())
    await h.time.next_sleep()
    h.token.write_text("token-2\n")
    h.time.elapse(60)
    await h.time.next_sleep()
    assert h.service.tokens == ["token-1", "token-1", "token-2"]


async def test_unreadable_token_is_a_failure_that_is_retried(h: Harness) -> None:
    h.token.unlink()
    h.start()
    await h.time.next_sleep()
    assert not h.client.ready and "cannot read the service-account token" in (h.client.last_error or "")
    assert h.service.tokens == []


async def test_certificate_from_another_trust_anchor_is_not_used(h: Harness) -> None:
    other_root = new_root(now=T0 - timedelta(days=1))
    h.service.issuer = new_issuer(other_root, now=T0 - timedelta(days=1))
    h.start()
    await h.time.next_sleep()
    assert h.client.current is None and not h.client.ready
    assert "does not chain to the trust anchor" in (h.client.last_error or "")


async def test_certificate_for_another_identity_or_key_is_not_used(h: Harness) -> None:
    async def wrong_name(url: str, request: dict[str, str]) -> tuple[int, Any]:
        leaf = sign_leaf(ISSUER, request["csr"].encode(), dns_name=workload_identity("x", "emojivoto"),
                         now=h.time.now)
        return 200, {"leaf": leaf.decode(), "chain": [ISSUER.cert_pem.decode()]}

    other_key_csr = make_csr(new_private_key(), WEB).decode()

    async def wrong_key(url: str, request: dict[str, str]) -> tuple[int, Any]:
        leaf = sign_leaf(ISSUER, other_key_csr.encode(), dns_name=WEB, now=h.time.now)
        return 200, {"leaf": leaf.decode(), "chain": [ISSUER.cert_pem.decode()]}

    h.client._http = wrong_name
    h.start()
    await h.time.next_sleep()
    assert h.client.current is None and "not valid for " + WEB in (h.client.last_error or "")
    h.client._http = wrong_key
    h.time.elapse(1)
    await h.time.next_sleep()
    assert h.client.current is None and "for another key" in (h.client.last_error or "")


async def test_not_ready_once_the_certificate_expires_without_renewal(h: Harness) -> None:
    h.start()
    h.time.elapse(await h.time.next_sleep())
    await h.time.next_sleep()
    h.service.mode = "down"
    h.time.elapse(LIFETIME.total_seconds())
    await h.time.next_sleep()
    assert h.client.current is not None and not h.client.ready


"""`isthmus destination`: the destination service as a control-plane pod.

The pod first gets its own certificate: an `IdentityClient` with the pod's
service-account token asks the identity service (its Service's cluster IP,
looked up through the API, so no cluster DNS is needed) for
`<sa>.<ns>.serviceaccount.identity.isthmus.<td>` and keeps it renewed. Until
the first certificate arrives, the admin address answers `/live` 200 and
`/ready` 503 saying what it waits for; then the `DestinationService` takes
over the admin address and starts serving, with its credentials following
the client's renewals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web
from lightkube import AsyncClient

from isthmus.adapters.incluster import (
    InClusterError,
    in_cluster_client,
    pod_namespace,
    service_account_dir,
    service_address,
)
from isthmus.components.controlplane.env import ControlPlaneConfigError, Env
from isthmus.components.destination import DestinationService
from isthmus.components.identity import IdentityClient
from isthmus.core.identity import retry_delay, workload_identity
from isthmus.resources import manifests as m

log = logging.getLogger("isthmus.controlplane.destination")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DestinationPodConfig:
    trust_anchors_pem: bytes
    trust_domain: str
    cluster_domain: str
    identity_service: str  # "svc:port" of the pod's namespace, "svc.ns:port" or "ip:port"
    identity: str  # this pod's own workload identity
    namespace: str
    token_path: Path
    address: tuple[str, int]
    admin_address: tuple[str, int]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DestinationPodConfig:
        e = Env(env)
        namespace = pod_namespace(env)
        trust_domain = e.trust_domain(m.ENV_DESTINATION_TRUST_DOMAIN)
        account = e.get(m.ENV_DESTINATION_SERVICE_ACCOUNT, m.DESTINATION_SA)
        try:
            identity = workload_identity(account, namespace, trust_domain)
        except ValueError as err:
            raise ControlPlaneConfigError(f"{m.ENV_DESTINATION_SERVICE_ACCOUNT}: {err}") from None
        return cls(
            trust_anchors_pem=e.certificates(m.ENV_DESTINATION_TRUST_ANCHORS, "the trust anchors, PEM"),
            trust_domain=trust_domain,
            cluster_domain=e.get(m.ENV_DESTINATION_CLUSTER_DOMAIN, "cluster.local"),
            identity_service=e.require(m.ENV_DESTINATION_IDENTITY_SVC,
                                       "the identity service, SERVICE:PORT or IP:PORT"),
            identity=identity,
            namespace=namespace,
            token_path=service_account_dir(env) / "token",
            address=e.address(m.ENV_DESTINATION_LISTEN_ADDR, "where to serve resolutions"),
            admin_address=e.address(m.ENV_DESTINATION_ADMIN_ADDR, "where to serve /metrics, /ready, /live"),
        )


async def _until_stopped(stop: asyncio.Event, work: Awaitable[object]) -> bool:
    """Run `work` until it ends (True) or `stop` is set first (False)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, stopper, return_exceptions=True)
    return task.done() and not task.cancelled() and task.exception() is None


class _WaitingAdmin:
    """The admin address while the pod has no certificate: live, not ready, and why."""

    def __init__(self, address: tuple[str, int], reason: Callable[[], str]) -> None:
        self._address = address
        self._reason = reason
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/live", self._live)
        app.router.add_get("/ready", self._ready)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, *self._address, reuse_address=True).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _live(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(text=f"not ready: {self._reason()}\n", status=503)


async def run_destination(config: DestinationPodConfig, stop: asyncio.Event, *,
                          kube: AsyncClient | None = None,
                          sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Get a certificate, then serve until `stop` is set (module docstring)."""
    client = kube or in_cluster_client()
    state = {"waiting": f"looking up the identity service {config.identity_service}"}
    admin = _WaitingAdmin(config.admin_address, lambda: state["waiting"])
    identity: IdentityClient | None = None
    identity_task: asyncio.Task[None] | None = None
    service: DestinationService | None = None
    try:
        await admin.start()
        addr = await _identity_address(client, config, stop, sleep, state)
        if addr is None:
            return
        certified = asyncio.Event()
        identity = IdentityClient(service_url=f"https://{addr}", service_ca_pem=config.trust_anchors_pem,
                                  identity=config.identity, token_path=config.token_path, clock=_now,
                                  on_update=lambda _creds: certified.set())
        identity_task = asyncio.create_task(identity.run(), name="destination-identity")
        state["waiting"] = f"waiting for a certificate for {config.identity} from {addr}"
        log.info("%s", state["waiting"])
        if not await _until_stopped(stop, certified.wait()):
            return
        await admin.close()
        service = DestinationService(client, lambda: identity.current if identity else None,
                                     config.trust_anchors_pem, trust_domain=config.trust_domain,
                                     cluster_domain=config.cluster_domain, address=config.address,
                                     admin_address=config.admin_address)
        await service.start()
        await stop.wait()
    finally:
        await admin.close()
        if service is not None:
            await service.close()
        if identity_task is not None:
            identity_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await identity_task
        if kube is None:
            await client.close()


async def _identity_address(client: AsyncClient, config: DestinationPodConfig, stop: asyncio.Event,
                            sleep: Callable[[float], Awaitable[None]], state: dict[str, str]) -> str | None:
    """The identity service's cluster IP and port, retried with back-off until found or stopped."""
    attempt = 0
    while not stop.is_set():
        try:
            return await service_address(client, config.identity_service, config.namespace)
        except InClusterError as e:
            delay = retry_delay(attempt, jitter=random.random())
            attempt += 1
            state["waiting"] = f"cannot find the identity service yet: {e}"
            log.warning("%s; retrying in %.1f s", state["waiting"], delay)
            await _until_stopped(stop, sleep(delay))
    return None

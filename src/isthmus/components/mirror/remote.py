"""The remote cluster as a service mirror watches it: through the Link's credentials.

`client_from_kubeconfig` turns the kubeconfig of the Link's credentials Secret
into a lightkube client (its current context). `RemoteCluster` watches the
remote Services and Endpoints of every namespace with that client and keeps
a verdict on the remote API: `Reachable`, or why not — `Unauthorized` (401:
the credentials are refused), `Forbidden` (403: they may not list or watch
Services and Endpoints), `Unreachable` (no answer: connection refused, TLS,
timeouts) or `Error` (any other API error). Failed lists are retried with
back-off (1 s doubling to 30 s) and a cheap list every `check_period`
notices credentials revoked while a watch is open. Nothing here ever
deletes anything: a remote that cannot be reached keeps its last known
objects in the caches.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import yaml
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.config.kubeconfig import SingleConfig
from lightkube.resources.core_v1 import Endpoints, Service

from isthmus.adapters import kubehttp
from isthmus.adapters.kube import Handler
from isthmus.components.mirror.informer import WatchedInformer

log = logging.getLogger("isthmus.mirror.remote")

__all__ = ["CredentialsError", "RemoteCluster", "client_from_kubeconfig", "describe_failure"]


class CredentialsError(Exception):
    """The credentials Secret is missing or holds no usable kubeconfig."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def remote_config(kubeconfig: bytes, *, secret: str = "the credentials Secret") -> SingleConfig:
    try:
        data = yaml.safe_load(kubeconfig)
    except yaml.YAMLError as e:
        raise CredentialsError("CredentialsInvalid", f"{secret}: key kubeconfig is not YAML: {e}") from None
    if not isinstance(data, dict):
        raise CredentialsError("CredentialsInvalid", f"{secret}: key kubeconfig is not a kubeconfig")
    try:
        config = KubeConfig.from_dict(data).get()
    except Exception as e:
        raise CredentialsError("CredentialsInvalid",
                               f"{secret}: key kubeconfig is not a usable kubeconfig ({type(e).__name__}: {e})"
                               ) from None
    if config is None or not config.cluster.server:
        raise CredentialsError("CredentialsInvalid", f"{secret}: the kubeconfig names no current context")
    return config


def client_from_kubeconfig(kubeconfig: bytes, *, secret: str = "the credentials Secret") -> AsyncClient:
    """A lightkube client for the kubeconfig's current context; `CredentialsError` when there is none."""
    return kubehttp.client(remote_config(kubeconfig, secret=secret))


def describe_failure(e: BaseException, server: str) -> tuple[str, str]:
    """(reason, message) for a failed call to the remote API at `server`."""
    if isinstance(e, ApiError):
        code, message = e.status.code, e.status.message
        if code == 401:
            return "Unauthorized", f"the remote API at {server} refuses the Link's credentials (401): {message}"
        if code == 403:
            return "Forbidden", (f"the Link's credentials may not list and watch Services and Endpoints "
                                 f"at {server} (403): {message}")
        return "Error", f"the remote API at {server} answered {code}: {message}"
    if isinstance(e, OSError | ssl.SSLError) or type(e).__module__.startswith(("httpx", "httpcore")):
        return "Unreachable", f"cannot reach the remote API at {server}: {type(e).__name__}: {e}"
    return "Error", f"watching the remote API at {server} failed: {type(e).__name__}: {e}"


class RemoteCluster:
    def __init__(self, client: AsyncClient, *, server: str, on_service: Handler, on_endpoints: Handler,
                 on_state: Callable[[], None] = lambda: None,
                 on_synced: Callable[[], Awaitable[None] | None] = lambda: None,
                 check_period: float = 10.0, min_retry: float = 1.0, max_retry: float = 30.0) -> None:
        self.client = client
        self.server = server
        self._on_state = on_state
        self._on_synced = on_synced
        self._check_period = check_period
        self._outcomes: dict[str, BaseException | bool | None] = {"services": False, "endpoints": False}
        self.state, self.message = "Unknown", f"connecting to the remote API at {server}"
        self.services = WatchedInformer(client, Service, handler=on_service,
                                        on_list=lambda e: self._listed("services", e),
                                        min_retry=min_retry, max_retry=max_retry)
        self.endpoints = WatchedInformer(client, Endpoints, handler=on_endpoints,
                                         on_list=lambda e: self._listed("endpoints", e),
                                         min_retry=min_retry, max_retry=max_retry)

    @property
    def synced(self) -> bool:
        return self.services.synced.is_set() and self.endpoints.synced.is_set()

    def _listed(self, what: str, error: BaseException | None) -> None:
        self._outcomes[what] = error
        failed = next((e for e in self._outcomes.values() if isinstance(e, BaseException)), None)
        if failed is not None:
            state, message = describe_failure(failed, self.server)
        elif all(e is None for e in self._outcomes.values()):
            state, message = "Reachable", f"watching the remote API at {self.server}"
        else:
            return
        if (state, message) != (self.state, self.message):
            if state == "Reachable":
                log.info("remote API %s reachable", self.server)
            else:
                log.warning("remote API: %s", message)
            self.state, self.message = state, message
            self._on_state()

    async def _check(self) -> None:
        """A cheap list now and then, so refused credentials show even while watches stay open."""
        while True:
            await asyncio.sleep(self._check_period)
            try:
                listing = self.client.list(Service, namespace="*", chunk_size=1)
                async for _ in listing:
                    break
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._listed("check", e)
            else:
                self._listed("check", None)

    async def _synced(self) -> None:
        await self.services.synced.wait()
        await self.endpoints.synced.wait()
        result = self._on_synced()
        if result is not None:
            await result

    async def run(self) -> None:
        await asyncio.gather(self.services.run(), self.endpoints.run(), self._check(), self._synced())

    async def close(self) -> None:
        await self.client.close()

    def cached(self) -> dict[str, Any]:
        return {"services": len(self.services.cache), "endpoints": len(self.endpoints.cache)}

    def __repr__(self) -> str:
        return f"<RemoteCluster {self.server} {self.state} {self.cached()}>"

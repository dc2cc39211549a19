"""The service mirror's own identity: its settings read from the control plane, and what it says without them.

A small aiohttp server plays the cluster API (plain HTTP on a loopback
address); the client is a real lightkube client from `kubehttp.client`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from lightkube import KubeConfig

from isthmus.adapters import kubehttp
from isthmus.components.mirror.gateway import MtlsProbe, ProbeFailed
from isthmus.components.mirror.identity import (
    MirrorIdentity,
    SettingsUnavailable,
    read_identity_settings,
)
from tests.support.pki import ROOT

pytestmark = pytest.mark.asyncio

HOST = "127.251.7.2"


def status(code: int, message: str) -> web.Response:
    return web.Response(status=code, headers={"Content-Type": "application/json"}, body=json.dumps(
        {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "message": message}).encode())


def obj(kind: str, name: str, **fields: Any) -> web.Response:
    return web.Response(headers={"Content-Type": "application/json"}, body=json.dumps(
        {"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": "isthmus"}, **fields}).encode())


class Api:
    def __init__(self) -> None:
        self.roots: Callable[[], web.Response] | None = None  # a new answer per request

    async def handle(self, request: web.Request) -> web.Response:
        name = request.path.rsplit("/", 1)[1]
        if name == "isthmus-identity-trust-roots":
            if self.roots is not None:
                return self.roots()
            return obj("ConfigMap", name, data={"ca-bundle.crt": ROOT.cert_pem.decode()})
        if name == "isthmus-config":
            return obj("ConfigMap", name, data={"trustDomain": "east.example"})
        if name == "isthmus-identity":
            return obj("Service", name, spec={"clusterIP": "127.9.128.3", "ports": [{"port": 8080}]})
        return status(404, f"{name} not found")


@pytest.fixture
async def api() -> AsyncIterator[tuple[Api, Any]]:
    state = Api()
    app = web.Application()
    app.router.add_get("/{tail:.*}", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = kubehttp.client(KubeConfig.from_dict({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": f"http://{HOST}:{port}"}}],
        "users": [{"name": "t", "user": {"token": "t"}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}]}))
    try:
        yield state, client
    finally:
        await client.close()
        await runner.cleanup()


class Stop(BaseException):
    """Ends `MirrorIdentity.run` at its first retry."""


async def stop_at_retry(seconds: float) -> None:
    raise Stop


async def test_the_settings_come_from_the_control_plane(api: tuple[Api, Any]) -> None:
    _, client = api
    settings = await read_identity_settings(client)
    assert settings.anchors_pem == ROOT.cert_pem
    assert settings.trust_domain == "east.example"
    assert settings.identity_url == "https://127.9.128.3:8080"


@pytest.mark.parametrize(("roots", "said"), [
    (lambda: status(403, 'configmaps "isthmus-identity-trust-roots" is forbidden'),
     'cannot read ConfigMap isthmus/isthmus-identity-trust-roots: configmaps "isthmus-identity-trust-roots" '
     "is forbidden; is the control plane installed, and the Link's mirror RBAC applied?"),
    (lambda: obj("ConfigMap", "isthmus-identity-trust-roots", data={"ca-bundle.crt": "nothing"}),
     "ConfigMap isthmus/isthmus-identity-trust-roots holds no trust anchors under 'ca-bundle.crt'"),
])
async def test_without_settings_the_mirror_has_no_certificate_and_its_probes_say_why(
        api: tuple[Api, Any], roots: Callable[[], web.Response], said: str) -> None:
    state, client = api
    state.roots = roots
    identity = MirrorIdentity(client, service_account="isthmus-service-mirror-east",
                              namespace="isthmus-multicluster", token_path=Path("/nonexistent/token"),
                              sleep=stop_at_retry)  # the token is never read: the settings come first
    with pytest.raises(Stop):
        await identity.run()
    assert identity.credentials is None and identity.identity_client is None
    assert identity.why_not().startswith(said), identity.why_not()
    with pytest.raises(ProbeFailed, match="this mirror has no certificate to probe with: "):
        await MtlsProbe(identity)("127.251.7.3", 4191, "/ready", 1.0, "gw")
    with pytest.raises(SettingsUnavailable):
        await read_identity_settings(client)

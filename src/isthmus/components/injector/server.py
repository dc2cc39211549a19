"""The proxy injector: a mutating admission webhook that adds the sidecar proxy to pods.

The API server sends `POST /` with an `admission.k8s.io/v1` AdmissionReview
for every Pod CREATE the MutatingWebhookConfiguration selects (HTTPS; the
configuration's `caBundle` is the CA of this server's certificate). The
answer is the same AdmissionReview with a `response`: always `allowed`
(the injector never refuses a pod), and, when `core.inject.decide` says so,
a base64 `JSONPatch` from `core.inject.patch`. To fill the proxy's
environment the injector asks the cluster API for the pod's namespace (its
`isthmus.io/inject` annotation) and for the cluster IPs of the identity and
destination Services, so injected proxies need no cluster DNS.

Promises:

- a pod is never refused: when a lookup fails, the pod is admitted as it
  came, with an AdmissionResponse `warnings` entry saying why it was not
  injected (kubectl shows it) and a log line; the webhook's failurePolicy
  covers only an injector that does not answer at all;
- a body that is not an AdmissionReview v1 gets HTTP 400 with
  `{"error": reason}`; a review of anything but a Pod CREATE is allowed
  unchanged;
- TLS 1.2 or later with the certificate of the injector's Secret; when
  `tls_source` is given it is asked every `reload_interval` seconds and a
  changed certificate is used for new connections (a re-applied install
  brings a new one) without a restart;
- the admin address (plain HTTP) serves `/ready`, `/live` and `/metrics`
  (`injector_admission_reviews_total{result="injected|skipped|failed"}`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from aiohttp import web
from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Namespace, Secret

from isthmus.adapters.incluster import InClusterError, service_address
from isthmus.adapters.x509 import Credentials
from isthmus.components.identity.tlsconfig import use_credentials
from isthmus.components.webapp import WebService, json_response
from isthmus.core.inject import InjectConfig, decide, patch

log = logging.getLogger("isthmus.injector")

MAX_BODY = 4 * 1024 * 1024
RELOAD_INTERVAL = 2.0
REVIEW_API = "admission.k8s.io/v1"

NamespaceLookup = Callable[[str], Awaitable[Mapping[str, str]]]
AddressLookup = Callable[[], Awaitable[tuple[str, str]]]
TlsSource = Callable[[], Awaitable[Credentials | None]]


class LookupFailed(Exception):
    """The cluster API could not tell the injector what it needs for one pod."""


@dataclass(frozen=True)
class InjectorSettings:
    """What the injector puts into proxies, less the addresses it looks up per pod."""

    image: str
    version: str
    trust_anchors_pem: str
    trust_domain: str = "cluster.local"
    cluster_domain: str = "cluster.local"
    control_plane_namespace: str = "isthmus"
    proxy_log_level: str = "info"

    def inject_config(self, identity_addr: str, destination_addr: str) -> InjectConfig:
        return InjectConfig(image=self.image, version=self.version,
                            trust_anchors_pem=self.trust_anchors_pem, identity_addr=identity_addr,
                            destination_addr=destination_addr, trust_domain=self.trust_domain,
                            cluster_domain=self.cluster_domain,
                            control_plane_namespace=self.control_plane_namespace,
                            log_level=self.proxy_log_level)


class InjectorMetrics:
    def __init__(self) -> None:
        self.reviews = {"injected": 0, "skipped": 0, "failed": 0}

    def render(self) -> str:
        name = "injector_admission_reviews_total"
        lines = [f"# HELP {name} Pod admission reviews answered, by what was done.",
                 f"# TYPE {name} counter"]
        lines += [f'{name}{{result="{k}"}} {v}' for k, v in self.reviews.items()]
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return "<InjectorMetrics " + " ".join(f"{k}={v}" for k, v in self.reviews.items()) + ">"


def server_tls_context(creds: Credentials) -> ssl.SSLContext:
    """A TLS 1.2+ server context presenting `creds` (the API server verifies it with the caBundle)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    use_credentials(ctx, creds)
    return ctx


class InjectorServer(WebService):
    """The webhook server (see the module docstring)."""

    _runner_options: ClassVar[dict[str, Any]] = {"handle_signals": False}

    def __init__(self, settings: InjectorSettings, credentials: Credentials, *,
                 namespace_annotations: NamespaceLookup, addresses: AddressLookup,
                 address: tuple[str, int], admin_address: tuple[str, int] | None,
                 tls_source: TlsSource | None = None, reload_interval: float = RELOAD_INTERVAL,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.settings = settings
        self.metrics = InjectorMetrics()
        self._creds = credentials
        self._namespace_annotations = namespace_annotations
        self._addresses = addresses
        self._address = address
        self._admin_address = admin_address
        self._tls_source = tls_source
        self._reload_interval = reload_interval
        self._sleep = sleep
        self._ctx: ssl.SSLContext | None = None
        self._runners: list[web.AppRunner] = []
        self._reloader: asyncio.Task[None] | None = None
        self.port = 0
        self.admin_port = 0

    @property
    def credentials(self) -> Credentials:
        return self._creds

    def __repr__(self) -> str:
        state = f"serving {self.url}" if self._runners else "stopped"
        return f"<InjectorServer {state} {self.metrics!r}>"

    async def start(self) -> None:
        self._ctx = server_tls_context(self._creds)
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/", self._review)
        try:
            self.port = await self._serve(app, self._address, self._ctx)
            if self._admin_address is not None:
                admin = web.Application()
                admin.router.add_get("/ready", self._ok)
                admin.router.add_get("/live", self._ok)
                admin.router.add_get("/metrics", self._metrics)
                self.admin_port = await self._serve(admin, self._admin_address, None)
        except BaseException:
            await self.close()
            raise
        if self._tls_source is not None:
            self._reloader = asyncio.create_task(self._reload_loop(), name="injector-tls-reload")
        log.info("proxy injector listening on %s", self.url)

    async def close(self) -> None:
        if self._reloader is not None:
            self._reloader.cancel()
            await asyncio.gather(self._reloader, return_exceptions=True)
            self._reloader = None
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()

    # ------------------------------------------------------------------ TLS reload

    async def reload(self) -> bool:
        """Ask `tls_source` once; use a changed certificate for new connections. Whether it changed."""
        if self._tls_source is None or self._ctx is None:
            return False
        creds = await self._tls_source()
        if creds is None or creds == self._creds:
            return False
        use_credentials(self._ctx, creds)
        self._creds = creds
        log.info("proxy injector certificate reloaded")
        return True

    async def _reload_loop(self) -> None:
        while True:
            await self._sleep(self._reload_interval)
            try:
                await self.reload()
            except Exception as e:  # a bad or unreadable Secret must not stop the webhook
                log.error("could not reload the injector's certificate: %s", e)

    # ------------------------------------------------------------------ handlers

    async def _ok(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics.render(), content_type="text/plain", charset="utf-8")

    async def _review(self, request: web.Request) -> web.Response:
        usage = f'send an AdmissionReview ({{"apiVersion": "{REVIEW_API}", "kind": "AdmissionReview", ' \
                f'"request": {{...}}}})'
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return json_response({"error": f"the request body is not JSON; {usage}"}, 400)
        if not isinstance(body, dict) or body.get("kind") != "AdmissionReview":
            return json_response({"error": f"the request body is not an AdmissionReview; {usage}"}, 400)
        if body.get("apiVersion") != REVIEW_API:
            return json_response({"error": f"AdmissionReview {body.get('apiVersion')!r} is not served; "
                                   f"this webhook speaks {REVIEW_API}"}, 400)
        req = body.get("request")
        if not isinstance(req, dict) or not isinstance(req.get("uid"), str) or not req["uid"]:
            return json_response({"error": f"the AdmissionReview has no request with a uid; {usage}"}, 400)
        response = await self.respond(req)
        return json_response({"apiVersion": REVIEW_API, "kind": "AdmissionReview", "response": response})

    async def respond(self, req: Mapping[str, Any]) -> dict[str, Any]:
        """The AdmissionResponse for one AdmissionRequest (module docstring)."""
        response: dict[str, Any] = {"uid": req.get("uid"), "allowed": True}
        kind: Mapping[str, Any] = req["kind"] if isinstance(req.get("kind"), dict) else {}
        pod = req.get("object")
        if (req.get("operation") != "CREATE" or kind.get("kind") != "Pod" or kind.get("group")
                or not isinstance(pod, dict)):
            return response
        meta: Mapping[str, Any] = pod["metadata"] if isinstance(pod.get("metadata"), dict) else {}
        namespace = str(req.get("namespace") or meta.get("namespace") or "default")
        name = str(meta.get("name") or meta.get("generateName") or req.get("name") or "")
        try:
            annotations = await self._namespace_annotations(namespace)
            decision = decide(pod, annotations)
            if not decision.inject:
                self.metrics.reviews["skipped"] += 1
                log.debug("pod %s/%s not injected: %s", namespace, name, decision.reason)
                return response
            identity_addr, destination_addr = await self._addresses()
        except LookupFailed as e:
            self.metrics.reviews["failed"] += 1
            log.error("pod %s/%s admitted without the isthmus proxy: %s", namespace, name, e)
            return {**response, "warnings": [f"isthmus: pod not injected with the proxy: {e}"]}
        ops = patch(pod, namespace, self.settings.inject_config(identity_addr, destination_addr))
        self.metrics.reviews["injected"] += 1
        log.info("injected the proxy into pod %s/%s (%s)", namespace, name, decision.reason)
        return {**response, "patchType": "JSONPatch",
                "patch": base64.b64encode(orjson.dumps(ops)).decode()}


# ------------------------------------------------------------------ wiring to a cluster API


def kube_lookups(kube: AsyncClient, *, namespace: str, identity_service: str,
                 destination_service: str) -> tuple[NamespaceLookup, AddressLookup]:
    """The injector's two lookups through `kube` (the control plane's `namespace` for the Services)."""

    async def namespace_annotations(name: str) -> Mapping[str, str]:
        try:
            ns = await kube.get(Namespace, name)
        except ApiError as e:
            raise LookupFailed(f"cannot read namespace {name}: {e.status.message}") from None
        except Exception as e:
            raise LookupFailed(f"cannot read namespace {name}: {type(e).__name__}: {e}") from None
        return dict(ns.metadata.annotations or {}) if ns.metadata is not None else {}

    async def addresses() -> tuple[str, str]:
        try:
            return (await service_address(kube, identity_service, namespace),
                    await service_address(kube, destination_service, namespace))
        except InClusterError as e:
            raise LookupFailed(str(e)) from None

    return namespace_annotations, addresses


def kube_tls_source(kube: AsyncClient, *, namespace: str, secret: str) -> TlsSource:
    """Reads the injector's serving certificate (`tls.crt`, `tls.key`) from its Secret."""

    async def read() -> Credentials | None:
        obj = await kube.get(Secret, secret, namespace=namespace)
        data = obj.data or {}
        if "tls.crt" not in data or "tls.key" not in data:
            raise LookupFailed(f"Secret {namespace}/{secret} lacks tls.crt or tls.key")
        return Credentials(base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"]))

    return read

"""Admission webhooks in the API server: creates and updates go through the cluster's webhooks before they are stored.

`Admission` runs a write's phases (`Objects.begin_*`, `complete_*`, `store_*`)
with the webhooks between them, as kube-apiserver does: the mutating webhooks
whose rules and selectors match see the decoded object one after another (in
the order `core.admission.ordered` gives) and may patch it; the patched object
is checked against the kind's schema again; then the kind's strategy runs, the
validating webhooks see the result (all at once) and may refuse it, and only
then is it stored. Decisions (matching, the review, reading the answer, the
Status of a refusal) are `isthmus.core.admission`'s; this module does the
HTTPS calls.

- The configurations are read from the store once and kept until one of them
  changes (the store tells), as the RBAC authorizer does.
- A webhook's `clientConfig.service` is resolved through the store to a ready
  address of the Service's Endpoints and the port they record for the
  Service's port (a named target port resolved), and the connection is made
  there; the server certificate is checked against `caBundle` for
  `<name>.<namespace>.svc`. `clientConfig.url` is called as given. Only
  loopback addresses are called (the embedded cluster uses nothing else).
- One aiohttp session for every call; one TLS context per `caBundle`.
- `timeoutSeconds` bounds each call; a call that fails (connection, TLS,
  timeout, an answer that is not an AdmissionReview response) refuses the
  write with kube-apiserver's 500 under `failurePolicy: Fail` and is skipped
  under `Ignore`.

Writes with no webhook whose rules match take the plain synchronous path.
Not sent to webhooks: DELETE and CONNECT, the `scale` and `token`
subresources, the reviews, and the objects the API server writes itself
(bootstrap, a namespace's `default` ServiceAccount).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import os
import random
import ssl
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
import orjson
from yarl import URL

from isthmus.adapters.store import Event, make_key
from isthmus.core import admission as core
from isthmus.core.rbac import User
from isthmus.resources.registry import ResourceType

from .errors import ApiError, conflict
from .objects import PATCH_ATTEMPTS, Objects, PendingUpdate, WriteResult

log = logging.getLogger("isthmus.apiserver.admission")

MAX_RESPONSE = 3 * 1024 * 1024  # the largest webhook answer read
_CONFIG_RESOURCES = {f"{core.GROUP}/mutatingwebhookconfigurations": True,
                     f"{core.GROUP}/validatingwebhookconfigurations": False}
_SSL_CACHE_SIZE = 64


class CallFailed(Exception):
    """Calling a webhook failed; the message is the reason kube-apiserver gives after the webhook's name."""


def _api_error(st: core.Status) -> ApiError:
    return ApiError(st.code, st.reason, st.message, details=dict(st.details) if st.details else None)


def request_options(kind: str, query: Mapping[str, Any]) -> dict[str, Any]:
    """The CreateOptions / UpdateOptions of a request, as its AdmissionReview carries them."""
    out: dict[str, Any] = {"kind": kind, "apiVersion": "meta.k8s.io/v1"}
    getall = getattr(query, "getall", None)
    dry_run = getall("dryRun", []) if getall is not None else ([query["dryRun"]] if "dryRun" in query else [])
    if dry_run:
        out["dryRun"] = list(dry_run)
    for key in ("fieldManager", "fieldValidation"):
        if query.get(key):
            out[key] = query[key]
    return out


class Admission:
    def __init__(self, objects: Objects, *, new_uid: Callable[[], str] = lambda: str(uuid.uuid4()),
                 choose: Callable[[Sequence[tuple[str, int]]], tuple[str, int]] = random.choice) -> None:
        self._objects = objects
        self._store = objects.store
        self._new_uid = new_uid
        self._choose = choose
        self._hooks: tuple[list[core.Webhook], list[core.Webhook]] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._contexts: dict[bytes, ssl.SSLContext] = {}

        def on_change(event: Event) -> None:
            if event.resource in _CONFIG_RESOURCES:
                self._hooks = None

        self._unsubscribe = self._store.subscribe(on_change)

    def __repr__(self) -> str:
        hooks = self._hooks
        state = "not loaded" if hooks is None else f"mutating={len(hooks[0])} validating={len(hooks[1])}"
        return f"<Admission {state} tls_contexts={len(self._contexts)}>"

    async def close(self) -> None:
        self._unsubscribe()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- configuration ------------------------------------------------------------

    def webhooks(self) -> tuple[list[core.Webhook], list[core.Webhook]]:
        """The mutating and the validating webhooks, in calling order."""
        if self._hooks is None:
            loaded: dict[bool, list[core.Webhook]] = {True: [], False: []}
            for resource, mutating in _CONFIG_RESOURCES.items():
                configs = []
                for rec in self._store.list(resource):
                    obj = rec.obj()
                    try:
                        core.webhooks_of(obj, mutating=mutating)
                    except (ValueError, TypeError) as e:
                        log.error("ignoring unreadable webhook configuration %s: %s", rec.key, e)
                        continue
                    configs.append(obj)
                loaded[mutating] = core.ordered(configs, mutating=mutating)
            self._hooks = (loaded[True], loaded[False])
        return self._hooks

    def _candidates(self, req: core.Request) -> tuple[list[core.Webhook], list[core.Webhook]]:
        mutating, validating = self.webhooks()
        if not mutating and not validating:
            return [], []
        return ([w for w in mutating if core.matches_rules(w, req)],
                [w for w in validating if core.matches_rules(w, req)])

    # -- the writes -----------------------------------------------------------------

    async def create(self, rt: ResourceType, namespace: str, body: Any, *, user: User, field_validation: str,
                     dry_run: bool, options: Mapping[str, Any] | None = None) -> WriteResult:
        objs = self._objects
        req = self._request("CREATE", rt, namespace if rt.namespaced else "", "", user, dry_run=dry_run,
                            options=options)
        mutating, validating = self._candidates(req)
        if not mutating and not validating:
            return objs.create(rt, namespace, body, field_validation=field_validation, dry_run=dry_run)
        p = objs.begin_create(rt, namespace, body, field_validation=field_validation)
        if mutating:
            req = dataclasses.replace(req, name=p.obj["metadata"].get("name") or "", object=p.obj)
            p.obj, warnings = await self._mutate(mutating, rt, req)
            p.warnings += warnings
        objs.complete_create(p)
        if validating:
            try:
                p.warnings += await self._validate(validating, dataclasses.replace(
                    req, name=p.obj["metadata"]["name"], object=p.obj))
            except BaseException:
                objs.abandon_create(p)
                raise
        return objs.store_create(p, dry_run=dry_run)

    async def update(self, rt: ResourceType, namespace: str, name: str, body: Any, *, subresource: str,
                     user: User, field_validation: str, dry_run: bool,
                     options: Mapping[str, Any] | None = None) -> WriteResult:
        objs = self._objects
        req = self._request("UPDATE", rt, namespace if rt.namespaced else "", name, user, subresource=subresource,
                            dry_run=dry_run, options=options)
        hooks = self._candidates(req)
        if not hooks[0] and not hooks[1]:
            return objs.update(rt, namespace, name, body, subresource=subresource,
                               field_validation=field_validation, dry_run=dry_run)
        p = objs.begin_update(rt, namespace, name, body, subresource=subresource)
        return await self._admit_update(p, req, hooks, field_validation=field_validation, dry_run=dry_run)

    async def patch(self, rt: ResourceType, namespace: str, name: str, content_type: str, raw: bytes, *,
                    subresource: str, user: User, field_validation: str, dry_run: bool,
                    options: Mapping[str, Any] | None = None) -> WriteResult:
        objs = self._objects
        req = self._request("UPDATE", rt, namespace if rt.namespaced else "", name, user, subresource=subresource,
                            dry_run=dry_run, options=options)
        hooks = self._candidates(req)
        if not hooks[0] and not hooks[1]:
            return objs.patch(rt, namespace, name, content_type, raw, subresource=subresource,
                              field_validation=field_validation, dry_run=dry_run)
        doc = objs.decode_patch(raw)
        for _attempt in range(PATCH_ATTEMPTS):
            p = objs.begin_patch(rt, namespace, name, content_type, doc, subresource=subresource)
            try:
                return await self._admit_update(p, req, hooks, field_validation=field_validation, dry_run=dry_run)
            except ApiError as e:
                if p.may_retry(e, dry_run):
                    continue
                raise
        raise conflict(rt.plural, rt.group, name)

    async def _admit_update(self, p: PendingUpdate, req: core.Request,
                            hooks: tuple[list[core.Webhook], list[core.Webhook]], *,
                            field_validation: str, dry_run: bool) -> WriteResult:
        objs, rt = self._objects, p.rt
        mutating, validating = hooks
        old = p.cur.obj()
        if mutating:
            new = {**copy.deepcopy(p.new), "apiVersion": rt.api_version, "kind": rt.kind}
            new, warnings = objs.validate(rt, new, field_validation)
            p.warnings += warnings
            p.new, warnings = await self._mutate(mutating, rt, dataclasses.replace(req, object=new, old_object=old))
            p.warnings += warnings
        objs.complete_update(p, field_validation=field_validation)
        if validating:
            try:
                p.warnings += await self._validate(validating, dataclasses.replace(req, object=p.new, old_object=old))
            except BaseException:
                objs.abandon_update(p)
                raise
        return objs.store_update(p, dry_run=dry_run)

    @staticmethod
    def _request(operation: str, rt: ResourceType, namespace: str, name: str, user: User, *,
                 subresource: str = "", dry_run: bool, options: Mapping[str, Any] | None) -> core.Request:
        return core.Request(operation=operation, group=rt.group, version=rt.version, resource=rt.plural,
                            kind=rt.kind, namespaced=rt.namespaced, namespace=namespace, name=name, user=user,
                            subresource=subresource, dry_run=dry_run, options=options)

    # -- calling webhooks -------------------------------------------------------------

    def _namespace_labels(self, req: core.Request) -> Mapping[str, str] | None:
        ns = core.namespace_to_look_up(req)
        if not ns:
            return None
        rec = self._store.get(make_key("namespaces", "", ns))
        if rec is None:
            return None
        labels = (rec.obj().get("metadata") or {}).get("labels")
        return labels if isinstance(labels, dict) else {}

    async def _mutate(self, hooks: list[core.Webhook], rt: ResourceType,
                      req: core.Request) -> tuple[dict[str, Any], list[str]]:
        """Call the mutating webhooks in order; returns the object as they left it and their warnings."""
        assert req.object is not None
        obj = dict(req.object)
        warnings: list[str] = []
        ns_labels = self._namespace_labels(req)
        for hook in hooks:
            req = dataclasses.replace(req, object=obj)
            if not core.matches(hook, req, ns_labels):
                continue
            resp = await self._call_or_skip(hook, req)
            if resp is None:
                continue
            warnings += resp.warnings
            if not resp.allowed:
                raise _api_error(core.denial(hook, resp))
            if resp.patch:
                try:
                    patched = core.apply_patch(obj, resp.patch)
                except core.PatchFailed as e:
                    raise _api_error(core.patch_failure(hook, f"returned a JSON patch that does not apply: {e}")) \
                        from None
                obj = self._checked(hook, rt, req, patched)
        return obj, warnings

    def _checked(self, hook: core.Webhook, rt: ResourceType, req: core.Request,
                 patched: dict[str, Any]) -> dict[str, Any]:
        """The patched object, if it is still a valid object of the kind in the request's namespace."""
        if patched.get("apiVersion") != rt.api_version or patched.get("kind") != rt.kind:
            raise _api_error(core.patch_failure(
                hook, f"changed the object's apiVersion/kind to {patched.get('apiVersion')}/{patched.get('kind')}"))
        meta = patched.get("metadata")
        if not isinstance(meta, dict):
            raise _api_error(core.patch_failure(hook, "removed the object's metadata"))
        if rt.namespaced and meta.get("namespace") != req.namespace:
            raise _api_error(core.patch_failure(
                hook, f'moved the object to namespace "{meta.get("namespace")}"; it must stay in "{req.namespace}"'))
        try:
            out, _ = self._objects.validate(rt, patched, "Ignore")  # unknown fields a webhook adds are dropped
        except ApiError as e:
            raise _api_error(core.patch_failure(hook, f"made the object invalid: {e.message}")) from None
        return out

    async def _validate(self, hooks: list[core.Webhook], req: core.Request) -> list[str]:
        """Call the validating webhooks at once; returns their warnings or raises the first refusal."""
        ns_labels = self._namespace_labels(req)
        chosen = [h for h in hooks if core.matches(h, req, ns_labels)]
        answers = await asyncio.gather(*(self._call_or_skip(h, req) for h in chosen), return_exceptions=True)
        warnings: list[str] = []
        for hook, answer in zip(chosen, answers, strict=True):
            if isinstance(answer, BaseException):
                raise answer
            if answer is None:
                continue
            warnings += answer.warnings
            if not answer.allowed:
                raise _api_error(core.denial(hook, answer))
        return warnings

    async def _call_or_skip(self, hook: core.Webhook, req: core.Request) -> core.Response | None:
        """The webhook's answer; None when the call failed and its failurePolicy is Ignore."""
        refusal = core.dry_run_refusal(hook, req)
        if refusal is not None:
            raise _api_error(refusal)
        try:
            return await self.call(hook, req)
        except CallFailed as e:
            st = core.call_failure(hook, str(e))
            if st is not None:
                log.warning("failed calling webhook %s, refusing the request: %s", hook.name, e)
                raise _api_error(st) from None
            log.warning("failed calling webhook %s, going on without it (failurePolicy Ignore): %s", hook.name, e)
            return None

    async def call(self, hook: core.Webhook, req: core.Request) -> core.Response:
        """POST the AdmissionReview to the webhook and read its answer; raises CallFailed."""
        uid = self._new_uid()
        body = orjson.dumps(core.review(hook, req, uid))
        shown = hook.client.display_url(hook.timeout_seconds)
        try:
            url, server_hostname, host_header = self._target(hook)
            ctx = self._ssl_context(hook.client.ca_bundle)
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            if host_header:
                headers["Host"] = host_header
            async with asyncio.timeout(hook.timeout_seconds):
                async with self._client().post(url, data=body, headers=headers, ssl=ctx,
                                               server_hostname=server_hostname) as resp:
                    raw = await _read_limited(resp)
                    status, reason = resp.status, resp.reason or ""
        except CallFailed as e:
            raise CallFailed(f'failed to call webhook: Post "{shown}": {e}') from None
        except TimeoutError:
            raise CallFailed(f'failed to call webhook: Post "{shown}": context deadline exceeded (no answer within '
                             f"timeoutSeconds={hook.timeout_seconds})") from None
        except (aiohttp.ClientError, OSError) as e:
            raise CallFailed(f'failed to call webhook: Post "{shown}": {_describe(e)}') from None
        if status != 200:
            text = raw[:200].decode("utf-8", "replace").strip()
            raise CallFailed(f'failed to call webhook: Post "{shown}": the webhook answered HTTP {status} {reason}'
                             + (f": {text}" if text else ""))
        try:
            return core.parse_response(raw, uid=uid, mutating=hook.mutating)
        except core.InvalidResponse as e:
            raise CallFailed(f"received invalid webhook response: {e}") from None

    def _target(self, hook: core.Webhook) -> tuple[str, str | None, str | None]:
        """(URL to connect to, TLS server name, Host header) for the webhook; raises CallFailed."""
        cc = hook.client
        svc = cc.service
        if svc is None:
            host = URL(cc.url).host or ""
            if not core.is_loopback_host(host):
                raise CallFailed(f"{host} is not a loopback address; the embedded cluster calls webhooks on "
                                 "127.0.0.0/8 only")
            return f"{cc.url}?timeout={hook.timeout_seconds}s", None, None
        service = self._store.get(make_key("services", svc.namespace, svc.name))
        endpoints = self._store.get(make_key("endpoints", svc.namespace, svc.name))
        try:
            candidates = core.service_endpoints(svc, service.obj() if service else None,
                                                endpoints.obj() if endpoints else None)
        except core.ResolveError as e:
            raise CallFailed(str(e)) from None
        ip, port = self._choose(candidates)
        if not core.is_loopback_host(ip):
            raise CallFailed(f'endpoint {ip} of service "{svc.name}" is not a loopback address; the embedded '
                             "cluster calls webhooks on 127.0.0.0/8 only")
        host = f"[{ip}]" if ":" in ip else ip
        return (f"https://{host}:{port}{svc.path or '/'}?timeout={hook.timeout_seconds}s", svc.host,
                f"{svc.host}:{svc.port}")

    def _ssl_context(self, ca_bundle: bytes) -> ssl.SSLContext:
        ctx = self._contexts.get(ca_bundle)
        if ctx is None:
            try:
                if ca_bundle:
                    ctx = ssl.create_default_context(cadata=ca_bundle.decode("ascii", "replace"))
                else:
                    ctx = ssl.create_default_context()
            except (ssl.SSLError, ValueError) as e:
                raise CallFailed(f"clientConfig.caBundle holds no usable PEM certificate ({e})") from None
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if len(self._contexts) >= _SSL_CACHE_SIZE:
                self._contexts.clear()
            self._contexts[ca_bundle] = ctx
        return ctx

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=None), trust_env=False, auto_decompress=True)
        return self._session


async def _read_limited(resp: aiohttp.ClientResponse) -> bytes:
    if resp.content_length is not None and resp.content_length > MAX_RESPONSE:
        raise CallFailed(f"the answer is {resp.content_length} bytes; at most {MAX_RESPONSE} are read")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_RESPONSE:
            raise CallFailed(f"the answer is larger than {MAX_RESPONSE} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _describe(e: BaseException) -> str:
    """A connection failure in the words Go's HTTP client would use, with Python's detail."""
    if isinstance(e, aiohttp.ClientConnectorCertificateError):
        return _verify_failure(e.certificate_error)
    if isinstance(e, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError):
        return f"tls: handshake failed: {e.os_error if isinstance(e, aiohttp.ClientConnectorError) else e}"
    if isinstance(e, aiohttp.ClientConnectorError):
        err = e.os_error
        why = (os.strerror(err.errno) if err.errno else err.strerror or str(err)) if err is not None else str(e)
        return f"dial tcp {e.host}:{e.port}: connect: {why.lower()}"
    if isinstance(e, ssl.SSLCertVerificationError):
        return _verify_failure(e)
    if isinstance(e, ssl.SSLError):
        return f"tls: handshake failed: {e}"
    return str(e) or type(e).__name__


# OpenSSL's verify codes that mean "the caBundle does not hold the webhook certificate's CA".
_UNKNOWN_AUTHORITY = {2, 18, 19, 20, 21}  # unable to get issuer; self-signed; self-signed in chain; no local issuer; leaf only


def _verify_failure(e: BaseException) -> str:
    code = getattr(e, "verify_code", None)
    detail = getattr(e, "verify_message", "") or str(e)
    if code in _UNKNOWN_AUTHORITY:
        return (f"tls: failed to verify certificate: x509: certificate signed by unknown authority ({detail}; "
                "clientConfig.caBundle does not hold the CA that signed the webhook's certificate)")
    return f"tls: failed to verify certificate: {detail}"

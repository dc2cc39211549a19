"""The HTTP face of the API server: routing, content negotiation, auth and the verbs.

One catch-all aiohttp route reads the request the way Kubernetes does
(`isthmus.core.requestinfo`), authenticates and authorizes it, and hands it to
`Objects` (stored resources), the review handlers (TokenReview,
SelfSubjectAccessReview, TokenRequest), discovery or OpenAPI. Every failure is
answered with a Kubernetes `Status`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import yaml
from aiohttp import web

from isthmus.core import patch as patching
from isthmus.core.rbac import Attributes, User, describe_forbidden
from isthmus.core.requestinfo import RequestInfo, parse_request
from isthmus.core.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from isthmus.resources import openapi, protobuf, tables
from isthmus.resources.registry import ResourceType, UnknownResource

from . import discovery, errors
from .auth import AuthenticationFailed, Authenticator, Authorizer
from .objects import PATCH_TYPES, Objects, WriteResult, rfc3339
from .tokens import TokenInvalid, TokenIssuer
from .watch import WatchHub, WatchSpec, bookmark_line, json_line, translate

log = logging.getLogger("isthmus.apiserver")

MAX_BODY = 3 * 1024 * 1024
JSON = "application/json"
PROTOBUF = "application/vnd.kubernetes.protobuf"


@dataclass
class ApiContext:
    objects: Objects
    hub: WatchHub
    authn: Authenticator
    authz: Authorizer
    tokens: TokenIssuer
    openapi: openapi.OpenAPICache
    clock: Callable[[], dt.datetime]
    server_address: str
    git_version: str = "v1.32.0-isthmus"
    bookmark_interval: float = 10.0
    watch_coalesce: float = 0.01  # seconds a watch waits after an event for more to send with it
    # A container's log as `kubectl logs` shows it (the pod runner's `logs`); None without a pod runner.
    pod_logs: Callable[..., AsyncIterator[bytes]] | None = None


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None,
          content_type: str = JSON) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type=None,
                        headers={"Content-Type": content_type, **(headers or {})})


def _error(e: errors.ApiError) -> web.Response:
    return web.Response(body=e.body(), status=e.code, headers={"Content-Type": JSON})


def _warning_headers(warnings: list[str]) -> dict[str, str]:
    if not warnings:
        return {}
    return {"Warning": ", ".join('299 - "' + w.replace('"', '\\"') + '"' for w in warnings)}


class ApiServer:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, handler_args={"max_field_size": 65536})
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    # -- entry -------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            user = self._authenticate(request)
            info = parse_request(request.method, request.path, request.query)
            self._authorize(user, info)
            if not info.is_resource:
                return await self._non_resource(request, info)
            return await self._resource(request, info, user)
        except errors.ApiError as e:
            return _error(e)
        except web.HTTPRequestEntityTooLarge:
            return _error(errors.too_large(MAX_BODY))
        except Exception:
            log.exception("internal error serving %s %s", request.method, request.path)
            return _error(errors.ApiError(500, "InternalError",
                                          "an internal error occurred; the API server's log has the details"))

    def _authenticate(self, request: web.Request) -> User:
        transport = request.transport
        peercert = transport.get_extra_info("peercert") if transport is not None else None
        try:
            return self.ctx.authn.authenticate(peercert, request.headers.get("Authorization"))
        except AuthenticationFailed as e:
            log.info("unauthenticated %s %s: %s", request.method, request.path, e)
            raise errors.unauthorized() from None

    def _authorize(self, user: User, info: RequestInfo) -> None:
        if info.is_resource:
            attrs = Attributes(verb=info.verb, group=info.group, resource=info.resource,
                               subresource=info.subresource, namespace=info.namespace, name=info.name)
            if info.resource == "namespaces" and not info.namespace and info.name and info.subresource:
                attrs = Attributes(verb=info.verb, resource="namespaces", subresource=info.subresource,
                                   name=info.name)
        else:
            attrs = Attributes(verb=info.verb, non_resource_path=info.path)
        ok, _ = self.ctx.authz.allowed(user, attrs)
        if not ok:
            raise errors.forbidden(describe_forbidden(user, attrs))

    # -- non-resource paths ------------------------------------------------------

    async def _non_resource(self, request: web.Request, info: RequestInfo) -> web.Response:
        if request.method != "GET":
            raise errors.route_not_found()
        path = request.path.rstrip("/") or "/"
        reg = self.ctx.objects.registry
        accept = request.headers.get("Accept", "")
        if path == "/version":
            return _json({"major": "1", "minor": "32", "gitVersion": self.ctx.git_version,
                          "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
                          "goVersion": "", "compiler": "isthmus", "platform": "linux/amd64"})
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/api":
            if discovery.wants_aggregated(accept):
                return _json(discovery.aggregated(reg, core=True), content_type=discovery.AGGREGATED_V2)
            return _json(discovery.api_versions(self.ctx.server_address))
        if path == "/apis":
            if discovery.wants_aggregated(accept):
                return _json(discovery.aggregated(reg, core=False), content_type=discovery.AGGREGATED_V2)
            return _json(discovery.api_group_list(reg))
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2:
            if parts[1] != "v1":
                raise errors.route_not_found()
            return _json(discovery.resource_list(reg, "", "v1"))
        if parts[0] == "apis" and len(parts) == 2:
            group = discovery.api_group(reg, parts[1])
            if group is None:
                raise errors.route_not_found()
            return _json(group)
        if parts[0] == "apis" and len(parts) == 3:
            if not reg.in_group_version(parts[1], parts[2]):
                raise errors.route_not_found()
            return _json(discovery.resource_list(reg, parts[1], parts[2]))
        if path == "/openapi/v3":
            return _json(self.ctx.openapi.index())
        if path == "/openapi/v2":
            if "protobuf" in accept:
                return web.Response(body=openapi.openapi_v2_empty_protobuf(),
                                    headers={"Content-Type": openapi.OPENAPI_V2_PROTOBUF})
            return _json(openapi.openapi_v2_empty_json())
        if parts[:2] == ["openapi", "v3"]:
            rest = parts[2:]
            if rest == ["api", "v1"]:
                doc = self.ctx.openapi.document("", "v1")
            elif len(rest) == 3 and rest[0] == "apis":
                doc = self.ctx.openapi.document(rest[1], rest[2])
            else:
                doc = None
            if doc is None:
                raise errors.route_not_found()
            return _json(doc)
        raise errors.route_not_found()

    # -- resources ---------------------------------------------------------------

    def _rt(self, info: RequestInfo) -> ResourceType:
        try:
            return self.ctx.objects.registry.lookup(info.group, info.version, info.resource)
        except UnknownResource:
            raise errors.route_not_found() from None

    async def _resource(self, request: web.Request, info: RequestInfo, user: User) -> web.StreamResponse:
        rt = self._rt(info)
        if rt.namespaced and not info.namespace and info.verb not in ("list", "watch") and info.verb != "create":
            raise errors.route_not_found()
        if not rt.namespaced and info.namespace:
            raise errors.route_not_found()
        if info.subresource and info.subresource not in rt.subresources:
            raise errors.route_not_found()
        if rt.verbs == ("create",):
            if info.verb != "create":
                raise errors.method_not_allowed(info.verb, rt.plural)
            return await self._review(request, rt, user)
        if rt.namespaced and info.verb == "create" and not info.namespace:
            raise errors.route_not_found()
        if info.subresource == "scale":
            return await self._scale(request, rt, info)
        if info.subresource == "log":
            if info.verb != "get":
                raise errors.method_not_allowed(info.verb, "pods/log")
            return await self._log(request, rt, info)
        if info.subresource == "token":
            if info.verb != "create":
                raise errors.method_not_allowed(info.verb, "serviceaccounts/token")
            return await self._token_request(request, info)
        q = request.query
        field_validation = q.get("fieldValidation", "Warn")
        if field_validation not in ("Strict", "Warn", "Ignore"):
            raise errors.bad_request(f'fieldValidation must be one of Strict, Warn or Ignore, not "{field_validation}"')
        dry_run = "All" in q.getall("dryRun", [])
        objs = self.ctx.objects
        verb = info.verb
        if verb == "get":
            return self._respond_object(request, rt, objs.get(rt, info.namespace, info.name))
        if verb == "list":
            return self._list(request, rt, info)
        if verb == "watch":
            return await self._watch(request, rt, info)
        if verb == "create":
            body = await self._body(request)
            return self._written(request, rt, objs.create(rt, info.namespace, body, field_validation=field_validation,
                                                          dry_run=dry_run), 201)
        if verb == "update":
            body = await self._body(request)
            return self._written(request, rt, objs.update(rt, info.namespace, info.name, body,
                                                          subresource=info.subresource,
                                                          field_validation=field_validation, dry_run=dry_run))
        if verb == "patch":
            ctype = request.content_type
            if ctype not in PATCH_TYPES:
                raise errors.unsupported_media_type(ctype, PATCH_TYPES)
            raw = await request.read()
            return self._written(request, rt, objs.patch(rt, info.namespace, info.name, ctype, raw,
                                                         subresource=info.subresource,
                                                         field_validation=field_validation, dry_run=dry_run))
        if verb == "delete":
            opts = await self._delete_options(request)
            pre = opts.get("preconditions") or {}
            propagation = opts.get("propagationPolicy") or request.query.get("propagationPolicy") or "Background"
            deleted = objs.delete(rt, info.namespace, info.name, precondition_rv=pre.get("resourceVersion"),
                                  precondition_uid=pre.get("uid"), dry_run=dry_run, propagation=propagation)
            return self._respond_object(request, rt, deleted)
        if verb == "deletecollection":
            labels, fields = self._selectors(request, rt)
            deleted_items = []
            for rec in objs.list(rt, info.namespace or None, labels, fields):
                ns = rec.key.rsplit("/", 2)[1]
                deleted_items.append(objs.delete(rt, ns, rec.key.rsplit("/", 1)[1], dry_run=dry_run))
            return _json({"kind": rt.list_kind, "apiVersion": rt.api_version,
                          "metadata": {"resourceVersion": str(objs.store.revision)}, "items": deleted_items})
        raise errors.method_not_allowed(verb, rt.plural)

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        ctype = request.content_type or JSON
        if not raw:
            raise errors.bad_request("the request has no body; send the object as JSON or YAML")
        if ctype in ("application/yaml", "application/x-yaml", "text/yaml"):
            try:
                return yaml.safe_load(raw)
            except yaml.YAMLError as e:
                raise errors.bad_request(f"the body is not valid YAML: {e}") from None
        if ctype == PROTOBUF:
            try:
                return protobuf.decode(raw)
            except protobuf.ProtobufError as e:
                raise errors.bad_request(f"the protobuf body could not be read: {e}") from None
        if ctype not in (JSON, "application/octet-stream", "text/plain"):
            raise errors.unsupported_media_type(ctype, [JSON, "application/yaml", PROTOBUF])
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise errors.bad_request(f"the body is not valid JSON: {e}") from None

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if not raw:
            return {}
        try:
            opts = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise errors.bad_request(f"DeleteOptions are not valid JSON: {e}") from None
        return opts if isinstance(opts, dict) else {}

    def _selectors(self, request: web.Request, rt: ResourceType) -> tuple[LabelSelector | None, FieldSelector | None]:
        q = request.query
        try:
            labels = parse_label_selector(q["labelSelector"]) if q.get("labelSelector") else None
            allowed = ["metadata.name", "metadata.namespace"] if rt.namespaced else ["metadata.name"]
            fields = parse_field_selector(q["fieldSelector"], allowed) if q.get("fieldSelector") else None
        except SelectorError as e:
            raise errors.bad_request(str(e)) from None
        return labels, fields

    # -- responses ---------------------------------------------------------------

    @staticmethod
    def _wants_table(request: web.Request) -> bool:
        first = request.headers.get("Accept", "").split(",")[0]
        return "as=Table" in first

    def _respond_object(self, request: web.Request, rt: ResourceType, obj: dict[str, Any],
                        status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        if self._wants_table(request):
            table = tables.to_table(rt, [obj], self.ctx.clock(), request.query.get("includeObject", "Metadata"))
            table.setdefault("metadata", {})["resourceVersion"] = obj.get("metadata", {}).get("resourceVersion", "")
            return _json(table, status, headers)
        return _json(obj, status, headers)

    def _written(self, request: web.Request, rt: ResourceType, result: WriteResult, status: int = 200) -> web.Response:
        return self._respond_object(request, rt, result.obj, status if result.created else 200,
                                    _warning_headers(result.warnings))

    def _list(self, request: web.Request, rt: ResourceType, info: RequestInfo) -> web.Response:
        objs = self.ctx.objects
        labels, fields = self._selectors(request, rt)
        rev = objs.store.revision
        records = objs.list(rt, info.namespace or None, labels, fields)
        q = request.query
        meta: dict[str, Any] = {"resourceVersion": str(rev)}
        if q.get("continue"):
            try:
                token = orjson.loads(base64.urlsafe_b64decode(q["continue"]))
                start = token["start"]
            except (ValueError, KeyError, TypeError):
                raise errors.bad_request("the continue token is invalid; list again without it") from None
            records = [r for r in records if r.key > start]
        limit = int(q.get("limit") or 0)
        if limit > 0 and len(records) > limit:
            meta["remainingItemCount"] = len(records) - limit
            records = records[:limit]
            meta["continue"] = base64.urlsafe_b64encode(
                orjson.dumps({"start": records[-1].key, "rv": rev})).decode()
        if self._wants_table(request):
            items = [objs._served(rt, r.obj()) for r in records]
            table = tables.to_table(rt, items, self.ctx.clock(), q.get("includeObject", "Metadata"))
            table["metadata"] = meta
            return _json(table)
        if rt.is_custom:
            values = [orjson.dumps(objs._served(rt, r.obj())) for r in records]
        else:
            values = [r.value for r in records]
        head = orjson.dumps({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta})
        body = head[:-1] + b',"items":[' + b",".join(values) + b"]}"
        return web.Response(body=body, headers={"Content-Type": JSON})

    async def _watch(self, request: web.Request, rt: ResourceType, info: RequestInfo) -> web.StreamResponse:
        q = request.query
        labels, fields = self._selectors(request, rt)
        spec = WatchSpec(rt, info.namespace or None, labels, fields)
        if info.name:  # GET .../NAME?watch=1 (deprecated form)
            fields = parse_field_selector(f"metadata.name={info.name}", ["metadata.name"])
            spec = WatchSpec(rt, info.namespace or None, labels, fields)
        send_initial = q.get("sendInitialEvents") == "true"
        rv = q.get("resourceVersion")
        try:
            w, initial = self.ctx.hub.open(spec, None if send_initial else rv)
        except errors.ApiError as e:
            # As Kubernetes' watch cache does: a watch that cannot start from the version asked for
            # is answered with a stream holding one ERROR event (410 Gone), so clients re-list.
            resp = web.StreamResponse(headers={"Content-Type": JSON})
            await resp.prepare(request)
            await resp.write(json_line("ERROR", e.body()))
            return resp
        bookmarks = q.get("allowWatchBookmarks") == "true"
        timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else None
        as_table = self._wants_table(request)
        include_object = q.get("includeObject", "Metadata")
        resp = web.StreamResponse(headers={"Content-Type": JSON, "Cache-Control": "no-cache, private"})
        await resp.prepare(request)

        def encode(typ: str, value: bytes) -> bytes:
            if as_table:
                obj = orjson.loads(value)
                table = tables.to_table(rt, [self.ctx.objects._served(rt, obj)], self.ctx.clock(), include_object)
                return json_line(typ, orjson.dumps(table))
            if rt.is_custom:
                return json_line(typ, orjson.dumps(self.ctx.objects._served(rt, orjson.loads(value))))
            return json_line(typ, value)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        last_rev = int(rv) if rv and rv.isdigit() else self.ctx.objects.store.revision
        try:
            out = []
            for ev in initial:
                t = translate(spec, ev)
                if t is not None:
                    out.append(encode(*t))
                last_rev = max(last_rev, ev.rev)
            if send_initial:
                last_rev = max(last_rev, self.ctx.objects.store.revision)
                if bookmarks:
                    out.append(bookmark_line(rt, last_rev, initial_events_end=True))
            if out:
                await resp.write(b"".join(out))
            plain = not as_table and not rt.is_custom and not spec.filtered
            while not w.closed:
                wait = self.ctx.bookmark_interval if bookmarks else None
                if deadline is not None:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    wait = remaining if wait is None else min(wait, remaining)
                try:
                    await asyncio.wait_for(w.wakeup.wait(), wait)
                except TimeoutError:
                    if deadline is not None and loop.time() >= deadline:
                        break
                    if bookmarks:
                        await resp.write(bookmark_line(rt, max(last_rev, self.ctx.objects.store.revision)))
                    continue
                if self.ctx.watch_coalesce > 0 and not w.closed:
                    # Let a burst of writes gather so one socket write carries many events.
                    await asyncio.sleep(self.ctx.watch_coalesce)
                batch = w.take()
                if not batch:
                    continue
                last_rev = batch[-1].event.rev
                ns = spec.namespace if rt.namespaced else None
                if plain:
                    out = [p.line for p in batch if ns is None or p.namespace == ns]
                else:
                    out = []
                    for p in batch:
                        t = translate(spec, p.event)
                        if t is not None:
                            out.append(encode(*t))
                if out:
                    await resp.write(b"".join(out))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.ctx.hub.close(w)
        return resp

    # -- subresources and reviews ----------------------------------------------

    async def _scale(self, request: web.Request, rt: ResourceType, info: RequestInfo) -> web.Response:
        objs = self.ctx.objects
        obj = objs.get(rt, info.namespace, info.name)

        def scale_of(o: dict[str, Any]) -> dict[str, Any]:
            m = o["metadata"]
            sel = ((o.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                    "metadata": {"name": m["name"], "namespace": m.get("namespace"), "uid": m.get("uid"),
                                 "resourceVersion": m.get("resourceVersion"),
                                 "creationTimestamp": m.get("creationTimestamp")},
                    "spec": {"replicas": (o.get("spec") or {}).get("replicas", 0)},
                    "status": {"replicas": (o.get("status") or {}).get("replicas", 0),
                               "selector": ",".join(f"{k}={v}" for k, v in sel.items())}}

        if info.verb == "get":
            return _json(scale_of(obj))
        if info.verb == "update":
            body = await self._body(request)
            new_scale = body
        elif info.verb == "patch":
            raw = await request.read()
            try:
                doc = orjson.loads(raw)
                if request.content_type == "application/json-patch+json":
                    new_scale = patching.json_patch(scale_of(obj), doc)
                else:
                    new_scale = patching.merge_patch(scale_of(obj), doc)
            except (orjson.JSONDecodeError, patching.PatchError) as e:
                raise errors.ApiError(422, "Invalid", f"the patch could not be applied: {e}") from None
        else:
            raise errors.method_not_allowed(info.verb, f"{rt.plural}/scale")
        replicas = ((new_scale or {}).get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise errors.invalid("Scale", "autoscaling", info.name,
                                 [("spec.replicas", f"Invalid value: {replicas!r}: must be greater than or equal to 0")])
        want_rv = ((new_scale or {}).get("metadata") or {}).get("resourceVersion")
        new = {**obj, "spec": {**(obj.get("spec") or {}), "replicas": replicas}}
        if want_rv:
            new["metadata"] = {**obj["metadata"], "resourceVersion": want_rv}
        result = objs.update(rt, info.namespace, info.name, new)
        return _json(scale_of(result.obj))

    async def _log(self, request: web.Request, rt: ResourceType, info: RequestInfo) -> web.StreamResponse:
        pod = self.ctx.objects.get(rt, info.namespace, info.name)
        names = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
        q = request.query
        container = q.get("container") or (names[0] if len(names) == 1 else "")
        if not container:
            raise errors.bad_request(f"a container name must be specified for pod {info.name}, choose one of: "
                                     f"[{' '.join(names)}]")
        if container not in names:
            raise errors.bad_request(f"container {container} is not valid for pod {info.name}")
        if self.ctx.pod_logs is None:
            raise errors.bad_request("this cluster runs no pods, so there are no logs")
        try:
            tail = int(q["tailLines"]) if q.get("tailLines") else None
            since = int(q["sinceSeconds"]) if q.get("sinceSeconds") else None
        except ValueError:
            raise errors.bad_request("tailLines and sinceSeconds must be integers") from None
        try:
            chunks = self.ctx.pod_logs(info.namespace, info.name, container, previous=q.get("previous") == "true",
                                       tail=tail, follow=q.get("follow") == "true",
                                       timestamps=q.get("timestamps") == "true", since_seconds=since)
        except LookupError as e:
            raise errors.bad_request(str(e).strip("'\"")) from None
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        try:
            async for chunk in chunks:
                await resp.write(chunk)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp

    async def _token_request(self, request: web.Request, info: RequestInfo) -> web.Response:
        objs = self.ctx.objects
        sa_rt = objs.registry.lookup("", "v1", "serviceaccounts")
        sa = objs.get(sa_rt, info.namespace, info.name)
        body = await self._body(request) if request.can_read_body else {}
        spec = (body or {}).get("spec") or {}
        seconds = int(spec.get("expirationSeconds") or 3600)
        if seconds < 600:
            raise errors.invalid("TokenRequest", "authentication.k8s.io", info.name, [
                ("spec.expirationSeconds", "Invalid value: may not specify a duration less than 10 minutes")])
        issued = self.ctx.tokens.issue(info.namespace, sa, seconds=min(seconds, 48 * 3600),
                                       audiences=spec.get("audiences") or None)
        return _json({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                      "metadata": {"name": info.name, "namespace": info.namespace,
                                   "creationTimestamp": rfc3339(self.ctx.clock())},
                      "spec": {"audiences": spec.get("audiences") or ["https://kubernetes.default.svc"],
                               "expirationSeconds": seconds},
                      "status": {"token": issued.token, "expirationTimestamp": rfc3339(issued.expires)}}, 201)

    async def _review(self, request: web.Request, rt: ResourceType, user: User) -> web.Response:
        body = await self._body(request)
        if not isinstance(body, dict):
            raise errors.bad_request("the review must be an object")
        spec = body.get("spec") or {}
        out = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {"creationTimestamp": None},
               "spec": spec}
        if rt.plural == "tokenreviews":
            token = spec.get("token") or ""
            try:
                who, accepted = self.ctx.tokens.verify(token, spec.get("audiences") or None)
                out["status"] = {"authenticated": True, "audiences": accepted,
                                 "user": {"username": who.name, "uid": who.uid, "groups": list(who.groups)}}
            except TokenInvalid as e:
                out["status"] = {"authenticated": False, "error": str(e), "user": {}}
            return _json(out, 201)
        if rt.plural == "selfsubjectaccessreviews":
            subject = user
        else:
            subject = User(name=spec.get("user", ""), groups=tuple(spec.get("groups") or ()), uid=spec.get("uid", ""))
        ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if ra:
            attrs = Attributes(verb=ra.get("verb", ""), group=ra.get("group", ""), resource=ra.get("resource", ""),
                               subresource=ra.get("subresource", ""), namespace=ra.get("namespace", ""),
                               name=ra.get("name", ""))
        elif nra:
            attrs = Attributes(verb=nra.get("verb", ""), non_resource_path=nra.get("path", ""))
        else:
            raise errors.invalid(rt.kind, rt.group, "", [("spec", "Required value: resourceAttributes or "
                                                                  "nonResourceAttributes")])
        allowed, reason = self.ctx.authz.allowed(subject, attrs)
        out["status"] = {"allowed": allowed, **({"reason": reason} if reason else {})}
        return _json(out, 201)

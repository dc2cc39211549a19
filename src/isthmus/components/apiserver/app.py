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
import logging
from typing import Any

import orjson
from aiohttp import web

from isthmus.core.rbac import Attributes, User, describe_forbidden
from isthmus.core.requestinfo import RequestInfo, parse_request
from isthmus.core.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from isthmus.resources import openapi, tables
from isthmus.resources.registry import ResourceType, UnknownResource

from . import discovery, errors
from .admission import request_options
from .auth import AuthenticationFailed
from .context import (
    JSON,
    MAX_BODY,
    ApiContext,
    error_response,
    json_response,
    read_body,
    warning_headers,
)
from .objects import PATCH_TYPES, WriteResult
from .subresources import Subresources
from .watch import WatchSpec, bookmark_line, json_line, translate

log = logging.getLogger("isthmus.apiserver")

class ApiServer(Subresources):
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
            return error_response(e)
        except web.HTTPRequestEntityTooLarge:
            return error_response(errors.too_large(MAX_BODY))
        except Exception:
            log.exception("internal error serving %s %s", request.method, request.path)
            return error_response(errors.ApiError(500, "InternalError",
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
            return json_response({"major": "1", "minor": "32", "gitVersion": self.ctx.git_version,
                          "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
                          "goVersion": "", "compiler": "isthmus", "platform": "linux/amd64"})
        if path == "/readyz" and self.ctx.not_ready:
            # Kubernetes' wording for a failed readiness check, with the reason shown.
            return web.Response(status=500, text=f"[-]isthmus-controllers failed: {self.ctx.not_ready}\n"
                                                 "readyz check failed\n")
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/api":
            if discovery.wants_aggregated(accept):
                return json_response(discovery.aggregated(reg, core=True), content_type=discovery.AGGREGATED_V2)
            return json_response(discovery.api_versions(self.ctx.server_address))
        if path == "/apis":
            if discovery.wants_aggregated(accept):
                return json_response(discovery.aggregated(reg, core=False), content_type=discovery.AGGREGATED_V2)
            return json_response(discovery.api_group_list(reg))
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2:
            if parts[1] != "v1":
                raise errors.route_not_found()
            return json_response(discovery.resource_list(reg, "", "v1"))
        if parts[0] == "apis" and len(parts) == 2:
            group = discovery.api_group(reg, parts[1])
            if group is None:
                raise errors.route_not_found()
            return json_response(group)
        if parts[0] == "apis" and len(parts) == 3:
            if not reg.in_group_version(parts[1], parts[2]):
                raise errors.route_not_found()
            return json_response(discovery.resource_list(reg, parts[1], parts[2]))
        if path == "/openapi/v3":
            return json_response(self.ctx.openapi.index())
        if path == "/openapi/v2":
            if "protobuf" in accept:
                return web.Response(body=openapi.openapi_v2_empty_protobuf(),
                                    headers={"Content-Type": openapi.OPENAPI_V2_PROTOBUF})
            return json_response(openapi.openapi_v2_empty_json())
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
            return json_response(doc)
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
        admission = self.ctx.admission
        if verb == "create":
            body = await read_body(request)
            if admission is not None:
                result = await admission.create(rt, info.namespace, body, user=user, field_validation=field_validation,
                                                dry_run=dry_run, options=request_options("CreateOptions", q))
            else:
                result = objs.create(rt, info.namespace, body, field_validation=field_validation, dry_run=dry_run)
            return self._written(request, rt, result, 201)
        if verb == "update":
            body = await read_body(request)
            if admission is not None:
                result = await admission.update(rt, info.namespace, info.name, body, subresource=info.subresource,
                                                user=user, field_validation=field_validation, dry_run=dry_run,
                                                options=request_options("UpdateOptions", q))
            else:
                result = objs.update(rt, info.namespace, info.name, body, subresource=info.subresource,
                                     field_validation=field_validation, dry_run=dry_run)
            return self._written(request, rt, result)
        if verb == "patch":
            ctype = request.content_type
            if ctype not in PATCH_TYPES:
                raise errors.unsupported_media_type(ctype, PATCH_TYPES)
            raw = await request.read()
            if admission is not None:
                result = await admission.patch(rt, info.namespace, info.name, ctype, raw,
                                               subresource=info.subresource, user=user,
                                               field_validation=field_validation, dry_run=dry_run,
                                               options=request_options("UpdateOptions", q))
            else:
                result = objs.patch(rt, info.namespace, info.name, ctype, raw, subresource=info.subresource,
                                    field_validation=field_validation, dry_run=dry_run)
            return self._written(request, rt, result)
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
            return json_response({"kind": rt.list_kind, "apiVersion": rt.api_version,
                          "metadata": {"resourceVersion": str(objs.store.revision)}, "items": deleted_items})
        raise errors.method_not_allowed(verb, rt.plural)

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
            return json_response(table, status, headers)
        return json_response(obj, status, headers)

    def _written(self, request: web.Request, rt: ResourceType, result: WriteResult, status: int = 200) -> web.Response:
        return self._respond_object(request, rt, result.obj, status if result.created else 200,
                                    warning_headers(result.warnings))

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
            return json_response(table)
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

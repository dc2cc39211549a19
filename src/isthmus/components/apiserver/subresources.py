"""The API server's subresources and reviews: scale, pods/log, TokenRequest, TokenReview, access reviews.

A mixin of `ApiServer` (it uses the server's context); split out to keep each
file about one concern.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from isthmus.core import patch as patching
from isthmus.core.rbac import Attributes, User
from isthmus.core.requestinfo import RequestInfo
from isthmus.resources.registry import ResourceType

from . import errors
from .context import ApiContext, json_response, read_body
from .objects import rfc3339
from .tokens import TokenInvalid


class Subresources:
    ctx: ApiContext

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
            return json_response(scale_of(obj))
        if info.verb == "update":
            body = await read_body(request)
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
        return json_response(scale_of(result.obj))

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
        body = await read_body(request) if request.can_read_body else {}
        spec = (body or {}).get("spec") or {}
        seconds = int(spec.get("expirationSeconds") or 3600)
        if seconds < 600:
            raise errors.invalid("TokenRequest", "authentication.k8s.io", info.name, [
                ("spec.expirationSeconds", "Invalid value: may not specify a duration less than 10 minutes")])
        issued = self.ctx.tokens.issue(info.namespace, sa, seconds=min(seconds, 48 * 3600),
                                       audiences=spec.get("audiences") or None)
        return json_response({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                      "metadata": {"name": info.name, "namespace": info.namespace,
                                   "creationTimestamp": rfc3339(self.ctx.clock())},
                      "spec": {"audiences": spec.get("audiences") or ["https://kubernetes.default.svc"],
                               "expirationSeconds": seconds},
                      "status": {"token": issued.token, "expirationTimestamp": rfc3339(issued.expires)}}, 201)

    async def _review(self, request: web.Request, rt: ResourceType, user: User) -> web.Response:
        body = await read_body(request)
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
            return json_response(out, 201)
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
        return json_response(out, 201)

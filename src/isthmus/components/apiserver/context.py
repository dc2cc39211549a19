"""What the API server's request handlers share: the context object and response helpers."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import yaml
from aiohttp import web

from isthmus.resources import openapi, protobuf

from . import errors
from .admission import Admission
from .auth import Authenticator, Authorizer
from .objects import Objects
from .tokens import TokenIssuer
from .watch import WatchHub

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
    # Admission webhooks; None writes without them.
    admission: Admission | None = None
    # What the cluster still waits for before /readyz says ok (its controllers catching up); None: ready.
    not_ready: str | None = None


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None,
          content_type: str = JSON) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type=None,
                        headers={"Content-Type": content_type, **(headers or {})})


def error_response(e: errors.ApiError) -> web.Response:
    return web.Response(body=e.body(), status=e.code, headers={"Content-Type": JSON})


def warning_headers(warnings: list[str]) -> dict[str, str]:
    if not warnings:
        return {}
    return {"Warning": ", ".join('299 - "' + w.replace('"', '\\"') + '"' for w in warnings)}


async def read_body(request: web.Request) -> Any:
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

"""The viz API: stat, timeseries, edges, routes, namespaces, multicluster and tap over HTTP.

Served by the `isthmus-viz` pod (`isthmus viz-api`) on port 8085, read by
`isthmus viz ...` and by the dashboard. The JSON shapes are in docs/viz.md.
Bad parameters are 400 with ``{"error": ...}`` naming the problem, a
resource that does not exist 404, a metrics source that cannot answer 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from lightkube import ApiError, AsyncClient

from isthmus.components.viz.collector import Collector
from isthmus.components.viz.kubeview import KubeView, NotFound
from isthmus.components.viz.source import MetricsSource, SourceError
from isthmus.components.viz.tap import tap_stream
from isthmus.components.webapp import json_errors, json_response
from isthmus.core.identity import workload_identity
from isthmus.core.proxy.tap import TapQueryError, parse_tap_query
from isthmus.core.viz.model import parse_window
from isthmus.core.viz.query import (
    GAUGE_NAMES,
    HTTP_NAMES,
    ROUTE_NAMES,
    TCP_NAMES,
    QueryError,
    Ref,
    authority_names_service,
    edges,
    parse_ref,
    routes,
    stat,
)

__all__ = ["VizApi", "VizApiConfig"]

log = logging.getLogger("isthmus.viz.api")
VIZ_PORT = 8085
MAX_POINTS = 120
GATEWAY_NAMES = ("gateway_alive", "gateway_latency", "gateway_probes", "gateway_probes_total")
MIRRORED_SERVICE_LABEL = "mirror.isthmus.io/mirrored-service"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class VizApiConfig:
    cluster_name: str = "local"
    trust_domain: str = "cluster.local"
    default_namespace: str = "default"


class BadRequest(ValueError):
    pass


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except (QueryError, TapQueryError, BadRequest) as e:
        return json_response({"error": str(e)}, 400)
    except NotFound as e:
        return json_response({"error": str(e)}, 404)
    except SourceError as e:
        return json_response({"error": f"metrics are not available: {e}"}, 503)
    except ApiError as e:
        return json_response({"error": f"the cluster's API refused: {e.status.message}"}, 502)


class VizApi:
    def __init__(self, client: AsyncClient, source: MetricsSource, config: VizApiConfig,
                 collector: Collector | None = None) -> None:
        self.kube = KubeView(client)
        self.source = source
        self.config = config
        self.collector = collector

    def __repr__(self) -> str:
        return f"<VizApi {self.config.cluster_name} {self.source!r}>"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[json_errors("/api/stat, /api/edges, /api/routes, "
                                                        "/api/timeseries, /api/namespaces, "
                                                        "/api/multicluster, /api/tap"), _errors])
        app.router.add_get("/api/stat", self._stat)
        app.router.add_get("/api/timeseries", self._timeseries)
        app.router.add_get("/api/edges", self._edges)
        app.router.add_get("/api/routes", self._routes)
        app.router.add_get("/api/namespaces", self._namespaces)
        app.router.add_get("/api/multicluster", self._multicluster)
        app.router.add_get("/api/tap", self._tap)
        app.router.add_get("/api/cluster", self._cluster)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/live", self._ready)
        app.router.add_get("/metrics", self._metrics)
        return app

    # --- parameters ------------------------------------------------------------------------

    def _namespace(self, request: web.Request, key: str = "namespace") -> str:
        return request.query.get(key) or self.config.default_namespace

    def _ref(self, request: web.Request, key: str, ns_key: str, what: str,
             default_ns: str) -> Ref | None:
        text = request.query.get(key)
        if text is None or text == "":
            return None
        return parse_ref(text, request.query.get(ns_key) or default_ns, what)

    @staticmethod
    def _window(request: web.Request) -> tuple[str, float]:
        text = request.query.get("window", "1m")
        try:
            return text, parse_window(text)
        except ValueError as e:
            raise BadRequest(str(e)) from None

    def _identity(self, sa: str, ns: str) -> str:
        try:
            return workload_identity(sa, ns, self.config.trust_domain)
        except ValueError:
            return ""

    # --- handlers --------------------------------------------------------------------------

    async def _cluster(self, request: web.Request) -> web.Response:
        return json_response({"cluster": self.config.cluster_name,
                              "trust_domain": self.config.trust_domain})

    async def _stat(self, request: web.Request) -> web.Response:
        ns = self._namespace(request)
        resource = parse_ref(request.query.get("resource", ""), ns)
        from_ = self._ref(request, "from", "from_namespace", "--from", ns)
        to = self._ref(request, "to", "to_namespace", "--to", ns)
        label, window = self._window(request)
        for ref in (from_, to):
            if ref is not None:
                await self.kube.require(ref)
        targets = await self.kube.stat_targets(resource)
        rows = stat(targets, await self.source.increases(HTTP_NAMES, window),
                    await self.source.gauges(GAUGE_NAMES), window, from_=from_, to=to)
        return json_response({"window": label, "rows": [r.to_dict() for r in rows]})

    async def _timeseries(self, request: web.Request) -> web.Response:
        ns = self._namespace(request)
        resource = parse_ref(request.query.get("resource", ""), ns)
        if not resource.name:
            raise BadRequest("timeseries needs one resource, like deploy/web")
        _, window = self._window(request)
        try:
            points = int(request.query.get("points", "30"))
        except ValueError:
            raise BadRequest("points must be a whole number") from None
        if not 2 <= points <= MAX_POINTS:
            raise BadRequest(f"points must be between 2 and {MAX_POINTS}")
        (target,) = await self.kube.stat_targets(resource)
        step = window / points
        now = time.time()
        out = []
        for i in range(points):
            at = now - (points - 1 - i) * step
            (row,) = stat([target], await self.source.increases(HTTP_NAMES, step, at), [], step)
            latency = row.latency_ms or {}
            out.append({"t": round(at, 3), "success": row.success, "rps": row.rps,
                        "p50": latency.get("p50"), "p95": latency.get("p95"),
                        "p99": latency.get("p99")})
        return json_response({"resource": str(resource), "namespace": target.namespace,
                              "step": step, "points": out})

    async def _edge_rows(self, kind: str, namespace: str | None, window: float) -> list[Any]:
        increases = await self.source.increases((*HTTP_NAMES[:1], *TCP_NAMES), window)
        gauges = await self.source.gauges(GAUGE_NAMES)
        return edges(kind, namespace, increases, gauges, self._identity)

    async def _edges(self, request: web.Request) -> web.Response:
        ns = request.query.get("namespace") or None
        resource = parse_ref(request.query.get("resource", "deploy"), ns or "default")
        if resource.name:
            raise BadRequest("edges takes a resource type (deploy or po), not one resource")
        _, window = self._window(request)
        rows = await self._edge_rows(resource.kind, ns, window)
        return json_response({"rows": [r.to_dict() for r in rows]})

    async def _routes(self, request: web.Request) -> web.Response:
        ns = self._namespace(request)
        resource = parse_ref(request.query.get("resource", ""), ns)
        if not resource.name or resource.kind not in ("service", "deployment"):
            raise BadRequest(f'routes takes one service or deployment, like svc/web-svc, not '
                             f'"{request.query.get("resource", "")}"')
        label, window = self._window(request)
        name = resource.name
        if resource.kind == "service":
            svc = await self.kube.service(ns, name)
            mirrored = ((svc.get("metadata") or {}).get("labels") or {}).get(
                MIRRORED_SERVICE_LABEL) == "true"

            def match(labels: Any) -> bool:
                if mirrored:  # no pods here: what the clients saw
                    return (labels.get("direction") == "outbound"
                            and labels.get("dst_service") == name
                            and labels.get("dst_namespace") == ns)
                return (labels.get("direction") == "inbound" and labels.get("namespace") == ns
                        and authority_names_service(labels.get("dst", ""), name, ns))
        else:
            await self.kube.require(resource)

            def match(labels: Any) -> bool:
                return (labels.get("direction") == "inbound" and labels.get("namespace") == ns
                        and labels.get("deployment") == name)
        rows = routes(await self.source.increases(ROUTE_NAMES, window), match, window)
        return json_response({"window": label, "resource": str(resource),
                              "rows": [r.to_dict() for r in rows]})

    async def _namespaces(self, request: web.Request) -> web.Response:
        return json_response({"namespaces": await self.kube.namespaces()})

    async def _multicluster(self, request: web.Request) -> web.Response:
        links = await self.kube.links()
        gauges = await self.source.gauges(GATEWAY_NAMES)
        edge_rows = await self._edge_rows("deployment", None, 60.0)
        out = []
        for link in sorted(links, key=lambda x: (x.get("metadata") or {}).get("name", "")):
            spec = link.get("spec") or {}
            cluster = spec.get("targetClusterName") or (link.get("metadata") or {}).get("name", "")
            mine = [s for s in gauges if s.get("target_cluster") == cluster]
            alive = next((s.value for s in mine if s.name == "gateway_alive"), None)
            latency = next((s.value for s in mine if s.name == "gateway_latency"), None)
            probes = {"success": 0, "failure": 0}
            for s in mine:
                if s.name.startswith("gateway_probes"):
                    key = "success" if s.get("probe_successful") == "true" else "failure"
                    probes[key] += int(s.value)
            out.append({
                "cluster": cluster,
                "gateway_address": spec.get("gatewayAddress", ""),
                "gateway_port": spec.get("gatewayPort", ""),
                "gateway_identity": spec.get("gatewayIdentity", ""),
                "alive": None if alive is None else alive >= 1,
                "latency_ms": latency,
                "probes": probes,
                "conditions": (link.get("status") or {}).get("conditions") or [],
                "mirrored_services": await self.kube.mirrored_services(cluster),
                "edges": [r.to_dict() for r in edge_rows if r.dst_cluster == cluster],
            })
        return json_response({"cluster": self.config.cluster_name, "links": out})

    async def _tap(self, request: web.Request) -> web.StreamResponse:
        params = {k: v for k, v in request.query.items()}
        fmt = params.get("format", "text")
        if fmt not in ("text", "json"):
            raise BadRequest(f"bad format {fmt!r}: want text or json")
        max_text = params.pop("max", None)
        try:
            max_events = int(max_text) if max_text is not None else None
        except ValueError:
            raise BadRequest(f"max must be a whole number, not {max_text!r}") from None
        ns = params.get("namespace") or self.config.default_namespace
        params["namespace"] = ns
        # the proxy's own parser checks every filter the way the proxies will apply them
        proxy_params = {k: v for k, v in params.items() if k != "format"}
        parse_tap_query(proxy_params)
        resource = parse_ref(params.get("resource", ""), ns)
        to_text = proxy_params.get("to")
        if to_text:
            await self.kube.require(parse_ref(to_text, proxy_params.get("to_namespace") or ns,
                                              "--to"))
        pods = await self.kube.tap_pods(resource)
        if not pods:
            raise NotFound(f"{resource} in namespace {ns} has no running meshed pods to tap; "
                           "inject it (isthmus inject) and wait for its pods")
        pods_by_ip = {}
        if fmt == "json":
            for p in await self.kube.pods():
                meta, status = p.get("metadata") or {}, p.get("status") or {}
                if status.get("podIP"):
                    pods_by_ip[status["podIP"]] = {"pod": meta.get("name", ""),
                                                   "namespace": meta.get("namespace", "")}
        response = web.StreamResponse(headers={
            "Content-Type": "application/x-ndjson" if fmt == "json" else "text/plain; charset=utf-8",
            "Cache-Control": "no-store"})
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
            await tap_stream(pods, {**proxy_params, "format": fmt}, response.write,
                             max_events=max_events, pods_by_ip=pods_by_ip)
        return response

    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(text="ready\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        text = self.collector.render_metrics() if self.collector is not None else ""
        return web.Response(text=text, content_type="text/plain")

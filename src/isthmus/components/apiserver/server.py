"""Running an embedded cluster's API server: open the store, bootstrap, serve HTTPS until told to stop.

On every start the server makes sure the cluster's fixed objects exist (the
standard namespaces, the cluster's Nodes labelled with its region and zones,
the `cluster-admin` role bound to `system:masters`, the `kubernetes` Service);
this is idempotent, so a restart after `kill -9` resumes where the store left
off. It serves TLS with the cluster's certificate and asks clients for a
certificate from the cluster CA (optional: bearer tokens are the other way in).
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from isthmus.adapters.clusterdir import ClusterConfig, ClusterDir
from isthmus.adapters.pki import ClusterPKI
from isthmus.adapters.store import SQLiteStore, Store, make_key
from isthmus.core.network import API_PORT, ClusterNetwork
from isthmus.resources import openapi
from isthmus.resources.registry import Registry

from .admission import Admission
from .app import ApiServer
from .auth import Authenticator, Authorizer
from .context import ApiContext
from .objects import Objects, rfc3339
from .strategies import Allocators
from .tokens import TokenIssuer
from .watch import WatchHub

log = logging.getLogger("isthmus.apiserver")

STANDARD_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Running:
    ctx: ApiContext
    runner: web.AppRunner
    store: Store

    async def close(self) -> None:
        self.ctx.hub.close_all()
        await self.runner.cleanup()
        if self.ctx.admission is not None:
            await self.ctx.admission.close()
        self.store.close()


def tls_context(pki: ClusterPKI) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ctx.load_verify_locations(pki.ca_cert)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def _node(config: ClusterConfig, net: ClusterNetwork, i: int, now: str) -> dict[str, Any]:
    name = f"{config.name}-node-{i}"
    zone = f"{config.region}-{'abc'[(i - 1) % 3]}"
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "topology.kubernetes.io/region": config.region, "topology.kubernetes.io/zone": zone,
            "isthmus.io/cluster": config.name}},
        "spec": {"podCIDR": f"127.{net.index}.{64 + (i - 1) * 8}.0/21"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": net.node_ip(i)}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "IsthmusNodeReady",
                            "message": "the embedded node runs pods as local processes",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "nodeInfo": {"kubeletVersion": "v1.32.0-isthmus", "kubeProxyVersion": "", "osImage": "isthmus embedded",
                         "kernelVersion": "", "containerRuntimeVersion": "isthmus://process",
                         "operatingSystem": "linux", "architecture": "amd64", "machineID": "", "systemUUID": "",
                         "bootID": ""},
            "capacity": {"cpu": "2", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "2", "memory": "8Gi", "pods": "110"},
        },
    }


def bootstrap(objects: Objects, config: ClusterConfig, net: ClusterNetwork) -> None:
    reg = objects.registry

    def ensure(group: str, plural: str, namespace: str, obj: dict[str, Any]) -> None:
        rt = reg.lookup(group, "v1", plural)
        if objects.store.get(objects.key(rt, namespace, obj["metadata"]["name"])) is None:
            objects.create(rt, namespace, obj)

    for ns in STANDARD_NAMESPACES:
        ensure("", "namespaces", "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    now = rfc3339(utcnow())
    for i in range(1, config.nodes + 1):
        ensure("", "nodes", "", _node(config, net, i, now))
    ensure("rbac.authorization.k8s.io", "clusterroles", "", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "cluster-admin"},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                  {"nonResourceURLs": ["*"], "verbs": ["*"]}]})
    ensure("rbac.authorization.k8s.io", "clusterrolebindings", "", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "cluster-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}]})
    ensure("", "services", "default", {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "isthmus"}},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": API_PORT}]}})
    ensure("", "endpoints", "default", {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "kubernetes"},
        "subsets": [{"addresses": [{"ip": net.api_ip}], "ports": [{"name": "https", "port": API_PORT}]}]})


async def start(cdir: ClusterDir, *, host: str | None = None, port: int = API_PORT,
                bookmark_interval: float = 10.0, history: int = 10_000,
                pod_logs: Callable[..., AsyncIterator[bytes]] | None = None,
                not_ready: str | None = None) -> Running:
    config = cdir.load()
    net = ClusterNetwork(config.index)
    pki = ClusterPKI(cdir.pki_dir)
    store = SQLiteStore(cdir.db, history=history)
    registry = Registry()
    cache = openapi.OpenAPICache(registry)
    objects = Objects(store=store, registry=registry, clock=utcnow,
                      allocators=Allocators.for_network(net), on_crd_change=cache.invalidate)
    bootstrap(objects, config, net)

    def lookup_sa(ns: str, name: str) -> dict[str, Any] | None:
        rec = store.get(make_key("serviceaccounts", ns, name))
        return rec.obj() if rec else None

    tokens = TokenIssuer(signing_key_pem=Path(pki.sa_key).read_bytes(),
                         issuer=f"https://isthmus.{config.name}.cluster.local", clock=utcnow, lookup_sa=lookup_sa)
    address = host or net.api_ip
    ctx = ApiContext(objects=objects, hub=WatchHub(store), authn=Authenticator(tokens), authz=Authorizer(store),
                     tokens=tokens, openapi=cache, clock=utcnow, server_address=f"{address}:{port}",
                     bookmark_interval=bookmark_interval, pod_logs=pod_logs, admission=Admission(objects),
                     not_ready=not_ready)
    app = ApiServer(ctx).make_app()
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, address, port, ssl_context=tls_context(pki), reuse_address=True)
    await site.start()
    log.info("cluster %s: API server listening on https://%s:%d", config.name, address, port)
    return Running(ctx, runner, store)

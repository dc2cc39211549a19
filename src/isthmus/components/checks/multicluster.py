"""The checks of `isthmus multicluster check`: the Links of the `--context` cluster, every one of them.

Category `kubernetes-api` (as `isthmus check`'s), then `isthmus-multicluster`:

- Link CRD exists (fatal: nothing else can be read without it);
- Link resources are valid: every Link parses as the service mirror parses
  it (`core.mirror.LinkSpec`), names a workload identity, and no two
  target the same cluster;
- remote cluster access credentials are valid: for every Link, its
  credentials Secret holds a kubeconfig with which the remote API lists
  Services and Endpoints of every namespace (what the mirror does), asked
  from this machine; the cause names the Link and why (no Secret, no
  kubeconfig, 401, 403, no answer);
- clusters share trust anchors: for every Link, a TLS handshake with its
  gateway (`gatewayAddress:gatewayPort`) verifies the certificate it
  presents against this cluster's trust anchors (the `isthmus-identity-trust-roots`
  ConfigMap) and the Link's `gatewayIdentity` — exactly what this cluster's
  proxies check when they call through it. The remote's own trust-roots
  ConfigMap is not read: the Link's credentials may read Services and
  Endpoints only, and the certificate the gateway presents says more (it is
  what the remote's identity service really issues);
- service mirror controllers are running: each Link's Deployment
  `isthmus-service-mirror-<link>` has pods, ready;
- all gateways are alive: the leading mirror's `gateway_alive` (its admin
  port 9999), else the Link's `GatewayAlive` condition; the reason when not
  is the mirror's (its last probe failure);
- all mirror services have endpoints; all mirror services are part of a Link.

Checks of states that settle (mirror pods, gateways, endpoints) are retried
while `--wait` lasts. Pods and gateways are reached at their addresses, as
`isthmus check` reaches proxies: that works from the machine of an embedded
cluster; on Kubernetes it needs a route to them.
"""

from __future__ import annotations

import base64
import binascii
import socket
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import httpx2
from cryptography import x509 as crypto_x509
from lightkube import ApiError, Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import Endpoints, Service

from isthmus.adapters import x509
from isthmus.components.checks import catalog
from isthmus.components.checks.cluster import Cluster, KubeCluster
from isthmus.components.checks.probes import ProbeError
from isthmus.components.checks.runner import Problem
from isthmus.components.mirror.remote import CredentialsError, describe_failure, remote_config
from isthmus.core import mccheck
from isthmus.core import mirror as mcore
from isthmus.core.checks import Category, Check, Outcome, fail, ok, pod_facts, warn
from isthmus.resources import manifests
from isthmus.resources import multicluster_manifests as mc

__all__ = ["MulticlusterCluster", "MulticlusterEnv", "categories", "mirror_metrics", "remote_access"]

Obj = dict[str, Any]
LINK_CRD = f"{mcore.LINK_PLURAL}.{mcore.LINK_GROUP}"
REMOTE_TIMEOUT = 5.0
_Link = create_namespaced_resource(mcore.LINK_GROUP, mcore.LINK_VERSION, mcore.LINK_KIND, mcore.LINK_PLURAL)


class LinkCluster(Cluster, Protocol):
    def links(self) -> list[Obj]:
        """Every Link of every namespace."""


class MulticlusterCluster(KubeCluster):
    """`KubeCluster` that also lists Links (a custom resource the plain checks do not know)."""

    def links(self) -> list[Obj]:
        try:
            return [dict(i.to_dict()) if hasattr(i, "to_dict") else dict(i)
                    for i in self._client.list(_Link, namespace="*")]
        except Exception as e:
            if isinstance(e, ApiError):
                raise self._refused("list", "CustomResourceDefinition", "", e) from None
            if type(e).__module__.startswith(("httpx", "httpcore")) or isinstance(e, OSError):
                raise self._unreachable(e) from None
            raise


def remote_access(kubeconfig: bytes, secret: str) -> str:
    """"" when the kubeconfig lists the remote's Services and Endpoints of every namespace; else why not."""
    try:
        config = remote_config(kubeconfig, secret=secret)
    except CredentialsError as e:
        return str(e)
    server = str(config.cluster.server)
    try:
        client = Client(config=config, trust_env=False, timeout=httpx2.Timeout(REMOTE_TIMEOUT))
    except Exception as e:
        return f"{secret}: the kubeconfig is not usable: {type(e).__name__}: {e}"
    try:
        for kind in (Service, Endpoints):
            for _ in client.list(kind, namespace="*", chunk_size=1):
                break
    except Exception as e:
        return describe_failure(e, server)[1]
    finally:
        client.close()
    return ""


def mirror_metrics(ip: str, port: int) -> str:
    """The text of a service mirror's `/metrics` (no HTTP proxy in between); OSError when it does not answer."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{ip}:{port}/metrics", timeout=3) as r:
        return str(r.read().decode())


def resolve(host: str) -> list[str]:
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(i[4][0]) for i in infos))


@dataclass
class MulticlusterEnv(catalog.CheckEnv):
    """`isthmus check`'s environment plus what the multicluster checks share once fetched."""

    connect: Callable[[Path, str | None], Cluster] = MulticlusterCluster
    remote: Callable[[bytes, str], str] = remote_access
    metrics: Callable[[str, int], str] = mirror_metrics
    resolver: Callable[[str], list[str]] = resolve
    parsed: mccheck.ParsedLinks | None = None
    statuses: dict[str, Obj] = field(default_factory=dict)  # target cluster -> its Link's status

    def link_cluster(self) -> LinkCluster:
        kube = self.kube()
        if not hasattr(kube, "links"):
            raise Problem("this cluster client cannot list Links")
        return kube  # type: ignore[return-value]

    def links(self) -> dict[str, mcore.LinkSpec]:
        if self.parsed is None:
            self._read_links()
        assert self.parsed is not None
        return self.parsed.valid

    def _read_links(self) -> None:
        objects = self.link_cluster().links()
        self.parsed = mccheck.parse_links(objects)
        self.statuses = {}
        for obj in objects:
            target = str((obj.get("spec") or {}).get("targetClusterName") or "")
            self.statuses[target] = dict(obj.get("status") or {})


# ------------------------------------------------------------------ the checks

_NS = mc.NAMESPACE


def _crd(env: MulticlusterEnv) -> Outcome:
    if env.kube().get("CustomResourceDefinition", LINK_CRD) is None:
        return fail(f"the CustomResourceDefinition {LINK_CRD} does not exist")
    return ok()


def _links_valid(env: MulticlusterEnv) -> Outcome:
    env._read_links()
    assert env.parsed is not None
    return mccheck.per_link(env.parsed.problems)


def _credentials(env: MulticlusterEnv) -> Outcome:
    problems = {}
    for name, spec in env.links().items():
        where = f"Secret {spec.namespace}/{spec.credentials_secret}"
        secret = env.kube().get("Secret", spec.credentials_secret, spec.namespace)
        if secret is None:
            problems[name] = f"its credentials {where} does not exist"
            continue
        raw = (secret.get("data") or {}).get(mc.CREDENTIALS_KEY)
        if not raw:
            problems[name] = f"its credentials {where} has no key {mc.CREDENTIALS_KEY!r}"
            continue
        try:
            kubeconfig = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            problems[name] = f"its credentials {where}: key {mc.CREDENTIALS_KEY!r} is not base64"
            continue
        problem = env.remote(kubeconfig, where)
        if problem:
            problems[name] = problem
    return mccheck.per_link(problems)


def _anchors(env: MulticlusterEnv) -> bytes:
    cm = env.kube().get("ConfigMap", manifests.TRUST_ROOTS_CONFIGMAP, manifests.NAMESPACE)
    pem = str(((cm or {}).get("data") or {}).get(manifests.TRUST_ROOTS_KEY) or "")
    if "BEGIN CERTIFICATE" not in pem:
        raise Problem(f"this cluster has no trust anchors (ConfigMap {manifests.NAMESPACE}/"
                      f"{manifests.TRUST_ROOTS_CONFIGMAP}, key {manifests.TRUST_ROOTS_KEY}): is the control "
                      f"plane installed? `isthmus check` says more")
    return pem.encode()


def _presented(der: bytes | None) -> str:
    if der is None:
        return ""
    d = x509.describe(crypto_x509.load_der_x509_certificate(der))
    return f" (it presents {d['subject'] or 'an empty subject'}, issued by {d['issuer'] or '?'})"


def _shared_anchors(env: MulticlusterEnv) -> Outcome:
    links = env.links()
    if not links:
        return ok()
    anchors = _anchors(env)
    problems, unknown = {}, {}
    for name, spec in links.items():
        addresses: list[str] = []
        for host in spec.gateway_addresses:
            try:
                addresses += env.resolver(host)
            except OSError as e:
                problems[name] = f"the gateway address {host!r} does not resolve: {e}"
        if not addresses:
            problems.setdefault(name, "the Link names no gateway address")
            continue
        silent = []
        for ip in addresses:
            where = f"{ip}:{spec.gateway_port}"
            try:
                seen = env.probes.presented_certificate(ip, spec.gateway_port, anchors_pem=anchors,
                                                        identity=spec.gateway_identity)
            except ProbeError as e:
                silent.append(str(e))
                continue
            if seen.leaf_der is None and seen.error:
                silent.append(f"no certificate from the gateway at {where}: {seen.error}")
                continue
            if seen.error:
                problems[name] = (f"the gateway at {where} presents a certificate that does not verify with "
                                  f"this cluster's trust anchors as {spec.gateway_identity}: {seen.error}"
                                  f"{_presented(seen.leaf_der)}")
            silent = []
            break
        if silent and name not in problems:
            unknown[name] = "cannot tell: " + "; ".join(silent)
    if problems:
        return mccheck.per_link({**unknown, **problems})
    # A gateway that does not answer is the gateways check's failure; here it only leaves a doubt.
    outcome = mccheck.per_link(unknown)
    return warn(outcome.cause) if unknown else outcome


def _mirror_pods(env: MulticlusterEnv, spec: mcore.LinkSpec) -> list[Obj]:
    return env.kube().list("Pod", spec.namespace, {"app": "isthmus-service-mirror", mc.LINK_LABEL: spec.name})


def _controllers(env: MulticlusterEnv) -> Outcome:
    links = env.links()
    deployments = {name: env.kube().get("Deployment", mc.mirror_name(name), spec.namespace)
                   for name, spec in links.items()}
    pods = [pod_facts(p) for spec in links.values() for p in _mirror_pods(env, spec)]
    return mccheck.mirror_controllers_running(links, deployments, pods, link_label=mc.LINK_LABEL)


def _metric(text: str, name: str, cluster: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and f'target_cluster="{cluster}"' in line:
            try:
                return float(line.rsplit(" ", 1)[1])
            except ValueError:
                return None
    return None


def _leader_alive(env: MulticlusterEnv, spec: mcore.LinkSpec) -> float | None:
    for pod in _mirror_pods(env, spec):
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            continue
        try:
            text = env.metrics(str(ip), mc.MIRROR_ADMIN_PORT)
        except (OSError, ValueError):
            continue
        if _metric(text, "service_mirror_is_leader", spec.target_cluster_name) == 1:
            return _metric(text, "gateway_alive", spec.target_cluster_name)
    return None


def _gateways(env: MulticlusterEnv) -> Outcome:
    env._read_links()  # the status changes while the check is retried
    views = {name: mccheck.gateway_view(_leader_alive(env, spec), env.statuses.get(spec.target_cluster_name))
             for name, spec in env.links().items()}
    return mccheck.gateways_alive(views)


def _mirrored_services(env: MulticlusterEnv) -> list[Obj]:
    return env.kube().list("Service", None, {mcore.MIRRORED_SERVICE_LABEL: "true"})


def _endpoints(env: MulticlusterEnv) -> Outcome:
    env._read_links()
    services = _mirrored_services(env)
    endpoints = {}
    for svc in services:
        ns, name = str(svc["metadata"].get("namespace") or ""), str(svc["metadata"].get("name") or "")
        endpoints[(ns, name)] = env.kube().get("Endpoints", name, ns)
    return mccheck.mirrors_have_endpoints(services, endpoints, env.statuses)


def _orphans(env: MulticlusterEnv) -> Outcome:
    links = env.links()
    assert env.parsed is not None
    return mccheck.mirrors_belong_to_links(_mirrored_services(env), links, invalid=env.parsed.problems)


def categories() -> list[Category[MulticlusterEnv]]:
    """`isthmus multicluster check`: kubernetes-api, then isthmus-multicluster."""
    # The same first category as `isthmus check` (its checks only use what every CheckEnv has).
    kubernetes = cast(list[Category[MulticlusterEnv]],
                      [c for c in catalog.installed() if c.name == "kubernetes-api"])
    ns = _NS
    relink = ("link again from the remote cluster: `isthmus --context=REMOTE multicluster link --cluster-name "
              "NAME | kubectl --context=THIS apply -f -`")
    checks: tuple[Check[MulticlusterEnv], ...] = (
        Check("Link CRD exists", _crd,
              "install the multicluster extension: `isthmus multicluster install | kubectl apply -f -`",
              fatal=True),
        Check("Link resources are valid", _links_valid,
              f"fix the Link (`kubectl -n {ns} edit link NAME`), or {relink}"),
        Check("remote cluster access credentials are valid", _credentials,
              f"{relink}; the service mirror takes new credentials without a restart"),
        Check("clusters share trust anchors", _shared_anchors,
              "both clusters' control planes need issuers from one trust anchor: re-install the remote's "
              "with `isthmus install --identity-trust-anchors-file ROOT.crt --identity-issuer-certificate-file "
              "ISSUER.crt ...` (an issuer of this cluster's root) and restart its gateway"),
        Check("service mirror controllers are running", _controllers,
              f"`kubectl -n {ns} get deploy,pods -l app=isthmus-service-mirror`; `kubectl -n {ns} logs "
              f"deploy/isthmus-service-mirror-NAME`; a missing one: {relink}", retry=True),
        Check("all gateways are alive", _gateways,
              f"is the remote gateway running? `kubectl --context=REMOTE -n {ns} get pods,svc isthmus-gateway`; "
              f"`isthmus multicluster gateways` shows every Link's", retry=True),
        Check("all mirror services have endpoints", _endpoints,
              "a mirror has endpoints while its remote service has ready pods and the gateway is alive: "
              "`kubectl --context=REMOTE -n NAMESPACE get endpoints SERVICE`", retry=True),
        Check("all mirror services are part of a Link", _orphans,
              "delete what no Link owns: `kubectl delete svc -n NAMESPACE NAME`, or `isthmus multicluster "
              "unlink --cluster-name CLUSTER | kubectl delete -f -`"),
    )
    return [*kubernetes, Category("isthmus-multicluster", checks)]


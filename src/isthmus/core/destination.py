"""Destination answers: where a proxy should send requests for an authority, and with what identity.

The destination service (`isthmus.components.destination`) answers sidecar
proxies that ask where an authority lives. Every decision is made here, from
Services, Endpoints and Pods (Kubernetes JSON) alone:

* `parse_authority`: an authority — ``svc.ns``, ``svc.ns.svc``,
  ``svc.ns.svc.<cluster domain>``, a cluster IP or a pod IP, each with or
  without ``:port`` (default 80) — to a `ServiceTarget`, an `AddressTarget`,
  an `OtherName` (well formed, but nothing the cluster can name), or a
  `BadAuthority` (malformed);
* `DestinationIndex`: the objects, kept as small projections (`ServiceInfo`,
  `EndpointsInfo`, `PodInfo`) with address indexes, updated one watch event at
  a time (`apply`), and the answer for a target (`resolve`): a JSON-ready
  snapshot (see the architecture document's "Destination" section for its
  fields) together with the set of objects it was computed from;
* `DependencyIndex`: which watched authorities an object change can affect,
  so only their answers are computed again.

Rules (Linkerd's, with isthmus names):

* a pod is meshed when it has a container named ``isthmus-proxy``; its
  endpoints carry the identity of its service account, proxy port 4143 and the
  protocol hint ``http``; unmeshed endpoints carry none of them;
* only ready addresses (``subsets[].addresses``) are endpoints; an address
  whose pod is named but not known (yet) is left out rather than offered
  without its identity;
* a Service port is matched by number, then by its name to the Endpoints
  subset port of the same name (or the subset's only port when unnamed), so
  named target ports resolve through the Endpoints object;
* an Endpoints object annotated with ``mirror.isthmus.io/remote-gateway-identity``
  and ``mirror.isthmus.io/remote-svc-fq-name`` (the service mirror's) lists
  gateway addresses: each endpoint has the gateway's identity, its own port as
  proxy port, the ``http`` hint and the remote authority to use
  (``<remote-svc-fq-name>:<service port>``);
* ``opaque`` is true when the port is listed in ``config.isthmus.io/opaque-ports``
  (``"3306,5432"``, ranges ``"4000-4100"``; pods may also name container
  ports) of the Service (its port) or of a pod behind it (the pod's target
  port), or of the pod itself for a pod address;
* ``policy`` is the Service's annotations under ``timeout.isthmus.io/``,
  ``retry.isthmus.io/`` and ``balancer.isthmus.io/``, as raw strings.

Promises: pure (no I/O, no clock, no randomness); the same objects give the
same snapshot, with endpoints sorted by address, so snapshots compare equal
exactly when their answers are the same; malformed objects and fields are
skipped, never raised on.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from isthmus.core.identity import DEFAULT_TRUST_DOMAIN, workload_identity
from isthmus.core.names import validate_dns1123_label

__all__ = [
    "BALANCER_PREFIX",
    "CLUSTER_NAME_LABEL",
    "DEFAULT_CLUSTER_DOMAIN",
    "DEFAULT_PORT",
    "GATEWAY_IDENTITY_ANNOTATION",
    "OPAQUE_PORTS_ANNOTATION",
    "POLICY_PREFIXES",
    "PROXY_CONTAINER",
    "PROXY_INBOUND_PORT",
    "REMOTE_FQ_NAME_ANNOTATION",
    "RESOLVE_PATH",
    "RETRY_PREFIX",
    "TIMEOUT_PREFIX",
    "AddressTarget",
    "Answer",
    "BadAuthority",
    "Dependency",
    "DependencyIndex",
    "DestinationIndex",
    "EndpointsInfo",
    "Kind",
    "OtherName",
    "PodInfo",
    "ServiceInfo",
    "ServiceTarget",
    "Target",
    "deployment_name",
    "parse_authority",
    "parse_port_ranges",
]

RESOLVE_PATH = "/v1/resolve"  # GET ?authority=...; the wire protocol is in docs/architecture.md
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
DEFAULT_PORT = 80
PROXY_CONTAINER = "isthmus-proxy"
PROXY_INBOUND_PORT = 4143
PROTOCOL_HINT = "http"
OPAQUE_PORTS_ANNOTATION = "config.isthmus.io/opaque-ports"
TIMEOUT_PREFIX = "timeout.isthmus.io/"
RETRY_PREFIX = "retry.isthmus.io/"
BALANCER_PREFIX = "balancer.isthmus.io/"
POLICY_PREFIXES = (TIMEOUT_PREFIX, RETRY_PREFIX, BALANCER_PREFIX)
CLUSTER_NAME_LABEL = "mirror.isthmus.io/cluster-name"
GATEWAY_IDENTITY_ANNOTATION = "mirror.isthmus.io/remote-gateway-identity"
REMOTE_FQ_NAME_ANNOTATION = "mirror.isthmus.io/remote-svc-fq-name"

Kind = Literal["Service", "Endpoints", "Pod"]
# What an answer was computed from: ("svc" | "ep" | "pod", namespace, name) or ("ip", address).
Dependency = tuple[str, ...]
_Key = tuple[str, str]  # (namespace, name)


# --------------------------------------------------------------------------- authorities


@dataclass(frozen=True, slots=True)
class ServiceTarget:
    """A Service port named by DNS name."""

    namespace: str
    name: str
    port: int

    def canonical(self, cluster_domain: str) -> str:
        return f"{self.name}.{self.namespace}.svc.{cluster_domain}:{self.port}"


@dataclass(frozen=True, slots=True)
class AddressTarget:
    """An IP address and port: a Service's cluster IP, a pod IP, or nothing known."""

    ip: str
    port: int

    def canonical(self, cluster_domain: str) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class OtherName:
    """A well-formed host name that is not a name of the cluster's services."""

    host: str
    port: int

    def canonical(self, cluster_domain: str) -> str:
        return f"{self.host}:{self.port}"

    def reason(self, cluster_domain: str) -> str:
        forms = f"svc.ns, svc.ns.svc or svc.ns.svc.{cluster_domain}"
        if "." not in self.host:
            return (f"{self.host} is not a service or pod address: name the namespace too "
                    f"({self.host}.<namespace>, or {forms})")
        return f"{self.host} is not a service or pod address (service names are {forms})"


@dataclass(frozen=True, slots=True)
class BadAuthority:
    """An authority that cannot be parsed, with the reason."""

    authority: str
    reason: str

    @property
    def message(self) -> str:
        return f"bad authority {self.authority!r}: {self.reason}"


Target = ServiceTarget | AddressTarget | OtherName


def _split_host_port(authority: str) -> tuple[str, int] | BadAuthority:
    if not authority:
        return BadAuthority(authority, "it is empty; give host[:port]")
    if any(c.isspace() for c in authority) or any(c in authority for c in "/?#@\\"):
        return BadAuthority(authority, "an authority is host[:port], without spaces, user "
                                       "information, path or query")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0 or (end + 1 < len(authority) and authority[end + 1] != ":"):
            return BadAuthority(authority, "malformed IPv6 address; write [address]:port")
        host, port_text = authority[1:end], authority[end + 2:]
        if not _is_ip(host) or ":" not in host:
            return BadAuthority(authority, f"{host!r} in brackets is not an IPv6 address")
    else:
        host, sep, port_text = authority.rpartition(":")
        if not sep:
            host, port_text = authority, ""
        elif ":" in host:
            return BadAuthority(authority, "an IPv6 address must be in brackets: [address]:port")
        elif not port_text:
            return BadAuthority(authority, "the port after ':' is empty")
    if not host:
        return BadAuthority(authority, "the host is empty")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return BadAuthority(authority, f"{port_text!r} is not a port number (1-65535)")
    return host, int(port_text)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_authority(authority: str, *,
                    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> Target | BadAuthority:
    """What `authority` names (see the module docstring); names are compared in lower case."""
    parsed = _split_host_port(authority)
    if isinstance(parsed, BadAuthority):
        return parsed
    host, port = parsed
    if _is_ip(host):
        return AddressTarget(ipaddress.ip_address(host).compressed, port)
    name = host.lower().removesuffix(".")
    labels = name.split(".")
    for label in labels:
        if validate_dns1123_label(label):
            return BadAuthority(authority, f"{host!r} is neither an IP address nor a DNS name "
                                           f"(label {label!r} is not an RFC 1123 label)")
    suffix = ["svc", *cluster_domain.strip(".").lower().split(".")]
    if len(labels) == 2 or (len(labels) == 3 and labels[2] == "svc") or labels[2:] == suffix:
        return ServiceTarget(labels[1], labels[0], port)
    return OtherName(name, port)


# --------------------------------------------------------------------------- projections


@dataclass(frozen=True, slots=True)
class _Port:
    name: str  # "" when unnamed
    port: int


PortRanges = tuple[tuple[int, int], ...]


def _in_ranges(port: int, ranges: PortRanges) -> bool:
    return any(lo <= port <= hi for lo, hi in ranges)


def parse_port_ranges(value: Any, names: Mapping[str, int] | None = None) -> PortRanges:
    """``"3306,5432"`` / ``"4000-4100"`` (and port names found in `names`) as sorted (low, high) ranges.

    Malformed or unknown entries are skipped.
    """
    if not isinstance(value, str):
        return ()
    out: set[tuple[int, int]] = set()
    for token in value.split(","):
        token = token.strip()
        lo_text, dash, hi_text = token.partition("-")
        if dash and lo_text.strip().isdigit() and hi_text.strip().isdigit():
            lo, hi = int(lo_text), int(hi_text)
        elif token.isdigit():
            lo = hi = int(token)
        elif names and token in names:
            lo = hi = names[token]
        else:
            continue
        if 0 < lo <= hi < 65536:
            out.add((lo, hi))
    return tuple(sorted(out))


def _port_number(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536:
        return value
    return None


def _tcp(port: Mapping[str, Any]) -> bool:
    return (port.get("protocol") or "TCP") == "TCP"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(obj.get("metadata"))


def _key(obj: Mapping[str, Any]) -> _Key | None:
    meta = _meta(obj)
    name, ns = meta.get("name"), meta.get("namespace") or "default"
    if not isinstance(name, str) or not name or not isinstance(ns, str):
        return None
    return ns, name


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _ports(raw: Any) -> tuple[_Port, ...]:
    out = []
    for p in raw if isinstance(raw, list) else ():
        if isinstance(p, Mapping) and _tcp(p):
            number, name = _port_number(p.get("port")), p.get("name") or ""
            if number is not None and isinstance(name, str):
                out.append(_Port(name, number))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    """What an answer needs of a Service."""

    namespace: str
    name: str
    cluster_ips: tuple[str, ...]
    external_name: str | None  # set for ExternalName Services
    ports: tuple[_Port, ...]  # TCP ports
    target_cluster: str | None
    policy: tuple[tuple[str, str], ...]
    opaque_ports: PortRanges

    @classmethod
    def from_object(cls, svc: Mapping[str, Any]) -> ServiceInfo | None:
        key = _key(svc)
        spec = svc.get("spec")
        if key is None or not isinstance(spec, Mapping):
            return None
        meta = _meta(svc)
        annotations = _str_map(meta.get("annotations"))
        ips = spec.get("clusterIPs") or [spec.get("clusterIP")]
        cluster_ips = tuple(ipaddress.ip_address(ip).compressed for ip in ips
                            if isinstance(ip, str) and _is_ip(ip))
        external = None
        if spec.get("type") == "ExternalName":
            external = spec.get("externalName") if isinstance(spec.get("externalName"), str) else ""
        return cls(
            namespace=key[0], name=key[1], cluster_ips=cluster_ips, external_name=external,
            ports=_ports(spec.get("ports")),
            target_cluster=_str_map(meta.get("labels")).get(CLUSTER_NAME_LABEL) or None,
            policy=tuple(sorted((k, v) for k, v in annotations.items() if k.startswith(POLICY_PREFIXES))),
            opaque_ports=parse_port_ranges(annotations.get(OPAQUE_PORTS_ANNOTATION)))


@dataclass(frozen=True, slots=True)
class _Address:
    ip: str
    pod: _Key | None  # the targetRef, when it is a Pod


@dataclass(frozen=True, slots=True)
class _Subset:
    ports: tuple[_Port, ...]
    addresses: tuple[_Address, ...]  # ready ones only


@dataclass(frozen=True, slots=True)
class EndpointsInfo:
    """What an answer needs of an Endpoints object: its ready addresses and gateway annotations."""

    namespace: str
    name: str
    subsets: tuple[_Subset, ...]
    gateway_identity: str | None
    remote_fq_name: str | None

    @classmethod
    def from_object(cls, ep: Mapping[str, Any]) -> EndpointsInfo | None:
        key = _key(ep)
        if key is None:
            return None
        annotations = _str_map(_meta(ep).get("annotations"))
        subsets = []
        for s in ep.get("subsets") or ():
            if not isinstance(s, Mapping):
                continue
            addresses = []
            for a in s.get("addresses") or ():
                ip = a.get("ip") if isinstance(a, Mapping) else None
                if not isinstance(ip, str) or not _is_ip(ip):
                    continue
                ref = a.get("targetRef")
                pod = None
                if isinstance(ref, Mapping) and ref.get("kind") == "Pod" and isinstance(ref.get("name"), str):
                    ns = ref.get("namespace") if isinstance(ref.get("namespace"), str) else key[0]
                    pod = (ns or key[0], ref["name"])
                addresses.append(_Address(ipaddress.ip_address(ip).compressed, pod))
            subsets.append(_Subset(_ports(s.get("ports")), tuple(addresses)))
        gateway = annotations.get(GATEWAY_IDENTITY_ANNOTATION) or None
        remote = annotations.get(REMOTE_FQ_NAME_ANNOTATION) or None
        if gateway is None or remote is None:
            gateway = remote = None
        return cls(key[0], key[1], tuple(subsets), gateway, remote)


def deployment_name(meta: Mapping[str, Any]) -> str | None:
    """The Deployment a pod belongs to: its owner Deployment, its owner ReplicaSet's name without
    the pod-template-hash suffix, or else its ``app`` label."""
    labels = _str_map(meta.get("labels"))
    for ref in meta.get("ownerReferences") or ():
        if not isinstance(ref, Mapping) or not isinstance(ref.get("name"), str):
            continue
        if ref.get("kind") == "Deployment":
            return str(ref["name"])
        if ref.get("kind") == "ReplicaSet":
            name: str = ref["name"]
            template_hash = labels.get("pod-template-hash")
            if template_hash and name.endswith(f"-{template_hash}"):
                return name[: -len(template_hash) - 1]
            base, dash, _ = name.rpartition("-")
            return base if dash and base else name
    return labels.get("app") or None


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What an answer needs of a Pod."""

    namespace: str
    name: str
    ips: tuple[str, ...]  # empty once the pod has finished
    meshed: bool
    service_account: str
    deployment: str | None
    opaque_ports: PortRanges

    @classmethod
    def from_object(cls, pod: Mapping[str, Any]) -> PodInfo | None:
        key = _key(pod)
        if key is None:
            return None
        meta = _meta(pod)
        spec = _mapping(pod.get("spec"))
        status = _mapping(pod.get("status"))
        containers = [c for field in ("containers", "initContainers") for c in spec.get(field) or ()
                      if isinstance(c, Mapping)]
        names: dict[str, int] = {}
        for c in containers:
            for p in c.get("ports") or ():
                number = _port_number(p.get("containerPort")) if isinstance(p, Mapping) else None
                if number is not None and isinstance(p.get("name"), str):
                    names.setdefault(p["name"], number)
        ips: list[str] = []
        if status.get("phase") not in ("Succeeded", "Failed"):
            listed = [p.get("ip") for p in status.get("podIPs") or () if isinstance(p, Mapping)]
            for ip in [status.get("podIP"), *listed]:
                if isinstance(ip, str) and _is_ip(ip):
                    compressed = ipaddress.ip_address(ip).compressed
                    if compressed not in ips:
                        ips.append(compressed)
        sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        return cls(
            namespace=key[0], name=key[1], ips=tuple(ips),
            meshed=any(c.get("name") == PROXY_CONTAINER for c in containers),
            service_account=sa if isinstance(sa, str) else "default",
            deployment=deployment_name(meta),
            opaque_ports=parse_port_ranges(_str_map(meta.get("annotations")).get(OPAQUE_PORTS_ANNOTATION),
                                           names))


# --------------------------------------------------------------------------- answers


@dataclass(frozen=True, slots=True)
class Answer:
    """A snapshot for one target (JSON-ready) and the objects it was computed from."""

    snapshot: dict[str, Any]
    dependencies: frozenset[Dependency]


def _missing(authority: str, reason: str, deps: Iterable[Dependency]) -> Answer:
    return Answer({"authority": authority, "exists": False, "reason": reason}, frozenset(deps))


def _match_port(ports: tuple[_Port, ...], name: str) -> int | None:
    if name:
        return next((p.port for p in ports if p.name == name), None)
    unnamed = [p for p in ports if not p.name]
    if len(unnamed) == 1:
        return unnamed[0].port
    return ports[0].port if len(ports) == 1 else None


class DestinationIndex:
    """Services, Endpoints and Pods of one cluster, and the answers built from them."""

    def __init__(self, *, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
                 trust_domain: str = DEFAULT_TRUST_DOMAIN) -> None:
        self.cluster_domain = cluster_domain.strip(".").lower()
        self.trust_domain = trust_domain
        self.services: dict[_Key, ServiceInfo] = {}
        self.endpoints: dict[_Key, EndpointsInfo] = {}
        self.pods: dict[_Key, PodInfo] = {}
        self._service_ips: dict[str, set[_Key]] = {}
        self._pod_ips: dict[str, set[_Key]] = {}

    def __repr__(self) -> str:
        return (f"<DestinationIndex {len(self.services)} services, {len(self.endpoints)} endpoints, "
                f"{len(self.pods)} pods, domain {self.cluster_domain}>")

    # ------------------------------------------------------------------ updates

    def apply(self, kind: Kind, event: str, obj: Mapping[str, Any]) -> frozenset[Dependency]:
        """Take one watch event (ADDED, MODIFIED, DELETED) into the index.

        Returns what changed, as dependencies (`DependencyIndex.affected` turns
        them into authorities); empty when nothing an answer uses changed.
        """
        key = _key(obj)
        if key is None:
            return frozenset()
        deleted = event == "DELETED"
        if kind == "Service":
            return self._apply_service(key, None if deleted else ServiceInfo.from_object(obj))
        if kind == "Endpoints":
            ep = None if deleted else EndpointsInfo.from_object(obj)
            if self.endpoints.get(key) == ep:
                return frozenset()
            self._put(self.endpoints, key, ep)
            return frozenset({("ep", *key)})
        if kind == "Pod":
            return self._apply_pod(key, None if deleted else PodInfo.from_object(obj))
        raise ValueError(f"unknown kind {kind!r}; the index takes Service, Endpoints and Pod")

    @staticmethod
    def _put(table: dict[_Key, Any], key: _Key, value: Any) -> None:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value

    @staticmethod
    def _reindex(by_ip: dict[str, set[_Key]], key: _Key, old: Iterable[str], new: Iterable[str]) -> None:
        for ip in old:
            keys = by_ip.get(ip)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del by_ip[ip]
        for ip in new:
            by_ip.setdefault(ip, set()).add(key)

    def _apply_service(self, key: _Key, svc: ServiceInfo | None) -> frozenset[Dependency]:
        old = self.services.get(key)
        if old == svc:
            return frozenset()
        old_ips = old.cluster_ips if old else ()
        new_ips = svc.cluster_ips if svc else ()
        self._reindex(self._service_ips, key, old_ips, new_ips)
        self._put(self.services, key, svc)
        return frozenset({("svc", *key), *(("ip", ip) for ip in (*old_ips, *new_ips))})

    def _apply_pod(self, key: _Key, pod: PodInfo | None) -> frozenset[Dependency]:
        old = self.pods.get(key)
        if old == pod:
            return frozenset()
        old_ips = old.ips if old else ()
        new_ips = pod.ips if pod else ()
        self._reindex(self._pod_ips, key, old_ips, new_ips)
        self._put(self.pods, key, pod)
        return frozenset({("pod", *key), *(("ip", ip) for ip in (*old_ips, *new_ips))})

    # ------------------------------------------------------------------ answers

    def resolve_authority(self, authority: str) -> Answer | BadAuthority:
        target = parse_authority(authority, cluster_domain=self.cluster_domain)
        if isinstance(target, BadAuthority):
            return target
        return self.resolve(target)

    def canonical(self, target: Target) -> str:
        return target.canonical(self.cluster_domain)

    def resolve(self, target: Target) -> Answer:
        """The snapshot for `target` now."""
        authority = target.canonical(self.cluster_domain)
        if isinstance(target, ServiceTarget):
            return self._service_answer(authority, (target.namespace, target.name), target.port, set())
        if isinstance(target, OtherName):
            return _missing(authority, target.reason(self.cluster_domain), ())
        deps: set[Dependency] = {("ip", target.ip)}
        owners = sorted(self._service_ips.get(target.ip, ()))
        if owners:
            return self._service_answer(authority, owners[0], target.port, deps)
        pod = self._pod_at(target.ip)
        if pod is None:
            return _missing(authority, f"{target.ip} is not a service or pod address", deps)
        deps.add(("pod", pod.namespace, pod.name))
        snapshot = {
            "authority": authority, "exists": True, "service": None,
            "labels": {"dst_namespace": pod.namespace}, "policy": {},
            "opaque": _in_ranges(target.port, pod.opaque_ports),
            "endpoints": [self._pod_endpoint(target.ip, target.port, pod)],
        }
        return Answer(snapshot, frozenset(deps))

    def _pod_at(self, ip: str, namespace: str | None = None) -> PodInfo | None:
        keys = sorted(k for k in self._pod_ips.get(ip, ()) if namespace is None or k[0] == namespace)
        return self.pods[keys[0]] if keys else None

    def _service_answer(self, authority: str, key: _Key, port: int,
                        deps: set[Dependency]) -> Answer:
        ns, name = key
        deps |= {("svc", ns, name), ("ep", ns, name)}
        svc = self.services.get(key)
        if svc is None:
            return _missing(authority, f"service {ns}/{name} not found", deps)
        if svc.external_name is not None:
            return _missing(authority, f"service {ns}/{name} is an ExternalName service "
                                       f"({svc.external_name or 'no name'}); connect to that name instead",
                            deps)
        service_port = next((p for p in svc.ports if p.port == port), None)
        if service_port is None:
            known = ", ".join(str(p.port) for p in svc.ports) or "none"
            return _missing(authority, f"service {ns}/{name} has no port {port} (its TCP ports: {known})",
                            deps)
        labels = {"dst_namespace": ns, "dst_service": name}
        if svc.target_cluster:
            labels["dst_target_cluster"] = svc.target_cluster
        endpoints, opaque = self._endpoints(svc, service_port, deps)
        snapshot = {
            "authority": authority, "exists": True,
            "service": {"namespace": ns, "name": name},
            "labels": labels, "policy": dict(svc.policy),
            "opaque": opaque or _in_ranges(port, svc.opaque_ports),
            "endpoints": endpoints,
        }
        return Answer(snapshot, frozenset(deps))

    def _endpoints(self, svc: ServiceInfo, service_port: _Port,
                   deps: set[Dependency]) -> tuple[list[dict[str, Any]], bool]:
        """The endpoints of a Service port (sorted) and whether a pod behind it marks its port opaque."""
        ep = self.endpoints.get((svc.namespace, svc.name))
        if ep is None:
            return [], False
        found: dict[tuple[str, int], dict[str, Any]] = {}
        opaque = False
        for subset in ep.subsets:
            target_port = _match_port(subset.ports, service_port.name)
            if target_port is None:
                continue
            for address in subset.addresses:
                if (address.ip, target_port) in found:
                    continue
                if ep.gateway_identity is not None:
                    found[address.ip, target_port] = self._gateway_endpoint(
                        address.ip, target_port, ep, service_port.port, svc.target_cluster)
                    continue
                if address.pod is not None:
                    deps.add(("pod", *address.pod))
                    pod = self.pods.get(address.pod)
                    if pod is None:
                        continue  # not known yet: never offer a meshed pod without its identity
                else:
                    deps.add(("ip", address.ip))  # a pod may appear at this address later
                    pod = self._pod_at(address.ip, svc.namespace)
                    if pod is not None:
                        deps.add(("pod", pod.namespace, pod.name))
                if pod is None:
                    found[address.ip, target_port] = _endpoint(address.ip, target_port)
                    continue
                opaque = opaque or _in_ranges(target_port, pod.opaque_ports)
                found[address.ip, target_port] = self._pod_endpoint(address.ip, target_port, pod)
        return [found[k] for k in sorted(found, key=_address_order)], opaque

    def _pod_endpoint(self, ip: str, port: int, pod: PodInfo) -> dict[str, Any]:
        labels = {"dst_namespace": pod.namespace, "dst_pod": pod.name}
        if pod.deployment:
            labels["dst_deployment"] = pod.deployment
        identity = None
        if pod.meshed:
            try:
                identity = workload_identity(pod.service_account, pod.namespace, self.trust_domain)
            except ValueError:
                identity = None  # a name Kubernetes would not accept; such a pod cannot be certified
        if identity is None:
            return _endpoint(ip, port, labels=labels)
        return _endpoint(ip, port, identity=identity, proxy_port=PROXY_INBOUND_PORT,
                         hint=PROTOCOL_HINT, labels=labels)

    @staticmethod
    def _gateway_endpoint(ip: str, port: int, ep: EndpointsInfo, service_port: int,
                          target_cluster: str | None) -> dict[str, Any]:
        labels = {"dst_target_cluster": target_cluster} if target_cluster else {}
        return _endpoint(ip, port, identity=ep.gateway_identity, proxy_port=port, hint=PROTOCOL_HINT,
                         authority_override=f"{ep.remote_fq_name}:{service_port}", labels=labels)


def _address_order(key: tuple[str, int]) -> tuple[int, int, int]:
    ip = ipaddress.ip_address(key[0])
    return ip.version, int(ip), key[1]


def _endpoint(ip: str, port: int, *, identity: str | None = None, proxy_port: int | None = None,
              hint: str | None = None, authority_override: str | None = None,
              labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"addr": ip, "port": port, "identity": identity, "proxyPort": proxy_port,
            "protocolHint": hint, "authorityOverride": authority_override,
            "labels": dict(labels or {})}


# --------------------------------------------------------------------------- change tracking


class DependencyIndex:
    """Which watched authorities depend on which objects.

    `track` records (or replaces) what an authority's current answer was
    computed from; `affected` names the authorities whose answers a change
    (the dependencies `DestinationIndex.apply` returned) can alter.
    """

    def __init__(self) -> None:
        self._deps: dict[str, frozenset[Dependency]] = {}
        self._watchers: dict[Dependency, set[str]] = {}

    def __repr__(self) -> str:
        return f"<DependencyIndex {len(self._deps)} authorities, {len(self._watchers)} objects>"

    def __contains__(self, authority: object) -> bool:
        return authority in self._deps

    def __iter__(self) -> Iterator[str]:
        return iter(self._deps)

    def track(self, authority: str, dependencies: frozenset[Dependency]) -> None:
        old = self._deps.get(authority, frozenset())
        for dep in old - dependencies:
            watchers = self._watchers[dep]
            watchers.discard(authority)
            if not watchers:
                del self._watchers[dep]
        for dep in dependencies - old:
            self._watchers.setdefault(dep, set()).add(authority)
        self._deps[authority] = dependencies

    def forget(self, authority: str) -> None:
        self.track(authority, frozenset())
        del self._deps[authority]

    def affected(self, changes: Iterable[Dependency]) -> set[str]:
        out: set[str] = set()
        for dep in changes:
            out |= self._watchers.get(dep, set())
        return out

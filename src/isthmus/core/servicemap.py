"""What an embedded cluster's Services mean on the wire: listeners, names and backends.

The embedded cluster has no kube-proxy and no cluster DNS; the service proxy
(`isthmus.components.serviceproxy`) plays both parts, and this module makes
every decision it needs, from the Service and Endpoints objects (Kubernetes
JSON) alone:

* the listener set: one entry per (cluster IP, port) of every TCP Service port,
  naming the Service and its ready backends. A backend's port is the Endpoints
  port matched to the Service port by name when the Service port has a name,
  else the subset's single (unnamed) port;
* name resolution of an authority (``svc``, ``svc.ns``, ``svc.ns.svc``,
  ``svc.ns.svc.<cluster domain>`` or a cluster IP, with or without ``:port``)
  to a Service port, given the client's namespace for the short form, and the
  routing decision built on it (`ServiceMap.route`): where to connect, or what
  to answer instead;
* the difference between two listener sets, so listeners are opened and closed
  one by one (`diff_listeners`);
* a round-robin backend picker whose only state is the last backend it picked
  per key (`RoundRobin`).

Promises:

* pure: no I/O, no clock reads, no randomness; the same objects give the same
  map;
* only 127.0.0.0/8 is ever offered as a destination: cluster IPs, backends
  and direct destinations outside it are left out, and `route` refuses them;
* malformed objects and ports are skipped, never raised on; UDP and SCTP ports
  are ignored (the proxy forwards TCP only);
* ExternalName Services resolve to their external name, which is then held to
  the same loopback rule as any address that is not a Service.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = [
    "DEFAULT_CLUSTER_DOMAIN",
    "Backend",
    "BadAuthority",
    "Destination",
    "ListenerDiff",
    "ListenerKey",
    "NotAService",
    "Refusal",
    "Resolution",
    "RoundRobin",
    "Routed",
    "ServiceKey",
    "ServiceMap",
    "ServicePort",
    "UnknownPort",
    "UnknownService",
    "build_service_map",
    "diff_listeners",
    "is_loopback_ip",
    "split_authority",
]

DEFAULT_CLUSTER_DOMAIN = "cluster.local"
_ROUTE_CACHE = 4096
_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


@functools.lru_cache(maxsize=65536)
def is_loopback_ip(host: str) -> bool:
    """Whether `host` is an IPv4 address literal in 127.0.0.0/8 (cached: maps are rebuilt often)."""
    if not host.startswith("127."):
        return False
    try:
        return ipaddress.IPv4Address(host) in _LOOPBACK
    except ValueError:
        return False


def _is_ip_literal(host: str) -> bool:
    if not (host[:1].isdigit() or ":" in host):  # Service names start with a letter
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class ServiceKey(NamedTuple):
    # A named tuple rather than a frozen dataclass: maps are rebuilt over thousands of
    # Services, and a tuple's construction, hashing and ordering run in C.
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, order=True)
class Backend:
    ip: str
    port: int

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class ServicePort:
    """One TCP port of a Service and the ready backends behind it (sorted)."""

    service: ServiceKey
    name: str  # "" for an unnamed port
    port: int
    cluster_ips: tuple[str, ...]  # loopback cluster (and load-balancer ingress) IPs; () if headless
    backends: tuple[Backend, ...]

    def __str__(self) -> str:
        return f"{self.service}:{self.name or self.port}"


ListenerKey = tuple[str, int]  # (cluster IP, port), TCP


# --------------------------------------------------------------------------- resolution results


@dataclass(frozen=True)
class Routed:
    """The authority names this Service port (which may have no ready backends)."""

    target: ServicePort


@dataclass(frozen=True)
class UnknownService:
    name: str
    namespace: str

    @property
    def message(self) -> str:
        return f'no service "{self.name}" in namespace "{self.namespace}"'


@dataclass(frozen=True)
class UnknownPort:
    service: ServiceKey
    port: int
    ports: tuple[int, ...]

    @property
    def message(self) -> str:
        known = ", ".join(str(p) for p in self.ports) or "none"
        return f'service "{self.service}" has no TCP port {self.port} (its ports: {known})'


@dataclass(frozen=True)
class NotAService:
    """Neither a cluster IP nor a name in the cluster's service domain."""

    host: str
    port: int


@dataclass(frozen=True)
class BadAuthority:
    authority: str
    reason: str

    @property
    def message(self) -> str:
        return f'bad authority "{self.authority}": {self.reason}'


Resolution = Routed | UnknownService | UnknownPort | NotAService | BadAuthority


@dataclass(frozen=True)
class Destination:
    """Where to connect: a Service port's ready backends, or one direct loopback address."""

    backends: tuple[Backend, ...]  # never empty
    service: ServicePort | None  # None when connecting directly


@dataclass(frozen=True)
class Refusal:
    """What to answer instead of connecting: an HTTP status and a one-line reason."""

    status: int
    message: str


def split_authority(authority: str, default_port: int | None) -> tuple[str, int] | BadAuthority:
    """`host[:port]` or `[v6]:port` → (host, port); `default_port` None means a port is required."""
    if not authority:
        return BadAuthority(authority, "it is empty")
    if "@" in authority:
        return BadAuthority(authority, "user information is not allowed")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0 or (end + 1 < len(authority) and authority[end + 1] != ":"):
            return BadAuthority(authority, "malformed IPv6 address")
        host, port_text = authority[1:end], authority[end + 2 :]
    else:
        host, sep, port_text = authority.rpartition(":")
        if not sep:
            host, port_text = authority, ""
        elif ":" in host:
            return BadAuthority(authority, "an IPv6 address must be in brackets")
    if not host:
        return BadAuthority(authority, "the host is empty")
    if not port_text:
        if default_port is None:
            return BadAuthority(authority, "a port is required (host:port)")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return BadAuthority(authority, f'"{port_text}" is not a port number')
    return host, int(port_text)


# --------------------------------------------------------------------------- the map


@dataclass(frozen=True)
class _Service:
    key: ServiceKey
    ports: Mapping[int, ServicePort]
    external_name: str | None


class ServiceMap:
    """Listeners and name resolution for one snapshot of Services and Endpoints."""

    def __init__(self, services: Iterable[_Service] = (), *,
                 cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> None:
        self.cluster_domain = cluster_domain.strip(".").lower()
        self._suffix = ("svc", *self.cluster_domain.split("."))
        self._services = {s.key: s for s in services}
        listeners: dict[ListenerKey, ServicePort] = {}
        by_ip: dict[str, ServiceKey] = {}
        # In name order, so the first Service to claim an IP:port keeps it.
        for key in sorted(self._services):
            for port in self._services[key].ports.values():
                for ip in port.cluster_ips:
                    listeners.setdefault((ip, port.port), port)
                    by_ip.setdefault(ip, key)
        self.listeners: Mapping[ListenerKey, ServicePort] = listeners
        self._by_ip = by_ip
        self._routes: dict[tuple[str, str, int | None, tuple[tuple[str, int], ...]],
                           Destination | Refusal] = {}
        # What `build_service_map(previous=...)` reuses, by the id() of the objects read:
        # (object, its key) for Services and Endpoints, (Endpoints, entry) for Services.
        self._keys: dict[int, tuple[Mapping[str, Any], ServiceKey | None]] = {}
        self._entries: dict[int, tuple[Mapping[str, Any] | None, _Service | None]] = {}

    def __repr__(self) -> str:
        return (f"ServiceMap({len(self._services)} services, {len(self.listeners)} listeners,"
                f" domain {self.cluster_domain})")

    def __len__(self) -> int:
        return len(self._services)

    def service_ports(self) -> Iterator[ServicePort]:
        """Every TCP port of every Service."""
        for service in self._services.values():
            yield from service.ports.values()

    def backends(self) -> frozenset[Backend]:
        """Every ready backend of every Service port."""
        return frozenset(b for p in self.service_ports() for b in p.backends)

    def service_key(self, host: str, namespace: str) -> ServiceKey | None:
        """The Service a DNS name means, or None when the name is not a service name."""
        labels = host.lower().rstrip(".").split(".")
        n = len(labels)
        if (n == 2 + len(self._suffix) and tuple(labels[2:]) == self._suffix) or (n == 3 and labels[2] == "svc"):
            name, ns = labels[0], labels[1]
        elif n == 2:
            name, ns = labels
        elif n == 1:
            name, ns = labels[0], namespace
        else:
            return None
        if not name or not ns:
            return None
        return ServiceKey(ns, name)

    def resolve(self, authority: str, *, namespace: str = "default",
                default_port: int | None = 80) -> Resolution:
        """What `authority` names, for a client in `namespace`."""
        parsed = split_authority(authority, default_port)
        if isinstance(parsed, BadAuthority):
            return parsed
        host, port = parsed
        if _is_ip_literal(host):
            target = self.listeners.get((host, port))
            if target is not None:
                return Routed(target)
            owner = self._by_ip.get(host)
            if owner is not None:
                return UnknownPort(owner, port, tuple(sorted(self._services[owner].ports)))
            return NotAService(host, port)
        key = self.service_key(host, namespace)
        if key is None:
            return NotAService(host, port)
        service = self._services.get(key)
        if service is None:
            return UnknownService(key.name, key.namespace)
        if service.external_name is not None:
            return NotAService(service.external_name, port)
        found = service.ports.get(port)
        if found is None:
            return UnknownPort(key, port, tuple(sorted(service.ports)))
        return Routed(found)

    def route(self, authority: str, *, namespace: str = "default", default_port: int | None = 80,
              forbidden: tuple[tuple[str, int], ...] = ()) -> Destination | Refusal:
        """Where a proxy should connect for `authority`, or what to answer instead.

        `forbidden` lists addresses that must not be reached directly (the
        proxy's own, so a request cannot loop back into it). Answers are
        remembered (the map never changes), up to `_ROUTE_CACHE` of them.
        """
        key = (authority, namespace, default_port, forbidden)
        decision = self._routes.get(key)
        if decision is None:
            if len(self._routes) >= _ROUTE_CACHE:
                self._routes.clear()
            decision = self._routes[key] = self._decide(authority, namespace, default_port,
                                                        forbidden)
        return decision

    def _decide(self, authority: str, namespace: str, default_port: int | None,
                forbidden: tuple[tuple[str, int], ...]) -> Destination | Refusal:
        found = self.resolve(authority, namespace=namespace, default_port=default_port)
        if isinstance(found, Routed):
            if not found.target.backends:
                return Refusal(503, f'service "{found.target.service}" has no ready endpoints')
            return Destination(found.target.backends, found.target)
        if isinstance(found, NotAService):
            if not is_loopback_ip(found.host):
                return Refusal(403, f'refusing to connect to "{authority}": only cluster services'
                                    " and 127.0.0.0/8 addresses are reachable through this proxy")
            if (found.host, found.port) in forbidden:
                return Refusal(403, f'refusing to connect to "{authority}": that is this proxy')
            return Destination((Backend(found.host, found.port),), None)
        if isinstance(found, BadAuthority):
            return Refusal(400, found.message)
        return Refusal(503, found.message)


# --------------------------------------------------------------------------- building


def _int_port(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536:
        return value
    return None


def _tcp(port: Mapping[str, Any]) -> bool:
    return (port.get("protocol") or "TCP") == "TCP"


def _object_key(obj: Mapping[str, Any]) -> ServiceKey | None:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return None
    name, ns = meta.get("name"), meta.get("namespace") or "default"
    if not isinstance(name, str) or not name or not isinstance(ns, str):
        return None
    return ServiceKey(ns, name)


def _match_port(ports: Sequence[Mapping[str, Any]], name: str) -> int | None:
    if name:
        for p in ports:
            if p.get("name") == name:
                return _int_port(p.get("port"))
        return None
    unnamed = [p for p in ports if not p.get("name")]
    if len(unnamed) == 1:
        return _int_port(unnamed[0].get("port"))
    if len(ports) == 1:
        return _int_port(ports[0].get("port"))
    return None


def _ready_backends(endpoints: Mapping[str, Any] | None, port_name: str) -> tuple[Backend, ...]:
    if endpoints is None:
        return ()
    found: set[Backend] = set()
    for subset in endpoints.get("subsets") or ():
        if not isinstance(subset, Mapping):
            continue
        ports = [p for p in subset.get("ports") or () if isinstance(p, Mapping) and _tcp(p)]
        target = _match_port(ports, port_name)
        if target is None:
            continue
        for address in subset.get("addresses") or ():
            ip = address.get("ip") if isinstance(address, Mapping) else None
            if isinstance(ip, str) and is_loopback_ip(ip):
                found.add(Backend(ip, target))
    return tuple(sorted(found))


def _service(svc: Mapping[str, Any], endpoints: Mapping[str, Any] | None) -> _Service | None:
    key = _object_key(svc)
    spec = svc.get("spec")
    if key is None or not isinstance(spec, Mapping):
        return None
    if spec.get("type") == "ExternalName":
        external = spec.get("externalName")
        return _Service(key, {}, external.lower().rstrip(".") if isinstance(external, str) else "")
    ips = list(spec.get("clusterIPs") or [spec.get("clusterIP")])
    if spec.get("type") == "LoadBalancer":  # served on its ingress IPs too, as a cloud LB would
        status = svc.get("status")
        lb = status.get("loadBalancer") if isinstance(status, Mapping) else None
        ingress = lb.get("ingress") if isinstance(lb, Mapping) else None
        ips += [i.get("ip") for i in ingress or () if isinstance(i, Mapping)]
    cluster_ips = tuple(ip for ip in dict.fromkeys(ips) if isinstance(ip, str) and is_loopback_ip(ip))
    ports: dict[int, ServicePort] = {}
    for p in spec.get("ports") or ():
        if not isinstance(p, Mapping) or not _tcp(p):
            continue
        number, name = _int_port(p.get("port")), p.get("name") or ""
        if number is None or not isinstance(name, str) or number in ports:
            continue
        ports[number] = ServicePort(key, name, number, cluster_ips, _ready_backends(endpoints, name))
    return _Service(key, ports, None)


def build_service_map(services: Iterable[Mapping[str, Any]],
                      endpoints: Iterable[Mapping[str, Any]], *,
                      cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
                      previous: ServiceMap | None = None) -> ServiceMap:
    """The map of these Services, with backends from the Endpoints of the same name.

    With `previous`, a Service whose object and Endpoints object are the very
    ones `previous` was built from (an informer's cache hands out the same
    objects until they change) keeps its entry instead of being parsed again,
    so a rebuild after a few changes among thousands of Services costs little
    more than walking them. (Objects are recognised by identity; `previous`
    holds them, so an identity is never reused by another object meanwhile.)
    """
    reuse = previous if previous is not None and previous.cluster_domain == cluster_domain.strip(".").lower() else None
    old_keys = reuse._keys if reuse is not None else {}
    old_entries = reuse._entries if reuse is not None else {}
    keys: dict[int, tuple[Mapping[str, Any], ServiceKey | None]] = {}
    by_key: dict[ServiceKey, Mapping[str, Any]] = {}
    for ep in endpoints:
        was = old_keys.get(id(ep))
        key = was[1] if was is not None and was[0] is ep else (
            _object_key(ep) if isinstance(ep, Mapping) else None)
        keys[id(ep)] = (ep, key)
        if key is not None:
            by_key[key] = ep
    built = []
    entries: dict[int, tuple[Mapping[str, Any] | None, _Service | None]] = {}
    for svc in services:
        was = old_keys.get(id(svc))
        same = was is not None and was[0] is svc
        key = was[1] if was is not None and same else (_object_key(svc) if isinstance(svc, Mapping) else None)
        keys[id(svc)] = (svc, key)
        if key is None:
            continue
        its_ep = by_key.get(key)
        was_entry = old_entries.get(id(svc)) if same else None
        entry = was_entry[1] if was_entry is not None and was_entry[0] is its_ep else _service(svc, its_ep)
        entries[id(svc)] = (its_ep, entry)
        if entry is not None:
            built.append(entry)
    result = ServiceMap(built, cluster_domain=cluster_domain)
    result._keys, result._entries = keys, entries
    return result


# --------------------------------------------------------------------------- diffs


@dataclass(frozen=True)
class ListenerDiff:
    """What changes between two listener sets (each part sorted by listener key)."""

    added: tuple[tuple[ListenerKey, ServicePort], ...]
    removed: tuple[ListenerKey, ...]
    updated: tuple[tuple[ListenerKey, ServicePort], ...]  # same key, new service or backends

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.updated)


def diff_listeners(old: Mapping[ListenerKey, ServicePort],
                   new: Mapping[ListenerKey, ServicePort]) -> ListenerDiff:
    added = tuple((k, new[k]) for k in sorted(new.keys() - old.keys()))
    removed = tuple(sorted(old.keys() - new.keys()))
    updated = tuple((k, new[k]) for k in sorted(new.keys() & old.keys())
                    if new[k] is not old[k] and new[k] != old[k])
    return ListenerDiff(added, removed, updated)


# --------------------------------------------------------------------------- balancing


class RoundRobin:
    """Round robin per key that survives backend changes.

    The next pick is the first backend after the last one picked, in sorted
    order, wrapping around; a backend that was removed is never offered, and
    adding one does not restart the cycle. `order` returns every backend in the
    order to try them (the first is the pick; the rest are for retries).
    """

    def __init__(self) -> None:
        self._last: dict[Hashable, Backend] = {}

    def __repr__(self) -> str:
        return f"RoundRobin({len(self._last)} keys)"

    def order(self, key: Hashable, backends: Sequence[Backend]) -> tuple[Backend, ...]:
        """`backends` must be sorted (as `ServicePort.backends` are)."""
        if not backends:
            return ()
        last = self._last.get(key)
        i = 0 if last is None else bisect.bisect_right(backends, last)
        if i >= len(backends):
            i = 0
        ordered = (*backends[i:], *backends[:i])
        self._last[key] = ordered[0]
        return ordered

    def retain(self, keys: Iterable[Hashable]) -> None:
        """Forget the state of every key not in `keys`."""
        keep = set(keys)
        for key in [k for k in self._last if k not in keep]:
            del self._last[key]

"""Service mirror decisions: what a Link makes of a remote cluster's Services, as plain values.

The service mirror (`isthmus.components.mirror`) keeps, for every Service of a
remote cluster that its Link's selector exports, a local Service
`<svc>-<cluster>` in the same namespace whose Endpoints point at the remote
cluster's gateway. Every decision it takes is made here:

* `LinkSpec.from_object`: a Link (Kubernetes JSON) with its defaults applied,
  or `LinkError` listing what is wrong with it;
* `decide`: for one remote (namespace, name), given the remote Service and
  Endpoints, the local mirrored Service and Endpoints, whether the local
  namespace exists and the gateway's state, the `Action`s that make the local
  objects right and the mirrored service's `ServiceStatus`;
* `mirror_service`, `mirror_endpoints`: the objects wanted;
* `stray_objects`: local objects labelled for the cluster that no remote
  Service can own (a garbage-collection pass deletes them);
* `link_status`: the Link's `status` (conditions and per-service entries);
* the gateway probe state machine (`ProbeState.after`) and its jittered
  period (`jittered`);
* leader election on a Lease (`LeaseRecord`, `observe`, `lease_action`,
  `lease_spec`), client-go's rules: a lease is expired when its record has not
  changed for its duration, as seen on the candidate's own clock.

Rules:

* a remote Service is exported when the Link's selector matches its labels
  and it is not itself a mirror (`mirror.isthmus.io/mirrored-service`);
* the mirrored Service copies the remote's ports (name, port, protocol; the
  target port is left to default, since the Endpoints carry the gateway port
  under each port's name) and labels except `mirror.isthmus.io/*`, and adds
  `mirror.isthmus.io/mirrored-service=true`, `mirror.isthmus.io/cluster-name`,
  the annotations `mirror.isthmus.io/remote-svc-fq-name`
  (`<svc>.<ns>.svc.<targetClusterDomain>`) and
  `mirror.isthmus.io/remote-resource-version`, and the remote's
  `config.isthmus.io/opaque-ports`; annotations it does not manage, which
  someone may have put on the mirror locally, are kept;
* the mirrored Endpoints have one subset: the gateway's addresses, each
  service port's name with the gateway port; annotated with the gateway
  identity and the remote name; no subset while the remote Service has no
  ready endpoints or the gateway has no address; the addresses under
  `notReadyAddresses` while the gateway is not alive;
* a mirror is deleted when its remote Service is deleted or no longer
  exported; a local Service of the mirror's name that is not this cluster's
  mirror is never touched (status `Conflict`);
* a missing local namespace is created when the Link says
  `createMissingNamespaces`, otherwise the service's status says
  `MissingNamespace` and nothing is written.

Promises: pure (no I/O, no clock, no randomness: times and random draws are
arguments); inputs are never modified; malformed remote objects are treated
as well as they can be, never raised on.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from isthmus.core.destination import (
    CLUSTER_NAME_LABEL,
    GATEWAY_IDENTITY_ANNOTATION,
    OPAQUE_PORTS_ANNOTATION,
    REMOTE_FQ_NAME_ANNOTATION,
)
from isthmus.core.names import validate_dns1123_label, validate_dns1123_subdomain
from isthmus.core.selectors import LabelSelector, SelectorError, selector_from_label_selector_object

__all__ = [
    "CLUSTER_NAME_LABEL",
    "DEFAULT_NAMESPACE",
    "EXPORTED_LABEL",
    "GATEWAY_IDENTITY_ANNOTATION",
    "LINK_GROUP",
    "LINK_KIND",
    "LINK_PLURAL",
    "LINK_VERSION",
    "MIRRORED_SERVICE_LABEL",
    "MIRROR_PREFIX",
    "REMOTE_FQ_NAME_ANNOTATION",
    "REMOTE_RESOURCE_VERSION_ANNOTATION",
    "Action",
    "Condition",
    "Decision",
    "Gateway",
    "LeaseObservation",
    "LeaseRecord",
    "LinkError",
    "LinkHealth",
    "LinkSpec",
    "ProbeSpec",
    "ProbeState",
    "ServiceStatus",
    "credentials_secret_name",
    "decide",
    "is_exported",
    "jittered",
    "lease_action",
    "lease_name",
    "lease_spec",
    "link_status",
    "mirror_endpoints",
    "mirror_name",
    "mirror_service",
    "observe",
    "parse_duration",
    "ready_address_count",
    "remote_key_of",
    "stray_objects",
]

LINK_GROUP, LINK_VERSION, LINK_KIND, LINK_PLURAL = "multicluster.isthmus.io", "v1alpha1", "Link", "links"
DEFAULT_NAMESPACE = "isthmus-multicluster"
MIRROR_PREFIX = "mirror.isthmus.io/"
EXPORTED_LABEL = "mirror.isthmus.io/exported"
MIRRORED_SERVICE_LABEL = "mirror.isthmus.io/mirrored-service"
REMOTE_RESOURCE_VERSION_ANNOTATION = "mirror.isthmus.io/remote-resource-version"
DEFAULT_SELECTOR: dict[str, Any] = {"matchLabels": {EXPORTED_LABEL: "true"}}
DEFAULT_GATEWAY_PORT, DEFAULT_PROBE_PORT, DEFAULT_PROBE_PATH = 4143, 4191, "/ready"
DEFAULT_PROBE_PERIOD, DEFAULT_PROBE_TIMEOUT, DEFAULT_FAILURE_THRESHOLD = 3.0, 3.0, 3
# The Link's status lists at most this many services (problems first); the rest are counted.
MAX_STATUS_SERVICES = 200
# Copied from the remote Service besides its labels (as Linkerd copies it).
COPIED_ANNOTATIONS = (OPAQUE_PORTS_ANNOTATION,)

Key = tuple[str, str]  # (namespace, name) of a remote Service
Obj = Mapping[str, Any]


def credentials_secret_name(cluster: str) -> str:
    return f"cluster-credentials-{cluster}"


def lease_name(cluster: str) -> str:
    return f"service-mirror-{cluster}"


def mirror_name(remote_name: str, cluster: str) -> str:
    return f"{remote_name}-{cluster}"


# --------------------------------------------------------------------------- durations

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string (`3s`, `500ms`, `1m30s`, `0`); ValueError otherwise."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"{text!r} is not a duration (e.g. 3s, 500ms, 1m30s)")
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            raise ValueError(f"{text!r} is not a duration (e.g. 3s, 500ms, 1m30s)")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return total


# --------------------------------------------------------------------------- the Link


class LinkError(ValueError):
    """A Link that cannot be acted on; the message lists every problem found."""


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    path: str = DEFAULT_PROBE_PATH
    port: int = DEFAULT_PROBE_PORT
    period: float = DEFAULT_PROBE_PERIOD  # seconds
    timeout: float = DEFAULT_PROBE_TIMEOUT  # seconds
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """A Link's spec with its defaults applied (see `isthmus.resources.multicluster`)."""

    name: str
    namespace: str
    target_cluster_name: str
    target_cluster_domain: str
    credentials_secret: str
    gateway_addresses: tuple[str, ...]  # as written: IP addresses or host names
    gateway_port: int
    gateway_identity: str
    probe: ProbeSpec
    selector: LabelSelector
    create_missing_namespaces: bool = False

    @classmethod
    def from_object(cls, obj: Obj) -> LinkSpec:
        meta = _meta(obj)
        raw_spec = obj.get("spec")
        spec: Mapping[str, Any] = raw_spec if isinstance(raw_spec, Mapping) else {}
        problems: list[str] = []

        def text(key: str, default: str | None = None) -> str:
            value = spec.get(key, default)
            if not isinstance(value, str) or not value:
                problems.append(f"spec.{key} is required (a non-empty string)")
                return ""
            return value

        def port(where: Mapping[str, Any], key: str, default: int, path: str) -> int:
            value = where.get(key, default)
            if isinstance(value, str) and value.isdigit():
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
                problems.append(f"{path}.{key} must be a port number (1-65535), got {value!r}")
                return default
            return value

        cluster = text("targetClusterName")
        if cluster:
            for err in validate_dns1123_label(cluster):
                problems.append(f"spec.targetClusterName {cluster!r}: {err}")
        domain = text("targetClusterDomain", "cluster.local")
        secret = spec.get("clusterCredentialsSecret") or (credentials_secret_name(cluster) if cluster else "")
        if not isinstance(secret, str):
            problems.append("spec.clusterCredentialsSecret must be a string")
            secret = ""
        raw_addresses = text("gatewayAddress")
        addresses = tuple(a.strip() for a in raw_addresses.split(",") if a.strip())
        if raw_addresses and not addresses:
            problems.append("spec.gatewayAddress names no address")
        for a in addresses:
            if not _is_ip(a) and validate_dns1123_subdomain(a.rstrip(".")):
                problems.append(f"spec.gatewayAddress {a!r} is neither an IP address nor a host name")
        gateway_port = port(spec, "gatewayPort", DEFAULT_GATEWAY_PORT, "spec")
        identity = text("gatewayIdentity")

        raw_probe = spec.get("probeSpec") or {}
        if not isinstance(raw_probe, Mapping):
            problems.append("spec.probeSpec must be an object")
            raw_probe = {}
        probe_path = raw_probe.get("path", DEFAULT_PROBE_PATH)
        if not isinstance(probe_path, str) or not probe_path.startswith("/"):
            problems.append(f"spec.probeSpec.path must be a path starting with /, got {probe_path!r}")
            probe_path = DEFAULT_PROBE_PATH

        def duration(key: str, default: float) -> float:
            value = raw_probe.get(key)
            if value is None:
                return default
            try:
                seconds = parse_duration(value)
            except ValueError as e:
                problems.append(f"spec.probeSpec.{key}: {e}")
                return default
            if seconds <= 0:
                problems.append(f"spec.probeSpec.{key} must be positive, got {value!r}")
                return default
            return seconds

        period, timeout = duration("period", DEFAULT_PROBE_PERIOD), duration("timeout", DEFAULT_PROBE_TIMEOUT)
        threshold = raw_probe.get("failureThreshold", DEFAULT_FAILURE_THRESHOLD)
        if isinstance(threshold, str) and threshold.isdigit():
            threshold = int(threshold)
        if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
            problems.append(f"spec.probeSpec.failureThreshold must be a positive integer, got {threshold!r}")
            threshold = DEFAULT_FAILURE_THRESHOLD
        probe = ProbeSpec(probe_path, port(raw_probe, "port", DEFAULT_PROBE_PORT, "spec.probeSpec"),
                          period, timeout, threshold)

        raw_selector = spec.get("selector")
        try:
            selector = selector_from_label_selector_object(
                DEFAULT_SELECTOR if raw_selector is None else raw_selector)
        except SelectorError as e:
            problems.append(f"spec.selector: {e}")
            selector = LabelSelector.nothing()
        create_ns = spec.get("createMissingNamespaces", False)
        if not isinstance(create_ns, bool):
            problems.append(f"spec.createMissingNamespaces must be true or false, got {create_ns!r}")
            create_ns = False
        if problems:
            raise LinkError("; ".join(problems))
        return cls(name=str(meta.get("name") or ""), namespace=str(meta.get("namespace") or ""),
                   target_cluster_name=cluster, target_cluster_domain=domain, credentials_secret=secret,
                   gateway_addresses=addresses, gateway_port=gateway_port, gateway_identity=identity,
                   probe=probe, selector=selector, create_missing_namespaces=create_ns)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- objects


def _meta(obj: Obj | None) -> Mapping[str, Any]:
    meta = obj.get("metadata") if obj is not None else None
    return meta if isinstance(meta, Mapping) else {}


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def _labels(obj: Obj | None) -> dict[str, str]:
    return _str_map(_meta(obj).get("labels"))


def _annotations(obj: Obj | None) -> dict[str, str]:
    return _str_map(_meta(obj).get("annotations"))


def is_exported(link: LinkSpec, svc: Obj | None) -> bool:
    """Whether the Link mirrors this remote Service."""
    if svc is None:
        return False
    labels = _labels(svc)
    return MIRRORED_SERVICE_LABEL not in labels and link.selector.matches(labels)


def ready_address_count(endpoints: Obj | None) -> int:
    """How many ready addresses an Endpoints object lists."""
    if endpoints is None:
        return 0
    total = 0
    for s in endpoints.get("subsets") or ():
        if isinstance(s, Mapping):
            total += len([a for a in s.get("addresses") or () if isinstance(a, Mapping)])
    return total


def is_mirror_of(obj: Obj, cluster: str) -> bool:
    labels = _labels(obj)
    return labels.get(MIRRORED_SERVICE_LABEL) == "true" and labels.get(CLUSTER_NAME_LABEL) == cluster


def remote_key_of(obj: Obj, cluster: str) -> Key | None:
    """The remote (namespace, name) a local mirror object stands for, or None when it names none."""
    meta = _meta(obj)
    ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    fq = _annotations(obj).get(REMOTE_FQ_NAME_ANNOTATION, "")
    remote, _, rest = fq.partition(".")
    remote_ns = rest.partition(".")[0]
    if remote and remote_ns == ns and mirror_name(remote, cluster) == name:
        return ns, remote
    suffix = f"-{cluster}"
    if name.endswith(suffix) and len(name) > len(suffix):
        return ns, name[: -len(suffix)]
    return None


def _fq_name(link: LinkSpec, ns: str, name: str) -> str:
    return f"{name}.{ns}.svc.{link.target_cluster_domain}"


def _ports(svc: Obj) -> list[dict[str, Any]]:
    out = []
    for p in (svc.get("spec") or {}).get("ports") or ():
        if not isinstance(p, Mapping) or not isinstance(p.get("port"), int):
            continue
        port: dict[str, Any] = {"port": p["port"], "protocol": p.get("protocol") or "TCP"}
        if p.get("name"):
            port["name"] = p["name"]
        out.append(port)
    return out


def _mirror_labels(link: LinkSpec, remote: Obj) -> dict[str, str]:
    labels = {k: v for k, v in _labels(remote).items() if not k.startswith(MIRROR_PREFIX)}
    labels[MIRRORED_SERVICE_LABEL] = "true"
    labels[CLUSTER_NAME_LABEL] = link.target_cluster_name
    return labels


def mirror_service(link: LinkSpec, remote: Obj) -> dict[str, Any]:
    """The local Service mirroring `remote` (module docstring)."""
    meta = _meta(remote)
    ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    annotations = {REMOTE_FQ_NAME_ANNOTATION: _fq_name(link, ns, name),
                   REMOTE_RESOURCE_VERSION_ANNOTATION: str(meta.get("resourceVersion") or "")}
    remote_annotations = _annotations(remote)
    for key in COPIED_ANNOTATIONS:
        if key in remote_annotations:
            annotations[key] = remote_annotations[key]
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": mirror_name(name, link.target_cluster_name), "namespace": ns,
                     "labels": _mirror_labels(link, remote), "annotations": annotations},
        "spec": {"type": "ClusterIP", "ports": _ports(remote)},
    }


@dataclass(frozen=True, slots=True)
class Gateway:
    """What the mirror knows of the remote gateway: its resolved addresses and whether it is alive."""

    addresses: tuple[str, ...] = ()
    alive: bool = True


def mirror_endpoints(link: LinkSpec, remote: Obj, remote_endpoints: Obj | None,
                     gateway: Gateway) -> dict[str, Any]:
    """The Endpoints of the local mirror of `remote` (module docstring)."""
    meta = _meta(remote)
    ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    subsets: list[dict[str, Any]] = []
    if ready_address_count(remote_endpoints) > 0 and gateway.addresses:
        ports = []
        for p in _ports(remote):
            port = {"port": link.gateway_port, "protocol": p["protocol"]}
            if "name" in p:
                port["name"] = p["name"]
            ports.append(port)
        addresses = [{"ip": ip} for ip in sorted(set(gateway.addresses), key=_ip_order)]
        subsets.append({"addresses" if gateway.alive else "notReadyAddresses": addresses, "ports": ports})
    return {
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": mirror_name(name, link.target_cluster_name), "namespace": ns,
                     "labels": _mirror_labels(link, remote),
                     "annotations": {GATEWAY_IDENTITY_ANNOTATION: link.gateway_identity,
                                     REMOTE_FQ_NAME_ANNOTATION: _fq_name(link, ns, name)}},
        "subsets": subsets,
    }


def _ip_order(ip: str) -> tuple[int, int, str]:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return 2, 0, ip
    return addr.version, int(addr), ip


def _managed(annotations: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in annotations.items() if k.startswith(MIRROR_PREFIX) or k in COPIED_ANNOTATIONS}


def _with_metadata(existing: Obj, wanted: Obj) -> dict[str, Any]:
    """`existing` with `wanted`'s labels and managed annotations (others' annotations kept)."""
    out = copy.deepcopy(dict(existing))
    meta = out.setdefault("metadata", {})
    meta["labels"] = dict(_labels(wanted))
    kept = {k: v for k, v in _annotations(existing).items() if k not in _managed(_annotations(existing))}
    meta["annotations"] = {**kept, **_annotations(wanted)}
    return out


def _port_view(ports: Any) -> list[tuple[str, int, str]]:
    view = []
    for p in ports or ():
        if isinstance(p, Mapping):
            number = p.get("port")
            view.append((str(p.get("name") or ""), number if isinstance(number, int) else -1,
                         str(p.get("protocol") or "TCP")))
    return sorted(view)


def _subsets_view(subsets: Any) -> list[tuple[tuple[str, ...], tuple[str, ...], list[tuple[str, int, str]]]]:
    view = []
    for s in subsets or ():
        if not isinstance(s, Mapping):
            continue
        ready = tuple(sorted(str(a.get("ip")) for a in s.get("addresses") or () if isinstance(a, Mapping)))
        not_ready = tuple(sorted(str(a.get("ip")) for a in s.get("notReadyAddresses") or ()
                                 if isinstance(a, Mapping)))
        view.append((ready, not_ready, _port_view(s.get("ports"))))
    return sorted(view)


def _service_differs(existing: Obj, wanted: Obj) -> bool:
    return (_labels(existing) != _labels(wanted)
            or _managed(_annotations(existing)) != _managed(_annotations(wanted))
            or (existing.get("spec") or {}).get("type", "ClusterIP") != wanted["spec"]["type"]
            or _port_view((existing.get("spec") or {}).get("ports")) != _port_view(wanted["spec"]["ports"]))


def _endpoints_differ(existing: Obj, wanted: Obj) -> bool:
    return (_labels(existing) != _labels(wanted)
            or _managed(_annotations(existing)) != _managed(_annotations(wanted))
            or _subsets_view(existing.get("subsets")) != _subsets_view(wanted.get("subsets")))


def _updated_service(existing: Obj, wanted: Obj) -> dict[str, Any]:
    out = _with_metadata(existing, wanted)
    spec = out.setdefault("spec", {})
    spec["type"] = wanted["spec"]["type"]
    old_ports = {(p.get("name") or "", p.get("port")): p for p in spec.get("ports") or () if isinstance(p, Mapping)}
    ports = []
    for p in wanted["spec"]["ports"]:
        old = old_ports.get((p.get("name") or "", p["port"]))
        # An unchanged port keeps what the API server defaulted (its target port).
        ports.append({**old, **p} if old is not None and (old.get("protocol") or "TCP") == p["protocol"] else p)
    spec["ports"] = ports
    return out


def _updated_endpoints(existing: Obj, wanted: Obj) -> dict[str, Any]:
    out = _with_metadata(existing, wanted)
    out["subsets"] = copy.deepcopy(wanted["subsets"])
    return out


# --------------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class Action:
    """One write: `verb` ("create" | "update" | "delete") a `kind` ("Namespace" | "Service" | "Endpoints").

    `body` is the whole object to create or to update with (an update carries the
    existing object's resourceVersion); deletes carry none.
    """

    verb: Literal["create", "update", "delete"]
    kind: Literal["Namespace", "Service", "Endpoints"]
    namespace: str
    name: str
    body: Mapping[str, Any] | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.verb} {self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """How one exported remote Service is mirrored: conditions `Mirrored` and `EndpointsReady`."""

    namespace: str
    name: str
    mirror: str
    conditions: tuple[Condition, ...]

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    @property
    def problem(self) -> str | None:
        """The reason of a failed `Mirrored` condition (`MissingNamespace`, `Conflict`, ...), else None."""
        for c in self.conditions:
            if c.type == "Mirrored":
                return c.reason if c.status != "True" else None
        return None


@dataclass(frozen=True, slots=True)
class Decision:
    actions: tuple[Action, ...] = ()
    status: ServiceStatus | None = None  # None: the service is not (or no longer) mirrored


def _delete_if_ours(kind: Literal["Service", "Endpoints"], obj: Obj | None, cluster: str) -> list[Action]:
    if obj is None or not is_mirror_of(obj, cluster):
        return []
    meta = _meta(obj)
    return [Action("delete", kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))]


def _endpoints_condition(link: LinkSpec, remote_ep: Obj | None, gateway: Gateway) -> Condition:
    ready = ready_address_count(remote_ep)
    if ready == 0:
        return Condition("EndpointsReady", "False", "NoRemoteEndpoints",
                         f"the service has no ready endpoints in {link.target_cluster_name}")
    if not gateway.addresses:
        return Condition("EndpointsReady", "False", "GatewayUnresolved",
                         f"the gateway address {','.join(link.gateway_addresses)} resolves to no address")
    if not gateway.alive:
        return Condition("EndpointsReady", "False", "GatewayNotAlive",
                         "the gateway fails its probes: its addresses are not ready")
    return Condition("EndpointsReady", "True", "GatewayAlive",
                     f"{ready} ready remote endpoint(s) behind gateway {','.join(gateway.addresses)}")


def decide(link: LinkSpec, key: Key, *, remote_service: Obj | None, remote_endpoints: Obj | None,
           local_service: Obj | None, local_endpoints: Obj | None, namespace_exists: bool,
           gateway: Gateway) -> Decision:
    """What to write so the mirror of remote `key` is right, and its status (module docstring)."""
    ns, name = key
    cluster = link.target_cluster_name
    if not is_exported(link, remote_service):
        deletes = _delete_if_ours("Endpoints", local_endpoints, cluster) + \
            _delete_if_ours("Service", local_service, cluster)
        return Decision(tuple(deletes), None)
    assert remote_service is not None
    mname = mirror_name(name, cluster)

    def failed(reason: str, message: str) -> Decision:
        return Decision((), ServiceStatus(ns, name, mname, (
            Condition("Mirrored", "False", reason, message),
            Condition("EndpointsReady", "False", reason, message))))

    errors = validate_dns1123_label(mname)
    if errors:
        return failed("InvalidName", f"the mirror's name {mname!r} is not a valid Service name: {errors[0]}")
    actions: list[Action] = []
    if not namespace_exists:
        if not link.create_missing_namespaces:
            return failed("MissingNamespace", f"namespace {ns!r} does not exist in this cluster "
                          "(create it, or set createMissingNamespaces on the Link)")
        actions.append(Action("create", "Namespace", "", ns,
                              {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
    if local_service is not None and not is_mirror_of(local_service, cluster):
        return failed("Conflict", f"service {ns}/{mname} exists and is not the mirror of "
                      f"{name} from {cluster}: it is left alone")

    wanted_svc = mirror_service(link, remote_service)
    if local_service is None:
        actions.append(Action("create", "Service", ns, mname, wanted_svc))
    elif _service_differs(local_service, wanted_svc):
        actions.append(Action("update", "Service", ns, mname, _updated_service(local_service, wanted_svc)))
    wanted_ep = mirror_endpoints(link, remote_service, remote_endpoints, gateway)
    if local_endpoints is None:
        actions.append(Action("create", "Endpoints", ns, mname, wanted_ep))
    elif _endpoints_differ(local_endpoints, wanted_ep):
        actions.append(Action("update", "Endpoints", ns, mname, _updated_endpoints(local_endpoints, wanted_ep)))
    status = ServiceStatus(ns, name, mname, (
        Condition("Mirrored", "True", "Mirrored",
                  f"{ns}/{mname} mirrors {_fq_name(link, ns, name)}"),
        _endpoints_condition(link, remote_endpoints, gateway)))
    return Decision(tuple(actions), status)


def stray_objects(kind: Literal["Service", "Endpoints"], objects: Iterable[Obj], cluster: str) -> list[Action]:
    """Deletes for local `kind` objects labelled as this cluster's mirrors that no remote Service can own."""
    actions = []
    for obj in objects:
        if is_mirror_of(obj, cluster) and remote_key_of(obj, cluster) is None:
            meta = _meta(obj)
            actions.append(Action("delete", kind, str(meta.get("namespace") or ""), str(meta.get("name") or "")))
    return actions


# --------------------------------------------------------------------------- the Link's status


@dataclass(frozen=True, slots=True)
class LinkHealth:
    """What the mirror knows about its Link as a whole, for `link_status`.

    `remote` is "Reachable", "Unknown" (not yet tried) or a failure reason
    ("Unauthorized", "Forbidden", "Unreachable", "CredentialsMissing",
    "CredentialsInvalid", "Error"), with `remote_message` saying more.
    """

    link_error: str | None = None
    remote: str = "Unknown"
    remote_message: str = ""
    synced: bool = False
    gateway: Gateway = Gateway()
    gateway_message: str = ""


def _condition_dict(c: Condition, previous: Mapping[str, Mapping[str, Any]], now: str) -> dict[str, Any]:
    old = previous.get(c.type)
    since = old.get("lastTransitionTime") if old is not None and old.get("status") == c.status else None
    return {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message,
            "lastTransitionTime": since or now}


def _previous(conditions: Any) -> dict[str, Mapping[str, Any]]:
    return {c["type"]: c for c in conditions or () if isinstance(c, Mapping) and isinstance(c.get("type"), str)}


def link_conditions(health: LinkHealth, services: Iterable[ServiceStatus]) -> list[Condition]:
    services = list(services)
    if health.link_error is not None:
        invalid = Condition("Ready", "False", "InvalidLink", health.link_error)
        return [invalid]
    out = []
    if health.remote == "Reachable":
        out.append(Condition("RemoteReachable", "True", "Reachable", health.remote_message
                             or "the remote cluster's API answers with the Link's credentials"))
    elif health.remote == "Unknown":
        out.append(Condition("RemoteReachable", "Unknown", "Connecting", health.remote_message
                             or "the remote cluster's API has not been reached yet"))
    else:
        out.append(Condition("RemoteReachable", "False", health.remote, health.remote_message))
    gw = health.gateway
    if not gw.addresses:
        out.append(Condition("GatewayAlive", "False", "GatewayUnresolved", health.gateway_message
                             or "the gateway address resolves to no address"))
    elif gw.alive:
        out.append(Condition("GatewayAlive", "True", "Alive", health.gateway_message
                             or f"gateway {','.join(gw.addresses)} is alive"))
    else:
        out.append(Condition("GatewayAlive", "False", "ProbeFailed", health.gateway_message
                             or f"gateway {','.join(gw.addresses)} fails its probes"))
    missing = sorted({s.namespace for s in services if s.problem == "MissingNamespace"})
    if missing:
        out.append(Condition("MissingNamespace", "True", "MissingNamespace",
                             f"namespaces missing in this cluster, so their services are not mirrored: "
                             f"{', '.join(missing)} (create them, or set createMissingNamespaces on the Link)"))
    else:
        out.append(Condition("MissingNamespace", "False", "NamespacesPresent",
                             "every exported service's namespace exists"))
    problems = [s for s in services if s.problem is not None]
    if health.remote != "Reachable":
        ready = Condition("Ready", "False", "RemoteNotReachable",
                          "the remote cluster cannot be watched; existing mirrors are kept as they are")
    elif not health.synced:
        ready = Condition("Ready", "False", "Syncing", "listing the remote cluster's services")
    elif problems:
        ready = Condition("Ready", "False", "ServicesNotMirrored",
                          f"{len(problems)} exported service(s) not mirrored: " + ", ".join(
                              f"{s.namespace}/{s.name} ({s.problem})" for s in problems[:5])
                          + (", ..." if len(problems) > 5 else ""))
    elif not gw.alive or not gw.addresses:
        ready = Condition("Ready", "False", "GatewayNotAlive", out[1].message)
    else:
        ready = Condition("Ready", "True", "Mirroring", f"{len(services)} service(s) mirrored")
    return [ready, *out]


def link_status(previous: Mapping[str, Any] | None, health: LinkHealth, services: Iterable[ServiceStatus],
                now: str, *, max_services: int = MAX_STATUS_SERVICES) -> dict[str, Any]:
    """The Link's `status`: conditions, and an entry per mirrored service (problems listed first).

    `now` (RFC 3339) becomes a condition's `lastTransitionTime` when its status
    changes; an unchanged status keeps the time it had in `previous`.
    """
    previous = previous if isinstance(previous, Mapping) else {}
    services = sorted(services, key=lambda s: (s.problem is None, s.namespace, s.name))
    conditions = [_condition_dict(c, _previous(previous.get("conditions")), now)
                  for c in link_conditions(health, services)]
    old_services = {(s.get("namespace"), s.get("name")): s for s in previous.get("mirroredServices") or ()
                    if isinstance(s, Mapping)}
    entries = []
    for s in services[:max_services]:
        old = old_services.get((s.namespace, s.name)) or {}
        entries.append({"namespace": s.namespace, "name": s.name, "mirroredName": s.mirror,
                        "conditions": [_condition_dict(c, _previous(old.get("conditions")), now)
                                       for c in s.conditions]})
    return {"conditions": conditions, "mirroredServices": entries,
            "mirroredServiceCount": sum(1 for s in services if s.problem is None),
            "notMirroredServiceCount": sum(1 for s in services if s.problem is not None)}


# --------------------------------------------------------------------------- gateway probes


@dataclass(frozen=True, slots=True)
class ProbeState:
    """The gateway's liveness as probes see it: alive at start, dead after `failureThreshold`
    consecutive failures, alive again at the first success."""

    alive: bool = True
    consecutive_failures: int = 0

    def after(self, success: bool, failure_threshold: int) -> ProbeState:
        if success:
            return ProbeState(True, 0)
        failures = self.consecutive_failures + 1
        return ProbeState(self.alive and failures < failure_threshold, failures)


def jittered(period: float, draw: float, jitter: float = 0.1) -> float:
    """`period` ± `jitter` (a fraction), for a uniform `draw` in [0, 1)."""
    return period * (1.0 - jitter + 2.0 * jitter * draw)


# --------------------------------------------------------------------------- leader election


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """A coordination.k8s.io/v1 Lease's spec, the part leader election reads."""

    holder: str = ""
    duration: float = 0.0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_spec(cls, spec: Obj | None) -> LeaseRecord:
        spec = spec if isinstance(spec, Mapping) else {}
        duration = spec.get("leaseDurationSeconds")
        transitions = spec.get("leaseTransitions")
        holder = spec.get("holderIdentity")
        return cls(holder=holder if isinstance(holder, str) else "",
                   duration=float(duration) if isinstance(duration, int | float) else 0.0,
                   acquire_time=spec.get("acquireTime") if isinstance(spec.get("acquireTime"), str) else None,
                   renew_time=spec.get("renewTime") if isinstance(spec.get("renewTime"), str) else None,
                   transitions=transitions if isinstance(transitions, int) else 0)


@dataclass(frozen=True, slots=True)
class LeaseObservation:
    """A Lease's record and when (on the observer's monotonic clock) it was first seen as it is."""

    record: LeaseRecord | None
    seen_at: float


def observe(previous: LeaseObservation | None, record: LeaseRecord | None, now: float) -> LeaseObservation:
    if previous is not None and previous.record == record:
        return previous
    return LeaseObservation(record, now)


def lease_action(observation: LeaseObservation, me: str,
                 now: float) -> Literal["create", "acquire", "renew", "wait"]:
    """What a candidate `me` does with the Lease it observed (client-go's rules)."""
    record = observation.record
    if record is None:
        return "create"
    if record.holder == me:
        return "renew"
    if not record.holder or now >= observation.seen_at + record.duration:
        return "acquire"
    return "wait"


def lease_spec(record: LeaseRecord | None, me: str, duration: float, now: str) -> dict[str, Any]:
    """The Lease spec `me` writes to take (or keep) the lease at wall-clock time `now` (MicroTime)."""
    keeping = record is not None and record.holder == me
    transitions = record.transitions if record is not None else 0
    return {"holderIdentity": me, "leaseDurationSeconds": max(1, round(duration)),
            "acquireTime": record.acquire_time if keeping and record is not None else now,
            "renewTime": now,
            "leaseTransitions": transitions if keeping or record is None else transitions + 1}


def released_spec(record: LeaseRecord, now: str) -> dict[str, Any]:
    """The spec a holder leaves when it steps down: no holder, so a candidate takes over at once."""
    return {"holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": record.acquire_time or now,
            "renewTime": now, "leaseTransitions": record.transitions}

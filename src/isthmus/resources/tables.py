"""Server-side printing: the `meta.k8s.io/v1` Table `kubectl get` asks for.

`kubectl get` sends `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and
prints whatever columns the server returns. What this module promises:

* `to_table(rt, objects, now, include_object)` returns a Table with the same
  column definitions (name, type, format, description, priority; priority 1 =
  shown only with `-o wide`) and cell values the Kubernetes API server would
  produce for the built-in kinds isthmus serves: pods (READY, STATUS with the
  printer's waiting/terminated/init/Terminating rules, RESTARTS with "(5m ago)"),
  services (TYPE, CLUSTER-IP, EXTERNAL-IP with `<none>`/`<pending>`, PORT(S) like
  `80:30080/TCP`, SELECTOR), endpoints (at most three addresses, then
  "+ N more..."), deployments, nodes, namespaces, configmaps, secrets,
  serviceaccounts, events, leases and role bindings; kinds without a printer
  (roles, cluster roles, CRDs, reviews) get NAME and CREATED AT. Custom
  resources get NAME followed by their CRD's `additionalPrinterColumns`, whose
  simple JSONPaths (`.spec.x`, `.items[0].y`, `.status.conditions[?(@.type=="Ready")].status`)
  are evaluated here; a `date` column shows an age. Without printer columns a
  custom resource gets NAME and AGE.
* Column names are as the API server sends them ("Name", "Cluster-IP",
  "Port(s)"); kubectl upper-cases them when printing.
* Each row's `object` is a `PartialObjectMetadata` for include_object
  "Metadata" (the default), the full object for "Object", absent for "None".
* `human_duration` formats ages exactly like Kubernetes' `duration.HumanDuration`
  (`5s`, `2m3s`, `10m`, `3h4m`, `2d3h`, `25d`, `2y45d`).

Pure: `now` is passed in; nothing here reads a clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from isthmus.resources.registry import ResourceType
from isthmus.resources.schemas import field_description

TABLE_API_VERSION = "meta.k8s.io/v1"
_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_V1 = "io.k8s.api.core.v1."

Row = dict[str, Any]
Column = dict[str, Any]


# --------------------------------------------------------------------------- durations


def human_duration(d: timedelta | float) -> str:
    """Kubernetes' `duration.HumanDuration`: a short age with 2-3 significant figures."""
    micros = d // timedelta(microseconds=1) if isinstance(d, timedelta) else int(d * 1_000_000)
    seconds = int(micros / 1_000_000)  # truncates toward zero, as Go's int(d.Seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as an aware datetime; None when absent or unparsable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _aware(now: datetime) -> datetime:
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


def _since(value: Any, now: datetime) -> str:
    t = parse_time(value)
    if t is None:
        return "<unknown>"
    return human_duration(_aware(now) - t)


# --------------------------------------------------------------------------- helpers


def _m(obj: Mapping[str, Any], *keys: str) -> Any:
    """obj[k1][k2]..., None as soon as something is missing or not a mapping."""
    cur: Any = obj
    for k in keys:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(k)
    return cur


def _d(obj: Mapping[str, Any], *keys: str) -> Mapping[str, Any]:
    v = _m(obj, *keys)
    return v if isinstance(v, Mapping) else {}


def _l(obj: Mapping[str, Any], *keys: str) -> list[Any]:
    v = _m(obj, *keys)
    return v if isinstance(v, list) else []


def _s(obj: Mapping[str, Any], *keys: str) -> str:
    v = _m(obj, *keys)
    return v if isinstance(v, str) else ("" if v is None else str(v))


def _i(obj: Mapping[str, Any], *keys: str) -> int:
    v = _m(obj, *keys)
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def _col(name: str, description: str, type_: str = "string", fmt: str = "", priority: int = 0) -> Column:
    return {"name": name, "type": type_, "format": fmt, "description": description, "priority": priority}


def _name_col() -> Column:
    return _col("Name", field_description(_META, "name"), fmt="name")


def _age_col() -> Column:
    return _col("Age", field_description(_META, "creationTimestamp"))


def _name(obj: Mapping[str, Any]) -> str:
    return _s(obj, "metadata", "name")


def _age(obj: Mapping[str, Any], now: datetime) -> str:
    return _since(_m(obj, "metadata", "creationTimestamp"), now)


def format_labels(labels: Mapping[str, Any] | None) -> str:
    """Kubernetes' `labels.FormatLabels`: sorted `k=v` joined by commas, `<none>` if empty."""
    if not labels:
        return "<none>"
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def format_label_selector(selector: Mapping[str, Any] | None) -> str:
    """A LabelSelector as `LabelSelectorAsSelector(...).String()` prints it."""
    if not selector:
        return ""
    reqs: list[tuple[str, str]] = []
    for k, v in (selector.get("matchLabels") or {}).items():
        reqs.append((k, f"{k}={v}"))
    for e in selector.get("matchExpressions") or []:
        key, op = str(e.get("key", "")), str(e.get("operator", ""))
        values = ",".join(sorted(str(v) for v in e.get("values") or []))
        text = {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                "Exists": key, "DoesNotExist": f"!{key}"}.get(op)
        if text is None:
            return "<invalid>"
        reqs.append((key, text))
    reqs.sort(key=lambda r: r[0])
    return ",".join(text for _, text in reqs)


# --------------------------------------------------------------------------- printers

_Printer = Callable[[Mapping[str, Any], datetime], tuple[list[Any], list[dict[str, Any]] | None]]


def _pod_columns() -> list[Column]:
    return [
        _name_col(),
        _col("Ready", "The aggregate readiness state of this pod for accepting traffic."),
        _col("Status", "The aggregate status of the containers in this pod."),
        _col("Restarts", "The number of times the containers in this pod have been restarted and when the "
                         "last container in this pod has restarted."),
        _age_col(),
        _col("IP", field_description(_V1 + "PodStatus", "podIP"), priority=1),
        _col("Node", field_description(_V1 + "PodSpec", "nodeName"), priority=1),
        _col("Nominated Node", field_description(_V1 + "PodStatus", "nominatedNodeName"), priority=1),
        _col("Readiness Gates", field_description(_V1 + "PodSpec", "readinessGates"), priority=1),
    ]


def _later(a: datetime | None, b: Any) -> datetime | None:
    t = parse_time(b)
    if t is None:
        return a
    return t if a is None or a < t else a


def _print_pod(pod: Mapping[str, Any], now: datetime) -> tuple[list[Any], list[dict[str, Any]] | None]:
    spec, status = _d(pod, "spec"), _d(pod, "status")
    containers = _l(spec, "containers")
    init_specs = {c.get("name"): c for c in _l(spec, "initContainers") if isinstance(c, Mapping)}
    restarts = 0
    restartable_restarts = 0
    total = len(containers)
    ready = 0
    last_restart: datetime | None = None
    last_restartable_restart: datetime | None = None
    phase = _s(status, "phase")
    reason = _s(status, "reason") or phase
    conditions = [c for c in _l(status, "conditions") if isinstance(c, Mapping)]
    for c in conditions:
        if c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    row_conditions: list[dict[str, Any]] | None = None
    if phase == "Succeeded":
        row_conditions = [{"type": "Completed", "status": "True", "reason": "Succeeded",
                           "message": "The pod has completed successfully."}]
    elif phase == "Failed":
        row_conditions = [{"type": "Completed", "status": "True", "reason": "Failed",
                           "message": "The pod failed."}]

    def restartable(name: Any) -> bool:
        return _s(init_specs.get(name) or {}, "restartPolicy") == "Always"

    total += sum(1 for c in init_specs.values() if _s(c, "restartPolicy") == "Always")

    initializing = False
    init_statuses = [c for c in _l(status, "initContainerStatuses") if isinstance(c, Mapping)]
    for i, cs in enumerate(init_statuses):
        restarts += _i(cs, "restartCount")
        finished = _m(cs, "lastState", "terminated", "finishedAt")
        if _m(cs, "lastState", "terminated") is not None:
            last_restart = _later(last_restart, finished)
        if restartable(cs.get("name")):
            restartable_restarts += _i(cs, "restartCount")
            if _m(cs, "lastState", "terminated") is not None:
                last_restartable_restart = _later(last_restartable_restart, finished)
        terminated = _m(cs, "state", "terminated")
        waiting = _m(cs, "state", "waiting")
        if isinstance(terminated, Mapping) and _i(terminated, "exitCode") == 0:
            continue
        if restartable(cs.get("name")) and cs.get("started") is True:
            if cs.get("ready"):
                ready += 1
            continue
        if isinstance(terminated, Mapping):
            if not _s(terminated, "reason"):
                if _i(terminated, "signal") != 0:
                    reason = f"Init:Signal:{_i(terminated, 'signal')}"
                else:
                    reason = f"Init:ExitCode:{_i(terminated, 'exitCode')}"
            else:
                reason = "Init:" + _s(terminated, "reason")
        elif isinstance(waiting, Mapping) and _s(waiting, "reason") and _s(waiting, "reason") != "PodInitializing":
            reason = "Init:" + _s(waiting, "reason")
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break

    initialized = any(c.get("type") == "Initialized" and c.get("status") == "True" for c in conditions)
    if not initializing or initialized:
        restarts = restartable_restarts
        last_restart = last_restartable_restart
        has_running = False
        for cs in reversed([c for c in _l(status, "containerStatuses") if isinstance(c, Mapping)]):
            restarts += _i(cs, "restartCount")
            if _m(cs, "lastState", "terminated") is not None:
                last_restart = _later(last_restart, _m(cs, "lastState", "terminated", "finishedAt"))
            waiting = _m(cs, "state", "waiting")
            terminated = _m(cs, "state", "terminated")
            if isinstance(waiting, Mapping) and _s(waiting, "reason"):
                reason = _s(waiting, "reason")
            elif isinstance(terminated, Mapping) and _s(terminated, "reason"):
                reason = _s(terminated, "reason")
            elif isinstance(terminated, Mapping):
                if _i(terminated, "signal") != 0:
                    reason = f"Signal:{_i(terminated, 'signal')}"
                else:
                    reason = f"ExitCode:{_i(terminated, 'exitCode')}"
            elif cs.get("ready") and _m(cs, "state", "running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            pod_ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
            reason = "Running" if pod_ready else "NotReady"

    deleting = _m(pod, "metadata", "deletionTimestamp") is not None
    if deleting and _s(status, "reason") == "NodeLost":
        reason = "Unknown"
    elif deleting and phase not in ("Failed", "Succeeded"):
        reason = "Terminating"

    restarts_str = str(restarts)
    if restarts != 0 and last_restart is not None:
        restarts_str = f"{restarts} ({human_duration(_aware(now) - last_restart)} ago)"

    ips = _l(status, "podIPs")
    pod_ip = _s(ips[0], "ip") if ips and isinstance(ips[0], Mapping) else ""
    gates = [g for g in _l(spec, "readinessGates") if isinstance(g, Mapping)]
    readiness = "<none>"
    if gates:
        true_conditions = 0
        for g in gates:
            for c in conditions:
                if c.get("type") == g.get("conditionType"):
                    if c.get("status") == "True":
                        true_conditions += 1
                    break
        readiness = f"{true_conditions}/{len(gates)}"
    cells = [_name(pod), f"{ready}/{total}", reason, restarts_str, _age(pod, now),
             pod_ip or "<none>", _s(spec, "nodeName") or "<none>",
             _s(status, "nominatedNodeName") or "<none>", readiness]
    return cells, row_conditions


def _service_columns() -> list[Column]:
    spec = _V1 + "ServiceSpec"
    return [
        _name_col(),
        _col("Type", field_description(spec, "type")),
        _col("Cluster-IP", field_description(spec, "clusterIP")),
        _col("External-IP", field_description(spec, "externalIPs")),
        _col("Port(s)", field_description(spec, "ports")),
        _age_col(),
        _col("Selector", field_description(spec, "selector"), priority=1),
    ]


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for x in items:
        seen.setdefault(x, None)
    return list(seen)


def _service_external_ip(svc: Mapping[str, Any]) -> str:
    spec = _d(svc, "spec")
    svc_type = _s(spec, "type") or "ClusterIP"
    external = [str(x) for x in _l(spec, "externalIPs")]
    if svc_type in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else "<none>"
    if svc_type == "LoadBalancer":
        lb = _unique(_s(i, "ip") or _s(i, "hostname")
                     for i in _l(svc, "status", "loadBalancer", "ingress") if isinstance(i, Mapping))
        lb = [x for x in lb if x]
        if external:
            return ",".join(lb + external)
        return ",".join(lb) if lb else "<pending>"
    if svc_type == "ExternalName":
        return _s(spec, "externalName")
    return "<unknown>"


def _print_service(svc: Mapping[str, Any], now: datetime) -> tuple[list[Any], None]:
    spec = _d(svc, "spec")
    cluster_ips = _l(spec, "clusterIPs")
    cluster_ip = str(cluster_ips[0]) if cluster_ips else (_s(spec, "clusterIP") or "<none>")
    ports = []
    for p in _l(spec, "ports"):
        if not isinstance(p, Mapping):
            continue
        proto = _s(p, "protocol") or "TCP"
        node_port = _i(p, "nodePort")
        ports.append(f"{_i(p, 'port')}:{node_port}/{proto}" if node_port > 0 else f"{_i(p, 'port')}/{proto}")
    sel = _m(spec, "selector")
    cells = [_name(svc), _s(spec, "type") or "ClusterIP", cluster_ip, _service_external_ip(svc),
             ",".join(ports) or "<none>", _age(svc, now), format_labels(sel if isinstance(sel, Mapping) else None)]
    return cells, None


def _join_host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def format_endpoints(endpoints: Mapping[str, Any]) -> str:
    """The ENDPOINTS cell: up to three `ip:port`, then `+ N more...`."""
    subsets = [s for s in _l(endpoints, "subsets") if isinstance(s, Mapping)]
    if not subsets:
        return "<none>"
    out: list[str] = []
    maximum, more, count = 3, False, 0
    for ss in subsets:
        addresses = [a for a in _l(ss, "addresses") if isinstance(a, Mapping)]
        ports = [p for p in _l(ss, "ports") if isinstance(p, Mapping)]
        if not ports:
            count += len(addresses)
            for a in addresses:
                if len(out) == maximum:
                    more = True
                    break
                out.append(_s(a, "ip"))
            continue
        for p in ports:
            count += len(addresses)
            for a in addresses:
                if len(out) == maximum:
                    more = True
                    break
                out.append(_join_host_port(_s(a, "ip"), _i(p, "port")))
    text = ",".join(out)
    return f"{text} + {count - maximum} more..." if more else text


def _print_endpoints(ep: Mapping[str, Any], now: datetime) -> tuple[list[Any], None]:
    return [_name(ep), format_endpoints(ep), _age(ep, now)], None


def _deployment_columns() -> list[Column]:
    status = "io.k8s.api.apps.v1.DeploymentStatus"
    return [
        _name_col(),
        _col("Ready", "Number of the pod with ready state"),
        _col("Up-to-date", field_description(status, "updatedReplicas")),
        _col("Available", field_description(status, "availableReplicas")),
        _age_col(),
        _col("Containers", "Names of each container in the template.", priority=1),
        _col("Images", "Images referenced by each container in the template.", priority=1),
        _col("Selector", field_description("io.k8s.api.apps.v1.DeploymentSpec", "selector"), priority=1),
    ]


def _print_deployment(dep: Mapping[str, Any], now: datetime) -> tuple[list[Any], None]:
    spec, status = _d(dep, "spec"), _d(dep, "status")
    containers = [c for c in _l(spec, "template", "spec", "containers") if isinstance(c, Mapping)]
    sel = _m(spec, "selector")
    cells = [_name(dep), f"{_i(status, 'readyReplicas')}/{_i(spec, 'replicas')}",
             _i(status, "updatedReplicas"), _i(status, "availableReplicas"), _age(dep, now),
             ",".join(_s(c, "name") for c in containers), ",".join(_s(c, "image") for c in containers),
             format_label_selector(sel if isinstance(sel, Mapping) else None)]
    return cells, None


def _node_columns() -> list[Column]:
    info, status = _V1 + "NodeSystemInfo", _V1 + "NodeStatus"
    return [
        _name_col(),
        _col("Status", "The status of the node"),
        _col("Roles", "The roles of the node"),
        _age_col(),
        _col("Version", field_description(info, "kubeletVersion")),
        _col("Internal-IP", field_description(status, "addresses"), priority=1),
        _col("External-IP", field_description(status, "addresses"), priority=1),
        _col("OS-Image", field_description(info, "osImage"), priority=1),
        _col("Kernel-Version", field_description(info, "kernelVersion"), priority=1),
        _col("Container-Runtime", field_description(info, "containerRuntimeVersion"), priority=1),
    ]


def _print_node(node: Mapping[str, Any], now: datetime) -> tuple[list[Any], None]:
    status = _d(node, "status")
    states: list[str] = []
    for c in _l(status, "conditions"):
        if isinstance(c, Mapping) and c.get("type") == "Ready":
            states = ["Ready" if c.get("status") == "True" else "NotReady"]
    if not states:
        states = ["Unknown"]
    if _m(node, "spec", "unschedulable") is True:
        states.append("SchedulingDisabled")
    roles: set[str] = set()
    for k, v in _d(node, "metadata", "labels").items():
        if k.startswith("node-role.kubernetes.io/") and k[len("node-role.kubernetes.io/"):]:
            roles.add(k[len("node-role.kubernetes.io/"):])
        elif k == "kubernetes.io/role" and v:
            roles.add(str(v))

    def address(kind: str) -> str:
        for a in _l(status, "addresses"):
            if isinstance(a, Mapping) and a.get("type") == kind:
                return _s(a, "address")
        return "<none>"

    info = _d(status, "nodeInfo")
    cells = [_name(node), ",".join(states), ",".join(sorted(roles)) or "<none>", _age(node, now),
             _s(info, "kubeletVersion"), address("InternalIP"), address("ExternalIP"),
             _s(info, "osImage") or "<unknown>", _s(info, "kernelVersion") or "<unknown>",
             _s(info, "containerRuntimeVersion") or "<unknown>"]
    return cells, None


def _print_namespace(ns: Mapping[str, Any], now: datetime) -> tuple[list[Any], None]:
    return [_name(ns), _s(ns, "status", "phase"), _age(ns, now)], None


def _print_configmap(cm: Mapping[str, Any], now: datetime) -> tuple[list[Any], None]:
    return [_name(cm), len(_d(cm, "data")) + len(_d(cm, "binaryData")), _age(cm, now)], None


def _print_secret(sec: Mapping[str, Any], now: datetime) -> tuple[list[Any], None]:
    return [_name(sec), _s(sec, "type"), len(_d(sec, "data")), _age(sec, now)], None


def _print_service_account(sa: Mapping[str, Any], now: datetime) -> tuple[list[Any], None]:
    return [_name(sa), len(_l(sa, "secrets")), _age(sa, now)], None


def _print_lease(lease: Mapping[str, Any], now: datetime) -> tuple[list[Any], None]:
    return [_name(lease), _s(lease, "spec", "holderIdentity"), _age(lease, now)], None


def _event_columns() -> list[Column]:
    ev = _V1 + "Event"
    return [
        _col("Last Seen", field_description(ev, "lastTimestamp")),
        _col("Type", field_description(ev, "type")),
        _col("Reason", field_description(ev, "reason")),
        _col("Object", field_description(ev, "involvedObject")),
        _col("Subobject", field_description(_V1 + "ObjectReference", "fieldPath"), priority=1),
        _col("Source", field_description(ev, "source"), priority=1),
        _col("Message", field_description(ev, "message")),
        _col("First Seen", field_description(ev, "firstTimestamp"), priority=1),
        _col("Count", field_description(ev, "count"), priority=1),
        _col("Name", field_description(_META, "name"), fmt="name", priority=1),
    ]


def _print_event(ev: Mapping[str, Any], now: datetime) -> tuple[list[Any], None]:
    first = _since(ev.get("firstTimestamp"), now)
    if parse_time(ev.get("firstTimestamp")) is None:
        first = _since(ev.get("eventTime"), now)
    last = _since(ev.get("lastTimestamp"), now)
    if parse_time(ev.get("lastTimestamp")) is None:
        last = first
    count = _i(ev, "count")
    series = ev.get("series")
    if isinstance(series, Mapping):
        last = _since(series.get("lastObservedTime"), now)
        count = _i(series, "count")
    elif count == 0:
        count = 1
    involved = _d(ev, "involvedObject")
    kind = _s(involved, "kind").lower()
    target = f"{kind}/{_s(involved, 'name')}" if _s(involved, "name") else kind
    component = _s(ev, "source", "component") or _s(ev, "reportingComponent")
    instance = _s(ev, "source", "host") or _s(ev, "reportingInstance")
    source = f"{component}, {instance}" if instance else component
    cells = [last, _s(ev, "type"), _s(ev, "reason"), target, _s(involved, "fieldPath"), source,
             _s(ev, "message").strip(), first, count, _name(ev)]
    return cells, None


def _binding_columns(what: str) -> list[Column]:
    return [
        _name_col(),
        _col("Role", field_description("io.k8s.api.rbac.v1.RoleBinding", "roleRef")),
        _age_col(),
        _col("Users", f"Users in the {what}", priority=1),
        _col("Groups", f"Groups in the {what}", priority=1),
        _col("ServiceAccounts", f"ServiceAccounts in the {what}", priority=1),
    ]


def _print_binding(b: Mapping[str, Any], now: datetime) -> tuple[list[Any], None]:
    users: list[str] = []
    groups: list[str] = []
    sas: list[str] = []
    for s in _l(b, "subjects"):
        if not isinstance(s, Mapping):
            continue
        kind = _s(s, "kind")
        if kind == "ServiceAccount":
            sas.append(f"{_s(s, 'namespace')}/{_s(s, 'name')}")
        elif kind == "User":
            users.append(_s(s, "name"))
        elif kind == "Group":
            groups.append(_s(s, "name"))
    role = f"{_s(b, 'roleRef', 'kind')}/{_s(b, 'roleRef', 'name')}"
    return [_name(b), role, _age(b, now), ", ".join(users), ", ".join(groups), ", ".join(sas)], None


def _default_columns() -> list[Column]:
    return [_name_col(), _col("Created At", field_description(_META, "creationTimestamp"), type_="date")]


def _print_default(obj: Mapping[str, Any], now: datetime) -> tuple[list[Any], None]:
    t = parse_time(_m(obj, "metadata", "creationTimestamp"))
    created = t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t is not None else "0001-01-01T00:00:00Z"
    return [_name(obj), created], None


def _simple_columns(*cols: tuple[str, str, str]) -> Callable[[], list[Column]]:
    def build() -> list[Column]:
        out = [_name_col()]
        for name, definition, fld in cols:
            out.append(_age_col() if name == "Age" else _col(name, field_description(definition, fld)))
        return out
    return build


_PRINTERS: dict[tuple[str, str], tuple[Callable[[], list[Column]], _Printer]] = {
    ("", "Pod"): (_pod_columns, _print_pod),
    ("", "Service"): (_service_columns, _print_service),
    ("", "Endpoints"): (lambda: [_name_col(), _col("Endpoints", field_description(_V1 + "Endpoints", "subsets")),
                                 _age_col()], _print_endpoints),
    ("apps", "Deployment"): (_deployment_columns, _print_deployment),
    ("", "Node"): (_node_columns, _print_node),
    ("", "Namespace"): (lambda: [_name_col(), _col("Status", "The status of the namespace"), _age_col()],
                        _print_namespace),
    ("", "ConfigMap"): (_simple_columns(("Data", _V1 + "ConfigMap", "data"), ("Age", "", "")), _print_configmap),
    ("", "Secret"): (_simple_columns(("Type", _V1 + "Secret", "type"), ("Data", _V1 + "Secret", "data"),
                                     ("Age", "", "")), _print_secret),
    ("", "ServiceAccount"): (_simple_columns(("Secrets", _V1 + "ServiceAccount", "secrets"), ("Age", "", "")),
                             _print_service_account),
    ("", "Event"): (_event_columns, _print_event),
    ("coordination.k8s.io", "Lease"): (
        _simple_columns(("Holder", "io.k8s.api.coordination.v1.LeaseSpec", "holderIdentity"), ("Age", "", "")),
        _print_lease),
    ("rbac.authorization.k8s.io", "RoleBinding"): (lambda: _binding_columns("roleBinding"), _print_binding),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): (lambda: _binding_columns("clusterRoleBinding"),
                                                          _print_binding),
}


# --------------------------------------------------------------------------- custom resources

_SEGMENT_RE = re.compile(
    r"""\.(?P<field>[A-Za-z0-9_\-$]+)"""
    r"""|\[(?P<index>-?\d+)\]"""
    r"""|\[(?P<star>\*)\]"""
    r"""|\[(?P<quote>['"])(?P<qfield>.*?)(?P=quote)\]"""
    r"""|\[\?\(@(?P<fpath>(?:\.[A-Za-z0-9_\-]+)+)\s*(?P<op>==|!=)\s*(?P<fquote>['"]?)(?P<fvalue>.*?)(?P=fquote)\)\]""")


def _jsonpath_steps(path: str) -> list[re.Match[str]] | None:
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1].strip()
    if path.startswith("$"):
        path = path[1:]
    steps: list[re.Match[str]] = []
    pos = 0
    while pos < len(path):
        m = _SEGMENT_RE.match(path, pos)
        if m is None:
            return None
        steps.append(m)
        pos = m.end()
    return steps


def jsonpath_first(obj: Any, path: str) -> tuple[bool, Any]:
    """The first value a simple JSONPath selects: (found, value)."""
    steps = _jsonpath_steps(path)
    if steps is None:
        return False, None
    current: list[Any] = [obj]
    for step in steps:
        nxt: list[Any] = []
        for v in current:
            if step.group("field") is not None or step.group("qfield") is not None:
                key = step.group("field") if step.group("field") is not None else step.group("qfield")
                if isinstance(v, Mapping) and key in v:
                    nxt.append(v[key])
            elif step.group("index") is not None:
                i = int(step.group("index"))
                if isinstance(v, list) and -len(v) <= i < len(v):
                    nxt.append(v[i])
            elif step.group("star") is not None:
                if isinstance(v, list):
                    nxt.extend(v)
                elif isinstance(v, Mapping):
                    nxt.extend(v.values())
            elif step.group("fpath") is not None and isinstance(v, list):
                keys = step.group("fpath").split(".")[1:]
                want = step.group("fvalue")
                for item in v:
                    got: Any = item
                    for k in keys:
                        got = got.get(k) if isinstance(got, Mapping) else None
                    text = _value_text(got) if got is not None else None
                    if (text == want) == (step.group("op") == "=="):
                        nxt.append(item)
        current = nxt
        if not current:
            return False, None
    return True, current[0]


def _value_text(value: Any) -> str:
    """A value as kubectl's JSONPath printer writes it."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def _custom_cell(column: Mapping[str, Any], obj: Mapping[str, Any], now: datetime) -> Any:
    found, value = jsonpath_first(obj, str(column.get("jsonPath") or column.get("JSONPath") or ""))
    if not found or value is None:
        return None
    kind = column.get("type")
    if kind == "string":
        return _value_text(value)
    if kind == "integer":
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if kind == "number":
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    if kind == "date":
        if not isinstance(value, str):
            return None
        t = parse_time(value)
        return "<invalid>" if t is None else human_duration(_aware(now) - t)
    return None


_DEFAULT_CUSTOM_COLUMNS: tuple[Mapping[str, Any], ...] = (
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
)


def _custom_columns(rt: ResourceType) -> tuple[list[Column], tuple[Mapping[str, Any], ...]]:
    printer = rt.printer_columns or _DEFAULT_CUSTOM_COLUMNS
    cols = [_name_col()]
    for c in printer:
        path = str(c.get("jsonPath") or c.get("JSONPath") or "")
        cols.append({
            "name": str(c.get("name", "")),
            "type": str(c.get("type", "string")),
            "format": str(c.get("format", "")),
            "description": str(c.get("description")
                               or f"Custom resource definition column (in JSONPath format): {path}"),
            "priority": int(c.get("priority", 0) or 0),
        })
    return cols, printer


# --------------------------------------------------------------------------- tables


def _row_object(obj: Mapping[str, Any], include_object: str) -> Any:
    if include_object == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": TABLE_API_VERSION, "metadata": obj.get("metadata") or {}}


def column_definitions(rt: ResourceType) -> list[Column]:
    """The columns `to_table` produces for a resource type."""
    if rt.is_custom:
        return _custom_columns(rt)[0]
    entry = _PRINTERS.get((rt.group, rt.kind))
    return entry[0]() if entry is not None else _default_columns()


def to_table(rt: ResourceType, objects: list[dict[str, Any]], now: datetime,
             include_object: str = "Metadata", resource_version: str | None = None) -> dict[str, Any]:
    """A `meta.k8s.io/v1` Table of `objects` (all of type `rt`) as the API server renders it.

    `include_object` is the request's `includeObject`: "Metadata" (default),
    "Object" or "None". `resource_version`, if given, goes in the Table's metadata.
    """
    rows: list[Row] = []
    if rt.is_custom:
        columns, printer = _custom_columns(rt)
        for obj in objects:
            cells = [_name(obj), *(_custom_cell(c, obj, now) for c in printer)]
            rows.append({"cells": cells})
    else:
        entry = _PRINTERS.get((rt.group, rt.kind))
        columns = entry[0]() if entry is not None else _default_columns()
        print_row: _Printer = entry[1] if entry is not None else _print_default
        for obj in objects:
            cells, conditions = print_row(obj, now)
            row: Row = {"cells": cells}
            if conditions:
                row["conditions"] = conditions
            rows.append(row)
    if include_object != "None":
        for row, obj in zip(rows, objects, strict=True):
            row["object"] = _row_object(obj, include_object)
    metadata: dict[str, Any] = {}
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {"kind": "Table", "apiVersion": TABLE_API_VERSION, "metadata": metadata,
            "columnDefinitions": columns, "rows": rows}

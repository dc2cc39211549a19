"""The decisions of the embedded pod runner (the kubelet of an isthmus cluster), without I/O.

The pod runner (`isthmus.components.podrunner`) starts processes, sleeps and
probes; every choice it makes comes from here:

* restart backoff: Kubernetes' crash-loop schedule (first restart at once, then
  `base`, doubling up to `cap`; back to the start after `reset_after` seconds
  without a restart) — `Backoff`;
* probe accounting: `initialDelaySeconds`, `periodSeconds`, `successThreshold`,
  `failureThreshold`, and which probe runs when (startup first, then liveness
  and readiness) — `Probe`, `ProbeState`, `record_probe`;
* the life of one container as an immutable `ContainerRecord`, moved on by
  pure transitions (`attempt`, `started`, `exited`, `start_error`,
  `plan_restart`, ...);
* the Pod `status` dict Kubernetes' kubelet would write: phase, conditions
  with `lastTransitionTime` carried over while unchanged, container statuses
  sorted by name, pod and host IPs, start time — `build_pod_status`;
* a container's environment and command line: `env`/`envFrom` with
  `fieldRef`, `resourceFieldRef`, ConfigMap and Secret references (through a
  lookup callable), and Kubernetes' `$(VAR)` expansion (`$$` escapes) —
  `resolve_env`, `expand_command`.

Promises: no I/O, no clock reads (every function that needs the time takes
`now`), no mutation of its arguments; messages use Kubernetes' wording.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any, Literal

# ---------------------------------------------------------------------------- time


def format_time(t: datetime) -> str:
    """A Kubernetes `metav1.Time`: RFC 3339 in UTC, whole seconds (`2026-11-26T10:00:00Z`)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(seconds: float) -> str:
    """A Go-style duration as the kubelet prints it in back-off messages (`10s`, `200ms`, `5m0s`)."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds, 3)
    minutes, secs = divmod(whole, 60)
    text = f"{secs:g}s"
    return f"{int(minutes)}m{text}" if minutes else text


# ---------------------------------------------------------------------------- backoff


@dataclass(frozen=True)
class BackoffEntry:
    """What the schedule remembers about one container: the next wait and when it last restarted."""

    delay: float
    updated: datetime


@dataclass(frozen=True)
class Backoff:
    """Kubernetes' crash-loop back-off, with parameters (kubelet: 10 s, 300 s, 600 s)."""

    base: float = 10.0
    cap: float = 300.0
    reset_after: float = 600.0

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < self.base:
            raise ValueError(f"back-off needs 0 <= base <= cap, not base={self.base} cap={self.cap}")

    def next_restart(self, entry: BackoffEntry | None, finished_at: datetime) -> tuple[float, BackoffEntry]:
        """The wait before restarting a container that stopped at `finished_at`, and the new entry.

        The first restart (or the first after `reset_after` seconds without one)
        is immediate; each later one waits twice as long as the one before,
        starting from `base` and never more than `cap`.
        """
        if entry is None or (finished_at - entry.updated).total_seconds() > self.reset_after:
            return 0.0, BackoffEntry(self.base, finished_at)
        delay = entry.delay
        return delay, BackoffEntry(min(delay * 2, self.cap), finished_at + timedelta(seconds=delay))


# ---------------------------------------------------------------------------- probes

ProbeKind = Literal["startup", "liveness", "readiness"]
PROBE_KINDS: tuple[ProbeKind, ...] = ("startup", "liveness", "readiness")


@dataclass(frozen=True)
class HTTPGetAction:
    host: str
    port: int
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def url(self) -> str:
        return f"{self.scheme.lower()}://{_host_port(self.host, self.port)}{self.path}"


@dataclass(frozen=True)
class TCPSocketAction:
    host: str
    port: int


@dataclass(frozen=True)
class ExecAction:
    command: tuple[str, ...]


@dataclass(frozen=True)
class InvalidAction:
    """A probe that cannot be run as written; every attempt fails with `message`."""

    message: str


ProbeAction = HTTPGetAction | TCPSocketAction | ExecAction | InvalidAction


@dataclass(frozen=True)
class Probe:
    kind: ProbeKind
    action: ProbeAction
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace: float | None = None


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _resolve_port(port: Any, container: Mapping[str, Any]) -> int | str:
    """A probe port as a number, or the problem with it as a string."""
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port and isinstance(p.get("containerPort"), int):
            return int(p["containerPort"])
    return f"couldn't find port {port!r} in container {container.get('name', '')!r}"


def _action(spec: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str) -> ProbeAction:
    if "exec" in spec:
        command = (spec.get("exec") or {}).get("command") or []
        if not command:
            return InvalidAction("exec probe has no command")
        return ExecAction(tuple(str(c) for c in command))
    for key in ("httpGet", "tcpSocket"):
        if key not in spec:
            continue
        h = spec.get(key) or {}
        port = _resolve_port(h.get("port"), container)
        if isinstance(port, str):
            return InvalidAction(port)
        host = h.get("host") or pod_ip
        if key == "tcpSocket":
            return TCPSocketAction(host, port)
        headers = tuple((str(x.get("name", "")), str(x.get("value", ""))) for x in h.get("httpHeaders") or [])
        path = str(h.get("path") or "/")
        return HTTPGetAction(host, port, path if path.startswith("/") else "/" + path,
                             str(h.get("scheme") or "HTTP").upper(), headers)
    if "grpc" in spec:
        return InvalidAction("grpc probes are not supported by the embedded pod runner")
    return InvalidAction("probe has no handler (exec, httpGet or tcpSocket)")


def parse_probes(container: Mapping[str, Any], *, pod_ip: str) -> dict[ProbeKind, Probe]:
    """The container's probes, with Kubernetes' defaults filled in and ports resolved."""
    out: dict[ProbeKind, Probe] = {}
    for kind in PROBE_KINDS:
        spec = container.get(f"{kind}Probe")
        if not isinstance(spec, Mapping):
            continue
        success = int(spec.get("successThreshold") or 1)
        grace = spec.get("terminationGracePeriodSeconds")
        out[kind] = Probe(
            kind=kind,
            action=_action(spec, container, pod_ip),
            initial_delay=float(spec.get("initialDelaySeconds") or 0),
            period=float(spec.get("periodSeconds") or 10),
            timeout=float(spec.get("timeoutSeconds") or 1),
            success_threshold=success if kind == "readiness" else 1,
            failure_threshold=int(spec.get("failureThreshold") or 3),
            termination_grace=float(grace) if grace is not None else None,
        )
    return out


@dataclass(frozen=True)
class ProbeState:
    """The accounting of one probe: its effective result and the current run of equal results."""

    value: bool
    last: bool | None = None
    run: int = 0
    message: str = ""


def initial_probe_state(kind: ProbeKind) -> ProbeState:
    """Before any probe: live (liveness), not ready (readiness), not started (startup)."""
    return ProbeState(value=kind == "liveness")


def record_probe(probe: Probe, state: ProbeState, ok: bool, message: str = "") -> ProbeState:
    """Count one probe result; the effective result flips only after its threshold of equal results."""
    run = state.run + 1 if state.last is ok else 1
    threshold = probe.success_threshold if ok else probe.failure_threshold
    value = ok if run >= threshold else state.value
    return ProbeState(value=value, last=ok, run=run, message="" if ok else message)


def should_kill(probe: Probe, state: ProbeState) -> bool:
    """Whether a liveness or startup probe has failed `failureThreshold` times in a row."""
    return (probe.kind != "readiness" and state.last is False
            and state.run >= probe.failure_threshold)


def probe_active(kind: ProbeKind, started: bool) -> bool:
    """A startup probe runs until the container has started; the others only after."""
    return not started if kind == "startup" else started


STARTUP_PROBE_PERIOD = 0.2  # seconds between readiness/startup probes while a fresh container warms up
STARTUP_PROBE_WINDOW = 10.0  # for at most this long after it started


def probe_delay(probe: Probe, *, started_at: datetime, last_at: datetime | None, now: datetime,
                passed: bool = False) -> float:
    """Seconds until the next probe: `initialDelaySeconds` after start, then every `periodSeconds`.

    One difference from the kubelet, to make pods Ready sooner and never later: a
    readiness or startup probe that has not passed yet since the container started
    is repeated every 0.2 s during its first 10 s instead of every `periodSeconds`.
    """
    period = probe.period
    warming = (now - started_at).total_seconds() < STARTUP_PROBE_WINDOW
    if probe.kind in ("readiness", "startup") and not passed and warming:
        period = min(period, STARTUP_PROBE_PERIOD)
    due = started_at + timedelta(seconds=probe.initial_delay) if last_at is None \
        else last_at + timedelta(seconds=period)
    return max(0.0, (due - now).total_seconds())


# ---------------------------------------------------------------------------- containers


@dataclass(frozen=True)
class Waiting:
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Running:
    started_at: datetime


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str
    started_at: datetime | None
    finished_at: datetime
    message: str = ""
    signal: int | None = None
    container_id: str = ""


ContainerState = Waiting | Running | Terminated


@dataclass(frozen=True)
class ContainerRecord:
    """What the runner knows about one container of a pod; `attempts` counts instances created."""

    name: str
    image: str = ""
    state: ContainerState = Waiting("ContainerCreating")
    last: Terminated | None = None
    attempts: int = 0
    ready: bool = False
    started: bool = False
    container_id: str = ""
    backoff: BackoffEntry | None = None

    @property
    def restart_count(self) -> int:
        return max(self.attempts - 1, 0)


def restart_policy(pod: Mapping[str, Any]) -> str:
    return str((pod.get("spec") or {}).get("restartPolicy") or "Always")


def should_restart(policy: str, exit_code: int, *, force: bool = False) -> bool:
    """Always restarts every exit, OnFailure non-zero ones, Never none; `force` (liveness) all but Never."""
    if policy == "Never":
        return False
    return force or policy == "Always" or exit_code != 0


def attempt(rec: ContainerRecord) -> ContainerRecord:
    """A new instance of the container is being created."""
    return replace(rec, attempts=rec.attempts + 1)


def config_error(rec: ContainerRecord, message: str) -> ContainerRecord:
    """The container cannot be configured (a missing ConfigMap key, say); no instance is created."""
    return replace(rec, state=Waiting("CreateContainerConfigError", message), ready=False, started=False)


def started(rec: ContainerRecord, *, now: datetime, container_id: str,
            probes: Mapping[ProbeKind, Probe]) -> ContainerRecord:
    running = replace(rec, state=Running(now), container_id=container_id)
    return refresh_ready(running, probes=probes, states={k: initial_probe_state(k) for k in probes})


def refresh_ready(rec: ContainerRecord, *, probes: Mapping[ProbeKind, Probe],
                  states: Mapping[ProbeKind, ProbeState]) -> ContainerRecord:
    """`started` and `ready` from the probe states: started once the startup probe passed, ready
    once started and the readiness probe passed (no probe counts as passed)."""
    if not isinstance(rec.state, Running):
        return replace(rec, ready=False, started=False)
    is_started = "startup" not in probes or states["startup"].value
    ready = is_started and ("readiness" not in probes or states["readiness"].value)
    return replace(rec, started=is_started, ready=ready)


def exited(rec: ContainerRecord, *, returncode: int, now: datetime) -> Terminated:
    """The termination of the running instance; a negative `returncode` is death by that signal."""
    code = 128 - returncode if returncode < 0 else returncode
    started_at = rec.state.started_at if isinstance(rec.state, Running) else None
    return Terminated(code, "Completed" if code == 0 else "Error", started_at, now,
                      signal=-returncode if returncode < 0 else None, container_id=rec.container_id)


def start_error(message: str, *, now: datetime) -> Terminated:
    """The termination of an instance whose process could not be started."""
    return Terminated(128, "StartError", None, now, message)


def plan_restart(rec: ContainerRecord, term: Terminated, *, policy: str, backoff: Backoff,
                 pod_ref: str, force: bool = False) -> tuple[ContainerRecord, float | None]:
    """What to show after an instance ended, and the wait before the next (None: no restart).

    Without a restart the container stays terminated. With one, the ended
    instance becomes `lastState`; a start failure shows `RunContainerError` when
    retried at once and `CrashLoopBackOff` when it has to wait, like any crash.
    """
    rec = replace(rec, ready=False, started=False)
    if not should_restart(policy, term.exit_code, force=force):
        return replace(rec, state=term), None
    delay, entry = backoff.next_restart(rec.backoff, term.finished_at)
    if delay > 0:
        state = Waiting("CrashLoopBackOff",
                        f"back-off {_duration(delay)} restarting failed container={rec.name} pod={pod_ref}")
    elif term.reason == "StartError":
        state = Waiting("RunContainerError", term.message)
    else:
        state = Waiting("ContainerCreating")
    return replace(rec, state=state, last=term, backoff=entry), delay


# ---------------------------------------------------------------------------- pod status

_CONDITION_ORDER = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")


def pod_phase(pod: Mapping[str, Any], records: Sequence[ContainerRecord]) -> str:
    """The phase as the kubelet's `getPhase` computes it from the container states."""
    waiting = running = stopped = succeeded = 0
    for r in records:
        if isinstance(r.state, Running):
            running += 1
        elif isinstance(r.state, Terminated):
            stopped += 1
            succeeded += r.state.exit_code == 0
        elif r.last is not None:
            stopped += 1
        else:
            waiting += 1
    if waiting or not records:
        return "Pending"
    if running:
        return "Running"
    policy = restart_policy(pod)
    if policy == "Always":
        return "Running"
    if stopped == succeeded:
        return "Succeeded"
    return "Failed" if policy == "Never" else "Running"


def _state_dict(state: ContainerState | None) -> dict[str, Any]:
    if state is None:
        return {}
    if isinstance(state, Waiting):
        w: dict[str, Any] = {"reason": state.reason}
        if state.message:
            w["message"] = state.message
        return {"waiting": w}
    if isinstance(state, Running):
        return {"running": {"startedAt": format_time(state.started_at)}}
    t: dict[str, Any] = {"exitCode": state.exit_code, "reason": state.reason}
    if state.signal is not None:
        t["signal"] = state.signal
    if state.message:
        t["message"] = state.message
    t["startedAt"] = format_time(state.started_at) if state.started_at else None
    t["finishedAt"] = format_time(state.finished_at)
    if state.container_id:
        t["containerID"] = state.container_id
    return {"terminated": t}


def _container_status(r: ContainerRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"name": r.name, "image": r.image, "imageID": ""}
    if r.container_id:
        out["containerID"] = r.container_id
    out.update(ready=r.ready, started=r.started, restartCount=r.restart_count,
               state=_state_dict(r.state), lastState=_state_dict(r.last))
    return out


def _conditions(pod: Mapping[str, Any], records: Sequence[ContainerRecord], phase: str,
                previous: Sequence[Mapping[str, Any]], now: datetime) -> list[dict[str, Any]]:
    unready = [r.name for r in records if not r.ready]
    wanted: dict[str, tuple[bool, str, str]] = {
        "PodReadyToStartContainers": (True, "", ""),
        "Initialized": (True, "", ""),
        "PodScheduled": (True, "", ""),
    }
    if phase in ("Succeeded", "Failed"):
        containers = (False, "PodCompleted" if phase == "Succeeded" else "PodFailed", "")
    elif unready:
        containers = (False, "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]")
    else:
        containers = (True, "", "")
    wanted["ContainersReady"] = containers
    ready = containers
    prev = {str(c.get("type")): c for c in previous}
    if containers[0]:
        for gate in (pod.get("spec") or {}).get("readinessGates") or []:
            t = str(gate.get("conditionType", ""))
            if t not in prev:
                ready = (False, "ReadinessGatesNotReady",
                         f'corresponding condition of pod readiness gate "{t}" does not exist.')
                break
            if prev[t].get("status") != "True":
                ready = (False, "ReadinessGatesNotReady", f'the status of pod readiness gate "{t}" is not "True", but {prev[t].get("status")}')
                break
    wanted["Ready"] = ready
    out: list[dict[str, Any]] = []
    for t in _CONDITION_ORDER:
        ok, reason, message = wanted[t]
        status = "True" if ok else "False"
        old = prev.get(t)
        since = old.get("lastTransitionTime") if old and old.get("status") == status else None
        c: dict[str, Any] = {"type": t, "status": status, "lastProbeTime": None,
                             "lastTransitionTime": since or format_time(now)}
        if reason:
            c["reason"] = reason
        if message:
            c["message"] = message
        out.append(c)
    # Conditions owned by others (readiness gates, DisruptionTarget, ...) are kept as they are.
    out.extend(dict(c) for t, c in prev.items() if t not in _CONDITION_ORDER)
    return out


def build_pod_status(pod: Mapping[str, Any], records: Sequence[ContainerRecord], *, pod_ip: str,
                     host_ip: str, start_time: datetime, now: datetime,
                     previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Pod's `status` as the kubelet writes it.

    `previous` is the status last written (or the pod's own status), from which
    unchanged conditions keep their `lastTransitionTime`, conditions of other
    types are kept, and `qosClass` is carried over.
    """
    prev = previous if previous is not None else (pod.get("status") or {})
    phase = pod_phase(pod, records)
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": _conditions(pod, records, phase, prev.get("conditions") or [], now),
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": format_time(start_time),
        "containerStatuses": [_container_status(r) for r in sorted(records, key=lambda r: r.name)],
    }
    if prev.get("qosClass"):
        status["qosClass"] = prev["qosClass"]
    return status



def stopped_with_node(status: Mapping[str, Any], *, now: datetime) -> dict[str, Any] | None:
    """The status of a pod whose processes ended with its node (the cluster stopped), or None
    when it already shows nothing ready or running.

    As Kubernetes' node lifecycle controller does for the pods of a node that went
    away, `Ready` turns False; so do `ContainersReady` and every container's `ready`
    and `started`, and a running container is shown waiting to be created again
    (its last state `terminated`, reason `Unknown`, as the kubelet reports a
    container lost with its node). The node agent runs the pod again and reports
    from there.
    """
    conditions = [dict(c) for c in status.get("conditions") or []]
    containers = [dict(c) for c in status.get("containerStatuses") or []]
    changed = False
    for c in conditions:
        if c.get("type") in ("Ready", "ContainersReady") and c.get("status") != "False":
            c.update(status="False", reason="NodeNotReady", lastTransitionTime=format_time(now),
                     message="the cluster stopped; the pod's containers are started again")
            changed = True
    for c in containers:
        state = c.get("state") or {}
        if c.get("ready") or c.get("started") or "running" in state:
            changed = True
            c.update(ready=False, started=False)
            if "running" in state:
                c["lastState"] = {"terminated": {
                    "exitCode": 255, "reason": "Unknown", "startedAt": state["running"].get("startedAt"),
                    "finishedAt": format_time(now),
                    **({"containerID": c["containerID"]} if c.get("containerID") else {})}}
                c["state"] = {"waiting": {"reason": "ContainerCreating"}}
    if not changed:
        return None
    return {**status, "conditions": conditions, "containerStatuses": containers}


# ---------------------------------------------------------------------------- environment

Lookup = Callable[[str, str, str], Mapping[str, str] | None]
"""(kind, namespace, name) -> the object's data, or None when there is no such object.

`kind` is "ConfigMap" or "Secret"; Secret values are given decoded.
"""


class ContainerConfigError(Exception):
    """The container's configuration cannot be resolved (shown as CreateContainerConfigError)."""


class ContainerStartError(Exception):
    """The container cannot be started as written (shown as RunContainerError)."""


def expand(text: str, *mappings: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: known names are replaced, unknown ones are left as
    written, `$$` is a literal `$`, and an unclosed `$(` is kept."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    n = len(text)
    while cursor < n:
        if text[cursor] == "$" and cursor + 1 < n:
            out.append(text[checkpoint:cursor])
            nxt = text[cursor + 1]
            if nxt == "$":
                out.append("$")
                advance = 1
            elif nxt == "(":
                close = text.find(")", cursor + 2)
                if close < 0:
                    out.append("$(")
                    advance = 1
                else:
                    name = text[cursor + 2:close]
                    out.append(next((m[name] for m in mappings if name in m), f"$({name})"))
                    advance = close - cursor
            else:
                out.append("$" + nxt)
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


_SUBSCRIPT = re.compile(r"^(metadata\.(?:labels|annotations))\['(.*)'\]$")


def _field_ref(pod: Mapping[str, Any], path: str, pod_ip: str, host_ip: str) -> str:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName") or spec.get("serviceAccount"),
        "status.podIP": pod_ip, "status.podIPs": pod_ip,
        "status.hostIP": host_ip, "status.hostIPs": host_ip,
    }
    if path in simple:
        return str(simple[path] or "")
    m = _SUBSCRIPT.match(path)
    if m:
        field = m.group(1).split(".", 1)[1]
        return str((meta.get(field) or {}).get(m.group(2), ""))
    raise ContainerConfigError(f'unsupported fieldRef path "{path}"')


_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
_SUFFIX = {"": Fraction(1), "m": Fraction(1, 1000), "k": Fraction(10**3), "M": Fraction(10**6),
           "G": Fraction(10**9), "T": Fraction(10**12), "P": Fraction(10**15), "E": Fraction(10**18),
           "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40),
           "Pi": Fraction(2**50), "Ei": Fraction(2**60)}


def _quantity(text: str) -> Fraction:
    m = _QUANTITY.match(str(text).strip())
    if not m:
        raise ContainerConfigError(f'invalid quantity "{text}"')
    return Fraction(m.group(1)) * _SUFFIX[m.group(2) or ""]


def _resource_field_ref(container: Mapping[str, Any], ref: Mapping[str, Any],
                        allocatable: Mapping[str, str]) -> str:
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None and kind == "requests":
        value = (resources.get("limits") or {}).get(name)
    if value is None:
        value = allocatable.get(name, "0")
    divisor = _quantity(str(ref.get("divisor") or "1"))
    if divisor <= 0:
        raise ContainerConfigError(f'invalid divisor "{ref.get("divisor")}"')
    return str(math.ceil(_quantity(str(value)) / divisor))


def _object(lookup: Lookup, kind: str, namespace: str, name: str,
            optional: bool) -> Mapping[str, str] | None:
    data = lookup(kind, namespace, name)
    if data is None and not optional:
        raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
    return data


def referenced_objects(container: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (kind, name) of every ConfigMap and Secret the container's environment reads, in order."""
    refs: list[tuple[str, str]] = []
    for source in container.get("envFrom") or []:
        for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            if source.get(key) is not None:
                refs.append((kind, str(source[key].get("name", ""))))
    for var in container.get("env") or []:
        value_from = var.get("valueFrom") or {}
        for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            if value_from.get(key) is not None:
                refs.append((kind, str(value_from[key].get("name", ""))))
    return list(dict.fromkeys(refs))


def isthmus_pod_env(pod: Mapping[str, Any], pod_ip: str) -> dict[str, str]:
    """The variables every isthmus container has: POD_IP, POD_NAME, POD_NAMESPACE, HOSTNAME."""
    meta = pod.get("metadata") or {}
    name = str(meta.get("name", ""))
    return {"POD_IP": pod_ip, "POD_NAME": name, "POD_NAMESPACE": str(meta.get("namespace", "")),
            "HOSTNAME": name}


def resolve_env(pod: Mapping[str, Any], container: Mapping[str, Any], *, pod_ip: str, host_ip: str,
                lookup: Lookup, service_env: Mapping[str, str] | None = None,
                allocatable: Mapping[str, str] | None = None) -> dict[str, str]:
    """The container's environment, as the kubelet builds it.

    `envFrom` first (in order, with prefixes), then `env` (later entries win);
    `value`s are `$(VAR)`-expanded against the variables declared before them and
    `service_env`; values from references are not expanded. `service_env` fills
    in every name the container does not declare. Raises ContainerConfigError
    for a missing non-optional ConfigMap, Secret or key.
    """
    namespace = str((pod.get("metadata") or {}).get("namespace", ""))
    service = dict(service_env or {})
    declared: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            ref = source.get(key)
            if ref is None:
                continue
            data = _object(lookup, kind, namespace, str(ref.get("name", "")), bool(ref.get("optional")))
            for k, v in (data or {}).items():
                if k and "=" not in k:
                    declared[prefix + k] = str(v)
    for var in container.get("env") or []:
        name = str(var.get("name", ""))
        value_from = var.get("valueFrom")
        if var.get("value") or not value_from:
            declared[name] = expand(str(var.get("value") or ""), declared, service)
            continue
        if "fieldRef" in value_from:
            declared[name] = _field_ref(pod, str(value_from["fieldRef"].get("fieldPath", "")), pod_ip, host_ip)
        elif "resourceFieldRef" in value_from:
            declared[name] = _resource_field_ref(container, value_from["resourceFieldRef"], allocatable or {})
        else:
            for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                ref = value_from.get(key)
                if ref is None:
                    continue
                optional = bool(ref.get("optional"))
                obj_name, obj_key = str(ref.get("name", "")), str(ref.get("key", ""))
                data = _object(lookup, kind, namespace, obj_name, optional)
                if data is not None and obj_key in data:
                    declared[name] = str(data[obj_key])
                elif not optional:
                    raise ContainerConfigError(
                        f"couldn't find key {obj_key} in {kind} {namespace}/{obj_name}")
                break
            else:
                raise ContainerConfigError(f'env var "{name}" has an unsupported valueFrom source')
    return {**service, **declared}


def expand_command(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """`command` + `args` with `$(VAR)` expanded from the final environment.

    Raises ContainerStartError when there is no `command`: the embedded runner
    has no image entrypoint to fall back on.
    """
    command = [str(c) for c in container.get("command") or []]
    if not command:
        raise ContainerStartError("the container has no command")
    args = [str(a) for a in container.get("args") or []]
    return [expand(part, env) for part in command + args]

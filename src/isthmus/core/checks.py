"""`isthmus check` as data: categories of checks, their outcomes, and the judgements on fetched facts.

A check is a description, a function returning an `Outcome` (success, or an
error or warning with its cause and, where the check's own hint does not
fit, a better one) and three flags: `fatal` (an error stops the run, since
what follows depends on it), `retry` (an error is a state that may still
settle, such as pods starting, and is tried again while the run's wait
lasts) and `warning` (an error only warns: the mesh works, but will not for
long). Checks come in named categories, printed in order, as `linkerd
check` prints them. The functions that fetch live in
`isthmus.components.checks`; this module holds the types, the report's JSON
shape, and the judgements that need no I/O: given these pods, is the
control plane ready; given these certificates and `now`, what is wrong;
given these access reviews, what may not be created; given what each
proxy answered, which are not ready.

Promises: pure functions of their arguments (callers pass `now`, an aware
UTC datetime); every error names what was found, where, and what was
expected; lists of problems are sorted so a report reads the same on
every run.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

__all__ = [
    "CERT_EXPIRY_WARNING",
    "MIN_KUBERNETES",
    "SUPPORTED_KEY_TYPE",
    "AccessAnswer",
    "Category",
    "CertFacts",
    "Check",
    "CheckResult",
    "ContainerFacts",
    "Outcome",
    "PodFacts",
    "PresentedCert",
    "ProxyAnswer",
    "Status",
    "access_outcome",
    "certificates_valid_for",
    "certificates_within_validity",
    "control_plane_pods_ready",
    "data_plane_versions",
    "fail",
    "kubernetes_version",
    "missing_objects",
    "ok",
    "pod_facts",
    "proxies_ready",
    "proxy_certificates",
    "report",
    "result_of",
    "succeeded",
    "supported_algorithm",
    "versions_match",
    "warn",
]

CERT_EXPIRY_WARNING = timedelta(days=60)  # as linkerd: certificates valid for less than this warn
MIN_KUBERNETES = (1, 22)
SUPPORTED_KEY_TYPE = "ECDSA P-256"


# ------------------------------------------------------------------ outcomes and the shape of a run


class Status(enum.Enum):
    SUCCESS = "success"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Outcome:
    """What one check found; `hint` (when set) replaces the check's own hint."""

    status: Status
    cause: str = ""
    hint: str = ""


def ok() -> Outcome:
    return Outcome(Status.SUCCESS)


def fail(cause: str, hint: str = "") -> Outcome:
    return Outcome(Status.ERROR, cause, hint)


def warn(cause: str, hint: str = "") -> Outcome:
    return Outcome(Status.WARNING, cause, hint)


E = TypeVar("E")


@dataclass(frozen=True)
class Check(Generic[E]):
    """One line of the report: `run` looks at the environment `E` (a cluster, probes, a clock)."""

    description: str
    run: Callable[[E], Outcome]
    hint: str
    fatal: bool = False
    retry: bool = False
    warning: bool = False


@dataclass(frozen=True)
class Category(Generic[E]):
    name: str
    checks: tuple[Check[E], ...]


@dataclass(frozen=True)
class CheckResult:
    category: str
    description: str
    status: Status
    cause: str = ""
    hint: str = ""


def result_of(category: str, check: Check[Any], outcome: Outcome) -> CheckResult:
    """The line to print: a `warning` check's error is a warning; the hint only where something is wrong."""
    status = outcome.status
    if status is Status.ERROR and check.warning:
        status = Status.WARNING
    if status is Status.SUCCESS:
        return CheckResult(category, check.description, status)
    return CheckResult(category, check.description, status, outcome.cause, outcome.hint or check.hint)


def succeeded(results: Iterable[CheckResult]) -> bool:
    """Whether the run passed: warnings pass, as in `linkerd check`."""
    return all(r.status is not Status.ERROR for r in results)


def report(results: Sequence[CheckResult]) -> dict[str, Any]:
    """`-o json`: {"success", "categories": [{"categoryName", "checks": [{"description", "result", "error", "hint"}]}]}."""
    categories: list[dict[str, Any]] = []
    for r in results:
        if not categories or categories[-1]["categoryName"] != r.category:
            categories.append({"categoryName": r.category, "checks": []})
        categories[-1]["checks"].append({"description": r.description, "result": r.status.value,
                                         "error": r.cause, "hint": r.hint})
    return {"success": succeeded(results), "categories": categories}


# ------------------------------------------------------------------ the Kubernetes API


def kubernetes_version(info: Mapping[str, Any], minimum: tuple[int, int] = MIN_KUBERNETES) -> Outcome:
    """The API server's `/version` answer against the oldest Kubernetes the manifests are made for."""
    major, minor = (re.match(r"\d*", str(info.get(k, ""))) for k in ("major", "minor"))
    git = str(info.get("gitVersion") or "")
    if not (major and major.group() and minor and minor.group()):
        m = re.match(r"v?(\d+)\.(\d+)", git)
        if m is None:
            return fail(f"cannot tell the Kubernetes version from the API's answer {dict(info)!r}")
        found = (int(m.group(1)), int(m.group(2)))
    else:
        found = (int(major.group()), int(minor.group()))
    if found < minimum:
        return fail(f"Kubernetes is on version {found[0]}.{found[1]} ({git or 'no gitVersion'}); "
                    f"isthmus needs {minimum[0]}.{minimum[1]} or newer")
    return ok()


@dataclass(frozen=True)
class AccessAnswer:
    """A SelfSubjectAccessReview's answer: may the user `verb` `resource` (`plural.group`) in `namespace`."""

    verb: str
    resource: str
    namespace: str
    allowed: bool
    reason: str = ""


def access_outcome(answers: Sequence[AccessAnswer]) -> Outcome:
    refused = [a for a in answers if not a.allowed]
    if not refused:
        return ok()
    lines = []
    for a in refused:
        where = f" in namespace {a.namespace!r}" if a.namespace else ""
        lines.append(f"cannot {a.verb} {a.resource}{where}" + (f": {a.reason}" if a.reason else ""))
    return fail("\n".join(lines))


def missing_objects(kind: str, expected: Iterable[str], found: Iterable[str]) -> Outcome:
    """Which of the `expected` names of `kind` are not among those `found`."""
    missing = sorted(set(expected) - set(found))
    if not missing:
        return ok()
    return fail(f"missing {kind}: {', '.join(missing)}")


# ------------------------------------------------------------------ pods


@dataclass(frozen=True)
class ContainerFacts:
    name: str
    ready: bool
    restarts: int
    state: str  # "running", "waiting: CrashLoopBackOff", "terminated: Error (exit code 1)", "unknown"


@dataclass(frozen=True)
class PodFacts:
    namespace: str
    name: str
    phase: str
    ip: str
    service_account: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    containers: tuple[str, ...] = ()  # the spec's container names, in order
    statuses: tuple[ContainerFacts, ...] = ()
    terminating: bool = False

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def status_of(self, container: str) -> ContainerFacts | None:
        return next((s for s in self.statuses if s.name == container), None)

    @property
    def ready(self) -> bool:
        return (self.phase == "Running" and bool(self.containers)
                and all((s := self.status_of(c)) is not None and s.ready for c in self.containers))

    def why_not_ready(self) -> str:
        """What keeps the pod from Ready, e.g. `container identity waiting: CrashLoopBackOff (5 restarts)`."""
        if self.phase != "Running":
            return f"phase {self.phase or 'unknown'}"
        reasons = []
        for c in self.containers:
            s = self.status_of(c)
            if s is None:
                reasons.append(f"container {c} has no status yet")
            elif not s.ready:
                restarts = f" ({s.restarts} restart{'s' if s.restarts != 1 else ''})" if s.restarts else ""
                state = "running, not ready" if s.state == "running" else s.state
                reasons.append(f"container {c} {state}{restarts}")
        return "; ".join(reasons) or "not ready"


def _state(state: Mapping[str, Any]) -> str:
    if "running" in state:
        return "running"
    if "waiting" in state:
        w = state["waiting"] or {}
        return f"waiting: {w.get('reason') or 'unknown reason'}"
    if "terminated" in state:
        t = state["terminated"] or {}
        return f"terminated: {t.get('reason') or 'unknown reason'} (exit code {t.get('exitCode', '?')})"
    return "unknown"


def _strings(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


def pod_facts(pod: Mapping[str, Any]) -> PodFacts:
    """The facts the checks need of a Pod object (as the API serves it)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    statuses = tuple(
        ContainerFacts(name=str(s.get("name", "")), ready=bool(s.get("ready")),
                       restarts=int(s.get("restartCount") or 0), state=_state(s.get("state") or {}))
        for s in status.get("containerStatuses") or [])
    return PodFacts(
        namespace=str(meta.get("namespace") or ""), name=str(meta.get("name") or ""),
        phase=str(status.get("phase") or ""), ip=str(status.get("podIP") or ""),
        service_account=str(spec.get("serviceAccountName") or "default"),
        labels=_strings(meta.get("labels")), annotations=_strings(meta.get("annotations")),
        containers=tuple(str(c.get("name", "")) for c in spec.get("containers") or []),
        statuses=statuses, terminating=bool(meta.get("deletionTimestamp")))


def control_plane_pods_ready(pods: Sequence[PodFacts], deployments: Mapping[str, str],
                             replicas: Mapping[str, int], *, component_label: str) -> Outcome:
    """Every control-plane Deployment has pods, all Ready.

    `deployments` maps each component (its pods' `component_label` value) to
    its Deployment's name, `replicas` each Deployment that exists to the
    replicas it asks for. Pods being deleted are left out (a rolling
    update's old pods).
    """
    problems = []
    for component, deployment in sorted(deployments.items(), key=lambda kv: kv[1]):
        mine = [p for p in pods if p.labels.get(component_label) == component and not p.terminating]
        if not mine:
            wanted = replicas.get(deployment)
            if wanted is None:
                problems.append(f"Deployment {deployment} does not exist")
            elif wanted == 0:
                problems.append(f"no pods of Deployment {deployment}: it is scaled to 0 replicas")
            else:
                problems.append(f"no pods of Deployment {deployment} (it asks for {wanted})")
            continue
        problems += [f"pod {p.name} is not ready: {p.why_not_ready()}"
                     for p in sorted(mine, key=lambda p: p.name) if not p.ready]
    return fail("\n".join(problems)) if problems else ok()


# ------------------------------------------------------------------ certificates


@dataclass(frozen=True)
class CertFacts:
    """What the checks judge of a certificate (read by `isthmus.adapters.x509`)."""

    subject: str
    not_before: datetime
    not_after: datetime
    key_type: str
    dns_names: tuple[str, ...] = ()


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _name(cert: CertFacts) -> str:
    if cert.subject:
        return cert.subject
    return f"certificate for {cert.dns_names[0]}" if cert.dns_names else "certificate with an empty subject"


def supported_algorithm(certs: Sequence[CertFacts], what: str) -> Outcome:
    """Every certificate has the mesh's key type (ECDSA P-256)."""
    bad = [f"{what} {_name(c)} has a {c.key_type} key; the mesh uses {SUPPORTED_KEY_TYPE}"
           for c in certs if c.key_type != SUPPORTED_KEY_TYPE]
    return fail("\n".join(bad)) if bad else ok()


def certificates_within_validity(certs: Sequence[CertFacts], what: str, *, now: datetime) -> Outcome:
    """Every certificate is valid at `now` (not expired, not yet to come)."""
    bad = []
    for c in certs:
        if now > c.not_after:
            bad.append(f"{what} {_name(c)} expired at {_iso(c.not_after)}")
        elif now < c.not_before:
            bad.append(f"{what} {_name(c)} is not valid before {_iso(c.not_before)}")
    return fail("\n".join(bad)) if bad else ok()


def certificates_valid_for(certs: Sequence[CertFacts], what: str, *, now: datetime,
                           at_least: timedelta = CERT_EXPIRY_WARNING) -> Outcome:
    """Every certificate stays valid for `at_least` from `now` (a check flagged `warning` by its users).

    A certificate already expired is left to `certificates_within_validity`.
    """
    days = at_least.days
    bad = [f"{what} {_name(c)} will expire on {_iso(c.not_after)}, in less than {days} days"
           for c in certs if now <= c.not_after < now + at_least]
    return fail("\n".join(bad)) if bad else ok()


# ------------------------------------------------------------------ the data plane


@dataclass(frozen=True)
class ProxyAnswer:
    """A meshed pod and what its proxy's admin `/ready` answered (`status` None: no answer, see `error`)."""

    pod: PodFacts
    status: int | None
    body: str = ""
    error: str = ""


def proxies_ready(answers: Sequence[ProxyAnswer], *, proxy_container: str, where: str) -> Outcome:
    """Every meshed pod's proxy container is Ready and its admin port says ready (200 on `/ready`)."""
    if not answers:
        return fail(f'no "{proxy_container}" containers found {where}',
                    "mesh a workload: annotate its namespace or pod template with "
                    "isthmus.io/inject=enabled (or `isthmus inject`) and restart it")
    problems = []
    for a in sorted(answers, key=lambda a: a.pod.ref):
        container = a.pod.status_of(proxy_container)
        if not a.pod.ip:
            problems.append(f"{a.pod.ref}: the pod has no IP yet ({a.pod.why_not_ready()})")
        elif a.status is None:
            state = f"; container {proxy_container} {container.state}" if container else ""
            problems.append(f"{a.pod.ref}: its proxy's admin port does not answer: {a.error}{state}")
        elif a.status != 200:
            problems.append(f"{a.pod.ref}: its proxy answers /ready with {a.status}: "
                            f"{a.body.strip() or 'no reason given'}")
        elif container is None or not container.ready:
            problems.append(f"{a.pod.ref}: container {proxy_container} is not Ready yet")
    return fail("\n".join(problems)) if problems else ok()


@dataclass(frozen=True)
class PresentedCert:
    """The certificate a proxy presented on its inbound port, and whether it verified.

    `error` is the TLS verification's complaint against the trust anchors and
    `identity` ("" when it verified); `leaf` is None when no certificate could
    be read at all (see `error`).
    """

    pod: str
    identity: str
    leaf: CertFacts | None
    error: str = ""


def proxy_certificates(presented: Sequence[PresentedCert], *, now: datetime) -> Outcome:
    """Every proxy presents a certificate that chains to the trust anchors and names its pod's identity."""
    problems = []
    for p in sorted(presented, key=lambda p: p.pod):
        if p.leaf is None:
            problems.append(f"{p.pod}: no certificate: {p.error}")
            continue
        if p.error:
            problems.append(f"{p.pod}: its certificate ({_describe_leaf(p.leaf)}) does not verify "
                            f"against the trust anchors: {p.error}")
        elif p.leaf.dns_names != (p.identity,):
            problems.append(f"{p.pod}: its certificate names {', '.join(p.leaf.dns_names) or 'nothing'}, "
                            f"expected {p.identity}")
        elif not p.leaf.not_before <= now <= p.leaf.not_after:
            problems.append(f"{p.pod}: its certificate is valid from {_iso(p.leaf.not_before)} to "
                            f"{_iso(p.leaf.not_after)}, not now")
    return fail("\n".join(problems)) if problems else ok()


def _describe_leaf(leaf: CertFacts) -> str:
    names = ", ".join(leaf.dns_names) or "no DNS names"
    return f"for {names}, valid until {_iso(leaf.not_after)}"


# ------------------------------------------------------------------ versions


def versions_match(cli: str, control_plane: str | None) -> Outcome:
    if not control_plane:
        return fail("the control plane does not record its version (isthmus-config has no `version`)")
    if control_plane != cli:
        return fail(f"control plane running {control_plane} but cli running {cli}")
    return ok()


def data_plane_versions(pods: Sequence[PodFacts], cli: str, *, annotation: str) -> Outcome:
    """Every meshed pod's proxy was injected by this version."""
    bad = sorted(f"{p.ref} running {p.annotations.get(annotation) or 'an unknown version'} but cli running {cli}"
                 for p in pods if p.annotations.get(annotation) != cli)
    return fail("\n".join(bad)) if bad else ok()

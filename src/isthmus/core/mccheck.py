"""`isthmus multicluster check` judgements: given what was read of the Links and their mirrors, what is wrong.

Every function takes plain values fetched elsewhere
(`isthmus.components.checks.multicluster`) and returns an `Outcome` of
`isthmus.core.checks`. Problems are reported per Link (`link east: ...`) or
per mirrored Service (`emojivoto/web-svc-east: ...`), one line each,
sorted, so the report reads the same on every run and says which Link is
at fault — `check` covers every Link, not only the first.

Promises: pure functions of their arguments; inputs are never modified.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from isthmus.core import mirror
from isthmus.core.checks import Outcome, PodFacts, fail, ok
from isthmus.core.identity import parse_workload_identity

__all__ = [
    "GatewayView",
    "ParsedLinks",
    "gateways_alive",
    "mirror_controllers_running",
    "mirrors_belong_to_links",
    "mirrors_have_endpoints",
    "parse_links",
    "per_link",
]

Obj = Mapping[str, Any]


def _meta(obj: Obj) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _ref(obj: Obj) -> str:
    meta = _meta(obj)
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def per_link(problems: Mapping[str, str], hint: str = "") -> Outcome:
    """Success when no Link has a problem; else one line `link NAME: problem` per Link with one."""
    if not problems:
        return ok()
    return fail("\n".join(f"link {name}: {problem}" for name, problem in sorted(problems.items())), hint)


@dataclass(frozen=True)
class ParsedLinks:
    """The Links that parse (`valid`, by name) and what is wrong with Links (`problems`, by name): those that
    do not parse, and those that parse but share their target cluster with another (in both)."""

    valid: dict[str, mirror.LinkSpec]
    problems: dict[str, str]


def parse_links(objects: Iterable[Obj]) -> ParsedLinks:
    """Every Link through `LinkSpec.from_object`, plus what the mirror cannot tell alone: a gateway
    identity that is no workload identity, and two Links mirroring the same cluster (they would fight
    over the same `<svc>-<cluster>` mirrors)."""
    valid: dict[str, mirror.LinkSpec] = {}
    problems: dict[str, str] = {}
    for obj in objects:
        name = str(_meta(obj).get("name") or "")
        try:
            spec = mirror.LinkSpec.from_object(dict(obj))
        except mirror.LinkError as e:
            problems[name] = str(e)
            continue
        if parse_workload_identity(spec.gateway_identity) is None:
            problems[name] = (f"spec.gatewayIdentity {spec.gateway_identity!r} is not a workload identity "
                              f"(<serviceaccount>.<namespace>.serviceaccount.identity.isthmus.<trust-domain>)")
            continue
        valid[name] = spec
    by_target: dict[str, list[str]] = {}
    for name, spec in valid.items():
        by_target.setdefault(spec.target_cluster_name, []).append(name)
    for target, names in by_target.items():
        if len(names) > 1:  # reported, and still checked: each works on its own
            for name in names:
                problems[name] = (f"Links {', '.join(sorted(names))} all target cluster {target!r} and would "
                                  f"fight over its mirrors (<service>-{target}): keep one")
    return ParsedLinks(valid, problems)


def mirror_controllers_running(links: Mapping[str, mirror.LinkSpec], deployments: Mapping[str, Obj | None],
                               pods: Sequence[PodFacts], *, link_label: str) -> Outcome:
    """Each Link has its service-mirror Deployment (`deployments`: Link name -> the Deployment or None)
    with at least one pod, all ready; `pods` are the mirror pods, labelled `link_label=<Link name>`."""
    problems = {}
    for name in sorted(links):
        deployment = deployments.get(name)
        if deployment is None:
            problems[name] = "its service mirror Deployment does not exist"
            continue
        replicas = (deployment.get("spec") or {}).get("replicas")
        if replicas == 0:
            problems[name] = f"its service mirror Deployment {_ref(deployment)} is scaled to 0"
            continue
        mine = [p for p in pods if p.labels.get(link_label) == name and not p.terminating]
        if not mine:
            problems[name] = f"its service mirror Deployment {_ref(deployment)} has no pods"
            continue
        if not any(p.ready for p in mine):
            problems[name] = "; ".join(f"pod {p.ref} is not ready: {p.why_not_ready()}"
                                       for p in sorted(mine, key=lambda p: p.name))
    return per_link(problems)


def _ready_addresses(endpoints: Obj | None) -> int:
    return sum(len(s.get("addresses") or ()) for s in (endpoints or {}).get("subsets") or ())


def _not_ready_addresses(endpoints: Obj | None) -> int:
    return sum(len(s.get("notReadyAddresses") or ()) for s in (endpoints or {}).get("subsets") or ())


def _endpoints_reason(statuses: Mapping[str, Obj], service: Obj) -> str:
    """The mirror's own word on the service's endpoints (its Link's status entry), "" when it has none."""
    meta = _meta(service)
    cluster = str((meta.get("labels") or {}).get(mirror.CLUSTER_NAME_LABEL) or "")
    status = statuses.get(cluster) or {}
    for entry in status.get("mirroredServices") or ():
        if entry.get("namespace") == meta.get("namespace") and entry.get("mirroredName") == meta.get("name"):
            for c in entry.get("conditions") or ():
                if c.get("type") == "EndpointsReady" and c.get("status") != "True":
                    return f"{c.get('reason')}: {c.get('message')}"
    return ""


def mirrors_have_endpoints(services: Sequence[Obj], endpoints: Mapping[tuple[str, str], Obj | None],
                           statuses: Mapping[str, Obj]) -> Outcome:
    """Every mirrored Service has ready addresses in its Endpoints; the cause says why not, from its
    Link's status (`statuses`: target cluster -> the Link's status) when the mirror wrote a reason."""
    problems = []
    for svc in sorted(services, key=_ref):
        meta = _meta(svc)
        ep = endpoints.get((str(meta.get("namespace") or ""), str(meta.get("name") or "")))
        if _ready_addresses(ep):
            continue
        if ep is None:
            what = "has no Endpoints"
        elif _not_ready_addresses(ep):
            what = "has only not-ready endpoints (the gateway fails its probes)"
        else:
            what = "has no endpoints"
        reason = _endpoints_reason(statuses, svc)
        problems.append(f"{_ref(svc)} {what}" + (f" ({reason})" if reason else ""))
    return fail("\n".join(problems)) if problems else ok()


def mirrors_belong_to_links(services: Sequence[Obj], links: Mapping[str, mirror.LinkSpec],
                            invalid: Iterable[str] = ()) -> Outcome:
    """Every mirrored Service's `mirror.isthmus.io/cluster-name` is the target of a Link (a Link that does
    not parse counts when its name is the cluster's, as `multicluster link` names Links)."""
    targets = {spec.target_cluster_name for spec in links.values()} | set(invalid)
    problems = []
    for svc in sorted(services, key=_ref):
        cluster = str((_meta(svc).get("labels") or {}).get(mirror.CLUSTER_NAME_LABEL) or "")
        if cluster not in targets:
            problems.append(f"{_ref(svc)} mirrors a service of cluster {cluster!r}, which no Link targets")
    return fail("\n".join(problems)) if problems else ok()


@dataclass(frozen=True)
class GatewayView:
    """What is known of one Link's gateway: alive or not (None: unknown), and why, from where."""

    alive: bool | None
    reason: str = ""


def gateways_alive(views: Mapping[str, GatewayView]) -> Outcome:
    """Every Link's gateway is alive; for the others the mirror's reason (its last probe failure)."""
    problems = {}
    for name, view in views.items():
        if view.alive is None:
            problems[name] = view.reason or "no probe result yet"
        elif not view.alive:
            problems[name] = f"gateway not alive: {view.reason or 'no reason recorded'}"
    return per_link(problems)


def gateway_view(metrics_alive: float | None, status: Obj | None) -> GatewayView:
    """Liveness from the leading mirror's `gateway_alive` (None when it could not be read), else from the
    Link's `GatewayAlive` condition; the reason from that condition's message."""
    condition: Mapping[str, Any] = {}
    for c in (status or {}).get("conditions") or ():
        if c.get("type") == "GatewayAlive":
            condition = c
    message = str(condition.get("message") or "")
    if metrics_alive is not None:
        alive = metrics_alive >= 1
        if not alive and condition.get("status") == "True":
            message = "the mirror's gateway_alive is 0 but the Link's status has not caught up yet"
        return GatewayView(alive, message if not alive else "")
    if not condition:
        return GatewayView(None, "the Link's status says nothing of its gateway and its service mirror's "
                                 "metrics could not be read: is the service mirror running?")
    alive = condition.get("status") == "True"
    return GatewayView(alive, "" if alive else f"{condition.get('reason')}: {message}")

"""What the embedded cluster's Deployment controller should do next, decided without I/O.

The embedded cluster runs a Deployment's Pods directly (no ReplicaSets): every
Pod carries the `pod-template-hash` label of the template it was made from and
an ownerReference to its Deployment. `plan` compares the Deployment with its
Pods and returns the Pods to create and to delete and the Deployment's new
status, following Kubernetes' rolling update rules (maxSurge, maxUnavailable,
25% each by default) and the status fields `kubectl rollout status` reads
(observedGeneration, replicas, updatedReplicas, readyReplicas,
availableReplicas, unavailableReplicas, conditions Available and Progressing).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

HASH_LABEL = "pod-template-hash"


def template_hash(template: Mapping[str, Any]) -> str:
    """A short stable hash of a pod template (what Kubernetes puts in `pod-template-hash`)."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()[:10]


def resolve_int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.endswith("%"):
        fraction = float(text[:-1]) / 100 * total
        return math.ceil(fraction) if round_up else math.floor(fraction)
    return int(text)


def pod_ready(pod: Mapping[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _created(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("creationTimestamp") or "")


def _name(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name") or "")


def _deletion_order(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Which pods to remove first: not ready before ready, then the newest (as Kubernetes)."""
    newest_first = sorted(pods, key=lambda p: (_created(p), _name(p)), reverse=True)
    return sorted(newest_first, key=pod_ready)


@dataclass
class Plan:
    create: int = 0  # new pods from the current template
    delete: list[str] = field(default_factory=list)  # pod names
    status: dict[str, Any] = field(default_factory=dict)
    template_hash: str = ""

    @property
    def done(self) -> bool:
        return self.create == 0 and not self.delete


def _condition(kind: str, ok: bool, reason: str, message: str, now: str,
               previous: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A condition; an unchanged one keeps its times, so a steady state writes nothing."""
    status = "True" if ok else "False"
    before = next((c for c in previous if c.get("type") == kind), None)
    if before and (before.get("status"), before.get("reason"), before.get("message")) == (status, reason, message):
        return dict(before)
    transition = before.get("lastTransitionTime", now) if before and before.get("status") == status else now
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastUpdateTime": now, "lastTransitionTime": transition}


def plan(deployment: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], *, now: str) -> Plan:
    """The next step for `deployment` given the pods it owns (those not being deleted)."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    desired = int(spec.get("replicas", 1))
    h = template_hash(spec.get("template") or {})
    new = [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(HASH_LABEL) == h]
    old = [p for p in pods if p not in new]
    strategy = spec.get("strategy") or {}
    out = Plan(template_hash=h)

    if spec.get("paused"):
        pass
    elif strategy.get("type") == "Recreate":
        if old:
            out.delete = [_name(p) for p in old]
        elif len(new) < desired:
            out.create = desired - len(new)
        elif len(new) > desired:
            out.delete = [_name(p) for p in _deletion_order(new)[: len(new) - desired]]
    else:
        ru = strategy.get("rollingUpdate") or {}
        surge = resolve_int_or_percent(ru.get("maxSurge", "25%"), desired, round_up=True)
        unavailable = resolve_int_or_percent(ru.get("maxUnavailable", "25%"), desired, round_up=False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        if not old:
            if len(new) < desired:
                out.create = desired - len(new)
            elif len(new) > desired:
                out.delete = [_name(p) for p in _deletion_order(new)[: len(new) - desired]]
        else:
            total = len(new) + len(old)
            room = desired + surge - total
            want_new = desired - len(new)
            out.create = max(0, min(room, want_new))
            # Scale the old pods down while enough stay available (Kubernetes'
            # cleanupUnhealthyReplicas + scaleDownOldReplicaSetsForRollingUpdate).
            ready_all = sum(1 for p in pods if pod_ready(p))
            min_available = max(0, desired - unavailable)
            new_unavailable = sum(1 for p in new if not pod_ready(p))
            budget = total - min_available - new_unavailable
            ready_budget = max(0, ready_all - min_available)
            for p in _deletion_order(old):
                if budget <= 0:
                    break
                if pod_ready(p):
                    if ready_budget <= 0:
                        continue
                    ready_budget -= 1
                out.delete.append(_name(p))
                budget -= 1

    ready_all = sum(1 for p in pods if pod_ready(p))
    ready_new = sum(1 for p in new if pod_ready(p))
    ru = strategy.get("rollingUpdate") or {}
    max_unavailable = resolve_int_or_percent(ru.get("maxUnavailable", "25%"), desired, round_up=False)
    available_ok = ready_all >= max(0, desired - max_unavailable)
    complete = len(new) == desired and not old and ready_new == desired
    prev_conditions = (deployment.get("status") or {}).get("conditions") or []
    name = meta.get("name", "")
    status: dict[str, Any] = {
        "observedGeneration": meta.get("generation", 1),
        "replicas": len(pods),
        "updatedReplicas": len(new),
        "readyReplicas": ready_all,
        "availableReplicas": ready_all,
        "unavailableReplicas": max(0, desired - ready_all),
        "conditions": [
            _condition("Available", available_ok,
                       "MinimumReplicasAvailable" if available_ok else "MinimumReplicasUnavailable",
                       "Deployment has minimum availability." if available_ok else
                       "Deployment does not have minimum availability.", now, prev_conditions),
            _condition("Progressing", True,
                       "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                       f'Pods of template "{name}-{h}" have successfully progressed.' if complete else
                       f'Pods of template "{name}-{h}" are progressing.', now, prev_conditions),
        ],
    }
    out.status = status
    return out


def new_pod(deployment: Mapping[str, Any], template_hash_value: str, suffix: str) -> dict[str, Any]:
    """A Pod object for the deployment's current template (name `<deployment>-<hash>-<suffix>`)."""
    meta = deployment.get("metadata") or {}
    template = json.loads(json.dumps((deployment.get("spec") or {}).get("template") or {}))
    tmeta = template.get("metadata") or {}
    labels = dict(tmeta.get("labels") or {})
    labels[HASH_LABEL] = template_hash_value
    name = f"{meta.get('name')}-{template_hash_value[:8]}-{suffix}"
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": meta.get("namespace"), "labels": labels,
            **({"annotations": tmeta["annotations"]} if tmeta.get("annotations") else {}),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": meta.get("name"),
                                 "uid": meta.get("uid"), "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": template.get("spec") or {},
    }

"""The Deployment controller's decisions and the Endpoints computation (pure)."""

from __future__ import annotations

from typing import Any

from isthmus.core import deployments as d
from isthmus.core.endpoints import endpoints_for

NOW = "2026-11-26T10:00:00Z"


def deployment(replicas: int = 3, env: str = "1", **strategy: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "e", "uid": "u1", "generation": 2},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": strategy} if strategy else {},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "env": [{"name": "X", "value": env}]}]}}}}


def pods_of(dep: dict[str, Any], n: int, *, ready: bool = True, prefix: str = "p", created: str = NOW) -> list[dict[str, Any]]:
    h = d.template_hash(dep["spec"]["template"])
    return [{"metadata": {"name": f"{prefix}{i}", "labels": {"app": "web", d.HASH_LABEL: h},
                          "creationTimestamp": created},
             "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
            for i in range(n)]


def test_scale_up_and_down() -> None:
    dep = deployment(3)
    assert d.plan(dep, [], now=NOW).create == 3
    p = d.plan(dep, pods_of(dep, 5), now=NOW)
    assert p.create == 0 and len(p.delete) == 2


def test_scale_down_removes_unready_first() -> None:
    dep = deployment(2)
    pods = pods_of(dep, 2) + pods_of(dep, 1, ready=False, prefix="slow")
    assert d.plan(dep, pods, now=NOW).delete == ["slow0"]


def test_rolling_update_surges_then_retires_old_pods() -> None:
    old_dep = deployment(4, env="1")
    new_dep = deployment(4, env="2")
    old = pods_of(old_dep, 4, prefix="old")
    p = d.plan(new_dep, old, now=NOW)
    # maxSurge 25% of 4 = 1 new pod; maxUnavailable 25% = 1 old pod may go.
    assert p.create == 1 and len(p.delete) == 1
    new = pods_of(new_dep, 4, prefix="new")
    done = d.plan(new_dep, new, now=NOW)
    assert done.done
    assert done.status["updatedReplicas"] == 4 and done.status["availableReplicas"] == 4
    progressing = next(c for c in done.status["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "NewReplicaSetAvailable"


def test_rollout_with_one_replica_keeps_it_until_the_new_one_is_ready() -> None:
    old_dep, new_dep = deployment(1, env="1"), deployment(1, env="2")
    old = pods_of(old_dep, 1, prefix="old")
    first = d.plan(new_dep, old, now=NOW)
    assert first.create == 1 and first.delete == []  # 25% of 1 rounds down to 0 unavailable
    unready_new = pods_of(new_dep, 1, ready=False, prefix="new")
    assert d.plan(new_dep, old + unready_new, now=NOW).delete == []
    ready_new = pods_of(new_dep, 1, prefix="new")
    assert d.plan(new_dep, old + ready_new, now=NOW).delete == ["old0"]


def test_status_is_stable_when_nothing_changes() -> None:
    dep = deployment(2)
    pods = pods_of(dep, 2)
    first = d.plan(dep, pods, now=NOW).status
    again = d.plan({**dep, "status": first}, pods, now="2026-11-26T11:00:00Z").status
    assert again == first
    assert first["observedGeneration"] == 2 and first["readyReplicas"] == 2


def test_new_pod_carries_hash_owner_and_template() -> None:
    dep = deployment(1)
    pod = d.new_pod(dep, "abcdef1234", "x1y2z")
    assert pod["metadata"]["name"] == "web-abcdef12-x1y2z"
    assert pod["metadata"]["labels"] == {"app": "web", d.HASH_LABEL: "abcdef1234"}
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert pod["spec"]["containers"][0]["env"] == [{"name": "X", "value": "1"}]


def test_endpoints_ready_and_not_ready_with_named_ports() -> None:
    svc = {"metadata": {"name": "web-svc", "namespace": "e"},
           "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}

    def pod(name: str, ip: str, ready: bool, labels: dict[str, str] | None = None) -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": "e", "uid": name, "labels": labels or {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"podIP": ip, "phase": "Running",
                           "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}

    eps = endpoints_for(svc, [pod("b", "127.1.64.3", True), pod("a", "127.1.64.2", False),
                              pod("other", "127.1.64.9", True, {"app": "x"})])
    assert eps["subsets"] == [{
        "addresses": [{"ip": "127.1.64.3", "targetRef": {"kind": "Pod", "namespace": "e", "name": "b", "uid": "b"},
                       "nodeName": "n1"}],
        "notReadyAddresses": [{"ip": "127.1.64.2", "targetRef": {"kind": "Pod", "namespace": "e", "name": "a",
                                                                  "uid": "a"}, "nodeName": "n1"}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]
    no_selector = {"metadata": {"name": "x", "namespace": "e"}, "spec": {"ports": [{"port": 80}]}}
    assert endpoints_for(no_selector, [pod("b", "127.1.64.3", True)])["subsets"] == []

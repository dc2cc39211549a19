"""Server-side printing: columns and cells as kubectl users know them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from isthmus.resources.registry import BUILTIN, ResourceType, from_crd
from isthmus.resources.tables import (
    column_definitions,
    format_endpoints,
    format_label_selector,
    human_duration,
    jsonpath_first,
    to_table,
)

NOW = datetime(2025, 1, 10, 12, 0, 0, tzinfo=UTC)
T = {(t.group, t.kind): t for t in BUILTIN}


def meta(name: str, created: str = "2025-01-10T11:57:57Z", **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": "default", "uid": f"uid-{name}", "resourceVersion": "7",
            "creationTimestamp": created, **extra}


def cells(rt: ResourceType, objects: list[dict[str, Any]]) -> list[list[Any]]:
    return [row["cells"] for row in to_table(rt, objects, NOW)["rows"]]


def header(rt: ResourceType, wide: bool = False) -> list[str]:
    return [c["name"] for c in column_definitions(rt) if wide or c["priority"] == 0]


@pytest.mark.parametrize(("seconds", "text"), [
    (-5, "<invalid>"), (-1.5, "0s"), (0, "0s"), (5, "5s"), (119, "119s"), (120, "2m"), (123, "2m3s"),
    (9 * 60 + 59, "9m59s"), (600, "10m"), (179 * 60 + 59, "179m"), (3 * 3600, "3h"), (3 * 3600 + 4 * 60, "3h4m"),
    (7 * 3600 + 59 * 60, "7h59m"), (8 * 3600, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"),
    (2 * 86400 + 3 * 3600, "2d3h"), (7 * 86400 + 23 * 3600, "7d23h"), (8 * 86400, "8d"), (25 * 86400, "25d"),
    (729 * 86400, "729d"), (730 * 86400, "2y"), (730 * 86400 + 45 * 86400, "2y45d"), (8 * 365 * 86400, "8y"),
    (20 * 365 * 86400 + 40 * 86400, "20y"),
])
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text
    assert human_duration(timedelta(seconds=seconds)) == text


def test_pod_table() -> None:
    pods = [
        {"metadata": meta("web-1"),
         "spec": {"nodeName": "node-a", "containers": [{"name": "web"}, {"name": "side"}]},
         "status": {"phase": "Running", "podIPs": [{"ip": "127.1.64.2"}],
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [
                        {"name": "web", "ready": True, "restartCount": 0, "state": {"running": {}}},
                        {"name": "side", "ready": True, "restartCount": 2, "state": {"running": {}},
                         "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2025-01-10T11:55:00Z"}}}]}},
        {"metadata": meta("web-2", "2025-01-08T09:00:00Z"),
         "spec": {"containers": [{"name": "web"}]},
         "status": {"phase": "Pending", "containerStatuses": [
             {"name": "web", "ready": False, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}},
        {"metadata": meta("web-3", "2025-01-10T08:00:00Z", deletionTimestamp="2025-01-10T11:59:00Z"),
         "spec": {"containers": [{"name": "web"}], "readinessGates": [{"conditionType": "mesh/ready"}]},
         "status": {"phase": "Running", "conditions": [{"type": "mesh/ready", "status": "True"}],
                    "containerStatuses": [{"name": "web", "ready": True, "state": {"running": {}}}]}},
        {"metadata": meta("job", "2025-01-09T12:00:00Z"),
         "spec": {"containers": [{"name": "main"}]},
         "status": {"phase": "Succeeded", "containerStatuses": [
             {"name": "main", "ready": False, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}},
        {"metadata": meta("init"),
         "spec": {"initContainers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "main"}]},
         "status": {"phase": "Pending", "initContainerStatuses": [
             {"name": "a", "state": {"terminated": {"exitCode": 0}}},
             {"name": "b", "state": {"running": {}}}]}},
        {"metadata": meta("crash"),
         "spec": {"containers": [{"name": "main"}]},
         "status": {"phase": "Running", "containerStatuses": [
             {"name": "main", "restartCount": 4, "state": {"terminated": {"exitCode": 137}}}]}},
    ]
    rt = T[("", "Pod")]
    assert header(rt) == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert header(rt, wide=True)[5:] == ["IP", "Node", "Nominated Node", "Readiness Gates"]
    assert cells(rt, pods) == [
        ["web-1", "2/2", "Running", "2 (5m ago)", "2m3s", "127.1.64.2", "node-a", "<none>", "<none>"],
        ["web-2", "0/1", "ImagePullBackOff", "0", "2d3h", "<none>", "<none>", "<none>", "<none>"],
        ["web-3", "1/1", "Terminating", "0", "4h", "<none>", "<none>", "<none>", "1/1"],
        ["job", "0/1", "Completed", "0", "24h", "<none>", "<none>", "<none>", "<none>"],
        ["init", "0/1", "Init:1/2", "0", "2m3s", "<none>", "<none>", "<none>", "<none>"],
        ["crash", "0/1", "ExitCode:137", "4", "2m3s", "<none>", "<none>", "<none>", "<none>"],
    ]
    table = to_table(rt, pods, NOW)
    assert table["rows"][3]["conditions"] == [{"type": "Completed", "status": "True", "reason": "Succeeded",
                                               "message": "The pod has completed successfully."}]
    assert "conditions" not in table["rows"][0]


def test_service_table() -> None:
    services = [
        {"metadata": meta("web", "2025-01-10T11:50:00Z"),
         "spec": {"type": "ClusterIP", "clusterIPs": ["10.96.0.10"], "selector": {"tier": "fe", "app": "web"},
                  "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]}},
        {"metadata": meta("gw", "2025-01-09T10:00:00Z"),
         "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.11",
                  "ports": [{"port": 15443, "protocol": "TCP", "nodePort": 30443},
                            {"port": 53, "protocol": "UDP", "nodePort": 30053}]},
         "status": {"loadBalancer": {}}},
        {"metadata": meta("gw2", "2025-01-09T10:00:00Z"),
         "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.12"], "ports": [{"port": 80, "nodePort": 30080}]},
         "status": {"loadBalancer": {"ingress": [{"ip": "127.1.0.9"}, {"hostname": "gw.example"}]}}},
        {"metadata": meta("ext"), "spec": {"type": "ExternalName", "externalName": "db.example"}},
    ]
    rt = T[("", "Service")]
    assert header(rt, wide=True) == ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"]
    assert cells(rt, services) == [
        ["web", "ClusterIP", "10.96.0.10", "<none>", "80/TCP", "10m", "app=web,tier=fe"],
        ["gw", "LoadBalancer", "10.96.0.11", "<pending>", "15443:30443/TCP,53:30053/UDP", "26h", "<none>"],
        ["gw2", "LoadBalancer", "10.96.0.12", "127.1.0.9,gw.example", "80:30080/TCP", "26h", "<none>"],
        ["ext", "ExternalName", "<none>", "db.example", "<none>", "2m3s", "<none>"],
    ]


def test_deployment_table() -> None:
    dep = {"metadata": meta("web", "2024-12-16T12:00:00Z"),
           "spec": {"replicas": 3,
                    "selector": {"matchLabels": {"app": "web"},
                                 "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}]},
                    "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"},
                                                         {"name": "side", "image": "envoy:1.30"}]}}},
           "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    rt = T[("apps", "Deployment")]
    assert header(rt) == ["Name", "Ready", "Up-to-date", "Available", "Age"]
    assert cells(rt, [dep]) == [["web", "2/3", 3, 2, "25d", "web,side", "nginx:1.27,envoy:1.30",
                                 "app=web,tier in (be,fe)"]]


def test_endpoints_show_at_most_three() -> None:
    ep = {"metadata": meta("web"), "subsets": [
        {"addresses": [{"ip": "127.1.64.2"}, {"ip": "127.1.64.3"}, {"ip": "127.1.64.4"}],
         "ports": [{"port": 8080}]},
        {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 9090}]}]}
    assert format_endpoints(ep) == "127.1.64.2:8080,127.1.64.3:8080,127.1.64.4:8080 + 1 more..."
    assert format_endpoints({"subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]}) == "[fd00::1]:80"
    assert format_endpoints({"subsets": []}) == "<none>"
    assert cells(T[("", "Endpoints")], [ep])[0][0] == "web"


def test_other_builtin_tables() -> None:
    node = {"metadata": meta("node-a", labels={"node-role.kubernetes.io/control-plane": "",
                                               "node-role.kubernetes.io/worker": ""}),
            "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "127.1.0.2"}],
                       "nodeInfo": {"kubeletVersion": "v1.32.0-isthmus", "osImage": "Linux"}}}
    assert cells(T[("", "Node")], [node]) == [[
        "node-a", "Ready,SchedulingDisabled", "control-plane,worker", "2m3s", "v1.32.0-isthmus",
        "127.1.0.2", "<none>", "Linux", "<unknown>", "<unknown>"]]
    assert cells(T[("", "Namespace")], [{"metadata": meta("default"), "status": {"phase": "Active"}}]) == [
        ["default", "Active", "2m3s"]]
    assert cells(T[("", "ConfigMap")], [{"metadata": meta("cm"), "data": {"a": "1"}, "binaryData": {"b": ""}}]) == [
        ["cm", 2, "2m3s"]]
    assert cells(T[("", "Secret")], [{"metadata": meta("s"), "type": "Opaque", "data": {"a": "MQ=="}}]) == [
        ["s", "Opaque", 1, "2m3s"]]
    assert cells(T[("", "ServiceAccount")], [{"metadata": meta("default")}]) == [["default", 0, "2m3s"]]
    assert cells(T[("coordination.k8s.io", "Lease")],
                 [{"metadata": meta("leader"), "spec": {"holderIdentity": "node-a"}}]) == [
        ["leader", "node-a", "2m3s"]]
    binding = {"metadata": meta("rb"), "roleRef": {"kind": "ClusterRole", "name": "view"},
               "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
                            {"kind": "ServiceAccount", "namespace": "default", "name": "bot"}]}
    rt = T[("rbac.authorization.k8s.io", "RoleBinding")]
    assert header(rt, wide=True) == ["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"]
    assert cells(rt, [binding]) == [["rb", "ClusterRole/view", "2m3s", "alice", "devs", "default/bot"]]
    role = T[("rbac.authorization.k8s.io", "Role")]
    assert header(role) == ["Name", "Created At"]
    assert column_definitions(role)[1]["type"] == "date"
    assert cells(role, [{"metadata": meta("r", "2025-01-10T13:57:57+02:00")}]) == [["r", "2025-01-10T11:57:57Z"]]
    crd = T[("apiextensions.k8s.io", "CustomResourceDefinition")]
    assert header(crd) == ["Name", "Created At"]


def test_event_table() -> None:
    ev = {"metadata": meta("web.1"), "type": "Warning", "reason": "BackOff", "message": " Back-off pulling \n",
          "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{web}"},
          "source": {"component": "kubelet", "host": "node-a"},
          "firstTimestamp": "2025-01-10T11:00:00Z", "lastTimestamp": "2025-01-10T11:59:30Z", "count": 5}
    rt = T[("", "Event")]
    assert header(rt) == ["Last Seen", "Type", "Reason", "Object", "Message"]
    assert cells(rt, [ev]) == [["30s", "Warning", "BackOff", "pod/web-1", "spec.containers{web}",
                                "kubelet, node-a", "Back-off pulling", "60m", 5, "web.1"]]
    new_style = {"metadata": meta("e2"), "type": "Normal", "reason": "Scheduled", "message": "ok",
                 "involvedObject": {"kind": "Pod", "name": "p"}, "eventTime": "2025-01-10T11:59:50.000000Z",
                 "reportingComponent": "isthmus-scheduler"}
    assert cells(rt, [new_style])[0][:9] == ["10s", "Normal", "Scheduled", "pod/p", "", "isthmus-scheduler",
                                             "ok", "10s", 1]


def link_type(columns: list[dict[str, Any]] | None) -> ResourceType:
    version: dict[str, Any] = {"name": "v1alpha1", "served": True}
    if columns is not None:
        version["additionalPrinterColumns"] = columns
    crd = {"metadata": {"name": "links.mesh.isthmus.dev"},
           "spec": {"group": "mesh.isthmus.dev", "names": {"plural": "links", "kind": "Link"}, "versions": [version]}}
    return from_crd(crd)[0]


LINK = {"apiVersion": "mesh.isthmus.dev/v1alpha1", "kind": "Link",
        "metadata": meta("west", "2025-01-10T10:00:00Z"),
        "spec": {"peer": "west", "gatewayPort": 15443, "tls": True, "weights": [3, 4]},
        "status": {"conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}]}}


def test_custom_resource_printer_columns() -> None:
    rt = link_type([
        {"name": "Peer", "type": "string", "jsonPath": ".spec.peer"},
        {"name": "Port", "type": "integer", "jsonPath": ".spec.gatewayPort", "priority": 1},
        {"name": "TLS", "type": "boolean", "jsonPath": ".spec.tls"},
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "First", "type": "string", "jsonPath": ".spec.weights[0]"},
        {"name": "Missing", "type": "string", "jsonPath": ".spec.nothing"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ])
    table = to_table(rt, [LINK], NOW)
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name", "Peer", "Port", "TLS", "Ready", "First", "Missing", "Age"]
    assert table["columnDefinitions"][2]["priority"] == 1
    assert table["columnDefinitions"][1]["description"] == (
        "Custom resource definition column (in JSONPath format): .spec.peer")
    assert table["rows"][0]["cells"] == ["west", "west", 15443, True, "True", "3", None, "120m"]


def test_custom_resource_without_printer_columns() -> None:
    table = to_table(link_type(None), [LINK], NOW)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Age"]
    assert table["columnDefinitions"][1]["type"] == "date"
    assert table["rows"][0]["cells"] == ["west", "120m"]


def test_jsonpath_subset() -> None:
    assert jsonpath_first(LINK, ".spec.peer") == (True, "west")
    assert jsonpath_first(LINK, "{.spec.weights[-1]}") == (True, 4)
    assert jsonpath_first(LINK, ".status.conditions[*].type") == (True, "Synced")
    assert jsonpath_first(LINK, ".status.conditions[?(@.status!='True')].type") == (True, "Synced")
    assert jsonpath_first(LINK, ".metadata['name']") == (True, "west")
    assert jsonpath_first(LINK, ".spec.nope") == (False, None)
    assert jsonpath_first(LINK, "not a path") == (False, None)


def test_table_object_modes() -> None:
    rt = T[("", "ConfigMap")]
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("cm"), "data": {"a": "1"}}
    table = to_table(rt, [cm], NOW, resource_version="42")
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert table["metadata"] == {"resourceVersion": "42"}
    assert table["rows"][0]["object"] == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                          "metadata": cm["metadata"]}
    assert to_table(rt, [cm], NOW, include_object="Object")["rows"][0]["object"] is cm
    assert "object" not in to_table(rt, [cm], NOW, include_object="None")["rows"][0]
    col = table["columnDefinitions"][0]
    assert col == {"name": "Name", "type": "string", "format": "name", "description": col["description"],
                   "priority": 0}
    assert col["description"].startswith("Name must be unique within a namespace.")


def test_label_selector_formatting() -> None:
    assert format_label_selector({"matchLabels": {"b": "2", "a": "1"}}) == "a=1,b=2"
    assert format_label_selector({"matchExpressions": [
        {"key": "x", "operator": "Exists"}, {"key": "w", "operator": "DoesNotExist"},
        {"key": "y", "operator": "NotIn", "values": ["2", "1"]}]}) == "!w,x,y notin (1,2)"
    assert format_label_selector(None) == ""

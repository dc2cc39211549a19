"""`isthmus multicluster check`'s judgements (`isthmus.core.mccheck`), on plain objects."""

from __future__ import annotations

from typing import Any

from isthmus.core import mccheck
from isthmus.core.checks import Status, pod_facts

GW_ID = "isthmus-gateway.isthmus-multicluster.serviceaccount.identity.isthmus.cluster.local"
LABEL = "multicluster.isthmus.io/link"


def link(name: str, target: str | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "isthmus-multicluster"},
            "spec": {"targetClusterName": target or name, "gatewayAddress": "127.2.192.1",
                     "gatewayIdentity": GW_ID, **spec}}


def mirrored(name: str, cluster: str, ns: str = "emojivoto") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "labels": {
        "mirror.isthmus.io/mirrored-service": "true", "mirror.isthmus.io/cluster-name": cluster}}}


def pod(name: str, link_name: str, *, ready: bool = True, phase: str = "Running") -> Any:
    return pod_facts({"metadata": {"name": name, "namespace": "isthmus-multicluster", "labels": {LABEL: link_name}},
                      "spec": {"containers": [{"name": "service-mirror"}]},
                      "status": {"phase": phase, "containerStatuses": [
                          {"name": "service-mirror", "ready": ready,
                           "state": {"running": {}} if ready else {"waiting": {"reason": "CrashLoopBackOff"}}}]}})


def test_links_that_do_not_parse_or_name_no_identity_are_named_and_the_others_kept() -> None:
    parsed = mccheck.parse_links([
        link("east"), link("bad", probeSpec={"period": "soon"}), link("noid", gatewayIdentity="gateway")])
    assert sorted(parsed.valid) == ["east"]
    assert "spec.probeSpec.period" in parsed.problems["bad"]
    assert parsed.problems["noid"].startswith("spec.gatewayIdentity 'gateway' is not a workload identity")
    outcome = mccheck.per_link(parsed.problems)
    assert outcome.status is Status.ERROR
    assert [line.split(":")[0] for line in outcome.cause.splitlines()] == ["link bad", "link noid"]


def test_two_links_to_one_cluster_are_both_reported_and_both_still_checked() -> None:
    parsed = mccheck.parse_links([link("east"), link("east-again", target="east")])
    assert sorted(parsed.valid) == ["east", "east-again"]
    assert parsed.problems["east"] == parsed.problems["east-again"] == (
        "Links east, east-again all target cluster 'east' and would fight over its mirrors "
        "(<service>-east): keep one")


def test_mirror_controllers_each_link_needs_a_deployment_with_a_ready_pod() -> None:
    links = mccheck.parse_links([link("east"), link("north"), link("south"), link("west")]).valid
    deployments = {"east": {"metadata": {"name": "isthmus-service-mirror-east", "namespace": "mc"}, "spec": {}},
                   "north": {"metadata": {"name": "isthmus-service-mirror-north", "namespace": "mc"},
                             "spec": {"replicas": 0}},
                   "south": {"metadata": {"name": "isthmus-service-mirror-south", "namespace": "mc"}, "spec": {}},
                   "west": None}
    pods = [pod("m-east", "east"), pod("m-south", "south", ready=False)]
    outcome = mccheck.mirror_controllers_running(links, deployments, pods, link_label=LABEL)
    assert outcome.cause.splitlines() == [
        "link north: its service mirror Deployment mc/isthmus-service-mirror-north is scaled to 0",
        "link south: pod isthmus-multicluster/m-south is not ready: container service-mirror waiting: "
        "CrashLoopBackOff",
        "link west: its service mirror Deployment does not exist",
    ]
    ok = mccheck.mirror_controllers_running({"east": links["east"]}, deployments, pods, link_label=LABEL)
    assert ok.status is Status.SUCCESS


def test_mirrors_without_ready_endpoints_say_why_from_the_links_status() -> None:
    services = [mirrored("web-svc-east", "east"), mirrored("db-east", "east"), mirrored("up-east", "east"),
                mirrored("gone-east", "east")]
    gateway = {"subsets": [{"notReadyAddresses": [{"ip": "127.2.192.1"}]}]}
    endpoints: dict[tuple[str, str], Any] = {
        ("emojivoto", "web-svc-east"): {"subsets": []}, ("emojivoto", "db-east"): gateway,
        ("emojivoto", "up-east"): {"subsets": [{"addresses": [{"ip": "127.2.192.1"}]}]},
        ("emojivoto", "gone-east"): None}
    statuses = {"east": {"mirroredServices": [{"namespace": "emojivoto", "mirroredName": "web-svc-east",
                                               "conditions": [{"type": "EndpointsReady", "status": "False",
                                                               "reason": "NoRemoteEndpoints",
                                                               "message": "web-svc has no ready endpoints"}]}]}}
    outcome = mccheck.mirrors_have_endpoints(services, endpoints, statuses)
    assert outcome.cause.splitlines() == [
        "emojivoto/db-east has only not-ready endpoints (the gateway fails its probes)",
        "emojivoto/gone-east has no Endpoints",
        "emojivoto/web-svc-east has no endpoints (NoRemoteEndpoints: web-svc has no ready endpoints)",
    ]


def test_mirrors_of_clusters_no_link_targets_are_orphans() -> None:
    links = mccheck.parse_links([link("east")]).valid
    services = [mirrored("web-svc-east", "east"), mirrored("web-svc-south", "south"), mirrored("x-bad", "bad")]
    outcome = mccheck.mirrors_belong_to_links(services, links, invalid=["bad"])
    assert outcome.cause == "emojivoto/web-svc-south mirrors a service of cluster 'south', which no Link targets"
    assert mccheck.mirrors_belong_to_links(services[:1], links).status is Status.SUCCESS


def test_gateway_liveness_from_the_metrics_with_the_reason_from_the_links_status() -> None:
    down = {"conditions": [{"type": "GatewayAlive", "status": "False", "reason": "ProbeFailed",
                            "message": "gateway 127.2.192.1 failed 3 probes in a row; the last: answered 503"}]}
    up = {"conditions": [{"type": "GatewayAlive", "status": "True", "reason": "Alive", "message": "fine"}]}
    assert mccheck.gateway_view(1.0, down) == mccheck.GatewayView(True)
    assert mccheck.gateway_view(0.0, down) == mccheck.GatewayView(
        False, "gateway 127.2.192.1 failed 3 probes in a row; the last: answered 503")
    assert mccheck.gateway_view(0.0, up).reason.startswith("the mirror's gateway_alive is 0")
    # No metrics (mirror not reachable): the Link's status decides.
    assert mccheck.gateway_view(None, down) == mccheck.GatewayView(
        False, "ProbeFailed: gateway 127.2.192.1 failed 3 probes in a row; the last: answered 503")
    assert mccheck.gateway_view(None, up) == mccheck.GatewayView(True)
    assert mccheck.gateway_view(None, None).alive is None
    outcome = mccheck.gateways_alive({"east": mccheck.gateway_view(0.0, down), "west": mccheck.GatewayView(True),
                                      "north": mccheck.gateway_view(None, {})})
    assert outcome.cause.splitlines() == [
        "link east: gateway not alive: gateway 127.2.192.1 failed 3 probes in a row; the last: answered 503",
        "link north: the Link's status says nothing of its gateway and its service mirror's metrics could not be "
        "read: is the service mirror running?",
    ]

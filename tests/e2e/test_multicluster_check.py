"""`isthmus multicluster check` and the walkthrough on two embedded clusters, with the real kubectl.

The walkthrough's setup, once for the module (it is the expensive part):
west (sfo3) and east (syd1), one node each, one trust anchor with an
issuer per cluster, the control plane and `multicluster install` on both,
emojivoto meshed on both (east's vote-bot scaled to 0, so east's votes are
west's), `multicluster link --cluster-name east` applied to west (the
service mirror runs as its pod), `web-svc` exported from east with
`kubectl label`, and west's vote-bot pointed at `web-svc-east`.

Each test starts by waiting for every check to pass (`--wait`), breaks one
thing, reads the check's line (`-o json`, `--wait 0`), puts the thing back,
and waits for the checks to pass again: the tests do not depend on each
other's order.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from typer.testing import CliRunner

from isthmus.cli.multicluster import multicluster_app
from isthmus.components import cluster as clusters
from tests.support.waiting import wait_until

from .conftest import FIRST_CLUSTER, Cluster

pytestmark = pytest.mark.e2e

T = TypeVar("T")
MC = "isthmus-multicluster"
EMOJIVOTO = Path(__file__).resolve().parents[2] / "deploy" / "emojivoto.yml"
# This module's two clusters take numbers apart from conftest's (which start at FIRST_CLUSTER).
PAIR_FIRST = str(int(FIRST_CLUSTER) + 10)


class PairCluster(Cluster):
    def env(self) -> dict[str, str]:
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig), ISTHMUS_HOME=str(self.home),
                    ISTHMUS_FIRST_CLUSTER_NUMBER=PAIR_FIRST, ISTHMUS_RESTART_BACKOFF="1")



class Pair:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.west = PairCluster("west", home, home / "kubeconfig")
        self.east = PairCluster("east", home, home / "kubeconfig")

    def both(self) -> tuple[PairCluster, PairCluster]:
        return self.west, self.east

    def check(self, wait: str = "0") -> tuple[int, dict[str, tuple[str, str]]]:
        """`isthmus --context=west multicluster check -o json`: exit status, description -> (result, error).

        Run in this process (the command's own code, through typer): starting the CLI costs seconds
        each time, and the tests run it often. `test_check_stops_at_a_cluster_without_the_link_crd`
        runs the real executable."""
        runner = CliRunner(env={"KUBECONFIG": str(self.west.kubeconfig), "ISTHMUS_HOME": str(self.home)})
        result = runner.invoke(multicluster_app, ["check", "-o", "json", "--wait", wait], obj={"context": "west"})
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        report = json.loads(result.stdout)
        lines = {c["description"]: (c["result"], c["error"]) for cat in report["categories"] for c in cat["checks"]}
        return result.exit_code, lines

    def green(self) -> None:
        """Every check passes (what settles is waited for; a warning — a gateway not answering yet — too)."""
        deadline = time.monotonic() + 150
        while True:
            _, lines = self.check(wait="60s")
            if all(result == "success" for result, _ in lines.values()):
                return
            assert time.monotonic() < deadline, {k: v for k, v in lines.items() if v[0] != "success"}
            time.sleep(1)

    def failing(self, description: str) -> str:
        code, lines = self.check()
        assert code == 1
        result, error = lines[description]
        assert result == "error", lines
        return error

    def link_condition(self, type_: str) -> dict[str, Any]:
        link = self.west.kjson("-n", MC, "get", "link", "east")
        return next((c for c in link.get("status", {}).get("conditions", []) if c["type"] == type_), {})

    def link(self) -> None:
        self.west.kubectl("apply", "-f", "-", input=self.east.isthmus(
            "--context=east", "multicluster", "link", "--cluster-name", "east").stdout)

    def mirror_endpoints(self) -> dict[str, Any]:
        return dict(self.west.kjson("-n", "emojivoto", "get", "endpoints", "web-svc-east"))


def pod_ip(c: Cluster, ns: str, app: str) -> str:
    def ready_ip() -> str | None:
        for p in c.kjson("-n", ns, "get", "pods", "-l", f"app={app}")["items"]:
            if p["metadata"].get("deletionTimestamp") is None and all(
                    s.get("ready") for s in p["status"].get("containerStatuses", [{}])):
                return str(p["status"].get("podIP") or "") or None
        return None
    return wait_until(f"a ready {app} pod", ready_ip)


def http_get(url: str, timeout: float = 15) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as r:
        return str(r.read().decode())


def votes(c: Cluster) -> int:
    board = json.loads(http_get(f"http://{pod_ip(c, 'emojivoto', 'web')}:8080/api/leaderboard"))
    return sum(int(e["votes"]) for e in board)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    home = tmp_path_factory.mktemp("mcpair")
    p = Pair(home)
    try:
        p.west.isthmus("cluster", "create", "west", "--region", "sfo3", "--nodes", "1")
        p.east.isthmus("cluster", "create", "east", "--region", "syd1", "--nodes", "1")
        root, root_key = home / "root.crt", home / "root.key"
        p.west.isthmus("certs", "create", "root", str(root), str(root_key))
        for c in p.both():
            crt, key = home / f"issuer-{c.name}.crt", home / f"issuer-{c.name}.key"
            c.isthmus("certs", "create", "issuer", str(crt), str(key), "--ca", str(root), "--ca-key", str(root_key))
            c.kubectl("apply", "-f", "-", input=c.isthmus("install", "--crds").stdout)
            c.kubectl("apply", "-f", "-", input=c.isthmus(
                f"--context={c.name}", "install", "--identity-trust-anchors-file", str(root),
                "--identity-issuer-certificate-file", str(crt), "--identity-issuer-key-file", str(key)).stdout)
        for c in p.both():
            c.kubectl("-n", "isthmus", "wait", "--for=condition=Available", "deploy", "--all", "--timeout=150s",
                      timeout=180)
            c.kubectl("apply", "-f", "-", input=c.isthmus(f"--context={c.name}", "multicluster", "install").stdout)
            c.kubectl("apply", "-f", "-", input=c.isthmus("inject", str(EMOJIVOTO)).stdout)
        p.east.kubectl("-n", "emojivoto", "scale", "deploy/vote-bot", "--replicas=0")
        for c in p.both():
            c.kubectl("-n", MC, "rollout", "status", "deploy/isthmus-gateway", "--timeout=150s", timeout=180)
            c.kubectl("-n", "emojivoto", "wait", "--for=condition=Available", "deploy", "--all", "--timeout=150s",
                      timeout=180)
        wait_until("east's gateway address", lambda: p.east.kjson("-n", MC, "get", "svc", "isthmus-gateway")
                   .get("status", {}).get("loadBalancer", {}).get("ingress"))
        p.link()
        p.east.kubectl("-n", "emojivoto", "label", "svc", "web-svc", "mirror.isthmus.io/exported=true")
        p.west.kubectl("-n", "emojivoto", "set", "env", "deploy/vote-bot", "WEB_HOST=web-svc-east.emojivoto:80")
        yield p
    finally:
        for c in p.both():
            if c.dir.exists():
                clusters.stop(c.dir)


# --------------------------------------------------------------------------- the walkthrough


def test_west_votes_land_in_east_through_the_gateway_over_mtls(pair: Pair) -> None:
    p = pair
    p.green()
    ep = p.mirror_endpoints()
    gateway_lb = p.east.kjson("-n", MC, "get", "svc", "isthmus-gateway")["status"]["loadBalancer"]["ingress"][0]["ip"]
    assert [a["ip"] for s in ep["subsets"] for a in s["addresses"]] == [gateway_lb]
    assert {pt["port"] for s in ep["subsets"] for pt in s["ports"]} == {4143}

    p.west.kubectl("-n", "emojivoto", "rollout", "status", "deploy/vote-bot", "--timeout=120s", timeout=150)
    # Read through kubectl and the leaderboard (web asks voting through its proxy): a call that
    # fails on a loaded machine is tried again.
    def read_votes(c: Cluster) -> int:
        return wait_until(f"{c.name}'s leaderboard", lambda: (votes(c),), retry_on=(AssertionError, OSError))[0]

    east_before, west_before = read_votes(p.east), read_votes(p.west)
    wait_until("votes from west counted in east", lambda: votes(p.east) >= east_before + 5,
               retry_on=(AssertionError, OSError))
    assert votes(p.west) == west_before  # west's own voting service gets none

    bot = pod_ip(p.west, "emojivoto", "vote-bot")
    tap = http_get(f"http://{bot}:4191/tap?namespace=emojivoto&resource=deploy/vote-bot&max=2")
    reqs = [line for line in tap.splitlines() if line.startswith("req ")]
    assert reqs and all(f"dst={gateway_lb}:4143" in r and "tls=true" in r for r in reqs), tap
    assert all(":authority=web-svc-east.emojivoto.svc.cluster.local:80" in r for r in reqs), tap
    gateway = http_get(f"http://{pod_ip(p.east, MC, 'isthmus-gateway')}:4191/metrics")
    assert any(line.startswith("request_total{") and 'tls="true"' in line and "web-svc.emojivoto" in line
               for line in gateway.splitlines()), gateway


# --------------------------------------------------------------------------- each check failing


def test_check_names_the_link_whose_credentials_are_refused_and_passes_when_they_are_back(pair: Pair) -> None:
    p = pair
    p.green()
    secret = p.west.kjson("-n", MC, "get", "secret", "cluster-credentials-east")
    good = secret["data"]["kubeconfig"]
    config = yaml.safe_load(base64.b64decode(good))
    config["users"][0]["user"]["token"] = "not-a-token"
    bad = base64.b64encode(yaml.safe_dump(config).encode()).decode()
    uid = p.west.kjson("-n", "emojivoto", "get", "svc", "web-svc-east")["metadata"]["uid"]
    p.west.kubectl("-n", MC, "patch", "secret", "cluster-credentials-east", "--type=merge",
                   "-p", json.dumps({"data": {"kubeconfig": bad}}))
    try:
        error = p.failing("remote cluster access credentials are valid")
        assert error.startswith("link east: the remote API at https://") and "(401)" in error, error
        wait_until("the mirror's RemoteReachable Unauthorized",
                   lambda: p.link_condition("RemoteReachable").get("reason") == "Unauthorized")
        # Nothing was deleted: the mirror and its endpoints stay.
        assert p.west.kjson("-n", "emojivoto", "get", "svc", "web-svc-east")["metadata"]["uid"] == uid
        assert p.mirror_endpoints()["subsets"][0]["addresses"]
    finally:
        p.west.kubectl("-n", MC, "patch", "secret", "cluster-credentials-east", "--type=merge",
                       "-p", json.dumps({"data": {"kubeconfig": good}}))
    wait_until("the mirror's RemoteReachable True", lambda: p.link_condition("RemoteReachable").get("status") == "True")
    p.green()


def test_check_fails_when_the_clusters_do_not_share_a_trust_anchor(pair: Pair) -> None:
    p = pair
    p.green()
    roots = p.west.kjson("-n", "isthmus", "get", "configmap", "isthmus-identity-trust-roots")
    (key, original), = roots["data"].items()
    other = p.home / "other-root.crt"
    p.west.isthmus("certs", "create", "root", str(other), str(p.home / "other-root.key"))
    p.west.kubectl("-n", "isthmus", "patch", "configmap", "isthmus-identity-trust-roots", "--type=merge",
                   "-p", json.dumps({"data": {key: other.read_text()}}))
    try:
        error = p.failing("clusters share trust anchors")
        assert error.startswith("link east: the gateway at ") and "does not verify with this cluster's trust " \
            "anchors as isthmus-gateway.isthmus-multicluster.serviceaccount.identity.isthmus.cluster.local" in error
        assert "issued by CN=identity.isthmus.cluster.local" in error, error
    finally:
        p.west.kubectl("-n", "isthmus", "patch", "configmap", "isthmus-identity-trust-roots", "--type=merge",
                       "-p", json.dumps({"data": {key: original}}))
    p.green()


def test_check_fails_while_the_links_mirror_controller_is_not_running(pair: Pair) -> None:
    p = pair
    p.green()
    p.west.kubectl("-n", MC, "scale", "deploy/isthmus-service-mirror-east", "--replicas=0")
    try:
        error = p.failing("service mirror controllers are running")
        assert error == f"link east: its service mirror Deployment {MC}/isthmus-service-mirror-east is scaled to 0"
        p.west.kubectl("-n", MC, "delete", "deploy", "isthmus-service-mirror-east")
        error = p.failing("service mirror controllers are running")
        assert error == "link east: its service mirror Deployment does not exist"
    finally:
        p.link()  # puts the Deployment back
    p.green()


def test_check_says_why_a_stopped_gateway_is_not_alive_and_its_mirrors_lose_their_endpoints(pair: Pair) -> None:
    p = pair
    p.green()
    p.east.kubectl("-n", MC, "scale", "deploy/isthmus-gateway", "--replicas=0")
    try:
        # failureThreshold (3) probes, one every period (3s), and the mirror says so.
        wait_until("GatewayAlive False", lambda: p.link_condition("GatewayAlive").get("status") == "False")
        # the check reads the leading mirror's metrics, which can trail the Link's condition a little
        error = wait_until("the check to see the gateway down", lambda: p.failing("all gateways are alive"),
                           timeout=30, retry_on=(AssertionError,))
        assert error.startswith("link east: gateway not alive: gateway ") and "failed 3 probes in a row; the last: " \
            in error and ":4191/ready: " in error, error
        wait_until("the mirror's endpoints not ready", lambda: [
            a["ip"] for s in p.mirror_endpoints().get("subsets", []) for a in s.get("notReadyAddresses", [])])
        error = wait_until("the check to see not-ready endpoints",
                           lambda: p.failing("all mirror services have endpoints"),
                           timeout=30, retry_on=(AssertionError,))
        assert error.startswith("emojivoto/web-svc-east has only not-ready endpoints (the gateway fails its probes)")
        gateways = p.west.isthmus("--context=west", "multicluster", "gateways").stdout.splitlines()
        assert gateways[1].split()[:2] == ["east", "False"] and "failed 3 probes in a row" in gateways[2]
    finally:
        p.east.kubectl("-n", MC, "scale", "deploy/isthmus-gateway", "--replicas=1")
    p.green()


def test_check_fails_while_a_mirrored_service_has_no_endpoints_in_its_cluster(pair: Pair) -> None:
    p = pair
    p.green()
    p.east.kubectl("-n", "emojivoto", "scale", "deploy/web", "--replicas=0")
    try:
        wait_until("the mirror's endpoints emptied", lambda: not p.mirror_endpoints().get("subsets"))
        # the Link's status condition (the reason the check quotes) follows the Endpoints shortly
        error = wait_until("the check quoting the mirror's reason", lambda: next(
            (e for e in [p.failing("all mirror services have endpoints")] if "NoRemoteEndpoints" in e),
            None), timeout=30)
        assert error.startswith("emojivoto/web-svc-east has no endpoints (NoRemoteEndpoints: "), error
    finally:
        p.east.kubectl("-n", "emojivoto", "scale", "deploy/web", "--replicas=1")
    p.green()


def test_check_fails_for_an_invalid_link_and_a_mirror_no_link_owns(pair: Pair) -> None:
    p = pair
    p.green()
    labels = {"mirror.isthmus.io/mirrored-service": "true", "mirror.isthmus.io/cluster-name": "south"}
    p.west.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "ghost-south", "namespace": "emojivoto", "labels": labels},
         "spec": {"ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "multicluster.isthmus.io/v1alpha1", "kind": "Link",
         "metadata": {"name": "broken", "namespace": MC},
         "spec": {"targetClusterName": "north", "gatewayAddress": "127.0.0.9", "gatewayIdentity": "gateway"}},
    ]))
    try:
        code, lines = p.check()
        assert code == 1
        assert lines["Link resources are valid"] == ("error", (
            "link broken: spec.gatewayIdentity 'gateway' is not a workload identity (<serviceaccount>.<namespace>."
            "serviceaccount.identity.isthmus.<trust-domain>)"))
        assert lines["all mirror services are part of a Link"] == (
            "error", "emojivoto/ghost-south mirrors a service of cluster 'south', which no Link targets")
        assert lines["all mirror services have endpoints"] == ("error", "emojivoto/ghost-south has no Endpoints")
        # The valid Link is still checked.
        assert lines["remote cluster access credentials are valid"][0] == "success"
        assert lines["all gateways are alive"][0] == "success"
    finally:
        p.west.kubectl("-n", "emojivoto", "delete", "svc", "ghost-south")
        p.west.kubectl("-n", MC, "delete", "link", "broken")
    p.green()


def test_check_stops_at_a_cluster_without_the_link_crd(pair: Pair, west: Cluster) -> None:
    proc = west.isthmus("--context=west", "multicluster", "check", "--wait", "0", check=False)
    assert proc.returncode == 1
    assert ("\u00d7 Link CRD exists\n    the CustomResourceDefinition links.multicluster.isthmus.io does not exist\n"
            "    see: install the multicluster extension: `isthmus multicluster install | kubectl apply -f -`\n"
            ) in proc.stdout
    assert "credentials" not in proc.stdout  # fatal: nothing after it
    assert proc.stdout.endswith("Status check results are \u00d7\n")


def test_unlink_removes_everything_the_link_made_and_link_puts_it_back(pair: Pair) -> None:
    p = pair
    p.green()
    out = p.west.isthmus("--context=west", "multicluster", "unlink", "--cluster-name", "east").stdout
    p.west.kubectl("delete", "-f", "-", input=out)
    left = p.west.kubectl("get", "svc,endpoints,deploy,link,secret", "-A", "-o", "name",
                          "-l", "mirror.isthmus.io/cluster-name=east").stdout.split()
    assert left == []
    for kind, name in (("link", "east"), ("deploy", "isthmus-service-mirror-east"),
                       ("secret", "cluster-credentials-east")):
        assert p.west.kubectl("-n", MC, "get", kind, name, "--ignore-not-found", "-o", "name").stdout == ""
    p.green()  # no Link: nothing to complain of
    p.link()
    wait_until("web-svc-east mirrored again", lambda: p.west.kubectl(
        "-n", "emojivoto", "get", "endpoints", "web-svc-east", "--ignore-not-found", "-o",
        "jsonpath={.subsets[*].addresses[*].ip}").stdout.strip())
    p.green()

"""The two-region walkthrough end to end: the README's tutorial as written, then `isthmus demo`.

Every stage is checked on the clusters the `walkthrough` fixture built
(tests/e2e/walkthrough.py): two regions, one trust anchor, the mirror and its
endpoint, tap lines with `tls=true` to east's gateway, votes from west
arriving in east through the gateway, the gateway alive from west (and as
far away as the regions are), `isthmus demo` re-making nothing, its
dashboards answering. These tests only read; the clusters are shared with
other modules' tests (viz, the dashboard). The last test of the session
(`run_last`, see walkthrough.py) runs `isthmus demo down` and checks that
nothing the tutorial or the demo made is left running or on disk.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from .walkthrough import README, Walkthrough, answers, tutorial_commands

pytestmark = pytest.mark.e2e

T = TypeVar("T")
MC = "isthmus-multicluster"


def wait_until(what: str, check: Callable[[], T | None], timeout: float = 120) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def gateway_ip(w: Walkthrough) -> str:
    return w.kubectl("east", "-n", MC, "get", "svc", "isthmus-gateway", "-o",
                     "jsonpath={.status.loadBalancer.ingress[0].ip}").stdout.strip()


def test_the_tutorial_is_the_walkthrough_in_order() -> None:
    texts = [c.text for c in tutorial_commands(README.read_text())]
    firsts = [next(i for i, t in enumerate(texts) if needle in t) for needle in (
        "isthmus cluster create west", "isthmus certs create root", "isthmus install --crds",
        "multicluster install", "isthmus inject", "multicluster link --cluster-name east",
        "mirror.isthmus.io/exported=true", "get endpoints web-svc-east", "get svc isthmus-gateway",
        "WEB_HOST=<cluster IP>:80", "viz tap deploy/vote-bot", "multicluster gateways",
        "viz dashboard --context west", "viz dashboard --context east")]
    assert firsts == sorted(firsts), texts


def test_two_clusters_in_two_regions(walkthrough: Walkthrough) -> None:
    for context, region in (("west", "sfo3"), ("east", "syd1")):
        nodes = json.loads(walkthrough.kubectl(context, "get", "nodes", "-o", "json").stdout)["items"]
        assert len(nodes) == 3
        assert {n["metadata"]["labels"]["topology.kubernetes.io/region"] for n in nodes} == {region}
    assert "syd1" in walkthrough.output_of("get nodes -L topology.kubernetes.io/region")


def test_one_trust_anchor_on_both(walkthrough: Walkthrough) -> None:
    root = (walkthrough.workdir / "root.crt").read_text()
    for context in ("west", "east"):
        bundle = walkthrough.kubectl(context, "-n", "isthmus", "get", "configmap", "isthmus-identity-trust-roots",
                                     "-o", "jsonpath={.data.ca-bundle\\.crt}").stdout
        assert bundle.strip() == root.strip()


def test_web_svc_is_mirrored_into_west_with_east_gateway_as_its_endpoint(walkthrough: Walkthrough) -> None:
    w = walkthrough
    svc = json.loads(w.kubectl("west", "-n", "emojivoto", "get", "svc", "web-svc-east", "-o", "json").stdout)
    labels, notes = svc["metadata"]["labels"], svc["metadata"].get("annotations", {})
    assert labels["mirror.isthmus.io/mirrored-service"] == "true"
    assert labels["mirror.isthmus.io/cluster-name"] == "east"
    assert notes["mirror.isthmus.io/remote-svc-fq-name"] == "web-svc.emojivoto.svc.cluster.local"
    gateway = gateway_ip(w)
    assert w.output_of("get endpoints web-svc-east").split() == ["ENDPOINT_IP", gateway]
    assert w.output_of("custom-columns=GATEWAY_IP").split() == ["GATEWAY_IP", gateway]
    # The gateway address is east's own load-balancer range (127.k.192.x).
    east_k = json.loads((w.home / "clusters" / "east" / "cluster.json").read_text())["index"]
    assert gateway.startswith(f"127.{east_k}.192.")
    # vote-bot was pointed at the mirror's cluster IP, as the README says to.
    cluster_ip = svc["spec"]["clusterIP"]
    assert w.output_of("jsonpath='{.spec.clusterIP}'").strip() == cluster_ip
    env = w.kubectl("west", "-n", "emojivoto", "get", "deploy", "vote-bot", "-o",
                    "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"WEB_HOST\")].value}").stdout
    assert env == f"{cluster_ip}:80"


def test_tap_shows_mutual_tls_to_east_gateway(walkthrough: Walkthrough) -> None:
    gateway = gateway_ip(walkthrough)
    for lines in (walkthrough.output_of("viz tap deploy/vote-bot").splitlines(),
                  [x.strip() for x in walkthrough.demo.splitlines() if "proxy=out" in x]):
        assert lines, walkthrough.demo
        for line in lines:
            assert re.match(r"(req|rsp|end) id=\S+ proxy=out src=\S+ dst=" + re.escape(gateway) + r":4143 tls=true ",
                            line), line
    assert any(" :status=200 latency=" in x for x in walkthrough.output_of("viz tap deploy/vote-bot").splitlines())


def test_votes_from_west_arrive_in_east_through_the_gateway(walkthrough: Walkthrough) -> None:
    """East's web pods see requests from east's gateway pod (so from another cluster), over mTLS."""
    w = walkthrough
    gw_pod = w.kubectl("east", "-n", MC, "get", "pods", "-l", "app=isthmus-gateway", "-o",
                       "jsonpath={.items[0].status.podIP}").stdout.strip()
    assert gw_pod

    def from_gateway() -> list[str]:
        out = w.isthmus("--context=east", "-n", "emojivoto", "viz", "tap", "deploy/web", "--path", "/api/vote",
                        "--max", "12", timeout=120).stdout
        return [x for x in out.splitlines() if x.startswith("req ") and f"src={gw_pod}:" in x]

    lines = wait_until("votes from west's vote-bot at east's web", from_gateway)
    assert all("proxy=in" in x and "tls=true" in x and ":path=/api/vote?choice=" in x for x in lines), lines


def test_the_gateway_is_alive_from_west_and_as_far_as_syd1_is(walkthrough: Walkthrough) -> None:
    row = walkthrough.output_of("multicluster gateways").splitlines()[1].split()
    assert row[:3] == ["east", "True", "1"], row

    def latency() -> int | None:
        out = walkthrough.isthmus("--context=west", "multicluster", "gateways").stdout
        cols = out.splitlines()[1].split()
        return int(cols[3].removesuffix("ms")) if cols[1] == "True" and cols[3].endswith("ms") else None

    # The probes cross the emulated sfo3-syd1 WAN (150 ms round trip): never faster than that.
    assert wait_until("a gateway latency", latency) >= 150


def demo_steps(output: str) -> dict[str, str]:
    """Plain `isthmus demo` output: step title → `done` or `already there`."""
    steps, title = {}, None
    for line in output.splitlines():
        if line.startswith("-> "):
            title = line[3:]
        elif title and line.startswith("   ") and not line.startswith("   $"):
            steps[title] = line.split(" (")[0].split(";")[0].strip()
            title = None
    return steps


def test_demo_on_top_of_the_tutorial_remade_nothing(walkthrough: Walkthrough) -> None:
    steps = demo_steps(walkthrough.demo)
    assert len(steps) >= 15, walkthrough.demo
    made = {t: s for t, s in steps.items() if s != "already there" and "dashboard" not in t}
    assert made == {}, walkthrough.demo
    assert "cluster create" not in walkthrough.demo and "apply -f -" not in walkthrough.demo


def test_dashboards_answer(walkthrough: Walkthrough) -> None:
    if "no dashboards" in walkthrough.demo:
        pytest.skip("this build has no `isthmus viz dashboard`")
    for cluster in ("west", "east"):  # the tutorial's own, stopped since
        assert "http://127.0.0.1:" in walkthrough.output_of(f"viz dashboard --context {cluster}")
    assert set(walkthrough.dashboards) == {"west", "east"}, walkthrough.demo
    for url in walkthrough.dashboards.values():
        assert answers(url)


def _leftovers(home: Path) -> list[str]:
    """Processes whose command line, working directory or environment mention `home`."""
    needle = str(home)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (needle in cmdline or needle in environ or cwd.startswith(needle)):
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found


def test_demo_down_leaves_nothing_running_or_on_disk(walkthrough: Walkthrough) -> None:
    cluster_pids = [int((walkthrough.home / "clusters" / c / "apiserver.pid").read_text()) for c in ("west", "east")]
    assert _leftovers(walkthrough.home)  # the check sees the running clusters and pods
    down = walkthrough.down()
    assert down.returncode == 0, down.stderr
    assert "the demo is gone" in down.stdout
    assert _leftovers(walkthrough.home) == []
    for pid in cluster_pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]
    assert not walkthrough.home.exists() or list(walkthrough.home.iterdir()) == []
    for url in walkthrough.dashboards.values():
        assert not answers(url)
    # Only what the reader wrote by hand is left: the certificates in the working directory.
    assert sorted(p.name for p in walkthrough.workdir.iterdir()) == [
        "deploy", "issuer.crt", "issuer.key", "root.crt", "root.key"]
    # The kubeconfig the clusters wrote their contexts into is gone with them.
    assert not walkthrough.kubeconfig.exists()


test_demo_down_leaves_nothing_running_or_on_disk.run_last = True  # type: ignore[attr-defined]

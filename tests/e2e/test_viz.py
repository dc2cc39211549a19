"""`isthmus viz` end to end on the two-region walkthrough (the `walkthrough` fixture).

West's vote-bot calls web-svc-east through east's gateway; each cluster runs
the viz pod (collector + API). The CLI is the real `isthmus` against the real
viz API; it must show what the walkthrough promises: vote-bot's calls to
web-svc-east succeeding less than always (emojivoto's doughnut votes fail),
the edge to east's gateway secured with both identities, per-route numbers,
tap lines with tls=true to the gateway, and clear refusals of bad queries.
These tests only read the shared clusters.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from tests.support import waiting

from .walkthrough import Walkthrough

pytestmark = pytest.mark.e2e

T = TypeVar("T")


def wait_until(what: str, check: Callable[[], T | None], timeout: float = 90) -> T:
    """Poll every second; a viz command that fails (not ready yet) is retried."""
    return waiting.wait_until(what, check, timeout, interval=1, retry_on=(AssertionError,))
BOT_ID = "vote-bot.emojivoto.serviceaccount.identity.isthmus.cluster.local"
GATEWAY_ID = "isthmus-gateway.isthmus-multicluster.serviceaccount.identity.isthmus.cluster.local"



def viz_json(w: Walkthrough, context: str, *args: str) -> Any:
    out = w.isthmus("--context", context, "-n", "emojivoto", "viz", *args, "-o", "json").stdout
    return json.loads(out)


def test_stat_shows_vote_bot_calls_to_the_far_cluster_failing_sometimes(
        walkthrough: Walkthrough) -> None:
    w = walkthrough

    def row() -> dict[str, Any] | None:
        (r,) = viz_json(w, "west", "stat", "deploy/vote-bot", "--to", "svc/web-svc-east", "-t", "10m")
        return r if r["rps"] and r["success"] is not None and r["success"] < 1 else None

    r = wait_until("vote-bot's calls to web-svc-east with a failed doughnut vote", row, 150)
    assert r["meshed"] == "1/1" and 0.5 < r["success"] < 1
    assert r["latency_ms"]["p50"] > 0
    services = {s["name"]: s for s in viz_json(w, "west", "stat", "svc")}
    assert services["web-svc-east"]["rps"] > 0
    table = w.isthmus("--context", "west", "-n", "emojivoto", "viz", "stat", "deploy").stdout
    assert table.splitlines()[0].split() == ["NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50",
                                             "LATENCY_P95", "LATENCY_P99", "TCP_CONN"]
    assert any(line.startswith("vote-bot ") for line in table.splitlines())


def test_edges_show_the_cross_cluster_edge_secured_with_both_identities(
        walkthrough: Walkthrough) -> None:
    w = walkthrough

    def edge() -> dict[str, Any] | None:
        return next((e for e in viz_json(w, "west", "edges", "deploy")
                     if e["src"] == "vote-bot" and e["dst"] == "web-svc-east"), None)

    e = wait_until("the vote-bot -> web-svc-east edge", edge)
    assert e["dst_cluster"] == "east" and e["secured"] is True
    assert (e["client_id"], e["server_id"]) == (BOT_ID, GATEWAY_ID)
    table = w.isthmus("--context", "west", "-n", "emojivoto", "viz", "edges", "deploy").stdout
    assert table.splitlines()[0].split() == ["SRC", "DST", "SRC_NS", "DST_NS", "SECURED",
                                             "CLIENT_ID", "SERVER_ID"]
    # east sees the other end: its gateway calling web
    east = wait_until("east's gateway -> web edge", lambda: next(
        (x for x in viz_json(w, "east", "edges", "deploy")
         if x["src"] == "isthmus-gateway" and x["dst"] == "web"), None))
    assert east["secured"] and east["client_id"] == GATEWAY_ID


def test_routes_of_the_mirrored_service_and_of_its_far_side(walkthrough: Walkthrough) -> None:
    w = walkthrough
    west = wait_until("routes of web-svc-east", lambda: {
        r["route"]: r for r in viz_json(w, "west", "routes", "svc/web-svc-east", "-t", "10m")
        if r["rps"] > 0})
    assert "GET /api/list" in west and "GET /api/vote" in west
    east = wait_until("routes of web-svc in east", lambda: {
        r["route"]: r for r in viz_json(w, "east", "routes", "svc/web-svc", "-t", "10m")})
    assert "GET /api/vote" in east


def test_tap_shows_mtls_to_the_east_gateway(walkthrough: Walkthrough) -> None:
    w = walkthrough
    gateway = w.kubectl("east", "-n", "isthmus-multicluster", "get", "svc", "isthmus-gateway", "-o",
                        "jsonpath={.status.loadBalancer.ingress[0].ip}").stdout.strip()
    out = w.isthmus("--context", "west", "-n", "emojivoto", "viz", "tap", "deploy/vote-bot",
                    "--to", "svc/web-svc-east", "--path", "/api", "--max", "3", timeout=60).stdout
    lines = out.splitlines()
    assert len(lines) == 3 and all(" tls=true " in line for line in lines), out
    assert lines[0].startswith("req ") and f"dst={gateway}:" in lines[0]
    events = [json.loads(x) for x in w.isthmus(
        "--context", "west", "-n", "emojivoto", "viz", "tap", "deploy/vote-bot", "--max", "2",
        "-o", "json", timeout=60).stdout.splitlines()]
    assert events[0]["source"]["metadata"]["pod"].startswith("vote-bot-")


def test_top_counts_vote_bot_paths(walkthrough: Walkthrough) -> None:
    rows = viz_json(walkthrough, "west", "top", "deploy/vote-bot", "--duration", "4")
    assert rows and {r["path"] for r in rows} & {"/api/list", "/api/vote"}
    assert all(r["count"] >= 1 and r["best_ms"] <= r["worst_ms"] for r in rows)


@pytest.mark.parametrize("args, message", [
    (("tap", "deploy/nope"), "deployment nope not found in namespace emojivoto"),
    (("tap", "deploy/vote-bot", "--to", "svc/nope"), "service nope not found in namespace emojivoto"),
    (("stat", "widget"), 'unknown resource type "widget"'),
    (("stat", "deploy", "--to", "deploy/web/x"), "is not TYPE/NAME"),
    (("stat", "deploy", "-t", "forever"), "bad time window"),
    (("routes", "deploy"), "routes takes one service or deployment"),
    (("edges", "svc"), "edges are between deployments or pods"),
])
def test_bad_queries_are_refused_clearly(walkthrough: Walkthrough, args: tuple[str, ...],
                                         message: str) -> None:
    w = walkthrough
    before = w.kubectl("west", "-n", "isthmus-viz", "get", "pods", "-o",
                       "jsonpath={.items[*].status.containerStatuses[*].restartCount}").stdout
    proc = w.isthmus("--context", "west", "-n", "emojivoto", "viz", *args, check=False, timeout=60)
    assert proc.returncode == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""
    after = w.kubectl("west", "-n", "isthmus-viz", "get", "pods", "-o",
                      "jsonpath={.items[*].status.containerStatuses[*].restartCount}").stdout
    assert before == after  # the viz pod is unharmed


def test_viz_counts_scrapes_and_answers_for_namespaces(walkthrough: Walkthrough) -> None:
    w = walkthrough
    ip = w.kubectl("west", "-n", "isthmus-viz", "get", "svc", "isthmus-viz", "-o",
                   "jsonpath={.spec.clusterIP}").stdout.strip()
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    text = opener.open(f"http://{ip}:8085/metrics", timeout=10).read().decode()
    ok = next(float(line.split()[-1]) for line in text.splitlines()
              if line.startswith('viz_scrapes_total{result="ok"}'))
    assert ok > 0
    namespaces = json.loads(opener.open(f"http://{ip}:8085/api/namespaces", timeout=10).read())
    emojivoto = next(n for n in namespaces["namespaces"] if n["name"] == "emojivoto")
    assert emojivoto["meshed_pods"] == emojivoto["pods"] >= 4

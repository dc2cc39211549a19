"""Workloads on an embedded cluster, driven with the real kubectl: emojivoto runs as processes.

One cluster for the module (restart back-off shortened to 1 s); every test
asserts on what kubectl shows and on the processes themselves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from isthmus.adapters.clusterdir import ClusterDir
from isthmus.components import cluster as clusters
from isthmus.core.network import HTTP_PROXY_PORT, ClusterNetwork
from tests.support.waiting import wait_until

from .conftest import Cluster, _start

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "emojivoto.yml"


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = _start(tmp_path_factory.mktemp("apps"), "apps", "fra1", extra_env={"ISTHMUS_RESTART_BACKOFF": "1"})
    c.kubectl("apply", "-f", str(MANIFEST))
    c.kubectl("-n", "emojivoto", "wait", "--for=condition=Available", "deploy", "--all", "--timeout=60s")
    yield c
    if c.dir.exists():
        clusters.stop(c.dir)


def proxy_get(c: Cluster, url: str) -> tuple[int, Any]:
    net = ClusterNetwork(c.dir.load().index)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler(
        {"http": f"http://{net.proxy_ip}:{HTTP_PROXY_PORT}"}))
    try:
        with opener.open(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def pods(c: Cluster, app: str) -> list[dict[str, Any]]:
    return list(c.kjson("-n", "emojivoto", "get", "pods", "-l", f"app={app}")["items"])


def pid_of(pod: dict[str, Any]) -> int:
    return int(pod["status"]["containerStatuses"][0]["containerID"].split("://")[1])



def test_emojivoto_comes_up_and_votes_accumulate(apps: Cluster) -> None:
    out = apps.kubectl("-n", "emojivoto", "rollout", "status", "deploy/web", "--timeout=30s").stdout
    assert 'deployment "web" successfully rolled out' in out
    eps = apps.kjson("-n", "emojivoto", "get", "endpoints", "web-svc")
    web_pod = pods(apps, "web")[0]
    assert eps["subsets"][0]["addresses"][0]["ip"] == web_pod["status"]["podIP"]
    assert eps["subsets"][0]["ports"][0]["port"] == 8080
    assert web_pod["status"]["podIP"].startswith(f"127.{apps.dir.load().index}.")
    assert web_pod["spec"]["nodeName"].startswith("apps-node-")

    def total_votes() -> int:
        status, board = proxy_get(apps, "http://web-svc.emojivoto/api/leaderboard")
        assert status == 200
        return sum(e["votes"] for e in board)

    first = total_votes()
    wait_until("the leaderboard to grow", lambda: total_votes() > first + 2)
    status, _body = proxy_get(apps, "http://web-svc.emojivoto:80/api/vote?choice=:doughnut:")
    assert status == 500
    # The cluster IP works too (the service proxy listens on it).
    svc_ip = apps.kjson("-n", "emojivoto", "get", "svc", "web-svc")["spec"]["clusterIP"]
    with urllib.request.urlopen(f"http://{svc_ip}:80/api/list", timeout=10) as r:
        assert any(e["shortcode"] == ":doughnut:" for e in json.loads(r.read()))


def test_killed_container_is_restarted_with_a_higher_count(apps: Cluster) -> None:
    pod = pods(apps, "emoji")[0]
    before = pod["status"]["containerStatuses"][0]["restartCount"]
    os.kill(pid_of(pod), signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        p = pods(apps, "emoji")[0]
        cs = p["status"]["containerStatuses"][0]
        return p if cs["restartCount"] == before + 1 and cs["ready"] else None

    after = wait_until("the container to be restarted", restarted)
    assert after["metadata"]["name"] == pod["metadata"]["name"]
    assert after["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] != 0
    assert pid_of(after) != pid_of(pod)


def test_set_env_rolls_the_pod(apps: Cluster) -> None:
    old = pods(apps, "vote-bot")[0]
    svc_ip = apps.kjson("-n", "emojivoto", "get", "svc", "web-svc")["spec"]["clusterIP"]
    apps.kubectl("-n", "emojivoto", "set", "env", "deployment/vote-bot", f"WEB_HOST={svc_ip}:80")
    out = apps.kubectl("-n", "emojivoto", "rollout", "status", "deploy/vote-bot", "--timeout=60s").stdout
    assert "successfully rolled out" in out

    def replaced() -> list[dict[str, Any]] | None:
        now = [p for p in pods(apps, "vote-bot") if p["status"].get("containerStatuses")]
        return now if len(now) == 1 and now[0]["metadata"]["name"] != old["metadata"]["name"] else None

    new = wait_until("the old pod to go", replaced)[0]
    environ = Path(f"/proc/{pid_of(new)}/environ").read_bytes().split(b"\0")
    assert f"WEB_HOST={svc_ip}:80".encode() in environ
    wait_until("the old pod's process to end", lambda: not Path(f"/proc/{pid_of(old)}").exists(), timeout=10)


def test_scale_up_and_down_moves_endpoints(apps: Cluster) -> None:
    apps.kubectl("-n", "emojivoto", "scale", "deploy/voting", "--replicas=3")
    apps.kubectl("-n", "emojivoto", "rollout", "status", "deploy/voting", "--timeout=60s")

    def addresses(n: int) -> list[str] | None:
        subsets = apps.kjson("-n", "emojivoto", "get", "endpoints", "voting-svc").get("subsets") or []
        ips = sorted(a["ip"] for s in subsets for a in s.get("addresses", []))
        return ips if len(ips) == n else None

    three = wait_until("3 voting endpoints", lambda: addresses(3))
    assert len(set(three)) == 3
    apps.kubectl("-n", "emojivoto", "scale", "deploy/voting", "--replicas=1")
    one = wait_until("1 voting endpoint", lambda: addresses(1))
    assert one[0] in three
    wait_until("2 voting pods to go", lambda: len(pods(apps, "voting")) == 1)


def test_logs_tail_and_follow(apps: Cluster) -> None:
    out = apps.kubectl("-n", "emojivoto", "logs", "deploy/vote-bot", "--tail=2").stdout.splitlines()
    assert len(out) == 2 and all("vote" in line for line in out)
    proc = subprocess.Popen(["/usr/bin/kubectl", "--context=apps", "-n", "emojivoto", "logs", "-f",
                             "deploy/vote-bot", "--tail=0"], stdout=subprocess.PIPE, text=True, env=apps.env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # a new vote arrives within a second or two
        assert "vote choice=" in line
    finally:
        proc.terminate()
        proc.wait(10)


def test_bad_workloads_show_a_clear_status_and_disturb_nothing(apps: Cluster) -> None:
    apps.kubectl("create", "namespace", "broken")
    apps.kubectl("-n", "broken", "apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "nocmd"},
             "spec": {"selector": {"matchLabels": {"app": "nocmd"}}, "template": {
                 "metadata": {"labels": {"app": "nocmd"}},
                 "spec": {"containers": [{"name": "c", "image": "x", "command": ["no-such-command-here"]}]}}}},
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "deaf"},
             "spec": {"selector": {"matchLabels": {"app": "deaf"}}, "template": {
                 "metadata": {"labels": {"app": "deaf"}},
                 "spec": {"containers": [{"name": "c", "image": "x", "command": ["sleep", "600"],
                                          "readinessProbe": {"tcpSocket": {"port": 9},
                                                             "periodSeconds": 1}}]}}}}]}))

    def waiting_reason() -> str | None:
        items = apps.kjson("-n", "broken", "get", "pods", "-l", "app=nocmd")["items"]
        for p in items:
            for cs in p["status"].get("containerStatuses") or []:
                reason = (cs.get("state", {}).get("waiting") or {}).get("reason")
                message = (cs.get("lastState", {}).get("terminated") or {}).get("message", "")
                if reason in ("RunContainerError", "CrashLoopBackOff") and "no-such-command-here" in message:
                    return str(reason)
        return None

    assert wait_until("the missing command to show", waiting_reason)
    table = apps.kubectl("-n", "broken", "get", "pods", "-l", "app=nocmd").stdout
    assert "RunContainerError" in table or "CrashLoopBackOff" in table

    deaf = wait_until("the deaf pod to run", lambda: [
        p for p in apps.kjson("-n", "broken", "get", "pods", "-l", "app=deaf")["items"]
        if p["status"].get("phase") == "Running"])
    assert deaf[0]["status"]["containerStatuses"][0]["ready"] is False
    time.sleep(2)
    dep = apps.kjson("-n", "broken", "get", "deploy", "deaf")
    assert dep["status"].get("readyReplicas", 0) == 0
    available = next(c for c in dep["status"]["conditions"] if c["type"] == "Available")
    assert available["status"] == "False"

    mismatch = apps.kubectl("-n", "broken", "apply", "-f", "-", check=False, input=json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "mismatch"},
        "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {
            "metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "command": ["true"]}]}}}}))
    assert mismatch.returncode != 0
    assert "`selector` does not match template `labels`" in mismatch.stderr
    # The app next door is undisturbed.
    status, _ = proxy_get(apps, "http://web-svc.emojivoto/api/list")
    assert status == 200
    apps.kubectl("delete", "namespace", "broken")
    wait_until("the broken pods' processes to end", lambda: not any(
        b"no-such-command-here" in Path(f"/proc/{p}/cmdline").read_bytes() or
        Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sleep\x00600")
        for p in os.listdir("/proc") if p.isdigit() and Path(f"/proc/{p}/cmdline").exists()))


def _app_processes(c: Cluster) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            env = Path(f"/proc/{p}/environ").read_bytes()
        except OSError:
            continue
        if f"ISTHMUS_POD_DIR={c.dir.path}".encode() in env:
            out.append(int(p))
    return out


def _ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def test_stop_ends_every_pod_process_and_start_brings_the_app_back(apps: Cluster) -> None:
    assert len(_app_processes(apps)) >= 4
    uids = {p["metadata"]["name"]: p["metadata"]["uid"]
            for p in apps.kjson("-n", "emojivoto", "get", "pods")["items"]}
    apps.isthmus("cluster", "stop", "apps")
    wait_until("every pod process to end", lambda: not _app_processes(apps), timeout=15)
    assert _app_processes(apps) == []
    apps.isthmus("cluster", "start", "apps")
    assert apps.kubectl("get", "--raw", "/readyz").stdout == "ok"
    # Once `cluster start` returns, nothing shows the last run's state: a pod is ready only with
    # a process of this run, and no Deployment counts more available pods than are ready
    # (kubectl reads the Deployments first, so their counts cannot be newer than the pods').
    listed = apps.kjson("-n", "emojivoto", "get", "deployments,pods")["items"]
    running = set(_app_processes(apps))
    ready = [p for p in listed if p["kind"] == "Pod" and _ready(p)]
    assert all(int(c["containerID"].split("://")[1]) in running
               for p in ready for c in p["status"]["containerStatuses"]), ready
    available = sum(d["status"].get("availableReplicas") or 0 for d in listed if d["kind"] == "Deployment")
    assert available <= len(ready)
    apps.kubectl("-n", "emojivoto", "wait", "--for=condition=Available", "deploy", "--all", "--timeout=60s")
    after = {p["metadata"]["name"]: p["metadata"]["uid"]
             for p in apps.kjson("-n", "emojivoto", "get", "pods")["items"]}
    assert after == uids  # the same pods run again; none was replaced
    wait_until("web to answer again", lambda: proxy_get(apps, "http://web-svc.emojivoto/api/list")[0] == 200)
    assert len(_app_processes(apps)) >= 4


def test_kill_9_of_the_cluster_leaves_no_orphans(apps: Cluster) -> None:
    before = _app_processes(apps)
    assert before
    pid = ClusterDir(apps.home, apps.name).pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until("the pods to die with their cluster", lambda: not _app_processes(apps), timeout=15)

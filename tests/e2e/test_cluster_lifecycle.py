"""`isthmus cluster create/list/stop/start/delete`, durability across kill -9, and watch resumption."""

from __future__ import annotations

import json
import os
import signal
import ssl
import time
from pathlib import Path

import yaml

from isthmus.adapters.clusterdir import ClusterDir
from isthmus.components import cluster as clusters

from .conftest import Cluster, _start, store_state, stored_object


def test_two_clusters_side_by_side_and_recreate_changes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    west = _start(home, "west", "sfo3")
    east = Cluster("east", home, home / "kubeconfig")
    try:
        created = east.isthmus("cluster", "create", "east", "--region", "syd1", "--nodes", "2")
        assert f"export KUBECONFIG={home / 'kubeconfig'}" in created.stdout
        listing = west.isthmus("cluster", "list").stdout.splitlines()
        assert listing[0].split() == ["NAME", "REGION", "NODES", "API", "STATE"]
        rows = {line.split()[0]: line.split() for line in listing[1:]}
        assert rows["west"][1:3] == ["sfo3", "3"] and rows["east"][1:3] == ["syd1", "2"]
        assert rows["west"][3] != rows["east"][3]
        assert rows["west"][4] == rows["east"][4] == "Running"
        kc = yaml.safe_load((home / "kubeconfig").read_text())
        assert {c["name"] for c in kc["contexts"]} == {"west", "east"}
        assert os.stat(home / "kubeconfig").st_mode & 0o777 == 0o600
        east_nodes = east.kjson("get", "nodes")["items"]
        assert {n["metadata"]["labels"]["topology.kubernetes.io/region"] for n in east_nodes} == {"syd1"}

        before = (store_state(west), (home / "clusters/west/cluster.json").read_text())
        again = west.isthmus("cluster", "create", "west", "--region", "fra1", check=False)
        assert again.returncode == 1
        assert 'cluster "west" already exists (region sfo3' in again.stderr and "nothing was changed" in again.stderr
        assert "Traceback" not in again.stderr
        assert (store_state(west), (home / "clusters/west/cluster.json").read_text()) == before
    finally:
        for c in ("west", "east"):
            if ClusterDir(home, c).exists():
                clusters.stop(ClusterDir(home, c))


def test_bad_create_arguments_are_explained(tmp_path: Path) -> None:
    c = Cluster("x", tmp_path / "home", tmp_path / "home" / "kubeconfig")
    bad = c.isthmus("cluster", "create", "Not_Valid", "--region", "sfo3", check=False)
    assert bad.returncode == 1 and '"Not_Valid" is not a valid cluster name' in bad.stderr
    bad = c.isthmus("cluster", "create", "ok", "--region", "sfo3", "--nodes", "0", check=False)
    assert bad.returncode == 1 and "--nodes must be between 1 and 100" in bad.stderr
    assert not (tmp_path / "home" / "clusters").exists() or not any((tmp_path / "home" / "clusters").iterdir())


def test_stop_start_keeps_state_and_delete_removes_everything(fresh_cluster: Cluster) -> None:
    c = fresh_cluster
    c.kubectl("create", "namespace", "keep")
    c.kubectl("-n", "keep", "create", "configmap", "cm", "--from-literal=a=1")
    pid = ClusterDir(c.home, c.name).pid()
    assert pid is not None
    assert c.isthmus("cluster", "stop", c.name).stdout.strip() == f'cluster "{c.name}" stopped'
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert "Stopped" in c.isthmus("cluster", "list").stdout
    c.isthmus("cluster", "start", c.name)
    assert c.kjson("-n", "keep", "get", "configmap", "cm")["data"] == {"a": "1"}
    c.isthmus("cluster", "delete", c.name)
    assert not ClusterDir(c.home, c.name).path.exists()
    kc = yaml.safe_load((c.home / "kubeconfig").read_text())
    assert all(x["name"] != c.name for x in kc["contexts"])


def test_acknowledged_writes_survive_kill_9_and_watches_resume(fresh_cluster: Cluster) -> None:
    c = fresh_cluster
    c.kubectl("create", "namespace", "durable")
    for i in range(20):
        c.kubectl("-n", "durable", "create", "configmap", f"cm{i}", f"--from-literal=i={i}")
    mark = int(c.kjson("-n", "durable", "get", "configmap", "cm9")["metadata"]["resourceVersion"])
    newest_before, objects_before = store_state(c)
    pid = ClusterDir(c.home, c.name).pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and clusters.status(ClusterDir(c.home, c.name)).state != "Stopped":
        time.sleep(0.05)
    c.isthmus("cluster", "start", c.name)
    assert store_state(c) == (newest_before, objects_before)
    assert stored_object(c, "configmaps/durable/cm19") is not None
    created = c.kjson("-n", "durable", "create", "configmap", "after", "--from-literal=x=y")
    assert int(created["metadata"]["resourceVersion"]) == newest_before + 1

    # A watch from a version before the restart replays what happened after it, in order.
    ctx = ssl.create_default_context(cafile=str(ClusterDir(c.home, c.name).pki_dir / "ca.crt"))
    pki = ClusterDir(c.home, c.name).pki_dir
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    import http.client

    ip = clusters.api_url(ClusterDir(c.home, c.name).load()).split("//")[1].split(":")[0]
    conn = http.client.HTTPSConnection(ip, 6443, context=ctx, timeout=10)
    conn.request("GET", f"/api/v1/namespaces/durable/configmaps?watch=true&resourceVersion={mark}&timeoutSeconds=1")
    events = [json.loads(line) for line in conn.getresponse().read().splitlines() if line.strip()]
    names = [e["object"]["metadata"]["name"] for e in events]
    assert names == [f"cm{i}" for i in range(10, 20)] + ["after"]
    assert all(e["type"] == "ADDED" for e in events)
    conn.close()


def test_watch_from_a_compacted_version_gets_410(tmp_path: Path) -> None:
    os.environ["ISTHMUS_STORE_HISTORY"] = "20"
    try:
        c = _start(tmp_path / "home", "small", "lon1")
    finally:
        del os.environ["ISTHMUS_STORE_HISTORY"]
    try:
        c.kubectl("create", "namespace", "churn")
        first = int(c.kjson("-n", "churn", "create", "configmap", "cm0")["metadata"]["resourceVersion"])
        for i in range(1, 30):
            c.kubectl("-n", "churn", "create", "configmap", f"cm{i}")
        out = c.kubectl("get", "--raw", f"/api/v1/namespaces/churn/configmaps?watch=true&resourceVersion={first}"
                        "&timeoutSeconds=1").stdout
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert len(events) == 1 and events[0]["type"] == "ERROR"
        assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"
        assert "too old resource version" in events[0]["object"]["message"]
    finally:
        clusters.stop(ClusterDir(c.home, c.name))

"""`isthmus demo` parts that need no cluster: which processes are the demo's, bad options, down on nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from isthmus.cli.demo import demo_app
from isthmus.cli.demo_processes import processes_of

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def test_the_demo_processes_are_its_clusters_pods_and_servers_only(
        tmp_path: Path, spawned: list[subprocess.Popen[bytes]]) -> None:
    home = tmp_path / "home"
    pod = home / "clusters" / "west" / "pods" / "emojivoto_web" / "web"
    other = home / "clusters" / "mine" / "pods" / "x"
    for d in (pod, other):
        d.mkdir(parents=True)
    env = dict(os.environ, ISTHMUS_HOME=str(home))
    ours = subprocess.Popen(SLEEP, cwd=pod)
    by_env = subprocess.Popen(SLEEP, cwd=tmp_path, env=dict(env, ISTHMUS_POD_DIR=str(pod)))
    not_ours = subprocess.Popen(SLEEP, cwd=other, env=dict(env, ISTHMUS_POD_DIR=str(other)))
    shell_like = subprocess.Popen(SLEEP, cwd=tmp_path, env=env)  # a shell with ISTHMUS_HOME exported
    spawned.extend([ours, by_env, not_ours, shell_like])
    assert {pid for pid, _ in processes_of(home)} == {ours.pid, by_env.pid}


def test_bad_options_say_what_to_write_and_change_nothing(tmp_path: Path) -> None:
    env = {"ISTHMUS_HOME": str(tmp_path / "home")}
    result = CliRunner().invoke(demo_app, ["--wan-latency", "fast"], env=env)
    assert result.exit_code == 1
    assert "--wan-latency 'fast' is not a round trip in milliseconds; use e.g. 150, 0 (off) or auto" in result.output
    result = CliRunner().invoke(demo_app, ["--dashboard-port", "80"], env=env)
    assert result.exit_code == 1
    assert "--dashboard-port 80 is out of range" in result.output
    assert not (tmp_path / "home").exists()


def test_down_with_nothing_to_remove_succeeds(tmp_path: Path) -> None:
    result = CliRunner().invoke(demo_app, ["down"], env={"ISTHMUS_HOME": str(tmp_path / "home")})
    assert result.exit_code == 0, result.output
    assert "the demo is gone" in result.output


EMPTY_KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n"


def test_down_removes_the_home_kubeconfig_left_empty_but_never_the_users_own(tmp_path: Path) -> None:
    home, own = tmp_path / "home", tmp_path / "own-kubeconfig"
    home.mkdir()
    for path in (home / "kubeconfig", own):
        path.write_text(EMPTY_KUBECONFIG)
    result = CliRunner().invoke(demo_app, ["down"], env={"ISTHMUS_HOME": str(home), "KUBECONFIG": str(own)})
    assert result.exit_code == 0, result.output
    assert own.exists() and (home / "kubeconfig").exists()
    result = CliRunner().invoke(demo_app, ["down"],
                                env={"ISTHMUS_HOME": str(home), "KUBECONFIG": str(home / "kubeconfig")})
    assert result.exit_code == 0, result.output
    assert not home.exists() and own.exists()

"""The pod runner with real processes on 127.0.0.1: status, env, probes, restarts, stop, logs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from isthmus.components.podrunner import NotFound, PodRunner, PodRunnerError, read_log
from isthmus.components.podrunner.logs import CriLogWriter

PY = sys.executable
IP = "127.0.0.1"
Status = dict[str, Any]


class Recorder:
    def __init__(self) -> None:
        self.statuses: list[Status] = []
        self.events: list[dict[str, Any]] = []

    async def on_status(self, namespace: str, name: str, status: Status) -> None:
        self.statuses.append(status)

    def on_event(self, namespace: str, name: str, event: dict[str, Any]) -> None:
        self.events.append(event)

    async def wait(self, pred: Callable[[Status], bool], timeout: float = 5.0, *,
                   history: bool = False) -> Status:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for s in (self.statuses if history else self.statuses[-1:]):
                if pred(s):
                    return s
            await asyncio.sleep(0.02)
        raise AssertionError(f"no matching status in {timeout}s; last: {json.dumps(self.statuses[-1:], indent=1)}")

    async def event(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if pred(e):
                    return e
            await asyncio.sleep(0.02)
        raise AssertionError(f"no matching event in {timeout}s: {self.events}")


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[PodRunner, Recorder]]:
    rec = Recorder()
    runner = PodRunner(state_dir=tmp_path / "state", on_status=rec.on_status, on_event=rec.on_event,
                       backoff_base=0.2, backoff_cap=0.4, extra_path=[str(Path(PY).parent)])
    yield runner, rec
    await runner.close(grace=1)


def make_pod(*containers: Mapping[str, Any], name: str = "p", uid: str = "u1", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "uid": uid, "labels": {"app": "demo"}},
            "spec": {"containers": list(containers), "nodeName": "node-1",
                     "terminationGracePeriodSeconds": 2, **spec}}


def py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def cs(status: Status, name: str) -> dict[str, Any]:
    return next(c for c in status.get("containerStatuses", []) if c["name"] == name)


def cond(status: Status, kind: str) -> str:
    return next(c["status"] for c in status["conditions"] if c["type"] == kind)


def pid_of(status: Status, name: str) -> int:
    return int(cs(status, name)["containerID"].removeprefix("isthmus://"))


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def gone(*pids: int, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def read_file(path: Path, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text()
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} was not written")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((IP, 0))
        return int(s.getsockname()[1])


SLEEP = ["sleep", "30"]


async def test_two_containers_run_and_become_ready(env: tuple[PodRunner, Recorder]) -> None:
    runner, rec = env
    await runner.run(make_pod({"name": "a", "image": "demo/a", "command": SLEEP},
                              {"name": "b", "image": "demo/b", "command": py("import time; time.sleep(30)")}),
                     pod_ip=IP, host_ip=IP)
    assert rec.statuses[0]["phase"] == "Pending"
    assert cs(rec.statuses[0], "a")["state"] == {"waiting": {"reason": "ContainerCreating"}}
    s = await rec.wait(lambda s: s["phase"] == "Running" and cond(s, "Ready") == "True")
    assert cond(s, "ContainersReady") == "True" and cond(s, "PodScheduled") == "True"
    assert s["podIP"] == IP and s["hostIP"] == IP and s["startTime"].endswith("Z")
    for name, image in (("a", "demo/a"), ("b", "demo/b")):
        c = cs(s, name)
        assert c["ready"] and c["started"] and c["restartCount"] == 0 and c["image"] == image
        assert "startedAt" in c["state"]["running"] and alive(pid_of(s, name))
    assert runner.running() == [("default", "p")]
    assert "pods=1 containers=2/2 running" in repr(runner)
    await runner.stop("default", "p")
    assert await gone(pid_of(s, "a"), pid_of(s, "b"))
    assert runner.running() == []


async def test_environment_files_and_expansion_reach_the_process(env: tuple[PodRunner, Recorder]) -> None:
    runner, _ = env
    config = {("ConfigMap", "settings"): {"LEVEL": "debug"}}

    async def lookup(kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
        return config.get((kind, name))

    dump = """
        import json, os, sys
        json.dump({"env": dict(os.environ), "argv": sys.argv[1:], "cwd": os.getcwd()}, open("env.json", "w"))
        open("env.json", "a").write("\\n")
        import time; time.sleep(30)
    """
    container = {
        "name": "app", "command": [*py(dump), "--ip=$(POD_IP)", "$$(POD_IP)", "$(MESSAGE)"],
        "env": [
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LEVEL"}}},
            {"name": "MESSAGE", "value": "$(APP) on $(NODE) at $(POD_IP) via $(CLUSTER_VAR) $$(APP)"},
        ],
    }
    await runner.run(make_pod(container), pod_ip=IP, host_ip=IP, lookup=lookup,
                     env={"CLUSTER_VAR": "cv"}, files={"serviceaccount/token": b"tok"})
    pod_dir = runner.state_dir / "pods" / "default_p_u1"
    data = json.loads(await read_file(pod_dir / "app" / "env.json"))
    e = data["env"]
    assert (e["POD_IP"], e["POD_NAME"], e["POD_NAMESPACE"], e["HOSTNAME"]) == (IP, "p", "default", "p")
    assert e["ISTHMUS_POD_DIR"] == str(pod_dir) and e["LEVEL"] == "debug" and e["CLUSTER_VAR"] == "cv"
    assert e["MESSAGE"] == "demo on node-1 at 127.0.0.1 via cv $(APP)"
    assert e["PATH"].split(os.pathsep)[0] == str(Path(PY).parent)
    assert data["argv"] == ["--ip=127.0.0.1", "$(POD_IP)", e["MESSAGE"]]
    assert data["cwd"] == str(pod_dir / "app")
    token = pod_dir / "serviceaccount" / "token"
    assert token.read_bytes() == b"tok" and token.stat().st_mode & 0o777 == 0o600
    await runner.run(make_pod(container), pod_ip=IP, host_ip=IP, files={"serviceaccount/token": b"new"})
    assert token.read_bytes() == b"new" and len(runner.running()) == 1


async def test_missing_config_map_waits_then_starts(env: tuple[PodRunner, Recorder]) -> None:
    runner, rec = env
    config: dict[tuple[str, str], Mapping[str, str]] = {}
    container = {"name": "app", "command": SLEEP,
                 "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "x"}}}]}
    await runner.run(make_pod(container), pod_ip=IP, host_ip=IP,
                     lookup=lambda kind, ns, name: config.get((kind, name)))
    s = await rec.wait(lambda s: "waiting" in cs(s, "app")["state"]
                       and cs(s, "app")["state"]["waiting"]["reason"] == "CreateContainerConfigError")
    assert cs(s, "app")["state"]["waiting"]["message"] == 'configmap "cm" not found'
    config[("ConfigMap", "cm")] = {"x": "1"}
    await rec.wait(lambda s: "running" in cs(s, "app")["state"])


async def test_readiness_http_get_turns_ready(env: tuple[PodRunner, Recorder]) -> None:
    runner, rec = env
    port = free_port()
    container = {"name": "web", "command": [PY, "-m", "http.server", str(port), "--bind", "$(POD_IP)"],
                 "ports": [{"name": "http", "containerPort": port}],
                 "readinessProbe": {"httpGet": {"port": "http", "path": "/"}, "periodSeconds": 0.1}}
    await runner.run(make_pod(container), pod_ip=IP, host_ip=IP)
    first = await rec.wait(lambda s: "running" in cs(s, "web")["state"], history=True)
    assert not cs(first, "web")["ready"] and cond(first, "Ready") == "False"
    s = await rec.wait(lambda s: cs(s, "web")["ready"])
    assert cond(s, "Ready") == "True" and s["phase"] == "Running"


async def test_probes_on_a_closed_port_stay_unready(env: tuple[PodRunner, Recorder]) -> None:
    runner, rec = env
    port = free_port()
    await runner.run(make_pod(
        {"name": "tcp", "command": SLEEP,
         "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 0.1}},
        {"name": "http", "command": SLEEP,
         "readinessProbe": {"httpGet": {"port": port, "path": "/ready"}, "periodSeconds": 0.1}}),
        pod_ip=IP, host_ip=IP)
    tcp = await rec.event(lambda e: e["reason"] == "Unhealthy" and e["fieldPath"] == "spec.containers{tcp}")
    assert tcp["message"] == f"Readiness probe failed: dial tcp {IP}:{port}: connect: connection refused"
    http = await rec.event(lambda e: e["reason"] == "Unhealthy" and e["fieldPath"] == "spec.containers{http}")
    assert http["message"] == (f'Readiness probe failed: Get "http://{IP}:{port}/ready": '
                               f"dial tcp {IP}:{port}: connect: connection refused")
    await asyncio.sleep(0.3)
    s = rec.statuses[-1]
    assert s["phase"] == "Running" and cond(s, "Ready") == "False"
    assert not cs(s, "tcp")["ready"] and not cs(s, "http")["ready"]
    assert next(c for c in s["conditions"] if c["type"] == "Ready")["message"] == \
        "containers with unready status: [tcp http]"


async def test_liveness_failure_restarts_the_container(env: tuple[PodRunner, Recorder]) -> None:
    runner, rec = env
    await runner.run(make_pod({"name": "app", "command": SLEEP, "livenessProbe": {
        "exec": {"command": ["sh", "-c", "echo sick; exit 1"]}, "periodSeconds": 0.1, "failureThreshold": 2}}),
        pod_ip=IP, host_ip=IP)
    s = await rec.wait(lambda s: cs(s, "app")["restartCount"] >= 1 and "running" in cs(s, "app")["state"])
    last = cs(s, "app")["lastState"]["terminated"]
    assert last["exitCode"] == 143 and last["reason"] == "Error" and last["signal"] == 15
    assert any(e["reason"] == "Unhealthy" and e["message"] == "Liveness probe failed: sick" for e in rec.events)
    assert any(e["reason"] == "Killing" and "failed liveness probe" in e["message"] for e in rec.events)


async def test_exits_restart_with_crash_loop_back_off(env: tuple[PodRunner, Recorder]) -> None:
    runner, rec = env
    await runner.run(make_pod({"name": "app", "command": ["sh", "-c", "echo run; exit 3"]}),
                     pod_ip=IP, host_ip=IP)
    await rec.wait(lambda s: cs(s, "app")["restartCount"] >= 3, timeout=5)
    loop = await rec.wait(lambda s: "CrashLoopBackOff" in json.dumps(cs(s, "app")["state"]), history=True)
    c = cs(loop, "app")
    assert c["restartCount"] >= 1 and not c["ready"]
    assert c["state"]["waiting"]["message"].startswith("back-off 200ms restarting failed container=app pod=p_default(u1)")
    assert c["lastState"]["terminated"]["exitCode"] == 3 and c["lastState"]["terminated"]["reason"] == "Error"
    assert loop["phase"] == "Running"
    assert any(e["reason"] == "BackOff" for e in rec.events)


async def test_commands_that_cannot_start(env: tuple[PodRunner, Recorder]) -> None:
    runner, rec = env
    await runner.run(make_pod({"name": "missing", "command": ["nosuchcmd-isthmus", "--flag"]},
                              {"name": "nocommand", "args": ["x"]}), pod_ip=IP, host_ip=IP)
    message = 'exec: "nosuchcmd-isthmus": executable file not found in $PATH'
    await rec.wait(lambda s: cs(s, "missing")["state"].get("waiting", {}).get("reason") == "RunContainerError"
                   and cs(s, "missing")["state"]["waiting"]["message"] == message, history=True)
    await rec.wait(lambda s: cs(s, "nocommand")["state"].get("waiting", {}).get("message")
                   == "the container has no command", history=True)
    s = await rec.wait(lambda s: cs(s, "missing")["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff"
                       and cs(s, "nocommand")["restartCount"] >= 1)
    last = cs(s, "missing")["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"], last["message"]) == (128, "StartError", message)
    assert s["phase"] == "Running" and cond(s, "Ready") == "False"
    assert any(e["message"] == f"Error: {message}" for e in rec.events)


async def test_stop_kills_the_whole_process_group(env: tuple[PodRunner, Recorder]) -> None:
    runner, rec = env
    # A child that ignores SIGTERM is still killed once the grace period is over.
    script = "trap '' TERM; sleep 300 & echo $! > child.pid; wait"
    await runner.run(make_pod({"name": "app", "command": ["sh", "-c", script]}), pod_ip=IP, host_ip=IP)
    pod_dir = runner.state_dir / "pods" / "default_p_u1"
    child = int(await read_file(pod_dir / "app" / "child.pid"))
    main = pid_of(await rec.wait(lambda s: "running" in cs(s, "app")["state"]), "app")
    assert alive(child) and alive(main)
    started = time.monotonic()
    await runner.stop("default", "p", grace=0.5)
    assert time.monotonic() - started >= 0.4
    assert await gone(child, main)
    assert not pod_dir.exists() and not (runner.state_dir / "logs" / "default_p_u1").exists()


async def test_a_container_dies_with_its_main_process(env: tuple[PodRunner, Recorder]) -> None:
    runner, rec = env
    await runner.run(make_pod({"name": "job", "command": ["sh", "-c", "sleep 300 & echo $! > child.pid"]},
                              restartPolicy="Never"), pod_ip=IP, host_ip=IP)
    s = await rec.wait(lambda s: s["phase"] == "Succeeded")
    assert cs(s, "job")["state"]["terminated"]["reason"] == "Completed"
    assert cond(s, "Ready") == "False"
    child = int((runner.state_dir / "pods" / "default_p_u1" / "job" / "child.pid").read_text())
    assert await gone(child)


async def test_close_leaves_no_process_behind(env: tuple[PodRunner, Recorder]) -> None:
    runner, rec = env
    script = "sleep 300 & echo $! > child.pid; wait"
    for i in range(2):
        await runner.run(make_pod({"name": "app", "command": ["sh", "-c", script]}, name=f"p{i}", uid=f"u{i}"),
                         pod_ip=IP, host_ip=IP)
    children = [int(await read_file(runner.state_dir / "pods" / f"default_p{i}_u{i}" / "app" / "child.pid"))
                for i in range(2)]
    await rec.wait(lambda s: s["phase"] == "Running", history=True)
    await runner.close(grace=1)
    assert await gone(*children)
    assert runner.running() == [] and "closed pods=0" in repr(runner)
    with pytest.raises(PodRunnerError, match="closed"):
        await runner.run(make_pod({"name": "x", "command": SLEEP}), pod_ip=IP, host_ip=IP)


async def test_containers_die_when_the_runner_is_killed(tmp_path: Path) -> None:
    program = textwrap.dedent(f"""
        import asyncio, sys
        from pathlib import Path
        from isthmus.components.podrunner import PodRunner
        async def main():
            def on_status(ns, name, status):
                for c in status.get("containerStatuses", []):
                    if "running" in c["state"]:
                        print(c["containerID"], flush=True)
            runner = PodRunner(state_dir=Path({str(tmp_path)!r}), on_status=on_status)
            pod = {{"metadata": {{"name": "p", "namespace": "default", "uid": "u"}},
                   "spec": {{"containers": [{{"name": "c", "command": ["sleep", "300"]}}]}}}}
            await runner.run(pod, pod_ip="127.0.0.1", host_ip="127.0.0.1")
            await asyncio.sleep(300)
        asyncio.run(main())
    """)
    agent = subprocess.Popen([PY, "-c", program], stdout=subprocess.PIPE, text=True)
    try:
        assert agent.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(agent.stdout.readline), 10)
        container = int(line.strip().removeprefix("isthmus://"))
        assert alive(container)
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait()
    assert await gone(container)


async def test_logs_current_previous_tail_and_timestamps(env: tuple[PodRunner, Recorder]) -> None:
    runner, rec = env
    code = """
        import sys, time
        for i in range(5):
            print("line", i, flush=True)
        time.sleep(0.05)  # stdout and stderr are separate pipes: keep their order unambiguous
        print("oops", file=sys.stderr)
        sys.exit(1)
    """
    await runner.run(make_pod({"name": "app", "command": py(code)}), pod_ip=IP, host_ip=IP)
    await rec.wait(lambda s: cs(s, "app")["restartCount"] >= 2)
    current = runner.log_path("default", "p", "app")
    previous = runner.log_path("default", "p", "app", previous=True)
    assert current != previous and previous.exists()
    raw = previous.read_text().splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z stdout F line 0", raw[0])
    assert raw[-1].endswith(" stderr F oops")
    whole = b"".join([b async for b in runner.logs("default", "p", "app", previous=True)])
    assert whole == b"line 0\nline 1\nline 2\nline 3\nline 4\noops\n"
    tail = b"".join([b async for b in read_log(previous, tail=2)])
    assert tail == b"line 4\noops\n"
    stamped = b"".join([b async for b in read_log(previous, tail=1, timestamps=True)]).decode()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z oops\n", stamped)
    with pytest.raises(NotFound, match="container nope is not valid for pod p"):
        runner.log_path("default", "p", "nope")
    with pytest.raises(NotFound, match="not running"):
        runner.log_path("default", "other", "app")


async def test_follow_ends_with_the_container(env: tuple[PodRunner, Recorder]) -> None:
    runner, rec = env
    await runner.run(make_pod({"name": "app", "command": ["sh", "-c", "echo a; sleep 0.4; echo b; printf c"]},
                              restartPolicy="Never"), pod_ip=IP, host_ip=IP)
    await rec.wait(lambda s: "running" in cs(s, "app")["state"] or "terminated" in cs(s, "app")["state"])
    with pytest.raises(NotFound, match="previous terminated container"):
        runner.log_path("default", "p", "app", previous=True)
    got: list[bytes] = []
    async with asyncio.timeout(5):
        async for chunk in runner.logs("default", "p", "app", follow=True):
            got.append(chunk)
    assert b"".join(got) == b"a\nb\nc"


async def test_log_writer_and_reader_formats(tmp_path: Path) -> None:
    now = datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC)
    path = tmp_path / "0.log"
    writer = CriLogWriter(path, clock=lambda: now)
    writer.feed("stdout", b"one\r\ntw")
    writer.feed("stderr", b"err\n")
    writer.feed("stdout", b"o\n" + b"x" * (16 * 1024 + 10))
    writer.close()
    lines = path.read_bytes().splitlines()
    assert lines[0] == b"2026-11-26T10:00:00.123456000Z stdout F one"
    assert lines[1] == b"2026-11-26T10:00:00.123456000Z stderr F err"
    assert lines[2].endswith(b" stdout F two")
    assert lines[3].split(b" ", 3)[2] == b"P" and lines[4].split(b" ", 3)[2] == b"P"
    assert path.stat().st_mode & 0o777 == 0o600
    out = b"".join([b async for b in read_log(path)])
    assert out == b"one\nerr\ntwo\n" + b"x" * (16 * 1024 + 10)
    stamped = b"".join([b async for b in read_log(path, tail=3, timestamps=True)])
    assert stamped.startswith(b"2026-11-26T10:00:00.123456Z two\n")
    later = lambda: datetime(2026, 11, 26, 10, 0, 30, tzinfo=UTC)  # noqa: E731
    assert b"".join([b async for b in read_log(path, since_seconds=10, clock=later)]) == b""
    assert b"".join([b async for b in read_log(path, since_seconds=60, clock=later)]) == out
    assert b"".join([b async for b in read_log(path, tail=0)]) == b""


async def test_a_new_uid_replaces_the_pod_and_bad_names_are_refused(env: tuple[PodRunner, Recorder]) -> None:
    runner, rec = env
    await runner.run(make_pod({"name": "app", "command": SLEEP}), pod_ip=IP, host_ip=IP)
    old = pid_of(await rec.wait(lambda s: "running" in cs(s, "app")["state"]), "app")
    await runner.run(make_pod({"name": "app", "command": SLEEP}, uid="u2"), pod_ip=IP, host_ip=IP)
    assert await gone(old)
    assert not (runner.state_dir / "pods" / "default_p_u1").exists()
    assert (runner.state_dir / "pods" / "default_p_u2").is_dir()
    with pytest.raises(PodRunnerError, match="cannot name"):
        await runner.run(make_pod({"name": "../x", "command": SLEEP}, name="q"), pod_ip=IP, host_ip=IP)
    with pytest.raises(PodRunnerError, match="relative path"):
        await runner.run(make_pod({"name": "app", "command": SLEEP}, name="r"), pod_ip=IP, host_ip=IP,
                         files={"/etc/passwd": b""})
    assert runner.running() == [("default", "p")] and not (runner.state_dir / "pods" / "default_r_u1").exists()

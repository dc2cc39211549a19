"""The lifecycle of embedded clusters: create, start, stop, delete, and what is running.

A cluster is a directory under `$ISTHMUS_HOME/clusters/NAME` and, while it runs,
one background process (`python -m isthmus cluster serve NAME`) in its own
process group, whose pid is in the directory. Creating picks a free cluster
number (its 127.k.0.0/16 range), makes the cluster's keys, starts the server,
waits until it answers, and writes the kubeconfig context.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from isthmus.adapters import kubeconfig
from isthmus.adapters.clusterdir import ClusterConfig, ClusterDir, all_clusters
from isthmus.adapters.pki import ClusterPKI
from isthmus.core.names import validate_dns1123_label
from isthmus.core.network import API_PORT, ClusterNetwork

Progress = Callable[[str], None]


class ClusterError(Exception):
    """An expected failure, with a message that says what to do."""


@dataclass(frozen=True)
class ClusterStatus:
    config: ClusterConfig
    api: str
    state: str  # Running | Starting (controllers catching up) | Stopped | Unresponsive
    pid: int | None


def api_url(config: ClusterConfig) -> str:
    return f"https://{ClusterNetwork(config.index).api_ip}:{API_PORT}"


def _port_free(ip: str, port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pick_index(home: Path) -> int:
    used = {c.load().index for c in all_clusters(home)}
    first = int(os.environ.get("ISTHMUS_FIRST_CLUSTER_NUMBER", "1"))
    for k in range(first, 255):
        if k not in used and _port_free(ClusterNetwork(k).api_ip, API_PORT):
            return k
    raise ClusterError("no free cluster number is left (1-254); delete a cluster first")


def process_alive(pid: int) -> bool:
    """Whether `pid` is a running process (not a zombie waiting to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # gone since the signal
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _alive(pid: int | None) -> bool:
    if not pid or not process_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    # A recycled pid belongs to some other program: not our server. (An empty command line
    # is a process in the middle of exec, as our server is just after it was spawned.)
    return b"isthmus" in cmdline or not cmdline


def _client_context(pki: ClusterPKI) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    return ctx


def answers(cdir: ClusterDir, timeout: float = 2.0, *, path: str = "/readyz") -> bool:
    """Whether the cluster's API server says ok at `path` (/readyz: ready, /livez: running)."""
    config = cdir.load()
    net = ClusterNetwork(config.index)
    try:
        conn = http.client.HTTPSConnection(net.api_ip, API_PORT, timeout=timeout,
                                           context=_client_context(ClusterPKI(cdir.pki_dir)))
        conn.request("GET", path)
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except (OSError, ssl.SSLError, http.client.HTTPException):
        return False


def status(cdir: ClusterDir) -> ClusterStatus:
    config = cdir.load()
    pid = cdir.pid()
    if not _alive(pid):
        return ClusterStatus(config, api_url(config), "Stopped", None)
    if answers(cdir):
        return ClusterStatus(config, api_url(config), "Running", pid)
    state = "Starting" if answers(cdir, path="/livez") else "Unresponsive"
    return ClusterStatus(config, api_url(config), state, pid)


def _spawn(cdir: ClusterDir) -> int:
    log = open(cdir.log_file, "ab")  # noqa: SIM115 - handed to the child
    env = dict(os.environ, ISTHMUS_HOME=str(cdir.home), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "isthmus", "cluster", "serve", cdir.name],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                            start_new_session=True, close_fds=True)
    log.close()
    cdir.pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def _wait_ready(cdir: ClusterDir, pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(cdir, timeout=1.0):
            return
        if not _alive(pid):
            tail = cdir.log_file.read_text(errors="replace").strip().splitlines()[-5:]
            raise ClusterError(f'the API server of cluster "{cdir.name}" exited while starting; last lines of '
                               f"{cdir.log_file}:\n  " + "\n  ".join(tail))
        time.sleep(0.1)
    raise ClusterError(f'the API server of cluster "{cdir.name}" did not answer within {timeout:.0f}s; '
                       f"see {cdir.log_file}")


def create(home: Path, name: str, region: str, nodes: int, *, kubeconfig_path: Path,
           index: int | None = None, progress: Progress = lambda _: None, timeout: float = 60.0) -> ClusterStatus:
    problems = validate_dns1123_label(name)
    if problems:
        raise ClusterError(f'"{name}" is not a valid cluster name: {problems[0]}')
    if not region or any(c.isspace() for c in region):
        raise ClusterError(f'"{region}" is not a valid region; use a name such as sfo3 or syd1')
    if nodes < 1 or nodes > 100:
        raise ClusterError(f"--nodes must be between 1 and 100, not {nodes}")
    cdir = ClusterDir(home, name)
    if cdir.exists():
        st = status(cdir)
        raise ClusterError(f'cluster "{name}" already exists (region {st.config.region}, {st.config.nodes} nodes, '
                           f"{st.api}, {st.state}); nothing was changed. "
                           + ("Start it with `isthmus cluster start " + name + "`." if st.state == "Stopped" else
                              "Delete it first with `isthmus cluster delete " + name + "` to re-create it."))
    config = ClusterConfig(name=name, region=region, nodes=nodes, index=index or pick_index(home))
    net = ClusterNetwork(config.index)
    progress(f"cluster {name}: addresses 127.{config.index}.0.0/16, API server {api_url(config)}")
    cdir.path.mkdir(parents=True, exist_ok=True, mode=0o700)
    pki = ClusterPKI(cdir.pki_dir)
    pki.generate(cluster=name, api_ip=net.api_ip, now=dt.datetime.now(dt.UTC))
    progress(f"cluster {name}: generated its CA, API server and admin certificates")
    cdir.save(config)
    start(cdir, kubeconfig_path=kubeconfig_path, progress=progress, timeout=timeout)
    return status(cdir)


def write_context(cdir: ClusterDir, kubeconfig_path: Path) -> None:
    pki = ClusterPKI(cdir.pki_dir)
    kubeconfig.set_cluster_context(kubeconfig_path, name=cdir.name, server=api_url(cdir.load()),
                                   ca_pem=pki.ca_cert.read_bytes(), cert_pem=pki.admin_cert.read_bytes(),
                                   key_pem=pki.admin_key.read_bytes())


def start(cdir: ClusterDir, *, kubeconfig_path: Path, progress: Progress = lambda _: None,
          timeout: float = 60.0) -> None:
    if not cdir.exists():
        raise ClusterError(f'there is no cluster "{cdir.name}"; create it with `isthmus cluster create {cdir.name} '
                           "--region REGION`")
    if _alive(cdir.pid()):
        progress(f"cluster {cdir.name}: already running (pid {cdir.pid()})")
    else:
        config = cdir.load()
        if not _port_free(ClusterNetwork(config.index).api_ip, API_PORT):
            raise ClusterError(f"the address {api_url(config)} of cluster {cdir.name} is taken by another "
                               "program; stop it and try again")
        pid = _spawn(cdir)
        progress(f"cluster {cdir.name}: API server starting (pid {pid}, log {cdir.log_file})")
        _wait_ready(cdir, pid, timeout)
        progress(f"cluster {cdir.name}: API server ready")
    write_context(cdir, kubeconfig_path)


def stop(cdir: ClusterDir, *, progress: Progress = lambda _: None, timeout: float = 10.0) -> bool:
    """Stop the cluster's processes; returns False if nothing was running."""
    if not cdir.exists():
        raise ClusterError(f'there is no cluster "{cdir.name}"')
    pid = cdir.pid()
    if not _alive(pid):
        cdir.pid_file.unlink(missing_ok=True)
        return False
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        _reap(pid)
        time.sleep(0.05)
    if _alive(pid):
        progress(f"cluster {cdir.name}: did not stop within {timeout:.0f}s; killing it")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        _reap(pid)
    cdir.pid_file.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def delete(cdir: ClusterDir, *, kubeconfig_path: Path, progress: Progress = lambda _: None) -> None:
    if not cdir.exists():
        raise ClusterError(f'there is no cluster "{cdir.name}"; `isthmus cluster list` shows the clusters')
    stop(cdir, progress=progress)
    kubeconfig.remove_cluster_context(kubeconfig_path, cdir.name)
    shutil.rmtree(cdir.path)

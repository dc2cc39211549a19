"""The demo's running parts: its dashboards (started, reused, stopped), its processes, and `demo down`.

- `dashboards` starts `isthmus viz dashboard` for both clusters in the
  background (pids under `$ISTHMUS_HOME/demo/`), or reuses ones that answer;
- `processes_of(home)` finds every process of the demo under `home` (its
  clusters' servers and pods, its dashboards) through /proc;
- `down` stops and removes all of it, then checks that nothing is left.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from isthmus.adapters import kubeconfig
from isthmus.adapters.clusterdir import ClusterDir, all_clusters, isthmus_home
from isthmus.cli.demo_shell import CLUSTERS, DemoError, Reporter, Shell, demo_dir, wait_for
from isthmus.components import cluster as clusters
from isthmus.components.cluster import ClusterError
from isthmus.components.serviceproxy.wan import wan_file

__all__ = ["alive", "dashboards", "down", "pid_file", "processes_of", "read_pid", "stop_group"]


def pid_file(home: Path, cluster: str) -> Path:
    return demo_dir(home) / f"dashboard-{cluster}.pid"


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


alive = clusters.process_alive


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def stop_group(pid: int, grace: float = 5.0) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def dashboards(report: Reporter, sh: Shell, home: Path, port: int) -> list[tuple[int, str]]:
    """Start (or reuse) `isthmus viz dashboard` for both clusters; [(pid, url)]."""
    started: list[tuple[int, str]] = []
    for i, (name, _) in enumerate(CLUSTERS):
        cport = port + 10 * i
        url = f"http://127.0.0.1:{cport}/"
        with report.step(f"{name}'s dashboard on {url}") as step:
            pid_path = pid_file(home, name)
            pid = read_pid(pid_path)
            if pid is not None and alive(pid) and _answers(url):
                step.reused = True
                started.append((pid, url))
                continue
            if _answers(url):
                raise DemoError(f"something else already serves {url}; stop it, or pick other ports with "
                                "--dashboard-port")
            args = ["viz", "dashboard", "--context", name, "--port", str(cport)]
            report.command("isthmus " + shlex.join(args))
            pid_path.parent.mkdir(parents=True, exist_ok=True)
            log = open(demo_dir(home) / f"dashboard-{name}.log", "ab")  # noqa: SIM115 - the child's
            proc = subprocess.Popen([sh.isthmus, *args], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    env=sh.env, start_new_session=True, close_fds=True)
            log.close()
            pid_path.write_text(f"{proc.pid}\n")

            def up(proc: subprocess.Popen[bytes] = proc, url: str = url, name: str = name) -> bool:
                if proc.poll() is not None:
                    raise DemoError(f"the dashboard for {name} exited ({proc.returncode}); see "
                                    f"{demo_dir(home) / f'dashboard-{name}.log'}")
                return _answers(url)

            wait_for(f"the dashboard on {url}", up, timeout=60)
            started.append((proc.pid, url))
    return started


def processes_of(home: Path) -> list[tuple[int, str]]:
    """Processes (pid, command line) of the demo under `home`: its clusters' servers and pods, dashboards.

    A process counts when its working directory or a pod's `ISTHMUS_POD_DIR`
    is under west's or east's cluster directory or the demo's, or when it
    runs with `ISTHMUS_HOME` equal to `home` and is `cluster serve west|east`
    or a `viz dashboard`. Other clusters under the same home are not the
    demo's and are left alone, as are this process and its ancestors.
    """
    raw, home = str(home), home.resolve()
    roots = [str(ClusterDir(home, name).path) for name, _ in CLUSTERS] + [str(demo_dir(home))]
    servers = [f"cluster serve {name}" for name, _ in CLUSTERS] + ["viz dashboard"]
    skip = {os.getpid()}
    pid = os.getppid()
    while pid > 1 and pid not in skip:
        skip.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break

    def under(path: str) -> bool:
        return any(path == r or path.startswith(r + "/") for r in roots)

    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            environ = (entry / "environ").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if not cmdline or not alive(int(entry.name)):
            continue
        env = dict(e.decode(errors="replace").partition("=")[::2] for e in environ if b"=" in e)
        if (under(cwd) or under(env.get("ISTHMUS_POD_DIR", ""))
                or (env.get("ISTHMUS_HOME") in (str(home), raw) and any(cmdline.endswith(x) or f"{x} " in cmdline
                                                                  for x in servers))):
            found.append((int(entry.name), cmdline))
    return found


def down(out: Console, progress: Callable[[str], None]) -> None:
    """Remove what `isthmus demo` made: dashboards, both clusters (processes included), certificates, settings."""
    home = isthmus_home()
    kc_path = kubeconfig.default_path(home)
    for name, _ in CLUSTERS:
        pid = read_pid(pid_file(home, name))
        if pid is not None and alive(pid):
            stop_group(pid)
            progress(f"{name}'s dashboard stopped (pid {pid})")
    for name, _ in CLUSTERS:
        cdir = ClusterDir(home, name)
        if cdir.exists():
            try:
                clusters.delete(cdir, kubeconfig_path=kc_path, progress=progress)
            except ClusterError as e:
                raise DemoError(str(e)) from None
            progress(f'cluster "{name}" deleted')
    for path in (demo_dir(home), wan_file(home)):
        if path.is_dir():
            shutil.rmtree(path)
            progress(f"removed {path}")
        elif path.exists():
            path.unlink()
            progress(f"removed {path}")
    if not all_clusters(home):
        _remove_if_unused(home, kc_path, progress)
        for d in (home / "clusters", home):
            with contextlib.suppress(OSError):
                d.rmdir()  # only when empty
    left = processes_of(home)
    for pid, cmdline in left:
        progress(f"stopping a leftover process {pid}: {cmdline[:100]}")
        stop_group(pid)
    still = [(pid, cmd) for pid, cmd in processes_of(home)]
    if still:
        raise DemoError("these processes of the demo are still running: "
                        + "; ".join(f"{pid} {cmd[:60]}" for pid, cmd in still) + "; stop them with kill")
    out.print("the demo is gone: no cluster, dashboard or pod of it is running", highlight=False)


def _remove_if_unused(home: Path, kc_path: Path, progress: Callable[[str], None]) -> None:
    """Delete the kubeconfig the clusters wrote under `home` when no context is left in it."""
    if not kc_path.exists() or kc_path.resolve().parent != home.resolve():
        return  # a kubeconfig of the user's own ($KUBECONFIG elsewhere): only its contexts were removed
    try:
        import yaml

        config = yaml.safe_load(kc_path.read_text()) or {}
    except (OSError, ValueError):
        return
    if isinstance(config, dict) and not config.get("contexts") and not config.get("clusters"):
        kc_path.unlink()
        progress(f"removed {kc_path} (no context left in it)")

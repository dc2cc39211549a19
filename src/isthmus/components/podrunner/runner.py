"""The pod runner: the kubelet of an embedded cluster, without the API.

`PodRunner.run` receives a Pod (its Kubernetes JSON) and the addresses the
cluster gave it and keeps its containers running as local processes;
`PodRunner.stop` ends them. The runner never talks to an API server: it
reports the Pod's `status` through `on_status` (and kubelet-style events
through `on_event`) and whoever wires it writes them back.

Layout under `state_dir`:

* `pods/<ns>_<name>_<uid>/` — the pod's directory (mode 0700, `ISTHMUS_POD_DIR`):
  the `files` given to `run` (mode 0600), and one working directory per
  container, `<container>/`;
* `logs/<ns>_<name>_<uid>/<container>/<n>.log` — the CRI log of the n-th
  instance of the container (n = its restartCount); the current and the
  previous instance are kept.

Not run by the embedded runner: init containers, lifecycle hooks and volumes
(a pod's files come from the `files` given to `run`); `image` is recorded only.

Promises: every decision (env, command line, restarts, back-off, probe
accounting, status) comes from `isthmus.core.podstatus`; `on_status` is called,
in order and once per change, only when the computed status differs from the
last one reported; after `stop` no process of the pod is left and its
directories are gone; after `close` no process of any pod is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import logging
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from isthmus.components.podrunner.logs import CriLogWriter, read_log
from isthmus.components.podrunner.probes import probe_loop
from isthmus.components.podrunner.process import Process, StartFailure
from isthmus.core import podstatus as ps

log = logging.getLogger(__name__)

Callback = Callable[[str, str, dict[str, Any]], Awaitable[None] | None]
RunnerLookup = Callable[[str, str, str], Mapping[str, str] | Awaitable[Mapping[str, str] | None] | None]


class PodRunnerError(Exception):
    """A request the runner cannot carry out; the message says why."""


class NotFound(PodRunnerError, LookupError):
    """No such pod, container or log here."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _no_lookup(kind: str, namespace: str, name: str) -> None:
    return None


async def _call(callback: Callable[..., Any], *args: Any) -> Any:
    result = callback(*args)
    return await result if inspect.isawaitable(result) else result


class _Container:
    def __init__(self, pod: _Pod, spec: Mapping[str, Any]) -> None:
        self.pod, self.spec = pod, spec
        self.name = str(spec.get("name", ""))
        self.record = ps.ContainerRecord(self.name, str(spec.get("image", "")))
        self.probes = ps.parse_probes(spec, pod_ip=pod.pod_ip)
        self.probe_states: dict[ps.ProbeKind, ps.ProbeState] = {}
        self.proc: Process | None = None
        self.writer: CriLogWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self.kill_task: asyncio.Task[int] | None = None

    @property
    def workdir(self) -> Path:
        wanted = self.spec.get("workingDir")
        if wanted and Path(wanted).is_dir():
            return Path(wanted)
        path = self.pod.dir / self.name
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def log_path(self, index: int) -> Path:
        return self.pod.log_dir / self.name / f"{index}.log"

    async def supervise(self) -> None:
        pod, runner = self.pod, self.pod.runner
        policy = ps.restart_policy(pod.pod)
        while True:
            try:
                env = await self._environment()
            except ps.ContainerConfigError as e:
                self.record = ps.config_error(self.record, str(e))
                await pod.event(self.name, "Warning", "Failed", f"Error: {e}")
                await pod.report()
                await asyncio.sleep(max(runner.backoff.base, 0.1))
                continue
            self.record = ps.attempt(self.record)
            term, force = await self._run_instance(env, self.record.attempts - 1)
            self.record, delay = ps.plan_restart(self.record, term, policy=policy, backoff=runner.backoff,
                                                 pod_ref=pod.ref, force=force)
            await pod.report()
            if delay is None:
                return
            if delay > 0:
                await pod.event(self.name, "Warning", "BackOff",
                                f"Back-off restarting failed container {self.name} in pod {pod.ref}")
                await asyncio.sleep(delay)

    async def _environment(self) -> dict[str, str]:
        pod = self.pod
        data: dict[tuple[str, str], Mapping[str, str] | None] = {}
        for kind, name in ps.referenced_objects(self.spec):
            try:
                data[(kind, name)] = await _call(pod.lookup, kind, pod.namespace, name)
            except Exception as e:
                raise ps.ContainerConfigError(f'cannot read {kind.lower()} "{name}": {e}') from e
        return ps.resolve_env(pod.pod, self.spec, pod_ip=pod.pod_ip, host_ip=pod.host_ip,
                              lookup=lambda kind, _ns, name: data.get((kind, name)),
                              service_env=pod.service_env)

    async def _run_instance(self, env: dict[str, str], index: int) -> tuple[ps.Terminated, bool]:
        pod, clock = self.pod, self.pod.runner.clock
        if index >= 2:  # the current and the previous instance's logs are kept
            with contextlib.suppress(FileNotFoundError):
                self.log_path(index - 2).unlink()
        self.writer = writer = CriLogWriter(self.log_path(index), clock=clock)
        try:
            argv = ps.expand_command(self.spec, env)
            self.proc = proc = await Process.spawn(argv, env=env, cwd=self.workdir, sink=writer)
        except (ps.ContainerStartError, StartFailure) as e:
            writer.close()
            await pod.event(self.name, "Warning", "Failed", f"Error: {e}")
            return ps.start_error(str(e), now=clock()), False
        self.record = ps.started(self.record, now=clock(), container_id=f"isthmus://{proc.pid}",
                                 probes=self.probes)
        self.probe_states = {k: ps.initial_probe_state(k) for k in self.probes}
        await pod.event(self.name, "Normal", "Created", f"Created container {self.name}")
        await pod.event(self.name, "Normal", "Started", f"Started container {self.name}")
        await pod.report()
        started_at = clock()
        tasks = [asyncio.create_task(probe_loop(p, started_at=started_at, clock=clock,
                                                is_started=lambda: self.record.started, env=env,
                                                cwd=self.workdir, on_result=self._on_probe))
                 for p in self.probes.values()]
        try:
            code = await proc.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        killed = self.kill_task is not None
        if self.kill_task is not None:
            await asyncio.gather(self.kill_task, return_exceptions=True)
            self.kill_task = None
        writer.close()
        self.proc = None
        return ps.exited(self.record, returncode=code, now=clock()), killed

    async def _on_probe(self, probe: ps.Probe, state: ps.ProbeState, ok: bool, message: str) -> None:
        self.probe_states[probe.kind] = state
        if not ok:
            await self.pod.event(self.name, "Warning", "Unhealthy",
                                 f"{probe.kind.capitalize()} probe failed: {message}")
        if ps.should_kill(probe, state) and self.proc is not None and self.kill_task is None:
            await self.pod.event(self.name, "Normal", "Killing",
                                 f"Container {self.name} failed {probe.kind} probe, will be restarted")
            grace = probe.termination_grace if probe.termination_grace is not None else self.pod.grace
            self.kill_task = asyncio.create_task(self.proc.terminate(grace))
        record = ps.refresh_ready(self.record, probes=self.probes, states=self.probe_states)
        if record != self.record:
            self.record = record
            await self.pod.report()


class _Pod:
    def __init__(self, runner: PodRunner, pod: Mapping[str, Any], *, pod_ip: str, host_ip: str,
                 env: Mapping[str, str], lookup: RunnerLookup) -> None:
        meta = pod.get("metadata") or {}
        self.runner, self.pod = runner, pod
        self.namespace, self.name = str(meta.get("namespace") or "default"), str(meta.get("name", ""))
        self.uid = str(meta.get("uid", ""))
        self.pod_ip, self.host_ip, self.lookup = pod_ip, host_ip, lookup
        self.ref = f"{self.name}_{self.namespace}({self.uid})"
        key = f"{self.namespace}_{self.name}_{self.uid}"
        self.dir = runner.state_dir / "pods" / key
        self.log_dir = runner.state_dir / "logs" / key
        grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        self.grace = float(grace) if grace is not None else 30.0
        self.service_env = {**runner.base_env, "PATH": runner.path, **env,
                            **ps.isthmus_pod_env(pod, pod_ip), "ISTHMUS_POD_DIR": str(self.dir)}
        self.start_time = runner.clock()
        self.containers = [_Container(self, c) for c in (pod.get("spec") or {}).get("containers") or []]
        self.last_status: dict[str, Any] | None = None
        self._report_lock = asyncio.Lock()

    def write_files(self, files: Mapping[str, bytes]) -> None:
        for name in files:
            rel = PurePosixPath(name)
            if rel.is_absolute() or ".." in rel.parts or not rel.parts:
                raise PodRunnerError(f"pod file {name!r} must be a relative path inside the pod directory")
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, data in files.items():
            target = self.dir.joinpath(*PurePosixPath(name).parts)
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, target)

    def start(self) -> None:
        for c in self.containers:
            c.task = asyncio.create_task(c.supervise(), name=f"pod {self.ref} container {c.name}")

    async def report(self) -> None:
        async with self._report_lock:
            status = ps.build_pod_status(
                self.pod, [c.record for c in self.containers], pod_ip=self.pod_ip, host_ip=self.host_ip,
                start_time=self.start_time, now=self.runner.clock(), previous=self.last_status)
            if status == self.last_status:
                return
            self.last_status = status
            try:
                await _call(self.runner.on_status, self.namespace, self.name, copy.deepcopy(status))
            except Exception:
                log.exception("reporting the status of pod %s/%s failed", self.namespace, self.name)

    async def event(self, container: str | None, type_: str, reason: str, message: str) -> None:
        if self.runner.on_event is None:
            return
        event: dict[str, Any] = {"type": type_, "reason": reason, "message": message}
        if container is not None:
            event["fieldPath"] = f"spec.containers{{{container}}}"
        try:
            await _call(self.runner.on_event, self.namespace, self.name, event)
        except Exception:
            log.exception("reporting an event of pod %s/%s failed", self.namespace, self.name)

    async def shutdown(self, grace: float | None) -> None:
        tasks = [c.task for c in self.containers if c.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        wait = self.grace if grace is None else grace
        running = [c for c in self.containers if c.proc is not None]
        for c in running:
            await self.event(c.name, "Normal", "Killing", f"Stopping container {c.name}")
        await asyncio.gather(*(c.proc.terminate(wait) for c in running if c.proc is not None),
                             return_exceptions=True)
        for c in self.containers:
            if c.writer is not None:
                c.writer.close()
            c.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.log_dir, ignore_errors=True)


class PodRunner:
    """Runs Pods as local processes and reports their status; see the module docstring."""

    def __init__(self, *, state_dir: Path, on_status: Callback, on_event: Callback | None = None,
                 clock: Callable[[], datetime] = _utcnow, backoff_base: float = 10.0,
                 backoff_cap: float = 300.0, backoff_reset: float = 600.0,
                 extra_path: list[str] | None = None, base_env: Mapping[str, str] | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.on_status, self.on_event, self.clock = on_status, on_event, clock
        self.backoff = ps.Backoff(backoff_base, backoff_cap, backoff_reset)
        self.base_env = dict(base_env or {})
        inherited = self.base_env.get("PATH") or os.environ.get("PATH") or os.defpath
        self.path = os.pathsep.join([*(extra_path or []), inherited])
        self._pods: dict[tuple[str, str], _Pod] = {}
        self._closed = False

    def __repr__(self) -> str:
        containers = [c for p in self._pods.values() for c in p.containers]
        alive = sum(c.proc is not None for c in containers)
        state = "closed" if self._closed else "open"
        return (f"<PodRunner {state} pods={len(self._pods)} containers={alive}/{len(containers)} running"
                f" state_dir={str(self.state_dir)!r}>")

    async def run(self, pod: Mapping[str, Any], *, pod_ip: str, host_ip: str,
                  files: Mapping[str, bytes] | None = None, env: Mapping[str, str] | None = None,
                  lookup: RunnerLookup = _no_lookup) -> None:
        """Start the pod, or keep it running (rewriting `files`) when this uid already runs.

        `env` is added to every container with the precedence of Kubernetes'
        service variables (the container's own `env` wins). `lookup(kind,
        namespace, name)` returns a ConfigMap's or Secret's data (Secret values
        decoded), or None when it does not exist; it may be a coroutine function.
        """
        if self._closed:
            raise PodRunnerError("the pod runner is closed; create a new one to run pods")
        meta = pod.get("metadata") or {}
        key = (str(meta.get("namespace") or "default"), str(meta.get("name", "")))
        names = [*key, str(meta.get("uid", "x")),
                 *(str(c.get("name", "")) for c in (pod.get("spec") or {}).get("containers") or [])]
        bad = [n for n in names if not n or "/" in n or n in (".", "..") or "\0" in n]
        if bad:
            raise PodRunnerError(f"pod {key[0]}/{key[1]}: {bad[0]!r} cannot name a pod, uid or container")
        current = self._pods.get(key)
        if current is not None and current.uid == str(meta.get("uid", "")):
            current.pod = pod
            current.write_files(files or {})
            return
        if current is not None:
            await self.stop(*key)
        p = _Pod(self, pod, pod_ip=pod_ip, host_ip=host_ip, env=env or {}, lookup=lookup)
        p.write_files(files or {})
        self._pods[key] = p
        await p.report()
        p.start()

    async def stop(self, namespace: str, name: str, grace: float | None = None) -> None:
        """SIGTERM every container's process group, SIGKILL after `grace` seconds (default: the
        pod's terminationGracePeriodSeconds), then remove the pod's directories."""
        pod = self._pods.pop((namespace, name), None)
        if pod is not None:
            await pod.shutdown(grace)

    async def close(self, grace: float | None = None) -> None:
        """Stop every pod; the runner accepts no more."""
        self._closed = True
        await asyncio.gather(*(self.stop(ns, n, grace) for ns, n in list(self._pods)))

    def running(self) -> list[tuple[str, str]]:
        """(namespace, name) of every pod the runner holds, finished ones included."""
        return sorted(self._pods)

    def status(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The status last reported for the pod (a copy), or None."""
        pod = self._pods.get((namespace, name))
        return copy.deepcopy(pod.last_status) if pod is not None else None

    def log_path(self, namespace: str, name: str, container: str, previous: bool = False) -> Path:
        """The CRI log of the container's latest instance (or the one before, with `previous`)."""
        pod = self._pods.get((namespace, name))
        if pod is None:
            raise NotFound(f'pod "{name}" in namespace "{namespace}" is not running on this node')
        c = next((c for c in pod.containers if c.name == container), None)
        if c is None:
            raise NotFound(f"container {container} is not valid for pod {name}")
        index = c.record.attempts - (2 if previous else 1)
        if index < 0:
            if previous:
                raise NotFound(f'previous terminated container "{container}" in pod "{name}" not found')
            reason = c.record.state.reason if isinstance(c.record.state, ps.Waiting) else "ContainerCreating"
            raise NotFound(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        return c.log_path(index)

    def logs(self, namespace: str, name: str, container: str, *, previous: bool = False,
             tail: int | None = None, follow: bool = False, timestamps: bool = False,
             since_seconds: int | None = None) -> AsyncIterator[bytes]:
        """`kubectl logs` for one container; following ends when that instance has ended."""
        path = self.log_path(namespace, name, container, previous)

        def done() -> bool:
            pod = self._pods.get((namespace, name))
            return pod is None or not any(c.writer is not None and c.writer.path == path and
                                          c.proc is not None for c in pod.containers)

        return read_log(path, tail=tail, follow=follow, timestamps=timestamps,
                        since_seconds=since_seconds, clock=self.clock, done=done)

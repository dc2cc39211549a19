"""One process of a pod: started in its own process group, watched, signalled and reaped.

`Process.spawn` starts a command as a container runtime would for the
embedded runner: stdin is /dev/null, stdout and stderr go to a sink (the CRI
log writer, or a buffer for exec probes), the process leads a new session
(so its whole process group can be signalled at once), and the kernel sends it
SIGKILL if the thread that started it dies (`PR_SET_PDEATHSIG`), so no container
outlives a runner that is killed -9.

Promises:

* a command that cannot be started raises `StartFailure` with the message the
  kubelet would show (`exec: "x": executable file not found in $PATH`);
* when the leading process exits, what is left of its process group is killed
  (a container dies with its main process, as in a PID namespace), before the
  leader is reaped, so the group id cannot have been reused;
* `wait()` returns once the leader has exited and its output has been drained
  (at most `DRAIN_TIMEOUT` seconds after the exit, for output held open by a
  process that left the group);
* the exit is watched with a pidfd, never with a SIGCHLD handler, so other
  users of child processes in the same interpreter are not disturbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

DRAIN_TIMEOUT = 2.0
_PR_SET_PDEATHSIG = 1


class StartFailure(Exception):
    """The process could not be started; the message is what the container's status shows."""


class OutputSink(Protocol):
    def feed(self, stream: str, data: bytes) -> None: ...

    def end(self, stream: str) -> None: ...


def find_executable(name: str, *, path: str, cwd: Path) -> str:
    """The file `name` runs, looked up like Go's exec.LookPath in `path` (the container's PATH)."""
    if "/" in name:
        candidate = Path(name) if name.startswith("/") else cwd / name
        if not candidate.exists():
            raise StartFailure(f'exec: "{name}": stat {name}: no such file or directory')
        if candidate.is_dir() or not os.access(candidate, os.X_OK):
            raise StartFailure(f'exec: "{name}": permission denied')
        return str(candidate)
    for directory in path.split(os.pathsep):
        base = Path(directory or ".")
        candidate = base / name if base.is_absolute() else cwd / base / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise StartFailure(f'exec: "{name}": executable file not found in $PATH')


def _death_signal_setup() -> Callable[[], None]:
    """A preexec function asking the kernel to SIGKILL the child when its parent thread dies."""
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(137)

    return setup


class _Pump(asyncio.Protocol):
    def __init__(self, stream: str, sink: OutputSink, done: asyncio.Future[None]) -> None:
        self._stream, self._sink, self._done = stream, sink, done

    def data_received(self, data: bytes) -> None:
        self._sink.feed(self._stream, data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._sink.end(self._stream)
        if not self._done.done():
            self._done.set_result(None)


class Process:
    """A started process leading its own process group."""

    def __init__(self, popen: subprocess.Popen[bytes], argv: Sequence[str]) -> None:
        self._popen = popen
        self.argv = list(argv)
        self.pid = popen.pid
        self._loop = asyncio.get_running_loop()
        self._exit: asyncio.Future[int] = self._loop.create_future()
        self._pumps: list[asyncio.Future[None]] = []
        self._transports: list[asyncio.BaseTransport] = []
        self._watch_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = f"exited {self._exit.result()}" if self._exit.done() else "running"
        return f"<Process pid={self.pid} {self.argv[0]!r} {state}>"

    @classmethod
    async def spawn(cls, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path,
                    sink: OutputSink) -> Process:
        if not argv:
            raise StartFailure("the container has no command")
        executable = find_executable(argv[0], path=env.get("PATH", ""), cwd=cwd)
        try:
            popen = subprocess.Popen(
                list(argv), executable=executable, env=dict(env), cwd=cwd,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True, preexec_fn=_death_signal_setup(),
            )
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            reason = e.strerror.lower() if isinstance(e, OSError) and e.strerror else str(e)
            raise StartFailure(f'exec: "{argv[0]}": {reason}') from e
        proc = cls(popen, argv)
        try:
            for stream, pipe in (("stdout", popen.stdout), ("stderr", popen.stderr)):
                done: asyncio.Future[None] = proc._loop.create_future()
                proc._pumps.append(done)
                transport, _ = await proc._loop.connect_read_pipe(
                    lambda s=stream, d=done: _Pump(s, sink, d), pipe)  # type: ignore[misc]
                proc._transports.append(transport)
        except BaseException:
            proc._kill_and_reap()  # cancelled while wiring the pipes: nobody else knows the process
            for t in proc._transports:
                t.close()
            raise
        proc._watch_task = asyncio.create_task(proc._watch(), name=f"process-{proc.pid}")
        return proc

    @property
    def returncode(self) -> int | None:
        return self._exit.result() if self._exit.done() else None

    async def wait(self) -> int:
        """The return code (negative: killed by that signal) once the process has ended."""
        return await asyncio.shield(self._exit)

    def signal_group(self, sig: int) -> None:
        if self._popen.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    async def terminate(self, grace: float) -> int:
        """SIGTERM to the group, SIGKILL after `grace` seconds if the leader is still there."""
        if not self._exit.done():
            self.signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self._exit), max(grace, 0.0))
            except TimeoutError:
                self.signal_group(signal.SIGKILL)
        return await self.wait()

    async def _watch(self) -> None:
        try:
            await self._exited()
        except asyncio.CancelledError:
            self._kill_and_reap()  # abandoned (the loop is closing): leave nothing behind
            raise
        code = self._kill_and_reap()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._pumps), DRAIN_TIMEOUT)
        for t in self._transports:
            t.close()
        self._exit.set_result(code)

    def _kill_and_reap(self) -> int:
        # The leader has exited but is not reaped: its pid, and so its group id, is not reused yet.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        return self._popen.wait()

    async def _exited(self) -> None:
        """Returns once the leader has exited, leaving it unreaped."""
        try:
            fd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            fd = -1
        if fd >= 0:
            ready: asyncio.Future[None] = self._loop.create_future()

            def readable() -> None:
                if not ready.done():
                    ready.set_result(None)

            self._loop.add_reader(fd, readable)
            try:
                await ready
            finally:
                self._loop.remove_reader(fd)
                os.close(fd)
            return
        while True:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            if info is not None:
                return
            await asyncio.sleep(0.05)

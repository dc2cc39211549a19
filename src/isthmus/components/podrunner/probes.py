"""Container probes: one check (httpGet, tcpSocket, exec) and the loop that repeats it.

`check` performs a single probe against a running container and says whether
it passed, with the kubelet's failure message (`Get "http://...": dial tcp
...: connect: connection refused`, `HTTP probe failed with statuscode: 503`,
the output of a failed exec command). `probe_loop` runs one probe of one
container instance on the schedule and with the accounting of
`isthmus.core.podstatus` and hands every result to a callback.

Promises: a check never takes much longer than the probe's `timeoutSeconds`
(an exec probe's whole process group is killed at the deadline); checks only
ever connect to the address the probe names (by default the pod's IP); an
HTTPS probe does not verify the certificate, as the kubelet's does not.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path

from isthmus.components.podrunner.process import Process, StartFailure
from isthmus.core.podstatus import (
    ExecAction,
    HTTPGetAction,
    Probe,
    ProbeAction,
    ProbeState,
    TCPSocketAction,
    initial_probe_state,
    probe_active,
    probe_delay,
    record_probe,
    should_kill,
)

USER_AGENT = "kube-probe/1.37"
_MAX_OUTPUT = 10 * 1024


def _reason(e: OSError) -> str:
    return os.strerror(e.errno).lower() if e.errno else str(e) or type(e).__name__


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _http_get(a: HTTPGetAction, timeout: float) -> tuple[bool, str]:
    context = None
    if a.scheme == "HTTPS":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    headers = {"Host": _address(a.host, a.port), "User-Agent": USER_AGENT, "Accept": "*/*"}
    for name, value in a.headers:
        headers[name.title() if name.lower() in ("host", "user-agent", "accept") else name] = value
    headers["Connection"] = "close"
    request = f"GET {a.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    stage = "dial"
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(a.host, a.port, ssl=context)
            stage = "read"
            try:
                writer.write(request.encode("latin-1"))
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
    except TimeoutError:
        return False, f'Get "{a.url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
    except OSError as e:
        if stage == "dial":
            return False, f'Get "{a.url}": dial tcp {_address(a.host, a.port)}: connect: {_reason(e)}'
        return False, f'Get "{a.url}": {_reason(e)}'
    parts = status_line.split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return False, f'Get "{a.url}": malformed HTTP response {status_line[:80]!r}'
    code = int(parts[1])
    if 200 <= code < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {code}"


async def _tcp(a: TCPSocketAction, timeout: float) -> tuple[bool, str]:
    target = _address(a.host, a.port)
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(a.host, a.port)
        writer.close()
    except TimeoutError:
        return False, f"dial tcp {target}: i/o timeout"
    except OSError as e:
        return False, f"dial tcp {target}: connect: {_reason(e)}"
    return True, ""


class _Capture:
    def __init__(self) -> None:
        self.data = bytearray()

    def feed(self, stream: str, data: bytes) -> None:
        self.data += data[: max(_MAX_OUTPUT - len(self.data), 0)]

    def end(self, stream: str) -> None:
        pass


async def _exec(a: ExecAction, timeout: float, env: Mapping[str, str], cwd: Path) -> tuple[bool, str]:
    capture = _Capture()
    try:
        proc = await Process.spawn(a.command, env=env, cwd=cwd, sink=capture)
    except StartFailure as e:
        return False, str(e)
    try:
        code = await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        await proc.terminate(0)
        return False, f"command {' '.join(a.command)!r} timed out"
    finally:
        if proc.returncode is None:
            await proc.terminate(0)
    if code == 0:
        return True, ""
    output = capture.data.decode(errors="replace").strip()
    return False, output or f"command {' '.join(a.command)!r} exited with {code}"


async def check(action: ProbeAction, *, timeout: float, env: Mapping[str, str], cwd: Path) -> tuple[bool, str]:
    """Run one probe; (passed, failure message)."""
    if isinstance(action, HTTPGetAction):
        return await _http_get(action, timeout)
    if isinstance(action, TCPSocketAction):
        return await _tcp(action, timeout)
    if isinstance(action, ExecAction):
        return await _exec(action, timeout, env, cwd)
    return False, action.message


ProbeCallback = Callable[[Probe, ProbeState, bool, str], Awaitable[None]]


async def probe_loop(probe: Probe, *, started_at: datetime, clock: Callable[[], datetime],
                     is_started: Callable[[], bool], env: Mapping[str, str], cwd: Path,
                     on_result: ProbeCallback) -> None:
    """Probe one container instance until cancelled, or until the probe has nothing left to do
    (a startup probe that passed, a liveness or startup probe that asked for a kill)."""
    state = initial_probe_state(probe.kind)
    last_at: datetime | None = None
    passed = False
    while True:
        await asyncio.sleep(probe_delay(probe, started_at=started_at, last_at=last_at, now=clock(),
                                        passed=passed))
        last_at = clock()
        if not probe_active(probe.kind, is_started()):
            continue
        ok, message = await check(probe.action, timeout=probe.timeout, env=env, cwd=cwd)
        state = record_probe(probe, state, ok, message)
        passed = passed or ok
        await on_result(probe, state, ok, message)
        if should_kill(probe, state) or (probe.kind == "startup" and state.value):
            return

"""Container logs in the CRI format, written as the runtime does and read as `kubectl logs` shows them.

Each record is one line of the file:
`2026-11-26T10:00:00.123456789Z stdout F the line`, where the tag is `F` for a
full line and `P` for a partial one (a line longer than 16 KiB is cut into `P`
records followed by an `F`; output that ends without a newline ends with a
`P`). `CriLogWriter` turns a process's stdout/stderr bytes into such records;
`read_log` turns a file of records back into the bytes the container wrote,
with `tail`, `since_seconds`, `timestamps` and `follow` as the kubelet applies
them (tail first, counted in records; then the time filter).

Promises: every record is appended with a single `write`, so a reader never
sees half a record unless the disk is full; the reader never holds more than
one block of the file in memory besides what it yields.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

MAX_RECORD = 16 * 1024
_BLOCK = 64 * 1024


def cri_timestamp(t: datetime) -> bytes:
    """RFC 3339 with exactly nine fraction digits, in UTC (the runtime's log timestamp)."""
    t = t.astimezone(UTC)
    return (t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}000Z").encode()


def rfc3339_nano(ts: bytes) -> bytes:
    """A fixed-width timestamp as Go's RFC3339Nano prints it: trailing fraction zeros removed."""
    if b"." not in ts:
        return ts
    head, _, frac = ts.partition(b".")
    digits = frac.rstrip(b"Z").rstrip(b"0")
    return head + (b"." + digits if digits else b"") + b"Z"


def _parse_timestamp(ts: bytes) -> datetime | None:
    try:
        text = ts.decode().rstrip("Z")
        head, _, frac = text.partition(".")
        return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}").replace(tzinfo=UTC)
    except ValueError:
        return None


class CriLogWriter:
    """Appends a process's output to one log file as CRI records, per stream (stdout, stderr)."""

    def __init__(self, path: Path, *, clock: Callable[[], datetime]) -> None:
        self.path = path
        self._clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._pending: dict[str, bytearray] = {}

    def __repr__(self) -> str:
        return f"<CriLogWriter {self.path} {'open' if self._fd is not None else 'closed'}>"

    def feed(self, stream: str, data: bytes) -> None:
        buf = self._pending.setdefault(stream, bytearray())
        buf += data
        start = 0
        while (end := buf.find(b"\n", start)) >= 0:
            line = bytes(buf[start:end])
            self._emit(stream, b"F", line[:-1] if line.endswith(b"\r") else line)
            start = end + 1
        del buf[:start]
        while len(buf) > MAX_RECORD:
            self._emit(stream, b"P", bytes(buf[:MAX_RECORD]))
            del buf[:MAX_RECORD]

    def end(self, stream: str) -> None:
        """The stream is closed: output left without a newline becomes a partial record."""
        buf = self._pending.pop(stream, None)
        if buf:
            self._emit(stream, b"P", bytes(buf))

    def close(self) -> None:
        for stream in list(self._pending):
            self.end(stream)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _emit(self, stream: str, tag: bytes, content: bytes) -> None:
        if self._fd is None:
            return
        record = b"%s %s %s %s\n" % (cri_timestamp(self._clock()), stream.encode(), tag, content)
        with contextlib.suppress(OSError):  # a full disk loses log lines, never the container
            os.write(self._fd, record)


def _tail_offset(f: int, lines: int) -> int:
    """The offset of the first of the last `lines` records of the file."""
    size = os.fstat(f).st_size
    if lines <= 0:
        return size
    pos = size
    seen = 0
    # The final newline ends the last record; it does not start one.
    skip_last = True
    while pos > 0:
        step = min(_BLOCK, pos)
        pos -= step
        block = os.pread(f, step, pos)
        for i in range(len(block) - 1, -1, -1):
            if block[i] != 0x0A:
                continue
            if skip_last and pos + i == size - 1:
                continue
            seen += 1
            if seen == lines:
                return pos + i + 1
        skip_last = False
    return 0


def _render(line: bytes, *, timestamps: bool, since: datetime | None) -> bytes | None:
    parts = line.split(b" ", 3)
    if len(parts) < 3:
        return None
    ts, _stream, tag = parts[0], parts[1], parts[2]
    content = parts[3] if len(parts) == 4 else b""
    if since is not None:
        when = _parse_timestamp(ts)
        if when is None or when < since:
            return None
    out = content if tag == b"P" else content + b"\n"
    return rfc3339_nano(ts) + b" " + out if timestamps else out


async def read_log(path: Path, *, tail: int | None = None, follow: bool = False,
                   timestamps: bool = False, since_seconds: int | None = None,
                   clock: Callable[[], datetime] | None = None,
                   done: Callable[[], bool] | None = None,
                   poll_interval: float = 0.1) -> AsyncIterator[bytes]:
    """Yield the container's output from a CRI log file, as `kubectl logs` shows it.

    With `follow`, waits for new records until cancelled, until the file is
    removed, or — when `done` is given — until `done()` is true and everything
    written has been yielded. Raises FileNotFoundError when there is no log.
    """
    now = (clock or (lambda: datetime.now(UTC)))()
    since = now - timedelta(seconds=since_seconds) if since_seconds is not None else None
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        pos = _tail_offset(fd, tail) if tail is not None else 0
        rest = b""
        while True:
            finished = done() if done is not None else False
            block = os.pread(fd, _BLOCK, pos)
            if block:
                pos += len(block)
                lines = (rest + block).split(b"\n")
                rest = lines.pop()
                out = [r for r in (_render(x, timestamps=timestamps, since=since) for x in lines) if r]
                if out:
                    yield b"".join(out)
                continue
            if not follow or finished or os.fstat(fd).st_nlink == 0:
                return
            await asyncio.sleep(poll_interval)
    finally:
        os.close(fd)

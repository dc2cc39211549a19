"""Tap fan-out: one stream merged from the proxies of every pod a tap names.

`tap_stream(pods, params, write)` opens each pod's proxy admin ``/tap``
with the caller's filters and writes each event line as it arrives, until
`max` events were written or the caller goes away. In JSON format, events
whose source or destination metadata lack a pod name get it from the pod
at that address (a proxy knows its own pod, not always its peer's). A proxy
that cannot be reached or refuses the filter is reported once, as a line
starting with ``#`` (text) or an ``{"error": ...}`` object (JSON), and the
other proxies' streams go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp
import orjson

__all__ = ["tap_stream"]

log = logging.getLogger("isthmus.viz.tap")
PROXY_ADMIN_PORT = 4191
Write = Callable[[bytes], Awaitable[None]]


def _enrich(line: bytes, pods_by_ip: Mapping[str, Mapping[str, str]]) -> bytes:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    for end in ("source", "destination"):
        peer = event.get(end) or {}
        meta = peer.setdefault("metadata", {})
        known = pods_by_ip.get(peer.get("ip", ""))
        if known and not meta.get("pod"):
            for key, value in known.items():
                meta.setdefault(key, value)
    return orjson.dumps(event) + b"\n"


def _error(fmt: str, text: str) -> bytes:
    if fmt == "json":
        return orjson.dumps({"error": text}) + b"\n"
    return f"# {text}\n".encode()


async def tap_stream(pods: Sequence[Mapping[str, Any]], params: Mapping[str, str], write: Write,
                     *, max_events: int | None = None,
                     pods_by_ip: Mapping[str, Mapping[str, str]] | None = None) -> int:
    """Merge the pods' tap streams into `write`; returns the number of events written."""
    fmt = params.get("format", "text")
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(1000)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)

    async def follow(session: aiohttp.ClientSession, pod: Mapping[str, Any]) -> None:
        ip = (pod.get("status") or {}).get("podIP")
        name = (pod.get("metadata") or {}).get("name")
        url = f"http://{ip}:{PROXY_ADMIN_PORT}/tap"
        try:
            async with session.get(url, params=dict(params)) as response:
                if response.status != 200:
                    text = (await response.text()).strip()
                    await queue.put(_error(fmt, f"pod {name}: {text or response.status}"))
                    return
                async for line in response.content:
                    if line.strip():
                        await queue.put(line)
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            await queue.put(_error(fmt, f"pod {name}: cannot tap its proxy at {url}: "
                                        f"{e or type(e).__name__}"))

    sent = 0
    async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
        tasks = [asyncio.create_task(follow(session, p)) for p in pods]
        try:
            while max_events is None or sent < max_events:
                if all(t.done() for t in tasks) and queue.empty():
                    break
                try:
                    line = await asyncio.wait_for(queue.get(), 1.0)
                except TimeoutError:
                    continue
                if line is None:
                    continue
                if fmt == "json" and pods_by_ip and not line.startswith(b'{"error"'):
                    line = _enrich(line, pods_by_ip)
                await write(line)
                if not line.startswith((b"#", b'{"error"')):
                    sent += 1
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
    return sent

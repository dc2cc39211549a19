"""Polling for the end-to-end tests: wait until something is true, or fail naming it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(what: str, check: Callable[[], T | None], timeout: float = 60, *,
               interval: float = 0.3,
               retry_on: tuple[type[BaseException], ...] = ()) -> T:
    """`check()`'s first truthy value, polled every `interval` seconds.

    Exceptions of the `retry_on` types count as "not yet" (a command that
    fails until the thing exists, say); the timeout's message names `what`
    and the last such exception or value.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = check()
        except retry_on as e:
            value, last = None, e
        else:
            last = value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
        time.sleep(interval)

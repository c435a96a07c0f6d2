"""Waiting on a condition with a deadline, the way GridKV's tests wait (never a fixed sleep)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["wait_for", "wait_until"]


async def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Return once ``predicate()`` is true; checked every 10 ms of the running loop.

    :raises AssertionError: still false after ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout:g}s")
        await asyncio.sleep(0.01)


def wait_for(what: str, check: Callable[[], object], timeout: float = 10.0) -> None:
    """Return once ``check()`` is true, from a thread (checked every 10 ms).

    :raises AssertionError: ``what`` was not reached within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:g}s")
        time.sleep(0.01)

"""The event loops GridKV creates for itself, on uvloop when it is installed.

:class:`gridkv.GridKV` runs its node on a loop thread of its own, and the ``gridkv`` command runs
its nodes in one; both take their loop from :func:`new_event_loop`, which is a uvloop loop when
uvloop is importable (``pip install "gridkv-transport-tcp[uvloop]"``) and asyncio's default one
otherwise. Set ``GRIDKV_NO_UVLOOP=1`` to keep asyncio's loop with uvloop installed.
:class:`gridkv.AsyncGridKV` runs on the caller's loop; start that with :func:`run` (or
``uvloop.run``) to get the same.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["NO_UVLOOP_ENV", "loop_name", "new_event_loop", "run", "uvloop_available"]

T = TypeVar("T")

#: Environment variable that keeps asyncio's own loop even with uvloop installed.
NO_UVLOOP_ENV = "GRIDKV_NO_UVLOOP"


def uvloop_available() -> bool:
    """True when uvloop is importable and not turned off by ``GRIDKV_NO_UVLOOP``."""
    if os.environ.get(NO_UVLOOP_ENV, "") not in ("", "0"):
        return False
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's when :func:`uvloop_available`, asyncio's otherwise."""
    if uvloop_available():
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a loop from :func:`new_event_loop`, like ``asyncio.run``."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``"uvloop"`` or ``"asyncio"``: which implementation ``loop`` is."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"

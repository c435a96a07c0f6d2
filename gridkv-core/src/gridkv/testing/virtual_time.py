"""An asyncio event loop whose clock is virtual: sleeping costs no real time.

When nothing is ready to run, the loop jumps its clock straight to the next timer instead of
waiting. A simulation of a thousand nodes over minutes of protocol time therefore runs as fast
as the CPU allows, and the same inputs give the same schedule on every run. The loop has no
real I/O: it is for code that talks over the in-process memory transport only.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Mapping
from typing import Any

__all__ = ["VirtualTimeLoop", "run_virtual"]


class _NoIOSelector(selectors.BaseSelector):
    """A selector that never reports I/O and, instead of blocking, advances the loop's clock."""

    def __init__(self) -> None:
        self._map: dict[Any, selectors.SelectorKey] = {}
        self.loop: VirtualTimeLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, _fd(fileobj), events, data)
        self._map[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._map.pop(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise RuntimeError(
                "the virtual-time loop has nothing scheduled and no I/O: the simulation "
                "would wait forever"
            )
        if timeout > 0 and self.loop is not None:
            self.loop.advance(timeout)
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._map

    def close(self) -> None:
        self._map.clear()


def _fd(fileobj: Any) -> int:
    return fileobj if isinstance(fileobj, int) else int(fileobj.fileno())


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock that starts at ``start`` seconds."""

    def __init__(self, start: float = 0.0) -> None:
        selector = _NoIOSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_now = start

    def time(self) -> float:
        """The virtual time in seconds."""
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self._virtual_now += seconds


def run_virtual(coro: Any, start: float = 0.0) -> Any:
    """Run ``coro`` to completion on a fresh :class:`VirtualTimeLoop` and close the loop."""
    loop = VirtualTimeLoop(start)
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

"""Request time-outs that share their timers (for the network transports).

A timer per request costs a heap push and an object on every round trip. Requests instead
join the group of their deadline, rounded up to ``granularity`` seconds, and one timer per
group fails those still waiting when it fires: a time-out fires at most ``granularity`` late,
never early, and thousands of requests in flight share a handful of timers.
"""

from __future__ import annotations

import asyncio
import math

__all__ = ["Deadlines"]


class Deadlines:
    """The deadlines of one transport's requests (tcp's, quic's).

    :param granularity: seconds a deadline is rounded up to.
    """

    def __init__(self, granularity: float = 0.01) -> None:
        self._granularity = granularity
        #: slot (deadline / granularity, rounded up) -> the futures that time out then
        self._groups: dict[int, set[asyncio.Future[bytes]]] = {}
        #: slot -> its timer
        self._timers: dict[int, asyncio.TimerHandle] = {}

    def add(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[bytes], wait: float
    ) -> int:
        """Fail ``future`` with :class:`TimeoutError` after ``wait`` seconds; its slot."""
        slot = math.ceil((loop.time() + wait) / self._granularity)
        group = self._groups.get(slot)
        if group is None:
            group = self._groups[slot] = set()
            self._timers[slot] = loop.call_at(slot * self._granularity, self._fire, slot)
        group.add(future)
        return slot

    def discard(self, slot: int, future: asyncio.Future[bytes]) -> None:
        """``future`` no longer needs its time-out (answered, or given up)."""
        group = self._groups.get(slot)
        if group is not None:
            group.discard(future)

    def close(self) -> None:
        """Cancel every timer (the transport closed: it failed what was waiting)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._groups.clear()

    def _fire(self, slot: int) -> None:
        self._timers.pop(slot, None)
        for future in self._groups.pop(slot, ()):
            if not future.done():
                future.set_exception(TimeoutError())

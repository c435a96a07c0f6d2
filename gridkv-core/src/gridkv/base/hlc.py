"""Hybrid logical clock: versions that follow real time and never go backwards.

A timestamp is one 64-bit integer: the upper 48 bits are milliseconds since the Unix epoch,
the lower 16 bits a logical counter that orders events within the same millisecond. Versions
are compared as ``(timestamp, node_id)``: the greater pair wins everywhere, so two writes with
the same timestamp from different nodes still have one winner.

A clock refuses to adopt a remote timestamp that is further ahead of its own physical time than
``max_drift``: a peer with a wild clock would otherwise drag every version forward for good.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from gridkv.base.errors import ClockDriftExceeded

__all__ = [
    "HLC",
    "COUNTER_BITS",
    "MAX_COUNTER",
    "MAX_TIMESTAMP",
    "pack",
    "unpack",
    "physical_ms",
    "version_wins",
]

COUNTER_BITS = 16
MAX_COUNTER = (1 << COUNTER_BITS) - 1
MAX_TIMESTAMP = (1 << 64) - 1
_MAX_MS = (1 << 48) - 1


def pack(ms: int, counter: int) -> int:
    """Combine milliseconds and a counter into one timestamp."""
    if not 0 <= ms <= _MAX_MS:
        raise ValueError(f"HLC milliseconds out of range: {ms}")
    if not 0 <= counter <= MAX_COUNTER:
        raise ValueError(f"HLC counter out of range: {counter}")
    return (ms << COUNTER_BITS) | counter


def unpack(ts: int) -> tuple[int, int]:
    """Split a timestamp into ``(milliseconds, counter)``."""
    return ts >> COUNTER_BITS, ts & MAX_COUNTER


def physical_ms(ts: int) -> int:
    """The millisecond part of a timestamp."""
    return ts >> COUNTER_BITS


def version_wins(ts_a: int, node_a: str, ts_b: int, node_b: str) -> bool:
    """Whether version ``(ts_a, node_a)`` is greater than ``(ts_b, node_b)``: last writer wins."""
    return ts_a > ts_b or (ts_a == ts_b and node_a > node_b)


class HLC:
    """A thread-safe hybrid logical clock.

    :param clock: returns the current wall time in seconds (``time.time`` by default;
        simulations pass a virtual clock).
    :param max_drift: seconds a remote timestamp may be ahead of this clock's wall time.
    """

    __slots__ = ("_clock", "_last", "_lock", "_max_drift_ms")

    def __init__(self, clock: Callable[[], float] = time.time, max_drift: float = 10.0) -> None:
        self._clock = clock
        self._max_drift_ms = int(max_drift * 1000)
        self._last = 0
        self._lock = threading.Lock()

    def _wall_ms(self) -> int:
        return int(self._clock() * 1000)

    def now(self) -> int:
        """Return a timestamp for a local event, greater than every one given out before."""
        wall = int(self._clock() * 1000) << COUNTER_BITS  # _wall_ms, inline (every write)
        lock = self._lock
        lock.acquire()  # cheaper than ``with`` (this is on every write's path)
        try:
            last = self._last
            # When the counter would overflow, borrowing the next millisecond keeps the clock
            # strictly increasing; physical time catches up within a millisecond.
            ts = wall if wall > last else last + 1
            self._last = ts
        finally:
            lock.release()
        return ts

    def update(self, remote: int) -> int:
        """Merge a timestamp received from a peer and return one for the receive event.

        The result is greater than both ``remote`` and every timestamp given out before.

        :raises ClockDriftExceeded: ``remote`` is more than ``max_drift`` ahead of this clock.
        """
        wall_ms = self._wall_ms()
        remote_ms = remote >> COUNTER_BITS
        if remote_ms - wall_ms > self._max_drift_ms:
            raise ClockDriftExceeded(
                f"remote clock is {(remote_ms - wall_ms) / 1000:.3f}s ahead of this node's, "
                f"more than max_clock_drift={self._max_drift_ms / 1000:g}s; fix the peer's clock"
            )
        wall = wall_ms << COUNTER_BITS
        with self._lock:
            ts = max(wall, self._last + 1, remote + 1)
            self._last = ts
            return ts

    def peek(self) -> int:
        """The last timestamp given out (0 before the first)."""
        return self._last

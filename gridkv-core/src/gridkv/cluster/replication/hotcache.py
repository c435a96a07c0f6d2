"""The hot read cache of a non-owner: recent answers from other nodes, for a short while.

A node that does not hold a key's partition has to ask a replica for every ``one`` read. For
keys read over and over (a feature flag, a session hit by every request), the answer is kept
for ``hot_read_cache_ttl`` in a cache of at most ``hot_cache_size`` entries, least recently
used out first. Writes and deletes that go through this node drop the key from the cache, so
a node always reads its own writes; writes made elsewhere are seen once the entry ages out.
A read still in flight when such a write lands does not put its (older) answer back: a read
is bracketed by :meth:`HotCache.begin` and :meth:`HotCache.finish`, which keeps the answer
only if the key was not written meanwhile. Thread-safe: the blocking facade's reads from the
calling threads (:mod:`gridkv.api.direct`) use it beside the node's loop.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from gridkv.storage.base import Entry

__all__ = ["HotCache"]


class HotCache:
    """A bounded, time-limited cache of ``key -> entry or None``.

    :param size: entries kept at most; 0 turns the cache off.
    :param ttl: seconds an entry is kept.
    :param clock: monotonic seconds (the loop's clock in simulations).
    """

    def __init__(self, size: int, ttl: float, clock: Callable[[], float]) -> None:
        self.size = size
        self.ttl = ttl
        self._clock = clock
        self._data: OrderedDict[str, tuple[Entry | None, float]] = OrderedDict()
        # Keys with reads in flight: key -> (reads, written meanwhile).
        self._reading: dict[str, tuple[int, bool]] = {}
        #: Counters.
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    def lookup(self, key: str) -> tuple[bool, Entry | None]:
        """Whether ``key`` is cached, and its entry (``None`` for a cached "not found")."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                self.misses += 1
                return False, None
            entry, expires = item
            if expires <= self._clock():
                del self._data[key]
                self.misses += 1
                return False, None
            self._data.move_to_end(key)
            self.hits += 1
            return True, entry

    def put(self, key: str, entry: Entry | None, until: float | None = None) -> None:
        """Remember an answer from a replica, until ``until`` (default: ``ttl`` from now)."""
        with self._lock:
            self._put(key, entry, until)

    def _put(self, key: str, entry: Entry | None, until: float | None = None) -> None:
        if until is None:
            until = self._clock() + self.ttl
        if self.size <= 0 or until <= self._clock():
            return
        self._data[key] = (entry, until)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def begin(self, key: str) -> None:
        """Note that a read of ``key`` from a replica starts; end it with :meth:`finish`."""
        with self._lock:
            reads, written = self._reading.get(key, (0, False))
            self._reading[key] = (reads + 1, written)

    def finish(self, key: str, entry: Entry | None, until: float | None = None) -> None:
        """A read begun with :meth:`begin` ended with ``entry``; keep it until ``until``.

        The answer is kept unless ``key`` was written or deleted through this node, or an
        invalidation named it, while the read was in flight (it may predate that change).
        """
        with self._lock:
            if not self._abandon(key):
                self._put(key, entry, until)

    def abandon(self, key: str) -> bool:
        """End a read begun with :meth:`begin` that brought no answer.

        Returns whether ``key`` was written through this node while it was in flight.
        """
        with self._lock:
            return self._abandon(key)

    def _abandon(self, key: str) -> bool:
        reads, written = self._reading.pop(key, (1, True))
        if reads > 1:
            self._reading[key] = (reads - 1, written)
        return written

    def invalidate(self, key: str) -> None:
        """Forget a key (this node wrote or deleted it, or a replica said it changed)."""
        with self._lock:
            self._data.pop(key, None)
            reading = self._reading.get(key)
            if reading is not None:
                self._reading[key] = (reading[0], True)

    def clear(self) -> None:
        """Forget everything (ownership changed)."""
        with self._lock:
            self._data.clear()
            self._reading = {key: (reads, True) for key, (reads, _) in self._reading.items()}

    def __len__(self) -> int:
        return len(self._data)

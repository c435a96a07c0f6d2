"""The hot read cache of a non-owner: recent answers from other nodes, for a short while.

A node that does not hold a key's partition has to ask a replica for every ``one`` read. For
keys read over and over (a feature flag, a session hit by every request), the answer is kept
for ``hot_read_cache_ttl`` in a cache of at most ``hot_cache_size`` entries, least recently
used out first. Writes and deletes that go through this node drop the key from the cache, so
a node always reads its own writes; writes made elsewhere are seen once the entry ages out.
Only used on the node's event loop.
"""

from __future__ import annotations

import time
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

    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic):
        self.size = size
        self.ttl = ttl
        self._clock = clock
        self._data: OrderedDict[str, tuple[Entry | None, float]] = OrderedDict()
        #: Counters.
        self.hits = 0
        self.misses = 0

    def lookup(self, key: str) -> tuple[bool, Entry | None]:
        """Whether ``key`` is cached, and its entry (``None`` for a cached "not found")."""
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

    def put(self, key: str, entry: Entry | None) -> None:
        """Remember an answer from a replica."""
        if self.size <= 0 or self.ttl <= 0:
            return
        self._data[key] = (entry, self._clock() + self.ttl)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def invalidate(self, key: str) -> None:
        """Forget a key (this node wrote or deleted it)."""
        self._data.pop(key, None)

    def clear(self) -> None:
        """Forget everything (ownership changed)."""
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

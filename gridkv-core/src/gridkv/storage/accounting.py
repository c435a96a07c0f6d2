"""The memory backend's books: the bytes its records are charged and the counts ``stats()`` shows.

Every record is charged ``sys.getsizeof(key) + sys.getsizeof(record)`` plus a fixed share of its
dict slot (``SLOT_BYTES``, and ``LRU_SLOT_BYTES`` more under LRU). The charge is added on insert
and the difference on overwrite, and given back on delete, expiry, eviction and partition drop,
so ``used`` returns to 0 when the store empties.
"""

from __future__ import annotations

import sys
import threading

from gridkv.storage.record import FLAG_COMPRESSED, FLAG_TOMBSTONE

__all__ = ["EVICTED", "EXPIRED", "LRU_SLOT_BYTES", "SLOT_BYTES", "Accounts"]

#: Share of a dict slot charged per record: 24 bytes of entry plus index and the free third
#: a dict keeps, rounded up.
SLOT_BYTES = 48
#: Extra charge per record under LRU eviction: the recency list's link and its dict slot.
LRU_SLOT_BYTES = 104

#: Why a record went, for :meth:`Accounts.removed`: its time passed (a value's TTL, or a
#: tombstone collected by the sweep).
EXPIRED = 1
#: Why a record went: evicted to make room.
EVICTED = 2

_sizeof = sys.getsizeof


class Accounts:
    """Bytes charged and records counted, under a lock of their own (all shards write them).

    :param lru: the records are also linked in a recency list (charged ``LRU_SLOT_BYTES``).
    """

    __slots__ = (
        "collected",
        "compressed",
        "evictions",
        "expirations",
        "lock",
        "records",
        "slot",
        "tombstones",
        "used",
    )

    def __init__(self, lru: bool) -> None:
        self.lock = threading.Lock()
        self.slot = SLOT_BYTES + (LRU_SLOT_BYTES if lru else 0)
        self.used = 0
        self.records = 0
        self.tombstones = 0
        self.compressed = 0
        self.evictions = 0
        self.expirations = 0
        self.collected = 0

    def cost(self, key: str, record: bytes) -> int:
        """What a stored record is charged."""
        return _sizeof(key) + _sizeof(record) + self.slot

    def stored(self, delta: int, flags: int, old_flags: int) -> None:
        """A record with ``flags`` was stored, adding ``delta`` bytes.

        :param old_flags: those of the record it replaced, -1 for none.
        """
        with self.lock:
            self.used += delta
            if old_flags < 0:
                self.records += 1
            else:
                self.tombstones -= (old_flags & FLAG_TOMBSTONE) >> 1
                self.compressed -= (old_flags & FLAG_COMPRESSED) >> 2
            self.tombstones += (flags & FLAG_TOMBSTONE) >> 1
            self.compressed += (flags & FLAG_COMPRESSED) >> 2

    def removed(self, key: str, record: bytes, why: int = 0) -> None:
        """``record`` of ``key`` went, because it ``EXPIRED``, was ``EVICTED``, or (0) dropped."""
        flags = record[0]
        with self.lock:
            if why == EVICTED:
                self.evictions += 1
            elif why == EXPIRED:
                if flags & FLAG_TOMBSTONE:
                    self.collected += 1
                else:
                    self.expirations += 1
            self.used -= _sizeof(key) + _sizeof(record) + self.slot
            self.records -= 1
            self.tombstones -= (flags & FLAG_TOMBSTONE) >> 1
            self.compressed -= (flags & FLAG_COMPRESSED) >> 2

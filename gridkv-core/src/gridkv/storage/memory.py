"""The sharded in-memory storage backend ("memory").

Layout. Each partition has its own ``dict`` mapping the key (``str``) to one ``bytes`` record::

    flags:u8 | version:u64 | writer:u32 | [expires_at:u64 when FLAG_TTL] | value

``writer`` indexes a table of node ids, so a record costs one small header and no Python
objects beyond the key and the record itself. A plain value (no TTL, not compressed, not a
tombstone) has flags 0 and is read by one dict lookup, one byte test and one slice: that is the
path a local ``get`` takes.

Sharding. Partitions are spread over ``shard_count`` shards (``partition % shard_count``). A
shard owns a lock, taken by writes to its partitions and, under LRU eviction, by reads (which
reorder the recency list); plain reads take no lock, since a single dict lookup is atomic in
CPython. The shard is also the unit of eviction and of the expiry sweep.

Memory accounting. Every record is charged ``sys.getsizeof(key) + sys.getsizeof(record)`` plus
a fixed share of its dict slot (``SLOT_BYTES``, and ``LRU_SLOT_BYTES`` more under LRU). The
charge is added on insert and the difference on overwrite, and given back on delete, expiry,
eviction and partition drop, so ``used_bytes`` returns to 0 when the store empties. A write that
would pass ``storage.max_memory_mb`` raises :class:`~gridkv.errors.MemoryLimitExceeded` with
``eviction = "none"``, or first evicts least-recently-used entries of its shard (then of other
shards whose locks are free) with ``eviction = "lru"``.

Expiry. A record with a TTL past its expiry time reads as missing at once (lazy expiry) and is
removed by the next read that sees it or by :meth:`MemoryStorage.sweep`, which the node calls
every ``storage.expiry_interval`` with a budget, shard by shard. Tombstones carry the time they
may be collected in the same field and are removed by the same sweep.

Compression. A value of at least ``storage.compression_threshold`` bytes is stored
lz4-compressed when that makes it smaller; reads decompress it.
"""

from __future__ import annotations

import struct
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING

import lz4.block
import xxhash

from gridkv.errors import MemoryLimitExceeded
from gridkv.hlc import version_wins
from gridkv.storage.base import Entry, StorageStats

if TYPE_CHECKING:
    from gridkv.options import Options

__all__ = ["MemoryStorage", "SLOT_BYTES", "LRU_SLOT_BYTES"]

FLAG_TTL = 1
FLAG_TOMBSTONE = 2
FLAG_COMPRESSED = 4

_HEADER = struct.Struct("<BQI")
_EXPIRY = struct.Struct("<Q")
_H = _HEADER.size  # 13
_HT = _H + _EXPIRY.size  # 21

#: Share of a dict slot charged per record: 24 bytes of entry plus index and the free third
#: a dict keeps, rounded up.
SLOT_BYTES = 48
#: Extra charge per record under LRU eviction: the recency list's link and its dict slot.
LRU_SLOT_BYTES = 104

_sizeof = sys.getsizeof
_xxh3 = xxhash.xxh3_64_intdigest


def _fingerprint(key: str, version: int, writer: str) -> int:
    return _xxh3(f"{key}\x00{version}\x00{writer}".encode())


_EXPIRED = 1
_EVICTED = 2


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Shard:
    __slots__ = ("lock", "lru")

    def __init__(self, lru: bool) -> None:
        self.lock = threading.Lock()
        # key -> partition, oldest first; only kept under LRU eviction.
        self.lru: OrderedDict[str, int] | None = OrderedDict() if lru else None


class MemoryStorage:
    """The built-in storage backend; see the module documentation for its layout and rules.

    :param partition_count: number of partitions (the node's ``partition_count``).
    :param max_bytes: memory limit in bytes, 0 for none.
    :param shard_count: number of shards.
    :param eviction: ``"none"`` or ``"lru"``.
    :param compression_threshold: compress values at least this long; 0 turns it off.
    :param clock: wall time in seconds; simulations pass a virtual clock.
    """

    name = "memory"

    def __init__(
        self,
        partition_count: int = 1024,
        *,
        max_bytes: int = 0,
        shard_count: int = 32,
        eviction: str = "none",
        compression_threshold: int = 1024,
        clock: object = None,
    ) -> None:
        if eviction not in ("none", "lru"):
            raise ValueError(f"eviction must be 'none' or 'lru', got {eviction!r}")
        self._parts: list[dict[str, bytes]] = [{} for _ in range(partition_count)]
        self._nshards = max(1, min(shard_count, partition_count))
        self._shards = [_Shard(eviction == "lru") for _ in range(self._nshards)]
        self._lru = eviction == "lru"
        self._slot = SLOT_BYTES + (LRU_SLOT_BYTES if self._lru else 0)
        self._max = max_bytes
        self._compress_at = compression_threshold
        self._clock_ms = _now_ms if clock is None else (lambda: int(clock() * 1000))  # type: ignore[operator]
        self._acct = threading.Lock()
        self._used = 0
        self._count = 0
        self._tombstones = 0
        self._compressed = 0
        self._evictions = 0
        self._expirations = 0
        self._writers: list[str] = []
        self._writer_ids: dict[str, int] = {}
        self._sweep_cursor = 0
        # XOR of the fingerprints of each partition's records: equal digests mean (almost
        # surely) equal contents, so anti-entropy compares one number per partition.
        self._digests = [0] * partition_count
        if self._lru:
            self.get = self._get_lru  # type: ignore[method-assign]

    @classmethod
    def from_options(cls, options: Options) -> MemoryStorage:
        """Build the backend from a node's options."""
        s = options.storage
        return cls(
            options.partition_count,
            max_bytes=s.max_memory_mb << 20,
            shard_count=s.shard_count,
            eviction=s.eviction,
            compression_threshold=s.compression_threshold,
        )

    # -- reads ---------------------------------------------------------------------------

    def get(self, partition: int, key: str) -> bytes | None:
        """The live value of ``key``, or ``None`` when missing, expired or deleted."""
        blob = self._parts[partition].get(key)
        if blob is None:
            return None
        if not blob[0]:
            return blob[_H:]
        return self._decode_value(partition, key, blob)

    def _get_lru(self, partition: int, key: str) -> bytes | None:
        shard = self._shards[partition % self._nshards]
        with shard.lock:
            blob = self._parts[partition].get(key)
            if blob is None:
                return None
            shard.lru.move_to_end(key)  # type: ignore[union-attr]
        if not blob[0]:
            return blob[_H:]
        return self._decode_value(partition, key, blob)

    def _decode_value(self, partition: int, key: str, blob: bytes) -> bytes | None:
        flags = blob[0]
        start = _H
        if flags & FLAG_TTL:
            (expires,) = _EXPIRY.unpack_from(blob, _H)
            if expires <= self._clock_ms():
                if not flags & FLAG_TOMBSTONE:
                    self._remove_if_same(partition, key, blob)
                return None
            start = _HT
        if flags & FLAG_TOMBSTONE:
            return None
        if flags & FLAG_COMPRESSED:
            return bytes(lz4.block.decompress(blob[start:]))
        return blob[start:]

    def get_entry(self, partition: int, key: str) -> Entry | None:
        """The stored entry (tombstones included, expired values not), or ``None``."""
        blob = self._parts[partition].get(key)
        if blob is None:
            return None
        entry = self._to_entry(key, blob)
        if entry.value is not None and entry.expired(self._clock_ms()):
            return None
        return entry

    def _to_entry(self, key: str, blob: bytes) -> Entry:
        flags, version, writer = _HEADER.unpack_from(blob)
        start = _H
        expires = 0
        if flags & FLAG_TTL:
            (expires,) = _EXPIRY.unpack_from(blob, _H)
            start = _HT
        value: bytes | None
        if flags & FLAG_TOMBSTONE:
            value = None
        elif flags & FLAG_COMPRESSED:
            value = bytes(lz4.block.decompress(blob[start:]))
        else:
            value = blob[start:]
        return Entry(key, value, version, self._writers[writer], expires)

    def entries(self, partition: int) -> Iterator[Entry]:
        """The entries of a partition (a snapshot; tombstones included, expired values not)."""
        shard = self._shards[partition % self._nshards]
        with shard.lock:
            items = list(self._parts[partition].items())
        now = self._clock_ms()
        for key, blob in items:
            entry = self._to_entry(key, blob)
            if entry.value is None or not entry.expired(now):
                yield entry

    def digest(self, partition: int) -> int:
        """A 64-bit summary of a partition's records (key, version, writer), kept up to date."""
        return self._digests[partition]

    def partition_size(self, partition: int) -> int:
        """Number of records (tombstones included) held for a partition."""
        return len(self._parts[partition])

    # -- writes --------------------------------------------------------------------------

    def _writer_id(self, writer: str) -> int:
        wid = self._writer_ids.get(writer)
        if wid is None:
            with self._acct:
                wid = self._writer_ids.get(writer)
                if wid is None:
                    wid = len(self._writers)
                    self._writers.append(writer)
                    self._writer_ids[writer] = wid
        return wid

    def _encode(self, entry: Entry) -> tuple[bytes, bool]:
        flags = 0
        value = entry.value
        compressed = False
        if value is None:
            flags |= FLAG_TOMBSTONE
            payload = b""
        else:
            payload = value
            if self._compress_at and len(value) >= self._compress_at:
                packed = lz4.block.compress(value, store_size=True)
                if len(packed) < len(value):
                    payload = packed
                    flags |= FLAG_COMPRESSED
                    compressed = True
        wid = self._writer_id(entry.writer)
        if entry.expires_at:
            flags |= FLAG_TTL
            head = _HEADER.pack(flags, entry.version, wid) + _EXPIRY.pack(entry.expires_at)
        else:
            head = _HEADER.pack(flags, entry.version, wid)
        return head + payload, compressed

    def _cost(self, key: str, blob: bytes) -> int:
        return _sizeof(key) + _sizeof(blob) + self._slot

    def apply(self, partition: int, entry: Entry) -> bool:
        """Store ``entry`` if it wins over the stored version; return whether it did.

        :raises MemoryLimitExceeded: storing it would pass the memory limit and nothing can
            be evicted.
        """
        blob, compressed = self._encode(entry)
        key = entry.key
        shard_no = partition % self._nshards
        shard = self._shards[shard_no]
        part = self._parts[partition]
        with shard.lock:
            old = part.get(key)
            if old is not None:
                _, old_version, old_writer = _HEADER.unpack_from(old)
                if not version_wins(
                    entry.version, entry.writer, old_version, self._writers[old_writer]
                ):
                    return False
            delta = self._cost(key, blob) - (self._cost(key, old) if old is not None else 0)
            if delta > 0 and self._max:
                self._reserve(delta, shard_no, key)
            part[key] = blob
            fingerprint = _fingerprint(key, entry.version, entry.writer)
            if old is not None:
                fingerprint ^= _fingerprint(key, old_version, self._writers[old_writer])
            self._digests[partition] ^= fingerprint
            if shard.lru is not None:
                shard.lru[key] = partition
                shard.lru.move_to_end(key)
            with self._acct:
                self._used += delta
                if old is None:
                    self._count += 1
                else:
                    old_flags = old[0]
                    self._tombstones -= (old_flags & FLAG_TOMBSTONE) >> 1
                    self._compressed -= (old_flags & FLAG_COMPRESSED) >> 2
                self._tombstones += entry.value is None
                self._compressed += compressed
        return True

    def _reserve(self, delta: int, shard_no: int, protect: str) -> None:
        """Make room for ``delta`` more bytes; the caller holds shard ``shard_no``'s lock."""
        if self._used + delta <= self._max:
            return
        if self._lru:
            self._evict_locked(self._shards[shard_no], delta, protect)
            for i in range(1, self._nshards):
                if self._used + delta <= self._max:
                    break
                other = self._shards[(shard_no + i) % self._nshards]
                # Only shards whose lock is free: waiting could deadlock with a writer there.
                if other.lock.acquire(blocking=False):
                    try:
                        self._evict_locked(other, delta, protect)
                    finally:
                        other.lock.release()
        if self._used + delta > self._max:
            raise MemoryLimitExceeded(
                f"writing key {protect!r} needs {delta} more bytes but storage holds "
                f"{self._used} of {self._max} bytes (storage.max_memory_mb); delete keys, "
                "raise the limit, or set storage.eviction = 'lru'"
            )

    def _evict_locked(self, shard: _Shard, delta: int, protect: str) -> None:
        lru = shard.lru
        assert lru is not None
        while lru and self._used + delta > self._max:
            key, partition = next(iter(lru.items()))
            if key == protect:
                if len(lru) == 1:
                    return
                lru.move_to_end(key)
                continue
            self._remove_locked(shard, partition, key, _EVICTED)

    def _remove_locked(self, shard: _Shard, partition: int, key: str, why: int = 0) -> None:
        blob = self._parts[partition].pop(key)
        _, version, writer = _HEADER.unpack_from(blob)
        self._digests[partition] ^= _fingerprint(key, version, self._writers[writer])
        if shard.lru is not None:
            shard.lru.pop(key, None)
        flags = blob[0]
        with self._acct:
            if why == _EVICTED:
                self._evictions += 1
            elif why == _EXPIRED and not flags & FLAG_TOMBSTONE:
                self._expirations += 1
            self._used -= self._cost(key, blob)
            self._count -= 1
            self._tombstones -= (flags & FLAG_TOMBSTONE) >> 1
            self._compressed -= (flags & FLAG_COMPRESSED) >> 2

    def _remove_if_same(self, partition: int, key: str, blob: bytes) -> None:
        shard = self._shards[partition % self._nshards]
        with shard.lock:
            if self._parts[partition].get(key) is blob:
                self._remove_locked(shard, partition, key, _EXPIRED)

    def drop_partition(self, partition: int) -> int:
        """Forget a partition this node no longer holds; return the entries dropped."""
        shard = self._shards[partition % self._nshards]
        with shard.lock:
            keys = list(self._parts[partition])
            for key in keys:
                self._remove_locked(shard, partition, key)
        return len(keys)

    def sweep(self, now_ms: int, budget: int) -> int:
        """Remove up to ``budget`` expired values and collectable tombstones; return how many.

        Examines partitions round-robin from where the previous sweep stopped, so repeated
        calls cover the whole store.
        """
        removed = 0
        examined = 0
        nparts = len(self._parts)
        for _ in range(nparts):
            if examined >= budget:
                break
            partition = self._sweep_cursor
            self._sweep_cursor = (self._sweep_cursor + 1) % nparts
            part = self._parts[partition]
            if not part:
                continue
            shard = self._shards[partition % self._nshards]
            with shard.lock:
                for key, blob in list(part.items()):
                    examined += 1
                    flags = blob[0]
                    if flags & FLAG_TTL and _EXPIRY.unpack_from(blob, _H)[0] <= now_ms:
                        self._remove_locked(shard, partition, key, _EXPIRED)
                        removed += 1
        return removed

    # -- figures -------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        """Bytes charged for the stored records."""
        return self._used

    def __len__(self) -> int:
        return self._count

    def stats(self) -> StorageStats:
        """Current figures."""
        return StorageStats(
            backend=self.name,
            keys=self._count - self._tombstones,
            tombstones=self._tombstones,
            used_bytes=self._used,
            max_bytes=self._max,
            evictions=self._evictions,
            expirations=self._expirations,
            compressed=self._compressed,
            shards=self._nshards,
        )

    def close(self) -> None:
        """Drop every record."""
        for partition in range(len(self._parts)):
            self.drop_partition(partition)

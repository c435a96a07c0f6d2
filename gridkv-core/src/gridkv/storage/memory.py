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

Writers. ``writer`` indexes its shard's table of node ids, which counts the records referring to
each id: an id is kept while a record refers to it and its slot is reused afterwards, and the
tables hold at most ``MAX_WRITERS`` ids together, so a stream of made-up writer ids cannot grow
the node for good.

Digests. Each partition keeps the XOR of :func:`~gridkv.storage.base.fingerprint` over its
records, whole and split into ``BUCKETS`` buckets by key hash; anti-entropy compares them.

Memory accounting. Every record is charged ``sys.getsizeof(key) + sys.getsizeof(record)`` plus
a fixed share of its dict slot (``SLOT_BYTES``, and ``LRU_SLOT_BYTES`` more under LRU). The
charge is added on insert and the difference on overwrite, and given back on delete, expiry,
eviction and partition drop, so ``used_bytes`` returns to 0 when the store empties. A write that
would pass ``storage.max_memory_mb`` raises :class:`~gridkv.base.errors.MemoryLimitExceeded` with
``eviction = "none"``, or first evicts least-recently-used values of its shard (then of other
shards whose locks are free) with ``eviction = "lru"``. Tombstones are never evicted: dropping
one early would let an older copy of its value come back; the sweep collects them.

Expiry. A record with a TTL past its expiry time reads as missing at once (lazy expiry) and is
removed by the next read that sees it or by :meth:`MemoryStorage.sweep`, which the node calls
every ``storage.expiry_interval`` with a budget, shard by shard. Tombstones carry the time they
may be collected in the same field, raised on arrival to at least the arrival time, and are
removed by the same sweep once the node's horizon allows (every replica holds them).

Compression. A value of at least ``storage.compression_threshold`` bytes is stored
lz4-compressed when that makes it smaller; reads decompress it.
"""

from __future__ import annotations

import struct
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import lz4.block
import xxhash

from gridkv.base.errors import MemoryLimitExceeded
from gridkv.base.hlc import version_wins
from gridkv.storage.base import (
    BUCKET_BITS,
    BUCKETS,
    HASH_MAX,
    Entry,
    StorageStats,
    TombstoneHorizon,
    VersionRecord,
    bucket_of,
    fingerprint,
    key_hash,
)

if TYPE_CHECKING:
    from gridkv.base.options import Options

__all__ = ["MemoryStorage", "SLOT_BYTES", "LRU_SLOT_BYTES", "MAX_WRITERS"]

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
#: Distinct writer ids the stored records may refer to at once. A real cluster has a few
#: hundred node ids at most (restarted nodes keep theirs); the bound keeps a peer that makes
#: ids up from growing the table without limit.
MAX_WRITERS = 65_536

_sizeof = sys.getsizeof
# The fingerprint and the bucket inlined on the write path (see gridkv.storage.base).
_fingerprint = xxhash.xxh3_64_intdigest
_BUCKET_SHIFT = 64 - BUCKET_BITS

_EXPIRED = 1
_EVICTED = 2


def _wall() -> float:
    return time.time()


class _Shard:
    """A lock, the recency list under LRU, and the writer table of the shard's records.

    The writer table and its reference counts change only under the shard's lock.
    """

    __slots__ = ("free", "lock", "lru", "max_writers", "refs", "writer_ids", "writers")

    def __init__(self, lru: bool, max_writers: int) -> None:
        self.lock = threading.Lock()
        # key -> partition of the values (never tombstones), oldest first; LRU eviction only.
        self.lru: OrderedDict[str, int] | None = OrderedDict() if lru else None
        self.writers: list[str] = []
        self.writer_ids: dict[str, int] = {}
        self.refs: list[int] = []
        self.free: list[int] = []
        self.max_writers = max_writers

    def new_writer(self, writer: str) -> int:
        """A slot for a writer id not in the table yet, with one reference.

        :raises MemoryLimitExceeded: the shard's share of ``MAX_WRITERS`` is in use.
        """
        if self.free:
            wid = self.free.pop()
            self.writers[wid] = writer
            self.refs[wid] = 1
        elif len(self.writers) < self.max_writers:
            wid = len(self.writers)
            self.writers.append(writer)
            self.refs.append(1)
        else:
            raise MemoryLimitExceeded(
                f"the records refer to {MAX_WRITERS} distinct writer ids, the most a "
                f"storage keeps; refused a record of writer {writer[:64]!r}"
            )
        self.writer_ids[writer] = wid
        return wid

    def unref(self, wid: int) -> None:
        """One record less refers to writer ``wid``; its slot is freed at zero."""
        refs = self.refs[wid] - 1
        self.refs[wid] = refs
        if not refs:
            del self.writer_ids[self.writers[wid]]
            self.writers[wid] = ""
            self.free.append(wid)


class MemoryStorage:
    """The built-in storage backend; see the module documentation for its layout and rules.

    :param partition_count: number of partitions (the node's ``partition_count``).
    :param max_bytes: memory limit in bytes, 0 for none.
    :param shard_count: number of shards.
    :param eviction: ``"none"`` or ``"lru"``.
    :param compression_threshold: compress values at least this long; 0 turns it off.
    :param clock: wall time in seconds (the node's clock; simulations pass a virtual one).
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
        clock: Callable[[], float] | None = None,
    ) -> None:
        if eviction not in ("none", "lru"):
            raise ValueError(f"eviction must be 'none' or 'lru', got {eviction!r}")
        self._parts: list[dict[str, bytes]] = [{} for _ in range(partition_count)]
        self._nshards = max(1, min(shard_count, partition_count))
        share = max(1, MAX_WRITERS // self._nshards)
        self._shards = [_Shard(eviction == "lru", share) for _ in range(self._nshards)]
        self._lru = eviction == "lru"
        self._slot = SLOT_BYTES + (LRU_SLOT_BYTES if self._lru else 0)
        self._max = max_bytes
        self._compress_at = compression_threshold
        wall = clock or _wall
        self._clock_ms: Callable[[], int] = lambda: int(wall() * 1000)
        self._acct = threading.Lock()
        self._used = 0
        self._count = 0
        self._tombstones = 0
        self._compressed = 0
        self._evictions = 0
        self._expirations = 0
        self._collected = 0
        self._sweep_cursor = 0
        # XOR of the fingerprints of each partition's records, whole and by bucket: equal
        # digests mean (almost surely) equal contents, so anti-entropy compares numbers.
        self._digests = [0] * partition_count
        self._buckets = [[0] * BUCKETS for _ in range(partition_count)]
        if self._lru:
            self.get = self._get_lru  # type: ignore[method-assign]

    @classmethod
    def from_options(
        cls, options: Options, *, clock: Callable[[], float] | None = None
    ) -> MemoryStorage:
        """Build the backend from a node's options and clock."""
        s = options.storage
        return cls(
            options.partition_count,
            max_bytes=s.max_memory_mb << 20,
            shard_count=s.shard_count,
            eviction=s.eviction,
            compression_threshold=s.compression_threshold,
            clock=clock,
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
            if not blob[0] & FLAG_TOMBSTONE:
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
        shard = self._shards[partition % self._nshards]
        with shard.lock:  # the writer slot of a record may be reused once it is replaced
            blob = self._parts[partition].get(key)
            if blob is None:
                return None
            writer = shard.writers[_HEADER.unpack_from(blob)[2]]
        entry = self._to_entry(key, blob, writer)
        if entry.value is not None and entry.expired(self._clock_ms()):
            return None
        return entry

    def _to_entry(self, key: str, blob: bytes, writer: str) -> Entry:
        flags, version, _ = _HEADER.unpack_from(blob)
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
        return Entry(key, value, version, writer, expires)

    def _snapshot(self, partition: int) -> list[tuple[str, bytes, str]]:
        """``(key, record, writer)`` of a partition's records, taken under its lock."""
        shard = self._shards[partition % self._nshards]
        writers = shard.writers
        unpack = _HEADER.unpack_from
        with shard.lock:
            return [(k, b, writers[unpack(b)[2]]) for k, b in self._parts[partition].items()]

    def entries(self, partition: int) -> Iterator[Entry]:
        """The entries of a partition (a snapshot; tombstones included, expired values not)."""
        now = self._clock_ms()
        for key, blob, writer in self._snapshot(partition):
            entry = self._to_entry(key, blob, writer)
            if entry.value is None or not entry.expired(now):
                yield entry

    def entries_of(self, partition: int, keys: Iterable[str]) -> list[Entry]:
        """The stored entries of ``keys`` (those present; tombstones included)."""
        out = []
        for key in keys:
            entry = self.get_entry(partition, key)
            if entry is not None:
                out.append(entry)
        return out

    def versions(self, partition: int, low: int = 0, high: int = HASH_MAX) -> list[VersionRecord]:
        """The ``(key hash, key, version, writer)`` of the records hashed into ``[low, high]``.

        Values are not read, and expired values are listed too: the digests count them.
        """
        out: list[VersionRecord] = []
        whole = low == 0 and high == HASH_MAX
        for key, blob, writer in self._snapshot(partition):
            h = key_hash(key)
            if whole or low <= h <= high:
                out.append((h, key, _HEADER.unpack_from(blob)[1], writer))
        return out

    def digest(self, partition: int) -> int:
        """The XOR of the fingerprints of a partition's records, read under its lock."""
        with self._shards[partition % self._nshards].lock:
            return self._digests[partition]

    def bucket_digests(self, partition: int) -> list[int]:
        """The partition's bucket digests, read under its lock."""
        with self._shards[partition % self._nshards].lock:
            return list(self._buckets[partition])

    def partition_size(self, partition: int) -> int:
        """Number of records (tombstones included) held for a partition."""
        return len(self._parts[partition])

    def held_partitions(self) -> list[int]:
        """The partitions holding at least one record."""
        return [p for p, records in enumerate(self._parts) if records]

    # -- writes --------------------------------------------------------------------------

    def _payload(self, value: bytes | None) -> tuple[int, bytes]:
        """The flags and stored bytes of a value (compressed when that is smaller)."""
        if value is None:
            return FLAG_TOMBSTONE, b""
        if self._compress_at and len(value) >= self._compress_at:
            packed = lz4.block.compress(value, store_size=True)
            if len(packed) < len(value):
                return FLAG_COMPRESSED, packed
        return 0, value

    def _cost(self, key: str, blob: bytes) -> int:
        return _sizeof(key) + _sizeof(blob) + self._slot

    def apply(self, partition: int, entry: Entry, hash_: int | None = None) -> bool:
        """Store ``entry`` if it wins over the stored version; return whether it did.

        :param hash_: the key's :func:`~gridkv.storage.base.key_hash` when the caller has it
            (it picks the bucket; computed here otherwise).
        :raises MemoryLimitExceeded: storing it would pass the memory limit and nothing can
            be evicted, or ``MAX_WRITERS`` writer ids are in use.
        """
        flags, payload = self._payload(entry.value)  # compression outside the lock
        key = entry.key
        writer = entry.writer
        version = entry.version
        shard_no = partition % self._nshards
        shard = self._shards[shard_no]
        part = self._parts[partition]
        tombstone = flags & FLAG_TOMBSTONE
        with shard.lock:
            old = part.get(key)
            if old is not None:
                _, old_version, old_wid = _HEADER.unpack_from(old)
                old_writer = shard.writers[old_wid]
                if not version_wins(version, writer, old_version, old_writer):
                    return False
            wid = shard.writer_ids.get(writer)
            if wid is None:
                wid = shard.new_writer(writer)
            elif old is None or wid != old_wid:
                shard.refs[wid] += 1
            else:
                old_wid = -1  # the same writer again: its count stays
            expires = entry.expires_at
            if tombstone:
                # Never earlier than its arrival: the sweep's horizon counts on it.
                expires = max(expires, self._clock_ms())
            if expires:
                flags |= FLAG_TTL
                blob = _HEADER.pack(flags, version, wid) + _EXPIRY.pack(expires) + payload
            else:
                blob = _HEADER.pack(flags, version, wid) + payload
            delta = self._cost(key, blob) - (self._cost(key, old) if old is not None else 0)
            if delta > 0 and self._max:
                try:
                    self._reserve(delta, shard_no, key)
                except MemoryLimitExceeded:
                    if old is None or old_wid >= 0:
                        shard.unref(wid)
                    raise
            part[key] = blob
            fp = _fingerprint(f"{key}\x00{version}\x00{writer}".encode())
            if old is not None:
                fp ^= _fingerprint(f"{key}\x00{old_version}\x00{old_writer}".encode())
                if old_wid >= 0:
                    shard.unref(old_wid)
            self._digests[partition] ^= fp
            if hash_ is None:
                hash_ = _fingerprint(key.encode())
            self._buckets[partition][hash_ >> _BUCKET_SHIFT] ^= fp
            lru = shard.lru
            if lru is not None:
                if tombstone:
                    lru.pop(key, None)
                else:
                    lru[key] = partition
                    lru.move_to_end(key)
            with self._acct:
                self._used += delta
                if old is None:
                    self._count += 1
                else:
                    old_flags = old[0]
                    self._tombstones -= (old_flags & FLAG_TOMBSTONE) >> 1
                    self._compressed -= (old_flags & FLAG_COMPRESSED) >> 2
                self._tombstones += tombstone >> 1
                self._compressed += (flags & FLAG_COMPRESSED) >> 2
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
        _, version, wid = _HEADER.unpack_from(blob)
        fp = fingerprint(key, version, shard.writers[wid])
        shard.unref(wid)
        self._digests[partition] ^= fp
        self._buckets[partition][bucket_of(key_hash(key))] ^= fp
        if shard.lru is not None:
            shard.lru.pop(key, None)
        flags = blob[0]
        with self._acct:
            if why == _EVICTED:
                self._evictions += 1
            elif why == _EXPIRED:
                if flags & FLAG_TOMBSTONE:
                    self._collected += 1
                else:
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

    def drop_versions(self, partition: int, versions: Iterable[tuple[str, int, str]]) -> int:
        """Remove each ``(key, version, writer)`` that is still the stored version of its key."""
        shard = self._shards[partition % self._nshards]
        part = self._parts[partition]
        removed = 0
        with shard.lock:
            for key, version, writer in versions:
                blob = part.get(key)
                if blob is None:
                    continue
                _, stored, wid = _HEADER.unpack_from(blob)
                if stored == version and shard.writers[wid] == writer:
                    self._remove_locked(shard, partition, key)
                    removed += 1
        return removed

    def drop_values(self, partition: int) -> int:
        """Remove a partition's values, keep its tombstones; return how many went."""
        shard = self._shards[partition % self._nshards]
        part = self._parts[partition]
        with shard.lock:
            keys = [key for key, blob in part.items() if not blob[0] & FLAG_TOMBSTONE]
            for key in keys:
                self._remove_locked(shard, partition, key)
        return len(keys)

    def drop_older_than(self, version: int) -> int:
        """Remove every record with a version below ``version``; return how many."""
        removed = 0
        for partition, part in enumerate(self._parts):
            if not part:
                continue
            shard = self._shards[partition % self._nshards]
            with shard.lock:
                for key, blob in list(part.items()):
                    if _HEADER.unpack_from(blob)[1] < version:
                        self._remove_locked(shard, partition, key)
                        removed += 1
        return removed

    def sweep(self, now_ms: int, budget: int, horizon: TombstoneHorizon | None = None) -> int:
        """Remove up to ``budget`` expired values and collectable tombstones; return how many.

        Examines partitions round-robin from where the previous sweep stopped, so repeated
        calls cover the whole store. A tombstone is collectable once its stored
        ``expires_at`` has passed and, with a ``horizon``, lies below the horizon of its
        bucket.
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
            limits: Sequence[int] | None = None if horizon is None else horizon(partition)
            shard = self._shards[partition % self._nshards]
            with shard.lock:
                for key, blob in list(part.items()):
                    examined += 1
                    flags = blob[0]
                    if not flags & FLAG_TTL:
                        continue
                    expires = _EXPIRY.unpack_from(blob, _H)[0]
                    if expires > now_ms:
                        continue
                    if (
                        flags & FLAG_TOMBSTONE
                        and horizon is not None
                        and (limits is None or expires >= limits[bucket_of(key_hash(key))])
                    ):
                        continue
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
            writers=len(set().union(*(shard.writer_ids for shard in self._shards))),
            tombstones_collected=self._collected,
        )

    def close(self) -> None:
        """Drop every record."""
        for partition in range(len(self._parts)):
            self.drop_partition(partition)

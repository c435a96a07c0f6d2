"""The sharded in-memory storage backend ("memory").

Layout. Each partition has its own ``dict`` mapping the key (``str``) to one ``bytes`` record
(:mod:`gridkv.storage.record`), whose writer is a slot of its shard's table of node ids
(:mod:`gridkv.storage.writers`): a record costs one small header and no Python objects beyond
the key and the record itself. A plain value is read by one dict lookup, one byte test and one
slice: that is the path a local ``get`` takes.

Sharding. Partitions are spread over ``shard_count`` shards (``partition % shard_count``). A
shard owns a lock, taken by writes to its partitions and, under LRU eviction, by reads (which
reorder the recency list); plain reads take no lock, since a single dict lookup is atomic in
CPython. The shard is also the unit of eviction.

Digests. :class:`~gridkv.storage.digest.Digests` keeps each partition's digest and bucket
digests, updated under the shard's lock on every change of a record.

Memory. :mod:`gridkv.storage.accounting` charges every record its key, its ``bytes`` and a
share of its dict slot, and gives the charge back when the record goes. A write that would pass
``storage.max_memory_mb`` raises :class:`~gridkv.base.errors.MemoryLimitExceeded` with
``eviction = "none"``, or first evicts least-recently-used values of its shard (then of other
shards whose locks are free) with ``eviction = "lru"``. Tombstones are never evicted: dropping
one early would let an older copy of its value come back; the sweep collects them.

Expiry. A record with a TTL past its expiry time reads as missing at once (lazy expiry) and is
removed by the next read that sees it or by :meth:`MemoryStorage.sweep`, which the node calls
every ``storage.expiry_interval`` with a budget, partition by partition. Tombstones carry the
time they may be collected in the same field, raised on arrival to at least the arrival time,
and are removed by the same sweep once the node's horizon allows (every replica holds them).

Compression. A value of at least ``storage.compression_threshold`` bytes is stored
lz4-compressed when that makes it smaller; reads decompress it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import xxhash

from gridkv.base.errors import MemoryLimitExceeded
from gridkv.storage.accounting import EVICTED, EXPIRED, LRU_SLOT_BYTES, SLOT_BYTES, Accounts
from gridkv.storage.base import (
    Entry,
    StorageStats,
    TombstoneHorizon,
    collectable,
    tombstone_limits,
)
from gridkv.storage.digest import (
    BUCKET_SHIFT,
    HASH_MAX,
    WRITER_SALTS,
    Digests,
    VersionRecord,
    key_hash,
    writer_salt,
)
from gridkv.storage.record import (
    FLAG_COMPRESSED,
    FLAG_TOMBSTONE,
    FLAG_TTL,
    HEADER,
    HEADER_SIZE,
    TTL_HEADER_SIZE,
    encode,
    expires_at,
    payload,
    to_entry,
    value_of,
)
from gridkv.storage.writers import MAX_WRITERS, WriterTable

if TYPE_CHECKING:
    from gridkv.base.options import Options

__all__ = ["MemoryStorage", "SLOT_BYTES", "LRU_SLOT_BYTES", "MAX_WRITERS"]

_unpack = HEADER.unpack_from
_pack = HEADER.pack
_xxh3 = xxhash.xxh3_64_intdigest
_H = HEADER_SIZE
_sizeof = sys.getsizeof
#: What ``sys.getsizeof`` adds to a ``bytes`` object's length.
_BYTES_SIZE = sys.getsizeof(b"")


def _wall() -> float:
    return time.time()


class _Shard(WriterTable):
    """A lock, the recency list under LRU, and the writer table of the shard's records.

    The writer table and the recency list change only under the lock.
    """

    __slots__ = ("lock", "lru")

    def __init__(self, lru: bool, max_writers: int) -> None:
        super().__init__(max_writers)
        self.lock = threading.Lock()
        # key -> partition of the values (never tombstones), oldest first; LRU eviction only.
        self.lru: OrderedDict[str, int] | None = OrderedDict() if lru else None


class MemoryStorage:
    """The built-in storage backend; see the module documentation for its layout and rules.

    :param partition_count: number of partitions (the node's ``partition_count``).
    :param max_bytes: memory limit in bytes, 0 for none.
    :param shard_count: number of shards.
    :param eviction: ``"none"`` or ``"lru"``.
    :param compression_threshold: compress values at least this long; 0 turns it off.
    :param clock: wall time in seconds (the node's clock; simulations pass a virtual one).
    :param max_writers: distinct writer ids the records may refer to at once.
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
        max_writers: int = MAX_WRITERS,
    ) -> None:
        if eviction not in ("none", "lru"):
            raise ValueError(f"eviction must be 'none' or 'lru', got {eviction!r}")
        self._parts: list[dict[str, bytes]] = [{} for _ in range(partition_count)]
        self._nshards = max(1, min(shard_count, partition_count))
        share = max(1, max_writers // self._nshards)
        self._shards = [_Shard(eviction == "lru", share) for _ in range(self._nshards)]
        self._lru = eviction == "lru"
        self._max = max_bytes
        self._compress_at = compression_threshold
        #: Values shorter than this are stored as they are (never compressed).
        self._compress_below = compression_threshold or (1 << 62)
        wall = clock or _wall
        self._clock_ms: Callable[[], int] = lambda: int(wall() * 1000)
        self._digests = Digests(partition_count)
        self._accounts = Accounts(self._lru)
        self._sweep_cursor = 0
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

    def plain_parts(self) -> list[dict[str, bytes]] | None:
        """The partitions' dicts, for a reader that does what :meth:`get` does, inline.

        Such a reader looks the key up in its partition's dict without a lock; a record
        whose first byte is 0 holds the value from :data:`~gridkv.storage.record.HEADER_SIZE`
        on, and any other record is read through :meth:`get` (it may have expired, be a
        tombstone or be compressed). The list and its dicts stay the same objects for the
        backend's life. ``None`` under LRU eviction, where every read reorders the recency
        list; a subclass that changes :meth:`get` must return ``None`` too.
        """
        return None if self._lru else self._parts

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
        """The value of a record that is not a plain one; removes it when it has expired."""
        flags = blob[0]
        if flags & FLAG_TOMBSTONE:
            return None
        if flags & FLAG_TTL and expires_at(blob) <= self._clock_ms():
            self._remove_if_same(partition, key, blob)
            return None
        return value_of(blob)

    def get_entry(self, partition: int, key: str) -> Entry | None:
        """The stored entry (tombstones included, expired values not), or ``None``."""
        shard = self._shards[partition % self._nshards]
        with shard.lock:  # the writer slot of a record may be reused once it is replaced
            blob = self._parts[partition].get(key)
            if blob is None:
                return None
            writer = shard.writers[_unpack(blob)[2]]
        entry = to_entry(key, blob, writer)
        if entry.value is not None and entry.expired(self._clock_ms()):
            return None
        return entry

    def _snapshot(self, partition: int) -> list[tuple[str, bytes, str]]:
        """``(key, record, writer)`` of a partition's records, taken under its lock."""
        shard = self._shards[partition % self._nshards]
        writers = shard.writers
        with shard.lock:
            return [(k, b, writers[_unpack(b)[2]]) for k, b in self._parts[partition].items()]

    def entries(self, partition: int) -> Iterator[Entry]:
        """The entries of a partition (a snapshot; tombstones included, expired values not)."""
        now = self._clock_ms()
        for key, blob, writer in self._snapshot(partition):
            entry = to_entry(key, blob, writer)
            if entry.value is None or not entry.expired(now):
                yield entry

    def entries_of(self, partition: int, keys: Iterable[str]) -> list[Entry]:
        """The stored entries of ``keys`` (those present; tombstones, not expired values)."""
        out = []
        for key in keys:
            entry = self.get_entry(partition, key)
            if entry is not None:
                out.append(entry)
        return out

    def versions(self, partition: int, low: int = 0, high: int = HASH_MAX) -> list[VersionRecord]:
        """The ``(key hash, key, version, writer)`` of the records hashed into ``[low, high]``.

        Values are not read, and expired values not removed yet are listed too: the digests
        count them.
        """
        out: list[VersionRecord] = []
        whole = low == 0 and high == HASH_MAX
        for key, blob, writer in self._snapshot(partition):
            h = key_hash(key)
            if whole or low <= h <= high:
                out.append((h, key, _unpack(blob)[1], writer))
        return out

    def digest(self, partition: int) -> int:
        """The XOR of the fingerprints of a partition's records, read under its lock."""
        with self._shards[partition % self._nshards].lock:
            return self._digests.digest(partition)

    def bucket_digests(self, partition: int) -> list[int]:
        """The partition's bucket digests, read under its lock."""
        with self._shards[partition % self._nshards].lock:
            return self._digests.bucket_digests(partition)

    def partition_size(self, partition: int) -> int:
        """Number of records (tombstones included) held for a partition."""
        return len(self._parts[partition])

    def held_partitions(self) -> list[int]:
        """The partitions holding at least one record."""
        return [p for p, records in enumerate(self._parts) if records]

    # -- writes --------------------------------------------------------------------------

    def apply(self, partition: int, entry: Entry, hash_: int | None = None) -> bool:
        """Store ``entry`` if it wins over the stored version; return whether it did.

        :param hash_: the key's :func:`~gridkv.storage.digest.key_hash` when the caller has it
            (it picks the bucket; computed here otherwise).
        :raises MemoryLimitExceeded: storing it would pass the memory limit and nothing can
            be evicted, or ``max_writers`` writer ids are in use.
        """
        stored = entry.value
        if stored is not None and len(stored) < self._compress_below:
            flags = 0  # payload()'s answer for a value too short to compress, inline
        else:
            flags, stored = payload(stored, self._compress_at)  # compressed outside the lock
        key = entry.key
        writer = entry.writer
        version = entry.version
        shard_no = partition % self._nshards
        shard = self._shards[shard_no]
        part = self._parts[partition]
        tombstone = flags & FLAG_TOMBSTONE
        lock = shard.lock
        lock.acquire()  # cheaper than ``with`` (every write comes here)
        try:
            old = part.get(key)
            if old is not None:
                _, old_version, old_wid = _unpack(old)
                old_writer = shard.writers[old_wid]
                # version_wins(version, writer, old_version, old_writer), inline
                if version < old_version or (version == old_version and writer <= old_writer):
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
                blob = encode(flags, version, wid, expires, stored)
            else:  # encode()'s answer without an expiry, inline
                blob = _pack(flags, version, wid) + stored
            # Accounts.delta, inline: a bytes object's size is a constant plus its length.
            if old is None:
                delta = _sizeof(key) + _BYTES_SIZE + len(blob) + self._accounts.slot
            else:
                delta = len(blob) - len(old)
            if delta > 0 and self._max:
                try:
                    self._reserve(delta, shard_no, key)
                except MemoryLimitExceeded:
                    if old is None or old_wid >= 0:
                        shard.unref(wid)
                    raise
            part[key] = blob
            # Digests.add / Digests.replace, inline (every write comes here): XOR in the new
            # record's fingerprint and, for a replace, the old one's, which takes it out.
            raw = key.encode()
            salt = WRITER_SALTS.get(writer) or writer_salt(writer)
            fp = _xxh3(raw, version ^ salt)
            if old is not None:
                if old_writer != writer:
                    salt = writer_salt(old_writer)
                fp ^= _xxh3(raw, old_version ^ salt)
                if old_wid >= 0:
                    shard.unref(old_wid)
            digests = self._digests
            digests.whole[partition] ^= fp
            if hash_ is None:
                hash_ = _xxh3(raw)
            digests.buckets[partition][hash_ >> BUCKET_SHIFT] ^= fp
            lru = shard.lru
            if lru is not None:
                if tombstone:
                    lru.pop(key, None)
                else:
                    lru[key] = partition
                    lru.move_to_end(key)
            if old is None or delta or flags != old[0]:  # else the books do not change
                self._accounts.stored(delta, flags, -1 if old is None else old[0])
        finally:
            lock.release()
        return True

    def _reserve(self, delta: int, shard_no: int, protect: str) -> None:
        """Make room for ``delta`` more bytes; the caller holds shard ``shard_no``'s lock."""
        accounts = self._accounts
        if accounts.used + delta <= self._max:
            return
        if self._lru:
            self._evict_locked(self._shards[shard_no], delta, protect)
            for i in range(1, self._nshards):
                if accounts.used + delta <= self._max:
                    break
                other = self._shards[(shard_no + i) % self._nshards]
                # Only shards whose lock is free: waiting could deadlock with a writer there.
                if other.lock.acquire(blocking=False):
                    try:
                        self._evict_locked(other, delta, protect)
                    finally:
                        other.lock.release()
        if accounts.used + delta > self._max:
            raise MemoryLimitExceeded(
                f"writing key {protect!r} needs {delta} more bytes but storage holds "
                f"{accounts.used} of {self._max} bytes (storage.max_memory_mb); delete keys, "
                "raise the limit, or set storage.eviction = 'lru'"
            )

    def _evict_locked(self, shard: _Shard, delta: int, protect: str) -> None:
        lru = shard.lru
        assert lru is not None
        while lru and self._accounts.used + delta > self._max:
            key, partition = next(iter(lru.items()))
            if key == protect:
                if len(lru) == 1:
                    return
                lru.move_to_end(key)
                continue
            self._remove_locked(shard, partition, key, EVICTED)

    def _remove_locked(self, shard: _Shard, partition: int, key: str, why: int = 0) -> None:
        blob = self._parts[partition].pop(key)
        _, version, wid = _unpack(blob)
        self._digests.remove(partition, key, version, shard.writers[wid])
        shard.unref(wid)
        if shard.lru is not None:
            shard.lru.pop(key, None)
        self._accounts.removed(key, blob, why)

    def _remove_if_same(self, partition: int, key: str, blob: bytes) -> None:
        shard = self._shards[partition % self._nshards]
        with shard.lock:
            if self._parts[partition].get(key) is blob:
                self._remove_locked(shard, partition, key, EXPIRED)

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
                _, stored, wid = _unpack(blob)
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
                    if _unpack(blob)[1] < version:
                        self._remove_locked(shard, partition, key)
                        removed += 1
        return removed

    def sweep(self, now_ms: int, budget: int, horizon: TombstoneHorizon | None = None) -> int:
        """Remove up to ``budget`` expired values and collectable tombstones; return how many.

        Examines whole partitions round-robin from where the previous sweep stopped, until
        ``budget`` records were examined or removed, so repeated calls cover the whole store.
        A partition left unfinished because the budget ran out is examined again first next
        time. What may go is :func:`~gridkv.storage.base.collectable`.
        """
        removed = 0
        examined = 0
        nparts = len(self._parts)
        for _ in range(nparts):
            if examined >= budget or removed >= budget:
                break
            partition = self._sweep_cursor
            part = self._parts[partition]
            finished = True
            if part:
                limits = tombstone_limits(horizon, partition)
                shard = self._shards[partition % self._nshards]
                with shard.lock:
                    for key, blob in list(part.items()):
                        if removed >= budget:
                            finished = False
                            break
                        examined += 1
                        flags = blob[0]
                        if flags & FLAG_TTL and collectable(
                            key, expires_at(blob), flags & FLAG_TOMBSTONE != 0, now_ms, limits
                        ):
                            self._remove_locked(shard, partition, key, EXPIRED)
                            removed += 1
            if finished:
                self._sweep_cursor = (partition + 1) % nparts
        return removed

    # -- figures -------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        """Bytes charged for the stored records."""
        return self._accounts.used

    def __len__(self) -> int:
        return self._accounts.records

    def stats(self) -> StorageStats:
        """Current figures."""
        books = self._accounts
        return StorageStats(
            backend=self.name,
            keys=books.records - books.tombstones,
            tombstones=books.tombstones,
            used_bytes=books.used,
            max_bytes=self._max,
            evictions=books.evictions,
            expirations=books.expirations,
            compressed=books.compressed,
            shards=self._nshards,
            writers=len(set().union(*(shard.writer_ids for shard in self._shards))),
            tombstones_collected=books.collected,
        )

    def compression_sample(self, limit: int = 1000, scan: int = 100_000) -> tuple[int, int]:
        """(value bytes, stored bytes) of up to ``limit`` compressed records.

        At most ``scan`` records are looked at: the compression ratio, estimated off the
        write path. A compressed value holds its own size (lz4's block header), so nothing is
        charged for it when it is written.
        """
        raw = stored = found = seen = 0
        for part in self._parts:
            for blob in list(part.values()):
                seen += 1
                if blob[0] & FLAG_COMPRESSED:
                    start = TTL_HEADER_SIZE if blob[0] & FLAG_TTL else HEADER_SIZE
                    raw += int.from_bytes(blob[start : start + 4], "little")
                    stored += len(blob) - start
                    found += 1
                    if found >= limit:
                        return raw, stored
                if seen >= scan:
                    return raw, stored
        return raw, stored

    def close(self) -> None:
        """Drop every record."""
        for partition in range(len(self._parts)):
            self.drop_partition(partition)

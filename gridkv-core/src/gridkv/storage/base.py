"""The storage interface every backend implements, and the entry type it exchanges.

The digest arithmetic (:func:`fingerprint`, :func:`key_hash`, the buckets) lives in
:mod:`gridkv.storage.digest`; its names are re-exported here, where callers have always found
them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, NamedTuple, Protocol, runtime_checkable

from msgspec import Meta

from gridkv.base.hlc import version_wins
from gridkv.storage.digest import (
    BUCKET_BITS,
    BUCKETS,
    HASH_MAX,
    VersionRecord,
    bucket_of,
    bucket_range,
    fingerprint,
    key_hash,
)

if TYPE_CHECKING:
    from gridkv.base.options import Options

__all__ = [
    "Entry",
    "make_entry",
    "Storage",
    "StorageFactory",
    "StorageStats",
    "merge",
    "BUCKET_BITS",
    "BUCKETS",
    "HASH_MAX",
    "key_hash",
    "bucket_of",
    "bucket_range",
    "fingerprint",
    "TombstoneHorizon",
    "VersionRecord",
    "collectable",
    "tombstone_limits",
]

#: ``horizon(partition)`` for the expiry sweep: per bucket, tombstones stored with an
#: ``expires_at`` below this many milliseconds may be collected; ``None``: none may.
TombstoneHorizon = Callable[[int], "Sequence[int] | None"]

_ANY_EXPIRED = (1 << 64,) * BUCKETS
_NONE = (0,) * BUCKETS


def tombstone_limits(horizon: TombstoneHorizon | None, partition: int) -> Sequence[int]:
    """Per bucket, the ``expires_at`` a tombstone of ``partition`` must be below to be collected.

    Without a ``horizon`` every expired tombstone may go; a horizon that answers ``None`` for
    the partition keeps them all.
    """
    if horizon is None:
        return _ANY_EXPIRED
    limits = horizon(partition)
    return _NONE if limits is None else limits


def collectable(
    key: str, expires_at: int, tombstone: bool, now_ms: int, limits: Sequence[int]
) -> bool:
    """Whether the expiry sweep may remove a record: the rule every backend's sweep follows.

    The record has expired (``expires_at`` not 0 and at most ``now_ms``) and, for a
    tombstone, its ``expires_at`` is below the limit of its key's bucket (``limits`` from
    :func:`tombstone_limits`).
    """
    if not 0 < expires_at <= now_ms:
        return False
    return not tombstone or expires_at < limits[bucket_of(key_hash(key))]


#: The longest key (in characters) a message may carry.
MAX_KEY_CHARS_ON_WIRE = 65535
#: The longest node id (in characters).
MAX_NODE_ID_CHARS = 255


class Entry(NamedTuple):
    """One stored version of a key: a value or a tombstone; immutable.

    A named tuple: built by one C call (:func:`make_entry`) and read by C field getters, on
    every write and every entry a peer sends.

    :ivar key: the key.
    :ivar value: the value, or ``None`` for a tombstone (a delete).
    :ivar version: the HLC timestamp of the write.
    :ivar writer: the node id that made the write; breaks ties between equal timestamps.
    :ivar expires_at: absolute expiry in milliseconds since the epoch, 0 for never. For a
        tombstone, the time after which it may be collected.
    """

    # The annotations carry the wire's limits: the codec has msgspec check an entry a peer
    # sends against them as it builds the Entry (see gridkv.wire.codec).
    key: Annotated[str, Meta(min_length=1, max_length=MAX_KEY_CHARS_ON_WIRE)]
    value: bytes | None
    version: Annotated[int, Meta(ge=0)]  # (msgpack carries no integer above 64 bits)
    writer: Annotated[str, Meta(min_length=1, max_length=MAX_NODE_ID_CHARS)]
    expires_at: Annotated[int, Meta(ge=0)] = 0

    @property
    def tombstone(self) -> bool:
        """Whether this entry records a delete."""
        return self.value is None

    def wins_over(self, other: Entry) -> bool:
        """Whether this version beats ``other`` (greater ``(version, writer)``)."""
        return version_wins(self.version, self.writer, other.version, other.writer)

    def expired(self, now_ms: int) -> bool:
        """Whether the entry has passed its expiry time at ``now_ms``."""
        return self.expires_at != 0 and self.expires_at <= now_ms


_tuple_new = tuple.__new__


def make_entry(key: str, value: bytes | None, version: int, writer: str, expires_at: int) -> Entry:
    """``Entry(key, value, version, writer, expires_at)``, built faster (hot paths)."""
    return _tuple_new(Entry, (key, value, version, writer, expires_at))


def merge(a: Entry | None, b: Entry | None) -> Entry | None:
    """Last-writer-wins merge: the entry with the greater ``(version, writer)``.

    Commutative, associative and idempotent, so replicas that see the same set of writes in
    any order and any number of times end in the same state.
    """
    if a is None:
        return b
    if b is None:
        return a
    return b if b.wins_over(a) else a


@dataclass(frozen=True, slots=True)
class StorageStats:
    """Figures about a storage backend.

    :ivar backend: the backend's plugin name.
    :ivar keys: values stored (an expired value counts until it is removed); ``keys +
        tombstones`` is the sum of :meth:`Storage.partition_size` over the partitions.
    :ivar tombstones: delete markers, kept until ``tombstone_ttl`` has passed and every
        replica holds them (see ``docs/replication.md``).
    :ivar used_bytes: memory charged for the entries (see ``docs/architecture.md``).
    :ivar max_bytes: the limit, 0 for none.
    :ivar evictions: entries evicted to stay under the limit.
    :ivar expirations: values removed because their TTL passed (by a read or the sweep).
    :ivar compressed: entries stored compressed (0 for a backend that does not compress).
    :ivar shards: number of shards (1 for a backend without).
    :ivar writers: distinct writer ids the stored records refer to.
    :ivar tombstones_collected: tombstones removed by the sweep so far.
    """

    backend: str
    keys: int
    tombstones: int
    used_bytes: int
    max_bytes: int
    evictions: int
    expirations: int
    compressed: int
    shards: int
    writers: int = 0
    tombstones_collected: int = 0


@runtime_checkable
class Storage(Protocol):
    """A node's local store, organised by partition.

    Every write goes through :meth:`apply`, which keeps the entry only when it wins the
    last-writer-wins comparison against what is stored, so local writes, replication, read
    repair, anti-entropy and handoff all follow one rule. Implementations are thread-safe.

    A backend is built by its :class:`StorageFactory` with the node's clock and judges time
    (TTLs, a tombstone's arrival) only by it. Its :meth:`digest` and :meth:`bucket_digests`
    must equal :func:`gridkv.storage.digest.digests_of` over :meth:`versions`, so replicas on
    different backends compare; :class:`gridkv.storage.digest.Digests` keeps them. The
    conformance suite :class:`gridkv.testing.StorageConformance` checks all of this.
    """

    name: str

    def get(self, partition: int, key: str) -> bytes | None:
        """The live value of ``key``, or ``None`` when missing, expired or deleted."""

    def get_entry(self, partition: int, key: str) -> Entry | None:
        """The stored entry (tombstones included, expired values not), or ``None``."""

    def apply(self, partition: int, entry: Entry, hash_: int | None = None) -> bool:
        """Store ``entry`` if it wins over the stored version; return whether it did.

        ``hash_`` is the key's :func:`key_hash` when the caller has it already (a backend may
        use it for the bucket digests instead of hashing the key again).

        A tombstone is stored with ``expires_at`` raised to at least the storage's current
        time, so a tombstone's stored expiry is never earlier than the moment it arrived (the
        expiry sweep relies on it; see :meth:`sweep`).

        :raises MemoryLimitExceeded: storing it would pass the memory limit and nothing can
            be evicted (tombstones are never evicted), or the table of writer ids is full; the
            message names the key, and what was stored stays.
        """

    def entries(self, partition: int) -> Iterator[Entry]:
        """The entries of a partition (a snapshot; tombstones included, expired values not)."""

    def entries_of(self, partition: int, keys: Iterable[str]) -> list[Entry]:
        """The stored entries of ``keys`` (present ones; tombstones, not expired values)."""

    def versions(self, partition: int, low: int = 0, high: int = HASH_MAX) -> list[VersionRecord]:
        """The ``(key hash, key, version, writer)`` of the records hashed into ``[low, high]``.

        Both ends inclusive, in no particular order; values are not read. Every stored record
        is listed (expired values not removed yet too), :meth:`partition_size` of them for the
        whole range: the digests are computed over exactly these.
        """

    def drop_partition(self, partition: int) -> int:
        """Forget a partition this node no longer holds; return the entries dropped."""

    def drop_versions(self, partition: int, versions: Iterable[tuple[str, int, str]]) -> int:
        """Remove each ``(key, version, writer)`` that is still the stored version of its key.

        Handoff uses it to drop exactly what the new replicas acknowledged: a newer write that
        arrived meanwhile stays. Returns the records removed.
        """

    def drop_values(self, partition: int) -> int:
        """Remove a partition's values but keep its tombstones; return how many went.

        Handoff abandons a partition this way: an old value must not arrive late anywhere,
        but a tombstone only ever deletes, and may still be the last copy of a delete.
        """

    def drop_older_than(self, version: int) -> int:
        """Remove every record with a version below ``version``; return how many."""

    def held_partitions(self) -> list[int]:
        """The partitions holding at least one record."""

    def partition_size(self, partition: int) -> int:
        """Number of records (tombstones included) held for a partition."""

    def digest(self, partition: int) -> int:
        """A summary of the partition's records; equal on two replicas with equal records.

        The XOR of :func:`fingerprint` over the records, read under the partition's lock:
        ``digests_of(self.versions(partition)).digest``.
        """

    def bucket_digests(self, partition: int) -> list[int]:
        """The partition's ``BUCKETS`` bucket digests (XORs of :func:`fingerprint` by bucket)."""

    def sweep(self, now_ms: int, budget: int, horizon: TombstoneHorizon | None = None) -> int:
        """Remove up to ``budget`` expired values and collectable tombstones; return how many.

        A record has expired when its ``expires_at`` is not 0 and at most ``now_ms``. Without
        ``horizon`` an expired tombstone is collectable. With one, only when its stored
        ``expires_at`` is also below ``horizon(partition)[bucket]`` of its bucket (the node
        passes the moment every replica confirmed holding it); a ``None`` horizon keeps the
        partition's tombstones. Repeated calls cover the whole store.
        """

    def stats(self) -> StorageStats:
        """Current figures."""

    def close(self) -> None:
        """Release everything; the storage is not used afterwards."""


class StorageFactory(Protocol):
    """Builds a storage backend for a node; registered through ``gridkv_register_storage``."""

    def __call__(self, options: Options, *, clock: Callable[[], float]) -> Storage:
        """Return a new backend configured from ``options``.

        :param clock: the node's wall clock in seconds; TTLs and tombstones are judged by it
            (simulations pass a virtual one).
        """

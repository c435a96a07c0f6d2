"""The partition digests anti-entropy compares, defined once for every storage backend.

A record's share of the digests is its :func:`fingerprint`, a 64-bit hash of
``(key, version, writer)``. A partition's digest is the XOR of its records' fingerprints, and
its ``BUCKETS`` bucket digests are the same XOR split by the top ``BUCKET_BITS`` bits of each
key's :func:`key_hash`. XOR makes the digests incremental (adding and removing a record are the
same operation) and independent of order, so two replicas holding the same records have the
same digests whatever backend holds them and in whatever order the writes came.

A backend keeps them with :class:`Digests`, updated on every change of a record, or computes
them from its records with :func:`digests_of` when it is asked; the conformance suite
(:class:`gridkv.testing.StorageConformance`) checks every backend's answers against
:func:`digests_of` over its :meth:`~gridkv.storage.Storage.versions`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import xxhash

from gridkv.base.keys import key_hash

__all__ = [
    "BUCKET_BITS",
    "BUCKET_SHIFT",
    "BUCKETS",
    "HASH_MAX",
    "Digests",
    "PartitionDigests",
    "VersionRecord",
    "bucket_of",
    "bucket_range",
    "digests_of",
    "fingerprint",
    "key_hash",
    "writer_salt",
]

#: Each partition's digest is split into ``BUCKETS`` bucket digests by the top ``BUCKET_BITS``
#: bits of the key's 64-bit hash, so anti-entropy narrows a difference down to 1/32 of a
#: partition before it lists keys, and lists those keys in pages of hash ranges.
BUCKET_BITS = 5
BUCKETS = 1 << BUCKET_BITS
#: The largest 64-bit key hash.
HASH_MAX = (1 << 64) - 1
#: A key hash's bucket is ``hash_ >> BUCKET_SHIFT``.
BUCKET_SHIFT = _SHIFT = 64 - BUCKET_BITS
_xxh3 = xxhash.xxh3_64_intdigest
#: Writer id -> its salt: the few node ids that write, memoised (cleared past this many).
WRITER_SALTS: dict[str, int] = {}
MAX_WRITER_SALTS = 4096

#: ``(key hash, key, version, writer)``: what anti-entropy compares, without the value.
VersionRecord = tuple[int, str, int, str]


def bucket_of(hash_: int) -> int:
    """The bucket of a key hash within its partition."""
    return hash_ >> _SHIFT


def bucket_range(bucket: int) -> tuple[int, int]:
    """The key hashes ``[low, high]`` (inclusive) a bucket covers."""
    return bucket << _SHIFT, ((bucket + 1) << _SHIFT) - 1


def writer_salt(writer: str) -> int:
    """The 64-bit hash of a writer id that :func:`fingerprint` mixes into its seed (memoised)."""
    salt = WRITER_SALTS.get(writer)
    if salt is None:
        if len(WRITER_SALTS) >= MAX_WRITER_SALTS:
            WRITER_SALTS.clear()
        salt = WRITER_SALTS[writer] = _xxh3(writer.encode())
    return salt


def fingerprint(key: str, version: int, writer: str) -> int:
    """A record's share of its bucket and partition digests (the digests are XORs of these).

    The xxh3-64 hash of the key's UTF-8 bytes, seeded with ``version`` XOR the writer's
    :func:`writer_salt`: one hash of the key (no string built), and a different seed, so an
    unrelated hash, for every version of it. Every backend's digests are made of these, so
    replicas on different backends compare.
    """
    return _xxh3(key.encode(), version ^ writer_salt(writer))


class PartitionDigests(NamedTuple):
    """A partition's digest and its ``BUCKETS`` bucket digests (the digest is their XOR)."""

    digest: int
    buckets: list[int]


def digests_of(records: Iterable[VersionRecord]) -> PartitionDigests:
    """The digests of a partition holding ``records``, computed from scratch.

    What :class:`Digests` keeps incrementally must always equal this over the partition's
    :meth:`~gridkv.storage.Storage.versions`; a backend without incremental digests may
    answer ``digest`` and ``bucket_digests`` with it.
    """
    whole = 0
    buckets = [0] * BUCKETS
    for hash_, key, version, writer in records:
        fp = fingerprint(key, version, writer)
        whole ^= fp
        buckets[hash_ >> _SHIFT] ^= fp
    return PartitionDigests(whole, buckets)


class Digests:
    """Each partition's digest and bucket digests, kept up to date as records change.

    A backend calls :meth:`add` when a record is stored where its key had none,
    :meth:`replace` when a record takes the place of its key's previous one, and
    :meth:`remove` when a record goes (deleted, expired, evicted, dropped), so the digests
    always cover exactly the records stored. ``hash_`` is the key's :func:`key_hash` when the
    caller has it already; it is computed otherwise.

    Not locked: call the methods under the lock that serialises changes to the partition, and
    read the digests under it too, so a reader never sees half of a replace.

    :param partition_count: number of partitions.
    """

    __slots__ = ("buckets", "whole")

    def __init__(self, partition_count: int) -> None:
        #: Each partition's digest (a backend's hot path may XOR a fingerprint in directly).
        self.whole = [0] * partition_count
        #: Each partition's bucket digests, indexed by ``hash_ >> BUCKET_SHIFT``.
        self.buckets = [[0] * BUCKETS for _ in range(partition_count)]

    def add(
        self, partition: int, key: str, version: int, writer: str, hash_: int | None = None
    ) -> None:
        """Count record ``(key, version, writer)`` into its partition's digests."""
        raw = key.encode()
        fp = _xxh3(raw, version ^ (WRITER_SALTS.get(writer) or writer_salt(writer)))
        self.whole[partition] ^= fp
        if hash_ is None:
            hash_ = _xxh3(raw)
        self.buckets[partition][hash_ >> _SHIFT] ^= fp

    #: Take record ``(key, version, writer)`` out of its partition's digests: XOR undoes
    #: itself, so removing a record is adding it again.
    remove = add

    def replace(
        self,
        partition: int,
        key: str,
        old_version: int,
        old_writer: str,
        version: int,
        writer: str,
        hash_: int | None = None,
    ) -> None:
        """Count ``(key, version, writer)`` in place of ``(key, old_version, old_writer)``."""
        raw = key.encode()
        salt = WRITER_SALTS.get(writer) or writer_salt(writer)  # the memo, without a call
        old_salt = salt if old_writer == writer else writer_salt(old_writer)
        fp = _xxh3(raw, version ^ salt) ^ _xxh3(raw, old_version ^ old_salt)
        self.whole[partition] ^= fp
        if hash_ is None:
            hash_ = _xxh3(raw)
        self.buckets[partition][hash_ >> _SHIFT] ^= fp

    def digest(self, partition: int) -> int:
        """The partition's digest: the XOR of its records' fingerprints."""
        return self.whole[partition]

    def bucket_digests(self, partition: int) -> list[int]:
        """A copy of the partition's ``BUCKETS`` bucket digests."""
        return list(self.buckets[partition])

    def clear(self, partition: int) -> None:
        """Zero a partition's digests (it holds no record any more)."""
        self.whole[partition] = 0
        self.buckets[partition] = [0] * BUCKETS

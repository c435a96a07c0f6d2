"""The memory backend's own rules (compression, accounting, LRU order, the writer table) and the
modules it is built from. What every backend must do is in test_storage_conformance.py."""

from __future__ import annotations

import os
import threading

import pytest
from gridkv.base.errors import MemoryLimitExceeded
from gridkv.storage import Entry, MemoryStorage, collectable, tombstone_limits
from gridkv.storage import base as storage_base
from gridkv.storage.digest import (
    BUCKETS,
    Digests,
    VersionRecord,
    bucket_of,
    digests_of,
    fingerprint,
    key_hash,
)
from gridkv.storage.memory import LRU_SLOT_BYTES, SLOT_BYTES
from gridkv.storage.record import (
    FLAG_COMPRESSED,
    FLAG_TOMBSTONE,
    FLAG_TTL,
    HEADER_SIZE,
    encode,
    payload,
    to_entry,
)
from gridkv.storage.writers import WriterTable
from gridkv.testing import ManualClock
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def make(clock: ManualClock, **kw: object) -> MemoryStorage:
    return MemoryStorage(64, clock=clock, **kw)  # type: ignore[arg-type]


# -- the digest --------------------------------------------------------------------------


def test_the_fingerprint_and_key_hash_are_those_every_node_computes() -> None:
    # Replicas compare digests: a change here makes a mixed-version cluster's anti-entropy
    # see every partition differ (changed in issue 12; see docs/operations.md#upgrades).
    assert key_hash("user:1") == 4276021600403166465
    assert fingerprint("user:1", 123456789 << 16, "node-a") == 12219537679212844400


def test_the_fingerprint_changes_with_each_part_of_the_version() -> None:
    base = fingerprint("user:1", 7 << 16, "node-a")
    assert fingerprint("user:2", 7 << 16, "node-a") != base
    assert fingerprint("user:1", (7 << 16) + 1, "node-a") != base
    assert fingerprint("user:1", 7 << 16, "node-b") != base


def test_storage_base_still_exports_the_digest_names() -> None:
    for name in ("BUCKETS", "BUCKET_BITS", "HASH_MAX", "fingerprint", "key_hash", "bucket_of"):
        assert name in storage_base.__all__
    assert storage_base.fingerprint is fingerprint


_records = st.lists(
    st.tuples(st.sampled_from("abcdefgh"), st.integers(1, 5), st.sampled_from(["n1", "n2"])),
    max_size=30,
)


@settings(max_examples=200)
@given(_records, st.lists(st.booleans(), max_size=30))
def test_digests_kept_incrementally_equal_digests_computed_from_scratch(
    writes: list[tuple[str, int, str]], with_hash: list[bool]
) -> None:
    digests = Digests(2)
    held: dict[str, tuple[int, str]] = {}
    for i, (key, version, writer) in enumerate(writes):
        hash_ = key_hash(key) if i < len(with_hash) and with_hash[i] else None
        if key not in held:
            digests.add(1, key, version, writer, hash_)
            held[key] = (version, writer)
        elif held[key] == (version, writer):
            digests.remove(1, key, version, writer, hash_)
            del held[key]
        else:
            digests.replace(1, key, *held[key], version, writer, hash_)
            held[key] = (version, writer)
        records: list[VersionRecord] = [(key_hash(k), k, v, w) for k, (v, w) in held.items()]
        expected = digests_of(records)
        assert digests.digest(1) == expected.digest
        assert digests.bucket_digests(1) == expected.buckets
    assert digests.digest(0) == 0
    digests.clear(1)
    assert (digests.digest(1), digests.bucket_digests(1)) == (0, [0] * BUCKETS)


def test_bucket_digests_xor_to_the_partition_digest() -> None:
    records: list[VersionRecord] = [(key_hash(f"k{i}"), f"k{i}", i, "n1") for i in range(200)]
    digest, buckets = digests_of(records)
    total = 0
    for b in buckets:
        total ^= b
    assert total == digest != 0
    assert buckets[bucket_of(key_hash("k3"))] != 0


# -- the sweep's rule --------------------------------------------------------------------


def test_what_the_sweep_may_collect() -> None:
    bucket = bucket_of(key_hash("k"))
    below = [0] * BUCKETS
    below[bucket] = 101
    anything = tombstone_limits(None, 0)
    assert not collectable("k", 0, False, 10**12, anything)  # never expires
    assert not collectable("k", 100, False, 99, anything)
    assert collectable("k", 100, False, 100, anything)
    assert collectable("k", 100, True, 100, anything)
    assert not collectable("k", 100, True, 100, tombstone_limits(lambda p: None, 0))
    assert collectable("k", 100, True, 100, tombstone_limits(lambda p: below, 0))
    below[bucket] = 100
    assert not collectable("k", 100, True, 100, below)
    assert collectable("k", 100, False, 100, below)  # the horizon is for tombstones only


# -- the record --------------------------------------------------------------------------


@given(
    st.one_of(st.none(), st.binary(max_size=200), st.just(b"ab" * 600)),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1),
    st.sampled_from([0, 1, 2**63]),
)
def test_a_record_decodes_to_the_entry_it_was_encoded_from(
    value: bytes | None, version: int, wid: int, expires: int
) -> None:
    flags, stored = payload(value, 1024)
    record = encode(flags, version, wid, expires, stored)
    assert to_entry("k", record, "w") == Entry("k", value, version, "w", expires)
    assert bool(record[0] & FLAG_TTL) == bool(expires)
    assert bool(record[0] & FLAG_TOMBSTONE) == (value is None)
    if value == b"ab" * 600:
        assert record[0] & FLAG_COMPRESSED and len(record) < len(value)
    if value is not None and not expires and len(value) < 1024:
        assert record[0] == 0 and record[HEADER_SIZE:] == value  # the plain read path


# -- the writer table --------------------------------------------------------------------


def test_a_writer_slot_is_freed_with_its_last_record_and_reused() -> None:
    table = WriterTable(2)
    a = table.new_writer("a")
    table.refs[a] += 1
    b = table.new_writer("b")
    with pytest.raises(MemoryLimitExceeded, match="refused a record of writer 'c'"):
        table.new_writer("c")
    table.unref(a)
    assert table.writer_ids == {"a": a, "b": b}
    table.unref(a)
    assert table.writer_ids == {"b": b}
    assert table.new_writer("c") == a


def test_the_writer_table_shrinks_when_records_go_and_is_bounded(clock: ManualClock) -> None:
    s = MemoryStorage(64, clock=clock, shard_count=1)
    for i in range(1000):
        s.apply(i % 64, Entry(f"k{i}", b"v", 1, f"writer-{i}"))
    assert s.stats().writers == 1000
    for i in range(1000):
        s.apply(i % 64, Entry(f"k{i}", b"v", 2, "one-writer"))
    assert s.stats().writers == 1
    slots = len(s._shards[0].writers)
    assert slots == 1001
    for i in range(1000, 1500):
        s.apply(i % 64, Entry(f"k{i}", b"v", 1, f"other-{i}"))
    assert len(s._shards[0].writers) == slots  # freed slots are reused, not grown
    s.close()
    assert s.stats().writers == 0

    small = MemoryStorage(4, clock=clock, shard_count=2, max_writers=20)  # 10 ids per shard
    for i in range(10):
        small.apply(0, Entry(f"k{i}", b"v", 1, f"w{i}"))
    with pytest.raises(MemoryLimitExceeded, match="distinct writer ids"):
        small.apply(0, Entry("k-new", b"v", 1, "w-new"))
    assert small.get(0, "k-new") is None
    small.apply(0, Entry("k0", b"v", 2, "w1"))  # frees w0
    small.apply(0, Entry("k-new", b"v", 1, "w-new"))
    assert small.get(0, "k-new") == b"v"
    assert small.stats().writers == 10


# -- compression -------------------------------------------------------------------------


def test_large_compressible_values_are_compressed_and_read_back(clock: ManualClock) -> None:
    s = make(clock, compression_threshold=100)
    value = b"abc" * 1000
    s.apply(0, Entry("big", value, 1, "a"))
    assert s.get(0, "big") == value
    assert s.stats().compressed == 1
    assert s.used_bytes < len(value)
    entry = s.get_entry(0, "big")
    assert entry is not None and entry.value == value


def test_incompressible_values_are_stored_as_they_are(clock: ManualClock) -> None:
    s = make(clock, compression_threshold=100)
    value = os.urandom(4096)
    s.apply(0, Entry("rnd", value, 1, "a"))
    assert s.get(0, "rnd") == value
    assert s.stats().compressed == 0
    s.apply(0, Entry("rnd", b"x" * 4096, 2, "a"))
    assert s.stats().compressed == 1
    s.apply(0, Entry("rnd", b"y", 3, "a"))
    assert s.stats().compressed == 0


def test_compressed_values_with_ttl_expire(clock: ManualClock) -> None:
    s = make(clock, compression_threshold=10)
    s.apply(0, Entry("k", b"z" * 500, 1, "a", expires_at=clock.ms + 10))
    assert s.get(0, "k") == b"z" * 500
    clock.advance(1)
    assert s.get(0, "k") is None


# -- expiry ------------------------------------------------------------------------------


def test_a_read_that_finds_a_value_expired_removes_it(clock: ManualClock) -> None:
    s = make(clock)
    s.apply(0, Entry("short", b"v", 1, "a", expires_at=clock.ms + 1000))
    clock.advance(2)
    assert len(s) == 1
    assert s.get(0, "short") is None
    assert len(s) == 0
    assert s.stats().expirations == 1
    assert s.used_bytes == 0


def test_the_sweep_goes_on_from_the_partition_it_stopped_in(clock: ManualClock) -> None:
    s = MemoryStorage(4, clock=clock)
    for i in range(10):
        s.apply(2, Entry(f"k{i}", b"v", 1, "a", expires_at=clock.ms + 1))
    s.apply(3, Entry("other", b"v", 1, "a", expires_at=clock.ms + 1))
    clock.advance(1)
    assert [s.sweep(clock.ms, 4) for _ in range(4)] == [4, 4, 3, 0]


# -- memory accounting -------------------------------------------------------------------


def _recount(s: MemoryStorage) -> int:
    return sum(s._accounts.cost(k, blob) for d in s._parts for k, blob in d.items())


def test_memory_accounting_follows_writes_overwrites_deletes_and_expiry(
    clock: ManualClock,
) -> None:
    s = make(clock)
    assert s.used_bytes == 0
    s.apply(0, Entry("a", b"x" * 100, 1, "w"))
    one = s.used_bytes
    assert one >= 100 + SLOT_BYTES
    s.apply(0, Entry("a", b"x" * 200, 2, "w"))
    assert s.used_bytes == one + 100
    s.apply(0, Entry("a", b"x" * 50, 3, "w"))
    assert s.used_bytes == one - 50
    s.apply(1, Entry("b", b"y", 1, "w", expires_at=clock.ms + 1))
    s.apply(0, Entry("a", None, 4, "w", expires_at=clock.ms + 1))
    clock.advance(1)
    s.sweep(clock.ms, 100)
    assert s.used_bytes == 0
    assert len(s) == 0


@settings(max_examples=60)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.sampled_from(["a", "b", "c", "d"]),
            st.one_of(st.none(), st.binary(max_size=300)),
            st.booleans(),
        ),
        max_size=40,
    )
)
def test_used_bytes_always_equals_the_sum_of_live_records(
    ops: list[tuple[int, str, bytes | None, bool]],
) -> None:
    clock = ManualClock()
    s = MemoryStorage(4, clock=clock, compression_threshold=64)
    version = 0
    for part, key, value, ttl in ops:
        version += 1
        expires = clock.ms + 1 if (ttl or value is None) else 0
        s.apply(part, Entry(key, value, version, "w", expires_at=expires))
        assert s.used_bytes == _recount(s)
    clock.advance(10)
    s.sweep(clock.ms, 10_000)
    assert all(not (blob[0] & FLAG_TTL) for d in s._parts for blob in d.values())
    for part in range(4):
        s.drop_partition(part)
    assert s.used_bytes == 0


def test_concurrent_writers_account_exactly(clock: ManualClock) -> None:
    s = MemoryStorage(64, shard_count=8, clock=clock)
    versions = iter(range(1, 10**9))
    lock = threading.Lock()

    def writer(t: int) -> None:
        for i in range(2000):
            with lock:
                v = next(versions)
            s.apply(i % 64, Entry(f"t{t % 4}-{i}", b"x" * (i % 50), v, f"w{t}"))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(s) == 8000
    assert s.used_bytes == _recount(s)


def test_memory_limit_raises_and_keeps_the_old_value(clock: ManualClock) -> None:
    s = make(clock, max_bytes=20_000, compression_threshold=0)
    s.apply(0, Entry("keep", b"old", 1, "w"))
    written = 0
    with pytest.raises(MemoryLimitExceeded, match=r"storage.max_memory_mb"):
        for i in range(1000):
            s.apply(i % 64, Entry(f"k{i}", b"v" * 500, 1, "w"))
            written += 1
    assert 0 < written < 1000
    assert s.used_bytes <= 20_000
    with pytest.raises(MemoryLimitExceeded, match="'keep'"):
        s.apply(0, Entry("keep", b"n" * 5000, 2, "w"))
    assert s.get(0, "keep") == b"old"


# -- LRU eviction ------------------------------------------------------------------------


def test_lru_eviction_removes_the_least_recently_used_first(clock: ManualClock) -> None:
    s = MemoryStorage(1, clock=clock, max_bytes=10_000, eviction="lru", compression_threshold=0)
    per = s._accounts.cost("k00", b"\x00" * (HEADER_SIZE + 500))
    fits = 10_000 // per
    for i in range(fits):
        s.apply(0, Entry(f"k{i:02d}", b"v" * 500, 1, "w"))
    assert s.get(0, "k00") == b"v" * 500  # k00 is now the most recent
    s.apply(0, Entry("new", b"v" * 500, 1, "w"))
    assert s.get(0, "k01") is None
    assert s.get(0, "k00") is not None
    assert s.get(0, "new") is not None
    assert s.stats().evictions == 1
    assert s.used_bytes <= 10_000
    assert per > LRU_SLOT_BYTES


def test_lru_evicts_across_shards_when_the_writing_shard_is_empty(clock: ManualClock) -> None:
    s = MemoryStorage(8, clock=clock, shard_count=8, max_bytes=8_000, eviction="lru")
    for i in range(10):
        s.apply(1, Entry(f"a{i}", b"v" * 500, 1, "w"))
    s.apply(5, Entry("b", b"v" * 500, 1, "w"))
    assert s.get(5, "b") is not None
    assert s.stats().evictions == 1
    assert s.get(1, "a0") is None  # the oldest of the other shard went


def test_unknown_eviction_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="eviction must be"):
        MemoryStorage(4, eviction="random")

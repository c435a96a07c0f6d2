from __future__ import annotations

import os
import threading

import pytest
from gridkv.base.errors import MemoryLimitExceeded
from gridkv.storage import Entry, MemoryStorage, Storage
from gridkv.storage.memory import LRU_SLOT_BYTES, SLOT_BYTES
from hypothesis import given, settings
from hypothesis import strategies as st


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t

    @property
    def ms(self) -> int:
        return int(self.t * 1000)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, **kw: object) -> MemoryStorage:
    return MemoryStorage(64, clock=clock, **kw)  # type: ignore[arg-type]


def test_memory_storage_implements_the_protocol(clock: Clock) -> None:
    assert isinstance(make(clock), Storage)


def test_put_get_overwrite(clock: Clock) -> None:
    s = make(clock)
    assert s.apply(1, Entry("k", b"v1", 10, "a"))
    assert s.get(1, "k") == b"v1"
    assert s.apply(1, Entry("k", b"v2", 11, "a"))
    assert s.get(1, "k") == b"v2"
    assert s.get(2, "k") is None
    assert s.get(1, "other") is None


def test_an_older_version_never_overwrites_a_newer_one(clock: Clock) -> None:
    s = make(clock)
    s.apply(0, Entry("k", b"new", 20, "a"))
    assert not s.apply(0, Entry("k", b"old", 19, "z"))
    assert not s.apply(0, Entry("k", b"same", 20, "a"))
    assert s.apply(0, Entry("k", b"tie-break", 20, "b"))
    assert s.get(0, "k") == b"tie-break"


def test_ttl_expires_lazily_and_is_swept(clock: Clock) -> None:
    s = make(clock)
    s.apply(0, Entry("short", b"v", 1, "a", expires_at=clock.ms + 1000))
    s.apply(0, Entry("forever", b"v", 1, "a"))
    s.apply(0, Entry("later", b"v", 1, "a", expires_at=clock.ms + 5000))
    assert s.get(0, "short") == b"v"
    clock.t += 1.0
    assert s.get(0, "short") is None
    assert s.get_entry(0, "short") is None
    assert s.stats().expirations == 1
    clock.t += 4.0
    assert s.get_entry(0, "later") is None
    assert s.sweep(clock.ms, 1000) == 1
    assert s.stats().keys == 1
    assert s.get(0, "forever") == b"v"


def test_tombstones_hide_values_and_are_collected_after_their_time(clock: Clock) -> None:
    s = make(clock)
    s.apply(3, Entry("k", b"v", 1, "a"))
    s.apply(3, Entry("k", None, 2, "a", expires_at=clock.ms + 60_000))
    assert s.get(3, "k") is None
    tomb = s.get_entry(3, "k")
    assert tomb is not None and tomb.tombstone
    assert not s.apply(3, Entry("k", b"stale", 1, "z"))
    assert s.get(3, "k") is None
    assert s.stats().tombstones == 1
    assert s.sweep(clock.ms, 100) == 0
    clock.t += 61
    assert s.sweep(clock.ms, 100) == 1
    assert s.stats().tombstones == 0
    assert s.used_bytes == 0


def test_large_compressible_values_are_compressed_and_read_back(clock: Clock) -> None:
    s = make(clock, compression_threshold=100)
    value = b"abc" * 1000
    s.apply(0, Entry("big", value, 1, "a"))
    assert s.get(0, "big") == value
    assert s.stats().compressed == 1
    assert s.used_bytes < len(value)
    entry = s.get_entry(0, "big")
    assert entry is not None and entry.value == value


def test_incompressible_values_are_stored_as_they_are(clock: Clock) -> None:
    s = make(clock, compression_threshold=100)
    value = os.urandom(4096)
    s.apply(0, Entry("rnd", value, 1, "a"))
    assert s.get(0, "rnd") == value
    assert s.stats().compressed == 0
    s.apply(0, Entry("rnd", b"x" * 4096, 2, "a"))
    assert s.stats().compressed == 1
    s.apply(0, Entry("rnd", b"y", 3, "a"))
    assert s.stats().compressed == 0


def test_compressed_values_with_ttl_expire(clock: Clock) -> None:
    s = make(clock, compression_threshold=10)
    s.apply(0, Entry("k", b"z" * 500, 1, "a", expires_at=clock.ms + 10))
    assert s.get(0, "k") == b"z" * 500
    clock.t += 1
    assert s.get(0, "k") is None


def test_memory_accounting_follows_writes_overwrites_deletes_and_expiry(clock: Clock) -> None:
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
    clock.t += 1
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
    clock = Clock()
    s = MemoryStorage(4, clock=clock, compression_threshold=64)
    version = 0
    for part, key, value, ttl in ops:
        version += 1
        expires = clock.ms + 1 if (ttl or value is None) else 0
        s.apply(part, Entry(key, value, version, "w", expires_at=expires))
        expected = sum(s._cost(k, blob) for d in s._parts for k, blob in d.items())
        assert s.used_bytes == expected
    clock.t += 10
    s.sweep(clock.ms, 10_000)
    assert all(not (blob[0] & 1) for d in s._parts for blob in d.values())
    for part in range(4):
        s.drop_partition(part)
    assert s.used_bytes == 0


def test_memory_limit_raises_and_keeps_the_old_value(clock: Clock) -> None:
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


def test_lru_eviction_removes_the_least_recently_used_first(clock: Clock) -> None:
    s = MemoryStorage(1, clock=clock, max_bytes=10_000, eviction="lru", compression_threshold=0)
    per = s._cost("k00", b"\x00" * (13 + 500))
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


def test_lru_evicts_across_shards_when_the_writing_shard_is_empty(clock: Clock) -> None:
    s = MemoryStorage(8, clock=clock, shard_count=8, max_bytes=8_000, eviction="lru")
    for i in range(10):
        s.apply(1, Entry(f"a{i}", b"v" * 500, 1, "w"))
    s.apply(5, Entry("b", b"v" * 500, 1, "w"))
    assert s.get(5, "b") is not None
    assert s.stats().evictions >= 1


def test_entries_and_drop_partition(clock: Clock) -> None:
    s = make(clock)
    for i in range(10):
        s.apply(7, Entry(f"k{i}", b"v", 1, "w"))
    s.apply(7, Entry("gone", None, 2, "w", expires_at=clock.ms + 1000))
    assert {e.key for e in s.entries(7)} == {f"k{i}" for i in range(10)} | {"gone"}
    assert s.drop_partition(7) == 11
    assert list(s.entries(7)) == []
    assert s.used_bytes == 0


def test_concurrent_writers_lose_nothing_and_account_exactly(clock: Clock) -> None:
    s = MemoryStorage(64, shard_count=8, clock=clock)
    versions = iter(range(1, 10**9))
    lock = threading.Lock()

    def writer(t: int) -> None:
        for i in range(2000):
            with lock:
                v = next(versions)
            s.apply(i % 64, Entry(f"t{t}-{i}", b"x" * (i % 50), v, f"w{t}"))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(s) == 16_000
    assert all(s.get(i % 64, f"t{t}-{i}") == b"x" * (i % 50) for t in range(8) for i in range(2000))
    expected = sum(s._cost(k, b) for d in s._parts for k, b in d.items())
    assert s.used_bytes == expected


def test_bucket_digests_xor_to_the_partition_digest(clock: Clock) -> None:
    from gridkv.storage.base import BUCKETS, bucket_of, fingerprint, key_hash

    s = make(clock)
    for i in range(200):
        s.apply(5, Entry(f"k{i}", b"v", i + 1, "w"))
    s.apply(5, Entry("k3", None, 1000, "w"))
    buckets = s.bucket_digests(5)
    assert len(buckets) == BUCKETS
    total = 0
    for b in buckets:
        total ^= b
    assert total == s.digest(5) != 0
    expected = [0] * BUCKETS
    for e in s.entries(5):
        expected[bucket_of(key_hash(e.key))] ^= fingerprint(e.key, e.version, e.writer)
    assert buckets == expected
    s.drop_partition(5)
    assert s.digest(5) == 0 and set(s.bucket_digests(5)) == {0}


def test_versions_lists_a_hash_range_without_reading_values(clock: Clock) -> None:
    from gridkv.storage.base import bucket_range, key_hash

    s = make(clock, compression_threshold=10)
    for i in range(100):
        s.apply(2, Entry(f"k{i}", b"z" * 100, i + 1, "w"))
    every = s.versions(2)
    assert sorted(k for _, k, _, _ in every) == sorted(f"k{i}" for i in range(100))
    assert all(h == key_hash(k) for h, k, _, _ in every)
    low, high = bucket_range(3)
    inside = s.versions(2, low, high)
    assert {k for _, k, _, _ in inside} == {k for h, k, _, _ in every if low <= h <= high}


def test_the_writer_table_shrinks_when_records_go_and_is_bounded(clock: Clock) -> None:
    from gridkv.storage import memory

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

    memory_max = memory.MAX_WRITERS
    try:
        memory.MAX_WRITERS = 20
        small = MemoryStorage(4, clock=clock, shard_count=2)  # 10 ids per shard
        for i in range(10):
            small.apply(0, Entry(f"k{i}", b"v", 1, f"w{i}"))
        with pytest.raises(MemoryLimitExceeded, match="distinct writer ids"):
            small.apply(0, Entry("k-new", b"v", 1, "w-new"))
        assert small.get(0, "k-new") is None
        small.apply(0, Entry("k0", b"v", 2, "w1"))  # frees w0
        small.apply(0, Entry("k-new", b"v", 1, "w-new"))
        assert small.get(0, "k-new") == b"v"
        assert small.stats().writers == 10
    finally:
        memory.MAX_WRITERS = memory_max


def test_lru_never_evicts_a_tombstone(clock: Clock) -> None:
    s = MemoryStorage(1, clock=clock, max_bytes=10_000, eviction="lru", compression_threshold=0)
    for i in range(5):
        s.apply(0, Entry(f"t{i}", None, 1, "w", expires_at=clock.ms + 60_000))
    for i in range(40):
        s.apply(0, Entry(f"k{i}", b"v" * 500, 1, "w"))
    assert s.stats().evictions > 0
    assert s.stats().tombstones == 5
    assert all(s.get_entry(0, f"t{i}") is not None for i in range(5))
    assert s.get(0, "t0") is None  # a read of a tombstone under LRU


def test_drop_versions_keeps_a_newer_write(clock: Clock) -> None:
    s = make(clock)
    s.apply(1, Entry("a", b"1", 1, "w"))
    s.apply(1, Entry("b", b"1", 1, "w"))
    sent = [(e.key, e.version, e.writer) for e in s.entries(1)]
    s.apply(1, Entry("b", b"2", 2, "w"))  # arrives while the handoff is under way
    assert s.drop_versions(1, sent) == 1
    assert s.get(1, "a") is None
    assert s.get(1, "b") == b"2"


def test_a_tombstone_is_collected_only_below_its_buckets_horizon(clock: Clock) -> None:
    from gridkv.storage.base import BUCKETS, bucket_of, key_hash

    s = make(clock)
    s.apply(0, Entry("k", None, 1, "w", expires_at=clock.ms + 1000))
    bucket = bucket_of(key_hash("k"))
    clock.t += 2
    assert s.sweep(clock.ms, 100, lambda p: None) == 0
    low = [0] * BUCKETS
    assert s.sweep(clock.ms, 100, lambda p: low) == 0
    stored = s.get_entry(0, "k")
    assert stored is not None
    horizon = [0] * BUCKETS
    horizon[bucket] = stored.expires_at  # confirmed at exactly its time: not yet
    assert s.sweep(clock.ms, 100, lambda p: horizon) == 0
    horizon[bucket] += 1
    assert s.sweep(clock.ms, 100, lambda p: horizon) == 1
    assert s.stats().tombstones_collected == 1


def test_a_late_tombstone_expires_no_earlier_than_its_arrival(clock: Clock) -> None:
    s = make(clock)
    s.apply(0, Entry("k", None, 1, "w", expires_at=clock.ms - 5000))
    stored = s.get_entry(0, "k")
    assert stored is not None and stored.expires_at == clock.ms


def test_drop_values_keeps_the_tombstones(clock: Clock) -> None:
    s = make(clock)
    s.apply(4, Entry("v", b"1", 1, "w"))
    s.apply(4, Entry("t", None, 2, "w", expires_at=clock.ms + 1000))
    assert s.drop_values(4) == 1
    assert s.get_entry(4, "v") is None
    stored = s.get_entry(4, "t")
    assert stored is not None and stored.tombstone

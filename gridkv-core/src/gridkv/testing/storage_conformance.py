# ruff: noqa: D102
"""A conformance suite every storage backend passes: subclass it in a test module.

::

    from gridkv.testing import (
        LimitedStorageMaker, StorageConformance, StorageMaker, conformance_options,
    )

    class TestMyStorage(StorageConformance):
        @pytest.fixture
        def make_storage(self) -> StorageMaker:
            # make(clock) -> a new, empty backend without a memory limit
            return lambda clock: my_factory(conformance_options(), clock=clock)

        @pytest.fixture
        def make_limited_storage(self) -> LimitedStorageMaker | None:
            # optional: make(clock, max_bytes) -> a new, empty backend with that limit
            return lambda clock, max_bytes: my_factory(
                conformance_options(max_bytes), clock=clock
            )

The backend the makers return must hold partitions ``0`` to ``PARTITIONS - 1`` and judge time
only by the ``clock`` it is given (a :class:`~gridkv.testing.storage_checks.ManualClock`, wall
seconds); :mod:`gridkv.testing.storage_checks` holds the pieces the tests are built from.

The tests cover last-writer-wins on every write (ties broken by the writer), tombstones (never
evicted, their expiry raised to their arrival, collected by the sweep only below the horizon),
TTLs, ``entries_of``, ``versions`` by hash range, the partial drops handoff and long
separations use, ``held_partitions`` and ``partition_size``, the digests (equal to
:func:`gridkv.storage.digest.digests_of` over ``versions()`` after any sequence of operations,
a hypothesis property), the figures of ``stats()``, concurrent writers, and, with
``make_limited_storage``, the memory limit.

Needs ``pytest`` and ``hypothesis`` (``pip install 'gridkv-core[test]'``).
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from gridkv.base.errors import MemoryLimitExceeded
from gridkv.storage.base import Entry, Storage, merge
from gridkv.storage.digest import BUCKETS, HASH_MAX, bucket_of, bucket_range, digests_of, key_hash
from gridkv.testing.storage_checks import (
    DAY_MS,
    LIMIT_BYTES,
    OPERATIONS,
    PARTITIONS,
    WRITES,
    LimitedStorageMaker,
    ManualClock,
    StorageMaker,
    check_consistent,
    incompressible,
    run_operation,
)

__all__ = ["StorageConformance"]

# Each subclass runs the same property on its own backend (a differing executor by design),
# and builds a fresh backend per example from the function-scoped maker.
_property = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.differing_executors,
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
    ],
)


class StorageConformance:
    """Behaviour every GridKV storage backend must have."""

    @pytest.fixture
    def make_storage(self) -> StorageMaker:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    @pytest.fixture
    def make_limited_storage(self) -> LimitedStorageMaker | None:
        """Backends with a memory limit override this; ``None`` skips the limit tests."""
        return None

    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    def storage(self, make_storage: StorageMaker, clock: ManualClock) -> Iterator[Storage]:
        backend = make_storage(clock)
        yield backend
        backend.close()

    # -- the interface -------------------------------------------------------------------

    def test_the_backend_implements_the_protocol(self, storage: Storage) -> None:
        assert isinstance(storage, Storage)
        assert isinstance(storage.name, str)
        assert storage.name
        assert storage.stats().backend == storage.name
        assert storage.held_partitions() == []
        check_consistent(storage)

    def test_a_stored_value_reads_back_as_bytes(self, storage: Storage) -> None:
        big = b"compressible " * 4000
        noise = incompressible(1, 20_000)
        assert storage.apply(1, Entry("k", b"v1", 10, "n1"))
        assert storage.apply(1, Entry("empty", b"", 10, "n1"))
        assert storage.apply(2, Entry("big", big, 10, "n1"))
        assert storage.apply(2, Entry("noise", noise, 10, "n1"))
        assert storage.apply(3, Entry("clé ☃", b"unicode", 10, "n1"))
        got = storage.get(1, "k")
        assert got == b"v1"
        assert type(got) is bytes
        assert storage.get(1, "empty") == b""  # an empty value is not a delete
        assert storage.get(2, "big") == big
        assert storage.get(2, "noise") == noise
        assert storage.get(3, "clé ☃") == b"unicode"
        assert storage.get(2, "k") is None
        assert storage.get(1, "missing") is None
        check_consistent(storage)

    def test_get_entry_returns_the_stored_version(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        expires = clock.ms + 60_000
        storage.apply(0, Entry("k", b"v", 7, "n2", expires))
        assert storage.get_entry(0, "k") == Entry("k", b"v", 7, "n2", expires)
        assert storage.get_entry(0, "missing") is None
        assert storage.get_entry(1, "k") is None

    # -- last writer wins ----------------------------------------------------------------

    def test_a_newer_version_replaces_an_older_one_and_ties_go_to_the_greater_writer(
        self, storage: Storage
    ) -> None:
        assert storage.apply(0, Entry("k", b"new", 20, "n1"))
        assert not storage.apply(0, Entry("k", b"old", 19, "n9"))
        assert not storage.apply(0, Entry("k", b"same", 20, "n1"))
        assert not storage.apply(0, Entry("k", b"lesser", 20, "n0"))
        assert storage.get(0, "k") == b"new"
        assert storage.apply(0, Entry("k", b"tie-break", 20, "n2"))
        assert storage.get(0, "k") == b"tie-break"
        assert storage.apply(0, Entry("k", b"newer", 21, "n0"))
        assert storage.get(0, "k") == b"newer"
        check_consistent(storage)

    @_property
    @given(writes=WRITES)
    def test_last_writer_wins_whatever_the_order_of_arrival(
        self, make_storage: StorageMaker, writes: list[tuple[str, int, str, bytes | None, bool]]
    ) -> None:
        clock = ManualClock()
        storage = make_storage(clock)
        far = clock.ms + DAY_MS
        arrived = [Entry(k, v, ver, w, far if v is None else 0) for k, ver, w, v, _ in writes]
        held: dict[str, Entry] = {}
        try:
            for entry, (*_, with_hash) in zip(arrived, writes, strict=True):
                key = entry.key
                wins = key not in held or entry.wins_over(held[key])
                applied = storage.apply(0, entry, key_hash(key) if with_hash else None)
                assert applied == wins, f"apply({entry}) over {held.get(key)}"
                if wins:
                    held[key] = entry
                assert storage.get_entry(0, key) == held[key]
                assert storage.get(0, key) == held[key].value
            for key in held:
                assert held[key] == functools.reduce(
                    merge, (e for e in arrived if e.key == key), None
                )
            check_consistent(storage)
        finally:
            storage.close()

    # -- tombstones ----------------------------------------------------------------------

    def test_a_tombstone_hides_the_value_and_refuses_older_writes(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        storage.apply(3, Entry("k", b"v", 1, "n1"))
        assert storage.apply(3, Entry("k", None, 2, "n1", clock.ms + 60_000))
        assert storage.get(3, "k") is None
        tomb = storage.get_entry(3, "k")
        assert tomb == Entry("k", None, 2, "n1", clock.ms + 60_000)
        assert not storage.apply(3, Entry("k", b"stale", 1, "n9"))
        assert storage.get(3, "k") is None
        assert storage.stats().tombstones == 1
        assert storage.stats().keys == 0
        assert storage.apply(3, Entry("k", b"again", 3, "n1"))
        assert storage.get(3, "k") == b"again"
        assert storage.stats().tombstones == 0
        check_consistent(storage)

    def test_a_tombstone_expiry_is_raised_to_its_arrival(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        arrival = clock.ms
        storage.apply(0, Entry("late", None, 1, "n1", arrival - 5000))
        storage.apply(0, Entry("never", None, 1, "n1", 0))
        storage.apply(0, Entry("future", None, 1, "n1", arrival + 5000))
        for key in ("late", "never"):
            stored = storage.get_entry(0, key)
            assert stored is not None
            assert stored.tombstone
            assert stored.expires_at >= arrival - 1
        assert storage.get_entry(0, "future") == Entry("future", None, 1, "n1", arrival + 5000)
        # Confirmed by every replica before it arrived: not collectable on that confirmation.
        old_horizon = [arrival - 2] * BUCKETS
        clock.advance(10)
        assert storage.sweep(clock.ms, 100, lambda p: old_horizon) == 0
        assert storage.stats().tombstones == 3

    def test_the_sweep_collects_records_from_their_expiry_on(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        expires = clock.ms + 1000
        storage.apply(5, Entry("tomb", None, 1, "n1", expires))
        storage.apply(5, Entry("value", b"v", 1, "n1", expires))
        storage.apply(5, Entry("later", None, 1, "n1", expires + 1))
        assert storage.sweep(clock.ms, 100) == 0
        assert storage.sweep(expires - 1, 100) == 0
        assert storage.sweep(expires, 100) == 2  # expired at its expires_at, not after
        stats = storage.stats()
        assert (stats.tombstones, stats.tombstones_collected, stats.expirations) == (1, 1, 1)
        assert storage.get_entry(5, "tomb") is None
        assert storage.get_entry(5, "later") is not None
        check_consistent(storage)

    def test_a_tombstone_is_collected_only_below_its_buckets_horizon(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        storage.apply(0, Entry("k", None, 1, "n1", clock.ms + 1000))
        bucket = bucket_of(key_hash("k"))
        clock.advance(2)
        assert storage.sweep(clock.ms, 100, lambda p: None) == 0
        assert storage.sweep(clock.ms, 100, lambda p: [0] * BUCKETS) == 0
        stored = storage.get_entry(0, "k")
        assert stored is not None
        horizon = [clock.ms + DAY_MS] * BUCKETS
        horizon[bucket] = stored.expires_at  # confirmed at exactly its time: not yet
        assert storage.sweep(clock.ms, 100, lambda p: horizon) == 0
        horizon[bucket] += 1
        assert storage.sweep(clock.ms, 100, lambda p: horizon if p == 0 else None) == 1
        assert storage.stats().tombstones_collected == 1
        check_consistent(storage)

    def test_without_a_horizon_tombstones_stay_but_expired_values_go(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        storage.apply(1, Entry("t", None, 1, "n1", clock.ms + 10))
        storage.apply(1, Entry("v", b"x", 1, "n1", clock.ms + 10))
        clock.advance(1)
        assert storage.sweep(clock.ms, 100, lambda p: None) == 1
        assert storage.get_entry(1, "t") is not None
        stats = storage.stats()
        assert (stats.keys, stats.tombstones, stats.expirations) == (0, 1, 1)
        check_consistent(storage)

    # -- time to live --------------------------------------------------------------------

    def test_a_value_expires_at_its_time_by_the_injected_clock(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        expires = clock.ms + 1000
        storage.apply(0, Entry("short", b"v", 1, "n1", expires))
        storage.apply(0, Entry("forever", b"v", 1, "n1"))
        storage.apply(0, Entry("later", b"v", 1, "n1", expires + 4000))
        clock.advance(0.999)
        assert storage.get(0, "short") == b"v"
        assert storage.get_entry(0, "short") == Entry("short", b"v", 1, "n1", expires)
        clock.advance(0.002)
        # Each read on its own judges expiry (a backend may also remove what a read found
        # expired, so get() comes last).
        assert storage.get_entry(0, "short") is None
        assert storage.entries_of(0, ["short", "forever"]) == [Entry("forever", b"v", 1, "n1")]
        assert {e.key for e in storage.entries(0)} == {"forever", "later"}
        assert storage.get(0, "short") is None
        assert storage.get(0, "later") == b"v"
        clock.advance(5)
        removed_by_reads = storage.stats().expirations  # a backend may remove on read
        assert storage.sweep(clock.ms, 1000) == 2 - removed_by_reads
        stats = storage.stats()
        assert (stats.keys, stats.expirations) == (1, 2)
        assert storage.get(0, "forever") == b"v"
        check_consistent(storage)

    def test_an_expired_value_is_replaced_by_any_later_write(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        storage.apply(0, Entry("k", b"old", 5, "n1", clock.ms + 10))
        clock.advance(1)
        assert storage.apply(0, Entry("k", b"new", 6, "n1"))
        assert storage.get(0, "k") == b"new"
        check_consistent(storage)

    def test_the_sweep_removes_at_most_its_budget_and_in_turn_everything(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        for i in range(60):
            storage.apply(i % 3, Entry(f"k{i}", b"v", 1, "n1", clock.ms + 10))
            storage.apply(i % 3, Entry(f"live{i}", b"v", 1, "n1"))
        clock.advance(1)
        removed = 0
        for _ in range(1000):
            got = storage.sweep(clock.ms, 7)
            assert 0 <= got <= 7
            removed += got
            if removed == 60:
                break
        assert removed == 60
        assert storage.sweep(clock.ms, 1000) == 0
        stats = storage.stats()
        assert (stats.keys, stats.expirations) == (60, 60)
        check_consistent(storage)

    # -- reading many --------------------------------------------------------------------

    def test_entries_list_tombstones_but_not_expired_values(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        for i in range(10):
            storage.apply(7, Entry(f"k{i}", b"v", 1, "n1"))
        storage.apply(7, Entry("gone", None, 2, "n1", clock.ms + 60_000))
        storage.apply(7, Entry("expired", b"v", 2, "n1", clock.ms + 10))
        clock.advance(1)
        got = {e.key: e for e in storage.entries(7)}
        assert set(got) == {f"k{i}" for i in range(10)} | {"gone"}
        assert got["gone"].tombstone
        assert got["k3"] == Entry("k3", b"v", 1, "n1")
        assert list(storage.entries(8)) == []

    def test_entries_of_returns_the_keys_present(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        storage.apply(2, Entry("a", b"1", 1, "n1"))
        storage.apply(2, Entry("b", None, 2, "n2", clock.ms + 60_000))
        storage.apply(3, Entry("c", b"elsewhere", 1, "n1"))
        got = storage.entries_of(2, ["a", "b", "c", "missing"])
        assert sorted(got, key=lambda e: e.key) == [
            Entry("a", b"1", 1, "n1"),
            Entry("b", None, 2, "n2", clock.ms + 60_000),
        ]
        assert storage.entries_of(2, []) == []

    def test_versions_list_every_record_by_hash_range(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        for i in range(120):
            value = None if i % 10 == 0 else b"z" * 100
            storage.apply(2, Entry(f"k{i}", value, i + 1, f"n{i % 3}", clock.ms + DAY_MS))
        every = storage.versions(2)
        assert sorted(every) == sorted(
            (key_hash(f"k{i}"), f"k{i}", i + 1, f"n{i % 3}") for i in range(120)
        )
        seen = []
        for bucket in range(BUCKETS):
            low, high = bucket_range(bucket)
            inside = storage.versions(2, low, high)
            assert all(low <= h <= high for h, _, _, _ in inside)
            seen.extend(inside)
        assert sorted(seen) == sorted(every)
        h = key_hash("k7")
        assert [k for _, k, _, _ in storage.versions(2, h, h)] == ["k7"]  # both ends inclusive
        assert "k7" not in {k for _, k, _, _ in storage.versions(2, h + 1, HASH_MAX)}
        assert "k7" not in {k for _, k, _, _ in storage.versions(2, 0, h - 1)}
        assert storage.versions(3) == []

    # -- dropping ------------------------------------------------------------------------

    def test_drop_versions_removes_only_the_versions_named(self, storage: Storage) -> None:
        storage.apply(1, Entry("a", b"1", 1, "n1"))
        storage.apply(1, Entry("b", b"1", 1, "n1"))
        storage.apply(1, Entry("c", b"1", 1, "n1"))
        storage.apply(1, Entry("b", b"2", 2, "n1"))  # arrives while the handoff is under way
        named = [("a", 1, "n1"), ("b", 1, "n1"), ("c", 1, "n2"), ("missing", 1, "n1")]
        assert storage.drop_versions(1, named) == 1
        assert storage.get(1, "a") is None
        assert storage.get(1, "b") == b"2"
        assert storage.get(1, "c") == b"1"  # named with another writer: not the stored version
        check_consistent(storage)

    def test_drop_values_keeps_the_tombstones(self, storage: Storage, clock: ManualClock) -> None:
        storage.apply(4, Entry("v", b"1", 1, "n1"))
        storage.apply(4, Entry("w", b"1", 1, "n1", clock.ms + 60_000))
        storage.apply(4, Entry("t", None, 2, "n1", clock.ms + 60_000))
        storage.apply(5, Entry("other", b"1", 1, "n1"))
        assert storage.drop_values(4) == 2
        assert storage.get_entry(4, "v") is None
        assert storage.get_entry(4, "w") is None
        assert storage.get_entry(4, "t") == Entry("t", None, 2, "n1", clock.ms + 60_000)
        assert storage.get(5, "other") == b"1"
        check_consistent(storage)

    def test_drop_older_than_removes_older_records_of_every_partition(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        for p in range(4):
            storage.apply(p, Entry("old", b"v", 10, "n1"))
            storage.apply(p, Entry("old-delete", None, 11, "n1", clock.ms + 60_000))
            storage.apply(p, Entry("edge", b"v", 20, "n1"))
            storage.apply(p, Entry("new", b"v", 30, "n1"))
        assert storage.drop_older_than(20) == 8
        for p in range(4):
            assert {k for _, k, _, _ in storage.versions(p)} == {"edge", "new"}
        check_consistent(storage)

    def test_drop_partition_forgets_one_partition(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        for i in range(10):
            storage.apply(7, Entry(f"k{i}", b"v", 1, "n1"))
        storage.apply(7, Entry("gone", None, 2, "n1", clock.ms + 60_000))
        storage.apply(8, Entry("kept", b"v", 1, "n1"))
        assert storage.drop_partition(7) == 11
        assert list(storage.entries(7)) == []
        assert storage.partition_size(7) == 0
        assert storage.digest(7) == 0
        assert storage.bucket_digests(7) == [0] * BUCKETS
        assert storage.held_partitions() == [8]
        assert storage.get(8, "kept") == b"v"
        assert storage.drop_partition(7) == 0
        check_consistent(storage)

    def test_held_partitions_and_sizes_follow_the_records(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        storage.apply(0, Entry("a", b"v", 1, "n1"))
        storage.apply(0, Entry("b", None, 1, "n1", clock.ms + 60_000))
        storage.apply(PARTITIONS - 1, Entry("c", b"v", 1, "n1"))
        assert sorted(storage.held_partitions()) == [0, PARTITIONS - 1]
        assert storage.partition_size(0) == 2
        assert storage.partition_size(PARTITIONS - 1) == 1
        assert storage.partition_size(1) == 0
        storage.drop_versions(PARTITIONS - 1, [("c", 1, "n1")])
        assert storage.held_partitions() == [0]

    # -- digests -------------------------------------------------------------------------

    def test_an_empty_partition_has_zero_digests(self, storage: Storage) -> None:
        assert storage.digest(0) == 0
        assert storage.bucket_digests(0) == [0] * BUCKETS
        storage.apply(0, Entry("k", b"v", 1, "n1"))
        assert storage.digest(0) != 0
        storage.drop_versions(0, [("k", 1, "n1")])
        assert storage.digest(0) == 0
        assert storage.bucket_digests(0) == [0] * BUCKETS

    def test_the_digests_do_not_depend_on_the_order_of_writes(
        self, make_storage: StorageMaker
    ) -> None:
        writes = [
            Entry(f"k{i % 40}", None if i % 7 == 0 else b"v", i, f"n{i % 3}", 0)
            for i in range(1, 200)
        ]
        clock = ManualClock()
        forward, backward = make_storage(clock), make_storage(clock)
        try:
            for entry in writes:
                forward.apply(6, entry)
            for entry in reversed(writes):
                backward.apply(6, entry, key_hash(entry.key))
            assert forward.digest(6) == backward.digest(6) == digests_of(forward.versions(6)).digest
            assert forward.bucket_digests(6) == backward.bucket_digests(6)
        finally:
            forward.close()
            backward.close()

    @_property
    @given(ops=OPERATIONS)
    def test_digests_equal_cores_computation_after_any_operations(
        self, make_storage: StorageMaker, ops: list[tuple[Any, ...]]
    ) -> None:
        clock = ManualClock()
        storage = make_storage(clock)
        try:
            for op in ops:
                run_operation(storage, clock, op)
                check_consistent(storage)
        finally:
            storage.close()

    # -- threads -------------------------------------------------------------------------

    def test_concurrent_writers_lose_nothing(self, storage: Storage) -> None:
        threads_n, own, shared = 8, 400, 20
        failures: list[BaseException] = []
        done = threading.Event()

        def writer(t: int) -> None:
            try:
                for i in range(own):
                    storage.apply(i % PARTITIONS, Entry(f"t{t}-{i}", b"x" * (i % 50), 1, f"w{t}"))
                    s = i % shared
                    value = None if i % 5 == 0 else f"{t}:{i}".encode()
                    storage.apply(s % PARTITIONS, Entry(f"s{s}", value, i, f"w{t}", 0))
            except BaseException as exc:  # reported below, in the test's thread
                failures.append(exc)

        def reader() -> None:
            try:
                while not done.is_set():
                    for p in range(PARTITIONS):
                        storage.get(p, "s1")
                        storage.get_entry(p, "t0-1")
                        storage.versions(p)
                        storage.bucket_digests(p)
                    storage.stats()
            except BaseException as exc:
                failures.append(exc)

        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-5)
        try:
            threads = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
            readers = [threading.Thread(target=reader) for _ in range(2)]
            for thread in threads + readers:
                thread.start()
            for thread in threads:
                thread.join()
            done.set()
            for thread in readers:
                thread.join()
        finally:
            sys.setswitchinterval(interval)
        assert not failures, failures
        for t in range(threads_n):
            for i in range(own):
                assert storage.get(i % PARTITIONS, f"t{t}-{i}") == b"x" * (i % 50)
        for s in range(shared):
            # The greatest version written to s: the last i with i % shared == s, by w7.
            last = max(i for i in range(own) if i % shared == s)
            stored = storage.get_entry(s % PARTITIONS, f"s{s}")
            assert stored is not None
            assert (stored.version, stored.writer) == (last, "w7")
        stats = storage.stats()
        assert stats.keys + stats.tombstones == threads_n * own + shared
        check_consistent(storage)

    # -- the memory limit ----------------------------------------------------------------

    @pytest.fixture
    def limited(
        self, make_limited_storage: LimitedStorageMaker | None, clock: ManualClock
    ) -> Iterator[Storage]:
        if make_limited_storage is None:
            pytest.skip("this backend has no memory limit")
        backend = make_limited_storage(clock, LIMIT_BYTES)
        yield backend
        backend.close()

    def test_a_write_past_the_limit_is_refused_or_makes_room(
        self, limited: Storage, clock: ManualClock
    ) -> None:
        stats = limited.stats()
        assert stats.max_bytes == LIMIT_BYTES
        limited.apply(0, Entry("keep", b"old", 1, "n1"))
        refusals: list[str] = []
        for i in range(600):  # 2.4 MiB of values that do not compress
            key = f"k{i}"
            try:
                assert limited.apply(i % PARTITIONS, Entry(key, incompressible(i, 4096), 1, "n1"))
            except MemoryLimitExceeded as exc:
                refusals.append(str(exc))
                assert limited.get(i % PARTITIONS, key) is None
                assert repr(key) in refusals[-1], "the error names the key"
            assert limited.stats().used_bytes <= LIMIT_BYTES
        stats = limited.stats()
        assert refusals or stats.evictions, "2.4 MiB went into 1 MiB: no refusal, no eviction"
        big = incompressible(-1, 8192)
        try:
            assert limited.apply(0, Entry("keep", big, 2, "n1"))
            assert limited.get(0, "keep") == big
        except MemoryLimitExceeded:
            assert limited.get(0, "keep") == b"old"  # a refused overwrite keeps the old value
        check_consistent(limited)

    def test_tombstones_are_never_evicted_to_make_room(
        self, limited: Storage, clock: ManualClock
    ) -> None:
        for i in range(20):
            limited.apply(i % PARTITIONS, Entry(f"t{i}", None, 5, "n1", clock.ms + DAY_MS))
        for i in range(600):
            with contextlib.suppress(MemoryLimitExceeded):
                limited.apply(i % PARTITIONS, Entry(f"k{i}", incompressible(i, 4096), 1, "n1"))
        for i in range(20):
            stored = limited.get_entry(i % PARTITIONS, f"t{i}")
            assert stored == Entry(f"t{i}", None, 5, "n1", clock.ms + DAY_MS)
        assert limited.stats().tombstones == 20
        assert not limited.apply(0, Entry("t0", b"stale", 4, "n1"))
        check_consistent(limited)

    def test_memory_is_given_back_when_records_go(
        self, limited: Storage, clock: ManualClock
    ) -> None:
        for i in range(50):
            limited.apply(i % PARTITIONS, Entry(f"k{i}", incompressible(i, 4096), 1, "n1"))
        assert limited.stats().used_bytes > 50 * 4096
        for p in range(PARTITIONS):
            limited.drop_partition(p)
        assert limited.stats().used_bytes == 0
        for i in range(200):  # the room is usable again
            limited.apply(i % PARTITIONS, Entry(f"again{i}", incompressible(i, 4096), 1, "n1"))
        assert limited.stats().evictions == 0
        check_consistent(limited)

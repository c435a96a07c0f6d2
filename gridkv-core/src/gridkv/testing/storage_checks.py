"""What the storage conformance suite builds on, for a backend's own tests too.

:class:`ManualClock` is the clock the suite hands a backend; :func:`conformance_options` makes
options a storage factory builds a backend for the suite from; :func:`check_consistent` asserts
that a backend's digests, sizes and figures agree with its records; :data:`OPERATIONS` and
:func:`run_operation` drive a backend through any sequence of its operations (a hypothesis
strategy and its interpreter); :data:`WRITES` are writes of a few keys, each ``(key, version,
writer)`` once, in any order.

Needs ``pytest`` and ``hypothesis`` (``pip install 'gridkv-core[test]'``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from gridkv.base.options import Options
from gridkv.storage.base import Entry, Storage
from gridkv.storage.digest import BUCKETS, digests_of, key_hash

__all__ = [
    "DAY_MS",
    "LIMIT_BYTES",
    "OPERATIONS",
    "PARTITIONS",
    "WRITES",
    "LimitedStorageMaker",
    "ManualClock",
    "StorageMaker",
    "check_consistent",
    "conformance_options",
    "incompressible",
    "run_operation",
]

#: Partitions the suite writes to: a backend made for it holds at least ``0..PARTITIONS-1``.
PARTITIONS = 16
#: The memory limit the suite gives ``make_limited_storage``: 1 MiB.
LIMIT_BYTES = 1 << 20

#: ``make(clock)`` returns a new, empty backend without a memory limit, judging time by
#: ``clock()`` (wall seconds).
StorageMaker = Callable[[Callable[[], float]], Storage]
#: ``make(clock, max_bytes)`` returns a new, empty backend limited to ``max_bytes`` (a whole
#: number of MiB).
LimitedStorageMaker = Callable[[Callable[[], float], int], Storage]

DAY_MS = 86_400_000
_KEYS = ["a", "b", "c", "user:1", "user:2", "clé", "k" * 40]
_WRITERS = ["n1", "n2", "n3"]


class ManualClock:
    """A wall clock (seconds) that moves only when told; the suite hands it to the makers."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        """The time in seconds."""
        return self.now

    @property
    def ms(self) -> int:
        """The time in milliseconds, as entries carry it."""
        return round(self.now * 1000)

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds


def conformance_options(max_bytes: int = 0, **storage: Any) -> Options:
    """Options a storage factory can build a backend for the suite from.

    ``partition_count`` is :data:`PARTITIONS`; ``max_bytes`` (a whole number of MiB, 0 for no
    limit) becomes ``storage.max_memory_mb``; ``storage`` adds settings of the ``storage``
    section (``eviction="lru"``, ``shard_count=4``).
    """
    if max_bytes % (1 << 20):
        raise ValueError(f"max_bytes must be a whole number of MiB, got {max_bytes}")
    return Options.from_mapping(
        {
            "local_node_id": "conformance",
            "partition_count": PARTITIONS,
            "max_value_bytes": 64 * 1024,
            "storage": {**storage, "max_memory_mb": max_bytes >> 20},
        }
    )


def incompressible(seed: int, size: int) -> bytes:
    """Bytes no compression shrinks, the same for the same seed."""
    return random.Random(seed).randbytes(size)


def check_consistent(storage: Storage) -> None:
    """Assert that a backend's digests, sizes and figures agree with its records.

    For every partition below :data:`PARTITIONS`: ``versions()`` lists each stored record
    once with its key's hash, as many as ``partition_size``; ``digest`` and
    ``bucket_digests`` equal :func:`~gridkv.storage.digest.digests_of` over it;
    ``held_partitions`` names the partitions holding records; ``stats()`` counts the
    tombstones, the values and the writers those records have.
    """
    sizes = [storage.partition_size(p) for p in range(PARTITIONS)]
    assert {p for p in storage.held_partitions() if p < PARTITIONS} == {
        p for p, n in enumerate(sizes) if n
    }
    writers: set[str] = set()
    tombstones = 0
    for p in range(PARTITIONS):
        records = storage.versions(p)
        assert len(records) == sizes[p], f"partition {p}: versions() and partition_size differ"
        assert len({key for _, key, _, _ in records}) == len(records)
        assert all(h == key_hash(key) for h, key, _, _ in records)
        expected = digests_of(records)
        assert storage.digest(p) == expected.digest, f"partition {p}: digest"
        assert storage.bucket_digests(p) == expected.buckets, f"partition {p}: bucket digests"
        writers.update(writer for _, _, _, writer in records)
        tombstones += sum(entry.tombstone for entry in storage.entries(p))
    stats = storage.stats()
    assert stats.tombstones == tombstones
    assert stats.keys + stats.tombstones == sum(sizes)
    assert stats.writers == len(writers)
    assert stats.used_bytes >= 0
    if not sum(sizes):
        assert stats.used_bytes == 0, "used_bytes must return to 0 when the store empties"


# Few keys, writers and versions, so that operations meet: overwrites, ties, drops of what is
# stored.
_apply_op = st.tuples(
    st.just("apply"),
    st.integers(0, 3),  # partition
    st.sampled_from(_KEYS),
    st.integers(1, 12),  # version
    st.sampled_from(_WRITERS),
    st.one_of(st.none(), st.binary(max_size=48), st.just(b"z" * 3000)),
    st.sampled_from([0, 5, 40, -10, DAY_MS]),  # expiry from now, ms; 0: never
    st.booleans(),  # pass the key hash
)
#: Sequences of a backend's operations for :func:`run_operation`, writes three times as often
#: as each other kind: apply (any expiry, values, tombstones, with the key hash or not), the
#: clock moving on, reads, sweeps (no horizon, a closed one, an open one), and each drop.
OPERATIONS = st.lists(
    st.one_of(
        _apply_op,
        _apply_op,
        _apply_op,
        st.tuples(st.just("advance"), st.integers(1, 30)),
        st.tuples(st.just("read"), st.integers(0, 3), st.sampled_from(_KEYS)),
        st.tuples(st.just("sweep"), st.integers(1, 4), st.sampled_from(["open", "shut", "far"])),
        st.tuples(st.just("drop_versions"), st.integers(0, 3), st.lists(st.booleans(), max_size=8)),
        st.tuples(st.just("drop_values"), st.integers(0, 3)),
        st.tuples(st.just("drop_older_than"), st.integers(1, 12)),
        st.tuples(st.just("drop_partition"), st.integers(0, 3)),
    ),
    max_size=40,
)
#: ``(key, version, writer, value or None, pass the key hash)`` writes to three keys, each
#: ``(key, version, writer)`` once, in any order.
WRITES = st.lists(
    st.tuples(
        st.sampled_from(_KEYS[:3]),
        st.integers(1, 6),
        st.sampled_from(_WRITERS),
        st.one_of(st.none(), st.binary(max_size=16)),
        st.booleans(),
    ),
    min_size=1,
    max_size=24,
    unique_by=lambda w: (w[0], w[1], w[2]),
)


def run_operation(storage: Storage, clock: ManualClock, op: tuple[Any, ...]) -> None:
    """Run one operation of :data:`OPERATIONS` on ``storage``."""
    kind = op[0]
    if kind == "apply":
        _, p, key, version, writer, value, expiry, with_hash = op
        expires = 0 if expiry == 0 else clock.ms + expiry
        entry = Entry(key, value, version, writer, expires)
        storage.apply(p, entry, key_hash(key) if with_hash else None)
    elif kind == "advance":
        clock.advance(op[1] / 1000)
    elif kind == "read":
        _, p, key = op
        storage.get(p, key)
        storage.get_entry(p, key)
        storage.entries_of(p, [key])
    elif kind == "sweep":
        _, budget, horizon = op
        if horizon == "open":
            storage.sweep(clock.ms, budget)
        elif horizon == "shut":
            storage.sweep(clock.ms, budget, lambda p: None)
        else:
            storage.sweep(clock.ms, budget, lambda p: [clock.ms + DAY_MS] * BUCKETS)
    elif kind == "drop_versions":
        _, p, mask = op
        stored = sorted(storage.versions(p))
        named = [(k, v, w) for (_, k, v, w), pick in zip(stored, mask, strict=False) if pick]
        storage.drop_versions(p, [*named, ("a", 3, "n9")])
    elif kind == "drop_values":
        storage.drop_values(op[1])
    elif kind == "drop_older_than":
        storage.drop_older_than(op[1])
    else:
        storage.drop_partition(op[1])

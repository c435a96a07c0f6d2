"""What the snapshot backend adds to the memory backend: its file, written and read back."""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from gridkv import ConfigError, Options
from gridkv.storage import Entry
from gridkv.testing import ManualClock, check_consistent
from gridkv.testing.storage_checks import DAY_MS, PARTITIONS, incompressible
from gridkv_storage_snapshot import (
    DIR_ENV,
    SnapshotError,
    SnapshotReader,
    SnapshotStorage,
    snapshot_path,
)

MAX_AGE = 3570.0
SETTLE = 60.0


@pytest.fixture
def snapshot_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory of the test's own, named by GRIDKV_SNAPSHOT_DIR."""
    directory = tmp_path / "snapshots"
    monkeypatch.setenv(DIR_ENV, str(directory))
    return directory


def make(path: Path, clock: ManualClock, max_bytes: int = 0) -> SnapshotStorage:
    return SnapshotStorage(
        path,
        PARTITIONS,
        node_id="n1",
        max_age=MAX_AGE,
        settle=SETTLE,
        clock=clock,
        max_bytes=max_bytes,
    )


def fill(storage: SnapshotStorage, clock: ManualClock) -> dict[int, list[Entry]]:
    """Values plain, compressible, incompressible, with a TTL; tombstones; several writers."""
    writes = [
        (0, Entry("plain", b"v", 5, "n1")),
        (0, Entry("empty", b"", 5, "n2")),
        (1, Entry("big", b"compressible " * 2000, 6, "n1")),
        (2, Entry("noise", incompressible(7, 10_000), 7, "n3")),
        (3, Entry("ttl", b"later", 8, "n1", clock.ms + DAY_MS)),
        (3, Entry("gone", None, 9, "n2", clock.ms + DAY_MS)),
        (15, Entry("clé ☃", b"unicode", 10, "n1")),
    ]
    for partition, entry in writes:
        assert storage.apply(partition, entry)
    return {p: sorted(storage.entries(p)) for p in range(PARTITIONS)}


def test_a_storage_built_again_on_its_file_holds_the_same_records(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / "n1.snapshot"
    first = make(path, clock)
    assert first.loaded == 0
    held = fill(first, clock)
    digests = [first.bucket_digests(p) for p in range(PARTITIONS)]
    before = first.stats()
    first.close()
    assert first.stats().keys == 0  # close() drops the records, as the memory backend's

    again = make(path, clock)
    try:
        assert again.loaded == 7
        assert {p: sorted(again.entries(p)) for p in range(PARTITIONS)} == held
        assert [again.bucket_digests(p) for p in range(PARTITIONS)] == digests
        after = again.stats()
        assert (after.keys, after.tombstones, after.writers) == (6, 1, 3)
        assert (after.keys, after.tombstones, after.used_bytes, after.compressed) == (
            before.keys,
            before.tombstones,
            before.used_bytes,
            before.compressed,
        )
        assert again.get(1, "big") == b"compressible " * 2000
        assert not again.apply(3, Entry("gone", b"stale", 8, "n9"))  # the delete holds
        check_consistent(again)
    finally:
        again.close()


def test_values_that_expired_while_the_node_was_down_are_not_loaded(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / "n1.snapshot"
    first = make(path, clock)
    first.apply(0, Entry("short", b"v", 1, "n1", clock.ms + 5_000))
    first.apply(0, Entry("long", b"v", 1, "n1", clock.ms + DAY_MS))
    first.apply(0, Entry("deleted", None, 2, "n1", clock.ms + 5_000))
    first.close()
    clock.advance(10)
    again = make(path, clock)
    try:
        assert again.loaded == 2
        assert again.get(0, "short") is None
        assert again.get(0, "long") == b"v"
        # A tombstone is kept past its expiry (the sweep collects it under the node's rules).
        assert again.get_entry(0, "deleted") is not None
        assert again.stats().expirations == 0
    finally:
        again.close()


def test_a_snapshot_older_than_deletes_are_kept_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    path = tmp_path / "n1.snapshot"
    first = make(path, clock)
    first.apply(0, Entry("k", b"v", 1, "n1"))
    first.close()
    clock.advance(MAX_AGE + 1)
    with caplog.at_level(logging.WARNING, logger="gridkv"):
        again = make(path, clock)
    try:
        assert again.loaded == 0
        assert again.get(0, "k") is None
        assert "tombstone_ttl - handoff_timeout" in caplog.text
        assert str(path) in caplog.text
    finally:
        again.close()


def test_a_snapshot_of_another_partition_count_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    path = tmp_path / "n1.snapshot"
    first = make(path, clock)
    first.apply(0, Entry("k", b"v", 1, "n1"))
    first.close()
    with caplog.at_level(logging.WARNING, logger="gridkv"):
        again = SnapshotStorage(path, 2 * PARTITIONS, node_id="n1", clock=clock)
    try:
        assert again.loaded == 0
        assert "partition_count 16, this node has 32" in caplog.text
    finally:
        again.close()


def file_as_of(path: Path) -> int:
    with SnapshotReader(path, 1 << 20) as reader:
        return reader.header.as_of_ms


def settled(storage: SnapshotStorage) -> bool:
    """Whether its records count as current (a call: mypy does not narrow it between calls)."""
    return storage.settled


def loaded_from_an_old_snapshot(path: Path, clock: ManualClock) -> tuple[SnapshotStorage, int]:
    """A storage built on a snapshot written 100 s ago; and that snapshot's as-of time."""
    first = make(path, clock)
    written_at = clock.ms
    first.apply(0, Entry("k", b"v", 1, "n1"))
    first.close()
    assert file_as_of(path) == written_at  # nothing loaded: records are current when written
    clock.advance(100)
    again = make(path, clock)
    assert again.loaded == 1 and not again.settled
    return again, written_at


def test_loaded_records_keep_their_as_of_time_until_the_node_has_settled(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    path = tmp_path / "n1.snapshot"
    again, written_at = loaded_from_an_old_snapshot(path, clock)
    again.snapshot()  # a node built on old records, never started: they stay as old
    assert file_as_of(path) == written_at
    again.member_changed("n2", "alive")  # seen while the node starts (its join)
    clock.advance(SETTLE)
    again.node_started()  # the settle clock starts now, not at the peer's first sight
    clock.advance(SETTLE - 1)
    again.snapshot()
    assert file_as_of(path) == written_at
    again.member_changed("n1", "suspect")  # its own changes are not a peer's
    clock.advance(1)  # a live peer for settle seconds: handoff and anti-entropy caught it up
    assert settled(again)
    again.close()
    assert file_as_of(path) == clock.ms


def test_a_node_that_never_sees_a_live_peer_never_settles(tmp_path: Path) -> None:
    """Alone, or cut off from its cluster from the start (seeds down, a partition): however
    long it runs, its loaded records keep the snapshot's as-of time, so a delete the cluster
    made meanwhile, and may forget, cannot come back as if it were current."""
    clock = ManualClock()
    path = tmp_path / "n1.snapshot"
    again, written_at = loaded_from_an_old_snapshot(path, clock)
    again.node_started()
    again.member_changed("n1", "alive")  # itself
    clock.advance(100 * SETTLE)
    assert not settled(again)
    again.close()
    assert file_as_of(path) == written_at


def test_the_settle_clock_starts_over_when_the_view_has_no_live_peer_left(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    path = tmp_path / "n1.snapshot"
    again, written_at = loaded_from_an_old_snapshot(path, clock)
    again.node_started()
    again.member_changed("n2", "alive")
    again.member_changed("n3", "alive")
    clock.advance(SETTLE / 2)
    again.member_changed("n2", "dead")  # n3 is still there: the clock runs on
    clock.advance(SETTLE / 2 - 1)
    again.member_changed("n3", "suspect")  # no live peer left: cut off before settling
    clock.advance(10 * SETTLE)
    assert not settled(again)
    again.snapshot()
    assert file_as_of(path) == written_at
    again.member_changed("n3", "alive")  # back: a whole settle period from now
    clock.advance(SETTLE - 1)
    assert not settled(again)
    clock.advance(1)
    again.member_changed("n3", "left")  # a whole period with a peer counts, even if it ended
    clock.advance(10 * SETTLE)
    assert settled(again)
    again.close()
    assert file_as_of(path) == clock.ms


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "not a snapshot", "empty"])
def test_a_damaged_snapshot_is_set_aside_and_the_node_starts_empty(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    path = tmp_path / "n1.snapshot"
    first = make(path, clock)
    for i in range(100):
        first.apply(i % PARTITIONS, Entry(f"k{i}", b"value %d" % i, 1, "n1"))
    first.close()
    data = bytearray(path.read_bytes())
    if damage == "flip a byte":
        data[len(data) // 2] ^= 0x40
    elif damage == "truncate":
        del data[-100:]
    elif damage == "not a snapshot":
        data = bytearray(b"hello, world\n" * 10)
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="gridkv"):
        again = make(path, clock)
    try:
        assert again.loaded == 0
        assert again.held_partitions() == []
        assert not path.exists()
        assert path.with_name(path.name + ".corrupt").read_bytes() == data
        assert f"snapshot {str(path)!r} is not usable" in caplog.text
    finally:
        again.close()
    assert path.exists()  # the next close writes a good one


def disk_full_after(storage: SnapshotStorage, records: int) -> None:
    """Make the next writes of ``storage`` fail (ENOSPC) after ``records`` records."""
    original = storage._records

    def failing() -> Iterator[tuple[int, Entry]]:
        for i, record in enumerate(original()):
            if i == records:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            yield record

    storage._records = failing  # type: ignore[method-assign]


def test_the_file_is_private_and_replaced_whole(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / "n1.snapshot"
    storage = make(path, clock)
    storage.apply(0, Entry("k", b"v1", 1, "n1"))
    assert storage.snapshot() == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n1.snapshot", "n1.snapshot.lock"]
    # A write that fails leaves the previous snapshot as it was, and names the file.
    before = path.read_bytes()
    storage.apply(0, Entry("k", b"v2", 2, "n1"))
    storage.apply(1, Entry("k1", b"v", 2, "n1"))
    disk_full_after(storage, 1)
    with pytest.raises(SnapshotError, match=r"cannot write snapshot .*n1\.snapshot'.*space"):
        storage.snapshot()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n1.snapshot", "n1.snapshot.lock"]
    del storage._records  # writes work again
    storage.close()
    again = make(path, clock)
    try:
        assert again.get(0, "k") == b"v2"
    finally:
        again.close()


def test_a_failed_write_on_close_is_logged_and_the_close_completes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    path = tmp_path / "n1.snapshot"
    storage = make(path, clock)
    storage.apply(0, Entry("k", b"v", 1, "n1"))
    disk_full_after(storage, 0)
    with caplog.at_level(logging.ERROR, logger="gridkv"):
        storage.close()
    assert "the next start is a cold one" in caplog.text
    assert storage.held_partitions() == []
    assert not path.exists()
    make(path, clock).close()  # the lock was released


def test_the_final_snapshot_keeps_what_the_node_held_before_it_handed_partitions_over(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    path = tmp_path / "n1.snapshot"
    storage = make(path, clock)
    for i in range(20):
        storage.apply(i % PARTITIONS, Entry(f"k{i}", b"v", 1, "n1"))
    storage.final_snapshot()
    for partition in range(PARTITIONS):  # what handoff does once the new replicas have it
        storage.drop_partition(partition)
    storage.close()  # writes nothing more
    again = make(path, clock)
    try:
        assert again.loaded == 20
    finally:
        again.close()


def test_two_storages_cannot_use_one_file(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / "n1.snapshot"
    first = make(path, clock)
    with pytest.raises(ConfigError, match=r"n1\.snapshot' is in use by another node"):
        make(path, clock)
    first.close()
    make(path, clock).close()


def test_values_that_no_longer_fit_under_the_limit_are_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    path = tmp_path / "n1.snapshot"
    first = make(path, clock)
    for i in range(400):  # 1.6 MiB that does not compress
        first.apply(i % PARTITIONS, Entry(f"k{i}", incompressible(i, 4096), 1, "n1"))
    first.apply(0, Entry("deleted", None, 1, "n1", clock.ms + DAY_MS))
    first.close()
    with caplog.at_level(logging.WARNING, logger="gridkv"):
        again = make(path, clock, max_bytes=1 << 20)
    try:
        stats = again.stats()
        assert 0 < stats.keys < 400
        assert stats.tombstones == 1
        assert stats.used_bytes <= 1 << 20
        assert "did not fit under storage.max_memory_mb" in caplog.text
        check_consistent(again)
    finally:
        again.close()


def test_the_node_options_name_the_file(snapshot_dir: Path) -> None:
    options = Options.from_mapping(
        {"local_node_id": "web/1", "tombstone_ttl": "2h", "handoff_timeout": "1m"}
    )
    storage = SnapshotStorage.from_options(options, clock=ManualClock())
    try:
        assert storage.path == snapshot_dir / "node-web%2F1.snapshot"
        assert storage.path == snapshot_path(snapshot_dir, "web/1")
        assert storage.node_id == "web/1"
    finally:
        storage.close()
    assert storage.path.exists()
    assert len(snapshot_path(snapshot_dir, "x" * 255).name) < 100


def test_the_directory_must_be_named_and_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = Options.from_mapping({"local_node_id": "n1"})
    monkeypatch.delenv(DIR_ENV, raising=False)
    with pytest.raises(ConfigError, match=f"set {DIR_ENV}"):
        SnapshotStorage.from_options(options)
    a_file = tmp_path / "file"
    a_file.write_text("")
    monkeypatch.setenv(DIR_ENV, str(a_file))
    with pytest.raises(ConfigError, match=rf"{DIR_ENV}=.*file' is not a directory"):
        SnapshotStorage.from_options(options)


def test_a_snapshot_that_is_no_plain_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "n1.snapshot"
    path.mkdir()
    with pytest.raises(ConfigError, match=r"n1\.snapshot' is not a regular file"):
        make(path, ManualClock())
    make(tmp_path / "n2.snapshot", ManualClock()).close()

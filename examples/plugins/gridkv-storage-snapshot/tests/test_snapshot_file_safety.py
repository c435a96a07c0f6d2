"""The snapshot file under pressure: two writers at once, names planted by someone else in its
directory, a directory or a file others may write, a FIFO at its name, and a forked child."""

from __future__ import annotations

import os
import stat
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest
from gridkv import ConfigError, Options
from gridkv.storage import Entry
from gridkv.testing import ManualClock
from gridkv.testing.waiting import wait_for
from gridkv_storage_snapshot import (
    DIR_ENV,
    SnapshotError,
    SnapshotReader,
    SnapshotStorage,
    snapshot_path,
)
from gridkv_storage_snapshot.fileformat import Header, write_snapshot

OPTIONS = Options(local_node_id="n1", partition_count=16)
AS_ROOT = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="giving a file to another user needs root",
)
NOBODY = 65534


def storage(path: Path) -> SnapshotStorage:
    return SnapshotStorage(path, 16, node_id="n1", clock=ManualClock())


def entry(key: str, value: bytes) -> Entry:
    return Entry(key, value, 1, "n1", 0)


def plant(path: Path, value: bytes = b"planted") -> None:
    """A valid, current snapshot of node n1 holding k = ``value``."""
    now = int(ManualClock()() * 1000)
    write_snapshot(path, Header("n1", 16, now, now), [(0, entry("k", value))])


class ContendedLock:
    """A lock that says when someone had to wait for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.contended = threading.Event()

    def __enter__(self) -> None:
        if not self._lock.acquire(blocking=False):
            self.contended.set()
            self._lock.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.release()


def test_a_periodic_snapshot_racing_the_final_one_does_not_corrupt_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README suggests snapshot() from a thread: a periodic write descheduled in the middle
    while the node's final snapshot is written must neither write into the file the final one
    renamed into place nor replace it afterwards."""
    path = tmp_path / "node-n1.snapshot"
    s = storage(path)
    for i in range(3):
        s.apply(i, entry(f"k{i}", b"v"))
    lock = ContendedLock()
    monkeypatch.setattr(s, "_write_lock", lock, raising=False)
    paused, resume = threading.Event(), threading.Event()
    original = s._records
    calls = 0

    def records() -> Iterator[tuple[int, Entry]]:
        nonlocal calls
        calls += 1
        first = calls == 1
        yield from original()
        if first:  # the periodic thread, descheduled just before the trailer
            paused.set()
            assert resume.wait(10)

    monkeypatch.setattr(s, "_records", records)
    periodic: list[object] = []
    final_done = threading.Event()

    def periodic_snapshot() -> None:
        try:
            periodic.append(s.snapshot())
        except Exception as exc:
            periodic.append(exc)

    def final_snapshot() -> None:
        s.final_snapshot()
        final_done.set()

    t = threading.Thread(target=periodic_snapshot)
    t.start()
    assert paused.wait(10)
    s.apply(3, entry("k3", b"x" * 5000))  # written meanwhile
    f = threading.Thread(target=final_snapshot)  # the node begins to close
    f.start()
    wait_for(
        "the final snapshot waits or is written",
        lambda: lock.contended.is_set() or final_done.is_set(),
    )
    resume.set()
    t.join(10)
    f.join(10)
    with SnapshotReader(path, 1 << 20) as reader:  # whole, and the final one's
        assert len(list(reader.records())) == 4
    assert periodic == [3]  # it finished its own file, then the final one replaced it
    assert s.snapshot() == 0  # after the final snapshot nothing more is written
    s.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.name + ".lock"]
    again = storage(path)
    try:
        assert again.loaded == 4
    finally:
        again.close()


def test_a_link_or_a_file_at_a_temporary_name_is_never_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each write makes a file of its own (a random name, O_EXCL|O_NOFOLLOW): a link planted
    at a name it could use (the old fixed <name>.tmp, or the very name it draws) is not
    followed, so the node never truncates or overwrites a file elsewhere."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    directory = tmp_path / "snapshots"
    directory.mkdir()
    path = snapshot_path(directory, "n1")
    os.symlink(victim, path.with_name(path.name + ".tmp"))
    monkeypatch.setattr("secrets.token_hex", lambda n: "f" * 2 * n)
    drawn = path.with_name(f"{path.name}.{'f' * 16}.tmp")
    os.symlink(victim, drawn)
    with pytest.raises(FileExistsError):
        write_snapshot(path, Header("n1", 16, 0, 0), [(0, entry("k", b"v"))])
    assert victim.read_bytes() == b"precious"
    assert not path.exists()
    os.unlink(drawn)
    assert write_snapshot(path, Header("n1", 16, 0, 0), [(0, entry("k", b"v"))]) == 1
    assert victim.read_bytes() == b"precious"
    assert stat.S_ISREG(os.lstat(path).st_mode)


def test_temporary_files_a_crash_left_are_removed_when_the_storage_is_built(
    tmp_path: Path,
) -> None:
    path = tmp_path / "node-n1.snapshot"
    left = [path.with_name(path.name + ".0123456789abcdef.tmp"), tmp_path / "other.1.tmp"]
    for file in left:
        file.write_bytes(b"half a snapshot")
    storage(path).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        path.name,
        path.name + ".lock",
        "other.1.tmp",  # not this node's
    ]


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777, 0o702])
def test_a_directory_others_may_write_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    os.chmod(directory, mode)
    monkeypatch.setenv(DIR_ENV, str(directory))
    plant(snapshot_path(directory, "n1"), b"attacker's")
    with pytest.raises(ConfigError, match=rf"{DIR_ENV}='{directory}' has mode {mode:04o}.*go-w"):
        SnapshotStorage.from_options(OPTIONS)
    assert not snapshot_path(directory, "n1").with_name("node-n1.snapshot.lock").exists()


@AS_ROOT
def test_a_directory_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "theirs"
    directory.mkdir(mode=0o700)
    os.chown(directory, NOBODY, NOBODY)
    monkeypatch.setenv(DIR_ENV, str(directory))
    with pytest.raises(ConfigError, match=rf"'{directory}' belongs to user {NOBODY}, not to"):
        SnapshotStorage.from_options(OPTIONS)


def test_a_directory_made_for_the_node_is_private_and_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "made" / "snapshots"
    monkeypatch.setenv(DIR_ENV, str(directory))
    SnapshotStorage.from_options(OPTIONS).close()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert snapshot_path(directory, "n1").exists()


@pytest.mark.parametrize("mode", [0o666, 0o620, 0o602])
def test_a_snapshot_others_may_write_is_refused_naming_it(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node-n1.snapshot"
    plant(path)
    os.chmod(path, mode)
    with pytest.raises(ConfigError, match=rf"'{path}' has mode {mode:04o}: others could"):
        storage(path)
    storage(tmp_path / "node-n2.snapshot").close()  # the lock was released


@AS_ROOT
def test_a_snapshot_of_another_user_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "node-n1.snapshot"
    plant(path, b"attacker's")
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(ConfigError, match=rf"'{path}' belongs to user {NOBODY}, not to"):
        storage(path)


def test_a_snapshot_that_is_a_link_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.snapshot"
    plant(elsewhere)
    path = tmp_path / "node-n1.snapshot"
    os.symlink(elsewhere, path)
    with pytest.raises(ConfigError, match=rf"'{path}' is a symbolic link"):
        storage(path)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        SnapshotReader(path, 1 << 20)


def test_a_fifo_at_the_snapshot_name_is_refused_without_waiting_for_a_writer(
    tmp_path: Path,
) -> None:
    path = tmp_path / "node-n1.snapshot"
    os.mkfifo(path, 0o600)
    outcome: list[object] = []

    def build() -> None:
        try:
            storage(path).close()
            outcome.append("built")
        except ConfigError as exc:
            outcome.append(exc)

    t = threading.Thread(target=build, daemon=True)
    t.start()
    t.join(10)  # returns at once unless the open blocks
    if t.is_alive():  # unblock the reader, then fail
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        t.join(10)
        pytest.fail("building the storage blocked on a FIFO")
    assert len(outcome) == 1 and isinstance(outcome[0], ConfigError)
    assert f"'{path}' is not a regular file" in str(outcome[0])
    with pytest.raises(SnapshotError, match="not a regular file"):
        SnapshotReader(path, 1 << 20)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_neither_keeps_the_file_locked_nor_writes_it(tmp_path: Path) -> None:
    """A child forked while the node runs (a multiprocessing worker) inherits the lock's
    descriptor: it must not keep the flock once the node closed (the node could not start
    again while the child lives), nor write the node's file, even when it closes its copy."""
    path = tmp_path / "node-n1.snapshot"
    s = storage(path)
    s.apply(0, entry("k", b"parent's"))
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        status = 1
        try:
            os.close(go_w)
            os.close(done_r)
            s.apply(0, Entry("k", b"child's", 2, "n1", 0))
            try:
                s.snapshot()
            except SnapshotError as exc:
                status = 0 if "forked from the node's" in str(exc) else 2
            s.final_snapshot()
            if path.exists():
                status = 3
            os.write(done_w, b"x")
            os.read(go_r, 1)  # the parent closed its node and started it again
            s.close()  # the child's copy: drops its records, writes nothing
        finally:
            os._exit(status)
    os.close(go_r)
    os.close(done_w)
    try:
        assert os.read(done_r, 1) == b"x"
        s.close()
        again = storage(path)  # the node starts again while the child lives
        assert again.get(0, "k") == b"parent's"
        os.write(go_w, b"x")
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0
        again.close()
        again = storage(path)
        assert again.get(0, "k") == b"parent's"
        again.close()
    finally:
        os.close(go_w)
        os.close(done_r)
        if pid:
            os.waitpid(pid, 0)

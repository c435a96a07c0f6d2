"""GridKV.for_workers without gunicorn: the runtime directory and its checks (where it is, who
owns it, its mode, the secret made once), the member files and their locks (a fork keeps none
of them), OS errors as ConfigError, the options a group's nodes get, and, with the tcp
transport installed, the per-process node: made on first use, two nodes of one group in one
process joining each other, a fork making its own, and a child of multiprocessing leaving
gracefully (a for_workers node, and a plain GridKV through gridkv.api.process). The workers
under real gunicorn are in tests/test_workers.py."""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import importlib.util
import json
import multiprocessing
import multiprocessing.util
import os
import signal
import stat
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gridkv import GridKV, ShuttingDown
from gridkv.api import process, workers
from gridkv.api.workers import (
    DEFAULT_REPLICA_COUNT,
    RUNTIME_DIR_ENV,
    RuntimeDir,
    WorkerGridKV,
    check_name,
    runtime_base,
    worker_options,
)
from gridkv.base.errors import BackendNotInstalled, ConfigError, NotReady
from gridkv.plugins import Plugins
from gridkv.testing.forking import in_forked_child
from gridkv.testing.waiting import wait_for

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX only (flock)")
TCP_INSTALLED = importlib.util.find_spec("gridkv_transport_tcp") is not None
needs_tcp = pytest.mark.skipif(not TCP_INSTALLED, reason="needs gridkv-transport-tcp")


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A runtime base of the test's own, named by GRIDKV_RUNTIME_DIR (not made yet)."""
    path = tmp_path / "run"
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(path))
    monkeypatch.setattr(workers, "_groups", {})  # for_workers' objects: this test's own
    return path


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- names and where the directory is -----------------------------------------------------


@pytest.mark.parametrize("name", ["myapp", "a", "web-1.api_v2", "A" * 64])
def test_names_that_can_name_a_group(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "-x", ".hidden", "a/b", "a b", "é", "A" * 65, 7])
def test_names_that_cannot(name: object) -> None:
    with pytest.raises(ConfigError, match="group's name must be"):
        check_name(name)


def test_the_base_is_gridkv_runtime_dir_then_xdg_runtime_dir_then_the_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(tmp_path / "given"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert runtime_base() == tmp_path / "given"
    monkeypatch.delenv(RUNTIME_DIR_ENV)
    assert runtime_base() == tmp_path / "gridkv"
    # Not this user's (sudo keeps the caller's variable), or missing: the temp dir.
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(tmp_path).st_uid + 1)
    uid = os.geteuid()
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    assert runtime_base() == tmp_path / f"gridkv-{uid}"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing"))
    assert runtime_base() == tmp_path / f"gridkv-{uid}"


# -- the directory and its secret ---------------------------------------------------------


def test_open_makes_private_directories_and_one_secret(base: Path) -> None:
    directory = RuntimeDir.open("myapp")
    assert directory.path == base / "myapp"
    assert mode_of(base) == 0o700 and mode_of(directory.path) == 0o700
    secret = directory.secret_file
    assert mode_of(secret) == 0o600
    assert len(base64.b64decode(secret.read_text().strip(), validate=True)) == 32
    # Opened again (another worker): the same secret, and nothing else left behind.
    first = secret.read_bytes()
    again = RuntimeDir.open("myapp")
    assert again.secret_file.read_bytes() == first
    assert sorted(p.name for p in directory.path.iterdir()) == ["secret"]
    # Another group: another directory, another secret.
    assert RuntimeDir.open("other").secret_file.read_bytes() != first


def test_processes_racing_to_make_the_secret_all_read_the_same_one(base: Path) -> None:
    RuntimeDir.open("warmup")  # the base exists; the race is on the group's directory
    secrets: list[bytes] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def open_it() -> None:
        barrier.wait()
        try:
            secrets.append(RuntimeDir.open("raced").secret_file.read_bytes())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert len(secrets) == 8 and len(set(secrets)) == 1
    assert sorted(p.name for p in (base / "raced").iterdir()) == ["secret"]


def test_a_group_directory_others_can_enter_is_refused(base: Path) -> None:
    RuntimeDir.open("myapp")
    os.chmod(base / "myapp", 0o750)
    with pytest.raises(ConfigError, match=r"has mode 0750.*chmod 700"):
        RuntimeDir.open("myapp")


def test_a_base_others_can_write_is_refused_one_they_can_read_is_not(base: Path) -> None:
    base.mkdir(mode=0o700)
    os.chmod(base, 0o755)
    RuntimeDir.open("myapp")
    os.chmod(base, 0o777)
    with pytest.raises(ConfigError, match=r"mode 0777, which lets other users replace"):
        RuntimeDir.open("myapp")


def test_a_directory_of_another_user_is_refused(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    RuntimeDir.open("myapp")
    uid = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: uid + 1)  # as another user would see it
    with pytest.raises(ConfigError, match=rf"belongs to user {uid}, not to .* \({uid + 1}\)"):
        RuntimeDir.open("myapp")


def test_a_symbolic_link_is_refused(base: Path, tmp_path: Path) -> None:
    RuntimeDir.open("elsewhere")
    base.joinpath("myapp").symlink_to(base / "elsewhere")
    with pytest.raises(ConfigError, match="is a symbolic link"):
        RuntimeDir.open("myapp")


def test_a_base_that_cannot_be_made_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(tmp_path / "file" / "run"))
    with pytest.raises(ConfigError, match=f"cannot be made.*{RUNTIME_DIR_ENV}"):
        RuntimeDir.open("myapp")


def test_a_secret_others_can_read_or_that_is_malformed_is_refused(base: Path) -> None:
    secret = RuntimeDir.open("myapp").secret_file
    os.chmod(secret, 0o644)
    with pytest.raises(ConfigError, match=r"secret of workers' group 'myapp'.*chmod 600"):
        RuntimeDir.open("myapp")
    os.chmod(secret, 0o600)
    secret.write_text("not base64!\n")
    with pytest.raises(ConfigError, match="not base64"):
        RuntimeDir.open("myapp")


# -- members and the lock -----------------------------------------------------------------


def test_members_are_the_files_locked_by_live_processes(base: Path) -> None:
    directory = RuntimeDir.open("myapp")
    live = directory.publish("myapp-host-1", "127.0.0.1:4001")
    try:
        # Left by processes that are gone: nobody holds their locks.
        (directory.path / "node-999-dead.json").write_text(
            json.dumps({"node_id": "gone", "address": "127.0.0.1:4002", "pid": 999})
        )
        (directory.path / ".node-999-dead.tmp").write_text("half")
        (directory.path / "unrelated").write_text("left alone")
        assert [(m.node_id, m.address) for m in directory.members()] == [
            ("myapp-host-1", "127.0.0.1:4001")
        ]
        names = sorted(p.name for p in directory.path.iterdir())
        assert names == sorted(["secret", "unrelated", live.path.name])
        assert mode_of(live.path) == 0o600
    finally:
        live.remove()
    assert not live.path.exists()
    assert directory.members() == []


def test_a_live_member_file_that_is_malformed_is_skipped(base: Path) -> None:
    directory = RuntimeDir.open("myapp")
    with held(directory.path / "node-1-bad.json", b'{"address": "10.0.0.1:80"}'):
        assert directory.members() == []
        assert (directory.path / "node-1-bad.json").exists()  # its process lives: kept


@contextlib.contextmanager
def held(path: Path, data: bytes) -> Iterator[None]:
    """``path`` with ``data``, locked as a live member's file is."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def test_the_lock_is_one_holder_at_a_time_and_a_wait_is_bounded(base: Path) -> None:
    directory = RuntimeDir.open("myapp")
    with (
        directory.locked(1.0),
        pytest.raises(NotReady, match=r"another process has held .*lock' for 0.05s"),
        directory.locked(0.05),
    ):
        pass
    with directory.locked(0.05):  # free again
        pass


def fork_a_child_that_lives() -> tuple[int, int]:
    """Fork a child that does nothing until the returned pipe end is closed; (pid, end).

    Returns once the child runs (its fork handlers have run).
    """
    read_end, write_end = os.pipe()
    ready_read, ready_write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork of a threaded process
        pid = os.fork()
    if pid == 0:  # the child: lives on, never touching the group
        os.close(write_end)
        os.write(ready_write, b"r")
        os.read(read_end, 1)
        os._exit(0)
    os.close(read_end)
    os.close(ready_write)
    try:
        assert os.read(ready_read, 1) == b"r"
    finally:
        os.close(ready_read)
    return pid, write_end


def end_child(pid: int, write_end: int) -> None:
    os.close(write_end)
    os.waitpid(pid, 0)


def test_a_child_forked_while_a_thread_holds_the_lock_does_not_keep_it(base: Path) -> None:
    """flock locks belong to the open file, which a fork shares: the child closes its copy."""
    directory = RuntimeDir.open("grp")
    holding, release = threading.Event(), threading.Event()

    def starting_node() -> None:  # another thread making its node (WorkerGridKV._make_node)
        with directory.locked(5):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=starting_node)
    thread.start()
    assert holding.wait(10)
    pid, write_end = fork_a_child_that_lives()
    try:
        release.set()
        thread.join(10)  # the thread left its `with directory.locked(...)`
        with directory.locked(0.5):  # the next start of a node of the group: not wedged
            pass
        assert workers._held == set()
    finally:
        end_child(pid, write_end)


def test_a_child_forked_meanwhile_keeps_no_address_or_temporary_file_alive(base: Path) -> None:
    """A parent killed while its child lives: its node file and a file it was writing are
    unlocked, so the next start removes them, as a dead process's."""
    directory = RuntimeDir.open("grp")
    ready_read, ready_write = os.pipe()
    hold_read, hold_write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork of a threaded process
        parent = os.fork()
    if parent == 0:  # the parent to be: a node published, and a publish under way
        code = 1
        try:
            os.close(ready_read)
            os.close(hold_write)  # so that the test's close ends its child
            directory.publish("grp-host-1", "127.0.0.1:4001")
            directory._temp_file("node")
            if os.fork() == 0:  # its child: lives on, never touching the group
                os.write(ready_write, b"r")
                os.read(hold_read, 1)
            else:
                os.read(hold_read, 1)  # killed first
                code = 0
        finally:
            os._exit(code)
    os.close(ready_write)
    os.close(hold_read)
    try:
        assert os.read(ready_read, 1) == b"r"  # its child runs
        assert [m.node_id for m in directory.members()] == ["grp-host-1"]
        os.kill(parent, signal.SIGKILL)
        os.waitpid(parent, 0)
        assert directory.members() == []  # nobody holds them: removed
        assert sorted(p.name for p in directory.path.iterdir()) == ["secret"]
    finally:
        os.close(ready_read)
        os.close(hold_write)  # the child (now init's) ends
        with contextlib.suppress(ProcessLookupError):
            os.kill(parent, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(parent, 0)


# -- OS errors ------------------------------------------------------------------------------


def failing(code: int) -> Callable[..., Any]:
    def fail(*args: object) -> Any:
        raise OSError(code, os.strerror(code))

    return fail


class ReadOnlyOs:
    """The ``os`` module as on a read-only file system: an open to write fails (EROFS)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def open(self, path: Any, flags: int, mode: int = 0o777) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return os.open(path, flags, mode)


def test_os_errors_of_the_directory_are_config_errors_naming_the_path(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = RuntimeDir.open("grp")
    published = directory.publish("grp-host-1", "127.0.0.1:4001")
    with monkeypatch.context() as patch:
        patch.setattr(workers, "os", ReadOnlyOs())
        with pytest.raises(ConfigError, match=r"group 'fresh' .*/fresh'.*Read-only file"):
            RuntimeDir.open("fresh")  # makes its secret
        with (
            pytest.raises(ConfigError, match=r"lock of workers' group 'grp'.*/grp/lock.*Read-"),
            directory.locked(1),
        ):
            pass
        with pytest.raises(ConfigError, match=r"cannot publish its address in .*/grp'.*Read-"):
            directory.publish("grp-host-2", "127.0.0.1:4002")
        published.remove()  # at exit: withdrawn even when the lock cannot be taken
    assert directory.members() == []
    monkeypatch.setattr(workers, "_write_all", failing(errno.ENOSPC))  # a full file system
    with pytest.raises(ConfigError, match=r"cannot publish its address in .*/grp'.*No space"):
        directory.publish("grp-host-1", "127.0.0.1:4001")
    assert sorted(p.name for p in directory.path.iterdir()) == ["secret"]  # nothing left
    assert workers._held == set()  # no descriptor either
    with pytest.raises(ConfigError, match=r"/missing'.*cannot be read"):
        RuntimeDir(base / "missing").members()


# -- options ------------------------------------------------------------------------------


def test_options_of_a_group(base: Path) -> None:
    directory = RuntimeDir.open("myapp")
    options = worker_options("myapp", directory, {"storage": {"max_memory_mb": 64}})
    assert options.replica_count == DEFAULT_REPLICA_COUNT == 1
    assert options.local_address == "127.0.0.1:0"
    assert options.network.type == "tcp"
    assert options.auth.cluster_secret_file == str(directory.secret_file)
    assert options.storage.max_memory_mb == 64
    assert worker_options("myapp", directory, {"replica_count": 2}).replica_count == 2


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"local_address": "127.0.0.1:7000"}, r"'local_address': .* sets it itself"),
        ({"local_node_id": "me"}, r"'local_node_id': .* sets it itself"),
        ({"seed_addrs": ["127.0.0.1:7000"]}, r"'seed_addrs': .* sets it itself"),
        ({"network": {"type": "memory"}}, r"'network.type': .* over tcp"),
        ({"network": {"bind_addr": "0.0.0.0:0"}}, r"'network.bind_addr': .* 127.0.0.1 only"),
        ({"auth": {"cluster_secret": "x"}}, r"'auth.cluster_secret': .* the group's own secret"),
        ({"auth": {"ca_file": "ca.crt"}}, r"'auth.ca_file'"),
        ({"network": "tcp"}, r"'network': expected a mapping"),
        ({"replica_cont": 2}, r"unknown config key 'replica_cont'; did you mean 'replica_count'"),
    ],
)
def test_options_a_group_refuses(base: Path, config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        worker_options("myapp", RuntimeDir.open("myapp"), config)


def test_for_workers_needs_the_tcp_transport(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "get_plugins", lambda: Plugins(load_entry_points=False))
    with pytest.raises(BackendNotInstalled, match="pip install gridkv-transport-tcp"):
        GridKV.for_workers("myapp")
    assert not base.exists()  # nothing made


def test_every_public_member_of_gridkv_is_the_nodes() -> None:
    public = {n for n in dir(GridKV) if not n.startswith("_") and n != "for_workers"}
    assert public <= set(dir(WorkerGridKV))
    inherited = [n for n in public if getattr(WorkerGridKV, n) is getattr(GridKV, n)]
    assert inherited == []  # each one is delegated (or WorkerGridKV's own)
    assert WorkerGridKV.get.__doc__ == GridKV.get.__doc__


# -- the node of each process (tcp) -------------------------------------------------------


def member_files(base: Path, name: str) -> list[str]:
    return sorted(p.name for p in (base / name).glob("node-*.json"))


@needs_tcp
def test_for_workers_makes_no_node_until_first_use_and_one_object_per_name(base: Path) -> None:
    cache = GridKV.for_workers("myapp", log={"level": "warning"})
    try:
        assert isinstance(cache, WorkerGridKV) and isinstance(cache, GridKV)
        assert repr(cache) == "<WorkerGridKV 'myapp': not started in this process>"
        assert member_files(base, "myapp") == []
        assert GridKV.for_workers("myapp", log={"level": "warning"}) is cache
        assert GridKV.for_workers("myapp") is cache  # no configuration: the one made
        with pytest.raises(ConfigError, match="already called in this process with another"):
            GridKV.for_workers("myapp", replica_count=2)

        cache.set("k", b"v")  # the first use makes the node
        assert cache.get("k") == b"v"
        assert cache.node_id == f"myapp-{workers._host()}-{os.getpid()}"
        assert repr(cache) == f"<WorkerGridKV 'myapp': node {cache.node_id!r}>"
        assert cache.options.replica_count == 1
        assert cache.stats().cluster.ready
        assert len(member_files(base, "myapp")) == 1
    finally:
        cache.close()
    assert member_files(base, "myapp") == []
    with pytest.raises(ShuttingDown, match="was closed in this process"):
        cache.get("k")
    cache.close()  # idempotent
    assert GridKV.for_workers("myapp") is not cache  # closed: a new one


@needs_tcp
def test_two_nodes_of_a_group_join_each_other_and_leave(base: Path) -> None:
    options = worker_options("pair", RuntimeDir.open("pair"), {"log": {"level": "warning"}})
    with WorkerGridKV("pair", options) as a, WorkerGridKV("pair", options) as b:
        a.wait_ready(10)
        b.wait_ready(10)
        assert b.node_id == f"{a.node_id}-2"
        assert a.stats().cluster.healthy_nodes == b.stats().cluster.healthy_nodes == 2
        keys = [f"k{i}" for i in range(50)]
        assert a.set_many({k: k.encode() for k in keys}) == {}
        assert b.get_many(keys) == {k: k.encode() for k in keys}  # one copy, on either
        assert a.stats().storage.keys + b.stats().storage.keys == 50
        assert len(member_files(base, "pair")) == 2
        b.close()
        assert len(member_files(base, "pair")) == 1
        assert a.get_many(keys) == {k: k.encode() for k in keys}  # b handed its keys on
        assert a.stats().storage.keys == 50
    assert member_files(base, "pair") == []


@needs_tcp
@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_fork_makes_a_node_of_its_own_that_joins_its_parents(base: Path) -> None:
    cache = GridKV.for_workers("forked", log={"level": "warning"})
    assert isinstance(cache, WorkerGridKV)
    try:
        cache.set("parent", b"p")  # the parent's node
        parent_id = cache.node_id

        def in_child() -> Iterator[tuple[str, str]]:
            yield "started", str(cache.started)  # the parent's node is not the child's
            yield "pid", str(os.getpid())
            cache.set("child", b"c")
            yield "node", cache.node_id
            yield "parent's key", repr(cache.get("parent"))
            yield "alive", str(cache.stats().cluster.healthy_nodes)
            yield "files", str(len(member_files(base, "forked")))
            cache.close()  # os._exit runs no exit handlers
            yield "files after", str(len(member_files(base, "forked")))

        report = in_forked_child(in_child, timeout=30)
        assert report["started"] == "False", report
        assert report["node"] == f"forked-{workers._host()}-{report['pid']}", report
        assert report["parent's key"] == "b'p'", report
        assert (report["alive"], report["files"], report["files after"]) == ("2", "2", "1")
        assert cache.get("child") == b"c"  # handed over as the child left
        assert len(member_files(base, "forked")) == 1  # the parent's, still locked
        assert [m.node_id for m in RuntimeDir.open("forked").members()] == [parent_id]
    finally:
        cache.close()


@needs_tcp
def test_options_make_no_node_and_a_fork_gets_the_object_made_before_it(base: Path) -> None:
    cache = GridKV.for_workers("opts", ttl=5, log={"level": "warning"})
    assert isinstance(cache, WorkerGridKV)
    try:
        options = cache.options  # as a gunicorn master may read them: no node, no member
        assert not cache.started and member_files(base, "opts") == []
        assert (options.ttl, options.replica_count, options.local_node_id, options.seed_addrs) == (
            5.0,
            1,
            f"opts-{workers._host()}",
            [],
        )

        def in_child() -> Iterator[tuple[str, str]]:
            # The same configuration in a worker (its options are made there, by another pid).
            again = GridKV.for_workers("opts", ttl=5, log={"level": "warning"})
            yield "the object made before the fork", str(again is cache)
            yield "started", str(cache.started)

        assert in_forked_child(in_child, timeout=30) == {
            "the object made before the fork": "True",
            "started": "False",
        }
        cache.set("k", b"v")
        assert cache.options.local_node_id == cache.node_id  # this process's node's, once made
        assert cache.options.ttl == 5.0
    finally:
        cache.close()


@needs_tcp
def test_a_publish_that_fails_is_a_config_error_and_leaves_nothing_behind(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = GridKV.for_workers("full", log={"level": "critical"})
    assert isinstance(cache, WorkerGridKV)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(workers, "_write_all", failing(errno.ENOSPC))  # a full file system
            with pytest.raises(ConfigError, match=r"cannot publish its address in .*No space"):
                cache.set("k", b"v")  # the first use makes the node and publishes its address
        assert not cache.started and member_files(base, "full") == []
        assert workers._held == set()
        cache.set("k", b"v")  # room again: the next call makes the node
        assert cache.get("k") == b"v"
    finally:
        cache.close()


KEYS = [f"k{i}" for i in range(40)]


def run_in_multiprocessing_child(target: Callable[[], None]) -> None:
    """Run ``target`` in a child of multiprocessing (fork), which ends with ``os._exit``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork of a threaded process
        child = multiprocessing.get_context("fork").Process(target=target)
        child.start()
    child.join(60)
    assert child.exitcode == 0


#: The states of a member that is gone: left (gracefully), or seen dying.
GONE = {"left", "suspect", "dead"}


def states_of(kv: GridKV) -> list[str]:
    return [m.state for m in kv.stats().cluster.members if m.node_id != kv.node_id]


@needs_tcp
def test_a_multiprocessing_child_leaves_the_group_and_hands_its_keys_on(base: Path) -> None:
    """No atexit handler runs in it: multiprocessing's finalizers withdraw and close its node."""
    cache = GridKV.for_workers("mp", log={"level": "critical"})
    try:
        cache.wait_ready(10)

        def child() -> None:  # a task that returns normally, its node still open
            cache.wait_ready(10)
            assert cache.set_many({k: b"v" for k in KEYS}) == {}
            assert cache.stats().storage.keys > 0  # holds its share (replica_count 1)

        run_in_multiprocessing_child(child)
        assert len(member_files(base, "mp")) == 1  # the child withdrew its address
        wait_for("the parent sees the child go", lambda: set(states_of(cache)) & GONE)
        assert states_of(cache) == ["left"]
        assert cache.stats().storage.keys == len(KEYS)  # handed on as it left
        assert cache.get_many(KEYS) == {k: b"v" for k in KEYS}
    finally:
        cache.close()


@needs_tcp
def test_a_plain_gridkv_made_in_a_multiprocessing_child_leaves_when_the_child_ends() -> None:
    config: dict[str, Any] = {
        "local_address": "127.0.0.1:0",
        "network": {"type": "tcp"},
        "disable_auth": True,
        "replica_count": 1,
        "log": {"level": "critical"},
    }
    with GridKV(local_node_id="mp-parent", **config) as parent:
        seed = parent.node.transport.local_address
        kept: list[GridKV] = []

        def child() -> None:  # a GridKV of the child's own, never closed by the task
            kv = GridKV(local_node_id="mp-child", seed_addrs=[seed], **config)
            kv.wait_ready(10)
            assert kv.set_many({k: b"v" for k in KEYS}) == {}
            assert kv.stats().storage.keys > 0
            kept.append(kv)  # as a module's GridKV is (gridkv.api.process holds them weakly)

        run_in_multiprocessing_child(child)
        wait_for("the parent sees the child go", lambda: set(states_of(parent)) & GONE)
        assert states_of(parent) == ["left"]
        assert parent.stats().storage.keys == len(KEYS)
        assert parent.get_many(KEYS) == {k: b"v" for k in KEYS}
        # Not a child of multiprocessing: nothing registered with it (atexit closes the node).
        assert process._exit_callbacks.get(process._close_all_at_exit) != os.getpid()

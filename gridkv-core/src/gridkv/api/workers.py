"""One cache per host: the worker processes of one service form one cluster over loopback.

``GridKV.for_workers(name)`` returns a :class:`WorkerGridKV`: a :class:`~gridkv.GridKV` whose
node is made in each process on first use, so that the same object, made at import time in a
pre-fork server's master (``gunicorn --preload``), serves every worker with a node of its own.
The processes of one user that use the same ``name`` on one host find each other through a
private runtime directory (:class:`RuntimeDir`, see :func:`runtime_base` for where it is):

- ``secret``: the group's cluster secret, made once (``secrets``, mode 0600, published with
  ``link(2)`` so that no process ever reads half of it); every node authenticates with it, so
  no other user of the host can join the group or read from it;
- ``lock``: held (``flock``) while a process picks its seeds, starts its node and publishes
  its address, so any two nodes started one after the other, the later finds the earlier;
- ``node-<pid>-<token>.json``: one per live node, its id and its ``127.0.0.1:<port>``
  (listened on port 0: the kernel picks a free one). Its node holds a lock on it while it
  lives; a file nobody holds a lock on belongs to a process that is gone (killed, crashed) and
  is removed by the next process that starts, so stale addresses never become seeds.

Each node's id is ``<name>-<host>-<pid>``; ``replica_count`` defaults to
:data:`DEFAULT_REPLICA_COUNT` (each key held once in the group; graceful exits hand keys on).
At exit the interpreter closes each node gracefully (:mod:`gridkv.api.process`); its address
file goes first, so no process starting meanwhile takes a leaving node as its seed. A child of
``multiprocessing``, which ends with ``os._exit``, does the same through ``multiprocessing``'s
own exit finalizers.

A lock taken with ``flock`` belongs to the open file, which a fork shares. Every descriptor
through which this process holds a lock (the group's lock, a file being written, its node's
address file) is kept in one set, and a forked child closes its copies at once: a child never
keeps the group locked, nor a parent that died looking alive.

See ``docs/workers.md`` for the decisions and the gunicorn recipe.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import inspect
import json
import logging
import os
import re
import secrets
import socket
import stat
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridkv.api import process
from gridkv.api.base import DEFAULT_READY_TIMEOUT, wait_seconds
from gridkv.api.blocking import WAIT_MARGIN, GridKV
from gridkv.base.errors import BackendNotInstalled, ConfigError, NotReady, ShuttingDown
from gridkv.base.log import LOGGER_NAME
from gridkv.base.options import Options
from gridkv.base.sections import Section
from gridkv.plugins import get_plugins
from gridkv.security.identity import SECRET_BYTES, decode_key, new_secret, read_private_file

if sys.platform != "win32":
    import fcntl

__all__ = [
    "DEFAULT_REPLICA_COUNT",
    "MAX_SEEDS",
    "READY_TIMEOUT",
    "UNPUBLISH_LOCK_TIMEOUT",
    "RUNTIME_DIR_ENV",
    "Member",
    "RuntimeDir",
    "WorkerGridKV",
    "check_name",
    "for_workers",
    "runtime_base",
    "worker_options",
]

#: Environment variable naming the directory the groups' runtime directories are made in
#: (``$GRIDKV_RUNTIME_DIR/<name>``); it wins over ``$XDG_RUNTIME_DIR/gridkv`` and
#: ``<temp dir>/gridkv-<uid>``.
RUNTIME_DIR_ENV = "GRIDKV_RUNTIME_DIR"
#: ``replica_count`` of a workers' group unless configured: each key is held by one worker,
#: so the group holds it once, not once per worker. A worker that exits gracefully (SIGTERM,
#: ``max_requests``) hands its keys to the others first; one that is killed takes its share
#: of the keys with it, which a cache refills. ``replica_count=2`` survives that too.
DEFAULT_REPLICA_COUNT = 1
#: Seconds a node made on first use waits to join the group before it serves anyway (a
#: warning is logged then): the first call of each worker waits this long at most.
READY_TIMEOUT = 10.0
#: Seeds a starting node is given at most, picked at random among the live members.
MAX_SEEDS = 8
#: Seconds a closing node waits for the group's lock to withdraw its address (a node that
#: is starting holds it until it has joined); it withdraws it anyway afterwards.
UNPUBLISH_LOCK_TIMEOUT = 5.0

#: What a group's name may be: a file name, 1 to 64 of letters, digits, ``.``, ``_``, ``-``.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
#: A member's address, as nodes of a group listen: on loopback.
_ADDRESS = re.compile(r"127\.0\.0\.1:[0-9]{1,5}\Z")
_SECRET = "secret"
_LOCK = "lock"
_NODE_PREFIX, _NODE_SUFFIX = "node-", ".json"
_TEMP_PREFIX, _TEMP_SUFFIX = ".", ".tmp"
#: Configuration keys the group sets itself, with why.
_OWNED = {
    "local_node_id": "each node's id is <name>-<host>-<pid>",
    "local_address": "each node listens on 127.0.0.1 on a port the kernel picks",
    "seed_addrs": "the seeds are the group's live members, found in its runtime directory",
}
_OWNED_AUTH = ("cluster_secret", "cluster_secret_file", "trusted_keys", "ca_file", "cert_file")

log = logging.getLogger(LOGGER_NAME)


def check_name(name: object) -> str:
    """``name`` if it can name a workers' group: 1 to 64 letters, digits, ``.``, ``_``, ``-``.

    :raises ConfigError: it cannot (it becomes a directory's name and part of node ids).
    """
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise ConfigError(
            f"GridKV.for_workers: the group's name must be 1 to 64 letters, digits, '.', '_' "
            f"or '-', starting with a letter or digit (got {name!r:.80})"
        )
    return name


def runtime_base() -> Path:
    """The directory the groups' runtime directories are made in, for this process's user.

    ``$GRIDKV_RUNTIME_DIR`` when set; else ``$XDG_RUNTIME_DIR/gridkv`` when that directory
    exists and belongs to this user (systemd's per-user tmpfs, emptied at logout); else
    ``<temp dir>/gridkv-<uid>`` (``$TMPDIR`` or ``/tmp``), as tmux and ssh-agent do.
    """
    given = os.environ.get(RUNTIME_DIR_ENV, "")
    if given:
        return Path(given).absolute()
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg and os.path.isabs(xdg):
        try:
            st = os.stat(xdg)
        except OSError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
            return Path(xdg) / "gridkv"
    return Path(tempfile.gettempdir()) / f"gridkv-{os.geteuid()}"


def _private_dir(path: Path, what: str, *, strict: bool) -> None:
    """Make ``path`` (mode 0700) unless it exists; check it is this user's and private.

    :param strict: refuse any permission for the group or others (else only their write).
    :raises ConfigError: it cannot be made, is a link or no directory, belongs to another
        user, or lets others in.
    """
    fix = f"or set {RUNTIME_DIR_ENV} to a directory of your own"
    try:
        if strict:
            os.mkdir(path, 0o700)
        else:
            os.makedirs(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"{what} {str(path)!r} cannot be made: {exc.strerror}; {fix}") from None
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise ConfigError(f"{what} {str(path)!r} cannot be read: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"
        raise ConfigError(f"{what} {str(path)!r} is {kind}; remove it {fix}")
    if st.st_uid != os.geteuid():
        raise ConfigError(
            f"{what} {str(path)!r} belongs to user {st.st_uid}, not to the user this process "
            f"runs as ({os.geteuid()}): whoever owns it could read the group's secret. Remove "
            f"it, {fix}"
        )
    loose = stat.S_IRWXG | stat.S_IRWXO if strict else stat.S_IWGRP | stat.S_IWOTH
    mode = stat.S_IMODE(st.st_mode)
    if mode & loose:
        raise ConfigError(
            f"{what} {str(path)!r} has mode {mode:04o}, which lets other users "
            f"{'in' if strict else 'replace what is in it'}: chmod 700 {path}"
        )


@dataclass(frozen=True, slots=True)
class Member:
    """A live member of a group as its address file gives it."""

    node_id: str
    address: str
    pid: int


class _Published:
    """This node's address file, locked while the node lives (and its directory, shared).

    The shared lock on the directory keeps ``systemd-tmpfiles`` from ageing the group's files
    (the secret) away under a long-lived group in ``/tmp``.
    """

    def __init__(self, directory: RuntimeDir, path: Path, fd: int, dir_fd: int) -> None:
        self.directory = directory
        self.path = path
        self._fds = [fd, dir_fd]  # both held (see _open_held)

    def remove(self, lock_timeout: float = UNPUBLISH_LOCK_TIMEOUT) -> None:
        """Remove the file under the group's lock and drop the locks.

        Under the lock: a node starting meanwhile has either not read the file (and will not
        take this node as a seed) or has already joined through it.
        """
        try:
            with self.directory.locked(lock_timeout):
                self._unlink()
        except (NotReady, ConfigError):
            self._unlink()  # a starter is stuck, or the lock cannot be opened: leave anyway
        finally:
            self.abandon()

    def _unlink(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:  # once its lock is dropped, the next starter removes it
            log.warning(
                "the address file of a leaving node cannot be removed",
                extra={"file": str(self.path), "error": exc.strerror},
            )

    def abandon(self) -> None:
        """Close this process's descriptors and leave the file (a fork's inherited copy).

        A lock taken with ``flock`` belongs to the open file, which a fork shares: closing
        the child's copy leaves the parent's lock in place, and once the parent is gone
        nothing keeps the file looking alive. (A forked child has closed its copies already,
        see :func:`_forget_after_fork`; they are not closed twice.)
        """
        fds, self._fds = self._fds, []
        for fd in fds:
            _close_held(fd)


class RuntimeDir:
    """The private directory of one workers' group: its secret, its lock, its members."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def open(cls, name: str, base: Path | None = None) -> RuntimeDir:
        """The runtime directory of group ``name``, made with its secret when missing.

        :param base: where the groups' directories are (default: :func:`runtime_base`).
        :raises ConfigError: ``name`` is no valid name, or a directory or the secret is not
            private to this user (the message names it and the fix).
        """
        check_name(name)
        if sys.platform == "win32":
            raise ConfigError("GridKV.for_workers needs a POSIX system (flock, fork)")
        base = runtime_base() if base is None else base
        _private_dir(base, "GridKV's runtime directory", strict=False)
        directory = cls(base / name)
        _private_dir(
            directory.path, f"the runtime directory of workers' group {name!r}", strict=True
        )
        directory._ensure_secret()
        return directory

    @property
    def secret_file(self) -> Path:
        """The file holding the group's cluster secret (mode 0600)."""
        return self.path / _SECRET

    def _ensure_secret(self) -> None:
        """Make the secret unless it exists; check it is private and well formed.

        A fresh secret is written to a file of this process's own, then linked to its name:
        ``link(2)`` fails if another process got there first, and either way every process
        reads one whole secret, the first one published.
        """
        path = self.secret_file
        what = f"the secret of workers' group {self.path.name!r}"
        if not os.path.lexists(path):
            try:
                temp, fd = self._temp_file("secret")
            except OSError as exc:
                raise ConfigError(
                    f"{what} cannot be written to {str(self.path)!r}: {exc.strerror}"
                ) from None
            try:  # the temporary file stays locked until it is gone
                _write_all(fd, f"{new_secret()}\n".encode())
                with contextlib.suppress(FileExistsError):
                    os.link(temp, path)
            except OSError as exc:
                raise ConfigError(
                    f"{what} cannot be written to {str(path)!r}: {exc.strerror}"
                ) from None
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                _close_held(fd)
        try:
            text = read_private_file(str(path), what).decode("ascii", "replace")
        except OSError as exc:  # read_private_file names the errors it expects
            raise ConfigError(f"{what}: cannot read {str(path)!r}: {exc.strerror}") from None
        decode_key(text, f"{what} ({path})", SECRET_BYTES, at_least=True)

    def _temp_file(self, what: str) -> tuple[Path, int]:
        """A new file of this process's own in the directory, mode 0600, locked.

        Locked so that a process that starts meanwhile sees it is in use; one left behind by
        a process killed while writing it is removed by the next :meth:`members`. The
        descriptor is held (see :func:`_open_held`): close it with :func:`_close_held`.

        :raises OSError: it cannot be made (the caller names what it was for).
        """
        token = secrets.token_hex(6)
        path = self.path / f"{_TEMP_PREFIX}{what}-{os.getpid()}-{token}{_TEMP_SUFFIX}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = _open_held(path, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            _close_held(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return path, fd

    @contextlib.contextmanager
    def locked(self, timeout: float) -> Iterator[None]:
        """Hold the group's lock: one process at a time picks its seeds and publishes.

        :raises NotReady: another process held it for ``timeout`` seconds.
        :raises ConfigError: the lock file cannot be opened or locked (the message names it).
        """
        path = self.path / _LOCK
        try:
            fd = _open_held(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"the lock of workers' group {self.path.name!r}, {str(path)!r}, cannot be "
                f"opened: {exc.strerror}"
            ) from None
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise NotReady(
                            f"workers' group {self.path.name!r}: another process has held "
                            f"{str(path)!r} for {timeout:g}s while starting its node; is it "
                            "stopped (SIGSTOP, a debugger)?"
                        ) from None
                    time.sleep(0.005)
                except OSError as exc:
                    raise ConfigError(
                        f"the lock of workers' group {self.path.name!r}, {str(path)!r}, cannot "
                        f"be taken: {exc.strerror}"
                    ) from None
            yield
        finally:
            _close_held(fd)  # drops the lock

    def members(self) -> list[Member]:
        """The group's live members; files left by processes that are gone are removed.

        A file is live while a process holds a lock on it (its node's, or a writer's for a
        temporary file). Call it holding :meth:`locked`, as a starting node does.

        :raises ConfigError: the directory cannot be read (the message names it).
        """
        found: list[Member] = []
        try:
            with os.scandir(self.path) as entries:
                names = [e.name for e in entries]
        except OSError as exc:
            raise ConfigError(
                f"the runtime directory of workers' group {self.path.name!r}, "
                f"{str(self.path)!r}, cannot be read: {exc.strerror}"
            ) from None
        for entry in sorted(names):
            is_node = entry.startswith(_NODE_PREFIX) and entry.endswith(_NODE_SUFFIX)
            is_temp = entry.startswith(_TEMP_PREFIX) and entry.endswith(_TEMP_SUFFIX)
            if not (is_node or is_temp):
                continue
            path = self.path / entry
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue  # gone meanwhile (or not a file we made: left alone)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:  # held: its process lives
                    if is_node:
                        member = _read_member(fd, path)
                        if member is not None:
                            found.append(member)
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                log.debug("removed a file left by a process that is gone", extra={"file": entry})
            finally:
                os.close(fd)
        return found

    def publish(self, node_id: str, address: str) -> _Published:
        """Publish this node's address, locked until the node closes or its process ends.

        :raises ConfigError: the file cannot be written (a full or read-only file system;
            the message names the directory).
        """
        token = secrets.token_hex(6)
        final = self.path / f"{_NODE_PREFIX}{os.getpid()}-{token}{_NODE_SUFFIX}"
        fd = dir_fd = -1
        temp: Path | None = None
        try:
            temp, fd = self._temp_file("node")
            record = {"node_id": node_id, "address": address, "pid": os.getpid()}
            _write_all(fd, json.dumps(record).encode())
            dir_fd = _open_held(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fcntl.flock(dir_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            os.rename(temp, final)  # the lock stays: it is the file's, not the name's
        except BaseException as exc:
            for held in (fd, dir_fd):
                if held >= 0:
                    _close_held(held)
            if temp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
            if isinstance(exc, OSError):
                raise ConfigError(
                    f"workers' group {self.path.name!r}: node {node_id!r} cannot publish its "
                    f"address in {str(self.path)!r}: {exc.strerror or exc}"
                ) from None
            raise
        return _Published(self, final, fd, dir_fd)


def _joined(kv: GridKV, timeout: float) -> bool:
    """Wait until ``kv``'s node was answered by a seed (at once without seeds)."""
    membership = kv.node.membership
    deadline = time.monotonic() + timeout
    while not membership.joined:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)
    return True


#: The descriptors through which this process holds (or is about to take) a lock: the group's
#: lock while held, a temporary file being written, a published node's file and directory.
#: ``_held_lock`` guards the set and every open and close of them, and a fork waits for it
#: (:func:`_before_fork`), so a forked child knows exactly which of its descriptors to close.
_held: set[int] = set()
_held_lock = threading.Lock()


def _open_held(path: Path, flags: int, mode: int = 0o777) -> int:
    """``os.open(path, flags, mode)``, the descriptor listed as held until :func:`_close_held`."""
    with _held_lock:
        fd = os.open(path, flags, mode)
        _held.add(fd)
    return fd


def _close_held(fd: int) -> None:
    """Close a held descriptor, unless this process is a fork that closed it already."""
    with _held_lock:
        if fd not in _held:
            return
        _held.discard(fd)
        with contextlib.suppress(OSError):
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_member(fd: int, path: Path) -> Member | None:
    """The member an address file names, ``None`` (logged) when it is malformed."""
    try:
        with os.fdopen(os.dup(fd), "rb") as file:
            record = json.loads(file.read(4096))
        member = Member(str(record["node_id"]), str(record["address"]), int(record["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        member = None
    if member is None or not _ADDRESS.match(member.address):
        log.warning(
            "ignored a malformed member file of a workers' group", extra={"file": str(path)}
        )
        return None
    return member


def _host() -> str:
    """This host's short name, as node ids carry it."""
    host = socket.gethostname().split(".")[0]
    return re.sub(r"[^A-Za-z0-9_-]", "_", host)[:63] or "localhost"


#: Per group name, how many nodes this process has made (a second node of the same group in
#: one process gets the id suffix "-2", and so on).
_made: dict[str, int] = {}
_made_lock = threading.Lock()


def _node_id(name: str) -> str:
    with _made_lock:
        count = _made[name] = _made.get(name, 0) + 1
    base = f"{name}-{_host()}-{os.getpid()}"
    return base if count == 1 else f"{base}-{count}"


def worker_options(name: str, directory: RuntimeDir, config: dict[str, Any]) -> Options:
    """The options of a group's nodes: ``config`` plus what the group sets itself.

    ``local_node_id`` (``<name>-<host>``, the same in every process, so that the options made
    before a fork compare equal to those made after) and ``seed_addrs`` (none) are
    placeholders until a process makes its node.

    :raises ConfigError: ``config`` sets what the group sets (the message says why), asks for
        another transport, or has a bad key or value.
    """
    for key, why in _OWNED.items():
        if key in config:
            raise ConfigError(
                f"config key {key!r}: GridKV.for_workers({name!r}) sets it itself ({why})"
            )
    data = dict(config)
    network = _section(data.get("network"), "network")
    if network.get("type") not in (None, "tcp"):
        raise ConfigError(
            f"config key 'network.type': GridKV.for_workers({name!r}) connects its workers "
            f"over tcp on 127.0.0.1 (got {network['type']!r})"
        )
    if network.get("bind_addr"):
        raise ConfigError(
            f"config key 'network.bind_addr': GridKV.for_workers({name!r}) listens on "
            "127.0.0.1 only"
        )
    auth = _section(data.get("auth"), "auth")
    for key in _OWNED_AUTH:
        if auth.get(key):
            raise ConfigError(
                f"config key 'auth.{key}': GridKV.for_workers({name!r}) trusts the group's own "
                f"secret ({directory.secret_file}), made for it"
            )
    data.setdefault("replica_count", DEFAULT_REPLICA_COUNT)
    data["network"] = {**network, "type": "tcp"}
    data["auth"] = {**auth, "cluster_secret_file": str(directory.secret_file)}
    data["local_address"] = "127.0.0.1:0"
    data["local_node_id"] = f"{name}-{_host()}"
    return Options.from_mapping(data)


def _section(value: object, key: str) -> dict[str, Any]:
    """A configuration section given as a mapping or a section object, as a dict."""
    if value is None:
        return {}
    if isinstance(value, Section):
        return value.to_dict()
    if not isinstance(value, Mapping):
        raise ConfigError(f"config key {key!r}: expected a mapping of options (got {value!r:.60})")
    return dict(value)


class WorkerGridKV(GridKV):
    """The cache of a workers' group: a :class:`~gridkv.GridKV` whose node is made per process.

    Made by :meth:`GridKV.for_workers <gridkv.GridKV.for_workers>`. It makes no node when
    created: the first call in a process (any method of :class:`~gridkv.GridKV`) makes this
    process's node, joins the group and waits up to :data:`READY_TIMEOUT` for it to be ready,
    and later calls go straight to that node. A process forked afterwards (a gunicorn worker
    under ``--preload``) makes its own on its first call: the object may be made at import
    time in a master. Call :meth:`wait_ready` to join before serving (gunicorn's
    ``post_worker_init``). Thread-safe.

    Every method is :class:`~gridkv.GridKV`'s, called on this process's node; :meth:`close`
    closes that node (the interpreter's exit does too), after which calls in this process
    raise :class:`~gridkv.ShuttingDown`.
    """

    def __init__(self, name: str, options: Options) -> None:
        # GridKV.__init__ is not called: it would start a node here, in this process.
        self._closed = True
        self._name = check_name(name)
        self._group_options = options
        self._kv: GridKV | None = None
        self._published: _Published | None = None
        self._closed_here = False
        self._start_lock = threading.Lock()
        _instances.add(self)

    @property
    def group(self) -> str:
        """The group's name."""
        return self._name

    @property
    def options(self) -> Options:
        """The configuration: this process's node's once made, else the group's.

        Makes no node (so it may be read in a gunicorn master). The group's options are
        those of every node but two keys each node sets for itself: ``local_node_id`` is
        ``<name>-<host>`` there (a node's is ``<name>-<host>-<pid>``) and ``seed_addrs`` is
        empty (a node's are the members it found). :attr:`node_id` makes this process's node,
        as every other member of :class:`~gridkv.GridKV` does.
        """
        kv = self._kv
        return kv.options if kv is not None else self._group_options

    @property
    def started(self) -> bool:
        """Whether this process has made its node (and not closed it)."""
        return self._kv is not None

    def __repr__(self) -> str:
        kv = self._kv
        state = "closed" if self._closed_here else "not started in this process"
        here = f"node {kv.node_id!r}" if kv is not None else state
        return f"<WorkerGridKV {self._name!r}: {here}>"

    def _here(self) -> GridKV:
        """This process's node, made (and joined, up to READY_TIMEOUT) on the first call."""
        kv = self._kv
        if kv is not None:
            return kv
        return self._start(READY_TIMEOUT, strict=False)

    def _start(self, ready_timeout: float, *, strict: bool) -> GridKV:
        """Make this process's node unless made; wait up to ``ready_timeout`` to be ready.

        :param strict: raise :class:`NotReady` when it is not (else log it and serve).
        """
        with self._start_lock:
            kv = self._kv
            if kv is not None:
                return kv
            if self._closed_here:
                raise ShuttingDown(
                    f"GridKV.for_workers({self._name!r}) was closed in this process "
                    f"({os.getpid()}); processes forked from it afterwards make nodes of their own"
                )
            kv, published = self._make_node()
            # A child of multiprocessing ends with os._exit: no atexit handler withdraws the
            # address there. (gridkv.api.process closes the node after it, at a lower priority.)
            process.on_multiprocessing_exit(
                _unpublish_at_exit, process.MULTIPROCESSING_EXIT_PRIORITY + 1
            )
            try:
                kv.wait_ready(ready_timeout)
            except NotReady as exc:
                if strict:
                    self._kv, self._published = kv, published
                    raise
                log.warning(
                    "the node of a workers' group serves before it joined the others; it "
                    "joins them when they answer",
                    extra={"node_id": kv.node_id, "error": str(exc)},
                )
            self._kv, self._published = kv, published
            return kv

    def _make_node(self) -> tuple[GridKV, _Published]:
        """Start this process's node, join the live members, and publish its address.

        All under the group's lock, which a closing node takes to withdraw its address: so a
        seed stays until the join through it is done, and a node that is leaving is nobody's
        seed. A node whose seeds all died meanwhile (killed) is started again with the
        members left; one that still joins no one serves alone, and joins the next starter.
        """
        # Found again in each process: a worker may run as another user than its master.
        directory = RuntimeDir.open(self._name)
        opts = self._group_options
        node_id = _node_id(self._name)
        start_bound = opts.network.timeout + WAIT_MARGIN
        join_bound = opts.network.timeout + opts.network.read_timeout
        # Longer than another starter can hold the lock: two starts and joins, and a close.
        with directory.locked(3 * (start_bound + join_bound)):
            for attempt in (1, 2):
                members = directory.members()
                if len(members) > MAX_SEEDS:
                    members = secrets.SystemRandom().sample(members, MAX_SEEDS)
                options = opts.replace(
                    local_node_id=node_id,
                    seed_addrs=[m.address for m in members],
                    auth={"cluster_secret_file": str(directory.secret_file)},
                )
                kv = GridKV(options)
                joined = _joined(kv, join_bound)
                if joined or attempt == 2:
                    break
                kv.close(timeout=1.0)
            try:
                published = directory.publish(node_id, kv.node.transport.local_address)
            except BaseException:
                kv.close(timeout=1.0)
                raise
        log.log(
            logging.INFO if joined else logging.WARNING,
            "joined workers' group" if joined else "no member of the workers' group answered",
            extra={
                "node_id": node_id,
                "group": self._name,
                "seeds": len(members),
                "directory": str(directory.path),
            },
        )
        return kv, published

    def wait_ready(self, timeout: float = DEFAULT_READY_TIMEOUT) -> None:
        """Make this process's node if need be and block until it has joined the group.

        Call it before serving (gunicorn: ``post_worker_init``) so that no request waits for
        the join.

        :raises NotReady: not ready within ``timeout`` seconds (the node stays, and joins
            when the others answer).
        :raises InvalidArgument: ``timeout`` is not a number of seconds.
        :raises ShuttingDown: closed in this process.
        """
        seconds = wait_seconds(timeout, "wait_ready() timeout")
        deadline = time.monotonic() + seconds
        kv = self._start(seconds, strict=True)
        kv.wait_ready(max(0.0, deadline - time.monotonic()))

    def close(self, timeout: float = 30.0) -> None:
        """Close this process's node gracefully (see :meth:`GridKV.close`); idempotent.

        Its address file goes first, so no process starting meanwhile takes it as a seed.
        Later calls in this process raise :class:`~gridkv.ShuttingDown`; processes forked
        afterwards make nodes of their own.
        """
        seconds = wait_seconds(timeout, "close() timeout")
        with self._start_lock:
            self._closed_here = True
            kv, self._kv = self._kv, None
            published, self._published = self._published, None
        if published is not None:
            published.remove()
        if kv is not None:
            kv.close(seconds)

    def _unpublish(self) -> None:
        """At exit: remove this node's address file (the node is closed after it)."""
        published, self._published = self._published, None
        if published is not None:
            published.remove()

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the parent's node, lock and address file (not its files)."""
        self._start_lock = threading.Lock()
        self._kv = None
        self._closed_here = False
        published, self._published = self._published, None
        if published is not None:
            published.abandon()


def _delegate(name: str) -> Any:
    """A member of :class:`WorkerGridKV` that is ``name`` of this process's node."""
    static = inspect.getattr_static(GridKV, name)
    if isinstance(static, property):

        def get(self: WorkerGridKV) -> Any:
            kv = self._kv
            return getattr(kv if kv is not None else self._here(), name)

        return property(get, doc=static.__doc__)

    def method(self: WorkerGridKV, *args: Any, **kwargs: Any) -> Any:
        kv = self._kv
        return getattr(kv if kv is not None else self._here(), name)(*args, **kwargs)

    functools.update_wrapper(method, static)
    method.__name__ = name
    method.__qualname__ = f"WorkerGridKV.{name}"
    return method


def _on_caller(name: str) -> Any:
    """A member of :class:`WorkerGridKV` that is ``name`` of GridKV run on the object itself.

    For the methods whose result keeps the instance it was asked of (decorators): it must
    keep the object, which reaches the node of whichever process calls it later.
    """
    static = inspect.getattr_static(GridKV, name)

    def method(self: WorkerGridKV, *args: Any, **kwargs: Any) -> Any:
        return static(self, *args, **kwargs)

    functools.update_wrapper(method, static)
    method.__qualname__ = f"WorkerGridKV.{name}"
    return method


#: GridKV's methods that return something holding the instance (a decorator): on a
#: WorkerGridKV they run on the object itself, not on the node of the process that called.
_RUN_ON_OBJECT = frozenset({"cached"})


def _install_delegates() -> None:
    """Give WorkerGridKV every public method and property of GridKV not its own."""
    own = set(vars(WorkerGridKV))
    for name in dir(GridKV):
        if name.startswith("_") or name in own:
            continue
        static = inspect.getattr_static(GridKV, name)
        if isinstance(static, classmethod | staticmethod):
            continue
        if not (isinstance(static, property) or callable(static)):
            continue
        make: Callable[[str], Any] = _on_caller if name in _RUN_ON_OBJECT else _delegate
        setattr(WorkerGridKV, name, make(name))


_install_delegates()

#: Every WorkerGridKV of this process (for the fork and exit handlers).
_instances: weakref.WeakSet[WorkerGridKV] = weakref.WeakSet()
#: The group objects for_workers made in this process, by name.
_groups: dict[str, WorkerGridKV] = {}
_groups_lock = threading.Lock()


def for_workers(name: str, **config: Any) -> GridKV:
    """The cache shared by the processes of this user that use ``name`` on this host.

    See :meth:`GridKV.for_workers <gridkv.GridKV.for_workers>` and ``docs/workers.md``.
    Checks everything it can at once (the name, the runtime directory and its secret, the
    configuration, the tcp transport); the node is made in each process on first use. In one
    process a name gives one object: called again with the same configuration, or with none
    (``GridKV.for_workers("myapp")`` in a gunicorn hook), it returns the one made first.

    :raises ConfigError: a bad name, a bad or reserved configuration key, or a runtime
        directory or secret that is not private to this user.
    :raises BackendNotInstalled: the tcp transport is not installed.
    """
    check_name(name)
    try:
        get_plugins().transport("tcp")
    except BackendNotInstalled as exc:
        raise BackendNotInstalled(
            f"GridKV.for_workers({name!r}) connects its workers over TCP on 127.0.0.1, and the "
            f"tcp transport is not installed: pip install gridkv-transport-tcp ({exc})"
        ) from None
    directory = RuntimeDir.open(name)
    options = worker_options(name, directory, config)
    with _groups_lock:
        made = _groups.get(name)
        if made is not None and not made._closed_here:
            if config and made._group_options != options:
                raise ConfigError(
                    f"GridKV.for_workers({name!r}) was already called in this process with "
                    "another configuration (one process holds one node of a group): pass the "
                    "same keys, or none to get the object made first"
                )
            return made
        made = _groups[name] = WorkerGridKV(name, options)
        return made


def _before_fork() -> None:
    """``os.register_at_fork(before=...)``: no held descriptor is opened or closed meanwhile."""
    _held_lock.acquire()


def _after_fork_in_parent() -> None:
    """``os.register_at_fork(after_in_parent=...)``."""
    _held_lock.release()


def _forget_after_fork() -> None:
    """``os.register_at_fork(after_in_child=...)``: the child makes nodes of its own.

    It closes its copies of the parent's held descriptors first: the locks are the parent's
    (a thread of the parent holding the group's lock lets it go when it is done), and a
    parent that dies leaves its address file unlocked, as a dead member's.
    """
    global _groups_lock, _made_lock, _held_lock
    _held_lock = threading.Lock()  # the parent's was taken for the fork (_before_fork)
    for fd in _held:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()
    _groups_lock = threading.Lock()
    _made_lock = threading.Lock()
    _made.clear()  # the child's first node of a group is "<name>-<host>-<its pid>"
    for instance in list(_instances):
        instance._forget_after_fork()


def _unpublish_at_exit() -> None:
    """``atexit``: remove this process's address files before its nodes close.

    Registered after :mod:`gridkv.api.process`'s handler, so it runs first: while the nodes
    leave, no process starting meanwhile takes one of them as its seed. In a child of
    ``multiprocessing`` it runs as a finalizer, before the one that closes the nodes.
    """
    for instance in list(_instances):
        instance._unpublish()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_forget_after_fork,
    )
atexit.register(_unpublish_at_exit)

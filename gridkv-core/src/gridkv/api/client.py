"""The public API: :class:`AsyncGridKV` (asyncio) and :class:`GridKV` (blocking, thread-safe).

Both share :class:`_ClientBase`, which holds everything that does no I/O: building the options,
checking keys, values and TTLs, and the local fast paths. The method names and arguments are
the same in both classes.

Fast paths. A ``get`` at consistency ``one`` of a key this node holds is answered from local
storage on the caller's thread: no event-loop hop, no lock (a dict lookup is atomic in
CPython). A ``set`` or ``delete`` at ``one`` of such a key writes local storage under the
shard's lock, also on the caller's thread. Everything else runs on the node's event loop.

Errors. No exception other than a :class:`~gridkv.GridKVError` reaches a caller: arguments
that cannot be read raise the argument's error, a cancellation raised inside GridKV (a task
the operation waited on was cancelled by the node) becomes :class:`~gridkv.ShuttingDown` or
:class:`~gridkv.PeerUnavailable`, and any other failure becomes a ``GridKVError`` whose cause
is the original. An :class:`AsyncGridKV` caller whose own task is cancelled still gets its
``CancelledError``.

The blocking facade. :class:`GridKV` runs its node on a loop thread of its own and promises:

- every wait is bounded: a call that hands work to the loop waits at most the longest time
  the options allow that work plus :data:`WAIT_MARGIN`, then cancels it and raises an error
  that is also a :class:`TimeoutError`;
- a call that needs the loop, made on the loop's own thread (from a hook), raises at once
  instead of waiting for itself forever;
- in a process forked from the one that created it, every method raises
  :class:`~gridkv.ShuttingDown` (the fork has a copy of the node's data, not its thread or its
  connections), and ``close()`` does nothing;
- at interpreter exit, every instance still open is closed gracefully (batches drained,
  partitions handed off, leave announced) within :data:`EXIT_CLOSE_TIMEOUT` in all.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import CancelledError as FutureCancelled
from concurrent.futures import Future
from datetime import timedelta
from functools import partial
from types import TracebackType
from typing import Any, Self, TypeVar

import xxhash

from gridkv.base.errors import (
    EmptyKey,
    GridKVError,
    InvalidArgument,
    InvalidKey,
    InvalidValue,
    KeyTooLarge,
    NotReady,
    PeerTimeout,
    PeerUnavailable,
    QuorumNotReached,
    ShuttingDown,
    ValueTooLarge,
)
from gridkv.base.eventloop import new_event_loop
from gridkv.base.log import LOGGER_NAME
from gridkv.base.options import CONSISTENCY_LEVELS, Options
from gridkv.node import Node
from gridkv.node.stats import Stats
from gridkv.plugins import Plugins
from gridkv.storage.base import Entry, Storage
from gridkv.transport.base import Transport

__all__ = ["AsyncGridKV", "GridKV", "TTL", "Value", "WAIT_MARGIN", "EXIT_CLOSE_TIMEOUT"]

#: A time-to-live: seconds, a :class:`~datetime.timedelta`, ``None`` for the configured
#: default, or 0 for "never expires".
TTL = float | int | timedelta | None
#: A value: any bytes-like object; reads always return ``bytes``.
Value = bytes | bytearray | memoryview

_T = TypeVar("_T")
_xxh3 = xxhash.xxh3_64_intdigest
_DEFAULT_READY_TIMEOUT = 30.0
#: Longest TTL accepted: 100 years (expiry times must fit the 48-bit millisecond clock).
MAX_TTL_SECONDS = 100 * 365 * 86400
#: Seconds a blocking call waits beyond the longest time the options allow its work, before it
#: cancels the work and raises. The work's own time-outs fire first; this bounds the waits that
#: would otherwise have none (a transport that never times out, a hook that blocks the loop).
WAIT_MARGIN = 2.0
#: Seconds the interpreter's exit spends closing the :class:`GridKV` instances still open, all
#: of them together: queued replication batches are sent, partitions handed off and the leave
#: announced. An instance not closed by then is stopped where it is (its peers see it die).
EXIT_CLOSE_TIMEOUT = 10.0
#: Seconds allowed, once a close is over, to cancel what is left on a loop and end its thread.
_STOP_TIMEOUT = 2.0
#: Longest wait a time-out may ask for (a year); ``inf`` and longer ones mean this.
_LONGEST_WAIT = 365 * 86400.0

log = logging.getLogger(LOGGER_NAME)


def _build_options(options: Options | None, overrides: dict[str, Any]) -> Options:
    if options is None:
        return Options.from_mapping(overrides)
    if not isinstance(options, Options):
        raise InvalidArgument(
            f"expected gridkv.Options (or keyword options), got {type(options).__name__}; "
            "use gridkv.load_config(path) for a file"
        )
    return options.replace(**overrides) if overrides else options


def _shown(thing: object) -> str:
    """``repr(thing)``, cut to 60 characters, for error messages; never raises."""
    try:
        text = repr(thing)
    except Exception:  # a caller's object whose __repr__ fails must not replace our error
        text = f"<{type(thing).__name__} object>"
    return text[:60]


def _seconds(value: object, what: str) -> float:
    """``value`` as seconds to wait: a number, 0 or more; longer than a year means a year.

    :raises InvalidArgument: not a number, negative, or NaN.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float: as good as forever
            seconds = math.inf
        except Exception:  # a subclass whose __float__ fails
            seconds = math.nan
        if seconds >= 0:  # false for NaN
            return min(seconds, _LONGEST_WAIT)
    raise InvalidArgument(f"{what} must be a number of seconds, 0 or more; got {_shown(value)}")


def _operation(what: str, key: str | None) -> str:
    """How an error message names an operation: ``"get of key 'k'"``, ``"wait_ready()"``."""
    return what if key is None else f"{what} of key {key!r:.60}"


def _cancelled_by_caller() -> bool:
    """Whether the running task itself is being cancelled (by its owner or a time-out).

    A ``CancelledError`` raised while it is not comes from inside GridKV: a task the
    operation awaited was cancelled by the node.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _guarded(work: Awaitable[_T], node: Node, what: str, key: str | None = None) -> _T:
    """Await ``work`` and let nothing but GridKV errors out of it.

    The caller's own cancellation goes through unchanged. A cancellation raised inside GridKV
    becomes :class:`ShuttingDown` when the node is closing and :class:`PeerUnavailable`
    otherwise; any other exception becomes a :class:`GridKVError` caused by the original.
    """
    try:
        return await work
    except GridKVError:
        raise
    except asyncio.CancelledError:
        if _cancelled_by_caller():
            raise
        operation = _operation(what, key)
        if not node.running:
            raise ShuttingDown(
                f"node {node.node_id!r} closed while {operation} was waiting"
            ) from None
        raise PeerUnavailable(
            f"{operation} on node {node.node_id!r} was interrupted: a request it waited on was "
            "cancelled inside GridKV; retry it"
        ) from None
    except Exception as exc:
        raise GridKVError(
            f"{_operation(what, key)} on node {node.node_id!r} failed inside GridKV (a bug in "
            f"GridKV or a plugin): {type(exc).__name__}: {exc}"
        ) from exc


async def _cancel_and_wait(tasks: Iterable[asyncio.Task[Any]] | None, timeout: float) -> None:
    """Cancel ``tasks`` (every other task of the loop when ``None``); wait up to ``timeout``.

    Their outcomes are retrieved, so none is reported as "never retrieved" later.
    """
    current = asyncio.current_task()
    pending = [t for t in (asyncio.all_tasks() if tasks is None else tasks) if t is not current]
    for task in pending:
        task.cancel()
    if not pending:
        return
    done, _ = await asyncio.wait(pending, timeout=timeout)
    for task in done:
        if not task.cancelled():
            task.exception()


class _ClientBase:
    """What both APIs share: argument checks, the node, and the local fast paths."""

    _node: Node
    #: True in a process forked from the one that created this instance (see GridKV._disown).
    _forked = False

    def _setup(
        self,
        options: Options | None,
        overrides: dict[str, Any],
        transport: Transport | None,
        storage: Storage | None,
        plugins: Plugins | None,
    ) -> None:
        opts = _build_options(options, overrides)
        self._adopt(Node(opts, transport=transport, storage=storage, plugins=plugins))

    def _adopt(self, node: Node) -> None:
        opts = node.options
        self._node = node
        self._options = opts
        self._pcount = opts.partition_count
        self._max_key = opts.max_key_bytes
        self._max_value = opts.max_value_bytes
        self._default_ttl = opts.ttl
        self._storage = self._node.storage
        #: The process that created this instance; a fork may not use it.
        self._pid = os.getpid()

    @property
    def options(self) -> Options:
        """The node's configuration."""
        return self._options

    @property
    def node_id(self) -> str:
        """This node's id."""
        return self._node.node_id

    @property
    def node(self) -> Node:
        """The underlying node (for plugins and tooling)."""
        return self._node

    def stats(self) -> Stats:
        """A snapshot of the node's figures; see :class:`gridkv.Stats`."""
        if self._forked:
            raise self._forked_error()
        return self._node.stats()

    def _forked_error(self) -> ShuttingDown:
        return ShuttingDown(
            f"GridKV node {self.node_id!r} was created in process {self._pid}, and this process "
            f"({os.getpid()}) is a fork of it: a fork has a copy of the node's data but not its "
            "loop thread or its connections, so it cannot use it. Create the GridKV in the "
            "child process (gunicorn: in a post_fork hook, or without --preload; uWSGI: "
            "lazy-apps = true)"
        )

    # -- argument checks -------------------------------------------------------------------

    def _key_partition(self, key: object) -> tuple[str, int]:
        """Check ``key``; return it as a plain ``str``, and its partition.

        :raises InvalidKey: not a str, or not valid Unicode.
        :raises EmptyKey: the empty string.
        :raises KeyTooLarge: longer than ``max_key_bytes`` in UTF-8.
        """
        if type(key) is not str:
            if not isinstance(key, str):
                raise InvalidKey(f"keys are str, got {type(key).__name__}: {_shown(key)}")
            # A plain copy of a str subclass: none of the subclass's methods run, here or later.
            key = str.__str__(key)
        if not key:
            raise EmptyKey("the key is empty; keys are non-empty strings")
        try:
            raw = key.encode()
        except UnicodeEncodeError:
            raise InvalidKey(f"key {key!r:.60} is not valid Unicode text") from None
        if len(raw) > self._max_key:
            raise KeyTooLarge(
                f"key {key[:40]!r}... is {len(raw)} bytes in UTF-8, more than max_key_bytes="
                f"{self._max_key}"
            )
        return key, _xxh3(raw) % self._pcount

    def _value(self, key: str, value: object) -> bytes:
        if type(value) is not bytes:
            if not isinstance(value, bytes | bytearray | memoryview):
                raise InvalidValue(
                    f"value for key {key!r:.60} must be bytes-like, got {type(value).__name__}"
                    + ("; encode text first, e.g. value.encode()" if isinstance(value, str) else "")
                )
            try:
                # Through the buffer: a subclass's __bytes__ is not called.
                value = bytes(memoryview(value))
            except Exception as exc:  # a released memoryview, a buffer that cannot be exported
                raise InvalidValue(
                    f"value for key {key!r:.60} cannot be read: {type(exc).__name__}: {exc}"
                ) from None
        if len(value) > self._max_value:
            raise ValueTooLarge(
                f"value for key {key!r:.60} is {len(value)} bytes, more than max_value_bytes="
                f"{self._max_value}"
            )
        return value

    def _expires_at(self, key: str, ttl: TTL) -> int:
        if ttl is None:
            seconds = self._default_ttl
        else:
            if not isinstance(ttl, timedelta | int | float) or isinstance(ttl, bool):
                raise InvalidArgument(
                    f"ttl for key {key!r:.60} must be seconds or a timedelta, got {_shown(ttl)}"
                )
            try:
                seconds = float(ttl.total_seconds() if isinstance(ttl, timedelta) else ttl)
            except OverflowError:  # an int too large for a float
                seconds = math.inf
            except Exception:  # a subclass whose conversion fails
                raise InvalidArgument(
                    f"ttl for key {key!r:.60} cannot be read as seconds: {_shown(ttl)}"
                ) from None
        if math.isnan(seconds) or seconds < 0:
            raise InvalidArgument(
                f"ttl for key {key!r:.60} must be 0 or positive, got {_shown(ttl)}"
            )
        if seconds > MAX_TTL_SECONDS:
            raise InvalidArgument(
                f"ttl for key {key!r:.60} is {_shown(ttl)}, longer than 100 years; use 0 for never"
            )
        if seconds == 0:
            return 0
        return self._node.now_ms() + max(1, math.ceil(seconds * 1000))

    def _check_level(self, consistency: str | None, partition: int, key: str) -> str:
        """Check the level and that enough replicas exist to meet it.

        ``quorum`` needs ``replica_count // 2 + 1`` replicas and ``all`` needs
        ``replica_count``, counted against the configured ``replica_count`` (not the nodes
        that happen to exist), so a level is never silently weakened.

        :raises InvalidArgument: the level is unknown.
        :raises QuorumNotReached: fewer replicas are available than the level needs.
        """
        if consistency is None:
            level = self._options.consistency
        elif type(consistency) is str:
            level = consistency
        elif isinstance(consistency, str):
            level = str.__str__(consistency)  # no method of the subclass runs
        else:
            raise InvalidArgument(
                f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, got "
                f"{_shown(consistency)}"
            )
        if level == "one":
            return level
        if level not in CONSISTENCY_LEVELS:
            raise InvalidArgument(
                f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, got {level!r:.60}"
            )
        wanted = self._options.replica_count
        needed = wanted if level == "all" else wanted // 2 + 1
        available = len(self._node.ensure_table().owners(partition))
        if available < needed:
            raise QuorumNotReached(
                f"consistency {level!r} for key {key!r:.60} needs {needed} of replica_count="
                f"{wanted} replicas, and {available} are available"
            )
        return level

    # -- the operations, without I/O -----------------------------------------------------------

    def _plan_read(self, key: object, consistency: str | None) -> tuple[str, int, str, bool]:
        """Check a read; return ``(key, partition, level, local)``, the key as a plain str.

        ``local`` means this node answers from its own storage: it holds the partition and
        the level is ``one``.
        """
        if self._forked:
            raise self._forked_error()
        node = self._node
        node.check_joined()
        key, partition = self._key_partition(key)
        level = self._check_level(consistency, partition, key)
        local = level == "one" and node.holds(partition) and not node.handoff.receiving
        return key, partition, level, local

    def _plan_write(
        self, key: object, value: object, ttl: TTL, consistency: str | None, *, delete: bool = False
    ) -> tuple[int, str, bool, Entry]:
        """Check a write (or a delete); return ``(partition, level, local, entry)``."""
        if self._forked:
            raise self._forked_error()
        node = self._node
        node.check_joined()
        key, partition = self._key_partition(key)
        data = None if delete else self._value(key, value)
        expires = 0 if delete else self._expires_at(key, ttl)
        level = self._check_level(consistency, partition, key)
        local = level == "one" and node.holds(partition)
        return partition, level, local, node.new_entry(key, data, expires)

    def _write_local(self, partition: int, entry: Entry) -> None:
        """Store a write this node holds at level one, and queue it for the other replicas.

        :raises ShuttingDown: the node's loop closed under the write (a close on another
            thread), so the other replicas cannot be sent it.
        """
        node = self._node
        node.storage.apply(partition, entry)
        if len(node.table.owners(partition)) > 1:
            try:
                node.coordinator.replicate_soon(partition, entry)
            except RuntimeError:  # "Event loop is closed"
                raise ShuttingDown(
                    f"node {node.node_id!r} closed during the write of key {entry.key!r:.60}"
                ) from None

    def _value_of(self, entry: Entry | None) -> bytes | None:
        """What a read returns for the freshest entry: its value, or ``None``."""
        if entry is None or entry.value is None or entry.expired(self._node.now_ms()):
            return None
        return entry.value


class AsyncGridKV(_ClientBase):
    """A GridKV node for asyncio programs.

    Create it with an :class:`~gridkv.Options`, with keyword options, or both (keywords
    override), then start it with ``async with`` or :meth:`start`::

        async with AsyncGridKV(local_node_id="n1", local_address="127.0.0.1:7001") as kv:
            await kv.set("user:1", b"alice", ttl=60)

    :param options: the configuration; keyword arguments are configuration keys.
    :param transport: a transport instance to use instead of the one ``network.type`` names.
    :param storage_backend: a storage backend instance to use instead of the one
        ``storage.backend`` names (``storage`` is the configuration section).
    :param plugins: a plugin manager to use instead of the process-wide one.
    :raises ConfigError: a configuration key is unknown or a value is bad.
    """

    def __init__(
        self,
        options: Options | None = None,
        /,
        *,
        transport: Transport | None = None,
        storage_backend: Storage | None = None,
        plugins: Plugins | None = None,
        **config: Any,
    ) -> None:
        self._setup(options, config, transport, storage_backend, plugins)

    @classmethod
    def for_node(cls, node: Node) -> AsyncGridKV:
        """The API over an existing :class:`~gridkv.node.Node` (simulations, tools, hooks)."""
        client = cls.__new__(cls)
        client._adopt(node)
        return client

    async def start(self) -> None:
        """Start the node: listen, then contact the seeds in the background.

        :raises PeerUnavailable: the transport cannot listen on its address.
        :raises ShuttingDown: the node was closed.
        """
        await _guarded(self._node.start(), self._node, "start")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def wait_ready(self, timeout: float = _DEFAULT_READY_TIMEOUT) -> None:
        """Wait until the node is ready to serve.

        :raises NotReady: not ready within ``timeout`` seconds; the message names the seeds
            that did not answer.
        :raises InvalidArgument: ``timeout`` is not a number of seconds.
        """
        seconds = _seconds(timeout, "wait_ready() timeout")
        await _guarded(self._node.wait_ready(seconds), self._node, "wait_ready()")

    async def get(self, key: str, *, consistency: str | None = None) -> bytes | None:
        """The value of ``key``, or ``None`` when it is missing, expired or deleted.

        :param consistency: "one", "quorum" or "all"; the configured default when ``None``.
        :raises InvalidKey, EmptyKey, KeyTooLarge: the key is bad.
        :raises ShuttingDown: the node is closed.
        """
        if consistency is None and key.__class__ is str:
            try:
                raw = key.encode()
            except UnicodeEncodeError:
                raw = b""
            if 0 < len(raw) <= self._max_key:
                partition = _xxh3(raw) % self._pcount
                if self._node.local_reads[partition]:
                    return self._storage.get(partition, key)
        key, partition, level, local = self._plan_read(key, consistency)
        if local:
            return self._storage.get(partition, key)
        read = self._node.coordinator.read(partition, key, level)
        return self._value_of(await _guarded(read, self._node, "get", key))

    async def set(
        self, key: str, value: Value, *, ttl: TTL = None, consistency: str | None = None
    ) -> None:
        """Store ``value`` under ``key``.

        :param ttl: seconds or a timedelta; ``None`` uses the configured ``ttl``; 0 never expires.
        :param consistency: "one", "quorum" or "all"; the configured default when ``None``.
        :raises InvalidKey, EmptyKey, KeyTooLarge: the key is bad.
        :raises InvalidValue, ValueTooLarge: the value is bad, or cannot be read.
        :raises MemoryLimitExceeded: the storage is full and eviction is off.
        :raises QuorumNotReached: fewer replicas acknowledged than the level needs.
        :raises ShuttingDown: the node is closed.
        """
        partition, level, local, entry = self._plan_write(key, value, ttl, consistency)
        if local:
            self._write_local(partition, entry)
        else:
            write = self._node.coordinator.write(partition, entry, level)
            await _guarded(write, self._node, "set", entry.key)

    async def delete(self, key: str, *, consistency: str | None = None) -> None:
        """Delete ``key``; deleting a missing key is not an error.

        The delete is recorded as a tombstone, kept for ``tombstone_ttl``, so that no older
        copy of the value can come back.
        """
        partition, level, local, entry = self._plan_write(key, None, None, consistency, delete=True)
        if local:
            self._write_local(partition, entry)
        else:
            write = self._node.coordinator.write(partition, entry, level)
            await _guarded(write, self._node, "delete", entry.key)

    async def health_check(self) -> None:
        """Raise when the node cannot serve; return ``None`` when it can.

        :raises ShuttingDown: the node is closed.
        :raises NotReady: the node has no healthy view of the cluster.
        """
        self._node.health_check()

    async def close(self, timeout: float = 30.0) -> None:
        """Close the node; idempotent. Later operations raise :class:`~gridkv.ShuttingDown`.

        :param timeout: seconds each step of the graceful close (drain, handoff, leave) may take.
        :raises InvalidArgument: ``timeout`` is not a number of seconds.
        """
        seconds = _seconds(timeout, "close() timeout")
        await _guarded(self._node.close(seconds), self._node, "close()")


class GridKV(_ClientBase):
    """A GridKV node for blocking code; every method is safe to call from any thread.

    The node runs on an event loop in a background thread of its own, started by the
    constructor. Local reads and writes at consistency ``one`` are served on the calling
    thread; everything else is handed to the loop, and the caller waits at most the longest
    time the options allow that work plus :data:`WAIT_MARGIN`. Use it as a context manager or
    call :meth:`close`; an instance still open when the interpreter exits is closed then.

    Create it in the process that uses it: in a forked child (``gunicorn --preload``,
    ``multiprocessing`` with fork) an instance created before the fork raises
    :class:`~gridkv.ShuttingDown` from every method. Do not call it on its own loop thread
    (from a hook) for work that needs the loop; that raises :class:`~gridkv.GridKVError`.

    Takes the same arguments as :class:`AsyncGridKV`.

    :raises ConfigError: a configuration key is unknown or a value is bad.
    :raises PeerUnavailable: the transport cannot listen on its address.
    :raises NotReady: the node did not start within ``network.timeout`` plus
        :data:`WAIT_MARGIN`.
    """

    def __init__(
        self,
        options: Options | None = None,
        /,
        *,
        transport: Transport | None = None,
        storage_backend: Storage | None = None,
        plugins: Plugins | None = None,
        **config: Any,
    ) -> None:
        self._closed = True  # until the loop runs, nothing accepts work
        self._async = AsyncGridKV(
            options,
            transport=transport,
            storage_backend=storage_backend,
            plugins=plugins,
            **config,
        )
        self._adopt(self._async.node)
        opts = self._options
        # The longest each kind of work can take by the options. A read asks the replicas one
        # after another, each maybe after a dial (network.timeout) and for up to read_timeout,
        # and starts no new round after read_timeout. A write waits replication_timeout for
        # its acknowledgements. Starting listens, which takes no longer than a dial.
        self._read_bound = (
            opts.read_timeout
            + opts.replica_count * (opts.network.timeout + opts.read_timeout)
            + WAIT_MARGIN
        )
        self._write_bound = opts.replication_timeout + WAIT_MARGIN
        start_bound = opts.network.timeout + WAIT_MARGIN
        self._close_lock = threading.Lock()
        #: Held while a call is handed to the loop and while ``_closed`` is set, so no call
        #: slips onto the loop once a close has begun.
        self._submit_lock = threading.Lock()
        #: The calls running on the loop (touched only there); a close ends those left.
        self._calls: set[asyncio.Task[Any]] = set()
        self._loop = new_event_loop()
        self._thread = threading.Thread(
            target=self._run_loop, name=f"gridkv-{self.node_id}", daemon=True
        )
        try:
            self._thread.start()
        except RuntimeError as exc:  # "can't start new thread"
            self._loop.close()
            raise GridKVError(
                f"cannot start the loop thread of node {self.node_id!r}: {exc}"
            ) from exc
        self._loop_ident = self._thread.ident
        self._closed = False
        _register(self)
        try:
            self._call(self._node.start, start_bound, "start", late=NotReady)
        except BaseException:
            # A failed start leaves nothing behind: no open transport, no thread, no open loop.
            # (A start that finished just as its wait ran out is stopped the same way.)
            stopping = self._begin_close(0.0, graceful=False)
            if stopping is not None:
                now = time.monotonic()
                self._end_close(stopping, now + _STOP_TIMEOUT, now + 2 * _STOP_TIMEOUT)
            raise

    def _run_loop(self) -> None:
        """The loop thread: run until a close stops the loop, then end what is left on it."""
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            loop.run_until_complete(_cancel_and_wait(None, _STOP_TIMEOUT))
            loop.run_until_complete(loop.shutdown_asyncgens())
            # asyncio's loop resolves host names on executor threads: end them with the loop.
            loop.run_until_complete(
                asyncio.wait_for(loop.shutdown_default_executor(), _STOP_TIMEOUT)
            )
        except Exception:
            log.exception("the loop thread failed", extra={"node_id": self.node_id})
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def _call(
        self,
        work: Callable[[], Awaitable[_T]],
        bound: float,
        what: str,
        key: str | None = None,
        *,
        late: type[GridKVError] = PeerTimeout,
    ) -> _T:
        """Run ``work()`` on the node's loop and wait at most ``bound`` seconds for its result.

        ``work`` is called on the loop, so nothing is created that might never run.

        :raises ShuttingDown: closed, closed meanwhile, or this process is a fork.
        :raises GridKVError: called on the loop's own thread, where the wait would never end.
        :raises late: no result within ``bound``; the work is cancelled. (Both classes
            used are also :class:`TimeoutError`.)
        """
        if threading.get_ident() == self._loop_ident:
            raise self._on_loop_thread_error(_operation(what, key))
        if self._closed:  # checked before the lock too: a fork may have inherited it held
            raise self._closed_error()
        with self._submit_lock:
            if self._closed:
                raise self._closed_error()
            future = asyncio.run_coroutine_threadsafe(self._tracked(work, what, key), self._loop)
        try:
            return future.result(bound)
        except GridKVError:
            raise
        except FutureCancelled:  # a close ended the call
            raise ShuttingDown(
                f"node {self.node_id!r} closed while {_operation(what, key)} was waiting"
            ) from None
        except TimeoutError:  # the wait ran out (the work's own errors are GridKV errors)
            future.cancel()
            raise late(
                f"{_operation(what, key)} on node {self.node_id!r} did not finish within "
                f"{bound:g}s (the longest its options allow, plus WAIT_MARGIN={WAIT_MARGIN:g}s) "
                "and was cancelled; check that the peers answer and the network.* time-outs"
            ) from None
        except BaseException:  # KeyboardInterrupt in the waiting thread: end the work too
            future.cancel()
            raise

    async def _tracked(self, work: Callable[[], Awaitable[_T]], what: str, key: str | None) -> _T:
        """``work()`` under :func:`_guarded`, listed in ``_calls`` while it runs."""
        task = asyncio.current_task()
        assert task is not None
        self._calls.add(task)
        try:
            return await _guarded(work(), self._node, what, key)
        finally:
            self._calls.discard(task)

    def _closed_error(self) -> ShuttingDown:
        if self._forked:
            return self._forked_error()
        return ShuttingDown(f"node {self.node_id!r} is closed")

    def _on_loop_thread_error(self, operation: str) -> GridKVError:
        return GridKVError(
            f"{operation} was called on node {self.node_id!r}'s own event-loop thread (from a "
            "hook or a callback on that loop): it needs that loop, which cannot run while the "
            "call blocks it. From a hook, schedule the work instead, e.g. "
            "node.loop.create_task(gridkv.AsyncGridKV.for_node(node).get(key)), or hand it to "
            "another thread"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def wait_ready(self, timeout: float = _DEFAULT_READY_TIMEOUT) -> None:
        """Block until the node is ready to serve.

        :raises NotReady: not ready within ``timeout`` seconds; the message names the seeds
            that did not answer.
        :raises InvalidArgument: ``timeout`` is not a number of seconds.
        """
        seconds = _seconds(timeout, "wait_ready() timeout")
        if self._forked:
            raise self._forked_error()
        self._node.check_open()
        self._call(
            partial(self._node.wait_ready, seconds),
            seconds + WAIT_MARGIN,
            "wait_ready()",
            late=NotReady,
        )

    def get(self, key: str, *, consistency: str | None = None) -> bytes | None:
        """The value of ``key``, or ``None``; see :meth:`AsyncGridKV.get`.

        :raises PeerTimeout: the replicas did not answer within the bound the options give.
        """
        # No closure below: a variable a lambda captured would become a cell, made on every
        # call, and the fast path would pay for it.
        if consistency is None and key.__class__ is str:
            try:
                raw = key.encode()
            except UnicodeEncodeError:
                raw = b""
            if 0 < len(raw) <= self._max_key:
                partition = _xxh3(raw) % self._pcount
                if self._node.local_reads[partition]:
                    return self._storage.get(partition, key)
        key, partition, level, local = self._plan_read(key, consistency)
        if local:
            return self._storage.get(partition, key)
        entry = self._call(
            partial(self._node.coordinator.read, partition, key, level),
            self._read_bound,
            "get",
            key,
        )
        return self._value_of(entry)

    def set(
        self, key: str, value: Value, *, ttl: TTL = None, consistency: str | None = None
    ) -> None:
        """Store ``value`` under ``key``; see :meth:`AsyncGridKV.set`."""
        partition, level, local, entry = self._plan_write(key, value, ttl, consistency)
        if local:
            self._write_local(partition, entry)
        else:
            self._call(
                partial(self._node.coordinator.write, partition, entry, level),
                self._write_bound,
                "set",
                entry.key,
            )

    def delete(self, key: str, *, consistency: str | None = None) -> None:
        """Delete ``key``; see :meth:`AsyncGridKV.delete`."""
        partition, level, local, entry = self._plan_write(key, None, None, consistency, delete=True)
        if local:
            self._write_local(partition, entry)
        else:
            self._call(
                partial(self._node.coordinator.write, partition, entry, level),
                self._write_bound,
                "delete",
                entry.key,
            )

    def health_check(self) -> None:
        """Raise when the node cannot serve; see :meth:`AsyncGridKV.health_check`."""
        if self._forked:
            raise self._forked_error()
        self._node.health_check()

    def close(self, timeout: float = 30.0) -> None:
        """Close the node gracefully and stop its thread; idempotent.

        Queued replication batches are sent, partitions handed to their next replicas and the
        leave announced (peers see "left", not "dead"), each step within ``timeout`` seconds.
        The call returns within ``timeout`` + :data:`WAIT_MARGIN` seconds, plus up to 2 s to
        end the thread, with the node closed either way. Later operations raise
        :class:`~gridkv.ShuttingDown`. In a forked child it does nothing: the node is the
        parent's.

        :raises InvalidArgument: ``timeout`` is not a number of seconds.
        :raises GridKVError: called on the node's own loop thread (from a hook); close from
            another thread.
        """
        if self._forked:
            return
        seconds = _seconds(timeout, "close() timeout")
        if threading.get_ident() == self._loop_ident:
            raise self._on_loop_thread_error("close()")
        with self._close_lock:
            future = self._begin_close(seconds)
            if future is not None:
                given_up = time.monotonic() + seconds + WAIT_MARGIN
                self._end_close(future, given_up, given_up + _STOP_TIMEOUT)

    def _begin_close(self, timeout: float, *, graceful: bool = True) -> Future[None] | None:
        """Refuse further calls and start closing the node on its loop.

        :param graceful: close (drain, hand off, leave); ``False`` stops the node at once, as
            after a failed start.
        :returns: the close under way, or ``None`` when another close got there first.
        """
        with self._submit_lock:
            if self._closed:
                return None
            self._closed = True
        closing = self._close_on_loop(timeout, graceful)
        try:
            return asyncio.run_coroutine_threadsafe(closing, self._loop)
        except RuntimeError:  # the loop has ended already: nothing left to close
            closing.close()
            done: Future[None] = Future()
            done.set_result(None)
            return done

    async def _close_on_loop(self, timeout: float, graceful: bool) -> None:
        """Close the node, then end the calls still waiting (their callers get ShuttingDown)."""
        try:
            if graceful:
                await self._node.close(timeout)
            else:
                await self._node.kill()
        finally:
            await _cancel_and_wait(list(self._calls), _STOP_TIMEOUT)

    def _end_close(self, future: Future[None], given_up: float, stopped: float) -> None:
        """Wait for the close until ``given_up`` (monotonic), then end the loop thread.

        A close still running at ``given_up`` is cancelled; the thread is waited for until
        ``stopped``.
        """
        try:
            future.result(max(0.0, given_up - time.monotonic()))
        except Exception as exc:
            if future.done():
                log.error(
                    "closing the node failed",
                    exc_info=exc,
                    extra={"node_id": self.node_id},
                )
            else:
                future.cancel()
                log.warning(
                    "the node did not close in time; it is stopped where it is, and peers may "
                    "see it die rather than leave",
                    extra={"node_id": self.node_id},
                )
        finally:
            self._stop_loop(stopped)
            _unregister(self)

    def _stop_loop(self, deadline: float) -> None:
        """Stop the loop and wait for its thread until ``deadline`` (monotonic)."""
        loop = self._loop
        try:
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:  # closed: the thread has ended
            return
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.warning(
                "the node's loop thread did not stop (a hook or callback on it blocks); it is "
                "left to end with the process",
                extra={"node_id": self.node_id},
            )

    def _disown(self) -> None:
        """In a forked child: make this instance refuse every call, leaving the parent alone.

        The child has a copy of the node's memory but not its loop thread or connections.
        Clearing this process's copy of the fast path's mask sends ``get`` down the slow path,
        which refuses, so the fast path pays nothing for the check. No lock is taken (a
        thread of the parent may have held one at the fork) and the loop is not touched
        (its wake-up pipe is shared with the parent).
        """
        self._forked = True
        self._closed = True
        self._node.local_reads = bytearray(self._pcount)


#: The instances whose loop thread runs (from their start to the end of their close), for
#: the exit and fork handlers below; ``_live_lock`` guards it.
_live: weakref.WeakSet[GridKV] = weakref.WeakSet()
_live_lock = threading.Lock()


def _register(kv: GridKV) -> None:
    with _live_lock:
        _live.add(kv)


def _unregister(kv: GridKV) -> None:
    with _live_lock:
        _live.discard(kv)


def _running_instances() -> list[GridKV]:
    with _live_lock:
        return list(_live)


def _disown_after_fork() -> None:
    """``os.register_at_fork(after_in_child=...)``: disown every instance the child inherited.

    The child has one thread; the lock, which another thread of the parent may have held at
    the fork, is replaced rather than taken.
    """
    global _live_lock
    _live_lock = threading.Lock()
    inherited = list(_live)
    _live.clear()
    for kv in inherited:
        kv._disown()


def _close_all_at_exit() -> None:
    """``atexit``: close every instance still open, all at once, within EXIT_CLOSE_TIMEOUT.

    The last quarter of the time (at most ``_STOP_TIMEOUT``) is kept for ending the loop
    threads; the rest is the node's own close (drain, handoff, leave).
    """
    start = time.monotonic()
    stopped = start + EXIT_CLOSE_TIMEOUT
    given_up = stopped - min(_STOP_TIMEOUT, EXIT_CLOSE_TIMEOUT / 4)
    closing = [(kv, kv._begin_close(given_up - start)) for kv in _running_instances()]
    for kv, future in closing:
        if future is not None:
            kv._end_close(future, given_up, stopped)


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_disown_after_fork)
atexit.register(_close_all_at_exit)

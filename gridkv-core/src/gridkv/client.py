"""The public API: :class:`AsyncGridKV` (asyncio) and :class:`GridKV` (blocking, thread-safe).

Both share :class:`_ClientBase`, which holds everything that does no I/O: building the options,
checking keys, values and TTLs, and the local fast paths. The method names and arguments are
the same in both classes.

Fast paths. A ``get`` at consistency ``one`` of a key this node holds is answered from local
storage on the caller's thread: no event-loop hop, no lock (a dict lookup is atomic in
CPython). A ``set`` or ``delete`` at ``one`` of such a key writes local storage under the
shard's lock, also on the caller's thread. Everything else runs on the node's event loop.
"""

from __future__ import annotations

import asyncio
import math
import threading
from concurrent.futures import Future
from datetime import timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

import xxhash

from gridkv.errors import (
    EmptyKey,
    InvalidArgument,
    InvalidKey,
    InvalidValue,
    KeyTooLarge,
    QuorumNotReached,
    ShuttingDown,
    ValueTooLarge,
)
from gridkv.eventloop import new_event_loop
from gridkv.node import Node
from gridkv.options import CONSISTENCY_LEVELS, Options
from gridkv.plugins import Plugins
from gridkv.stats import Stats
from gridkv.storage.base import Entry, Storage
from gridkv.transport.base import Transport

__all__ = ["AsyncGridKV", "GridKV", "TTL", "Value"]

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


def _build_options(options: Options | None, overrides: dict[str, Any]) -> Options:
    if options is None:
        return Options.from_mapping(overrides)
    if not isinstance(options, Options):
        raise InvalidArgument(
            f"expected gridkv.Options (or keyword options), got {type(options).__name__}; "
            "use gridkv.load_config(path) for a file"
        )
    return options.replace(**overrides) if overrides else options


class _ClientBase:
    """What both APIs share: argument checks, the node, and the local fast paths."""

    _node: Node

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
        return self._node.stats()

    # -- argument checks -------------------------------------------------------------------

    def _partition(self, key: object) -> int:
        """Check ``key`` and return its partition."""
        if type(key) is not str:
            if isinstance(key, str):
                key = str(key)
            else:
                raise InvalidKey(f"keys are str, got {type(key).__name__}: {key!r:.60}")
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
        return _xxh3(raw) % self._pcount

    def _value(self, key: str, value: object) -> bytes:
        if type(value) is not bytes:
            if isinstance(value, bytearray | memoryview | bytes):
                value = bytes(value)
            else:
                raise InvalidValue(
                    f"value for key {key!r:.60} must be bytes-like, got {type(value).__name__}"
                    + ("; encode text first, e.g. value.encode()" if isinstance(value, str) else "")
                )
        if len(value) > self._max_value:
            raise ValueTooLarge(
                f"value for key {key!r:.60} is {len(value)} bytes, more than max_value_bytes="
                f"{self._max_value}"
            )
        return value

    def _expires_at(self, key: str, ttl: TTL) -> int:
        if ttl is None:
            seconds = self._default_ttl
        elif isinstance(ttl, timedelta):
            seconds = ttl.total_seconds()
        elif isinstance(ttl, int | float) and not isinstance(ttl, bool):
            seconds = float(ttl)
        else:
            raise InvalidArgument(
                f"ttl for key {key!r:.60} must be seconds or a timedelta, got {ttl!r}"
            )
        if not math.isfinite(seconds) or seconds < 0:
            raise InvalidArgument(f"ttl for key {key!r:.60} must be 0 or positive, got {ttl!r}")
        if seconds > MAX_TTL_SECONDS:
            raise InvalidArgument(
                f"ttl for key {key!r:.60} is {ttl!r}, longer than 100 years; use 0 for never"
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
        level = self._options.consistency if consistency is None else consistency
        if level == "one":
            return level
        if level not in CONSISTENCY_LEVELS:
            raise InvalidArgument(
                f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, got {consistency!r}"
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

    def _plan_read(self, key: str, consistency: str | None) -> tuple[int, str, bool]:
        """Check a read; return ``(partition, level, local)``.

        ``local`` means this node answers from its own storage: it holds the partition and
        the level is ``one``.
        """
        node = self._node
        node.check_joined()
        partition = self._partition(key)
        level = self._check_level(consistency, partition, key)
        local = level == "one" and node.holds(partition) and not node.handoff.receiving
        return partition, level, local

    def _plan_write(
        self, key: str, value: object, ttl: TTL, consistency: str | None, *, delete: bool = False
    ) -> tuple[int, str, bool, Entry]:
        """Check a write (or a delete); return ``(partition, level, local, entry)``."""
        node = self._node
        node.check_joined()
        partition = self._partition(key)
        data = None if delete else self._value(key, value)
        expires = 0 if delete else self._expires_at(key, ttl)
        level = self._check_level(consistency, partition, key)
        local = level == "one" and node.holds(partition)
        return partition, level, local, node.new_entry(key, data, expires)

    def _write_local(self, partition: int, entry: Entry) -> None:
        """Store a write this node holds at level one, and queue it for the other replicas."""
        node = self._node
        node.storage.apply(partition, entry)
        if len(node.table.owners(partition)) > 1:
            node.coordinator.replicate_soon(partition, entry)

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
        """The API over an existing :class:`~gridkv.node.Node` (simulations and tools)."""
        client = cls.__new__(cls)
        client._adopt(node)
        return client

    async def start(self) -> None:
        """Start the node: listen, then contact the seeds in the background."""
        await self._node.start()

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
        """
        await self._node.wait_ready(timeout)

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
        partition, level, local = self._plan_read(key, consistency)
        if local:
            return self._storage.get(partition, key)
        return self._value_of(await self._node.coordinator.read(partition, key, level))

    async def set(
        self, key: str, value: Value, *, ttl: TTL = None, consistency: str | None = None
    ) -> None:
        """Store ``value`` under ``key``.

        :param ttl: seconds or a timedelta; ``None`` uses the configured ``ttl``; 0 never expires.
        :param consistency: "one", "quorum" or "all"; the configured default when ``None``.
        :raises InvalidKey, EmptyKey, KeyTooLarge: the key is bad.
        :raises InvalidValue, ValueTooLarge: the value is bad.
        :raises MemoryLimitExceeded: the storage is full and eviction is off.
        :raises QuorumNotReached: fewer replicas acknowledged than the level needs.
        :raises ShuttingDown: the node is closed.
        """
        partition, level, local, entry = self._plan_write(key, value, ttl, consistency)
        if local:
            self._write_local(partition, entry)
        else:
            await self._node.coordinator.write(partition, entry, level)

    async def delete(self, key: str, *, consistency: str | None = None) -> None:
        """Delete ``key``; deleting a missing key is not an error.

        The delete is recorded as a tombstone, kept for ``tombstone_ttl``, so that no older
        copy of the value can come back.
        """
        partition, level, local, entry = self._plan_write(key, None, None, consistency, delete=True)
        if local:
            self._write_local(partition, entry)
        else:
            await self._node.coordinator.write(partition, entry, level)

    async def health_check(self) -> None:
        """Raise when the node cannot serve; return ``None`` when it can.

        :raises ShuttingDown: the node is closed.
        :raises NotReady: the node has no healthy view of the cluster.
        """
        self._node.health_check()

    async def close(self, timeout: float = 30.0) -> None:
        """Close the node; idempotent. Later operations raise :class:`~gridkv.ShuttingDown`."""
        await self._node.close(timeout)


class GridKV(_ClientBase):
    """A GridKV node for blocking code; every method is safe to call from any thread.

    The node runs on an event loop in a background thread of its own, started by the
    constructor. Local reads and writes at consistency ``one`` are served on the calling
    thread; everything else is handed to the loop. Use it as a context manager or call
    :meth:`close`.

    Takes the same arguments as :class:`AsyncGridKV`.

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
        self._async = AsyncGridKV(
            options,
            transport=transport,
            storage_backend=storage_backend,
            plugins=plugins,
            **config,
        )
        self._adopt(self._async.node)
        self._loop = new_event_loop()
        self._thread = threading.Thread(
            target=self._run_loop, name=f"gridkv-{self.node_id}", daemon=True
        )
        self._close_lock = threading.Lock()
        self._closed = False
        self._thread.start()
        try:
            self._call(self._async.start(), None)
        except BaseException:
            self._stop_loop()
            raise

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coro: Any, timeout: float | None) -> Any:
        """Run ``coro`` on the node's loop and wait for its result."""
        if self._closed:
            coro.close()
            raise ShuttingDown(f"node {self.node_id!r} is closed")
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

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
        """
        self._node.check_open()
        self._call(self._async.wait_ready(timeout), None)

    def get(self, key: str, *, consistency: str | None = None) -> bytes | None:
        """The value of ``key``, or ``None``; see :meth:`AsyncGridKV.get`."""
        if consistency is None and key.__class__ is str:
            try:
                raw = key.encode()
            except UnicodeEncodeError:
                raw = b""
            if 0 < len(raw) <= self._max_key:
                partition = _xxh3(raw) % self._pcount
                if self._node.local_reads[partition]:
                    return self._storage.get(partition, key)
        partition, level, local = self._plan_read(key, consistency)
        if local:
            return self._storage.get(partition, key)
        entry = self._call(self._node.coordinator.read(partition, key, level), None)
        return self._value_of(entry)

    def set(
        self, key: str, value: Value, *, ttl: TTL = None, consistency: str | None = None
    ) -> None:
        """Store ``value`` under ``key``; see :meth:`AsyncGridKV.set`."""
        partition, level, local, entry = self._plan_write(key, value, ttl, consistency)
        if local:
            self._write_local(partition, entry)
        else:
            self._call(self._node.coordinator.write(partition, entry, level), None)

    def delete(self, key: str, *, consistency: str | None = None) -> None:
        """Delete ``key``; see :meth:`AsyncGridKV.delete`."""
        partition, level, local, entry = self._plan_write(key, None, None, consistency, delete=True)
        if local:
            self._write_local(partition, entry)
        else:
            self._call(self._node.coordinator.write(partition, entry, level), None)

    def health_check(self) -> None:
        """Raise when the node cannot serve; see :meth:`AsyncGridKV.health_check`."""
        self._node.health_check()

    def close(self, timeout: float = 30.0) -> None:
        """Close the node and stop its thread; idempotent.

        Later operations raise :class:`~gridkv.ShuttingDown`.
        """
        with self._close_lock:
            if self._closed:
                return
            try:
                self._call(self._async.close(timeout), timeout + 5)
            finally:
                self._closed = True
                self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)
        if not self._loop.is_running():
            self._loop.close()

    def __del__(self) -> None:
        # A forgotten GridKV must not keep its loop thread alive; close() is the proper way.
        if not getattr(self, "_closed", True) and getattr(self, "_loop", None) is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

"""The asyncio facade: :class:`AsyncGridKV`, a node for asyncio programs."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

from opentelemetry.metrics import MeterProvider

from gridkv.api.base import (
    BULK_PARALLEL,
    DEFAULT_LEASE_TIMEOUT,
    DEFAULT_READY_TIMEOUT,
    ELSEWHERE,
    TTL,
    ClientBase,
    Value,
    build_options,
    cas_outcome,
    get_here_first,
    guarded,
    lease_seconds,
    listed_keys,
    mapping_items,
    negated,
    set_here_first,
    unique_keys,
    wait_seconds,
)
from gridkv.api.memoize import KeySpec, key_function, pickled, unpickled
from gridkv.base.errors import BulkOperationError, GridKVError, InvalidArgument
from gridkv.base.options import Options
from gridkv.cluster.replication.leases import Grant
from gridkv.node import Node
from gridkv.plugins import Plugins
from gridkv.storage.base import Entry, Storage
from gridkv.transport.base import Transport

__all__ = ["AsyncGridKV"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


class AsyncGridKV(ClientBase):
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
    :param meter_provider: where the node's OpenTelemetry instruments go (the global provider
        by default, a no-op until an SDK is configured; see docs/metrics.md).
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
        meter_provider: MeterProvider | None = None,
        **config: Any,
    ) -> None:
        opts = build_options(options, config)
        self._adopt(
            Node(
                opts,
                transport=transport,
                storage=storage_backend,
                plugins=plugins,
                meter_provider=meter_provider,
            )
        )

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
        await guarded(self._node.start(), self._node, "start")

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

    async def wait_ready(self, timeout: float = DEFAULT_READY_TIMEOUT) -> None:
        """Wait until the node is ready to serve.

        :raises NotReady: not ready within ``timeout`` seconds; the message names the seeds
            that did not answer.
        :raises InvalidArgument: ``timeout`` is not a number of seconds.
        """
        seconds = wait_seconds(timeout, "wait_ready() timeout")
        await guarded(self._node.wait_ready(seconds), self._node, "wait_ready()")

    async def get(self, key: str, *, consistency: str | None = None) -> bytes | None:
        """The value of ``key``, or ``None`` when it is missing, expired or deleted.

        :param consistency: "one", "quorum" or "all"; the configured default when ``None``.
        :raises InvalidKey, EmptyKey, KeyTooLarge: the key is bad.
        :raises ShuttingDown: the node is closed.
        """
        found = get_here_first(self, key, consistency)
        if found is not ELSEWHERE:
            return found  # type: ignore[no-any-return]
        key, partition, level, local = self._plan_read(key, consistency)
        if local:
            return self._storage.get(partition, key)
        read = self._node.read(partition, key, level)
        return self._value_of(await guarded(read, self._node, "get", key))

    def _get_elsewhere(self, key: str, consistency: str | None) -> Any:
        """The fast path could not answer: this facade awaits the read (see :meth:`get`)."""
        return ELSEWHERE

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
        if set_here_first(self, key, value, ttl=ttl, consistency=consistency) is ELSEWHERE:
            await self._write(*self._plan_write(key, value, ttl, consistency), "set")

    def _set_elsewhere(self, key: str, value: Value, ttl: TTL, consistency: str | None) -> Any:
        """The fast path could not store it: this facade awaits the write (see :meth:`set`)."""
        return ELSEWHERE

    async def delete(self, key: str, *, consistency: str | None = None) -> None:
        """Delete ``key``; deleting a missing key is not an error.

        The delete is recorded as a tombstone, kept for ``tombstone_ttl``, so that no older
        copy of the value can come back.
        """
        await self._write(*self._plan_write(key, None, None, consistency, delete=True), "delete")

    async def _write(
        self, partition: int, level: str, local: bool, entry: Entry, what: str
    ) -> None:
        """Store a planned write: here at once, or through the coordinator."""
        if local:
            if self._node.coordinator.batcher.full:  # the replicas keep up, or the writer waits
                await guarded(self._node.wait_room(entry.key), self._node, what, entry.key)
            self._node.write_here(partition, entry)
            self._fast.count_write(entry)
        else:
            await guarded(self._node.write(partition, entry, level), self._node, what, entry.key)

    async def incr(self, key: str, delta: int = 1, *, consistency: str | None = None) -> int:
        """Add ``delta`` to the integer stored under ``key`` (0 when missing); the new value.

        Atomic: it runs on the key's primary owner, after the other atomic operations on the
        key (docs/replication.md). The value is kept as the decimal ASCII of the integer, as
        Redis keeps it: ``get`` returns ``b"15"``, and the RESP door's INCR works on it. An
        expiry the key has stays.

        :raises OperationRefused: the value is not a 64-bit integer, or the sum leaves 64 bits.
        :raises InvalidArgument: ``delta`` is not an int within 64 bits.
        :raises PeerUnavailable: the primary owner cannot be reached.
        """
        return int(await self._atomic("incr", key, consistency, delta))

    async def decr(self, key: str, delta: int = 1, *, consistency: str | None = None) -> int:
        """Subtract ``delta``; see :meth:`incr`."""
        return int(await self._atomic("incr", key, consistency, negated(key, delta)))

    async def add(
        self, key: str, value: Value, *, ttl: TTL = None, consistency: str | None = None
    ) -> bool:
        """Store ``value`` only if ``key`` is missing; whether it did (atomic, as :meth:`incr`).

        :raises InvalidValue, ValueTooLarge: the value is bad.
        """
        return bool(await self._atomic("add", key, consistency, value, ttl))

    async def touch(self, key: str, ttl: TTL = None, *, consistency: str | None = None) -> bool:
        """Give ``key`` a new time-to-live (0: never expires); whether the key exists.

        Atomic, as :meth:`incr`; ``None`` gives the configured ``ttl``.
        """
        return await self._atomic("touch", key, consistency, None, ttl) not in (0, None)

    async def get_with_version(
        self, key: str, *, consistency: str | None = None
    ) -> tuple[bytes, int] | None:
        """``(value, version)`` of ``key`` on its primary owner, or ``None`` when missing.

        The version (a hybrid-logical-clock timestamp, above 0) is what
        :meth:`compare_and_set` expects.
        """
        answer = await self._atomic("versioned", key, consistency)
        return None if answer is None else (answer[0], int(answer[1]))

    async def compare_and_set(
        self,
        key: str,
        expected_version: int,
        value: Value,
        *,
        ttl: TTL = None,
        consistency: str | None = None,
    ) -> int:
        """Store ``value`` only if ``key`` still has ``expected_version``; the new version.

        ``expected_version`` 0 stores only if the key has no value. Atomic on the key's
        primary owner, as :meth:`incr`.

        :raises VersionMismatch: the key has another version (its ``current`` attribute).
        """
        answer = await self._atomic("cas", key, consistency, (expected_version, value), ttl)
        return cas_outcome(key, answer)

    async def exists(self, key: str, *, consistency: str | None = None) -> bool:
        """Whether ``key`` has a value (not missing, deleted or expired)."""
        return await self.get(key, consistency=consistency) is not None

    async def get_or_set(
        self,
        key: str,
        loader: Callable[[], Value | Awaitable[Value]],
        *,
        ttl: TTL = None,
        lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
        consistency: str | None = None,
    ) -> bytes:
        """The value of ``key``; when it is missing, ``loader()``'s, stored with ``ttl``.

        Cluster-wide singleflight: when callers on many nodes miss ``key`` at once, one of
        them runs its loader (sync or async) and the others wait for its value: the key's
        primary owner leases the load to one caller for ``lease_timeout`` seconds. A loader
        that dies or hangs past that loses the lease to a waiting caller, which runs its own.
        Across a failover of the owner the loader may run twice (docs/replication.md).

        :raises LoaderFailed: the loader another caller ran failed (its error is named).
        :raises PeerTimeout: no value and no lease within twice ``lease_timeout``.
        :raises InvalidValue, ValueTooLarge: the loader returned a bad value.
        :raises InvalidArgument: ``lease_timeout`` is not seconds from 0.001 to 86400.
        The loader's own exception, unchanged, when this caller ran it.
        """
        key, partition = self._key_partition(key)
        lease_s = lease_seconds(key, lease_timeout)
        value = await self.get(key, consistency=consistency)
        if value is not None:
            return value
        node = self._node
        flights = node.mutator.singleflight
        got = await guarded(flights.begin(partition, key, lease_s), node, "get_or_set", key)
        if not isinstance(got, Grant):
            return got
        try:
            loaded = loader()
            if inspect.isawaitable(loaded):
                loaded = await loaded
            data = self._value(key, loaded)
            expires = self._expires_at(key, ttl)
            level = self._check_level(consistency, partition, key)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            flights.finish(got, None)  # given up: a waiting caller takes the lease over
            raise
        except BaseException as exc:
            await asyncio.shield(flights.finish(got, None, exc))
            raise
        stored = flights.finish(got, data, None, expires, level)  # the owner stores it
        kept = await guarded(asyncio.shield(stored), node, "get_or_set", key)
        return kept if isinstance(kept, bytes) else data  # newer if written meanwhile

    def cached(
        self,
        ttl: TTL = None,
        key: KeySpec = None,
        *,
        lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
        dumps: Callable[[Any], bytes] = pickled,
        loads: Callable[[bytes], Any] = unpickled,
        consistency: str | None = None,
    ) -> Callable[[Callable[_P, Coroutine[Any, Any, _R]]], Callable[_P, Coroutine[Any, Any, _R]]]:
        """Decorate a coroutine function: its results are cached in the cluster for ``ttl``.

        A call looks its key up; on a miss the function runs once in the whole cluster
        (:meth:`get_or_set`) and its result, ``dumps``-ed (pickled by default), is stored.
        ``key`` names a call's key (see :mod:`gridkv.api.memoize`): by default the
        function's qualified name and a digest of its arguments.

        :raises InvalidArgument: the decorated function is not a coroutine function, or
            ``key`` is not None, a str or callable.
        """

        def decorate(
            func: Callable[_P, Coroutine[Any, Any, _R]],
        ) -> Callable[_P, Coroutine[Any, Any, _R]]:
            if not inspect.iscoroutinefunction(func):
                raise InvalidArgument(
                    f"AsyncGridKV.cached decorates coroutine functions; {func!r:.80} is not "
                    "one (use GridKV.cached for plain functions)"
                )
            make_key = key_function(func, key)

            @functools.wraps(func)
            async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
                async def load() -> bytes:
                    return dumps(await func(*args, **kwargs))

                raw = await self.get_or_set(
                    make_key(*args, **kwargs),
                    load,
                    ttl=ttl,
                    lease_timeout=lease_timeout,
                    consistency=consistency,
                )
                result: _R = loads(raw)
                return result

            return wrapper

        return decorate

    async def get_many(
        self, keys: Iterable[str], *, consistency: str | None = None
    ) -> dict[str, bytes]:
        """The values of ``keys`` that exist, by key.

        Missing, expired and deleted keys are left out, as Django's and pymemcache's
        ``get_many`` leave them out. At level one, keys this node holds are read here and
        the others are asked of their partitions' first replicas, one request per replica
        for up to 256 keys, all at once; at quorum or all, each key is read as :meth:`get`
        reads it, all at once.

        :raises InvalidKey, EmptyKey, KeyTooLarge: a key is bad (nothing is read).
        :raises BulkOperationError: some keys could not be read; its ``values`` holds what
            was, its ``errors`` why each other failed.
        """
        node = self._node
        planned = self._plan_keys(keys, consistency)
        level = planned[0][2] if planned else "one"
        values: dict[str, bytes] = {}
        errors: dict[str, GridKVError] = {}
        if level == "one":
            read = node.coordinator.read_many([(p, k) for k, p, _ in planned])
            found, errors = await guarded(read, node, "get_many")
            for key, entry in found.items():
                value = self._value_of(entry)
                if value is not None:
                    values[key] = value
        else:
            results = await asyncio.gather(
                *(self.get(k, consistency=consistency) for k, _, _ in planned),
                return_exceptions=True,
            )
            for (key, _, _), result in zip(planned, results, strict=True):
                if isinstance(result, GridKVError):
                    errors[key] = result
                elif isinstance(result, BaseException):
                    raise result
                elif result is not None:
                    values[key] = result
        if errors:
            raise _bulk_error("get_many", errors, values)
        return values

    async def set_many(
        self,
        mapping: Mapping[str, Value],
        *,
        ttl: TTL = None,
        consistency: str | None = None,
    ) -> dict[str, GridKVError]:
        """Store every value of ``mapping``; return the keys that failed, with their errors.

        The writes go out at once; the replication batches group them per replica. Every key
        and value is checked before anything is written.

        :raises InvalidKey, EmptyKey, KeyTooLarge, InvalidValue, ValueTooLarge: a key or
            value is bad (nothing is written).
        """
        plans = [self._plan_write(k, v, ttl, consistency) for k, v in mapping_items(mapping)]
        return await self._write_many(plans, "set")

    async def delete_many(
        self, keys: Iterable[str], *, consistency: str | None = None
    ) -> dict[str, GridKVError]:
        """Delete ``keys``; return the keys that failed, with their errors (see :meth:`delete`).

        :raises InvalidKey, EmptyKey, KeyTooLarge: a key is bad (nothing is deleted).
        """
        plans = [
            self._plan_write(k, None, None, consistency, delete=True)
            for k in unique_keys(listed_keys(keys))
        ]
        return await self._write_many(plans, "delete")

    async def _write_many(
        self, plans: list[tuple[int, str, bool, Entry]], what: str
    ) -> dict[str, GridKVError]:
        errors: dict[str, GridKVError] = {}
        work = iter(plans)

        async def worker() -> None:
            # A fixed number at once: every write gets its replication_timeout, however many.
            for partition, level, local, entry in work:
                try:
                    await self._write(partition, level, local, entry, what)
                except GridKVError as exc:
                    errors[entry.key] = exc

        await asyncio.gather(*(worker() for _ in range(min(BULK_PARALLEL, len(plans)))))
        return errors

    async def keys(self, pattern: str = "*") -> list[str]:
        """The cluster's live keys matching ``pattern`` (a Redis glob: ``*``, ``?``, ``[a-z]``).

        Each partition's primary owner lists its keys (the nodes are asked at once); a key
        written meanwhile may or may not be in the list. It reads every key of the cluster:
        a tool for operators and tests, not for a request path.

        :raises PeerUnavailable: a node did not answer (its keys would be missing).
        """
        if not isinstance(pattern, str):
            raise InvalidArgument(
                f"keys(): the pattern must be a str, got {type(pattern).__name__}"
            )
        self._node.check_joined()
        work = self._node.keyspace.gather(None, pattern.encode(errors="surrogateescape"))
        keys, _, _ = await guarded(work, self._node, "keys()")
        return keys

    async def iter_keys(self, pattern: str = "*", *, window: int = 64) -> AsyncIterator[str]:
        """The cluster's live keys matching ``pattern``, ``window`` partitions at a time.

        As Redis's SCAN: memory holds one window's keys, a key is given once while the
        membership stays the same, and a key written meanwhile may or may not come.

        :raises PeerUnavailable: a node did not answer.
        """
        if not isinstance(pattern, str):
            raise InvalidArgument(
                f"iter_keys(): the pattern must be a str, got {type(pattern).__name__}"
            )
        raw = pattern.encode(errors="surrogateescape")
        node = self._node
        total = self._options.partition_count
        for start in range(0, total, max(1, window)):
            node.check_joined()
            work = node.keyspace.gather(range(start, min(total, start + max(1, window))), raw)
            keys, _, _ = await guarded(work, node, "iter_keys()")
            for key in keys:
                yield key

    async def clear(self) -> int:
        """Delete every key of the cluster; return how many were deleted.

        Each key is deleted on its primary owner if it still has the version listed: a key
        written while ``clear`` runs keeps its new value (as the RESP door's FLUSHALL).

        :raises PeerUnavailable: a node did not answer.
        """
        node = self._node
        node.check_joined()
        keys, versions, _ = await guarded(node.keyspace.gather(None), node, "clear()")
        work = node.flush_listed(keys, versions, self._options.consistency)
        return await guarded(work, node, "clear()")

    async def _atomic(
        self, what: str, key: str, consistency: str | None, value: object = None, ttl: TTL = 0
    ) -> Any:
        key, partition, level, (op, args) = self._plan_atomic(what, key, consistency, value, ttl)
        work = self._node.mutate(partition, key, op, args, level)
        return await guarded(work, self._node, what, key)

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
        seconds = wait_seconds(timeout, "close() timeout")
        await guarded(self._node.close(seconds), self._node, "close()")


def _bulk_error(
    what: str, errors: dict[str, GridKVError], values: dict[str, bytes]
) -> BulkOperationError:
    """The error of a bulk operation some keys of which failed."""
    key, first = next(iter(errors.items()))
    return BulkOperationError(
        f"{what}: {len(errors)} key(s) failed, the first {key!r:.60}: "
        f"{type(first).__name__}: {first}",
        values,
        errors,
    )

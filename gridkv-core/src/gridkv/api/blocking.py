"""The blocking facade: :class:`GridKV`, thread-safe, with its node on a loop thread.

:class:`GridKV` runs its node on a :class:`~gridkv.api.loop_thread.LoopThread` and promises:

- every wait is bounded: a call that hands work to the loop waits at most the longest time
  the options allow that work plus :data:`WAIT_MARGIN`, then cancels it and raises an error
  that is also a :class:`TimeoutError`;
- a call that needs the loop, made on the loop's own thread (from a hook), raises at once
  instead of waiting for itself forever;
- in a process forked from the one that created it, every method raises
  :class:`~gridkv.ShuttingDown` (the fork has a copy of the node's data, not its thread or its
  connections), and ``close()`` does nothing;
- at interpreter exit, every instance still open is closed gracefully (batches drained,
  partitions handed off, leave announced) within
  :data:`~gridkv.api.process.EXIT_CLOSE_TIMEOUT` in all (see :mod:`gridkv.api.process`).

Default-level reads of keys this node holds are answered on the caller's thread, and writes
at ``one`` of such keys written there (see :mod:`gridkv.api.base`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import CancelledError as FutureCancelled
from concurrent.futures import Future
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, Self, TypeVar

from opentelemetry.metrics import MeterProvider

from gridkv.api import process
from gridkv.api.aio import AsyncGridKV
from gridkv.api.base import (
    BULK_PARALLEL,
    DEFAULT_LEASE_TIMEOUT,
    DEFAULT_READY_TIMEOUT,
    TTL,
    ClientBase,
    Value,
    build_options,
    cas_outcome,
    describe,
    get_here_first,
    guarded,
    lease_seconds,
    listed_keys,
    mapping_items,
    negated,
    set_here_first,
    wait_seconds,
)
from gridkv.api.direct import GAVE_UP, DirectPath
from gridkv.api.loop_thread import STOP_TIMEOUT, LoopThread, cancel_and_wait
from gridkv.api.memoize import KeySpec, key_function, pickled, unpickled
from gridkv.base.consistency import required_acks
from gridkv.base.errors import (
    GridKVError,
    InvalidArgument,
    InvalidValue,
    NotReady,
    PeerTimeout,
    ShuttingDown,
)
from gridkv.base.log import LOGGER_NAME
from gridkv.base.options import Options
from gridkv.cluster.replication.leases import Grant
from gridkv.cluster.replication.reads import MANY_PER_REQUEST
from gridkv.node import Node
from gridkv.plugins import Plugins
from gridkv.storage.base import Entry, Storage
from gridkv.transport.base import Transport

__all__ = ["GridKV", "WAIT_MARGIN"]

_T = TypeVar("_T")
_P = ParamSpec("_P")
_R = TypeVar("_R")
#: Seconds a blocking call waits beyond the longest time the options allow its work, before it
#: cancels the work and raises. The work's own time-outs fire first; this bounds the waits that
#: would otherwise have none (a transport that never times out, a hook that blocks the loop).
WAIT_MARGIN = 2.0

log = logging.getLogger(LOGGER_NAME)


class GridKV(ClientBase):
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
        meter_provider: MeterProvider | None = None,
        **config: Any,
    ) -> None:
        self._closed = True  # until the loop runs, nothing accepts work
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
        # The longest each kind of work can take by the options. A read asks the replicas one
        # after another, each maybe after a dial (network.timeout) and for up to read_timeout,
        # and starts no new round after read_timeout. A write waits replication_timeout for
        # its acknowledgements. Starting listens, which takes no longer than a dial.
        self._read_bound = (
            opts.read_timeout
            + opts.replica_count * (opts.network.timeout + opts.read_timeout)
            + WAIT_MARGIN
        )
        # A write may first wait replication_timeout for room in the replication backlog.
        self._write_bound = 2 * opts.replication_timeout + WAIT_MARGIN
        start_bound = opts.network.timeout + WAIT_MARGIN
        self._close_lock = threading.Lock()
        #: Held while a call is handed to the loop and while ``_closed`` is set, so no call
        #: slips onto the loop once a close has begun.
        self._submit_lock = threading.Lock()
        #: The calls running on the loop (touched only there); a close ends those left.
        self._calls: set[asyncio.Task[Any]] = set()
        self._runner = LoopThread(f"gridkv-{self.node_id}", self.node_id)
        self._loop_ident = self._runner.ident
        self._closed = False
        process.register(self)
        #: One-replica reads and writes from the calling threads (set once started).
        self._direct: DirectPath | None = None
        try:
            self._call(self._node.start, start_bound, "start", late=NotReady)
        except BaseException:
            # A failed start leaves nothing behind: no open transport, no thread, no open loop.
            # (A start that finished just as its wait ran out is stopped the same way.)
            stopping = self._begin_close(0.0, graceful=False)
            if stopping is not None:
                now = time.monotonic()
                self._end_close(stopping, now + STOP_TIMEOUT, now + 2 * STOP_TIMEOUT)
            raise
        if DirectPath.usable(self._node):
            self._direct = DirectPath(self._node)
            self._node.telemetry.direct.add(self._direct)

    @classmethod
    def for_workers(cls, name: str, **config: Any) -> GridKV:
        """The cache shared by the worker processes of one service on this host.

        Every process that calls it with the same ``name`` joins one cluster over loopback,
        with no other configuration (see docs/workers.md); keyword arguments are further
        configuration keys. Safe to call before a fork (``gunicorn --preload``): each process
        gets its own node on first use.
        """
        from gridkv.api.workers import for_workers

        return for_workers(name, **config)

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
            raise self._on_loop_thread_error(describe(what, key))
        if self._closed:  # checked before the lock too: a fork may have inherited it held
            raise self._closed_error()
        with self._submit_lock:
            if self._closed:
                raise self._closed_error()
            future = self._runner.submit(self._tracked(work, what, key))
        try:
            return future.result(bound)
        except GridKVError:
            raise
        except FutureCancelled:  # a close ended the call
            raise ShuttingDown(
                f"node {self.node_id!r} closed while {describe(what, key)} was waiting"
            ) from None
        except TimeoutError:  # the wait ran out (the work's own errors are GridKV errors)
            future.cancel()
            raise late(
                f"{describe(what, key)} on node {self.node_id!r} did not finish within "
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
            return await guarded(work(), self._node, what, key)
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

    def wait_ready(self, timeout: float = DEFAULT_READY_TIMEOUT) -> None:
        """Block until the node is ready to serve.

        :raises NotReady: not ready within ``timeout`` seconds; the message names the seeds
            that did not answer.
        :raises InvalidArgument: ``timeout`` is not a number of seconds.
        """
        seconds = wait_seconds(timeout, "wait_ready() timeout")
        if self._forked:
            raise self._forked_error()
        self._node.check_open()
        self._call(
            partial(self._node.wait_ready, seconds),
            seconds + WAIT_MARGIN,
            "wait_ready()",
            late=NotReady,
        )

    if TYPE_CHECKING:

        def get(self, key: str, *, consistency: str | None = None) -> bytes | None:
            """The value of ``key``, or ``None``; see :meth:`AsyncGridKV.get`."""

    else:
        #: The one fast path is this method itself (no call on the way to local storage).
        get = get_here_first

    def _get_elsewhere(self, key: str, consistency: str | None) -> bytes | None:
        """A read the fast path could not answer: checked, then local, or asked.

        At level one, from this thread (:mod:`gridkv.api.direct`); else through the loop.
        """
        key, partition, level, local = self._plan_read(key, consistency)
        if local:
            return self._storage.get(partition, key)
        direct = self._direct
        if (
            direct is not None
            and level == "one"
            and not self._closed
            and threading.get_ident() != self._loop_ident
        ):
            found = direct.read(partition, key)
            if found is not GAVE_UP:
                return self._value_of(found)  # type: ignore[arg-type]
        entry = self._call(
            partial(self._node.read, partition, key, level),
            self._read_bound,
            "get",
            key,
        )
        return self._value_of(entry)

    if TYPE_CHECKING:

        def set(
            self, key: str, value: Value, *, ttl: TTL = None, consistency: str | None = None
        ) -> None:
            """Store ``value`` under ``key``; see :meth:`AsyncGridKV.set`."""

    else:
        #: The write's fast path is this method itself, as for ``get``.
        set = set_here_first

    def _set_elsewhere(self, key: str, value: Value, ttl: TTL, consistency: str | None) -> None:
        """A write the fast path could not store: checked, then here, direct, or via the loop."""
        self._write(*self._plan_write(key, value, ttl, consistency), "set")

    def delete(self, key: str, *, consistency: str | None = None) -> None:
        """Delete ``key``; see :meth:`AsyncGridKV.delete`."""
        self._write(*self._plan_write(key, None, None, consistency, delete=True), "delete")

    def _write(self, partition: int, level: str, local: bool, entry: Entry, what: str) -> None:
        """Store a planned write: here, from this thread (one replica needed), or via the loop."""
        on_loop = threading.get_ident() == self._loop_ident
        if local:
            if not on_loop:  # the replicas keep up, or the writer waits (not the loop: it
                self._node.make_room(entry.key)  # is what makes the room)
            self._node.write_here(partition, entry)
            self._fast.count_write(entry)
            return
        direct = self._direct
        if (
            direct is not None
            and required_acks(level, self._node.options.replica_count) == 1
            and not self._closed
            and not on_loop
        ):
            self._node.make_room(entry.key)
            if direct.write(partition, entry):
                return
        write = partial(self._node.write, partition, entry, level)
        self._call(write, self._write_bound, what, entry.key)

    def incr(self, key: str, delta: int = 1, *, consistency: str | None = None) -> int:
        """Add ``delta`` to the integer under ``key``; see :meth:`AsyncGridKV.incr`."""
        return int(self._atomic("incr", key, consistency, delta))

    def decr(self, key: str, delta: int = 1, *, consistency: str | None = None) -> int:
        """Subtract ``delta``; see :meth:`AsyncGridKV.decr`."""
        return int(self._atomic("incr", key, consistency, negated(key, delta)))

    def add(
        self, key: str, value: Value, *, ttl: TTL = None, consistency: str | None = None
    ) -> bool:
        """Store ``value`` only if ``key`` is missing; see :meth:`AsyncGridKV.add`."""
        return bool(self._atomic("add", key, consistency, value, ttl))

    def touch(self, key: str, ttl: TTL = None, *, consistency: str | None = None) -> bool:
        """Give ``key`` a new time-to-live; see :meth:`AsyncGridKV.touch`."""
        return self._atomic("touch", key, consistency, None, ttl) not in (0, None)

    def get_with_version(
        self, key: str, *, consistency: str | None = None
    ) -> tuple[bytes, int] | None:
        """``(value, version)`` of ``key``; see :meth:`AsyncGridKV.get_with_version`."""
        answer = self._atomic("versioned", key, consistency)
        return None if answer is None else (answer[0], int(answer[1]))

    def compare_and_set(
        self,
        key: str,
        expected_version: int,
        value: Value,
        *,
        ttl: TTL = None,
        consistency: str | None = None,
    ) -> int:
        """Store ``value`` over ``expected_version``; see :meth:`AsyncGridKV.compare_and_set`."""
        answer = self._atomic("cas", key, consistency, (expected_version, value), ttl)
        return cas_outcome(key, answer)

    def exists(self, key: str, *, consistency: str | None = None) -> bool:
        """Whether ``key`` has a value; see :meth:`AsyncGridKV.exists`."""
        return self.get(key, consistency=consistency) is not None

    def get_or_set(
        self,
        key: str,
        loader: Callable[[], Value],
        *,
        ttl: TTL = None,
        lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
        consistency: str | None = None,
    ) -> bytes:
        """The value of ``key``, or ``loader()``'s stored once in the whole cluster.

        The loader runs on the calling thread; see :meth:`AsyncGridKV.get_or_set`.
        """
        key, partition = self._key_partition(key)
        lease_s = lease_seconds(key, lease_timeout)
        value = self.get(key, consistency=consistency)
        if value is not None:
            return value
        flights = self._node.mutator.singleflight
        claim = _GrantClaim()

        async def begin() -> bytes | Grant:
            got = await flights.begin(partition, key, lease_s)
            if isinstance(got, Grant) and not claim.offer(got):
                flights.finish(got, None)  # this thread stopped waiting: pass it on
            return got

        try:
            got = self._call(begin, 2 * lease_s + self._read_bound, "get_or_set", key)
        except BaseException:
            # Given up (a time-out, an interrupt) just as the lease came: pass it on.
            grant = claim.abandon()
            if grant is not None:
                with contextlib.suppress(GridKVError):
                    self._finish_load(grant, None, None)
            raise
        if not isinstance(got, Grant):
            return got
        try:
            loaded: object = loader()
            if inspect.isawaitable(loaded):
                if inspect.iscoroutine(loaded):
                    loaded.close()  # never awaited: no warning about it
                raise InvalidValue(
                    f"the loader of key {key!r:.60} returned an awaitable; GridKV runs plain "
                    "functions (use AsyncGridKV for coroutines)"
                )
            data = self._value(key, loaded)
            expires = self._expires_at(key, ttl)
            level = self._check_level(consistency, partition, key)
        except (KeyboardInterrupt, SystemExit):
            with contextlib.suppress(GridKVError):  # given up: a waiting caller takes over
                self._finish_load(got, None, None)
            raise
        except BaseException as exc:
            with contextlib.suppress(GridKVError):  # closed meanwhile: the lease runs out
                self._finish_load(got, None, exc)
            raise
        kept = self._finish_load(got, data, None, expires, level)  # the owner stores it
        return kept if isinstance(kept, bytes) else data  # newer if written meanwhile

    def _finish_load(
        self,
        grant: Grant,
        value: bytes | None,
        error: BaseException | None,
        expires_at: int = 0,
        level: str = "one",
    ) -> Any:
        """Tell the node's flight and the key's owner how a load ended; the owner's answer.

        A time-out here does not cancel the owner's storing (it goes on, and ends the flight).
        """

        async def finish() -> Any:
            flights = self._node.mutator.singleflight
            return await asyncio.shield(flights.finish(grant, value, error, expires_at, level))

        return self._call(finish, self._write_bound + self._read_bound, "get_or_set", grant.key)

    def cached(
        self,
        ttl: TTL = None,
        key: KeySpec = None,
        *,
        lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
        dumps: Callable[[Any], bytes] = pickled,
        loads: Callable[[bytes], Any] = unpickled,
        consistency: str | None = None,
    ) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
        """Decorate a function: its results are cached in the cluster for ``ttl``.

        See :meth:`AsyncGridKV.cached`; this one decorates plain functions.

        :raises InvalidArgument: the function is a coroutine function.
        """

        def decorate(func: Callable[_P, _R]) -> Callable[_P, _R]:
            if inspect.iscoroutinefunction(func):
                raise InvalidArgument(
                    f"GridKV.cached decorates plain functions; {func!r:.80} is a coroutine "
                    "function (use AsyncGridKV.cached)"
                )
            make_key = key_function(func, key)

            @functools.wraps(func)
            def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
                raw = self.get_or_set(
                    make_key(*args, **kwargs),
                    lambda: dumps(func(*args, **kwargs)),
                    ttl=ttl,
                    lease_timeout=lease_timeout,
                    consistency=consistency,
                )
                result: _R = loads(raw)
                return result

            return wrapper

        return decorate

    def get_many(self, keys: Iterable[str], *, consistency: str | None = None) -> dict[str, bytes]:
        """The values of ``keys`` that exist; see :meth:`AsyncGridKV.get_many`."""
        listed = listed_keys(keys)
        bound = self._read_bound * 2 * _rounds(len(listed), MANY_PER_REQUEST)
        return self._call(
            partial(self._twin().get_many, listed, consistency=consistency), bound, "get_many"
        )

    def set_many(
        self,
        mapping: Mapping[str, Value],
        *,
        ttl: TTL = None,
        consistency: str | None = None,
    ) -> dict[str, GridKVError]:
        """Store every value of ``mapping``; see :meth:`AsyncGridKV.set_many`."""
        items = dict(mapping_items(mapping))
        work = partial(self._twin().set_many, items, ttl=ttl, consistency=consistency)
        return self._call(work, self._write_bound * _rounds(len(items), BULK_PARALLEL), "set_many")

    def delete_many(
        self, keys: Iterable[str], *, consistency: str | None = None
    ) -> dict[str, GridKVError]:
        """Delete ``keys``; see :meth:`AsyncGridKV.delete_many`."""
        listed = listed_keys(keys)
        work = partial(self._twin().delete_many, listed, consistency=consistency)
        return self._call(
            work, self._write_bound * _rounds(len(listed), BULK_PARALLEL), "delete_many"
        )

    def _twin(self) -> AsyncGridKV:
        """The async API over this node, for the calls that run on its loop."""
        twin: AsyncGridKV | None = self.__dict__.get("_async_twin")
        if twin is None:
            twin = self.__dict__["_async_twin"] = AsyncGridKV.for_node(self._node)
        return twin

    def keys(self, pattern: str = "*") -> list[str]:
        """The cluster's live keys matching ``pattern``; see :meth:`AsyncGridKV.keys`."""
        work = partial(self._twin().keys, pattern)
        return self._call(work, self._node.options.read_timeout * 4 + 5, "keys()")

    def clear(self) -> int:
        """Delete every key of the cluster; see :meth:`AsyncGridKV.clear`."""
        return self._call(self._twin().clear, 3600.0, "clear()")

    def _atomic(
        self, what: str, key: str, consistency: str | None, value: object = None, ttl: TTL = 0
    ) -> Any:
        key, partition, level, (op, args) = self._plan_atomic(what, key, consistency, value, ttl)
        work = partial(self._node.mutate, partition, key, op, args, level)
        return self._call(work, self._write_bound + self._node.options.read_timeout, what, key)

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
        seconds = wait_seconds(timeout, "close() timeout")
        if threading.get_ident() == self._loop_ident:
            raise self._on_loop_thread_error("close()")
        with self._close_lock:
            future = self._begin_close(seconds)
            if future is not None:
                given_up = time.monotonic() + seconds + WAIT_MARGIN
                self._end_close(future, given_up, given_up + STOP_TIMEOUT)

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
        if self._direct is not None:
            self._direct.close()
        closing = self._close_on_loop(timeout, graceful)
        try:
            return self._runner.submit(closing)
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
            await cancel_and_wait(list(self._calls), STOP_TIMEOUT)

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
            self._runner.stop(stopped)
            process.unregister(self)

    def _disown(self) -> None:
        """In a forked child: make this instance refuse every call, leaving the parent alone.

        The child has a copy of the node's memory but not its loop thread or connections.
        Clearing this process's copy of the fast path's mask and dicts sends ``get`` and
        ``set`` down the slow path, which refuses, so the fast path pays nothing for the
        check. No lock is taken (a thread of the parent may have held one at the fork) and
        the loop is not touched (its wake-up pipe is shared with the parent).
        """
        self._forked = True
        self._closed = True
        self._local_parts[:] = [None] * self._pcount
        self._local_reads[:] = bytes(self._pcount)


#: The instances whose loop thread runs (from their start to the end of their close), for


class _GrantClaim:
    """A lease granted on the loop to a thread that may stop waiting for it meanwhile.

    Whichever comes second sees the other: the loop's offer after the thread gave up is
    refused (the loop passes the lease on), the thread's abandon after the offer returns
    the grant (the thread passes it on).
    """

    __slots__ = ("_abandoned", "_grant", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._grant: Grant | None = None
        self._abandoned = False

    def offer(self, grant: Grant) -> bool:
        """From the loop: the lease is the thread's, unless it gave up (``False``)."""
        with self._lock:
            if self._abandoned:
                return False
            self._grant = grant
            return True

    def abandon(self) -> Grant | None:
        """From the thread: it stops waiting; the grant it was offered, if any."""
        with self._lock:
            self._abandoned = True
            return self._grant


def _rounds(count: int, per_round: int) -> int:
    """How many times a bulk call's time-out it may take: one per ``per_round`` items."""
    return max(1, -(-count // per_round))

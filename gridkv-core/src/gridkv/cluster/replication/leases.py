"""Cluster-wide singleflight: a missing key is loaded once in the whole cluster at a time.

``get_or_set(key, loader)`` misses, and so may a thousand other callers on every node at the
same moment. Without coordination each would run the loader (a database query, a remote
call): a thundering herd. Here:

- On each node, callers missing the same key share one *flight*: the first asks, the others
  wait for its outcome (:class:`Singleflight`).
- The flight asks the key's primary owner for a *lease* (the ``lease`` operation of
  :mod:`~gridkv.cluster.replication.mutations`, sent as a ``MutateRequest``). The owner
  (:class:`Leases`) answers with the value if the key has one by now, grants the lease if
  nobody holds it, or holds the request until the holder releases it: then it answers the
  value the holder stored, or the loader's error.
- The holder runs the loader and releases the lease with the value, which the owner stores
  (after the key's other atomic operations, at the caller's level) before it answers the
  waiters: a caller that misses the key later finds it at the owner. The value is stored only
  if the key was not written or deleted since the lease was granted (a loader that read the
  database before an update must not undo the update's invalidation); otherwise the waiters
  get the newer value, or the loaded one when the key was deleted. A loader's error is
  released the same way, and a caller that gave up releases nothing: the lease passes on.
- A lease lasts ``lease_timeout`` seconds. A holder that dies or hangs loses it then, and
  the first caller still waiting gets it and runs its own loader: a dead loader blocks
  waiters for at most that long, on other nodes as on its own.

What it does not promise: across a failover of the primary owner, or a partition of the
holder from it, a second lease can be granted while the first loader still runs (the new
primary knows of no lease), so the loader can run twice; both values are valid loads and
last-writer-wins picks one. Leases live in the owner's memory only.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from gridkv.base.errors import (
    GridKVError,
    LoaderFailed,
    OperationRefused,
    PeerTimeout,
    PeerUnavailable,
    ShuttingDown,
)

if TYPE_CHECKING:
    from gridkv.cluster.context import ClusterContext
    from gridkv.storage.base import Entry

__all__ = [
    "GRANTED",
    "VALUE",
    "FAILED",
    "RETRY",
    "LEASE_OPS",
    "Grant",
    "Leases",
    "Singleflight",
    "MAX_LEASES",
    "MAX_LEASE_MS",
    "MAX_WAIT_MS",
]

#: Answers of the ``lease`` operation: ``[GRANTED, lease id]``, ``[VALUE, value]``,
#: ``[FAILED, message]``, ``[RETRY]`` (nothing yet: ask again).
GRANTED, VALUE, FAILED, RETRY = 0, 1, 2, 3
#: The operations of this module (not queued behind a key's other operations: a lease
#: request may wait while the key's holder loads).
LEASE_OPS: Final = frozenset({"lease", "release"})
#: The longest one lease request waits at the owner before it is answered ``RETRY``.
_WAIT_SLICE = 5.0
#: The longest lease an owner grants, and wait it holds a request (the API's bounds).
MAX_LEASE_MS: Final = 86_400_000
MAX_WAIT_MS: Final = 60_000
#: Leases one owner holds at most: past it, a request for a new one is refused.
MAX_LEASES: Final = 100_000

#: A request waiting at the owner: its answer, the node that asked, the lease time it wants.
_Waiter = tuple["asyncio.Future[list[Any]]", str, float]


@dataclass(slots=True, eq=False)
class _Lease:
    """A lease on one key: who holds it, what the key was, and who waits for its outcome."""

    id: int
    holder: str
    #: The key's version when the lease was first granted (tombstones too; 0: no entry):
    #: the loaded value is stored only over it.
    version: int
    timer: asyncio.TimerHandle | None = None
    waiters: list[_Waiter] = field(default_factory=list)


class Leases:
    """The primary owner's side: the leases on its keys and the requests waiting on them.

    :param ctx: the node's cluster context.
    :param read: the freshest entry of a key this node can read at level one (tombstones
        included).
    :param store: stores a loaded value here as the key's primary owner if the key's version
        is still the one given: ``(partition, key, value, expiry, version, level)`` ->
        ``(stored, the key's current value when not)``.
    """

    def __init__(
        self,
        ctx: ClusterContext,
        read: Callable[[int, str], Awaitable[Entry | None]],
        store: Callable[[int, str, bytes, int, int, str], Awaitable[tuple[bool, bytes | None]]],
    ) -> None:
        self.ctx = ctx
        self._read = read
        self._store = store
        #: The leases held, by key.
        self.held: dict[str, _Lease] = {}
        #: Leases granted, leases that ran out before their holder released them, and loaded
        #: values not stored because the key changed during the load.
        self.granted = 0
        self.expired = 0
        self.stale_fills = 0
        #: Lease requests answered "ask again" (their wait ran out while a lease was held).
        self.retries = 0

    async def handle(
        self, partition: int, key: str, op: str, args: list[Any], asker: str, level: str
    ) -> Any:
        """Answer a ``lease`` or ``release`` operation on ``key`` from node ``asker``.

        :raises OperationRefused: a new lease while :data:`MAX_LEASES` are held.
        """
        if op == "lease":
            lease_ms, wait_ms = args
            return await self.acquire(partition, key, asker, lease_ms / 1000, wait_ms / 1000)
        lease_id, outcome, payload, expires_at = args
        if outcome == VALUE:
            return await self.fill(partition, key, asker, lease_id, payload, expires_at, level)
        return self.release(key, asker, lease_id, outcome, payload)

    async def acquire(
        self, partition: int, key: str, asker: str, lease_s: float, wait_s: float
    ) -> list[Any]:
        """The value of ``key``, a lease on it, the holder's error, or ``[RETRY]``.

        Waits up to ``wait_s`` for a lease another caller holds to end.
        """
        lease = self.held.get(key)
        if lease is None:
            entry = await self._read(partition, key)
            if (
                entry is not None
                and entry.value is not None
                and not entry.expired(self.ctx.now_ms())
            ):
                return [VALUE, entry.value]
            lease = self.held.get(key)  # taken while this read was under way?
            if lease is None:
                if len(self.held) >= MAX_LEASES:
                    raise OperationRefused(
                        f"ERR node {self.ctx.node_id!r} holds {MAX_LEASES} leases; try later"
                    )
                version = entry.version if entry is not None else 0
                return [GRANTED, self._grant(key, asker, version, lease_s, []).id]
        waiter: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        lease.waiters = [w for w in lease.waiters if not w[0].done()]  # gone askers out
        lease.waiters.append((waiter, asker, lease_s))
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), max(0.0, wait_s))
        except TimeoutError:
            if waiter.done():  # answered in the same turn as the time-out
                return waiter.result()
            self.retries += 1
            return [RETRY]
        finally:
            if not waiter.done():  # timed out or cancelled: not a waiter any more
                waiter.cancel()

    async def fill(
        self,
        partition: int,
        key: str,
        asker: str,
        lease_id: int,
        value: bytes,
        expires_at: int,
        level: str,
    ) -> bytes | None:
        """The holder's loaded value: store it, answer the waiters; the value they got.

        Stored only if the lease is ``asker``'s current one and the key has the version it
        had when the lease was granted. A key written meanwhile keeps its newer value (the
        waiters get that); one deleted meanwhile stays deleted (the waiters get the loaded
        value, once). ``None``: not (or no longer) the asker's lease, nothing stored.

        :raises GridKVError: storing failed (the waiters hear why too).
        """
        lease = self.held.get(key)
        if lease is None or lease.id != lease_id or lease.holder != asker:
            return None  # not (or no longer) its lease: another load answers the waiters
        try:
            stored, current = await self._store(
                partition, key, value, expires_at, lease.version, level
            )
        except GridKVError as exc:
            message = f"storing the value failed: {type(exc).__name__}: {exc}"
            self._answer(key, lease_id, [FAILED, message])
            raise
        if not stored:
            self.stale_fills += 1
        answered = value if stored or current is None else current
        self._answer(key, lease_id, [VALUE, answered])
        return answered

    def release(self, key: str, asker: str, lease_id: int, outcome: int, payload: bytes) -> bool:
        """End lease ``lease_id`` on ``key`` without a value; whether it was ``asker``'s.

        ``outcome`` :data:`FAILED` answers the waiters the loader's error (``payload``,
        UTF-8), :data:`RETRY` passes the lease to the first waiter (the holder gave up).
        """
        lease = self.held.get(key)
        if lease is None or lease.id != lease_id or lease.holder != asker:
            return False  # ran out and passed on, or not the asker's
        if outcome == RETRY:
            self._pass_on(key, lease)
            return True
        self._answer(key, lease_id, [FAILED, payload.decode("utf-8", "replace")])
        return True

    def _answer(self, key: str, lease_id: int, answer: list[Any]) -> None:
        """End the lease if it is still ``lease_id``, and give its waiters ``answer``."""
        lease = self.held.get(key)
        if lease is None or lease.id != lease_id:
            return
        self._end(key, lease)
        for waiter, _, _ in lease.waiters:
            if not waiter.done():
                waiter.set_result(answer)

    def _grant(
        self, key: str, holder: str, version: int, lease_s: float, waiters: list[_Waiter]
    ) -> _Lease:
        # Random ids: a release meant for a lease granted before a restart or a failover
        # does not end one granted since.
        lease = _Lease(secrets.randbits(62) | 1, holder, version, waiters=waiters)
        lease.timer = asyncio.get_running_loop().call_later(lease_s, self._run_out, key, lease)
        self.held[key] = lease
        self.granted += 1
        return lease

    def _end(self, key: str, lease: _Lease) -> None:
        if lease.timer is not None:
            lease.timer.cancel()
        if self.held.get(key) is lease:
            del self.held[key]

    def _run_out(self, key: str, lease: _Lease) -> None:
        """The holder neither stored nor released in time: the lease passes on."""
        if self.held.get(key) is lease:
            self.expired += 1
            self._pass_on(key, lease)

    def _pass_on(self, key: str, lease: _Lease) -> None:
        """Give the lease to the first request still waiting, or drop it."""
        self._end(key, lease)
        waiters = [w for w in lease.waiters if not w[0].done()]
        if not waiters:
            return
        (first, holder, lease_s), rest = waiters[0], waiters[1:]
        granted = self._grant(key, holder, lease.version, lease_s, rest)
        first.set_result([GRANTED, granted.id])

    def close(self) -> None:
        """Forget every lease; the waiting requests are answered ``RETRY``."""
        for lease in list(self.held.values()):
            if lease.timer is not None:
                lease.timer.cancel()
            for waiter, _, _ in lease.waiters:
                if not waiter.done():
                    waiter.set_result([RETRY])
        self.held.clear()


@dataclass(slots=True, eq=False)
class _Flight:
    """The callers of one node missing one key: the outcome they wait for."""

    outcome: asyncio.Future[bytes]
    #: Loop time a caller here was granted the lease (``None``: not granted).
    granted_at: float | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """A lease this node's caller holds: it runs the loader, then calls ``finish``."""

    partition: int
    key: str
    lease_id: int
    #: The flight of this node's callers it answers (``None``: nobody here waits for it).
    flight: _Flight | None = None


class _Retry(Exception):
    """The caller that asked for a flight gave up: its waiters ask again."""


#: Sends an operation to a key's primary owner (or runs it here): ``(partition, key, op,
#: args, timeout, level)``.
Send = Callable[[int, str, str, list[Any], float, str], Awaitable[Any]]


class Singleflight:
    """Any node's side: callers here missing one key share one flight to its owner.

    :param ctx: the node's cluster context.
    :param send: runs a lease operation at the key's primary owner.
    :param invalidate: forgets what this node's hot read cache holds of a key (a miss cached
        before the value was loaded elsewhere).
    """

    def __init__(self, ctx: ClusterContext, send: Send, invalidate: Callable[[str], None]) -> None:
        self.ctx = ctx
        self._send = send
        self._invalidate = invalidate
        #: The flights under way, by key.
        self.flights: dict[str, _Flight] = {}
        #: Loads this node's callers ran (leases granted to them), and callers that waited
        #: for another's.
        self.loads = 0
        self.shared = 0
        self._releases: set[asyncio.Task[Any]] = set()

    async def begin(self, partition: int, key: str, lease_s: float) -> bytes | Grant:
        """The value of ``key`` when another caller loaded it, or a :class:`Grant` to load it.

        A caller given a grant must call :meth:`finish` with it, whatever happens. A caller
        here that waits for another here stops waiting for it once that one's lease ran out,
        and asks the owner itself (which then grants it the lease).

        :raises LoaderFailed: the loader of the caller that held the lease failed.
        :raises PeerTimeout: no value and no lease within twice ``lease_s`` (plus
            ``read_timeout``).
        :raises PeerUnavailable: the primary owner could not be reached.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * lease_s + self.ctx.options.read_timeout
        while (flight := self.flights.get(key)) is not None:
            self.shared += 1
            left = deadline - loop.time()
            if left <= 0:
                raise _timed_out(key, lease_s)
            try:
                return await asyncio.wait_for(
                    asyncio.shield(flight.outcome), min(left, max(0.001, lease_s / 2))
                )
            except _Retry:
                continue
            except TimeoutError:
                granted = flight.granted_at
                if (
                    granted is not None
                    and loop.time() - granted >= lease_s
                    and self.flights.get(key) is flight
                ):
                    del self.flights[key]  # its holder outlived the lease: ask the owner
        flight = _Flight(loop.create_future())
        flight.outcome.add_done_callback(_retrieved)
        self.flights[key] = flight
        # The request goes on if this caller is cancelled: a lease it brings is passed on,
        # not left granted to nobody until it runs out.
        asking = loop.create_task(self._acquire(partition, key, lease_s, deadline))
        try:
            answer = await asyncio.shield(asking)
        except BaseException as exc:
            ended = exc if isinstance(exc, GridKVError) else _Retry()
            self._land(key, flight, ended)
            if asking.done():  # answered in the turn this caller was cancelled
                self._unclaimed(partition, key, asking)
            else:
                self._keep(asking)
                asking.add_done_callback(lambda done: self._unclaimed(partition, key, done))
            raise
        if answer[0] == GRANTED:
            self.loads += 1
            flight.granted_at = loop.time()
            return Grant(partition, key, answer[1], flight)
        if answer[0] == VALUE:
            self._land(key, flight, answer[1])
            return bytes(answer[1])
        error = LoaderFailed(f"the loader of key {key!r:.60} failed: {answer[1]}")
        self._land(key, flight, error)
        raise error

    def _unclaimed(self, partition: int, key: str, asking: asyncio.Task[list[Any]]) -> None:
        """A lease request whose caller gave up ended: pass on a lease it brought."""
        if asking.cancelled() or asking.exception() is not None:
            return
        answer = asking.result()
        if answer[0] == GRANTED:  # (its flight was ended when the caller gave up)
            self.finish(Grant(partition, key, answer[1]), None)

    async def _acquire(
        self, partition: int, key: str, lease_s: float, deadline: float
    ) -> list[Any]:
        """Ask the owner until it answers a value, a lease or an error."""
        opts = self.ctx.options
        loop = asyncio.get_running_loop()
        lease_ms = min(MAX_LEASE_MS, max(1, round(lease_s * 1000)))
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise _timed_out(key, lease_s)
            wait = min(left, _WAIT_SLICE)
            try:
                answer = await self._send(
                    partition,
                    key,
                    "lease",
                    [lease_ms, max(0, round(wait * 1000))],
                    wait + opts.read_timeout,
                    "one",
                )
            except PeerUnavailable:
                # The owner changes (a failover, a view being settled): ask the new one.
                if loop.time() + opts.read_timeout >= deadline:
                    raise
                await asyncio.sleep(min(0.05, left))
                continue
            if answer[0] != RETRY:
                return list(answer)

    def finish(
        self,
        grant: Grant,
        value: bytes | None,
        error: BaseException | None = None,
        expires_at: int = 0,
        level: str = "one",
    ) -> asyncio.Task[Any]:
        """End a grant: the loader gave ``value``, or raised ``error``, or neither.

        The owner stores ``value`` (expiring at ``expires_at``, at ``level``) unless the key
        changed during the load, and answers its waiters with the value it kept: the task
        returned gives it (``None`` when the lease was no longer this caller's), and the
        grant's flight here ends with it, or with the error storing met (the task raises it).
        With an ``error``, the grant's flight ends at once with a
        :class:`~gridkv.LoaderFailed` caused by it; with neither (the caller gave up), with
        a retry: the lease passes to a waiting caller. A caller that goes on awaits the
        task; a cancelled one need not. Only the grant's own flight is ended: one begun
        here on the key since (the grant's lease ran out) is not. On the loop only.
        """
        key = grant.key
        flight = grant.flight
        ended: bytes | BaseException | None = None
        if value is not None:
            outcome, payload = VALUE, value
        elif error is not None:
            message = _describe(error)
            failed = LoaderFailed(f"the loader of key {key!r:.60} failed: {message}")
            failed.__cause__ = error
            outcome, payload, ended = FAILED, message.encode("utf-8", "backslashreplace"), failed
        else:
            outcome, payload, ended = RETRY, b"", _Retry()
        if flight is not None and ended is not None:
            self._land(key, flight, ended)
        args = [grant.lease_id, outcome, payload, expires_at]
        task = asyncio.get_running_loop().create_task(
            self._release(grant.partition, key, args, level), name="gridkv lease release"
        )
        self._keep(task)
        if flight is not None and ended is None:  # a value: its flight ends with the answer
            task.add_done_callback(lambda done: self._stored(key, flight, value, done))
        return task

    def _stored(
        self, key: str, flight: _Flight, loaded: bytes | None, done: asyncio.Task[Any]
    ) -> None:
        """The owner answered a loaded value: end its flight with what the owner kept."""
        if done.cancelled():
            self._land(key, flight, ShuttingDown(f"node {self.ctx.node_id!r} closed"))
            return
        failed = done.exception()
        if failed is not None:
            self._land(key, flight, failed)
            return
        answered = done.result()
        kept = answered if isinstance(answered, bytes) else loaded
        self._land(key, flight, kept if kept is not None else _Retry())

    def _keep(self, task: asyncio.Task[Any]) -> None:
        """Hold a background task until it ends (cancelled at close).

        Its error is read there: a caller that gave up does not wait for it.
        """
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)
        task.add_done_callback(_consumed)

    async def _release(self, partition: int, key: str, args: list[Any], level: str) -> Any:
        opts = self.ctx.options
        timeout = opts.read_timeout + opts.replication_timeout
        if args[1] == VALUE:  # the value must be stored: its errors are the caller's
            return await self._send(partition, key, "release", args, timeout, level)
        with contextlib.suppress(GridKVError):  # the owner is gone: the lease runs out there
            await self._send(partition, key, "release", args, timeout, level)
        return None

    def close(self) -> None:
        """Stop telling owners; callers waiting on a flight here get ``ShuttingDown``."""
        for task in self._releases:
            task.cancel()
        for key, flight in list(self.flights.items()):
            self._land(key, flight, ShuttingDown(f"node {self.ctx.node_id!r} closed"))

    def _land(self, key: str, flight: _Flight, ended: bytes | BaseException) -> None:
        if self.flights.get(key) is flight:
            del self.flights[key]
        if not isinstance(ended, BaseException):
            self._invalidate(key)  # the miss this node's readers may have cached is over
        outcome = flight.outcome
        if outcome.done():
            return
        if isinstance(ended, BaseException):
            outcome.set_exception(ended)
        else:
            outcome.set_result(ended)


def _describe(error: BaseException) -> str:
    """``Type: message`` of a loader's error, whatever its ``__str__`` does (1,000 chars)."""
    try:
        text = str(error)
    except Exception:
        text = f"(its message could not be read: {object.__repr__(error)})"
    return f"{type(error).__name__}: {text}"[:1000]


def _timed_out(key: str, lease_s: float) -> PeerTimeout:
    return PeerTimeout(
        f"get_or_set({key!r:.60}): no value and no lease within {2 * lease_s:g}s (its loader "
        "still runs elsewhere, or the owner does not answer)"
    )


def _consumed(task: asyncio.Task[Any]) -> None:
    """Read a background task's error: it is handled where it matters, never lost."""
    if not task.cancelled():
        task.exception()


def _retrieved(outcome: asyncio.Future[bytes]) -> None:
    """Mark a flight's exception retrieved: nobody may have waited for it."""
    if not outcome.cancelled():
        outcome.exception()

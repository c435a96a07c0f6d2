"""Reads across the replicas of a partition, and the answers to peers' reads.

At ``one`` an owner answers from its own storage; elsewhere the replicas are asked in ring
order, one after the other, until one answers within ``read_timeout``, and the answer is kept
a moment in the hot cache (:mod:`~gridkv.cluster.replication.hotcache`). ``quorum`` and
``all`` ask the replicas at once, return the freshest version by last-writer-wins, and send it
to the replicas that answered with an older one (:mod:`~gridkv.cluster.replication.repair`).
While a partition moves here, a key that has not arrived yet is looked up on the former
replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from gridkv.base.consistency import required_acks
from gridkv.base.errors import (
    GridKVError,
    MemoryLimitExceeded,
    PeerUnavailable,
    ProtocolError,
    QuorumNotReached,
)
from gridkv.base.keys import hash_key_bytes
from gridkv.cluster.replication.batching import consume
from gridkv.cluster.replication.hotcache import HotCache
from gridkv.cluster.replication.nearcache import Watches
from gridkv.cluster.replication.repair import TokenBucket, freshest, stale_replicas
from gridkv.storage.base import Entry
from gridkv.wire.messages import (
    GetManyReply,
    GetManyRequest,
    GetReply,
    GetRequest,
    Invalidate,
    Message,
    WatchedGetReply,
    WatchedGetRequest,
)

if TYPE_CHECKING:
    from gridkv.cluster.context import ClusterContext

__all__ = ["Reader", "reasons", "MANY_PER_REQUEST", "NEAR_MARGIN"]

#: Keys one GetManyRequest asks at most (so that an answer stays well within a frame).
MANY_PER_REQUEST = 256
#: The share of a watch's lifetime the asker keeps the answer (from when it asked): the
#: replica's watch, counted from its receipt, outlives the copy.
NEAR_MARGIN = 0.9

_T = TypeVar("_T")


class Reader:
    """One node's reads of other replicas, and its answers to theirs.

    :param ctx: the node's cluster context.
    :param waiting_on: the former replicas of a partition still moving here.
    :param send_later: queues an entry for a replica's next batch (read repair).
    """

    def __init__(
        self,
        ctx: ClusterContext,
        waiting_on: Callable[[int], tuple[str, ...]],
        send_later: Callable[[str, int, Entry], None],
    ) -> None:
        self.ctx = ctx
        self._waiting_on = waiting_on
        self._send_later = send_later
        opts = ctx.options
        #: Recent answers for keys this node does not hold (reads at ``one``).
        self.hot = HotCache(opts.hot_cache_size, opts.hot_read_cache_ttl, ctx.loop_time)
        #: The keys this node watches for other nodes' near caches.
        self.watches = Watches(ctx, opts.near_cache_watches, ctx.loop_time)
        #: How long answers watched for this node are kept (0: nothing is watched for it).
        self.near_ttl = opts.near_cache_ttl if opts.hot_cache_size > 0 else 0.0
        self._repairs = TokenBucket(opts.read_repair_rate_limit_per_sec, ctx.loop_time)
        #: Read repairs sent.
        self.repairs_sent = 0
        #: Keys replicas told this node's near cache to forget.
        self.invalidated = 0

    def on_get(
        self, message: GetRequest | WatchedGetRequest
    ) -> GetReply | WatchedGetReply | Awaitable[GetReply | WatchedGetReply]:
        """A peer's read of one key: this node's entry, at once.

        While the partition is still moving here, a key that has not arrived yet is looked
        up on the former replicas; then the answer is an awaitable. A
        :class:`~gridkv.wire.messages.WatchedGetRequest` also has the key watched for the
        asker where this node may (:meth:`_watch`), and the answer says for how long.
        """
        ctx = self.ctx
        partition = message.partition
        if partition >= ctx.options.partition_count:
            raise ProtocolError(f"partition {partition} out of range")
        ctx.partitions.ensure_table()  # marks the partitions moving here, if the view just changed
        watched = self._watch(message) if isinstance(message, WatchedGetRequest) else None
        entry = ctx.storage.get_entry(partition, message.key)
        if entry is None:
            former = self._formers(partition)
            if former:
                return self._get_from_former(partition, message.key, former, watched)
        found = None if entry is None else (partition, entry)
        return GetReply(found) if watched is None else WatchedGetReply(found, watched)

    def _watch(self, message: WatchedGetRequest) -> int:
        """Watch a key for a peer's near cache; the milliseconds it is watched (0: not).

        Only a key of a partition this node holds, of a length this node accepts, for at
        most this node's own ``near_cache_ttl``.
        """
        ctx = self.ctx
        opts = ctx.options
        lifetime_ms = min(message.lifetime_ms, round(opts.near_cache_ttl * 1000))
        key = message.key
        if (
            lifetime_ms <= 0
            or self.watches.limit <= 0
            or not ctx.partitions.holds(message.partition)
        ):
            return 0
        raw = key.encode("utf-8", "surrogatepass")
        if len(raw) > opts.max_key_bytes or hash_key_bytes(raw) % opts.partition_count != (
            message.partition
        ):
            return 0
        self.watches.watch(key, message.sender, lifetime_ms / 1000)
        return lifetime_ms

    def on_invalidate(self, message: Invalidate) -> None:
        """A replica says keys it watched for this node changed: forget them."""
        hot = self.hot
        for key in message.keys:
            hot.invalidate(key)
        self.invalidated += len(message.keys)

    def on_get_many(self, message: GetManyRequest) -> GetManyReply:
        """A peer's read of several keys: this node's entries, at once.

        Keys of a partition this node does not hold, or one still moving here, are
        ``unknown``: the asker reads them another way.
        """
        ctx = self.ctx
        if len(message.partitions) != len(message.keys):
            raise ProtocolError("GetManyRequest: as many partitions as keys expected")
        ctx.partitions.ensure_table()
        count = ctx.options.partition_count
        entries: list[tuple[int, Entry]] = []
        unknown: list[str] = []
        # The answer stays within half a frame: the keys past it are "unknown", and the
        # asker reads them one by one (a GetReply holds any one value).
        room = ctx.options.network.max_frame_bytes // 2
        for partition, key in zip(message.partitions, message.keys, strict=True):
            if partition >= count:
                raise ProtocolError(f"partition {partition} out of range")
            if room <= 0 or not ctx.partitions.holds(partition) or self._moving_here(partition):
                unknown.append(key)
                continue
            entry = ctx.storage.get_entry(partition, key)
            if entry is not None:
                size = len(entry.key) * 4 + len(entry.writer) + 64 + len(entry.value or b"")
                if size > room:
                    room = 0
                    unknown.append(key)
                    continue
                room -= size
                entries.append((partition, entry))
        return GetManyReply(entries, unknown)

    def _formers(self, partition: int) -> list[str]:
        """The former replicas of a partition moving here that may still answer for it.

        A dead one is left out: its copy is gone with it, and asking would cost a whole
        ``read_timeout`` per read until the handoff gives up on it.
        """
        ctx = self.ctx
        state_of = ctx.membership.state_of
        return [
            r for r in self._waiting_on(partition) if r != ctx.node_id and state_of(r) != "dead"
        ]

    def _moving_here(self, partition: int) -> bool:
        return bool(self._formers(partition))

    async def read_many(
        self, items: list[tuple[int, str]]
    ) -> tuple[dict[str, Entry | None], dict[str, GridKVError]]:
        """Entries of many keys at level one: ``(found, errors)`` by key.

        Keys this node holds (nothing moving in) are read here; the others are asked of
        their partition's first replica, one request per replica for every
        :data:`MANY_PER_REQUEST` keys, at once. A key such a request cannot answer (the
        replica failed, or does not hold it) is read as :meth:`read` reads one key; a key
        that read fails too is in ``errors``.
        """
        ctx = self.ctx
        table = ctx.partitions.ensure_table()
        found: dict[str, Entry | None] = {}
        errors: dict[str, GridKVError] = {}
        asked: dict[str, list[tuple[int, str]]] = {}
        # Keys read as one key is read: this node is their only replica while their
        # partition moves to it (the former replicas are asked, then its own storage), or
        # the view has no replica of them (the error says so).
        singly: list[tuple[int, str]] = []
        for partition, key in items:
            owners = table.owners(partition)
            if ctx.node_id in owners and not self._moving_here(partition):
                found[key] = ctx.storage.get_entry(partition, key)
                continue
            target = next((o for o in owners if o != ctx.node_id), None)
            if target is None:
                singly.append((partition, key))
                continue
            asked.setdefault(target, []).append((partition, key))

        async def one(partition: int, key: str) -> None:
            try:
                found[key] = await self.read(partition, key, "one")
            except GridKVError as exc:
                errors[key] = exc

        async def ask(replica: str, group: list[tuple[int, str]]) -> None:
            left = list(group)
            try:
                address = ctx.membership.address_of(replica)
                if address is None:
                    raise PeerUnavailable(f"replica {replica!r} is not in this node's view")
                request = GetManyRequest([p for p, _ in group], [k for _, k in group])
                reply = await ctx.messaging.request(address, request, ctx.options.read_timeout)
                if not isinstance(reply, GetManyReply):
                    raise ProtocolError(f"{replica!r} answered with {type(reply).__name__}")
                wanted = {k: p for p, k in group}
                oldest = ctx.membership.oldest_taken(replica)
                unknown = set(reply.unknown)
                for partition, entry in reply.entries:
                    if wanted.get(entry.key) != partition:
                        continue  # not asked
                    if entry.version < oldest:
                        unknown.add(entry.key)  # from before a separation: read another way
                        continue
                    ctx.hlc.update(entry.version)
                    found[entry.key] = entry
                for key in wanted:
                    if key not in unknown:
                        found.setdefault(key, None)  # it held no entry of the key: missing
                left = [(p, k) for p, k in group if k in unknown]
            except GridKVError:
                pass  # every key of the group is read one by one below
            await asyncio.gather(*(one(p, k) for p, k in left))

        await asyncio.gather(
            *(
                ask(replica, group[start : start + MANY_PER_REQUEST])
                for replica, group in asked.items()
                for start in range(0, len(group), MANY_PER_REQUEST)
            ),
            *(one(p, k) for p, k in singly),
        )
        return found, errors

    async def _get_from_former(
        self, partition: int, key: str, former: list[str], watched: int | None
    ) -> GetReply | WatchedGetReply:
        entry = None
        with contextlib.suppress(GridKVError):
            entry = await self._read_first(partition, key, former)
        found = None if entry is None else (partition, entry)
        return GetReply(found) if watched is None else WatchedGetReply(found, watched)

    async def read(self, partition: int, key: str, level: str) -> Entry | None:
        """The freshest entry of ``key`` that ``level`` allows (tombstones included).

        :raises QuorumNotReached: fewer replicas answered than the level needs.
        :raises PeerUnavailable: at ``one``, no replica answered within ``read_timeout``.
        """
        ctx = self.ctx
        replicas = ctx.partitions.ensure_table().owners(partition)
        needed = required_acks(level, ctx.options.replica_count)
        answers: dict[str, Entry | None] = {}
        if ctx.node_id in replicas:
            answers[ctx.node_id] = local = ctx.storage.get_entry(partition, key)
            if needed <= 1:
                former = self._formers(partition)
                if local is None and former:
                    # The partition is moving here: the key may not have arrived yet.
                    with contextlib.suppress(GridKVError):
                        return await self._read_first(partition, key, former)
                return local
        others = [r for r in replicas if r != ctx.node_id]
        if needed <= 1:
            # A read at one on a node that does not hold the key, flat (no coroutine frame of
            # its own): the hot cache, else the first replica; on an error the others (that
            # one last), with waits, as _read_first does. The replica that answers watches
            # the key for this node's near cache, which keeps the answer until it changes.
            cached, entry = self.hot.lookup(key)
            if cached:
                return entry
            near = self.near_ttl
            asked = ctx.loop_time()
            watched = 0.0
            self.hot.begin(key)
            try:
                if not others:
                    found = await self._read_first(partition, key, others)  # raises: nobody
                elif near:
                    try:
                        found, watched = await self._ask_watched(others[0], partition, key, near)
                    except GridKVError:
                        found, watched = await self._first(
                            [*others[1:], others[0]],
                            key,
                            lambda r: self._ask_watched(r, partition, key, near),
                        )
                else:
                    try:
                        found = await self._ask(others[0], partition, key)
                    except GridKVError:
                        found = await self._read_first(partition, key, [*others[1:], others[0]])
            except BaseException:
                self.hot.abandon(key)
                raise
            self.hot.finish(key, found, asked + watched * NEAR_MARGIN if watched else None)
            return found
        asks: dict[asyncio.Future[Entry | None], str] = {
            asyncio.ensure_future(self._ask(r, partition, key)): r for r in others
        }
        try:
            results, errors = await _until_enough(
                asks, needed - len(answers), ctx.options.read_timeout
            )
        finally:
            for task in asks:
                task.cancel()  # the answers not needed (a no-op for those that came)
                task.add_done_callback(consume)
        answers.update(results)
        if len(answers) < needed:
            raise QuorumNotReached(
                f"read of key {key!r:.60} at {level!r} got {len(answers)} of {needed} answers "
                f"within read_timeout={ctx.options.read_timeout:g}s ({reasons(errors)})"
            )
        winner = freshest(answers.values())
        if winner is not None:
            self._repair(partition, winner, answers)
        return winner

    def _read_first(self, partition: int, key: str, replicas: list[str]) -> Awaitable[Entry | None]:
        return self._first(replicas, key, lambda r: self._ask(r, partition, key))

    async def _first(
        self, replicas: list[str], key: str, ask: Callable[[str], Awaitable[_T]]
    ) -> _T:
        """The first answer of ``ask(replica)``, the replicas in turn within ``read_timeout``.

        Rounds over the replicas are separated by a back-off.

        :raises PeerUnavailable: none answered; names each replica's error.
        """
        errors: dict[str, str] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ctx.options.read_timeout
        delay = 0.01
        while True:
            for replica in replicas:
                try:
                    return await ask(replica)
                except GridKVError as exc:
                    errors[replica] = f"{type(exc).__name__}: {exc}"
            if loop.time() + delay >= deadline or not replicas:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
        why = "; ".join(f"{r}: {e}" for r, e in errors.items()) or "no replica in the view"
        raise PeerUnavailable(
            f"no replica of key {key!r:.60} answered within "
            f"read_timeout={self.ctx.options.read_timeout:g}s ({why})"
        )

    async def _ask(self, replica: str, partition: int, key: str) -> Entry | None:
        """``replica``'s entry of ``key`` (tombstones included)."""
        reply = await self._request(replica, GetRequest(partition, key))
        if not isinstance(reply, GetReply):
            raise ProtocolError(f"{replica!r} answered a read with {type(reply).__name__}")
        return self._checked(replica, partition, key, reply.entry)

    async def _ask_watched(
        self, replica: str, partition: int, key: str, lifetime: float
    ) -> tuple[Entry | None, float]:
        """``replica``'s entry of ``key``, and the seconds it watches the key for this node."""
        request = WatchedGetRequest(self.ctx.node_id, partition, key, round(lifetime * 1000))
        reply = await self._request(replica, request)
        if not isinstance(reply, WatchedGetReply):
            raise ProtocolError(f"{replica!r} answered a read with {type(reply).__name__}")
        entry = self._checked(replica, partition, key, reply.entry)
        return entry, min(reply.watched_ms / 1000, lifetime)

    async def _request(self, replica: str, request: Message) -> Message:
        ctx = self.ctx
        address = ctx.membership.address_of(replica)
        if address is None:
            raise PeerUnavailable(f"replica {replica!r} is not in this node's view")
        return await ctx.messaging.request(address, request, ctx.options.read_timeout)

    def _checked(
        self, replica: str, partition: int, key: str, found: tuple[int, Entry] | None
    ) -> Entry | None:
        """A replica's answer about ``key``, checked; its version advances the clock.

        :raises ProtocolError: an answer about another key.
        :raises PeerUnavailable: an entry from before a separation the replica has yet to
            drop (not an answer: another replica is asked).
        """
        if found is None:
            return None
        part, entry = found
        if part != partition or entry.key != key:
            raise ProtocolError(f"{replica!r} answered a read of {key!r:.60} with another key")
        if entry.version < self.ctx.membership.oldest_taken(replica):
            # Held from before a separation the replica has yet to drop: this side may have
            # deleted the key since (and collected the tombstone). Not an answer: another
            # replica is asked (it is not "no entry" either, which would hide a live value).
            raise PeerUnavailable(
                f"replica {replica!r} answered with an entry from before a long separation "
                "it has not dropped yet"
            )
        self.ctx.hlc.update(entry.version)
        return entry

    def _repair(self, partition: int, winner: Entry, answers: dict[str, Entry | None]) -> None:
        ctx = self.ctx
        for replica in stale_replicas(winner, answers):
            if not self._repairs.take():
                return
            self.repairs_sent += 1
            if replica == ctx.node_id:
                with contextlib.suppress(MemoryLimitExceeded):
                    if ctx.storage.apply(partition, winner):
                        self.watches.changed(winner.key)
            else:
                self._send_later(replica, partition, winner)


async def _until_enough(
    tasks: dict[asyncio.Future[_T], str], enough: int, timeout: float
) -> tuple[dict[str, _T], dict[str, str]]:
    """Wait until ``enough`` of ``tasks`` (future -> replica) succeed, all end, or time runs out.

    Returns the results and the errors by replica.
    """
    results: dict[str, _T] = {}
    errors: dict[str, str] = {}
    pending = set(tasks)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pending and len(results) < enough:
        left = deadline - loop.time()
        if left <= 0:
            break
        done, pending = await asyncio.wait(
            pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            if task.cancelled():
                errors[tasks[task]] = "cancelled"
                continue
            exc = task.exception()
            if exc is None:
                results[tasks[task]] = task.result()
            else:
                errors[tasks[task]] = f"{type(exc).__name__}: {exc}"
    return results, errors


def reasons(errors: dict[str, str]) -> str:
    """Why replicas failed, for an error message."""
    return "; ".join(f"{r}: {e}" for r, e in errors.items()) or "no answer in time"

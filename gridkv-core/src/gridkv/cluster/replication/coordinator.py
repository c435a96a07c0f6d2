"""Reads and writes across the replicas of a partition: routing, batching, levels, read repair.

Any node can coordinate any operation (the Dynamo way): it stamps a write with its own HLC
timestamp and node id, and sends it to the partition's replicas. What "done" means depends on
the consistency level:

``one``
    An owner writes locally and acknowledges at once; the other replicas get the entry in
    batches per peer (``batch_threshold`` entries, a byte budget under the frame limit, or
    ``batch_window``, whichever comes first, one message per batch). A non-owner waits for
    the first replica's acknowledgement.
``quorum`` / ``all``
    ``replica_count // 2 + 1`` / ``replica_count`` acknowledgements (the local write counts)
    within ``replication_timeout``, or :class:`~gridkv.base.errors.QuorumNotReached`. Sends to the
    remaining replicas go on in the background.

An acknowledgement means stored: a replica answers every entry of a batch with an outcome
(:data:`~gridkv.wire.messages.STORED`, :data:`~gridkv.wire.messages.HELD` or a refusal), and
only the first two count. A replica refuses an entry for a partition it does not replicate in
its own view; the coordinator then looks at its view again, sends to the replicas it names
now, and asks the refusing one again shortly (views converge within a few gossip rounds).

Reads are the :class:`~gridkv.cluster.replication.reads.Reader`'s, which the coordinator
holds; batches are its :class:`~gridkv.cluster.replication.batching.Batcher`'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from gridkv.base.consistency import required_acks
from gridkv.base.errors import (
    ClockDriftExceeded,
    GridKVError,
    MemoryLimitExceeded,
    PeerUnavailable,
    ProtocolError,
    QuorumNotReached,
)
from gridkv.base.log import LOGGER_NAME, RateLimitedLog
from gridkv.cluster.replication.batching import Batcher
from gridkv.cluster.replication.reads import Reader, reasons
from gridkv.storage.base import Entry, key_hash
from gridkv.wire.budget import message_budget
from gridkv.wire.messages import (
    CLOCK_DRIFT,
    HELD,
    NO_MEMORY,
    NOT_REPLICA,
    STATUS_NAMES,
    STORED,
    WITHHELD,
    WRONG_PARTITION,
    BatchAck,
    GetManyReply,
    GetManyRequest,
    GetReply,
    GetRequest,
    Invalidate,
    ReplicateBatch,
    WatchedGetReply,
    WatchedGetRequest,
)

if TYPE_CHECKING:
    from gridkv.cluster.context import ClusterContext

__all__ = ["Coordinator", "REFUSAL_RETRY"]

log = logging.getLogger(LOGGER_NAME)
_T = TypeVar("_T")
#: Seconds before a replica that refused an entry as "not a replica" is asked again: about
#: the time a membership change takes to reach every view.
REFUSAL_RETRY = 0.05


class Coordinator:
    """Coordinates one node's reads and writes with the other replicas, and stores theirs.

    All methods run on the node's event loop, except :meth:`replicate_soon`, which any thread
    may call.
    """

    def __init__(self, ctx: ClusterContext, waiting_on: Callable[[int], tuple[str, ...]]) -> None:
        self.ctx = ctx
        self._waiting_on = waiting_on
        opts = ctx.options
        #: The batches queued for each replica.
        self.batcher = Batcher(
            opts.batch_threshold,
            opts.batch_window,
            message_budget(opts.network.max_frame_bytes),
            ctx.loop,
            self._send_batch,
            opts.replication_backlog_bytes,
        )
        #: Reads of other replicas, and the answers to theirs.
        self.reader = Reader(ctx, waiting_on, self.batcher.add)
        #: Recent answers for keys this node does not hold (reads at ``one``).
        self.hot = self.reader.hot
        #: The keys this node watches for other nodes' near caches.
        self.watches = self.reader.watches
        #: Called when an entry is taken for a partition this node does not replicate (a
        #: member that left handed it over by its own view): the node schedules a handoff
        #: pass that gives it to the replicas.
        self.on_stray: Callable[[], None] = lambda: None
        #: Writes other threads stored here, waiting for the loop to queue them for the
        #: other replicas (see :meth:`replicate_soon`), and whether the loop is told.
        self._handed: deque[tuple[int, Entry, str]] = deque()
        self._handing = False
        self._refusals = RateLimitedLog(log)
        #: Counters: batches sent, entries replicated (stored by the replica), failed sends,
        #: entries refused by replicas, entries this node refused, entries this node did
        #: not take from a member back from a long separation (see :meth:`store`).
        self.batches_sent = 0
        self.entries_replicated = 0
        self.send_failures = 0
        self.entries_refused = 0
        self.refused_here = 0
        self.entries_withheld = 0

    @property
    def repairs_sent(self) -> int:
        """Read repairs sent."""
        return self.reader.repairs_sent

    def read(self, partition: int, key: str, level: str) -> Awaitable[Entry | None]:
        """The freshest entry of ``key`` that ``level`` allows; see :meth:`Reader.read`."""
        return self.reader.read(partition, key, level)

    def read_from(self, replica: str, partition: int, key: str) -> Awaitable[Entry | None]:
        """``replica``'s entry of ``key`` (tombstones included), asked within read_timeout.

        :raises PeerUnavailable: ``replica`` is not in the view or did not answer.
        """
        return self.reader._ask(replica, partition, key)

    def read_many(
        self, items: list[tuple[int, str]]
    ) -> Awaitable[tuple[dict[str, Entry | None], dict[str, GridKVError]]]:
        """Entries of many keys at level one; see :meth:`Reader.read_many`."""
        return self.reader.read_many(items)

    def on_get_many(self, message: GetManyRequest) -> GetManyReply:
        """A peer's read of several keys; see :meth:`Reader.on_get_many`."""
        return self.reader.on_get_many(message)

    def on_get(
        self, message: GetRequest | WatchedGetRequest
    ) -> GetReply | WatchedGetReply | Awaitable[GetReply | WatchedGetReply]:
        """A peer's read of one key; see :meth:`Reader.on_get`."""
        return self.reader.on_get(message)

    def on_invalidate(self, message: Invalidate) -> None:
        """A replica says keys it watched for this node changed; see :meth:`Reader`."""
        self.reader.on_invalidate(message)

    # -- storing what peers send -------------------------------------------------------------

    def store(self, partition: int, entry: Entry, oldest: int = 0, handed: bool = False) -> int:
        """Store an entry a peer sent, by the rules every path follows; return the outcome.

        The key must belong to ``partition``, this node must replicate the partition in its
        view, the version must not be too far ahead of this node's clock, and storage must
        have room. Then last-writer-wins decides: :data:`STORED` or :data:`HELD`.

        ``handed``: the sender is a member that left, handing its data over by its own view,
        which is not kept up to date once it left (members it counts may be gone, members
        may have joined it never heard of). A node that runs takes such an entry even for a
        partition it does not replicate, and its handoff passes it on to the replicas
        (:mod:`gridkv.cluster.handoff`); refused, it could be lost with its last copy.

        An entry older than ``oldest`` (what ``membership.oldest_taken`` says of its
        sender) is refused with :data:`WITHHELD`: the sender is back from a separation
        longer than ``dead_retention`` and has yet to drop it, and this side knows better
        (it may have deleted the key and collected the tombstone since). Not "held": a
        handoff giver must not count it as given and drop its copy.
        """
        ctx = self.ctx
        hash_ = key_hash(entry.key)
        if hash_ % ctx.options.partition_count != partition:
            return WRONG_PARTITION
        held = ctx.partitions.holds(partition)
        if not held and not (handed and ctx.accepting()):
            return NOT_REPLICA
        if entry.version < oldest:
            self.entries_withheld += 1
            return WITHHELD
        try:
            ctx.hlc.update(entry.version)
        except ClockDriftExceeded:
            return CLOCK_DRIFT
        try:
            stored = ctx.storage.apply(partition, entry, hash_)
        except MemoryLimitExceeded:
            return NO_MEMORY
        if not held:
            # Taken for a partition this node does not replicate: a pass passes it on to the
            # replicas soon (and again until they took it), whether or not the giver's
            # HandoffDone ever comes.
            self.on_stray()
        if not stored:
            return HELD
        self.watches.changed(entry.key)
        return STORED

    def on_batch(self, message: ReplicateBatch) -> BatchAck:
        """Merge a batch from a peer by last-writer-wins; answer one outcome per entry."""
        count = self.ctx.options.partition_count
        oldest = self.ctx.membership.oldest_taken(message.sender)
        handed = self.ctx.membership.state_of(message.sender) == "left"
        results = bytearray()
        for partition, entry in message.entries:
            if partition >= count:
                raise ProtocolError(f"partition {partition} out of range (partition_count={count})")
            results.append(self.store(partition, entry, oldest, handed))
        self._note_refusals(message.sender, results)
        return BatchAck(bytes(results))

    def _note_refusals(self, sender: str, results: bytes | bytearray) -> None:
        for code in (NOT_REPLICA, WRONG_PARTITION, CLOCK_DRIFT, NO_MEMORY):
            refused = results.count(code)
            if refused:
                self.refused_here += refused
                level = logging.DEBUG if code == NOT_REPLICA else logging.WARNING
                self._refusals.log(
                    level,
                    f"refused {code}",
                    f"refused entries from a peer: {STATUS_NAMES[code]}",
                    peer=sender,
                    entries=refused,
                    node_id=self.ctx.node_id,
                )

    # -- writes ----------------------------------------------------------------------------

    def replicate_soon(self, partition: int, entry: Entry, stored_by: str = "") -> None:
        """Queue an entry written locally for the partition's other replicas (any thread).

        :param stored_by: a replica that stored it already (a write from a calling thread,
            :mod:`gridkv.api.direct`): it is not sent there again.
        """
        loop = self.ctx.loop()
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._enqueue(partition, entry, stored_by)
            return
        # From another thread: one wake-up of the loop carries every write queued until the
        # loop runs, not one each. The append comes before the test of the flag, and the loop
        # clears the flag before it takes what is queued, so no write is left behind.
        if loop.is_closed():  # the API turns this into ShuttingDown, as the loop's own error
            raise RuntimeError("Event loop is closed")
        self._handed.append((partition, entry, stored_by))
        if not self._handing:
            self._handing = True
            try:
                loop.call_soon_threadsafe(self._take_handed)
            except RuntimeError:  # closed meanwhile; what is handed over stays unsent
                self._handing = False
                raise

    def _take_handed(self) -> None:
        """On the loop: queue for the replicas the writes other threads handed over.

        Only those there when it starts: writes handed over meanwhile have a call of their
        own scheduled (the flag is clear), so writers that never pause cannot hold the loop.
        """
        self._handing = False
        handed = self._handed
        for _ in range(len(handed)):
            self._enqueue(*handed.popleft())

    def _enqueue(self, partition: int, entry: Entry, stored_by: str = "") -> None:
        ctx = self.ctx
        for replica in ctx.partitions.ensure_table().owners(partition):
            if replica != ctx.node_id and replica != stored_by:
                self.batcher.add(replica, partition, entry)

    async def _send_batch(self, replica: str, entries: list[tuple[int, Entry]]) -> bool:
        """Send a batch the batcher made; whether the replica answered it."""
        self.batches_sent += 1
        try:
            results = await self._replicate_to(replica, entries)
        except GridKVError as exc:
            # Anti-entropy repairs what a failed batch leaves behind.
            self.send_failures += 1
            log.debug("replication batch failed", extra={"peer": replica, "error": str(exc)})
            return False
        self.entries_replicated += results.count(STORED) + results.count(HELD)
        refused = [pe for pe, code in zip(entries, results, strict=True) if code == NOT_REPLICA]
        if refused:
            self.entries_refused += len(refused)
            self._reroute(replica, refused)
        return True

    def _reroute(self, refuser: str, entries: list[tuple[int, Entry]]) -> None:
        """Send entries a replica refused as "not a replica" to the replicas this view names.

        When this node's view still names the refuser, the views disagree for a moment; the
        replicas then hold the entry anyway and anti-entropy brings it over once they agree.
        """
        ctx = self.ctx
        table = ctx.partitions.ensure_table()
        for partition, entry in entries:
            owners = table.owners(partition)
            if refuser in owners:
                continue
            if ctx.node_id in owners:
                self.store(partition, entry)
            for replica in owners:
                if replica != ctx.node_id:
                    self.batcher.add(replica, partition, entry)

    async def _replicate_to(self, replica: str, entries: list[tuple[int, Entry]]) -> bytes:
        """Send ``entries`` to ``replica``; return its outcome for each."""
        address = self.ctx.membership.address_of(replica)
        if address is None:
            raise PeerUnavailable(f"replica {replica!r} is not in this node's view")
        return await self.send_batch(address, entries)

    async def send_batch(self, address: str, entries: list[tuple[int, Entry]]) -> bytes:
        """Send ``entries`` to the node at ``address`` as one :class:`ReplicateBatch`.

        The caller cuts them to the message budget. Returns the outcome for each entry.

        :raises GridKVError: the peer could not be reached or answered something else.
        """
        reply = await self.ctx.messaging.request(
            address,
            ReplicateBatch(self.ctx.node_id, entries),
            self.ctx.options.replication_timeout,
        )
        if not isinstance(reply, BatchAck) or len(reply.results) != len(entries):
            raise ProtocolError(
                f"{address!r} answered a batch of {len(entries)} with {type(reply).__name__}"
            )
        return reply.results

    async def drain(self, timeout: float) -> None:
        """Send every queued batch and wait for the sends in flight (graceful close)."""
        await self.batcher.drain(timeout)
        self.batcher.forget_backlog()  # the node is closing: nobody waits for room now

    async def abort(self) -> None:
        """Drop what is queued and cancel the sends in flight (the node crashed)."""
        await self.batcher.abort()

    def make_room(self, key: str) -> None:
        """From a thread other than the loop's: wait while the replication backlog is full.

        :raises QuorumNotReached: it did not drain within ``replication_timeout`` (nothing
            of the write of ``key`` was stored).
        """
        timeout = self.ctx.options.replication_timeout
        if self.batcher.full and not self.batcher.room(timeout):
            raise QuorumNotReached(self.batcher.refusal(key, timeout))

    async def wait_room(self, key: str) -> None:
        """On the loop: wait while the replication backlog is full (see :meth:`make_room`)."""
        timeout = self.ctx.options.replication_timeout
        if self.batcher.full and not await self.batcher.wait_room(timeout):
            raise QuorumNotReached(self.batcher.refusal(key, timeout))

    async def write(self, partition: int, entry: Entry, level: str) -> None:
        """Write ``entry`` to the partition's replicas at ``level``.

        :raises QuorumNotReached: fewer replicas stored it than the level needs.
        :raises MemoryLimitExceeded: the local storage is full.
        """
        ctx = self.ctx
        if self.batcher.full:
            await self.wait_room(entry.key)
        replicas = ctx.partitions.ensure_table().owners(partition)
        needed = required_acks(level, ctx.options.replica_count)
        self.hot.invalidate(entry.key)
        stored: set[str] = set()
        if ctx.node_id in replicas:
            if ctx.storage.apply(partition, entry):
                self.watches.changed(entry.key)
            stored.add(ctx.node_id)
        if len(stored) >= needed:
            for replica in replicas:
                if replica != ctx.node_id:
                    self.batcher.add(replica, partition, entry)
            return
        errors = await self._replicate_until(partition, entry, needed, stored)
        if len(stored) < needed:
            raise QuorumNotReached(
                f"write of key {entry.key!r:.60} at {level!r} was stored by {len(stored)} of "
                f"{needed} replicas within replication_timeout="
                f"{ctx.options.replication_timeout:g}s ({reasons(errors)})"
            )

    async def _replicate_until(
        self, partition: int, entry: Entry, needed: int, stored: set[str]
    ) -> dict[str, str]:
        """Send ``entry`` to the replicas until ``needed`` of them stored it, or time runs out.

        ``stored`` collects the replicas that stored it. The replicas are those of the view at
        each step: a refusal as "not a replica" makes the coordinator look again and ask the
        replica again after :data:`REFUSAL_RETRY`. Sends still running at the end go on in
        the background. Returns why each replica that did not store it failed.
        """
        ctx = self.ctx
        me = ctx.node_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ctx.options.replication_timeout
        sends: dict[asyncio.Future[bytes], str] = {}
        errors: dict[str, str] = {}
        retry_at: dict[str, float] = {}
        try:
            while len(stored) < needed:
                now = loop.time()
                if now >= deadline:
                    break
                owners = ctx.partitions.ensure_table().owners(partition)
                for gone in [r for r in retry_at if r not in owners]:
                    del retry_at[gone]  # no longer a replica in this view: nothing to wait for
                if me in owners and me not in stored:
                    if ctx.storage.apply(partition, entry):
                        self.watches.changed(entry.key)
                    stored.add(me)
                    continue
                busy = set(sends.values())
                for replica in owners:
                    if (
                        replica == me
                        or replica in stored
                        or replica in busy
                        or retry_at.get(replica, 0.0) > now
                        or (replica in errors and replica not in retry_at)
                    ):
                        continue
                    retry_at.pop(replica, None)
                    sends[
                        asyncio.ensure_future(self._replicate_to(replica, [(partition, entry)]))
                    ] = replica
                wake = min([deadline, *(t for t in retry_at.values() if t > now)])
                if not sends:
                    if wake >= deadline and not retry_at:
                        break  # nobody left to ask
                    await asyncio.sleep(max(0.0, wake - now))
                    continue
                done, _ = await asyncio.wait(
                    set(sends), timeout=max(0.0, wake - now), return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    replica = sends.pop(task)
                    if task.cancelled():
                        errors[replica] = "cancelled"
                        continue
                    exc = task.exception()
                    if exc is not None:
                        errors[replica] = f"{type(exc).__name__}: {exc}"
                        continue
                    code = task.result()[0]
                    if code in (STORED, HELD):
                        stored.add(replica)
                        errors.pop(replica, None)
                    else:
                        errors[replica] = f"refused: {STATUS_NAMES[code]}"
                        if code == NOT_REPLICA:
                            self.entries_refused += 1
                            retry_at[replica] = loop.time() + REFUSAL_RETRY
        finally:
            for task in sends:  # the other replicas still get the write
                self.batcher.track(task)
        return errors

"""Reads and writes across the replicas of a partition: routing, batching, levels, read repair.

Any node can coordinate any operation (the Dynamo way): it stamps a write with its own HLC
timestamp and node id, and sends it to the partition's replicas. What "done" means depends on
the consistency level:

``one``
    An owner writes locally and acknowledges at once; the other replicas get the entry in
    batches per peer (``batch_threshold`` entries or ``batch_window``, whichever comes first,
    one message per batch). A non-owner waits for the first replica's acknowledgement.
``quorum`` / ``all``
    ``replica_count // 2 + 1`` / ``replica_count`` acknowledgements (the local write counts)
    within ``replication_timeout``, or :class:`~gridkv.errors.QuorumNotReached`. Sends to the
    remaining replicas go on in the background.

Reads at ``one`` are local on an owner; elsewhere they ask the replicas in ring order, one
after the other, until one answers within ``read_timeout``. ``quorum`` and ``all`` reads ask
the replicas at once, return the freshest version by last-writer-wins, and send it to the
replicas that answered with an older one (read repair, at most
``read_repair_rate_limit_per_sec`` a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from gridkv.errors import (
    ClockDriftExceeded,
    GridKVError,
    PeerUnavailable,
    ProtocolError,
    QuorumNotReached,
)
from gridkv.hotcache import HotCache
from gridkv.log import LOGGER_NAME
from gridkv.storage.base import Entry, merge
from gridkv.wire.messages import BatchAck, GetReply, GetRequest, ReplicateBatch

if TYPE_CHECKING:
    from gridkv.node import Node

__all__ = ["Coordinator", "required_acks"]

log = logging.getLogger(LOGGER_NAME)
_T = TypeVar("_T")


def required_acks(level: str, replica_count: int) -> int:
    """Acknowledgements a level needs: 1, a majority of ``replica_count``, or all of them."""
    if level == "one":
        return 1
    if level == "quorum":
        return replica_count // 2 + 1
    return replica_count


class _TokenBucket:
    """At most ``rate`` events a second, with a burst of one second's worth."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.tokens = float(rate)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(float(self.rate), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Coordinator:
    """Coordinates one node's reads and writes with the other replicas.

    All methods run on the node's event loop, except :meth:`replicate_soon`, which any thread
    may call.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        opts = node.options
        self._threshold = opts.batch_threshold
        self._window = opts.batch_window
        self._batches: dict[str, list[tuple[int, Entry]]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._inflight: set[asyncio.Future[Any]] = set()
        self._repairs = _TokenBucket(opts.read_repair_rate_limit_per_sec)
        #: Recent answers for keys this node does not hold (reads at ``one``).
        self.hot = HotCache(opts.hot_cache_size, opts.hot_read_cache_ttl, self._now)
        #: Counters: batches sent, entries replicated, read repairs sent, failed sends.
        self.batches_sent = 0
        self.entries_replicated = 0
        self.repairs_sent = 0
        self.send_failures = 0

    def _now(self) -> float:
        loop = self.node.loop
        return loop.time() if loop is not None else time.monotonic()

    # -- writes ----------------------------------------------------------------------------

    def replicate_soon(self, partition: int, entry: Entry) -> None:
        """Queue an entry written locally for the partition's other replicas (any thread)."""
        loop = self.node.loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._enqueue(partition, entry)
        else:
            loop.call_soon_threadsafe(self._enqueue, partition, entry)

    def _enqueue(self, partition: int, entry: Entry) -> None:
        node = self.node
        for replica in node.ensure_table().owners(partition):
            if replica != node.node_id:
                self._enqueue_one(replica, partition, entry)

    def _flush(self, replica: str) -> None:
        timer = self._timers.pop(replica, None)
        if timer is not None:
            timer.cancel()
        entries = self._batches.pop(replica, None)
        if not entries or self.node.loop is None:
            return
        task = self.node.loop.create_task(self._send_batch(replica, entries))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _send_batch(self, replica: str, entries: list[tuple[int, Entry]]) -> None:
        self.batches_sent += 1
        try:
            await self._replicate_to(replica, entries)
            self.entries_replicated += len(entries)
        except GridKVError as exc:
            # Anti-entropy repairs what a failed batch leaves behind.
            self.send_failures += 1
            log.debug("replication batch failed", extra={"peer": replica, "error": str(exc)})

    async def _replicate_to(self, replica: str, entries: list[tuple[int, Entry]]) -> int:
        address = self.node.membership.address_of(replica)
        if address is None:
            raise PeerUnavailable(f"replica {replica!r} is not in this node's view")
        reply = await self.node.request(
            address,
            ReplicateBatch(self.node.node_id, entries),
            self.node.options.replication_timeout,
        )
        if not isinstance(reply, BatchAck):
            raise ProtocolError(f"{replica!r} answered a batch with {type(reply).__name__}")
        return reply.applied

    async def drain(self, timeout: float) -> None:
        """Send every queued batch and wait for the sends in flight (graceful close)."""
        for replica in list(self._batches):
            self._flush(replica)
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=timeout)

    async def abort(self) -> None:
        """Drop what is queued and cancel the sends in flight (the node crashed)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._batches.clear()
        tasks = list(self._inflight)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def write(self, partition: int, entry: Entry, level: str) -> None:
        """Write ``entry`` to the partition's replicas at ``level``.

        :raises QuorumNotReached: fewer replicas acknowledged than the level needs.
        :raises MemoryLimitExceeded: the local storage is full.
        """
        node = self.node
        replicas = node.ensure_table().owners(partition)
        needed = required_acks(level, node.options.replica_count)
        self.hot.invalidate(entry.key)
        acks = 0
        if node.node_id in replicas:
            node.storage.apply(partition, entry)
            acks = 1
        others = [r for r in replicas if r != node.node_id]
        if acks >= needed:
            for replica in others:
                self._enqueue_one(replica, partition, entry)
            return
        sends: dict[asyncio.Future[int], str] = {
            asyncio.ensure_future(self._replicate_to(r, [(partition, entry)])): r for r in others
        }
        results, errors, pending = await _until_enough(
            sends, needed - acks, node.options.replication_timeout
        )
        acks += len(results)
        for task in pending:  # the other replicas still get the write
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            task.add_done_callback(_consume)
        if acks < needed:
            raise QuorumNotReached(
                f"write of key {entry.key!r:.60} at {level!r} got {acks} of {needed} "
                f"acknowledgements within replication_timeout={node.options.replication_timeout:g}s"
                f" ({_reasons(errors)})"
            )

    def _enqueue_one(self, replica: str, partition: int, entry: Entry) -> None:
        """Add an entry to ``replica``'s batch; send the batch when full or when its window ends."""
        batch = self._batches.setdefault(replica, [])
        batch.append((partition, entry))
        if len(batch) >= self._threshold:
            self._flush(replica)
        elif replica not in self._timers and self.node.loop is not None:
            self._timers[replica] = self.node.loop.call_later(self._window, self._flush, replica)

    def on_get(self, message: GetRequest) -> GetReply | Awaitable[GetReply]:
        """A peer's read of one key: this node's entry, at once.

        While the partition is still moving here, a key that has not arrived yet is looked
        up on the former replicas; then the answer is an awaitable.
        """
        node = self.node
        partition = message.partition
        if partition >= node.options.partition_count:
            raise ProtocolError(f"partition {partition} out of range")
        node.ensure_table()  # marks the partitions moving here, if the view just changed
        entry = node.storage.get_entry(partition, message.key)
        if entry is None:
            former = [r for r in node.handoff.waiting_on(partition) if r != node.node_id]
            if former:
                return self._get_from_former(partition, message.key, former)
        return GetReply(None if entry is None else (partition, entry))

    async def _get_from_former(self, partition: int, key: str, former: list[str]) -> GetReply:
        entry = None
        with contextlib.suppress(GridKVError):
            entry = await self._read_first(partition, key, former)
        return GetReply(None if entry is None else (partition, entry))

    def on_batch(self, message: ReplicateBatch) -> BatchAck:
        """Merge a batch from a peer by last-writer-wins; answer how many entries won."""
        node = self.node
        applied = 0
        count = node.options.partition_count
        for partition, entry in message.entries:
            if partition >= count:
                raise ProtocolError(f"partition {partition} out of range (partition_count={count})")
            try:
                node.hlc.update(entry.version)
            except ClockDriftExceeded as exc:
                log.warning(
                    "refused an entry from a clock too far ahead",
                    extra={"peer": message.sender, "error": str(exc)},
                )
                continue
            if node.storage.apply(partition, entry):
                applied += 1
        return BatchAck(applied)

    # -- reads -----------------------------------------------------------------------------

    async def read(self, partition: int, key: str, level: str) -> Entry | None:
        """The freshest entry of ``key`` that ``level`` allows (tombstones included).

        :raises QuorumNotReached: fewer replicas answered than the level needs.
        :raises PeerUnavailable: at ``one``, no replica answered within ``read_timeout``.
        """
        node = self.node
        replicas = node.ensure_table().owners(partition)
        needed = required_acks(level, node.options.replica_count)
        answers: dict[str, Entry | None] = {}
        if node.node_id in replicas:
            answers[node.node_id] = local = node.storage.get_entry(partition, key)
            if needed <= 1:
                former = [r for r in node.handoff.waiting_on(partition) if r != node.node_id]
                if local is None and former:
                    # The partition is moving here: the key may not have arrived yet.
                    with contextlib.suppress(GridKVError):
                        return await self._read_first(partition, key, former)
                return local
        others = [r for r in replicas if r != node.node_id]
        if needed <= 1:
            cached, entry = self.hot.lookup(key)
            if cached:
                return entry
            found = await self._read_first(partition, key, others)
            self.hot.put(key, found)
            return found
        asks: dict[asyncio.Future[Entry | None], str] = {
            asyncio.ensure_future(self._ask(r, partition, key)): r for r in others
        }
        results, errors, pending = await _until_enough(
            asks, needed - len(answers), node.options.read_timeout
        )
        answers.update(results)
        for task in pending:
            task.cancel()
        if len(answers) < needed:
            raise QuorumNotReached(
                f"read of key {key!r:.60} at {level!r} got {len(answers)} of {needed} answers "
                f"within read_timeout={node.options.read_timeout:g}s ({_reasons(errors)})"
            )
        winner: Entry | None = None
        for entry in answers.values():
            winner = merge(winner, entry)
        if winner is not None:
            self._repair(partition, winner, answers)
        return winner

    async def _read_first(self, partition: int, key: str, replicas: list[str]) -> Entry | None:
        errors: dict[str, str] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.node.options.read_timeout
        delay = 0.01
        while True:
            for replica in replicas:
                try:
                    return await self._ask(replica, partition, key)
                except GridKVError as exc:
                    errors[replica] = f"{type(exc).__name__}: {exc}"
            if loop.time() + delay >= deadline or not replicas:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
        why = "; ".join(f"{r}: {e}" for r, e in errors.items()) or "no replica in the view"
        raise PeerUnavailable(
            f"no replica of key {key!r:.60} answered within "
            f"read_timeout={self.node.options.read_timeout:g}s ({why})"
        )

    async def _ask(self, replica: str, partition: int, key: str) -> Entry | None:
        address = self.node.membership.address_of(replica)
        if address is None:
            raise PeerUnavailable(f"replica {replica!r} is not in this node's view")
        reply = await self.node.request(
            address, GetRequest(partition, key), self.node.options.read_timeout
        )
        if not isinstance(reply, GetReply):
            raise ProtocolError(f"{replica!r} answered a read with {type(reply).__name__}")
        if reply.entry is None:
            return None
        entry = reply.entry[1]
        self.node.hlc.update(entry.version)
        return entry

    def _repair(self, partition: int, winner: Entry, answers: dict[str, Entry | None]) -> None:
        node = self.node
        for replica, entry in answers.items():
            if entry is not None and not winner.wins_over(entry):
                continue
            if not self._repairs.take():
                return
            self.repairs_sent += 1
            if replica == node.node_id:
                node.storage.apply(partition, winner)
            else:
                self._enqueue_one(replica, partition, winner)


async def _until_enough(
    tasks: dict[asyncio.Future[_T], str], enough: int, timeout: float
) -> tuple[dict[str, _T], dict[str, str], set[asyncio.Future[_T]]]:
    """Wait until ``enough`` of ``tasks`` (future -> replica) succeed, all end, or time runs out.

    Returns the results and the errors by replica, and the tasks still running.
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
            exc = task.exception()
            if exc is None:
                results[tasks[task]] = task.result()
            else:
                errors[tasks[task]] = f"{type(exc).__name__}: {exc}"
    return results, errors, pending


def _reasons(errors: dict[str, str]) -> str:
    return "; ".join(f"{r}: {e}" for r, e in errors.items()) or "no answer in time"


def _consume(task: asyncio.Future[int]) -> None:
    if not task.cancelled():
        task.exception()

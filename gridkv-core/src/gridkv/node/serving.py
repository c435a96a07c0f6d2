"""What the API asks of a node: whether it can serve, and the operations themselves.

:class:`Serving` is the part of :class:`~gridkv.node.Node` the facades in :mod:`gridkv.api`
call: the checks that raise :class:`~gridkv.ShuttingDown` or :class:`~gridkv.NotReady`,
readiness, and the data path (new versions, reads and writes through the coordinator, a
local write at level one). The node builds the components it uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Container, Sequence
from time import perf_counter
from typing import Any

from gridkv.base.errors import NotReady, ShuttingDown
from gridkv.base.hlc import HLC
from gridkv.base.options import Options
from gridkv.cluster.handoff.driver import Handoff
from gridkv.cluster.keyspace import Keyspace
from gridkv.cluster.membership.base import Membership
from gridkv.cluster.partitions import Partitions
from gridkv.cluster.replication.coordinator import Coordinator
from gridkv.cluster.replication.mutations import Mutator
from gridkv.node.telemetry import NodeTelemetry
from gridkv.security.base import Authenticator
from gridkv.storage.base import Entry, Storage, make_entry

__all__ = ["Serving", "FLUSH_WORKERS"]

#: Deletes of one ``flush_listed`` under way at once.
FLUSH_WORKERS = 64


class Serving:
    """Readiness checks and the data path of a node (a part of :class:`~gridkv.node.Node`)."""

    node_id: str
    options: Options
    state: str
    running: bool
    clock_synced: bool
    _clock_synced: asyncio.Event
    _clock: Callable[[], float]
    hlc: HLC
    storage: Storage
    membership: Membership
    partitions: Partitions
    coordinator: Coordinator
    handoff: Handoff
    authenticator: Authenticator
    telemetry: NodeTelemetry
    mutator: Mutator
    keyspace: Keyspace
    #: The keys watched for other nodes' near caches (a cheap test on the write fast path).
    _watched_keys: Container[str]

    def check_open(self) -> None:
        """Raise unless the node accepts operations.

        :raises ShuttingDown: the node is closing or closed.
        :raises NotReady: the node has not been started.
        """
        if self.running:
            return
        if self.state in ("closing", "closed"):
            raise ShuttingDown(f"node {self.node_id!r} is closed")
        raise NotReady(
            f"node {self.node_id!r} is not started; use 'async with AsyncGridKV(...)' or "
            "'await kv.start()'"
        )

    def check_joined(self) -> None:
        """Raise unless the node runs and has joined the cluster (or needs no seeds).

        A node still joining holds none of the data it will own; answering from it would
        report existing keys as missing, and writes to it could be lost.

        :raises ShuttingDown: the node is closed.
        :raises NotReady: not started, or still joining.
        """
        self.check_open()
        if not self.clock_synced:
            raise NotReady(
                f"node {self.node_id!r} is still joining the cluster through its seeds; "
                "call wait_ready() first"
            )

    @property
    def ready(self) -> bool:
        """Whether the node runs, has joined, has a stable view, and knows its peers' keys.

        Joined: through its seeds (or it has none). Keys: it has authenticated every live
        peer (with authentication on).
        """
        return (
            self.running
            and self.membership.ready
            and self.clock_synced
            and not self.peers_without_keys()
        )

    def peers_without_keys(self) -> list[str]:
        """Live peers this node has not authenticated yet (none without authentication)."""
        keys = self.authenticator.peer_keys()
        if keys is None:
            return []
        return sorted(p for p in self.membership.live_ids() if p != self.node_id and p not in keys)

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the node is ready.

        :raises NotReady: not ready within ``timeout``; names the seeds that did not answer.
        """
        self.check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.membership.wait_ready(timeout)
        try:
            await asyncio.wait_for(self._clock_synced.wait(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise NotReady(
                f"node {self.node_id!r} joined but did not learn its peers' clocks within "
                f"{timeout:g}s"
            ) from None
        # The clock sync asked every member, which set a session up with each; members that
        # joined meanwhile are authenticated by the first messages to them.
        while missing := self.peers_without_keys():
            if loop.time() >= deadline:
                raise NotReady(
                    f"node {self.node_id!r} has not authenticated {len(missing)} peer(s) "
                    f"within {timeout:g}s: {', '.join(missing[:5])}"
                )
            await asyncio.sleep(0.01)

    def health_check(self) -> None:
        """Raise when the node cannot serve.

        :raises ShuttingDown: the node is closed.
        :raises NotReady: not started, or it has no healthy view of the cluster (past
            ``startup_grace_period`` with no seed answered, or every peer dead).
        """
        self.check_open()
        problem = self.membership.health_problem()
        if problem is not None:
            raise NotReady(f"node {self.node_id!r} has no healthy view of the cluster: {problem}")

    def now_ms(self) -> int:
        """Current wall time in milliseconds."""
        return int(self._clock() * 1000)

    def new_entry(self, key: str, value: bytes | None, expires_at: int) -> Entry:
        """A new version of ``key`` stamped by this node; ``None`` makes a tombstone.

        Thread-safe.
        """
        if value is None:
            expires_at = self.now_ms() + int(self.options.tombstone_ttl * 1000)
        return make_entry(key, value, self.hlc.now(), self.node_id, expires_at)

    def holds(self, partition: int) -> bool:
        """Whether this node is one of ``partition``'s replicas in the current view."""
        return self.partitions.holds(partition)

    def reads_here(self, partition: int) -> bool:
        """Whether a read of ``partition`` at level one is answered from local storage.

        This node holds the partition and no partition is moving in: until the handoff ends,
        a miss here may not be a miss.
        """
        return self.partitions.holds(partition) and not self.handoff.receiving

    async def read(self, partition: int, key: str, level: str) -> Entry | None:
        """The freshest entry of ``key`` its replicas hold (tombstones included), at ``level``.

        Counted, with its duration, in the node's telemetry.

        :raises QuorumNotReached: fewer replicas answered than the level needs.
        :raises PeerTimeout: no replica answered in time.
        """
        started = perf_counter()
        try:
            entry = await self.coordinator.read(partition, key, level)
        except Exception:  # a cancellation (the caller's) is not the operation's outcome
            self.telemetry.operation("get", level, started, False)
            raise
        self.telemetry.operation("get", level, started, True)
        return entry

    async def write(self, partition: int, entry: Entry, level: str) -> None:
        """Store ``entry`` on the partition's replicas; return once ``level`` is met.

        Counted (a ``set``, or a ``delete`` for a tombstone), with its duration.

        :raises QuorumNotReached: fewer replicas stored it than the level needs.
        """
        what = "set" if entry.value is not None else "delete"
        started = perf_counter()
        try:
            await self.coordinator.write(partition, entry, level)
        except Exception:
            self.telemetry.operation(what, level, started, False)
            raise
        self.telemetry.operation(what, level, started, True)

    async def mutate(
        self, partition: int, key: str, op: str, args: Sequence[Any], level: str
    ) -> Any:
        """Run the atomic operation ``op`` on ``key`` at its primary owner; return its answer.

        See :mod:`gridkv.cluster.replication.mutations`. Counted under the operation's name.

        :raises OperationRefused: the operation does not apply to the key's value.
        :raises PeerUnavailable: the primary owner could not be reached.
        :raises QuorumNotReached: the outcome reached fewer replicas than ``level`` needs.
        """
        started = perf_counter()
        try:
            answer = await self.mutator.mutate(partition, key, op, args, level)
        except Exception:
            self.telemetry.operation(op, level, started, False)
            raise
        self.telemetry.operation(op, level, started, True)
        return answer

    async def flush_listed(self, keys: Sequence[str], versions: Sequence[int], level: str) -> int:
        """Delete each key on its primary owner if it still has the version listed with it.

        Returns how many were deleted (``clear()``, the RESP door's FLUSHALL). A key written
        since it was listed keeps its new value. :data:`FLUSH_WORKERS` deletes run at once:
        memory stays that of the list, whatever its length.

        :raises PeerUnavailable: a primary owner could not be reached (the deletes under way
            finish; those not started are not made).
        """
        table = self.partitions.ensure_table()
        items = iter(zip(keys, versions, strict=True))
        deleted = 0

        async def worker() -> None:
            nonlocal deleted
            for key, version in items:
                done = await self.mutate(table.partition_of(key), key, "flush", [version], level)
                deleted += done  # (not ``deleted += await``: that reads deleted first)

        await asyncio.gather(*(worker() for _ in range(min(FLUSH_WORKERS, len(keys)))))
        return deleted

    def make_room(self, key: str) -> None:
        """From a thread other than the loop's: wait while the replication backlog is full.

        :raises QuorumNotReached: it did not drain within ``replication_timeout`` (nothing
            of the write was stored).
        """
        self.coordinator.make_room(key)

    def wait_room(self, key: str) -> Awaitable[None]:
        """On the loop: wait while the replication backlog is full (see :meth:`make_room`)."""
        return self.coordinator.wait_room(key)

    def write_here(self, partition: int, entry: Entry, hash_: int | None = None) -> None:
        """Store a write this node holds at level one; queue it for the other replicas.

        Any thread may call it. ``hash_`` is the key's hash when the caller has it.

        :raises ShuttingDown: the node's loop closed under the write (a close on another
            thread), so the other replicas cannot be sent it.
        """
        if self.storage.apply(partition, entry, hash_) and entry.key in self._watched_keys:
            self.coordinator.watches.changed(entry.key)
        if len(self.partitions.table.owners(partition)) > 1:
            try:
                self.coordinator.replicate_soon(partition, entry)
            except RuntimeError:  # "Event loop is closed"
                raise ShuttingDown(
                    f"node {self.node_id!r} closed during the write of key {entry.key!r:.60}"
                ) from None

"""The node: owns the components, their start and stop order, and routes inbound messages.

A :class:`Node` is what every GridKV instance runs. It builds its storage and transport from
the plugins the options name, keeps the hybrid logical clock and the partition table, answers
peers' messages, and runs the background expiry sweep. The public API in :mod:`gridkv.api.client`
is a thin layer over it.

Start order: storage (built at construction), transport, membership (which joins through the
seeds in the background, after which the node adopts its peers' clocks), sweep task,
plugins' ``node_started``. Close order: plugins' ``node_stopping``, queued replication sent,
the leave announced, every partition handed to its next replicas, background tasks,
transport, storage.

The partition table follows the membership view lazily: a change marks it stale and clears
the fast-path mask, and the next operation that needs it rebuilds it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from typing import Literal

from gridkv.base.errors import (
    ClockDriftExceeded,
    ConfigError,
    GridKVError,
    NotReady,
    PeerUnavailable,
    ProtocolError,
    ShuttingDown,
)
from gridkv.base.hlc import HLC
from gridkv.base.log import LOGGER_NAME, RateLimitedLog, configure_logging
from gridkv.base.options import Options
from gridkv.cluster.antientropy.driver import AntiEntropy
from gridkv.cluster.handoff.driver import Handoff
from gridkv.cluster.membership.base import Membership
from gridkv.cluster.replication.coordinator import Coordinator
from gridkv.cluster.ring import PartitionTable
from gridkv.node.stats import ClusterStats, MemberInfo, Stats
from gridkv.plugins import Plugins, get_plugins
from gridkv.storage.base import Entry, Storage
from gridkv.transport.base import Transport
from gridkv.wire import codec
from gridkv.wire.messages import (
    MEMBERSHIP_TYPES,
    BucketSync,
    DigestSync,
    ErrorReply,
    GetRequest,
    HandoffDone,
    KeySync,
    Message,
    Ping,
    Pong,
    ReplicateBatch,
)

__all__ = ["Node", "NodeState", "version"]

log = logging.getLogger(LOGGER_NAME)

NodeState = Literal["new", "starting", "running", "closing", "closed"]
#: Entries the expiry sweep examines per round.
SWEEP_BUDGET = 20_000
#: Member states that count in the partition table.
_LIVE = ("alive", "suspect")
#: Seconds background work gets to end once a close's own time is up.
_STOP_GRACE = 1.0
#: Members asked for their clock at once after a join, and rounds of asking until one answers.
_CLOCK_SYNC_CONCURRENCY = 64
_CLOCK_SYNC_ROUNDS = 3
#: Messages that carry or compare data: refused from a sender this node holds dead, which has
#: to learn that (and refute) before it may write here. (A member that left gracefully hands
#: its partitions over after announcing the leave, so "left" is accepted.)
_DATA_TYPES = (ReplicateBatch, DigestSync, BucketSync, KeySync, HandoffDone)
#: Messages that push what a node already held (anti-entropy, handoff): refused also from a
#: sender this view does not know. A node back from a separation longer than dead_retention
#: (both sides forgot each other) first drops what it held from before, on its first contact
#: with this side (gridkv.cluster.membership.separation); until this side knows it again, what it
#: sends in the meantime (a round begun under its old view) is refused.
_BULK_TYPES = (DigestSync, BucketSync, KeySync, HandoffDone)


def version() -> str:
    """The installed gridkv-core version."""
    try:
        return metadata.version("gridkv-core")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


class Node:
    """One GridKV node.

    :param options: the configuration.
    :param transport: a transport to use instead of the one ``network.type`` names (for
        example a :class:`~gridkv.transport.MemoryTransport` on a network of a test's own).
    :param storage: a storage backend to use instead of the one ``storage.backend`` names.
    :param plugins: the plugin manager; the process-wide one by default.
    :param clock: wall time in seconds; simulations pass a virtual clock.
    :param rng_seed: seed of the node's random choices, for deterministic simulations.
    :raises ConfigError: the configuration cannot run (see :meth:`_check_security`).
    :raises BackendNotInstalled: a transport or storage named in the options is not installed.
    """

    def __init__(
        self,
        options: Options,
        *,
        transport: Transport | None = None,
        storage: Storage | None = None,
        plugins: Plugins | None = None,
        clock: Callable[[], float] = time.time,
        rng_seed: int | str | None = None,
    ) -> None:
        self.options = options
        #: Seed of the node's random choices (membership); ``None`` derives it from the id.
        self.rng_seed = rng_seed
        self.node_id = options.local_node_id
        self._check_security(options)
        self.plugins = plugins or get_plugins()
        self.authenticator = self.plugins.authenticator("none")(options)
        self.transport_name = options.network.type or (
            "tcp" if "tcp" in self.plugins.transports() else "memory"
        )
        self.storage: Storage = storage or self.plugins.storage(options.storage.backend)(
            options, clock=clock
        )
        self.transport: Transport = transport or self.plugins.transport(self.transport_name)(
            options
        )
        self._clock = clock
        self.hlc = HLC(clock, options.max_clock_drift)
        self._table_lock = threading.Lock()
        self._table_stale = False
        self.table = PartitionTable.build(
            [self.node_id], options.partition_count, options.replica_count, options.virtual_nodes
        )
        #: ``owned[p]`` is 1 when this node is a replica of partition ``p``.
        self.owned = self.table.owned_mask(self.node_id)
        self.membership: Membership = self.plugins.membership_protocol(options.membership.protocol)(
            self
        )
        #: Routes reads and writes to the partition's replicas.
        self.coordinator = Coordinator(self)
        #: Compares partitions with co-replicas and repairs differences.
        self.anti_entropy = AntiEntropy(self)
        #: Moves partitions to their new replicas when the view changes.
        self.handoff = Handoff(self)
        #: ``local_reads[p]`` is 1 when a default-level read of partition ``p`` may be served
        #: from local storage on the caller's thread: the node runs, holds ``p``, and the
        #: default consistency is "one". All zeros otherwise; the API's fast path reads it.
        self.local_reads = bytearray(options.partition_count)
        self.state: NodeState = "new"
        #: True while the node accepts operations; read without a lock on the fast paths.
        self.running = False
        #: True once a joining node has adopted its peers' clocks (at once without seeds).
        self.clock_synced = not options.seed_addrs
        self._clock_synced = asyncio.Event()
        if self.clock_synced:
            self._clock_synced.set()
        #: Loop time of the last change in the membership view.
        self.view_changed_at = 0.0
        self._errors = RateLimitedLog(log)
        #: Frames from peers that did not decode (each answered with a ProtocolError).
        self.malformed_frames = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None

    @staticmethod
    def _check_security(options: Options) -> None:
        """Refuse to talk to peers without authentication unless that is asked for explicitly.

        Peer authentication arrives with a later issue. Until then a node that has seeds can
        only run with ``disable_auth = True``, so GridKV never claims a protection it does
        not have.
        """
        if options.seed_addrs and not options.disable_auth:
            raise ConfigError(
                "config key 'disable_auth': a node with seed_addrs "
                f"{options.seed_addrs!r} talks to peers, and peer authentication is not "
                "available in this version; set disable_auth = true to run without it, on a "
                "network you trust"
            )

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start listening, begin background work and contact the seeds.

        :raises ShuttingDown: the node was closed.
        :raises PeerUnavailable: the transport cannot listen on its address.
        """
        if self.state != "new":
            if self.state in ("closing", "closed"):
                raise ShuttingDown(f"node {self.node_id!r} is closed; create a new one")
            return
        self.state = "starting"
        self.loop = asyncio.get_running_loop()
        configure_logging(self.options.log)
        try:
            await self.transport.start(
                self._on_frame, getattr(self.authenticator, "handshake", None)
            )
            await self.membership.start()
        except BaseException:
            self.state = "closed"
            with contextlib.suppress(Exception):
                await self.transport.close()
            raise
        self.state = "running"
        self.running = True
        self.view_changed_at = self.loop.time()
        self.handoff.start()
        self.refresh_local_reads()
        self._spawn(self._sweep_loop(), "expiry sweep")
        self._spawn(self.anti_entropy.run(), "anti-entropy")
        if not self.clock_synced:
            self._spawn(self._sync_clock(), "clock sync")
        self.plugins.node_started(self)
        log.info(
            "node started",
            extra={
                "node_id": self.node_id,
                "address": self.transport.local_address,
                "transport": self.transport_name,
            },
        )

    async def close(self, timeout: float = 30.0) -> None:
        """Stop the node; idempotent. Later operations raise :class:`ShuttingDown`.

        :param timeout: seconds for the whole close: sending queued replication, the leave,
            handing partitions over, and background work finishing before it is cancelled
            (one deadline for all of them).
        """
        if self.state in ("closing", "closed"):
            return
        was_started = self.state != "new"
        self.state = "closing"
        self.running = False
        self.refresh_local_reads()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def left() -> float:
            return max(0.0, deadline - loop.time())

        if was_started:
            with contextlib.suppress(Exception):
                self.plugins.node_stopping(self)
            with contextlib.suppress(Exception):
                await self.coordinator.drain(left())
            # Announce the leave first: the next replicas accept this node's partitions once
            # their views no longer count it, and this node keeps serving reads meanwhile.
            with contextlib.suppress(Exception):
                await self.membership.leave(min(left(), 4 * self.options.gossip_interval))
            with self._table_lock:
                self._table_stale = True  # this node's own view no longer counts it
            with contextlib.suppress(Exception):
                await self.handoff.leave(left())
        await self._stop(max(left(), _STOP_GRACE))
        if was_started:
            log.info("node closed", extra={"node_id": self.node_id})

    async def kill(self) -> None:
        """Stop at once, as a crashed process would: no leave, no hooks, nothing drained.

        Simulations and fault tests use it; applications call :meth:`close`.
        """
        if self.state in ("closing", "closed"):
            return
        self.state = "closing"
        self.running = False
        self.refresh_local_reads()
        await self.membership.stop()
        await self._stop(timeout=30.0)

    async def _stop(self, timeout: float) -> None:
        """The end of both :meth:`close` and :meth:`kill`: stop all work, then the transport."""
        await self.membership.stop()
        await self.handoff.stop()
        await self.coordinator.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.transport.close(), timeout)
        self.storage.close()
        self.state = "closed"

    def refresh_local_reads(self) -> None:
        """Recompute :attr:`local_reads` from the table, the state and the partitions moving in.

        Any thread may call it.
        """
        with self._table_lock:
            if (
                self.running
                and not self._table_stale
                and self.options.consistency == "one"
                and self.membership.joined
                and self.clock_synced
            ):
                reads = bytearray(self.owned)
                for partition in self.handoff.receiving:
                    reads[partition] = 0  # a miss here may not be a miss: ask the old owners
                self.local_reads = reads
            else:
                self.local_reads = bytearray(self.options.partition_count)

    def on_member_change(self, member: MemberInfo, old: str | None, new: str) -> None:
        """Called by the membership protocol for every state change in the view.

        Marks the partition table stale and tells the plugins.
        """
        with self._table_lock:
            self._table_stale = True
            self.local_reads = bytearray(self.options.partition_count)
        if self.loop is not None:
            self.view_changed_at = self.loop.time()
        if (old in _LIVE) != (new in _LIVE):
            # The table changes: answers cached as a non-owner may predate writes made here
            # while this node owned the key (local writes do not pass through the cache).
            self.coordinator.hot.clear()
        self.handoff.view_changed()
        self.plugins.member_changed(self, member, old, new)

    def on_forgotten(self, alone_since_ms: int) -> None:
        """The cluster no longer knows this node: it was cut off longer than dead_retention.

        Its peers may have collected tombstones meanwhile, so entries older than the moment
        this node found itself alone are dropped rather than pushed back, where they could
        undo deletes; what it wrote since stays. (A node merely declared dead keeps
        everything: its peers keep every tombstone while they hold a member dead; see
        ``docs/replication.md``.)
        """
        dropped = self.storage.drop_older_than(alone_since_ms << 16)
        log.warning(
            "the cluster forgot this node (cut off longer than membership.dead_retention); "
            "dropped the entries older than its separation",
            extra={"node_id": self.node_id, "entries": dropped},
        )

    def ensure_table(self) -> PartitionTable:
        """The partition table for the current view, rebuilt first if the view changed."""
        if not self._table_stale:
            return self.table
        with self._table_lock:
            if self._table_stale:
                self._table_stale = False
                live = self.membership.live_ids()
                opts = self.options
                table = PartitionTable.build(
                    live, opts.partition_count, opts.replica_count, opts.virtual_nodes
                )
                self.handoff.table_changed(self.table, table)
                self.table = table
                self.owned = table.owned_mask(self.node_id)
        self.refresh_local_reads()
        return self.table

    def _spawn(self, coro: object, what: str) -> None:
        assert self.loop is not None
        task: asyncio.Task[None] = self.loop.create_task(coro, name=f"gridkv {what}")  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "background task failed",
                exc_info=task.exception(),
                extra={"node_id": self.node_id, "task": task.get_name()},
            )

    async def _sweep_loop(self) -> None:
        interval = self.options.storage.expiry_interval
        while True:
            await asyncio.sleep(interval)
            self.sweep()

    def sweep(self) -> int:
        """Remove expired values, and the tombstones the rules let go; return how many.

        See :mod:`gridkv.cluster.replication.tombstones` for when a tombstone may be collected.
        """
        table = self.ensure_table()
        me = self.node_id
        ledger = self.anti_entropy.ledger
        assert self.loop is not None
        quiet = self.loop.time() - self.view_changed_at >= 2 * self.options.handoff_timeout
        dead = any(m.state == "dead" for m in self.membership.members())

        def horizon(partition: int) -> Sequence[int] | None:
            if dead or not quiet:
                return None
            return ledger.horizon(partition, table.owners(partition), me)

        return self.storage.sweep(self.now_ms(), SWEEP_BUDGET, horizon)

    async def _sync_clock(self) -> None:
        """After the join, adopt the greatest clock among the members before taking writes.

        The peers' clocks advanced past every version this node stored there before a
        restart, so its first write afterwards orders after all of them.
        """
        await self.membership.wait_joined()
        gate = asyncio.Semaphore(_CLOCK_SYNC_CONCURRENCY)
        timeout = self.options.read_timeout

        async def ask(member: str) -> bool:
            address = self.membership.address_of(member)
            if address is None:
                return False
            async with gate:
                try:
                    reply = await self.request(address, Ping(0, self.node_id), timeout)
                except GridKVError:
                    return False
            if not isinstance(reply, Pong):
                return False
            try:
                self.hlc.update(reply.clock)
            except ClockDriftExceeded as exc:
                log.warning(
                    "a member's clock is too far ahead to adopt",
                    extra={"peer": member, "error": str(exc)},
                )
            return True

        for _ in range(_CLOCK_SYNC_ROUNDS):
            members = [m for m in self.membership.live_ids() if m != self.node_id]
            if not members or any(await asyncio.gather(*(ask(m) for m in members))):
                break
        else:
            log.warning(
                "no member answered with its clock; taking writes on this node's own clock",
                extra={"node_id": self.node_id},
            )
        self.clock_synced = True
        self._clock_synced.set()
        self.refresh_local_reads()

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
        """Whether the node runs, joined through its seeds (or has none) and its view is stable."""
        return self.running and self.membership.ready and self.clock_synced

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

    # -- data path -----------------------------------------------------------------------

    def now_ms(self) -> int:
        """Current wall time in milliseconds."""
        return int(self._clock() * 1000)

    def new_entry(self, key: str, value: bytes | None, expires_at: int) -> Entry:
        """A new version of ``key`` stamped by this node; ``None`` makes a tombstone.

        Thread-safe.
        """
        if value is None:
            expires_at = self.now_ms() + int(self.options.tombstone_ttl * 1000)
        return Entry(key, value, self.hlc.now(), self.node_id, expires_at)

    def holds(self, partition: int) -> bool:
        """Whether this node is one of ``partition``'s replicas in the current view."""
        self.ensure_table()
        return bool(self.owned[partition])

    # -- messages ------------------------------------------------------------------------

    async def request(
        self, address: str, message: Message, timeout: float | None = None
    ) -> Message:
        """Send ``message`` to ``address`` and return the decoded answer.

        :raises PeerUnavailable: unreachable, or the peer answered with an error.
        :raises PeerTimeout: no answer in time.
        :raises ProtocolError: the answer is malformed.
        """
        max_frame = self.options.network.max_frame_bytes
        payload = self.authenticator.wrap(codec.encode(message, max_frame))
        answer = await self.transport.request(address, payload, timeout)
        reply = codec.decode(self.authenticator.unwrap(address, answer), max_frame)
        if isinstance(reply, ErrorReply):
            raise PeerUnavailable(f"{address!r} answered {reply.code}: {reply.message}")
        return reply

    async def send(self, address: str, message: Message) -> None:
        """Send ``message`` one way to ``address`` (no answer, delivery not confirmed).

        :raises PeerUnavailable: the peer is known to be unreachable.
        """
        max_frame = self.options.network.max_frame_bytes
        await self.transport.send(
            address, self.authenticator.wrap(codec.encode(message, max_frame))
        )

    def _on_frame(self, peer: str, payload: bytes) -> bytes | Awaitable[bytes | None] | None:
        """The transport's handler: decode, dispatch, encode the answer.

        Most messages are answered at once; a read that has to ask former replicas answers
        with an awaitable (see :data:`gridkv.transport.Handler`).
        """
        max_frame = self.options.network.max_frame_bytes
        try:
            message = codec.decode(self.authenticator.unwrap(peer, payload), max_frame)
        except ProtocolError as exc:
            self.malformed_frames += 1
            self._errors.log(
                logging.WARNING,
                "malformed frame",
                "dropped a malformed frame",
                peer=peer,
                error=str(exc),
                node_id=self.node_id,
            )
            return codec.encode(ErrorReply("ProtocolError", str(exc)))
        answer: Message | None
        try:
            if isinstance(message, GetRequest):
                got = self.coordinator.on_get(message)
                if not isinstance(got, Message):
                    return self._answer_later(peer, message, got)
                answer = got
            else:
                answer = self._dispatch(peer, message)
        except Exception as exc:
            answer = self._error_reply(peer, message, exc)
        return self._encode_answer(answer)

    async def _answer_later(
        self, peer: str, message: Message, pending: Awaitable[Message]
    ) -> bytes | None:
        try:
            answer: Message | None = await pending
        except Exception as exc:
            answer = self._error_reply(peer, message, exc)
        return self._encode_answer(answer)

    def _error_reply(self, peer: str, message: Message, exc: Exception) -> ErrorReply:
        if isinstance(exc, GridKVError):
            return ErrorReply(type(exc).__name__, str(exc))
        # A bug here must not leave the peer waiting in silence.
        kind = type(message).__name__
        self._errors.log(
            logging.ERROR,
            f"handler failed: {kind}",
            f"failed to handle a {kind} message: {type(exc).__name__}: {exc}",
            exc_info=exc,
            peer=peer,
            node_id=self.node_id,
        )
        return ErrorReply("InternalError", f"{type(exc).__name__}: {exc}")

    def _encode_answer(self, answer: Message | None) -> bytes | None:
        if answer is None:
            return None
        framed: bytes = self.authenticator.wrap(
            codec.encode(answer, self.options.network.max_frame_bytes)
        )
        return framed

    def _refuse_data(
        self, message: ReplicateBatch | DigestSync | BucketSync | KeySync | HandoffDone
    ) -> ErrorReply | None:
        """The refusal of data from a sender that may not give it yet, or ``None``."""
        sender = message.sender
        state = self.membership.state_of(sender)
        if state == "dead":
            why = "dead; it must rejoin (refute) before its data is taken"
        elif isinstance(message, _BULK_TYPES) and state is None:
            why = "unknown; it must join before it pushes what it holds"
        else:
            return None
        return ErrorReply("PeerUnavailable", f"node {self.node_id!r} holds {sender!r} {why}")

    def _dispatch(self, peer: str, message: Message) -> Message | None:
        if isinstance(message, MEMBERSHIP_TYPES):
            return self.membership.handle(peer, message)
        if isinstance(message, _DATA_TYPES):
            refused = self._refuse_data(message)
            if refused is not None:
                return refused
        if isinstance(message, ReplicateBatch):
            return self.coordinator.on_batch(message)
        if isinstance(message, DigestSync):
            return self.anti_entropy.on_digests(message)
        if isinstance(message, BucketSync):
            return self.anti_entropy.on_buckets(message)
        if isinstance(message, KeySync):
            return self.anti_entropy.on_keys(message)
        if isinstance(message, HandoffDone):
            return self.handoff.on_done(message)
        if isinstance(message, Ping):
            return Pong(message.seq, self.node_id, self.hlc.now())
        return ErrorReply(
            "ProtocolError", f"{type(message).__name__} is not handled by this node version"
        )

    # -- figures -------------------------------------------------------------------------

    def stats(self) -> Stats:
        """A snapshot of the node's figures."""
        members = tuple(self.membership.members()) or (
            MemberInfo(self.node_id, self.transport.local_address, "alive", 0),
        )
        live = [m for m in members if m.state in ("alive", "suspect")]
        cluster = ClusterStats(
            ready=self.ready,
            cluster_size=len(live),
            healthy_nodes=sum(1 for m in live if m.state == "alive"),
            replica_factor=self.options.replica_count,
            local_node_id=self.node_id,
            pubkeys_ready=True,
            pubkey_count=0,
            peer_count=len(live) - 1,
            members=members,
            health_score=int(getattr(self.membership, "health_score", lambda: 0)()),
        )
        return Stats(cluster, self.transport.stats(), self.storage.stats(), version())

"""The node: owns the components, wires them, and runs their start and stop order.

A :class:`Node` is what every GridKV instance runs. It builds its storage, transport and
authenticator from the plugins the options name, keeps the hybrid logical clock and the
partition table, hands each cluster component the narrow context it uses
(:class:`~gridkv.cluster.context.ClusterContext`), routes what peers send through
:class:`~gridkv.node.router.Router`, and runs the expiry sweep and the clock sync after a
join. The public API in :mod:`gridkv.api` is a thin layer over it.

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
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any, Literal

import msgpack

from gridkv.base.errors import (
    ConfigError,
    ProtocolError,
    ShuttingDown,
)
from gridkv.base.hlc import HLC
from gridkv.base.log import LOGGER_NAME, configure_logging
from gridkv.base.options import Options
from gridkv.cluster.antientropy.driver import AntiEntropy
from gridkv.cluster.context import ClusterContext, MembershipContext
from gridkv.cluster.handoff.driver import Handoff
from gridkv.cluster.keyspace import Keyspace
from gridkv.cluster.membership.base import Membership
from gridkv.cluster.partitions import Partitions
from gridkv.cluster.replication.coordinator import Coordinator
from gridkv.cluster.replication.mutations import Mutator
from gridkv.cluster.ring import PartitionTable
from gridkv.node.clocksync import adopt_peer_clocks
from gridkv.node.messaging import MessagingPort
from gridkv.node.router import Router
from gridkv.node.serving import Serving
from gridkv.node.stats import ClusterStats, MemberInfo, ReplicationStats, Stats
from gridkv.node.telemetry import NodeTelemetry
from gridkv.plugins import Plugins, get_plugins
from gridkv.storage.base import Storage
from gridkv.transport.base import Transport
from gridkv.wire.messages import StatusReply, StatusRequest

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

__all__ = ["Node", "NodeState", "version"]

log = logging.getLogger(LOGGER_NAME)

NodeState = Literal["new", "starting", "running", "closing", "closed"]
#: Entries the expiry sweep examines per round.
SWEEP_BUDGET = 20_000
#: Member states that count in the partition table.
_LIVE = ("alive", "suspect")
#: Seconds background work gets to end once a close's own time is up.
_STOP_GRACE = 1.0


def version() -> str:
    """The installed gridkv-core version."""
    try:
        return metadata.version("gridkv-core")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


class Node(Serving):
    """One GridKV node.

    :param options: the configuration.
    :param transport: a transport to use instead of the one ``network.type`` names (for
        example a :class:`~gridkv.transport.MemoryTransport` on a network of a test's own).
    :param storage: a storage backend to use instead of the one ``storage.backend`` names.
    :param plugins: the plugin manager; the process-wide one by default.
    :param clock: wall time in seconds; simulations pass a virtual clock.
    :param rng_seed: seed of the node's random choices, for deterministic simulations.
    :param meter_provider: where the node's OpenTelemetry instruments go; the global provider
        when ``None`` (a no-op until an SDK is configured). See :mod:`gridkv.node.telemetry`.
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
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.options = options
        #: Seed of the node's random choices (membership); ``None`` derives it from the id.
        self.rng_seed = rng_seed
        self.node_id = options.local_node_id
        self._check_security(options)
        self.plugins = plugins or get_plugins()
        self.authenticator = self.plugins.authenticator(
            "none" if options.disable_auth else options.auth.authenticator
        )(options, clock=clock)
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
        #: Messages to and from other nodes, through the authenticator.
        self.messaging = MessagingPort(
            self.transport, self.authenticator, options.network.max_frame_bytes
        )
        self.membership: Membership = self.plugins.membership_protocol(options.membership.protocol)(
            MembershipContext(
                node_id=self.node_id,
                options=options,
                messaging=self.messaging,
                clock=clock,
                rng_seed=rng_seed,
                local_address=lambda: self.transport.local_address,
                on_member_change=self.on_member_change,
                on_forgotten=self.on_forgotten,
                record_proofs=self.authenticator.record_proofs(),
            )
        )
        self.messaging.node_at = self._node_at
        #: The partition table of the current view.
        self.partitions = Partitions(
            self.node_id,
            options,
            self.membership.live_ids,
            lambda old, new: self.handoff.table_changed(old, new),
            self.refresh_local_reads,
        )
        context = ClusterContext(
            node_id=self.node_id,
            options=options,
            messaging=self.messaging,
            storage=self.storage,
            hlc=self.hlc,
            partitions=self.partitions,
            membership=self.membership,
            clock=clock,
            loop=lambda: self.loop,
            accepting=lambda: self.running,
        )
        #: Routes reads and writes to the partition's replicas.
        self.coordinator = Coordinator(context, lambda p: self.handoff.waiting_on(p))
        #: Compares partitions with co-replicas and repairs differences.
        self.anti_entropy = AntiEntropy(context, self.coordinator)
        #: Moves partitions to their new replicas when the view changes.
        self.handoff = Handoff(context, self.coordinator, self.refresh_local_reads)
        self.coordinator.on_stray = self.handoff.view_changed
        #: Runs atomic operations on keys this node is primary owner of, or sends them there.
        self.mutator = Mutator(
            context,
            lambda partition, key: self.coordinator.read(partition, key, "one"),
            self.write,
            self.new_entry,
            self.coordinator.hot.invalidate,
        )
        self._watched_keys = self.coordinator.watches.keys
        #: Lists the keys this node holds for peers, and gathers the cluster's.
        self.keyspace = Keyspace(context, self.mutator.primary)
        #: Hands what peers send to the components.
        self.router = Router(
            self.node_id,
            self.messaging,
            self.membership,
            self.coordinator,
            self.anti_entropy,
            self.handoff,
            self.hlc,
            self.mutator,
            self.keyspace,
            lambda: msgpack.packb(self.status_figures(), use_bin_type=True),
            leaving=lambda: self.state in ("closing", "closed"),
        )
        #: ``local_reads[p]`` is 1 when a default-level read of partition ``p`` may be served
        #: from local storage on the caller's thread: the node runs, holds ``p``, and the
        #: default consistency is "one". All zeros otherwise; the API's fast path reads it.
        #: Updated in place (one slice assignment, atomic under the GIL), so a reader may
        #: hold on to it.
        self.local_reads = bytearray(options.partition_count)
        #: ``primary_here[p]`` is 1 where ``local_reads[p]`` is and this node is partition
        #: ``p``'s primary owner (its first replica), which runs the atomic operations on its
        #: keys (:mod:`gridkv.cluster.replication.mutations`); updated in place with it.
        self.primary_here = bytearray(options.partition_count)
        #: ``local_parts[p]`` is partition ``p``'s dict in storage where ``local_reads[p]`` is
        #: 1 and the backend offers its dicts (``MemoryStorage.plain_parts``), else ``None``:
        #: the mask and the dict in one lookup, for the API's fast path. Updated in place.
        self.local_parts: list[dict[str, bytes] | None] = [None] * options.partition_count
        plain_parts = getattr(self.storage, "plain_parts", None)
        self._plain_parts: list[dict[str, bytes]] | None = (
            plain_parts() if plain_parts is not None else None
        )
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
        self._tasks: set[asyncio.Task[None]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        # Last: a reader may observe the node from another thread as soon as it is registered.
        #: A meter provider a plugin made for this node (gridkv-metrics), shut down with it.
        self._own_meters = None if meter_provider else self.plugins.meter_provider(options)
        self._meters_released = False
        #: The node's OpenTelemetry instruments (no-op until an SDK is configured).
        self.telemetry = NodeTelemetry(self, meter_provider or self._own_meters, version())
        self.coordinator.batcher.on_delivered = self.telemetry.replicated

    @staticmethod
    def _check_security(options: Options) -> None:
        """Refuse a node that would talk to peers it cannot authenticate.

        With authentication on (the default), a node with seeds needs a trust root to know
        which peers to accept; without one it could join nobody. (Another authenticator than
        the built-in ed25519 brings its own trust root, and checks it itself.)
        """
        if options.disable_auth or options.auth.authenticator != "ed25519":
            return
        if options.seed_addrs and options.auth.trust_root is None:
            raise ConfigError(
                "config key 'auth': a node with seed_addrs needs a trust root to accept its "
                "peers: set auth.cluster_secret to the output of `gridkv keys new` (the same "
                "on every node), or auth.trusted_keys, or auth.ca_file (see docs/security.md); "
                "or set disable_auth = true on a network you trust"
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
        if self.options.disable_auth:
            log.warning(
                "peer authentication is off (disable_auth = true): any process that reaches "
                "this node's address can read, write and join the cluster",
                extra={"node_id": self.node_id},
            )
        try:
            opening = getattr(self._own_meters, "open", None)
            if opening is not None:  # a plugin's exporter that listens (Prometheus)
                opening()
            self.messaging.guarded = await self.transport.start(
                self.router.on_frame, self.authenticator.handshake(self._node_at)
            )
            await self.membership.start()
        except BaseException:
            self.state = "closed"
            with contextlib.suppress(Exception):
                await self.transport.close()
            await self._release_meters(1.0)
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
            self.partitions.mark_stale()  # this node's own view no longer counts it
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
        self.mutator.leases.close()
        self.mutator.singleflight.close()
        self.coordinator.watches.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.transport.close(), timeout)
        self.storage.close()
        await self._release_meters(timeout)
        self.state = "closed"

    async def _release_meters(self, timeout: float) -> None:
        """Stop reporting this node: a plugin's provider exports its last figures first.

        The provider's shutdown (a last OTLP export, the Prometheus endpoint) runs on a
        thread of its own, waited for ``timeout`` seconds at most; a slow collector delays
        neither the loop nor the close past that.
        """
        own = self._own_meters
        if own is not None and not self._meters_released:
            self._meters_released = True
            loop = asyncio.get_running_loop()
            done: asyncio.Future[None] = loop.create_future()

            def finished() -> None:
                if not done.done():
                    done.set_result(None)

            def shut() -> None:
                try:
                    own.shutdown(timeout_millis=max(timeout, 0.05) * 1000)
                except Exception:
                    log.warning("the metrics provider did not shut down cleanly", exc_info=True)
                finally:
                    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                        loop.call_soon_threadsafe(finished)

            threading.Thread(target=shut, name="gridkv-metrics-shutdown", daemon=True).start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(done), timeout)
        self.telemetry.close()

    def refresh_local_reads(self) -> None:
        """Recompute :attr:`local_reads` from the table, the state and the partitions moving in.

        Any thread may call it.
        """
        partitions = self.partitions
        with partitions.lock:
            if (
                self.running
                and not partitions.stale
                and self.options.consistency == "one"
                and self.membership.joined
                and self.clock_synced
            ):
                reads = bytearray(partitions.owned)
                for partition in self.handoff.receiving:
                    reads[partition] = 0  # a miss here may not be a miss: ask the old owners
                table, me = partitions.table, self.node_id
                primary = bytearray(on and table.owners(p)[0] == me for p, on in enumerate(reads))
                # Before the reads: a partition that stops being served here leaves the RESP
                # door's write-on-the-spot path first (that path looks at this mask alone).
                self.primary_here[:] = primary
                self._set_local_reads(reads)
            else:
                self.primary_here[:] = bytes(self.options.partition_count)
                self._set_local_reads(bytes(self.options.partition_count))

    def _set_local_reads(self, reads: bytes | bytearray) -> None:
        """Set :attr:`local_reads` to ``reads`` and :attr:`local_parts` to match.

        The dicts first: the read fast path looks only at them, so a partition that stops
        being served here stops at once.
        """
        plain = self._plain_parts
        if plain is not None:
            self.local_parts[:] = [plain[p] if on else None for p, on in enumerate(reads)]
        self.local_reads[:] = reads

    def on_member_change(self, member: MemberInfo, old: str | None, new: str) -> None:
        """Called by the membership protocol for every state change in the view.

        Marks the partition table stale and tells the plugins.
        """
        with self.partitions.lock:
            self.partitions.stale = True
            self._set_local_reads(bytes(self.options.partition_count))
        if self.loop is not None:
            self.view_changed_at = self.loop.time()
        if (old in _LIVE) != (new in _LIVE):
            # The table changes: answers cached as a non-owner may predate writes made here
            # while this node owned the key (local writes do not pass through the cache).
            self.coordinator.hot.clear()
        self.handoff.view_changed()
        self.plugins.member_changed(self, member, old, new)

    def rotate_key(self, key: str = "", key_file: str = "", cert_file: str = "") -> None:
        """Take a new identity key without downtime (from any thread).

        New sessions and connections use it at once; those set up with the old key drain
        (``Ed25519Authenticator.rotate``). This node's member record is then spread again at
        a raised incarnation, its proof made with the new key, so the old key can leave the
        trust root (trusted keys: list both, rotate, then remove the old). Called from
        another thread than the running node's loop (a blocking ``GridKV``'s caller), the
        rotation runs on that loop, and this waits for it.

        :param key: the new private key, inline; or ``key_file`` (made when missing).
        :param cert_file: under a CA trust root, the certificate for the new key.
        :raises ConfigError: the key cannot be loaded, the trust root does not vouch for it, or
            the authenticator has no keys (``disable_auth``).
        """
        loop = self.loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop and loop.is_running():

            async def on_the_loop() -> None:
                self.rotate_key(key, key_file, cert_file)

            asyncio.run_coroutine_threadsafe(on_the_loop(), loop).result(
                self.options.network.timeout
            )
            return
        rotate: Callable[..., None] | None = getattr(self.authenticator, "rotate", None)
        if rotate is None:
            raise ConfigError(f"the {self.authenticator.name!r} authenticator has no key to rotate")
        rotate(key=key, key_file=key_file, cert_file=cert_file)
        self.membership.announce()

    def _node_at(self, address: str) -> str | None:
        """The member this node's view puts at ``address`` (``None``: none, or several)."""
        found = {m.node_id for m in self.membership.members() if m.address == address}
        return found.pop() if len(found) == 1 else None

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
        return self.partitions.ensure_table()

    @property
    def table(self) -> PartitionTable:
        """The partition table of the last rebuild (:meth:`ensure_table` brings it up to date)."""
        return self.partitions.table

    @property
    def owned(self) -> bytearray:
        """``owned[p]`` is 1 when this node is a replica of partition ``p``."""
        return self.partitions.owned

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
        """After the join, adopt the greatest clock among the members before taking writes."""
        await self.membership.wait_joined()
        await adopt_peer_clocks(
            self.node_id, self.membership, self.messaging, self.hlc, self.options.read_timeout
        )
        self.clock_synced = True
        self._clock_synced.set()
        self.refresh_local_reads()

    # -- figures -------------------------------------------------------------------------

    def status_figures(self) -> dict[str, Any]:
        """This node's key figures, as ``gridkv status`` shows them for each member."""
        stats = self.stats()
        storage = stats.storage
        # From the table of the current view (not the fast paths' masks, which are cleared
        # while the view settles or a partition moves in).
        table = self.partitions.ensure_table()
        me = self.node_id
        owners = [table.owners(p) for p in range(self.options.partition_count)]
        return {
            "node_id": self.node_id,
            "address": stats.network.local_address,
            "version": stats.version,
            "ready": self.ready,
            "health_score": stats.cluster.health_score,
            "partitions": sum(me in o for o in owners),
            "primaries": sum(bool(o) and o[0] == me for o in owners),
            "keys": storage.keys,
            "tombstones": storage.tombstones,
            "used_bytes": storage.used_bytes,
            "max_bytes": storage.max_bytes,
            "backlog_bytes": stats.replication.backlog_bytes,
            "replication_lag": self.telemetry.recent_lag,
            **self.telemetry.status_figures(),
        }

    async def cluster_status(self) -> list[dict[str, Any]]:
        """Every member in this node's view, with its figures where it answered.

        Each entry has the view's ``node_id``, ``address``, ``state`` and ``incarnation``,
        and the member's own figures (:meth:`status_figures`), or ``error`` naming why they
        are missing. Members are asked at once, each within ``read_timeout``.
        """
        members = self.stats().cluster.members

        async def ask(member: MemberInfo) -> dict[str, Any]:
            entry: dict[str, Any] = {
                "node_id": member.node_id,
                "address": member.address,
                "state": member.state,
                "incarnation": member.incarnation,
            }
            if member.node_id == self.node_id:
                return {**self.status_figures(), **entry}
            if member.state in ("dead", "left"):
                return entry
            try:
                reply = await self.messaging.request(
                    member.address, StatusRequest(self.node_id), self.options.read_timeout
                )
                if not isinstance(reply, StatusReply):
                    raise ProtocolError(f"expected StatusReply, got {type(reply).__name__}")
                figures = msgpack.unpackb(reply.figures, raw=False)
                if not isinstance(figures, dict):
                    raise ProtocolError("StatusReply is not a map")
            except Exception as exc:  # a member that does not answer is shown as such
                return {**entry, "error": f"{type(exc).__name__}: {exc}"}
            return {**figures, **entry}

        return list(await asyncio.gather(*(ask(m) for m in members)))

    def stats(self) -> Stats:
        """A snapshot of the node's figures."""
        members = tuple(self.membership.members()) or (
            MemberInfo(self.node_id, self.transport.local_address, "alive", 0),
        )
        cluster = ClusterStats.of(
            members,
            ready=self.ready,
            replica_count=self.options.replica_count,
            node_id=self.node_id,
            health_score=int(getattr(self.membership, "health_score", lambda: 0)()),
            peer_keys=self.authenticator.peer_keys(),
            auth_rejections=self.authenticator.rejections(),
        )
        coordinator = self.coordinator
        replication = ReplicationStats(
            backlog_bytes=sum(coordinator.batcher.backlog.values()),
            batches_sent=coordinator.batches_sent,
            entries_replicated=coordinator.entries_replicated,
            send_failures=coordinator.send_failures,
        )
        return Stats(
            cluster,
            self.transport.stats(),
            self.storage.stats(),
            version(),
            replication,
            self.telemetry.operation_counts(),
        )

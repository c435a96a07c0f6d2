"""The asyncio driver of :class:`~gridkv.cluster.membership.swim.Swim`: the "swim" membership.

The driver owns no protocol logic. It feeds the state machine the messages the node receives
and the loop's clock, sends what the machine returns (one-way sends through one sender task,
push-pull syncs as requests), wakes the machine at its next deadline with a single timer
handle, joins through the seeds with back-off, and reports each state change to the ctx.
Seeds named through DNS (``dns:HOST:PORT``, see :mod:`~gridkv.cluster.membership.seeds`)
are looked up before every join attempt and every push-pull interval afterwards.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections import deque
from typing import TYPE_CHECKING

from gridkv.base.errors import GridKVError, NotReady
from gridkv.base.hlc import COUNTER_BITS
from gridkv.base.log import LOGGER_NAME
from gridkv.base.sections import dns_seed
from gridkv.cluster.context import MemberInfo
from gridkv.cluster.membership.seeds import SeedLookup, lookup
from gridkv.cluster.membership.separation import SeparationWatch
from gridkv.cluster.membership.swim import (
    ALIVE,
    SUSPECT,
    Output,
    Send,
    Swim,
    SwimConfig,
    Sync,
)
from gridkv.wire.messages import Message, PushPull, PushPullReply

if TYPE_CHECKING:
    from gridkv.cluster.context import MembershipContext

__all__ = ["SwimMembership"]

log = logging.getLogger(LOGGER_NAME)

#: Membership messages queued for one destination at most; the oldest go first (as datagrams
#: would be lost) when a peer cannot keep up.
MAX_QUEUED_PER_PEER = 64
#: Seconds a node remembers when it last heard from a member no longer in its view (at least
#: twice dead_retention): what lets it recognise a member back from a long separation.
_REMEMBER_CONTACT = 86_400.0
#: The view counts as stable after this many probe periods without a change.
STABLE_PERIODS = 2
_JOIN_BACKOFF = (0.05, 2.0)
_EPSILON = 1e-6


class SwimMembership:
    """SWIM with Lifeguard on the node's event loop.

    :param ctx: what the node gives it: its id, options, messaging port, clock, callbacks.
    :param rng: source of the protocol's random choices; seeded from the node id when
        ``None`` so that simulations are deterministic.
    """

    name = "swim"

    def __init__(self, ctx: MembershipContext, rng: random.Random | None = None) -> None:
        self.ctx = ctx
        self.config = SwimConfig.from_options(ctx.options)
        self.rng = rng or random.Random(f"swim:{ctx.rng_seed}:{ctx.node_id}")
        self.swim: Swim | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        # One queue and one sender task per destination: a send that has to wait (a dial to
        # a peer that does not answer) holds up only the messages to that peer.
        self._outboxes: dict[str, deque[Message]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._joined = asyncio.Event()
        self._ready = asyncio.Event()
        self._last_change = 0.0
        self._seeds: dict[str, str] = {}
        self._unresolved: set[str] = set()
        self._running = False
        self._stalled_until = 0.0
        self._started_at = 0.0
        cfg = self.config
        detection = cfg.failure_timeout + cfg.suspicion_max_mult * cfg.suspicion_min
        self._separation = SeparationWatch(
            ctx.node_id,
            threshold=max(cfg.dead_retention / 2, cfg.dead_retention - 2 * detection),
            window=max(5.0, 2 * cfg.reconnect_interval),
            margin_ms=int(1000 * (ctx.options.replication_timeout + ctx.options.read_timeout)),
        )

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start probing, and join through the seeds in the background."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        now = loop.time()
        self._started_at = now
        self._last_change = now
        incarnation = self.ctx.now_ms()
        self.swim = Swim(
            self.ctx.node_id,
            self.ctx.local_address(),
            incarnation,
            self.config,
            self.rng,
            now,
            self.ctx.record_proofs,
        )
        self._running = True
        seeds = [s for s in self.ctx.options.seed_addrs if s != self.swim.me.address]
        # The protocol only ever sees addresses; the join looks names up first.
        self.swim.seeds = [s for s in seeds if dns_seed("seed_addrs", s) is None]
        if seeds:
            self._seeds = dict.fromkeys(seeds, "not contacted yet")
            self._spawn(self._join(seeds))
        else:
            self._joined.set()
            self._ready.set()
        self._schedule()

    async def leave(self, timeout: float) -> None:
        """Announce the leave to a few members and let the sends go out.

        Afterwards the node sends nothing and answers nothing, but still takes what it hears
        into its view (who else left) until :meth:`stop`, while it hands its data over.
        """
        if not self._running or self.swim is None:
            return
        assert self._loop is not None
        self._emit(self.swim.leave(self._loop.time()))
        if self._senders:
            # wait() neither raises the senders' own ends nor swallows this call's cancellation.
            await asyncio.wait(list(self._senders.values()), timeout=timeout)

    async def stop(self) -> None:
        """Stop at once: no more probes, sends or syncs."""
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tasks = [*self._tasks, *self._senders.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._outboxes.clear()
        self._senders.clear()

    def stall(self, seconds: float) -> None:
        """Stop processing timers for ``seconds``, as a paused process would (simulations)."""
        assert self._loop is not None
        self._stalled_until = self._loop.time() + seconds

    # -- the view ------------------------------------------------------------------------

    def health_score(self) -> int:
        """This node's Lifeguard health score (0 is healthy)."""
        return self.swim.awareness if self.swim is not None else 0

    def members(self) -> list[MemberInfo]:
        """Every member in the view, this node first."""
        if self.swim is None:
            return []
        others = list(self.swim.members.values())  # one step: safe from other threads
        ms = [self.swim.me, *sorted(others, key=lambda m: m.node_id)]
        return [MemberInfo(m.node_id, m.address, m.state, m.incarnation) for m in ms]

    def live_ids(self) -> list[str]:
        """Ids of members alive or suspected, this node included."""
        if self.swim is None:
            return [self.ctx.node_id]
        return [m.node_id for m in self.swim.live_members()]

    def state_of(self, node_id: str) -> str | None:
        """A member's state in this view, ``None`` when unknown."""
        return None if self.swim is None else self.swim.state_of(node_id)

    def oldest_taken(self, node_id: str) -> int:
        """The oldest version (an HLC timestamp) this node takes from ``node_id``; 0: any.

        Any thread may ask (off the loop the answer may be higher than on it; see
        :meth:`~gridkv.cluster.membership.separation.SeparationWatch.peek`).

        Above 0 while ``node_id`` is back from a separation longer than ``dead_retention``
        and has not dropped what predates it yet (see
        :meth:`~gridkv.cluster.membership.separation.SeparationWatch.floor`).
        """
        swim = self.swim
        loop = self._loop
        if swim is None or loop is None:
            return 0
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if not on_loop:  # another thread (gridkv.api.direct): look without changing anything
            return self._separation.peek(node_id, loop.time()) << COUNTER_BITS
        member = swim.members.get(node_id)
        incarnation = None if member is None else member.incarnation
        return self._separation.floor(node_id, incarnation, loop.time()) << COUNTER_BITS

    async def wait_joined(self) -> None:
        """Wait until a seed answered the join (at once without seeds)."""
        await self._joined.wait()

    def address_of(self, node_id: str) -> str | None:
        """Where a member is reached, ``None`` when it is not in the view."""
        swim = self.swim
        if swim is None:
            return None
        if node_id == swim.me.node_id:
            return swim.me.address
        member = swim.members.get(node_id)
        return None if member is None else member.address

    @property
    def joined(self) -> bool:
        """Whether a seed answered the join (always true for a node without seeds)."""
        return self._joined.is_set()

    @property
    def ready(self) -> bool:
        """Joined (or no seeds) and no membership change for two probe periods."""
        return self._ready.is_set()

    async def wait_ready(self, timeout: float) -> None:
        """Wait until :attr:`ready`; raise :class:`NotReady` naming what is missing."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            if not self._joined.is_set():
                waiting = "; ".join(f"{s}: {why}" for s, why in self._seeds.items())
                raise NotReady(
                    f"node {self.ctx.node_id!r} not ready after {timeout:g}s: no seed "
                    f"answered ({waiting}); check seed_addrs and that those nodes run"
                ) from None
            raise NotReady(
                f"node {self.ctx.node_id!r} joined but its view did not settle within "
                f"{timeout:g}s (members keep changing state)"
            ) from None

    def health_problem(self) -> str | None:
        """Why the node has no healthy view of the cluster, or ``None``."""
        if self.swim is None or self._loop is None:
            return "membership is not running"
        if not self._seeds:
            return None
        elapsed = self._loop.time() - self._started_at
        if elapsed <= self.ctx.options.startup_grace_period:
            return None
        if not self._joined.is_set():
            return f"no seed answered after {elapsed:.1f}s ({', '.join(self._seeds)})"
        if self.swim.size() <= 1:
            return "every other member is dead or gone"
        return None

    # -- messages ------------------------------------------------------------------------

    def announce(self) -> None:
        """Gossip this node's record at a raised incarnation (its proof by the current key)."""
        if self.swim is not None and not self.swim.left:
            self.swim.announce()

    def handle(self, peer: str, message: Message) -> Message | None:
        """Feed a membership message to the state machine; return the answer to a request."""
        swim = self.swim
        if swim is None or not self._running or self._loop is None:
            return None
        sender = getattr(message, "sender", None)
        if sender is not None and self._separation.heard(
            sender, self._loop.time(), self.ctx.now_ms()
        ):
            self._check_separation()
        outputs, answer = swim.handle(self._loop.time(), message)
        self._emit(outputs)
        self._take_changes()
        self._schedule()
        return answer

    def _emit(self, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, Send):
                address = output.address
                queue = self._outboxes.get(address)
                if queue is None:
                    queue = self._outboxes[address] = deque(maxlen=MAX_QUEUED_PER_PEER)
                queue.append(output.message)
                sender = self._senders.get(address)
                if sender is None or sender.done():
                    assert self._loop is not None
                    task = self._loop.create_task(self._drain(address, queue))
                    self._senders[address] = task
                    task.add_done_callback(functools.partial(self._sent, address))
            elif isinstance(output, Sync):
                self._spawn(self._sync(output.address, output.message))

    async def _drain(self, address: str, queue: deque[Message]) -> None:
        send = self.ctx.messaging.send
        while queue:
            message = queue.popleft()
            try:
                await send(address, message)
            except GridKVError as exc:
                # An unreachable member is what failure detection is for: no ack will come.
                log.debug("membership send failed", extra={"peer": address, "error": str(exc)})

    def _sent(self, address: str, task: asyncio.Task[None]) -> None:
        if self._senders.get(address) is task:
            del self._senders[address]
            queue = self._outboxes.get(address)
            if queue is not None and not queue:
                del self._outboxes[address]
        self._log_failure(task)

    async def _sync(self, address: str, message: PushPull) -> None:
        try:
            reply = await self.ctx.messaging.request(address, message)
        except GridKVError:
            return
        if isinstance(reply, PushPullReply) and self.swim is not None and self._running:
            assert self._loop is not None
            self._separation.heard(reply.sender, self._loop.time(), self.ctx.now_ms())
            self.swim.merge_state(self._loop.time(), reply.states)
            self._check_separation()
            self._take_changes()
            self._schedule()

    async def _join(self, configured: list[str]) -> None:
        delay, cap = _JOIN_BACKOFF
        timeout = self.ctx.options.network.read_timeout
        named = any(dns_seed("seed_addrs", s) is not None for s in configured)
        seeds = configured
        while self._running and not self._joined.is_set():
            if named:
                found = await self._look_up(configured)
                if found.alone:
                    self._start_alone(found)
                    break
                seeds = found.addresses
            for seed in seeds:
                assert self.swim is not None
                try:
                    reply = await self.ctx.messaging.request(
                        seed, self.swim.join_message(), timeout
                    )
                except GridKVError as exc:
                    self._seeds[seed] = f"{type(exc).__name__}: {exc}"
                    continue
                if isinstance(reply, PushPullReply) and self._loop is not None:
                    self._seeds[seed] = "answered"
                    self.swim.merge_state(self._loop.time(), reply.states)
                    if not self._joined.is_set():
                        # Spread our own arrival from here too, not only from the seed.
                        self.swim.announce(bump=False)
                    self._joined.set()
                    self._take_changes()
                    self._schedule()
            if not self._joined.is_set():
                await asyncio.sleep(delay * (0.5 + self.rng.random()))
                delay = min(delay * 2, cap)
        if named:
            await self._follow_names(configured)

    async def _look_up(self, configured: list[str]) -> SeedLookup:
        """Resolve the seeds' names now; the protocol and the join report use what they gave.

        A name that resolves to nothing is logged once at warning (until it resolves again)
        and tried again at the next attempt; the other seeds are contacted meanwhile.
        """
        assert self.swim is not None
        found = await lookup(
            configured, self.swim.me.address, self.ctx.options.network.timeout, self.rng
        )
        for entry, problem in found.problems.items():
            if entry not in self._unresolved:
                log.warning(
                    "seed name resolves to no address; looking it up again at the next attempt",
                    extra={"node_id": self.ctx.node_id, "seed": entry, "error": problem},
                )
        for entry in self._unresolved - set(found.problems):
            log.info("seed name resolves again", extra={"node_id": self.ctx.node_id, "seed": entry})
        self._unresolved = set(found.problems)
        self.swim.seeds = list(found.addresses)
        before = self._seeds
        self._seeds = {e: f"resolves to no address ({why})" for e, why in found.problems.items()}
        self._seeds.update((a, before.get(a, "not contacted yet")) for a in found.addresses)
        return found

    def _start_alone(self, found: SeedLookup) -> None:
        """Every seed name resolved to this node alone: it is the first member, and joined."""
        log.info(
            "the seeds' names lead to this node alone: starting the cluster",
            extra={"node_id": self.ctx.node_id, "seeds": ", ".join(found.found)},
        )
        self._joined.set()
        self._schedule()

    async def _follow_names(self, configured: list[str]) -> None:
        """Look the seeds' names up again every push-pull interval while the node runs.

        The protocol syncs with its seeds after a separation, and restarted pods come back at
        new addresses. A node that sees no other member syncs at once with every address
        found: two nodes that each started alone (their names led to themselves only when
        they looked) meet this way.
        """
        while self._running:
            await asyncio.sleep(self.config.push_pull_interval)
            if not self._running or self.swim is None or self.swim.left:
                return
            found = await self._look_up(configured)
            if self.swim.size() <= 1 and not self.swim.left:
                for address in found.addresses:
                    self._spawn(self._sync(address, self.swim.join_message()))

    # -- timers --------------------------------------------------------------------------

    def _schedule(self) -> None:
        if not self._running or self.swim is None or self._loop is None or self.swim.left:
            return  # a node that left has no timers: it only listens until it stops
        when = self.swim.next_deadline()
        if not self._ready.is_set() and self._joined.is_set():
            when = min(when, self._stable_at())
        when = max(when, self._stalled_until)
        if self._timer is not None:
            if self._timer_at <= when:
                return
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        scheduled = self._timer_at
        self._timer = None
        self._timer_at = float("inf")
        if not self._running or self.swim is None or self._loop is None:
            return
        # asyncio runs timers up to the clock's resolution early; the machine must see the
        # deadline it asked for, or it would ask again for the same instant.
        now = max(self._loop.time(), scheduled)
        # Timers may fire up to the clock's resolution early; allow for it.
        if now + _EPSILON >= self._stalled_until:
            self._emit(self.swim.tick(now))
            self._take_changes()
            if (
                not self._ready.is_set()
                and self._joined.is_set()
                and now + _EPSILON >= self._stable_at()
            ):
                self._ready.set()
        self._schedule()

    def _stable_at(self) -> float:
        return self._last_change + STABLE_PERIODS * self.config.probe_interval

    def _take_changes(self) -> None:
        swim = self.swim
        if swim is None or not swim.changes:
            return
        changes, swim.changes = swim.changes, []
        assert self._loop is not None
        self._last_change = self._loop.time()
        self._check_separation()
        for change in changes:
            m = change.member
            info = MemberInfo(m.node_id, m.address, change.new, m.incarnation)
            level = logging.INFO if change.new not in (ALIVE, SUSPECT) else logging.DEBUG
            log.log(
                level,
                "member %s is %s",
                m.node_id,
                change.new,
                extra={"node_id": self.ctx.node_id, "member": m.node_id, "old": change.old},
            )
            self.ctx.on_member_change(info, change.old, change.new)

    def _check_separation(self) -> None:
        """Drop what this node held before a separation so long that the cluster forgot it.

        See :mod:`gridkv.cluster.membership.separation`: when members silent for longer than about
        ``dead_retention`` are back and outnumber this node's side, this node drops the
        entries older than its last contact with them (``ctx.on_forgotten``).
        """
        swim = self.swim
        assert swim is not None
        assert self._loop is not None
        now = self._loop.time()
        live = {m.node_id: m.incarnation for m in swim.live_members()}
        drop_before = self._separation.decide(now, live)
        if drop_before is not None:
            self.ctx.on_forgotten(drop_before)
            swim.renew(now)
        self._separation.prune(
            now, swim.members, max(_REMEMBER_CONTACT, 2 * self.config.dead_retention)
        )

    def _spawn(self, coro: object) -> None:
        assert self._loop is not None
        task: asyncio.Task[None] = self._loop.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._log_failure(task)

    def _log_failure(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "membership task failed",
                exc_info=task.exception(),
                extra={"node_id": self.ctx.node_id, "task": task.get_name()},
            )

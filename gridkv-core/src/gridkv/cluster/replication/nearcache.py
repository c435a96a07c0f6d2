"""The near cache's other half: replicas watch keys for the nodes that cached them.

A node that does not hold a key reads it from a replica (at level ``one``) and keeps the
answer in its hot cache (:mod:`~gridkv.cluster.replication.hotcache`). With watching on
(``near_cache_ttl`` above 0) it asks with a
:class:`~gridkv.wire.messages.WatchedGetRequest`: the replica answers and *watches* the key
for it for ``near_cache_ttl``. When the replica then stores a new version of the key (a
write made anywhere reaches every replica), it sends the asker an
:class:`~gridkv.wire.messages.Invalidate`, and the asker forgets the key. So a hot key read
on every node is served from each node's memory until it changes, not only until a short
TTL runs out, and its owner is asked once per change instead of once per read. This is
Redis's client-side caching in its default (tracking) mode, between nodes.

Bounds and failure modes (docs/replication.md#the-near-cache):

- A watch lasts ``lifetime`` from the replica's receipt of the request; the asker keeps the
  answer for at most 90% of it from when it asked, so it never keeps what is no longer
  watched.
- A replica keeps at most ``near_cache_watches`` watches, and their keys take at most
  :data:`WATCH_KEY_BYTES` bytes per watch allowed; past that the oldest keys' watches are
  dropped *with* an invalidation, as Redis does when its tracking table is full. It watches
  only keys of partitions it holds, for at most its own ``near_cache_ttl``, and says in its
  answer for how long: the asker keeps a copy no longer than that.
- Invalidations are sent one way, gathered per loop turn and per watcher, cut to half a
  frame. One lost on the network (counted, logged) leaves the asker with an old value until
  its copy ages out (``near_cache_ttl`` at most); a change in the membership view clears
  every near cache, as a partition may have moved to replicas that know nothing of the
  watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from gridkv.base.errors import GridKVError
from gridkv.base.log import LOGGER_NAME, RateLimitedLog
from gridkv.wire.messages import Invalidate

if TYPE_CHECKING:
    from gridkv.cluster.context import ClusterContext

__all__ = ["Watches", "INVALIDATE_BATCH", "WATCH_KEY_BYTES"]

log = logging.getLogger(LOGGER_NAME)

#: Keys one Invalidate message names at most (and at most half a frame of them).
INVALIDATE_BATCH = 1000
#: Bytes of watched keys a replica keeps per watch ``near_cache_watches`` allows (long keys
#: take the room of several).
WATCH_KEY_BYTES = 256


class Watches:
    """The keys this node watches for other nodes' near caches, and the invalidations due.

    :param ctx: the node's cluster context.
    :param limit: watches kept at most (``near_cache_watches``).
    :param clock: monotonic seconds (the loop's clock in simulations).
    """

    def __init__(self, ctx: ClusterContext, limit: int, clock: Callable[[], float]) -> None:
        self.ctx = ctx
        self.limit = limit
        self._clock = clock
        #: key -> {watcher node id: until (clock seconds)}, oldest key first. Read without
        #: the lock (``key in``) by the write paths.
        self.keys: OrderedDict[str, dict[str, float]] = OrderedDict()
        self._count = 0
        #: UTF-8 bytes of the keys watched, and the most they may take.
        self._bytes = 0
        self.byte_limit = limit * WATCH_KEY_BYTES
        #: Keys stored since the last flush (any thread appends; the loop drains).
        self._changed: deque[str] = deque()
        self._scheduled = False
        self._lock = threading.Lock()
        self._sends: set[asyncio.Task[None]] = set()
        #: Keys to name in the next invalidations, by watcher (on the loop).
        self._pending: dict[str, list[str]] = {}
        #: Watches made, invalidations sent (keys), watches dropped to stay within the limits,
        #: and invalidations (keys) whose message could not be sent.
        self.watched = 0
        self.invalidations = 0
        self.evicted = 0
        self.lost = 0
        self._errors = RateLimitedLog(log)

    def __len__(self) -> int:
        return self._count

    def watch(self, key: str, watcher: str, lifetime: float) -> None:
        """Watch ``key`` for ``watcher`` for ``lifetime`` seconds (on the loop)."""
        if self.limit <= 0:
            return
        until = self._clock() + lifetime
        with self._lock:
            watchers = self.keys.get(key)
            if watchers is None:
                watchers = self.keys[key] = {}
                self._bytes += _size(key)
            else:
                self.keys.move_to_end(key)
            if watcher not in watchers:
                self._count += 1
            watchers[watcher] = until
            self.watched += 1
            dropped = self._trim()
        for old_key, old_watchers in dropped:
            self._due(old_key, old_watchers)
        if dropped:
            self._send_due()

    def _trim(self) -> list[tuple[str, dict[str, float]]]:
        """Drop the oldest keys' watches past the limit (and expired ones met on the way)."""
        dropped: list[tuple[str, dict[str, float]]] = []
        now = self._clock()
        while self.keys:
            key, watchers = next(iter(self.keys.items()))
            expired = all(until <= now for until in watchers.values())
            if self._count <= self.limit and self._bytes <= self.byte_limit and not expired:
                break
            del self.keys[key]
            self._count -= len(watchers)
            self._bytes -= _size(key)
            if not expired:
                self.evicted += len(watchers)
                dropped.append((key, watchers))
        return dropped

    def changed(self, key: str) -> None:
        """A new version of ``key`` was stored here: tell its watchers. Any thread."""
        if key not in self.keys:
            return
        self._changed.append(key)
        if not self._scheduled:
            loop = self.ctx.loop()
            if loop is None:  # not started: the next change (or flush) tells
                return
            self._scheduled = True
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing to tell
                loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        """Send the invalidations due (on the loop, once per turn with changes)."""
        self._scheduled = False
        changed = self._changed
        due: list[tuple[str, dict[str, float]]] = []
        with self._lock:
            while changed:
                key = changed.popleft()
                watchers = self.keys.pop(key, None)
                if watchers is not None:
                    self._count -= len(watchers)
                    self._bytes -= _size(key)
                    due.append((key, watchers))
        for key, watchers in due:
            self._due(key, watchers)
        self._send_due()

    def _due(self, key: str, watchers: dict[str, float]) -> None:
        now = self._clock()
        for watcher, until in watchers.items():
            if until > now:
                self._pending.setdefault(watcher, []).append(key)

    def _send_due(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = {}
        loop = self.ctx.loop()
        if loop is None or loop.is_closed():
            return
        room = self.ctx.options.network.max_frame_bytes // 2
        for watcher, keys in pending.items():
            for batch in _batches(keys, room):
                self.invalidations += len(batch)
                task = loop.create_task(self._send(watcher, batch), name="gridkv invalidate")
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)

    async def _send(self, watcher: str, keys: list[str]) -> None:
        ctx = self.ctx
        address = ctx.membership.address_of(watcher)
        if address is None:
            return  # gone from the view: its near cache was cleared with the view
        try:
            await ctx.messaging.send(address, Invalidate(ctx.node_id, keys))
        except GridKVError as exc:  # lost: the watcher's copies age out (near_cache_ttl)
            self.lost += len(keys)
            self._errors.log(
                logging.WARNING,
                "invalidation lost",
                "an invalidation could not be sent; the peer's near cache keeps those keys "
                "until they age out",
                peer=watcher,
                keys=len(keys),
                error=str(exc),
                node_id=ctx.node_id,
            )

    def close(self) -> None:
        """Forget every watch; stop sending."""
        for task in self._sends:
            task.cancel()
        with self._lock:
            self.keys.clear()
            self._count = 0
            self._bytes = 0
            self._changed.clear()


def _size(key: str) -> int:
    """What a watched key takes in the table's byte budget."""
    return len(key.encode("utf-8", "surrogatepass"))


def _batches(keys: list[str], room: int) -> list[list[str]]:
    """``keys`` cut into Invalidate messages.

    Each holds :data:`INVALIDATE_BATCH` keys and ``room`` bytes at most (a key alone may take
    more: any key fits a frame).
    """
    batches: list[list[str]] = []
    batch: list[str] = []
    used = 0
    for key in keys:
        size = _size(key) + 5  # msgpack's string header
        if batch and (len(batch) >= INVALIDATE_BATCH or used + size > room):
            batches.append(batch)
            batch, used = [], 0
        batch.append(key)
        used += size
    if batch:
        batches.append(batch)
    return batches

"""Entries queued per replica and sent as one message: the write path's batches.

A write at ``one`` on an owner, a read repair and a rerouted refusal each add an entry to the
batch of every replica that should have it. A batch is sent as one
:class:`~gridkv.wire.messages.ReplicateBatch` when it holds ``batch_threshold`` entries, when
the next entry would take it past the byte budget (an entry larger than the budget goes
alone), or when ``batch_window`` has passed since its first entry, whichever comes first.
The sends run in the background; a close drains them, a crash cancels them.

The entries queued or in flight to each replica are its *backlog*, counted in bytes. Past
``replication_backlog_bytes`` for any replica the batcher is :attr:`Batcher.full`, and
writers wait for room (:meth:`Batcher.wait_room` on the loop, :meth:`Batcher.room` on
another thread) before they add more: a writer that outruns its replicas is slowed to their
pace instead of growing the node's memory without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from gridkv.storage.base import Entry
from gridkv.wire.budget import entry_size

__all__ = ["Batch", "Batcher", "consume"]


class Batch:
    """Entries queued for one replica, and their estimated size on the wire."""

    __slots__ = ("entries", "since", "size")

    def __init__(self) -> None:
        self.entries: list[tuple[int, Entry]] = []
        self.size = 0
        #: When its first entry was queued (``time.perf_counter``).
        self.since = time.perf_counter()


def consume(task: asyncio.Future[Any]) -> None:
    """A done-callback that retrieves a task's outcome, so none is "never retrieved"."""
    if not task.cancelled():
        task.exception()


class Batcher:
    """The batches of one node, one per replica.

    :param threshold: entries that fill a batch.
    :param window: seconds a batch waits for more entries.
    :param budget: bytes that fill a batch (see :func:`~gridkv.wire.budget.message_budget`).
    :param loop: the node's event loop once it runs, else ``None``.
    :param send: sends one batch to a replica, and says whether the replica answered; its
        errors are its own to handle.
    :param limit: bytes of backlog per replica past which the batcher is :attr:`full`.
    """

    def __init__(
        self,
        threshold: int,
        window: float,
        budget: int,
        loop: Callable[[], asyncio.AbstractEventLoop | None],
        send: Callable[[str, list[tuple[int, Entry]]], Coroutine[Any, Any, bool]],
        limit: int = 64 * 1024 * 1024,
    ) -> None:
        self._threshold = threshold
        self._window = window
        self._budget = budget
        self._loop = loop
        self._send = send
        #: Told, for each batch a replica answered, the seconds from its first entry's
        #: queueing (about its write's acknowledgement) to the answer: the replication lag.
        self.on_delivered: Callable[[float], None] = lambda seconds: None
        self._limit = limit
        #: replica -> bytes of entries queued or in flight to it.
        self.backlog: dict[str, int] = {}
        #: The replicas whose backlog is past the limit (empty: there is room). Changed on
        #: the loop; any thread may test it (a set's truth is read atomically).
        self.over_limit: set[str] = set()
        #: Signalled (on the loop) when no replica is past the limit any more.
        self._room = threading.Condition()
        self._room_event: asyncio.Event | None = None
        #: Writers that had to wait for room.
        self.waits = 0
        #: The batch being filled for each replica.
        self.queued: dict[str, Batch] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._inflight: set[asyncio.Future[Any]] = set()

    def add(self, replica: str, partition: int, entry: Entry) -> None:
        """Add an entry to ``replica``'s batch; send the batch when full or its window ends."""
        size = entry_size(entry)
        batch = self.queued.get(replica)
        if batch is None:
            batch = self.queued[replica] = Batch()
        elif batch.size + size > self._budget:
            self.flush(replica)
            batch = self.queued[replica] = Batch()
        batch.entries.append((partition, entry))
        batch.size += size
        self._grow(replica, size)
        if len(batch.entries) >= self._threshold or batch.size >= self._budget:
            self.flush(replica)
        elif replica not in self._timers:
            loop = self._loop()
            if loop is not None:
                self._timers[replica] = loop.call_later(self._window, self.flush, replica)

    def flush(self, replica: str) -> None:
        """Send ``replica``'s batch now."""
        timer = self._timers.pop(replica, None)
        if timer is not None:
            timer.cancel()
        batch = self.queued.pop(replica, None)
        loop = self._loop()
        if batch is None or not batch.entries or loop is None:
            if batch is not None:
                self._shrink(replica, batch.size)
            return
        self.track(loop.create_task(self._sent(replica, batch)))

    async def _sent(self, replica: str, batch: Batch) -> None:
        """Send a batch; its bytes leave the replica's backlog however the send ends."""
        try:
            if await self._send(replica, batch.entries):
                self.on_delivered(time.perf_counter() - batch.since)
        finally:
            self._shrink(replica, batch.size)

    # -- the backlog -------------------------------------------------------------------------

    @property
    def full(self) -> bool:
        """Whether some replica's backlog is past the limit (any thread may ask)."""
        return bool(self.over_limit)

    def _grow(self, replica: str, size: int) -> None:
        backlog = self.backlog.get(replica, 0) + size
        self.backlog[replica] = backlog
        if backlog > self._limit and replica not in self.over_limit:
            self.over_limit.add(replica)
            if self._room_event is not None:
                self._room_event.clear()

    def _shrink(self, replica: str, size: int) -> None:
        backlog = self.backlog.get(replica, 0) - size
        if backlog > 0:
            self.backlog[replica] = backlog
        else:
            self.backlog.pop(replica, None)
        if replica in self.over_limit and backlog <= self._limit:
            self.over_limit.discard(replica)
            if not self.over_limit:
                self._made_room()

    def _made_room(self) -> None:
        if self._room_event is not None:
            self._room_event.set()
        with self._room:
            self._room.notify_all()

    def room(self, timeout: float) -> bool:
        """From a thread other than the loop's: wait until not :attr:`full`; whether it is."""
        if not self.over_limit:
            return True
        self.waits += 1
        with self._room:
            return self._room.wait_for(lambda: not self.over_limit, timeout)

    async def wait_room(self, timeout: float) -> bool:
        """On the loop: wait until not :attr:`full`; whether it is.

        Woken with other writers, one of them may fill it again first: the others wait on,
        until the time is up.
        """
        if not self.over_limit:
            return True
        self.waits += 1
        if self._room_event is None:
            self._room_event = asyncio.Event()
        event = self._room_event
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.over_limit:
            left = deadline - loop.time()
            if left <= 0:
                return False
            event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), left)
        return True

    def refusal(self, key: str, timeout: float) -> str:
        """Why a write of ``key`` found no room within ``timeout`` seconds."""
        behind = ", ".join(f"{r} ({self.backlog.get(r, 0)} bytes)" for r in sorted(self.over_limit))
        return (
            f"write of key {key!r:.60} refused: the replication backlog to {behind} is past "
            f"replication_backlog_bytes={self._limit} and did not drain within "
            f"replication_timeout={timeout:g}s (the replicas are slower than the writes)"
        )

    def track(self, task: asyncio.Future[Any]) -> None:
        """Keep a send running in the background until it ends; its outcome is consumed."""
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        task.add_done_callback(consume)

    async def drain(self, timeout: float) -> None:
        """Send every queued batch and wait for the sends in flight (graceful close)."""
        for replica in list(self.queued):
            self.flush(replica)
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=timeout)

    async def abort(self) -> None:
        """Drop what is queued and cancel the sends in flight (the node crashed)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.queued.clear()
        tasks = list(self._inflight)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.forget_backlog()

    def forget_backlog(self) -> None:
        """Count nothing as queued or in flight any more (the node stops).

        Writers waiting for room go on, to find the node closed.
        """
        self.backlog.clear()
        if self.over_limit:
            self.over_limit.clear()
            self._made_room()

"""Entries queued per replica and sent as one message: the write path's batches.

A write at ``one`` on an owner, a read repair and a rerouted refusal each add an entry to the
batch of every replica that should have it. A batch is sent as one
:class:`~gridkv.wire.messages.ReplicateBatch` when it holds ``batch_threshold`` entries, when
the next entry would take it past the byte budget (an entry larger than the budget goes
alone), or when ``batch_window`` has passed since its first entry, whichever comes first.
The sends run in the background; a close drains them, a crash cancels them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from gridkv.storage.base import Entry
from gridkv.wire.budget import entry_size

__all__ = ["Batch", "Batcher", "consume"]


class Batch:
    """Entries queued for one replica, and their estimated size on the wire."""

    __slots__ = ("entries", "size")

    def __init__(self) -> None:
        self.entries: list[tuple[int, Entry]] = []
        self.size = 0


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
    :param send: sends one batch to a replica; its errors are its own to handle.
    """

    def __init__(
        self,
        threshold: int,
        window: float,
        budget: int,
        loop: Callable[[], asyncio.AbstractEventLoop | None],
        send: Callable[[str, list[tuple[int, Entry]]], Coroutine[Any, Any, None]],
    ) -> None:
        self._threshold = threshold
        self._window = window
        self._budget = budget
        self._loop = loop
        self._send = send
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
            return
        self.track(loop.create_task(self._send(replica, batch.entries)))

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

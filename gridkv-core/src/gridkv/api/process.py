"""What a process does with its blocking GridKV instances when it forks and when it exits.

In a forked child every inherited instance is disowned: the child has a copy of the node's
memory but not its loop thread or its connections, so each method raises
:class:`~gridkv.ShuttingDown`. At interpreter exit every instance still open is closed
gracefully (batches drained, partitions handed off, leave announced), all of them together,
within :data:`EXIT_CLOSE_TIMEOUT`.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from concurrent.futures import Future
from typing import Protocol

from gridkv.api.loop_thread import STOP_TIMEOUT

__all__ = ["EXIT_CLOSE_TIMEOUT", "Instance", "register", "unregister"]

#: Seconds the interpreter's exit spends closing the :class:`~gridkv.GridKV` instances still
#: open, all of them together: queued replication batches are sent, partitions handed off and
#: the leave announced. An instance not closed by then is stopped where it is (its peers see
#: it die).
EXIT_CLOSE_TIMEOUT = 10.0


class Instance(Protocol):
    """What the fork and exit handlers need of an instance."""

    def _disown(self) -> None: ...

    def _begin_close(self, timeout: float, *, graceful: bool = True) -> Future[None] | None: ...

    def _end_close(self, future: Future[None], given_up: float, stopped: float) -> None: ...


#: The instances whose loop thread runs (from their start to the end of their close);
#: ``_live_lock`` guards it.
_live: weakref.WeakSet[Instance] = weakref.WeakSet()
_live_lock = threading.Lock()


def register(instance: Instance) -> None:
    """Watch ``instance`` from its start: disown it in a fork, close it at exit."""
    with _live_lock:
        _live.add(instance)


def unregister(instance: Instance) -> None:
    """Stop watching ``instance``: its close is over."""
    with _live_lock:
        _live.discard(instance)


def _running_instances() -> list[Instance]:
    with _live_lock:
        return list(_live)


def _disown_after_fork() -> None:
    """``os.register_at_fork(after_in_child=...)``: disown every instance the child inherited.

    The child has one thread; the lock, which another thread of the parent may have held at
    the fork, is replaced rather than taken.
    """
    global _live_lock
    _live_lock = threading.Lock()
    inherited = list(_live)
    _live.clear()
    for instance in inherited:
        instance._disown()


def _close_all_at_exit() -> None:
    """``atexit``: close every instance still open, all at once, within EXIT_CLOSE_TIMEOUT.

    The last quarter of the time (at most ``STOP_TIMEOUT``) is kept for ending the loop
    threads; the rest is the node's own close (drain, handoff, leave).
    """
    start = time.monotonic()
    stopped = start + EXIT_CLOSE_TIMEOUT
    given_up = stopped - min(STOP_TIMEOUT, EXIT_CLOSE_TIMEOUT / 4)
    closing = [(kv, kv._begin_close(given_up - start)) for kv in _running_instances()]
    for kv, future in closing:
        if future is not None:
            kv._end_close(future, given_up, stopped)


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_disown_after_fork)
atexit.register(_close_all_at_exit)

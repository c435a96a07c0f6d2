"""What a process does with its blocking GridKV instances when it forks and when it exits.

In a forked child every inherited instance is disowned: the child has a copy of the node's
memory but not its loop thread or its connections, so each method raises
:class:`~gridkv.ShuttingDown`. At interpreter exit every instance still open is closed
gracefully (batches drained, partitions handed off, leave announced), all of them together,
within :data:`EXIT_CLOSE_TIMEOUT`.

A child process of :mod:`multiprocessing` (``fork`` or ``forkserver``) ends with
``os._exit``, which runs no ``atexit`` handler: there the same close runs as a
``multiprocessing`` finalizer (:func:`on_multiprocessing_exit`), which its children run as
they end, normally or by an exception (not when killed: ``Pool.terminate()``, a signal).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Protocol

from gridkv.api.loop_thread import STOP_TIMEOUT

__all__ = [
    "EXIT_CLOSE_TIMEOUT",
    "MULTIPROCESSING_EXIT_PRIORITY",
    "Instance",
    "on_multiprocessing_exit",
    "register",
    "unregister",
]

#: Seconds the interpreter's exit spends closing the :class:`~gridkv.GridKV` instances still
#: open, all of them together: queued replication batches are sent, partitions handed off and
#: the leave announced. An instance not closed by then is stopped where it is (its peers see
#: it die).
EXIT_CLOSE_TIMEOUT = 10.0
#: ``exitpriority`` of the ``multiprocessing`` finalizer that closes the instances in a child
#: process of ``multiprocessing`` (higher runs first; 0 and above run before the child waits
#: for children of its own).
MULTIPROCESSING_EXIT_PRIORITY = 1


class Instance(Protocol):
    """What the fork and exit handlers need of an instance."""

    def _disown(self) -> None: ...

    def _begin_close(self, timeout: float, *, graceful: bool = True) -> Future[None] | None: ...

    def _end_close(self, future: Future[None], given_up: float, stopped: float) -> None: ...


#: The instances whose loop thread runs (from their start to the end of their close);
#: ``_live_lock`` guards it.
_live: weakref.WeakSet[Instance] = weakref.WeakSet()
_live_lock = threading.Lock()


#: The callbacks :func:`on_multiprocessing_exit` registered, with the pid they were registered
#: in (``multiprocessing`` forgets a parent's finalizers in each child); ``_live_lock`` guards it.
_exit_callbacks: dict[Callable[[], object], int] = {}


def register(instance: Instance) -> None:
    """Watch ``instance`` from its start: disown it in a fork, close it at exit."""
    with _live_lock:
        _live.add(instance)
    on_multiprocessing_exit(_close_all_at_exit, MULTIPROCESSING_EXIT_PRIORITY)


def on_multiprocessing_exit(callback: Callable[[], object], priority: int) -> None:
    """In a child process of ``multiprocessing``, run ``callback`` when the child ends.

    ``multiprocessing`` ends a child it forked (``fork``, ``forkserver``) with ``os._exit``:
    no ``atexit`` handler runs there, only its own finalizers, after the target returned or
    raised. This registers ``callback`` as one (a ``multiprocessing.util.Finalize`` with
    ``exitpriority=priority``; higher runs first), once per process and callback. It does
    nothing in a process that is no child of ``multiprocessing`` (nor imports it). Call it
    when the process starts to need the callback (in a child, ``multiprocessing`` forgets
    the finalizers inherited from its parent before it runs the target).
    """
    process_module = sys.modules.get("multiprocessing.process")
    if process_module is None or process_module.parent_process() is None:
        return
    pid = os.getpid()
    with _live_lock:
        if _exit_callbacks.get(callback) == pid:
            return
        _exit_callbacks[callback] = pid
    from multiprocessing.util import Finalize

    Finalize(None, callback, exitpriority=priority)


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

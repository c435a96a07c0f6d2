"""An event loop on a daemon thread of its own, where a blocking GridKV runs its node.

The loop runs until :meth:`LoopThread.stop`; then the thread cancels what is left on it (and
retrieves each outcome, so no task is reported as "never retrieved"), ends its async
generators and its default executor, and closes the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Coroutine, Iterable
from concurrent.futures import Future
from typing import Any, TypeVar

from gridkv.base.errors import GridKVError
from gridkv.base.eventloop import new_event_loop
from gridkv.base.log import LOGGER_NAME

__all__ = ["LoopThread", "STOP_TIMEOUT", "cancel_and_wait"]

log = logging.getLogger(LOGGER_NAME)
_T = TypeVar("_T")
#: Seconds allowed, once a close is over, to cancel what is left on a loop and end its thread.
STOP_TIMEOUT = 2.0


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]] | None, timeout: float) -> None:
    """Cancel ``tasks`` (every other task of the loop when ``None``); wait up to ``timeout``.

    Their outcomes are retrieved, so none is reported as "never retrieved" later.
    """
    current = asyncio.current_task()
    pending = [t for t in (asyncio.all_tasks() if tasks is None else tasks) if t is not current]
    for task in pending:
        task.cancel()
    if not pending:
        return
    done, _ = await asyncio.wait(pending, timeout=timeout)
    for task in done:
        if not task.cancelled():
            task.exception()


class LoopThread:
    """A new event loop, running on a new daemon thread.

    :param name: the thread's name.
    :param node_id: the node it serves, for log records.
    :raises GridKVError: the thread cannot be started.
    """

    def __init__(self, name: str, node_id: str) -> None:
        self.node_id = node_id
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        try:
            self.thread.start()
        except RuntimeError as exc:  # "can't start new thread"
            self.loop.close()
            raise GridKVError(f"cannot start the loop thread of node {node_id!r}: {exc}") from exc
        #: The thread's identity: a call made on it must not wait for the loop.
        self.ident = self.thread.ident

    def submit(self, coro: Coroutine[Any, Any, _T]) -> Future[_T]:
        """Run ``coro`` on the loop; its result arrives in the returned future.

        :raises RuntimeError: the loop is closed.
        """
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, deadline: float) -> None:
        """Stop the loop and wait for its thread until ``deadline`` (monotonic)."""
        loop = self.loop
        try:
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:  # closed: the thread has ended
            return
        self.thread.join(max(0.0, deadline - time.monotonic()))
        if self.thread.is_alive():
            log.warning(
                "the node's loop thread did not stop (a hook or callback on it blocks); it is "
                "left to end with the process",
                extra={"node_id": self.node_id},
            )

    def _run(self) -> None:
        """The thread: run until stopped, then end what is left on the loop."""
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            loop.run_until_complete(cancel_and_wait(None, STOP_TIMEOUT))
            loop.run_until_complete(loop.shutdown_asyncgens())
            # asyncio's loop resolves host names on executor threads: end them with the loop.
            loop.run_until_complete(
                asyncio.wait_for(loop.shutdown_default_executor(), STOP_TIMEOUT)
            )
        except Exception:
            log.exception("the loop thread failed", extra={"node_id": self.node_id})
        finally:
            asyncio.set_event_loop(None)
            loop.close()

"""Run a piece of a test in a child made by ``os.fork()`` and collect what it reports.

For tests of what a fork leaves a child (a ``GridKV`` made before ``gunicorn --preload``
forks, a Django backend, a workers' group): the child runs ``work``, which yields
``(name, result)`` pairs, writes each as a JSON line to a pipe as it goes, and leaves with
``os._exit``; the parent waits a bounded time, kills a child still running (by its PID),
and returns the report.
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
import warnings
from collections.abc import Callable, Iterator

__all__ = ["in_forked_child", "exited"]


def in_forked_child(
    work: Callable[[], Iterator[tuple[str, str]]], timeout: float
) -> dict[str, str]:
    """Run ``work`` in a child made by ``os.fork()``; return what it reported.

    A child that fails reports ``"child failed"`` with the exception's repr.

    :raises AssertionError: the child had not finished after ``timeout`` seconds (it is
        killed; the message holds what it reported until then).
    """
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork of a threaded process
        pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(read_end)
            for name, result in work():
                os.write(write_end, json.dumps([name, result]).encode() + b"\n")
            code = 0
        except BaseException as exc:
            os.write(write_end, json.dumps(["child failed", repr(exc)]).encode() + b"\n")
        finally:
            os._exit(code)
    os.close(write_end)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_end], [], [], left)[0]:
                break
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read_end)
        finished = exited(pid, deadline)
        if not finished:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    report = dict(json.loads(line) for line in data.splitlines())
    assert finished, f"the child did not finish within {timeout:g}s; it reported {report}"
    return report


def exited(pid: int, deadline: float) -> bool:
    """Reap child ``pid`` once it exits; False if it still runs at ``deadline`` (monotonic)."""
    while not os.waitpid(pid, os.WNOHANG)[0]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True

"""Request time-outs sharing timers: never early, at most a slice late, one timer a slice."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("gridkv_transport_tcp")

from gridkv.transport.deadlines import Deadlines


async def test_a_deadline_fires_not_early_and_at_most_a_slice_late() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(granularity=0.02)
    futures = [loop.create_future() for _ in range(100)]
    started = loop.time()
    slots = [deadlines.add(loop, future, 0.05) for future in futures]
    assert len(deadlines._groups) <= 2  # a hundred requests, one or two timers
    answered = futures[0]
    deadlines.discard(slots[0], answered)
    answered.set_result(b"answer")
    with pytest.raises(TimeoutError):
        await futures[-1]
    took = loop.time() - started
    assert took >= 0.05
    assert all(f.done() for f in futures)
    assert answered.result() == b"answer"
    assert [type(f.exception()) for f in futures[1:]] == [TimeoutError] * 99
    assert deadlines._groups == {}

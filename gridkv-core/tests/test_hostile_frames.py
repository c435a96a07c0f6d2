"""A peer that sends garbage gets an answer each time, costs a few log lines, and is counted."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from gridkv import AsyncGridKV
from gridkv.base.log import RateLimitedLog
from gridkv.transport import MemoryNetwork, MemoryTransport
from gridkv.wire import codec
from gridkv.wire.messages import ErrorReply


async def test_ten_thousand_bad_frames_write_a_few_lines_and_say_how_many_were_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    net = MemoryNetwork()
    options: dict[str, Any] = {
        "local_node_id": "victim",
        "local_address": "victim:1",
        "disable_auth": True,
    }
    async with AsyncGridKV(**options, transport=MemoryTransport("victim:1", net)) as kv:
        attacker = MemoryTransport("attacker:1", net)
        await attacker.start(lambda peer, frame, sender: None)
        caplog.set_level(logging.WARNING, logger="gridkv")
        for i in range(10_000):
            answer = codec.decode(await attacker.request("victim:1", b"\xc1 not msgpack %d" % i))
            assert isinstance(answer, ErrorReply)
            assert answer.code == "ProtocolError"
        await attacker.close()
        assert kv.node.router.malformed_frames == 10_000
    lines = [r for r in caplog.records if "malformed frame" in r.getMessage()]
    assert 1 <= len(lines) <= 3


def test_a_rate_limited_log_counts_what_it_leaves_out(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("gridkv"), interval=10.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="gridkv")
    assert limited.log(logging.WARNING, "kind", "something bad")
    for _ in range(99):
        assert not limited.log(logging.WARNING, "kind", "something bad")
    assert limited.log(logging.WARNING, "other", "something else")
    now[0] = 10.0
    assert limited.log(logging.WARNING, "kind", "something bad")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "something bad",
        "something else",
        "something bad (99 more like it in the last 10s)",
    ]
    assert caplog.records[-1].suppressed == 99  # type: ignore[attr-defined]

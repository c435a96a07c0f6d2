"""Nodes over TCP in one process: bad peers, bad seeds and a busy port get clear errors."""

from __future__ import annotations

import asyncio
import struct

import pytest

pytest.importorskip("gridkv_transport_tcp")

from gridkv import AsyncGridKV, NotReady, PeerUnavailable
from gridkv.testing.transports import free_port
from gridkv.wire import codec
from gridkv.wire.messages import ErrorReply
from gridkv_transport_tcp.transport import split_address

HEAD = struct.Struct(">IBQ")


def options(node: str, **extra: object) -> dict[str, object]:
    return {
        "local_node_id": node,
        "local_address": "127.0.0.1:0",
        "network": {"type": "tcp"},
        **extra,
    }


async def test_unreachable_seeds_make_wait_ready_fail_naming_each_and_why() -> None:
    seeds = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]  # nothing listens
    async with AsyncGridKV(**options("lonely", seed_addrs=seeds, disable_auth=True)) as kv:
        with pytest.raises(NotReady) as info:
            await kv.wait_ready(timeout=0.5)
        message = str(info.value)
        for seed in seeds:
            assert seed in message
        assert "PeerUnavailable" in message


async def test_a_busy_port_is_refused_naming_the_address() -> None:
    async with AsyncGridKV(**options("first")) as first:
        address = first.stats().network.local_address
        with pytest.raises(PeerUnavailable, match=rf"cannot listen on '{address}'.*in use"):
            async with AsyncGridKV(**options("second", local_address=address)):
                pass


async def test_a_frame_with_a_malformed_body_gets_an_error_answer_and_changes_nothing() -> None:
    # Decoding is the subject: without authentication the body reaches the codec (with it,
    # the frame is refused before that: gridkv-core/tests/test_auth.py).
    async with AsyncGridKV(**options("target", disable_auth=True)) as kv:
        await kv.set("kept", b"value")
        host, port = split_address(kv.stats().network.local_address)
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for body in (b"\xc1", b"\x93\x01\x7f\x00", b"not msgpack at all"):
                writer.write(HEAD.pack(len(body) + 9, 0, 42) + body)
                await writer.drain()
                length, kind, request_id = HEAD.unpack(await reader.readexactly(HEAD.size))
                assert (kind, request_id) == (1, 42)
                answer = codec.decode(await reader.readexactly(length - 9))
                assert isinstance(answer, ErrorReply)
                assert answer.code == "ProtocolError"
        finally:
            writer.close()
        assert await kv.get("kept") == b"value"
        assert kv.stats().cluster.healthy_nodes == 1

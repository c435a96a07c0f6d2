"""A quic node against peers that hold a trusted certificate and misbehave: each broken
promise is a counted disconnect (or a refused stream), and the node keeps serving others."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from gridkv import PeerUnavailable
from gridkv.testing.waiting import wait_until
from gridkv.transport.base import Handler
from gridkv.wire.framing import REQUEST, head
from gridkv_transport_quic._link import Link
from gridkv_transport_quic.transport import QuicTransport, split_address

MakeQuic = Callable[..., QuicTransport]  # the make_quic fixture (conftest)
Intruder = Callable[..., Awaitable[Link]]  # the intruder fixture (conftest)


async def echo(peer: str, payload: bytes, sender: str | None) -> bytes:
    return b"echo:" + payload


async def big(peer: str, payload: bytes, sender: str | None) -> bytes:
    return bytes(256 * 1024) if payload == b"send me a lot" else b"echo:" + payload


@contextlib.asynccontextmanager
async def attacked(
    make_quic: MakeQuic, intruder: Intruder, handler: Handler, **limits: float
) -> AsyncIterator[tuple[QuicTransport, Link]]:
    """A transport serving ``handler`` (with ``limits``) and a hand-driven link to it."""
    server = make_quic("a", **limits)
    await server.start(handler)
    link = await intruder(server.local_address)
    try:
        yield server, link
    finally:
        link.close()
        await server.close()


async def still_serves(make_quic: MakeQuic, server: QuicTransport) -> None:
    other = make_quic("d")
    await other.start(echo)
    try:
        assert await other.request(server.local_address, b"ok", 5) == b"echo:ok"
    finally:
        await other.close()


async def test_a_request_over_the_frame_limit_is_refused_and_counted(
    make_quic: MakeQuic, intruder: Intruder
) -> None:
    async with attacked(make_quic, intruder, echo, max_frame_bytes=64 * 1024) as (server, link):
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        link.request(bytes(100 * 1024), future)
        with pytest.raises(PeerUnavailable, match="announced a frame of 102409 bytes"):
            await asyncio.wait_for(future, 5)
        assert server.stats().errors >= 1
        assert server.stats().connections == 0
        assert server.stats().requests_received == 0
        assert server.stats().partial_bytes == 0
        await still_serves(make_quic, server)


async def test_a_request_that_never_ends_is_cut_at_the_read_timeout(
    make_quic: MakeQuic, intruder: Intruder
) -> None:
    async with attacked(make_quic, intruder, echo, read_timeout=0.3) as (server, link):
        stream = link.quic.get_next_available_stream_id()
        link.quic.send_stream_data(stream, head(REQUEST, 1, 1000) + b"ten bytes.")
        link.transmit()
        await wait_until(lambda: server.stats().slow_frame_cuts == 1, timeout=5)
        await asyncio.wait_for(link.closed, 5)
        assert server.stats().partial_bytes == 0
        await still_serves(make_quic, server)


async def test_unfinished_requests_past_the_inbound_budget_cut_the_link(
    make_quic: MakeQuic, intruder: Intruder
) -> None:
    async with attacked(make_quic, intruder, echo, max_inbound_buffer_bytes=256 * 1024) as (
        server,
        link,
    ):
        for _ in range(8):  # 8 lanes with 64 KiB of a 100 KiB frame each
            stream = link.quic.get_next_available_stream_id()
            link.quic.send_stream_data(stream, head(REQUEST, 1, 100 * 1024) + bytes(64 * 1024))
        link.transmit()
        await wait_until(lambda: server.stats().inbound_full_cuts == 1, timeout=5)
        assert server.stats().partial_bytes == 0
        await still_serves(make_quic, server)


async def test_a_peer_that_never_reads_its_answers_is_cut(
    make_quic: MakeQuic, intruder: Intruder
) -> None:
    async with attacked(make_quic, intruder, big, write_timeout=0.5) as (server, link):
        # From now on the intruder takes nothing in: no acknowledgement, no flow credit.
        link.datagram_received = lambda data, addr: None  # type: ignore[method-assign]
        loop = asyncio.get_running_loop()
        for _ in range(4):
            link.request(b"send me a lot", loop.create_future())
        await wait_until(lambda: server.stats().slow_reader_cuts == 1, timeout=10)
        assert server.stats().connections == 0
        await still_serves(make_quic, server)


async def test_a_second_one_way_stream_cuts_the_link(
    make_quic: MakeQuic, intruder: Intruder
) -> None:
    got: list[bytes] = []

    def collect(peer: str, payload: bytes, sender: str | None) -> None:
        got.append(payload)

    async with attacked(make_quic, intruder, collect) as (server, link):
        link.one_way(b"first")
        await wait_until(lambda: got == [b"first"], timeout=5)
        link._one_way_out = None  # the next one-way frame opens another stream
        link.one_way(b"second")
        await asyncio.wait_for(link.closed, 5)
        assert got == [b"first"]
        assert server.stats().errors >= 1


async def test_junk_datagrams_are_counted_and_dropped(make_quic: MakeQuic) -> None:
    server = make_quic("a")
    await server.start(echo)
    try:
        host, port = split_address(server.local_address)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            for junk in (b"", b"\x00", b"\xff" * 1300, b"\xc0\x00\x00\x00\x01" + bytes(1300)):
                raw.sendto(junk, (host, port))
        await wait_until(lambda: server.stats().errors >= 3, timeout=5)
        assert server.stats().connections == 0
        await still_serves(make_quic, server)
    finally:
        await server.close()


async def test_frames_held_back_behind_slow_answers_count_in_the_inbound_budget(
    make_quic: MakeQuic, intruder: Intruder
) -> None:
    # 256 answers wait on the gate; the requests after them are held back, and empty ones
    # are not free: a flood of them cuts the link at the budget.
    gate = asyncio.Event()

    async def slow(peer: str, payload: bytes, sender: str | None) -> bytes:
        await gate.wait()
        return b"late"

    server = make_quic("a", max_inbound_buffer_bytes=64 * 1024)
    await server.start(slow)
    link = await intruder(server.local_address)
    try:
        stream = link.quic.get_next_available_stream_id()
        empty = head(REQUEST, 1, 0)
        for _ in range(10):
            link.quic.send_stream_data(stream, empty * 1000)
            link.transmit()
            await asyncio.sleep(0.01)
        await wait_until(lambda: server.stats().inbound_full_cuts == 1, timeout=5)
        assert server.stats().partial_bytes == 0
    finally:
        gate.set()
        link.close()
        await server.close()


async def test_stream_data_past_a_hole_counts_and_is_cut_at_the_read_timeout(
    make_quic: MakeQuic, intruder: Intruder
) -> None:
    # The last byte of a megabyte, alone: aioquic holds the hole before it until it is filled.
    async with attacked(
        make_quic, intruder, echo, max_inbound_buffer_bytes=4 << 20, read_timeout=0.3
    ) as (server, link):
        stream = link.quic.get_next_available_stream_id()
        size = 1 << 20
        link.quic.send_stream_data(stream, bytes(size))
        link.quic._streams[stream].sender._pending.subtract(0, size - 1)  # only the last byte
        link.transmit()
        await wait_until(lambda: server.stats().partial_bytes >= size - 1, timeout=5)
        await wait_until(lambda: server.stats().slow_frame_cuts == 1, timeout=5)
        assert server.stats().partial_bytes == 0
        # Past the budget, at once: four links of a megabyte hole each against 2 MiB.
        small = make_quic("b", max_inbound_buffer_bytes=2 << 20, read_timeout=30)
        await small.start(echo)
        others: list[Link] = []
        try:
            for _ in range(3):
                other = await intruder(small.local_address)
                others.append(other)
                stream = other.quic.get_next_available_stream_id()
                other.quic.send_stream_data(stream, bytes(size))
                other.quic._streams[stream].sender._pending.subtract(0, size - 1)
                other.transmit()
            await wait_until(lambda: small.stats().inbound_full_cuts >= 1, timeout=5)
        finally:
            for other in others:
                other.close()
            await small.close()


def silence(transport: QuicTransport) -> None:
    """The node behind ``transport`` stops: it hears nothing and says nothing (kill -9)."""
    listener = transport._listener
    assert listener is not None
    listener.datagram_received = lambda data, addr: None  # type: ignore[method-assign]
    for link in transport._shared.links:
        link._send = lambda data, addr: None


async def test_a_dead_peer_is_cut_at_the_write_timeout_while_frames_keep_going_to_it(
    make_quic: MakeQuic,
) -> None:
    a = make_quic("a", write_timeout=0.5)
    b = make_quic("b")
    await a.start(echo)
    await b.start(echo)
    try:
        assert await a.request(b.local_address, b"hi", 2) == b"echo:hi"
        silence(b)
        loop = asyncio.get_running_loop()
        start = loop.time()
        while not a.stats().slow_reader_cuts and loop.time() - start < 5:
            # gossip every 50 ms: new frames are no progress of the peer's
            await a.send(b.local_address, b"gossip")
            await asyncio.sleep(0.05)
        assert a.stats().slow_reader_cuts == 1
        assert loop.time() - start < 1.5
    finally:
        await a.close()
        await b.close()


async def test_an_unfinished_frame_is_cut_at_the_read_timeout_after_an_answer(
    make_quic: MakeQuic, intruder: Intruder
) -> None:
    # An answer arms the write watch (write_timeout / 2 = 5 s); the frame deadline is sooner.
    server = make_quic("a", read_timeout=0.3, write_timeout=10)
    await server.start(echo)
    link = await intruder(server.local_address)
    loop = asyncio.get_running_loop()
    try:
        answer: asyncio.Future[bytes] = loop.create_future()
        link.request(b"hello", answer)
        assert await asyncio.wait_for(answer, 2) == b"echo:hello"
        link.quic.send_stream_data(link._lanes[0], head(REQUEST, 9, 1000) + b"partial")
        link.transmit()
        start = loop.time()
        await wait_until(lambda: server.stats().slow_frame_cuts == 1, timeout=5)
        assert loop.time() - start < 1.0
    finally:
        link.close()
        await server.close()

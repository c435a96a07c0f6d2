"""A quic node against peers that hold a trusted certificate and misbehave: each broken
promise is a counted disconnect (or a refused stream), and the node keeps serving others."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from aioquic.quic.connection import QuicConnection
from gridkv import PeerUnavailable
from gridkv.base.options import SslOptions
from gridkv.testing.waiting import wait_until
from gridkv.wire.framing import REQUEST, head
from gridkv_transport_quic._link import Link, Shared
from gridkv_transport_quic._tls import configurations
from gridkv_transport_quic.transport import QuicTransport, split_address

MakeQuic = Callable[..., QuicTransport]  # the make_quic fixture (conftest)


async def echo(peer: str, payload: bytes, sender: str | None) -> bytes:
    return b"echo:" + payload


async def big(peer: str, payload: bytes, sender: str | None) -> bytes:
    return bytes(256 * 1024) if payload == b"send me a lot" else b"echo:" + payload


async def intruder(certs: Path, address: str) -> Link:
    """A dialled link with node ``e``'s trusted certificate, driven by hand."""
    ssl = SslOptions(
        enabled=True,
        cert_file=str(certs / "e.crt"),
        key_file=str(certs / "e.key"),
        ca_file=str(certs / "ca.crt"),
    )
    _, client = configurations(ssl, max_frame_bytes=1 << 20)
    shared = Shared(
        "127.0.0.1:0",
        dial_timeout=2,
        read_timeout=60,
        write_timeout=60,
        max_frame_bytes=1 << 24,
        max_output_buffer_bytes=1 << 26,
        max_inbound_buffer_bytes=1 << 26,
        ca_file=ssl.ca_file,
    )
    host, port = split_address(address)
    _, link = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: Link(shared, QuicConnection(configuration=client), address, dialled=True),
        remote_addr=(host, port),
    )
    link.connect((host, port))
    await asyncio.wait_for(asyncio.shield(link.ready), 5)
    return link


async def still_serves(make_quic: MakeQuic, server: QuicTransport) -> None:
    other = make_quic("d")
    await other.start(echo)
    try:
        assert await other.request(server.local_address, b"ok", 5) == b"echo:ok"
    finally:
        await other.close()


async def test_a_request_over_the_frame_limit_is_refused_and_counted(
    make_quic: MakeQuic, certs: Path
) -> None:
    server = make_quic("a", max_frame_bytes=64 * 1024)
    await server.start(echo)
    link = await intruder(certs, server.local_address)
    try:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        link.request(bytes(100 * 1024), future)
        with pytest.raises(PeerUnavailable, match="announced a frame of 102409 bytes"):
            await asyncio.wait_for(future, 5)
        assert server.stats().errors >= 1
        assert server.stats().connections == 0
        assert server.stats().requests_received == 0
        assert server.stats().partial_bytes == 0
        await still_serves(make_quic, server)
    finally:
        link.close()
        await server.close()


async def test_a_request_that_never_ends_is_cut_at_the_read_timeout(
    make_quic: MakeQuic, certs: Path
) -> None:
    server = make_quic("a", read_timeout=0.3)
    await server.start(echo)
    link = await intruder(certs, server.local_address)
    try:
        stream = link.quic.get_next_available_stream_id()
        link.quic.send_stream_data(stream, head(REQUEST, 1, 1000) + b"ten bytes.")
        link.transmit()
        await wait_until(lambda: server.stats().slow_frame_cuts == 1, timeout=5)
        await asyncio.wait_for(link.closed, 5)
        assert server.stats().partial_bytes == 0
        await still_serves(make_quic, server)
    finally:
        link.close()
        await server.close()


async def test_unfinished_requests_past_the_inbound_budget_cut_the_link(
    make_quic: MakeQuic, certs: Path
) -> None:
    server = make_quic("a", max_inbound_buffer_bytes=256 * 1024)
    await server.start(echo)
    link = await intruder(certs, server.local_address)
    try:
        for _ in range(8):  # 8 lanes with 64 KiB of a 100 KiB frame each
            stream = link.quic.get_next_available_stream_id()
            link.quic.send_stream_data(stream, head(REQUEST, 1, 100 * 1024) + bytes(64 * 1024))
        link.transmit()
        await wait_until(lambda: server.stats().inbound_full_cuts == 1, timeout=5)
        assert server.stats().partial_bytes == 0
        await still_serves(make_quic, server)
    finally:
        link.close()
        await server.close()


async def test_a_peer_that_never_reads_its_answers_is_cut(make_quic: MakeQuic, certs: Path) -> None:
    server = make_quic("a", write_timeout=0.5)
    await server.start(big)
    link = await intruder(certs, server.local_address)
    try:
        # From now on the intruder takes nothing in: no acknowledgement, no flow credit.
        link.datagram_received = lambda data, addr: None  # type: ignore[method-assign]
        loop = asyncio.get_running_loop()
        for _ in range(4):
            link.request(b"send me a lot", loop.create_future())
        await wait_until(lambda: server.stats().slow_reader_cuts == 1, timeout=10)
        assert server.stats().connections == 0
        await still_serves(make_quic, server)
    finally:
        link.close()
        await server.close()


async def test_a_second_one_way_stream_cuts_the_link(make_quic: MakeQuic, certs: Path) -> None:
    got: list[bytes] = []

    def collect(peer: str, payload: bytes, sender: str | None) -> None:
        got.append(payload)

    server = make_quic("a")
    await server.start(collect)
    link = await intruder(certs, server.local_address)
    try:
        link.one_way(b"first")
        await wait_until(lambda: got == [b"first"], timeout=5)
        link._one_way_out = None  # the next one-way frame opens another stream
        link.one_way(b"second")
        await asyncio.wait_for(link.closed, 5)
        assert got == [b"first"]
        assert server.stats().errors >= 1
    finally:
        link.close()
        await server.close()


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

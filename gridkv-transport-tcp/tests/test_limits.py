"""The pool's limits, back-pressure and time-outs, on real sockets."""

from __future__ import annotations

import asyncio
import socket

import pytest

pytest.importorskip("gridkv_transport_tcp")

from gridkv import PeerTimeout, PeerUnavailable
from gridkv.testing.transports import free_port
from gridkv_transport_tcp.transport import TcpTransport, split_address


async def test_the_pool_stays_within_max_conns_and_trims_to_max_idle() -> None:
    release = asyncio.Event()

    async def slow(peer: str, payload: bytes, sender: str | None) -> bytes:
        await release.wait()
        return payload

    server = TcpTransport(f"127.0.0.1:{free_port()}")
    client = TcpTransport(f"127.0.0.1:{free_port()}", max_conns=3, max_idle=1)
    await server.start(slow)
    await client.start(slow)
    try:
        calls = [
            asyncio.ensure_future(client.request(server.local_address, str(i).encode(), 10))
            for i in range(200)
        ]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while server.stats().requests_received < 200:
            assert loop.time() < deadline, "the requests did not all arrive"
            await asyncio.sleep(0.01)
        assert client.stats().connections == 3  # 200 in flight, at most max_conns
        assert server.stats().connections == 3
        release.set()
        assert await asyncio.gather(*calls) == [str(i).encode() for i in range(200)]
        deadline = loop.time() + 5
        while client.stats().connections > 1:
            assert loop.time() < deadline, "idle connections were not closed"
            await asyncio.sleep(0.01)
    finally:
        release.set()
        await client.close()
        await server.close()


async def test_a_finished_dial_is_not_shared_with_a_caller_that_finds_it_before_it_is_cleared() -> (
    None
):
    # Regression: a caller woken earlier in the loop turn than a dial's own clean-up found
    # the finished dial, got its (full) connection back at once and asked again, forever,
    # never yielding to the loop (the RESP door's pipelines to another node hung this way).
    async def echo(peer: str, payload: bytes, sender: str | None) -> bytes:
        return payload

    server = TcpTransport(f"127.0.0.1:{free_port()}")
    client = TcpTransport(f"127.0.0.1:{free_port()}", max_conns=4)
    await server.start(echo)
    await client.start(echo)
    try:
        pool = client._pool
        first = await pool.connect(server.local_address, lane=False)
        finished = asyncio.get_running_loop().create_future()
        finished.set_result(first)
        pool._dialing[(server.local_address, False)] = finished  # _dialled not run yet
        second = await asyncio.wait_for(pool.connect(server.local_address, lane=False), 5)
        assert second is not first
        assert len(pool._pools[server.local_address]) == 2
    finally:
        await client.close()
        await server.close()


async def test_a_connection_dialled_for_waiting_callers_is_not_closed_as_idle() -> None:
    # Regression: a release trimming idle connections to max_idle closed one just dialled
    # for callers that had not resumed yet; they dialled again, and after three such closes
    # failed with "connections ... keep closing" (the RESP door's pipelines met it).
    async def echo(peer: str, payload: bytes, sender: str | None) -> bytes:
        return payload

    server = TcpTransport(f"127.0.0.1:{free_port()}")
    client = TcpTransport(f"127.0.0.1:{free_port()}", max_conns=4, max_idle=1)
    await server.start(echo)
    await client.start(echo)
    try:
        pool = client._pool
        taken = await pool.acquire(server.local_address)
        fresh = await pool.connect(server.local_address, lane=False)  # its callers not back
        pool.release(taken)
        assert fresh.usable() and taken.usable()
        assert await client.request(server.local_address, b"ping", 5) == b"ping"
    finally:
        await client.close()
        await server.close()


async def test_a_peer_that_stops_reading_blocks_request_writers_until_the_write_timeout() -> None:
    # The peer accepts and never reads: the kernel buffers fill, the transport pauses
    # writing, and requests wait at most network.write_timeout instead of buffering more;
    # then the connection, on which the peer took nothing for that long, is cut.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    client = TcpTransport(f"127.0.0.1:{free_port()}", write_timeout=0.3, max_conns=1)

    async def nothing(peer: str, payload: bytes, sender: str | None) -> None:
        return None

    await client.start(nothing)
    frame = b"x" * (1 << 20)
    try:
        calls = [
            asyncio.ensure_future(client.request(address, frame, 30)) for _ in range(256)
        ]  # far more than any kernel buffers on loopback
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while not any(not c.writable for c in client._pool.connections):
            assert loop.time() < deadline, "writing never paused"
            await asyncio.sleep(0.005)
        (conn,) = client._pool.connections
        assert conn.transport is not None
        assert conn.transport.get_write_buffer_size() < 8 * len(frame)  # near the high-water mark
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, PeerTimeout) for r in results)
        assert all("did not take data for 0.3s (network.write_timeout)" in str(r) for r in results)
        assert client.stats().slow_reader_cuts == 1
    finally:
        await client.close()
        listener.close()


async def test_a_dial_that_gets_no_answer_times_out() -> None:
    # A listener whose accept queue is full drops further SYNs, so connects hang.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(listener.getsockname())
        except BlockingIOError:
            pass
        fillers.append(s)
    client = TcpTransport(f"127.0.0.1:{free_port()}", dial_timeout=0.3)
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        with pytest.raises((PeerTimeout, PeerUnavailable)) as info:
            await client.request(address, b"x", 5)
        if isinstance(info.value, PeerTimeout):
            assert "within 0.3s (network.timeout)" in str(info.value)
        assert loop.time() - started < 3
    finally:
        await client.close()
        for s in fillers:
            s.close()
        listener.close()


def test_addresses_with_port_zero_listen_on_a_free_port() -> None:
    assert split_address("127.0.0.1:0", listening=True) == ("127.0.0.1", 0)
    with pytest.raises(PeerUnavailable):
        split_address("127.0.0.1:0")


async def test_a_frame_that_stops_arriving_midway_closes_its_connection() -> None:
    server = TcpTransport(f"127.0.0.1:{free_port()}", read_timeout=0.3)

    async def echo(peer: str, payload: bytes, sender: str | None) -> bytes:
        return payload

    await server.start(echo)
    host, port = split_address(server.local_address)
    reader, writer = await asyncio.open_connection(host, port)
    loop = asyncio.get_running_loop()
    try:
        writer.write((1000).to_bytes(4, "big") + b"\x00" * 100)  # 100 of 1,000 bytes
        await writer.drain()
        started = loop.time()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        assert 0.25 <= loop.time() - started < 3
        assert server.stats().errors == 1
    finally:
        writer.close()
        await server.close()

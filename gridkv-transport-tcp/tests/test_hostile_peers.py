"""Limits against hostile or broken peers, on real sockets: a peer that does not read, that
holds unfinished frames, that trickles a frame, that floods requests answered later; and
one-way frames that must not wait behind stuck request connections."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

pytest.importorskip("gridkv_transport_tcp")

from gridkv import Options, PeerUnavailable
from gridkv.testing.transports import free_port
from gridkv.transport import Handler
from gridkv.wire.framing import HEAD, INNER, REQUEST, RESPONSE, head
from gridkv_transport_tcp._connection import Connection
from gridkv_transport_tcp.transport import MAX_ANSWERS_IN_PROGRESS, TcpTransport, split_address

KIB = 1024
MIB = 1024 * KIB


async def wait_until(what: str, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"{what}: not within {timeout}s"
        await asyncio.sleep(0.005)


async def connect(
    address: str, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw TCP connection to ``address``; ``rcvbuf`` shrinks the kernel's receive buffer."""
    host, port = split_address(address)
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    return await asyncio.open_connection(sock=sock)


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """Whether the other side closes the connection (reset or end of stream) within 5 s."""
    try:
        while await asyncio.wait_for(reader.read(64 * KIB), 5):
            pass
    except ConnectionResetError:
        pass
    return True


def request(request_id: int, body: bytes = b"?") -> bytes:
    return head(REQUEST, request_id, len(body)) + body


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    length, kind, request_id = HEAD.unpack(await asyncio.wait_for(reader.readexactly(HEAD.size), 5))
    assert kind == RESPONSE
    return request_id, await reader.readexactly(length - INNER)


def only_connection(transport: TcpTransport) -> Connection:
    (conn,) = transport._pool.connections
    return conn


async def started(handler: Handler, **limits: float) -> TcpTransport:
    transport = TcpTransport(f"127.0.0.1:{free_port()}", **limits)  # type: ignore[arg-type]
    await transport.start(handler)
    return transport


def test_the_limits_come_from_the_network_options() -> None:
    options = Options(
        network={"max_output_buffer_bytes": 32 * MIB, "max_inbound_buffer_bytes": 48 * MIB}
    )
    transport = TcpTransport.from_options(options)
    assert transport.max_output_buffer_bytes == 32 * MIB
    assert transport.max_inbound_buffer_bytes == 48 * MIB


# -- output: a peer that does not read ---------------------------------------------------------


async def test_answers_to_a_peer_that_never_reads_are_cut_at_max_output_buffer_bytes() -> None:
    answer = b"a" * (64 * KIB)
    queued: list[int] = []
    server: TcpTransport

    def big(peer: str, payload: bytes, sender: str | None) -> bytes:
        conn = only_connection(server)
        assert conn.transport is not None
        queued.append(conn._out_bytes + conn.transport.get_write_buffer_size())
        return answer

    # A long write time-out: only the byte limit can cut this peer.
    server = await started(
        big, max_frame_bytes=256 * KIB, max_output_buffer_bytes=MIB, write_timeout=30
    )
    _, writer = await connect(server.local_address, rcvbuf=4 * KIB)
    loop = asyncio.get_running_loop()
    try:
        began = loop.time()
        writer.write(b"".join(request(i) for i in range(2000)))  # 125 MiB of answers
        await wait_until("cut", lambda: server.stats().slow_reader_cuts == 1)
        assert loop.time() - began < 5  # by the byte limit, long before the write time-out
        assert max(queued) <= MIB  # everything queued for the peer stayed within the limit
        assert not server._shared.tasks  # blocked answers did not become tasks
        await wait_until("closed", lambda: server.stats().connections == 0)
        assert server.stats().errors == 1
    finally:
        writer.close()
        await server.close()


async def test_a_peer_that_takes_nothing_for_the_write_timeout_is_cut() -> None:
    def big(peer: str, payload: bytes, sender: str | None) -> bytes:
        return b"a" * (64 * KIB)

    server = await started(big, write_timeout=0.3)
    reader, writer = await connect(server.local_address, rcvbuf=4 * KIB)
    loop = asyncio.get_running_loop()
    try:
        began = loop.time()
        writer.write(b"".join(request(i) for i in range(400)))  # 25 MiB of answers, not read
        await wait_until("cut", lambda: server.stats().slow_reader_cuts == 1)
        assert 0.3 <= loop.time() - began < 2
        await wait_until("closed", lambda: server.stats().connections == 0)
        assert await closed_by_peer(reader)
    finally:
        writer.close()
        await server.close()


async def test_a_peer_that_reads_slowly_is_not_cut() -> None:
    answer = b"a" * (64 * KIB)

    def big(peer: str, payload: bytes, sender: str | None) -> bytes:
        return answer

    server = await started(big, write_timeout=0.3)
    reader, writer = await connect(server.local_address)
    count = 256  # 16 MiB of answers, more than the kernel buffers hold
    try:
        writer.write(b"".join(request(i) for i in range(count)))
        await wait_until("writing paused", lambda: not only_connection(server).writable)
        for i in range(count):  # an answer every 5 ms: slower than the writer, never stopped
            assert await read_answer(reader) == (i, answer)
            await asyncio.sleep(0.005)
        assert server.stats().slow_reader_cuts == 0
    finally:
        writer.close()
        await server.close()


async def test_one_way_sends_never_wait_for_a_peer_that_does_not_read() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts in the kernel, never reads
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    client = await started(
        lambda peer, payload, sender: None,
        max_frame_bytes=256 * KIB,
        max_output_buffer_bytes=MIB,
        write_timeout=30,
    )
    loop = asyncio.get_running_loop()
    frame = b"g" * (64 * KIB)
    try:
        began = loop.time()
        with pytest.raises(PeerUnavailable, match=r"unread \(network\.max_output_buffer_bytes\)"):
            for _ in range(10_000):
                await client.send(address, frame)
        assert loop.time() - began < 2  # no send waited for the peer
        assert client.stats().slow_reader_cuts == 1
    finally:
        await client.close()
        listener.close()


async def test_close_drops_what_a_peer_that_does_not_read_leaves_queued() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts in the kernel, never reads
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    client = await started(lambda peer, payload, sender: None, write_timeout=30)
    loop = asyncio.get_running_loop()
    try:
        for _ in range(64):  # 16 MiB, more than the kernel buffers take
            await client.send(address, b"g" * (256 * KIB))
        began = loop.time()
        await client.close()
        assert loop.time() - began < 4
        assert client.stats().connections == 0
    finally:
        await client.close()
        listener.close()


# -- inbound: unfinished frames and trickles ---------------------------------------------------


async def test_unfinished_frames_past_the_inbound_budget_are_cut_and_their_bytes_released() -> None:
    server = await started(
        lambda peer, payload, sender: payload,
        max_frame_bytes=MIB,
        max_inbound_buffer_bytes=3 * MIB,
        read_timeout=30,
    )
    partial = head(REQUEST, 1, MIB) + b"p" * (900 * KIB)  # 900 KiB of a 1 MiB frame
    held = len(partial)
    peers = []
    try:
        for n in range(1, 4):  # three fit in the budget of 3 MiB
            reader, writer = await connect(server.local_address)
            writer.write(partial)
            peers.append((reader, writer))
            await wait_until(f"{n} held", lambda n=n: server.stats().partial_bytes == n * held)
        reader, writer = await connect(server.local_address)  # a fourth would pass it
        writer.write(partial)
        await wait_until("cut", lambda: server.stats().inbound_full_cuts == 1)
        assert await closed_by_peer(reader)
        writer.close()
        assert server.stats().partial_bytes == 3 * held
        await wait_until("closed", lambda: server.stats().connections == 3)

        # A frame that completes gives its bytes back, and is served.
        reader, writer = peers[0]
        writer.write(b"p" * (MIB - 900 * KIB))
        assert await read_answer(reader) == (1, b"p" * MIB)
        assert server.stats().partial_bytes == 2 * held
        # A connection that closes gives them back too.
        for _, writer in peers[1:]:
            writer.close()
        await wait_until("released", lambda: server.stats().partial_bytes == 0)
    finally:
        for _, writer in peers:
            writer.close()
        await server.close()


async def test_a_frame_trickled_a_byte_at_a_time_is_cut_at_the_read_timeout() -> None:
    server = await started(lambda peer, payload, sender: payload, read_timeout=0.5)
    reader, writer = await connect(server.local_address)
    loop = asyncio.get_running_loop()
    frame = request(1, b"t" * 1000)

    async def trickle() -> None:
        for byte in frame:  # one byte every 20 ms: the frame would take 20 s
            writer.write(bytes([byte]))
            await asyncio.sleep(0.02)

    trickler = asyncio.ensure_future(trickle())
    try:
        began = loop.time()
        await wait_until("cut", lambda: server.stats().slow_frame_cuts == 1)
        assert 0.45 <= loop.time() - began < 2  # from the first byte, however many followed
        assert server.stats().partial_bytes == 0
        assert await closed_by_peer(reader)
    finally:
        trickler.cancel()
        await asyncio.gather(trickler, return_exceptions=True)
        writer.close()
        await server.close()


# -- answers in progress -----------------------------------------------------------------------


def slow_handler() -> tuple[Handler, asyncio.Event, list[int]]:
    """A handler whose answers wait for an event; it counts how many run (now, peak)."""
    release = asyncio.Event()
    running = [0, 0]

    async def answer(payload: bytes) -> bytes:
        running[0] += 1
        running[1] = max(running[1], running[0])
        try:
            await release.wait()
            return payload
        finally:
            running[0] -= 1

    def handler(peer: str, payload: bytes, sender: str | None) -> Awaitable[bytes]:
        return answer(payload)

    return handler, release, running


async def test_answers_in_progress_per_connection_are_capped_and_reading_pauses() -> None:
    handler, release, running = slow_handler()
    server = await started(handler)
    reader, writer = await connect(server.local_address)
    count = 600
    try:
        writer.write(b"".join(request(i, str(i).encode()) for i in range(count)))
        await wait_until("cap reached", lambda: running[0] == MAX_ANSWERS_IN_PROGRESS)
        conn = only_connection(server)
        assert conn.transport is not None
        assert not conn.transport.is_reading()
        assert server.stats().requests_received == MAX_ANSWERS_IN_PROGRESS
        assert len(server._shared.tasks) == MAX_ANSWERS_IN_PROGRESS
        release.set()
        answers = dict([await read_answer(reader) for _ in range(count)])
        assert answers == {i: str(i).encode() for i in range(count)}
        assert running[1] == MAX_ANSWERS_IN_PROGRESS
    finally:
        release.set()
        writer.close()
        await server.close()


async def test_a_frame_left_unfinished_while_this_side_paused_reading_is_not_cut() -> None:
    handler, release, running = slow_handler()
    server = await started(handler, read_timeout=0.3)
    reader, writer = await connect(server.local_address)
    count = MAX_ANSWERS_IN_PROGRESS + 1
    last = request(count - 1, b"last")
    try:
        writer.write(b"".join(request(i) for i in range(count - 1)) + last[:10])
        await wait_until("cap reached", lambda: running[0] == MAX_ANSWERS_IN_PROGRESS)
        await asyncio.sleep(0.6)  # paused for twice the read time-out: not the peer's fault
        release.set()
        writer.write(last[10:])
        answers = dict([await read_answer(reader) for _ in range(count)])
        assert answers[count - 1] == b"last"
        assert server.stats().slow_frame_cuts == 0
    finally:
        release.set()
        writer.close()
        await server.close()


# -- the control lane --------------------------------------------------------------------------


async def test_one_way_frames_arrive_promptly_while_request_connections_are_stuck() -> None:
    # The peer stops reading the request connection (it has the maximum of answers in
    # progress, so the kernel buffers fill and further requests wait for them), yet probes
    # sent one way still reach it at once: they have a connection of their own.
    handler, release, running = slow_handler()
    probes: dict[bytes, float] = {}
    loop = asyncio.get_running_loop()

    def peer_handler(
        peer: str, payload: bytes, sender: str | None
    ) -> bytes | Awaitable[bytes | None] | None:
        if payload.startswith(b"probe"):
            probes[payload] = loop.time()
            return None
        return handler(peer, payload, sender)

    server = await started(peer_handler)
    client = await started(lambda peer, payload, sender: None, max_conns=1, write_timeout=30)
    bulk = b"b" * (128 * KIB)  # the answers in progress, 32 MiB, fit the output limit
    calls = [
        asyncio.ensure_future(client.request(server.local_address, bulk, 30)) for _ in range(600)
    ]
    try:
        await wait_until(
            "the request connection stuck",
            lambda: (
                running[0] == MAX_ANSWERS_IN_PROGRESS
                and any(not c.writable for c in client._pool.connections)
            ),
        )
        for i in range(20):
            sent = loop.time()
            name = f"probe-{i}".encode()
            await client.send(server.local_address, name)
            await wait_until(f"{name!r} arrived", lambda name=name: name in probes, timeout=2)
            assert probes[name] - sent < 1
        assert client.stats().connections == 2  # the request connection and the control lane
        release.set()
        assert all(answer == bulk for answer in await asyncio.gather(*calls))
    finally:
        release.set()
        await asyncio.gather(*calls, return_exceptions=True)
        await client.close()
        await server.close()

"""Reconnecting to a peer that went away: back-off between dials, and the peer reached again."""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("gridkv_transport_tcp")

from gridkv import Options, PeerUnavailable, ShuttingDown
from gridkv.security.ed25519 import Ed25519Authenticator
from gridkv.security.identity import new_secret
from gridkv.testing.transports import free_port
from gridkv.transport import Handshake
from gridkv_transport_tcp.transport import TcpTransport


async def echo(peer: str, payload: bytes, sender: str | None) -> bytes:
    return b"echo:" + payload


async def answered(client: TcpTransport, address: str, payload: bytes) -> bytes:
    """Request until the peer answers (it is coming back), for 5 s at most."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while True:
        try:
            return await client.request(address, payload, 1)
        except PeerUnavailable:
            assert loop.time() < deadline, f"{address} was not reached again"
            await asyncio.sleep(0.02)


async def test_failed_dials_back_off_and_a_returning_peer_is_reached() -> None:
    address = f"127.0.0.1:{free_port()}"
    client = TcpTransport(
        f"127.0.0.1:{free_port()}", reconnect_backoff=0.2, reconnect_max_backoff=0.4
    )
    await client.start(echo)
    server = TcpTransport(address)
    loop = asyncio.get_running_loop()
    try:
        with pytest.raises(PeerUnavailable, match="cannot connect"):
            await client.request(address, b"1", 1)
        # Within the back-off the next send fails at once, without dialling, and says why.
        with pytest.raises(PeerUnavailable, match=r"unreachable .*next dial in 0\.\d+s"):
            await client.request(address, b"2", 1)
        dials_failed_at = loop.time()
        await server.start(echo)
        assert await answered(client, address, b"3") == b"echo:3"
        assert loop.time() - dials_failed_at >= 0.1  # waited out (most of) the back-off
        # A connection that drops is dialled again on the next send.
        await server.close()
        server = TcpTransport(address)
        await server.start(echo)
        assert await answered(client, address, b"4") == b"echo:4"
    finally:
        await client.close()
        await server.close()


async def test_the_back_off_doubles_up_to_its_maximum() -> None:
    address = f"127.0.0.1:{free_port()}"
    client = TcpTransport(
        f"127.0.0.1:{free_port()}", reconnect_backoff=0.01, reconnect_max_backoff=0.04
    )
    await client.start(echo)
    loop = asyncio.get_running_loop()
    waits = []
    try:
        for _ in range(5):
            with pytest.raises(PeerUnavailable):
                await client.request(address, b"x", 1)
            waits.append(client._pool.failures[address][1] - loop.time())
            await asyncio.sleep(max(0.0, waits[-1]) + 0.005)
        assert waits[0] <= 0.011
        assert waits[1] > waits[0]
        assert all(w <= 0.041 for w in waits)
        assert waits[-1] >= 0.03
    finally:
        await client.close()


def _handshake(node_id: str, secret: str) -> Handshake:
    opts = Options.from_mapping({"local_node_id": node_id, "auth": {"cluster_secret": secret}})
    return Ed25519Authenticator(opts, clock=time.time).handshake(lambda address: None)


async def test_a_cancelled_caller_leaves_the_dial_to_the_callers_sharing_it() -> None:
    # A quorum read cancels its slower requests once it has its answers; the one of them that
    # started a dial must not take the dial (and every other caller waiting on it) with it.
    secret = new_secret()
    server = TcpTransport(f"127.0.0.1:{free_port()}", dial_timeout=5)
    await server.start(echo, _handshake("s", secret))
    client = TcpTransport(f"127.0.0.1:{free_port()}", dial_timeout=5)
    await client.start(echo, _handshake("c", secret))
    try:
        first = asyncio.ensure_future(client.request(server.local_address, b"one", 5))
        await asyncio.sleep(0)  # the first caller starts the dial (and its handshake)
        second = asyncio.ensure_future(client.request(server.local_address, b"two", 5))
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await second == b"echo:two"
        assert client.stats().connections == 1
    finally:
        await client.close()
        await server.close()


async def test_closing_during_a_dial_gives_its_callers_shutting_down() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts and never replies to the hello
        writer.close()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    address = f"127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    client = TcpTransport(f"127.0.0.1:{free_port()}", dial_timeout=30)
    await client.start(echo, _handshake("c", new_secret()))
    try:
        waiting = asyncio.ensure_future(client.request(address, b"one", 30))
        await asyncio.sleep(0.05)
        await client.close()
        with pytest.raises(ShuttingDown):
            await waiting
    finally:
        await client.close()
        listener.close()
        await listener.wait_closed()


async def test_failed_dials_are_remembered_for_a_bounded_number_of_addresses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gridkv_transport_tcp import _pool

    monkeypatch.setattr(_pool, "MAX_REMEMBERED_FAILURES", 50)
    client = TcpTransport(f"127.0.0.1:{free_port()}", dial_timeout=1)
    await client.start(echo)
    try:
        for port in [free_port() for _ in range(120)]:
            with pytest.raises(PeerUnavailable):
                await client.request(f"127.0.0.1:{port}", b"x", 1)
        assert len(client._pool.failures) == 50
    finally:
        await client.close()

"""The connection handshake slot the authentication layer uses, exercised with a test handshake
(an HMAC over the node's name with a shared secret; not GridKV's authentication)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import struct

import pytest

pytest.importorskip("gridkv_transport_tcp")

from gridkv import AuthenticationError, PeerUnavailable
from gridkv.testing.transports import free_port
from gridkv.transport import Handshake
from gridkv.wire.framing import HEAD, HELLO
from gridkv_transport_tcp.transport import TcpTransport, split_address


class SecretHandshake:
    """Hello = name + HMAC(secret, name); a peer with another secret is refused."""

    def __init__(self, name: str, secret: bytes) -> None:
        self.name = name
        self.secret = secret
        self.seen: list[str] = []

    def _mac(self, name: bytes) -> bytes:
        return hmac.new(self.secret, name, hashlib.sha256).digest()

    def hello(self) -> bytes:
        return self._mac(self.name.encode()) + self.name.encode()

    def check(self, peer_address: str, hello: bytes) -> None:
        mac, name = hello[:32], hello[32:]
        if not hmac.compare_digest(mac, self._mac(name)):
            raise AuthenticationError(f"{peer_address!r} does not know the secret")
        self.seen.append(name.decode())


async def echo(peer: str, payload: bytes, sender: str | None) -> bytes:
    return b"echo:" + payload


def hello_frame(handshake: SecretHandshake) -> bytes:
    """What a transport with ``handshake`` writes first on a connection, and here only."""
    hello = handshake.hello()
    return HEAD.pack(HEAD.size - 4 + len(hello), HELLO, 0) + hello


async def started(handshake: Handshake | None) -> TcpTransport:
    transport = TcpTransport(f"127.0.0.1:{free_port()}", dial_timeout=2)
    await transport.start(echo, handshake)
    return transport


async def test_peers_with_the_same_secret_talk_after_their_hellos() -> None:
    a_hs, b_hs = SecretHandshake("a", b"s3cret"), SecretHandshake("b", b"s3cret")
    a, b = await started(a_hs), await started(b_hs)
    try:
        assert await a.request(b.local_address, b"hi", 5) == b"echo:hi"
        assert await b.request(a.local_address, b"yo", 5) == b"echo:yo"
        assert set(a_hs.seen) == {"b"} and set(b_hs.seen) == {"a"}
    finally:
        await a.close()
        await b.close()


async def test_a_peer_with_another_secret_is_refused_and_counted() -> None:
    a, b = (
        await started(SecretHandshake("a", b"s3cret")),
        await started(SecretHandshake("mallory", b"guess")),
    )
    try:
        with pytest.raises(PeerUnavailable, match="handshake with .* failed"):
            await b.request(a.local_address, b"let me in", 5)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while a.stats().errors == 0:
            assert loop.time() < deadline
            await asyncio.sleep(0.01)
        assert a.stats().requests_received == 0
    finally:
        await a.close()
        await b.close()


async def test_a_frame_before_the_hello_closes_the_connection() -> None:
    a_hs = SecretHandshake("a", b"s3cret")
    a = await started(a_hs)
    host, port = split_address(a.local_address)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(struct.pack(">IBQ", 9 + 2, 0, 1) + b"hi")  # a request, no hello
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
        assert data == hello_frame(a_hs)  # a's hello, then the close: no answer
        assert a.stats().requests_received == 0
        assert a.stats().errors == 1
    finally:
        writer.close()
        await a.close()


async def test_nothing_after_a_refused_hello_is_delivered() -> None:
    # A refused hello and a request in the same write: the request must not reach the handler.
    a_hs = SecretHandshake("a", b"s3cret")
    a = await started(a_hs)
    host, port = split_address(a.local_address)
    reader, writer = await asyncio.open_connection(host, port)
    forged = SecretHandshake("mallory", b"guess").hello()
    try:
        writer.write(
            struct.pack(">IBQ", 9 + len(forged), 3, 0)
            + forged
            + struct.pack(">IBQ", 9 + 2, 0, 1)
            + b"hi"
        )
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == hello_frame(a_hs)  # then the close
        assert a.stats().errors == 1
        assert a.stats().requests_received == 0
    finally:
        writer.close()
        await a.close()


async def test_a_connection_that_never_says_hello_is_closed() -> None:
    a = TcpTransport(f"127.0.0.1:{free_port()}", dial_timeout=0.3)
    a_hs = SecretHandshake("a", b"s3cret")
    await a.start(echo, a_hs)
    host, port = split_address(a.local_address)
    reader, writer = await asyncio.open_connection(host, port)
    loop = asyncio.get_running_loop()
    try:
        opened = loop.time()
        data = await asyncio.wait_for(reader.read(), 5)  # a's hello, then the close
        assert data == hello_frame(a_hs)
        assert 0.25 <= loop.time() - opened < 3  # after dial_timeout (0.3 s)
        assert a.stats().errors == 1
    finally:
        writer.close()
        await a.close()


async def test_a_peer_that_never_says_hello_times_out_the_dial() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)  # accepts (in the kernel), never writes a hello
    client = TcpTransport(f"127.0.0.1:{free_port()}", dial_timeout=0.3)
    await client.start(echo, SecretHandshake("c", b"s3cret"))
    try:
        with pytest.raises(PeerUnavailable, match=r"sent no hello within 0\.3s"):
            await client.request(f"127.0.0.1:{listener.getsockname()[1]}", b"x", 5)
    finally:
        await client.close()
        listener.close()

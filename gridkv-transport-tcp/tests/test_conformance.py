from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("gridkv_transport_tcp")

from gridkv import Options
from gridkv.base.eventloop import loop_name, new_event_loop
from gridkv.security.ed25519 import Ed25519Authenticator
from gridkv.security.identity import new_secret
from gridkv.testing.conformance import RawSender, TransportConformance, TransportMaker
from gridkv.testing.transports import free_port
from gridkv.transport import Handler, Handshake, Transport
from gridkv_transport_tcp.transport import TcpTransport, split_address


async def send_raw(address: str, data: bytes) -> None:
    """Write ``data`` on a fresh TCP connection and wait until the transport closes it."""
    host, port = split_address(address)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


class TestTcpTransport(TransportConformance):
    @pytest.fixture
    def raw_sender(self) -> RawSender:
        return send_raw

    @pytest.fixture
    def factory(self) -> TransportMaker:
        ports: dict[str, int] = {}

        async def make(name: str) -> Transport:
            port = ports.setdefault(name, free_port())
            return TcpTransport(f"127.0.0.1:{port}", read_timeout=5)

        return make


class _Authenticated(TcpTransport):
    """A tcp transport that runs the ``ed25519`` authenticator's connection handshake."""

    def __init__(self, address: str, name: str, secret: str, **kwargs: float) -> None:
        super().__init__(address, **kwargs)
        opts = Options.from_mapping({"local_node_id": name, "auth": {"cluster_secret": secret}})
        self._handshake = Ed25519Authenticator(opts, clock=time.time).handshake(lambda a: None)

    async def start(self, handler: Handler, handshake: Handshake | None = None) -> bool:
        return await super().start(handler, handshake or self._handshake)


class TestTcpTransportWithHandshake(TransportConformance):
    """The same guarantees when every connection is authenticated and its writes sealed."""

    @pytest.fixture
    def factory(self) -> TransportMaker:
        ports: dict[str, int] = {}
        secret = new_secret()

        async def make(name: str) -> Transport:
            port = ports.setdefault(name, free_port())
            return _Authenticated(f"127.0.0.1:{port}", name, secret, read_timeout=5)

        return make


def test_addresses_are_split_into_host_and_port() -> None:
    assert split_address("127.0.0.1:7946") == ("127.0.0.1", 7946)
    assert split_address("[::1]:80") == ("::1", 80)


@pytest.mark.parametrize("bad", ["nohost", "host:", "host:port", "h:70000"])
def test_bad_addresses_are_refused(bad: str) -> None:
    from gridkv.base.errors import PeerUnavailable

    with pytest.raises(PeerUnavailable, match="is not host:port"):
        split_address(bad)


async def test_malformed_frames_close_the_connection_and_are_counted() -> None:
    import asyncio

    async def echo(peer: str, payload: bytes, sender: str | None) -> bytes:
        return payload

    server = TcpTransport(f"127.0.0.1:{free_port()}", max_frame_bytes=1024)
    await server.start(echo)
    host, port = split_address(server.local_address)
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write((10**9).to_bytes(4, "big") + b"junk")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        writer.close()
        assert server.stats().errors == 1
    finally:
        await server.close()


async def test_gridkv_loops_are_uvloop_when_it_is_installed() -> None:
    pytest.importorskip("uvloop")
    loop = new_event_loop()
    try:
        assert loop_name(loop) == "uvloop"
    finally:
        loop.close()

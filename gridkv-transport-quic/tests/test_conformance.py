"""The transport conformance suite over QUIC, with mutual TLS from `gridkv certs create`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aioquic.quic.connection import QuicConnection
from gridkv.base.options import SslOptions
from gridkv.testing.conformance import RawSender, TransportConformance, TransportMaker
from gridkv.transport import Transport
from gridkv_transport_quic._link import Link, Shared
from gridkv_transport_quic._tls import configurations
from gridkv_transport_quic.transport import split_address


class TestQuicTransport(TransportConformance):
    @pytest.fixture
    def factory(self, make_quic: Any, udp_port: Callable[[], int]) -> TransportMaker:
        ports: dict[str, int] = {}

        async def make(name: str) -> Transport:
            port = ports.setdefault(name, udp_port())
            transport: Transport = make_quic(name, port, read_timeout=5)
            return transport

        return make

    @pytest.fixture
    def raw_sender(self, certs: Path) -> RawSender:
        """A real QUIC connection (a trusted certificate) that writes raw bytes on the
        one-way stream, past the transport's framing."""

        async def send(address: str, data: bytes) -> None:
            ca_file = str(certs / "ca.crt")
            ssl = SslOptions(
                enabled=True,
                cert_file=str(certs / "e.crt"),
                key_file=str(certs / "e.key"),
                ca_file=ca_file,
            )
            _, client = configurations(ssl, max_frame_bytes=1 << 20)
            shared = Shared(
                "127.0.0.1:0",
                dial_timeout=2,
                read_timeout=2,
                write_timeout=2,
                max_frame_bytes=1 << 20,
                max_output_buffer_bytes=1 << 20,
                max_inbound_buffer_bytes=1 << 20,
                ca_file=ca_file,
            )
            loop = asyncio.get_running_loop()
            host, port = split_address(address)
            _, link = await loop.create_datagram_endpoint(
                lambda: Link(shared, QuicConnection(configuration=client), address, dialled=True),
                remote_addr=(host, port),
            )
            link.connect((host, port))
            await asyncio.wait_for(link.ready, 5)
            stream = link.quic.get_next_available_stream_id(is_unidirectional=True)
            link.quic.send_stream_data(stream, data)
            link.transmit()
            await asyncio.wait_for(link.closed, 5)  # the peer cuts it

        return send

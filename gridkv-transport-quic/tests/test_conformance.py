"""The transport conformance suite over QUIC, with mutual TLS from `gridkv certs create`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from gridkv.testing.conformance import RawSender, TransportConformance, TransportMaker
from gridkv.transport import Transport
from gridkv_transport_quic._link import Link


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
    def raw_sender(self, intruder: Callable[..., Awaitable[Link]]) -> RawSender:
        """A real QUIC connection (a trusted certificate) that writes raw bytes on the
        one-way stream, past the transport's framing."""

        async def send(address: str, data: bytes) -> None:
            link = await intruder(address)
            stream = link.quic.get_next_available_stream_id(is_unidirectional=True)
            link.quic.send_stream_data(stream, data)
            link.transmit()
            await asyncio.wait_for(link.closed, 5)  # the peer cuts it

        return send

from __future__ import annotations

import pytest
from gridkv.testing.conformance import TransportConformance, TransportMaker
from gridkv.transport import MemoryNetwork, MemoryTransport, Transport


class TestMemoryTransport(TransportConformance):
    @pytest.fixture
    def factory(self) -> TransportMaker:
        net = MemoryNetwork()

        async def make(name: str) -> Transport:
            return MemoryTransport(f"{name}:1", net)

        return make

"""A conformance suite every transport passes: subclass it in a test module.

::

    class TestMyTransport(TransportConformance):
        @pytest.fixture
        def factory(self) -> TransportMaker:
            ...  # returns make(name) -> (unstarted transport, its address)

The tests cover request/response, one-way sends, many requests in flight, large frames,
oversized frames, unknown peers, a peer that restarts, time-outs and close semantics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gridkv.errors import PeerTimeout, PeerUnavailable, ProtocolError, ShuttingDown
from gridkv.transport.base import Handler, Transport

__all__ = ["TransportConformance", "TransportMaker"]

#: ``make(name)`` returns a new, unstarted transport and the address peers reach it at.
TransportMaker = Callable[[str], Awaitable[Transport]]


async def _echo(peer: str, payload: bytes) -> bytes:
    return b"echo:" + payload


class TransportConformance:
    """Behaviour every GridKV transport must have."""

    @pytest.fixture
    def factory(self) -> TransportMaker:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    async def _started(
        self, factory: TransportMaker, name: str, handler: Handler = _echo
    ) -> Transport:
        transport = await factory(name)
        await transport.start(handler)
        return transport

    async def test_request_gets_the_answer(self, factory: TransportMaker) -> None:
        a = await self._started(factory, "a")
        b = await self._started(factory, "b")
        try:
            assert await a.request(b.local_address, b"hi", 5) == b"echo:hi"
            assert a.stats().requests_sent >= 1
        finally:
            await a.close()
            await b.close()

    async def test_one_way_send_reaches_the_handler(self, factory: TransportMaker) -> None:
        got: asyncio.Queue[bytes] = asyncio.Queue()

        async def handler(peer: str, payload: bytes) -> None:
            await got.put(payload)

        a = await self._started(factory, "a")
        b = await self._started(factory, "b", handler)
        try:
            await a.send(b.local_address, b"gossip")
            assert await asyncio.wait_for(got.get(), 5) == b"gossip"
        finally:
            await a.close()
            await b.close()

    async def test_many_requests_in_flight(self, factory: TransportMaker) -> None:
        async def slow_echo(peer: str, payload: bytes) -> bytes:
            await asyncio.sleep(0.001 * (payload[-1] % 5))
            return payload

        a = await self._started(factory, "a")
        b = await self._started(factory, "b", slow_echo)
        try:
            payloads = [f"req-{i}".encode() for i in range(300)]
            answers = await asyncio.gather(*(a.request(b.local_address, p, 10) for p in payloads))
            assert answers == payloads
        finally:
            await a.close()
            await b.close()

    async def test_large_frames_travel_whole(self, factory: TransportMaker) -> None:
        a = await self._started(factory, "a")
        b = await self._started(factory, "b")
        try:
            big = bytes(range(256)) * 4096  # 1 MiB
            assert await a.request(b.local_address, big, 10) == b"echo:" + big
        finally:
            await a.close()
            await b.close()

    async def test_oversized_frames_are_refused(self, factory: TransportMaker) -> None:
        a = await self._started(factory, "a")
        b = await self._started(factory, "b")
        try:
            with pytest.raises(ProtocolError):
                await a.request(b.local_address, b"x" * (17 * 1024 * 1024), 5)
        finally:
            await a.close()
            await b.close()

    async def test_unknown_peer_is_unavailable(self, factory: TransportMaker) -> None:
        a = await self._started(factory, "a")
        b = await self._started(factory, "b")
        gone = b.local_address
        await b.close()
        try:
            with pytest.raises(PeerUnavailable):
                await a.request(gone, b"x", 2)
        finally:
            await a.close()

    async def test_a_silent_peer_times_out(self, factory: TransportMaker) -> None:
        async def never(peer: str, payload: bytes) -> bytes:
            await asyncio.sleep(3600)
            return b""

        a = await self._started(factory, "a")
        b = await self._started(factory, "b", never)
        try:
            with pytest.raises(PeerTimeout):
                await a.request(b.local_address, b"x", 0.2)
        finally:
            await a.close()
            await b.close()

    async def test_close_is_idempotent_and_later_requests_fail(
        self, factory: TransportMaker
    ) -> None:
        a = await self._started(factory, "a")
        b = await self._started(factory, "b")
        await a.close()
        await a.close()
        try:
            with pytest.raises(ShuttingDown):
                await a.request(b.local_address, b"x", 1)
        finally:
            await b.close()

    async def test_a_restarted_peer_is_reached_again(self, factory: TransportMaker) -> None:
        a = await self._started(factory, "a")
        b = await self._started(factory, "b")
        address = b.local_address
        try:
            assert await a.request(address, b"1", 5) == b"echo:1"
            await b.close()
            b = await self._started(factory, "b")
            assert b.local_address == address
            deadline = asyncio.get_running_loop().time() + 5
            while True:
                try:
                    assert await a.request(address, b"2", 5) == b"echo:2"
                    break
                except PeerUnavailable:
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.05)
        finally:
            await a.close()
            await b.close()

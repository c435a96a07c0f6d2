"""A conformance suite every transport passes: subclass it in a test module.

::

    class TestMyTransport(TransportConformance):
        @pytest.fixture
        def factory(self) -> TransportMaker:
            ...  # make(name) -> a new unstarted transport; the same address for the same name

        @pytest.fixture
        def raw_sender(self) -> RawSender | None:
            ...  # optional: send(address, bytes) past the transport's framing

The tests cover request/response, one-way sends, handlers that answer at once or later, many
requests in flight, large frames, oversized and (with ``raw_sender``) malformed frames, unknown
peers, a peer that restarts, time-outs and close semantics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from gridkv.base.errors import PeerTimeout, PeerUnavailable, ProtocolError, ShuttingDown
from gridkv.transport.base import Handler, Transport

__all__ = ["RawSender", "TransportConformance", "TransportMaker"]

#: ``make(name)`` returns a new, unstarted transport; the same name gets the same address.
TransportMaker = Callable[[str], Awaitable[Transport]]
#: ``send(address, data)`` delivers raw bytes to a transport's listening address, past its
#: framing (a TCP connection writing ``data``, for example).
RawSender = Callable[[str, bytes], Awaitable[None]]


async def _echo(peer: str, payload: bytes, sender: str | None) -> bytes:
    return b"echo:" + payload


class TransportConformance:
    """Behaviour every GridKV transport must have."""

    @pytest.fixture
    def factory(self) -> TransportMaker:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    @pytest.fixture
    def raw_sender(self) -> RawSender | None:
        """Transports with a byte stream or datagrams override this; ``None`` skips."""
        return None

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

        async def handler(peer: str, payload: bytes, sender: str | None) -> None:
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
        async def slow_echo(peer: str, payload: bytes, sender: str | None) -> bytes:
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
        async def never(peer: str, payload: bytes, sender: str | None) -> bytes:
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

    async def test_a_handler_may_answer_at_once(self, factory: TransportMaker) -> None:
        def at_once(peer: str, payload: bytes, sender: str | None) -> bytes:
            return b"now:" + payload

        a = await self._started(factory, "a")
        b = await self._started(factory, "b", at_once)
        try:
            answers = await asyncio.gather(
                *(a.request(b.local_address, str(i).encode(), 5) for i in range(50))
            )
            assert answers == [f"now:{i}".encode() for i in range(50)]
        finally:
            await a.close()
            await b.close()

    async def test_a_failing_handler_is_counted_and_the_requester_times_out(
        self, factory: TransportMaker
    ) -> None:
        def broken(peer: str, payload: bytes, sender: str | None) -> bytes:
            if payload == b"bad":
                raise RuntimeError("handler bug")
            return payload

        a = await self._started(factory, "a")
        b = await self._started(factory, "b", broken)
        try:
            with pytest.raises(PeerTimeout):
                await a.request(b.local_address, b"bad", 0.2)
            assert b.stats().errors >= 1
            assert await a.request(b.local_address, b"good", 5) == b"good"
        finally:
            await a.close()
            await b.close()

    async def test_one_way_frames_sent_before_close_arrive_in_order(
        self, factory: TransportMaker
    ) -> None:
        got: list[bytes] = []
        arrived = asyncio.Event()

        def collect(peer: str, payload: bytes, sender: str | None) -> None:
            got.append(payload)
            if len(got) == 100:
                arrived.set()

        a = await self._started(factory, "a")
        b = await self._started(factory, "b", collect)
        try:
            for i in range(100):
                await a.send(b.local_address, str(i).encode())
            await a.close()
            await asyncio.wait_for(arrived.wait(), 5)
            assert got == [str(i).encode() for i in range(100)]
        finally:
            await a.close()
            await b.close()

    async def test_malformed_input_is_counted_and_the_transport_keeps_serving(
        self, factory: TransportMaker, raw_sender: RawSender | None
    ) -> None:
        if raw_sender is None:
            pytest.skip("this transport takes no raw bytes from outside")
        a = await self._started(factory, "a")
        b = await self._started(factory, "b")
        try:
            before = b.stats().errors
            # GridKV's stream framing: a length over any limit, a length too short for the
            # header, a frame of an unknown kind.
            for junk in (b"\xff" * 64, b"\x00\x00\x00\x01", b"\x00\x00\x00\x09\x07" + bytes(8)):
                await raw_sender(b.local_address, junk)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while b.stats().errors == before:
                assert loop.time() < deadline, "malformed input was not counted"
                await asyncio.sleep(0.01)
            assert await a.request(b.local_address, b"still", 5) == b"echo:still"
        finally:
            await a.close()
            await b.close()

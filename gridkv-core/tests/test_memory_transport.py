from __future__ import annotations

import asyncio
import threading

import pytest
from gridkv.base.errors import PeerTimeout, PeerUnavailable, ProtocolError, ShuttingDown
from gridkv.transport import MemoryNetwork, MemoryTransport, Transport


async def echo(peer: str, payload: bytes, sender: str | None) -> bytes:
    return b"echo:" + payload


async def start(net: MemoryNetwork, address: str, handler=echo, **kw: object) -> MemoryTransport:  # type: ignore[no-untyped-def]
    t = MemoryTransport(address, net, **kw)  # type: ignore[arg-type]
    await t.start(handler)
    return t


async def test_memory_transport_implements_the_protocol() -> None:
    assert isinstance(MemoryTransport("a", MemoryNetwork()), Transport)


async def test_request_gets_the_handlers_answer_and_the_sender_address() -> None:
    net = MemoryNetwork()
    seen: list[str] = []

    async def handler(peer: str, payload: bytes, sender: str | None) -> bytes:
        seen.append(peer)
        return payload.upper()

    a = await start(net, "a")
    await start(net, "b", handler)
    assert await a.request("b", b"hi") == b"HI"
    assert seen == ["a"]
    stats = a.stats()
    assert stats.requests_sent == 1
    assert stats.bytes_sent == 2


async def test_one_way_send_reaches_the_handler() -> None:
    net = MemoryNetwork()
    got = asyncio.Event()
    received: list[bytes] = []

    async def handler(peer: str, payload: bytes, sender: str | None) -> None:
        received.append(payload)
        got.set()

    a = await start(net, "a")
    await start(net, "b", handler)
    await a.send("b", b"gossip")
    await asyncio.wait_for(got.wait(), 2)
    assert received == [b"gossip"]


async def test_many_requests_in_flight_at_once() -> None:
    net = MemoryNetwork(seed=3, delay=(0.001, 0.01))
    a = await start(net, "a")
    await start(net, "b")
    answers = await asyncio.gather(*(a.request("b", str(i).encode()) for i in range(200)))
    assert answers == [b"echo:" + str(i).encode() for i in range(200)]


async def test_unknown_address_is_peer_unavailable_at_once() -> None:
    a = await start(MemoryNetwork(), "a")
    with pytest.raises(PeerUnavailable, match="no node is listening at 'nowhere'"):
        await a.request("nowhere", b"x")
    with pytest.raises(PeerUnavailable):
        await a.send("nowhere", b"x")


async def test_partition_makes_requests_time_out_and_heal_restores_them() -> None:
    net = MemoryNetwork()
    a = await start(net, "a")
    await start(net, "b")
    net.partition(["a"], ["b"])
    with pytest.raises(PeerTimeout, match="'b' did not answer within 0.05s"):
        await a.request("b", b"x", timeout=0.05)
    net.heal()
    assert await a.request("b", b"x") == b"echo:x"


async def test_asymmetric_block_loses_the_answer() -> None:
    net = MemoryNetwork()
    a = await start(net, "a")
    await start(net, "b")
    net.block("b", "a")
    with pytest.raises(PeerTimeout):
        await a.request("b", b"x", timeout=0.05)
    assert net.dropped == 1


async def test_loss_is_seeded_and_repeatable() -> None:
    async def run(seed: int) -> list[bool]:
        net = MemoryNetwork(seed=seed, loss=0.3)
        a = await start(net, "a")
        await start(net, "b")
        out = []
        for _ in range(40):
            try:
                await a.request("b", b"x", timeout=0.02)
                out.append(True)
            except PeerTimeout:
                out.append(False)
        return out

    first = await run(7)
    assert first == await run(7)
    assert 0 < first.count(False) < 40


async def test_oversized_frame_is_refused_before_sending() -> None:
    net = MemoryNetwork()
    a = await start(net, "a", max_frame_bytes=1024)
    await start(net, "b")
    with pytest.raises(ProtocolError, match="exceeds the limit of 1024"):
        await a.request("b", b"x" * 2000)


async def test_close_is_idempotent_and_fails_pending_and_later_requests() -> None:
    net = MemoryNetwork()

    async def never(peer: str, payload: bytes, sender: str | None) -> bytes:
        await asyncio.sleep(3600)
        return b""

    a = await start(net, "a")
    await start(net, "b", never)
    pending = asyncio.ensure_future(a.request("b", b"x", timeout=30))
    await asyncio.sleep(0)
    await a.close()
    await a.close()
    with pytest.raises(ShuttingDown):
        await pending
    with pytest.raises(ShuttingDown):
        await a.request("b", b"x")


async def test_closed_peer_is_unavailable_and_its_address_can_be_reused() -> None:
    net = MemoryNetwork()
    a = await start(net, "a")
    b = await start(net, "b")
    await b.close()
    with pytest.raises(PeerUnavailable):
        await a.request("b", b"x")
    await start(net, "b")
    assert await a.request("b", b"x") == b"echo:x"


async def test_an_address_in_use_is_refused() -> None:
    net = MemoryNetwork()
    await start(net, "a")
    with pytest.raises(PeerUnavailable, match="already in use"):
        await start(net, "a")


async def test_handler_errors_do_not_answer_and_are_counted() -> None:
    net = MemoryNetwork()

    async def broken(peer: str, payload: bytes, sender: str | None) -> bytes:
        raise RuntimeError("boom")

    a = await start(net, "a")
    b = await start(net, "b", broken)
    with pytest.raises(PeerTimeout):
        await a.request("b", b"x", timeout=0.05)
    assert b.stats().errors == 1


def test_nodes_on_different_event_loops_reach_each_other() -> None:
    net = MemoryNetwork()
    ready = threading.Event()
    stop: asyncio.Event | None = None
    loop_b: asyncio.AbstractEventLoop | None = None

    def run_b() -> None:
        nonlocal stop, loop_b

        async def main() -> None:
            nonlocal stop, loop_b
            stop = asyncio.Event()
            loop_b = asyncio.get_running_loop()
            await start(net, "b")
            ready.set()
            await stop.wait()

        asyncio.run(main())

    thread = threading.Thread(target=run_b)
    thread.start()
    assert ready.wait(5)

    async def client() -> bytes:
        a = await start(net, "a")
        return await a.request("b", b"cross")

    try:
        assert asyncio.run(client()) == b"echo:cross"
    finally:
        assert loop_b is not None and stop is not None
        loop_b.call_soon_threadsafe(stop.set)
        thread.join(5)

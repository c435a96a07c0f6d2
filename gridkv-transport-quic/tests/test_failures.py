"""Links through failures: dials that never finish, close() under them, peers that are killed,
restarted or refuse this node, guards that expire; every caller gets a GridKV error that says
why, soon, and nothing is left running."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gridkv import PeerUnavailable, ShuttingDown
from gridkv.base.options import SslOptions
from gridkv.security.certs import create_cluster_certs
from gridkv.testing.waiting import wait_until
from gridkv_transport_quic._link import BUSY_LANE, MAX_LANES
from gridkv_transport_quic._tls import configurations
from gridkv_transport_quic.transport import QuicTransport

MakeQuic = Callable[..., QuicTransport]  # the make_quic fixture (conftest)


async def echo(peer: str, payload: bytes, sender: str | None) -> bytes:
    return b"echo:" + payload


@pytest.fixture
def silent_address() -> Iterator[str]:
    """A UDP port that takes datagrams and never answers (a host that drops QUIC)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{silent.getsockname()[1]}"


async def kill(transport: QuicTransport) -> None:
    """The node behind ``transport`` dies: its links and its port go without a goodbye."""
    for link in list(transport._shared.links):
        link.drop()
    listener = transport._listener
    assert listener is not None
    listener.close()
    await asyncio.wait_for(listener.stopped, 5)


async def test_close_under_a_dial_gives_its_callers_shutting_down(
    make_quic: MakeQuic, silent_address: str
) -> None:
    a = make_quic("a", dial_timeout=3.0)
    await a.start(echo)
    request = asyncio.ensure_future(a.request(silent_address, b"x", 5))
    send = asyncio.ensure_future(a.send(silent_address, b"y"))
    await wait_until(lambda: a._dialing)
    await a.close()
    results = await asyncio.gather(request, send, return_exceptions=True)
    assert all(isinstance(r, ShuttingDown) for r in results), results


async def test_a_handshake_that_never_comes_says_so_through_the_back_off(
    make_quic: MakeQuic, silent_address: str
) -> None:
    a = make_quic("a", dial_timeout=0.3, reconnect_backoff=5, reconnect_max_backoff=5)
    await a.start(echo)
    try:
        for _ in range(2):  # the dial, then the back-off repeating why
            with pytest.raises(PeerUnavailable, match=r"no QUIC handshake within 0.3s"):
                await a.request(silent_address, b"x", 5)
    finally:
        await a.close()


async def test_a_dialler_the_acceptor_refuses_backs_off(
    make_quic: MakeQuic, certs: Path, tmp_path: Path
) -> None:
    # a's certificate is from another CA that a trusts: its dials complete on its side, and
    # b refuses them once it checked the chain. That is a failed dial, with its back-off.
    create_cluster_certs(str(tmp_path), ["a"], ca_name="another CA")
    ssl = SslOptions(
        enabled=True,
        cert_file=str(tmp_path / "a.crt"),
        key_file=str(tmp_path / "a.key"),
        ca_file=str(certs / "ca.crt"),
    )
    server, client = configurations(ssl, max_frame_bytes=1 << 20)
    a = QuicTransport(
        "127.0.0.1:0",
        server=server,
        client=client,
        ca_file=ssl.ca_file,
        reconnect_backoff=5.0,
        reconnect_max_backoff=5.0,
    )
    b = make_quic("b")
    await a.start(echo)
    await b.start(echo)
    try:
        for _ in range(10):
            with pytest.raises(PeerUnavailable, match=r"cannot connect to .*certificate"):
                await a.request(b.local_address, b"x", 1)
        # One dial, refused; the other requests met the back-off. (b's error count is no
        # measure: a's last packets after the refusal reach b as strays, counted too.)
        assert a._failures[b.local_address][0] == 1
        assert b.stats().errors >= 1
    finally:
        await a.close()
        await b.close()


async def test_a_killed_peer_fails_the_next_request_at_once(make_quic: MakeQuic) -> None:
    a = make_quic("a")
    b = make_quic("b")
    await a.start(echo)
    await b.start(echo)
    try:
        assert await a.request(b.local_address, b"hi", 2) == b"echo:hi"
        await kill(b)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(PeerUnavailable):
            # its port answers "unreachable" now: the first request learns it, or the next
            for _ in range(2):
                await a.request(b.local_address, b"again", 2)
        assert loop.time() - start < 1.0
    finally:
        await a.close()
        await b.close()


async def test_one_way_frames_reach_a_peer_restarted_on_the_same_port(
    make_quic: MakeQuic, udp_port: Callable[[], int]
) -> None:
    port = udp_port()
    a = make_quic("a", write_timeout=0.5)
    b = make_quic("b", port=port)
    await a.start(echo)
    await b.start(echo)
    await a.send(b.local_address, b"before")
    got: list[bytes] = []
    await kill(b)
    again = make_quic("b", port=port)
    await again.start(lambda peer, body, sender: got.append(body))
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while not got and loop.time() - start < 5:  # gossip every 100 ms
            await a.send(again.local_address, b"gossip")
            await asyncio.sleep(0.1)
        assert got
    finally:
        await a.close()
        await again.close()


async def test_lanes_opened_in_one_loop_turn_are_distinct_streams(make_quic: MakeQuic) -> None:
    a = make_quic("a")
    b = make_quic("b")
    await a.start(echo)
    await b.start(echo)
    try:
        answers = await asyncio.gather(
            *(a.request(b.local_address, b"%d" % i, 5) for i in range(100))
        )
        assert answers == [b"echo:%d" % i for i in range(100)]
        lanes = a._links[b.local_address]._lanes
        assert len(lanes) > 1
        assert len(set(lanes)) == len(lanes)
    finally:
        await a.close()
        await b.close()


async def test_more_lanes_than_an_acceptor_takes_are_never_opened(make_quic: MakeQuic) -> None:
    gate = asyncio.Event()

    async def slow(peer: str, payload: bytes, sender: str | None) -> bytes:
        await gate.wait()
        return b"ok"

    a = make_quic("a", max_lanes=100)
    b = make_quic("b", read_timeout=10)
    await a.start(echo)
    await b.start(slow)
    try:
        requests = []
        # More than MAX_LANES full lanes in flight, over several loop turns: lanes as they fill.
        for _ in range(MAX_LANES * BUSY_LANE // 100 + 2):
            requests += [
                asyncio.ensure_future(a.request(b.local_address, b"x", 10)) for _ in range(100)
            ]
            await asyncio.sleep(0.01)
        await wait_until(lambda: len(a._links[b.local_address]._lanes) == MAX_LANES - 1)
        gate.set()
        assert set(await asyncio.gather(*requests)) == {b"ok"}
    finally:
        await a.close()
        await b.close()


async def test_a_peer_that_stops_a_lane_cuts_the_link_and_the_next_request_gets_through(
    make_quic: MakeQuic,
) -> None:
    a = make_quic("a")
    b = make_quic("b")
    await a.start(echo)
    await b.start(echo)
    try:
        assert await a.request(b.local_address, b"x", 1) == b"echo:x"
        (accepted,) = b._shared.links
        accepted.quic.stop_stream(a._links[b.local_address]._lanes[0], 0)
        accepted.transmit()
        await wait_until(lambda: b.local_address not in a._links or a._links[b.local_address].gone)
        assert await a.request(b.local_address, b"y", 2) == b"echo:y"
    finally:
        await a.close()
        await b.close()


class _Guard:
    """A connection guard whose lifetime the test ends."""

    def __init__(self) -> None:
        self.expired = False
        self.peer_id = "peer"

    def seal(self, data: bytes) -> bytes:
        return data

    def open(self, record: bytes) -> bytes:
        return record


class _Binding:
    """A handshake that vouches for every certificate, with guards the test can expire."""

    def __init__(self) -> None:
        self.guards: list[_Guard] = []

    def binds_certificate(self, certificate: bytes) -> bool:
        return True

    def tls_peer(self, certificate: bytes, address: str) -> _Guard:
        guard = _Guard()
        self.guards.append(guard)
        return guard

    def refusal(self, error: Exception) -> bytes:
        return b""

    def initiate(self, address: str) -> tuple[object, bytes]:
        raise NotImplementedError

    def respond(self, peer_address: str, hello: bytes) -> tuple[_Guard, bytes]:
        raise NotImplementedError

    def complete(self, address: str, pending: object, reply: bytes) -> _Guard:
        raise NotImplementedError


async def test_an_expired_guard_retires_its_link_after_time_outs_without_a_stray_error(
    make_quic: MakeQuic,
) -> None:
    loop = asyncio.get_running_loop()
    errors: list[object] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    gate = asyncio.Event()

    async def slow(peer: str, payload: bytes, sender: str | None) -> bytes:
        await gate.wait()
        return b"late"

    binding = _Binding()
    a = make_quic("a")
    b = make_quic("b")
    assert await a.start(echo, binding)  # type: ignore[arg-type]
    assert await b.start(slow, binding)  # type: ignore[arg-type]
    try:

        async def caller(first: bool) -> bytes:
            try:
                return await a.request(b.local_address, b"x", 0.3)
            except Exception:
                if not first:
                    raise
                binding.guards[0].expired = True  # a key rotation, say
                gate.set()
                return await a.request(b.local_address, b"retry", 2)

        results = await asyncio.gather(caller(True), caller(False), return_exceptions=True)
        assert results[0] == b"late"
        await asyncio.sleep(0.1)
        assert errors == []
    finally:
        loop.set_exception_handler(None)
        await a.close()
        await b.close()


async def test_close_leaves_no_timer_and_fails_what_waits(make_quic: MakeQuic) -> None:
    gate = asyncio.Event()

    async def slow(peer: str, payload: bytes, sender: str | None) -> bytes:
        await gate.wait()
        return b"x"

    a = make_quic("a")
    b = make_quic("b")
    await a.start(echo)
    await b.start(slow)
    requests = [asyncio.ensure_future(a.request(b.local_address, b"r", 30)) for _ in range(5)]
    await a.send(b.local_address, b"one-way")
    await wait_until(lambda: b.stats().requests_received == 5)
    await asyncio.gather(a.close(), a.close())  # a second close waits for the first
    assert a._deadlines._timers == {}
    results = await asyncio.gather(*requests, return_exceptions=True)
    assert all(isinstance(r, ShuttingDown) for r in results), results
    with pytest.raises(ShuttingDown):
        await a.request(b.local_address, b"r", 1)
    gate.set()
    await b.close()

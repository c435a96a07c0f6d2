"""Connections the authenticator's handshake protects: the hellos, then sealed records.

The transports here run the ``ed25519`` authenticator's connection handshake (a cluster
secret as the trust root). Hostile peers are raw sockets: one that speaks before its hello,
never says hello, or, having done the handshake properly (it holds the secret), then replays,
alters or cuts a record.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

pytest.importorskip("gridkv_transport_tcp")

from gridkv import AuthenticationError, Options, PeerTimeout, PeerUnavailable
from gridkv.security.ed25519 import ConnectionHandshake, Ed25519Authenticator
from gridkv.security.identity import Identity, new_secret
from gridkv.testing.transports import free_port
from gridkv.testing.waiting import wait_until
from gridkv.transport import ConnectionGuard
from gridkv.wire.framing import HEAD, HELLO, RECORD, REQUEST, RESPONSE, FrameReader, head
from gridkv_transport_tcp.transport import TcpTransport, split_address

SECRET = new_secret()


def authenticator(node_id: str, secret: str = SECRET) -> Ed25519Authenticator:
    opts = Options.from_mapping({"local_node_id": node_id, "auth": {"cluster_secret": secret}})
    return Ed25519Authenticator(opts, clock=time.time)


def handshake(auth: Ed25519Authenticator) -> ConnectionHandshake:
    return auth.handshake(lambda address: None)


senders: list[str | None] = []


async def echo(peer: str, payload: bytes, sender: str | None) -> bytes:
    senders.append(sender)
    return b"echo:" + payload


async def started(auth: Ed25519Authenticator, dial_timeout: float = 2) -> TcpTransport:
    transport = TcpTransport(f"127.0.0.1:{free_port()}", dial_timeout=dial_timeout)
    assert await transport.start(echo, handshake(auth))
    return transport


def frame(kind: int, request_id: int, body: bytes) -> bytes:
    return head(kind, request_id, len(body)) + body


class RawPeer:
    """A raw socket that does the dialler's handshake by hand, then seals what it likes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._frames = FrameReader(1 << 20)
        self._got: list[tuple[int, int, bytes]] = []
        self.guard: ConnectionGuard | None = None

    async def next_frame(self) -> tuple[int, int, bytes] | None:
        """The next frame, ``None`` once the connection is closed."""
        while not self._got:
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            if not data:
                return None
            self._got += self._frames.feed(data, 0.0)
        return self._got.pop(0)

    async def greet(self, address: str) -> None:
        hs = handshake(authenticator("raw"))
        pending, hello = hs.initiate(address)
        self.writer.write(frame(HELLO, 0, hello))
        reply = await self.next_frame()
        assert reply is not None and reply[0] == HELLO
        self.guard = hs.complete(address, pending, reply[2])

    def record(self, *frames: bytes) -> bytes:
        assert self.guard is not None
        sealed = self.guard.seal(b"".join(frames))
        return frame(RECORD, 0, sealed)


@pytest.fixture
async def raw_to() -> AsyncIterator[object]:
    opened: list[asyncio.StreamWriter] = []

    async def connect(transport: TcpTransport) -> RawPeer:
        reader, writer = await asyncio.open_connection(*split_address(transport.local_address))
        opened.append(writer)
        return RawPeer(reader, writer)

    yield connect
    for writer in opened:
        writer.close()


async def test_peers_with_the_secret_talk_over_records_and_know_who_sent_each_frame() -> None:
    a_auth, b_auth = authenticator("a"), authenticator("b")
    a, b = await started(a_auth), await started(b_auth)
    senders.clear()
    try:
        assert await a.request(b.local_address, b"hi", 5) == b"echo:hi"
        assert await b.request(a.local_address, b"yo", 5) == b"echo:yo"
        await a.send(b.local_address, b"one way")
        await wait_until(lambda: len(senders) == 3)
        assert sorted(s or "" for s in senders) == ["a", "a", "b"]
        assert a_auth.peer_keys() == {"b": b_auth.identity.public_key}
        assert a_auth.rejections() == {} and b_auth.rejections() == {}
    finally:
        await a.close()
        await b.close()


async def test_a_dialler_with_another_secret_is_told_why_and_counted() -> None:
    a_auth = authenticator("a")
    a, mallory = await started(a_auth), await started(authenticator("mallory", new_secret()))
    try:
        with pytest.raises(AuthenticationError, match="refused this node: .*not vouched for"):
            await mallory.request(a.local_address, b"let me in", 5)
        assert a_auth.rejections() == {"not vouched for": 1}
        # It backs off like any failed dial: its next tries cost the node nothing.
        for _ in range(5):
            with pytest.raises(PeerUnavailable, match="unreachable .*not vouched for"):
                await mallory.request(a.local_address, b"again", 5)
            with pytest.raises(PeerUnavailable, match="unreachable .*not vouched for"):
                await mallory.send(a.local_address, b"again")
        assert a_auth.rejections() == {"not vouched for": 1}
        assert a.stats().requests_received == 0
    finally:
        await a.close()
        await mallory.close()


async def test_a_frame_before_the_hello_is_refused_and_never_delivered(raw_to) -> None:  # type: ignore[no-untyped-def]
    a_auth = authenticator("a")
    a = await started(a_auth)
    raw = await raw_to(a)
    senders.clear()
    try:
        raw.writer.write(frame(REQUEST, 1, b"hi") + frame(REQUEST, 2, b"again"))
        assert await raw.next_frame() is None  # closed, nothing answered
        assert a_auth.rejections() == {"unauthenticated frame": 1}
        assert a.stats().requests_received == 0 and senders == []
    finally:
        await a.close()


async def test_nothing_after_a_refused_hello_is_delivered(raw_to) -> None:  # type: ignore[no-untyped-def]
    a_auth = authenticator("a")
    a = await started(a_auth)
    raw = await raw_to(a)
    senders.clear()
    outsider = handshake(authenticator("mallory", new_secret()))
    _, hello = outsider.initiate(a.local_address)
    try:
        raw.writer.write(frame(HELLO, 0, hello) + frame(REQUEST, 1, b"hi"))
        refusal = await raw.next_frame()
        assert refusal is not None and refusal[0] == HELLO
        assert b"not vouched for" in refusal[2]
        assert await raw.next_frame() is None
        assert a.stats().requests_received == 0 and senders == []
    finally:
        await a.close()


async def test_a_connection_that_never_says_hello_is_closed_and_counted(raw_to) -> None:  # type: ignore[no-untyped-def]
    a_auth = authenticator("a")
    a = await started(a_auth, dial_timeout=0.3)
    raw = await raw_to(a)
    loop = asyncio.get_running_loop()
    try:
        opened = loop.time()
        assert await raw.next_frame() is None
        assert 0.25 <= loop.time() - opened < 3  # after dial_timeout (0.3 s)
        assert a_auth.rejections() == {"handshake timed out": 1}
    finally:
        await a.close()


async def test_a_peer_that_never_replies_times_out_the_dial() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)  # accepts (in the kernel), never replies
    client = await started(authenticator("c"), dial_timeout=0.3)
    try:
        with pytest.raises(PeerTimeout, match=r"sent no hello within 0\.3s"):
            await client.request(f"127.0.0.1:{listener.getsockname()[1]}", b"x", 5)
    finally:
        await client.close()
        listener.close()


async def test_a_record_answers_and_a_replayed_one_cuts_the_connection(raw_to) -> None:  # type: ignore[no-untyped-def]
    a_auth = authenticator("a")
    a = await started(a_auth)
    raw = await raw_to(a)
    try:
        await raw.greet(a.local_address)
        record = raw.record(frame(REQUEST, 7, b"hi"))
        raw.writer.write(record)
        answer = await raw.next_frame()
        assert answer is not None and answer[0] == RECORD
        inner = FrameReader(1 << 20).feed(raw.guard.open(answer[2]), 0.0)
        assert inner == [(RESPONSE, 7, b"echo:hi")]
        raw.writer.write(record)  # the same bytes again
        assert await raw.next_frame() is None
        assert a_auth.rejections() == {"failed its authentication tag": 1}
        assert a.stats().requests_received == 1
    finally:
        await a.close()


@pytest.mark.parametrize("damage", ["flip a byte", "drop the tag", "plain frame", "half a frame"])
async def test_an_altered_record_or_a_frame_outside_one_cuts_the_connection(  # type: ignore[no-untyped-def]
    raw_to, damage: str
) -> None:
    a_auth = authenticator("a")
    a = await started(a_auth)
    raw = await raw_to(a)
    senders.clear()
    try:
        await raw.greet(a.local_address)
        request = frame(REQUEST, 1, b"write this")
        if damage == "flip a byte":
            sent = bytearray(raw.record(request))
            sent[HEAD.size + 3] ^= 1
        elif damage == "drop the tag":
            whole = raw.record(request)
            sent = bytearray(frame(RECORD, 0, whole[HEAD.size : -16]))
        elif damage == "plain frame":
            sent = bytearray(request)
        else:
            sent = bytearray(raw.record(request[:-3]))
        raw.writer.write(bytes(sent))
        assert await raw.next_frame() is None
        assert senders == [] and a.stats().requests_received == 0
        assert sum(a_auth.rejections().values()) == (damage != "half a frame")
    finally:
        await a.close()


async def test_after_a_rotation_new_connections_carry_the_new_key() -> None:
    a_auth, b_auth = authenticator("a"), authenticator("b")
    a, b = await started(a_auth), await started(b_auth)
    try:
        assert await a.request(b.local_address, b"before", 5) == b"echo:before"
        old = a_auth.identity.public_key
        assert b_auth.peer_keys()["a"] == old
        a_auth.rotate(key=Identity.load("a").private_key_text)
        assert await a.request(b.local_address, b"after", 5) == b"echo:after"
        assert b_auth.peer_keys()["a"] == a_auth.identity.public_key != old
        assert a_auth.handshakes_started == 2
        # The connection set up under the old key was closed once its request was done.
        await wait_until(lambda: a.stats().connections == 1)
    finally:
        await a.close()
        await b.close()


async def test_frames_of_the_largest_size_travel_in_records_with_small_ones() -> None:
    limit = 64 * 1024

    async def same(peer: str, payload: bytes, sender: str | None) -> bytes:
        return payload

    a, b = (
        TcpTransport(f"127.0.0.1:{free_port()}", dial_timeout=2, max_frame_bytes=limit)
        for _ in range(2)
    )
    assert await a.start(same, handshake(authenticator("a")))
    assert await b.start(same, handshake(authenticator("b")))
    try:
        payloads = [bytes([i % 251]) * (limit if i % 3 == 0 else i * 100) for i in range(40)]
        answers = await asyncio.gather(*(a.request(b.local_address, p, 10) for p in payloads))
        assert answers == payloads
    finally:
        await a.close()
        await b.close()


def test_a_blocking_facade_rotates_its_key_from_the_callers_thread() -> None:
    from gridkv import GridKV

    secret = new_secret()

    def opts(node_id: str, seeds: list[str]) -> dict[str, object]:
        return {
            "local_node_id": node_id,
            "local_address": "127.0.0.1:0",
            "seed_addrs": seeds,
            "network": {"type": "tcp"},
            "auth": {"cluster_secret": secret},
            "replica_count": 2,
        }

    a = GridKV(**opts("r-a", []))
    with a, GridKV(**opts("r-b", [a.stats().network.local_address])) as b:
        b.wait_ready(timeout=10)
        auth = b.node.authenticator
        assert isinstance(auth, Ed25519Authenticator)
        old = auth.identity.public_key
        b.node.rotate_key(key=Identity.load("r-b").private_key_text)  # from this thread
        assert auth.identity.public_key != old
        b.set("after", b"rotation", consistency="all")
        assert a.get("after", consistency="all") == b"rotation"


def test_a_connection_dialled_to_a_seed_is_replaced_once_the_view_puts_another_node_there() -> None:
    # A seed's id is not known when it is dialled: the connection is bound to whoever
    # answered. Once the view says another node is at that address, the connection is no
    # longer used (answers on it could claim that node's name).
    view: dict[str, str] = {}
    dialler = authenticator("d").handshake(view.get)
    acceptor = handshake(authenticator("seed"))
    pending, hello = dialler.initiate("10.0.0.9:7946")
    _, reply = acceptor.respond("peer", hello)
    guard = dialler.complete("10.0.0.9:7946", pending, reply)
    assert guard.peer_id == "seed" and not guard.expired
    view["10.0.0.9:7946"] = "seed"
    guard._next_check = 0.0  # type: ignore[attr-defined]  # (looked at once a second)
    assert not guard.expired
    view["10.0.0.9:7946"] = "someone-else"
    guard._next_check = 0.0  # type: ignore[attr-defined]
    assert guard.expired
    view["10.0.0.9:7946"] = "seed"
    guard._next_check = 0.0  # type: ignore[attr-defined]
    assert guard.expired  # for good: the pool has let it go
    # A connection dialled knowing who is there is for that node only, from its hello on.
    view["10.0.0.9:7946"] = "someone-else"
    _, hello = dialler.initiate("10.0.0.9:7946")
    with pytest.raises(AuthenticationError, match="meant for 'someone-else'"):
        acceptor.respond("peer", hello)

"""Keep-alive and the idle time-out: a quiet link lives on PINGs, a silent peer's link closes.

The QUIC idle time-out is 60 s in service (``_tls.IDLE_TIMEOUT``); these links get 0.6 s, so
a dialled link PINGs after 0.2 s without a packet. Waiting out a few idle time-outs is what
the behaviour under test takes; everything else waits on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest
from gridkv.testing.waiting import wait_until
from gridkv_transport_quic._link import Link
from gridkv_transport_quic._tls import IDLE_TIMEOUT, KEEPALIVE_FRACTION
from gridkv_transport_quic.transport import QuicTransport

MakeQuic = Callable[..., QuicTransport]  # the make_quic fixture (conftest)

IDLE = 0.6


async def echo(peer: str, payload: bytes, sender: str | None) -> bytes:
    return b"echo:" + payload


def count_pings(link: Link, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The loop times at which ``link`` sends a PING from now on."""
    loop = asyncio.get_running_loop()
    sent: list[float] = []
    send_ping = link.quic.send_ping

    def ping(uid: int) -> None:
        sent.append(loop.time())
        send_ping(uid)

    monkeypatch.setattr(link.quic, "send_ping", ping)
    return sent


async def linked(make_quic: MakeQuic) -> tuple[QuicTransport, QuicTransport, Link, Link]:
    """Transports a (dialler) and b, a link between them after one request, both its ends."""
    a = make_quic("a", idle_timeout=IDLE)
    b = make_quic("b", idle_timeout=IDLE)
    await a.start(echo)
    await b.start(echo)
    assert await a.request(b.local_address, b"x", 2) == b"echo:x"
    dialled = a._links[b.local_address]
    await wait_until(lambda: len(b._shared.links) == 1, 5)
    (accepted,) = b._shared.links
    return a, b, dialled, accepted


def test_by_default_a_quiet_link_pings_after_20_s_of_its_60_s(make_quic: MakeQuic) -> None:
    transport = make_quic("a")  # the configurations the options make
    assert transport._client_config.idle_timeout == IDLE_TIMEOUT == 60.0
    assert transport._server_config.idle_timeout == IDLE_TIMEOUT
    assert transport.keepalive_after == pytest.approx(IDLE_TIMEOUT * KEEPALIVE_FRACTION)
    assert transport.keepalive_after == pytest.approx(20.0)


async def test_a_quiet_link_is_kept_alive_by_pings_past_several_idle_time_outs(
    make_quic: MakeQuic, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, dialled, accepted = await linked(make_quic)
    try:
        assert a.keepalive_after == pytest.approx(IDLE * KEEPALIVE_FRACTION)
        loop = asyncio.get_running_loop()
        pings = count_pings(dialled, monkeypatch)
        quiet_since = loop.time()
        sent = a.stats().bytes_sent
        await asyncio.sleep(4 * IDLE)  # nothing but the keep-alive goes over the link
        assert a.stats().bytes_sent == sent
        assert len(pings) >= 4, pings
        # No gap between packets long enough for either side's idle time-out.
        gaps = [later - earlier for earlier, later in itertools.pairwise([quiet_since, *pings])]
        assert max(gaps) < IDLE, gaps
        assert not dialled.gone and not accepted.gone
        # The same link carries the next request, and b still holds only the one it accepted.
        assert await a.request(b.local_address, b"y", 2) == b"echo:y"
        assert a._links[b.local_address] is dialled
        assert b._shared.links == {accepted}
    finally:
        await a.close()
        await b.close()


async def test_a_dialler_that_went_silent_has_its_link_closed_after_the_idle_time_out(
    make_quic: MakeQuic,
) -> None:
    a, b, dialled, accepted = await linked(make_quic)
    try:
        loop = asyncio.get_running_loop()
        heard = accepted.heard
        dialled.drop()  # a forgets the link and its socket without a word (as if killed)
        await asyncio.wait_for(asyncio.shield(accepted.closed), 5 * IDLE)
        assert loop.time() - heard >= IDLE * 0.9
        assert accepted.failure is not None
        assert "went silent" in str(accepted.failure)
        assert "idle time-out" in str(accepted.failure)
        assert not b._shared.links
    finally:
        await a.close()
        await b.close()


async def test_a_peer_that_went_silent_has_its_link_closed_after_the_idle_time_out(
    make_quic: MakeQuic, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, dialled, accepted = await linked(make_quic)
    try:
        loop = asyncio.get_running_loop()
        pings = count_pings(dialled, monkeypatch)
        listener = b._listener
        assert listener is not None
        # b's host stops answering: its datagrams vanish (no ICMP, no goodbye).
        monkeypatch.setattr(listener, "datagram_received", lambda data, addr: None)
        heard = dialled.heard
        await asyncio.wait_for(asyncio.shield(dialled.closed), 5 * IDLE)
        assert loop.time() - heard >= IDLE * 0.9
        assert pings  # the keep-alive tried; nothing answered it
        assert dialled.failure is not None
        assert "went silent" in str(dialled.failure)
        assert b.local_address not in a._links
        await asyncio.wait_for(asyncio.shield(accepted.closed), 5 * IDLE)  # b's end alike
        # Not a refusal: the next request dials again at once, without a back-off.
        assert b.local_address not in a._failures
        monkeypatch.undo()
        assert await a.request(b.local_address, b"z", 2) == b"echo:z"
        assert a._links[b.local_address] is not dialled
    finally:
        await a.close()
        await b.close()

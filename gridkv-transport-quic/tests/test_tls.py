"""Who a quic node lets in (mutual TLS, ALPN, node ids), and its configuration errors."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aioquic.quic.configuration import QuicConfiguration
from gridkv import AsyncGridKV, ConfigError, Options, PeerUnavailable
from gridkv.base.options import SslOptions
from gridkv.security.ed25519 import Ed25519Authenticator, TlsGuard
from gridkv.security.identity import new_secret
from gridkv.transport.base import Handshake
from gridkv_transport_quic._link import Link
from gridkv_transport_quic._tls import configurations
from gridkv_transport_quic.transport import QuicTransport

MakeQuic = Callable[..., QuicTransport]  # the make_quic fixture (conftest)
Intruder = Callable[..., Awaitable[Link]]  # the intruder fixture (conftest)


async def echo(peer: str, payload: bytes, sender: str | None) -> bytes:
    return b"echo:" + payload


async def started(*transports: QuicTransport) -> None:
    for transport in transports:
        await transport.start(echo)


async def closed(*transports: QuicTransport) -> None:
    for transport in transports:
        await transport.close()


async def test_a_peer_with_a_certificate_from_another_ca_is_refused_both_ways(
    make_quic: MakeQuic, other_certs: Path
) -> None:
    server = make_quic("a")
    stranger = make_quic("stranger", directory=other_certs)
    await started(server, stranger)
    try:
        # The stranger does not trust the server's certificate...
        with pytest.raises(PeerUnavailable, match="cannot connect to .*[Cc]ertificate"):
            await stranger.request(server.local_address, b"hi", 2)
        # ...and the server does not trust the stranger's (it trusts the server's CA here).
        trusting = make_quic("stranger", directory=other_certs, ca=server_ca(server))
        await trusting.start(echo)
        try:
            with pytest.raises(PeerUnavailable, match="certificate is refused"):
                await trusting.request(server.local_address, b"hi", 2)
        finally:
            await trusting.close()
        assert server.stats().requests_received == 0
    finally:
        await closed(server, stranger)


def server_ca(transport: QuicTransport) -> Path:
    return Path(transport._shared.ca_file).parent


def foreign_client(certs: Path, alpn: str) -> QuicConfiguration:
    """A dialling configuration made by hand: ``alpn``, the cluster CA, no certificate."""
    return QuicConfiguration(
        is_client=True,
        alpn_protocols=[alpn],
        verify_mode=ssl.CERT_REQUIRED,
        cafile=str(certs / "ca.crt"),
    )


async def test_a_dialler_without_a_certificate_gets_nothing(
    make_quic: MakeQuic, certs: Path, intruder: Intruder
) -> None:
    server = make_quic("a")
    await server.start(echo)
    try:
        config = foreign_client(certs, "gridkv")  # and no certificate of its own
        link = await intruder(server.local_address, config, wait=False)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        await asyncio.wait_for(asyncio.shield(link.ready), 5)
        link.request(b"let me in", future)
        with pytest.raises(PeerUnavailable, match="presented no certificate"):
            await asyncio.wait_for(future, 5)
        assert server.stats().requests_received == 0
        assert server.stats().errors >= 1
    finally:
        await server.close()


async def test_a_dialler_that_does_not_speak_gridkv_alpn_is_refused(
    make_quic: MakeQuic, certs: Path, intruder: Intruder
) -> None:
    server = make_quic("a")
    await server.start(echo)
    try:
        config = foreign_client(certs, "h3")
        config.load_cert_chain(certs / "b.crt", certs / "b.key")
        link = await intruder(server.local_address, config, wait=False)
        with pytest.raises(PeerUnavailable, match="handshake failed.*ALPN|handshake failed"):
            await asyncio.wait_for(link.ready, 5)
        assert server.stats().requests_received == 0
    finally:
        await server.close()


async def test_an_unreachable_port_fails_fast_and_backs_off(make_quic: MakeQuic) -> None:
    a = make_quic("a")
    gone = make_quic("b")
    await started(a, gone)
    address = gone.local_address
    await gone.close()
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(PeerUnavailable, match="cannot connect"):
            await a.request(address, b"x", 2)
        assert loop.time() - start < 1.5  # the ICMP refusal, not the time-out
        with pytest.raises(PeerUnavailable, match="back-off"):
            await a.request(address, b"x", 2)
    finally:
        await a.close()


def test_choosing_quic_without_certificates_names_the_command_that_makes_them(
    certs: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"network\.ssl\.enabled.*gridkv certs create"):
        QuicTransport.from_options(Options(network={"type": "quic"}))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"network\.ssl\.ca_file.*gridkv certs create"):
        configurations(
            SslOptions(enabled=True, cert_file=str(certs / "a.crt")), max_frame_bytes=1 << 20
        )
    with pytest.raises(ConfigError, match=r"network\.ssl\.cert_file.*cannot load"):
        configurations(
            SslOptions(enabled=True, cert_file="/nonexistent/a.crt", ca_file=str(certs / "ca.crt")),
            max_frame_bytes=1 << 20,
        )
    with pytest.raises(ConfigError, match=r"network\.ssl\.ca_file.*cannot load"):
        configurations(
            SslOptions(
                enabled=True,
                cert_file=str(certs / "a.crt"),
                key_file=str(certs / "a.key"),
                ca_file=str(certs / "a.key"),
            ),
            max_frame_bytes=1 << 20,
        )
    with pytest.raises(ConfigError, match=r"verify_peer.*cannot be turned off"):
        configurations(
            SslOptions(
                enabled=True,
                cert_file=str(certs / "a.crt"),
                ca_file=str(certs / "ca.crt"),
                verify_peer=False,
                check_hostname=False,
            ),
            max_frame_bytes=1 << 20,
        )


def node_options(certs: Path, node: str, seeds: list[str], auth: dict[str, Any]) -> Options:
    files = {
        "ca_file": str(certs / "ca.crt"),
        "cert_file": str(certs / f"{node}.crt"),
        "key_file": str(certs / f"{node}.key"),
    }
    return Options.from_mapping(
        {
            "local_node_id": node,
            "local_address": "127.0.0.1:0",
            "seed_addrs": seeds,
            "replica_count": 2,
            "auth": files if auth.get("ca") else auth,
            "network": {"type": "quic", "ssl": {"enabled": True, **files}},
        }
    )


async def test_under_the_auth_ca_the_certificate_names_the_node_and_nothing_is_sealed_twice(
    certs: Path,
) -> None:
    a = AsyncGridKV(node_options(certs, "a", [], {"ca": True}))
    async with a:
        seeds = [a.stats().network.local_address]
        async with AsyncGridKV(node_options(certs, "b", seeds, {"ca": True})) as b:
            await b.wait_ready(timeout=10)
            await a.set("k", b"v", consistency="all")
            assert await b.get("k", consistency="all") == b"v"
            for kv in (a, b):
                assert kv.stats().network.type == "quic"
                assert kv.node.messaging.guarded  # the transport vouches for its peers
                auth = kv.node.authenticator
                assert isinstance(auth, Ed25519Authenticator)
                assert auth.handshakes_started == 0  # no hellos: the certificates named them
                links = kv.node.transport._shared.links  # type: ignore[attr-defined]
                assert {type(link.guard) for link in links} == {TlsGuard}
                assert {link.sender for link in links} == {"b" if kv is a else "a"}


def ca_handshake(certs: Path, node: str, node_at: Callable[[str], str | None]) -> Handshake:
    """The connection handshake of ``node`` under the cluster CA (``auth.ca_file``)."""
    options = node_options(certs, node, [], {"ca": True})
    return Ed25519Authenticator(options, clock=time.time).handshake(node_at)


async def test_a_certificate_naming_another_node_than_the_view_expects_is_refused(
    certs: Path, make_quic: MakeQuic
) -> None:
    # "c" answers at the address where a's view has "b": its certificate names "c".
    a, c = make_quic("a"), make_quic("c")
    address = c.local_address
    assert await a.start(echo, ca_handshake(certs, "a", lambda at: "b" if at == address else None))
    assert await c.start(echo, ca_handshake(certs, "c", lambda at: None))
    try:
        with pytest.raises(PeerUnavailable, match=r"certificate of 'c'.*view has 'b'"):
            await a.request(address, b"x", 2)
        assert c.stats().requests_received == 0
        # Where the view expects "c", the same link is fine, and c learns who dialled.
        senders: list[str | None] = []

        async def who(peer: str, payload: bytes, sender: str | None) -> bytes:
            senders.append(sender)
            return b"ok"

        d = make_quic("d")
        await d.start(echo, ca_handshake(certs, "d", lambda at: "c" if at == address else None))
        c._shared.handler = who
        try:
            assert await d.request(address, b"x", 2) == b"ok"
            assert senders == ["d"]
        finally:
            await d.close()
    finally:
        await closed(a, c)


async def test_with_a_cluster_secret_the_security_layer_authenticates_inside_tls(
    certs: Path,
) -> None:
    secret = {"cluster_secret": new_secret()}
    a = AsyncGridKV(node_options(certs, "a", [], secret))
    async with a:
        seeds = [a.stats().network.local_address]
        async with AsyncGridKV(node_options(certs, "b", seeds, secret)) as b:
            await b.wait_ready(timeout=10)
            await a.set("k", b"v", consistency="all")
            assert await b.get("k", consistency="all") == b"v"
            assert not b.node.messaging.guarded  # frames are sealed by the security layer
            auth = b.node.authenticator
            assert isinstance(auth, Ed25519Authenticator) and auth.handshakes_started >= 1

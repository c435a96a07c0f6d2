"""TLS between nodes: the conformance suite over mutual TLS, and who is let in."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("gridkv_transport_tcp")
pytest.importorskip("cryptography")

from gridkv import (
    AsyncGridKV,
    ConfigError,
    Options,
    PeerTimeout,
    PeerUnavailable,
    load_config,
)
from gridkv.base.options import SslOptions
from gridkv.security.certs import create_cluster_certs
from gridkv.security.ed25519 import Ed25519Authenticator, Guard, TlsGuard
from gridkv.security.identity import new_secret
from gridkv.testing.conformance import TransportConformance, TransportMaker
from gridkv.testing.transports import free_port
from gridkv.transport import Transport
from gridkv_transport_tcp.transport import TcpTransport, ssl_contexts

MakeTls = Callable[..., SslOptions]


async def echo(peer: str, payload: bytes, sender: str | None) -> bytes:
    return b"echo:" + payload


def tls_transport(ssl: SslOptions, **kwargs: float) -> TcpTransport:
    return TcpTransport(
        f"127.0.0.1:{free_port()}", ssl_contexts=ssl_contexts(ssl), dial_timeout=2, **kwargs
    )


class TestTcpTransportOverTls(TransportConformance):
    @pytest.fixture
    def factory(self, make_tls: MakeTls) -> TransportMaker:
        ports: dict[str, int] = {}
        tls: dict[str, SslOptions] = {}

        async def make(name: str) -> Transport:
            port = ports.setdefault(name, free_port())
            ssl = tls.setdefault(name, make_tls(name))
            return TcpTransport(f"127.0.0.1:{port}", read_timeout=5, ssl_contexts=ssl_contexts(ssl))

        return make


async def test_a_peer_with_a_certificate_from_another_ca_is_refused(make_tls: MakeTls) -> None:
    server = tls_transport(make_tls("server"))
    stranger = tls_transport(make_tls("stranger", ca="other"))
    await server.start(echo)
    await stranger.start(echo)
    try:
        with pytest.raises(PeerUnavailable, match="cannot connect to .*certificate"):
            await stranger.request(server.local_address, b"hi", 2)
    finally:
        await stranger.close()
        await server.close()


async def test_a_plain_tcp_peer_gets_nothing_from_a_tls_node(make_tls: MakeTls) -> None:
    server = tls_transport(make_tls("server"))
    plain = TcpTransport(f"127.0.0.1:{free_port()}", dial_timeout=2)
    await server.start(echo)
    await plain.start(echo)
    try:
        with pytest.raises((PeerTimeout, PeerUnavailable)):
            await plain.request(server.local_address, b"hi", 1)
        assert server.stats().requests_received == 0
    finally:
        await plain.close()
        await server.close()


async def test_a_certificate_for_another_address_fails_the_hostname_check(
    make_tls: MakeTls,
) -> None:
    # The server's certificate names 127.0.0.1; dialling it as 127.0.0.2 must not pass.
    server = TcpTransport("127.0.0.2:0", ssl_contexts=ssl_contexts(make_tls("server")))
    client = tls_transport(make_tls("client"))
    await server.start(echo)
    await client.start(echo)
    try:
        with pytest.raises(PeerUnavailable, match="certificate"):
            await client.request(server.local_address, b"hi", 2)
    finally:
        await client.close()
        await server.close()


def test_unloadable_tls_files_are_config_errors_naming_the_key(make_tls: MakeTls) -> None:
    good = make_tls("node")
    bad_cert = SslOptions(enabled=True, cert_file="/nonexistent/node.crt")
    with pytest.raises(ConfigError, match=r"network\.ssl\.cert_file.*nonexistent"):
        ssl_contexts(bad_cert)
    bad_ca = SslOptions(
        enabled=True, cert_file=good.cert_file, key_file=good.key_file, ca_file=good.key_file
    )
    with pytest.raises(ConfigError, match=r"network\.ssl\.ca_file"):
        ssl_contexts(bad_ca)
    assert ssl_contexts(SslOptions()) is None


async def test_two_nodes_replicate_over_tls_configured_from_options(make_tls: MakeTls) -> None:
    def options(node: str, seeds: list[str]) -> Options:
        config = {
            "local_node_id": node,
            "local_address": "127.0.0.1:0",
            "seed_addrs": seeds,
            "disable_auth": True,
            "replica_count": 2,
            "network": {"type": "tcp", "ssl": make_tls(node).to_dict()},
        }
        return load_config(json.dumps(config))  # as a configuration file would give it

    async with (
        AsyncGridKV(options("tls-a", [])) as a,
        AsyncGridKV(options("tls-b", [a.stats().network.local_address])) as b,
    ):
        await b.wait_ready(timeout=10)
        await a.set("secret", b"over tls", consistency="all")
        assert await b.get("secret") == b"over tls"
        assert b.stats().network.type == "tcp"


async def test_under_the_auth_ca_tls_authenticates_peers_and_nothing_is_sealed_twice(
    tmp_path: Path, make_tls: MakeTls
) -> None:
    create_cluster_certs(str(tmp_path), ["t-a", "t-b"])

    def options(node: str, seeds: list[str]) -> Options:
        files = {
            "ca_file": str(tmp_path / "ca.crt"),
            "cert_file": str(tmp_path / f"{node}.crt"),
            "key_file": str(tmp_path / f"{node}.key"),
        }
        ssl = {"enabled": True, "check_hostname": False, **files}
        return Options.from_mapping(
            {
                "local_node_id": node,
                "local_address": "127.0.0.1:0",
                "seed_addrs": seeds,
                "replica_count": 2,
                "auth": files,
                "network": {"type": "tcp", "ssl": ssl},
            }
        )

    a = AsyncGridKV(options("t-a", []))
    async with a, AsyncGridKV(options("t-b", [a.stats().network.local_address])) as b:
        await b.wait_ready(timeout=10)
        await a.set("k", b"v", consistency="all")
        assert await b.get("k", consistency="all") == b"v"
        for kv in (a, b):
            auth = kv.node.authenticator
            assert isinstance(auth, Ed25519Authenticator)
            assert auth.handshakes_started == 0  # TLS vouched for every connection
            assert kv.stats().cluster.pubkeys_ready
            guards = {type(c.guard) for c in kv.node.transport._pool.connections}  # type: ignore[attr-defined]
            assert guards == {TlsGuard}
    # TLS from another CA than the trust root (a cluster secret): the hellos run inside TLS.
    secret = new_secret()

    def secret_options(node: str, seeds: list[str]) -> Options:
        ssl = {**make_tls(node).to_dict(), "check_hostname": False}
        return Options.from_mapping(
            {
                "local_node_id": node,
                "local_address": "127.0.0.1:0",
                "seed_addrs": seeds,
                "auth": {"cluster_secret": secret},
                "network": {"type": "tcp", "ssl": ssl},
            }
        )

    async with AsyncGridKV(secret_options("t-d", [])) as d:
        seeds = [d.stats().network.local_address]
        async with AsyncGridKV(secret_options("t-e", seeds)) as e:
            await e.wait_ready(timeout=10)
            auth = e.node.authenticator
            assert isinstance(auth, Ed25519Authenticator) and auth.handshakes_started >= 1
            guards = {type(c.guard) for c in e.node.transport._pool.connections}  # type: ignore[attr-defined]
            assert guards == {Guard}

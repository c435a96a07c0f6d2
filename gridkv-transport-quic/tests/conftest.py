"""Fixtures of the quic transport tests: a cluster CA and node certificates as `gridkv certs
create` writes them (real X.509, Ed25519), and transports built on them."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gridkv_transport_quic")

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from gridkv.base.options import SslOptions
from gridkv.security.certs import create_cluster_certs
from gridkv_transport_quic._link import Link, Shared
from gridkv_transport_quic._tls import configurations
from gridkv_transport_quic.transport import QuicTransport, split_address

NODES = ["a", "b", "c", "d", "e", "stranger"]


def pytest_asyncio_loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test here runs on asyncio's loop, and again on uvloop when installed."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    try:
        import uvloop
    except ImportError:
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port on ``host`` nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def udp_port() -> Callable[[], int]:
    """:func:`free_udp_port`, for tests."""
    return free_udp_port


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DIR with ca.crt and a certificate and key per node of :data:`NODES`."""
    out = tmp_path_factory.mktemp("certs")
    create_cluster_certs(str(out), NODES)
    return out


@pytest.fixture(scope="session")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another cluster's CA and certificates (same node ids)."""
    out = tmp_path_factory.mktemp("other")
    create_cluster_certs(str(out), NODES, ca_name="another cluster CA")
    return out


def ssl_for(directory: Path, node: str, ca: Path | None = None) -> SslOptions:
    """``network.ssl`` for ``node`` with the files in ``directory`` (the CA of ``ca``)."""
    return SslOptions(
        enabled=True,
        cert_file=str(directory / f"{node}.crt"),
        key_file=str(directory / f"{node}.key"),
        ca_file=str((ca or directory) / "ca.crt"),
    )


#: ``make(node, port=None, certs=None, ca=None, idle_timeout=None, **limits)``: a quic
#: transport for ``node`` on 127.0.0.1 (a free port unless given), with the cluster's
#: certificates (or ``certs``'s), and the QUIC idle time-out given (the default otherwise).
MakeQuic = Callable[..., QuicTransport]


@pytest.fixture
def make_quic(certs: Path) -> MakeQuic:
    """Builds quic transports with the cluster's certificates."""

    def make(
        node: str,
        port: int | None = None,
        directory: Path | None = None,
        ca: Path | None = None,
        idle_timeout: float | None = None,
        **limits: Any,
    ) -> QuicTransport:
        ssl = ssl_for(directory or certs, node, ca)
        idle = {} if idle_timeout is None else {"idle_timeout": idle_timeout}
        server, client = configurations(ssl, max_frame_bytes=16 * 1024 * 1024, **idle)
        address = f"127.0.0.1:{port or free_udp_port()}"
        return QuicTransport(address, server=server, client=client, ca_file=ssl.ca_file, **limits)

    return make


#: ``dial(address, config=None, wait=True)``: a link dialled by hand with node ``e``'s trusted
#: certificate (or ``config``), driven by the test as a hostile or foreign peer would.
Intruder = Callable[..., Awaitable[Link]]


@pytest.fixture
def intruder(certs: Path) -> Intruder:
    """Dials links by hand (see :data:`Intruder`)."""

    async def dial(
        address: str, config: QuicConfiguration | None = None, *, wait: bool = True
    ) -> Link:
        if config is None:
            _, config = configurations(ssl_for(certs, "e"), max_frame_bytes=1 << 20)
        shared = Shared(
            "127.0.0.1:0",
            dial_timeout=2,
            read_timeout=60,
            write_timeout=60,
            max_frame_bytes=1 << 24,
            max_output_buffer_bytes=1 << 26,
            max_inbound_buffer_bytes=1 << 26,
            ca_file=config.cafile or "",
        )
        host, port = split_address(address)
        quic = QuicConnection(configuration=config)
        _, link = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: Link(shared, quic, address, dialled=True), remote_addr=(host, port)
        )
        link.connect((host, port))
        if wait:
            await asyncio.wait_for(asyncio.shield(link.ready), 5)
        return link

    return dial

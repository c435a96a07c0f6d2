"""Fixtures of the tcp transport tests: event loops, and a throwaway CA with node certificates
for the TLS tests (real X.509 via cryptography)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gridkv.base.options import SslOptions

_DAY = datetime.timedelta(days=1)


def pytest_asyncio_loop_factories() -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test here runs on asyncio's loop, and again on uvloop when it is installed
    (GridKV's own loops use uvloop then; see gridkv.base.eventloop)."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    try:
        import uvloop
    except ImportError:
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CA:
    """A certificate authority that writes PEM files into ``directory``."""

    def __init__(self, directory: Path, name: str = "gridkv test CA") -> None:
        self.directory = directory
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = directory / f"{name.replace(' ', '-')}.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, node: str, ip: str = "127.0.0.1") -> tuple[Path, Path]:
        """Write a certificate for ``node`` valid for ``ip``; returns (cert_file, key_file)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(node))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + _DAY)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(node), x509.IPAddress(ipaddress.ip_address(ip))]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_file = self.directory / f"{node}.crt"
        key_file = self.directory / f"{node}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_key_pem(key))
        return cert_file, key_file


#: ``make_tls(node, ca="cluster")`` writes a certificate for ``node`` from CA ``ca`` and returns
#: the ``network.ssl`` options that use it.
MakeTls = Callable[..., SslOptions]


@pytest.fixture
def make_tls(tmp_path: Path) -> MakeTls:
    """TLS options for nodes, each CA named by the caller made on first use."""
    cas: dict[str, CA] = {}

    def make(node: str, ca: str = "cluster", **overrides: Any) -> SslOptions:
        authority = cas.get(ca)
        if authority is None:
            authority = cas[ca] = CA(tmp_path, f"{ca} CA")
        cert_file, key_file = authority.issue(node)
        return SslOptions(
            enabled=True,
            cert_file=str(cert_file),
            key_file=str(key_file),
            ca_file=str(authority.ca_file),
            **overrides,
        )

    return make

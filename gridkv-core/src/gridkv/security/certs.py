"""A cluster CA and node certificates, as ``gridkv certs create`` writes them.

Every key is Ed25519. The CA certificate (``ca.crt``, key ``ca.key``) may sign certificates
and nothing else; each node certificate (``<node>.crt``, key ``<node>.key``) has the node id
as its subject's common name and in its subjectAltName (a DNS name, and an IP address when
the node id is one), so the same files serve as the node's authentication identity
(``auth.ca_file``, ``auth.cert_file``, ``auth.key_file``) and as its TLS certificate
(``network.ssl``). Private keys are written with mode 0600 and never overwritten.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gridkv.base.errors import ConfigError

__all__ = ["add_node_certs", "create_cluster_certs", "CA_DAYS", "NODE_DAYS"]

#: Validity of the CA certificate, in days.
CA_DAYS = 3650
#: Validity of a node certificate, in days.
NODE_DAYS = 825


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, data: bytes, private: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(path, flags, 0o600 if private else 0o644)
    except FileExistsError:
        raise ConfigError(f"{str(path)!r} exists; gridkv never overwrites a key") from None
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _pem_key(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _alt_names(node_id: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(node_id)]
    with contextlib.suppress(ValueError):  # not an IP address
        names.append(x509.IPAddress(ipaddress.ip_address(node_id)))
    return names


def _check_nodes(nodes: list[str]) -> None:
    if not nodes:
        raise ConfigError("--nodes: name at least one node id")
    for node in nodes:
        if not node or "/" in node or node.startswith(".") or os.sep in node:
            raise ConfigError(f"--nodes: {node!r} cannot name a certificate file")
    if len(set(nodes)) != len(nodes):
        raise ConfigError("--nodes: a node id is listed twice")


def _refuse_taken(directory: Path, names: list[str]) -> None:
    taken = [name for name in names if (directory / name).exists()]
    if taken:
        raise ConfigError(
            f"{str(directory)!r} already holds {', '.join(taken)}; gridkv never overwrites a "
            "key or certificate (choose another --out)"
        )


def _start() -> datetime.datetime:
    """A validity start a few minutes back (clocks of a cluster differ a little)."""
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)


def create_cluster_certs(out: str, nodes: list[str], ca_name: str = "gridkv cluster CA") -> None:
    """Write ``ca.crt``, ``ca.key`` and ``<node>.crt``, ``<node>.key`` per node into ``out``.

    :raises ConfigError: no node, a node id unusable as a file name, or a file that exists.
    """
    _check_nodes(nodes)
    directory = Path(out)
    names = ["ca.key", "ca.crt"] + [f"{n}{ext}" for n in nodes for ext in (".key", ".crt")]
    _refuse_taken(directory, names)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = _start()
    ca_key = Ed25519PrivateKey.generate()
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(ca_name))
        .issuer_name(_name(ca_name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, None)
    )
    _write(directory / "ca.key", _pem_key(ca_key), private=True)
    _write(directory / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
    _issue(directory, nodes, ca_key, ca_cert)


def add_node_certs(out: str, nodes: list[str]) -> None:
    """Write ``<node>.crt``, ``<node>.key`` for more nodes, signed by the CA in ``out``.

    ``out`` holds ``ca.crt`` and ``ca.key`` as :func:`create_cluster_certs` wrote them.

    :raises ConfigError: no node, a node id unusable as a file name, a file that exists, or
        no CA in ``out``.
    """
    _check_nodes(nodes)
    directory = Path(out)
    _refuse_taken(directory, [f"{n}{ext}" for n in nodes for ext in (".key", ".crt")])
    try:
        ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
        ca_cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{out!r} holds no usable CA (ca.key, ca.crt): {exc}") from None
    if not isinstance(ca_key, Ed25519PrivateKey):
        raise ConfigError(f"{out!r}: ca.key is not the Ed25519 key gridkv certs create writes")
    _issue(directory, nodes, ca_key, ca_cert)


def _issue(
    directory: Path, nodes: list[str], ca_key: Ed25519PrivateKey, ca_cert: x509.Certificate
) -> None:
    now = _start()
    for node in nodes:
        key = Ed25519PrivateKey.generate()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(node))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=NODE_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(_alt_names(node)), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, None)
        )
        _write(directory / f"{node}.key", _pem_key(key), private=True)
        _write(
            directory / f"{node}.crt", cert.public_bytes(serialization.Encoding.PEM), private=False
        )

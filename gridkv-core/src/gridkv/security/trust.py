"""Trust roots: which node keys a cluster accepts.

Every node has its own Ed25519 key (:mod:`gridkv.security.identity`); a trust root says
whether a key may speak for a node id. A node presents a *credential* with its id and public
key, and its peers :meth:`~TrustRoot.check` the three against their trust root:

* :class:`SecretTrust` (``auth.cluster_secret``): the credential is an HMAC-SHA256 of the id
  and key under the cluster secret, so holders of the secret may join, each with a key of its
  own (memberlist's keyring, with per-node keys under it).
* :class:`KeyListTrust` (``auth.trusted_keys``): no credential; the file binds each node id
  to its public keys, and is read again when it changes (checked at most once a second).
* :class:`CATrust` (``auth.ca_file``): the credential is the node's certificate (DER),
  issued by the cluster CA, valid now, whose subject common name is the node id and whose
  key is the node's key (``gridkv certs create`` makes them).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import os
import stat
import time
from collections.abc import Callable
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

from gridkv.base.errors import AuthenticationError, ConfigError
from gridkv.base.log import LOGGER_NAME
from gridkv.base.options import AuthOptions
from gridkv.security.identity import (
    SECRET_BYTES,
    Identity,
    decode_key,
    read_private_file,
)

__all__ = [
    "TrustRoot",
    "SecretTrust",
    "KeyListTrust",
    "CATrust",
    "trust_root",
    "parse_key_list",
    "read_file",
]

log = logging.getLogger(LOGGER_NAME)

#: Domain separation of the credential a cluster secret gives a node key.
_SECRET_LABEL = b"gridkv node key v1\x00"
#: The longest a trusted-keys file may be.
MAX_KEY_LIST_BYTES = 16 << 20


class TrustRoot(Protocol):
    """Decides whether a public key may speak for a node id."""

    name: str

    def credential(self, identity: Identity) -> bytes:
        """What this node presents with its id and public key."""

    def check(self, node_id: str, public_key: bytes, credential: bytes) -> None:
        """Accept ``public_key`` as ``node_id``'s, or raise.

        :raises AuthenticationError: not trusted; the message says why.
        """


class SecretTrust:
    """Holders of the cluster secret may join, each with its own key.

    :param secret: the secret's bytes (at least ``SECRET_BYTES``).
    """

    name = "secret"

    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"gridkv cluster secret\x00" + secret).digest()

    def _mac(self, node_id: str, public_key: bytes) -> bytes:
        data = _SECRET_LABEL + node_id.encode() + b"\x00" + public_key
        return hmac.digest(self._key, data, "sha256")

    def credential(self, identity: Identity) -> bytes:
        """The secret's HMAC over this node's id and public key."""
        return self._mac(identity.node_id, identity.public_key)

    def check(self, node_id: str, public_key: bytes, credential: bytes) -> None:
        """Accept when ``credential`` is the secret's HMAC over the id and key."""
        if not hmac.compare_digest(self._mac(node_id, public_key), credential):
            raise AuthenticationError(
                f"node {node_id!r}: its key is not vouched for by this cluster's secret"
            )


def parse_key_list(text: str, where: str) -> dict[str, tuple[bytes, ...]]:
    """The node id → public keys bindings of a trusted-keys file's text.

    One ``<node id> <public key>`` per line (the key in base64); blank lines and ``#``
    comments are skipped. A node may be listed with several keys (while it rotates its key:
    list the new one, rotate, then remove the old one).

    :raises ConfigError: a malformed line, a bad key, or the same key listed twice.
    """
    keys: dict[str, tuple[bytes, ...]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ConfigError(
                f"{where}, line {number}: expected '<node id> <public key>', got {line!r:.80}"
            )
        node_id, text_key = parts
        key = decode_key(text_key, f"{where}, line {number}")
        if key in keys.get(node_id, ()):
            raise ConfigError(f"{where}, line {number}: node {node_id!r} has this key already")
        keys[node_id] = (*keys.get(node_id, ()), key)
    return keys


class KeyListTrust:
    """An allow-list binding node ids to public keys, read again when its file changes.

    :param path: the trusted-keys file.
    :param clock: monotonic seconds (the file is looked at no more than once a second).
    """

    name = "keys"

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._stamp: tuple[int, int, int] | None = None
        self._looked = float("-inf")
        self.keys: dict[str, tuple[bytes, ...]] = {}
        #: How many times the file was read (the first time included).
        self.loads = 0
        self._load()
        self._looked = clock()

    def _load(self) -> None:
        try:
            st = os.stat(self.path)
            if os.name == "posix" and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise ConfigError(
                    f"config key 'auth.trusted_keys': {self.path!r} can be written by others "
                    f"(mode {stat.S_IMODE(st.st_mode):04o}), who could add their keys: "
                    f"chmod go-w {self.path}"
                )
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self._stamp:
                return
            self._stamp = stamp
            with open(self.path, "rb") as file:
                data = file.read(MAX_KEY_LIST_BYTES + 1)
        except OSError as exc:
            raise ConfigError(
                f"config key 'auth.trusted_keys': cannot read {self.path!r}: {exc.strerror}"
            ) from None
        if len(data) > MAX_KEY_LIST_BYTES:
            raise ConfigError(
                f"config key 'auth.trusted_keys': {self.path!r} is over {MAX_KEY_LIST_BYTES} bytes"
            )
        self.keys = parse_key_list(data.decode("utf-8", "replace"), repr(self.path))
        self.loads += 1

    def refresh(self) -> None:
        """Read the file again if it changed since last looked at (at most once a second).

        A file that became unreadable or malformed keeps the last good list in force.
        """
        now = self._clock()
        if now - self._looked < 1.0:
            return
        self._looked = now
        try:
            self._load()
        except ConfigError as exc:
            # An edit in progress, or a mistake: the list in force stays (said once per
            # version of the file: it is not read again until it changes).
            log.warning("trusted keys not reloaded, the previous list stays: %s", exc)

    def credential(self, identity: Identity) -> bytes:
        """Nothing: the list names the key."""
        return b""

    def check(self, node_id: str, public_key: bytes, credential: bytes) -> None:
        """Accept when the list binds ``node_id`` to ``public_key`` (among its keys)."""
        self.refresh()
        listed = self.keys.get(node_id)
        if listed is None:
            raise AuthenticationError(f"node {node_id!r} is not in the trusted keys")
        if not any(hmac.compare_digest(key, public_key) for key in listed):
            raise AuthenticationError(
                f"node {node_id!r} presented a key other than the ones the trusted keys list"
            )


class CATrust:
    """Node certificates issued by the cluster CA, with the node id as subject.

    :param ca_pem: the CA certificate (PEM).
    :param cert_pem: this node's certificate (PEM), presented as its credential.
    """

    name = "ca"

    def __init__(self, ca_pem: bytes, cert_pem: bytes) -> None:
        self.ca_pem = ca_pem
        try:
            self.ca = x509.load_pem_x509_certificate(ca_pem)
        except ValueError as exc:
            raise ConfigError(f"config key 'auth.ca_file': not a PEM certificate ({exc})") from None
        try:
            self.cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as exc:
            raise ConfigError(
                f"config key 'auth.cert_file': not a PEM certificate ({exc})"
            ) from None
        self._der = self.cert.public_bytes(serialization.Encoding.DER)

    def credential(self, identity: Identity) -> bytes:
        """This node's certificate (DER); it must certify this node's id and key."""
        try:
            self.check(identity.node_id, identity.public_key, self._der)
        except AuthenticationError as exc:
            raise ConfigError(f"config key 'auth.cert_file': {exc}") from None
        return self._der

    def identify(self, certificate: bytes) -> tuple[str, bytes]:
        """The node id and public key a certificate (DER) the CA issued names.

        :raises AuthenticationError: not such a certificate (malformed, another issuer,
            expired, not one common name, not an Ed25519 key).
        """
        try:
            cert = x509.load_der_x509_certificate(certificate)
            names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            key = cert.public_key()
        except ValueError:
            raise AuthenticationError("a peer's certificate is malformed") from None
        if len(names) != 1 or not isinstance(key, Ed25519PublicKey):
            raise AuthenticationError("a peer's certificate does not name one node and its key")
        node_id = str(names[0].value)
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.check(node_id, raw, certificate)
        return node_id, raw

    def check(self, node_id: str, public_key: bytes, credential: bytes) -> None:
        """Accept when ``credential`` is a certificate the CA issued for this id and key."""
        try:
            cert = x509.load_der_x509_certificate(credential)
        except ValueError:
            raise AuthenticationError(f"node {node_id!r}: its certificate is malformed") from None
        try:
            cert.verify_directly_issued_by(self.ca)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise AuthenticationError(
                f"node {node_id!r}: its certificate is not issued by the cluster CA "
                f"({type(exc).__name__})"
            ) from None
        now = datetime.datetime.now(datetime.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise AuthenticationError(f"node {node_id!r}: its certificate is not valid now")
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [n.value for n in names] != [node_id]:
            raise AuthenticationError(
                f"node {node_id!r}: its certificate names {[n.value for n in names]!r}"
            )
        key = cert.public_key()
        if not isinstance(key, Ed25519PublicKey):
            raise AuthenticationError(f"node {node_id!r}: its certificate's key is not Ed25519")
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if not hmac.compare_digest(raw, public_key):
            raise AuthenticationError(
                f"node {node_id!r}: its certificate is for another key than the one it uses"
            )


def trust_root(auth: AuthOptions) -> TrustRoot | None:
    """The trust root ``auth`` configures, ``None`` when it names none.

    :raises ConfigError: a file is missing, unreadable, too open (secret files), or malformed.
    """
    if auth.cluster_secret:
        return SecretTrust(
            decode_key(auth.cluster_secret, "config key 'auth.cluster_secret'", SECRET_BYTES, True)
        )
    if auth.cluster_secret_file:
        what = "config key 'auth.cluster_secret_file'"
        text = read_private_file(auth.cluster_secret_file, what).decode("ascii", "replace")
        return SecretTrust(decode_key(text, what, SECRET_BYTES, True))
    if auth.trusted_keys:
        return KeyListTrust(auth.trusted_keys)
    if auth.ca_file:
        return CATrust(
            read_file(auth.ca_file, "auth.ca_file"), read_file(auth.cert_file, "auth.cert_file")
        )
    return None


def read_file(path: str, key: str) -> bytes:
    """The bytes of a configured file (at most 1 MiB).

    :raises ConfigError: it cannot be read; the message names ``key``.
    """
    try:
        with open(path, "rb") as file:
            return file.read(1 << 20)
    except OSError as exc:
        raise ConfigError(f"config key {key!r}: cannot read {path!r}: {exc.strerror}") from None

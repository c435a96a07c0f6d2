"""A node's identity: its Ed25519 key pair, where it is kept, and how keys are written down.

Keys are written as WireGuard writes them: the 32 raw bytes in standard base64 (44
characters). A key file holds the private key as PEM (PKCS #8, what ``openssl`` and
``gridkv certs create`` write). A key file or secret file must not be readable by anybody but
its owner (mode 0600 or stricter): one that is is refused, naming the file and the fix,
because its key may already be another's.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gridkv.base.errors import ConfigError

__all__ = [
    "Identity",
    "KEY_BYTES",
    "SECRET_BYTES",
    "decode_key",
    "encode_key",
    "new_secret",
    "read_private_file",
    "load_private_key",
    "public_key_of",
    "verify",
]

#: Bytes of an Ed25519 key (private seed or public key).
KEY_BYTES = 32
#: Bytes of a cluster secret ``gridkv keys new`` makes (and the fewest accepted).
SECRET_BYTES = 32


def encode_key(raw: bytes) -> str:
    """``raw`` key bytes as written in configuration: standard base64."""
    return base64.b64encode(raw).decode("ascii")


def decode_key(text: str, what: str, size: int = KEY_BYTES, at_least: bool = False) -> bytes:
    """The bytes of a key or secret written in base64.

    :param what: the configuration key or file it came from (named in the error).
    :param size: the length the bytes must have (the least, with ``at_least``).
    :raises ConfigError: not base64, or of the wrong length.
    """
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{what}: not base64 (make one with `gridkv keys new`)") from None
    if len(raw) < size or (len(raw) != size and not at_least):
        need = f"at least {size}" if at_least else f"{size}"
        raise ConfigError(
            f"{what}: {len(raw)} bytes where {need} are needed (make one with `gridkv keys new`)"
        )
    return raw


def new_secret() -> str:
    """A fresh cluster secret: ``SECRET_BYTES`` random bytes, in base64."""
    return encode_key(secrets.token_bytes(SECRET_BYTES))


def read_private_file(path: str, what: str) -> bytes:
    """The bytes of a file that holds a secret, after checking only its owner can read it.

    :raises ConfigError: missing, unreadable, or readable by its group or others.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path!r}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        mode = st.st_mode
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{what}: {path!r} can be read or written by others (mode "
                f"{stat.S_IMODE(mode):04o}); it holds a secret: chmod 600 {path}"
            )
        if os.name == "posix" and st.st_uid != os.geteuid():
            raise ConfigError(
                f"{what}: {path!r} belongs to user {st.st_uid}, not to the user this node "
                f"runs as ({os.geteuid()}): whoever owns it may know the secret"
            )
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read(1 << 20)
    finally:
        os.close(fd)


def _write_private_file(path: str, data: bytes) -> bool:
    """Create ``path`` with mode 0600 holding ``data``; ``False`` when it exists already."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    return True


def load_private_key(inline: str, path: str) -> Ed25519PrivateKey:
    """This node's private key: ``inline`` (base64 or PEM), else ``path``, else a fresh one.

    A ``path`` that does not exist is created (mode 0600) with a fresh key.

    :raises ConfigError: unreadable, malformed, not Ed25519, or a file others can read.
    """
    if inline:
        return _parse_private(inline.encode(), "config key 'auth.key'")
    if not path:
        return Ed25519PrivateKey.generate()
    if os.path.lexists(path):
        return _parse_private(read_private_file(path, "config key 'auth.key_file'"), repr(path))
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if _write_private_file(path, pem):
        return key
    # Another process made it meanwhile: use that one.
    return _parse_private(read_private_file(path, "config key 'auth.key_file'"), repr(path))


def _parse_private(data: bytes, what: str) -> Ed25519PrivateKey:
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{what}: not a readable PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{what}: a {type(key).__name__}, where an Ed25519 key is needed")
        return key
    return Ed25519PrivateKey.from_private_bytes(decode_key(data.decode("ascii", "replace"), what))


def public_key_of(key: Ed25519PrivateKey) -> bytes:
    """The 32 raw bytes of ``key``'s public key."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s Ed25519 signature of ``data``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class Identity:
    """This node's identity: its id and its key pair.

    :ivar node_id: the node id the key speaks for.
    :ivar private_key: the Ed25519 private key.
    :ivar public_key: its public key, 32 raw bytes.
    """

    node_id: str
    private_key: Ed25519PrivateKey
    public_key: bytes

    @classmethod
    def load(cls, node_id: str, inline: str = "", path: str = "") -> Identity:
        """The identity of ``node_id`` with the key :func:`load_private_key` gives."""
        key = load_private_key(inline, path)
        return cls(node_id, key, public_key_of(key))

    def sign(self, data: bytes) -> bytes:
        """The Ed25519 signature of ``data`` (64 bytes)."""
        return self.private_key.sign(data)

    @property
    def public_key_text(self) -> str:
        """The public key as written in a trusted-keys file."""
        return encode_key(self.public_key)

    @property
    def private_key_text(self) -> str:
        """The private key as ``auth.key`` takes it (keep it secret)."""
        seed = self.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return encode_key(seed)

"""A secrets directory: a node's identity and its cluster's trust root, one file per item.

The layout is the one Kubernetes gives a mounted ``Secret`` (each key a file; the files are
symbolic links into a ``..data`` directory that is swapped atomically when the secret
changes), and plain files work the same::

    node.key          this node's Ed25519 private key (PEM, or base64 as
                      ``gridkv keys new --pair`` prints it); or <node id>.key, looked
                      for first (a member's directory holds its own key only: whoever
                      reads a member's key can speak as that member)
    cluster-secret    the trust root: the cluster secret (``gridkv keys new``); or
    <node id>.pub     the trust root: one file per member, its public key(s), a line each

Files are checked as ``ssh`` checks its own: each must belong to this process's user or to
root, and none may be writable by its group or others (nor the directory, unless it is on a
read-only mount, as a Kubernetes secret volume is); private items (the keys, the secret) must
not be readable by others, though their group may read them (Kubernetes gives a non-root
container a secret through its ``fsGroup``). A link must stay inside the directory. Any
breach, or a file missing, unreadable, not a regular file (a FIFO is refused without waiting
for a writer) or malformed, is a :class:`~gridkv.ConfigError` naming the file.

The directory's path may itself be a symbolic link re-pointed to a new version of the
secrets (``ln -sfn v2 current``, the usual atomic swap outside Kubernetes): where it leads is
resolved again at every read and every look for changes, and the directory it leads to is
checked as the path was.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gridkv import AuthenticationError, ConfigError
from gridkv.base.log import LOGGER_NAME
from gridkv.security.identity import SECRET_BYTES, Identity, decode_key, public_key_of
from gridkv.security.trust import SecretTrust, TrustRoot

__all__ = [
    "CLUSTER_SECRET",
    "DEFAULT_DIR",
    "DIR_ENV",
    "DirectoryKeysTrust",
    "NODE_KEY",
    "SecretsDir",
    "directory_from_env",
]

#: The environment variable naming the secrets directory.
DIR_ENV = "GRIDKV_SECRETS_DIR"
#: The secrets directory when ``GRIDKV_SECRETS_DIR`` is not set.
DEFAULT_DIR = "/var/run/secrets/gridkv"
#: The file of this node's private key (when there is no ``<node id>.key``).
NODE_KEY = "node.key"
#: The file of the cluster secret.
CLUSTER_SECRET = "cluster-secret"
_PUBLIC = ".pub"
_PRIVATE = ".key"
#: The longest item read.
MAX_ITEM_BYTES = 1 << 20
#: Seconds between two looks at whether the public keys changed.
RELOAD_INTERVAL = 1.0
#: Node ids that can name a file, as a Kubernetes secret's keys can.
_FILE_ID = re.compile(r"[-_a-zA-Z0-9][-._a-zA-Z0-9]*")
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO: refused once open, not waited on
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | _NONBLOCK | getattr(os, "O_CLOEXEC", 0)
#: Tries at resolving an item while the directory's path is re-pointed.
_RESOLVE_TRIES = 3

log = logging.getLogger(LOGGER_NAME)


def directory_from_env() -> Path:
    """The secrets directory: ``$GRIDKV_SECRETS_DIR``, else ``/var/run/secrets/gridkv``."""
    return Path(os.environ.get(DIR_ENV, "") or DEFAULT_DIR)


def _read_only_mount(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # pragma: no cover - no statvfs
        return False


def _check_guarded(path: str, st: os.stat_result, what: str) -> None:
    """Refuse a file or directory that someone else could change.

    :raises ConfigError: it belongs to another user than this process's or root, or its group
        or others may write it (a directory on a read-only mount may say so: nobody can).
    """
    euid = os.geteuid()
    if st.st_uid not in (0, euid):
        raise ConfigError(
            f"{what} {path!r} belongs to user {st.st_uid}, neither this process's user "
            f"({euid}) nor root: whoever owns it can change it"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH) and not _read_only_mount(path):
        raise ConfigError(
            f"{what} {path!r} can be written by others (mode {mode:04o}), who could put "
            f"their own keys in: chmod go-w {path}"
        )


class SecretsDir:
    """A secrets directory, checked when opened (see the module documentation).

    :param path: the directory.
    :raises ConfigError: it is missing, not a directory, or someone else could change it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise ConfigError(
                f"secrets directory {str(self.path)!r}: {exc.strerror} (set {DIR_ENV} to the "
                "directory holding the node's key and the cluster's trust root)"
            ) from None
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"secrets directory {str(self.path)!r} is not a directory")
        _check_guarded(str(self.path), st, "secrets directory")

    def names(self) -> list[str]:
        """The items present (a Kubernetes mount's ``..data`` and other dot files left out)."""
        try:
            return sorted(n for n in os.listdir(self.path) if not n.startswith("."))
        except OSError as exc:
            raise ConfigError(
                f"secrets directory {str(self.path)!r}: cannot list it: {exc.strerror}"
            ) from None

    def file(self, name: str) -> str:
        """The path of item ``name`` (as named in errors)."""
        return str(self.path / name)

    def read(self, name: str, *, private: bool) -> bytes:
        """The bytes of item ``name``, after the checks of the module documentation.

        :param private: it holds a secret (others must not read it).
        :raises ConfigError: naming the file.
        """
        shown = self.file(name)
        base, real = self._resolve(shown)
        try:
            fd = os.open(real, _OPEN_FLAGS)
        except OSError as exc:
            raise ConfigError(f"cannot read {shown!r}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(f"{shown!r} is not a regular file")
            if _NONBLOCK:
                os.set_blocking(fd, True)
            _check_guarded(shown, st, "secret item")
            parent = os.path.dirname(real)
            if parent != base:  # a Kubernetes mount's ..data directory
                _check_guarded(parent, os.stat(parent), "secrets directory")
            mode = stat.S_IMODE(st.st_mode)
            if private and mode & stat.S_IRWXO:
                raise ConfigError(
                    f"{shown!r} can be read by others (mode {mode:04o}); it holds a secret: "
                    f"chmod o-rwx {shown} (Kubernetes: defaultMode 0400, or 0440 with fsGroup)"
                )
            with os.fdopen(fd, "rb", closefd=False) as file:
                data = file.read(MAX_ITEM_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read {shown!r}: {exc.strerror}") from None
        finally:
            os.close(fd)
        if len(data) > MAX_ITEM_BYTES:
            raise ConfigError(f"{shown!r} is over {MAX_ITEM_BYTES} bytes")
        return data

    def _resolve(self, shown: str) -> tuple[str, str]:
        """Where the directory's path and item ``shown`` lead now: ``(directory, item)``.

        Resolved at every read, so a directory whose path is a link re-pointed to a new
        version is followed (resolved again if it is re-pointed meanwhile).

        :raises ConfigError: the item leads outside the directory; or the directory it leads
            to belongs to another user, or its group or others may write it.
        """
        for _ in range(_RESOLVE_TRIES):
            base = os.path.realpath(self.path)
            real = os.path.realpath(shown)
            if os.path.realpath(self.path) == base:
                break
        if os.path.commonpath([real, base]) != base:
            raise ConfigError(f"{shown!r} leads outside the secrets directory (to {real!r})")
        try:  # the directory as it is now (the one checked when opened, or a new version)
            st = os.stat(base)
        except OSError as exc:
            raise ConfigError(f"secrets directory {base!r}: {exc.strerror}") from None
        _check_guarded(base, st, "secrets directory")
        return base, real

    def stamp(self) -> tuple[object, ...]:
        """What changes when any item changes (for reloading); cheap: no file is read."""
        parts: list[object] = [os.path.realpath(self.path)]  # a re-pointed directory link
        with contextlib.suppress(OSError):  # a Kubernetes mount: the version in force
            parts.append(os.readlink(self.path / "..data"))
        for name in self.names():
            try:
                st = os.stat(self.path / name)
            except OSError:
                parts.append((name, None))
                continue
            parts.append((name, st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode))
        return tuple(parts)

    def identity(self, node_id: str) -> Identity | None:
        """This node's identity from ``<node id>.key`` or ``node.key``; ``None``: neither is here.

        :raises ConfigError: the file is unreadable, too open, or not an Ed25519 key.
        """
        names = set(self.names())
        candidates = [f"{node_id}{_PRIVATE}"] if _FILE_ID.fullmatch(node_id) else []
        for name in [*candidates, NODE_KEY]:
            if name in names:
                key = _private_key(self.read(name, private=True), self.file(name))
                return Identity(node_id, key, public_key_of(key))
        return None

    def trust(self, clock: Callable[[], float] = time.monotonic) -> TrustRoot:
        """The trust root the directory holds: the cluster secret, or the public keys.

        :raises ConfigError: neither or both are here, or an item is unusable (named).
        """
        names = self.names()
        public = [n for n in names if n.endswith(_PUBLIC)]
        if CLUSTER_SECRET in names and public:
            raise ConfigError(
                f"secrets directory {str(self.path)!r} holds both {CLUSTER_SECRET} and public "
                f"keys ({', '.join(public[:3])}): one trust root at a time"
            )
        if CLUSTER_SECRET in names:
            shown = self.file(CLUSTER_SECRET)
            text = self.read(CLUSTER_SECRET, private=True).decode("ascii", "replace")
            return SecretTrust(decode_key(text, repr(shown), SECRET_BYTES, at_least=True))
        if public:
            return DirectoryKeysTrust(self, clock)
        raise ConfigError(
            f"secrets directory {str(self.path)!r} holds no trust root: add {CLUSTER_SECRET} "
            "(made by `gridkv keys new`, the same for every member), or one <node id>.pub per "
            "member holding its public key"
        )

    def public_keys(self) -> dict[str, tuple[bytes, ...]]:
        """The public keys of the ``<node id>.pub`` items, by node id.

        :raises ConfigError: an item is unreadable, writable by others, or malformed (named,
            with the line).
        """
        keys: dict[str, tuple[bytes, ...]] = {}
        for name in self.names():
            if not name.endswith(_PUBLIC):
                continue
            shown = self.file(name)
            text = self.read(name, private=False).decode("utf-8", "replace")
            found: list[bytes] = []
            for number, line in enumerate(text.splitlines(), 1):
                line = line.split("#", 1)[0].strip()
                if line:
                    found.append(decode_key(line, f"{shown!r}, line {number}"))
            if not found:
                raise ConfigError(f"{shown!r} holds no public key")
            keys[name[: -len(_PUBLIC)]] = tuple(found)
        return keys


def _private_key(data: bytes, shown: str) -> Ed25519PrivateKey:
    """An Ed25519 private key written as PEM (PKCS #8) or as base64 of its 32 bytes."""
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{shown!r} is not a readable PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{shown!r} holds a {type(key).__name__}, not an Ed25519 key")
        return key
    raw = decode_key(data.decode("ascii", "replace"), repr(shown))
    return Ed25519PrivateKey.from_private_bytes(raw)


class DirectoryKeysTrust:
    """The members whose ``<node id>.pub`` the directory holds, read again when it changes.

    A secret updated in place (Kubernetes swaps it whole) takes effect within
    ``RELOAD_INTERVAL`` of the next handshake: a member added is let in, a member removed
    is refused from its next handshake on. A version that does not load (an edit half done,
    a malformed key) is logged and the keys in force stay.

    :param secrets: the directory.
    :param clock: monotonic seconds.
    :raises ConfigError: the keys cannot be loaded now.
    """

    name = "keys"

    def __init__(self, secrets: SecretsDir, clock: Callable[[], float] = time.monotonic) -> None:
        self.secrets = secrets
        self._clock = clock
        self._stamp: tuple[object, ...] | None = secrets.stamp()
        #: node id -> its public keys.
        self.keys = secrets.public_keys()
        #: How many times the keys were loaded (the first time included).
        self.loads = 1
        self._looked = clock()

    def refresh(self) -> None:
        """Load the keys again if the directory changed (looked at once a second at most)."""
        now = self._clock()
        if now - self._looked < RELOAD_INTERVAL:
            return
        self._looked = now
        stamp: tuple[object, ...] | None = None
        try:
            stamp = self.secrets.stamp()
            if stamp == self._stamp:
                return
            keys = self.secrets.public_keys()
        except ConfigError as exc:
            log.warning("trusted keys not reloaded, the previous ones stay: %s", exc)
            # A bad version is reported once, not at every handshake; one that changed while
            # it was read (a secret swapped meanwhile) is read again next time.
            with contextlib.suppress(ConfigError):
                self._stamp = stamp if stamp == self.secrets.stamp() else None
            return
        self._stamp, self.keys = stamp, keys
        self.loads += 1

    def credential(self, identity: Identity) -> bytes:
        """Nothing: the directory names the key."""
        return b""

    def check(self, node_id: str, public_key: bytes, credential: bytes) -> None:
        """Accept when ``<node id>.pub`` lists ``public_key``.

        :raises AuthenticationError: not listed (the peer hears why, without any path).
        """
        self.refresh()
        listed = self.keys.get(node_id)
        if listed is None:
            raise AuthenticationError(
                f"node {node_id!r:.80} is not in the trusted keys (no .pub of it in the secrets)"
            )
        if not any(hmac.compare_digest(key, public_key) for key in listed):
            raise AuthenticationError(
                f"node {node_id!r:.80} presented a key other than the ones the trusted keys list"
            )

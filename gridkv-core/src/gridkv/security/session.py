"""Authenticated sessions between two nodes, sans-I/O: a signed handshake, then sealed frames.

A session is set up by two messages, each signed with the sender's identity key
(:mod:`gridkv.security.identity`) and carrying the credential its trust root checks
(:mod:`gridkv.security.trust`):

1. the initiator's *hello*: its node id, public key, credential, a fresh X25519 key, the index
   it will receive frames under, the time, its boot id (new at each process start), the node
   id meant to answer (when known: any other node refuses it), whether it encrypts, and its
   signature over all of it;
2. the responder's *reply*: the same of its own, and its signature over them and a hash of
   the hello it answers (so a reply answers exactly one hello).

Both derive two keys from the X25519 secret with HKDF-SHA256 (salt: the hash of both
messages), one per direction. A hello is taken only within ``max_skew_ms`` of the responder's
clock and only once (the responder remembers the ephemeral keys it saw in that window): a
replayed hello is refused, and a recorded one is worthless without its X25519 private key.

Then every frame is *sealed*: ``SEALED, receiver's index (8 bytes), counter (8 bytes)``, the
payload, and a 16-byte AES-GCM tag over the header and payload (with ``encrypt``, the payload
is encrypted too). The receiver finds the session by its index, checks the tag, and takes each
counter once within a sliding window of ``WINDOW`` (frames may arrive out of order across a
transport's connections; a replayed, altered, or too old frame is refused).

A transport with connections protects whole *records* instead (many frames written in one
turn of its loop, :class:`~gridkv.transport.base.ConnectionGuard`): a session set up for one
connection seals each record with :meth:`Session.seal_record`, under the next counter of its
direction, which is not sent: the stream's order gives it, and the receiver takes records
strictly in that order (:meth:`Session.open_record`), so a record dropped, replayed, moved or
altered fails its tag.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gridkv.base.errors import AuthenticationError
from gridkv.security.identity import Identity, verify
from gridkv.security.trust import TrustRoot

__all__ = [
    "HELLO",
    "REPLY",
    "SEALED",
    "WINDOW",
    "Handshake",
    "Pending",
    "ReplayWindow",
    "Session",
    "frame_kind",
    "index_of",
]

#: The first byte of each kind of frame.
HELLO = 0xA1
REPLY = 0xA2
SEALED = 0xA3
#: Counters a session takes out of order: older than the newest minus this are refused.
WINDOW = 4096
#: Hellos remembered per responder (their ephemeral keys), to refuse replays.
MAX_REMEMBERED_HELLOS = 65_536
#: The largest hello or reply taken (ids, keys, a certificate).
MAX_HANDSHAKE_BYTES = 16_384

_HEADER = struct.Struct(">BQQ")  # kind, receiver's index, counter
_HEAD = _HEADER.size
_NONCE_PAD = bytes(4)
_RECORD_PAD = b"\x00\x00\x00\x01"  # records' nonces never meet frames'
_MASK = (1 << WINDOW) - 1
_TAG = 16
_LABEL_HELLO = b"gridkv hello v1\x00"
_LABEL_REPLY = b"gridkv reply v1\x00"
_INFO = b"gridkv session v1"


def frame_kind(frame: bytes) -> int:
    """The kind of a frame (:data:`HELLO`, :data:`REPLY`, :data:`SEALED`), or -1."""
    return frame[0] if frame else -1


def index_of(frame: bytes) -> int:
    """The receiver's index a sealed frame names (0 for a frame too short to have one)."""
    if len(frame) < _HEADER.size:
        return 0
    return int.from_bytes(frame[1:9], "big")


class ReplayWindow:
    """Which counters of a direction were taken: each once, none older than the window."""

    __slots__ = ("_newest", "_seen")

    def __init__(self) -> None:
        self._newest = -1
        self._seen = 0  # bit i: counter newest - i was taken

    def take(self, counter: int) -> bool:
        """Record ``counter``; ``False`` when it was taken already or is too old."""
        newest = self._newest
        if counter > newest:
            shift = counter - newest
            self._seen = ((self._seen << shift) | 1) & _MASK if shift < WINDOW else 1
            self._newest = counter
            return True
        age = newest - counter
        if age >= WINDOW or self._seen >> age & 1:
            return False
        self._seen |= 1 << age
        return True


@dataclass(slots=True)
class Session:
    """A session with one peer, after the handshake.

    :ivar peer_id: the peer's node id, as its trust root vouched for it.
    :ivar peer_key: the peer's public key.
    :ivar local_index: the index frames to this node name.
    :ivar peer_index: the index frames to the peer name.
    :ivar peer_boot: the peer's boot id (new at each start of its process).
    """

    peer_id: str
    peer_key: bytes
    local_index: int
    peer_index: int
    peer_boot: bytes
    _send: AESGCM
    _receive: AESGCM
    encrypt: bool
    _counter: int = 0
    _window: ReplayWindow = field(default_factory=ReplayWindow)
    #: monotonic seconds when the session was set up
    created: float = field(default_factory=time.monotonic)
    _index_bytes: bytes = b""
    _received: int = 0

    def __post_init__(self) -> None:
        self._index_bytes = self.local_index.to_bytes(8, "big")

    def seal(self, payload: bytes, answering: bytes = b"") -> bytes:
        """The frame that carries ``payload`` to the peer.

        :param answering: for an answer, the request frame it answers: the tag covers that
            request's counter too, so the answer is taken for that request only.
        """
        counter = self._counter
        self._counter = counter + 1
        header = _HEADER.pack(SEALED, self.peer_index, counter)
        nonce = _NONCE_PAD + header[9:]  # the counter, big-endian, in 12 bytes
        if self.encrypt:
            return header + self._send.encrypt(nonce, payload, header + answering[9:_HEAD])
        covered = header + payload
        return covered + self._send.encrypt(nonce, b"", covered + answering[9:_HEAD])

    def open(self, frame: bytes, answering: bytes = b"") -> bytes:
        """The payload of a sealed frame from the peer.

        :param answering: for an answer, the request frame this node sent (see :meth:`seal`).
        :raises AuthenticationError: altered, replayed, too old, not for this session, or
            an answer to another request.
        """
        if len(frame) < _HEAD + _TAG:
            raise AuthenticationError("sealed frame too short")
        if frame[0] != SEALED or frame[1:9] != self._index_bytes:
            raise AuthenticationError("frame not sealed for this session")
        counter = frame[9:_HEAD]
        nonce = _NONCE_PAD + counter
        request = answering[9:_HEAD]
        try:
            if self.encrypt:
                payload = self._receive.decrypt(nonce, frame[_HEAD:], frame[:_HEAD] + request)
            else:
                self._receive.decrypt(nonce, frame[-_TAG:], frame[:-_TAG] + request)
                payload = frame[_HEAD:-_TAG]
        except InvalidTag:
            raise AuthenticationError(
                f"frame from {self.peer_id!r} failed its authentication tag (altered, forged, "
                "or an answer to another request)"
            ) from None
        if not self._window.take(int.from_bytes(counter, "big")):
            raise AuthenticationError(f"frame from {self.peer_id!r} replayed or too old")
        return payload

    def seal_record(self, data: bytes) -> bytes:
        """The next record to the peer over a connection, carrying ``data`` (any bytes)."""
        counter = self._counter
        self._counter = counter + 1
        nonce = _RECORD_PAD + counter.to_bytes(8, "big")
        if self.encrypt:
            return self._send.encrypt(nonce, data, None)
        return data + self._send.encrypt(nonce, b"", data)

    def open_record(self, record: bytes) -> bytes:
        """The data of the peer's next record over a connection.

        :raises AuthenticationError: not the next record, or altered or forged.
        """
        counter = self._received
        nonce = _RECORD_PAD + counter.to_bytes(8, "big")
        try:
            if len(record) < _TAG:
                raise InvalidTag
            if self.encrypt:
                data = self._receive.decrypt(nonce, record, None)
            else:
                data = record[:-_TAG]
                self._receive.decrypt(nonce, record[-_TAG:], data)
        except InvalidTag:
            raise AuthenticationError(
                f"record from {self.peer_id!r} failed its authentication tag (altered, "
                "forged, replayed or out of order)"
            ) from None
        self._received = counter + 1
        return data


@dataclass(slots=True)
class Pending:
    """An initiator's hello, waiting for its reply."""

    hello: bytes
    ephemeral: X25519PrivateKey
    local_index: int
    #: the node id meant to answer ("" when not known)
    to: str = ""


def _raw(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _new_index() -> int:
    return int.from_bytes(os.urandom(8), "big") or 1


class Handshake:
    """Sets sessions up for one node: starts hellos, answers them, checks replies.

    :param identity: this node's identity.
    :param trust: the trust root peers' keys must chain to.
    :param clock_ms: the wall clock in milliseconds.
    :param max_skew_ms: how far a hello's time may be from this node's clock.
    :param encrypt: whether sessions encrypt their frames (both sides must agree).
    """

    def __init__(
        self,
        identity: Identity,
        trust: TrustRoot,
        clock_ms: Callable[[], int],
        max_skew_ms: int,
        encrypt: bool = False,
    ) -> None:
        self.identity = identity
        self.trust = trust
        self._clock_ms = clock_ms
        self._skew = max_skew_ms
        self.encrypt = encrypt
        self._credential = trust.credential(identity)
        #: This process's boot id, in every hello and reply: a peer that sees another one
        #: knows this node restarted (and lost the sessions it had set up with it).
        self.boot = os.urandom(8)
        #: ephemeral key of each hello taken -> its time (refuses replays within the skew)
        self._seen: OrderedDict[bytes, int] = OrderedDict()

    def rotate(self, identity: Identity, trust: TrustRoot | None = None) -> None:
        """Sign new handshakes with ``identity`` (and ``trust``'s credential for it).

        Sessions already set up are not touched: they drain as they are replaced.

        :raises ConfigError: the trust root cannot vouch for the new key (a CA certificate
            for another key).
        """
        trust = trust or self.trust
        credential = trust.credential(identity)
        self.identity, self.trust, self._credential = identity, trust, credential

    @property
    def credential(self) -> bytes:
        """What this node presents to the trust root with its key."""
        return self._credential

    def _fields(self, ephemeral: bytes, index: int, to: str) -> list[object]:
        me = self.identity
        return [
            me.node_id,
            me.public_key,
            self._credential,
            ephemeral,
            index,
            self._clock_ms(),
            self.boot,
            to,
            self.encrypt,
        ]

    def _message(self, kind: int, label: bytes, fields: list[object], extra: bytes) -> bytes:
        body: bytes = msgpack.packb(fields, use_bin_type=True)
        return bytes([kind]) + body + self.identity.sign(label + body + extra)

    def initiate(self, to: str = "") -> tuple[Pending, bytes]:
        """A new hello, and what to keep until its reply.

        :param to: the node id meant to answer it, when known: another node refuses the
            hello, and :meth:`complete` refuses a reply from another node.
        """
        ephemeral = X25519PrivateKey.generate()
        index = _new_index()
        hello = self._message(HELLO, _LABEL_HELLO, self._fields(_raw(ephemeral), index, to), b"")
        return Pending(hello, ephemeral, index, to), hello

    def respond(self, hello: bytes) -> tuple[Session, bytes]:
        """Check a peer's hello; the session, and the reply to send back.

        :raises AuthenticationError: malformed, badly signed, untrusted, stale, or replayed.
        """
        peer_id, peer_key, peer_eph, peer_index, at, boot, to = self._check(
            hello, HELLO, _LABEL_HELLO, b""
        )
        if to and to != self.identity.node_id:
            raise AuthenticationError(
                f"hello from {peer_id!r} is meant for {to!r:.80}, not for this node"
            )
        now = self._clock_ms()
        if abs(now - at) > self._skew:
            raise AuthenticationError(
                f"hello from {peer_id!r} is {abs(now - at)} ms from this node's clock "
                f"(more than {self._skew} ms: stale or replayed)"
            )
        self._forget(now)
        if peer_eph in self._seen:
            raise AuthenticationError(f"hello from {peer_id!r} replayed")
        self._seen[peer_eph] = at
        ephemeral = X25519PrivateKey.generate()
        index = _new_index()
        digest = hashlib.sha256(hello).digest()
        reply = self._message(
            REPLY, _LABEL_REPLY, self._fields(_raw(ephemeral), index, peer_id), digest
        )
        receive, send = self._keys(ephemeral, peer_eph, hello, reply)
        session = Session(peer_id, peer_key, index, peer_index, boot, send, receive, self.encrypt)
        return session, reply

    def complete(self, pending: Pending, reply: bytes) -> Session:
        """Check the reply to ``pending``'s hello; the session.

        :raises AuthenticationError: malformed, badly signed, untrusted, or not for that hello.
        """
        digest = hashlib.sha256(pending.hello).digest()
        peer_id, peer_key, peer_eph, peer_index, _, boot, _ = self._check(
            reply, REPLY, _LABEL_REPLY, digest
        )
        if pending.to and peer_id != pending.to:
            raise AuthenticationError(
                f"the reply comes from {peer_id!r}, where {pending.to!r} was meant to answer"
            )
        send, receive = self._keys(pending.ephemeral, peer_eph, pending.hello, reply)
        return Session(
            peer_id, peer_key, pending.local_index, peer_index, boot, send, receive, self.encrypt
        )

    def _check(
        self, message: bytes, kind: int, label: bytes, extra: bytes
    ) -> tuple[str, bytes, bytes, int, int, bytes, str]:
        if len(message) > MAX_HANDSHAKE_BYTES or frame_kind(message) != kind:
            raise AuthenticationError("malformed handshake message")
        body, signature = message[1:-64], message[-64:]
        try:
            fields = msgpack.unpackb(body, raw=False, max_bin_len=MAX_HANDSHAKE_BYTES)
            node_id, key, credential, eph, index, at, boot, to, encrypt = fields
        except (ValueError, TypeError, msgpack.UnpackException):
            raise AuthenticationError("malformed handshake message") from None
        if not (
            isinstance(node_id, str)
            and isinstance(key, bytes)
            and isinstance(credential, bytes)
            and isinstance(eph, bytes)
            and len(eph) == 32
            and isinstance(index, int)
            and 0 < index < 1 << 64
            and isinstance(at, int)
            and isinstance(boot, bytes)
            and len(boot) == 8
            and isinstance(to, str)
            and isinstance(encrypt, bool)
            and len(key) == 32
        ):
            raise AuthenticationError("malformed handshake message")
        # The trust root first: for a secret or a key list it is far cheaper than the
        # signature, so a stranger's hellos cost little.
        self.trust.check(node_id, key, credential)
        if not verify(key, signature, label + body + extra):
            raise AuthenticationError(f"handshake from {node_id!r:.80}: bad signature")
        if encrypt != self.encrypt:
            raise AuthenticationError(
                f"node {node_id!r} has auth.encrypt = {str(encrypt).lower()}, this node "
                f"{str(self.encrypt).lower()}: every node of a cluster needs the same"
            )
        return node_id, key, eph, index, at, boot, to

    def _keys(
        self, mine: X25519PrivateKey, theirs: bytes, hello: bytes, reply: bytes
    ) -> tuple[AESGCM, AESGCM]:
        """(initiator to responder, responder to initiator) ciphers."""
        try:
            shared = mine.exchange(X25519PublicKey.from_public_bytes(theirs))
        except ValueError:
            raise AuthenticationError("handshake: unusable key exchange") from None
        salt = hashlib.sha256(hello + reply).digest()
        okm = HKDF(hashes.SHA256(), 64, salt, _INFO).derive(shared)
        return AESGCM(okm[:32]), AESGCM(okm[32:])

    def _forget(self, now: int) -> None:
        seen = self._seen
        while seen and (
            len(seen) >= MAX_REMEMBERED_HELLOS or now - next(iter(seen.values())) > self._skew
        ):
            seen.popitem(last=False)

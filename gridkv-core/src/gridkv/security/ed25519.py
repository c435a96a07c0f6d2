"""The "ed25519" authenticator: signed identities, a trust root, sealed frames.

Each node has an Ed25519 identity (:mod:`~gridkv.security.identity`) and the trust root
``auth`` configures (:mod:`~gridkv.security.trust`). Before its first frame to an address a
node runs the handshake of :mod:`~gridkv.security.session` as one request through the
transport; the session it gets seals every frame to that address, requests, answers and
one-way sends alike, on any transport. Inbound, a hello is answered with a reply and the
session kept under the index it names; a sealed frame is opened by the session its index
names, and its ``peer_id`` is the sender every message in it must claim to be.

Sessions a node started are kept per address; a peer that lost its end (a restart) refuses
the next request as an unknown session, and the node sets a new one up and sends again. A
hello carrying another boot id than the one this node's session knows means the peer
restarted: it ends this node's own sessions to that node, so one-way sends (which get no
refusal) do not go on into a session the peer no longer has. Sessions a node answered are
kept under their index, the least recently used dropped first past ``MAX_SESSIONS``.

A transport with connections (TCP) runs the same handshake once per connection instead
(:meth:`Ed25519Authenticator.handshake`): the dialler's hello, the acceptor's reply, then one
tag per record of frames (:meth:`~gridkv.security.session.Session.seal_record`), and the
frames it carries are not sealed again. The dialler replaces a connection older than
``SESSION_LIFETIME`` or set up before its key rotated (:attr:`ConnectionGuard.expired`); the
acceptor cuts one older than twice that.

Every refusal is counted by reason (:meth:`Ed25519Authenticator.rejections`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gridkv.base.errors import AuthenticationError, ConfigError, PeerUnavailable
from gridkv.security.base import REFUSED, UNKNOWN_SESSION
from gridkv.security.identity import Identity
from gridkv.security.records import SignedRecords
from gridkv.security.session import (
    HELLO,
    REPLY,
    SEALED,
    Handshake,
    Pending,
    Session,
    frame_kind,
    index_of,
)
from gridkv.security.trust import CATrust, read_file, trust_root

if TYPE_CHECKING:
    from gridkv.base.options import Options
    from gridkv.security.base import Exchange
    from gridkv.transport.base import ConnectionGuard

__all__ = ["ConnectionHandshake", "Ed25519Authenticator", "MAX_SESSIONS", "SESSION_LIFETIME"]

#: Seconds between two looks at who the view puts at a seed connection's address.
_REBIND_CHECK = 1.0
#: Sessions answered that a node keeps at most.
MAX_SESSIONS = 16_384
#: Seconds a node uses a session it set up before it sets up a new one (so a key removed
#: from the trust root stops being used within this time, plus as much again at the peer).
SESSION_LIFETIME = 600.0


class Ed25519Authenticator:
    """Authenticates every frame with per-peer sessions under the configured trust root.

    :param options: the node's options (``local_node_id``, ``auth``, ``max_clock_drift``).
    :param clock: the node's wall clock, in seconds.
    :raises ConfigError: the identity or the trust root cannot be loaded.
    """

    name = "ed25519"

    def __init__(self, options: Options, *, clock: Callable[[], float]) -> None:
        auth = options.auth
        self.identity = Identity.load(options.local_node_id, auth.key, auth.key_file)
        trust = trust_root(auth)
        #: ``None`` without a trust root: this node trusts nobody (a node on its own).
        self.sessions: Handshake | None = None
        if trust is not None:
            self.sessions = Handshake(
                self.identity,
                trust,
                lambda: int(clock() * 1000),
                int(options.max_clock_drift * 1000),
                auth.encrypt,
            )
        self._out: dict[str, Session] = {}
        self._starting: dict[str, asyncio.Future[Session]] = {}
        self._in: OrderedDict[int, Session] = OrderedDict()
        self._rejections: Counter[str] = Counter()
        #: Handshakes this node started (each costs two signatures and two checks).
        self.handshakes_started = 0
        self._epoch = 0
        #: Bumped by :meth:`rotate`: connections set up before are replaced.
        self.key_epoch = 0
        #: node id -> the public key of each peer a connection was authenticated with.
        self._connected: OrderedDict[str, bytes] = OrderedDict()
        self._records: SignedRecords | None = None

    def handshake(self, node_at: Callable[[str], str | None]) -> ConnectionHandshake:
        """The handshake a transport with connections runs on each (then seals records).

        :param node_at: the node id this node's view puts at an address (``None``: unknown);
            a dialler's hello is meant for that node only.
        """
        return ConnectionHandshake(self, node_at)

    def count(self, exc: AuthenticationError) -> None:
        """Count a refusal under its reason."""
        self._rejections[_reason(exc)] += 1

    def connected(self, node_id: str, key: bytes) -> None:
        """A connection was authenticated with ``node_id``, under ``key``."""
        connected = self._connected
        connected[node_id] = key
        connected.move_to_end(node_id)
        while len(connected) > MAX_SESSIONS:
            connected.popitem(last=False)

    def rejections(self) -> Mapping[str, int]:
        """Frames refused so far, by reason."""
        return dict(self._rejections)

    def record_proofs(self) -> SignedRecords | None:
        """Signs this node's member records and checks others' (``None``: no trust root)."""
        if self.sessions is None:
            return None
        if self._records is None:
            self._records = SignedRecords(self.sessions)
        return self._records

    def peer_keys(self) -> dict[str, bytes]:
        """The public key of each node a session is open with (started or answered)."""
        keys = dict(self._connected)
        keys.update((s.peer_id, s.peer_key) for s in self._in.values())
        keys.update((s.peer_id, s.peer_key) for s in self._out.values())
        return keys

    # -- outbound ----------------------------------------------------------------------------

    def channel_ready(self, address: str) -> Session | None:
        """The session to ``address`` if one is set up (and not older than its lifetime)."""
        session = self._out.get(address)
        if session is not None and time.monotonic() - session.created > SESSION_LIFETIME:
            del self._out[address]  # a new handshake checks the peer's key again
            return None
        return session

    def rotate(self, key: str = "", key_file: str = "", cert_file: str = "") -> None:
        """Take a new key pair: inline (``key``) or from ``key_file`` (made when missing).

        New sessions are set up with it at once (this node's own are dropped, and set up
        again at their next message); those peers set up with this node drain as they renew.
        Under a CA trust root, ``cert_file`` is the certificate for the new key.

        :raises ConfigError: the key cannot be loaded, or the trust root does not vouch for it.
        """
        sessions = self.sessions
        identity = Identity.load(self.identity.node_id, key, key_file)
        if sessions is not None:
            trust = None
            if cert_file:
                if not isinstance(sessions.trust, CATrust):
                    raise ConfigError("a certificate is for a CA trust root (auth.ca_file)")
                trust = CATrust(sessions.trust.ca_pem, read_file(cert_file, "cert_file"))
            sessions.rotate(identity, trust)
        self.identity = identity
        self._out.clear()
        self._epoch += 1  # handshakes under way keep their session for one message only
        self.key_epoch += 1  # connections are replaced as their requests finish

    async def channel_to(
        self, address: str, exchange: Exchange, expected: str | None = None
    ) -> Session:
        """The session to ``address``; a handshake through ``exchange`` first if none.

        With ``expected``, the hello is meant for that node only, and a reply from any other
        is refused.
        """
        session = self._out.get(address)
        if session is not None:
            return session
        starting = self._starting.get(address)
        if starting is not None:
            return await asyncio.shield(starting)
        future: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
        self._starting[address] = future
        epoch = self._epoch
        try:
            session = await self._start(address, exchange, expected or "")
        except BaseException as exc:
            shared = exc
            if isinstance(exc, asyncio.CancelledError):  # the caller's, not the others'
                shared = PeerUnavailable(f"handshake with {address!r} was cancelled")
            future.set_exception(shared)
            future.exception()  # retrieved: those who share it get it through their await
            raise
        finally:
            self._starting.pop(address, None)
        future.set_result(session)
        if epoch == self._epoch:  # not set up under a key rotated away since
            self._out[address] = session
        return session

    async def _start(self, address: str, exchange: Exchange, expected: str) -> Session:
        sessions = self.sessions
        if sessions is None:
            raise AuthenticationError(
                f"cannot authenticate to {address!r}: no trust root is configured "
                "(auth.cluster_secret, auth.trusted_keys or auth.ca_file)"
            )
        pending, hello = sessions.initiate(expected)
        self.handshakes_started += 1
        reply = await exchange(hello)
        if frame_kind(reply) == REFUSED:
            reason = reply[1:].decode("utf-8", "replace")
            raise AuthenticationError(f"{address!r} refused this node: {reason}")
        return sessions.complete(pending, reply)

    def forget(self, address: str) -> None:
        """Drop the session to ``address``."""
        self._out.pop(address, None)
        self._epoch += 1

    # -- inbound -----------------------------------------------------------------------------

    def accept(self, peer: str, frame: bytes) -> tuple[Session | None, bytes]:
        """Open a sealed frame, or answer a hello; refusals raise and are counted."""
        kind = frame_kind(frame)
        if kind == SEALED:
            index = index_of(frame)
            session = self._in.get(index)
            if session is not None and time.monotonic() - session.created > 2 * SESSION_LIFETIME:
                del self._in[index]  # its initiator renews at the lifetime
                session = None
            if session is None:
                self._rejections[UNKNOWN_SESSION] += 1
                raise AuthenticationError(UNKNOWN_SESSION)
            try:
                payload = session.open(frame)
            except AuthenticationError as exc:
                self._rejections[_reason(exc)] += 1
                raise
            self._in.move_to_end(index)
            return session, payload
        if kind == HELLO:
            return None, self._answer(frame)
        self._rejections["unauthenticated frame"] += 1
        if kind == REPLY:
            raise AuthenticationError("a handshake reply nobody asked for")
        raise AuthenticationError("unauthenticated frame (peer authentication is on)")

    def _answer(self, hello: bytes) -> bytes:
        sessions = self.sessions
        if sessions is None:
            self._rejections["no trust root"] += 1
            raise AuthenticationError("this node has no trust root configured: it trusts nobody")
        try:
            session, reply = sessions.respond(hello)
        except AuthenticationError as exc:
            self._rejections[_reason(exc)] += 1
            raise
        except ConfigError as exc:  # pragma: no cover - a trust root that cannot load
            self._rejections["trust root unavailable"] += 1
            raise AuthenticationError(str(exc)) from None
        # A peer that restarted lost the sessions this node had set up with it (one-way sends
        # into them would vanish): set them up again. A peer that merely renews keeps its boot
        # id, and this node's sessions stand (else each renewal would set off the other's).
        for address in [
            a
            for a, s in self._out.items()
            if s.peer_id == session.peer_id and s.peer_boot != session.peer_boot
        ]:
            del self._out[address]
        self._in[session.local_index] = session
        while len(self._in) > MAX_SESSIONS:
            self._in.popitem(last=False)
        return reply


@dataclass(frozen=True, slots=True)
class _Dialled:
    """A dialler's hello waiting for its reply, and the key epoch it was made under."""

    hello: Pending
    key_epoch: int
    #: The address dialled when the view knew nobody there (a seed): the connection is
    #: bound to whoever answered, until the view says who is there.
    unbound: str = ""


class ConnectionHandshake:
    """The handshake of :mod:`gridkv.security.session`, run by a transport per connection.

    :param auth: the node's authenticator (identity, trust root, counters).
    :param node_at: the node id this node's view puts at an address, if any.
    """

    def __init__(self, auth: Ed25519Authenticator, node_at: Callable[[str], str | None]) -> None:
        self._auth = auth
        self._node_at = node_at

    def _sessions(self) -> Handshake:
        sessions = self._auth.sessions
        if sessions is None:
            raise AuthenticationError(
                "this node has no trust root configured: it trusts nobody (auth.cluster_secret, "
                "auth.trusted_keys or auth.ca_file)"
            )
        return sessions

    def initiate(self, address: str) -> tuple[object, bytes]:
        """A hello to ``address``, meant for the node the view puts there (if known)."""
        expected = self._node_at(address)
        pending, hello = self._sessions().initiate(expected or "")
        self._auth.handshakes_started += 1
        return _Dialled(pending, self._auth.key_epoch, "" if expected else address), hello

    def respond(self, peer_address: str, hello: bytes) -> tuple[ConnectionGuard, bytes]:
        """Check a dialler's hello; its guard and the reply (refusals: :meth:`refusal`)."""
        auth = self._auth
        try:
            session, reply = self._sessions().respond(hello)
        except ConfigError as exc:  # a trust root that cannot load (a trusted-keys file gone)
            raise AuthenticationError(f"trust root unavailable: {exc}") from None
        auth.connected(session.peer_id, session.peer_key)
        return Guard(session, auth, auth.key_epoch, accepted=True), reply

    def refusal(self, error: AuthenticationError) -> bytes:
        """Count an acceptor's refusal; what it sends: the reason, after :data:`REFUSED`."""
        self._auth.count(error)
        return bytes([REFUSED]) + str(error).encode()[:200]

    def binds_certificate(self, certificate: bytes) -> bool:
        """Whether the trust root is a CA (``auth.ca_file``) that issued ``certificate``."""
        sessions = self._auth.sessions
        if sessions is None or not isinstance(sessions.trust, CATrust):
            return False
        try:
            sessions.trust.identify(certificate)
        except AuthenticationError:
            return False
        return True

    def tls_peer(self, certificate: bytes, address: str) -> ConnectionGuard | None:
        """A guard for a TLS peer whose certificate the CA trust root issued; else ``None``.

        Under ``auth.ca_file`` a node certificate binds its node id to its Ed25519 key, and
        TLS proved the peer holds that key: the hellos would prove it again, and the record
        tags repeat what TLS's own do.
        """
        sessions = self._auth.sessions
        if sessions is None or not isinstance(sessions.trust, CATrust):
            return None
        try:
            node_id, key = sessions.trust.identify(certificate)
        except AuthenticationError:
            return None  # not one of the cluster's: the hellos run and say why
        expected = self._node_at(address) if address else None
        if expected is not None and expected != node_id:
            raise AuthenticationError(
                f"{address!r} presented the certificate of {node_id!r:.80}, where this node's "
                f"view has {expected!r}"
            )
        self._auth.connected(node_id, key)
        return TlsGuard(node_id, self._auth, accepted=not address)

    def complete(self, address: str, pending: object, reply: bytes) -> ConnectionGuard:
        """Check the acceptor's reply (or refusal); the dialler's guard."""
        assert isinstance(pending, _Dialled)
        auth = self._auth
        if frame_kind(reply) == REFUSED:
            reason = reply[1:].decode("utf-8", "replace")
            raise AuthenticationError(f"{address!r} refused this node: {reason}")
        try:
            session = self._sessions().complete(pending.hello, reply)
        except ConfigError as exc:  # a trust root that cannot load
            error = AuthenticationError(f"trust root unavailable: {exc}")
            auth.count(error)
            raise error from None
        except AuthenticationError as exc:
            auth.count(exc)
            raise
        auth.connected(session.peer_id, session.peer_key)
        guard = Guard(session, auth, pending.key_epoch)
        if pending.unbound:
            guard.watch(pending.unbound, self._node_at)
        return guard


class _Lifetime:
    """What every guard of this authenticator shares: its lifetime and its binding.

    The binding: who the view puts at a seed connection's address (see :meth:`watch`).

    :param peer_id: the node id the peer was authenticated as.
    :param auth: the authenticator (its key epoch, its counters).
    :param epoch: the key epoch the connection was set up under.
    :param created: monotonic seconds when it was set up.
    :param accepted: the acceptor's end: past twice ``SESSION_LIFETIME`` it refuses the
        connection's records (a dialler that does not replace its connections does not keep
        a session, and a key removed from the trust root stops working, within that time).
    """

    __slots__ = (
        "_address",
        "_auth",
        "_created",
        "_deadline",
        "_epoch",
        "_next_check",
        "_node_at",
        "_refuse_after",
        "peer_id",
    )

    def __init__(
        self,
        peer_id: str,
        auth: Ed25519Authenticator,
        epoch: int,
        created: float,
        *,
        accepted: bool = False,
    ) -> None:
        #: The node id the peer was authenticated as.
        self.peer_id = peer_id
        self._auth = auth
        self._epoch = epoch
        self._created = created
        self._deadline = created + SESSION_LIFETIME
        self._refuse_after = created + 2 * SESSION_LIFETIME if accepted else float("inf")
        self._address = ""
        self._node_at: Callable[[str], str | None] | None = None
        self._next_check = 0.0

    def watch(self, address: str, node_at: Callable[[str], str | None]) -> None:
        """Watch who the view puts at ``address``, dialled when it knew nobody there (a seed).

        Once the view puts another node than this peer there, the connection is
        :attr:`expired` (the dialler replaces it with one meant for that node).
        """
        self._address, self._node_at = address, node_at

    @property
    def expired(self) -> bool:
        """Whether the dialler should replace the connection.

        It is older than its lifetime, set up under a key rotated away since, or (dialled to
        a seed) the view puts another node at its address.
        """
        now = time.monotonic()
        if self._epoch != self._auth.key_epoch or now > self._deadline:
            return True
        node_at = self._node_at
        if node_at is None or now < self._next_check:
            return False
        self._next_check = now + _REBIND_CHECK  # the view is scanned, so not on every use
        there = node_at(self._address)
        if there is None or there == self.peer_id:
            return False
        self._deadline = now  # its lifetime ends here, for good
        return True

    def _check_age(self) -> None:
        """Refuse (counted) a record past the acceptor's limit."""
        if time.monotonic() > self._refuse_after:
            error = AuthenticationError(
                f"session expired: {self.peer_id!r} kept a connection past "
                f"{self._refuse_after - self._created:g}s without renewing it"
            )
            self._auth.count(error)
            raise error


class Guard(_Lifetime):
    """A connection's protection: one session's records, for ``SESSION_LIFETIME``.

    :param session: the session the connection's handshake set up.
    :param auth: the authenticator (its key epoch, its counters).
    :param epoch: the key epoch the handshake ran under.
    :param accepted: the acceptor's end (see :class:`_Lifetime`).
    """

    __slots__ = ("_session",)

    def __init__(
        self, session: Session, auth: Ed25519Authenticator, epoch: int, *, accepted: bool = False
    ) -> None:
        super().__init__(session.peer_id, auth, epoch, session.created, accepted=accepted)
        self._session = session

    def seal(self, data: bytes) -> bytes:
        """The next record to the peer."""
        return self._session.seal_record(data)

    def open(self, record: bytes) -> bytes:
        """The data of the peer's next record; refusals are counted."""
        self._check_age()
        try:
            return self._session.open_record(record)
        except AuthenticationError as exc:
            self._auth.count(exc)
            raise


#: (what a refusal's message says, the reason it is counted under), first match counts.
_REASONS = (
    ("replayed or too old", "replayed or too old"),
    ("session expired", "session expired"),
    ("failed its authentication tag", "failed its authentication tag"),
    ("not sealed for this session", "not sealed for this session"),
    ("bad signature", "bad signature"),
    ("stale or replayed", "stale or replayed"),
    ("replayed", "replayed"),
    ("malformed", "malformed"),
    ("not vouched for", "not vouched for"),
    ("not in the trusted keys", "not in the trusted keys"),
    ("key other than", "key other than"),
    ("certificate", "certificate"),
    ("before its hello", "unauthenticated frame"),
    ("unauthenticated frame", "unauthenticated frame"),
    ("not for this node", "meant for another node"),
    ("where this node's view has", "meant for another node"),
    ("was meant to answer", "meant for another node"),
    ("no hello within", "handshake timed out"),
    ("no trust root", "no trust root"),
    ("trust root unavailable", "trust root unavailable"),
)


class TlsGuard(_Lifetime):
    """A TLS connection's guard: TLS authenticated the peer and protects its data.

    It passes records as they are. Like a :class:`Guard`, it expires after
    ``SESSION_LIFETIME`` or a rotation (the dialler replaces the connection, and the trust
    root checks the certificate again).

    :param peer_id: the node id the peer's certificate names.
    :param auth: the authenticator (its key epoch).
    :param accepted: the acceptor's end (see :class:`_Lifetime`).
    """

    __slots__ = ()

    def __init__(self, peer_id: str, auth: Ed25519Authenticator, *, accepted: bool) -> None:
        super().__init__(peer_id, auth, auth.key_epoch, time.monotonic(), accepted=accepted)

    def seal(self, data: bytes) -> bytes:
        """``data`` itself (TLS protects it)."""
        return data

    def open(self, record: bytes) -> bytes:
        """``record`` itself (TLS checked it); the acceptor refuses past twice the lifetime."""
        self._check_age()
        return record


def _reason(exc: AuthenticationError) -> str:
    """A short, bounded name for a refusal (the counters' key)."""
    text = str(exc)
    for said, reason in _REASONS:
        if said in text:
            return reason
    return "refused"

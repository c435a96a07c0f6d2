"""Authenticated sessions, loop-free: the signed handshake and sealed frames."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
from gridkv import AuthenticationError
from gridkv.security.identity import Identity, decode_key, new_secret
from gridkv.security.session import (
    HELLO,
    SEALED,
    WINDOW,
    Handshake,
    ReplayWindow,
    Session,
    frame_kind,
    index_of,
)
from gridkv.security.trust import KeyListTrust, SecretTrust

SECRET = decode_key(new_secret(), "secret")
SKEW_MS = 10_000


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def __call__(self) -> int:
        return self.ms


def handshake(node_id: str, clock: Clock, secret: bytes = SECRET, **kw: bool) -> Handshake:
    return Handshake(Identity.load(node_id), SecretTrust(secret), clock, SKEW_MS, **kw)


def connect(a: Handshake, b: Handshake) -> tuple[Session, Session]:
    pending, hello = a.initiate()
    at_b, reply = b.respond(hello)
    return a.complete(pending, reply), at_b


@pytest.mark.parametrize("encrypt", [False, True])
def test_a_handshake_gives_both_sides_a_session_bound_to_the_peers_id(encrypt: bool) -> None:
    clock = Clock()
    a, b = handshake("n1", clock, encrypt=encrypt), handshake("n2", clock, encrypt=encrypt)
    at_a, at_b = connect(a, b)
    assert (at_a.peer_id, at_b.peer_id) == ("n2", "n1")
    assert (at_a.peer_key, at_b.peer_key) == (b.identity.public_key, a.identity.public_key)
    frame = at_a.seal(b"ping")
    assert frame_kind(frame) == SEALED and index_of(frame) == at_b.local_index
    assert (b"ping" in frame) is not encrypt
    assert at_b.open(frame) == b"ping"
    assert at_a.open(at_b.seal(b"pong")) == b"pong"


def test_an_altered_frame_is_refused() -> None:
    clock = Clock()
    at_a, at_b = connect(handshake("n1", clock), handshake("n2", clock))
    frame = bytearray(at_a.seal(b"set k=v"))
    for position in (5, 12, 18, len(frame) - 1):  # index, counter, payload, tag
        altered = bytearray(frame)
        altered[position] ^= 1
        with pytest.raises(AuthenticationError):
            at_b.open(bytes(altered))
    assert at_b.open(bytes(frame)) == b"set k=v"  # the original still opens, once


def test_a_frame_is_taken_once_in_any_order_within_the_window() -> None:
    clock = Clock()
    at_a, at_b = connect(handshake("n1", clock), handshake("n2", clock))
    frames = [at_a.seal(bytes([i])) for i in range(5)]
    assert [at_b.open(frames[i]) for i in (2, 0, 4, 1, 3)] == [bytes([i]) for i in (2, 0, 4, 1, 3)]
    with pytest.raises(AuthenticationError, match="replayed or too old"):
        at_b.open(frames[3])
    # A frame that many frames behind the newest is refused.
    old = at_a.seal(b"old")
    for _ in range(WINDOW):
        at_b.open(at_a.seal(b"x"))
    with pytest.raises(AuthenticationError, match="replayed or too old"):
        at_b.open(old)


def test_the_replay_window_counts_each_counter_once() -> None:
    window = ReplayWindow()
    assert [window.take(c) for c in (0, 5, 3, 5, 3, WINDOW + 5, 6, 5)] == [
        True,
        True,
        True,
        False,
        False,
        True,
        True,
        False,
    ]
    assert window.take(WINDOW * 10)
    assert not window.take(WINDOW * 9)


def test_a_frame_for_another_session_is_refused() -> None:
    clock = Clock()
    a, b = handshake("n1", clock), handshake("n2", clock)
    first_a, _first_b = connect(a, b)
    _second_a, second_b = connect(a, b)
    with pytest.raises(AuthenticationError, match="not sealed for this session"):
        second_b.open(first_a.seal(b"x"))


def test_a_node_without_the_secret_cannot_complete_a_handshake() -> None:
    clock = Clock()
    member, outsider = handshake("n1", clock), handshake("n9", clock, decode_key(new_secret(), "s"))
    _, hello = outsider.initiate()
    with pytest.raises(AuthenticationError, match="not vouched for by this cluster's secret"):
        member.respond(hello)
    _pending, hello = member.initiate()
    with pytest.raises(AuthenticationError, match="not vouched for"):
        outsider.respond(hello)


def test_an_untrusted_key_cannot_speak_for_a_listed_node(tmp_path: Path) -> None:
    clock = Clock()
    n1, n2, impostor = Identity.load("n1"), Identity.load("n2"), Identity.load("n2")
    listed = tmp_path / "trusted"
    listed.write_text(f"n1 {n1.public_key_text}\nn2 {n2.public_key_text}\n")
    trust = KeyListTrust(str(listed))
    member = Handshake(n1, trust, clock, SKEW_MS)
    spoof = Handshake(impostor, trust, clock, SKEW_MS)
    _, hello = spoof.initiate()
    with pytest.raises(AuthenticationError, match="key other than the ones"):
        member.respond(hello)


def test_a_replayed_or_stale_hello_is_refused() -> None:
    clock = Clock()
    a, b = handshake("n1", clock), handshake("n2", clock)
    _, hello = a.initiate()
    b.respond(hello)
    with pytest.raises(AuthenticationError, match="replayed"):
        b.respond(hello)
    _, late = a.initiate()
    clock.ms += SKEW_MS + 1
    with pytest.raises(AuthenticationError, match="stale or replayed"):
        b.respond(late)


def test_a_reply_answers_one_hello_only() -> None:
    clock = Clock()
    a, b = handshake("n1", clock), handshake("n2", clock)
    first, hello = a.initiate()
    _, reply = b.respond(hello)
    second, _ = a.initiate()
    with pytest.raises(AuthenticationError, match="bad signature"):
        a.complete(second, reply)
    assert a.complete(first, reply).peer_id == "n2"


def test_a_hello_with_a_changed_field_fails_its_signature() -> None:
    clock = Clock()
    a, b = handshake("n1", clock), handshake("n2", clock)
    _, hello = a.initiate()
    for position, value, refusal in (
        (0, "n3", "not vouched for"),  # another id: the credential is for n1's
        (5, None, "bad signature"),  # another time, with the same signature
        (7, "n2", "bad signature"),  # meant for another node
    ):
        fields = msgpack.unpackb(hello[1:-64])
        fields[position] = fields[position] + 1 if value is None else value
        forged = bytes([HELLO]) + msgpack.packb(fields, use_bin_type=True) + hello[-64:]
        with pytest.raises(AuthenticationError, match=refusal):
            b.respond(forged)
    for junk in (b"", bytes([HELLO]), bytes([HELLO]) + b"\x90" + b"s" * 64, b"\xa1" * 20_000):
        with pytest.raises(AuthenticationError, match="malformed"):
            b.respond(junk)


def test_a_hello_meant_for_one_node_is_refused_by_another_and_a_reply_from_another_too() -> None:
    clock = Clock()
    a, b, c = handshake("n1", clock), handshake("n2", clock), handshake("n3", clock)
    pending, hello = a.initiate(to="n2")
    with pytest.raises(AuthenticationError, match="meant for 'n2', not for this node"):
        c.respond(hello)  # relayed by a man in the middle to another trusted node
    _, reply = c.respond(a.initiate()[1])  # n3 answers a hello meant for anybody
    with pytest.raises(AuthenticationError):
        a.complete(pending, reply)  # bound to another hello
    pending, hello = a.initiate(to="n2")
    _, reply = b.respond(hello)
    assert a.complete(pending, reply).peer_id == "n2"
    # A reply from another node than the one meant is refused even when it answers this hello.
    pending, hello = a.initiate(to="n3")
    relayed = Handshake(c.identity, c.trust, clock, SKEW_MS)  # n3's key, answering n2's way
    _, reply = relayed.respond(hello)
    assert a.complete(pending, reply).peer_id == "n3"
    pending, hello = a.initiate(to="n2")
    with pytest.raises(AuthenticationError, match="meant for 'n2'"):
        relayed.respond(hello)


def test_nodes_that_disagree_on_encryption_are_told_so() -> None:
    clock = Clock()
    a, b = handshake("n1", clock), handshake("n2", clock, encrypt=True)
    with pytest.raises(AuthenticationError, match="auth.encrypt = false.*the same"):
        b.respond(a.initiate()[1])


def test_an_answer_is_taken_for_its_own_request_only() -> None:
    clock = Clock()
    at_a, at_b = connect(handshake("n1", clock), handshake("n2", clock))
    first, second = at_a.seal(b"read k"), at_a.seal(b"read k")
    answer_to_first = at_b.seal(b"v1", answering=at_b_open(at_b, first))
    at_b.open(second)
    with pytest.raises(AuthenticationError, match="answer to another request"):
        at_a.open(answer_to_first, second)
    assert at_a.open(answer_to_first, first) == b"v1"


def at_b_open(session: Session, request: bytes) -> bytes:
    """Open ``request`` at the answering side; the request frame, to answer it."""
    session.open(request)
    return request

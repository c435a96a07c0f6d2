"""Fuzzing the authenticator's decoders: whatever bytes arrive, a hello, a reply or a sealed
frame is taken or refused with AuthenticationError, and nothing else escapes; a refused frame
leaves the session working.

Inputs are random bytes, and mutations (truncations, bit flips, spliced bytes, a changed kind
byte) of real hellos, replies and sealed frames. Example counts come from ``fuzz_examples``
(``GRIDKV_FUZZ_EXAMPLES``); ``nox -s fuzz`` runs them at 100,000.
"""

from __future__ import annotations

import time

import pytest
from gridkv import Options
from gridkv.base.errors import AuthenticationError
from gridkv.security.ed25519 import Ed25519Authenticator
from gridkv.security.identity import Identity, decode_key, new_secret
from gridkv.security.session import Handshake
from gridkv.security.trust import SecretTrust
from gridkv.testing.fuzz import Entropy, fuzz_examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.fuzz

SECRET = decode_key(new_secret(), "secret")


def clock_ms() -> int:
    return int(time.time() * 1000)


def handshake(node_id: str) -> Handshake:
    return Handshake(Identity.load(node_id), SecretTrust(SECRET), clock_ms, 10_000)


CLIENT, SERVER = handshake("client"), handshake("server")
PENDING, HELLO = CLIENT.initiate()
AT_SERVER, REPLY = SERVER.respond(HELLO)
AT_CLIENT = CLIENT.complete(PENDING, REPLY)
SEALED = AT_CLIENT.seal(b"a message of some length, " * 4)
SAMPLES = [HELLO, REPLY, SEALED]


def mutate(data: bytes, entropy: Entropy) -> bytes:
    """``data`` truncated, flipped, spliced or re-kinded, as ``entropy`` chooses."""
    out = bytearray(data)
    for _ in range(1 + entropy.below(4)):
        choice = entropy.below(5)
        if choice == 0 and out:
            del out[entropy.below(len(out)) :]
        elif choice == 1 and out:
            out[entropy.below(len(out))] ^= 1 << entropy.below(8)
        elif choice == 2:
            at = entropy.below(len(out) + 1)
            out[at:at] = entropy.take(entropy.below(40))
        elif choice == 3 and out:
            out[0] = 0xA0 + entropy.below(6)
        else:
            out += entropy.take(entropy.below(8))
    return bytes(out)


def authenticator() -> Ed25519Authenticator:
    options = Options.from_mapping(
        {"local_node_id": "server", "auth": {"cluster_secret": new_secret()}}
    )
    return Ed25519Authenticator(options, clock=time.time)


SETTINGS = settings(
    max_examples=fuzz_examples(),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


@SETTINGS
@given(st.integers(0, len(SAMPLES)), st.binary(max_size=512))
def test_any_bytes_are_taken_or_refused_by_the_session_decoders(which: int, raw: bytes) -> None:
    frame = raw if which == len(SAMPLES) else mutate(SAMPLES[which], Entropy(raw))
    server = handshake("server")
    for step in (
        lambda: server.respond(frame),
        lambda: CLIENT.complete(PENDING, frame),
        lambda: AT_SERVER.open(frame),
    ):
        try:
            step()
        except AuthenticationError:
            pass
    # The session still opens what its peer really sent.
    assert AT_SERVER.open(AT_CLIENT.seal(b"still fine")) == b"still fine"


AUTH = authenticator()


@SETTINGS
@given(st.integers(0, len(SAMPLES)), st.binary(max_size=512))
def test_any_bytes_are_taken_or_refused_by_the_authenticator(which: int, raw: bytes) -> None:
    frame = raw if which == len(SAMPLES) else mutate(SAMPLES[which], Entropy(raw))
    before = sum(AUTH.rejections().values())
    try:
        AUTH.accept("127.0.0.1:1", frame)
    except AuthenticationError:
        assert sum(AUTH.rejections().values()) == before + 1  # each refusal counted once
    else:  # pragma: no cover - nothing here is signed under this node's secret
        pytest.fail(f"accepted a frame nobody with the secret made: {frame!r:.80}")


# Records (a connection's writes, gridkv.security.session.Session.seal_record): a pair of
# sessions set up once, each example sealing one record on one side and opening it on the
# other, after the same bytes mutated were refused.
_R_PENDING, _R_HELLO = CLIENT.initiate()
_R_SERVER, _R_REPLY = SERVER.respond(_R_HELLO)
_R_CLIENT = CLIENT.complete(_R_PENDING, _R_REPLY)


@SETTINGS
@given(st.binary(max_size=512), st.binary(max_size=300))
def test_a_mutated_record_is_refused_and_the_connection_goes_on(raw: bytes, data: bytes) -> None:
    record = _R_CLIENT.seal_record(data)
    forged = mutate(record, Entropy(raw))
    if forged != record:
        with pytest.raises(AuthenticationError):
            _R_SERVER.open_record(forged)
    # A replay of an earlier record, and the real one: the first refused, the second taken.
    assert _R_SERVER.open_record(record) == data
    with pytest.raises(AuthenticationError):
        _R_SERVER.open_record(record)

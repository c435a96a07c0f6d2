"""Signed member records, loop-free: a member's address and incarnation are its own word."""

from __future__ import annotations

import time

from gridkv.security.identity import Identity, decode_key, new_secret
from gridkv.security.records import SignedRecords
from gridkv.security.session import Handshake
from gridkv.security.trust import SecretTrust
from gridkv.wire.fields import MemberRecord

SECRET = decode_key(new_secret(), "secret")


def signer(node_id: str, secret: bytes = SECRET) -> SignedRecords:
    hs = Handshake(Identity.load(node_id), SecretTrust(secret), lambda: int(time.time()), 10_000)
    return SignedRecords(hs)


def test_a_members_own_record_checks_anywhere_and_nothing_else_does() -> None:
    n1, n2 = signer("n1"), signer("n2")
    proof = n1.prove("n1", "10.0.0.1:7946", 5, 0)
    assert n2.check(MemberRecord("n1", "10.0.0.1:7946", 5, 0, "n3", proof))  # relayed by n3
    for lie in (
        MemberRecord("n1", "10.0.0.9:7946", 5, 0, "n3", proof),  # moved
        MemberRecord("n1", "10.0.0.1:7946", 6, 0, "n3", proof),  # newer incarnation
        MemberRecord("n1", "10.0.0.1:7946", 5, 3, "n3", proof),  # left
        MemberRecord("n2", "10.0.0.1:7946", 5, 0, "n3", proof),  # another id
        MemberRecord("n1", "10.0.0.1:7946", 5, 0, "n3", b""),  # no proof
        MemberRecord("n1", "10.0.0.1:7946", 5, 0, "n3", b"\x93junk"),
        MemberRecord("n1", "10.0.0.1:7946", 5, 0, "n3", n2.prove("n1", "10.0.0.1:7946", 5, 0)),
    ):
        assert not n2.check(lie)
    assert n2.refused == 7
    outsider = signer("n1", decode_key(new_secret(), "s"))  # the right id, another secret
    assert not n2.check(
        MemberRecord("n1", "10.0.0.1:7946", 7, 0, "n1", outsider.prove("n1", "10.0.0.1:7946", 7, 0))
    )

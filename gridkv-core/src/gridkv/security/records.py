"""Signed member records: a member's address, incarnation and key are its own word.

With authentication on, a node signs each alive or left record it makes of itself; the
proof it attaches is ``[public key, credential, signature]``: any node can check the
credential against the trust root and the signature against the key, even for a member it
has never spoken to (a member that arrives by gossip is admitted only so). Checked proofs
are remembered (a record is relayed many times; a signature check costs about 60 us).
"""

from __future__ import annotations

from collections import OrderedDict

import msgpack

from gridkv.base.errors import AuthenticationError, ConfigError
from gridkv.security.identity import KEY_BYTES, verify
from gridkv.security.session import Handshake
from gridkv.wire.fields import MemberRecord

__all__ = ["SignedRecords", "statement"]

_LABEL = b"gridkv member v1\x00"
#: Checked proofs remembered at most.
MAX_REMEMBERED = 16_384


def statement(node_id: str, address: str, incarnation: int, state: int) -> bytes:
    """The bytes a member signs for its record."""
    body: bytes = msgpack.packb([node_id, address, incarnation, state], use_bin_type=True)
    return _LABEL + body


class SignedRecords:
    """Signs this node's records with its identity, checks others' under the trust root.

    :param handshake: the node's handshake (its identity, credential and trust root, kept
        current by key rotation).
    """

    def __init__(self, handshake: Handshake) -> None:
        self._handshake = handshake
        self._checked: OrderedDict[tuple[str, str, int, int, bytes], bool] = OrderedDict()
        #: Records refused for a missing or bad proof.
        self.refused = 0

    @property
    def signer(self) -> bytes:
        """The public key proofs are made with now."""
        return self._handshake.identity.public_key

    def prove(self, node_id: str, address: str, incarnation: int, state: int) -> bytes:
        """This node's proof of its own record."""
        hs = self._handshake
        signature = hs.identity.sign(statement(node_id, address, incarnation, state))
        proof: bytes = msgpack.packb(
            [hs.identity.public_key, hs.credential, signature], use_bin_type=True
        )
        return proof

    def check(self, record: MemberRecord) -> bool:
        """Whether the record's proof is its member's signature of it, under the trust root."""
        key = (record.node_id, record.address, record.incarnation, record.state, record.proof)
        known = self._checked.get(key)
        if known is None:
            known = self._check(record)
            self._checked[key] = known
            while len(self._checked) > MAX_REMEMBERED:
                self._checked.popitem(last=False)
        if not known:
            self.refused += 1
        return known

    def _check(self, record: MemberRecord) -> bool:
        try:
            public_key, credential, signature = msgpack.unpackb(record.proof, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            return False
        if not (
            isinstance(public_key, bytes)
            and len(public_key) == KEY_BYTES
            and isinstance(credential, bytes)
            and isinstance(signature, bytes)
        ):
            return False
        try:
            self._handshake.trust.check(record.node_id, public_key, credential)
        except (AuthenticationError, ConfigError):
            return False
        said = statement(record.node_id, record.address, record.incarnation, record.state)
        return verify(public_key, signature, said)

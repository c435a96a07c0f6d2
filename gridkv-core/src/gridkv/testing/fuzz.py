"""Shared pieces of the fuzz tests: example counts, a source of choices, valid messages.

Fuzz tests (marked ``@pytest.mark.fuzz``) take their example count from :func:`fuzz_examples`,
so the default test run stays quick while ``nox -s fuzz`` sets ``GRIDKV_FUZZ_EXAMPLES`` (to
100,000 or more) and runs the same tests at length. Either way hypothesis draws from a fixed
seed (the ``gridkv`` profile in the repository's ``conftest.py``), so a failure reproduces.

Hypothesis spends some ten microseconds on every choice it makes, so an input built from a
hundred small draws costs milliseconds, and 100,000 of them most of an hour. A fuzz test
therefore draws a few choices from hypothesis (which sample, which kind of input) and one byte
string, and builds the bulk of its input from that string through :class:`Entropy`, the way a
libFuzzer data provider does. Hypothesis still generates, mutates and shrinks the bytes, and
shorter, smaller bytes make simpler choices, so a failure shrinks to a small input.

:func:`message_samples` is the one place that builds a valid instance of every wire message
type; the decoder's fuzz tests mutate their encodings, and a test fails when a type in
:data:`gridkv.wire.messages.MESSAGE_TYPES` has no sample here. This module imports nothing
beyond gridkv itself, so transports' test suites can use it without hypothesis installed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

from gridkv.storage.base import BUCKETS, Entry
from gridkv.wire.messages import (
    STATUS_NAMES,
    BatchAck,
    BucketReply,
    BucketSync,
    DigestReply,
    DigestSync,
    ErrorReply,
    GetManyReply,
    GetManyRequest,
    GetReply,
    GetRequest,
    HandoffDone,
    Invalidate,
    KeysReply,
    KeysRequest,
    KeySync,
    KeySyncReply,
    MemberRecord,
    Message,
    MutateReply,
    MutateRequest,
    Ping,
    Pong,
    PushPull,
    PushPullReply,
    ReplicateBatch,
    StatusReply,
    StatusRequest,
    SwimAck,
    SwimGossip,
    SwimNack,
    SwimPing,
    SwimPingReq,
    WatchedGetReply,
    WatchedGetRequest,
)

__all__ = ["FUZZ_ENV", "fuzz_examples", "Entropy", "message_samples"]

_T = TypeVar("_T")

#: The environment variable that sets the example count of every fuzz test.
FUZZ_ENV = "GRIDKV_FUZZ_EXAMPLES"


def fuzz_examples(default: int = 300) -> int:
    """Examples a fuzz test should try: ``$GRIDKV_FUZZ_EXAMPLES``, else ``default``."""
    raw = os.environ.get(FUZZ_ENV, "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else default


class Entropy:
    """Choices read from a byte string, first byte first.

    When the bytes run out every choice reads zero: the first item, the smallest number, no
    extra work. So the shorter and smaller the bytes, the simpler the input built from them,
    which is the direction hypothesis shrinks.
    """

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def below(self, n: int) -> int:
        """A number from 0 to ``n - 1``, read from as many bytes as ``n`` needs."""
        if n <= 1:
            return 0
        size = (n - 1).bit_length() + 7 >> 3
        chunk = self._data[self._pos : self._pos + size]
        self._pos += size
        return int.from_bytes(chunk.ljust(size, b"\0"), "big") % n

    def between(self, low: int, high: int) -> int:
        """A number from ``low`` to ``high``, both included."""
        return low + self.below(high - low + 1)

    def pick(self, items: Sequence[_T]) -> _T:
        """One of ``items``; the first once the bytes run out."""
        return items[self.below(len(items))]

    def one_in(self, n: int) -> bool:
        """True with a chance of one in ``n``; false once the bytes run out."""
        return self.below(n) == n - 1

    def take(self, size: int) -> bytes:
        """The next ``size`` bytes, padded with zeros once the bytes run out."""
        chunk = self._data[self._pos : self._pos + size]
        self._pos += size
        return chunk.ljust(size, b"\0")

    def blob(self, max_size: int) -> bytes:
        """Bytes of a length from 0 to ``max_size``."""
        return self.take(self.below(max_size + 1))


# Values at the edges of the fields' ranges, so mutations start from the interesting cases.
_U64_MAX = (1 << 64) - 1
_U32_MAX = (1 << 32) - 1
_NODE = "node-\u00e9-\u2603"  # non-ASCII: a character count is not a byte count
_LONG_NODE = "n" * 255  # the longest node id the wire accepts


def message_samples() -> list[Message]:
    """One valid instance of every message type, in the order of their type numbers.

    Every sample round-trips through :func:`gridkv.wire.encode` and :func:`gridkv.wire.decode`
    unchanged. Lists hold two or more items (a tombstone beside a value, a member of every
    state) so that mutations have structure to work on. When a message type is added or
    changes shape, update its sample here; ``test_fuzz_codec`` fails until every type in
    ``MESSAGE_TYPES`` has one.
    """
    value = (7, Entry("user:\u00e9", b"\x00value\xff", _U64_MAX, _NODE, 1_700_000_000_000))
    tombstone = (_U32_MAX, Entry("k" * 300, None, 1, _LONG_NODE, 0))
    records = [
        MemberRecord(_NODE, "10.0.0.1:7946", 0, 0, _NODE, b"\x93\xc4\x01k\xc4\x00\xc4\x01s"),
        MemberRecord("b", "[::1]:7947", _U64_MAX, 1, "c"),
        MemberRecord("c", "host.example:1", 3, 2, "b"),
        MemberRecord("d", "d:1", 1, 3, "d", bytes(4096)),
    ]
    samples: list[Message] = [
        Ping(_U64_MAX, _NODE),
        Pong(0, _LONG_NODE, _U64_MAX),
        ErrorReply("QuorumNotReached", "2 of 3 replicas answered for key 'user:\u00e9'"),
        GetRequest(_U32_MAX, "user:\u00e9"),
        GetReply(value),
        ReplicateBatch(_NODE, [value, tombstone]),
        BatchAck(bytes(sorted(STATUS_NAMES))),
        SwimPing(1, _NODE, "10.0.0.1:7946", "b", records),
        SwimAck(_U64_MAX, "b", records[:2]),
        SwimPingReq(2, _NODE, "10.0.0.1:7946", "c", "host.example:1", records[1:]),
        SwimNack(3, "c"),
        SwimGossip(_NODE, "10.0.0.1:7946", records),
        PushPull(_NODE, "10.0.0.1:7946", True, records),
        PushPullReply("b", records),
        DigestSync(_NODE, [(0, _U64_MAX), (_U32_MAX, 0)]),
        DigestReply([0, 5, _U32_MAX]),
        KeySync(_NODE, 7, 0, _U64_MAX, [("user:\u00e9", _U64_MAX, _NODE), ("k", 1, _LONG_NODE)]),
        KeySyncReply([value, tombstone], ["user:\u00e9", "wanted"], False),
        HandoffDone(_NODE, [0, 1, _U32_MAX]),
        BucketSync(_NODE, _U32_MAX, [_U64_MAX, *range(1, BUCKETS)]),
        BucketReply([0, 5, BUCKETS - 1]),
        MutateRequest(_NODE, _U32_MAX, "user:\u00e9", "incrby", b"\x91\x05", "quorum"),
        MutateReply(b"\x92\xc3\x05"),
        KeysRequest(_NODE, [0, _U32_MAX], b"user:*", _U32_MAX, False),
        KeysReply(["user:\u00e9", "k"], [_U64_MAX, 0], _U64_MAX),
        StatusRequest(_NODE),
        GetManyRequest([0, _U32_MAX], ["user:\u00e9", "k"]),
        GetManyReply([value, tombstone], ["wanted"]),
        StatusReply(b"\x81\xa4keys\x05"),
        WatchedGetRequest(_NODE, _U32_MAX, "user:\u00e9", _U32_MAX),
        Invalidate(_NODE, ["user:\u00e9", "k"]),
        WatchedGetReply(tombstone, _U32_MAX),
    ]
    return sorted(samples, key=lambda message: message.TYPE)

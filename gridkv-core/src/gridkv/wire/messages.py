"""The messages nodes exchange, as small frozen dataclasses.

Each message class has a unique ``TYPE`` number and declares, per field, the validator the
codec runs on decode. A message travels as a msgpack array ``[PROTOCOL_VERSION, TYPE, *fields]``
in field order (see :mod:`gridkv.wire.codec`). New message types take new numbers; a number is
never reused for a different shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from gridkv.base._repr import shown
from gridkv.base.errors import ProtocolError
from gridkv.storage.base import BUCKETS, Entry

__all__ = [
    "Message",
    "Ping",
    "Pong",
    "ErrorReply",
    "GetRequest",
    "GetReply",
    "ReplicateBatch",
    "BatchAck",
    "MemberRecord",
    "SwimPing",
    "SwimAck",
    "SwimPingReq",
    "SwimNack",
    "SwimGossip",
    "PushPull",
    "PushPullReply",
    "DigestSync",
    "DigestReply",
    "KeySync",
    "KeySyncReply",
    "HandoffDone",
    "BucketSync",
    "BucketReply",
    "STORED",
    "HELD",
    "NOT_REPLICA",
    "WRONG_PARTITION",
    "CLOCK_DRIFT",
    "NO_MEMORY",
    "STATUS_NAMES",
    "MEMBERSHIP_TYPES",
    "MESSAGE_TYPES",
    "MAX_KEY_BYTES_ON_WIRE",
]

#: Longest key any message may carry, whatever a node's own ``max_key_bytes``.
MAX_KEY_BYTES_ON_WIRE = 65535
_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1

Validator = Callable[[Any, str], Any]


def _fail(name: str, why: str, value: Any) -> ProtocolError:
    # shown(), not repr(): a value nested a thousand levels deep would raise RecursionError.
    return ProtocolError(f"field {name!r}: {why} (got {shown(value)})")


def u64(value: Any, name: str) -> int:
    """An unsigned 64-bit integer."""
    if type(value) is not int or not 0 <= value <= _U64:
        raise _fail(name, "expected an unsigned 64-bit integer", value)
    return value


def u32(value: Any, name: str) -> int:
    """An unsigned 32-bit integer."""
    if type(value) is not int or not 0 <= value <= _U32:
        raise _fail(name, "expected an unsigned 32-bit integer", value)
    return value


def text(value: Any, name: str) -> str:
    """A string."""
    if type(value) is not str:
        raise _fail(name, "expected a string", value)
    return value


def node_id(value: Any, name: str) -> str:
    """A non-empty string of at most 255 characters."""
    if type(value) is not str or not 0 < len(value) <= 255:
        raise _fail(name, "expected a node id (1 to 255 characters)", value)
    return value


def key(value: Any, name: str) -> str:
    """A non-empty key within the wire limit."""
    if type(value) is not str or not value or len(value) > MAX_KEY_BYTES_ON_WIRE:
        raise _fail(name, "expected a non-empty key", value)
    return value


def blob(value: Any, name: str) -> bytes:
    """Bytes."""
    if type(value) is not bytes:
        raise _fail(name, "expected bytes", value)
    return value


def entry(value: Any, name: str) -> tuple[int, Entry]:
    """A ``[partition, key, value|nil, version, writer, expires_at]`` record."""
    if type(value) is not list or len(value) != 6:
        raise _fail(name, "expected an entry record of 6 fields", value)
    part, k, v, version, writer, expires = value
    if v is not None and type(v) is not bytes:
        raise _fail(f"{name}.value", "expected bytes or nil", v)
    return u32(part, f"{name}.partition"), Entry(
        key(k, f"{name}.key"),
        v,
        u64(version, f"{name}.version"),
        node_id(writer, f"{name}.writer"),
        u64(expires, f"{name}.expires_at"),
    )


def optional_entry(value: Any, name: str) -> tuple[int, Entry] | None:
    """An entry record or nil."""
    return None if value is None else entry(value, name)


def entry_list(value: Any, name: str) -> list[tuple[int, Entry]]:
    """A list of entry records."""
    if type(value) is not list:
        raise _fail(name, "expected a list of entry records", value)
    return [entry(item, f"{name}[{i}]") for i, item in enumerate(value)]


def flag(value: Any, name: str) -> bool:
    """A boolean."""
    if type(value) is not bool:
        raise _fail(name, "expected true or false", value)
    return value


def address(value: Any, name: str) -> str:
    """A network address of 1 to 1024 characters."""
    if type(value) is not str or not 0 < len(value) <= 1024:
        raise _fail(name, "expected an address (1 to 1024 characters)", value)
    return value


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """What one node asserts about a member: the unit of gossip and of state sync.

    :ivar node_id: the member.
    :ivar address: where it is reached.
    :ivar incarnation: the member's incarnation the assertion is about.
    :ivar state: 0 alive, 1 suspect, 2 dead, 3 left.
    :ivar origin: the node making the assertion (counts as a confirmation for suspicions).
    """

    node_id: str
    address: str
    incarnation: int
    state: int
    origin: str

    def to_wire(self) -> list[Any]:
        """The wire form: ``[node_id, address, incarnation, state, origin]``."""
        return [self.node_id, self.address, self.incarnation, self.state, self.origin]


def member_record(value: Any, name: str) -> MemberRecord:
    """A ``[node_id, address, incarnation, state, origin]`` record."""
    if type(value) is not list or len(value) != 5:
        raise _fail(name, "expected a member record of 5 fields", value)
    node, addr, inc, state, origin = value
    if type(state) is not int or not 0 <= state <= 3:
        raise _fail(f"{name}.state", "expected 0 to 3", state)
    return MemberRecord(
        node_id(node, f"{name}.node_id"),
        address(addr, f"{name}.address"),
        u64(inc, f"{name}.incarnation"),
        state,
        node_id(origin, f"{name}.origin"),
    )


def member_records(value: Any, name: str) -> list[MemberRecord]:
    """A list of member records."""
    if type(value) is not list:
        raise _fail(name, "expected a list of member records", value)
    return [member_record(item, f"{name}[{i}]") for i, item in enumerate(value)]


def pack_entry(partition: int, e: Entry) -> list[Any]:
    """The wire form of an entry record."""
    return [partition, e.key, e.value, e.version, e.writer, e.expires_at]


class Message:
    """Base of every message: ``TYPE`` and the validator of each field, in order."""

    TYPE: ClassVar[int]
    FIELDS: ClassVar[tuple[tuple[str, Validator], ...]]

    def to_fields(self) -> list[Any]:
        """The field values in wire order."""
        return [getattr(self, name) for name, _ in self.FIELDS]


@dataclass(frozen=True, slots=True)
class Ping(Message):
    """A liveness probe; answered with :class:`Pong` carrying the same ``seq``."""

    TYPE: ClassVar[int] = 1
    FIELDS: ClassVar[tuple[tuple[str, Validator], ...]] = (("seq", u64), ("sender", node_id))
    seq: int
    sender: str


@dataclass(frozen=True, slots=True)
class Pong(Message):
    """The answer to :class:`Ping`, with the answerer's hybrid logical clock.

    A node that has just joined asks every member for its clock and adopts the greatest
    before it accepts writes, so its first write orders after everything it wrote before a
    restart (its peers' clocks advanced past those versions when they stored them).
    """

    TYPE: ClassVar[int] = 2
    FIELDS: ClassVar[tuple[tuple[str, Validator], ...]] = (
        ("seq", u64),
        ("sender", node_id),
        ("clock", u64),
    )
    seq: int
    sender: str
    clock: int


@dataclass(frozen=True, slots=True)
class ErrorReply(Message):
    """A request failed at the peer; ``code`` is the GridKV exception class name."""

    TYPE: ClassVar[int] = 3
    FIELDS: ClassVar[tuple[tuple[str, Validator], ...]] = (("code", text), ("message", text))
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class GetRequest(Message):
    """Ask a replica for its entry of ``key``."""

    TYPE: ClassVar[int] = 10
    FIELDS: ClassVar[tuple[tuple[str, Validator], ...]] = (("partition", u32), ("key", key))
    partition: int
    key: str


@dataclass(frozen=True, slots=True)
class GetReply(Message):
    """A replica's entry of the key asked for (tombstones included), or ``None``."""

    TYPE: ClassVar[int] = 11
    FIELDS: ClassVar[tuple[tuple[str, Validator], ...]] = (("entry", optional_entry),)
    entry: tuple[int, Entry] | None

    def to_fields(self) -> list[Any]:
        """The field values in wire order."""
        return [None if self.entry is None else pack_entry(*self.entry)]


@dataclass(frozen=True, slots=True)
class ReplicateBatch(Message):
    """Entries for a replica to merge by last-writer-wins, sent as one message."""

    TYPE: ClassVar[int] = 12
    FIELDS: ClassVar[tuple[tuple[str, Validator], ...]] = (
        ("sender", node_id),
        ("entries", entry_list),
    )
    sender: str
    entries: list[tuple[int, Entry]]

    def to_fields(self) -> list[Any]:
        """The field values in wire order."""
        return [self.sender, [pack_entry(p, e) for p, e in self.entries]]


#: Per-entry outcomes in a :class:`BatchAck`. The first two mean "stored": the replica now
#: holds this version or a newer one, and only they count towards a consistency level.
STORED = 0
#: The replica already held this version or a newer one.
HELD = 1
#: Refused: the receiver does not replicate the entry's partition in its view (the sender's
#: view is stale, or the receiver's is; ask again once the views agree).
NOT_REPLICA = 2
#: Refused: the key does not belong to the partition it was filed under.
WRONG_PARTITION = 3
#: Refused: the version is further ahead of the receiver's clock than max_clock_drift.
CLOCK_DRIFT = 4
#: Refused: the receiver's storage is full (or its writer table is).
NO_MEMORY = 5
#: Readable names of the outcomes, for errors and logs.
STATUS_NAMES: dict[int, str] = {
    STORED: "stored",
    HELD: "held a newer version",
    NOT_REPLICA: "not a replica of the partition",
    WRONG_PARTITION: "key filed under the wrong partition",
    CLOCK_DRIFT: "version too far ahead of its clock",
    NO_MEMORY: "storage full",
}


def statuses(value: Any, name: str) -> bytes:
    """One outcome byte per entry (see :data:`STATUS_NAMES`)."""
    data = blob(value, name)
    if any(code not in STATUS_NAMES for code in set(data)):
        raise _fail(name, "expected outcome codes 0 to 5", value)
    return data


@dataclass(frozen=True, slots=True)
class BatchAck(Message):
    """The answer to :class:`ReplicateBatch`: one outcome per entry, in the batch's order.

    :ivar results: a byte per entry: :data:`STORED`, :data:`HELD` or a refusal code.
    """

    TYPE: ClassVar[int] = 13
    FIELDS: ClassVar[tuple[tuple[str, Validator], ...]] = (("results", statuses),)
    results: bytes

    @property
    def stored(self) -> int:
        """Entries the receiver now holds (stored, or held in this or a newer version)."""
        return self.results.count(STORED) + self.results.count(HELD)


class _WithUpdates(Message):
    """A message whose last field is a list of gossiped member records."""

    def to_fields(self) -> list[Any]:
        """The field values in wire order."""
        out = [getattr(self, name) for name, _ in self.FIELDS]
        out[-1] = [record.to_wire() for record in out[-1]]
        return out


_Fields = tuple[tuple[str, Validator], ...]


@dataclass(frozen=True, slots=True)
class SwimPing(_WithUpdates):
    """A SWIM probe of ``target``; answered with :class:`SwimAck` sent to ``sender_addr``."""

    TYPE: ClassVar[int] = 20
    FIELDS: ClassVar[_Fields] = (
        ("seq", u64),
        ("sender", node_id),
        ("sender_addr", address),
        ("target", node_id),
        ("updates", member_records),
    )
    seq: int
    sender: str
    sender_addr: str
    target: str
    updates: list[MemberRecord]


@dataclass(frozen=True, slots=True)
class SwimAck(_WithUpdates):
    """The answer to a :class:`SwimPing` (or relayed for a :class:`SwimPingReq`)."""

    TYPE: ClassVar[int] = 21
    FIELDS: ClassVar[_Fields] = (
        ("seq", u64),
        ("sender", node_id),
        ("updates", member_records),
    )
    seq: int
    sender: str
    updates: list[MemberRecord]


@dataclass(frozen=True, slots=True)
class SwimPingReq(_WithUpdates):
    """Ask the receiver to probe ``target`` on the sender's behalf (indirect probe)."""

    TYPE: ClassVar[int] = 22
    FIELDS: ClassVar[_Fields] = (
        ("seq", u64),
        ("sender", node_id),
        ("sender_addr", address),
        ("target", node_id),
        ("target_addr", address),
        ("updates", member_records),
    )
    seq: int
    sender: str
    sender_addr: str
    target: str
    target_addr: str
    updates: list[MemberRecord]


@dataclass(frozen=True, slots=True)
class SwimNack(Message):
    """Lifeguard: an indirect probe's relay could not reach the target in time."""

    TYPE: ClassVar[int] = 23
    FIELDS: ClassVar[_Fields] = (("seq", u64), ("sender", node_id))
    seq: int
    sender: str


@dataclass(frozen=True, slots=True)
class SwimGossip(_WithUpdates):
    """Member records pushed to a few random members, between probes."""

    TYPE: ClassVar[int] = 24
    FIELDS: ClassVar[_Fields] = (
        ("sender", node_id),
        ("sender_addr", address),
        ("updates", member_records),
    )
    sender: str
    sender_addr: str
    updates: list[MemberRecord]


@dataclass(frozen=True, slots=True)
class PushPull(_WithUpdates):
    """A full state sync (a request): the sender's whole member list; ``join`` on first contact."""

    TYPE: ClassVar[int] = 25
    FIELDS: ClassVar[_Fields] = (
        ("sender", node_id),
        ("sender_addr", address),
        ("join", flag),
        ("states", member_records),
    )
    sender: str
    sender_addr: str
    join: bool
    states: list[MemberRecord]


@dataclass(frozen=True, slots=True)
class PushPullReply(_WithUpdates):
    """The answer to :class:`PushPull`: the receiver's whole member list."""

    TYPE: ClassVar[int] = 26
    FIELDS: ClassVar[_Fields] = (("sender", node_id), ("states", member_records))
    sender: str
    states: list[MemberRecord]


#: Messages the membership protocol handles.
MEMBERSHIP_TYPES: tuple[type[Message], ...] = (
    SwimPing,
    SwimAck,
    SwimPingReq,
    SwimNack,
    SwimGossip,
    PushPull,
    PushPullReply,
)


def digest_pair(value: Any, name: str) -> tuple[int, int]:
    """A ``[partition, digest]`` pair."""
    if type(value) is not list or len(value) != 2:
        raise _fail(name, "expected [partition, digest]", value)
    return u32(value[0], f"{name}.partition"), u64(value[1], f"{name}.digest")


def digest_pairs(value: Any, name: str) -> list[tuple[int, int]]:
    """A list of ``[partition, digest]`` pairs."""
    if type(value) is not list:
        raise _fail(name, "expected a list of [partition, digest]", value)
    return [digest_pair(item, f"{name}[{i}]") for i, item in enumerate(value)]


def partitions(value: Any, name: str) -> list[int]:
    """A list of partition numbers."""
    if type(value) is not list:
        raise _fail(name, "expected a list of partitions", value)
    return [u32(item, f"{name}[{i}]") for i, item in enumerate(value)]


def key_version(value: Any, name: str) -> tuple[str, int, str]:
    """A ``[key, version, writer]`` triple."""
    if type(value) is not list or len(value) != 3:
        raise _fail(name, "expected [key, version, writer]", value)
    return (
        key(value[0], f"{name}.key"),
        u64(value[1], f"{name}.version"),
        node_id(value[2], f"{name}.writer"),
    )


def key_versions(value: Any, name: str) -> list[tuple[str, int, str]]:
    """A list of ``[key, version, writer]`` triples."""
    if type(value) is not list:
        raise _fail(name, "expected a list of [key, version, writer]", value)
    return [key_version(item, f"{name}[{i}]") for i, item in enumerate(value)]


def keys(value: Any, name: str) -> list[str]:
    """A list of keys."""
    if type(value) is not list:
        raise _fail(name, "expected a list of keys", value)
    return [key(item, f"{name}[{i}]") for i, item in enumerate(value)]


@dataclass(frozen=True, slots=True)
class DigestSync(Message):
    """Anti-entropy, step one: the sender's digest of each partition it shares with the receiver."""

    TYPE: ClassVar[int] = 30
    FIELDS: ClassVar[_Fields] = (("sender", node_id), ("digests", digest_pairs))
    sender: str
    digests: list[tuple[int, int]]

    def to_fields(self) -> list[Any]:
        """The field values in wire order."""
        return [self.sender, [list(pair) for pair in self.digests]]


@dataclass(frozen=True, slots=True)
class DigestReply(Message):
    """The partitions whose digests differ."""

    TYPE: ClassVar[int] = 31
    FIELDS: ClassVar[_Fields] = (("differ", partitions),)
    differ: list[int]


def bucket_digests(value: Any, name: str) -> list[int]:
    """The ``BUCKETS`` bucket digests of a partition."""
    if type(value) is not list or len(value) != BUCKETS:
        raise _fail(name, f"expected a list of {BUCKETS} bucket digests", value)
    return [u64(item, f"{name}[{i}]") for i, item in enumerate(value)]


def buckets(value: Any, name: str) -> list[int]:
    """A list of bucket numbers."""
    if type(value) is not list:
        raise _fail(name, "expected a list of buckets", value)
    out = [u32(item, f"{name}[{i}]") for i, item in enumerate(value)]
    if any(b >= BUCKETS for b in out):
        raise _fail(name, f"expected bucket numbers below {BUCKETS}", value)
    return out


@dataclass(frozen=True, slots=True)
class BucketSync(Message):
    """Anti-entropy, step two: the bucket digests of one partition whose digests differ."""

    TYPE: ClassVar[int] = 35
    FIELDS: ClassVar[_Fields] = (
        ("sender", node_id),
        ("partition", u32),
        ("digests", bucket_digests),
    )
    sender: str
    partition: int
    digests: list[int]


@dataclass(frozen=True, slots=True)
class BucketReply(Message):
    """The buckets whose digests differ."""

    TYPE: ClassVar[int] = 36
    FIELDS: ClassVar[_Fields] = (("differ", buckets),)
    differ: list[int]


@dataclass(frozen=True, slots=True)
class KeySync(Message):
    """Anti-entropy, step three: the sender's (key, version, writer) list of one hash range.

    The range ``[low, high]`` of key hashes lies within one bucket of the partition; a bucket
    with more keys than fit in a message is listed in several ranges, one after the other.
    """

    TYPE: ClassVar[int] = 32
    FIELDS: ClassVar[_Fields] = (
        ("sender", node_id),
        ("partition", u32),
        ("low", u64),
        ("high", u64),
        ("versions", key_versions),
    )
    sender: str
    partition: int
    low: int
    high: int
    versions: list[tuple[str, int, str]]

    def to_fields(self) -> list[Any]:
        """The field values in wire order."""
        return [
            self.sender,
            self.partition,
            self.low,
            self.high,
            [list(v) for v in self.versions],
        ]


@dataclass(frozen=True, slots=True)
class KeySyncReply(Message):
    """The entries the asker lacks or holds older, and the keys the answerer wants.

    ``complete`` is false when the entries were cut to fit a message: the next round sends
    the rest.
    """

    TYPE: ClassVar[int] = 33
    FIELDS: ClassVar[_Fields] = (("entries", entry_list), ("wanted", keys), ("complete", flag))
    entries: list[tuple[int, Entry]]
    wanted: list[str]
    complete: bool

    def to_fields(self) -> list[Any]:
        """The field values in wire order."""
        return [[pack_entry(p, e) for p, e in self.entries], self.wanted, self.complete]


@dataclass(frozen=True, slots=True)
class HandoffDone(Message):
    """Handoff: the sender has sent everything it holds of these partitions."""

    TYPE: ClassVar[int] = 34
    FIELDS: ClassVar[_Fields] = (("sender", node_id), ("partitions", partitions))
    sender: str
    partitions: list[int]


_ALL: tuple[type[Message], ...] = (
    Ping,
    Pong,
    ErrorReply,
    GetRequest,
    GetReply,
    ReplicateBatch,
    BatchAck,
    DigestSync,
    DigestReply,
    KeySync,
    KeySyncReply,
    HandoffDone,
    BucketSync,
    BucketReply,
    *MEMBERSHIP_TYPES,
)
MESSAGE_TYPES: dict[int, type[Message]] = {cls.TYPE: cls for cls in _ALL}

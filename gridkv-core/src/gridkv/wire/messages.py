"""The messages nodes exchange, as small frozen dataclasses.

Each message class has a unique ``TYPE`` number and declares its fields once, each annotated
with its wire type: ``seq: Annotated[int, wire.u64]``. :func:`message` reads those annotations
into ``FIELDS``, the validators the codec runs on decode, in order. A message travels as a
msgpack array ``[PROTOCOL_VERSION, TYPE, *fields]`` in field order (see
:mod:`gridkv.wire.codec`). New message types take new numbers; a number is never reused for a
different shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeVar, get_type_hints

from gridkv.storage.base import Entry
from gridkv.wire import fields as wire
from gridkv.wire.fields import MAX_KEY_BYTES_ON_WIRE, MemberRecord, Packer, Validator

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
    "MutateRequest",
    "MutateReply",
    "KeysRequest",
    "KeysReply",
    "StatusRequest",
    "StatusReply",
    "GetManyRequest",
    "GetManyReply",
    "BucketSync",
    "BucketReply",
    "STORED",
    "HELD",
    "NOT_REPLICA",
    "WRONG_PARTITION",
    "CLOCK_DRIFT",
    "NO_MEMORY",
    "WITHHELD",
    "STATUS_NAMES",
    "MEMBERSHIP_TYPES",
    "MESSAGE_TYPES",
    "MAX_KEY_BYTES_ON_WIRE",
    "message",
]


class Message:
    """Base of every message: ``TYPE`` and the validator of each field, in order."""

    # No instance dict: each message class's own slots hold its fields (quicker to make).
    __slots__ = ()

    TYPE: ClassVar[int]
    FIELDS: ClassVar[tuple[tuple[str, Validator], ...]]
    _PACKING: ClassVar[tuple[tuple[str, Packer | None], ...]]

    def to_fields(self) -> list[Any]:
        """The field values in wire order, as msgpack carries them."""
        return [
            getattr(self, name) if pack is None else pack(getattr(self, name))
            for name, pack in self._PACKING
        ]


#: Every message class by its ``TYPE`` number, filled by :func:`message`.
MESSAGE_TYPES: dict[int, type[Message]] = {}
_M = TypeVar("_M", bound=type[Message])


def message(type_code: int) -> Callable[[_M], _M]:
    """Register a message dataclass under ``type_code`` and read its fields' wire types.

    Every field must be annotated ``Annotated[<type>, <validator>]`` with a validator from
    :mod:`gridkv.wire.fields` (or one of this module's). A type number taken twice, or a field
    without a validator, fails at import.
    """

    def register(cls: _M) -> _M:
        if type_code in MESSAGE_TYPES:
            taken = MESSAGE_TYPES[type_code].__name__
            raise TypeError(f"message type {type_code} is taken by {taken}")
        # Each class's module globals, no class namespace: a slotted dataclass holds a
        # descriptor for each field, which would shadow a validator of the same name.
        hints = get_type_hints(cls, None, {}, include_extras=True)
        declared: list[tuple[str, Validator]] = []
        for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
            metadata: tuple[Any, ...] = getattr(hints[spec.name], "__metadata__", ())
            if len(metadata) != 1 or not callable(metadata[0]):
                raise TypeError(f"{cls.__name__}.{spec.name} needs Annotated[<type>, <validator>]")
            declared.append((spec.name, metadata[0]))
        cls.TYPE = type_code
        cls.FIELDS = tuple(declared)
        cls._PACKING = tuple((name, wire.PACKERS.get(check)) for name, check in declared)
        MESSAGE_TYPES[type_code] = cls
        return cls

    return register


@message(1)
@dataclass(frozen=True, slots=True)
class Ping(Message):
    """A liveness probe; answered with :class:`Pong` carrying the same ``seq``."""

    seq: Annotated[int, wire.u64]
    sender: Annotated[str, wire.node_id]


@message(2)
@dataclass(frozen=True, slots=True)
class Pong(Message):
    """The answer to :class:`Ping`, with the answerer's hybrid logical clock.

    A node that has just joined asks every member for its clock and adopts the greatest
    before it accepts writes, so its first write orders after everything it wrote before a
    restart (its peers' clocks advanced past those versions when they stored them).
    """

    seq: Annotated[int, wire.u64]
    sender: Annotated[str, wire.node_id]
    clock: Annotated[int, wire.u64]


@message(3)
@dataclass(frozen=True, slots=True)
class ErrorReply(Message):
    """A request failed at the peer; ``code`` is the GridKV exception class name."""

    code: Annotated[str, wire.text]
    message: Annotated[str, wire.text]


@message(10)
@dataclass(frozen=True, slots=True)
class GetRequest(Message):
    """Ask a replica for its entry of ``key``."""

    partition: Annotated[int, wire.u32]
    key: Annotated[str, wire.key]


@message(11)
@dataclass(frozen=True, slots=True)
class GetReply(Message):
    """A replica's entry of the key asked for (tombstones included), or ``None``."""

    entry: Annotated[tuple[int, Entry] | None, wire.optional_entry]


@message(12)
@dataclass(frozen=True, slots=True)
class ReplicateBatch(Message):
    """Entries for a replica to merge by last-writer-wins, sent as one message."""

    sender: Annotated[str, wire.node_id]
    entries: Annotated[list[tuple[int, Entry]], wire.entry_list]


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
#: Refused for now: the entry predates a separation longer than dead_retention that the
#: sender has not dropped what it held from before yet (send it again later, or drop it).
WITHHELD = 6
#: Readable names of the outcomes, for errors and logs.
STATUS_NAMES: dict[int, str] = {
    STORED: "stored",
    HELD: "held a newer version",
    NOT_REPLICA: "not a replica of the partition",
    WRONG_PARTITION: "key filed under the wrong partition",
    CLOCK_DRIFT: "version too far ahead of its clock",
    NO_MEMORY: "storage full",
    WITHHELD: "from before a separation the sender has not dropped yet",
}


def statuses(value: Any, name: str) -> bytes:
    """One outcome byte per entry (see :data:`STATUS_NAMES`)."""
    data = wire.blob(value, name)
    if any(code not in STATUS_NAMES for code in set(data)):
        raise wire.fail(name, f"expected outcome codes 0 to {max(STATUS_NAMES)}", value)
    return data


@message(13)
@dataclass(frozen=True, slots=True)
class BatchAck(Message):
    """The answer to :class:`ReplicateBatch`: one outcome per entry, in the batch's order.

    :ivar results: a byte per entry: :data:`STORED`, :data:`HELD` or a refusal code.
    """

    results: Annotated[bytes, statuses]

    @property
    def stored(self) -> int:
        """Entries the receiver now holds (stored, or held in this or a newer version)."""
        return self.results.count(STORED) + self.results.count(HELD)


@message(20)
@dataclass(frozen=True, slots=True)
class SwimPing(Message):
    """A SWIM probe of ``target``; answered with :class:`SwimAck` sent to ``sender_addr``."""

    seq: Annotated[int, wire.u64]
    sender: Annotated[str, wire.node_id]
    sender_addr: Annotated[str, wire.address]
    target: Annotated[str, wire.node_id]
    updates: Annotated[list[MemberRecord], wire.member_records]


@message(21)
@dataclass(frozen=True, slots=True)
class SwimAck(Message):
    """The answer to a :class:`SwimPing` (or relayed for a :class:`SwimPingReq`)."""

    seq: Annotated[int, wire.u64]
    sender: Annotated[str, wire.node_id]
    updates: Annotated[list[MemberRecord], wire.member_records]


@message(22)
@dataclass(frozen=True, slots=True)
class SwimPingReq(Message):
    """Ask the receiver to probe ``target`` on the sender's behalf (indirect probe)."""

    seq: Annotated[int, wire.u64]
    sender: Annotated[str, wire.node_id]
    sender_addr: Annotated[str, wire.address]
    target: Annotated[str, wire.node_id]
    target_addr: Annotated[str, wire.address]
    updates: Annotated[list[MemberRecord], wire.member_records]


@message(23)
@dataclass(frozen=True, slots=True)
class SwimNack(Message):
    """Lifeguard: an indirect probe's relay could not reach the target in time."""

    seq: Annotated[int, wire.u64]
    sender: Annotated[str, wire.node_id]


@message(24)
@dataclass(frozen=True, slots=True)
class SwimGossip(Message):
    """Member records pushed to a few random members, between probes."""

    sender: Annotated[str, wire.node_id]
    sender_addr: Annotated[str, wire.address]
    updates: Annotated[list[MemberRecord], wire.member_records]


@message(25)
@dataclass(frozen=True, slots=True)
class PushPull(Message):
    """A full state sync (a request): the sender's whole member list; ``join`` on first contact."""

    sender: Annotated[str, wire.node_id]
    sender_addr: Annotated[str, wire.address]
    join: Annotated[bool, wire.flag]
    states: Annotated[list[MemberRecord], wire.member_records]


@message(26)
@dataclass(frozen=True, slots=True)
class PushPullReply(Message):
    """The answer to :class:`PushPull`: the receiver's whole member list."""

    sender: Annotated[str, wire.node_id]
    states: Annotated[list[MemberRecord], wire.member_records]


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


@message(30)
@dataclass(frozen=True, slots=True)
class DigestSync(Message):
    """Anti-entropy, step one: the sender's digest of each partition it shares with the receiver."""

    sender: Annotated[str, wire.node_id]
    digests: Annotated[list[tuple[int, int]], wire.digest_pairs]


@message(31)
@dataclass(frozen=True, slots=True)
class DigestReply(Message):
    """The partitions whose digests differ."""

    differ: Annotated[list[int], wire.partitions]


@message(35)
@dataclass(frozen=True, slots=True)
class BucketSync(Message):
    """Anti-entropy, step two: the bucket digests of one partition whose digests differ."""

    sender: Annotated[str, wire.node_id]
    partition: Annotated[int, wire.u32]
    digests: Annotated[list[int], wire.bucket_digests]


@message(36)
@dataclass(frozen=True, slots=True)
class BucketReply(Message):
    """The buckets whose digests differ."""

    differ: Annotated[list[int], wire.buckets]


@message(32)
@dataclass(frozen=True, slots=True)
class KeySync(Message):
    """Anti-entropy, step three: the sender's (key, version, writer) list of one hash range.

    The range ``[low, high]`` of key hashes lies within one bucket of the partition; a bucket
    with more keys than fit in a message is listed in several ranges, one after the other.
    """

    sender: Annotated[str, wire.node_id]
    partition: Annotated[int, wire.u32]
    low: Annotated[int, wire.u64]
    high: Annotated[int, wire.u64]
    versions: Annotated[list[tuple[str, int, str]], wire.key_versions]


@message(33)
@dataclass(frozen=True, slots=True)
class KeySyncReply(Message):
    """The entries the asker lacks or holds older, and the keys the answerer wants.

    ``complete`` is false when the entries were cut to fit a message: the next round sends
    the rest.
    """

    entries: Annotated[list[tuple[int, Entry]], wire.entry_list]
    wanted: Annotated[list[str], wire.keys]
    complete: Annotated[bool, wire.flag]


@message(34)
@dataclass(frozen=True, slots=True)
class HandoffDone(Message):
    """Handoff: the sender has sent everything it holds of these partitions."""

    sender: Annotated[str, wire.node_id]
    partitions: Annotated[list[int], wire.partitions]


@message(40)
@dataclass(frozen=True, slots=True)
class MutateRequest(Message):
    """Ask a key's primary owner to run a read-modify-write on it, atomically there.

    ``op`` names the operation and ``args`` are its arguments, msgpack-encoded (see
    :mod:`gridkv.cluster.replication.mutations`, which checks both); the owner writes the
    result at ``level``.
    """

    sender: Annotated[str, wire.node_id]
    partition: Annotated[int, wire.u32]
    key: Annotated[str, wire.key]
    op: Annotated[str, wire.text]
    args: Annotated[bytes, wire.blob]
    level: Annotated[str, wire.text]


@message(41)
@dataclass(frozen=True, slots=True)
class MutateReply(Message):
    """The outcome of a :class:`MutateRequest`, msgpack-encoded ``[ok, payload]``."""

    result: Annotated[bytes, wire.blob]


@message(42)
@dataclass(frozen=True, slots=True)
class KeysRequest(Message):
    """Ask a node for the live keys it holds of ``partitions`` matching ``pattern``.

    ``pattern`` is a Redis glob (empty: every key); at most ``limit`` keys come back (0: no
    limit); with ``count_only`` only their number does.
    """

    sender: Annotated[str, wire.node_id]
    partitions: Annotated[list[int], wire.partitions]
    pattern: Annotated[bytes, wire.blob]
    limit: Annotated[int, wire.u32]
    count_only: Annotated[bool, wire.flag]


@message(43)
@dataclass(frozen=True, slots=True)
class KeysReply(Message):
    """The keys a :class:`KeysRequest` asked for (or none), each one's version, how many."""

    keys: Annotated[list[str], wire.keys]
    versions: Annotated[list[int], wire.u64_list]
    count: Annotated[int, wire.u64]


@message(44)
@dataclass(frozen=True, slots=True)
class StatusRequest(Message):
    """Ask a node for its figures (``gridkv status``)."""

    sender: Annotated[str, wire.node_id]


@message(45)
@dataclass(frozen=True, slots=True)
class StatusReply(Message):
    """A node's figures, a msgpack-encoded map (see ``Node.status_figures``)."""

    figures: Annotated[bytes, wire.blob]


@message(46)
@dataclass(frozen=True, slots=True)
class GetManyRequest(Message):
    """Ask a replica for its entries of several keys: ``keys[i]`` is in ``partitions[i]``."""

    partitions: Annotated[list[int], wire.partitions]
    keys: Annotated[list[str], wire.keys]


@message(47)
@dataclass(frozen=True, slots=True)
class GetManyReply(Message):
    """A replica's entries of the keys asked for, and the keys it cannot answer for.

    Tombstones are included; a key it holds no entry of is left out. It cannot answer for a
    key of a partition it does not hold, or of one still moving to it.
    """

    entries: Annotated[list[tuple[int, Entry]], wire.entry_list]
    unknown: Annotated[list[str], wire.keys]


@message(48)
@dataclass(frozen=True, slots=True)
class WatchedGetRequest(Message):
    """Ask a replica for its entry of ``key``, and to tell ``sender`` when it changes.

    The replica answers with a :class:`WatchedGetReply` saying for how long (at most
    ``lifetime_ms``) it watches the key: meanwhile it sends an :class:`Invalidate` naming the
    key when it stores a new version of it (or when it stops watching the key for ``sender``
    early, to bound its memory). The asker keeps the answer in its near cache for less than
    that from when it asked.
    """

    sender: Annotated[str, wire.node_id]
    partition: Annotated[int, wire.u32]
    key: Annotated[str, wire.key]
    lifetime_ms: Annotated[int, wire.u32]


@message(49)
@dataclass(frozen=True, slots=True)
class Invalidate(Message):
    """Keys ``sender`` watched for the receiver have changed: forget what it cached of them.

    Sent one way; no answer.
    """

    sender: Annotated[str, wire.node_id]
    keys: Annotated[list[str], wire.keys]


@message(50)
@dataclass(frozen=True, slots=True)
class WatchedGetReply(Message):
    """The answer to a :class:`WatchedGetRequest`: the entry, and how long it is watched.

    ``entry`` is the replica's entry of the key (or ``None``); ``watched_ms`` how long the
    replica watches the key for the asker, at most the lifetime asked for; 0 when it does
    not (watching off, its table disabled, a key it does not hold). The asker keeps the
    answer accordingly.
    """

    entry: Annotated[tuple[int, Entry] | None, wire.optional_entry]
    watched_ms: Annotated[int, wire.u32]

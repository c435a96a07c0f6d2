"""The field types of wire messages: one validator per type, and how the richer ones pack.

A validator takes the decoded msgpack value and the field's name and returns the value a
message holds, or raises :class:`~gridkv.base.errors.ProtocolError` naming the field. Most
values pack as they are; entries and member records, which a message holds as objects, pack
through :data:`PACKERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gridkv.base._repr import shown
from gridkv.base.errors import ProtocolError
from gridkv.storage.base import BUCKETS, MAX_KEY_CHARS_ON_WIRE, Entry

__all__ = [
    "Validator",
    "Packer",
    "PACKERS",
    "MAX_KEY_BYTES_ON_WIRE",
    "MemberRecord",
    "fail",
    "u64",
    "u32",
    "text",
    "node_id",
    "key",
    "blob",
    "flag",
    "address",
    "entry",
    "optional_entry",
    "entry_list",
    "member_record",
    "member_records",
    "digest_pair",
    "digest_pairs",
    "partitions",
    "key_version",
    "key_versions",
    "keys",
    "bucket_digests",
    "buckets",
    "u64_list",
]

#: Longest key any message may carry, whatever a node's own ``max_key_bytes``.
MAX_KEY_BYTES_ON_WIRE = MAX_KEY_CHARS_ON_WIRE
_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1

#: Checks one decoded field value (named for errors) and returns what the message holds.
Validator = Callable[[Any, str], Any]
#: Turns a field value a message holds into what msgpack carries.
Packer = Callable[[Any], Any]


def fail(name: str, why: str, value: Any) -> ProtocolError:
    """The error for field ``name``: ``why`` it refused ``value``."""
    # shown(), not repr(): a value nested a thousand levels deep would raise RecursionError.
    return ProtocolError(f"field {name!r}: {why} (got {shown(value)})")


def u64(value: Any, name: str) -> int:
    """An unsigned 64-bit integer."""
    if type(value) is not int or not 0 <= value <= _U64:
        raise fail(name, "expected an unsigned 64-bit integer", value)
    return value


def u32(value: Any, name: str) -> int:
    """An unsigned 32-bit integer."""
    if type(value) is not int or not 0 <= value <= _U32:
        raise fail(name, "expected an unsigned 32-bit integer", value)
    return value


def text(value: Any, name: str) -> str:
    """A string."""
    if type(value) is not str:
        raise fail(name, "expected a string", value)
    return value


def node_id(value: Any, name: str) -> str:
    """A non-empty string of at most 255 characters."""
    if type(value) is not str or not 0 < len(value) <= 255:
        raise fail(name, "expected a node id (1 to 255 characters)", value)
    return value


def key(value: Any, name: str) -> str:
    """A non-empty key within the wire limit."""
    if type(value) is not str or not value or len(value) > MAX_KEY_BYTES_ON_WIRE:
        raise fail(name, "expected a non-empty key", value)
    return value


def blob(value: Any, name: str) -> bytes:
    """Bytes."""
    if type(value) is not bytes:
        raise fail(name, "expected bytes", value)
    return value


_tuple_new = tuple.__new__


def entry(value: Any, name: str) -> tuple[int, Entry]:
    """A ``[partition, [key, value|nil, version, writer, expires_at]]`` record.

    ``expires_at`` may be left out (0: never), as it is for an :class:`Entry`.
    """
    # Checked in one expression; the field names are formatted only for an error.
    if (
        type(value) is list
        and len(value) == 2
        and type(part := value[0]) is int
        and 0 <= part <= _U32
        and type(fields := value[1]) is list
        and 4 <= len(fields) <= 5
        and type(k := fields[0]) is str
        and 0 < len(k) <= MAX_KEY_BYTES_ON_WIRE
        and ((v := fields[1]) is None or type(v) is bytes)
        and type(version := fields[2]) is int
        and 0 <= version <= _U64
        and type(writer := fields[3]) is str
        and 0 < len(writer) <= 255
        and type(expires := fields[4] if len(fields) == 5 else 0) is int
        and 0 <= expires <= _U64
    ):
        # Entry(...) in one C call (make_entry, inline).
        return part, _tuple_new(Entry, (k, v, version, writer, expires))
    return _entry_refused(value, name)


def _entry_refused(value: Any, name: str) -> tuple[int, Entry]:
    """Name what is wrong with an entry record :func:`entry` refused (raises)."""
    if type(value) is not list or len(value) != 2:
        raise fail(name, "expected an entry record [partition, entry]", value)
    part, fields = value
    if type(fields) is not list or not 4 <= len(fields) <= 5:
        raise fail(f"{name}.entry", "expected an entry of 4 or 5 fields", fields)
    k, v, version, writer, *rest = fields
    if v is not None and type(v) is not bytes:
        raise fail(f"{name}.value", "expected bytes or nil", v)
    return u32(part, f"{name}.partition"), Entry(
        key(k, f"{name}.key"),
        v,
        u64(version, f"{name}.version"),
        node_id(writer, f"{name}.writer"),
        u64(rest[0], f"{name}.expires_at") if rest else 0,
    )


def optional_entry(value: Any, name: str) -> tuple[int, Entry] | None:
    """An entry record or nil."""
    return None if value is None else entry(value, name)


def entry_list(value: Any, name: str) -> list[tuple[int, Entry]]:
    """A list of entry records."""
    if type(value) is not list:
        raise fail(name, "expected a list of entry records", value)
    # Each item under the list's name; a refused one is checked again under its own.
    try:
        return [entry(item, name) for item in value]
    except ProtocolError:
        return [entry(item, f"{name}[{i}]") for i, item in enumerate(value)]


def flag(value: Any, name: str) -> bool:
    """A boolean."""
    if type(value) is not bool:
        raise fail(name, "expected true or false", value)
    return value


def address(value: Any, name: str) -> str:
    """A network address of 1 to 1024 characters."""
    if type(value) is not str or not 0 < len(value) <= 1024:
        raise fail(name, "expected an address (1 to 1024 characters)", value)
    return value


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """What one node asserts about a member: the unit of gossip and of state sync.

    :ivar node_id: the member.
    :ivar address: where it is reached.
    :ivar incarnation: the member's incarnation the assertion is about.
    :ivar state: 0 alive, 1 suspect, 2 dead, 3 left.
    :ivar origin: the node making the assertion (counts as a confirmation for suspicions).
    :ivar proof: for an alive or left record with authentication on, the member's own
        signed statement of it (see ``RecordProofs``); empty otherwise.
    """

    node_id: str
    address: str
    incarnation: int
    state: int
    origin: str
    proof: bytes = b""

    def to_wire(self) -> list[Any]:
        """The wire form: ``[node_id, address, incarnation, state, origin, proof]``."""
        return [self.node_id, self.address, self.incarnation, self.state, self.origin, self.proof]


#: The longest proof a member record may carry (a key, a credential such as a certificate,
#: a signature).
MAX_PROOF_BYTES = 4096


def member_record(value: Any, name: str) -> MemberRecord:
    """A ``[node_id, address, incarnation, state, origin, proof]`` record."""
    if (
        type(value) is list
        and len(value) == 6
        and type(node := value[0]) is str
        and 0 < len(node) <= 255
        and type(addr := value[1]) is str
        and 0 < len(addr) <= 1024
        and type(inc := value[2]) is int
        and 0 <= inc <= _U64
        and type(state := value[3]) is int
        and 0 <= state <= 3
        and type(origin := value[4]) is str
        and 0 < len(origin) <= 255
        and type(proof := value[5]) is bytes
        and len(proof) <= MAX_PROOF_BYTES
    ):
        return MemberRecord(node, addr, inc, state, origin, proof)
    return _member_record_refused(value, name)


def _member_record_refused(value: Any, name: str) -> MemberRecord:
    """Name what is wrong with a member record :func:`member_record` refused (raises)."""
    if type(value) is not list or len(value) != 6:
        raise fail(name, "expected a member record of 6 fields", value)
    node, addr, inc, state, origin, proof = value
    if type(state) is not int or not 0 <= state <= 3:
        raise fail(f"{name}.state", "expected 0 to 3", state)
    if type(proof) is not bytes or len(proof) > MAX_PROOF_BYTES:
        raise fail(f"{name}.proof", f"expected bytes, at most {MAX_PROOF_BYTES}", proof)
    return MemberRecord(
        node_id(node, f"{name}.node_id"),
        address(addr, f"{name}.address"),
        u64(inc, f"{name}.incarnation"),
        state,
        node_id(origin, f"{name}.origin"),
        proof,
    )


def member_records(value: Any, name: str) -> list[MemberRecord]:
    """A list of member records."""
    if type(value) is not list:
        raise fail(name, "expected a list of member records", value)
    try:  # as entry_list: each item's own name only for the error
        return [member_record(item, name) for item in value]
    except ProtocolError:
        return [member_record(item, f"{name}[{i}]") for i, item in enumerate(value)]


def digest_pair(value: Any, name: str) -> tuple[int, int]:
    """A ``[partition, digest]`` pair."""
    if type(value) is not list or len(value) != 2:
        raise fail(name, "expected [partition, digest]", value)
    return u32(value[0], f"{name}.partition"), u64(value[1], f"{name}.digest")


def digest_pairs(value: Any, name: str) -> list[tuple[int, int]]:
    """A list of ``[partition, digest]`` pairs."""
    if type(value) is not list:
        raise fail(name, "expected a list of [partition, digest]", value)
    return [digest_pair(item, f"{name}[{i}]") for i, item in enumerate(value)]


def partitions(value: Any, name: str) -> list[int]:
    """A list of partition numbers."""
    if type(value) is not list:
        raise fail(name, "expected a list of partitions", value)
    return [u32(item, f"{name}[{i}]") for i, item in enumerate(value)]


def key_version(value: Any, name: str) -> tuple[str, int, str]:
    """A ``[key, version, writer]`` triple."""
    if type(value) is not list or len(value) != 3:
        raise fail(name, "expected [key, version, writer]", value)
    return (
        key(value[0], f"{name}.key"),
        u64(value[1], f"{name}.version"),
        node_id(value[2], f"{name}.writer"),
    )


def key_versions(value: Any, name: str) -> list[tuple[str, int, str]]:
    """A list of ``[key, version, writer]`` triples."""
    if type(value) is not list:
        raise fail(name, "expected a list of [key, version, writer]", value)
    return [key_version(item, f"{name}[{i}]") for i, item in enumerate(value)]


def keys(value: Any, name: str) -> list[str]:
    """A list of keys."""
    if type(value) is not list:
        raise fail(name, "expected a list of keys", value)
    return [key(item, f"{name}[{i}]") for i, item in enumerate(value)]


def bucket_digests(value: Any, name: str) -> list[int]:
    """The ``BUCKETS`` bucket digests of a partition."""
    if type(value) is not list or len(value) != BUCKETS:
        raise fail(name, f"expected a list of {BUCKETS} bucket digests", value)
    return [u64(item, f"{name}[{i}]") for i, item in enumerate(value)]


def u64_list(value: Any, name: str) -> list[int]:
    """A list of unsigned 64-bit integers."""
    if type(value) is not list:
        raise fail(name, "expected a list of unsigned 64-bit integers", value)
    return [u64(item, f"{name}[{i}]") for i, item in enumerate(value)]


def buckets(value: Any, name: str) -> list[int]:
    """A list of bucket numbers."""
    if type(value) is not list:
        raise fail(name, "expected a list of buckets", value)
    out = [u32(item, f"{name}[{i}]") for i, item in enumerate(value)]
    if any(b >= BUCKETS for b in out):
        raise fail(name, f"expected bucket numbers below {BUCKETS}", value)
    return out


def _pack_member_records(value: list[MemberRecord]) -> list[list[Any]]:
    return [record.to_wire() for record in value]


#: The packer of each field type whose values msgpack cannot carry as they are.
PACKERS: dict[Validator, Packer] = {
    member_records: _pack_member_records,
}

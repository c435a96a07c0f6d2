"""Fuzzing the wire codec: whatever bytes arrive, ``decode`` returns a message or raises
ProtocolError, and a message it returns encodes back to itself; ``encode`` raises nothing but
ProtocolError either.

Inputs come from five sources: random bytes; random msgpack, written token by token so that
every encoding of every type appears (integers in every width, str/bin/ext of every length
class, non-canonical widths, wrong container counts, nesting past msgpack's limit); messages
of every type with one field replaced by random msgpack; mutations of their encodings
(truncations, bit flips, spliced bytes); and mutations of their structure (a field replaced by
a value of another type, by a field of another message, by an edge-of-range integer; fields
dropped or repeated; another type number). ``encode`` is fuzzed with field values msgpack
cannot carry (integers beyond 64 bits) and with integers out of their fields' ranges.

Each hypothesis test draws a sample and one byte string, and builds its input from the bytes
through :class:`~gridkv.testing.fuzz.Entropy` (see there why). Example counts come from
``fuzz_examples`` (``GRIDKV_FUZZ_EXAMPLES``); ``nox -s fuzz`` runs them at 100,000.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any, ClassVar, TypeVar

import msgpack
import pytest
from gridkv.base.errors import ProtocolError
from gridkv.testing.fuzz import Entropy, fuzz_examples, message_samples
from gridkv.wire import PROTOCOL_VERSION, Message, decode, encode
from gridkv.wire.messages import MESSAGE_TYPES
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.fuzz

SAMPLES = message_samples()
ENCODED = [encode(message) for message in SAMPLES]
WIRE = [[PROTOCOL_VERSION, message.TYPE, *message.to_fields()] for message in SAMPLES]
TYPE_NUMBERS = sorted(MESSAGE_TYPES)

# Integers at every boundary of msgpack's encodings and of the fields' ranges.
EDGE_INTS = [
    0, 1, 3, 4, 127, 128, 255, 256, 2**15 - 1, 2**15, 2**16 - 1, 2**16, 2**31 - 1, 2**31,
    2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
    -1, -32, -33, -128, -129, -(2**15), -(2**15) - 1, -(2**31), -(2**31) - 1, -(2**63),
]  # fmt: skip
# Integers msgpack cannot carry at all.
HUGE_INTS = [2**64, 2**64 + 1, 2**100, 10**40, -(2**63) - 1, -(2**64), -(2**100)]
# Bytes that start, end or mis-size a msgpack object when they land in the middle of one.
EDGE_BYTES = [0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC4, 0xC7, 0xCA]
EDGE_BYTES += [0xCF, 0xD3, 0xD4, 0xD8, 0xD9, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, 0xE0, 0xFF]
# Nesting just below the depth where repr() recursed too far, and around msgpack's own limit.
EDGE_DEPTHS = [900, 990, 1000, 1022, 1023, 1024, 1025, 2000]

_V = TypeVar("_V")

# The byte strings the generators read their choices from.
entropy_bytes = st.binary(max_size=160)


def decodes_or_refuses(data: bytes) -> Message | None:
    """The property every input must have: ``decode`` gives a message or a ProtocolError.

    A message it gives encodes to bytes that decode to the same message, and to the very same
    bytes when the input was msgpack's canonical encoding. Any other exception fails the test.
    """
    try:
        message = decode(data)
    except ProtocolError:
        return None
    assert isinstance(message, Message)
    again = encode(message)
    assert decode(again) == message
    if msgpack.packb(msgpack.unpackb(data, raw=False), use_bin_type=True) == data:
        assert again == data
    return message


# -- the samples ----------------------------------------------------------------------------


def test_every_message_type_has_a_sample() -> None:
    have = [type(message) for message in SAMPLES]
    missing = sorted(cls.__name__ for cls in set(MESSAGE_TYPES.values()) - set(have))
    assert not missing, f"add a sample of {missing} to gridkv.testing.fuzz.message_samples()"
    assert len(have) == len(set(have)), "message_samples() builds one instance per type"


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_sample_round_trips_byte_for_byte(message: Message) -> None:
    data = encode(message)
    assert decode(data) == message
    assert encode(decode(data)) == data


# -- random bytes ---------------------------------------------------------------------------


def _header(count: int, mtype: int) -> bytes:
    """The start of a message: an array of ``count`` items, the version and a type number."""
    return bytes([0x90 | count, PROTOCOL_VERSION, mtype])  # all three fit in one byte


random_bytes = st.binary(max_size=256) | st.builds(
    lambda count, mtype, rest: _header(count, mtype) + rest,
    st.integers(2, 15),
    st.sampled_from(TYPE_NUMBERS),
    st.binary(max_size=256),
)


@settings(max_examples=fuzz_examples(300))
@given(random_bytes)
def test_random_bytes_decode_to_a_message_or_protocol_error(data: bytes) -> None:
    decodes_or_refuses(data)


# -- random msgpack, token by token ---------------------------------------------------------

# (first byte, struct format, lowest, highest) of every fixed-width integer encoding.
_INT_FORMS = [
    (0xCC, ">B", 0, 2**8 - 1),
    (0xCD, ">H", 0, 2**16 - 1),
    (0xCE, ">I", 0, 2**32 - 1),
    (0xCF, ">Q", 0, 2**64 - 1),
    (0xD0, ">b", -(2**7), 2**7 - 1),
    (0xD1, ">h", -(2**15), 2**15 - 1),
    (0xD2, ">i", -(2**31), 2**31 - 1),
    (0xD3, ">q", -(2**63), 2**63 - 1),
]
# (fix form (first byte, items it holds), wider forms (first byte, struct format of the size))
_Form = tuple[tuple[int, int] | None, list[tuple[int, str]]]
_STR: _Form = ((0xA0, 32), [(0xD9, ">B"), (0xDA, ">H"), (0xDB, ">I")])
_BIN: _Form = (None, [(0xC4, ">B"), (0xC5, ">H"), (0xC6, ">I")])
_EXT: _Form = (None, [(0xC7, ">B"), (0xC8, ">H"), (0xC9, ">I")])
_ARRAY: _Form = ((0x90, 16), [(0xDC, ">H"), (0xDD, ">I")])
_MAP: _Form = ((0x80, 16), [(0xDE, ">H"), (0xDF, ">I")])
_FIXEXT = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
# How far a container's announced count is off: mostly not at all.
_COUNT_ERRORS = [0] * 8 + [-1, 1]
_MAX_TOKEN_DEPTH = 4


def _int_forms(value: int) -> list[bytes]:
    """Every msgpack encoding of ``value``, the shortest first."""
    forms = []
    if 0 <= value <= 0x7F or -32 <= value < 0:
        forms.append(bytes([value & 0xFF]))
    forms += [
        bytes([b]) + struct.pack(f, value) for b, f, lo, hi in _INT_FORMS if lo <= value <= hi
    ]
    return forms


def _sized(n: int, form: _Form) -> list[bytes]:
    """Every header announcing ``n`` (a length or an item count): fix form and wider forms."""
    fix, wide = form
    out = [bytes([fix[0] | n])] if fix is not None and n < fix[1] else []
    out += [bytes([b]) + struct.pack(f, n) for b, f in wide if n < 1 << (8 * struct.calcsize(f))]
    return out


def _int(e: Entropy) -> int:
    """An integer msgpack carries: an edge value, or any value of 8 to 64 bits either sign."""
    if not e.one_in(3):
        return e.pick(EDGE_INTS)
    bits = e.pick([8, 16, 32, 64])
    value = int.from_bytes(e.take(bits // 8), "big")
    return value - (1 << bits - 1) if e.one_in(2) else value


def _text(e: Entropy) -> str:
    """A short string: Latin-1 from bytes, or any code points (surrogates included)."""
    if e.one_in(3):
        return "".join(chr(e.below(0x110000)) for _ in range(e.below(9)))
    return e.blob(40).decode("latin-1")


def _token(e: Entropy, depth: int = 0) -> bytes:
    """One msgpack object in any of its encodings, read from ``e``."""
    kind = e.below(13 if depth < _MAX_TOKEN_DEPTH else 10)
    if kind == 0:
        return e.pick([b"\xc0", b"\xc2", b"\xc3", b"\xc1"])  # nil, false, true, never-used
    if kind == 1:
        return e.pick(_int_forms(_int(e)))
    if kind == 2:
        return b"\xca" + e.take(4)  # any float32 bits: NaN payloads, infinities, subnormals
    if kind == 3:
        return b"\xcb" + e.take(8)
    if kind in (4, 5, 6):
        # kind 5 is a str that is not UTF-8, kind 6 a bin
        body = _text(e).encode("utf-8", "surrogatepass") if kind == 4 else e.blob(40)
        return e.pick(_sized(len(body), _STR if kind < 6 else _BIN)) + body
    if kind in (7, 8):
        code = e.take(1)  # -128 to 127; -1 is msgpack's own timestamp type
        data = e.blob(20) if kind == 7 else e.take(e.pick(list(_FIXEXT)))
        forms = _sized(len(data), _EXT) + (
            [bytes([_FIXEXT[len(data)]])] if len(data) in _FIXEXT else []
        )
        return e.pick(forms) + code + data
    if kind == 9:
        depth_to_go = e.pick(EDGE_DEPTHS) if e.one_in(2) else e.below(3000)
        return b"\x91" * depth_to_go + _token(e, _MAX_TOKEN_DEPTH)
    is_map = kind == 11
    items = [_token(e, depth + 1) for _ in range(e.below(7) * (2 if is_map else 1))]
    count = max(len(items) // (2 if is_map else 1) + e.pick(_COUNT_ERRORS), 0)
    return e.pick(_sized(count, _MAP if is_map else _ARRAY)) + b"".join(items)


@settings(max_examples=fuzz_examples(300))
@given(entropy_bytes)
def test_random_msgpack_decodes_to_a_message_or_protocol_error(entropy: bytes) -> None:
    decodes_or_refuses(_token(Entropy(entropy)))


@settings(max_examples=fuzz_examples(300))
@given(st.sampled_from(WIRE), entropy_bytes)
def test_messages_with_a_random_msgpack_field_decode_to_a_message_or_protocol_error(
    wire: list[Any], entropy: bytes
) -> None:
    # One field replaced: the decoder stops at the first bad field, so one is what it takes to
    # reach each check; the version and type in any encoding, now and then a wrong count.
    e = Entropy(entropy)
    fields = [msgpack.packb(field, use_bin_type=True) for field in wire[2:]]
    if fields:
        fields[e.below(len(fields))] = _token(e)
    count = max(len(fields) + 2 + e.pick(_COUNT_ERRORS), 0)
    version = e.pick([*_int_forms(PROTOCOL_VERSION), b"\x02", b"\xc0"])
    mtype = e.pick(_int_forms(wire[1]) + _int_forms(_int(e)))
    decodes_or_refuses(e.pick(_sized(count, _ARRAY)) + version + mtype + b"".join(fields))


# Found by this test: a field nested about 990 levels deep (msgpack itself stops at 1024) made
# the error message's repr() raise RecursionError. Hypothesis raises the recursion limit while
# it runs a test, so only a plain test like this one sees it.
@pytest.mark.parametrize("depth", [10, 100, 500, 900, 990, 1000, 1023, 1100, 5000, 100_000])
@pytest.mark.parametrize("position", ["version", "type", "field"])
def test_deeply_nested_input_is_a_protocol_error(depth: int, position: str) -> None:
    nested = b"\x91" * depth + b"\x00"
    parts = {"version": b"\x01", "type": b"\x01", "field": b"\x00"}
    parts[position] = nested
    with pytest.raises(ProtocolError):
        decode(b"\x94" + parts["version"] + parts["type"] + parts["field"] + b"\xa1n")


# -- mutations of valid messages: bytes -----------------------------------------------------


def _mutate_bytes(data: bytearray, e: Entropy) -> None:
    """One byte-level edit: flip a bit, set a byte, insert, delete, repeat, splice, truncate.

    The first choices are the smallest edits, so that bytes that run out (the zeros hypothesis
    shrinks towards) still change a little rather than cut the whole message.
    """
    op = e.below(7)
    at = e.below(len(data))
    if op == 0:
        data[at] ^= 1 << e.below(8)
    elif op == 1:
        data[at] = e.pick(EDGE_BYTES) if e.one_in(2) else e.below(256)
    elif op == 2:
        data[at:at] = e.blob(8) or b"\x00"
    elif op == 3:
        del data[at : at + 1 + e.below(16)]
    elif op == 4:
        data[at:at] = data[at : at + 1 + e.below(32)]
    elif op == 5:
        donor = e.pick(ENCODED)
        start = e.below(len(donor))
        data[at : at + e.below(41)] = donor[start : start + 1 + e.below(40)]
    else:
        del data[len(data) - 1 - at :]


@settings(max_examples=fuzz_examples(300))
@given(st.sampled_from(ENCODED), entropy_bytes)
def test_mutated_encodings_decode_to_a_message_or_protocol_error(
    encoded: bytes, entropy: bytes
) -> None:
    e = Entropy(entropy)
    data = bytearray(encoded)
    for _ in range(1 + e.below(4)):
        if data:
            _mutate_bytes(data, e)
    decodes_or_refuses(bytes(data))


@pytest.mark.parametrize("data", ENCODED, ids=[type(m).__name__ for m in SAMPLES])
def test_every_truncation_and_every_bit_flip_of_every_sample(data: bytes) -> None:
    for cut in range(len(data)):
        with pytest.raises(ProtocolError):
            decode(data[:cut])
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        decodes_or_refuses(bytes(flipped))


# -- mutations of valid messages: structure --------------------------------------------------

Path = tuple[int, ...]


def _paths(tree: list[Any], prefix: Path = ()) -> list[Path]:
    """The path to every item of a nested list, at every depth."""
    out = []
    for i, item in enumerate(tree):
        out.append((*prefix, i))
        if isinstance(item, list):
            out += _paths(item, (*prefix, i))
    return out


def _at(tree: list[Any], path: Path) -> Any:
    for i in path:
        tree = tree[i]
    return tree


def _copy(tree: Any) -> Any:
    return [_copy(item) for item in tree] if isinstance(tree, list) else tree


EDGE_VALUES: list[Any] = [
    *EDGE_INTS, "", "x" * 256, "x" * 1025, "x" * 65536, b"", None, True, False, 0.5, [], {},
]  # fmt: skip


def _value(e: Entropy, unpackable: bool = False, depth: int = 0) -> Any:
    """A Python value msgpack packs; with ``unpackable``, now and then one it cannot (an
    integer beyond 64 bits, a string with a lone surrogate)."""
    kind = e.below(9 if depth < 3 else 7)
    if kind == 0:
        return e.pick(EDGE_VALUES)
    if kind == 1:
        return e.pick(HUGE_INTS) if unpackable and e.one_in(2) else _int(e)
    if kind == 2:
        return struct.unpack(">d", e.take(8))[0]
    if kind == 3:
        text = _text(e)
        return text if unpackable else text.encode("utf-8", "replace").decode("utf-8")
    if kind == 4:
        return e.blob(20)
    if kind == 5:
        return msgpack.ExtType(e.below(128), e.blob(8))
    if kind == 6:
        return e.pick([None, True, False])
    if kind == 7:
        return [_value(e, unpackable, depth + 1) for _ in range(e.below(5))]
    keys = [_text(e).encode("utf-8", "replace").decode("utf-8") if e.one_in(2) else _int(e)]
    keys += [_int(e) for _ in range(e.below(4))]
    return {k: _value(e, unpackable, depth + 1) for k in keys}


def _mutate_structure(tree: list[Any], e: Entropy) -> None:
    """One structural edit of ``[version, type, *fields]``, in place: an item in the fields
    replaced, dropped or repeated, or another type number or version."""
    path = e.pick([path for path in _paths(tree) if path[0] >= 2])
    parent, i = _at(tree, path[:-1]), path[-1]
    op = e.below(7)
    if op == 0:
        parent[i] = _value(e)
    elif op == 1:
        parent[i] = e.pick(EDGE_VALUES)
    elif op == 2:
        donor = e.pick(WIRE)
        parent[i] = _copy(_at(donor, e.pick(_paths(donor))))
    elif op == 3:
        del parent[i]
    elif op == 4:
        parent.insert(i, _copy(parent[i]))
    elif op == 5:
        tree[1] = e.pick(TYPE_NUMBERS)
    else:
        tree[0] = e.pick([0, 2, -1, 2**64 - 1, "1", None, True, 1.0])


@settings(max_examples=fuzz_examples(300))
@given(st.sampled_from(WIRE), entropy_bytes)
def test_structurally_mutated_messages_decode_to_a_message_or_protocol_error(
    wire: list[Any], entropy: bytes
) -> None:
    e = Entropy(entropy)
    tree = _copy(wire)
    for _ in range(1 + e.below(3)):
        if len(tree) > 2:
            _mutate_structure(tree, e)
    decodes_or_refuses(bytes(msgpack.packb(tree, use_bin_type=True)))


# -- encode ---------------------------------------------------------------------------------


class _AnyFields(Message):
    """A message whose fields are whatever the test puts there (encode trusts its caller)."""

    FIELDS: ClassVar[tuple[tuple[str, Any], ...]] = ()

    def __init__(self, fields: list[Any]) -> None:
        self.fields = fields

    def to_fields(self) -> list[Any]:
        return self.fields


# One subclass per real type number, so the frame names a type the decoder knows.
_ANY_FIELDS: dict[int, type[_AnyFields]] = {
    n: type(f"AnyFields{n}", (_AnyFields,), {"TYPE": n}) for n in TYPE_NUMBERS
}


def _int_paths(wire: list[Any]) -> list[Path]:
    """Paths to the integers (not booleans) in a message's fields, at any depth."""
    in_fields = [path for path in _paths(wire) if path[0] >= 2]  # not the version or type
    return [path for path in in_fields if type(_at(wire, path)) is int]


WIRE_WITH_INTS = [wire for wire in WIRE if _int_paths(wire)]


def _encode_fields(wire: list[Any]) -> bytes:
    """``encode`` of a message of ``wire``'s type whose fields are ``wire[2:]``."""
    return encode(_ANY_FIELDS[wire[1]](wire[2:]))


@settings(max_examples=fuzz_examples(300))
@given(st.sampled_from(WIRE_WITH_INTS), entropy_bytes)
def test_an_integer_field_out_of_range_is_refused_by_encode_or_by_decode(
    wire: list[Any], entropy: bytes
) -> None:
    e = Entropy(entropy)
    tree = _copy(wire)
    path = e.pick(_int_paths(tree))
    _at(tree, path[:-1])[path[-1]] = e.pick(HUGE_INTS) if e.one_in(2) else -1 - _int(e) % 2**64
    try:
        encoded = _encode_fields(tree)
    except ProtocolError:
        return
    # msgpack carries it, so the receiver must refuse it: every integer field is unsigned.
    with pytest.raises(ProtocolError):
        decode(encoded)


def _int_leaves(value: Any) -> int:
    """How many integers (not booleans) a message holds, at any depth."""
    if type(value) is int:
        return 1
    if isinstance(value, list | tuple):
        return sum(_int_leaves(item) for item in value)
    if dataclasses.is_dataclass(value):
        return sum(_int_leaves(getattr(value, f.name)) for f in dataclasses.fields(value))
    return 0


def _with_int(value: _V, index: int, new: int) -> tuple[_V, int]:
    """``value`` with its ``index``-th integer replaced by ``new``, and what remains of
    ``index`` when that integer is not inside ``value``."""
    out: Any = value
    if type(value) is int:
        out, index = (new, -1) if index == 0 else (value, index - 1)
    elif isinstance(value, list | tuple):
        items = []
        for item in value:
            item, index = _with_int(item, index, new)
            items.append(item)
        out = type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {}
        for f in dataclasses.fields(value):
            changes[f.name], index = _with_int(getattr(value, f.name), index, new)
        out = dataclasses.replace(value, **changes)
    return out, index


@pytest.mark.parametrize(
    "message", [m for m in SAMPLES if _int_leaves(m)], ids=lambda m: type(m).__name__
)
@pytest.mark.parametrize("huge", HUGE_INTS)
def test_encode_of_a_message_with_an_integer_msgpack_cannot_carry_raises_protocol_error(
    message: Message, huge: int
) -> None:
    # Found by the fuzz test above: encode let msgpack's OverflowError out.
    for index in range(_int_leaves(message)):
        bad, _ = _with_int(message, index, huge)
        with pytest.raises(ProtocolError, match=f"{type(message).__name__} cannot be encoded"):
            encode(bad)


@settings(max_examples=fuzz_examples(300))
@given(st.sampled_from(WIRE), entropy_bytes)
def test_encode_of_any_field_values_returns_bytes_or_raises_protocol_error(
    wire: list[Any], entropy: bytes
) -> None:
    e = Entropy(entropy)
    tree = _copy(wire)
    if len(tree) > 2:
        tree[2 + e.below(len(tree) - 2)] = _value(e, unpackable=True)
    try:
        encoded = _encode_fields(tree)
    except ProtocolError:
        return
    decodes_or_refuses(encoded)

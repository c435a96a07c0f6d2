"""Read-modify-write operations, run atomically on a key's primary owner.

INCR, APPEND, SETRANGE, SET NX/XX/GET, GETDEL, EXPIRE and their kin read a key's value,
compute a new one and write it. Two such operations on one key must not interleave, so each
runs on the key's *primary owner* (the first live replica of its partition, in ring order),
which runs the operations on one key one after the other: it reads its own copy (or the
former replicas', while the partition is moving to it), computes, and writes the outcome to
the replicas at the caller's level before the next operation on the key starts. A node that
is not the primary sends a :class:`~gridkv.wire.messages.MutateRequest` there.

What this promises, and what it does not (see ``docs/replication.md``): operations of this
module on one key are serialized while the primary stays the same; a plain ``set`` racing one
of them is ordered by last-writer-wins like any two writes; when the primary fails, the next
replica takes over with what it holds, which at level ``one`` may miss the failed primary's
last writes.

The RESP door routes every command on a key to its primary this way (``read`` is the
operation of its reads), so at level ``one`` a client of any door reads what any door wrote
and acknowledged.

Each operation is a pure function of the key's current value and expiry, the clock and its
arguments (:data:`OPERATIONS`); arguments travel msgpack-encoded and are checked on both sides.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import TYPE_CHECKING, Any, Final

import msgpack

from gridkv.base.consistency import CONSISTENCY_LEVELS
from gridkv.base.errors import (
    ClockDriftExceeded,
    GridKVError,
    OperationRefused,
    PeerUnavailable,
    ProtocolError,
)
from gridkv.cluster.replication.leases import (
    FAILED,
    LEASE_OPS,
    MAX_LEASE_MS,
    MAX_WAIT_MS,
    RETRY,
    VALUE,
    Leases,
    Singleflight,
)
from gridkv.wire.messages import MutateReply, MutateRequest

if TYPE_CHECKING:
    from gridkv.cluster.context import ClusterContext
    from gridkv.storage.base import Entry

__all__ = [
    "KEEP",
    "Outcome",
    "OPERATIONS",
    "Mutator",
    "NOT_INTEGER",
    "OVERFLOW",
    "NOT_FLOAT",
    "TOO_LONG",
    "parse_integer",
    "too_large",
    "check_args",
]

#: Redis's error for a value or argument that is not a 64-bit integer.
NOT_INTEGER: Final = "ERR value is not an integer or out of range"
#: Redis's error for an INCR that would leave the 64-bit range.
OVERFLOW: Final = "ERR increment or decrement would overflow"
#: Redis's error for a value or argument that is not a float.
NOT_FLOAT: Final = "ERR value is not a valid float"
#: Redis's error for a string result longer than the largest value.
TOO_LONG: Final = "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
_NAN_OR_INF: Final = "ERR increment would produce NaN or Infinity"
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1

#: Expiry modes: keep the current expiry, remove it, or set an absolute time.
KEEP_TTL, PERSIST, AT = 0, 1, 2
#: SET conditions.
ALWAYS, IF_ABSENT, IF_PRESENT = 0, 1, 2
#: EXPIRE conditions (Redis's NX, XX, GT, LT), bits that combine (XX with GT or LT).
EXPIRE_ANY, EXPIRE_NX, EXPIRE_XX, EXPIRE_GT, EXPIRE_LT = 0, 1, 2, 4, 8


class _Keep:
    """The type of :data:`KEEP`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "KEEP"


#: An :class:`Outcome` value meaning "the key is left as it is" (nothing is written).
KEEP: Final = _Keep()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an operation does to its key, and what its caller is answered.

    :ivar value: the new value, ``None`` to delete the key, or :data:`KEEP`.
    :ivar expires_at: the new expiry (milliseconds since the epoch; 0: never).
    :ivar reply: the answer (msgpack-encodable: ints, bytes, ``None``, lists).
    """

    value: bytes | _Keep | None
    expires_at: int
    reply: Any


def too_large(size: int, largest: int) -> str:
    """The error for a value of ``size`` bytes over ``max_value_bytes`` (``largest``)."""
    return f"ERR value is {size} bytes; GridKV's max_value_bytes is {largest}"


def parse_integer(raw: bytes) -> int | None:
    """``raw`` as Redis reads an integer (``string2ll``), or ``None`` when it is not one.

    An optional ``-``, digits without leading zeros or spaces, within 64 bits.
    """
    if not raw or len(raw) > 20:
        return None
    digits = raw[1:] if raw[:1] == b"-" else raw
    if (
        not digits
        or not digits.isdigit()
        or (digits[:1] == b"0" and (len(digits) > 1 or raw[:1] == b"-"))
    ):
        return None
    number = int(raw)
    return number if _I64_MIN <= number <= _I64_MAX else None


#: Arithmetic as Redis's ``long double`` (x87: 64-bit mantissa, about 19 digits, exponents to
#: about 4932), in decimal: the digits Redis prints are the same for everything but results
#: beyond the 19th significant digit.
_LONG_DOUBLE = Context(prec=19, rounding=ROUND_HALF_EVEN, Emax=4932, Emin=-4951, traps=[])
#: Wide enough to print any such number with 17 decimals (``%.17Lf``).
_PRINTING = Context(prec=5000, rounding=ROUND_HALF_EVEN, Emax=5000, Emin=-5000, traps=[])
_DECIMALS = Decimal("1e-17")


def _parse_float(raw: bytes) -> Decimal | None:
    """``raw`` as Redis reads a float for INCRBYFLOAT (``strtold``), or ``None``.

    Decimal and exponent notation, ``inf``, hexadecimal (``0x10``); no spaces around it, no
    digit separators, no NaN.
    """
    if not raw or raw[:1].isspace() or raw[-1:].isspace() or b"_" in raw or len(raw) > 5120:
        return None
    text = raw.decode("ascii", "replace")
    try:
        if text.lstrip("+-")[:2].lower() == "0x":
            number = _LONG_DOUBLE.create_decimal_from_float(float.fromhex(text))
        else:
            number = _LONG_DOUBLE.create_decimal(text)
    except (ArithmeticError, ValueError):
        return None
    return None if number.is_nan() else number


def format_float(number: Decimal) -> bytes:
    """A number as INCRBYFLOAT answers it (Redis's ``%.17Lf``, trailing zeros removed)."""
    text = format(number.quantize(_DECIMALS, context=_PRINTING), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return b"0" if text in ("-0", "") else text.encode()


def _gone(at: int, now: int) -> bool:
    """Whether an absolute expiry ``at`` has already passed."""
    return at != 0 and at <= now


# Each operation: (value or None when absent, its expiry, now, arguments, largest value).


def _set(value: bytes | None, expires: int, now: int, args: list[Any], largest: int) -> Outcome:
    new, at, condition, want_old, keep_ttl = args
    if len(new) > largest:
        raise OperationRefused(too_large(len(new), largest))
    applies = (
        condition == ALWAYS
        or (condition == IF_ABSENT and value is None)
        or (condition == IF_PRESENT and value is not None)
    )
    reply: Any = [applies, value] if want_old else applies
    if not applies:
        return Outcome(KEEP, expires, reply)
    at = expires if keep_ttl and value is not None else (0 if keep_ttl else at)
    return Outcome(None if _gone(at, now) else new, at, reply)


def _incrby(value: bytes | None, expires: int, now: int, args: list[Any], largest: int) -> Outcome:
    (delta,) = args
    current = 0 if value is None else parse_integer(value)
    if current is None:
        raise OperationRefused(NOT_INTEGER)
    result = current + delta
    if not _I64_MIN <= result <= _I64_MAX:
        raise OperationRefused(OVERFLOW)
    return Outcome(str(result).encode(), expires, result)


def _incrbyfloat(
    value: bytes | None, expires: int, now: int, args: list[Any], largest: int
) -> Outcome:
    (raw_delta,) = args
    delta = _parse_float(raw_delta)
    current = Decimal(0) if value is None else _parse_float(value)
    if current is None or delta is None:
        raise OperationRefused(NOT_FLOAT)
    result = _LONG_DOUBLE.add(current, delta)
    if not result.is_finite():
        raise OperationRefused(_NAN_OR_INF)
    text = format_float(result)
    return Outcome(text, expires, text)


def _append(value: bytes | None, expires: int, now: int, args: list[Any], largest: int) -> Outcome:
    (tail,) = args
    new = (value or b"") + tail
    if len(new) > largest:
        raise OperationRefused(TOO_LONG)
    return Outcome(new, expires, len(new))


def _setrange(
    value: bytes | None, expires: int, now: int, args: list[Any], largest: int
) -> Outcome:
    offset, part = args
    current = value or b""
    if not part:  # Redis creates nothing and changes nothing for an empty string
        return Outcome(KEEP, expires, len(current))
    if offset + len(part) > largest:
        raise OperationRefused(TOO_LONG)
    padded = current.ljust(offset, b"\0")
    new = padded[:offset] + part + padded[offset + len(part) :]
    return Outcome(new, expires, len(new))


def _getdel(value: bytes | None, expires: int, now: int, args: list[Any], largest: int) -> Outcome:
    if value is None:
        return Outcome(KEEP, expires, None)
    return Outcome(None, 0, value)


def _take(value: bytes | None, expires: int, now: int, args: list[Any], largest: int) -> Outcome:
    """GETDEL that also answers the expiry (RENAME's and MOVE's first half)."""
    if value is None:
        return Outcome(KEEP, expires, None)
    return Outcome(None, 0, [value, expires])


def _getex(value: bytes | None, expires: int, now: int, args: list[Any], largest: int) -> Outcome:
    mode, at = args
    if value is None or mode == KEEP_TTL:
        return Outcome(KEEP, expires, value)
    at = 0 if mode == PERSIST else at
    if at == expires:
        return Outcome(KEEP, expires, value)
    return Outcome(None if _gone(at, now) else value, at, value)


def _expire(value: bytes | None, expires: int, now: int, args: list[Any], largest: int) -> Outcome:
    at, condition = args
    if value is None:
        return Outcome(KEEP, expires, 0)
    # A key without an expiry has an infinite TTL: GT never applies to it, LT always does.
    applies = not (
        (condition & EXPIRE_NX and expires != 0)
        or (condition & EXPIRE_XX and expires == 0)
        or (condition & EXPIRE_GT and (expires == 0 or at <= expires))
        or (condition & EXPIRE_LT and expires != 0 and at >= expires)
    )
    if not applies:
        return Outcome(KEEP, expires, 0)
    return Outcome(None if at <= now else value, at, 1)


def _persist(value: bytes | None, expires: int, now: int, args: list[Any], largest: int) -> Outcome:
    if value is None or expires == 0:
        return Outcome(KEEP, expires, 0)
    return Outcome(value, 0, 1)


def _read(value: bytes | None, expires: int, now: int, args: list[Any], largest: int) -> Outcome:
    """A read at the primary: ``[value, expiry]``, or ``None`` when the key is missing."""
    return Outcome(KEEP, expires, None if value is None else [value, expires])


def _delete(value: bytes | None, expires: int, now: int, args: list[Any], largest: int) -> Outcome:
    if value is None:
        return Outcome(KEEP, expires, 0)
    return Outcome(None, 0, 1)


_Operation = Callable[[bytes | None, int, int, list[Any], int], Outcome]


def _is_bytes(value: Any) -> bool:
    return type(value) is bytes


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_i64(value: Any) -> bool:
    return type(value) is int and _I64_MIN <= value <= _I64_MAX


def _is_time(value: Any) -> bool:
    return type(value) is int and 0 <= value < 1 << 62


def _is_flag(value: Any) -> bool:
    return type(value) is bool


def _choice(*allowed: int) -> Callable[[Any], bool]:
    return lambda value: type(value) is int and value in allowed


def _choice_range(low: int, high: int) -> Callable[[Any], bool]:
    return lambda value: type(value) is int and low <= value < high


#: Every operation by name: its function and a check of each of its arguments.
OPERATIONS: Final[dict[str, tuple[_Operation, tuple[Callable[[Any], bool], ...]]]] = {
    "set": (
        _set,
        (_is_bytes, _is_time, _choice(ALWAYS, IF_ABSENT, IF_PRESENT), _is_flag, _is_flag),
    ),
    "incrby": (_incrby, (_is_i64,)),
    "incrbyfloat": (_incrbyfloat, (_is_bytes,)),
    "append": (_append, (_is_bytes,)),
    "setrange": (_setrange, (lambda v: _is_int(v) and 0 <= v < 1 << 40, _is_bytes)),
    "getdel": (_getdel, ()),
    "take": (_take, ()),
    "getex": (_getex, (_choice(KEEP_TTL, PERSIST, AT), _is_time)),
    "expire": (
        _expire,
        (_is_time, lambda v: _is_int(v) and 0 <= v <= 15),
    ),
    "persist": (_persist, ()),
    "delete": (_delete, ()),
    "flush": (_delete, (lambda v: type(v) is int and 0 <= v < 1 << 64,)),
    "read": (_read, ()),
    # Run by Mutator._versioned (they see versions); the functions here are not called.
    "versioned": (_read, ()),
    "cas": (_read, (lambda v: type(v) is int and 0 <= v < 1 << 64, _is_bytes, _is_time)),
    # A loaded value, stored only over the key's version (tombstones count; 0: no entry).
    "fill": (_read, (lambda v: type(v) is int and 0 <= v < 1 << 64, _is_bytes, _is_time)),
    # Run by Leases (gridkv.cluster.replication.leases), outside the key's queue: lease time
    # and wait in milliseconds; lease id, outcome, value or error, expiry.
    "lease": (_read, (_choice_range(1, MAX_LEASE_MS + 1), _choice_range(0, MAX_WAIT_MS + 1))),
    "release": (
        _read,
        (_choice_range(1, 1 << 62), _choice(VALUE, FAILED, RETRY), _is_bytes, _is_time),
    ),
}


def check_args(op: str, args: Sequence[Any]) -> list[Any]:
    """``args`` as a list, checked for ``op``.

    :raises ProtocolError: an unknown operation, or arguments it does not take.
    """
    spec = OPERATIONS.get(op)
    if spec is None:
        raise ProtocolError(f"unknown operation {op[:40]!r}")
    checks = spec[1]
    if len(args) != len(checks) or not all(check(a) for check, a in zip(checks, args, strict=True)):
        raise ProtocolError(f"bad arguments for operation {op!r}")
    return list(args)


def _decode_args(op: str, raw: bytes) -> list[Any]:
    try:
        args = msgpack.unpackb(raw, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:
        raise ProtocolError(f"arguments of operation {op[:40]!r} are not msgpack: {exc}") from None
    if type(args) is not list:
        raise ProtocolError(f"arguments of operation {op[:40]!r} are not a list")
    return check_args(op, args)


class Mutator:
    """Runs operations of :data:`OPERATIONS` on the primary owner of their key.

    :param ctx: the node's cluster context.
    :param read: the freshest entry of a key this node can read at level one (tombstones
        included), following a partition moving here to its former replicas.
    :param write: writes an entry to the partition's replicas at a level.
    :param new_entry: a new version of a key stamped by this node (``None``: a tombstone).
    :param invalidate: forgets what this node's hot read cache holds of a key (after each
        operation sent to another node: this node reads its own writes).
    """

    def __init__(
        self,
        ctx: ClusterContext,
        read: Callable[[int, str], Awaitable[Entry | None]],
        write: Callable[[int, Entry, str], Awaitable[None]],
        new_entry: Callable[[str, bytes | None, int], Entry],
        invalidate: Callable[[str], None] = lambda key: None,
    ) -> None:
        self.ctx = ctx
        self._read = read
        self._write = write
        self._new_entry = new_entry
        self._invalidate = invalidate
        #: Keys with an operation running or waiting: the tail of each key's queue (a write
        #: on the spot must not overtake them; ``key in queued`` tells).
        self.queued: dict[str, asyncio.Future[None]] = {}
        #: Operations run here, and those sent to another node.
        self.ran = 0
        self.forwarded = 0
        #: The leases on keys this node is primary owner of (singleflight's owner side).
        self.leases = Leases(ctx, read, self._fill)
        #: This node's callers' flights for missing keys (singleflight's asking side).
        self.singleflight = Singleflight(ctx, self._lease_op, invalidate)

    def primary(self, partition: int) -> str:
        """The node that runs operations on ``partition``'s keys: its first replica.

        The table holds the members alive or suspected; a dead primary's partitions pass to
        the next replica when the view drops it.
        """
        return self.ctx.partitions.ensure_table().owners(partition)[0]

    async def _fill(
        self, partition: int, key: str, value: bytes, at: int, version: int, level: str
    ) -> tuple[bool, bytes | None]:
        """Store a loaded value over ``version`` (after the key's queue); see ``fill``."""
        stored, current = await self.run(partition, key, "fill", [version, value, at], level)
        return bool(stored), current

    async def _lease_op(
        self, partition: int, key: str, op: str, args: list[Any], timeout: float, level: str
    ) -> Any:
        """Run a lease operation at ``key``'s primary owner, waiting up to ``timeout``."""
        checked = check_args(op, args)
        target = self.primary(partition)
        if target == self.ctx.node_id:
            return await self.leases.handle(partition, key, op, checked, target, level)
        # (The hot cache forgets the key when the flight lands: Singleflight._land.)
        return await self._send(target, partition, key, op, checked, level, timeout)

    def busy(self, key: str) -> bool:
        """Whether an operation on ``key`` runs or waits here."""
        return key in self.queued

    async def mutate(
        self, partition: int, key: str, op: str, args: Sequence[Any], level: str
    ) -> Any:
        """Run ``op`` on ``key`` at its primary owner; return its answer.

        :raises OperationRefused: the operation does not apply to the value (the message is
            Redis's for the case).
        :raises PeerUnavailable: the primary owner could not be reached.
        :raises QuorumNotReached: the outcome reached fewer replicas than ``level`` needs.
        """
        checked = check_args(op, args)
        if op in LEASE_OPS:
            raise ProtocolError(f"operation {op!r} is singleflight's own")
        target = self.primary(partition)
        ctx = self.ctx
        if target == ctx.node_id:
            return await self.run(partition, key, op, checked, level)
        try:
            return await self._send(target, partition, key, op, checked, level)
        finally:
            self._invalidate(key)  # done or not, the cached answer may be stale now

    async def _send(
        self,
        target: str,
        partition: int,
        key: str,
        op: str,
        checked: list[Any],
        level: str,
        timeout: float | None = None,
    ) -> Any:
        ctx = self.ctx
        address = ctx.membership.address_of(target)
        if address is None:
            raise PeerUnavailable(
                f"the primary owner {target!r} of key {key!r:.60} is not in the view"
            )
        self.forwarded += 1
        request = MutateRequest(
            ctx.node_id, partition, key, op, msgpack.packb(checked, use_bin_type=True), level
        )
        if timeout is None:
            timeout = ctx.options.read_timeout + ctx.options.replication_timeout
        reply = await ctx.messaging.request(address, request, timeout)
        if not isinstance(reply, MutateReply):
            raise ProtocolError(f"expected MutateReply from {target!r}, got {type(reply).__name__}")
        try:
            ok, payload, *clock = msgpack.unpackb(reply.result, raw=False)
            if clock:  # the primary's clock after the operation (a write's version below it)
                ctx.hlc.update(int(clock[0]))
        except ClockDriftExceeded:
            pass  # done all the same; the next write here is ordered by this node's clock
        except Exception:
            raise ProtocolError(f"malformed MutateReply from {target!r}") from None
        if ok:
            return payload
        raise OperationRefused(str(payload))

    async def _versioned(
        self,
        partition: int,
        key: str,
        op: str,
        args: list[Any],
        level: str,
        entry: Entry | None,
        present: bool,
    ) -> Any:
        """The operations that see versions.

        ``versioned`` reads the value with its version; ``cas`` writes only over the version
        expected (0 expects no value); ``fill`` (singleflight's loaded value) writes only
        over the entry's version, tombstones included (0 expects no entry), and answers the
        key's value (or ``None``) when it does not.
        """
        current = entry.version if present and entry is not None else 0
        if op == "versioned":
            return None if not present or entry is None else [entry.value, current]
        expected, new, at = args
        if op == "fill" and (entry.version if entry is not None else 0) != expected:
            return [False, entry.value if present and entry is not None else None]
        if op == "cas" and current != expected:
            return [False, current]
        written = self._new_entry(key, new, at)
        await self._write(partition, written, level)
        self.ran += 1
        return [True, written.version]

    def on_mutate(self, message: MutateRequest) -> Awaitable[MutateReply]:
        """A peer's operation on a key this node is primary owner of (in the peer's view).

        :raises ProtocolError: unknown operation, bad arguments, level or partition.
        :raises PeerUnavailable: this node does not hold the key's partition.
        """
        ctx = self.ctx
        if message.partition >= ctx.options.partition_count:
            raise ProtocolError(f"partition {message.partition} out of range")
        if message.level not in CONSISTENCY_LEVELS:
            raise ProtocolError(f"unknown consistency level {message.level[:20]!r}")
        args = _decode_args(message.op, message.args)
        if not ctx.partitions.holds(message.partition):
            raise PeerUnavailable(
                f"node {ctx.node_id!r} does not hold partition {message.partition} (views differ)"
            )
        return self._answer(message, args)

    async def _answer(self, message: MutateRequest, args: list[Any]) -> MutateReply:
        """Run a peer's operation; answer ``[ok, result or error, this node's clock]``.

        The clock (above any version the operation wrote) advances the asker's, so a plain
        write it makes next is ordered after the operation's, as it would be here.
        """
        try:
            if message.op in LEASE_OPS:
                result = await self.leases.handle(
                    message.partition, message.key, message.op, args, message.sender, message.level
                )
            else:
                result = await self.run(
                    message.partition, message.key, message.op, args, message.level
                )
        except OperationRefused as exc:
            refused = [False, str(exc), self.ctx.hlc.now()]
            return MutateReply(msgpack.packb(refused, use_bin_type=True))
        return MutateReply(msgpack.packb([True, result, self.ctx.hlc.now()], use_bin_type=True))

    async def run(self, partition: int, key: str, op: str, args: list[Any], level: str) -> Any:
        """Run ``op`` here, after the operations on ``key`` queued before it."""
        loop = asyncio.get_running_loop()
        before = self.queued.get(key)
        mine: asyncio.Future[None] = loop.create_future()
        self.queued[key] = mine
        mine.add_done_callback(lambda done: self._dequeue(key, done))
        try:
            if before is not None:
                await asyncio.shield(before)
            return await self._apply(partition, key, op, args, level)
        finally:
            if before is None or before.done():
                mine.set_result(None)
            else:  # cancelled while waiting: the next one waits for the one before too
                before.add_done_callback(lambda _: mine.set_result(None))

    def _dequeue(self, key: str, done: asyncio.Future[None]) -> None:
        """Forget ``key``'s queue once its last operation is over."""
        if self.queued.get(key) is done:
            del self.queued[key]

    async def _apply(self, partition: int, key: str, op: str, args: list[Any], level: str) -> Any:
        ctx = self.ctx
        entry = await self._read(partition, key)
        now = ctx.now_ms()
        present = entry is not None and entry.value is not None and not entry.expired(now)
        value = entry.value if present and entry is not None else None
        expires = entry.expires_at if present and entry is not None else 0
        if op == "flush" and entry is not None and entry.version > args[0]:
            return 0  # written since it was listed for FLUSHALL: it stays
        if op in ("versioned", "cas", "fill"):
            return await self._versioned(partition, key, op, args, level, entry, present)
        outcome = OPERATIONS[op][0](value, expires, now, args, ctx.options.max_value_bytes)
        self.ran += 1
        if outcome.value is not KEEP:
            new_value = outcome.value if isinstance(outcome.value, bytes) else None
            await self._write(partition, self._new_entry(key, new_value, outcome.expires_at), level)
        elif outcome.expires_at != expires:  # pragma: no cover - every KEEP keeps the expiry
            raise GridKVError(f"operation {op!r} changed an expiry without a value")
        return outcome.reply

"""What both facades share: argument checks, error translation and the local fast path.

:class:`ClientBase` does no I/O: it builds the options, checks keys, values, TTLs and levels,
and answers a default-level read of a key this node holds from local storage
(:func:`get_here_first`, the one fast path: the sync facade's ``get`` itself, and the
async facade's first step). A ``set`` or
``delete`` at ``one`` of such a key writes local storage on the caller's thread, under the
shard's lock. Everything else runs on the node's event loop.

Errors. No exception other than a :class:`~gridkv.GridKVError` reaches a caller: arguments
that cannot be read raise the argument's error, a cancellation raised inside GridKV (a task
the operation waited on was cancelled by the node) becomes :class:`~gridkv.ShuttingDown` or
:class:`~gridkv.PeerUnavailable` (:func:`guarded`), and any other failure becomes a
``GridKVError`` whose cause is the original. An :class:`~gridkv.AsyncGridKV` caller whose own
task is cancelled still gets its ``CancelledError``.
"""

from __future__ import annotations

import asyncio
import enum
import math
import os
from collections.abc import Awaitable, Iterable
from datetime import timedelta
from typing import Any, Final, TypeVar, cast

from gridkv.base._repr import shown
from gridkv.base.consistency import CONSISTENCY_LEVELS, required_acks
from gridkv.base.errors import (
    EmptyKey,
    GridKVError,
    InvalidArgument,
    InvalidKey,
    InvalidValue,
    KeyTooLarge,
    PeerUnavailable,
    QuorumNotReached,
    ShuttingDown,
    ValueTooLarge,
    VersionMismatch,
)
from gridkv.base.keys import hash_key_bytes
from gridkv.base.options import Options
from gridkv.cluster.replication.mutations import IF_ABSENT, PERSIST
from gridkv.node import Node
from gridkv.node.stats import Stats
from gridkv.storage.base import Entry
from gridkv.storage.record import HEADER_SIZE as _PLAIN_AT

__all__ = [
    "TTL",
    "Value",
    "MAX_TTL_SECONDS",
    "DEFAULT_READY_TIMEOUT",
    "ELSEWHERE",
    "get_here_first",
    "set_here_first",
    "ClientBase",
    "build_options",
    "wait_seconds",
    "describe",
    "guarded",
    "listed_keys",
    "unique_keys",
    "mapping_items",
    "negated",
    "BULK_PARALLEL",
    "cas_outcome",
]

#: A time-to-live: seconds, a :class:`~datetime.timedelta`, ``None`` for the configured
#: default, or 0 for "never expires".
TTL = float | int | timedelta | None
#: A value: any bytes-like object; reads always return ``bytes``.
Value = bytes | bytearray | memoryview

_T = TypeVar("_T")
#: Seconds ``wait_ready()`` waits unless told otherwise.
DEFAULT_READY_TIMEOUT = 30.0
#: Longest TTL accepted: 100 years (expiry times must fit the 48-bit millisecond clock).
MAX_TTL_SECONDS = 100 * 365 * 86400
_tuple_new = tuple.__new__
#: Longest wait a time-out may ask for (a year); ``inf`` and longer ones mean this.
_LONGEST_WAIT = 365 * 86400.0


class _Elsewhere(enum.Enum):
    """The type of :data:`ELSEWHERE` (an enum, so a type checker narrows ``is not``)."""

    ELSEWHERE = "elsewhere"


#: What :func:`get_here_first` gives the async facade when this node cannot answer on the spot.
ELSEWHERE: Final = _Elsewhere.ELSEWHERE


def build_options(options: Options | None, overrides: dict[str, Any]) -> Options:
    """The options a facade was given: an :class:`Options`, keyword options, or both.

    :raises InvalidArgument: ``options`` is not an :class:`Options`.
    :raises ConfigError: a keyword is not a configuration key, or a value is bad.
    """
    if options is None:
        return Options.from_mapping(overrides)
    if not isinstance(options, Options):
        raise InvalidArgument(
            f"expected gridkv.Options (or keyword options), got {type(options).__name__}; "
            "use gridkv.load_config(path) for a file"
        )
    return options.replace(**overrides) if overrides else options


def wait_seconds(value: object, what: str) -> float:
    """``value`` as seconds to wait: a number, 0 or more; longer than a year means a year.

    :raises InvalidArgument: not a number, negative, or NaN.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float: as good as forever
            seconds = math.inf
        except Exception:  # a subclass whose __float__ fails
            seconds = math.nan
        if seconds >= 0:  # false for NaN
            return min(seconds, _LONGEST_WAIT)
    raise InvalidArgument(f"{what} must be a number of seconds, 0 or more; got {shown(value, 60)}")


def describe(what: str, key: str | None) -> str:
    """How an error message names an operation: ``"get of key 'k'"``, ``"wait_ready()"``."""
    return what if key is None else f"{what} of key {key!r:.60}"


def _cancelled_by_caller() -> bool:
    """Whether the running task itself is being cancelled (by its owner or a time-out).

    A ``CancelledError`` raised while it is not comes from inside GridKV: a task the
    operation awaited was cancelled by the node.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def guarded(work: Awaitable[_T], node: Node, what: str, key: str | None = None) -> _T:
    """Await ``work`` and let nothing but GridKV errors out of it.

    The caller's own cancellation goes through unchanged. A cancellation raised inside GridKV
    becomes :class:`ShuttingDown` when the node is closing and :class:`PeerUnavailable`
    otherwise; any other exception becomes a :class:`GridKVError` caused by the original.
    """
    try:
        return await work
    except GridKVError:
        raise
    except asyncio.CancelledError:
        if _cancelled_by_caller():
            raise
        operation = describe(what, key)
        if not node.running:
            raise ShuttingDown(
                f"node {node.node_id!r} closed while {operation} was waiting"
            ) from None
        raise PeerUnavailable(
            f"{operation} on node {node.node_id!r} was interrupted: a request it waited on was "
            "cancelled inside GridKV; retry it"
        ) from None
    except Exception as exc:
        raise GridKVError(
            f"{describe(what, key)} on node {node.node_id!r} failed inside GridKV (a bug in "
            f"GridKV or a plugin): {type(exc).__name__}: {exc}"
        ) from exc


def get_here_first(self: ClientBase, key: str, consistency: str | None = None) -> Any:
    """The value of ``key``, or ``None``; see :meth:`AsyncGridKV.get <gridkv.AsyncGridKV.get>`.

    This function is :meth:`GridKV.get <gridkv.GridKV.get>` itself, and the first step of
    :meth:`AsyncGridKV.get <gridkv.AsyncGridKV.get>`: the one fast path, written once. It
    answers from local storage when ``consistency`` is ``None`` and the key is a plain, valid
    ``str`` whose partition the node's mask marks (the node runs, holds the partition,
    nothing moves in, the default level is ``one``); otherwise it returns what the facade's
    ``_get_elsewhere`` does (the checked way, which raises for a bad key; :data:`ELSEWHERE`
    for the async facade, which then awaits the read). A key storage holds is answered
    without measuring it again (it was measured when it was written, here or by the replica
    that wrote it); a miss is answered only for a key within ``max_key_bytes``, so a bad key
    still gets its error. No lock: a dict lookup is atomic in CPython. A forked child's
    mask and dicts are cleared, so its reads go the checked way too, which refuses them.
    Being the method itself (not a helper it calls) saves the sync facade a Python call, a
    quarter of a local get.

    :raises PeerTimeout: the replicas did not answer within the bound the options give.
    """
    # No closure below: a variable a lambda captured would become a cell, made on every
    # call, and the fast path would pay for it. ``consistency`` is not keyword-only here (as
    # the facades declare it): a call with every argument given is the cheapest in CPython.
    if consistency is None and key.__class__ is str:
        try:
            raw = key.encode()
        except UnicodeEncodeError:
            raw = b""
        # gridkv.base.keys.partition_of, inline: the bytes are at hand.
        partition = hash_key_bytes(raw) % self._pcount
        records = self._local_parts[partition]
        if records is not None:  # held, readable here, and MemoryStorage.get inline
            blob = records.get(key)
            if blob is not None:  # a key storage holds passed the checks when it was written
                if not blob[0]:
                    return blob[_PLAIN_AT:]
                return self._storage.get(partition, key)
            if 0 < len(raw) <= self._max_key:  # a miss of a valid key
                return None
        elif self._local_reads[partition] and 0 < len(raw) <= self._max_key:
            return self._storage.get(partition, key)  # a backend that does not offer its dicts
    return self._get_elsewhere(key, consistency)


def set_here_first(
    self: ClientBase, key: str, value: Value, *, ttl: TTL = None, consistency: str | None = None
) -> Any:
    """Store ``value`` under ``key``; see :meth:`AsyncGridKV.set <gridkv.AsyncGridKV.set>`.

    This function is :meth:`GridKV.set <gridkv.GridKV.set>` itself, and the first step of
    :meth:`AsyncGridKV.set <gridkv.AsyncGridKV.set>`: the write's fast path, as
    :func:`get_here_first` is the read's. It stores the write on the spot when
    ``consistency`` is ``None``, the key is a plain valid ``str``, the value plain ``bytes``
    no longer than ``max_value_bytes``, the TTL ``None`` or a plain ``int``/``float`` in
    range, the replication backlog has room, and the node's mask marks the key's partition
    (it runs, holds the partition, the default level is ``one``): the checked way's
    ``_plan_write`` and ``write_here``, without a check the conditions already settle.
    Otherwise it returns what the facade's ``_set_elsewhere`` does (the checked way, which
    raises for a bad argument and waits for room in the backlog).

    :raises MemoryLimitExceeded: the storage is full and eviction is off.
    """
    if consistency is None and key.__class__ is str and value.__class__ is bytes:
        if ttl is None:
            seconds: float = self._default_ttl
        elif ttl.__class__ is int or ttl.__class__ is float:
            seconds = ttl
        else:
            seconds = -1.0  # a timedelta or a bad TTL: the checked way
        if 0 <= seconds <= MAX_TTL_SECONDS and len(value) <= self._max_value:
            try:
                raw = key.encode()
            except UnicodeEncodeError:
                raw = b""
            if 0 < len(raw) <= self._max_key and not self._over_limit:
                hash_ = hash_key_bytes(raw)
                partition = hash_ % self._pcount
                if self._local_reads[partition]:
                    expires = (
                        0 if seconds == 0 else self._now_ms() + max(1, math.ceil(seconds * 1000))
                    )
                    # make_entry, inline
                    entry = _tuple_new(Entry, (key, value, self._hlc_now(), self._writer, expires))
                    self._write_here(partition, entry, hash_)
                    self._fast.sets += 1
                    return None
    return self._set_elsewhere(key, value, ttl, consistency)


class ClientBase:
    """What both facades share: the node, argument checks, and the local fast path."""

    _node: Node
    #: True in a process forked from the one that created this instance (see GridKV._disown).
    _forked = False

    def _adopt(self, node: Node) -> None:
        opts = node.options
        self._node = node
        self._options = opts
        self._pcount = opts.partition_count
        self._max_key = opts.max_key_bytes
        self._max_value = opts.max_value_bytes
        self._default_ttl = opts.ttl
        self._storage = node.storage
        #: The node's fast-path mask, updated in place (see Node.local_reads).
        self._local_reads = node.local_reads
        #: The mask and the storage's dicts in one (see Node.local_parts), updated in place.
        self._local_parts = node.local_parts
        # What set_here_first calls and reads, looked up once.
        #: The replicas whose replication backlog is full (see Batcher.over_limit).
        self._over_limit = node.coordinator.batcher.over_limit
        self._hlc_now = node.hlc.now
        self._now_ms = node.now_ms
        self._writer = node.node_id
        self._write_here = node.write_here
        #: The write fast path's operation count (an integer the node's telemetry reports;
        #: the read fast path counts nothing: see docs/metrics.md).
        self._fast = node.telemetry.fast
        #: The process that created this instance; a fork may not use it.
        self._pid = os.getpid()

    @property
    def options(self) -> Options:
        """The node's configuration."""
        return self._options

    @property
    def node_id(self) -> str:
        """This node's id."""
        return self._node.node_id

    @property
    def node(self) -> Node:
        """The underlying node (for plugins and tooling)."""
        return self._node

    def stats(self) -> Stats:
        """A snapshot of the node's figures; see :class:`gridkv.Stats`."""
        if self._forked:
            raise self._forked_error()
        return self._node.stats()

    def _forked_error(self) -> ShuttingDown:
        return ShuttingDown(
            f"GridKV node {self.node_id!r} was created in process {self._pid}, and this process "
            f"({os.getpid()}) is a fork of it: a fork has a copy of the node's data but not its "
            "loop thread or its connections, so it cannot use it. Create the GridKV in the "
            "child process (gunicorn: in a post_fork hook, or without --preload; uWSGI: "
            "lazy-apps = true)"
        )

    # -- the fast path ---------------------------------------------------------------------

    def _get_elsewhere(self, key: str, consistency: str | None) -> Any:
        """What :func:`get_here_first` returns when this node cannot answer on the spot."""
        raise NotImplementedError

    def _set_elsewhere(self, key: str, value: Value, ttl: TTL, consistency: str | None) -> Any:
        """What :func:`set_here_first` returns when it cannot store the write on the spot."""
        raise NotImplementedError

    # -- argument checks -------------------------------------------------------------------

    def _key_partition(self, key: object) -> tuple[str, int]:
        """Check ``key``; return it as a plain ``str``, and its partition.

        :raises InvalidKey: not a str, or not valid Unicode.
        :raises EmptyKey: the empty string.
        :raises KeyTooLarge: longer than ``max_key_bytes`` in UTF-8.
        """
        if type(key) is not str:
            if not isinstance(key, str):
                raise InvalidKey(f"keys are str, got {type(key).__name__}: {shown(key, 60)}")
            # A plain copy of a str subclass: none of the subclass's methods run, here or later.
            key = str.__str__(key)
        if not key:
            raise EmptyKey("the key is empty; keys are non-empty strings")
        try:
            raw = key.encode()
        except UnicodeEncodeError:
            raise InvalidKey(f"key {key!r:.60} is not valid Unicode text") from None
        if len(raw) > self._max_key:
            raise KeyTooLarge(
                f"key {key[:40]!r}... is {len(raw)} bytes in UTF-8, more than max_key_bytes="
                f"{self._max_key}"
            )
        return key, hash_key_bytes(raw) % self._pcount  # partition_of, with the bytes at hand

    def _value(self, key: str, value: object) -> bytes:
        if type(value) is not bytes:
            if not isinstance(value, bytes | bytearray | memoryview):
                raise InvalidValue(
                    f"value for key {key!r:.60} must be bytes-like, got {type(value).__name__}"
                    + ("; encode text first, e.g. value.encode()" if isinstance(value, str) else "")
                )
            try:
                # Through the buffer: a subclass's __bytes__ is not called.
                value = bytes(memoryview(value))
            except Exception as exc:  # a released memoryview, a buffer that cannot be exported
                raise InvalidValue(
                    f"value for key {key!r:.60} cannot be read: {type(exc).__name__}: {exc}"
                ) from None
        if len(value) > self._max_value:
            raise ValueTooLarge(
                f"value for key {key!r:.60} is {len(value)} bytes, more than max_value_bytes="
                f"{self._max_value}"
            )
        return value

    def _expires_at(self, key: str, ttl: TTL) -> int:
        if ttl is None:
            seconds = self._default_ttl
        else:
            if not isinstance(ttl, timedelta | int | float) or isinstance(ttl, bool):
                raise InvalidArgument(
                    f"ttl for key {key!r:.60} must be seconds or a timedelta, got {shown(ttl, 60)}"
                )
            try:
                seconds = float(ttl.total_seconds() if isinstance(ttl, timedelta) else ttl)
            except OverflowError:  # an int too large for a float
                seconds = math.inf
            except Exception:  # a subclass whose conversion fails
                raise InvalidArgument(
                    f"ttl for key {key!r:.60} cannot be read as seconds: {shown(ttl, 60)}"
                ) from None
        if math.isnan(seconds) or seconds < 0:
            raise InvalidArgument(
                f"ttl for key {key!r:.60} must be 0 or positive, got {shown(ttl, 60)}"
            )
        if seconds > MAX_TTL_SECONDS:
            raise InvalidArgument(
                f"ttl for key {key!r:.60} is {shown(ttl, 60)}, longer than 100 years; use 0 "
                "for never"
            )
        if seconds == 0:
            return 0
        return self._node.now_ms() + max(1, math.ceil(seconds * 1000))

    def _check_level(self, consistency: str | None, partition: int, key: str) -> str:
        """Check the level and that enough replicas exist to meet it.

        A level counts against the configured ``replica_count`` (see
        :func:`~gridkv.base.consistency.required_acks`), so it is never silently weakened.

        :raises InvalidArgument: the level is unknown.
        :raises QuorumNotReached: fewer replicas are available than the level needs.
        """
        if consistency is None:
            level = self._options.consistency
        elif type(consistency) is str:
            level = consistency
        elif isinstance(consistency, str):
            level = str.__str__(consistency)  # no method of the subclass runs
        else:
            raise InvalidArgument(
                f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, got "
                f"{shown(consistency, 60)}"
            )
        if level == "one":
            return level
        if level not in CONSISTENCY_LEVELS:
            raise InvalidArgument(
                f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, got {level!r:.60}"
            )
        wanted = self._options.replica_count
        needed = required_acks(level, wanted)
        available = len(self._node.ensure_table().owners(partition))
        if available < needed:
            raise QuorumNotReached(
                f"consistency {level!r} for key {key!r:.60} needs {needed} of replica_count="
                f"{wanted} replicas, and {available} are available"
            )
        return level

    # -- the operations, without I/O -----------------------------------------------------------

    def _plan_read(self, key: object, consistency: str | None) -> tuple[str, int, str, bool]:
        """Check a read; return ``(key, partition, level, local)``, the key as a plain str.

        ``local`` means this node answers from its own storage: it holds the partition and
        the level is ``one``.
        """
        if self._forked:
            raise self._forked_error()
        node = self._node
        node.check_joined()
        key, partition = self._key_partition(key)
        level = self._check_level(consistency, partition, key)
        local = level == "one" and node.reads_here(partition)
        return key, partition, level, local

    def _plan_write(
        self, key: object, value: object, ttl: TTL, consistency: str | None, *, delete: bool = False
    ) -> tuple[int, str, bool, Entry]:
        """Check a write (or a delete); return ``(partition, level, local, entry)``."""
        if self._forked:
            raise self._forked_error()
        node = self._node
        node.check_joined()
        key, partition = self._key_partition(key)
        data = None if delete else self._value(key, value)
        expires = 0 if delete else self._expires_at(key, ttl)
        level = self._check_level(consistency, partition, key)
        local = level == "one" and node.holds(partition)
        return partition, level, local, node.new_entry(key, data, expires)

    def _plan_keys(self, keys: object, consistency: str | None) -> list[tuple[str, int, str]]:
        """Check the keys of a bulk read; ``(key, partition, level)`` of each, once each."""
        if self._forked:
            raise self._forked_error()
        self._node.check_joined()
        planned = []
        for raw in unique_keys(listed_keys(keys)):  # type: ignore[arg-type]
            key, partition = self._key_partition(raw)
            planned.append((key, partition, self._check_level(consistency, partition, key)))
        return planned

    def _plan_atomic(
        self, what: str, key: object, consistency: str | None, value: object = None, ttl: TTL = 0
    ) -> tuple[str, int, str, list[Any]]:
        """Check an atomic operation; return ``(key, partition, level, op and arguments)``.

        ``what`` is the API's name: ``incr`` (``value`` the delta), ``add`` (``value`` and
        ``ttl``), ``touch`` (``ttl``), ``versioned``, ``cas`` (``value`` the expected version
        and the new value, ``ttl``). See :mod:`gridkv.cluster.replication.mutations`.
        """
        if self._forked:
            raise self._forked_error()
        self._node.check_joined()
        key, partition = self._key_partition(key)
        level = self._check_level(consistency, partition, key)
        if what == "incr":
            if value.__class__ is not int or not -(1 << 63) <= value < 1 << 63:
                raise InvalidArgument(
                    f"incr/decr of key {key!r:.60}: the delta must be an int within 64 bits, "
                    f"got {shown(value, 60)}"
                )
            return key, partition, level, ["incrby", [value]]
        expires = self._expires_at(key, ttl)
        if what == "add":
            data = self._value(key, value)
            return key, partition, level, ["set", [data, expires, IF_ABSENT, False, False]]
        if what == "versioned":
            return key, partition, level, ["versioned", []]
        if what == "cas":
            expected, new = cast(tuple[Any, Any], value)
            if expected.__class__ is not int or not 0 <= expected < 1 << 64:
                raise InvalidArgument(
                    f"compare_and_set of key {key!r:.60}: expected_version must be a version "
                    f"from get_with_version, or 0 for none; got {shown(expected, 60)}"
                )
            data = self._value(key, new)
            return key, partition, level, ["cas", [expected, data, expires]]
        if expires == 0:
            return key, partition, level, ["getex", [PERSIST, 0]]
        return key, partition, level, ["expire", [expires, 0]]

    def _value_of(self, entry: Entry | None) -> bytes | None:
        """What a read returns for the freshest entry: its value, or ``None``."""
        if entry is None or entry.value is None or entry.expired(self._node.now_ms()):
            return None
        return entry.value


#: How long a ``get_or_set`` loader may run before a waiting caller takes its lease over.
DEFAULT_LEASE_TIMEOUT = 10.0


def lease_seconds(key: str, lease_timeout: object) -> float:
    """Check ``get_or_set``'s ``lease_timeout``: seconds above 0, at most a day."""
    if (
        not isinstance(lease_timeout, int | float)
        or isinstance(lease_timeout, bool)
        or not 0.001 <= lease_timeout <= 86400
    ):
        raise InvalidArgument(
            f"get_or_set of key {key!r:.60}: lease_timeout must be seconds from 0.001 to "
            f"86400, got {shown(lease_timeout, 60)}"
        )
    return float(lease_timeout)


def listed_keys(keys: Iterable[str]) -> list[str]:
    """``keys`` as a list; a single str is refused (it would be taken as its characters).

    :raises InvalidArgument: ``keys`` is a str or bytes, or not iterable.
    """
    if isinstance(keys, str | bytes):
        raise InvalidArgument("expected an iterable of keys, got a single key; wrap it in a list")
    try:
        return list(keys)
    except TypeError:
        raise InvalidArgument(f"expected an iterable of keys, got {type(keys).__name__}") from None


#: Writes (and deletes) of one bulk call under way at once.
BULK_PARALLEL = 64


def unique_keys(keys: list[Any]) -> list[Any]:
    """``keys`` once each, in order.

    Anything that is not a plain ``str`` is kept as it is: the key checks that follow refuse
    it with the key's own error.
    """
    seen: set[str] = set()
    out = []
    for key in keys:
        if key.__class__ is str:
            if key in seen:
                continue
            seen.add(key)
        out.append(key)
    return out


def mapping_items(mapping: object) -> list[tuple[Any, Any]]:
    """The ``(key, value)`` pairs of a mapping given to ``set_many``.

    :raises InvalidArgument: it is not a mapping.
    """
    items = getattr(mapping, "items", None)
    if items is None or isinstance(mapping, str | bytes):
        raise InvalidArgument(
            f"set_many expects a mapping of keys to values, got {type(mapping).__name__}"
        )
    try:
        return list(items())
    except Exception as exc:
        raise InvalidArgument(f"set_many could not read the mapping's items: {exc}") from None


def negated(key: object, delta: object) -> int:
    """``-delta`` for ``decr``, when ``delta`` is an int within 64 bits and so is its negation.

    :raises InvalidArgument: it is not.
    """
    if delta.__class__ is not int or not -(1 << 63) < delta <= (1 << 63) - 1:
        raise InvalidArgument(
            f"decr of key {key!r:.60}: the delta must be an int from -(2**63 - 1) to "
            f"2**63 - 1, got {shown(delta, 60)}"
        )
    return -delta


def cas_outcome(key: str, answer: Any) -> int:
    """The new version a ``compare_and_set`` wrote, from its answer.

    :raises VersionMismatch: the key had another version (``current`` says which).
    """
    done, version = answer
    if not done:
        raise VersionMismatch(
            f"compare_and_set of key {key!r:.60}: the key's version is {version} "
            f"({'no value' if not version else 'written since it was read'})",
            version,
        )
    return int(version)
